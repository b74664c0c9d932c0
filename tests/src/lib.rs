//! Helpers for augur's end-to-end tests: locating and running the real binaries,
//! scratch directories, and skipping with a printed reason where a test's
//! requirements (root, cgroups, tools) are missing.
//!
//! Layout: this file holds processes, cgroups and waiting; [`netns`] holds network
//! namespaces as hosts, HAProxy and wrk. `src/bin/augur-test-app.rs` is the HTTP
//! application the traffic tests serve.

pub mod netns;

use std::path::PathBuf;

/// Directory holding the workspace's built binaries (the test binary's profile).
pub fn bin_dir() -> PathBuf {
    // target/<profile>/deps/e2e-xxxx -> target/<profile>
    let exe = std::env::current_exe().expect("test binary path is known");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary, with a clear panic if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`, which `make test` does)",
        p.display()
    );
    p
}

/// The workspace root (for packaging files, configs and scripts).
pub fn repo_root() -> PathBuf {
    augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints why a test is skipped (visible with nextest's output) and returns true.
pub fn skip(test: &str, why: &str) -> bool {
    eprintln!("SKIP {test}: {why}");
    true
}

/// True if `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub name: String,
}

impl Proc {
    /// Spawns `bin` with `args`, stdout/stderr to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, bin: &std::path::Path, args: &[&str], log_dir: &std::path::Path) -> Proc {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).expect("create log file");
        let child = std::process::Command::new(bin)
            .args(args)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Proc { child, name: name.to_owned() }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns its status.
    pub fn terminate(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "{} did not exit within {timeout:?} of SIGTERM", self.name);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `augurctl --aggregator URL --json ARGS`: Ok(its JSON) on exit 0; otherwise Err with the
/// JSON answer it printed (a failed action's report), or else its stderr.
pub fn augurctl_json(url: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(bin("augurctl"))
        .args(["--aggregator", url, "--json"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run augurctl: {e}"))?;
    let json = serde_json::from_slice::<serde_json::Value>(&out.stdout);
    match (out.status.success(), json) {
        (true, Ok(v)) => Ok(v),
        (true, Err(e)) => Err(format!("bad JSON from augurctl {args:?}: {e}")),
        (false, Ok(v)) => Err(v.to_string()),
        (false, Err(_)) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Waits until `n` agents are connected to the aggregator at `url` (`augurctl hosts`).
pub fn wait_for_connected_agents(url: &str, n: usize, timeout: std::time::Duration) {
    wait_for(&format!("{n} agents connected"), timeout, || {
        let hosts = augurctl_json(url, &["hosts"]).ok()?;
        (hosts.as_array()?.iter().filter(|h| h["connected"] == true).count() == n).then_some(())
    });
}

/// Polls `f` every 200 ms until it returns Some or `timeout` passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// Where cgroup controllers live on this host.
#[derive(Debug, Clone)]
pub enum CgroupFs {
    /// v1: (controller, mount point) for memory, cpu, cpuacct, pids, blkio.
    V1(Vec<(String, PathBuf)>),
    /// v2 with controllers at this mount point.
    V2(PathBuf),
}

impl CgroupFs {
    /// Detects a writable hierarchy with the memory controller, preferring v2 with controllers.
    pub fn detect() -> Option<CgroupFs> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut v1 = Vec::new();
        for line in mi.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
            let (fstype, mnt) = (f.get(sep + 1).copied()?, PathBuf::from(f[4]));
            if fstype == "cgroup2" {
                let ctl = std::fs::read_to_string(mnt.join("cgroup.controllers")).unwrap_or_default();
                if ctl.split_whitespace().any(|c| c == "memory") {
                    return Some(CgroupFs::V2(mnt));
                }
            } else if fstype == "cgroup" {
                let opts = f.last().copied().unwrap_or("");
                for c in ["memory", "cpu", "cpuacct", "pids", "blkio"] {
                    if opts.split(',').any(|o| o == c) {
                        v1.push((c.to_owned(), mnt.clone()));
                    }
                }
            }
        }
        if v1.iter().any(|(c, _)| c == "memory") { Some(CgroupFs::V1(v1)) } else { None }
    }

    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        match self {
            CgroupFs::V1(ms) => {
                let mut d: Vec<PathBuf> = ms.iter().map(|(_, m)| m.join(rel)).collect();
                d.dedup();
                d
            }
            CgroupFs::V2(m) => vec![m.join(rel)],
        }
    }
}

/// A cgroup created for a test, with its processes killed and directories removed on drop.
pub struct TestCgroup {
    pub fs: CgroupFs,
    /// Path relative to the hierarchy root, e.g. `augur-e2e-123/work`.
    pub rel: String,
    top: String,
}

impl TestCgroup {
    /// Creates `<top>/<leaf>` in every hierarchy, with a memory limit.
    pub fn create(fs: CgroupFs, top: &str, leaf: &str, mem_limit: u64) -> std::io::Result<TestCgroup> {
        let rel = format!("{top}/{leaf}");
        if let CgroupFs::V2(m) = &fs {
            let _ = std::fs::write(m.join("cgroup.subtree_control"), "+memory +cpu +pids");
            std::fs::create_dir_all(m.join(top))?;
            let _ = std::fs::write(m.join(top).join("cgroup.subtree_control"), "+memory +cpu +pids");
        }
        let cg = TestCgroup { fs, rel, top: top.to_owned() };
        for d in cg.fs.dirs(&cg.rel) {
            std::fs::create_dir_all(&d)?;
        }
        match &cg.fs {
            CgroupFs::V1(ms) => {
                if let Some((_, m)) = ms.iter().find(|(c, _)| c == "memory") {
                    std::fs::write(m.join(&cg.rel).join("memory.limit_in_bytes"), mem_limit.to_string())?;
                }
            }
            CgroupFs::V2(m) => std::fs::write(m.join(&cg.rel).join("memory.max"), mem_limit.to_string())?,
        }
        Ok(cg)
    }

    /// This cgroup's directory in every hierarchy (one per mounted v1 controller, or the v2 one).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.fs.dirs(&self.rel)
    }

    /// Shell snippet that moves the shell itself into this cgroup (so memory it then
    /// allocates is charged here); prefix a command with it and `exec` the workload.
    pub fn enter_snippet(&self) -> String {
        self.fs.dirs(&self.rel).iter().map(|d| format!("echo $$ > {}/cgroup.procs; ", d.display())).collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in self.fs.dirs(&self.top) {
            // Kill what is left, then remove directories deepest first.
            for _ in 0..50 {
                let mut busy = false;
                let mut stack = vec![d.clone()];
                let mut all = Vec::new();
                while let Some(x) = stack.pop() {
                    if let Ok(rd) = std::fs::read_dir(&x) {
                        for e in rd.flatten() {
                            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                                stack.push(e.path());
                            }
                        }
                    }
                    all.push(x);
                }
                for x in &all {
                    for pid in std::fs::read_to_string(x.join("cgroup.procs")).unwrap_or_default().lines() {
                        if let Ok(p) = pid.trim().parse::<i32>() {
                            busy = true;
                            // SAFETY: kill(2) of a process in our own test cgroup.
                            unsafe {
                                libc::kill(p, libc::SIGKILL);
                            }
                        }
                    }
                }
                all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                for x in &all {
                    let _ = std::fs::remove_dir(x);
                }
                if !busy && !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

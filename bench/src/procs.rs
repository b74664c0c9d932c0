//! Process helpers shared by the benches: start a real binary and wait for its ready
//! file, stop it for sure (a guard that kills on drop), and read what `/proc` says
//! about a process (CPU ticks, resident memory).

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A child process that is stopped (SIGTERM, then SIGKILL) when the guard is dropped.
pub struct ChildGuard {
    name: String,
    child: Child,
}

impl ChildGuard {
    /// Spawns `cmd` under a guard; `name` is used in messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(ChildGuard { name: name.to_owned(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!("{} exited early: {status}", self.name),
            Ok(None) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// The child itself, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaps the process.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within {grace:?}; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Starts `bin_dir/augur-aggregator` on 127.0.0.1 (port 0) with its data in
/// `work/aggregator` and its log in `work/aggregator.log`; returns once the ready file
/// names the bound address.
pub fn start_aggregator(bin_dir: &Path, work: &Path) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let bin = bin_dir.join("augur-aggregator");
    if !bin.is_file() {
        bail!("{} not found (build it first)", bin.display());
    }
    let ready = work.join("aggregator.ready");
    let log = fs::File::create(work.join("aggregator.log")).context("creating aggregator.log")?;
    let mut guard = ChildGuard::spawn(
        "augur-aggregator",
        Command::new(&bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(work.join("aggregator"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let addr = wait_ready_file(&mut guard, &ready, Duration::from_secs(60))?;
    Ok((guard, addr))
}

/// Waits until `path` holds a socket address written by the guarded process.
pub fn wait_ready_file(guard: &mut ChildGuard, path: &Path, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && let Ok(addr) = text.trim().parse::<SocketAddr>()
        {
            return Ok(addr);
        }
        guard.check_running()?;
        if Instant::now() > deadline {
            bail!("no address in {} after {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for programs without port 0).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks, from `/proc/PID/stat`.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))
}

/// utime + stime from the text of `/proc/PID/stat`. The command name may hold spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> anyhow::Result<u64> {
    let rest = text.rsplit_once(')').map(|(_, r)| r).context("no ')' after the command name")?;
    // After ")": state(3) ppid(4) … utime(14) stime(15); index 0 is field 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> anyhow::Result<u64> {
        fields.get(i).context("too few fields")?.parse::<u64>().context("not a number")
    };
    Ok(get(11)? + get(12)?)
}

/// CPU ticks of a process's threads summed by thread name (`/proc/PID/task/*/stat`),
/// to see which part of a program (runtime workers, blocking pool, RocksDB background
/// threads) does the work. Threads that vanish while being read are skipped.
pub fn thread_cpu_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(text) = fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let name = match (text.find('('), text.rfind(')')) {
            (Some(a), Some(b)) if a < b => text[a + 1..b].to_owned(),
            _ => continue,
        };
        if let Ok(ticks) = parse_stat_cpu_ticks(&text) {
            *out.entry(name).or_default() += ticks;
        }
    }
    out
}

/// Per-thread-name CPU between two [`thread_cpu_ticks`] readings, as "% of a core"
/// over `wall`, largest first.
pub fn thread_cpu_pct(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    wall: Duration,
) -> Vec<(String, f64)> {
    let secs = wall.as_secs_f64().max(1e-9);
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(name, &t)| {
            let d = t.saturating_sub(before.get(name).copied().unwrap_or(0));
            (name.clone(), 100.0 * d as f64 / clock_ticks_per_sec() / secs)
        })
        .filter(|(_, pct)| *pct > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS`, `VmHWM`) in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kib(&text, field).with_context(|| format!("{field} in {path}"))
}

/// A `kB` field from the text of `/proc/PID/status`.
pub fn parse_status_kib(text: &str, field: &str) -> anyhow::Result<u64> {
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':')
            && name == field
        {
            let num = value.split_whitespace().next().context("empty value")?;
            return num.parse::<u64>().context("not a number");
        }
    }
    bail!("field not found")
}

/// CPU use of one process between two readings, as a percentage of one core.
pub struct CpuMeter {
    pid: u32,
    ticks: u64,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(CpuMeter { pid, ticks: cpu_ticks(pid)?, at: Instant::now() })
    }

    /// Percent of one core used since `start`.
    pub fn pct_of_core(&self) -> anyhow::Result<f64> {
        let ticks = cpu_ticks(self.pid)?;
        let wall = self.at.elapsed().as_secs_f64();
        let cpu = ticks.saturating_sub(self.ticks) as f64 / clock_ticks_per_sec();
        Ok(if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 })
    }
}

/// Set by SIGINT/SIGTERM once [`catch_interrupts`] ran; long loops poll it so the
/// benches clean up (guards drop) instead of dying mid-run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`interrupted`].
pub fn catch_interrupts() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps `d` in short steps; fails as soon as an interrupt arrives.
pub fn sleep_interruptible(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            bail!("interrupted");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// A temporary work directory, removed on drop.
pub fn work_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix(prefix).tempdir().context("creating a temporary directory")
}

/// The path of this very executable (for spawning helper subcommands).
pub fn current_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the augur-bench executable")
}

/// Bytes to MiB.
pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// Rounds to `digits` decimals (for readable JSON).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_paren() {
        let line = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 17 0 0 20 0 4 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line).expect("parse"), 267);
    }

    #[test]
    fn status_fields_in_kib() {
        let text = "Name:\tx\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS").expect("rss"), 10240);
        assert_eq!(parse_status_kib(text, "VmHWM").expect("hwm"), 20480);
        assert!(parse_status_kib(text, "VmSwap").is_err());
    }
}

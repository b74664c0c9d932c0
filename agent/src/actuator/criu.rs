//! CRIU checkpoint/restore of stateful workloads (`checkpoint` and `restore` commands).
//!
//! CRIU does not work everywhere (kernel features, a vDSO it cannot handle, missing
//! privileges), so the agent first asks it: [`probe`] runs `criu check` once, with a
//! timeout, and the executor caches the answer. When the probe fails every checkpoint
//! and restore is REFUSED with the probe's own words and nothing changes; Hello announces
//! the `criu` capability only when it passed.
//!
//! A checkpoint dumps the workload's process tree (its pid from the pidfile, the process
//! name, or the root of its cgroup's processes) with
//! `criu dump -t PID -D <images>/.<id>.tmp [--shell-job] [--leave-running] [--tcp-established] -o dump.log`
//! into a temporary directory that is renamed to `<images>/<id>` only when the dump
//! succeeded (a failed dump leaves no directory). Images live in
//! `<images_dir>/<host>/<workload>/<command id>`; a `restore` with `from_host` reads
//! images copied there from that host (copying them is the operator's or workflow's job).
//! A restore runs `criu restore -D DIR -d [--shell-job] [--tcp-established] --pidfile DIR/restored.pid -o restore.log`.
//!
//! Undo: a checkpoint that stopped the workload is undone by restoring its image; one
//! that left it running by removing the image; a restore by killing the restored tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use augur_core::units;
use serde::{Deserialize, Serialize};

use super::{Plan, Runner, Step, StepError};
use crate::workload::{WorkloadConfig, WorkloadKind};

/// `[criu]` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriuConfig {
    /// The criu binary.
    pub binary: String,
    /// Where images are kept; empty means `<state_dir>/criu`.
    pub images_dir: PathBuf,
    /// Time allowed for `criu check` at agent start.
    #[serde(with = "units::duration")]
    pub check_timeout: Duration,
    /// Longest a dump may take (the command's deadline can cut it shorter).
    #[serde(with = "units::duration")]
    pub dump_timeout: Duration,
    /// Longest a restore may take (the command's deadline can cut it shorter).
    #[serde(with = "units::duration")]
    pub restore_timeout: Duration,
    /// Pass `--shell-job` (the workload was started from a terminal / shares its session).
    pub shell_job: bool,
    /// Pass `--tcp-established` (checkpoint and restore open TCP connections).
    pub tcp_established: bool,
}

impl Default for CriuConfig {
    fn default() -> Self {
        CriuConfig {
            binary: "criu".into(),
            images_dir: PathBuf::new(),
            check_timeout: Duration::from_secs(10),
            dump_timeout: Duration::from_secs(120),
            restore_timeout: Duration::from_secs(120),
            shell_job: false,
            tcp_established: false,
        }
    }
}

impl CriuConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.binary.is_empty() {
            return Err("criu.binary must name the criu binary".into());
        }
        if !self.images_dir.as_os_str().is_empty() && !self.images_dir.is_absolute() {
            return Err(format!("criu.images_dir {} must be an absolute path", self.images_dir.display()));
        }
        if self.check_timeout.is_zero() || self.dump_timeout.is_zero() || self.restore_timeout.is_zero() {
            return Err("criu.check_timeout, dump_timeout and restore_timeout must be above 0".into());
        }
        Ok(())
    }

    /// The images directory (`images_dir`, or `<state_dir>/criu`).
    pub fn images_root(&self, state_dir: &Path) -> PathBuf {
        if self.images_dir.as_os_str().is_empty() { state_dir.join("criu") } else { self.images_dir.clone() }
    }
}

/// What `criu check` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub usable: bool,
    /// Why not (or CRIU's own "Looks good.").
    pub message: String,
}

/// The last `n` non-empty lines of CRIU's output, joined (its errors end its output).
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The verdict of a `criu check` run.
pub fn parse_check(argv: &[String], run: Result<super::RunOutput, String>) -> Probe {
    let cmd = super::shell_words(argv);
    match run {
        Err(e) => Probe { usable: false, message: format!("`{cmd}` could not run: {e}") },
        Ok(out) => {
            let said = tail(&format!("{}\n{}", out.stderr, out.stdout), 4);
            match out.code {
                Some(0) => {
                    Probe { usable: true, message: if said.is_empty() { "criu check passed".into() } else { said } }
                }
                code => Probe {
                    usable: false,
                    message: format!(
                        "`{cmd}` failed ({}): {}",
                        code.map_or("killed by a signal".to_owned(), |c| format!("exit status {c}")),
                        if said.is_empty() { "no output" } else { &said }
                    ),
                },
            }
        }
    }
}

/// Runs `criu check` (once per agent; the executor caches the answer).
pub async fn probe(runner: &dyn Runner, cfg: &CriuConfig) -> Probe {
    let argv = vec![cfg.binary.clone(), "check".into()];
    let run = runner.run(&argv, cfg.check_timeout).await;
    parse_check(&argv, run)
}

/// The dump argv.
pub fn dump_argv(cfg: &CriuConfig, pid: u32, dir: &Path, leave_running: bool) -> Vec<String> {
    let mut a = vec![cfg.binary.clone(), "dump".into(), "-t".into(), pid.to_string(), "-D".into()];
    a.push(dir.display().to_string());
    if cfg.shell_job {
        a.push("--shell-job".into());
    }
    if leave_running {
        a.push("--leave-running".into());
    }
    if cfg.tcp_established {
        a.push("--tcp-established".into());
    }
    a.extend(["-o".into(), "dump.log".into()]);
    a
}

/// The restore argv (detached; the restored root's pid goes to `pidfile`).
pub fn restore_argv(cfg: &CriuConfig, dir: &Path, pidfile: &Path) -> Vec<String> {
    let mut a = vec![cfg.binary.clone(), "restore".into(), "-D".into(), dir.display().to_string(), "-d".into()];
    if cfg.shell_job {
        a.push("--shell-job".into());
    }
    if cfg.tcp_established {
        a.push("--tcp-established".into());
    }
    a.extend(["--pidfile".into(), pidfile.display().to_string(), "-o".into(), "restore.log".into()]);
    a
}

/// One CRIU step (kept in the ledger like every [`Step`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "criu", rename_all = "snake_case")]
pub enum CriuStep {
    /// Dump into `tmp` (created empty), then rename it to `dir`; a failure removes `tmp`.
    Dump { argv: Vec<String>, tmp: PathBuf, dir: PathBuf, timeout_ms: u64 },
    /// Restore from `dir` (which must exist); the restored root's pid goes to `pidfile`.
    Restore { argv: Vec<String>, dir: PathBuf, pidfile: PathBuf, timeout_ms: u64 },
    /// Kill the process tree whose root's pid is in `pidfile` (undo of a restore).
    StopTree { pidfile: PathBuf, timeout_ms: u64 },
    /// Remove a checkpoint image directory (undo of a checkpoint that left the workload running).
    RemoveImage { dir: PathBuf },
}

impl CriuStep {
    /// One line saying exactly what the step does.
    pub fn describe(&self) -> String {
        match self {
            CriuStep::Dump { argv, tmp, dir, timeout_ms } => format!(
                "run {} (timeout {timeout_ms}ms) into the new directory {}, renamed to {} on success (removed on failure)",
                super::shell_words(argv),
                tmp.display(),
                dir.display()
            ),
            CriuStep::Restore { argv, timeout_ms, .. } => {
                format!("run {} (timeout {timeout_ms}ms)", super::shell_words(argv))
            }
            CriuStep::StopTree { pidfile, timeout_ms } => format!(
                "kill (SIGKILL) the process tree whose root pid is in {} (timeout {timeout_ms}ms)",
                pidfile.display()
            ),
            CriuStep::RemoveImage { dir } => format!("remove the checkpoint image {}", dir.display()),
        }
    }
}

fn log_tail(dir: &Path, log: &str) -> String {
    match fs::read_to_string(dir.join(log)) {
        Ok(t) => format!(" ({log}: {})", tail(&t, 3)),
        Err(_) => String::new(),
    }
}

fn fsync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Runs one CRIU step within `left`.
pub async fn run_step(runner: &dyn Runner, proc_root: &Path, step: &CriuStep, left: Duration) -> Result<(), StepError> {
    let within = |ms: u64| Duration::from_millis(ms).min(left);
    let failed = StepError::Failed;
    match step {
        CriuStep::Dump { argv, tmp, dir, timeout_ms } => {
            if dir.exists() {
                return Err(failed(format!("checkpoint image {} already exists", dir.display())));
            }
            if tmp.exists() {
                fs::remove_dir_all(tmp).map_err(|e| failed(format!("cannot clear {}: {e}", tmp.display())))?;
            }
            fs::create_dir_all(tmp).map_err(|e| failed(format!("cannot create {}: {e}", tmp.display())))?;
            let r = super::exec::run_checked(runner, argv, within(*timeout_ms)).await;
            if let Err(e) = r {
                let why = format!("{e}{}", log_tail(tmp, "dump.log"));
                let _ = fs::remove_dir_all(tmp);
                return Err(failed(why));
            }
            fs::rename(tmp, dir).map_err(|e| {
                failed(format!(
                    "dump succeeded but renaming {} to {} failed: {e} (the image is left in {})",
                    tmp.display(),
                    dir.display(),
                    tmp.display()
                ))
            })?;
            if let Some(p) = dir.parent() {
                fsync_dir(p);
            }
            Ok(())
        }
        CriuStep::Restore { argv, dir, pidfile, timeout_ms } => {
            if !dir.is_dir() {
                return Err(failed(format!("no checkpoint image at {}", dir.display())));
            }
            let _ = fs::remove_file(pidfile);
            super::exec::run_checked(runner, argv, within(*timeout_ms))
                .await
                .map(|_| ())
                .map_err(|e| failed(format!("{e}{}", log_tail(dir, "restore.log"))))
        }
        CriuStep::StopTree { pidfile, timeout_ms } => {
            let pid = read_pid(pidfile)?;
            stop_tree(proc_root, pid, within(*timeout_ms)).await.map_err(failed)
        }
        CriuStep::RemoveImage { dir } => match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(failed(format!("cannot remove {}: {e}", dir.display()))),
        },
    }
}

fn read_pid(pidfile: &Path) -> Result<u32, StepError> {
    let t = fs::read_to_string(pidfile)
        .map_err(|e| StepError::Failed(format!("cannot read pidfile {}: {e}", pidfile.display())))?;
    t.trim().parse().map_err(|_| StepError::Failed(format!("pidfile {} does not hold a pid", pidfile.display())))
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(proc_root: &Path, pid: u32) -> bool {
    match fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(s) => s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}

/// `pid` and its descendants (from `/proc/<pid>/task/*/children`).
pub fn tree(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = fs::read_dir(proc_root.join(p.to_string()).join("task")) {
            for t in tasks.flatten() {
                if let Ok(c) = fs::read_to_string(t.path().join("children")) {
                    for k in c.split_whitespace().filter_map(|v| v.parse::<u32>().ok()) {
                        if !out.contains(&k) {
                            out.push(k);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

async fn stop_tree(proc_root: &Path, pid: u32, within: Duration) -> Result<(), String> {
    if pid <= 1 || pid == std::process::id() {
        return Err(format!("refusing to kill pid {pid}"));
    }
    let end = tokio::time::Instant::now() + within;
    let pids = tree(proc_root, pid);
    for p in &pids {
        // SAFETY: kill(2) on pids of the restored tree; no memory is touched.
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
    while pids.iter().any(|p| alive(proc_root, *p)) {
        if tokio::time::Instant::now() >= end {
            return Err(format!("process tree of pid {pid} still alive after {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The pid to dump: the pidfile's, the oldest process named `process`, or the root of
/// the processes in the workload's cgroup (exactly one process whose parent is outside).
pub fn workload_pid(cgroup_root: &Path, proc_root: &Path, w: &WorkloadConfig) -> Result<u32, String> {
    let pid = if let Some(pf) = &w.pidfile {
        let t = fs::read_to_string(pf).map_err(|e| format!("cannot read pidfile {}: {e}", pf.display()))?;
        t.trim().parse::<u32>().map_err(|_| format!("pidfile {} does not hold a pid", pf.display()))?
    } else if let Some(name) = &w.process {
        super::cgroup::find_process(proc_root, name).ok_or_else(|| format!("no running process named {name:?}"))?
    } else if let Some(c) = &w.cgroup {
        cgroup_root_pid(cgroup_root, proc_root, c)?
    } else {
        return Err("workload names no pidfile, process or cgroup to find its process".into());
    };
    if pid <= 1 || pid == std::process::id() {
        return Err(format!("refusing to checkpoint pid {pid}"));
    }
    if !alive(proc_root, pid) {
        return Err(format!("process {pid} is not running"));
    }
    Ok(pid)
}

fn ppid(proc_root: &Path, pid: u32) -> Option<u32> {
    let s = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    s.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn cgroup_root_pid(cgroup_root: &Path, proc_root: &Path, c: &str) -> Result<u32, String> {
    let candidates = ["", "unified", "memory", "pids", "cpu"].map(|h| cgroup_root.join(h).join(c).join("cgroup.procs"));
    let f = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no cgroup.procs for cgroup {c:?} under {}", cgroup_root.display()))?;
    let t = fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    let pids: Vec<u32> = t.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let roots: Vec<u32> =
        pids.iter().copied().filter(|p| ppid(proc_root, *p).is_none_or(|pp| !pids.contains(&pp))).collect();
    match roots.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("cgroup {c:?} has no processes")),
        many => Err(format!("cgroup {c:?} holds {} process trees ({many:?}): criu dumps one tree", many.len())),
    }
}

/// Image directory of `image` for `workload` from `host`.
pub fn image_dir(root: &Path, host: &str, workload: &str, image: &str) -> PathBuf {
    root.join(host).join(workload).join(image)
}

fn check_stateful(w: &WorkloadConfig) -> Result<(), String> {
    if w.kind != WorkloadKind::Stateful {
        return Err(format!(
            "workload {:?} is not stateful: checkpoint and restore are for stateful workloads",
            w.name
        ));
    }
    Ok(())
}

/// Plan of a checkpoint (image named `id`). Reads only.
pub fn plan_checkpoint(
    cfg: &CriuConfig,
    images: &Path,
    host: &str,
    (cgroup_root, proc_root): (&Path, &Path),
    w: &WorkloadConfig,
    id: &str,
    leave_running: bool,
) -> Result<Plan, String> {
    check_stateful(w)?;
    if id.is_empty() || id.starts_with('.') || id.contains('/') || id == ".." {
        return Err(format!("command id {id:?} cannot name a checkpoint image"));
    }
    let pid = workload_pid(cgroup_root, proc_root, w)?;
    let dir = image_dir(images, host, &w.name, id);
    if dir.exists() {
        return Err(format!("checkpoint image {} already exists", dir.display()));
    }
    let tmp = image_dir(images, host, &w.name, &format!(".{id}.tmp"));
    let undo = if leave_running {
        vec![Step::Criu(CriuStep::RemoveImage { dir: dir.clone() })]
    } else {
        let pidfile = dir.join("restored.pid");
        vec![Step::Criu(CriuStep::Restore {
            argv: restore_argv(cfg, &dir, &pidfile),
            dir: dir.clone(),
            pidfile,
            timeout_ms: cfg.restore_timeout.as_millis() as u64,
        })]
    };
    let step = Step::Criu(CriuStep::Dump {
        argv: dump_argv(cfg, pid, &tmp, leave_running),
        tmp,
        dir: dir.clone(),
        timeout_ms: cfg.dump_timeout.as_millis() as u64,
    });
    // A dump that stops the workload is not health-checked: it is meant to be down.
    let mut plan = Plan { health_check: leave_running, ..Plan::default() };
    plan.details.insert("checkpoint.pid".into(), pid.to_string());
    plan.details.insert("checkpoint.image".into(), id.into());
    plan.details.insert("checkpoint.dir".into(), dir.display().to_string());
    plan.details.insert("checkpoint.leave_running".into(), leave_running.to_string());
    plan.push(step, undo);
    Ok(plan)
}

/// Plan of a restore of `image` (from `from_host`'s images, else this host's). Reads only;
/// refused while the workload is running (its pids would clash). A missing image is
/// refused, except in a dry run (a workflow's dry run restores an image its own checkpoint
/// step would have made), which says so in `restore.note`.
#[allow(clippy::too_many_arguments)]
pub fn plan_restore(
    cfg: &CriuConfig,
    images: &Path,
    host: &str,
    (cgroup_root, proc_root): (&Path, &Path),
    w: &WorkloadConfig,
    image: &str,
    from_host: Option<&str>,
    dry_run: bool,
) -> Result<Plan, String> {
    check_stateful(w)?;
    let dir = image_dir(images, from_host.unwrap_or(host), &w.name, image);
    let missing = !dir.is_dir();
    if missing && !dry_run {
        return Err(format!("no checkpoint image {image:?} of {:?} at {}", w.name, dir.display()));
    }
    if let Ok(pid) = workload_pid(cgroup_root, proc_root, w) {
        return Err(format!("workload {:?} is running (pid {pid}): stop or checkpoint it before a restore", w.name));
    }
    let pidfile = dir.join("restored.pid");
    let timeout_ms = cfg.restore_timeout.as_millis() as u64;
    let step = Step::Criu(CriuStep::Restore {
        argv: restore_argv(cfg, &dir, &pidfile),
        dir: dir.clone(),
        pidfile: pidfile.clone(),
        timeout_ms,
    });
    let mut plan = Plan { health_check: true, ..Plan::default() };
    if missing {
        plan.details.insert(
            "restore.note".into(),
            format!("there is no image at {} now: a real restore needs it (from a checkpoint)", dir.display()),
        );
    }
    plan.details.insert("restore.dir".into(), dir.display().to_string());
    plan.details.insert("restore.pidfile".into(), pidfile.display().to_string());
    plan.push(step, vec![Step::Criu(CriuStep::StopTree { pidfile, timeout_ms })]);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::RunOutput;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).into()).collect()
    }

    #[test]
    fn dump_and_restore_argv_follow_the_config_and_the_command() {
        let mut cfg = CriuConfig::default();
        assert_eq!(
            dump_argv(&cfg, 42, Path::new("/var/lib/a/criu/h/db/.c1.tmp"), false),
            argv(&["criu", "dump", "-t", "42", "-D", "/var/lib/a/criu/h/db/.c1.tmp", "-o", "dump.log"])
        );
        cfg.binary = "/usr/sbin/criu".into();
        cfg.shell_job = true;
        cfg.tcp_established = true;
        assert_eq!(
            dump_argv(&cfg, 7, Path::new("/i/.c2.tmp"), true),
            argv(&[
                "/usr/sbin/criu",
                "dump",
                "-t",
                "7",
                "-D",
                "/i/.c2.tmp",
                "--shell-job",
                "--leave-running",
                "--tcp-established",
                "-o",
                "dump.log"
            ])
        );
        assert_eq!(
            restore_argv(&cfg, Path::new("/i/c2"), Path::new("/i/c2/restored.pid")),
            argv(&[
                "/usr/sbin/criu",
                "restore",
                "-D",
                "/i/c2",
                "-d",
                "--shell-job",
                "--tcp-established",
                "--pidfile",
                "/i/c2/restored.pid",
                "-o",
                "restore.log"
            ])
        );
    }

    #[test]
    fn the_probe_passes_only_on_exit_status_0_and_keeps_criu_s_words() {
        let a = argv(&["criu", "check"]);
        let ok = parse_check(&a, Ok(RunOutput { code: Some(0), stdout: "Looks good.".into(), stderr: String::new() }));
        assert_eq!(ok, Probe { usable: true, message: "Looks good.".into() });
        // What Debian's criu 3.17.1 says on a kernel whose vDSO it cannot parse.
        let vdso = parse_check(
            &a,
            Ok(RunOutput {
                code: Some(1),
                stdout: String::new(),
                stderr: "Error (criu/util.c:642): exited, status=1\nError (criu/util.c:642): exited, status=1\n\
                         Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
                         Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n\
                         Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n\
                         Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
                    .into(),
            }),
        );
        assert!(!vdso.usable);
        assert_eq!(
            vdso.message,
            "`criu check` failed (exit status 1): Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds | \
             Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable | Error (criu/kerndat.c:1615): \
             kerndat_vdso_fill_symtable failed when initializing kerndat. | Error (criu/crtools.c:260): Could not \
             initialize kernel features detection."
        );
        let missing = parse_check(&a, Err("cannot start criu: No such file or directory (os error 2)".into()));
        assert!(!missing.usable && missing.message.contains("could not run: cannot start criu"), "{missing:?}");
        let killed = parse_check(&a, Ok(RunOutput { code: None, ..RunOutput::default() }));
        assert_eq!(killed.message, "`criu check` failed (killed by a signal): no output");
    }

    fn stateful(name: &str) -> WorkloadConfig {
        let mut w = WorkloadConfig::named(name);
        w.kind = WorkloadKind::Stateful;
        w
    }

    #[test]
    fn a_checkpoint_plan_dumps_into_a_temp_dir_and_is_undone_by_a_restore() {
        let d = tempfile::tempdir().expect("tempdir");
        let pidfile = d.path().join("db.pid");
        fs::write(&pidfile, format!("{}\n", std::process::id())).expect("pidfile");
        let mut w = stateful("db");
        w.pidfile = Some(pidfile.clone());
        let cfg = CriuConfig::default();
        let images = d.path().join("img");
        let roots = (Path::new("/nonexistent"), Path::new("/proc"));
        // Our own pid is never dumped.
        let e = plan_checkpoint(&cfg, &images, "h", roots, &w, "c1", false).expect_err("own pid");
        assert!(e.contains("refusing to checkpoint pid"), "{e}");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        fs::write(&pidfile, child.id().to_string()).expect("pidfile");
        let p = plan_checkpoint(&cfg, &images, "h", roots, &w, "c1", false).expect("plan");
        let dir = images.join("h/db/c1");
        let tmp = images.join("h/db/.c1.tmp");
        match &p.steps[0].0 {
            Step::Criu(CriuStep::Dump { argv, tmp: t, dir: d2, .. }) => {
                assert_eq!((t, d2), (&tmp, &dir));
                assert_eq!(argv[..5], ["criu", "dump", "-t", &child.id().to_string(), "-D"]);
                assert_eq!(argv[5], tmp.display().to_string());
            }
            s => panic!("unexpected step {s:?}"),
        }
        assert!(matches!(&p.steps[0].1[..], [Step::Criu(CriuStep::Restore { dir: d2, .. })] if *d2 == dir));
        assert!(!p.health_check, "a workload stopped by its dump is not health-checked");
        let p = plan_checkpoint(&cfg, &images, "h", roots, &w, "c1", true).expect("plan");
        assert!(matches!(&p.steps[0].1[..], [Step::Criu(CriuStep::RemoveImage { .. })]));
        assert!(p.health_check);
        assert!(!images.exists(), "planning wrote nothing");
        // A stateless workload, an id that is not a directory name, an existing image.
        w.kind = WorkloadKind::Stateless;
        assert!(
            plan_checkpoint(&cfg, &images, "h", roots, &w, "c1", false).expect_err("stateless").contains("stateful")
        );
        w.kind = WorkloadKind::Stateful;
        assert!(plan_checkpoint(&cfg, &images, "h", roots, &w, "../x", false).is_err());
        fs::create_dir_all(&dir).expect("dir");
        assert!(plan_checkpoint(&cfg, &images, "h", roots, &w, "c1", false).expect_err("exists").contains("already"));
        // A restore while the workload runs would clash: refused.
        let e = plan_restore(&cfg, &images, "h", roots, &w, "c1", None, false).expect_err("running");
        assert!(e.contains("is running"), "{e}");
        child.kill().expect("kill");
        child.wait().expect("reap");
        let p = plan_restore(&cfg, &images, "h", roots, &w, "c1", None, false).expect("plan");
        assert!(matches!(&p.steps[0].1[..], [Step::Criu(CriuStep::StopTree { .. })]));
        assert!(!p.details.contains_key("restore.note"));
        let e = plan_restore(&cfg, &images, "h", roots, &w, "c1", Some("app-2"), false).expect_err("not copied");
        assert!(e.contains("app-2/db/c1"), "{e}");
        // A dry run plans a restore of an image an earlier workflow step would make, and says so.
        let p = plan_restore(&cfg, &images, "h", roots, &w, "c1", Some("app-2"), true).expect("dry plan");
        assert!(p.details["restore.note"].contains("no image at"), "{:?}", p.details);
    }

    /// A runner standing in for criu: it writes a file into the `-D` directory and exits
    /// with `code`.
    struct FakeCriu {
        code: i32,
    }

    impl Runner for FakeCriu {
        fn run<'a>(
            &'a self,
            argv: &'a [String],
            _timeout: Duration,
        ) -> futures::future::BoxFuture<'a, Result<RunOutput, String>> {
            Box::pin(async move {
                let d = argv.iter().position(|a| a == "-D").map(|i| PathBuf::from(&argv[i + 1])).expect("-D");
                fs::write(d.join("dump.log"), "Error (criu/cr-dump.c:1): Dumping FAILED.\n").expect("log");
                fs::write(d.join("core-1.img"), "x").expect("img");
                Ok(RunOutput { code: Some(self.code), stdout: String::new(), stderr: String::new() })
            })
        }
    }

    #[tokio::test]
    async fn a_dump_is_renamed_into_place_on_success_and_leaves_nothing_on_failure() {
        let d = tempfile::tempdir().expect("tempdir");
        let tmp = d.path().join("h/db/.c1.tmp");
        let dir = d.path().join("h/db/c1");
        let step = CriuStep::Dump {
            argv: dump_argv(&CriuConfig::default(), 1234, &tmp, false),
            tmp: tmp.clone(),
            dir: dir.clone(),
            timeout_ms: 1000,
        };
        let e = run_step(&FakeCriu { code: 1 }, Path::new("/proc"), &step, Duration::from_secs(5))
            .await
            .expect_err("dump fails");
        assert!(e.to_string().contains("dump.log: Error (criu/cr-dump.c:1): Dumping FAILED."), "{e}");
        assert!(!tmp.exists() && !dir.exists(), "a failed dump leaves no image directory");
        run_step(&FakeCriu { code: 0 }, Path::new("/proc"), &step, Duration::from_secs(5)).await.expect("dump");
        assert!(dir.join("core-1.img").is_file() && !tmp.exists());
        let again = run_step(&FakeCriu { code: 0 }, Path::new("/proc"), &step, Duration::from_secs(5)).await;
        assert!(again.expect_err("exists").to_string().contains("already exists"));
        run_step(
            &FakeCriu { code: 0 },
            Path::new("/proc"),
            &CriuStep::RemoveImage { dir: dir.clone() },
            Duration::from_secs(1),
        )
        .await
        .expect("remove");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn stop_tree_kills_a_real_process_and_its_children() {
        let d = tempfile::tempdir().expect("tempdir");
        let kid = d.path().join("kid.pid");
        let mut root = std::process::Command::new("sh")
            .args(["-c", &format!("sleep 30 & echo $! > {}; wait", kid.display())])
            .spawn()
            .expect("sh");
        let pidfile = d.path().join("restored.pid");
        fs::write(&pidfile, root.id().to_string()).expect("pidfile");
        let mut kid_pid = None;
        for _ in 0..200 {
            if let Some(p) = fs::read_to_string(&kid).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
                kid_pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let kid_pid = kid_pid.expect("the child wrote its pid");
        assert_eq!(tree(Path::new("/proc"), root.id()), [root.id(), kid_pid]);
        let reaper = std::thread::spawn(move || root.wait());
        run_step(
            &FakeCriu { code: 0 },
            Path::new("/proc"),
            &CriuStep::StopTree { pidfile, timeout_ms: 5000 },
            Duration::from_secs(5),
        )
        .await
        .expect("stopped");
        assert!(!alive(Path::new("/proc"), kid_pid));
        reaper.join().expect("join").expect("reaped");
    }
}

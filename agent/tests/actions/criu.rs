//! CRIU checkpoint/restore through the real executor and real processes.
//!
//! Where `criu check` fails (or criu is missing) a checkpoint must be REFUSED with the
//! probe's words while the workload keeps running and no image directory appears: that
//! runs everywhere. The dump-and-restore round trip runs only where the probe passes and
//! otherwise prints `SKIP <test>: <probe message>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use augur_agent::actuator::criu::{self, CriuConfig};
use augur_agent::actuator::{Executor, ProcessRunner, Status};
use augur_agent::workload::{WorkloadConfig, WorkloadKind};

use crate::{cmd, config, health_command, skip};

/// A real process outside our process tree (double fork, own session) counting in `dir`.
fn daemon(dir: &Path) -> u32 {
    let pidfile = dir.join("daemon.pid");
    let script = format!(
        "cd {d} && setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > counter; sleep 0.1; done' \
         </dev/null >/dev/null 2>&1 & echo $! > {p}",
        d = dir.display(),
        p = pidfile.display()
    );
    let st = std::process::Command::new("sh").args(["-c", &script]).status().expect("sh runs");
    assert!(st.success());
    std::fs::read_to_string(&pidfile).expect("pidfile").trim().parse().expect("pid")
}

fn alive(pid: u32) -> bool {
    criu::alive(Path::new("/proc"), pid)
}

fn kill(pid: u32) {
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
}

fn stateful(pidfile: &Path, pid: u32) -> WorkloadConfig {
    let mut w = WorkloadConfig::named("db");
    w.kind = WorkloadKind::Stateful;
    w.pidfile = Some(pidfile.to_owned());
    w.allowed_actions = vec!["checkpoint".into(), "restore".into(), "health".into()];
    w.health = Some(health_command(&["kill", "-0", &pid.to_string()]));
    w
}

fn executor(state: &Path, w: &WorkloadConfig, criu_cfg: CriuConfig) -> Executor {
    augur_agent::workload::validate_workloads(std::slice::from_ref(w)).expect("valid workload");
    Executor::open(config(state, Path::new("/nonexistent")), std::slice::from_ref(w), Arc::new(ProcessRunner))
        .expect("executor opens")
        .with_criu(criu_cfg, None)
}

fn images(state: &Path) -> PathBuf {
    CriuConfig::default().images_root(state)
}

/// An executable script standing in for criu's exit statuses (not for CRIU itself).
fn script(dir: &Path, body: &str) -> String {
    let p = dir.join("criu-stand-in");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
    let st = std::process::Command::new("chmod").args(["+x", &p.display().to_string()]).status().expect("chmod");
    assert!(st.success());
    p.display().to_string()
}

/// The refusal contract, for a criu that is missing, broken, or the real one when broken.
async fn assert_refused_untouched(binary: String, needle: &str) {
    let state = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let pid = daemon(work.path());
    let pidfile = work.path().join("daemon.pid");
    let w = stateful(&pidfile, pid);
    let mut ex = executor(state.path(), &w, CriuConfig { binary, ..CriuConfig::default() });
    let mut dry = cmd("d1", "db", "checkpoint", &[]);
    dry.dry_run = true;
    for c in [
        cmd("c1", "db", "checkpoint", &[]),
        cmd("c2", "db", "checkpoint", &[("leave_running", "true")]),
        dry,
        cmd("c3", "db", "restore", &[("image", "c1")]),
    ] {
        let o = ex.execute(&c).await;
        assert_eq!(o.status, Status::Refused, "{}: {o:?}", c.id);
        assert!(o.message.starts_with("criu is not usable on this host: "), "{}: {}", c.id, o.message);
        assert!(o.message.contains(needle), "{}: {:?} should carry the probe's {needle:?}", c.id, o.message);
    }
    let before = std::fs::read_to_string(work.path().join("counter")).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = std::fs::read_to_string(work.path().join("counter")).unwrap_or_default();
    let alive_now = alive(pid);
    kill(pid);
    assert!(alive_now, "the workload process {pid} must keep running");
    assert_ne!(before, after, "the workload kept working (counter {before:?} -> {after:?})");
    assert!(!images(state.path()).exists(), "a refused checkpoint leaves no image directory");
    assert!(ex.ledger().is_empty(), "nothing was recorded as applied");
}

#[tokio::test]
async fn a_checkpoint_is_refused_with_the_probe_s_reason_when_criu_is_missing() {
    assert_refused_untouched("/nonexistent/criu".into(), "`/nonexistent/criu check` could not run: cannot start").await;
}

#[tokio::test]
async fn a_checkpoint_is_refused_with_criu_s_words_when_criu_check_fails() {
    let d = tempfile::tempdir().expect("tempdir");
    let bin = script(
        d.path(),
        "echo 'Error (criu/vdso.c:627): Unexpected rt vDSO area bounds' >&2\n\
         echo 'Error (criu/cr-check.c:1606): criu check failed' >&2\nexit 1",
    );
    assert_refused_untouched(bin, "failed (exit status 1): Error (criu/vdso.c:627): Unexpected rt vDSO area bounds")
        .await;
}

#[tokio::test]
async fn with_this_host_s_criu_a_checkpoint_is_refused_unless_criu_check_passes() {
    let p = criu::probe(&ProcessRunner, &CriuConfig::default()).await;
    eprintln!("criu check on this host: usable={} ({})", p.usable, p.message);
    if p.usable {
        skip(
            "with_this_host_s_criu_a_checkpoint_is_refused_unless_criu_check_passes",
            "criu check passes here: the refusal path is covered by the stand-in tests, the dump by the round trip",
        );
        return;
    }
    assert_refused_untouched("criu".into(), &p.message).await;
}

#[tokio::test]
async fn a_dry_run_shows_the_exact_criu_argv_and_a_failed_dump_leaves_nothing() {
    let state = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    // Passes `check`, fails everything else.
    let bin =
        script(work.path(), "[ \"$1\" = check ] && { echo 'Looks good.'; exit 0; }\necho 'dump refused' >&2\nexit 3");
    let pid = daemon(work.path());
    let w = stateful(&work.path().join("daemon.pid"), pid);
    let mut ex = executor(state.path(), &w, CriuConfig { binary: bin.clone(), ..CriuConfig::default() });
    let mut dry = cmd("d1", "db", "checkpoint", &[("leave_running", "true")]);
    dry.dry_run = true;
    let o = ex.execute(&dry).await;
    assert_eq!(o.status, Status::DryRun, "{o:?}");
    let base = images(state.path()).join("host-a/db");
    assert_eq!(
        o.details["would.1"],
        format!(
            "run {bin} dump -t {pid} -D {tmp} --leave-running -o dump.log (timeout 120000ms) into the new directory \
             {tmp}, renamed to {dir} on success (removed on failure)",
            tmp = base.join(".d1.tmp").display(),
            dir = base.join("d1").display()
        )
    );
    assert_eq!(o.details["would.1.undo.1"], format!("remove the checkpoint image {}", base.join("d1").display()));
    assert!(!images(state.path()).exists(), "a dry run creates nothing");
    let o = ex.execute(&cmd("c1", "db", "checkpoint", &[])).await;
    let alive_now = alive(pid);
    kill(pid);
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(
        o.message.contains("exited with status 3: dump refused") && o.message.contains("nothing was changed"),
        "{o:?}"
    );
    assert!(alive_now);
    assert!(!base.join("c1").exists() && !base.join(".c1.tmp").exists(), "a failed dump leaves no image directory");
}

#[tokio::test]
async fn a_real_process_is_checkpointed_restored_and_the_restore_rolled_back_where_criu_works() {
    const TEST: &str = "a_real_process_is_checkpointed_restored_and_the_restore_rolled_back_where_criu_works";
    let p = criu::probe(&ProcessRunner, &CriuConfig::default()).await;
    if !p.usable {
        skip(TEST, &format!("criu does not work on this host: {}", p.message));
        return;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let pid = daemon(work.path());
    let w = stateful(&work.path().join("daemon.pid"), pid);
    let mut ex = executor(state.path(), &w, CriuConfig::default()).with_criu(CriuConfig::default(), Some(p));
    let o = ex.execute(&cmd("c1", "db", "checkpoint", &[])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let dir = images(state.path()).join("host-a/db/c1");
    assert!(dir.is_dir() && !alive(pid), "dumped into {} and stopped", dir.display());
    let o = ex.execute(&cmd("r1", "db", "restore", &[("image", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(alive(pid), "restored under its pid");
    let counter = || std::fs::read_to_string(work.path().join("counter")).unwrap_or_default();
    let before = counter();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(before, counter(), "the restored process keeps counting");
    let o = ex.execute(&cmd("u1", "db", "rollback", &[("command_id", "r1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert!(!alive(pid), "the rollback of the restore stopped the restored tree");
}

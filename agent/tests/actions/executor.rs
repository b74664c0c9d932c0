//! Executor rules: host check, refusals, duplicates (also across a restart), exec hooks
//! with real processes, the bounded queue.

use std::path::Path;
use std::time::Duration;

use augur_agent::actuator::{self, Status};
use augur_agent::workload::{HooksConfig, WorkloadConfig};
use augur_proto::v1;

use crate::{cmd, executor, health_command, now_ms};

/// A workload whose start/stop/restart hooks append a line to `log` (real processes).
fn hooked(name: &str, log: &Path, health: &[&str]) -> WorkloadConfig {
    let mut w = WorkloadConfig::named(name);
    let hook = |what: &str| {
        Some(vec!["sh".to_string(), "-c".into(), format!("echo {what} {{{{instance}}}} >> {}", log.display())])
    };
    w.hooks = Some(HooksConfig {
        start: hook("start"),
        stop: hook("stop"),
        restart: hook("restart"),
        timeout: Duration::from_secs(5),
    });
    w.allowed_actions = vec!["start".into(), "stop".into(), "restart".into(), "health".into()];
    w.health = Some(health_command(health));
    w
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).map(|s| s.lines().map(str::to_owned).collect()).unwrap_or_default()
}

#[tokio::test]
async fn a_command_delivered_twice_executes_once_even_across_an_agent_restart() {
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("hooks.log");
    let ws = [hooked("web", &log, &["true"])];
    let c = cmd("c1", "web", "restart", &[]);
    {
        let mut ex = executor(state.path(), Path::new("/nonexistent"), &ws);
        let first = ex.execute(&c).await;
        assert_eq!(first.status, Status::Succeeded, "{first:?}");
        let again = ex.execute(&c).await;
        assert_eq!(again.status, Status::Duplicate, "{again:?}");
        assert_eq!(again.details["original.status"], "succeeded");
        // A retry under a new id with the same idempotency key is the same command.
        let mut retry = cmd("c1-retry", "web", "restart", &[]);
        retry.idempotency_key = c.idempotency_key.clone();
        let o = ex.execute(&retry).await;
        assert_eq!((o.status, o.details["original.command_id"].as_str()), (Status::Duplicate, "c1"));
    }
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &ws);
    let o = ex.execute(&c).await;
    assert_eq!(o.status, Status::Duplicate, "after a restart: {o:?}");
    // The retry's id names the same command (a restart has nothing to undo).
    let o = ex.execute(&cmd("r1", "web", "rollback", &[("command_id", "c1-retry")])).await;
    assert!(o.message.contains("left nothing to undo"), "{o:?}");
    assert_eq!(lines(&log), ["restart"], "the hook ran exactly once");
}

#[tokio::test]
async fn commands_for_another_host_or_that_break_a_rule_are_refused_and_run_nothing() {
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("hooks.log");
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[hooked("web", &log, &["true"])]);
    let mut other = cmd("c1", "web", "restart", &[]);
    other.target_host = "host-b".into();
    let mut late = cmd("c2", "web", "restart", &[]);
    late.deadline_ms = now_ms() - 1;
    let mut no_deadline = cmd("c3", "web", "restart", &[]);
    no_deadline.deadline_ms = 0;
    let cases: Vec<(v1::Command, &str)> = vec![
        (other, "for host \"host-b\""),
        (late, "deadline passed"),
        (no_deadline, "no deadline"),
        (cmd("c4", "db", "restart", &[]), "unknown workload \"db\""),
        (cmd("c5", "web", "resize", &[("memory_max", "1GiB")]), "does not allow resize"),
        (cmd("c6", "web", "restart", &[("force", "yes")]), "unknown argument \"force\""),
        (cmd("c7", "web", "reboot", &[]), "unknown command kind"),
        (cmd("c8", "web", "rollback", &[("command_id", "nope")]), "not in the ledger"),
    ];
    for (c, needle) in cases {
        let o = ex.execute(&c).await;
        assert_eq!(o.status, Status::Refused, "{}: {o:?}", c.id);
        assert!(o.message.contains(needle), "{}: {:?} should mention {needle:?}", c.id, o.message);
    }
    assert!(lines(&log).is_empty(), "a refused command ran a hook");
    assert!(ex.ledger().is_empty());
}

#[tokio::test]
async fn start_hook_with_failing_health_is_undone_by_the_stop_hook() {
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("hooks.log");
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[hooked("web", &log, &["false"])]);
    let o = ex.execute(&cmd("c1", "web", "start", &[("instance", "7")])).await;
    assert_eq!(o.status, Status::RolledBack, "{o:?}");
    assert_eq!(lines(&log), ["start 7", "stop 7"]);
    // A stop is not health-checked (the instance is meant to be down); its undo is a start.
    let o = ex.execute(&cmd("c2", "web", "stop", &[("instance", "7")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let o = ex.execute(&cmd("r2", "web", "rollback", &[("command_id", "c2")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(lines(&log), ["start 7", "stop 7", "stop 7", "start 7"]);
    // The health command reports the check's verdict.
    let o = ex.execute(&cmd("h1", "web", "health", &[])).await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
}

#[tokio::test]
async fn a_hook_overrunning_its_timeout_is_killed_with_its_process_group() {
    let state = tempfile::tempdir().expect("tempdir");
    let pidfile = state.path().join("hook.pid");
    let mut w = WorkloadConfig::named("web");
    w.hooks = Some(HooksConfig {
        start: None,
        stop: None,
        // The shell starts a grandchild and waits: both must die at the timeout.
        restart: Some(vec!["sh".into(), "-c".into(), format!("sleep 30 & echo $! > {}; wait", pidfile.display())]),
        timeout: Duration::from_millis(500),
    });
    w.allowed_actions = vec!["restart".into()];
    w.health = Some(health_command(&["true"]));
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[w]);
    let t = std::time::Instant::now();
    let o = ex.execute(&cmd("c1", "web", "restart", &[])).await;
    assert_eq!(o.status, Status::Failed, "{o:?}");
    assert!(o.message.contains("killed"), "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let pid = crate::read(&pidfile);
    let gone = (0..100).any(|_| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(str::to_owned)));
        let dead = state.as_deref().is_none_or(|s| s == "Z");
        if !dead {
            std::thread::sleep(Duration::from_millis(20));
        }
        dead
    });
    assert!(gone, "the hook's grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn a_full_queue_refuses_with_agent_busy_and_counts_it() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut w = WorkloadConfig::named("web");
    w.hooks = Some(HooksConfig {
        start: None,
        stop: None,
        restart: Some(vec!["sleep".into(), "0.5".into()]),
        timeout: Duration::from_secs(5),
    });
    w.allowed_actions = vec!["restart".into()];
    w.health = Some(health_command(&["true"]));
    let mut cfg = crate::config(state.path(), Path::new("/nonexistent"));
    cfg.queue = 1;
    let ex = actuator::Executor::open(cfg, &[w], std::sync::Arc::new(actuator::ProcessRunner)).expect("open");
    let h = actuator::spawn(ex).expect("executor thread starts");
    for i in 0..4 {
        h.submit(cmd(&format!("c{i}"), "web", "restart", &[]));
    }
    // One runs, one waits: at least two of four are refused at once.
    assert!(h.busy_refusals() >= 2, "busy refusals: {}", h.busy_refusals());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.outbox.pending() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reports = h.outbox.after(0);
    assert_eq!(reports.len(), 4, "{reports:?}");
    let busy = reports.iter().filter(|(_, r)| r.message.contains("agent busy")).count() as u64;
    assert_eq!(busy, h.busy_refusals());
    assert!(
        reports
            .iter()
            .all(|(_, r)| r.status == v1::CommandStatus::Refused as i32
                || r.status == v1::CommandStatus::Succeeded as i32)
    );
}

#[tokio::test]
async fn a_started_instance_is_checked_on_its_own_port() {
    let state = tempfile::tempdir().expect("tempdir");
    let log = state.path().join("hooks.log");
    let mut w = hooked("web", &log, &["true"]);
    w.health = Some(augur_agent::workload::HealthConfig {
        http: None,
        tcp: Some("127.0.0.1:{{instance}}".into()),
        command: None,
        timeout: Duration::from_secs(1),
        attempts: 2,
        interval: Duration::from_millis(50),
    });
    let mut ex = executor(state.path(), Path::new("/nonexistent"), &[w]);
    let up = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_port = up.local_addr().expect("addr").port().to_string();
    let down_port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port().to_string();
    let o = ex.execute(&cmd("c1", "web", "start", &[("instance", &up_port)])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let o = ex.execute(&cmd("c2", "web", "start", &[("instance", &down_port)])).await;
    assert_eq!(o.status, Status::RolledBack, "{o:?}");
    assert!(o.details["health"].contains(&down_port), "{o:?}");
    assert_eq!(lines(&log), [format!("start {up_port}"), format!("start {down_port}"), format!("stop {down_port}")]);
    // The health command has no instance to check.
    let o = ex.execute(&cmd("h1", "web", "health", &[])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
}

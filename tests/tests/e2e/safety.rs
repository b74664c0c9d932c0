//! Safety of autonomous action end to end (real agent, real aggregator with the shipped
//! models, real leaking workloads in real cgroups):
//!
//! - half of the declared workloads leak at once: no more actions start than the
//!   configured limit, and a `halt` audit record says why automation stopped;
//! - a dry-run policy changes nothing (the cgroup limit never moves, the leak is
//!   OOM-killed as if augur were not there) and records exactly what it would have done:
//!   the plan, and the agent's DRY_RUN answer for each command.
//!
//! (A command delivered twice executing once, and a command for another host being
//! refused, are covered by the agent's and the Orchestrator's tests.)

use std::time::{Duration, Instant};

use augur_aggregator::remediate::audit::{AuditKind, AuditRecord};
use augur_tests::{Proc, TestCgroup, bin, free_port};

use crate::remediate_oom::{
    LogsOnFailure, agent_toml, audit_trail, manifest, memory_limit, oom_kills, preconditions, start_aggregator,
    start_leak, workload_toml,
};

const LIMIT: u64 = 256 << 20;
const LEAK_MIB_PER_S: u64 = 2;
const LEAK_TOTAL_MIB: u64 = 320;

fn policy(mode: &str) -> String {
    format!(
        "[[remediation.policies]]\nname = \"oom-{mode}\"\nfailure_type = \"memory_exhaustion\"\nmode = \"{mode}\"\n\
         threshold = 0.86\nthreshold_min = 0.6\nthreshold_max = 0.95\nactions = [\"resize_memory\"]\n\
         memory_step = \"64MiB\"\nmemory_cap = \"1GiB\"\n"
    )
}

fn show(trail: &[AuditRecord]) -> Vec<String> {
    trail.iter().map(|r| format!("{} {} {} {}", r.seq, r.kind.as_str(), r.resource, r.detail)).collect()
}

#[test]
fn half_the_fleet_failing_at_once_halts_after_at_most_the_configured_actions() {
    const TEST: &str = "half_the_fleet_failing_at_once_halts_after_at_most_the_configured_actions";
    let Some(fs) = preconditions(TEST) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnFailure(dir.path());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let host = "e2e-halt";
    let top = format!("augur-e2e-halt-{}", std::process::id());
    // Eight declared workloads; four of them leak at the same rate from the same moment.
    let names: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    let cgs: Vec<TestCgroup> =
        names.iter().map(|n| TestCgroup::create(fs.clone(), &top, n, LIMIT).expect("create cgroup")).collect();
    // One action at a time; halt when more than 20% (and at least 2) are predicted failing.
    let config = format!(
        "[predict]\nmodels = \"{}\"\n[remediation]\nseed = 3\n\
         [remediation.safety]\nmax_concurrent = 1\nmax_concurrent_per_set = 1\ncooldown = \"10m\"\n\
         halt_share = 0.2\nhalt_min_failing = 2\naction_deadline = \"30s\"\n{}",
        manifest().display(),
        policy("auto")
    );
    let agg = start_aggregator(dir.path(), port, &config);
    let workloads: String = names.iter().zip(&cgs).map(|(n, cg)| workload_toml(&fs, n, &cg.rel)).collect();
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(&agent_cfg, agent_toml(host, dir.path(), &url, &workloads)).expect("agent config");
    let mut agent = Proc::spawn("agent", &bin("augur-agent"), &["--config", agent_cfg.to_str().unwrap()], dir.path());

    // The healthy half: a process in each cgroup holding a little memory.
    let mut idle: Vec<std::process::Child> = cgs[4..]
        .iter()
        .enumerate()
        .map(|(i, cg)| start_leak(cg, 4, 4, &dir.path().join(format!("idle-{i}"))))
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    let mut leaks: Vec<std::process::Child> = cgs[..4]
        .iter()
        .enumerate()
        .map(|(i, cg)| start_leak(cg, LEAK_MIB_PER_S, LEAK_TOTAL_MIB, &dir.path().join(format!("done-{i}"))))
        .collect();
    let started = Instant::now();
    let mut raised: Vec<Option<f64>> = vec![None; 8];
    let mut ended: Vec<Option<f64>> = vec![None; 4];
    loop {
        let t = started.elapsed().as_secs_f64();
        for (i, cg) in cgs.iter().enumerate() {
            if raised[i].is_none() && memory_limit(&fs, &cg.rel).is_some_and(|l| l != LIMIT) {
                raised[i] = Some(t);
            }
        }
        for (i, l) in leaks.iter_mut().enumerate() {
            if ended[i].is_none()
                && (l.try_wait().expect("wait").is_some() || dir.path().join(format!("done-{i}")).exists())
            {
                ended[i] = Some(t);
            }
        }
        if ended.iter().all(Option::is_some) {
            break;
        }
        assert!(t < 400.0, "timed out: leaks ended {ended:?}, limits raised {raised:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let kills: Vec<u64> = cgs.iter().map(|cg| oom_kills(&fs, &cg.rel)).collect();
    for c in leaks.iter_mut().chain(idle.iter_mut()) {
        let _ = c.kill();
        let _ = c.wait();
    }
    agent.terminate(Duration::from_secs(10));
    let trail = audit_trail(agg, dir.path());
    let shown = show(&trail);

    let changed = raised.iter().filter(|r| r.is_some()).count();
    let started_decisions: Vec<&AuditRecord> =
        trail.iter().filter(|r| r.kind == AuditKind::Decision && r.detail["started"] == true).collect();
    let halts: Vec<&AuditRecord> = trail.iter().filter(|r| r.kind == AuditKind::Halt).collect();
    println!(
        "{TEST}: limits changed on {changed} of 8 cgroups {raised:?}; {} actions started; {} halt records; \
         OOM kills per workload {kills:?}",
        started_decisions.len(),
        halts.len()
    );
    assert!(started_decisions.len() <= 1, "at most max_concurrent = 1 action started: {shown:#?}");
    assert!(changed <= 1, "at most one cgroup was resized: {raised:?}");
    assert!(raised[4..].iter().all(Option::is_none), "the healthy workloads were never touched");
    let halt = halts.iter().find(|h| h.detail["state"] == "halted").unwrap_or_else(|| panic!("a halt: {shown:#?}"));
    assert_eq!(halt.detail["known"], 8, "{}", halt.detail);
    let failing = halt.detail["failing"].as_u64().unwrap();
    assert!(failing >= 2 && failing as f64 / 8.0 > 0.2, "{}", halt.detail);
    let listed = halt.detail["failing_resources"].as_array().unwrap();
    assert!(
        listed.iter().all(|r| ["w0", "w1", "w2", "w3"].iter().any(|w| r.as_str().unwrap().ends_with(&format!("/{w}")))),
        "only leaking workloads are counted as failing: {}",
        halt.detail
    );
    // Every decision after the halt was refused for it.
    for d in trail.iter().filter(|r| r.kind == AuditKind::Decision && r.seq > halt.seq) {
        if d.detail["started"] == false {
            assert!(d.detail["safety"].as_str().unwrap_or_default().contains("halted"), "{}", d.detail);
        }
        assert_ne!(d.detail["started"], true, "nothing starts while halted: {}", d.detail);
    }
}

#[test]
fn dry_run_changes_nothing_and_records_what_it_would_have_done() {
    const TEST: &str = "dry_run_changes_nothing_and_records_what_it_would_have_done";
    let Some(fs) = preconditions(TEST) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnFailure(dir.path());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let host = "e2e-dry";
    let top = format!("augur-e2e-dry-{}", std::process::id());
    let cg = TestCgroup::create(fs.clone(), &top, "leaky", LIMIT).expect("create cgroup");
    let config =
        format!("[predict]\nmodels = \"{}\"\n[remediation]\nseed = 5\n{}", manifest().display(), policy("dry_run"));
    let agg = start_aggregator(dir.path(), port, &config);
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(&agent_cfg, agent_toml(host, dir.path(), &url, &workload_toml(&fs, "leaky", &cg.rel)))
        .expect("agent config");
    let mut agent = Proc::spawn("agent", &bin("augur-agent"), &["--config", agent_cfg.to_str().unwrap()], dir.path());
    std::thread::sleep(Duration::from_secs(10));
    let mut leak = start_leak(&cg, LEAK_MIB_PER_S, LEAK_TOTAL_MIB, &dir.path().join("done"));
    let started = Instant::now();
    let mut limits = std::collections::BTreeSet::new();
    let status = loop {
        if let Some(l) = memory_limit(&fs, &cg.rel) {
            limits.insert(l);
        }
        if let Some(st) = leak.try_wait().expect("wait for the leak") {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(400), "the leak neither ended nor was killed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let kills = oom_kills(&fs, &cg.rel);
    std::thread::sleep(Duration::from_secs(3)); // the agent's DRY_RUN reports reach the audit trail
    agent.terminate(Duration::from_secs(10));
    let trail = audit_trail(agg, dir.path());
    let shown = show(&trail);

    use std::os::unix::process::ExitStatusExt as _;
    println!(
        "{TEST}: limit values seen {limits:?}; leak ended after {:.1} s by signal {:?}; {kills} OOM kills",
        started.elapsed().as_secs_f64(),
        status.signal()
    );
    assert_eq!(limits.into_iter().collect::<Vec<_>>(), vec![LIMIT], "the limit never changed");
    assert_eq!(status.signal(), Some(9), "nothing protected the workload: the kernel killed it");
    assert!(kills >= 1);
    let decision = trail
        .iter()
        .find(|r| r.kind == AuditKind::Decision)
        .unwrap_or_else(|| panic!("a dry-run decision: {shown:#?}"));
    assert_eq!(decision.detail["dry_run"], true, "{}", decision.detail);
    assert_eq!(decision.detail["plan"]["action"], "resize", "the exact plan: {}", decision.detail);
    let would = decision.detail["plan"]["resize"]["memory_max"].as_u64().expect("the size it would have set");
    assert!(would > LIMIT, "{}", decision.detail);
    let id = &decision.action_id;
    let outcome = trail
        .iter()
        .find(|r| &r.action_id == id && r.kind == AuditKind::Outcome && r.detail["phase"] == "dry_run")
        .unwrap_or_else(|| panic!("the dry run's outcome: {shown:#?}"));
    assert_eq!(outcome.detail["ok"], true, "{}", outcome.detail);
    let report = &outcome.detail["detail"];
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["status"], "dry_run", "the agent answered DRY_RUN: {report}");
    let step = &report["steps"][0];
    assert_eq!(step["kind"], "resize", "{report}");
    assert_eq!(step["outcome"]["status"], "dry_run", "{report}");
    // The agent's answer names the limit it would have written.
    assert!(step["outcome"].to_string().contains(&would.to_string()), "the agent says what it would do: {step}");
    assert!(
        !trail.iter().any(|r| r.kind == AuditKind::Outcome && r.detail["phase"] == "executed"),
        "nothing was executed: {shown:#?}"
    );
}

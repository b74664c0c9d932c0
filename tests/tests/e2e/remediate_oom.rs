//! Predictive OOM avoidance end to end: two real leaking workloads in memory-limited
//! cgroups under the real agent (declared as workloads that allow `resize`), the real
//! aggregator with the shipped models (models/manifest.toml) and a `[remediation]`
//! config. Both leak the same amount at the same rate and then hold it (the leak stops by
//! itself, above the original limit). Automation is off for one (policy mode `off`): the
//! kernel OOM-kills it. It is on for the other (mode `auto`, resize only): the aggregator
//! raises its limit before the OOM, and it survives its whole leak with 0 OOM kills. The
//! audit trail (read from the aggregator's store after it stopped, hash chain verified)
//! shows the prediction, the decision, the command and the verified outcome.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use augur_aggregator::remediate::audit::{AuditKind, AuditLog, AuditQuery, AuditRecord};
use augur_aggregator::storage::rocks::RocksStore;
use augur_aggregator::storage::{Store, StoreOptions};
use augur_tests::{CgroupFs, Proc, TestCgroup, bin, free_port, is_root, repo_root, skip, wait_for};

const TEST: &str = "resize_before_the_oom_keeps_the_leaking_workload_alive";
/// The workloads' memory limit, leak rate and how much each leaks before holding.
const LIMIT: u64 = 256 << 20;
const LEAK_MIB_PER_S: u64 = 2;
const LEAK_TOTAL_MIB: u64 = 320;
/// How long the surviving workload must hold its memory after the leak stopped.
const HOLD_S: u64 = 15;
/// Outcome verification delay configured for the test (the horizon would be 2 min).
const VERIFY_AFTER_S: u64 = 20;

/// The memory controller directory of a test cgroup.
pub(crate) fn memory_dir(fs: &CgroupFs, rel: &str) -> PathBuf {
    match fs {
        CgroupFs::V1(ms) => ms.iter().find(|(c, _)| c == "memory").expect("memory controller").1.join(rel),
        CgroupFs::V2(m) => m.join(rel),
    }
}

/// The cgroup's OOM-kill count (v1 `memory.oom_control`, v2 `memory.events`).
pub(crate) fn oom_kills(fs: &CgroupFs, rel: &str) -> u64 {
    let file = match fs {
        CgroupFs::V1(_) => "memory.oom_control",
        CgroupFs::V2(_) => "memory.events",
    };
    std::fs::read_to_string(memory_dir(fs, rel).join(file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// The cgroup's memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`).
pub(crate) fn memory_limit(fs: &CgroupFs, rel: &str) -> Option<u64> {
    let file = match fs {
        CgroupFs::V1(_) => "memory.limit_in_bytes",
        CgroupFs::V2(_) => "memory.max",
    };
    std::fs::read_to_string(memory_dir(fs, rel).join(file)).ok()?.trim().parse().ok()
}

/// A `[[workload]]` table for a test cgroup: resize and health checks allowed; healthy while
/// a process is in it.
pub(crate) fn workload_toml(fs: &CgroupFs, name: &str, rel: &str) -> String {
    let procs = memory_dir(fs, rel).join("cgroup.procs");
    format!(
        "[[workload]]\nname = \"{name}\"\ncgroup = \"{rel}\"\nallowed_actions = [\"resize\", \"health\"]\n\
         [workload.health]\ncommand = [\"sh\", \"-c\", \"grep -q . {}\"]\ntimeout = \"2s\"\nattempts = 1\n\
         [workload.limits]\nmemory_max = \"1GiB\"\nmemory_margin = \"16MiB\"\ncpu_max = 0\n",
        procs.display()
    )
}

/// Agent config: no discovery, only the declared workloads.
pub(crate) fn agent_toml(host: &str, dir: &Path, url: &str, workloads: &str) -> String {
    format!(
        "host_id = \"{host}\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n[aggregator]\nurl = \"{url}\"\n\
         [containers]\ndocker = false\ncontainerd = false\nkubernetes = false\nsystemd_services = false\n\n{workloads}",
        dir.join("agent-state").display()
    )
}

/// Starts a process in the cgroup that leaks `total_mib` at `mib_per_s` of touched memory,
/// writes `done` when it holds it all, then holds it until killed.
pub(crate) fn start_leak(cg: &TestCgroup, mib_per_s: u64, total_mib: u64, done: &Path) -> std::process::Child {
    let script = format!(
        "{}exec python3 -c 'import time\nheld = []\nfor i in range({total_mib} // {mib_per_s}):\n    \
         held.append(bytearray(b\"x\" * ({mib_per_s} << 20)))\n    time.sleep(1)\n\
         open(\"{}\", \"w\").write(\"held\")\nwhile True:\n    time.sleep(60)'",
        cg.enter_snippet(),
        done.display()
    );
    Command::new("/bin/sh").args(["-c", &script]).spawn().expect("start the leak")
}

/// Starts the aggregator with `config` (TOML text after `listen` and `data_dir`).
pub(crate) fn start_aggregator(dir: &Path, port: u16, config: &str) -> Proc {
    let cfg = dir.join("aggregator.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{config}", dir.join("data").display()),
    )
    .expect("aggregator config");
    let ready = dir.join("ready");
    let agg = Proc::spawn(
        "aggregator",
        &bin("augur-aggregator"),
        &["--config", cfg.to_str().unwrap(), "--ready-file", ready.to_str().unwrap()],
        dir,
    );
    wait_for("aggregator ready", Duration::from_secs(30), || ready.exists().then_some(()));
    agg
}

/// Stops the aggregator and reads its whole audit trail, checking the hash chain.
pub(crate) fn audit_trail(mut agg: Proc, dir: &Path) -> Vec<AuditRecord> {
    let st = agg.terminate(Duration::from_secs(20));
    assert!(st.success(), "the aggregator stopped cleanly: {st:?}");
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(RocksStore::open(&dir.join("data"), StoreOptions::default()).expect("open the store"));
    let log = AuditLog::open(store).expect("open the audit trail");
    let report = log.verify().expect("verify the audit trail");
    assert!(report.ok(), "the audit hash chain is intact: {report:?}");
    log.query(&AuditQuery { limit: 100_000, ..AuditQuery::default() }).expect("query the audit trail")
}

/// Prints the tail of the aggregator's and agent's logs when the test fails.
pub(crate) struct LogsOnFailure<'a>(pub &'a Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for name in ["aggregator.log", "agent.log"] {
            let text = std::fs::read_to_string(self.0.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {name} ---");
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// Precondition checks shared by the closed-loop tests; `None` means skipped.
pub(crate) fn preconditions(test: &str) -> Option<CgroupFs> {
    if !is_root() && skip(test, "needs root to create cgroups") {
        return None;
    }
    let Some(fs) = CgroupFs::detect() else {
        skip(test, "no cgroup hierarchy with the memory controller");
        return None;
    };
    if let Err(e) = augur_aggregator::model::runtime::find_library(None) {
        skip(test, &format!("no ONNX Runtime library: {e}"));
        return None;
    }
    Some(fs)
}

pub(crate) fn manifest() -> PathBuf {
    let m = repo_root().join("models/manifest.toml");
    assert!(m.exists(), "the shipped models are missing: {}", m.display());
    m
}

#[test]
fn resize_before_the_oom_keeps_the_leaking_workload_alive() {
    let Some(fs) = preconditions(TEST) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = LogsOnFailure(dir.path());
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let host = "e2e-oom";
    let top = format!("augur-e2e-oom-{}", std::process::id());
    let off = TestCgroup::create(fs.clone(), &top, "leak-off", LIMIT).expect("create cgroup");
    let on = TestCgroup::create(fs.clone(), &top, "leak-on", LIMIT).expect("create cgroup");

    // Two one-member sets so one policy covers each workload. Both leak at once; three
    // failing resources would be needed to halt (the halt has its own test).
    let remediation = format!(
        "[predict]\nmodels = \"{}\"\n\
         [remediation]\nseed = 1\n\
         [remediation.safety]\nmax_concurrent = 2\nmax_concurrent_per_set = 1\ncooldown = \"10m\"\n\
         halt_share = 0.3\nhalt_min_failing = 3\naction_deadline = \"30s\"\n\
         [remediation.outcome]\nverify_after = \"{VERIFY_AFTER_S}s\"\nhealth_check = true\n\
         [[remediation.sets]]\nname = \"off\"\nmembers = [{{ host = \"{host}\", workload = \"leak-off\" }}]\n\
         [[remediation.sets]]\nname = \"on\"\nmembers = [{{ host = \"{host}\", workload = \"leak-on\" }}]\n\
         [[remediation.policies]]\nname = \"automation-off\"\nset = \"off\"\nfailure_type = \"memory_exhaustion\"\n\
         mode = \"off\"\nthreshold = 0.86\nthreshold_min = 0.6\nthreshold_max = 0.95\n\
         [[remediation.policies]]\nname = \"oom-resize\"\nset = \"on\"\nfailure_type = \"memory_exhaustion\"\n\
         mode = \"auto\"\nthreshold = 0.86\nthreshold_min = 0.6\nthreshold_max = 0.95\n\
         actions = [\"resize_memory\"]\nmemory_step = \"64MiB\"\nmemory_cap = \"1GiB\"\nsafety_factor = 1.5\n",
        manifest().display()
    );
    let agg = start_aggregator(dir.path(), port, &remediation);
    let workloads = workload_toml(&fs, "leak-off", &off.rel) + &workload_toml(&fs, "leak-on", &on.rel);
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(&agent_cfg, agent_toml(host, dir.path(), &url, &workloads)).expect("agent config");
    let mut agent = Proc::spawn("agent", &bin("augur-agent"), &["--config", agent_cfg.to_str().unwrap()], dir.path());

    // Let the agent see both cgroups idle first, then leak in both at once.
    std::thread::sleep(Duration::from_secs(10));
    let (off_done, on_done) = (dir.path().join("off-done"), dir.path().join("on-done"));
    let started = Instant::now();
    let mut w_off = start_leak(&off, LEAK_MIB_PER_S, LEAK_TOTAL_MIB, &off_done);
    let mut w_on = start_leak(&on, LEAK_MIB_PER_S, LEAK_TOTAL_MIB, &on_done);
    let mut off_exit: Option<(f64, std::process::ExitStatus)> = None;
    let mut resized: Option<(f64, u64)> = None;
    let mut on_held_at: Option<f64> = None;
    let leak_s = (LEAK_TOTAL_MIB / LEAK_MIB_PER_S) as f64;
    loop {
        let t = started.elapsed().as_secs_f64();
        if off_exit.is_none()
            && let Some(st) = w_off.try_wait().expect("wait for the unprotected leak")
        {
            off_exit = Some((t, st));
        }
        if let Some(st) = w_on.try_wait().expect("wait for the protected leak") {
            panic!(
                "the protected workload died at {t:.1} s ({st:?}); OOM kills {}; limit raised: {resized:?}",
                oom_kills(&fs, &on.rel)
            );
        }
        if resized.is_none()
            && let Some(l) = memory_limit(&fs, &on.rel).filter(|l| *l > LIMIT)
        {
            resized = Some((t, l));
        }
        if on_held_at.is_none() && on_done.exists() {
            on_held_at = Some(t);
        }
        let done = off_exit.is_some()
            && on_held_at.is_some_and(|h| t >= h + HOLD_S as f64)
            && resized.is_some_and(|(r, _)| t >= r + VERIFY_AFTER_S as f64 + 5.0);
        if done {
            break;
        }
        assert!(
            t < leak_s + 240.0,
            "timed out: unprotected exit {off_exit:?}, limit raised {resized:?}, leak held at {on_held_at:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kills_on = oom_kills(&fs, &on.rel);
    let kills_off = oom_kills(&fs, &off.rel);
    let _ = w_on.kill();
    let _ = w_on.wait();
    agent.terminate(Duration::from_secs(10));
    let trail = audit_trail(agg, dir.path());

    use std::os::unix::process::ExitStatusExt as _;
    let (off_t, off_st) = off_exit.expect("the loop waits for it");
    let (resize_t, new_limit) = resized.expect("the loop waits for it");
    println!(
        "{TEST}: automation off: OOM-killed at {off_t:.1} s ({kills_off} OOM kills); automation on: limit raised \
         {} -> {} MiB at {resize_t:.1} s, leak of {LEAK_TOTAL_MIB} MiB held from {:.1} s, {kills_on} OOM kills; \
         wall time {:.0} s",
        LIMIT >> 20,
        new_limit >> 20,
        on_held_at.unwrap_or_default(),
        started.elapsed().as_secs_f64() + 10.0
    );
    assert_eq!(off_st.signal(), Some(9), "automation off: the kernel killed the workload: {off_st:?}");
    assert!(kills_off >= 1, "automation off: the cgroup counted an OOM kill");
    assert!(!off_done.exists(), "automation off: the workload never held its whole leak");
    assert_eq!(kills_on, 0, "automation on: no OOM kill");
    assert!(resize_t < off_t, "the limit was raised ({resize_t:.1} s) before the same leak OOM-killed ({off_t:.1} s)");
    assert!(new_limit >= (LEAK_TOTAL_MIB + 16) << 20, "the new limit {new_limit} covers the leak");

    // The audit trail: prediction, decision, command, verified outcome under one action id.
    let decisions: Vec<&AuditRecord> = trail.iter().filter(|r| r.kind == AuditKind::Decision).collect();
    let shown: Vec<String> =
        trail.iter().map(|r| format!("{} {} {} {}", r.seq, r.kind.as_str(), r.resource, r.detail)).collect();
    assert!(
        decisions.iter().all(|d| d.resource == "leak-on"),
        "no decision for the workload whose automation is off: {shown:#?}"
    );
    let decision = decisions
        .iter()
        .find(|d| d.detail["started"] == true)
        .unwrap_or_else(|| panic!("a started decision for leak-on: {shown:#?}"));
    assert_eq!(decision.detail["policy"], "oom-resize");
    assert_eq!(decision.detail["chosen"], "resize_memory");
    assert_eq!(
        decision.detail["plan"]["resize"]["memory_max"].as_u64(),
        Some(new_limit),
        "the plan is what was applied"
    );
    let id = &decision.action_id;
    let of = |kind: AuditKind| -> Vec<&AuditRecord> {
        trail.iter().filter(|r| &r.action_id == id && r.kind == kind).collect()
    };
    let pred = of(AuditKind::Prediction);
    assert_eq!(pred.len(), 1, "{shown:#?}");
    let p = &pred[0].detail;
    assert_eq!(p["model_name"], "memory-exhaustion-2m", "the model with the operating threshold decided: {p}");
    assert!(!p["model_version"].as_str().unwrap_or_default().is_empty());
    assert!(p["probability"].as_f64().unwrap() >= 0.86, "{p}");
    assert!(!p["top_features"].as_array().unwrap().is_empty(), "the prediction is explained: {p}");
    let commands: Vec<&AuditRecord> = trail
        .iter()
        .filter(|r| &r.action_id == id && matches!(r.kind, AuditKind::Command | AuditKind::WorkflowStep))
        .collect();
    let cmd_text = commands.iter().map(|r| r.detail.to_string()).collect::<Vec<_>>().join("\n");
    assert!(cmd_text.contains("resize"), "the resize command is recorded: {cmd_text}");
    assert!(cmd_text.to_lowercase().contains("succeeded"), "and its report: {cmd_text}");
    let outcomes = of(AuditKind::Outcome);
    let executed = outcomes.iter().find(|o| o.detail["phase"] == "executed").expect("execution outcome");
    assert_eq!(executed.detail["ok"], true, "{}", executed.detail);
    let verified = outcomes
        .iter()
        .find(|o| o.detail["phase"] == "verified")
        .unwrap_or_else(|| panic!("a verified outcome: {shown:#?}"));
    assert_eq!(verified.detail["success"], true, "{}", verified.detail);
    assert_eq!(verified.detail["healthy"], true, "the health check ran and passed: {}", verified.detail);
    assert_eq!(verified.detail["failures_since"], 0);
    let seqs: Vec<u64> = [pred[0].seq, decision.seq, commands[0].seq, executed.seq, verified.seq].to_vec();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "prediction, decision, command, outcome in order: {seqs:?}");
}

//! Zero-drop warm-standby failover, decided by the closed loop itself.
//!
//! Hosts (network namespaces): `app-a` runs the primary instance of the test app in a
//! memory-limited cgroup, `app-b` a warm standby (running, but in maintenance in HAProxy),
//! `lb` a real HAProxy; each has the real agent. The real aggregator (root namespace) serves
//! the shipped memory-exhaustion models (models/manifest.toml) with an `auto` policy for
//! the resource set: memory exhaustion of a member -> promote the standby. Real wrk loads
//! HAProxy throughout.
//!
//! The trigger is honest: the primary really leaks (2 MiB/s of touched memory in its own
//! process, charged to its cgroup), the agent samples the cgroup, the model predicts the
//! exhaustion, and the decision engine chooses and runs the promotion on its own: standby
//! health-checked and made ready, primary drained, then the primary restarted (its remedy;
//! the restart ends the leak). No `augurctl remediate` is involved. The test asserts wrk saw
//! 0 failed requests (non-2xx or socket errors) across the failover, the standby serves
//! afterwards, the primary was never OOM-killed, and the audit trail links the prediction,
//! the decision, the workflow and the outcome under one action id.
//!
//! Two more tests use the same stack: with the policy in `approve` mode the same decision
//! waits in `augurctl pending` (nothing moves) until `augurctl approve` starts it; and an
//! operator's `augurctl remediate --action promote_standby` (after a `--dry-run` that shows
//! the same steps and changes nothing) fails over under load with 0 failed requests.

use std::path::Path;
use std::time::{Duration, Instant};

use augur_tests::augurctl_json as ctl;
use augur_tests::netns::{
    self, AppInstance, BackendServer, Haproxy, NetLab, Wrk, WrkOptions, haproxy_workload_toml, start_agent,
    start_aggregator,
};
use augur_tests::{CgroupFs, TestCgroup, is_root, repo_root, skip, wait_for, wait_for_connected_agents};
use serde_json::Value;

const TEST: &str = "predicted_memory_exhaustion_fails_over_to_the_standby_without_a_failed_request";
/// The primary's memory limit and leak rate: the kernel would OOM-kill it about 2 min in.
const LIMIT: u64 = 256 << 20;
const LEAK_MIB_PER_S: u64 = 2;

fn oom_kills(fs: &CgroupFs, cg: &TestCgroup) -> u64 {
    let file = match fs {
        CgroupFs::V1(ms) => ms
            .iter()
            .find(|(c, _)| c == "memory")
            .expect("memory controller")
            .1
            .join(&cg.rel)
            .join("memory.oom_control"),
        CgroupFs::V2(m) => m.join(&cg.rel).join("memory.events"),
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn tail(dir: &Path, name: &str, n: usize) -> String {
    let s = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    format!("--- {name} ---\n{}", lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// The failover stack: aggregator, primary (in a memory-limited cgroup) and standby app
/// hosts with agents, HAProxy with its agent.
struct Stack {
    dir: tempfile::TempDir,
    url: String,
    hap: Haproxy,
    a: AppInstance,
    b: AppInstance,
    _procs: Vec<augur_tests::Proc>,
    // Dropped last: the cgroup (its processes killed) and the lab (everything left in it).
    cg: TestCgroup,
    _lab: NetLab,
}

impl Stack {
    /// With `models`, the aggregator serves them under a promote policy in `mode`.
    fn start(fs: &CgroupFs, models: Option<(&Path, &str)>) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut lab = NetLab::new().expect("lab network");
        let (ha, hb, hl) =
            (lab.add_host("app-a").unwrap(), lab.add_host("app-b").unwrap(), lab.add_host("lb").unwrap());
        let mode = models.map_or("none", |m| m.1);
        let top = format!("augur-e2e-failover-{}-{mode}", std::process::id());
        let cg = TestCgroup::create(fs.clone(), &top, "web-a", LIMIT).expect("create the primary's cgroup");
        let app = Path::new(env!("CARGO_BIN_EXE_augur-test-app"));
        let a = AppInstance::new(&ha, 8080, app, d, &cg.paths());
        let b = AppInstance::new(&hb, 8080, app, d, &[]);
        a.start();
        b.start();
        let servers = [
            BackendServer { name: "a".into(), address: a.address(), disabled: false },
            // The warm standby runs but takes no traffic until promoted.
            BackendServer { name: "b".into(), address: b.address(), disabled: true },
        ];
        let hap = Haproxy::start(&hl, 8080, "app", &servers, d);
        let mut toml = String::from(SET);
        if let Some((m, mode)) = models {
            let policy = POLICY.replace("@MODE@", mode);
            toml = format!("[predict]\nmodels = \"{}\"\n{toml}{policy}", m.display());
        }
        let (agg, url) = start_aggregator(&lab, d, &toml);
        let allowed = ["health", "restart", "start", "stop"];
        let procs = vec![
            agg,
            start_agent(&ha, &url, d, &a.workload_toml("web", &allowed, &format!("cgroup = \"{}\"", cg.rel))),
            start_agent(&hb, &url, d, &b.workload_toml("web", &allowed, "")),
            start_agent(&hl, &url, d, &haproxy_workload_toml("haproxy", &hap)),
        ];
        let st = Stack { dir, url, hap, a, b, _procs: procs, cg, _lab: lab };
        wait_for("a UP in HAProxy", Duration::from_secs(15), || {
            (st.hap.servers().ok()?["a"].status == "UP").then_some(())
        });
        wait_for_connected_agents(&st.url, 3, Duration::from_secs(30));
        st
    }

    fn logs(&self) -> String {
        ["aggregator", "agent-app-a", "agent-app-b", "agent-lb", "app-app-a"]
            .iter()
            .map(|n| tail(self.dir.path(), n, 30))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The resource set: primary a, warm standby b, behind HAProxy on lb.
const SET: &str = r#"[remediation]
seed = 7
[remediation.safety]
action_deadline = "60s"
[[remediation.sets]]
name = "web"
stateless = true
lb = { host = "lb", workload = "haproxy", backend = "app" }
members = [
  { host = "app-a", workload = "web", server = "a" },
  { host = "app-b", workload = "web", server = "b", standby = true },
]
"#;

/// Memory exhaustion of a member of the set: promote its standby (mode filled in per test).
const POLICY: &str = r#"[[remediation.policies]]
name = "web-memory"
failure_type = "memory_exhaustion"
set = "web"
mode = "@MODE@"
threshold = 0.5
threshold_min = 0.4
threshold_max = 0.9
actions = ["promote_standby"]
"#;

#[test]
fn predicted_memory_exhaustion_fails_over_to_the_standby_without_a_failed_request() {
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    if !is_root() && skip(TEST, "needs root for cgroups") {
        return;
    }
    let Some(fs) = CgroupFs::detect() else {
        skip(TEST, "no cgroup hierarchy with the memory controller");
        return;
    };
    if let Err(e) = augur_aggregator::model::runtime::find_library(None) {
        skip(TEST, &format!("no ONNX Runtime library: {e}"));
        return;
    }
    let manifest = repo_root().join("models/manifest.toml");
    assert!(manifest.exists(), "the shipped models are missing: {}", manifest.display());

    let st = Stack::start(&fs, Some((&manifest, "auto")));
    let (d, hap, a, cg, url) = (st.dir.path(), &st.hap, &st.a, &st.cg, st.url.as_str());
    let logs = || st.logs();
    let fs = &fs;
    // Load first; the agent sees the primary idle for a while, then the leak starts.
    let wrk = Wrk::start(
        "wrk-failover",
        &hap.url(),
        &WrkOptions { duration: Duration::from_secs(400), ..Default::default() },
        d,
    );
    std::thread::sleep(Duration::from_secs(10));
    a.post(&format!("/admin/leak?mib_per_s={LEAK_MIB_PER_S}")).expect("start the leak");
    let leak_started = Instant::now();

    // The closed loop acts on its own: wait until HAProxy shows the standby promoted.
    let promoted = {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let s = hap.servers().expect("show stat");
            if s["b"].status.starts_with("UP") && s["a"].status != "UP" {
                break Some(s);
            }
            if Instant::now() > deadline || oom_kills(fs, cg) > 0 {
                break None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let Some(at_switch) = promoted else {
        let _ = wrk.stop();
        panic!(
            "no promotion within {:?} of the leak (OOM kills: {}); HAProxy: {:?}\n{}",
            leak_started.elapsed(),
            oom_kills(fs, cg),
            hap.servers().ok(),
            logs()
        );
    };
    let switched_after = leak_started.elapsed();
    // Let the remedy (restart of the drained primary) finish and the standby carry load.
    std::thread::sleep(Duration::from_secs(8));
    let report = wrk.stop().expect("wrk report");
    let s = hap.servers().expect("show stat");
    println!(
        "{TEST}: standby promoted {:.1} s after the leak began; wrk {} requests, {} failed \
         ({} non-2xx; socket errors c{} r{} w{} t{}); served by a {} (at switch {}) b {}",
        switched_after.as_secs_f64(),
        report.requests,
        report.failed(),
        report.non_2xx_3xx,
        report.connect_errors,
        report.read_errors,
        report.write_errors,
        report.timeouts,
        s["a"].http_2xx,
        at_switch["a"].http_2xx,
        s["b"].http_2xx
    );
    assert!(report.requests > 10_000, "enough load to judge: {}", report.raw);
    assert_eq!(report.failed(), 0, "failed requests across the failover:\n{}\n{}", report.raw, logs());
    assert!(s["b"].http_2xx > at_switch["b"].http_2xx + 1000, "the standby carries the load: {s:?}");
    assert!(s["a"].status == "DRAIN" || s["a"].status.starts_with("MAINT"), "primary out of rotation: {s:?}");
    assert_eq!(oom_kills(fs, cg), 0, "the primary was never OOM-killed");
    assert!(a.running(), "the primary was restarted (its remedy), not killed");
    let leaked: Value = serde_json::from_str(&a.get("/admin/stats").expect("stats")).expect("JSON");
    assert_eq!(leaked["leaked_bytes"], 0, "the restart ended the leak: {leaked}");

    // The audit trail: prediction, decision (promote_standby), workflow, outcome.
    let ev = ctl(url, &["audit", "--resource", "app-a/web"]).expect("audit");
    let decision = ev
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "decision" && e["detail"]["chosen"] == "promote_standby")
        .unwrap_or_else(|| panic!("no promote_standby decision in {ev:#}"));
    let id = decision["action_id"].as_str().unwrap();
    println!("{TEST}: decision {id}: {}", decision["detail"]["why"]);
    let all = ctl(url, &["audit", "--action", id]).expect("audit --action");
    let kinds: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["prediction", "decision", "workflow", "outcome"] {
        assert!(kinds.contains(&k), "{k} missing from the action's records {kinds:?}");
    }
    let pred = all.as_array().unwrap().iter().find(|e| e["kind"] == "prediction").unwrap();
    assert!(pred["detail"].to_string().contains("memory_exhaustion"), "{pred:#}");
    // The REST gateway serves the same: the workload's newest predictions and its audit trail.
    let addr = url.trim_start_matches("http://");
    let p: Value = serde_json::from_str(
        &netns::http_request(addr, "GET", "/predict_failure?resource=app-a/cgroup/web").expect("GET /predict_failure"),
    )
    .expect("JSON");
    let preds = p["predictions"].as_array().expect("predictions");
    assert!(preds.iter().any(|e| e["failure_type"] == "memory_exhaustion"), "{p:#}");
    let rest: Value = serde_json::from_str(
        &netns::http_request(addr, "GET", &format!("/remediation_events?action_id={id}&kind=decision"))
            .expect("GET /remediation_events"),
    )
    .expect("JSON");
    assert_eq!(rest[0]["detail"]["chosen"], "promote_standby", "{rest:#}");
    let v = ctl(url, &["audit", "--verify"]).expect("verify");
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn operator_promotion_of_the_standby_under_load_fails_no_request() {
    const TEST: &str = "operator_promotion_of_the_standby_under_load_fails_no_request";
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let Some(fs) = CgroupFs::detect() else {
        skip(TEST, "no cgroup hierarchy with the memory controller");
        return;
    };
    let st = Stack::start(&fs, None);
    let wrk = Wrk::start(
        "wrk-promote",
        &st.hap.url(),
        &WrkOptions { duration: Duration::from_secs(20), ..Default::default() },
        st.dir.path(),
    );
    std::thread::sleep(Duration::from_secs(4));
    // A dry run first: it reports the exact steps and changes nothing.
    let dry = ctl(
        &st.url,
        &["remediate", "app-a/web", "--action", "promote_standby", "--arg", "remedy=restart", "--dry-run"],
    )
    .unwrap_or_else(|e| panic!("dry run: {e}\n{}", st.logs()));
    assert_eq!(dry["status"], "dry_run", "{dry:#}");
    assert_eq!(st.hap.servers().unwrap()["b"].status, "MAINT", "a dry run changes nothing");
    let r = ctl(
        &st.url,
        &["remediate", "app-a/web", "--action", "promote_standby", "--arg", "remedy=restart", "--reason", "e2e"],
    )
    .unwrap_or_else(|e| panic!("promotion: {e}\n{}", st.logs()));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let steps: Vec<&str> = r["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    let dry_steps: Vec<&str> = dry["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, dry_steps, "the dry run showed exactly the steps the real run took");
    println!("{TEST}: steps {steps:?}");
    let at_switch = st.hap.servers().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let report = wrk.wait(Duration::from_secs(60)).expect("wrk report");
    let s = st.hap.servers().unwrap();
    println!(
        "{TEST}: wrk {} requests, {} failed; served by a {} b {}",
        report.requests,
        report.failed(),
        s["a"].http_2xx,
        s["b"].http_2xx
    );
    assert!(report.requests > 10_000, "{}", report.raw);
    assert_eq!(report.failed(), 0, "{}\n{}", report.raw, st.logs());
    assert!(s["b"].http_2xx > at_switch["b"].http_2xx + 1000, "the standby carries the load: {s:?}");
    assert!(s["a"].status == "DRAIN" || s["a"].status.starts_with("MAINT"), "primary out of rotation: {s:?}");
    assert!(st.a.running() && st.b.running());
}

#[test]
fn in_approve_mode_the_promotion_waits_for_augurctl_approve() {
    const TEST: &str = "in_approve_mode_the_promotion_waits_for_augurctl_approve";
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let Some(fs) = CgroupFs::detect() else {
        skip(TEST, "no cgroup hierarchy with the memory controller");
        return;
    };
    if let Err(e) = augur_aggregator::model::runtime::find_library(None) {
        skip(TEST, &format!("no ONNX Runtime library: {e}"));
        return;
    }
    let manifest = repo_root().join("models/manifest.toml");
    let st = Stack::start(&fs, Some((&manifest, "approve")));
    let opts = WrkOptions { duration: Duration::from_secs(400), ..Default::default() };
    let wrk = Wrk::start("wrk-approve", &st.hap.url(), &opts, st.dir.path());
    std::thread::sleep(Duration::from_secs(10));
    st.a.post(&format!("/admin/leak?mib_per_s={LEAK_MIB_PER_S}")).expect("start the leak");
    let leak_started = Instant::now();
    // The decision waits for an operator: listed by `augurctl pending`, nothing moved yet.
    let pending = {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let p = ctl(&st.url, &["pending"]).expect("augurctl pending");
            if let Some(x) = p.as_array().and_then(|a| a.iter().find(|x| x["host"] == "app-a")) {
                break x.clone();
            }
            if Instant::now() > deadline || oom_kills(&fs, &st.cg) > 0 {
                let _ = wrk.stop();
                panic!("no pending decision within {:?} of the leak\n{}", leak_started.elapsed(), st.logs());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    assert_eq!(pending["plan"]["action"], "promote", "{pending:#}");
    let s = st.hap.servers().unwrap();
    assert_eq!((s["a"].status.as_str(), s["b"].status.as_str()), ("UP", "MAINT"), "nothing moved before the approval");
    let id = pending["action_id"].as_str().unwrap();
    let r = ctl(&st.url, &["approve", id, "--operator", "e2e", "--comment", "standby is warm"]).expect("approve");
    assert_eq!((r["action_id"].as_str(), r["status"].as_str()), (Some(id), Some("started")), "{r:#}");
    wait_for("the approved promotion", Duration::from_secs(60), || {
        let s = st.hap.servers().ok()?;
        (s["b"].status.starts_with("UP") && s["a"].status != "UP").then_some(())
    });
    let at_switch = st.hap.servers().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let report = wrk.stop().expect("wrk report");
    let s = st.hap.servers().unwrap();
    println!(
        "{TEST}: pending after {:.1} s, approved; wrk {} requests, {} failed; served by a {} b {}",
        leak_started.elapsed().as_secs_f64(),
        report.requests,
        report.failed(),
        s["a"].http_2xx,
        s["b"].http_2xx
    );
    assert_eq!(report.failed(), 0, "{}\n{}", report.raw, st.logs());
    assert!(s["b"].http_2xx > at_switch["b"].http_2xx, "the standby carries the load: {s:?}");
    assert!(ctl(&st.url, &["pending"]).unwrap().as_array().unwrap().iter().all(|x| x["action_id"] != id));
    let all = ctl(&st.url, &["audit", "--action", id]).expect("audit --action");
    let approval = all.as_array().unwrap().iter().find(|e| e["kind"] == "approval").expect("an approval record");
    assert!(approval["detail"].to_string().contains("e2e"), "the approver is recorded: {approval:#}");
    // Rejecting what is no longer pending is a clear error.
    let e = ctl(&st.url, &["reject", id]).expect_err("not pending any more");
    assert!(e.contains("NotFound"), "{e}");
}

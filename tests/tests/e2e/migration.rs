//! Live migration of a stateless workload between two network-namespace hosts under load.
//!
//! Hosts: `app-a` and `app-b` (the test app, started and stopped by the real agent's exec
//! hooks), `lb` (a real HAProxy with its agent driving the runtime API); the real
//! aggregator runs in the root namespace, and real wrk loads HAProxy from there.
//! `augurctl migrate app-a/web --to app-b` makes the aggregator start the app on app-b,
//! check its health, put it in HAProxy's rotation, drain app-a, and stop it: wrk must see
//! 0 failed requests (non-2xx or socket errors). With app-b's health check made to fail,
//! the migration rolls back: app-b is stopped again, traffic never moved, HAProxy shows
//! app-a ready and serving, and wrk still sees 0 failed requests.

use std::path::Path;
use std::time::Duration;

use augur_tests::netns::{
    self, AppInstance, BackendServer, Haproxy, NetHost, NetLab, Wrk, WrkOptions, haproxy_workload_toml, start_agent,
    start_aggregator,
};
use augur_tests::{Proc, augurctl_json, skip, wait_for, wait_for_connected_agents};
use serde_json::Value;

fn app_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_augur-test-app"))
}

/// The whole stack: aggregator, two app hosts with agents, HAProxy and its agent.
struct Stack {
    dir: tempfile::TempDir,
    url: String,
    a: AppInstance,
    b: AppInstance,
    hap: Haproxy,
    // Dropped after the processes above; the lab kills anything left in its namespaces.
    _procs: Vec<Proc>,
    _lab: NetLab,
}

const SET: &str = r#"
[remediation.safety]
action_deadline = "60s"
[[remediation.sets]]
name = "web"
stateless = true
lb = { host = "lb", workload = "haproxy", backend = "app" }
members = [
  { host = "app-a", workload = "web", server = "a" },
  { host = "app-b", workload = "web", server = "b" },
]
"#;

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lab = NetLab::new().expect("lab network");
        let host = |lab: &mut NetLab, n: &str| -> NetHost { lab.add_host(n).expect("namespace host") };
        let (ha, hb, hl) = (host(&mut lab, "app-a"), host(&mut lab, "app-b"), host(&mut lab, "lb"));
        let a = AppInstance::new(&ha, 8080, app_bin(), dir.path(), &[]);
        let b = AppInstance::new(&hb, 8080, app_bin(), dir.path(), &[]);
        a.start();
        let servers = [
            BackendServer { name: "a".into(), address: a.address(), disabled: false },
            // The migration target's slot: in maintenance until the migration enables it.
            BackendServer { name: "b".into(), address: b.address(), disabled: true },
        ];
        let hap = Haproxy::start(&hl, 8080, "app", &servers, dir.path());
        let (agg, url) = start_aggregator(&lab, dir.path(), SET);
        let web = ["start", "stop", "health", "restart"];
        let agents = vec![
            start_agent(&ha, &url, dir.path(), &a.workload_toml("web", &web, "")),
            start_agent(&hb, &url, dir.path(), &b.workload_toml("web", &web, "")),
            start_agent(&hl, &url, dir.path(), &haproxy_workload_toml("haproxy", &hap)),
        ];
        let mut procs = vec![agg];
        procs.extend(agents);
        let st = Stack { dir, url, a, b, hap, _procs: procs, _lab: lab };
        wait_for("a UP in HAProxy", Duration::from_secs(15), || (st.server("a").status == "UP").then_some(()));
        wait_for_connected_agents(&st.url, 3, Duration::from_secs(30));
        st
    }

    fn server(&self, name: &str) -> netns::ServerStat {
        self.hap.servers().expect("show stat").remove(name).expect("server in backend")
    }

    /// augurctl --json ARGS against this stack's aggregator.
    fn ctl(&self, args: &[&str]) -> Result<Value, String> {
        augurctl_json(&self.url, args)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        ["aggregator", "agent-app-a", "agent-app-b", "agent-lb", "app-app-a", "app-app-b"]
            .iter()
            .map(|n| format!("--- {n} ---\n{}", tail(&self.log(n), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn load(st: &Stack, name: &str, secs: u64) -> Wrk {
    let opts = WrkOptions { duration: Duration::from_secs(secs), ..Default::default() };
    Wrk::start(name, &st.hap.url(), &opts, st.dir.path())
}

#[test]
fn live_migration_under_load_fails_no_request() {
    const TEST: &str = "live_migration_under_load_fails_no_request";
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let st = Stack::start();
    let wrk = load(&st, "wrk-migrate", 20);
    std::thread::sleep(Duration::from_secs(4));
    let before = st.server("a").http_2xx;
    assert!(before > 100, "a serves before the migration: {:?}", st.hap.servers());

    let r = st.ctl(&["migrate", "app-a/web", "--to", "app-b", "--reason", "e2e live migration"]);
    let r = r.unwrap_or_else(|e| panic!("migration failed: {e}\n{}", st.logs()));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let steps: Vec<String> =
        r["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect();
    println!("{TEST}: steps {steps:?}");

    // Traffic is on b, a is out of rotation and its app stopped; b's app runs.
    assert!(st.b.running(), "the target app runs (started by the agent's hook)");
    assert!(!st.a.running(), "the source app was stopped after the drain");
    let s = st.hap.servers().unwrap();
    assert_eq!(s["a"].status, "MAINT", "{s:?}");
    assert!(s["b"].status.starts_with("UP"), "{s:?}");
    let b_at_switch = s["b"].http_2xx;
    std::thread::sleep(Duration::from_secs(2));
    assert!(st.server("b").http_2xx > b_at_switch, "b takes the load after the switch");

    let report = wrk.wait(Duration::from_secs(60)).expect("wrk report");
    let s = st.hap.servers().unwrap();
    println!(
        "{TEST}: wrk {} requests, {} failed ({} non-2xx, socket errors c{} r{} w{} t{}); served by a {} b {}",
        report.requests,
        report.failed(),
        report.non_2xx_3xx,
        report.connect_errors,
        report.read_errors,
        report.write_errors,
        report.timeouts,
        s["a"].http_2xx,
        s["b"].http_2xx
    );
    assert!(report.requests > 5000, "enough load to judge: {}", report.raw);
    assert_eq!(report.failed(), 0, "failed requests across the migration:\n{}\n{}", report.raw, st.logs());
    assert!(s["a"].http_2xx > 100 && s["b"].http_2xx > 100, "both served part of the run: {s:?}");

    // The audit trail ties the operator's request, the workflow and the outcome together.
    let id = r["action_id"].as_str().unwrap();
    let ev = st.ctl(&["audit", "--action", id]).expect("audit");
    let kinds: Vec<&str> = ev.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"decision"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"outcome"), "{kinds:?}");
    let v = st.ctl(&["audit", "--verify"]).expect("audit --verify");
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn migration_to_an_unhealthy_target_rolls_back_and_the_source_keeps_serving() {
    const TEST: &str = "migration_to_an_unhealthy_target_rolls_back_and_the_source_keeps_serving";
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let st = Stack::start();
    // The target's app will start, but fail its health check.
    std::fs::write(&st.b.fail_health_file, "").unwrap();
    let wrk = load(&st, "wrk-rollback", 15);
    std::thread::sleep(Duration::from_secs(3));

    let r = st.ctl(&["migrate", "app-a/web", "--to", "app-b", "--reason", "e2e rollback"]);
    let r: Value = match r {
        Ok(v) => panic!("the migration to an unhealthy target must not succeed: {v:#}"),
        Err(e) => serde_json::from_str(&e).unwrap_or_else(|_| panic!("augurctl failed without a report: {e}")),
    };
    // The agent undid the target's start itself when its health check failed (the start
    // step reports rolled_back), so the workflow stopped before traffic moved: the action
    // ends `failed` with nothing left changed (or `rolled_back` had a later step failed).
    let status = r["status"].as_str().unwrap();
    assert!(status == "failed" || status == "rolled_back", "{r:#}");
    let steps = r["steps"].as_array().unwrap();
    let start = steps.iter().find(|s| s["kind"] == "start").expect("a start step");
    assert_eq!((start["host"].as_str(), start["status"].as_str()), (Some("app-b"), Some("rolled_back")), "{start:#}");
    assert!(start["details"]["health"].as_str().unwrap_or("").contains("503"), "{start:#}");
    for s in steps.iter().filter(|s| s["resource"] == "haproxy") {
        assert!(s["status"] == "skipped" || s["status"] == "undone", "no traffic change stayed: {s:#}");
    }
    println!("{TEST}: {status}: {}", r["message"]);

    assert!(!st.b.running(), "the unhealthy target was stopped again by the rollback");
    assert!(st.a.running(), "the source app still runs");
    let s = st.hap.servers().unwrap();
    assert_eq!(s["a"].status, "UP", "the source is ready in HAProxy: {s:?}");
    assert_eq!(s["b"].status, "MAINT", "the target never entered the rotation: {s:?}");
    assert_eq!(s["b"].http_2xx, 0, "{s:?}");

    let report = wrk.wait(Duration::from_secs(60)).expect("wrk report");
    println!("{TEST}: wrk {} requests, {} failed", report.requests, report.failed());
    assert!(report.requests > 3000, "{}", report.raw);
    assert_eq!(report.failed(), 0, "{}\n{}", report.raw, st.logs());
    let after = st.server("a").http_2xx;
    assert!(after as f64 >= report.requests as f64 * 0.99, "a served the whole run: {after} of {}", report.requests);
}

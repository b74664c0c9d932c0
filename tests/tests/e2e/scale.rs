//! Horizontal scaling of a resource set between network-namespace hosts under load.
//!
//! Hosts: `app-a` (the test app, serving), `app-b` (a spare: declared in the set and in
//! HAProxy's backend, in maintenance, its app not running), `lb` (a real HAProxy with its
//! agent driving the runtime API); the real aggregator runs in the root namespace and real
//! wrk loads HAProxy from there. `augurctl scale web --delta 1` makes the aggregator start
//! the app on app-b through its agent's start hook, check its health and put it in
//! HAProxy's rotation, where it takes part of the load; `--delta -1` then drains the
//! instance the scale-out added, takes it out of rotation and stops it, and the set's size
//! (as the recommendations count it) follows. wrk must see 0 failed requests (non-2xx or
//! socket errors) across both.
//!
//! Predicted demand (scaling out because the p90 CPU forecast 15 minutes ahead exceeds 70%
//! of the set's capacity) needs 137 points at the forecaster's 10 s step, about 23 minutes
//! of history: longer than an e2e test may run. Here, with app-a in a CPU-limited cgroup
//! (where the machine has cgroups), the test checks that the recommendation reaches the
//! forecaster with app-a's real CPU series, as the agent samples it under wrk, and keeps the
//! size while that history is too short, saying so. Scaling out on a rising history is
//! covered by the component tests in `aggregator/tests/grpc/orchestrator.rs`, which send
//! 30 minutes of history through the real ingest path into a real store.

use std::path::Path;
use std::time::Duration;

use augur_tests::netns::{
    self, AppInstance, BackendServer, Haproxy, NetHost, NetLab, Wrk, WrkOptions, haproxy_workload_toml, start_agent,
    start_aggregator,
};
use augur_tests::{CgroupFs, Proc, TestCgroup, augurctl_json, is_root, skip, wait_for, wait_for_connected_agents};
use serde_json::Value;

fn app_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_augur-test-app"))
}

struct Stack {
    dir: tempfile::TempDir,
    url: String,
    a: AppInstance,
    b: AppInstance,
    hap: Haproxy,
    // Dropped after the processes above; the lab kills anything left in its namespaces.
    _procs: Vec<Proc>,
    /// app-a's CPU-limited cgroup (`None` without cgroups).
    cg: Option<TestCgroup>,
    _lab: NetLab,
}

/// app-a's CPU limit, in cores (cgroup v1 `cpu.cfs_quota_us` over a 100 ms period).
const CPU_LIMIT: f64 = 0.5;

/// `web`: a serves, b is the spare the set scales out onto.
const SET: &str = r#"
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

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lab = NetLab::new().expect("lab network");
        let host = |lab: &mut NetLab, n: &str| -> NetHost { lab.add_host(n).expect("namespace host") };
        let (ha, hb, hl) = (host(&mut lab, "app-a"), host(&mut lab, "app-b"), host(&mut lab, "lb"));
        let cg = cpu_cgroup();
        let a = AppInstance::new(&ha, 8080, app_bin(), dir.path(), &cg.as_ref().map(|c| c.paths()).unwrap_or_default());
        let b = AppInstance::new(&hb, 8080, app_bin(), dir.path(), &[]);
        a.start();
        let servers = [
            BackendServer { name: "a".into(), address: a.address(), disabled: false },
            // The spare's slot: in maintenance until a scale-out enables it.
            BackendServer { name: "b".into(), address: b.address(), disabled: true },
        ];
        let hap = Haproxy::start(&hl, 8080, "app", &servers, dir.path());
        let (agg, url) = start_aggregator(&lab, dir.path(), SET);
        let web = ["start", "stop", "health"];
        let cg_line = cg.as_ref().map(|c| format!("cgroup = \"{}\"", c.rel)).unwrap_or_default();
        let agents = vec![
            start_agent(&ha, &url, dir.path(), &a.workload_toml("web", &web, &cg_line)),
            start_agent(&hb, &url, dir.path(), &b.workload_toml("web", &web, "")),
            start_agent(&hl, &url, dir.path(), &haproxy_workload_toml("haproxy", &hap)),
        ];
        let mut procs = vec![agg];
        procs.extend(agents);
        let st = Stack { dir, url, a, b, hap, _procs: procs, cg, _lab: lab };
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

    /// The set's size as the aggregator counts it (`current` of its recommendation).
    fn current(&self) -> i64 {
        let r = self.ctl(&["recommendations", "web"]).expect("recommendations");
        r[0]["current"].as_i64().unwrap_or_else(|| panic!("{r:#}"))
    }

    fn logs(&self) -> String {
        ["aggregator", "agent-app-a", "agent-app-b", "agent-lb", "app-app-a", "app-app-b"]
            .iter()
            .map(|n| {
                let s = std::fs::read_to_string(self.dir.path().join(format!("{n}.log"))).unwrap_or_default();
                let lines: Vec<&str> = s.lines().collect();
                format!("--- {n} ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A cgroup for app-a limited to [`CPU_LIMIT`] cores (cgroup v1 cpu controller), or `None`
/// (with the reason printed) where the machine has none.
fn cpu_cgroup() -> Option<TestCgroup> {
    const TEST: &str = "scaling_out_then_in_under_load_fails_no_request";
    if !is_root() {
        skip(TEST, "the CPU-limited cgroup part: needs root");
        return None;
    }
    let Some(fs @ CgroupFs::V1(_)) = CgroupFs::detect() else {
        skip(TEST, "the CPU-limited cgroup part: no cgroup v1 hierarchy with memory and cpu controllers");
        return None;
    };
    let CgroupFs::V1(ms) = &fs else { return None };
    let cpu = ms.iter().find(|(c, _)| c == "cpu").map(|(_, m)| m.clone());
    let cpuacct = ms.iter().any(|(c, _)| c == "cpuacct");
    let (Some(cpu), true) = (cpu, cpuacct) else {
        skip(TEST, "the CPU-limited cgroup part: no cgroup v1 cpu and cpuacct controllers");
        return None;
    };
    let top = format!("augur-e2e-scale-{}", std::process::id());
    let cg = TestCgroup::create(fs, &top, "web-a", 1 << 30).expect("create app-a's cgroup");
    let quota = (CPU_LIMIT * 100_000.0) as u64;
    std::fs::write(cpu.join(&cg.rel).join("cpu.cfs_period_us"), "100000").expect("cpu.cfs_period_us");
    std::fs::write(cpu.join(&cg.rel).join("cpu.cfs_quota_us"), quota.to_string()).expect("cpu.cfs_quota_us");
    Some(cg)
}

/// CPU seconds used in `cg` (cgroup v1 `cpuacct.usage`, nanoseconds).
fn cpu_seconds(cg: &TestCgroup) -> f64 {
    let p = cg.paths().into_iter().map(|d| d.join("cpuacct.usage")).find(|p| p.exists()).expect("cpuacct.usage");
    std::fs::read_to_string(&p).expect("read cpuacct.usage").trim().parse::<f64>().expect("a number") / 1e9
}

fn steps(r: &Value) -> Vec<String> {
    r["steps"].as_array().expect("steps").iter().map(|s| s["step"].as_str().expect("step name").to_owned()).collect()
}

#[test]
fn scaling_out_then_in_under_load_fails_no_request() {
    const TEST: &str = "scaling_out_then_in_under_load_fails_no_request";
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let st = Stack::start();
    assert_eq!(st.current(), 1, "one serving instance before scaling");
    let wrk = Wrk::start(
        "wrk-scale",
        &st.hap.url(),
        &WrkOptions { duration: Duration::from_secs(30), ..Default::default() },
        st.dir.path(),
    );
    let cpu0 = st.cg.as_ref().map(cpu_seconds);
    std::thread::sleep(Duration::from_secs(4));
    assert!(st.server("a").http_2xx > 100, "a serves before scaling: {:?}", st.hap.servers());
    if let (Some(cg), Some(c0)) = (&st.cg, cpu0) {
        let cores = (cpu_seconds(cg) - c0) / 4.0;
        println!("{TEST}: app-a used {cores:.2} cores under wrk (limit {CPU_LIMIT})");
        assert!(cores > 0.05 && cores < CPU_LIMIT * 1.2, "{cores}");
        // The recommendation finds app-a's real CPU series (sampled by its agent each
        // second) and asks the forecaster, which needs more history than this run has: the
        // size stays and the reason says what is missing.
        let r = st.ctl(&["recommendations", "web"]).expect("recommendations");
        println!("{TEST}: recommendation before scaling: {}", r[0]);
        assert_eq!((r[0]["current"].as_i64(), r[0]["delta"].as_i64()), (Some(1), Some(0)), "{r:#}");
        let why = r[0]["reason"].as_str().unwrap_or_default();
        assert!(
            why.contains("no demand forecast for app-a/cgroup/web: not enough history:") && why.contains("137 needed"),
            "{r:#}"
        );
    }
    assert!(!st.b.running(), "the spare's app is not running before the scale-out");

    // Out by one: the spare b is started by its agent, checked, added to the rotation.
    let r = st.ctl(&["scale", "web", "--delta", "1", "--reason", "e2e scale out"]);
    let r = r.unwrap_or_else(|e| panic!("scale-out failed: {e}\n{}", st.logs()));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    println!("{TEST}: scale out steps {:?}", steps(&r));
    let plan = &r["plan"];
    assert_eq!((plan["delta"].as_i64(), plan["instances"][0]["server"].as_str()), (Some(1), Some("b")), "{r:#}");
    assert!(st.b.running(), "the new instance runs (started by the agent's start hook)");
    assert!(st.b.get("/health").is_ok(), "the new instance passes its health check");
    let s = st.hap.servers().unwrap();
    assert!(s["a"].status.starts_with("UP") && s["b"].status.starts_with("UP"), "{s:?}");
    assert_eq!(st.current(), 2, "the set counts the new instance");
    let (a0, b0) = (s["a"].http_2xx, s["b"].http_2xx);
    std::thread::sleep(Duration::from_secs(5));
    let s = st.hap.servers().unwrap();
    let (a1, b1) = (s["a"].http_2xx, s["b"].http_2xx);
    println!("{TEST}: 5 s after the scale-out a served {} and b {} requests", a1 - a0, b1 - b0);
    assert!(b1 - b0 > 100 && a1 - a0 > 100, "both instances take the load: a +{} b +{}", a1 - a0, b1 - b0);

    // In by one: the instance the scale-out added is drained, removed and stopped.
    let r = st.ctl(&["scale", "web", "--delta", "-1", "--reason", "e2e scale in"]);
    let r = r.unwrap_or_else(|e| panic!("scale-in failed: {e}\n{}", st.logs()));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    println!("{TEST}: scale in steps {:?}", steps(&r));
    assert_eq!(r["plan"]["instances"][0]["server"], "b", "the last instance added is the first removed: {r:#}");
    assert!(!st.b.running(), "the removed instance was stopped");
    assert!(st.a.running(), "the original instance still runs");
    let s = st.hap.servers().unwrap();
    assert_eq!(s["b"].status, "MAINT", "{s:?}");
    assert!(s["a"].status.starts_with("UP"), "{s:?}");
    assert_eq!(st.current(), 1, "the set is back to one instance");
    let (a2, b2) = (s["a"].http_2xx, s["b"].http_2xx);
    std::thread::sleep(Duration::from_secs(3));
    let s = st.hap.servers().unwrap();
    assert_eq!(s["b"].http_2xx, b2, "the removed instance gets no more requests");
    assert!(s["a"].http_2xx > a2 + 100, "a carries the load again");

    // Scaling in below the set's last instance is refused and changes nothing.
    let e = st.ctl(&["scale", "web", "--delta", "-1"]).expect_err("the last instance stays");
    println!("{TEST}: scale in of the last instance: {e}");
    assert!(st.a.running() && st.server("a").status.starts_with("UP"));

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
    assert_eq!(report.failed(), 0, "failed requests across scaling:\n{}\n{}", report.raw, st.logs());

    let v = st.ctl(&["audit", "--verify"]).expect("audit --verify");
    assert_eq!(v["ok"], true, "{v}");
}

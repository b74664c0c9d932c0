//! The network-namespace harness itself: two namespace hosts running the test app, HAProxy
//! in a third, real wrk through HAProxy from the root namespace. With both servers healthy,
//! every request succeeds and both servers take traffic; with one server's health failing,
//! HAProxy marks it down and the other serves everything, still without a failed request.
//! This is the baseline the failover and migration tests stand on: when they report 0
//! failed requests, it is the harness that could have seen failures and did not.

use std::path::Path;
use std::time::Duration;

use augur_tests::netns::{self, BackendServer, Haproxy, NetLab, Wrk, WrkOptions};
use augur_tests::{skip, wait_for};

const TEST: &str = "wrk_through_haproxy_to_two_namespace_hosts_fails_no_request";

fn app() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_augur-test-app"))
}

#[test]
fn wrk_through_haproxy_to_two_namespace_hosts_fails_no_request() {
    if let Some(why) = netns::traffic_unavailable() {
        skip(TEST, &why);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = NetLab::new().expect("create the lab network");
    let a = lab.add_host("app-a").expect("host a");
    let b = lab.add_host("app-b").expect("host b");
    let lb = lab.add_host("lb").expect("lb host");
    let fail_b = dir.path().join("b-unhealthy");
    let _app_a = a.spawn("app-a", app(), &["--listen", &format!("{}:8080", a.ip), "--name", "a"], dir.path());
    let _app_b = b.spawn(
        "app-b",
        app(),
        &["--listen", &format!("{}:8080", b.ip), "--name", "b", "--fail-health-file", fail_b.to_str().unwrap()],
        dir.path(),
    );
    let servers = [
        BackendServer { name: "a".into(), address: format!("{}:8080", a.ip), disabled: false },
        BackendServer { name: "b".into(), address: format!("{}:8080", b.ip), disabled: false },
    ];
    let hap = Haproxy::start(&lb, 8080, "app", &servers, dir.path());
    wait_for("both servers UP in HAProxy", Duration::from_secs(15), || {
        let s = hap.servers().ok()?;
        s.values().all(|v| v.status == "UP").then_some(())
    });

    // Both healthy: wrk through HAProxy, nothing fails, both servers get work.
    let opts = WrkOptions { duration: Duration::from_secs(5), ..Default::default() };
    let r = Wrk::start("wrk-both", &hap.url(), &opts, dir.path()).wait(Duration::from_secs(30)).expect("wrk report");
    let s = hap.servers().expect("show stat");
    println!(
        "{TEST}: both up: {} requests, {} failed, {:.0} req/s; a={} b={}",
        r.requests,
        r.failed(),
        r.requests_per_sec,
        s["a"].http_2xx,
        s["b"].http_2xx
    );
    assert!(r.requests > 1000, "wrk made too few requests to judge:\n{}", r.raw);
    assert_eq!(r.failed(), 0, "failed requests through HAProxy:\n{}", r.raw);
    assert!(s["a"].http_2xx > r.requests / 4 && s["b"].http_2xx > r.requests / 4, "round robin over both: {s:?}");

    // b's health fails: HAProxy takes it out (health checks every 300 ms), a serves alone.
    std::fs::write(&fail_b, "").unwrap();
    wait_for("b DOWN in HAProxy", Duration::from_secs(10), || {
        (hap.servers().ok()?["b"].status == "DOWN").then_some(())
    });
    let before_b = hap.servers().unwrap()["b"].http_2xx;
    let r = Wrk::start("wrk-one", &hap.url(), &opts, dir.path()).wait(Duration::from_secs(30)).expect("wrk report");
    let s = hap.servers().expect("show stat");
    println!("{TEST}: b down: {} requests, {} failed", r.requests, r.failed());
    assert!(r.requests > 1000, "{}", r.raw);
    assert_eq!(r.failed(), 0, "{}", r.raw);
    assert_eq!(s["b"].http_2xx, before_b, "no request went to the server marked down: {s:?}");

    // The harness can see failures: with both servers out, every request fails.
    hap.runtime("set server app/a state maint").expect("runtime API");
    let r = Wrk::start("wrk-none", &hap.url(), &WrkOptions { duration: Duration::from_secs(1), ..opts }, dir.path())
        .wait(Duration::from_secs(30))
        .expect("wrk report");
    assert!(r.failed() > 0 && r.failed() >= r.requests, "with no server every request fails: {}", r.raw);
}

/// Namespaces of lab `idx` (`augur<idx>-<host>`), from `ip netns list`.
fn lab_namespaces(prefix: &str) -> Vec<String> {
    netns::run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_lab_is_torn_down_on_drop_and_on_panic_and_stale_labs_are_swept() {
    const TEST: &str = "a_lab_is_torn_down_on_drop_and_on_panic_and_stale_labs_are_swept";
    if let Some(why) = netns::unavailable() {
        skip(TEST, &why);
        return;
    }
    // A panicking test still removes its namespaces and the processes in them.
    let (ns, pid) = std::panic::catch_unwind(|| {
        let mut lab = NetLab::new().expect("lab");
        let h = lab.add_host("x").expect("host");
        let p = h.spawn("sleeper", Path::new("sleep"), &["600"], &std::env::temp_dir());
        let pid = p.pid();
        std::mem::forget(p); // only the lab's teardown may end it
        assert!(lab_namespaces(&h.netns).contains(&h.netns));
        std::panic::resume_unwind(Box::new((h.netns.clone(), pid)));
    })
    .expect_err("the closure panics")
    .downcast::<(String, i32)>()
    .map(|b| *b)
    .expect("payload");
    assert!(lab_namespaces(&ns).is_empty(), "{ns} removed after the panic");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the process in the namespace was killed: {stat}");

    // A lab whose owner died without its Drop running (SIGKILL) is swept by the next lab.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().expect("spawn");
        let pid = c.id();
        c.wait().expect("reap");
        pid
    };
    let idx = 4095 - (std::process::id() % 64);
    let (bridge, stale_ns) = (format!("augbr{idx}"), format!("augur{idx}-orphan"));
    if netns::run("ip", &["link", "add", &bridge, "type", "bridge"]).is_err() {
        skip(TEST, &format!("{bridge} is in use; cannot stage a stale lab"));
        return;
    }
    std::fs::write(format!("/sys/class/net/{bridge}/ifalias"), format!("augur-netlab pid={dead}\n")).unwrap();
    netns::run("ip", &["netns", "add", &stale_ns]).expect("stale namespace");
    let _fresh = NetLab::new().expect("lab");
    assert!(!Path::new(&format!("/sys/class/net/{bridge}")).exists(), "stale bridge swept");
    assert!(lab_namespaces(&stale_ns).is_empty(), "stale namespace swept");
}

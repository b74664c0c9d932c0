//! The telemetry pipeline end to end: real aggregator and agent binaries, a real cgroup
//! with a real workload, data read back with the real augurctl; and an aggregator killed
//! with SIGKILL for 30 s while the agent keeps sampling, with nothing lost or doubled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use augur_tests::{CgroupFs, Proc, TestCgroup, augurctl_json, bin, free_port, is_root, skip, wait_for};
use serde_json::Value;

struct Stack {
    dir: tempfile::TempDir,
    port: u16,
    host: String,
}

impl Stack {
    fn new(host: &str) -> Stack {
        Stack { dir: tempfile::tempdir().expect("tempdir"), port: free_port(), host: host.to_owned() }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start_aggregator(&self, log: &str) -> Proc {
        let ready = self.path("ready");
        let _ = std::fs::remove_file(&ready);
        let listen = format!("127.0.0.1:{}", self.port);
        let data = self.path("data");
        let p = Proc::spawn(
            log,
            &bin("augur-aggregator"),
            &["--listen", &listen, "--data-dir", data.to_str().unwrap(), "--ready-file", ready.to_str().unwrap()],
            self.dir.path(),
        );
        wait_for("aggregator ready file", Duration::from_secs(30), || ready.exists().then_some(()));
        p
    }

    /// Writes the agent config: this host, fast reconnects, the given extra TOML.
    fn start_agent(&self, extra: &str) -> Proc {
        let cfg = format!(
            "host_id = \"{}\"\nstate_dir = \"{}\"\ninterval = \"1s\"\n[aggregator]\nurl = \"{}\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n{extra}",
            self.host,
            self.path("agent-state").display(),
            self.url()
        );
        let cfg_path = self.path("agent.toml");
        std::fs::write(&cfg_path, cfg).expect("write agent config");
        Proc::spawn("agent", &bin("augur-agent"), &["--config", cfg_path.to_str().unwrap()], self.dir.path())
    }

    fn ctl(&self, args: &[&str]) -> Result<Value, String> {
        augurctl_json(&self.url(), args)
    }

    fn agent_status(&self) -> Value {
        let p = self.path("agent-state/status.json");
        serde_json::from_slice(&std::fs::read(&p).expect("agent status file")).expect("status JSON")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }
}

fn points(v: &Value) -> Vec<(i64, f64)> {
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

#[test]
fn host_and_cgroup_series_are_queryable_with_augurctl() {
    if !is_root() && skip("host_and_cgroup_series_are_queryable_with_augurctl", "needs root to create a cgroup") {
        return;
    }
    let Some(fs) = CgroupFs::detect() else {
        skip("host_and_cgroup_series_are_queryable_with_augurctl", "no cgroup hierarchy with the memory controller");
        return;
    };
    let top = format!("augur-e2e-{}", std::process::id());
    let cg = TestCgroup::create(fs, &top, "work", 512 << 20).expect("create test cgroup");
    // The workload enters the cgroup itself, then holds ~40 MiB of touched memory.
    let script = format!(
        "{}exec python3 -c 'import time; b = bytearray(40 << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(600)'",
        cg.enter_snippet()
    );
    let _work = Proc::spawn("work", Path::new("/bin/sh"), &["-c", &script], &std::env::temp_dir());

    let st = Stack::new("e2e-host");
    let _agg = st.start_aggregator("aggregator");
    let _agent = st.start_agent(&format!(
        "[containers]\ndocker = false\ncontainerd = false\nkubernetes = false\nsystemd_services = false\ncgroups = [{{ name = \"e2e-work\", path = \"{}\" }}]\n",
        cg.rel
    ));

    let res = "e2e-host/cgroup/e2e-work";
    let series = wait_for("cgroup series to appear", Duration::from_secs(30), || {
        let v = st.ctl(&["series", res]).ok()?;
        let names: Vec<String> = v.as_array()?.iter().filter_map(|s| s["metric"].as_str().map(str::to_owned)).collect();
        names.iter().any(|n| n == "container_memory_usage_bytes").then_some(names)
    });
    for m in ["container_cpu_usage_seconds_total", "container_pids_current", "container_spec_memory_limit_bytes"] {
        assert!(series.iter().any(|n| n == m), "{m} missing from {series:?}\nagent log:\n{}", st.log("agent"));
    }
    // Memory: the workload's ~40 MiB is visible within a few seconds.
    let mem = wait_for("cgroup memory >= 30 MiB", Duration::from_secs(20), || {
        let v = st.ctl(&["query", res, "container_memory_usage_bytes", "--since", "1m"]).ok()?;
        points(&v).last().map(|p| p.1).filter(|&b| b >= (30 << 20) as f64)
    });
    assert!(mem < (512u64 << 20) as f64);
    let limit = points(&st.ctl(&["query", res, "container_spec_memory_limit_bytes", "--since", "1m"]).unwrap());
    assert_eq!(limit.last().map(|p| p.1), Some((512u64 << 20) as f64));

    // Host series, counters with labels, and the host registry.
    let avail = points(&st.ctl(&["query", "e2e-host", "node_memory_MemAvailable_bytes", "--since", "1m"]).unwrap());
    assert!(!avail.is_empty() && avail.iter().all(|p| p.1 > 0.0));
    let cpu =
        st.ctl(&["query", "e2e-host", "node_cpu_seconds_total", "--since", "1m", "--label", "mode=idle"]).unwrap();
    assert_eq!(cpu.as_array().unwrap().len(), 1, "one idle series: {cpu}");
    let hosts = st.ctl(&["hosts"]).unwrap();
    let h = &hosts.as_array().unwrap()[0];
    assert_eq!((h["host_id"].as_str(), h["connected"].as_bool()), (Some("e2e-host"), Some(true)));
    assert!(h["samples_stored"].as_u64().unwrap() > 0);
    // Rolled-up read with a step.
    let roll = st.ctl(&["query", "e2e-host", "node_load1", "--since", "5m", "--step", "1m"]).unwrap();
    let r = &roll[0]["rollups"];
    assert!(r.as_array().is_some_and(|a| !a.is_empty()), "rollups: {roll}");
    assert!(r[0]["count"].as_u64().unwrap() >= 1);
    // The table form works too.
    let out =
        Command::new(bin("augurctl")).args(["--aggregator", &st.url(), "resources", "e2e-host"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("cgroup/e2e-work") && table.contains("host"), "{table}");
}

#[test]
fn aggregator_sigkill_for_30s_loses_and_doubles_nothing() {
    let st = Stack::new("e2e-kill");
    let mut agg = st.start_aggregator("aggregator-1");
    let mut agent = st.start_agent("[containers]\ndocker = false\ncontainerd = false\nkubernetes = false\n");
    wait_for("first batches acknowledged", Duration::from_secs(30), || {
        let s = std::fs::read(st.path("agent-state/status.json")).ok()?;
        let v: Value = serde_json::from_slice(&s).ok()?;
        (v["acked_sequence"].as_u64()? >= 3).then_some(())
    });
    agg.kill9();
    let killed_at = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let during = st.agent_status();
    assert_eq!(during["connected"], Value::Bool(false), "agent noticed the outage: {during}");
    let _agg2 = st.start_aggregator("aggregator-2");
    // Catch up: everything spooled during the outage is acknowledged.
    wait_for("agent to catch up after restart", Duration::from_secs(60), || {
        let v = st.agent_status();
        let (acked, next) = (v["acked_sequence"].as_u64()?, v["next_sequence"].as_u64()?);
        (v["connected"].as_bool()? && acked + 3 >= next && acked > 0).then_some(())
    });
    let st_exit = agent.terminate(Duration::from_secs(20));
    assert!(st_exit.success(), "agent exit: {st_exit:?}\n{}", st.log("agent"));
    let fin = st.agent_status();
    let produced = fin["samples_produced"].as_u64().unwrap();
    let batches = fin["batches_produced"].as_u64().unwrap();
    assert_eq!(fin["acked_sequence"].as_u64().unwrap() + 1, fin["next_sequence"].as_u64().unwrap(), "drained: {fin}");
    assert!(batches as f64 >= killed_at.elapsed().as_secs_f64() - 2.0, "sampling went on during the outage: {fin}");
    assert_eq!(fin["spool_dropped_batches"].as_u64(), Some(0));

    // Count what the store holds for this host, series by series.
    let series = st.ctl(&["series", "e2e-kill"]).unwrap();
    let mut stored = 0u64;
    let mut by_resource: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in series.as_array().unwrap() {
        let resource = s["resource"].as_str().unwrap().to_owned();
        by_resource.entry(resource).or_default().push(s["metric"].as_str().unwrap().to_owned());
    }
    for (resource, mut metrics) in by_resource {
        metrics.sort();
        metrics.dedup();
        for m in metrics {
            let target = format!("e2e-kill/{resource}");
            let v = st.ctl(&["query", &target, &m, "--since", "10m"]).unwrap();
            for s in v.as_array().unwrap() {
                let pts = s["points"].as_array().unwrap();
                let mut ts: Vec<i64> = pts.iter().map(|p| p[0].as_i64().unwrap()).collect();
                let n = ts.len();
                ts.dedup();
                assert_eq!(ts.len(), n, "duplicate timestamps in {target} {m}");
                stored += n as u64;
            }
        }
    }
    assert_eq!(stored, produced, "every sample the agent produced is stored exactly once");
    let hosts = st.ctl(&["hosts"]).unwrap();
    assert_eq!(hosts[0]["batches_lost"].as_u64(), Some(0));
}

//! Integration tests of the agent's command executor and actuators, against real parts
//! where this machine has them: real cgroup v1 controllers, real processes, a real HAProxy
//! on a temporary socket, real TCP/HTTP listeners, and the real agent uplink against a
//! scripted gRPC peer. Tests that need something missing print `SKIP <test>: <why>`.

mod cgroup;
mod criu;
mod executor;
mod haproxy;
mod health;
mod systemd;
mod template;
mod uplink;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use augur_agent::actuator::{Executor, ExecutorConfig, ProcessRunner, Runner};
use augur_agent::workload::{HealthConfig, WorkloadConfig};
use augur_proto::v1;

pub const HOST: &str = "host-a";

/// Says why a test does not run here.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

pub fn now_ms() -> i64 {
    augur_core::time::now_ms()
}

/// A command for `HOST` with a 30 s deadline.
pub fn cmd(id: &str, resource: &str, kind: &str, args: &[(&str, &str)]) -> v1::Command {
    v1::Command {
        id: id.into(),
        idempotency_key: format!("key-{id}"),
        target_host: HOST.into(),
        deadline_ms: now_ms() + 30_000,
        kind: kind.into(),
        args: args.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        dry_run: false,
        resource: resource.into(),
    }
}

pub fn health_command(argv: &[&str]) -> HealthConfig {
    HealthConfig {
        http: None,
        tcp: None,
        command: Some(argv.iter().map(|s| (*s).into()).collect()),
        timeout: Duration::from_secs(5),
        attempts: 1,
        interval: Duration::from_millis(50),
    }
}

pub fn config(state_dir: &Path, cgroup_root: &Path) -> ExecutorConfig {
    ExecutorConfig {
        host_id: HOST.into(),
        state_dir: state_dir.to_owned(),
        cgroup_root: cgroup_root.to_owned(),
        proc_root: "/proc".into(),
        systemctl: "systemctl".into(),
        undo_timeout: Duration::from_secs(10),
        ledger_max_entries: 1000,
        queue: 4,
    }
}

pub fn executor(state_dir: &Path, cgroup_root: &Path, ws: &[WorkloadConfig]) -> Executor {
    executor_with(state_dir, cgroup_root, ws, Arc::new(ProcessRunner))
}

pub fn executor_with(state_dir: &Path, cgroup_root: &Path, ws: &[WorkloadConfig], r: Arc<dyn Runner>) -> Executor {
    augur_agent::workload::validate_workloads(ws).expect("test workloads are valid");
    Executor::open(config(state_dir, cgroup_root), ws, r).expect("executor opens")
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())).trim().to_owned()
}

pub fn details(o: &augur_agent::actuator::Outcome) -> &BTreeMap<String, String> {
    &o.details
}

//! systemd actuators: systemd is not PID 1 here, so these check the exact argv the agent
//! would run, through a recording runner that answers `systemctl show` like systemd does.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_agent::actuator::{RunOutput, Runner, Status};
use augur_agent::workload::WorkloadConfig;
use futures::future::BoxFuture;

use crate::{cmd, executor_with, health_command};

#[derive(Default)]
struct FakeSystemctl {
    calls: Mutex<Vec<Vec<String>>>,
    show: Mutex<String>,
}

impl FakeSystemctl {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").iter().map(|a| a.join(" ")).collect()
    }
}

impl Runner for FakeSystemctl {
    fn run<'a>(&'a self, argv: &'a [String], _timeout: Duration) -> BoxFuture<'a, Result<RunOutput, String>> {
        Box::pin(async move {
            self.calls.lock().expect("lock").push(argv.to_vec());
            let stdout = if argv.get(1).map(String::as_str) == Some("show") {
                // `systemctl show -p A -p B` prints the asked properties in its own order.
                let all = self.show.lock().expect("lock").clone();
                all.lines()
                    .filter(|l| argv.iter().any(|a| l.split('=').next() == Some(a.as_str())))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                String::new()
            };
            Ok(RunOutput { code: Some(0), stdout, stderr: String::new() })
        })
    }
}

fn unit_workload() -> WorkloadConfig {
    let mut w = WorkloadConfig::named("db");
    w.unit = Some("postgresql@15-main.service".into());
    w.allowed_actions = vec!["resize".into(), "restart".into(), "start".into(), "stop".into()];
    w.health = Some(health_command(&["pg_isready"]));
    w
}

#[tokio::test]
async fn systemd_resize_runs_set_property_runtime_and_undo_restores_previous_values() {
    let state = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeSystemctl::default());
    *fake.show.lock().expect("lock") =
        "MemoryMax=1073741824\nMemoryHigh=infinity\nCPUQuotaPerSecUSec=infinity\nMemoryCurrent=524288000".into();
    let mut ex = executor_with(state.path(), Path::new("/nonexistent"), &[unit_workload()], fake.clone());
    let o = ex.execute(&cmd("c1", "db", "resize", &[("memory_max", "2GiB"), ("cpu_max", "1.5")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    assert_eq!(o.details["previous.memory_max"], "1073741824");
    assert_eq!(o.details["previous.cpu_max"], "max");
    let calls = fake.calls();
    assert_eq!(
        calls,
        [
            "systemctl show postgresql@15-main.service -p MemoryMax -p MemoryHigh -p CPUQuotaPerSecUSec -p MemoryCurrent",
            "systemctl show postgresql@15-main.service -p MemoryCurrent",
            "systemctl set-property --runtime postgresql@15-main.service MemoryMax=2147483648 CPUQuota=150%",
            "pg_isready",
        ]
    );
    let o = ex.execute(&cmd("r1", "db", "rollback", &[("command_id", "c1")])).await;
    assert_eq!(o.status, Status::Succeeded, "{o:?}");
    let calls = fake.calls();
    assert!(
        calls.contains(
            &"systemctl set-property --runtime postgresql@15-main.service MemoryMax=1073741824 CPUQuota=".to_string()
        ),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn systemd_resize_below_memory_current_is_refused_without_running_set_property() {
    let state = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeSystemctl::default());
    *fake.show.lock().expect("lock") =
        "MemoryMax=1073741824\nMemoryHigh=infinity\nCPUQuotaPerSecUSec=2s\nMemoryCurrent=524288000".into();
    let mut ex = executor_with(state.path(), Path::new("/nonexistent"), &[unit_workload()], fake.clone());
    let o = ex.execute(&cmd("c1", "db", "resize", &[("memory_max", "256MiB")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("below current usage"), "{o:?}");
    assert!(fake.calls().iter().all(|c| !c.contains("set-property")), "{:?}", fake.calls());
    // Unknown usage: lowering is refused, raising is allowed.
    *fake.show.lock().expect("lock") = "MemoryMax=1073741824\nMemoryHigh=infinity\nCPUQuotaPerSecUSec=2s".into();
    let o = ex.execute(&cmd("c2", "db", "resize", &[("memory_max", "900MiB")])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("usage is unknown"), "{o:?}");
}

#[tokio::test]
async fn systemd_lifecycle_argv_and_template_instances() {
    let state = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(FakeSystemctl::default());
    let mut w = unit_workload();
    w.name = "web".into();
    w.unit = Some("web@.service".into());
    let mut ex = executor_with(state.path(), Path::new("/nonexistent"), &[unit_workload(), w], fake.clone());
    assert_eq!(ex.execute(&cmd("c1", "db", "restart", &[])).await.status, Status::Succeeded);
    assert_eq!(ex.execute(&cmd("c2", "web", "start", &[("instance", "8082")])).await.status, Status::Succeeded);
    let mut dry = cmd("c3", "web", "stop", &[("instance", "8081")]);
    dry.dry_run = true;
    let o = ex.execute(&dry).await;
    assert_eq!(o.status, Status::DryRun);
    assert_eq!(o.details["would.1"], "run systemctl stop web@8081.service (timeout 90000ms)");
    let o = ex.execute(&cmd("c4", "web", "start", &[])).await;
    assert_eq!(o.status, Status::Refused, "{o:?}");
    assert!(o.message.contains("needs an instance"), "{o:?}");
    assert_eq!(
        fake.calls(),
        [
            "systemctl restart postgresql@15-main.service",
            "pg_isready",
            "systemctl start web@8082.service",
            "pg_isready"
        ]
    );
}

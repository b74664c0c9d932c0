//! The closed loop over real gRPC: the aggregator's Dispatcher sends commands down the real
//! `Telemetry.Connect` stream of scripted agents, which report back on the same stream;
//! workflows and the audit trail run over the real RocksDB store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use augur_aggregator::config::AggregatorConfig;
use augur_aggregator::remediate::audit::{AuditEntry, AuditKind, AuditQuery};
use augur_aggregator::remediate::dispatch::{CommandStatus, DispatchError};
use augur_aggregator::remediate::workflow::{self, ActionPlan, RunOptions, WorkflowStatus};
use augur_aggregator::server::Shared;
use augur_core::command::{CommandSpec, Envelope, Resize};
use augur_proto::v1::{self, AgentMessage, AggregatorMessage, agent_message::Msg as AgentMsg};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::{Agent, AggMsg, http_get, now_ms};

struct Aggregator {
    url: String,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Aggregator {
    async fn start(data_dir: &Path) -> Aggregator {
        let cfg = AggregatorConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data_dir.to_owned(),
            ..Default::default()
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(augur_aggregator::run_with(
            cfg,
            async move {
                let _ = stop_rx.await;
            },
            move |addr, shared| {
                let _ = ready_tx.send((addr, shared));
            },
        ));
        let (addr, shared) = ready_rx.await.expect("aggregator started");
        Aggregator { url: format!("http://{addr}"), shared, stop, task }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).expect("url").connect().await.expect("connect")
    }

    /// Connects a scripted agent and waits until its session is registered for commands.
    async fn agent(&self, host: &str) -> Agent {
        let (a, _) = Agent::connect(self.channel().await, host).await.expect("agent connects");
        let d = &self.shared.dispatcher;
        tokio::time::timeout(Duration::from_secs(5), async {
            while !d.is_connected(host) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("session registered with the dispatcher");
        a
    }

    async fn shutdown(self) {
        drop(self.shared);
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("clean shutdown");
    }
}

/// The next message on an agent's stream that is a command, within `wait`.
async fn next_command(a: &mut Agent, wait: Duration) -> Option<v1::Command> {
    tokio::time::timeout(wait, async {
        loop {
            match a.rx.message().await.expect("stream ok") {
                Some(AggregatorMessage { msg: Some(AggMsg::Command(c)) }) => return Some(c),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn report(a: &Agent, id: &str, status: v1::CommandStatus, message: &str, details: &[(&str, &str)]) {
    let r = v1::CommandReport {
        command_id: id.into(),
        status: status as i32,
        message: message.into(),
        time_ms: now_ms(),
        details: details.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    };
    a.tx.send(AgentMessage { msg: Some(AgentMsg::CommandReport(r)) }).await.expect("report sent");
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from\n{body}"))
}

#[tokio::test]
async fn a_workflow_command_reaches_only_its_host_and_the_agents_report_resolves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(&dir.path().join("data")).await;
    let mut app1 = agg.agent("app-1").await;
    let mut app2 = agg.agent("app-2").await;

    let plan = ActionPlan::Resize {
        host: "app-1".into(),
        workload: "web".into(),
        resize: Resize { memory_max: Some(512 << 20), ..Resize::default() },
    };
    let run = tokio::spawn({
        let shared = agg.shared.clone();
        async move {
            let opts = RunOptions { step_timeout: Duration::from_secs(10), ..RunOptions::new("e2e-resize-1") };
            workflow::run(&plan, &shared.dispatcher, &shared.audit, &opts).await
        }
    });
    let cmd = next_command(&mut app1, Duration::from_secs(5)).await.expect("app-1 gets the command");
    let env = augur_proto::convert::envelope_of(&cmd).expect("a valid command");
    assert_eq!((env.target_host.as_str(), env.resource.as_str()), ("app-1", "web"));
    assert_eq!(env.spec, CommandSpec::Resize(Resize { memory_max: Some(512 << 20), ..Resize::default() }));
    assert!(!env.dry_run);
    assert!(env.deadline_ms > now_ms());
    assert!(next_command(&mut app2, Duration::from_millis(300)).await.is_none(), "app-2 must get nothing");
    report(&app1, &cmd.id, v1::CommandStatus::Accepted, "", &[]).await;
    report(&app1, &cmd.id, v1::CommandStatus::Succeeded, "memory.max set", &[("previous.memory_max", "268435456")])
        .await;
    let r = run.await.expect("join").expect("workflow ran");
    assert_eq!(r.status, WorkflowStatus::Succeeded, "{r:?}");
    let outcome = r.steps[0].outcome.as_ref().expect("outcome");
    assert_eq!(outcome.status, CommandStatus::Succeeded);
    assert_eq!(outcome.details.get("previous.memory_max").map(String::as_str), Some("268435456"));

    // A host without an agent is refused at once; nothing goes anywhere.
    let stray = Envelope {
        id: "e2e-stray".into(),
        idempotency_key: "e2e-stray".into(),
        target_host: "app-9".into(),
        resource: "web".into(),
        deadline_ms: now_ms() + 5_000,
        dry_run: false,
        spec: CommandSpec::Restart,
    };
    assert_eq!(agg.shared.dispatcher.execute(stray).await, Err(DispatchError::NotConnected { host: "app-9".into() }));
    assert!(next_command(&mut app1, Duration::from_millis(100)).await.is_none());
    assert!(next_command(&mut app2, Duration::from_millis(100)).await.is_none());

    // The audit trail holds the run under its action id, and verifies.
    let recs = agg
        .shared
        .audit
        .query(&AuditQuery { action_id: Some("e2e-resize-1".into()), ..Default::default() })
        .expect("query");
    let events: Vec<&str> = recs.iter().filter_map(|r| r.detail["event"].as_str()).collect();
    assert_eq!(events, vec!["started", "sent", "done", "finished"]);
    assert_eq!(recs[2].detail["outcome"]["details"]["previous.memory_max"], "268435456");
    assert!(agg.shared.audit.verify().expect("verify").ok());

    let (status, body) = http_get(&agg.url, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(metric(&body, "augur_commands_sent_total"), 1.0);
    assert_eq!(metric(&body, "augur_commands_accepted_total"), 1.0);
    assert_eq!(metric(&body, "augur_command_outcomes_total{status=\"succeeded\"}"), 1.0);
    assert_eq!(metric(&body, "augur_commands_failed_to_send_total{reason=\"not_connected\"}"), 1.0);
    assert_eq!(metric(&body, "augur_audit_records_appended_total"), 4.0);
    agg.shutdown().await;
}

/// Runs a scripted agent: every command is logged as `host:kind arg` and answered
/// ACCEPTED, then with `answer(command)`.
fn script(
    mut agent: Agent,
    host: &'static str,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    answer: fn(&v1::Command) -> v1::CommandStatus,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(c) = next_command(&mut agent, Duration::from_secs(30)).await {
            let arg =
                ["state", "weight", "command_id"].iter().find_map(|k| c.args.get(*k)).cloned().unwrap_or_default();
            log.lock().expect("log").push(format!("{host}:{} {arg}", c.kind).trim_end().to_owned());
            report(&agent, &c.id, v1::CommandStatus::Accepted, "", &[]).await;
            report(&agent, &c.id, answer(&c), "scripted", &[]).await;
        }
    })
}

#[tokio::test]
async fn a_promotion_whose_drain_fails_is_rolled_back_across_hosts_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(&dir.path().join("data")).await;
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ok = |_: &v1::Command| v1::CommandStatus::Succeeded;
    let lb = |c: &v1::Command| match c.args.get("state").map(String::as_str) {
        Some("drain") => v1::CommandStatus::Failed,
        _ => v1::CommandStatus::Succeeded,
    };
    let agents = vec![
        script(agg.agent("app-1").await, "app-1", log.clone(), ok),
        script(agg.agent("app-2").await, "app-2", log.clone(), ok),
        script(agg.agent("lb-1").await, "lb-1", log.clone(), lb),
    ];
    let plan = ActionPlan::Promote {
        lb: workflow::LoadBalancer { host: "lb-1".into(), workload: "haproxy".into(), backend: "app".into() },
        primary: workflow::Member { host: "app-1".into(), workload: "web".into(), server: "s1".into() },
        standby: workflow::Member { host: "app-2".into(), workload: "web".into(), server: "s2".into() },
        standby_weight: Some(50),
        remedy: workflow::Remedy::Restart,
    };
    let opts = RunOptions { drain_wait: Duration::from_millis(10), ..RunOptions::new("e2e-promote-1") };
    let r = workflow::run(&plan, &agg.shared.dispatcher, &agg.shared.audit, &opts).await.expect("ran");
    assert_eq!(r.status, WorkflowStatus::RolledBack, "{r:?}");
    assert_eq!(
        *log.lock().expect("log"),
        vec![
            "app-2:health",
            "lb-1:traffic ready",
            "lb-1:traffic 50",
            "lb-1:traffic drain",
            "lb-1:rollback e2e-promote-1-s2",
            "lb-1:rollback e2e-promote-1-s1",
        ],
        "app-1 (the primary) is never touched; undo runs in reverse order"
    );
    let undone = agg
        .shared
        .audit
        .query(&AuditQuery { action_id: Some("e2e-promote-1".into()), ..Default::default() })
        .expect("query")
        .iter()
        .filter(|r| r.detail["event"] == "undone")
        .count();
    assert_eq!(undone, 2);
    for a in agents {
        a.abort();
    }
    agg.shutdown().await;
}

#[tokio::test]
async fn a_command_is_sent_again_with_the_same_id_when_its_agent_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agg = Aggregator::start(&dir.path().join("data")).await;
    let mut first = agg.agent("app-1").await;
    let exec = tokio::spawn({
        let d = agg.shared.dispatcher.clone();
        async move {
            d.execute(Envelope {
                id: "e2e-restart-1".into(),
                idempotency_key: "e2e-restart-1".into(),
                target_host: "app-1".into(),
                resource: "web".into(),
                deadline_ms: now_ms() + 10_000,
                dry_run: false,
                spec: CommandSpec::Restart,
            })
            .await
        }
    });
    let cmd = next_command(&mut first, Duration::from_secs(5)).await.expect("first session gets it");
    drop(first); // the connection drops before the agent reports
    let mut second = agg.agent("app-1").await;
    let again = next_command(&mut second, Duration::from_secs(5)).await.expect("re-sent after reconnect");
    assert_eq!(again, cmd, "same id, same command");
    report(&second, &again.id, v1::CommandStatus::Duplicate, "already applied", &[("original.status", "succeeded")])
        .await;
    let out = exec.await.expect("join").expect("outcome");
    assert_eq!(out.status, CommandStatus::Duplicate);
    // A repeated report is counted and ignored.
    report(&second, &again.id, v1::CommandStatus::Succeeded, "again", &[]).await;
    let stats = agg.shared.dispatcher.stats();
    tokio::time::timeout(Duration::from_secs(5), async {
        while stats.reports_repeated.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the repeated report arrives");
    let (_, body) = http_get(&agg.url, "/metrics").await;
    assert_eq!(metric(&body, "augur_commands_resent_total"), 1.0);
    assert_eq!(metric(&body, "augur_command_outcomes_total{status=\"duplicate\"}"), 1.0);
    assert_eq!(metric(&body, "augur_command_reports_ignored_total{reason=\"repeated\"}"), 1.0);
    agg.shutdown().await;
}

#[tokio::test]
async fn the_audit_trail_survives_a_restart_and_continues_its_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let entry = |n: u32| AuditEntry {
        action_id: format!("act-{n}"),
        kind: AuditKind::Decision,
        host: "app-1".into(),
        resource: "web".into(),
        detail: serde_json::json!({"n": n}),
    };
    let agg = Aggregator::start(&data).await;
    let appended: Vec<_> = (1..=3).map(|n| agg.shared.audit.append(entry(n)).expect("append")).collect();
    let last = &appended[2];
    agg.shutdown().await;

    let agg = Aggregator::start(&data).await;
    assert_eq!(agg.shared.audit.head_seq(), 3);
    let next = agg.shared.audit.append(entry(4)).expect("append after restart");
    assert_eq!((next.seq, next.prev_hash.as_str()), (4, last.hash.as_str()));
    let v = agg.shared.audit.verify().expect("verify");
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.records, 4);
    agg.shutdown().await;
}

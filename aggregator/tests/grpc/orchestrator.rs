//! Component tests of the Orchestrator service and the REST gateway: the aggregator's real
//! gRPC/HTTP server on port 0 over a real RocksDB store, with scripted agents that declare
//! workloads in Hello and answer the commands they receive. Requests must reach exactly
//! the hosts the plan names, in the workflow's order; bad requests get a clear error and
//! send nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_aggregator::config::AggregatorConfig;
use augur_aggregator::remediate::policy::{LbConfig, MemberConfig, RemediationConfig, ResourceSetConfig};
use augur_proto::v1::{
    self, AgentMessage, AggregatorMessage, CommandReport, DeclaredWorkload, Hello, agent_message::Msg as AgentMsg,
    aggregator_message::Msg as AggMsg, orchestrator_client::OrchestratorClient, telemetry_client::TelemetryClient,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The resource set the tests use: `web` on hosts a and b behind HAProxy on host lb.
fn remediation() -> RemediationConfig {
    let member =
        |h: &str| MemberConfig { host: h.into(), workload: "web".into(), server: Some(h.into()), standby: false };
    let mut standby = member("s");
    standby.standby = true;
    RemediationConfig {
        sets: vec![ResourceSetConfig {
            name: "web".into(),
            owner: String::new(),
            sla: None,
            stateless: true,
            lb: Some(LbConfig { host: "lb".into(), workload: "haproxy".into(), backend: "app".into() }),
            members: vec![member("a"), member("b"), standby],
        }],
        ..Default::default()
    }
}

impl Server {
    async fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap()).await
    }

    /// An aggregator on the data in `dir` (e.g. one a previous server left).
    async fn start_in(dir: tempfile::TempDir) -> Server {
        let cfg = AggregatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            remediation: remediation(),
            ..Default::default()
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(augur_aggregator::run(
            cfg,
            async move {
                let _ = stop_rx.await;
            },
            move |addr| {
                let _ = ready_tx.send(addr);
            },
        ));
        let addr = ready_rx.await.expect("aggregator started");
        Server { url: format!("http://{addr}"), stop: Some(stop), task, _dir: dir }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).unwrap().connect().await.unwrap()
    }

    async fn orchestrator(&self) -> OrchestratorClient<Channel> {
        OrchestratorClient::new(self.channel().await)
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// Stops the server and hands back its data directory.
    async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
        self._dir
    }
}

/// A command as a scripted agent received it.
#[derive(Debug, Clone)]
struct Seen {
    kind: String,
    resource: String,
    args: HashMap<String, String>,
    dry_run: bool,
    target_host: String,
}

/// How a scripted agent answers a command: (status, message).
type Script = Arc<dyn Fn(&v1::Command) -> (v1::CommandStatus, String) + Send + Sync>;

fn succeed() -> Script {
    Arc::new(|c: &v1::Command| {
        if c.dry_run {
            (v1::CommandStatus::DryRun, "would do it".into())
        } else {
            (v1::CommandStatus::Succeeded, "done".into())
        }
    })
}

/// A scripted agent: declares `workloads`, records every command and answers per `script`.
struct Agent {
    seen: Arc<Mutex<Vec<Seen>>>,
    _tx: mpsc::Sender<AgentMessage>,
}

impl Agent {
    async fn connect(ch: Channel, host: &str, workloads: &[(&str, &[&str])], script: Script) -> Agent {
        let (tx, rx) = mpsc::channel(64);
        let workloads = workloads
            .iter()
            .map(|(name, allowed)| DeclaredWorkload {
                name: (*name).into(),
                resource: format!("cgroup/{name}"),
                allowed_actions: allowed.iter().map(|s| (*s).to_owned()).collect(),
                kind: "stateless".into(),
                health: "http".into(),
                ..Default::default()
            })
            .collect();
        let hello = Hello {
            protocol_version: augur_proto::PROTOCOL_VERSION,
            host_id: host.into(),
            incarnation: 7,
            agent_version: "scripted".into(),
            workloads,
            ..Default::default()
        };
        tx.send(AgentMessage { msg: Some(AgentMsg::Hello(hello)) }).await.unwrap();
        let mut inbound = TelemetryClient::new(ch).connect(ReceiverStream::new(rx)).await.unwrap().into_inner();
        match inbound.message().await.unwrap().and_then(|m| m.msg) {
            Some(AggMsg::Welcome(_)) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, out) = (seen.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                // Acks of the sample batches some tests send are not commands.
                let AggregatorMessage { msg: Some(AggMsg::Command(c)) } = m else { continue };
                s.lock().unwrap().push(Seen {
                    kind: c.kind.clone(),
                    resource: c.resource.clone(),
                    args: c.args.clone(),
                    dry_run: c.dry_run,
                    target_host: c.target_host.clone(),
                });
                let (status, message) = script(&c);
                let report = CommandReport {
                    command_id: c.id.clone(),
                    status: status as i32,
                    message,
                    time_ms: augur_core::time::now_ms(),
                    details: Default::default(),
                };
                if out.send(AgentMessage { msg: Some(AgentMsg::CommandReport(report)) }).await.is_err() {
                    break;
                }
            }
        });
        Agent { seen, _tx: tx }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const WEB: &[&str] = &["start", "stop", "health", "restart", "resize"];

/// Hosts a, b (web) and lb (haproxy), all answering success.
async fn fleet(srv: &Server, b_script: Script) -> (Agent, Agent, Agent) {
    let a = Agent::connect(srv.channel().await, "a", &[("web", WEB)], succeed()).await;
    let b = Agent::connect(srv.channel().await, "b", &[("web", WEB)], b_script).await;
    let lb = Agent::connect(srv.channel().await, "lb", &[("haproxy", &["traffic"])], succeed()).await;
    // The registry learns of a session just after Welcome; wait until all three count.
    let mut q = v1::query_client::QueryClient::new(srv.channel().await);
    for _ in 0..100 {
        let hosts = q.list_hosts(v1::ListHostsRequest {}).await.unwrap().into_inner().hosts;
        if hosts.iter().filter(|h| h.connected).count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (a, b, lb)
}

fn kinds(s: &[Seen]) -> Vec<String> {
    s.iter()
        .map(|c| match c.args.get("state").or(c.args.get("op")) {
            Some(x) => format!("{} {} {x}", c.kind, c.args.get("server").cloned().unwrap_or_default()),
            None => c.kind.clone(),
        })
        .collect()
}

#[tokio::test]
async fn migration_starts_checks_switches_then_stops_the_source_and_is_audited() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "a".into(),
            target_host: "b".into(),
            dry_run: false,
            reason: "component test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    assert_eq!(kinds(&b.seen()), ["start", "health"], "target: started, then health-checked");
    assert_eq!(
        kinds(&lb.seen()),
        ["traffic b ready", "traffic a drain", "traffic a maint"],
        "LB: target in, source drained, then (after the drain wait) in maintenance"
    );
    assert_eq!(kinds(&a.seen()), ["stop"], "source stopped last");
    for c in a.seen().iter().chain(&b.seen()).chain(&lb.seen()) {
        assert!(!c.dry_run);
    }
    assert!(lb.seen().iter().all(|c| c.target_host == "lb" && c.resource == "haproxy" && c.args["backend"] == "app"));
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(plan["action"], "migrate");
    assert!(r.steps.iter().any(|s| s.host == "b" && s.kind == "start" && s.status == "succeeded"), "{:?}", r.steps);

    // The audit trail holds the operator's decision, the workflow's records and the outcome.
    let ev = o
        .list_remediation_events(v1::ListRemediationEventsRequest {
            action_id: r.action_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let k: Vec<&str> = ev.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(k.first(), Some(&"decision"), "{k:?}");
    assert_eq!(k.last(), Some(&"outcome"), "{k:?}");
    assert!(k.contains(&"workflow_step") || k.contains(&"command"), "{k:?}");
    assert!(ev.windows(2).all(|w| w[1].prev_hash == w[0].hash || w[1].seq != w[0].seq + 1));
    let only_decisions = o
        .list_remediation_events(v1::ListRemediationEventsRequest {
            action_id: r.action_id.clone(),
            kinds: vec!["decision".into(), "outcome".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(only_decisions.len(), 2);
    let v = o.verify_audit(v1::VerifyAuditRequest {}).await.unwrap().into_inner();
    assert!(v.ok && v.records as usize >= ev.len(), "{v:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_target_failing_its_health_check_rolls_back_and_leaves_the_source_serving() {
    let srv = Server::start().await;
    let failing_health: Script = Arc::new(|c: &v1::Command| {
        if c.kind == "health" {
            (v1::CommandStatus::Failed, "GET /health: 503".into())
        } else {
            (v1::CommandStatus::Succeeded, "done".into())
        }
    });
    let (a, b, lb) = fleet(&srv, failing_health).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "a".into(),
            target_host: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::RolledBack as i32, "{r:?}");
    assert_eq!(kinds(&b.seen()), ["start", "health", "stop"], "the target was started, failed, and stopped again");
    assert!(lb.seen().is_empty(), "traffic never moved: {:?}", lb.seen());
    assert!(a.seen().is_empty(), "the source was never touched: {:?}", a.seen());
    srv.shutdown().await;
}

#[tokio::test]
async fn dry_run_sends_only_dry_run_commands() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "a".into(),
            target_host: "b".into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::DryRun as i32, "{r:?}");
    let all: Vec<Seen> = a.seen().into_iter().chain(b.seen()).chain(lb.seen()).collect();
    assert!(!all.is_empty());
    assert!(all.iter().all(|c| c.dry_run), "every command a dry run: {all:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_or_unknown_requests_get_clear_errors_and_send_nothing() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let mig = |w: &str, s: &str, t: &str| v1::OrchestrateMigrationRequest {
        workload: w.into(),
        source_host: s.into(),
        target_host: t.into(),
        ..Default::default()
    };
    let cases: Vec<(v1::OrchestrateMigrationRequest, Code, &str)> = vec![
        (mig("", "a", "b"), Code::InvalidArgument, "workload is required"),
        (mig("web", "", "b"), Code::InvalidArgument, "host is required"),
        (mig("web", "nosuch", "b"), Code::NotFound, "unknown host \"nosuch\""),
        (mig("db", "a", "b"), Code::NotFound, "declares no workload \"db\""),
        (mig("web", "a", "nosuch"), Code::NotFound, "unknown host \"nosuch\""),
        (mig("web", "a", "a"), Code::InvalidArgument, "target_host is the source host"),
    ];
    for (req, code, needle) in cases {
        let e = o.orchestrate_migration(req.clone()).await.expect_err(needle);
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(needle), "{req:?}: {:?} should mention {needle:?}", e.message());
    }
    let rem = |host: &str, action: &str, args: &[(&str, &str)], plan: &str| v1::RemediateRequest {
        host: host.into(),
        workload: if host.is_empty() { String::new() } else { "web".into() },
        action: action.into(),
        args: args.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        plan_json: plan.into(),
        ..Default::default()
    };
    let unknown_target = r#"{"action": "restart", "host": "ghost", "workload": "web"}"#;
    let cases: Vec<(v1::RemediateRequest, Code, &str)> = vec![
        (rem("a", "reboot", &[], ""), Code::InvalidArgument, "unknown action \"reboot\""),
        (rem("a", "", &[], ""), Code::InvalidArgument, "give an action, a failure_type"),
        (rem("a", "resize_memory", &[], ""), Code::InvalidArgument, "needs memory_max"),
        (rem("a", "resize_memory", &[("memory_max", "lots")], ""), Code::InvalidArgument, "memory_max"),
        (rem("a", "restart", &[("force", "1")], ""), Code::InvalidArgument, "takes no argument \"force\""),
        (rem("", "", &[], "{not json"), Code::InvalidArgument, "plan_json is not an ActionPlan"),
        (
            rem("", "", &[], r#"{"action": "restart", "host": "", "workload": "web"}"#),
            Code::InvalidArgument,
            "host is empty",
        ),
        (rem("", "", &[], unknown_target), Code::NotFound, "unknown host \"ghost\""),
        (rem("ghost", "restart", &[], ""), Code::NotFound, "unknown host \"ghost\""),
    ];
    for (req, code, needle) in cases {
        let e = o.remediate(req.clone()).await.expect_err(needle);
        assert_eq!(e.code(), code, "{req:?}: {e:?}");
        assert!(e.message().contains(needle), "{req:?}: {:?} should mention {needle:?}", e.message());
    }
    let e = o
        .list_remediation_events(v1::ListRemediationEventsRequest {
            kinds: vec!["gossip".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = o.approve(v1::ApproveRequest { action_id: "act-nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "nosuch".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let all = [a.seen(), b.seen(), lb.seen()].concat();
    assert!(all.is_empty(), "nothing was sent for a refused request: {all:?}");
    srv.shutdown().await;
}

/// One HTTP/1.1 request on the gRPC port; returns (status code, JSON body).
async fn http(url: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body_part = match body {
        Some(b) => format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
        None => "Content-Length: 0\r\n\r\n".into(),
    };
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{body_part}").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_owned())))
}

#[tokio::test]
async fn the_rest_gateway_serves_the_same_operations_with_json_errors() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let u = srv.url.as_str();
    let (code, v) = http(u, "POST", "/orchestrate_migration", Some("{not json")).await;
    assert_eq!((code, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    let (code, v) = http(u, "POST", "/orchestrate_migration", Some(r#"{"workload": "web", "source": "a"}"#)).await;
    assert_eq!(code, 400, "unknown field: {v}");
    assert!(v["error"].as_str().unwrap().contains("source"), "{v}");
    let (code, v) =
        http(u, "POST", "/orchestrate_migration", Some(r#"{"workload": "web", "source_host": "ghost"}"#)).await;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (code, v) = http(u, "GET", "/remediation_events?kind=gossip", None).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = http(u, "GET", "/predict_failure", None).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = http(u, "GET", "/predict_failure?resource=ghost/cgroup/x", None).await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = http(u, "POST", "/pending_actions/act-nope/reject", None).await;
    assert_eq!(code, 404, "{v}");
    let (code, v) =
        http(u, "POST", "/pending_actions/act-nope/reject", Some(r#"{"operator": "x", "reason": "no"}"#)).await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = http(u, "POST", "/pending_actions/act-nope/approve", Some(r#"{"operatr": "x"}"#)).await;
    assert_eq!((code, v["code"].as_str()), (400, Some("invalid_argument")), "a misspelt field is refused: {v}");
    let (code, v) = http(u, "POST", "/pending_actions/act-nope/approve", Some("{")).await;
    assert_eq!(code, 400, "{v}");
    assert!([a.seen(), b.seen(), lb.seen()].concat().is_empty(), "nothing sent for refused requests");

    // A dry-run migration through REST, then its audit records and the chain check.
    let (code, v) = http(
        u,
        "POST",
        "/orchestrate_migration",
        Some(r#"{"workload": "web", "source_host": "a", "target_host": "b", "dry_run": true}"#),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "dry_run", "{v}");
    assert_eq!(v["plan"]["action"], "migrate");
    assert!(lb.seen().iter().all(|c| c.dry_run) && !lb.seen().is_empty());
    let id = v["action_id"].as_str().unwrap();
    let (code, ev) = http(u, "GET", &format!("/remediation_events?action_id={id}&kind=decision,outcome"), None).await;
    assert_eq!(code, 200, "{ev}");
    let kinds: Vec<&str> = ev.as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["decision", "outcome"], "{ev}");
    assert_eq!(ev[0]["detail"]["dry_run"], true);
    let (code, v) = http(u, "GET", "/remediation_events/verify", None).await;
    assert_eq!((code, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let (code, v) = http(u, "GET", "/pending_actions", None).await;
    assert_eq!((code, v.as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let (code, v) =
        http(u, "POST", "/autonomous_remediate", Some(r#"{"host": "a", "workload": "web", "action": "restart"}"#))
            .await;
    assert_eq!((code, v["status"].as_str()), (200, Some("succeeded")), "{v}");
    let live: Vec<Seen> = a.seen().into_iter().filter(|c| !c.dry_run).collect();
    assert_eq!(kinds_of(&live), ["restart"], "only the restart changed anything on a");
    srv.shutdown().await;
}

fn kinds_of(s: &[Seen]) -> Vec<&str> {
    s.iter().map(|c| c.kind.as_str()).collect()
}

#[tokio::test]
async fn scaling_recommendations_say_why_without_history_and_scaling_refuses_absent_hosts() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .scaling_recommendations(v1::ScalingRecommendationsRequest { set: String::new() })
        .await
        .unwrap()
        .into_inner()
        .recommendations;
    assert_eq!(r.len(), 1, "{r:?}");
    let w = &r[0];
    assert_eq!((w.set.as_str(), w.current, w.recommended, w.delta), ("web", 2, 2, 0), "{w:?}");
    assert!(w.reason.contains("no demand forecast"), "{w:?}");
    let e = o.scaling_recommendations(v1::ScalingRecommendationsRequest { set: "nosuch".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The recommendation (keep the size) means nothing to do.
    let s = o.predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), ..Default::default() }).await.unwrap();
    assert_eq!(s.into_inner().status, v1::ActionStatus::NothingToDo as i32);
    // Scaling out takes the standby member, whose host has no agent: refused, nothing sent.
    let e = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), delta: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("\"s\""), "{e:?}");
    let e = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), delta: 2, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "only one spare member: {e:?}");
    assert!([a.seen(), b.seen(), lb.seen()].concat().is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn a_failure_type_gets_the_knowledge_bases_first_applicable_action() {
    let srv = Server::start().await;
    let (a, _b, _lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let req = |args: &[(&str, &str)]| v1::RemediateRequest {
        host: "a".into(),
        workload: "web".into(),
        failure_type: "memory_exhaustion".into(),
        args: args.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        ..Default::default()
    };
    // memory_exhaustion: resize_memory first, which needs a size; with one it is chosen.
    let r = o.remediate(req(&[("memory_max", "1GiB")])).await.unwrap().into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!((plan["action"].as_str(), plan["resize"]["memory_max"].as_u64()), (Some("resize"), Some(1 << 30)));
    // Without a size the resize does not apply and the next candidate, restart, does.
    let r = o.remediate(req(&[])).await.unwrap().into_inner();
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(plan["action"], "restart", "{r:?}");
    assert_eq!(kinds(&a.seen()), ["resize", "restart"]);
    assert_eq!(a.seen()[0].args["memory_max"], (1u64 << 30).to_string());
    let e = o.remediate(req(&[("memory_max", "lots")])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("memory_max"), "{e:?}");
    let e = o.remediate(v1::RemediateRequest { failure_type: "gremlins".into(), ..req(&[]) }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("no actions for failure type \"gremlins\""), "{e:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_migration_without_a_target_goes_to_a_connected_serving_member_never_the_standby() {
    let srv = Server::start().await;
    let (_a, b, _lb) = fleet(&srv, succeed()).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "a".into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::DryRun as i32, "{r:?}");
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!((plan["target"]["host"].as_str(), plan["target"]["server"].as_str()), (Some("b"), Some("b")));
    assert!(b.seen().iter().all(|c| c.dry_run) && !b.seen().is_empty());
    // From b, the only other member with a server that is not the standby is a.
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "b".into(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(plan["target"]["host"], "a", "{plan}");
    srv.shutdown().await;
}

/// Sends `minutes` of history ending now, one point every 5 s, through the real ingest
/// path: `web`'s CPU counter (`container_cpu_usage_seconds_total`, cores in use = `rate(t)`
/// with `t` the share of the history elapsed, 0..=1) and its CPU limit of 1 core.
async fn send_cpu_history(agent: &Agent, minutes: i64, rate: impl Fn(f64) -> f64) {
    let def = |r: u32, metric: &str, kind: v1::MetricKind| v1::SeriesDef {
        r#ref: r,
        resource: "cgroup/web".into(),
        metric: metric.into(),
        unit: String::new(),
        kind: kind as i32,
        labels: Default::default(),
    };
    let now = augur_core::time::now_ms();
    let n = minutes * 12;
    let (mut ts, mut used, mut limit) = (Vec::new(), Vec::new(), Vec::new());
    let mut counter = 1000.0;
    for i in 0..=n {
        let t = now - (n - i) * 5000;
        counter += rate(i as f64 / n as f64) * 5.0;
        ts.push(t);
        used.push(counter);
        limit.push(1.0);
    }
    let batch = v1::SampleBatch {
        sequence: 1,
        defs: vec![
            def(1, "container_cpu_usage_seconds_total", v1::MetricKind::Counter),
            def(2, "container_spec_cpu_limit_cores", v1::MetricKind::Gauge),
        ],
        series: vec![
            v1::SeriesPoints { r#ref: 1, timestamps_ms: ts.clone(), values: used },
            v1::SeriesPoints { r#ref: 2, timestamps_ms: ts, values: limit },
        ],
        dropped_before: 0,
    };
    agent._tx.send(AgentMessage { msg: Some(AgentMsg::Batch(batch)) }).await.unwrap();
}

/// The `web` recommendation once the aggregator has a forecast for every serving member
/// (the history is stored shortly after it is sent).
async fn recommendation(o: &mut OrchestratorClient<Channel>) -> v1::ScalingRecommendation {
    let mut last = None;
    for _ in 0..200 {
        let r = o
            .scaling_recommendations(v1::ScalingRecommendationsRequest { set: "web".into() })
            .await
            .unwrap()
            .into_inner()
            .recommendations;
        assert_eq!(r.len(), 1, "{r:?}");
        let w = r.into_iter().next().unwrap();
        if w.predicted_demand.is_finite() && w.capacity_per_instance.is_finite() {
            return w;
        }
        last = Some(w);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no forecast-based recommendation: {last:?}");
}

#[tokio::test]
async fn rising_cpu_history_recommends_scaling_out_by_its_p90_forecast_and_executing_it_adds_the_spare() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    let s = Agent::connect(srv.channel().await, "s", &[("web", WEB)], succeed()).await;
    // 30 minutes of CPU rising toward the 1-core limit on both serving members: 0.3 -> 0.95.
    let rising = |t: f64| 0.3 + 0.65 * t;
    send_cpu_history(&a, 30, rising).await;
    send_cpu_history(&b, 30, rising).await;
    let mut o = srv.orchestrator().await;
    let w = recommendation(&mut o).await;
    println!(
        "rising: current {} recommended {} delta {} p{} demand {:.3} cores, capacity {:.3}: {}",
        w.current,
        w.recommended,
        w.delta,
        w.quantile * 100.0,
        w.predicted_demand,
        w.capacity_per_instance,
        w.reason
    );
    assert_eq!((w.current, w.recommended, w.delta), (2, 3, 1), "{w:?}");
    assert_eq!((w.metric.as_str(), w.horizon_s, w.quantile), ("container_cpu_usage_seconds_total", 900, 0.9));
    assert!((w.capacity_per_instance - 1.0).abs() < 1e-9, "one core per instance: {w:?}");
    // Two members at 0.95 cores now: the p90 15 minutes ahead is at least that demand,
    // more than 2 instances hold at 70% (1.4 cores).
    assert!(w.predicted_demand >= 1.8 && w.predicted_demand < 10.0, "{w:?}");
    assert!(w.reason.contains("p90 CPU demand in 15 min"), "{w:?}");
    assert!(w.reason.contains(&format!("{:.2} cores", w.predicted_demand)), "the reason shows the figure: {w:?}");

    // PredictiveScale without a delta executes the recommendation: the spare s is started,
    // checked and put in the rotation; the set now counts 3 instances.
    let r = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), reason: "test".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!((plan["delta"].as_i64(), plan["instances"][0]["host"].as_str()), (Some(1), Some("s")), "{plan}");
    assert_eq!(kinds(&s.seen()), ["start", "health"]);
    assert_eq!(kinds(&lb.seen()), ["traffic s ready"]);
    assert!(a.seen().is_empty() && b.seen().is_empty());
    // The new instance has no history yet: it is left out of the demand (named in the
    // reason) instead of leaving the whole set without a recommendation.
    let w = recommendation(&mut o).await;
    assert_eq!(w.current, 3, "{w:?}");
    assert!(w.reason.contains("left out, no forecast yet: s/cgroup/web"), "{w:?}");
    // The decision names the recommendation it executed.
    let ev = o
        .list_remediation_events(v1::ListRemediationEventsRequest {
            action_id: r.action_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let decision = ev.records.iter().find(|e| e.kind == "decision").expect("a decision record");
    let d: Value = serde_json::from_str(&decision.detail_json).unwrap();
    assert_eq!(d["request"]["recommendation"]["recommended"], 3, "{d:#}");
    srv.shutdown().await;
}

#[tokio::test]
async fn flat_low_cpu_history_recommends_scaling_in_and_an_unknown_set_is_not_found() {
    let srv = Server::start().await;
    let (a, b, lb) = fleet(&srv, succeed()).await;
    send_cpu_history(&a, 30, |_| 0.1).await;
    send_cpu_history(&b, 30, |_| 0.1).await;
    let mut o = srv.orchestrator().await;
    let w = recommendation(&mut o).await;
    println!(
        "flat: current {} recommended {} delta {} demand {:.3}: {}",
        w.current, w.recommended, w.delta, w.predicted_demand, w.reason
    );
    // 0.2 cores fit in one instance at 70% of a core: one of the two can go.
    assert_eq!((w.current, w.recommended, w.delta), (2, 1, -1), "{w:?}");
    assert!(w.predicted_demand > 0.1 && w.predicted_demand < 0.7, "{w:?}");
    // Executing it drains, removes and stops the member listed last (b), never a.
    let r = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    assert_eq!(kinds(&lb.seen()), ["traffic b drain", "traffic b maint"]);
    assert_eq!(kinds(&b.seen()), ["stop"]);
    assert!(a.seen().is_empty());
    let w = recommendation(&mut o).await;
    assert_eq!((w.current, w.delta), (1, 0), "one instance holds the flat load: {w:?}");
    // The last instance is never scaled away.
    let e = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), delta: -1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(a.seen().is_empty(), "nothing sent to the last instance");
    // No recommendation for a set that does not exist.
    let e = o.scaling_recommendations(v1::ScalingRecommendationsRequest { set: "nosuch".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn scaling_follows_who_serves_after_a_migration() {
    let srv = Server::start().await;
    let (_a, _b, _lb) = fleet(&srv, succeed()).await;
    let _s = Agent::connect(srv.channel().await, "s", &[("web", WEB)], succeed()).await;
    let mut o = srv.orchestrator().await;
    let scale =
        |delta: i32| v1::PredictiveScaleRequest { set: "web".into(), delta, dry_run: true, ..Default::default() };
    let host_of = |r: &v1::ActionResult| -> String {
        let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
        plan["instances"][0]["host"].as_str().unwrap().to_owned()
    };
    // Before: a and b serve, the standby s is the only spare; b joined last.
    assert_eq!(host_of(&o.predictive_scale(scale(1)).await.unwrap().into_inner()), "s");
    assert_eq!(host_of(&o.predictive_scale(scale(-1)).await.unwrap().into_inner()), "b");
    // Moving a's instance to s: s serves in a's place, a becomes the spare.
    let r = o
        .orchestrate_migration(v1::OrchestrateMigrationRequest {
            workload: "web".into(),
            source_host: "a".into(),
            target_host: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    assert_eq!(host_of(&o.predictive_scale(scale(1)).await.unwrap().into_inner()), "a");
    assert_eq!(host_of(&o.predictive_scale(scale(-1)).await.unwrap().into_inner()), "s");
    // A dry run changes nothing: still two serving, a spare.
    let e = o.predictive_scale(scale(2)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "one spare (a): {e:?}");
    assert!(e.message().contains("1 spare member"), "{e:?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn who_serves_after_a_scale_out_survives_an_aggregator_restart() {
    let srv = Server::start().await;
    let (_a, _b, _lb) = fleet(&srv, succeed()).await;
    let _s = Agent::connect(srv.channel().await, "s", &[("web", WEB)], succeed()).await;
    let mut o = srv.orchestrator().await;
    let r = o
        .predictive_scale(v1::PredictiveScaleRequest { set: "web".into(), delta: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, v1::ActionStatus::Succeeded as i32, "{r:?}");
    let dir = srv.stop_keeping_data().await;

    let srv = Server::start_in(dir).await;
    let (_a, _b, _lb) = fleet(&srv, succeed()).await;
    let _s = Agent::connect(srv.channel().await, "s", &[("web", WEB)], succeed()).await;
    let mut o = srv.orchestrator().await;
    let scale =
        |delta: i32| v1::PredictiveScaleRequest { set: "web".into(), delta, dry_run: true, ..Default::default() };
    // The restarted aggregator knows s serves (from the audit trail): scale-in removes it,
    // and there is no spare left to scale out onto.
    let r = o.predictive_scale(scale(-1)).await.unwrap().into_inner();
    let plan: Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(plan["instances"][0]["host"], "s", "{plan}");
    let e = o.predictive_scale(scale(1)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("0 spare member"), "{e:?}");
    let w = o
        .scaling_recommendations(v1::ScalingRecommendationsRequest { set: "web".into() })
        .await
        .unwrap()
        .into_inner()
        .recommendations;
    assert_eq!(w[0].current, 3, "{w:?}");
    srv.shutdown().await;
}

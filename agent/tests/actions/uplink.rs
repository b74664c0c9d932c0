//! The real agent (`augur_agent::run`) against a scripted aggregator: a tonic server on
//! port 0 that sends Commands down the stream and reads CommandReports back.

use std::path::Path;
use std::time::Duration;

use augur_agent::config::AgentConfig;
use augur_agent::workload::WorkloadConfig;
use augur_proto::v1::{
    self, AgentMessage, AggregatorMessage, CommandStatus, Welcome,
    agent_message::Msg as AgentMsg,
    aggregator_message::Msg as AggMsg,
    telemetry_server::{Telemetry, TelemetryServer},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{HOST, cmd, health_command, read};

struct PeerSession {
    hello: v1::Hello,
    inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<AggregatorMessage, Status>>,
}

struct Peer {
    sessions: mpsc::Sender<PeerSession>,
}

#[tonic::async_trait]
impl Telemetry for Peer {
    type ConnectStream = ReceiverStream<Result<AggregatorMessage, Status>>;

    async fn connect(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage { msg: Some(AgentMsg::Hello(h)) }) => h,
            other => return Err(Status::invalid_argument(format!("expected Hello, got {other:?}"))),
        };
        let (tx, rx) = mpsc::channel(64);
        self.sessions.send(PeerSession { hello, inbound, tx }).await.map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl PeerSession {
    async fn send(&self, m: AggMsg) {
        self.tx.send(Ok(AggregatorMessage { msg: Some(m) })).await.expect("agent stream open");
    }

    /// The next message that is not a sample batch (batches are acknowledged).
    async fn next(&mut self) -> AgentMsg {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(15), self.inbound.message())
                .await
                .expect("the agent said nothing for 15 s")
                .expect("stream error")
                .and_then(|m| m.msg)
                .expect("stream ended");
            match m {
                AgentMsg::Batch(b) => {
                    let ack = v1::Ack { acked_sequence: b.sequence, sequence: b.sequence, ..Default::default() };
                    self.send(AggMsg::Ack(ack)).await;
                }
                other => return other,
            }
        }
    }

    /// The next command report, skipping heartbeats (not echoed: reports stay unconfirmed).
    async fn report(&mut self) -> v1::CommandReport {
        loop {
            if let AgentMsg::CommandReport(r) = self.next().await {
                return r;
            }
        }
    }
}

async fn next_session(s: &mut mpsc::Receiver<PeerSession>) -> PeerSession {
    tokio::time::timeout(Duration::from_secs(15), s.recv()).await.expect("agent connects").expect("server up")
}

fn agent_config(state: &Path, cgroup_root: &Path, port: u16) -> AgentConfig {
    let mut cfg = AgentConfig {
        host_id: HOST.into(),
        state_dir: state.to_owned(),
        interval: Duration::from_millis(200),
        ..AgentConfig::default()
    };
    cfg.aggregator.url = format!("http://127.0.0.1:{port}");
    cfg.aggregator.backoff_initial = Duration::from_millis(50);
    cfg.aggregator.backoff_max = Duration::from_millis(200);
    cfg.aggregator.heartbeat = Duration::from_millis(300);
    cfg.aggregator.drain_timeout = Duration::from_millis(100);
    cfg.containers.cgroup_root = cgroup_root.to_owned();
    cfg.containers.docker = false;
    cfg.containers.containerd = false;
    cfg.containers.kubernetes = false;
    cfg.containers.systemd_services = false;
    let mut w = WorkloadConfig::named("web");
    w.cgroup = Some("apps/web".into());
    w.allowed_actions = vec!["resize".into(), "health".into()];
    w.health = Some(health_command(&["true"]));
    cfg.workloads = vec![w];
    cfg.validate().expect("valid test config");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_aggregator_drives_the_real_agent_uplink() {
    let root = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let u = root.path().join("unified");
    std::fs::create_dir_all(u.join("apps/web")).expect("mkdir");
    std::fs::write(u.join("cgroup.controllers"), "cpu memory\n").expect("controllers");
    for (f, v) in
        [("memory.max", "max"), ("memory.high", "max"), ("cpu.max", "max 100000"), ("memory.current", "1048576")]
    {
        std::fs::write(u.join("apps/web").join(f), format!("{v}\n")).expect("fixture");
    }
    let memory_max = u.join("apps/web/memory.max");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stx, mut sessions) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TelemetryServer::new(Peer { sessions: stx }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(augur_agent::run(agent_config(state.path(), root.path(), port), async {
        let _ = stop_rx.await;
    }));

    // Session 1: commands are executed and reported; heartbeats are not echoed.
    let mut s = next_session(&mut sessions).await;
    assert_eq!(s.hello.host_id, HOST);
    let w = &s.hello.workloads[0];
    assert_eq!((w.name.as_str(), w.resource.as_str(), w.health.as_str()), ("web", "cgroup/web", "command"));
    assert_eq!(w.allowed_actions, ["resize", "health"]);
    s.send(AggMsg::Welcome(Welcome { protocol_version: 1, aggregator_id: "peer".into(), ..Default::default() })).await;
    let resize = cmd("c1", "web", "resize", &[("memory_max", "512MiB")]);
    s.send(AggMsg::Command(resize.clone())).await;
    let r = s.report().await;
    assert_eq!((r.command_id.as_str(), r.status), ("c1", CommandStatus::Succeeded as i32), "{r:?}");
    assert_eq!(read(&memory_max), "536870912");
    s.send(AggMsg::Command(resize.clone())).await;
    let r = s.report().await;
    assert_eq!((r.command_id.as_str(), r.status), ("c1", CommandStatus::Duplicate as i32), "{r:?}");
    let mut other = cmd("c2", "web", "resize", &[("memory_max", "1GiB")]);
    other.target_host = "host-b".into();
    s.send(AggMsg::Command(other)).await;
    let r = s.report().await;
    assert_eq!((r.command_id.as_str(), r.status), ("c2", CommandStatus::Refused as i32), "{r:?}");
    let mut dry = cmd("c3", "web", "resize", &[("memory_max", "1GiB")]);
    dry.dry_run = true;
    s.send(AggMsg::Command(dry)).await;
    let r = s.report().await;
    assert_eq!((r.command_id.as_str(), r.status), ("c3", CommandStatus::DryRun as i32), "{r:?}");
    assert_eq!(read(&memory_max), "536870912", "dry run changed memory.max");
    s.tx.send(Err(Status::unavailable("scripted outage"))).await.expect("end session");
    drop(s);

    // Session 2: the four unconfirmed reports come again, first, then a heartbeat.
    let mut s = next_session(&mut sessions).await;
    s.send(AggMsg::Welcome(Welcome { protocol_version: 1, aggregator_id: "peer".into(), ..Default::default() })).await;
    let mut resent = Vec::new();
    let marker = loop {
        match s.next().await {
            AgentMsg::CommandReport(r) => resent.push((r.command_id, r.status)),
            AgentMsg::Heartbeat(hb) => break hb.time_ms,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        resent,
        [
            ("c1".to_string(), CommandStatus::Succeeded as i32),
            ("c1".to_string(), CommandStatus::Duplicate as i32),
            ("c2".to_string(), CommandStatus::Refused as i32),
            ("c3".to_string(), CommandStatus::DryRun as i32),
        ]
    );
    // Echo the heartbeat: everything sent before it is delivered. Wait for a later
    // heartbeat so the agent has read the echo, then drop the stream again.
    s.send(AggMsg::HeartbeatReply(v1::HeartbeatReply { time_ms: marker })).await;
    loop {
        if let AgentMsg::Heartbeat(hb) = s.next().await
            && hb.time_ms > marker
        {
            break;
        }
    }
    s.tx.send(Err(Status::unavailable("scripted outage"))).await.expect("end session");
    drop(s);

    // Session 3: nothing is re-sent; a new command still works.
    let mut s = next_session(&mut sessions).await;
    s.send(AggMsg::Welcome(Welcome { protocol_version: 1, aggregator_id: "peer".into(), ..Default::default() })).await;
    s.send(AggMsg::Command(cmd("c4", "web", "health", &[]))).await;
    let r = s.report().await;
    assert_eq!(
        (r.command_id.as_str(), r.status),
        ("c4", CommandStatus::Succeeded as i32),
        "delivered reports came again: {r:?}"
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(15), agent).await.expect("agent stops").expect("join").expect("agent ran");
}

/// Hello announces `criu` exactly when this host's `criu check` passes (it fails where
/// CRIU cannot work, e.g. an unsupported vDSO), and a checkpoint sent through the real
/// uplink is then refused with the probe's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_announces_criu_only_when_criu_check_passes() {
    use augur_agent::actuator::{ProcessRunner, criu};
    let state = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stx, mut sessions) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TelemetryServer::new(Peer { sessions: stx }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut cfg = agent_config(state.path(), Path::new("/nonexistent"), port);
    let mut w = WorkloadConfig::named("db");
    w.kind = augur_agent::workload::WorkloadKind::Stateful;
    w.process = Some("augur-no-such".into());
    w.allowed_actions = vec!["checkpoint".into(), "restore".into()];
    w.health = Some(health_command(&["true"]));
    cfg.workloads = vec![w];
    cfg.validate().expect("valid test config");
    let probe = criu::probe(&ProcessRunner, &cfg.criu).await;
    eprintln!("criu check on this host: usable={} ({})", probe.usable, probe.message);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(augur_agent::run(cfg, async {
        let _ = stop_rx.await;
    }));
    let mut s = next_session(&mut sessions).await;
    assert!(s.hello.capabilities.iter().any(|c| c == "actions.v1"), "{:?}", s.hello.capabilities);
    assert_eq!(s.hello.capabilities.iter().any(|c| c == "criu"), probe.usable, "{:?}", s.hello.capabilities);
    s.send(AggMsg::Welcome(Welcome { protocol_version: 1, aggregator_id: "peer".into(), ..Default::default() })).await;
    s.send(AggMsg::Command(cmd("k1", "db", "checkpoint", &[]))).await;
    let r = s.report().await;
    assert_eq!((r.command_id.as_str(), r.status), ("k1", CommandStatus::Refused as i32), "{r:?}");
    if probe.usable {
        // criu works: the refusal is the workload's (no process of that name), not criu's.
        assert!(r.message.contains("no running process named"), "{r:?}");
    } else {
        assert_eq!(r.message, format!("criu is not usable on this host: {}; nothing done", probe.message));
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(15), agent).await.expect("agent stops").expect("join").expect("agent ran");
}

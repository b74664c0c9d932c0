//! Component tests: the aggregator's real gRPC server on port 0 over a real RocksDB store,
//! driven by scripted agents. Bad input must get a clear error, keep the server up and
//! leave other agents unaffected.

use std::time::Duration;

use augur_aggregator::config::AggregatorConfig;
use augur_proto::v1::{
    self, AgentMessage, AggregatorMessage, Hello, SampleBatch, SeriesDef, SeriesPoints, agent_message::Msg as AgentMsg,
    aggregator_message::Msg as AggMsg, query_client::QueryClient, telemetry_client::TelemetryClient,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

#[path = "grpc/closed_loop.rs"]
mod closed_loop;
#[path = "grpc/orchestrator.rs"]
mod orchestrator;

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut AggregatorConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AggregatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        tweak(&mut cfg);
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

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn now_ms() -> i64 {
    augur_core::time::now_ms()
}

fn hello(host: &str, version: u32) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            protocol_version: version,
            host_id: host.into(),
            incarnation: 42,
            agent_version: "test".into(),
            ..Default::default()
        })),
    }
}

fn def(r: u32, metric: &str) -> SeriesDef {
    SeriesDef {
        r#ref: r,
        resource: "host".into(),
        metric: metric.into(),
        unit: "bytes".into(),
        kind: v1::MetricKind::Gauge as i32,
        labels: Default::default(),
    }
}

fn batch(seq: u64, defs: Vec<SeriesDef>, points: Vec<(u32, i64, f64)>) -> AgentMessage {
    let series = points
        .into_iter()
        .map(|(r, ts, v)| SeriesPoints { r#ref: r, timestamps_ms: vec![ts], values: vec![v] })
        .collect();
    AgentMessage { msg: Some(AgentMsg::Batch(SampleBatch { sequence: seq, defs, series, dropped_before: 0 })) }
}

/// A scripted agent on one stream.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    rx: Streaming<AggregatorMessage>,
}

impl Agent {
    async fn connect(ch: Channel, host: &str) -> Result<(Agent, v1::Welcome), Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(hello(host, augur_proto::PROTOCOL_VERSION)).await.unwrap();
        let mut rx = TelemetryClient::new(ch).connect(ReceiverStream::new(rx)).await?.into_inner();
        match rx.message().await?.and_then(|m| m.msg) {
            Some(AggMsg::Welcome(w)) => Ok((Agent { tx, rx }, w)),
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, m: AgentMessage) -> Result<v1::Ack, Status> {
        // The server may already have ended the call (e.g. a newer session replaced this
        // one): then the request side is closed and the status waits in the response.
        let sent = self.tx.send(m).await.is_ok();
        if !sent {
            return match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await.expect("status in time")
            {
                Err(status) => Err(status),
                Ok(other) => Err(Status::cancelled(format!("request stream closed; response: {other:?}"))),
            };
        }
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await.expect("answer in time")? {
            Some(AggregatorMessage { msg: Some(AggMsg::Ack(a)) }) => Ok(a),
            other => panic!("expected Ack, got {other:?}"),
        }
    }
}

async fn stored(ch: Channel, host: &str, metric: &str) -> Vec<(i64, f64)> {
    let r = QueryClient::new(ch)
        .query_range(v1::QueryRangeRequest {
            host_id: host.into(),
            resource: "host".into(),
            metric: metric.into(),
            start_ms: 0,
            end_ms: i64::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.series.iter().flat_map(|s| s.points.iter().map(|p| (p.timestamp_ms, p.value))).collect()
}

#[tokio::test]
async fn incompatible_protocol_version_is_refused_clearly() {
    let srv = Server::start(|_| {}).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("h1", 99)).await.unwrap();
    let err = TelemetryClient::new(srv.channel().await).connect(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("protocol version 99"), "{}", err.message());

    let (tx, rx) = mpsc::channel(4);
    tx.send(batch(1, vec![], vec![])).await.unwrap();
    let err = TelemetryClient::new(srv.channel().await).connect(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("must be Hello"), "{}", err.message());
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_values_are_rejected_per_point_and_good_ones_stored() {
    let srv = Server::start(|_| {}).await;
    let (mut a, w) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    assert_eq!(w.acked_sequence, 0);
    let t = now_ms();
    let ack = a
        .send(batch(
            1,
            vec![def(0, "m")],
            vec![
                (0, t, 1.0),
                (0, t + 1, f64::NAN),
                (0, t + 2, f64::INFINITY),
                (0, t + 3, f64::NEG_INFINITY),
                (0, t + 86_400_000, 5.0),
                (0, 1_000, 6.0),
                (0, t + 4, 2.0),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(ack.code, Code::InvalidArgument as i32, "{ack:?}");
    assert_eq!((ack.accepted_points, ack.rejected_points, ack.acked_sequence), (2, 5, 1));
    assert!(ack.message.contains("non-finite"), "{}", ack.message);
    assert_eq!(stored(srv.channel().await, "h1", "m").await, vec![(t, 1.0), (t + 4, 2.0)]);
    srv.shutdown().await;
}

#[tokio::test]
async fn duplicate_and_out_of_order_sequences_store_once() {
    let srv = Server::start(|_| {}).await;
    let t = now_ms();
    let (mut a, _) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    for seq in 1..=3u64 {
        let ack = a
            .send(batch(seq, if seq == 1 { vec![def(0, "m")] } else { vec![] }, vec![(0, t + seq as i64, seq as f64)]))
            .await
            .unwrap();
        assert_eq!(ack.acked_sequence, seq);
    }
    let dup = a.send(batch(2, vec![], vec![(0, t + 2, 99.0)])).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.acked_sequence, 3);
    drop(a);
    // Reconnect: Welcome says what is stored; a full replay is acknowledged, not re-stored.
    let (mut a, w) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    assert_eq!(w.acked_sequence, 3);
    let ack = a.send(batch(1, vec![def(0, "m")], vec![(0, t + 1, 123.0)])).await.unwrap();
    assert!(ack.duplicate);
    let ack = a.send(batch(4, vec![], vec![(0, t + 4, 4.0)])).await.unwrap();
    assert_eq!((ack.acked_sequence, ack.accepted_points), (4, 1));
    let pts = stored(srv.channel().await, "h1", "m").await;
    assert_eq!(pts, vec![(t + 1, 1.0), (t + 2, 2.0), (t + 3, 3.0), (t + 4, 4.0)]);
    srv.shutdown().await;
}

/// Sends raw bytes as messages: a way to put malformed protobuf on the wire.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct MsgDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for MsgDecoder {
    type Item = AggregatorMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<AggregatorMessage>, Status> {
        AggregatorMessage::decode(src).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = AggregatorMessage;
    type Encoder = RawEncoder;
    type Decoder = MsgDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> MsgDecoder {
        MsgDecoder
    }
}

async fn raw_stream(ch: Channel, msgs: Vec<Vec<u8>>) -> Result<Vec<AggregatorMessage>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(16);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let path = http::uri::PathAndQuery::from_static("/augur.v1.Telemetry/Connect");
    let mut s = grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec).await?.into_inner();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.message()).await.expect("stream answers")? {
            Some(m) => got.push(m),
            None => return Ok(got),
        }
    }
}

#[tokio::test]
async fn malformed_and_oversized_messages_end_only_that_stream() {
    let srv = Server::start(|c| c.ingest.max_message_bytes = 64 << 10).await;
    // A healthy agent streams throughout.
    let (mut good, _) = Agent::connect(srv.channel().await, "good").await.unwrap();
    let t = now_ms();
    assert_eq!(good.send(batch(1, vec![def(0, "m")], vec![(0, t, 1.0)])).await.unwrap().code, 0);

    // Malformed protobuf after a valid Hello.
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x34];
    let err = raw_stream(srv.channel().await, vec![hello("bad", 1).encode_to_vec(), garbage]).await.unwrap_err();
    assert!(
        err.message().to_lowercase().contains("decode") || err.code() == Code::Internal,
        "malformed message answered with {err:?}"
    );

    // An oversized message (just over 64 KiB).
    let big: Vec<(u32, i64, f64)> = (0..6000).map(|i| (0, t + i, i as f64)).collect();
    let big = batch(1, vec![def(0, "m")], big).encode_to_vec();
    assert!(big.len() > 64 << 10);
    let err = raw_stream(srv.channel().await, vec![hello("big", 1).encode_to_vec(), big]).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted | Code::Internal),
        "oversized message answered with {err:?}"
    );
    assert!(err.message().contains("too large") || err.message().contains("length"), "{}", err.message());

    // The healthy agent never noticed; the oversized agent can reconnect and continue.
    assert_eq!(good.send(batch(2, vec![], vec![(0, t + 1, 2.0)])).await.unwrap().acked_sequence, 2);
    let (mut big_agent, w) = Agent::connect(srv.channel().await, "big").await.unwrap();
    assert_eq!(w.acked_sequence, 0, "nothing of the oversized batch was stored");
    assert_eq!(big_agent.send(batch(1, vec![def(0, "m")], vec![(0, t, 1.0)])).await.unwrap().acked_sequence, 1);
    assert_eq!(stored(srv.channel().await, "good", "m").await.len(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn undefined_refs_and_invalid_definitions_are_named() {
    let srv = Server::start(|_| {}).await;
    let (mut a, _) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    let t = now_ms();
    let mut bad = def(1, "has space");
    bad.resource = String::new();
    let ack = a.send(batch(1, vec![def(0, "m"), bad], vec![(0, t, 1.0), (1, t, 1.0), (7, t, 1.0)])).await.unwrap();
    assert_eq!(ack.code, Code::InvalidArgument as i32);
    let reasons: Vec<_> = ack.problems.iter().map(|p| (p.r#ref, p.reason.clone())).collect();
    assert!(reasons.iter().any(|(r, m)| *r == 1 && m.contains("invalid series definition")), "{reasons:?}");
    assert!(reasons.iter().any(|(r, m)| *r == 7 && m.contains("not defined")), "{reasons:?}");
    assert_eq!(ack.accepted_points, 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_agents_each_store_their_own_data() {
    let srv = Server::start(|_| {}).await;
    let ch = srv.channel().await;
    let t = now_ms();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let host = format!("host-{i:03}");
            let (mut a, _) = Agent::connect(ch, &host).await.unwrap();
            for seq in 1..=5u64 {
                let defs = if seq == 1 { vec![def(0, "m"), def(1, "n")] } else { vec![] };
                let ack =
                    a.send(batch(seq, defs, vec![(0, t + seq as i64 * 1000, i as f64), (1, t, 0.0)])).await.unwrap();
                assert_eq!(ack.acked_sequence, seq);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let hosts = QueryClient::new(ch.clone()).list_hosts(v1::ListHostsRequest {}).await.unwrap().into_inner().hosts;
    assert_eq!(hosts.len(), 200);
    assert!(hosts.iter().all(|h| h.series == 2 && h.samples_stored == 10), "{:?}", &hosts[0]);
    let pts = stored(ch, "host-123", "m").await;
    assert_eq!(pts.len(), 5);
    assert!(pts.iter().all(|p| p.1 == 123.0));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_newer_session_for_the_same_host_replaces_the_older() {
    let srv = Server::start(|_| {}).await;
    let t = now_ms();
    let (mut old, _) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    assert_eq!(old.send(batch(1, vec![def(0, "m")], vec![(0, t, 1.0)])).await.unwrap().acked_sequence, 1);
    let (mut new, w) = Agent::connect(srv.channel().await, "h1").await.unwrap();
    assert_eq!(w.acked_sequence, 1);
    let err = old.send(batch(2, vec![], vec![(0, t + 1, 2.0)])).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("newer session"), "{}", err.message());
    assert_eq!(new.send(batch(2, vec![def(0, "m")], vec![(0, t + 1, 2.0)])).await.unwrap().acked_sequence, 2);
    let hosts = QueryClient::new(srv.channel().await).list_hosts(v1::ListHostsRequest {}).await.unwrap().into_inner();
    assert!(hosts.hosts[0].connected);
    srv.shutdown().await;
}

// ---- Predictions: ingest -> feature engine -> ONNX model -> events over gRPC ----

use augur_proto::v1::predictions_client::PredictionsClient;

fn engine_fixture_manifest() -> std::path::PathBuf {
    augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/engine/manifest.toml")
}

/// Whether ONNX Runtime can be found; prints why the test is skipped otherwise.
fn onnxruntime_or_skip(test: &str) -> bool {
    match augur_aggregator::model::runtime::find_library(None) {
        Ok(_) => true,
        Err(e) => {
            println!("SKIP {test}: {e}");
            false
        }
    }
}

fn container_def(r: u32, metric: &str) -> SeriesDef {
    SeriesDef { resource: "cgroup/app".into(), ..def(r, metric) }
}

/// Sends a minute of a container leaking from 50% towards 96% of its 1 GiB limit.
async fn send_leak(agent: &mut Agent) {
    let limit = 1024.0 * 1048576.0;
    let start = now_ms() - 60_000;
    let mut defs =
        vec![container_def(1, "container_memory_usage_bytes"), container_def(2, "container_spec_memory_limit_bytes")];
    for (i, chunk) in (0..60).collect::<Vec<i64>>().chunks(10).enumerate() {
        let mut points = Vec::new();
        for s in chunk {
            let ts = start + s * 1000;
            points.push((1, ts, limit * (0.5 + 0.46 * *s as f64 / 59.0)));
            points.push((2, ts, limit));
        }
        let ack = agent.send(batch(i as u64 + 1, std::mem::take(&mut defs), points)).await.unwrap();
        assert_eq!(ack.code, 0, "{}", ack.message);
    }
}

#[tokio::test]
async fn leaking_container_raises_a_memory_exhaustion_event_for_subscribers() {
    if !onnxruntime_or_skip("leaking_container_raises_a_memory_exhaustion_event_for_subscribers") {
        return;
    }
    let srv = Server::start(|c| c.predict.models = engine_fixture_manifest()).await;
    let mut preds = PredictionsClient::new(srv.channel().await);
    // A filter for another host sees nothing; ours sees the event.
    let mut other = preds
        .subscribe(v1::SubscribeRequest { resource_prefixes: vec!["elsewhere".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut events = preds
        .subscribe(v1::SubscribeRequest {
            resource_prefixes: vec!["pred-h1/".into()],
            min_probability: 0.5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut agent, _) = Agent::connect(srv.channel().await, "pred-h1").await.unwrap();
    send_leak(&mut agent).await;

    let ev = tokio::time::timeout(Duration::from_secs(15), events.message())
        .await
        .expect("an event within 15 s")
        .unwrap()
        .expect("stream open");
    assert_eq!(ev.state, v1::EventState::Raised as i32);
    assert_eq!(ev.resource, "pred-h1/cgroup/app");
    assert_eq!(ev.host_id, "pred-h1");
    assert_eq!(ev.resource_kind, "container");
    assert_eq!(ev.failure_type, "memory_exhaustion");
    assert!(ev.probability >= 0.5, "probability {}", ev.probability);
    assert_eq!(ev.horizon_s, 30);
    let model = ev.model.clone().unwrap();
    assert_eq!((model.name.as_str(), model.version.as_str()), ("container-memory-test", "test.1"));
    assert!(ev.top_features.iter().any(|f| f.name == "mem_util"), "{:?}", ev.top_features);
    assert!(ev.summary.contains("% of limit"), "{}", ev.summary);
    assert_eq!(ev.dropped_before, 0);

    let p = preds
        .predict_failure(v1::PredictFailureRequest { resource: "pred-h1/cgroup/app".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.predictions.len(), 1);
    assert!(p.predictions[0].probability >= 0.5);
    assert!(tokio::time::timeout(Duration::from_millis(500), other.message()).await.is_err(), "filtered out");
    srv.shutdown().await;
}

#[tokio::test]
async fn prediction_requests_with_bad_arguments_get_clear_errors() {
    let srv = Server::start(|_| {}).await;
    let mut preds = PredictionsClient::new(srv.channel().await);
    let e = preds.predict_failure(v1::PredictFailureRequest { resource: "nobody/cgroup/x".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no live resource"), "{}", e.message());
    let e = preds.predict_failure(v1::PredictFailureRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = preds
        .subscribe(v1::SubscribeRequest { min_probability: 1.5, ..Default::default() })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("min_probability"), "{}", e.message());
    srv.shutdown().await;
}

#[tokio::test]
async fn a_model_with_the_wrong_schema_is_refused_and_the_aggregator_keeps_serving() {
    if !onnxruntime_or_skip("a_model_with_the_wrong_schema_is_refused_and_the_aggregator_keeps_serving") {
        return;
    }
    // The 5-feature fixtures do not carry the container schema the engine produces.
    let wrong = augur_core::testing::crate_dir(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/manifest.toml");
    let srv = Server::start(|c| c.predict.models = wrong).await;
    let (mut agent, _) = Agent::connect(srv.channel().await, "pred-h2").await.unwrap();
    send_leak(&mut agent).await;
    let stored = stored(srv.channel().await, "pred-h2", "container_memory_usage_bytes").await;
    assert!(stored.is_empty(), "container series are not host series");
    let mut q = QueryClient::new(srv.channel().await);
    let r = q
        .list_series(v1::ListSeriesRequest {
            host_id: "pred-h2".into(),
            resource: "cgroup/app".into(),
            metric: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.series.len(), 2, "ingest and queries work without models");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_missing_onnx_runtime_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AggregatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        predict: augur_aggregator::config::PredictSection {
            models: engine_fixture_manifest(),
            onnxruntime_library: dir.path().join("no-such-libonnxruntime.so"),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(10), augur_aggregator::run(cfg, std::future::pending(), |_| {}))
        .await
        .expect("fails fast, no hang");
    let msg = format!("{:#}", r.unwrap_err());
    assert!(msg.contains("no-such-libonnxruntime.so"), "{msg}");
}

/// A plain HTTP/1.1 GET on the gRPC port; returns (status line, body).
async fn http_get(url: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn metrics_and_health_are_served_over_http_on_the_grpc_port() {
    let srv = Server::start(|_| {}).await;
    let (mut agent, _) = Agent::connect(srv.channel().await, "metrics-h").await.unwrap();
    let ts = now_ms();
    agent.send(batch(1, vec![container_def(1, "container_memory_usage_bytes")], vec![(1, ts, 5.0)])).await.unwrap();
    // Wait for a prediction tick to have run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = http_get(&srv.url, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from\n{body}"))
    };
    assert_eq!(value("augur_hosts_connected"), 1.0);
    assert_eq!(value("augur_ingest_samples_stored_total"), 1.0);
    assert_eq!(value("augur_features_resources"), 1.0);
    assert!(value("augur_predict_ticks_total") >= 1.0);
    assert!(body.contains("augur_predict_tick_duration_ms{quantile=\"0.99\"}"), "{body}");
    let (status, body) = http_get(&srv.url, "/healthz").await;
    assert!(status.contains("200") && body.trim() == "ok", "{status} {body}");
    // gRPC still works on the same port after HTTP/1.1 traffic.
    let r = QueryClient::new(srv.channel().await).list_hosts(v1::ListHostsRequest {}).await.unwrap().into_inner();
    assert_eq!(r.hosts.len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn forecasts_follow_a_trend_and_refuse_what_they_cannot_do() {
    let srv = Server::start(|_| {}).await;
    let (mut agent, _) = Agent::connect(srv.channel().await, "fc-h").await.unwrap();
    // 40 minutes of memory growing 1 KiB/s plus a wobble, and a CPU counter at 0.5 core.
    let start = now_ms() - 40 * 60_000;
    let mut defs = vec![
        container_def(1, "container_memory_usage_bytes"),
        SeriesDef { kind: v1::MetricKind::Counter as i32, ..container_def(2, "container_cpu_usage_seconds_total") },
    ];
    for (seq, chunk) in (0..2400i64).collect::<Vec<_>>().chunks(600).enumerate() {
        let mut points = Vec::new();
        for s in chunk {
            let ts = start + s * 1000;
            points.push((1, ts, 1e8 + 1024.0 * *s as f64 + ((*s % 20) as f64 - 10.0) * 100.0));
            points.push((2, ts, 0.5 * *s as f64));
        }
        let ack = agent.send(batch(seq as u64 + 1, std::mem::take(&mut defs), points)).await.unwrap();
        assert_eq!(ack.code, 0, "{}", ack.message);
    }
    let mut preds = PredictionsClient::new(srv.channel().await);
    let req = |metric: &str, horizon_s| v1::ForecastRequest {
        resource: "fc-h/cgroup/app".into(),
        metric: metric.into(),
        horizon_s,
        ..Default::default()
    };
    let f = preds.forecast(req("container_memory_usage_bytes", 900)).await.unwrap().into_inner();
    assert_eq!(f.horizon_s, 900);
    let q: Vec<(f64, f64)> = f.quantiles.iter().map(|q| (q.quantile, q.value)).collect();
    assert_eq!(q.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0.1, 0.5, 0.9]);
    assert!(q[0].1 <= q[1].1 && q[1].1 <= q[2].1, "monotone: {q:?}");
    // The ramp continues: 15 minutes after the last sample, about 1e8 + 1024 * (2399 + 900).
    let want = 1e8 + 1024.0 * 3300.0;
    assert!((q[1].1 - want).abs() / want < 0.01, "p50 {} vs {want} (model {})", q[1].1, f.model);
    assert!(!f.model.is_empty() && f.history_points > 100 && !f.rate);

    let cpu = preds.forecast(req("container_cpu_usage_seconds_total", 900)).await.unwrap().into_inner();
    assert!(cpu.rate, "counters are forecast as rates");
    assert!((cpu.quantiles[1].value - 0.5).abs() < 0.05, "{:?}", cpu.quantiles);

    // 24 h ahead needs days of history: a clear refusal.
    let e = preds.forecast(req("container_memory_usage_bytes", 86_400)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = preds.forecast(req("no_such_metric", 900)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = preds.forecast(req("container_memory_usage_bytes", -5)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = preds
        .forecast(v1::ForecastRequest { quantiles: vec![1.5], ..req("container_memory_usage_bytes", 900) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    srv.shutdown().await;
}

//! `augur-bench loadgen`: simulated agents for the ingest bench (run as its own
//! process by [`crate::ingest`], so its CPU is measured apart from the aggregator's).
//!
//! Each simulated agent opens one `Telemetry.Connect` stream, says Hello with its own
//! host id and a nonzero incarnation, and after Welcome sends one SampleBatch per
//! simulated second: one point for each of its series, timestamps starting 50 minutes
//! in the past (see `START_AGO_MS`) and advancing 1 s per batch, values that drift like real gauges and
//! counters. It sends as fast as acks come back with at most `window` batches
//! unacknowledged. An agent whose timestamps catch up with the present slows to one
//! batch per second, like a real agent, so no point is ever stamped in the future.
//!
//! Streams share `connections` HTTP/2 connections round-robin (0 = one connection per
//! agent, as real agents have). The aggregator handles each stream as its own session
//! whatever connection it arrives on. Measured on a 2-core machine with 1000 agents:
//! 16 connections (~63 streams each) and 1000 connections gave the same throughput
//! within noise, with the load generator at ~19% vs ~24% of a core; the default of 16
//! leaves that difference to the aggregator, which shares the machine.
//!
//! All agents connect first; the clock starts when every one of them has its Welcome.
//! Acks that arrive during the warm-up are not counted. Stdout gets `MEASURE_START`
//! and `MEASURE_END` marker lines (so the parent can read CPU counters over exactly
//! the measured window) and then one JSON line with the results.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use augur_core::time::now_ms;
use augur_proto::PROTOCOL_VERSION;
use augur_proto::v1::{
    self, AgentMessage, Hello, SampleBatch, SeriesDef, SeriesPoints, agent_message::Msg as AgentMsg,
    aggregator_message::Msg as AggMsg, telemetry_client::TelemetryClient,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::procs::round;
use crate::report::Report;

/// How far in the past the first timestamp lies. Under the aggregator's default
/// `max_open_age` of 1 h: points older than that are sealed by the next maintenance
/// pass (every 30 s), and sealing 100,000 series at once would then run during the
/// measured window (and for minutes after it). This bench measures ingest; the cost of
/// sealing is the storage bench's business.
const START_AGO_MS: i64 = 50 * 60_000;

/// What the load generator is asked to do.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub agents: usize,
    pub series: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub window: usize,
    pub connections: usize,
}

/// One agent's tally.
#[derive(Debug, Default)]
struct AgentTally {
    accepted: u64,
    rejected: u64,
    acks: u64,
    latencies_us: Vec<u32>,
    caught_up: bool,
    error: Option<String>,
    first_problem: Option<String>,
}

/// Small xorshift generator: deterministic per agent, no shared state.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// The four kinds of series an agent reports, in turn.
#[derive(Clone, Copy)]
enum Shape {
    /// Byte counter (integer, e.g. network or disk bytes).
    BytesCounter { rate: f64 },
    /// Byte gauge (integer, e.g. memory use), a bounded random walk.
    BytesGauge { step: f64 },
    /// Ratio gauge in [0, 1] (e.g. CPU pressure), a random walk.
    Ratio,
    /// Seconds counter (e.g. CPU time), fractional increments.
    SecondsCounter { rate: f64 },
}

/// The series of one simulated agent and their current values.
struct SeriesSet {
    defs: Vec<SeriesDef>,
    shapes: Vec<Shape>,
    values: Vec<f64>,
    rng: XorShift,
}

impl SeriesSet {
    fn new(agent: usize, n: usize) -> Self {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (agent as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut defs = Vec::with_capacity(n);
        let mut shapes = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        for j in 0..n {
            let resource = if j < n / 2 { "host".to_owned() } else { format!("cgroup/bench/w{}", j % 8) };
            let (metric, unit, kind, shape, v0) = match j % 4 {
                0 => (
                    format!("bench_io_bytes_total_{j}"),
                    "bytes",
                    v1::MetricKind::Counter,
                    Shape::BytesCounter { rate: 1e3 + 1e6 * rng.unit().abs() },
                    (1e9 * rng.unit().abs()).floor(),
                ),
                1 => (
                    format!("bench_memory_bytes_{j}"),
                    "bytes",
                    v1::MetricKind::Gauge,
                    Shape::BytesGauge { step: 4096.0 * (1.0 + 64.0 * rng.unit().abs()).floor() },
                    (1e8 + 4e9 * rng.unit().abs()).floor(),
                ),
                2 => (
                    format!("bench_pressure_ratio_{j}"),
                    "ratio",
                    v1::MetricKind::Gauge,
                    Shape::Ratio,
                    0.5 * rng.unit().abs(),
                ),
                _ => (
                    format!("bench_cpu_seconds_total_{j}"),
                    "seconds",
                    v1::MetricKind::Counter,
                    Shape::SecondsCounter { rate: rng.unit().abs() },
                    1e5 * rng.unit().abs(),
                ),
            };
            defs.push(SeriesDef {
                r#ref: j as u32 + 1,
                resource,
                metric,
                unit: unit.to_owned(),
                kind: kind as i32,
                labels: Default::default(),
            });
            shapes.push(shape);
            values.push(v0);
        }
        SeriesSet { defs, shapes, values, rng }
    }

    /// Advances every series by one second and returns the batch; `with_defs` for the
    /// first batch of the stream.
    fn next_batch(&mut self, sequence: u64, ts: i64, with_defs: bool) -> SampleBatch {
        let mut series = Vec::with_capacity(self.values.len());
        for (j, (v, shape)) in self.values.iter_mut().zip(&self.shapes).enumerate() {
            let r = self.rng.unit();
            *v = match *shape {
                Shape::BytesCounter { rate } => *v + (rate * (1.0 + 0.3 * r)).floor().max(0.0),
                Shape::BytesGauge { step } => (*v + (step * r).round() * 4096.0).max(0.0),
                Shape::Ratio => (*v + 0.02 * r).clamp(0.0, 1.0),
                Shape::SecondsCounter { rate } => *v + rate * (1.0 + 0.5 * r).max(0.0),
            };
            series.push(SeriesPoints { r#ref: j as u32 + 1, timestamps_ms: vec![ts], values: vec![*v] });
        }
        SampleBatch {
            sequence,
            defs: if with_defs { self.defs.clone() } else { Vec::new() },
            series,
            dropped_before: 0,
        }
    }
}

/// Measurement window, known once every agent is connected.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// Runs one simulated agent until the window ends.
#[allow(clippy::too_many_arguments)]
async fn agent(
    index: usize,
    channel: Channel,
    cfg: LoadConfig,
    incarnation: u64,
    ts0: i64,
    ready: mpsc::Sender<Result<(), String>>,
    mut go: watch::Receiver<Option<Window>>,
) -> AgentTally {
    let mut tally = AgentTally::default();
    let mut ready = Some(ready);
    if let Err(e) = agent_session(index, channel, &cfg, incarnation, ts0, &mut ready, &mut go, &mut tally).await {
        // Before Welcome the failure is reported as a connect failure, after it here.
        match ready.take() {
            Some(r) => {
                let _ = r.send(Err(format!("agent {index}: {e:#}"))).await;
            }
            None => tally.error = Some(format!("agent {index}: {e:#}")),
        }
    }
    tally
}

#[allow(clippy::too_many_arguments)]
async fn agent_session(
    index: usize,
    channel: Channel,
    cfg: &LoadConfig,
    incarnation: u64,
    ts0: i64,
    ready: &mut Option<mpsc::Sender<Result<(), String>>>,
    go: &mut watch::Receiver<Option<Window>>,
    tally: &mut AgentTally,
) -> anyhow::Result<()> {
    let mut client =
        TelemetryClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<AgentMessage>(cfg.window + 4);
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            host_id: format!("bench-agent-{index:05}"),
            incarnation,
            agent_version: "augur-bench".to_owned(),
            labels: Default::default(),
            capabilities: Vec::new(),
            workloads: Vec::new(),
        })),
    })
    .await
    .context("queueing Hello")?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await.context("opening the stream")?.into_inner();
    let acked = match inbound.message().await.context("waiting for Welcome")? {
        Some(v1::AggregatorMessage { msg: Some(AggMsg::Welcome(w)) }) => w.acked_sequence,
        other => bail!("expected Welcome, got {other:?}"),
    };
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(())).await;
    }
    let window = *go.wait_for(Option::is_some).await.context("the start signal went away")?;
    let Some(window) = window else { bail!("no start time") };

    let mut set = SeriesSet::new(index, cfg.series);
    let first_seq = acked + 1;
    let mut next_seq = first_seq;
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(cfg.window);
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        // Fill the window, but never stamp a point in the future.
        while in_flight.len() < cfg.window {
            let ts = ts0 + (next_seq - first_seq) as i64 * 1000;
            if ts > now_ms() {
                tally.caught_up = true;
                break;
            }
            let batch = set.next_batch(next_seq, ts, next_seq == first_seq);
            tx.send(AgentMessage { msg: Some(AgentMsg::Batch(batch)) }).await.context("the outbound stream closed")?;
            in_flight.push_back((next_seq, Instant::now()));
            next_seq += 1;
        }
        let wake = if in_flight.is_empty() { (now + Duration::from_millis(100)).min(window.end) } else { window.end };
        let msg = tokio::select! {
            m = inbound.message(), if !in_flight.is_empty() => m,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        let ack = match msg {
            Ok(Some(v1::AggregatorMessage { msg: Some(AggMsg::Ack(a)) })) => a,
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the aggregator closed the stream"),
            Err(status) => bail!("the aggregator ended the stream: {status}"),
        };
        let at = Instant::now();
        let mut sent_at = None;
        while let Some(&(seq, t)) = in_flight.front() {
            if seq > ack.sequence {
                break;
            }
            in_flight.pop_front();
            if seq == ack.sequence {
                sent_at = Some(t);
            }
        }
        tally.rejected += u64::from(ack.rejected_points);
        if ack.code != 0 && tally.first_problem.is_none() {
            tally.first_problem = Some(format!("code {}: {}", ack.code, ack.message));
        }
        if at >= window.measure_from && at < window.end {
            tally.acks += 1;
            tally.accepted += u64::from(ack.accepted_points);
            if let Some(t) = sent_at {
                tally.latencies_us.push(at.duration_since(t).as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
    Ok(())
}

/// Value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

fn marker(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run_async(cfg: LoadConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.agents > 0 && cfg.series > 0 && cfg.window > 0, "agents, series and window must be positive");
    let n_conn = if cfg.connections == 0 { cfg.agents } else { cfg.connections.min(cfg.agents) };
    let endpoint = Endpoint::from_shared(cfg.url.clone())
        .with_context(|| format!("bad URL {:?}", cfg.url))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n_conn);
    for _ in 0..n_conn {
        channels.push(endpoint.connect().await.with_context(|| format!("connecting to {}", cfg.url))?);
    }
    eprintln!(
        "loadgen: {} agents x {} series over {n_conn} HTTP/2 connections, window {}",
        cfg.agents, cfg.series, cfg.window
    );
    let ts0 = (now_ms() - START_AGO_MS).div_euclid(1000) * 1000;
    let incarnation_base = (now_ms() as u64) << 16;
    let (ready_tx, mut ready_rx) = mpsc::channel(cfg.agents);
    let (go_tx, go_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(cfg.agents);
    for i in 0..cfg.agents {
        tasks.push(tokio::spawn(agent(
            i,
            channels[i % n_conn].clone(),
            cfg.clone(),
            incarnation_base + i as u64 + 1,
            ts0,
            ready_tx.clone(),
            go_rx.clone(),
        )));
    }
    drop(ready_tx);
    let connect_started = Instant::now();
    let mut connected = 0usize;
    let mut failed = Vec::new();
    while connected + failed.len() < cfg.agents {
        match ready_rx.recv().await {
            Some(Ok(())) => connected += 1,
            Some(Err(e)) => failed.push(e),
            None => break,
        }
    }
    eprintln!(
        "loadgen: {connected} agents connected in {:.1} s, {} failed{}",
        connect_started.elapsed().as_secs_f64(),
        failed.len(),
        failed.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    anyhow::ensure!(connected > 0, "no agent could connect");
    let start = Instant::now();
    let window = Window { measure_from: start + cfg.warmup, end: start + cfg.warmup + cfg.duration };
    go_tx.send_replace(Some(window));
    tokio::time::sleep_until(window.measure_from).await;
    marker("MEASURE_START");
    eprintln!("loadgen: warm-up done, measuring for {} s", cfg.duration.as_secs_f64());
    tokio::time::sleep_until(window.end).await;
    marker("MEASURE_END");

    let mut accepted = 0u64;
    let mut rejected = 0u64;
    let mut acks = 0u64;
    let mut caught_up = 0usize;
    let mut errors = Vec::new();
    let mut problems = Vec::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let tally = t.await.context("an agent task panicked")?;
        accepted += tally.accepted;
        rejected += tally.rejected;
        acks += tally.acks;
        caught_up += usize::from(tally.caught_up);
        latencies.extend_from_slice(&tally.latencies_us);
        errors.extend(tally.error);
        problems.extend(tally.first_problem);
    }
    if let Some(e) = errors.first() {
        eprintln!("loadgen: {} agents failed; first: {e}", errors.len());
    }
    if let Some(p) = problems.first() {
        eprintln!("loadgen: {} agents had partly rejected batches; first: {p}", problems.len());
    }
    if caught_up > 0 {
        eprintln!("loadgen: {caught_up} agents caught up with the present and slowed to 1 batch/s");
    }
    latencies.sort_unstable();
    let secs = cfg.duration.as_secs_f64();
    Ok(Report::new("loadgen")
        .with("samples_per_sec", round(accepted as f64 / secs, 0))
        .with("ack_p50_ms", round(quantile(&latencies, 0.50) / 1000.0, 2))
        .with("ack_p99_ms", round(quantile(&latencies, 0.99) / 1000.0, 2))
        .with("accepted_samples", accepted)
        .with("rejected_samples", rejected)
        .with("acks", acks)
        .with("measured_s", secs)
        .with("agents_connected", connected)
        .with("agents_failed", failed.len() + errors.len())
        .with("agents_caught_up", caught_up)
        .with("connections", n_conn))
}

/// Runs the load generator on a multi-threaded runtime.
pub fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(run_async(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn batches_define_series_once_and_move_like_metrics() {
        let mut set = SeriesSet::new(3, 8);
        let b1 = set.next_batch(1, 1000, true);
        let b2 = set.next_batch(2, 2000, false);
        assert_eq!(b1.defs.len(), 8);
        assert!(b2.defs.is_empty());
        assert_eq!(b2.series.len(), 8);
        for (p1, p2) in b1.series.iter().zip(&b2.series) {
            let def = &b1.defs[(p1.r#ref - 1) as usize];
            let (v1, v2) = (p1.values[0], p2.values[0]);
            assert!(v1.is_finite() && v2.is_finite());
            if def.kind == v1::MetricKind::Counter as i32 {
                assert!(v2 >= v1, "{} went down", def.metric);
            }
        }
    }
}

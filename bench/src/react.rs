//! `augur-bench react`: closed-loop reaction time on loopback, from the moment an agent
//! sends the sample that takes a workload's failure probability over its policy's
//! threshold to the moment that agent receives the resulting command.
//!
//! Real parts: the `augur-aggregator` binary (its own process, RocksDB, the shipped
//! models through ONNX Runtime, the decision loop, the workflow engine and the
//! dispatcher) and real gRPC over loopback sockets. The agents are scripted here (one
//! `Telemetry.Connect` stream per simulated host), so the send and the receipt are
//! timestamped by one clock in one process: the measured interval starts just before the
//! crossing batch is handed to the stream (an upper bound of "the aggregator received
//! it") and ends when the command is read from the stream.
//!
//! Setup: each host declares workloads (`resize` and `health` allowed) and streams their
//! container memory, CPU and pids series at 1 Hz after a few minutes of history, plus the
//! host's memory (ample headroom). The aggregator config has one policy in `auto` mode
//! for `memory_exhaustion` that allows `resize_memory`, at the deciding model's operating
//! threshold; the safety limits are the shipped defaults (max concurrency, cooldown,
//! halt share, deadline), never relaxed: each trial uses a fresh workload, one at a time.
//!
//! A trial: a workload's next regular sample jumps from its steady level to near its
//! limit (a sudden allocation); the bench waits for the `resize` command for it, answers
//! like an agent that applied it (SUCCEEDED, `previous.memory_max`), and from then on
//! reports the new limit with usage back at the steady level. Before any trial a
//! preflight runs the same samples through the aggregator's feature and prediction
//! engines in-process with the same models, at several phases of the feature windows'
//! time buckets, and picks the smallest jump that crosses the threshold from below at
//! some phase. Where the jumped sample lands in the buckets changes what it does to the
//! windows, so in some trials the first sample at the new level does not cross and a
//! later one (same level, a second later) does: the crossing sample is then the last one
//! the host sent before the engine pass that raised the event, and the interval starts
//! there (`crossed_on_a_later_sample` counts such trials). Trials with no crossing within
//! 10 s are reported as `missed`, not timed.
//!
//! A subscriber on `Predictions.Subscribe` sees each trial's RAISED event, whose time is
//! when the engine's pass over the fresh data started: this splits the total into the
//! wait for that pass (ingest, wake-up, coalescing), the pass itself to the event on a
//! gRPC subscriber, and the rest (decision, audit, dispatch) up to the agent's receipt.
//!
//! Measured on a shared 2-core machine while building this bench: with scoring only on
//! the 1 s tick (`predict.score_on_arrival = false`) the wait for the tick was nearly all
//! of it (p50 485 ms, p99 998 ms over 60 trials); before the server set TCP_NODELAY on
//! accepted connections, a Command written right after an Ack waited for the agent's
//! delayed ACK (about 40 ms per command).

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use augur_aggregator::config::PredictSection;
use augur_aggregator::features::{FeatureConfig, FeatureEngine};
use augur_aggregator::predict::{PredictConfig, PredictionEngine, Scorer, onnx};
use augur_aggregator::storage::{SeriesId, SeriesMeta};
use augur_core::command::CommandSpec;
use augur_core::time::now_ms;
use augur_core::{MetricKind, SeriesKey};
use augur_proto::PROTOCOL_VERSION;
use augur_proto::v1::{
    self, AgentMessage, CommandReport, CommandStatus, DeclaredWorkload, Hello, SampleBatch, SeriesDef, SeriesPoints,
    agent_message::Msg as AgentMsg, aggregator_message::Msg as AggMsg, predictions_client::PredictionsClient,
    telemetry_client::TelemetryClient,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

// The container series each workload sends: the same as the predict bench's.
use crate::predict::SERIES;
use crate::procs::{ChildGuard, interrupted, round, wait_ready_file, work_dir};
use crate::report::Report;

const MIB: f64 = 1_048_576.0;
const GIB: f64 = 1024.0 * MIB;
/// Every bench workload's memory limit before it is resized.
const LIMIT: f64 = 256.0 * MIB;
/// Steady usage, as a share of the limit.
const STEADY: f64 = 0.5;
/// Jumps the preflight tries, as a share of the limit, smallest first.
const JUMPS: [f64; 5] = [0.9, 0.95, 0.98, 0.995, 1.0];
/// Seconds of history each workload has before the trials.
const HISTORY_S: i64 = 300;
/// Resource prefix of the bench's workloads.
const CGROUP_PREFIX: &str = "cgroup/augur-bench-react";
/// The policy the bench's aggregator config sets up.
const POLICY: &str = "bench-react-resize";

/// Host series (ample memory headroom, so a resize fits in place).
const HOST_SERIES: [(&str, f64); 2] =
    [("node_memory_MemAvailable_bytes", 60.0 * GIB), ("node_memory_MemTotal_bytes", 64.0 * GIB)];

/// What `augur-bench react` is asked to do.
#[derive(Debug, Clone)]
pub struct ReactConfig {
    pub bin_dir: PathBuf,
    pub models: PathBuf,
    /// Threshold crossings measured (one fresh workload each).
    pub trials: usize,
    /// Simulated hosts (one stream each); workloads are spread over them.
    pub hosts: usize,
    /// Longest wait for a trial's command.
    pub timeout: Duration,
}

/// p50/p90/p99/max/mean of a sample, in its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank quantile `q` of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Summary of `values` (NaNs ignored); `None` when nothing is left.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        n: v.len(),
        p50: quantile(&v, 0.5),
        p90: quantile(&v, 0.9),
        p99: quantile(&v, 0.99),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    })
}

/// A workload's state as its agent reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Workload {
    limit: f64,
    usage: f64,
}

impl Workload {
    fn steady() -> Self {
        Workload { limit: LIMIT, usage: STEADY * LIMIT }
    }
}

/// The 12 container series' values at `t_s` seconds after the bench's time origin.
fn values(w: &Workload, t_s: f64) -> [f64; 12] {
    // Usage never exceeds the limit (the kernel reclaims or OOM-kills first); a workload
    // driven to its limit sits at it, without the small wobble of a steady one.
    let usage = if w.usage >= w.limit { w.limit } else { (w.usage * (1.0 + 0.004 * (t_s / 7.0).sin())).min(w.limit) };
    [usage, usage * 0.9, w.limit, t_s * 0.05, 1.0, t_s * 10.0, 0.0, 8.0, 512.0, t_s * 1e-4, t_s * 1e-3, 0.0]
}

/// The workload a `resize` command raises and its new memory limit; `None` for any other
/// command (or a resize that sets no memory limit).
fn resize_target(cmd: &v1::Command) -> Option<(String, u64)> {
    let env = augur_proto::convert::envelope_of(cmd).ok()?;
    match env.spec {
        CommandSpec::Resize(r) => Some((env.resource, r.memory_max?)),
        _ => None,
    }
}

/// What the preflight found.
#[derive(Debug, Clone)]
struct Preflight {
    /// The model whose probability decides, and its threshold.
    model: String,
    threshold: f64,
    /// Jump (share of the limit) that crosses it, P before, and P after (lowest and highest
    /// over the phases tried).
    jump: f64,
    p_before: f64,
    p_after_min: f64,
    p_after: f64,
    /// Seconds after the resize until P fell below the threshold again (None: not in 2 min).
    recovery_s: Option<i64>,
}

/// Runs the bench's samples through the feature and prediction engines in-process with
/// the models of `manifest`: the smallest jump that takes P from below the deciding
/// model's threshold to at least it.
fn preflight(manifest: &Path) -> anyhow::Result<Preflight> {
    let fcfg = FeatureConfig::default();
    let section = PredictSection { models: manifest.to_owned(), ..PredictSection::default() };
    let handle = onnx::scorer_for(&section, &fcfg).context("loading the models")?;
    let models = handle.scorer.models();
    let mut deciders: Vec<_> = models.iter().filter(|m| m.failure_type == "memory_exhaustion").collect();
    if deciders.is_empty() {
        bail!(
            "{} serves no container memory_exhaustion model (are its models built for this aggregator's \
             feature schema? `make models` retrains them)",
            manifest.display()
        );
    }
    deciders.sort_by_key(|m| m.horizon_s);
    let engine_cfg = PredictConfig::default();
    let decider = deciders.iter().find(|m| m.operating_threshold.is_some()).unwrap_or(&deciders[0]);
    let threshold = decider.operating_threshold.unwrap_or(engine_cfg.raise_threshold);
    let mut tried = Vec::new();
    for jump in JUMPS {
        // Windows are time buckets, so what one sample does to the features depends on where
        // it lands in them (and on the steady wobble): try a jump at several phases. P after
        // the jump is reported as its range; a trial whose first sample at the jump level does
        // not cross is timed from the later sample that does (see TrialTimes).
        let (mut p_before, mut p_min, mut p_max, mut recovery_s) = (0.0_f64, 1.0_f64, 0.0_f64, Some(0_i64));
        for phase_s in (0..44).step_by(4) {
            let (b, a, r) = crossing(handle.scorer.clone(), &fcfg, jump, threshold, phase_s)?;
            p_before = p_before.max(b);
            p_min = p_min.min(a);
            p_max = p_max.max(a);
            recovery_s = match (recovery_s, r) {
                (Some(x), Some(y)) => Some(x.max(y)),
                _ => None,
            };
        }
        tried.push(format!("{jump}: {p_before:.3} -> {p_min:.3}..{p_max:.3}"));
        if p_before >= threshold {
            bail!("the steady workload already predicts failure (P {p_before:.3} >= {threshold:.3})");
        }
        if p_max >= threshold {
            return Ok(Preflight {
                model: format!("{} {}", decider.name, decider.version),
                threshold,
                jump,
                p_before,
                p_after_min: p_min,
                p_after: p_max,
                recovery_s,
            });
        }
    }
    bail!(
        "no jump crosses the threshold {threshold:.3} of {} (jump share of limit: P before -> after: {})",
        decider.name,
        tried.join(", ")
    )
}

/// P before and after one jump to `jump` x limit, and the recovery after a resize.
fn crossing(
    scorer: Arc<dyn Scorer>,
    fcfg: &FeatureConfig,
    jump: f64,
    threshold: f64,
    phase_s: i64,
) -> anyhow::Result<(f64, f64, Option<i64>)> {
    let features = Arc::new(FeatureEngine::new(fcfg.clone()));
    let engine = PredictionEngine::new(PredictConfig::default(), features.clone(), scorer);
    let metas: Vec<SeriesMeta> = SERIES
        .iter()
        .map(|(metric, kind)| SeriesMeta {
            host_id: "preflight".into(),
            key: SeriesKey {
                resource: format!("{CGROUP_PREFIX}/w"),
                metric: (*metric).into(),
                unit: String::new(),
                kind: *kind,
                labels: Default::default(),
            },
        })
        .collect();
    let meta = |id: SeriesId| metas.get(id as usize - 1).cloned();
    let resource = format!("preflight/{CGROUP_PREFIX}/w");
    let t0 = now_ms() - 3_600_000;
    let feed = |w: &Workload, ts: i64| {
        let v = values(w, (ts - t0) as f64 / 1000.0 + phase_s as f64);
        let pts: Vec<(SeriesId, i64, f64)> = v.iter().enumerate().map(|(i, x)| (i as SeriesId + 1, ts, *x)).collect();
        features.observe(&pts, &meta);
    };
    let p = |ts: i64| -> anyhow::Result<f64> {
        engine.tick(ts);
        let st = engine.stats();
        if let Some(e) = st.last_error {
            bail!("model error in the preflight: {e}");
        }
        Ok(engine
            .latest(&resource)
            .iter()
            .find(|e| e.failure_type == "memory_exhaustion")
            .map_or(0.0, |e| e.probability))
    };
    let mut w = Workload::steady();
    let mut ts = t0;
    for _ in 0..HISTORY_S {
        feed(&w, ts);
        ts += 1000;
    }
    let p_before = p(ts - 1000 + 5)?;
    w.usage = jump * w.limit;
    feed(&w, ts);
    let p_after = p(ts + 5)?;
    // Resized (to at least 4x in the live run), usage back to steady.
    w = Workload { limit: 4.0 * LIMIT, usage: STEADY * LIMIT };
    let mut recovery = None;
    for s in 1..=120 {
        feed(&w, ts + s * 1000);
        if p(ts + s * 1000 + 5)? < threshold {
            recovery = Some(s);
            break;
        }
    }
    Ok((p_before, p_after, recovery))
}

/// The aggregator config the bench runs with: the models, and one `auto` resize policy
/// at `threshold`. The safety limits are written out at their shipped defaults.
fn aggregator_config(models: &Path, threshold: f64) -> String {
    let s = augur_aggregator::remediate::policy::SafetyConfig::default();
    format!(
        "aggregator_id = \"augur-bench-react\"\n\
         [predict]\n\
         models = {models:?}\n\
         [remediation]\n\
         seed = 1\n\
         [remediation.safety]\n\
         max_concurrent = {}\n\
         max_concurrent_per_set = {}\n\
         cooldown = \"{}s\"\n\
         halt_share = {}\n\
         halt_min_failing = {}\n\
         action_deadline = \"{}s\"\n\
         [[remediation.policies]]\n\
         name = \"{POLICY}\"\n\
         resource_kind = \"container\"\n\
         failure_type = \"memory_exhaustion\"\n\
         mode = \"auto\"\n\
         threshold = {threshold}\n\
         actions = [\"resize_memory\"]\n",
        s.max_concurrent,
        s.max_concurrent_per_set,
        s.cooldown.as_secs(),
        s.halt_share,
        s.halt_min_failing,
        s.action_deadline.as_secs(),
        models = models.display().to_string(),
    )
}

/// Starts the aggregator with `config` on 127.0.0.1 (port 0).
fn start_aggregator(bin_dir: &Path, work: &Path, config: &str) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let bin = bin_dir.join("augur-aggregator");
    if !bin.is_file() {
        bail!("{} not found (build it first)", bin.display());
    }
    let config_path = work.join("aggregator.toml");
    fs::write(&config_path, config).context("writing aggregator.toml")?;
    let ready = work.join("aggregator.ready");
    let log = fs::File::create(work.join("aggregator.log")).context("creating aggregator.log")?;
    let mut guard = ChildGuard::spawn(
        "augur-aggregator",
        Process::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(work.join("aggregator"))
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let addr = wait_ready_file(&mut guard, &ready, Duration::from_secs(60))?;
    Ok((guard, addr))
}

/// One trial's timestamps.
#[derive(Debug, Clone)]
struct TrialTimes {
    /// Wall clock (Unix ms, fractional) just before each batch since the jump was sent
    /// (the first is the jump; the workload stays at that level until resized).
    sent_wall_ms: Vec<f64>,
    /// Each of those batches sent -> command read, by the monotonic clock.
    latency_ms: Vec<f64>,
    /// Wall clock when the command was read.
    received_wall_ms: f64,
}

/// The trial a host task is timing: its workload, each batch sent since the jump (monotonic
/// and wall clock), and where to report.
type PendingTrial = (usize, Vec<(Instant, f64)>, oneshot::Sender<TrialTimes>);

/// A request to a host task: make `workload`'s next sample the crossing one.
struct TrialRequest {
    workload: usize,
    done: oneshot::Sender<TrialTimes>,
}

/// Wall clock as fractional Unix milliseconds.
fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn workload_name(i: usize) -> String {
    format!("w{i:04}")
}

/// One simulated host: its stream, its workloads, the trials it runs.
struct HostSim {
    host_id: String,
    workloads: Vec<Workload>,
    /// Time origin of the counters (shared with the preflight's shape).
    origin_ms: i64,
    sequence: u64,
    last_ts: i64,
    defined: bool,
    jump: f64,
}

impl HostSim {
    fn defs(&self) -> Vec<SeriesDef> {
        let mut defs = Vec::with_capacity(self.workloads.len() * SERIES.len() + HOST_SERIES.len());
        for i in 0..self.workloads.len() {
            for (s, (metric, kind)) in SERIES.iter().enumerate() {
                defs.push(SeriesDef {
                    r#ref: (i * SERIES.len() + s + 1) as u32,
                    resource: format!("{CGROUP_PREFIX}/{}", workload_name(i)),
                    metric: (*metric).to_owned(),
                    unit: if s <= 2 { "bytes".into() } else { String::new() },
                    kind: augur_proto::convert::kind_to_wire(*kind),
                    labels: Default::default(),
                });
            }
        }
        for (h, (metric, _)) in HOST_SERIES.iter().enumerate() {
            defs.push(SeriesDef {
                r#ref: (self.workloads.len() * SERIES.len() + h + 1) as u32,
                resource: "host".into(),
                metric: (*metric).to_owned(),
                unit: "bytes".into(),
                kind: augur_proto::convert::kind_to_wire(MetricKind::Gauge),
                labels: Default::default(),
            });
        }
        defs
    }

    /// A batch with one point per series for each timestamp of `stamps`.
    fn batch(&mut self, stamps: &[i64]) -> AgentMessage {
        let mut series = Vec::with_capacity(self.workloads.len() * SERIES.len() + HOST_SERIES.len());
        for (i, w) in self.workloads.iter().enumerate() {
            let rows: Vec<[f64; 12]> =
                stamps.iter().map(|ts| values(w, (ts - self.origin_ms) as f64 / 1000.0)).collect();
            for s in 0..SERIES.len() {
                series.push(SeriesPoints {
                    r#ref: (i * SERIES.len() + s + 1) as u32,
                    timestamps_ms: stamps.to_vec(),
                    values: rows.iter().map(|r| r[s]).collect(),
                });
            }
        }
        for (h, (_, v)) in HOST_SERIES.iter().enumerate() {
            series.push(SeriesPoints {
                r#ref: (self.workloads.len() * SERIES.len() + h + 1) as u32,
                timestamps_ms: stamps.to_vec(),
                values: vec![*v; stamps.len()],
            });
        }
        self.sequence += 1;
        if let Some(ts) = stamps.last() {
            self.last_ts = *ts;
        }
        let defs = if self.defined { Vec::new() } else { self.defs() };
        self.defined = true;
        AgentMessage {
            msg: Some(AgentMsg::Batch(SampleBatch { sequence: self.sequence, defs, series, dropped_before: 0 })),
        }
    }

    fn hello(&self, incarnation: u64) -> AgentMessage {
        AgentMessage {
            msg: Some(AgentMsg::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                host_id: self.host_id.clone(),
                incarnation,
                agent_version: "augur-bench-react".into(),
                labels: Default::default(),
                capabilities: vec!["resize".into(), "health".into()],
                workloads: (0..self.workloads.len())
                    .map(|i| DeclaredWorkload {
                        name: workload_name(i),
                        resource: format!("{CGROUP_PREFIX}/{}", workload_name(i)),
                        allowed_actions: vec!["resize".into(), "health".into()],
                        kind: "stateless".into(),
                        standby: String::new(),
                        peers: Vec::new(),
                        health: "command".into(),
                        templates: Vec::new(),
                    })
                    .collect(),
            })),
        }
    }
}

/// Counters a host task keeps.
#[derive(Debug, Default, Clone, Copy)]
struct HostTally {
    commands: u64,
    other_commands: u64,
    rejected_points: u64,
}

fn report_msg(
    cmd: &v1::Command,
    status: CommandStatus,
    message: &str,
    details: HashMap<String, String>,
) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::CommandReport(CommandReport {
            command_id: cmd.id.clone(),
            status: status as i32,
            message: message.to_owned(),
            time_ms: now_ms(),
            details,
        })),
    }
}

/// Runs one simulated host: history, then a batch per second, trials on request.
async fn run_host(
    url: String,
    mut sim: HostSim,
    phase: Duration,
    mut trials: mpsc::Receiver<TrialRequest>,
    ready: oneshot::Sender<()>,
) -> anyhow::Result<HostTally> {
    let mut tally = HostTally::default();
    // As the agent connects: one HTTP/2 connection, Nagle off.
    let mut client = TelemetryClient::new(channel(&url).await?).max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let incarnation = (now_ms() as u64).wrapping_mul(1_000_003) | 1;
    tx.send(sim.hello(incarnation)).await.context("queueing Hello")?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await.context("opening the stream")?.into_inner();
    match inbound.message().await.context("waiting for Welcome")? {
        Some(v1::AggregatorMessage { msg: Some(AggMsg::Welcome(_)) }) => {}
        other => bail!("expected Welcome, got {other:?}"),
    }
    // History: HISTORY_S seconds up to a second ago, a minute per batch.
    let start = now_ms() / 1000 * 1000 - HISTORY_S * 1000;
    let stamps: Vec<i64> = (0..HISTORY_S).map(|s| start + s * 1000).collect();
    for chunk in stamps.chunks(60) {
        tx.send(sim.batch(chunk)).await.context("sending history")?;
    }
    let _ = ready.send(());
    let mut next = tokio::time::Instant::now() + phase;
    let mut pending: Option<PendingTrial> = None;
    let mut armed: Option<TrialRequest> = None;
    loop {
        tokio::select! {
            biased;
            m = inbound.message() => {
                let at = Instant::now();
                let at_wall = wall_ms();
                let msg = match m {
                    Ok(Some(v1::AggregatorMessage { msg: Some(m) })) => m,
                    Ok(Some(_)) => continue,
                    Ok(None) => bail!("the aggregator closed the stream"),
                    Err(status) => bail!("the aggregator ended the stream: {status}"),
                };
                match msg {
                    AggMsg::Command(cmd) => {
                        tally.commands += 1;
                        let reply = match resize_target(&cmd) {
                            Some((name, memory_max)) => {
                                let Some(i) = (0..sim.workloads.len()).find(|i| workload_name(*i) == name) else {
                                    tx.send(report_msg(&cmd, CommandStatus::Refused, "unknown workload", HashMap::new())).await?;
                                    continue;
                                };
                                if let Some((w, sends, done)) = pending.take() {
                                    if w == i {
                                        let times = TrialTimes {
                                            sent_wall_ms: sends.iter().map(|s| s.1).collect(),
                                            latency_ms: sends
                                                .iter()
                                                .map(|s| at.duration_since(s.0).as_secs_f64() * 1000.0)
                                                .collect(),
                                            received_wall_ms: at_wall,
                                        };
                                        let _ = done.send(times);
                                    } else {
                                        pending = Some((w, sends, done));
                                    }
                                }
                                let previous = sim.workloads[i].limit;
                                if cmd.dry_run {
                                    report_msg(&cmd, CommandStatus::DryRun, "would resize", HashMap::new())
                                } else {
                                    // Applied: the new limit, and the sudden allocation released.
                                    sim.workloads[i] = Workload { limit: memory_max as f64, usage: STEADY * LIMIT };
                                    let details = HashMap::from([("previous.memory_max".to_owned(), format!("{}", previous as u64))]);
                                    report_msg(&cmd, CommandStatus::Succeeded, "resized", details)
                                }
                            }
                            None if cmd.kind == "health" => {
                                tally.other_commands += 1;
                                report_msg(&cmd, CommandStatus::Succeeded, "healthy", HashMap::new())
                            }
                            None => {
                                tally.other_commands += 1;
                                report_msg(&cmd, CommandStatus::Refused, "the bench agent only resizes", HashMap::new())
                            }
                        };
                        tx.send(reply).await.context("sending a command report")?;
                    }
                    AggMsg::Ack(a) => tally.rejected_points += u64::from(a.rejected_points),
                    _ => {}
                }
            }
            // A new trial replaces one that timed out (its receiver is gone).
            req = trials.recv(), if armed.is_none() => match req {
                Some(r) => armed = Some(r),
                None => return Ok(tally),
            },
            _ = tokio::time::sleep_until(next) => {
                next += Duration::from_secs(1);
                let ts = now_ms().max(sim.last_ts + 1);
                if let Some(r) = armed.take() {
                    sim.workloads[r.workload].usage = sim.jump * sim.workloads[r.workload].limit;
                    let batch = sim.batch(&[ts]);
                    let (sent, sent_wall) = (Instant::now(), wall_ms());
                    tx.send(batch).await.context("sending the crossing batch")?;
                    pending = Some((r.workload, vec![(sent, sent_wall)], r.done));
                } else {
                    let batch = sim.batch(&[ts]);
                    let (sent, sent_wall) = (Instant::now(), wall_ms());
                    tx.send(batch).await.context("sending a batch")?;
                    if let Some((_, sends, _)) = pending.as_mut() {
                        sends.push((sent, sent_wall));
                    }
                }
            }
        }
    }
}

/// Index of the last sample sent (wall ms) at or before `pass_ms`, the start of the engine
/// pass that raised the event (1 ms of clock slack); 0 when none was.
fn crossing_sample(sent_wall_ms: &[f64], pass_ms: f64) -> usize {
    sent_wall_ms.iter().rposition(|&t| t <= pass_ms + 1.0).unwrap_or(0)
}

async fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .context("aggregator URL")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Raised events seen by the subscriber: resource -> (event time ms, received wall ms).
type Raised = Arc<std::sync::Mutex<HashMap<String, (i64, f64)>>>;

async fn subscribe(url: String, raised: Raised) -> anyhow::Result<()> {
    let mut client = PredictionsClient::new(channel(&url).await?);
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            resource_prefixes: Vec::new(),
            host_labels: Default::default(),
            failure_types: vec!["memory_exhaustion".into()],
            min_probability: 0.0,
            every_tick: false,
        })
        .await
        .context("Predictions.Subscribe")?
        .into_inner();
    while let Some(ev) = stream.message().await.context("reading events")? {
        let at = wall_ms();
        if ev.state == v1::EventState::Raised as i32 {
            let mut r = raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            r.entry(ev.resource.clone()).or_insert((ev.time_ms, at));
        }
    }
    Ok(())
}

/// Runs the bench.
pub fn run(cfg: &ReactConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(cfg.trials > 0 && cfg.hosts > 0, "--trials and --hosts must be at least 1");
    let models = fs::canonicalize(&cfg.models).with_context(|| format!("model manifest {}", cfg.models.display()))?;
    let pf = preflight(&models)?;
    eprintln!(
        "react: {} decides at {:.3}; a jump to {:.1}% of the limit crosses it (P {:.3} -> {:.3}..{:.3} over \
         bucket phases); after the resize P is back under it in {}",
        pf.model,
        pf.threshold,
        pf.jump * 100.0,
        pf.p_before,
        pf.p_after_min,
        pf.p_after,
        pf.recovery_s.map_or("more than 120 s".into(), |s| format!("{s} s"))
    );
    let work = work_dir("augur-bench-react-")?;
    let config = aggregator_config(&models, pf.threshold);
    let (mut aggregator, addr) = start_aggregator(&cfg.bin_dir, work.path(), &config)?;
    eprintln!(
        "react: aggregator pid {} on {addr}, log {}",
        aggregator.pid(),
        work.path().join("aggregator.log").display()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let result = rt.block_on(trials(cfg, &pf, format!("http://{addr}")));
    drop(rt);
    aggregator.check_running()?;
    aggregator.stop(Duration::from_secs(20));
    let (times, raised, tallies, missed) = match result {
        Ok(r) => r,
        Err(e) => {
            let log = fs::read_to_string(work.path().join("aggregator.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("react: aggregator log (last lines, newest first):\n{}", tail.join("\n"));
            return Err(e);
        }
    };
    // The crossing sample of a trial is the last one its host sent before the engine pass
    // that raised the event began (the first jumped sample may land where the windows do not
    // yet cross; the next one, at the same level, may). Without a raised event the time is
    // taken from the first jumped sample.
    let mut total = Vec::new();
    let (mut to_pass, mut pass_to_event, mut pass_to_command) = (Vec::new(), Vec::new(), Vec::new());
    let (mut without_event, mut crossed_later) = (0usize, 0usize);
    let mut slowest: Vec<(f64, &str, [f64; 3])> = Vec::new();
    for (resource, t) in &times {
        let mut stages = [f64::NAN; 3];
        let first = t.sent_wall_ms.first().copied().unwrap_or(f64::NAN);
        let k = match raised.get(resource) {
            Some(&(ev_ms, ev_wall)) if (ev_ms as f64) >= first - 1.0 && ev_wall <= t.received_wall_ms + 50.0 => {
                let k = crossing_sample(&t.sent_wall_ms, ev_ms as f64);
                let sent = t.sent_wall_ms[k];
                stages = [ev_ms as f64 - sent, ev_wall - ev_ms as f64, t.received_wall_ms - ev_ms as f64];
                to_pass.push(stages[0]);
                pass_to_event.push(stages[1]);
                pass_to_command.push(stages[2]);
                k
            }
            _ => {
                without_event += 1;
                0
            }
        };
        crossed_later += usize::from(k > 0);
        let latency = t.latency_ms.get(k).copied().unwrap_or(f64::NAN);
        total.push(latency);
        slowest.push((latency, resource, stages));
    }
    let Some(s) = summarize(&total) else {
        let log = fs::read_to_string(work.path().join("aggregator.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("react: aggregator log (last lines, newest first):\n{}", tail.join("\n"));
        bail!(
            "no command reached an agent in {} trials (is the decision loop running? see the aggregator log)",
            cfg.trials
        );
    };
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (total, resource, [a, b, c]) in slowest.iter().take(5) {
        eprintln!(
            "react: slow trial {resource}: {total:.2} ms (sample -> pass {a:.1}, pass -> event {b:.1}, \
             pass -> command {c:.1})"
        );
    }
    let med = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| round(s.p50, 2));
    let p99 = |v: &[f64]| summarize(v).map_or(f64::NAN, |s| round(s.p99, 2));
    let commands: u64 = tallies.iter().map(|t| t.commands).sum();
    let other: u64 = tallies.iter().map(|t| t.other_commands).sum();
    let rejected: u64 = tallies.iter().map(|t| t.rejected_points).sum();
    eprintln!(
        "react: {} of {} trials got their command; sample -> command p50 {:.2} ms, p90 {:.2}, p99 {:.2}, max {:.2}; \
         stages (median): sample -> engine pass {:.2} ms, pass -> event at subscriber {:.2} ms, pass -> command at \
         agent {:.2} ms; {} other commands answered, {} points rejected",
        s.n,
        cfg.trials,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        med(&to_pass),
        med(&pass_to_event),
        med(&pass_to_command),
        other,
        rejected
    );
    let safety = augur_aggregator::remediate::policy::SafetyConfig::default();
    Ok(Report::new("react")
        .with("p50_ms", round(s.p50, 2))
        .with("p99_ms", round(s.p99, 2))
        .with("n", s.n)
        .with("p90_ms", round(s.p90, 2))
        .with("max_ms", round(s.max, 2))
        .with("mean_ms", round(s.mean, 2))
        .with("trials", cfg.trials)
        .with("missed", missed)
        .with("crossed_on_a_later_sample", crossed_later)
        .with("sample_to_pass_p50_ms", med(&to_pass))
        .with("sample_to_pass_p99_ms", p99(&to_pass))
        .with("pass_to_event_p50_ms", med(&pass_to_event))
        .with("pass_to_event_p99_ms", p99(&pass_to_event))
        .with("pass_to_command_p50_ms", med(&pass_to_command))
        .with("pass_to_command_p99_ms", p99(&pass_to_command))
        .with("trials_without_event", without_event)
        .with("hosts", cfg.hosts)
        .with("workloads", cfg.hosts * cfg.trials.div_ceil(cfg.hosts))
        .with("model", pf.model)
        .with("threshold", round(pf.threshold, 4))
        .with("p_after_min", round(pf.p_after_min, 4))
        .with("p_before", round(pf.p_before, 4))
        .with("p_after", round(pf.p_after, 4))
        .with("jump_share_of_limit", pf.jump)
        .with("max_concurrent", safety.max_concurrent)
        .with("cooldown_s", safety.cooldown.as_secs())
        .with("commands", commands))
}

type TrialsOutcome = (Vec<(String, TrialTimes)>, HashMap<String, (i64, f64)>, Vec<HostTally>, usize);

async fn trials(cfg: &ReactConfig, pf: &Preflight, url: String) -> anyhow::Result<TrialsOutcome> {
    let per_host = cfg.trials.div_ceil(cfg.hosts);
    let origin_ms = now_ms() - 3_600_000;
    let raised: Raised = Arc::default();
    let sub = tokio::spawn(subscribe(url.clone(), raised.clone()));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let mut readies = Vec::new();
    for h in 0..cfg.hosts {
        let sim = HostSim {
            host_id: format!("react-host-{h:02}"),
            workloads: vec![Workload::steady(); per_host],
            origin_ms,
            sequence: 0,
            last_ts: 0,
            defined: false,
            jump: pf.jump,
        };
        let (tx, rx) = mpsc::channel(1);
        let (ready_tx, ready_rx) = oneshot::channel();
        // Hosts send at evenly spread phases of the second, like unsynchronised agents.
        let phase = Duration::from_millis((1000 * h / cfg.hosts) as u64);
        tasks.push(tokio::spawn(run_host(url.clone(), sim, phase, rx, ready_tx)));
        senders.push(tx);
        readies.push(ready_rx);
    }
    for (h, r) in readies.into_iter().enumerate() {
        if r.await.is_err() {
            let err = match tasks.remove(h).await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => anyhow::anyhow!("host {h} stopped"),
                Err(e) => anyhow::anyhow!("host {h} panicked: {e}"),
            };
            return Err(err.context(format!("host {h} failed to start")));
        }
    }
    eprintln!(
        "react: {} hosts x {per_host} workloads sent {HISTORY_S} s of history; waiting for the engine's tick to see them",
        cfg.hosts
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times = Vec::with_capacity(cfg.trials);
    let mut missed = 0usize;
    for t in 0..cfg.trials {
        if interrupted() {
            bail!("interrupted");
        }
        let (h, w) = (t % cfg.hosts, t / cfg.hosts);
        let (done_tx, done_rx) = oneshot::channel();
        if senders[h].send(TrialRequest { workload: w, done: done_tx }).await.is_err() {
            let err = match tasks.remove(h).await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => anyhow::anyhow!("host {h} stopped"),
                Err(e) => anyhow::anyhow!("host {h} panicked: {e}"),
            };
            return Err(err.context(format!("host {h} failed")));
        }
        match tokio::time::timeout(cfg.timeout, done_rx).await {
            Ok(Ok(times_)) => {
                let resource = format!("react-host-{h:02}/{CGROUP_PREFIX}/{}", workload_name(w));
                times.push((resource, times_));
            }
            Ok(Err(_)) => bail!("host {h} stopped during trial {t}"),
            Err(_) => {
                missed += 1;
                eprintln!("react: trial {t} ({}/{}) got no command within {:?}", h, workload_name(w), cfg.timeout);
                if missed >= 5 && times.is_empty() {
                    bail!("the first {missed} trials got no command");
                }
            }
        }
        if (t + 1) % 50 == 0 {
            eprintln!("react: {} trials done", t + 1);
        }
    }
    drop(senders);
    let mut tallies = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(t)) => tallies.push(t),
            Ok(Err(e)) => return Err(e.context("a host failed")),
            Err(e) => bail!("a host panicked: {e}"),
        }
    }
    sub.abort();
    let raised = std::mem::take(&mut *raised.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok((times, raised, tallies, missed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_nans_are_ignored() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        v.push(f64::NAN);
        let s = summarize(&v).expect("values");
        assert_eq!((s.n, s.p50, s.p90, s.p99, s.max), (100, 50.0, 90.0, 99.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        let one = summarize(&[7.0]).expect("one value");
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(summarize(&[f64::NAN]), None);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn only_a_memory_resize_is_a_trial_command() {
        let env = augur_core::command::Envelope {
            id: "c1".into(),
            idempotency_key: "k1".into(),
            target_host: "react-host-00".into(),
            resource: "w0003".into(),
            deadline_ms: 1,
            dry_run: false,
            spec: CommandSpec::Resize(augur_core::command::Resize {
                memory_max: Some(512 << 20),
                ..Default::default()
            }),
        };
        let cmd = augur_proto::convert::command_of(&env);
        assert_eq!(resize_target(&cmd), Some(("w0003".to_owned(), 512 << 20)));
        let cpu_only = augur_core::command::Envelope {
            spec: CommandSpec::Resize(augur_core::command::Resize { cpu_max: Some(2.0), ..Default::default() }),
            ..env.clone()
        };
        assert_eq!(resize_target(&augur_proto::convert::command_of(&cpu_only)), None);
        let health = augur_core::command::Envelope { spec: CommandSpec::Health, ..env };
        assert_eq!(resize_target(&augur_proto::convert::command_of(&health)), None);
    }

    #[test]
    fn the_bench_config_is_valid_and_keeps_the_shipped_safety_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aggregator.toml");
        fs::write(&path, aggregator_config(Path::new("/nonexistent/manifest.toml"), 0.86)).expect("write");
        let cfg = augur_aggregator::config::AggregatorConfig::load(&path).expect("the bench's config loads");
        let r = &cfg.remediation;
        assert_eq!(r.safety, augur_aggregator::remediate::policy::SafetyConfig::default());
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!(p.mode, augur_aggregator::remediate::policy::Mode::Auto);
        assert!(
            (p.threshold - 0.86).abs() < 1e-12 && p.threshold_min() == p.threshold && p.threshold == p.threshold_max()
        );
        // Operating thresholds close to 1 (the shipped 2-min model decides at 0.991) load too.
        for t in [0.5, 0.991, 0.9999] {
            fs::write(&path, aggregator_config(Path::new("/nonexistent/manifest.toml"), t)).expect("write");
            let cfg = augur_aggregator::config::AggregatorConfig::load(&path).expect("loads");
            assert_eq!(cfg.remediation.policies[0].threshold, t);
        }
    }

    #[test]
    fn the_crossing_sample_is_the_last_one_sent_before_the_raising_pass() {
        let sent = [1000.0, 2000.0, 3000.0];
        assert_eq!(crossing_sample(&sent, 1004.0), 0);
        assert_eq!(crossing_sample(&sent, 2003.5), 1);
        assert_eq!(crossing_sample(&sent, 2000.5), 1, "1 ms of slack between clocks");
        assert_eq!(crossing_sample(&sent, 9000.0), 2);
        assert_eq!(crossing_sample(&sent, 10.0), 0, "a pass before any send counts from the first");
    }

    #[test]
    fn the_crossing_sample_changes_only_usage() {
        let steady = values(&Workload::steady(), 100.0);
        let jumped = values(&Workload { usage: 0.98 * LIMIT, ..Workload::steady() }, 100.0);
        assert!(steady[0] < 0.51 * LIMIT && jumped[0] > 0.97 * LIMIT);
        // Driven to its limit, a workload reports the limit at every phase of the wobble.
        for t in 0..44 {
            assert_eq!(values(&Workload { usage: LIMIT, ..Workload::steady() }, f64::from(t))[0], LIMIT);
        }
        assert_eq!(steady[2], jumped[2], "same limit");
        assert_eq!(steady[3..], jumped[3..], "counters and the rest follow time only");
    }
}

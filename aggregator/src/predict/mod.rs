//! The prediction engine: once per tick, features of every live resource go through the
//! failure-probability models; probabilities become events with hysteresis, explained by
//! the features that moved the probability most.
//!
//! The engine runs on its own thread ([`PredictionEngine::spawn`]), never on the async
//! runtime. Models are reached through the [`Scorer`] seam: [`onnx::OnnxScorer`] serves
//! the ONNX models of the registry; tests use a small in-memory scorer.
//!
//! Besides the tick, fresh data is scored at once: ingest calls
//! [`PredictionEngine::data_arrived`] with the host whose batch it stored, and the engine
//! thread, after waiting [`PredictConfig::data_coalesce`] for other hosts' batches, scores
//! those hosts' resources ([`PredictionEngine::tick_hosts`]: hysteresis and events as in a
//! tick; no anomaly detection, staleness or TICK events, which stay with the tick). A
//! threshold crossing then costs milliseconds, not up to a tick; the tick remains the
//! ceiling (and covers resources first seen since the last tick).
//!
//! Events go to a [`tokio::sync::broadcast`] channel: each subscriber reads at its own
//! pace from a bounded ring, and one that falls behind loses the oldest events and is
//! told how many (see `server`), so a slow subscriber never slows the engine.
//!
//! Layout:
//! - [`onnx`]: the [`Scorer`] over [`crate::model::ModelRegistry`].

pub mod onnx;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::anomaly::{AnomalyConfig, HostDetector};
use crate::features::{FeatureEngine, FeatureMatrix, ResourceKind, RowRef, feature_names};

/// Failure type of the per-host anomaly detector's events.
pub const ANOMALY: &str = "anomaly";
/// Host features the anomaly detector models: ratios and rates, so a constant warm-up
/// does not make a small later change look huge.
pub const ANOMALY_SIGNALS: [&str; 8] = [
    "mem_util",
    "swap_util",
    "load1_last",
    "psi_cpu_waiting_last",
    "psi_mem_waiting_last",
    "psi_io_waiting_last",
    "majfault_rate_last",
    "tcp_retrans_rate_last",
];

/// One failure-probability model as the engine uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    pub resource_kind: ResourceKind,
    /// E.g. `memory_exhaustion`.
    pub failure_type: String,
    /// The model gives P(failure within this many seconds).
    pub horizon_s: i64,
    /// Set on the model whose probability decides events for its failure type, at this
    /// threshold (from the manifest; chosen on validation data).
    pub operating_threshold: Option<f64>,
    /// Input columns, by feature name (a subset of the engine's features, any order).
    pub features: Vec<String>,
}

/// Scores rows with failure-probability models.
pub trait Scorer: Send + Sync {
    /// Models currently served.
    fn models(&self) -> Vec<ModelSpec>;
    /// P(failure) per row for `rows` (row-major, `model.features.len()` columns).
    fn score(&self, model: &ModelSpec, rows: &[f32]) -> Result<Vec<f32>, String>;
}

/// The scorer when no model manifest is configured: nothing is predicted.
pub struct NoModels;

impl Scorer for NoModels {
    fn models(&self) -> Vec<ModelSpec> {
        Vec::new()
    }
    fn score(&self, model: &ModelSpec, _rows: &[f32]) -> Result<Vec<f32>, String> {
        Err(format!("model {} is not served", model.name))
    }
}

/// Thresholds and behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictConfig {
    pub tick: Duration,
    /// An event is raised when P(failure within `decision_horizon_s`) reaches this…
    pub raise_threshold: f64,
    /// …and cleared when it falls below this (hysteresis).
    pub clear_threshold: f64,
    /// While raised, an UPDATED event is sent when the probability moves this much.
    pub update_delta: f64,
    /// Per failure type, the horizon whose probability decides. Default: the model the
    /// manifest marks with an operating threshold, else the shortest horizon served.
    pub decision_horizon_s: BTreeMap<String, i64>,
    /// Explanations list this many features.
    pub top_features: usize,
    /// Events buffered per subscriber before the oldest are dropped for it.
    pub subscriber_buffer: usize,
    /// The per-host anomaly detector.
    pub anomaly: AnomalyConfig,
    /// Hosts whose data arrived are scored after waiting this long for more batches (see
    /// [`PredictionEngine::data_arrived`]); `None`: only on the tick.
    pub data_coalesce: Option<Duration>,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig {
            tick: Duration::from_secs(1),
            raise_threshold: 0.5,
            clear_threshold: 0.3,
            update_delta: 0.1,
            decision_horizon_s: BTreeMap::new(),
            top_features: 3,
            subscriber_buffer: 1024,
            anomaly: AnomalyConfig::default(),
            data_coalesce: Some(Duration::from_millis(2)),
        }
    }
}

/// What an event says about the state of a (resource, failure type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Raised,
    Updated,
    Cleared,
    Tick,
}

/// A feature's part in a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub name: String,
    pub value: f64,
    /// Probability drop when the feature is treated as missing.
    pub contribution: f64,
}

/// One prediction event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub time_ms: i64,
    pub host_id: String,
    pub resource: String,
    pub resource_kind: ResourceKind,
    pub failure_type: String,
    pub state: EventState,
    pub probability: f64,
    pub horizon_s: i64,
    pub probability_by_horizon_s: BTreeMap<i64, f64>,
    /// Seconds; negative when unknown.
    pub expected_time_to_failure_s: f64,
    pub top_features: Vec<Contribution>,
    pub model_name: String,
    pub model_version: String,
    pub summary: String,
    /// For `anomaly` events: the detector's smoothed score and threshold (the event's
    /// probability is then score / (score + threshold): 0.5 at the threshold).
    pub anomaly: Option<(f64, f64)>,
}

/// Engine counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub ticks: u64,
    pub events: u64,
    pub score_errors: u64,
    pub rows_scored: u64,
    pub last_tick_ms: f64,
    /// p50 and p99 of the last 1000 tick durations, ms.
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    pub last_error: Option<String>,
    /// Passes over hosts whose data just arrived ([`PredictionEngine::tick_hosts`]).
    pub early_ticks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Alarm {
    raised: bool,
    last_sent_p: f64,
}

/// Failure predictions for every live resource, once per tick.
pub struct PredictionEngine {
    cfg: PredictConfig,
    features: Arc<FeatureEngine>,
    scorer: Arc<dyn Scorer>,
    events: broadcast::Sender<Arc<Event>>,
    every_tick_subscribers: AtomicU64,
    next_id: AtomicU64,
    alarms: Mutex<HashMap<(String, String), Alarm>>,
    /// Online anomaly detector per host (see [`crate::anomaly`]).
    detectors: Mutex<HashMap<String, HostDetector>>,
    latest: Mutex<HashMap<String, Vec<Arc<Event>>>>,
    stats: Mutex<(EngineStats, Vec<f64>)>,
    /// Hosts with data not yet scored, and the engine thread to wake for them.
    fresh_hosts: Mutex<HashSet<String>>,
    engine_thread: OnceLock<std::thread::Thread>,
    /// Resources per host as of the last tick (what [`Self::tick_hosts`] scores).
    by_host: Mutex<HashMap<String, Vec<String>>>,
}

/// Handle of the engine thread; stops it when dropped.
pub struct EngineThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

fn host_of(resource: &str) -> &str {
    resource.split('/').next().unwrap_or(resource)
}

impl PredictionEngine {
    pub fn new(cfg: PredictConfig, features: Arc<FeatureEngine>, scorer: Arc<dyn Scorer>) -> Arc<Self> {
        let (events, _) = broadcast::channel(cfg.subscriber_buffer.max(1));
        Arc::new(PredictionEngine {
            cfg,
            features,
            scorer,
            events,
            every_tick_subscribers: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            alarms: Mutex::new(HashMap::new()),
            detectors: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            stats: Mutex::new((EngineStats::default(), Vec::new())),
            fresh_hosts: Mutex::new(HashSet::new()),
            engine_thread: OnceLock::new(),
            by_host: Mutex::new(HashMap::new()),
        })
    }

    /// A new subscription; `every_tick` subscribers make the engine publish TICK events.
    pub fn subscribe(self: &Arc<Self>, every_tick: bool) -> Subscription {
        if every_tick {
            self.every_tick_subscribers.fetch_add(1, Ordering::AcqRel);
        }
        Subscription { rx: self.events.subscribe(), engine: self.clone(), every_tick }
    }

    /// The newest prediction per failure type of `resource`.
    pub fn latest(&self, resource: &str) -> Vec<Arc<Event>> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).get(resource).cloned().unwrap_or_default()
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// The features that matter most for `resource`'s current probability of
    /// `failure_type` (as in raised events), computed now. Events are explained only when
    /// raised or updated; the decision engine asks for this when it acts on a prediction
    /// below the raise threshold. Empty when the resource or its model is unknown.
    pub fn explain_now(&self, resource: &str, failure_type: &str, now_ms: i64) -> Vec<Contribution> {
        let Some((kind, row)) = self.features.resource(resource, now_ms) else { return Vec::new() };
        let models = self.scorer.models();
        let mut group: Vec<&ModelSpec> =
            models.iter().filter(|m| m.resource_kind == kind && m.failure_type == failure_type).collect();
        group.sort_by_key(|m| m.horizon_s);
        let spec = match self.cfg.decision_horizon_s.get(failure_type) {
            Some(h) => group.iter().find(|m| m.horizon_s == *h),
            None => group.iter().find(|m| m.operating_threshold.is_some()).or(group.first()),
        };
        let Some(spec) = spec else { return Vec::new() };
        let names = feature_names(kind, self.features.config());
        let cols: Option<Vec<usize>> = spec.features.iter().map(|f| names.iter().position(|n| n == f)).collect();
        let Some(cols) = cols else { return Vec::new() };
        let x: Vec<f32> = cols.iter().map(|&c| row.get(c).copied().unwrap_or(f32::NAN)).collect();
        match self.scorer.score(spec, &x).ok().and_then(|p| p.first().copied()) {
            Some(p) => self.explain(spec, &cols, &x, f64::from(p), &names),
            None => Vec::new(),
        }
    }

    /// Runs ticks on a dedicated thread until the handle is dropped.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<EngineThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (self.clone(), stop.clone());
        let handle = std::thread::Builder::new().name("augur-predict".into()).spawn(move || {
            let mut next = Instant::now() + engine.cfg.tick;
            while !flag.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    if let Some(wait) = engine.cfg.data_coalesce
                        && engine.has_fresh_hosts()
                    {
                        // Batches of other hosts arriving meanwhile share the pass.
                        std::thread::sleep(wait.min(next - now));
                        let hosts = engine.take_fresh_hosts();
                        engine.tick_hosts(augur_core::time::now_ms(), &hosts);
                        continue;
                    }
                    std::thread::park_timeout(next - now);
                    continue;
                }
                engine.take_fresh_hosts(); // the tick scores everything
                engine.tick(augur_core::time::now_ms());
                engine.features.forget_idle(augur_core::time::now_ms());
                next += engine.cfg.tick;
                if next < Instant::now() {
                    next = Instant::now() + engine.cfg.tick; // overran: skip, don't burst
                }
            }
        })?;
        let _ = self.engine_thread.set(handle.thread().clone());
        Ok(EngineThread { stop, handle: Some(handle) })
    }

    /// Ingest stored a batch of `host`: its resources are scored within
    /// [`PredictConfig::data_coalesce`] instead of at the next tick. Cheap (a set insert
    /// and an unpark); does nothing before [`Self::spawn`] or with early scoring off.
    pub fn data_arrived(&self, host: &str) {
        let (Some(thread), Some(_)) = (self.engine_thread.get(), self.cfg.data_coalesce) else { return };
        {
            let mut fresh = self.fresh_hosts.lock().unwrap_or_else(PoisonError::into_inner);
            if !fresh.contains(host) {
                fresh.insert(host.to_owned());
            }
        }
        thread.unpark();
    }

    fn has_fresh_hosts(&self) -> bool {
        !self.fresh_hosts.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    fn take_fresh_hosts(&self) -> HashSet<String> {
        std::mem::take(&mut *self.fresh_hosts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Scores the resources the last tick saw on `hosts` (their newest data) and publishes
    /// the state changes; like [`Self::tick`] without anomaly detection, staleness
    /// clearing and TICK events. Returns the events published.
    pub fn tick_hosts(&self, now_ms: i64, hosts: &HashSet<String>) -> Vec<Arc<Event>> {
        let mut resources: Vec<String> = {
            let by_host = self.by_host.lock().unwrap_or_else(PoisonError::into_inner);
            hosts.iter().filter_map(|h| by_host.get(h)).flatten().cloned().collect()
        };
        if resources.is_empty() {
            return Vec::new();
        }
        resources.sort();
        self.tick_scoped(now_ms, Some(&resources))
    }

    /// Features at `now_ms` of `resources` that are of `kind` (a subset of a tick's matrix).
    fn matrix_of(&self, kind: ResourceKind, now_ms: i64, resources: &[String]) -> FeatureMatrix {
        let mut m = FeatureMatrix::default();
        for r in resources {
            if let Some((k, row)) = self.features.resource(r, now_ms)
                && k == kind
            {
                m.columns = row.len();
                m.rows.push(RowRef { resource: r.clone(), last_ms: now_ms });
                m.values.extend(row);
            }
        }
        m
    }

    /// One tick at `now_ms`: score every live resource and publish events. Returns the
    /// events published.
    pub fn tick(&self, now_ms: i64) -> Vec<Arc<Event>> {
        self.tick_scoped(now_ms, None)
    }

    /// A tick over every live resource (`scope` None) or over the named ones only.
    fn tick_scoped(&self, now_ms: i64, scope: Option<&[String]>) -> Vec<Arc<Event>> {
        let started = Instant::now();
        let models = self.scorer.models();
        let every_tick = scope.is_none() && self.every_tick_subscribers.load(Ordering::Acquire) > 0;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut rows_scored = 0u64;
        let mut seen: HashMap<(String, String), ()> = HashMap::new();
        let mut latest: HashMap<String, Vec<Arc<Event>>> = HashMap::new();

        // Group models by resource kind and failure type.
        let mut groups: BTreeMap<(ResourceKind, String), Vec<&ModelSpec>> = BTreeMap::new();
        for m in &models {
            groups.entry((m.resource_kind, m.failure_type.clone())).or_default().push(m);
        }
        let mut matrices: HashMap<ResourceKind, FeatureMatrix> = HashMap::new();
        for ((kind, failure_type), mut group) in groups {
            group.sort_by_key(|m| m.horizon_s);
            let m = matrices.entry(kind).or_insert_with(|| match scope {
                None => self.features.matrix(kind, now_ms),
                Some(resources) => self.matrix_of(kind, now_ms, resources),
            });
            if m.rows.is_empty() {
                continue;
            }
            let names = feature_names(kind, self.features.config());
            // P per row per model (horizon).
            let mut probs: Vec<Option<Vec<f32>>> = Vec::with_capacity(group.len());
            let mut inputs: Vec<Option<(Vec<usize>, Vec<f32>)>> = Vec::with_capacity(group.len());
            for spec in &group {
                let cols: Option<Vec<usize>> =
                    spec.features.iter().map(|f| names.iter().position(|n| n == f)).collect();
                let Some(cols) = cols else {
                    errors.push(format!("model {}: features not produced by the engine", spec.name));
                    probs.push(None);
                    inputs.push(None);
                    continue;
                };
                let x = select_columns(m, &cols);
                match self.scorer.score(spec, &x) {
                    Ok(p) if p.len() == m.rows.len() => {
                        rows_scored += p.len() as u64;
                        probs.push(Some(p));
                        inputs.push(Some((cols, x)));
                    }
                    Ok(p) => {
                        errors.push(format!("model {}: {} outputs for {} rows", spec.name, p.len(), m.rows.len()));
                        probs.push(None);
                        inputs.push(None);
                    }
                    Err(e) => {
                        errors.push(format!("model {}: {e}", spec.name));
                        probs.push(None);
                        inputs.push(None);
                    }
                }
            }
            let decision_h = self.cfg.decision_horizon_s.get(&failure_type).copied();
            let usable = |i: &usize| probs[*i].is_some();
            let decider = match decision_h {
                Some(h) => (0..group.len()).filter(usable).find(|&i| group[i].horizon_s == h),
                None => (0..group.len())
                    .filter(usable)
                    .find(|&i| group[i].operating_threshold.is_some())
                    .or_else(|| (0..group.len()).find(usable)),
            };
            let Some(d) = decider else { continue };
            let spec = group[d];
            let (raise, clear) = self.thresholds(spec);
            let dprobs = probs[d].as_ref().expect("decider has probabilities");
            for (r, row) in m.rows.iter().enumerate() {
                let p = f64::from(dprobs[r]);
                let by_h: BTreeMap<i64, f64> = group
                    .iter()
                    .zip(&probs)
                    .filter_map(|(s, ps)| ps.as_ref().map(|ps| (s.horizon_s, f64::from(ps[r]))))
                    .collect();
                let key = (row.resource.clone(), failure_type.clone());
                seen.insert(key.clone(), ());
                let state = self.transition(&key, p, raise, clear);
                let emit = state.or(if every_tick { Some(EventState::Tick) } else { None });
                let explain = matches!(state, Some(EventState::Raised | EventState::Updated));
                let top = if explain {
                    let (cols, x) = inputs[d].as_ref().expect("decider has inputs");
                    self.explain(spec, cols, &x[r * cols.len()..(r + 1) * cols.len()], p, &names)
                } else {
                    Vec::new()
                };
                let ev = Arc::new(Event {
                    id: 0,
                    time_ms: now_ms,
                    host_id: host_of(&row.resource).to_owned(),
                    resource: row.resource.clone(),
                    resource_kind: kind,
                    failure_type: failure_type.clone(),
                    state: emit.unwrap_or(EventState::Tick),
                    probability: p,
                    horizon_s: spec.horizon_s,
                    expected_time_to_failure_s: expected_ttf(&by_h),
                    probability_by_horizon_s: by_h,
                    summary: summarize(&failure_type, &names, m.row(r)),
                    top_features: top,
                    model_name: spec.name.clone(),
                    model_version: spec.version.clone(),
                    anomaly: None,
                });
                latest.entry(row.resource.clone()).or_default().push(ev.clone());
                if emit.is_some() {
                    let mut ev = (*ev).clone();
                    ev.id = self.next_id.fetch_add(1, Ordering::AcqRel);
                    out.push(Arc::new(ev));
                }
            }
        }
        // Per-host anomaly detection on the host features (once per tick).
        if scope.is_none() {
            let m =
                matrices.entry(ResourceKind::Host).or_insert_with(|| self.features.matrix(ResourceKind::Host, now_ms));
            let names = feature_names(ResourceKind::Host, self.features.config());
            let cols: Vec<usize> = ANOMALY_SIGNALS.iter().filter_map(|s| names.iter().position(|n| n == s)).collect();
            let mut detectors = self.detectors.lock().unwrap_or_else(PoisonError::into_inner);
            let live: std::collections::HashSet<&str> = m.rows.iter().map(|r| r.resource.as_str()).collect();
            detectors.retain(|host, _| live.contains(host.as_str()));
            for (r, row) in m.rows.iter().enumerate() {
                let x: Vec<f64> = cols.iter().map(|&c| f64::from(m.row(r)[c])).collect();
                let det = match detectors.entry(row.resource.clone()) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        match HostDetector::new(self.cfg.anomaly.clone(), ANOMALY_SIGNALS) {
                            Ok(d) => v.insert(d),
                            Err(e) => {
                                errors.push(format!("anomaly detector: {e}"));
                                continue;
                            }
                        }
                    }
                };
                let score = match det.observe(now_ms, &x) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue, // still learning this host's baseline
                    Err(e) => {
                        errors.push(format!("anomaly detector for {}: {e}", row.resource));
                        continue;
                    }
                };
                let key = (row.resource.clone(), ANOMALY.to_owned());
                seen.insert(key.clone(), ());
                let p = score.smoothed / (score.smoothed + score.threshold).max(f64::MIN_POSITIVE);
                let state = self.transition(&key, p, 0.5, 0.5 - f64::EPSILON);
                let emit = state.or(if every_tick { Some(EventState::Tick) } else { None });
                let top: Vec<Contribution> = score
                    .top_signals
                    .iter()
                    .map(|c| Contribution {
                        name: c.signal.to_string(),
                        value: ANOMALY_SIGNALS.iter().position(|s| **s == *c.signal).map_or(f64::NAN, |i| x[i]),
                        contribution: c.share,
                    })
                    .collect();
                let summary = format!(
                    "unusual combination of host metrics (score {:.1}, threshold {:.1}); mostly {}",
                    score.smoothed,
                    score.threshold,
                    top.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                );
                let ev = Arc::new(Event {
                    id: 0,
                    time_ms: now_ms,
                    host_id: host_of(&row.resource).to_owned(),
                    resource: row.resource.clone(),
                    resource_kind: ResourceKind::Host,
                    failure_type: ANOMALY.to_owned(),
                    state: emit.unwrap_or(EventState::Tick),
                    probability: p,
                    horizon_s: 0,
                    probability_by_horizon_s: BTreeMap::new(),
                    expected_time_to_failure_s: -1.0,
                    top_features: top,
                    model_name: "host-anomaly".into(),
                    model_version: format!("online/{}", self.cfg.anomaly.variance),
                    summary,
                    anomaly: Some((score.smoothed, score.threshold)),
                });
                latest.entry(row.resource.clone()).or_default().push(ev.clone());
                if emit.is_some() {
                    let mut ev = (*ev).clone();
                    ev.id = self.next_id.fetch_add(1, Ordering::AcqRel);
                    out.push(Arc::new(ev));
                }
            }
        }
        // Raised alarms of resources that went away are cleared.
        if scope.is_none() {
            let mut alarms = self.alarms.lock().unwrap_or_else(PoisonError::into_inner);
            let gone: Vec<(String, String)> = alarms.keys().filter(|k| !seen.contains_key(*k)).cloned().collect();
            for key in gone {
                if let Some(a) = alarms.remove(&key)
                    && a.raised
                {
                    let kind =
                        self.features.resource(&key.0, now_ms).map(|(k, _)| k).unwrap_or(ResourceKind::Container);
                    out.push(Arc::new(Event {
                        id: self.next_id.fetch_add(1, Ordering::AcqRel),
                        time_ms: now_ms,
                        host_id: host_of(&key.0).to_owned(),
                        resource: key.0.clone(),
                        resource_kind: kind,
                        failure_type: key.1.clone(),
                        state: EventState::Cleared,
                        probability: 0.0,
                        horizon_s: 0,
                        probability_by_horizon_s: BTreeMap::new(),
                        expected_time_to_failure_s: -1.0,
                        top_features: Vec::new(),
                        model_name: String::new(),
                        model_version: String::new(),
                        summary: "resource stopped reporting".into(),
                        anomaly: None,
                    }));
                }
            }
        }
        if scope.is_none() {
            // Only kinds some model scores: a host without such resources costs no early pass.
            let mut by_host: HashMap<String, Vec<String>> = HashMap::new();
            for (_, m) in matrices.iter().filter(|(k, _)| models.iter().any(|s| s.resource_kind == **k)) {
                for row in &m.rows {
                    by_host.entry(host_of(&row.resource).to_owned()).or_default().push(row.resource.clone());
                }
            }
            *self.by_host.lock().unwrap_or_else(PoisonError::into_inner) = by_host;
            *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = latest;
        } else {
            let mut all = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            for (resource, evs) in latest {
                let kept = all.entry(resource).or_default();
                kept.retain(|old| !evs.iter().any(|e| e.failure_type == old.failure_type));
                kept.extend(evs);
            }
        }
        for ev in &out {
            // No receivers is fine: nobody is listening.
            let _ = self.events.send(ev.clone());
        }
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let mut st = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let (s, window) = &mut *st;
        if scope.is_some() {
            s.early_ticks += 1;
            s.events += out.iter().filter(|e| e.state != EventState::Tick).count() as u64;
            s.rows_scored += rows_scored;
            s.score_errors += errors.len() as u64;
            if let Some(e) = errors.last() {
                s.last_error = Some(e.clone());
            }
            return out;
        }
        s.ticks += 1;
        s.events += out.iter().filter(|e| e.state != EventState::Tick).count() as u64;
        s.rows_scored += rows_scored;
        s.score_errors += errors.len() as u64;
        if let Some(e) = errors.last() {
            tracing::warn!(error = %e, "prediction tick: model failed");
            s.last_error = Some(e.clone());
        }
        s.last_tick_ms = took;
        if window.len() >= 1000 {
            window.remove(0);
        }
        window.push(took);
        let mut sorted = window.clone();
        sorted.sort_by(f64::total_cmp);
        s.tick_p50_ms = quantile(&sorted, 0.5);
        s.tick_p99_ms = quantile(&sorted, 0.99);
        out
    }

    /// Raise and clear thresholds for events decided by `spec`: the model's operating
    /// threshold when it has one (clearing at the configured clear/raise ratio below it),
    /// else the configured thresholds.
    fn thresholds(&self, spec: &ModelSpec) -> (f64, f64) {
        match spec.operating_threshold {
            Some(t) => {
                let ratio = if self.cfg.raise_threshold > 0.0 {
                    self.cfg.clear_threshold / self.cfg.raise_threshold
                } else {
                    1.0
                };
                (t, t * ratio)
            }
            None => (self.cfg.raise_threshold, self.cfg.clear_threshold),
        }
    }

    /// The state change (if any) for `key` with probability `p`, recorded.
    fn transition(&self, key: &(String, String), p: f64, raise: f64, clear: f64) -> Option<EventState> {
        let mut alarms = self.alarms.lock().unwrap_or_else(PoisonError::into_inner);
        let a = alarms.entry(key.clone()).or_insert(Alarm { raised: false, last_sent_p: 0.0 });
        if !a.raised {
            if p >= raise {
                *a = Alarm { raised: true, last_sent_p: p };
                return Some(EventState::Raised);
            }
            return None;
        }
        if p < clear {
            *a = Alarm { raised: false, last_sent_p: p };
            return Some(EventState::Cleared);
        }
        if (p - a.last_sent_p).abs() >= self.cfg.update_delta {
            a.last_sent_p = p;
            return Some(EventState::Updated);
        }
        None
    }

    /// Features whose absence lowers the probability most.
    fn explain(&self, spec: &ModelSpec, cols: &[usize], x: &[f32], p: f64, names: &[String]) -> Vec<Contribution> {
        let n = cols.len();
        let mut rows = Vec::with_capacity(n * n);
        for j in 0..n {
            rows.extend_from_slice(x);
            rows[j * n + j] = f32::NAN;
        }
        let Ok(ps) = self.scorer.score(spec, &rows) else { return Vec::new() };
        let mut c: Vec<Contribution> = (0..n)
            .filter(|&j| !x[j].is_nan())
            .map(|j| Contribution {
                name: names[cols[j]].clone(),
                value: f64::from(x[j]),
                contribution: p - f64::from(ps.get(j).copied().unwrap_or(p as f32)),
            })
            .filter(|c| c.contribution > 0.0)
            .collect();
        c.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
        c.truncate(self.cfg.top_features);
        c
    }
}

fn select_columns(m: &FeatureMatrix, cols: &[usize]) -> Vec<f32> {
    let mut x = Vec::with_capacity(m.rows.len() * cols.len());
    for r in 0..m.rows.len() {
        let row = m.row(r);
        x.extend(cols.iter().map(|&c| row[c]));
    }
    x
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The shortest horizon at which failure is more likely than not; -1 when none.
fn expected_ttf(by_h: &BTreeMap<i64, f64>) -> f64 {
    by_h.iter().find(|(_, p)| **p >= 0.5).map_or(-1.0, |(h, _)| *h as f64)
}

/// A line a person can act on, from the features that matter for the failure type.
fn summarize(failure_type: &str, names: &[String], row: &[f32]) -> String {
    let f = |n: &str| names.iter().position(|x| x == n).map(|i| row[i]).filter(|v| !v.is_nan());
    match failure_type {
        "memory_exhaustion" => {
            let mut parts = Vec::new();
            if let Some(u) = f("mem_util") {
                parts.push(format!("memory at {:.0}% of limit", u * 100.0));
            }
            if let Some(s) = f("mem_usage_30s_slope") {
                parts.push(format!("{:+.2} MiB/s", s / 1_048_576.0));
            }
            let linear = f("mem_tte_s_30s").filter(|t| (*t as f64) < crate::features::TTE_CAP_S);
            if let Some(t) = linear {
                parts.push(format!("limit in ~{t:.0} s at this rate"));
            }
            // Growth speeding up: say when the limit comes if it keeps accelerating.
            if let Some(ta) = f("mem_tte_accel_s").filter(|ta| linear.is_some_and(|t| *ta < 0.8 * t)) {
                parts.push(format!("~{ta:.0} s if it keeps accelerating"));
            }
            parts.join(", ")
        }
        _ => String::new(),
    }
}

/// One subscriber's view of the event stream.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    engine: Arc<PredictionEngine>,
    every_tick: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.every_tick {
            self.engine.every_tick_subscribers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Subscription {
    /// The next event and how many were dropped for this subscriber before it; `None`
    /// when the engine is gone.
    pub async fn next(&mut self) -> Option<(Arc<Event>, u64)> {
        let mut dropped = 0;
        loop {
            match self.rx.recv().await {
                Ok(ev) => return Some((ev, dropped)),
                Err(broadcast::error::RecvError::Lagged(n)) => dropped += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureConfig;
    use crate::storage::SeriesId;
    use crate::storage::SeriesMeta;
    use augur_core::{MetricKind, SeriesKey};
    use std::sync::Mutex as StdMutex;

    /// P(failure) = memory utilisation (so a leak raises, a drop clears).
    struct UtilScorer {
        horizons: Vec<i64>,
        fail: StdMutex<bool>,
        /// (horizon, threshold) of the model marked as deciding.
        operating: Option<(i64, f64)>,
    }

    impl Scorer for UtilScorer {
        fn models(&self) -> Vec<ModelSpec> {
            self.horizons
                .iter()
                .map(|h| ModelSpec {
                    name: format!("util-{h}"),
                    version: "1".into(),
                    resource_kind: ResourceKind::Container,
                    failure_type: "memory_exhaustion".into(),
                    horizon_s: *h,
                    operating_threshold: self.operating.filter(|(oh, _)| oh == h).map(|(_, t)| t),
                    features: vec!["mem_usage_last".into(), "mem_util".into()],
                })
                .collect()
        }
        fn score(&self, m: &ModelSpec, rows: &[f32]) -> Result<Vec<f32>, String> {
            if *self.fail.lock().unwrap() {
                return Err("broken".into());
            }
            let boost = if m.horizon_s > 30 { 0.1 } else { 0.0 };
            Ok(rows.chunks(2).map(|r| if r[1].is_nan() { 0.0 } else { (r[1] + boost).min(1.0) }).collect())
        }
    }

    fn setup(horizons: Vec<i64>) -> (Arc<FeatureEngine>, Arc<PredictionEngine>, Arc<UtilScorer>) {
        let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
        let scorer = Arc::new(UtilScorer { horizons, fail: StdMutex::new(false), operating: None });
        let pe = PredictionEngine::new(PredictConfig::default(), fe.clone(), scorer.clone());
        (fe, pe, scorer)
    }

    fn metas() -> Vec<SeriesMeta> {
        ["container_memory_usage_bytes", "container_spec_memory_limit_bytes"]
            .iter()
            .map(|m| SeriesMeta {
                host_id: "h".into(),
                key: SeriesKey {
                    resource: "cgroup/app".into(),
                    metric: (*m).into(),
                    unit: "bytes".into(),
                    kind: MetricKind::Gauge,
                    labels: Default::default(),
                },
            })
            .collect()
    }

    fn feed(fe: &FeatureEngine, ts: i64, usage: f64) {
        let m = metas();
        fe.observe(&[(1, ts, usage), (2, ts, 100.0)], &|id| m.get(id as usize - 1).cloned());
    }

    #[test]
    fn raise_update_clear_with_hysteresis_and_explanations() {
        let (fe, pe, _) = setup(vec![30, 120]);
        let mut sub = pe.subscribe(false);
        let mut states = Vec::new();
        for (s, usage) in [10.0, 40.0, 55.0, 60.0, 70.0, 40.0, 20.0, 60.0].iter().enumerate() {
            let ts = 1_000_000 + s as i64 * 1000;
            feed(&fe, ts, *usage);
            for ev in pe.tick(ts) {
                states.push((s, ev.state, ev.probability));
            }
        }
        let got: Vec<(usize, EventState)> = states.iter().map(|(s, st, _)| (*s, *st)).collect();
        // Raised at 0.55; 0.60 is within the update delta; 0.70 updates; 0.40 stays
        // raised (above the clear threshold 0.3) but moved, so updates; 0.20 clears;
        // 0.60 raises again.
        use EventState::*;
        assert_eq!(got, vec![(2, Raised), (4, Updated), (5, Updated), (6, Cleared), (7, Raised)]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (first, dropped) = rt.block_on(sub.next()).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(first.state, EventState::Raised);
        assert_eq!(first.resource, "h/cgroup/app");
        assert_eq!(first.host_id, "h");
        assert_eq!(first.horizon_s, 30, "the shortest horizon decides by default");
        assert_eq!(first.probability_by_horizon_s.len(), 2);
        assert!((first.probability_by_horizon_s[&120] - 0.65).abs() < 1e-6);
        assert_eq!(first.expected_time_to_failure_s, 30.0);
        assert_eq!(first.top_features[0].name, "mem_util");
        assert!(first.summary.contains("55% of limit"), "{}", first.summary);
        assert_eq!(pe.latest("h/cgroup/app").len(), 1);
        assert_eq!(pe.stats().events, 5);
    }

    #[test]
    fn the_model_with_an_operating_threshold_decides_at_that_threshold() {
        let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
        // The 120 s model (p = util + 0.1) decides at 0.75: raised at util 0.65, not before.
        let scorer =
            Arc::new(UtilScorer { horizons: vec![30, 120], fail: StdMutex::new(false), operating: Some((120, 0.75)) });
        let pe = PredictionEngine::new(PredictConfig::default(), fe.clone(), scorer);
        let mut raised_at = None;
        for (s, usage) in [50.0, 60.0, 64.0, 66.0, 70.0].iter().enumerate() {
            let ts = 1_000_000 + s as i64 * 1000;
            feed(&fe, ts, *usage);
            if let Some(ev) = pe.tick(ts).into_iter().find(|e| e.state == EventState::Raised) {
                assert_eq!(ev.horizon_s, 120);
                raised_at.get_or_insert(*usage);
            }
        }
        assert_eq!(raised_at, Some(66.0));
    }

    #[test]
    fn host_anomaly_is_raised_when_metrics_break_their_usual_relation_and_explained() {
        let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
        let cfg = PredictConfig {
            anomaly: AnomalyConfig {
                warmup: Duration::from_secs(600),
                min_warmup_samples: 600,
                ..AnomalyConfig::default()
            },
            ..PredictConfig::default()
        };
        let pe = PredictionEngine::new(cfg, fe.clone(), Arc::new(NoModels));
        let metas: Vec<SeriesMeta> = [
            ("node_memory_MemAvailable_bytes", MetricKind::Gauge),
            ("node_memory_MemTotal_bytes", MetricKind::Gauge),
            ("node_load1", MetricKind::Gauge),
            ("node_pressure_cpu_waiting_seconds_total", MetricKind::Counter),
        ]
        .iter()
        .map(|(m, k)| SeriesMeta {
            host_id: "hx".into(),
            key: SeriesKey {
                resource: "host".into(),
                metric: (*m).into(),
                unit: String::new(),
                kind: *k,
                labels: Default::default(),
            },
        })
        .collect();
        let meta = |id: SeriesId| metas.get(id as usize - 1).cloned();
        // Load and CPU pressure move together (with noise); memory use follows load.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 1000) as f64 / 1000.0 - 0.5
        };
        let (mut psi, mut raised) = (0.0, None);
        for s in 0..900i64 {
            let ts = 1_000_000_000 + s * 1000;
            let phase = (s as f64 / 60.0).sin();
            let load = 2.0 + phase + 0.05 * noise();
            // From 12 minutes on, CPU pressure soars while load stays normal: a broken relation.
            let stall = if s >= 720 { 0.9 } else { 0.1 * load + 0.01 * noise() };
            psi += stall;
            let used = 4e9 + 1e9 * phase + 1e7 * noise();
            let pts = [(1, ts, 16e9 - used), (2, ts, 16e9), (3, ts, load), (4, ts, psi)];
            fe.observe(&pts, &meta);
            for ev in pe.tick(ts) {
                if ev.failure_type == ANOMALY && ev.state == EventState::Raised {
                    assert!(s >= 720, "false alarm at {s} s: {ev:?}");
                    raised.get_or_insert(ev);
                }
            }
        }
        let ev = raised.expect("the broken relation raised an anomaly event");
        assert_eq!(ev.resource, "hx");
        assert!(ev.probability >= 0.5);
        assert_eq!(ev.top_features[0].name, "psi_cpu_waiting_last", "{:?}", ev.top_features);
        let (score, threshold) = ev.anomaly.unwrap();
        assert!(score > threshold);
    }

    #[test]
    fn slow_subscriber_is_told_what_it_lost_and_engine_never_waits() {
        let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
        let scorer = Arc::new(UtilScorer { horizons: vec![30], fail: StdMutex::new(false), operating: None });
        let cfg = PredictConfig { subscriber_buffer: 4, ..PredictConfig::default() };
        let pe = PredictionEngine::new(cfg, fe.clone(), scorer);
        let mut sub = pe.subscribe(true);
        for s in 0..10 {
            let ts = 1_000_000 + s * 1000;
            feed(&fe, ts, 10.0);
            assert_eq!(pe.tick(ts).len(), 1, "one TICK event per tick for every-tick subscribers");
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (ev, dropped) = rt.block_on(sub.next()).unwrap();
        assert_eq!(dropped, 6, "10 sent, 4 buffered");
        assert_eq!(ev.state, EventState::Tick);
        drop(sub);
        feed(&fe, 1_011_000, 10.0);
        assert!(pe.tick(1_011_000).is_empty(), "no TICK events without every-tick subscribers");
    }

    #[test]
    fn fresh_data_of_a_host_is_scored_before_the_next_tick() {
        let (fe, pe, _) = setup(vec![30]);
        feed(&fe, 1_000_000, 10.0);
        assert!(pe.tick(1_000_000).is_empty());
        let hosts = |h: &str| HashSet::from([h.to_owned()]);
        feed(&fe, 1_000_500, 90.0);
        assert!(pe.tick_hosts(1_000_510, &hosts("other")).is_empty(), "only the named hosts are scored");
        let evs = pe.tick_hosts(1_000_510, &hosts("h"));
        assert_eq!(evs.len(), 1);
        assert_eq!((evs[0].state, evs[0].resource.as_str()), (EventState::Raised, "h/cgroup/app"));
        assert!(!evs[0].top_features.is_empty(), "raised early, explained as in a tick");
        assert!((pe.latest("h/cgroup/app")[0].probability - 0.9).abs() < 1e-6);
        // The tick finds the state already raised: no second event.
        feed(&fe, 1_001_000, 90.0);
        assert!(pe.tick(1_001_000).is_empty());
        let st = pe.stats();
        assert_eq!((st.ticks, st.early_ticks, st.events), (2, 1, 1), "a host with nothing to score costs no pass");
    }

    #[test]
    fn data_arrived_wakes_the_engine_thread_long_before_its_tick() {
        let fe = Arc::new(FeatureEngine::new(FeatureConfig::default()));
        let scorer = Arc::new(UtilScorer { horizons: vec![30], fail: StdMutex::new(false), operating: None });
        let cfg = PredictConfig { tick: Duration::from_secs(3600), ..PredictConfig::default() };
        let pe = PredictionEngine::new(cfg, fe.clone(), scorer);
        let now = augur_core::time::now_ms();
        feed(&fe, now - 1000, 10.0);
        assert!(pe.tick(now - 1000).is_empty()); // the tick learns the host's resources
        let mut sub = pe.subscribe(false);
        let _thread = pe.spawn().expect("engine thread");
        feed(&fe, now, 90.0);
        pe.data_arrived("h");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), sub.next()).await });
        let (ev, _) = got.expect("scored without waiting an hour for the tick").expect("engine alive");
        assert_eq!(ev.state, EventState::Raised);
        assert_eq!(pe.stats().ticks, 1);
    }

    #[test]
    fn resource_going_away_clears_its_alarm_and_model_errors_are_counted() {
        let (fe, pe, scorer) = setup(vec![30]);
        feed(&fe, 1_000_000, 90.0);
        assert_eq!(pe.tick(1_000_000)[0].state, EventState::Raised);
        // Three minutes of silence: the resource is stale, its alarm clears.
        let evs = pe.tick(1_180_000);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].state, EventState::Cleared);
        *scorer.fail.lock().unwrap() = true;
        feed(&fe, 1_181_000, 90.0);
        assert!(pe.tick(1_181_000).is_empty());
        let st = pe.stats();
        assert_eq!(st.score_errors, 1);
        assert!(st.last_error.unwrap().contains("broken"));
    }

    #[test]
    fn the_summary_says_when_growth_accelerates() {
        let names: Vec<String> =
            ["mem_util", "mem_usage_30s_slope", "mem_tte_s_30s", "mem_tte_accel_s"].map(String::from).to_vec();
        let steady = summarize("memory_exhaustion", &names, &[0.8, 1_048_576.0, 60.0, 58.0]);
        assert_eq!(steady, "memory at 80% of limit, +1.00 MiB/s, limit in ~60 s at this rate");
        let faster = summarize("memory_exhaustion", &names, &[0.8, 1_048_576.0, 60.0, 30.0]);
        assert!(faster.ends_with(", ~30 s if it keeps accelerating"), "{faster}");
    }
}

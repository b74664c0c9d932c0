//! The feature engine: streaming, time-windowed features per resource, O(1) per sample.
//!
//! Ingest hands every stored point to [`FeatureEngine::observe`]; a series is routed once
//! (by [`signals::route`]) to one signal of one feature resource and then costs a
//! table lookup per point. Once per tick the prediction engine asks for
//! [`FeatureEngine::matrix`]: one row per live resource of a kind, columns in the order
//! of [`feature_names`]. The training pipeline gets its features from the same code
//! through `augur-aggregator features export` ([`export`]), never from a copy.
//!
//! Per windowed signal and window (30 s, 5 min, 30 min by default): mean (level), least
//! squares slope per second, standard deviation (variability); plus the last value and
//! a 60 s EWMA. Derived per kind: utilisation and headroom against limits,
//! time-to-exhaustion per window (headroom / slope, capped at [`TTE_CAP_S`]), CPU
//! throttling ratio. Missing inputs give NaN, which the tree models treat as missing.
//!
//! Containers also get (schema version 2), against the memory limit: the peak and the
//! largest drawdown of usage per window (a workload whose memory fell back after a high
//! — a garbage collection, a cache eviction — is not a leak on its way up), the
//! acceleration of usage (the difference of the first two windows' slopes over the
//! distance of their centres, which are taken within the container's age so a young
//! container's windows are not assumed full) and the time to exhaustion under constant
//! acceleration (`h = v t + a t² / 2`, with v the first window's slope): a linear slope
//! overestimates the time left while growth accelerates, and underestimates it while
//! growth slows down (a cache filling up to its plateau never reaches the limit).
//!
//! Layout:
//! - [`window`]: bucketed sliding windows, EWMA, counter rates.
//! - [`signals`]: resource kinds, their signals and the routing of series to them.
//! - [`export`]: replays stored or recorded series through the engine into a CSV.

pub mod export;
pub mod signals;
pub mod window;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use crate::storage::{SeriesId, SeriesMeta};
pub use signals::ResourceKind;
use signals::*;
use window::{CounterRate, Ewma, Window, WindowStats};

/// Version of the feature definitions; models carry the version they were trained on.
pub const SCHEMA_VERSION: u32 = 2;
/// Time-to-exhaustion reported when nothing is being exhausted (seconds, one day).
pub const TTE_CAP_S: f64 = 86_400.0;
/// Time constant of each signal's EWMA.
const EWMA_TAU_MS: i64 = 60_000;
/// A resource with no sample for this long is left out of the tick's matrix.
const STALE_MS: i64 = 120_000;
/// A resource with no sample for this long is forgotten.
const FORGET_MS: i64 = 3_600_000;
const SHARDS: usize = 16;

/// Window lengths and resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureConfig {
    /// (name used in feature names, length in ms), shortest first.
    pub windows: Vec<(String, i64)>,
    /// Buckets per window.
    pub buckets: usize,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            windows: vec![("30s".into(), 30_000), ("5m".into(), 300_000), ("30m".into(), 1_800_000)],
            buckets: 15,
        }
    }
}

/// The ordered feature names of a kind under `cfg`: the columns of [`FeatureEngine::matrix`].
pub fn feature_names(kind: ResourceKind, cfg: &FeatureConfig) -> Vec<String> {
    let mut out = Vec::new();
    for s in kind.signals() {
        out.push(format!("{}_last", s.name));
        if s.windowed {
            out.push(format!("{}_ewma", s.name));
            for (w, _) in &cfg.windows {
                for stat in ["mean", "slope", "std"] {
                    out.push(format!("{}_{w}_{stat}", s.name));
                }
            }
        }
    }
    let per_window = |out: &mut Vec<String>, stem: &str| {
        for (w, _) in &cfg.windows {
            out.push(format!("{stem}_{w}"));
        }
    };
    match kind {
        ResourceKind::Container => {
            out.extend(["mem_util", "mem_ws_util", "mem_headroom_bytes"].map(String::from));
            per_window(&mut out, "mem_tte_s");
            out.extend(["cpu_util", "pids_util"].map(String::from));
            per_window(&mut out, "pids_tte_s");
            per_window(&mut out, "throttle_ratio");
            per_window(&mut out, "mem_peak_util");
            per_window(&mut out, "mem_drawdown_util");
            out.extend(["mem_accel_util", "mem_tte_accel_s"].map(String::from));
        }
        ResourceKind::Host => {
            out.extend(["mem_util", "swap_util"].map(String::from));
            per_window(&mut out, "mem_tte_s");
        }
        ResourceKind::Filesystem => {
            out.extend(["fs_util", "inode_util"].map(String::from));
            per_window(&mut out, "fs_tte_s");
            per_window(&mut out, "inode_tte_s");
        }
    }
    out
}

/// The window configuration as name → length, for model metadata.
pub fn window_description(cfg: &FeatureConfig) -> std::collections::BTreeMap<String, String> {
    let mut m: std::collections::BTreeMap<String, String> =
        cfg.windows.iter().map(|(n, ms)| (format!("window_{n}"), format!("{ms}ms"))).collect();
    m.insert("buckets".into(), cfg.buckets.to_string());
    m
}

/// State of one signal of one resource.
#[derive(Debug, Clone)]
struct SignalState {
    last: Option<(i64, f64)>,
    rate: CounterRate,
    ewma: Ewma,
    windows: Vec<Window>,
}

impl SignalState {
    fn new(def: &SignalDef, cfg: &FeatureConfig) -> Self {
        SignalState {
            last: None,
            rate: CounterRate::default(),
            ewma: Ewma::new(EWMA_TAU_MS),
            windows: if def.windowed {
                cfg.windows.iter().map(|(_, ms)| Window::new(*ms, cfg.buckets)).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn add(&mut self, ts: i64, raw: f64, counter: bool) {
        let v = if counter {
            match self.rate.add(ts, raw) {
                Some(r) => r,
                None => return,
            }
        } else {
            raw
        };
        if self.last.is_none_or(|(t, _)| ts >= t) {
            self.last = Some((ts, v));
        }
        self.ewma.add(ts, v);
        for w in &mut self.windows {
            w.add(ts, v);
        }
    }

    fn last_value(&self) -> f64 {
        self.last.map_or(f64::NAN, |(_, v)| v)
    }
}

/// State of one feature resource.
#[derive(Debug, Clone)]
struct ResourceState {
    name: String,
    kind: ResourceKind,
    signals: Vec<SignalState>,
    /// Time of the oldest sample seen (the resource's age at a query is `now - first_ms`).
    first_ms: i64,
    last_ms: i64,
}

impl ResourceState {
    fn new(name: String, kind: ResourceKind, cfg: &FeatureConfig) -> Self {
        ResourceState {
            name,
            kind,
            signals: kind.signals().iter().map(|d| SignalState::new(d, cfg)).collect(),
            first_ms: i64::MAX,
            last_ms: i64::MIN,
        }
    }

    /// Appends this resource's features at `now` to `row` (see [`feature_names`]).
    fn features(&self, now: i64, row: &mut Vec<f32>, cfg: &FeatureConfig) {
        let n_windows = self.signals.iter().map(|s| s.windows.len()).max().unwrap_or(0);
        let mut stats: Vec<Vec<WindowStats>> = Vec::with_capacity(self.signals.len());
        for s in &self.signals {
            let st: Vec<WindowStats> = s.windows.iter().map(|w| w.stats(now)).collect();
            row.push(s.last_value() as f32);
            if !st.is_empty() {
                row.push(s.ewma.value() as f32);
                for ws in &st {
                    row.extend([ws.mean as f32, ws.slope_per_s as f32, ws.std as f32]);
                }
            }
            stats.push(st);
        }
        let last = |i: usize| self.signals[i].last_value();
        let slope = |i: usize, w: usize| stats[i].get(w).map_or(f64::NAN, |s| s.slope_per_s);
        let mean = |i: usize, w: usize| stats[i].get(w).map_or(f64::NAN, |s| s.mean);
        match self.kind {
            ResourceKind::Container => {
                let limit = effective_limit(last(C_MEM_LIMIT));
                let usage = last(C_MEM_USAGE);
                row.push(ratio(usage, limit) as f32);
                row.push(ratio(last(C_MEM_WS), limit) as f32);
                row.push((limit - usage) as f32);
                for w in 0..n_windows {
                    row.push(tte(limit - usage, slope(C_MEM_USAGE, w)) as f32);
                }
                row.push(ratio(mean(C_CPU, 0), effective_limit(last(C_CPU_LIMIT))) as f32);
                let pids_max = effective_limit(last(C_PIDS_MAX));
                row.push(ratio(last(C_PIDS), pids_max) as f32);
                for w in 0..n_windows {
                    row.push(tte(pids_max - last(C_PIDS), slope(C_PIDS, w)) as f32);
                }
                for w in 0..n_windows {
                    let (t, p) = (mean(C_THROTTLED, w), mean(C_PERIODS, w));
                    row.push(if p > 0.0 {
                        (t / p) as f32
                    } else if p == 0.0 {
                        0.0
                    } else {
                        f32::NAN
                    });
                }
                let usage_stats = &stats[C_MEM_USAGE];
                for w in 0..n_windows {
                    row.push(usage_stats.get(w).map_or(f64::NAN, |s| ratio(s.max, limit)) as f32);
                }
                for w in 0..n_windows {
                    let dd = self.signals[C_MEM_USAGE].windows.get(w).map_or(f64::NAN, |win| win.drawdown(now));
                    row.push(ratio(dd, limit) as f32);
                }
                let age_ms = if self.first_ms <= now { now - self.first_ms } else { 0 };
                let accel = acceleration(&cfg.windows, usage_stats, age_ms);
                row.push(ratio(accel, limit) as f32);
                row.push(tte_accelerating(limit - usage, slope(C_MEM_USAGE, 0), accel) as f32);
            }
            ResourceKind::Host => {
                let total = last(H_MEM_TOTAL);
                let avail = last(H_MEM_AVAIL);
                row.push((1.0 - ratio(avail, total)) as f32);
                row.push((1.0 - ratio(last(H_SWAP_FREE), last(H_SWAP_TOTAL))) as f32);
                for w in 0..n_windows {
                    row.push(tte(avail, -slope(H_MEM_AVAIL, w)) as f32);
                }
            }
            ResourceKind::Filesystem => {
                let avail = last(F_AVAIL);
                let free_files = last(F_FILES_FREE);
                row.push((1.0 - ratio(avail, last(F_SIZE))) as f32);
                row.push((1.0 - ratio(free_files, last(F_FILES))) as f32);
                for w in 0..n_windows {
                    row.push(tte(avail, -slope(F_AVAIL, w)) as f32);
                }
                for w in 0..n_windows {
                    row.push(tte(free_files, -slope(F_FILES_FREE, w)) as f32);
                }
            }
        }
    }
}

/// A limit as a number, or NaN when absent or effectively unlimited (cgroup v1 reports
/// "no limit" as a number near 2^63).
fn effective_limit(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 && v < 1e18 { v } else { f64::NAN }
}

/// Change of the least-squares slope per second between the first two windows (units per
/// s²): their slopes estimate the rate at their centres, half a window back, where a
/// window reaches back at most to the resource's first sample (`age_ms`). NaN with fewer
/// than two windows, empty windows or centres too close (under 2 s apart).
fn acceleration(windows: &[(String, i64)], stats: &[WindowStats], age_ms: i64) -> f64 {
    let (Some((_, l0)), Some((_, l1)), Some(s0), Some(s1)) =
        (windows.first(), windows.get(1), stats.first(), stats.get(1))
    else {
        return f64::NAN;
    };
    if s0.count == 0 || s1.count == 0 {
        return f64::NAN;
    }
    let span = |l: i64| l.min(age_ms.max(0)) as f64 / 2000.0; // centre, seconds back
    let dt = span(*l1) - span(*l0);
    if dt < 2.0 {
        return f64::NAN;
    }
    (s0.slope_per_s - s1.slope_per_s) / dt
}

/// Seconds until `headroom` is used up from rate `v` (per s) under constant acceleration
/// `a` (per s²): the first positive root of `a t² / 2 + v t = headroom`. Speeding up
/// (`a > 0`), the limit comes sooner than at the linear rate; slowing down (`a < 0`), it
/// comes later, or never when growth stops first (`v² + 2 a h < 0`, a cache filling up to
/// its plateau) or usage is not growing. Without an acceleration: the linear [`tte`].
/// Capped at [`TTE_CAP_S`].
fn tte_accelerating(headroom: f64, v: f64, a: f64) -> f64 {
    if headroom.is_nan() || v.is_nan() {
        return f64::NAN;
    }
    if headroom <= 0.0 {
        return 0.0;
    }
    if a.is_nan() || a == 0.0 {
        return tte(headroom, v);
    }
    let disc = v * v + 2.0 * a * headroom;
    if a < 0.0 && (v <= 0.0 || disc < 0.0) {
        return TTE_CAP_S; // growth stops before the limit
    }
    // a > 0: disc > v², one positive root whatever the sign of v; a < 0 and v > 0 with
    // disc >= 0: sqrt(disc) < v, so the root below is the first positive one.
    let t = (-v + disc.sqrt()) / a;
    if t.is_finite() { t.clamp(0.0, TTE_CAP_S) } else { TTE_CAP_S }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Seconds until `headroom` is used up at `rate_per_s`; [`TTE_CAP_S`] when not shrinking.
fn tte(headroom: f64, rate_per_s: f64) -> f64 {
    if headroom.is_nan() || rate_per_s.is_nan() {
        return f64::NAN;
    }
    if headroom <= 0.0 {
        return 0.0;
    }
    if rate_per_s <= 0.0 { TTE_CAP_S } else { (headroom / rate_per_s).min(TTE_CAP_S) }
}

#[derive(Debug, Clone, Copy)]
enum RouteSlot {
    Unknown,
    Untracked,
    Tracked { shard: u16, index: u32, signal: u8, counter: bool },
}

#[derive(Default)]
struct Shard {
    by_name: HashMap<String, u32>,
    resources: Vec<Option<ResourceState>>,
    free: Vec<u32>,
}

/// Identity of a row of [`FeatureEngine::matrix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    pub resource: String,
    /// Time of the resource's newest sample.
    pub last_ms: i64,
}

/// Features of all live resources of one kind at one instant.
#[derive(Debug, Clone, Default)]
pub struct FeatureMatrix {
    pub rows: Vec<RowRef>,
    /// Row-major, `rows.len() * columns`.
    pub values: Vec<f32>,
    pub columns: usize,
}

impl FeatureMatrix {
    /// The features of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.columns..(i + 1) * self.columns]
    }
}

/// Counters for metrics export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub resources: usize,
    pub tracked_series: usize,
}

/// Streaming features of every resource the aggregator hears about.
pub struct FeatureEngine {
    cfg: FeatureConfig,
    routes: RwLock<Vec<RouteSlot>>,
    shards: Vec<Mutex<Shard>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shard_of(name: &str) -> usize {
    // FNV-1a over the host part: one agent's batch touches one shard.
    let host = name.split('/').next().unwrap_or(name);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl std::fmt::Debug for FeatureEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureEngine").field("cfg", &self.cfg).field("stats", &self.stats()).finish()
    }
}

impl FeatureEngine {
    pub fn new(cfg: FeatureConfig) -> Self {
        FeatureEngine { cfg, routes: RwLock::new(Vec::new()), shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }

    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    fn route_of(&self, id: SeriesId, meta: &dyn Fn(SeriesId) -> Option<SeriesMeta>) -> RouteSlot {
        let known = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(id as usize).copied();
        if let Some(slot) = known.filter(|s| !matches!(s, RouteSlot::Unknown)) {
            return slot;
        }
        let slot = match meta(id).and_then(|m| signals::route(&m.host_id, &m.key)) {
            None => RouteSlot::Untracked,
            Some(r) => {
                let shard = shard_of(&r.resource);
                let mut sh = lock(&self.shards[shard]);
                let index = match sh.by_name.get(&r.resource) {
                    Some(&i) => i,
                    None => {
                        let state = ResourceState::new(r.resource.clone(), r.kind, &self.cfg);
                        let i = match sh.free.pop() {
                            Some(i) => {
                                sh.resources[i as usize] = Some(state);
                                i
                            }
                            None => {
                                sh.resources.push(Some(state));
                                (sh.resources.len() - 1) as u32
                            }
                        };
                        sh.by_name.insert(r.resource.clone(), i);
                        i
                    }
                };
                RouteSlot::Tracked { shard: shard as u16, index, signal: r.signal as u8, counter: r.counter }
            }
        };
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.len() <= id as usize {
            routes.resize(id as usize + 1, RouteSlot::Unknown);
        }
        routes[id as usize] = slot;
        slot
    }

    /// Feeds stored points. `meta` names a series the first time it is seen.
    pub fn observe(&self, points: &[(SeriesId, i64, f64)], meta: &dyn Fn(SeriesId) -> Option<SeriesMeta>) {
        let mut held: Option<(usize, MutexGuard<'_, Shard>)> = None;
        let mut routes = Some(self.routes.read().unwrap_or_else(PoisonError::into_inner));
        for &(id, ts, v) in points {
            let known = routes.as_ref().and_then(|r| r.get(id as usize).copied());
            let slot = match known {
                Some(RouteSlot::Unknown) | None => {
                    // Resolving takes the routes and a shard lock: hold neither.
                    drop(held.take());
                    drop(routes.take());
                    let slot = self.route_of(id, meta);
                    routes = Some(self.routes.read().unwrap_or_else(PoisonError::into_inner));
                    slot
                }
                Some(slot) => slot,
            };
            let RouteSlot::Tracked { shard, index, signal, counter } = slot else {
                continue;
            };
            let shard = usize::from(shard);
            if held.as_ref().is_none_or(|(s, _)| *s != shard) {
                drop(held.take()); // release before taking another shard
                held = Some((shard, lock(&self.shards[shard])));
            }
            let Some((_, guard)) = held.as_mut() else { continue };
            if let Some(Some(r)) = guard.resources.get_mut(index as usize) {
                r.signals[usize::from(signal)].add(ts, v, counter);
                r.last_ms = r.last_ms.max(ts);
                r.first_ms = r.first_ms.min(ts);
            }
        }
    }

    /// Features at `now_ms` of every resource of `kind` with a sample in the last two
    /// minutes, in a stable order (by resource name).
    pub fn matrix(&self, kind: ResourceKind, now_ms: i64) -> FeatureMatrix {
        let columns = feature_names(kind, &self.cfg).len();
        let mut rows: Vec<(String, i64, Vec<f32>)> = Vec::new();
        for shard in &self.shards {
            let sh = lock(shard);
            for r in sh.resources.iter().flatten() {
                if r.kind != kind || now_ms - r.last_ms > STALE_MS {
                    continue;
                }
                let mut row = Vec::with_capacity(columns);
                r.features(now_ms, &mut row, &self.cfg);
                debug_assert_eq!(row.len(), columns, "feature_names and features disagree for {kind:?}");
                rows.push((r.name.clone(), r.last_ms, row));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = FeatureMatrix { rows: Vec::with_capacity(rows.len()), values: Vec::new(), columns };
        m.values.reserve(rows.len() * columns);
        for (resource, last_ms, row) in rows {
            m.rows.push(RowRef { resource, last_ms });
            m.values.extend(row);
        }
        m
    }

    /// Features of one resource at `now_ms`, if it is known.
    pub fn resource(&self, name: &str, now_ms: i64) -> Option<(ResourceKind, Vec<f32>)> {
        let sh = lock(&self.shards[shard_of(name)]);
        let r = sh.resources.get(*sh.by_name.get(name)? as usize)?.as_ref()?;
        let mut row = Vec::new();
        r.features(now_ms, &mut row, &self.cfg);
        Some((r.kind, row))
    }

    /// Forgets resources silent for an hour (their series routes are re-resolved if
    /// they come back).
    pub fn forget_idle(&self, now_ms: i64) -> usize {
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut sh = lock(shard);
            let idle: Vec<u32> = sh
                .resources
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().filter(|r| now_ms - r.last_ms > FORGET_MS).map(|_| i as u32))
                .collect();
            for i in idle {
                if let Some(r) = sh.resources[i as usize].take() {
                    sh.by_name.remove(&r.name);
                    sh.free.push(i);
                    forgotten += 1;
                }
            }
        }
        if forgotten > 0 {
            // Routes may point at reused slots: resolve every series again.
            let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
            routes.iter_mut().for_each(|r| *r = RouteSlot::Unknown);
        }
        forgotten
    }

    pub fn stats(&self) -> EngineStats {
        let resources = self.shards.iter().map(|s| lock(s).by_name.len()).sum();
        let tracked_series = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| matches!(r, RouteSlot::Tracked { .. }))
            .count();
        EngineStats { resources, tracked_series }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::{MetricKind, SeriesKey};

    fn metas() -> Vec<SeriesMeta> {
        let k = |resource: &str, metric: &str, kind| SeriesMeta {
            host_id: "h1".into(),
            key: SeriesKey {
                resource: resource.into(),
                metric: metric.into(),
                unit: String::new(),
                kind,
                labels: Default::default(),
            },
        };
        vec![
            k("cgroup/a", "container_memory_usage_bytes", MetricKind::Gauge),
            k("cgroup/a", "container_spec_memory_limit_bytes", MetricKind::Gauge),
            k("cgroup/a", "container_cpu_usage_seconds_total", MetricKind::Counter),
            k("host", "node_cpu_seconds_total", MetricKind::Counter),
            k("host", "node_memory_MemAvailable_bytes", MetricKind::Gauge),
            k("host", "node_memory_MemTotal_bytes", MetricKind::Gauge),
        ]
    }

    fn engine_with_leak() -> FeatureEngine {
        let e = FeatureEngine::new(FeatureConfig::default());
        let m = metas();
        let meta = |id: SeriesId| m.get(id as usize - 1).cloned();
        // 120 s of a leak: 1 MiB/s towards a 256 MiB limit from 100 MiB; CPU at half a core.
        for s in 0..120i64 {
            let ts = 1_000_000 + s * 1000;
            let pts = vec![
                (1, ts, 100.0 * 1048576.0 + s as f64 * 1048576.0),
                (2, ts, 256.0 * 1048576.0),
                (3, ts, s as f64 * 0.5),
                (4, ts, s as f64),
                (5, ts, 8e9 - s as f64 * 1e6),
                (6, ts, 16e9),
            ];
            e.observe(&pts, &meta);
        }
        e
    }

    fn feature(kind: ResourceKind, row: &[f32], name: &str) -> f32 {
        let names = feature_names(kind, &FeatureConfig::default());
        let i = names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no feature {name}"));
        row[i]
    }

    #[test]
    fn names_and_rows_agree_for_every_kind() {
        let cfg = FeatureConfig::default();
        for kind in ResourceKind::ALL {
            let r = ResourceState::new("x".into(), kind, &cfg);
            let mut row = Vec::new();
            r.features(0, &mut row, &cfg);
            let names = feature_names(kind, &cfg);
            assert_eq!(row.len(), names.len(), "{kind:?}");
            let unique: std::collections::HashSet<_> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{kind:?}: duplicate names");
        }
    }

    #[test]
    fn leak_gives_slope_utilisation_and_time_to_exhaustion() {
        let e = engine_with_leak();
        let now = 1_000_000 + 119_000;
        let m = e.matrix(ResourceKind::Container, now);
        assert_eq!(m.rows.len(), 1);
        assert_eq!(m.rows[0].resource, "h1/cgroup/a");
        let row = m.row(0);
        let f = |n| feature(ResourceKind::Container, row, n);
        let mib = 1048576.0f32;
        assert!((f("mem_usage_30s_slope") / mib - 1.0).abs() < 0.01, "slope {}", f("mem_usage_30s_slope"));
        assert!((f("mem_util") - 219.0 / 256.0).abs() < 1e-4);
        // 37 MiB left at 1 MiB/s.
        assert!((f("mem_tte_s_30s") - 37.0).abs() < 1.0, "tte {}", f("mem_tte_s_30s"));
        assert!((f("cpu_cores_30s_mean") - 0.5).abs() < 1e-3);
        assert!(f("cpu_util").is_nan(), "no CPU limit known");
        assert!(f("pids_last").is_nan(), "no pids series");
        let h = e.matrix(ResourceKind::Host, now);
        assert_eq!(h.rows[0].resource, "h1");
        let tte = feature(ResourceKind::Host, h.row(0), "mem_tte_s_5m");
        let avail = 8e9 - 119e6;
        assert!((tte as f64 - avail / 1e6).abs() / (avail / 1e6) < 0.01, "host tte {tte}");
    }

    #[test]
    fn stale_resources_leave_the_matrix_and_idle_ones_are_forgotten() {
        let e = engine_with_leak();
        let last = 1_000_000 + 119_000;
        assert_eq!(e.matrix(ResourceKind::Container, last + STALE_MS + 1).rows.len(), 0);
        assert_eq!(e.stats().resources, 2);
        assert_eq!(e.forget_idle(last + FORGET_MS + 1), 2);
        assert_eq!(e.stats(), EngineStats { resources: 0, tracked_series: 0 });
        assert!(e.resource("h1/cgroup/a", last).is_none());
    }

    /// 10 min of container memory `usage(t)` (bytes, t in s) under a 256 MiB limit.
    fn container_row(usage: impl Fn(f64) -> f64, at_s: i64) -> Vec<f32> {
        let e = FeatureEngine::new(FeatureConfig::default());
        let m = metas();
        let meta = |id: SeriesId| m.get(id as usize - 1).cloned();
        for s in 0..=at_s {
            let ts = 1_000_000 + s * 1000;
            e.observe(&[(1, ts, usage(s as f64)), (2, ts, 256.0 * 1048576.0)], &meta);
        }
        e.resource("h1/cgroup/a", 1_000_000 + at_s * 1000).expect("known resource").1
    }

    #[test]
    fn peak_drawdown_and_acceleration_tell_leaks_from_collections() {
        let mib = 1048576.0;
        let f = |row: &[f32], n: &str| feature(ResourceKind::Container, row, n);
        // Linear leak, 0.2 MiB/s from 50 MiB: no drawdown, no acceleration.
        let lin = container_row(|t| 50.0 * mib + 0.2 * mib * t, 400);
        assert!((f(&lin, "mem_peak_util_5m") - 130.0 / 256.0).abs() < 1e-3, "{}", f(&lin, "mem_peak_util_5m"));
        assert_eq!(f(&lin, "mem_drawdown_util_5m"), 0.0);
        assert!(f(&lin, "mem_accel_util").abs() < 1e-7, "accel {}", f(&lin, "mem_accel_util"));
        assert!((f(&lin, "mem_tte_accel_s") - f(&lin, "mem_tte_s_30s")).abs() < 5.0);
        // Accelerating leak u = 50 MiB + c t², c = 0.0008 MiB/s²: a = 2c, v = 2ct.
        let c = 0.0008 * mib;
        let acc = container_row(|t| 50.0 * mib + c * t * t, 400);
        let a = f64::from(f(&acc, "mem_accel_util")) * 256.0 * mib;
        assert!((a / (2.0 * c) - 1.0).abs() < 0.1, "accel {a} vs {}", 2.0 * c);
        // The accelerating estimate is shorter than the linear one, and close to the truth:
        // 256 MiB is reached at t = sqrt(206 MiB / c) ≈ 507 s, 107 s after t = 400.
        let (ta, tl) = (f(&acc, "mem_tte_accel_s"), f(&acc, "mem_tte_s_30s"));
        assert!(ta < tl, "accelerating {ta} linear {tl}");
        assert!((ta - 107.0).abs() < 10.0, "accelerating tte {ta}");
        // GC sawtooth: 40 -> 160 MiB over 60 s, then back: a drawdown of about 120 MiB.
        let saw = container_row(|t| 40.0 * mib + 2.0 * mib * (t % 60.0), 400);
        let dd = f(&saw, "mem_drawdown_util_5m");
        assert!((dd - 118.0 / 256.0).abs() < 0.02, "drawdown {dd}");
        // A cache filling up to its plateau (exponential approach): still rising, but
        // slowing down so that it stops before the limit. The linear rate says the limit
        // comes; under the measured deceleration it never does.
        let cache = container_row(|t| 20.0 * mib + 180.0 * mib * (1.0 - (-t / 60.0).exp()), 120);
        assert!(f(&cache, "mem_accel_util") < 0.0, "accel {}", f(&cache, "mem_accel_util"));
        assert!(f(&cache, "mem_tte_s_30s") < 600.0, "linear tte {}", f(&cache, "mem_tte_s_30s"));
        assert_eq!(f64::from(f(&cache, "mem_tte_accel_s")), TTE_CAP_S);
        // A young container's windows are not assumed full: 60 s of a linear leak reads
        // as far less acceleration than the accelerating leak (bucket resolution leaves some).
        let young = container_row(|t| 50.0 * mib + 0.2 * mib * t, 60);
        let ya = f(&young, "mem_accel_util").abs();
        assert!(ya < 0.2 * f(&acc, "mem_accel_util"), "young accel {ya}");
    }

    #[test]
    fn tte_accelerating_edge_cases() {
        assert_eq!(tte_accelerating(100.0, 10.0, 0.0), 10.0);
        assert_eq!(tte_accelerating(100.0, 10.0, f64::NAN), 10.0);
        assert_eq!(tte_accelerating(100.0, 0.0, -1.0), TTE_CAP_S);
        // Slowing down: 100 = 20 t - t²/2 at t = 20 - sqrt(200) ≈ 5.86, later than 100/20 = 5.
        let t = tte_accelerating(100.0, 20.0, -1.0);
        assert!((t - (20.0 - 200f64.sqrt())).abs() < 1e-9 && t > 5.0, "{t}");
        // Growth stops first (v²/2|a| = 50 < 100): never.
        assert_eq!(tte_accelerating(100.0, 10.0, -1.0), TTE_CAP_S);
        assert_eq!(tte_accelerating(-5.0, 1.0, 1.0), 0.0);
        assert!(tte_accelerating(f64::NAN, 1.0, 1.0).is_nan());
        // 100 = 2 t²/2 from rest: t = 10.
        assert!((tte_accelerating(100.0, 0.0, 2.0) - 10.0).abs() < 1e-9);
        // Shrinking now but accelerating upwards: t² - t - 100 = 0.
        let t = tte_accelerating(100.0, -1.0, 2.0);
        assert!((t * t - t - 100.0).abs() < 1e-6, "{t}");
        assert!(acceleration(&FeatureConfig::default().windows[..1], &[], 0).is_nan(), "one window: no acceleration");
    }

    #[test]
    fn tte_edge_cases() {
        assert_eq!(tte(100.0, 0.0), TTE_CAP_S);
        assert_eq!(tte(100.0, -5.0), TTE_CAP_S);
        assert_eq!(tte(-1.0, 5.0), 0.0);
        assert_eq!(tte(100.0, 10.0), 10.0);
        assert!(tte(f64::NAN, 1.0).is_nan());
        assert!(effective_limit(9.223372036854772e18).is_nan());
    }
}

//! `augur-bench predict`: feature updates and failure-probability inference for many
//! resources per tick, through the aggregator's own feature engine, prediction engine
//! and ONNX Runtime.
//!
//! Per simulated second every resource gets one point for each of its container series
//! (what an agent sends at 1 Hz), then the engine ticks: feature matrix, batched model
//! run, hysteresis, events. A tick's cost is both parts; `resources_per_sec` is resources
//! divided by the mean tick cost.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use augur_aggregator::config::PredictSection;
use augur_aggregator::features::{FeatureConfig, FeatureEngine};
use augur_aggregator::predict::{PredictConfig, PredictionEngine, onnx};
use augur_aggregator::storage::{SeriesId, SeriesMeta};
use augur_core::{MetricKind, SeriesKey};

use crate::procs::round;
use crate::report::Report;

/// The container series an agent sends (the predict and react benches both use them).
pub(crate) const SERIES: [(&str, MetricKind); 12] = [
    ("container_memory_usage_bytes", MetricKind::Gauge),
    ("container_memory_working_set_bytes", MetricKind::Gauge),
    ("container_spec_memory_limit_bytes", MetricKind::Gauge),
    ("container_cpu_usage_seconds_total", MetricKind::Counter),
    ("container_spec_cpu_limit_cores", MetricKind::Gauge),
    ("container_cpu_cfs_periods_total", MetricKind::Counter),
    ("container_cpu_cfs_throttled_periods_total", MetricKind::Counter),
    ("container_pids_current", MetricKind::Gauge),
    ("container_spec_pids_max", MetricKind::Gauge),
    ("container_pressure_memory_waiting_seconds_total", MetricKind::Counter),
    ("container_pressure_cpu_waiting_seconds_total", MetricKind::Counter),
    ("container_memory_failcnt", MetricKind::Counter),
];

fn value(series: usize, resource: usize, t: i64) -> f64 {
    let limit = 512.0 * 1048576.0;
    let phase = (resource % 100) as f64 / 100.0;
    match series {
        0 | 1 => limit * (0.3 + 0.2 * phase) + (t % 300) as f64 * 4096.0,
        2 => limit,
        3 => t as f64 * 0.25,
        4 => 1.0,
        5 => t as f64 * 10.0,
        6 => t as f64 * phase,
        7 => 10.0 + (t % 5) as f64,
        8 => 512.0,
        9 | 10 => t as f64 * 0.01 * phase,
        _ => 0.0,
    }
}

/// Runs `ticks` measured ticks (after `warmup` unmeasured seconds) for `resources`
/// containers with the models of `manifest`.
pub fn run(manifest: &Path, resources: usize, warmup: usize, ticks: usize) -> anyhow::Result<Report> {
    let fcfg = FeatureConfig::default();
    let features = Arc::new(FeatureEngine::new(fcfg.clone()));
    let section = PredictSection { models: manifest.to_owned(), ..PredictSection::default() };
    let handle = onnx::scorer_for(&section, &fcfg).context("loading the models")?;
    let models = handle.scorer.models();
    anyhow::ensure!(!models.is_empty(), "{} serves no failure-probability model", manifest.display());
    let engine = PredictionEngine::new(PredictConfig::default(), features.clone(), handle.scorer.clone());

    let metas: Vec<SeriesMeta> = (0..resources)
        .flat_map(|r| {
            SERIES.iter().map(move |(metric, kind)| SeriesMeta {
                host_id: format!("host-{}", r / 50),
                key: SeriesKey {
                    resource: format!("cgroup/bench/c{r}"),
                    metric: (*metric).into(),
                    unit: String::new(),
                    kind: *kind,
                    labels: Default::default(),
                },
            })
        })
        .collect();
    let meta = |id: SeriesId| metas.get(id as usize - 1).cloned();
    let start_ms: i64 = 1_700_000_000_000;
    let per_resource = SERIES.len();
    let mut observe_ms = Vec::with_capacity(ticks);
    let mut tick_ms = Vec::with_capacity(ticks);
    let mut total_ms = Vec::with_capacity(ticks);
    let mut points = Vec::with_capacity(resources * per_resource);
    for t in 0..(warmup + ticks) as i64 {
        let ts = start_ms + t * 1000;
        points.clear();
        for r in 0..resources {
            for s in 0..per_resource {
                points.push(((r * per_resource + s) as SeriesId + 1, ts, value(s, r, t)));
            }
        }
        let started = Instant::now();
        // One call per host, as ingest does per agent batch.
        for chunk in points.chunks(50 * per_resource) {
            features.observe(chunk, &meta);
        }
        let observed = started.elapsed();
        let ticked_at = Instant::now();
        engine.tick(ts);
        let ticked = ticked_at.elapsed();
        if t as usize >= warmup {
            observe_ms.push(observed.as_secs_f64() * 1000.0);
            tick_ms.push(ticked.as_secs_f64() * 1000.0);
            total_ms.push((observed + ticked).as_secs_f64() * 1000.0);
        }
    }
    let stats = engine.stats();
    anyhow::ensure!(stats.score_errors == 0, "model errors during the bench: {:?}", stats.last_error);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p99 = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[((s.len() - 1) as f64 * 0.99).round() as usize]
    };
    let per_sec = resources as f64 / (mean(&total_ms) / 1000.0);
    eprintln!(
        "predict: {resources} resources x {per_resource} series, {} models; per tick: observe {:.1} ms, \
         features+inference {:.1} ms (mean over {ticks} ticks); {} rows scored",
        models.len(),
        mean(&observe_ms),
        mean(&tick_ms),
        stats.rows_scored
    );
    Ok(Report::new("predict")
        .with("resources_per_sec", round(per_sec, 0))
        .with("tick_p99_ms", round(p99(&total_ms), 2))
        .with("tick_mean_ms", round(mean(&total_ms), 2))
        .with("observe_mean_ms", round(mean(&observe_ms), 2))
        .with("engine_tick_p99_ms", round(p99(&tick_ms), 2))
        .with("resources", resources)
        .with("models", models.len())
        .with("ticks", ticks))
}

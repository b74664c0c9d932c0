//! `augur-bench seal`: steady-state maintenance throughput of `RocksStore`.
//!
//! Simulates `series` series at 1 Hz for `minutes` of data time, written in one batch per
//! simulated second, with `maintain(now)` every `maintain_every` simulated seconds, as the
//! aggregator does. Reports how many points per wall-clock second maintenance seals and
//! what that means in series at 1 Hz: if it is below the ingest rate, open points pile up.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use augur_aggregator::storage::rocks::RocksStore;
use augur_aggregator::storage::{MaintenanceStats, SeriesId, Store, StoreOptions, WriteBatch};
use augur_core::{MetricKind, SeriesKey};

use crate::procs::{round, work_dir};
use crate::report::Report;

/// Parameters of the seal bench.
#[derive(Debug, Clone)]
pub struct SealConfig {
    pub series: usize,
    pub minutes: u64,
    /// Points per sealed block (the store's `block_points`).
    pub block_points: usize,
    pub maintain_every: Duration,
}

/// A value that looks like a slowly varying gauge (so the codec does realistic work).
fn value(series: usize, t: u64) -> f64 {
    let base = (series % 97) as f64 * 1000.0;
    base + ((t as f64 / 30.0) + series as f64).sin() * 50.0 + (t % 7) as f64
}

/// Runs the seal bench.
pub fn run(cfg: &SealConfig) -> anyhow::Result<Report> {
    let dir = work_dir("augur-bench-seal-")?;
    let opts = StoreOptions { block_points: cfg.block_points, ..StoreOptions::default() };
    let store = RocksStore::open(&dir.path().join("db"), opts).context("opening the store")?;
    let ids: Vec<SeriesId> = (0..cfg.series)
        .map(|i| {
            let key = SeriesKey {
                resource: format!("host-{}", i / 100),
                metric: format!("bench_metric_{}", i % 100),
                unit: String::new(),
                kind: MetricKind::Gauge,
                labels: Default::default(),
            };
            store.resolve_series(&format!("host-{}", i / 100), &key)
        })
        .collect::<Result<_, _>>()
        .context("resolving series")?;

    let start_ms: i64 = 1_700_000_000_000;
    let seconds = cfg.minutes * 60;
    let every = cfg.maintain_every.as_secs().max(1);
    let (mut write_s, mut maintain_s, mut worst_pass_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut total = MaintenanceStats::default();
    for t in 0..seconds {
        let ts = start_ms + t as i64 * 1000;
        let points = ids.iter().enumerate().map(|(i, &id)| (id, ts, value(i, t))).collect();
        let started = Instant::now();
        store.write(&WriteBatch { points, progress: None }).context("writing")?;
        write_s += started.elapsed().as_secs_f64();
        if (t + 1) % every == 0 {
            let started = Instant::now();
            let s = store.maintain(ts + 1000).context("maintaining")?;
            let took = started.elapsed().as_secs_f64();
            maintain_s += took;
            worst_pass_s = worst_pass_s.max(took);
            total.blocks_sealed += s.blocks_sealed;
            total.points_sealed += s.points_sealed;
            total.rollups_written += s.rollups_written;
        }
    }
    let written = cfg.series as u64 * seconds;
    let seal_rate = total.points_sealed as f64 / maintain_s.max(1e-9);
    eprintln!(
        "seal: {written} points written in {write_s:.2} s; maintenance sealed {} points in {} blocks \
         ({} rollups) in {maintain_s:.2} s, worst pass {worst_pass_s:.3} s",
        total.points_sealed, total.blocks_sealed, total.rollups_written
    );
    anyhow::ensure!(total.points_sealed > 0, "nothing was sealed: run for more minutes than one block spans");
    Ok(Report::new("seal")
        .with("seal_points_per_sec", round(seal_rate, 0))
        .with("series_at_1hz_sustained", round(seal_rate, 0))
        .with("points_sealed", total.points_sealed)
        .with("points_written", written)
        .with("maintain_s", round(maintain_s, 3))
        .with("worst_pass_s", round(worst_pass_s, 3))
        .with("series", cfg.series)
        .with("block_points", cfg.block_points))
}

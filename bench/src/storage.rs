//! `augur-bench storage`: how many bytes a sample costs on disk. Replays a recording
//! into a fresh [`RocksStore`] through the [`Store`] trait the way ingest writes
//! (series resolved first, then one atomic write per second of data across all
//! series, with agent progress), seals and compacts everything, and measures the
//! directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use augur_aggregator::storage::codec::encode_block;
use augur_aggregator::storage::rocks::RocksStore;
use augur_aggregator::storage::{AgentProgress, SeriesId, Store, StoreOptions, WriteBatch};

use crate::procs::{round, work_dir};
use crate::recording::Recording;
use crate::report::Report;

/// Bytes of the files under `dir`, grouped by kind of RocksDB file.
fn disk_breakdown(dir: &Path) -> BTreeMap<&'static str, u64> {
    fn walk(p: &Path, out: &mut BTreeMap<&'static str, u64>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                walk(&e.path(), out);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = if name.ends_with(".sst") {
                "sst"
            } else if name.ends_with(".log") {
                "wal"
            } else if name.starts_with("LOG") {
                "info_log"
            } else if name.starts_with("MANIFEST") {
                "manifest"
            } else if name.starts_with("OPTIONS") {
                "options"
            } else {
                "other"
            };
            *out.entry(kind).or_default() += m.len();
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// What the sealed blocks alone would take: each series' points encoded with the
/// store's block codec in runs of `block_points` (an estimate: the store also aligns
/// blocks to whole minutes).
fn block_payload_estimate(rec: &Recording, block_points: usize) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for s in &rec.series {
        let pts: Vec<(i64, f64)> = s.points.iter().copied().filter(|p| !p.1.is_nan()).collect();
        for chunk in pts.chunks(block_points.max(1)) {
            total += encode_block(chunk).context("encoding a block")?.len() as u64;
        }
    }
    Ok(total)
}

/// Runs the storage bench on the recording at `path`.
pub fn run(path: &Path) -> anyhow::Result<Report> {
    let rec = Recording::load(path)?;
    let samples = rec.samples();
    anyhow::ensure!(samples > 0, "{} holds no samples", path.display());
    eprintln!("storage: {} series, {samples} samples from {} (host {})", rec.series.len(), path.display(), rec.host_id);
    let opts = StoreOptions::default();
    let block_points = opts.block_points;
    let dir = work_dir("augur-bench-storage-")?;
    let db_dir = dir.path().join("db");
    let store = RocksStore::open(&db_dir, opts).context("opening the store")?;

    // Points grouped by second across series, like the agent's once-per-second batches.
    let mut by_second: BTreeMap<i64, Vec<(SeriesId, i64, f64)>> = BTreeMap::new();
    for s in &rec.series {
        let id = store.resolve_series(&rec.host_id, &s.key).with_context(|| format!("resolving {}", s.key))?;
        for &(ts, v) in &s.points {
            by_second.entry(ts.div_euclid(1000)).or_default().push((id, ts, v));
        }
    }
    let batches = by_second.len();
    let started = Instant::now();
    for (seq, (_, points)) in by_second.into_iter().enumerate() {
        let batch = WriteBatch {
            points,
            progress: Some((rec.host_id.clone(), AgentProgress { incarnation: 1, acked_sequence: seq as u64 + 1 })),
        };
        store.write(&batch).context("writing a batch")?;
    }
    let write_s = started.elapsed().as_secs_f64();
    let before_seal = store.disk_bytes();
    let started = Instant::now();
    let stats = store.seal_all_and_compact().context("sealing and compacting")?;
    let seal_s = started.elapsed().as_secs_f64();
    let disk_bytes = store.disk_bytes();
    let breakdown = disk_breakdown(&db_dir);
    let sst_bytes = breakdown.get("sst").copied().unwrap_or(0);
    let blocks_est = block_payload_estimate(&rec, block_points)?;
    eprintln!(
        "storage: {batches} batches written in {write_s:.2} s ({:.0} samples/s); {before_seal} \
         bytes before sealing; sealed {} blocks / {} points in {seal_s:.2} s",
        samples as f64 / write_s.max(1e-9),
        stats.blocks_sealed,
        stats.points_sealed
    );
    eprintln!("storage: on disk after compaction {disk_bytes} bytes: {breakdown:?}");
    eprintln!(
        "storage: sealed block payload (codec, estimate) {blocks_est} bytes = {:.3} bytes/sample",
        blocks_est as f64 / samples as f64
    );
    drop(store);
    Ok(Report::new("storage")
        .with("bytes_per_sample", round(disk_bytes as f64 / samples as f64, 3))
        .with("samples", samples)
        .with("series", rec.series.len())
        .with("disk_bytes", disk_bytes)
        .with("sst_bytes", sst_bytes)
        .with("sst_bytes_per_sample", round(sst_bytes as f64 / samples as f64, 3))
        .with("block_payload_bytes_est", blocks_est)
        .with("block_bytes_per_sample_est", round(blocks_est as f64 / samples as f64, 3)))
}

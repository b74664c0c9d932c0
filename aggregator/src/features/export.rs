//! `augur-aggregator features export`: the feature matrix of chosen resources over a time
//! range, computed by replaying stored (or recorded) raw series through the very
//! [`FeatureEngine`] the aggregator runs live.
//!
//! Points are fed in time order; at every step the engine's matrix for the chosen kind
//! is written as CSV rows `ts_ms,resource,<feature names…>` (NaN as `nan`). Training
//! reads this file; it never computes features itself.

use std::io::Write;

use crate::features::{FeatureConfig, FeatureEngine, ResourceKind, feature_names};
use crate::recording::Recording;
use crate::storage::{SeriesId, SeriesMeta, Store, StoreError};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub kind: ResourceKind,
    /// Keep resources whose name starts with one of these (all when empty).
    pub resource_prefixes: Vec<String>,
    /// Inclusive start and exclusive end of the rows' timestamps (None: the data's extent).
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub step_ms: i64,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub rows: u64,
    pub points_replayed: u64,
    pub columns: usize,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
    #[error("step must be at least 1 ms")]
    BadStep,
}

/// Raw series to replay: each with its identity and ascending points.
pub type SeriesData = Vec<(SeriesMeta, Vec<(i64, f64)>)>;

/// Every series of a recording.
pub fn from_recording(rec: Recording) -> SeriesData {
    rec.series.into_iter().map(|s| (SeriesMeta { host_id: rec.host_id.clone(), key: s.key }, s.points)).collect()
}

/// Every series stored in `store` with points in `[from, to)`, read raw.
pub fn from_store(store: &dyn Store, from_ms: i64, to_ms: i64) -> Result<SeriesData, StoreError> {
    let mut out = Vec::new();
    for (id, meta) in store.list_series(None) {
        let points = store.read_range(id, from_ms, to_ms)?;
        if !points.is_empty() {
            out.push((meta, points));
        }
    }
    Ok(out)
}

/// Replays `data` through a fresh engine and writes the CSV to `out`.
pub fn export(
    data: &SeriesData,
    cfg: &FeatureConfig,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<ExportStats, ExportError> {
    if opts.step_ms < 1 {
        return Err(ExportError::BadStep);
    }
    let engine = FeatureEngine::new(cfg.clone());
    let names = feature_names(opts.kind, cfg);
    let mut stats = ExportStats { columns: names.len(), ..ExportStats::default() };
    write!(out, "ts_ms,resource")?;
    for n in &names {
        write!(out, ",{n}")?;
    }
    writeln!(out)?;

    // All points in time order, tagged with a local series id (index + 1).
    let mut points: Vec<(i64, SeriesId, f64)> = Vec::with_capacity(data.iter().map(|(_, p)| p.len()).sum());
    for (i, (_, pts)) in data.iter().enumerate() {
        points.extend(pts.iter().map(|&(t, v)| (t, i as SeriesId + 1, v)));
    }
    points.sort_by_key(|p| (p.0, p.1));
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Ok(stats);
    };
    let meta = |id: SeriesId| data.get(id as usize - 1).map(|(m, _)| m.clone());
    let start = opts.from_ms.unwrap_or(first.0).div_euclid(opts.step_ms) * opts.step_ms;
    let end = opts.to_ms.unwrap_or(last.0 + 1);
    let keep =
        |name: &str| opts.resource_prefixes.is_empty() || opts.resource_prefixes.iter().any(|p| name.starts_with(p));

    let mut next = 0;
    let mut batch = Vec::new();
    let mut t = start;
    while t < end {
        batch.clear();
        while next < points.len() && points[next].0 <= t {
            let (ts, id, v) = points[next];
            batch.push((id, ts, v));
            next += 1;
        }
        engine.observe(&batch, &meta);
        stats.points_replayed += batch.len() as u64;
        let m = engine.matrix(opts.kind, t);
        for (i, r) in m.rows.iter().enumerate() {
            if !keep(&r.resource) {
                continue;
            }
            write!(out, "{t},{}", csv_field(&r.resource))?;
            for v in m.row(i) {
                if v.is_nan() { write!(out, ",nan")? } else { write!(out, ",{v}")? }
            }
            writeln!(out)?;
            stats.rows += 1;
        }
        t += opts.step_ms;
    }
    Ok(stats)
}

/// Quotes a CSV field when it needs it.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;
    use crate::storage::{StoreOptions, WriteBatch};
    use augur_core::{MetricKind, SeriesKey};

    fn key(resource: &str, metric: &str) -> SeriesKey {
        SeriesKey {
            resource: resource.into(),
            metric: metric.into(),
            unit: "bytes".into(),
            kind: MetricKind::Gauge,
            labels: Default::default(),
        }
    }

    fn opts() -> ExportOptions {
        ExportOptions {
            kind: ResourceKind::Container,
            resource_prefixes: vec![],
            from_ms: None,
            to_ms: None,
            step_ms: 1000,
        }
    }

    #[test]
    fn export_replays_the_live_engine_row_for_row() {
        let store = MemoryStore::new(StoreOptions::default());
        let usage = store.resolve_series("h", &key("cgroup/a", "container_memory_usage_bytes")).unwrap();
        let limit = store.resolve_series("h", &key("cgroup/a", "container_spec_memory_limit_bytes")).unwrap();
        let other = store.resolve_series("h", &key("cgroup/b", "container_memory_usage_bytes")).unwrap();
        let live = FeatureEngine::new(FeatureConfig::default());
        let t0 = 1_700_000_000_000i64;
        for s in 0..90i64 {
            let ts = t0 + s * 1000;
            let points = vec![(usage, ts, 1e6 + s as f64 * 1e4), (limit, ts, 2e6), (other, ts, 5e5)];
            store.write(&WriteBatch { points: points.clone(), progress: None }).unwrap();
            live.observe(&points, &|id| store.series_meta(id));
        }
        let data = from_store(&store, t0, t0 + 90_000).unwrap();
        let mut csv = Vec::new();
        let o = ExportOptions { resource_prefixes: vec!["h/cgroup/a".into()], ..opts() };
        let stats = export(&data, &FeatureConfig::default(), &o, &mut csv).unwrap();
        assert_eq!(stats.rows, 90, "one row per second for the one kept resource");
        assert_eq!(stats.points_replayed, 270);
        let text = String::from_utf8(csv).unwrap();
        let last_line = text.lines().last().unwrap();
        let fields: Vec<&str> = last_line.split(',').collect();
        assert_eq!(fields[0], (t0 + 89_000).to_string());
        assert_eq!(fields[1], "h/cgroup/a");
        // The exported row equals what the live engine computes at the same instant.
        let (_, row) = live.resource("h/cgroup/a", t0 + 89_000).unwrap();
        let exported: Vec<f32> = fields[2..].iter().map(|f| f.parse::<f32>().unwrap()).collect();
        assert_eq!(exported.len(), row.len());
        for (i, (a, b)) in exported.iter().zip(&row).enumerate() {
            assert!((a.is_nan() && b.is_nan()) || a == b, "column {i}: {a} vs {b}");
        }
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        assert_eq!(header.len(), fields.len());
        assert_eq!(&header[2..], feature_names(ResourceKind::Container, &FeatureConfig::default()).as_slice());
    }

    #[test]
    fn empty_data_writes_only_the_header_and_bad_step_is_refused() {
        let mut csv = Vec::new();
        let s = export(&Vec::new(), &FeatureConfig::default(), &opts(), &mut csv).unwrap();
        assert_eq!(s.rows, 0);
        assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 1);
        let bad = ExportOptions { step_ms: 0, ..opts() };
        assert!(matches!(
            export(&Vec::new(), &FeatureConfig::default(), &bad, &mut Vec::new()),
            Err(ExportError::BadStep)
        ));
    }
}

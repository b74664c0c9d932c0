//! [`MemoryStore`]: the in-memory [`Store`], with the same semantics as
//! [`RocksStore`](super::rocks::RocksStore), for fast logic tests.
//!
//! It is also the reference for those semantics: the pure rules both stores share
//! (which retention rule applies, how rollups are folded from points, how open and
//! sealed data combine) live here as `pub(crate)` functions and are used by both.
//!
//! Semantics worth knowing (both stores):
//! - NaN points are dropped on write (they cannot be aggregated and are never stored).
//! - Maintenance seals a series when it has `block_points` open points or its oldest
//!   open point is older than `max_open_age`. It seals the open points before the minute
//!   of the newest open point (that minute is still filling), or all of them when the
//!   newest is older than `max_open_age` too. `seal_all_and_compact` seals everything.
//! - The rollup of a minute aggregates the sealed points in it; when late data arrives
//!   for a minute whose raw points already expired, it is merged into the old rollup.
//! - Raw retention keeps at least every point newer than `now - raw`; older points may
//!   outlive it until their whole block expires (RocksStore deletes whole blocks).
//!
//! [`MaintenanceStats`] differ in detail: this store has no real blocks, so it counts
//! one block per sealed series and one expired block per series that lost raw points.

use super::{
    AgentProgress, HostRecord, MaintenanceStats, RetentionRule, Rollup, SeriesId, SeriesMeta, Store, StoreError,
    StoreOptions, WriteBatch,
};
use augur_core::SeriesKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Milliseconds in a rollup bucket.
pub(crate) const MINUTE_MS: i64 = 60_000;

/// Start of the minute holding `ts` (saturating at the ends of the `i64` range).
pub(crate) fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS)
}

/// The first minute start `>= ts` (saturating).
pub(crate) fn minute_at_or_after(ts: i64) -> i64 {
    let q = ts.div_euclid(MINUTE_MS);
    let q = if ts.rem_euclid(MINUTE_MS) == 0 { q } else { q + 1 };
    q.saturating_mul(MINUTE_MS)
}

/// `now - d`, saturating.
pub(crate) fn cutoff(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether `rule` applies to a series of a host with `host_labels`. A rule with label
/// matchers applies when all of them are among the host's labels; a rule with a resource
/// prefix applies when the series resource starts with it (either suffices); a rule with
/// neither applies to every series.
pub(crate) fn rule_matches(
    rule: &RetentionRule,
    host_labels: Option<&BTreeMap<String, String>>,
    key: &SeriesKey,
) -> bool {
    let labels_ok = !rule.match_host_labels.is_empty()
        && host_labels.is_some_and(|hl| rule.match_host_labels.iter().all(|(k, v)| hl.get(k) == Some(v)));
    let prefix_ok = rule.resource_prefix.as_deref().is_some_and(|p| key.resource.starts_with(p));
    labels_ok || prefix_ok || (rule.match_host_labels.is_empty() && rule.resource_prefix.is_none())
}

/// `(raw, rollup)` retention of a series: the first matching rule, else the defaults.
pub(crate) fn retention_for(
    opts: &StoreOptions,
    host_labels: Option<&BTreeMap<String, String>>,
    key: &SeriesKey,
) -> (Duration, Duration) {
    opts.retention_rules
        .iter()
        .find(|r| rule_matches(r, host_labels, key))
        .map_or((opts.raw_retention, opts.rollup_retention), |r| (r.raw, r.rollup))
}

/// Folds ascending points into one-minute rollups (ascending).
pub(crate) fn rollups_of(points: &[(i64, f64)]) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for &(ts, v) in points {
        let m = minute_of(ts);
        match out.last_mut() {
            Some(r) if r.start_ms == m => r.merge(&Rollup::of_point(m, ts, v)),
            _ => out.push(Rollup::of_point(m, ts, v)),
        }
    }
    out
}

/// Merges two ascending point lists, one point per timestamp; `newer` wins ties.
pub(crate) fn merge_points(older: &[(i64, f64)], newer: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        let (a, b) = (older[i], newer[j]);
        if a.0 < b.0 {
            out.push(a);
            i += 1;
        } else {
            out.push(b);
            j += 1;
            if a.0 == b.0 {
                i += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

/// The rollup of one minute given its sealed points, its open points (both ascending,
/// open wins ties) and the stored rollup. With sealed points the stored rollup is
/// derived from them and is recomputed; without, the open points fold into it.
pub(crate) fn minute_rollup(sealed: &[(i64, f64)], open: &[(i64, f64)], stored: Option<&Rollup>) -> Option<Rollup> {
    if !sealed.is_empty() {
        return rollups_of(&merge_points(sealed, open)).into_iter().next();
    }
    let fresh = rollups_of(open).into_iter().next();
    match (stored, fresh) {
        (Some(s), Some(f)) => {
            let mut s = *s;
            s.merge(&f);
            Some(s)
        }
        (Some(s), None) => Some(*s),
        (None, f) => f,
    }
}

/// Which open points maintenance seals now: `None` when the series is not due, else the
/// exclusive timestamp bound of the points to seal (`None` inside meaning all), given
/// the series' open point count and its oldest and newest open timestamps.
pub(crate) fn seal_bound(
    opts: &StoreOptions,
    open_count: usize,
    oldest: i64,
    newest: i64,
    now_ms: i64,
) -> Option<Option<i64>> {
    let stale = cutoff(now_ms, opts.max_open_age);
    if open_count == 0 || (open_count < opts.block_points && oldest >= stale) {
        return None;
    }
    if newest < stale { Some(None) } else { Some(Some(minute_of(newest))) }
}

#[derive(Default)]
struct SeriesData {
    open: BTreeMap<i64, f64>,
    sealed: BTreeMap<i64, f64>,
    rollups: BTreeMap<i64, Rollup>,
}

#[derive(Default)]
struct Inner {
    metas: Vec<SeriesMeta>,
    by_key: HashMap<String, HashMap<SeriesKey, SeriesId>>,
    series: Vec<SeriesData>,
    progress: HashMap<String, AgentProgress>,
    hosts: BTreeMap<String, HostRecord>,
    audit: BTreeMap<u64, Vec<u8>>,
    model: BTreeMap<String, Vec<u8>>,
}

impl Inner {
    fn data(&self, id: SeriesId) -> Result<&SeriesData, StoreError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.series.get(i))
            .ok_or(StoreError::UnknownSeries(id))
    }

    /// Seals the due open points of series index `i`.
    fn seal(&mut self, i: usize, bound: Option<i64>, stats: &mut MaintenanceStats) {
        let s = &mut self.series[i];
        let to_seal: Vec<(i64, f64)> = match bound {
            None => s.open.iter().map(|(&t, &v)| (t, v)).collect(),
            Some(b) => s.open.range(..b).map(|(&t, &v)| (t, v)).collect(),
        };
        if to_seal.is_empty() {
            return;
        }
        let touched: Vec<Rollup> = rollups_of(&to_seal);
        let had_sealed: Vec<bool> = touched
            .iter()
            .map(|r| s.sealed.range(r.start_ms..r.start_ms.saturating_add(MINUTE_MS)).next().is_some())
            .collect();
        for &(t, v) in &to_seal {
            s.open.remove(&t);
            s.sealed.insert(t, v);
        }
        for (fresh, had) in touched.iter().zip(had_sealed) {
            let m = fresh.start_ms;
            let r = if had {
                let pts: Vec<(i64, f64)> =
                    s.sealed.range(m..m.saturating_add(MINUTE_MS)).map(|(&t, &v)| (t, v)).collect();
                rollups_of(&pts)[0]
            } else {
                match s.rollups.get(&m) {
                    Some(old) => {
                        let mut old = *old;
                        old.merge(fresh);
                        old
                    }
                    None => *fresh,
                }
            };
            s.rollups.insert(m, r);
            stats.rollups_written += 1;
        }
        stats.blocks_sealed += 1;
        stats.points_sealed += to_seal.len() as u64;
    }
}

/// In-memory [`Store`] (nothing survives a drop).
pub struct MemoryStore {
    opts: StoreOptions,
    inner: RwLock<Inner>,
}

impl MemoryStore {
    /// An empty store with these options.
    pub fn new(opts: StoreOptions) -> Self {
        MemoryStore { opts, inner: RwLock::new(Inner::default()) }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn seal_and_expire(&self, now_ms: Option<i64>) -> MaintenanceStats {
        let mut inner = self.write_lock();
        let mut stats = MaintenanceStats::default();
        for i in 0..inner.series.len() {
            let s = &inner.series[i];
            let (Some((&oldest, _)), Some((&newest, _))) = (s.open.first_key_value(), s.open.last_key_value()) else {
                continue;
            };
            let bound = match now_ms {
                None => Some(None),
                Some(now) => seal_bound(&self.opts, s.open.len(), oldest, newest, now),
            };
            if let Some(bound) = bound {
                inner.seal(i, bound, &mut stats);
            }
        }
        let Some(now) = now_ms else { return stats };
        let inner = &mut *inner;
        for (i, s) in inner.series.iter_mut().enumerate() {
            let meta = &inner.metas[i];
            let labels = inner.hosts.get(&meta.host_id).map(|h| &h.labels);
            let (raw, rollup) = retention_for(&self.opts, labels, &meta.key);
            let raw_cut = cutoff(now, raw);
            let before = s.sealed.len();
            s.sealed = s.sealed.split_off(&raw_cut);
            if before > s.sealed.len() {
                stats.blocks_expired += 1;
            }
            let roll_cut = cutoff(now, rollup);
            let before = s.rollups.len();
            s.rollups = s.rollups.split_off(&roll_cut);
            stats.rollups_expired += (before - s.rollups.len()) as u64;
        }
        stats
    }
}

impl Store for MemoryStore {
    fn resolve_series(&self, host: &str, key: &SeriesKey) -> Result<SeriesId, StoreError> {
        if let Some(id) = self.read().by_key.get(host).and_then(|m| m.get(key)) {
            return Ok(*id);
        }
        let mut inner = self.write_lock();
        if let Some(id) = inner.by_key.get(host).and_then(|m| m.get(key)) {
            return Ok(*id);
        }
        let id = inner.metas.len() as SeriesId + 1;
        inner.metas.push(SeriesMeta { host_id: host.to_owned(), key: key.clone() });
        inner.series.push(SeriesData::default());
        inner.by_key.entry(host.to_owned()).or_default().insert(key.clone(), id);
        Ok(id)
    }

    fn lookup_series(&self, host: &str, key: &SeriesKey) -> Option<SeriesId> {
        self.read().by_key.get(host).and_then(|m| m.get(key)).copied()
    }

    fn series_count(&self, host: &str) -> usize {
        self.read().by_key.get(host).map_or(0, |m| m.len())
    }

    fn series_meta(&self, id: SeriesId) -> Option<SeriesMeta> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.read().metas.get(i).cloned()
    }

    fn list_series(&self, host: Option<&str>) -> Vec<(SeriesId, SeriesMeta)> {
        self.read()
            .metas
            .iter()
            .enumerate()
            .filter(|(_, m)| host.is_none_or(|h| m.host_id == h))
            .map(|(i, m)| (i as SeriesId + 1, m.clone()))
            .collect()
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut inner = self.write_lock();
        for &(id, _, _) in &batch.points {
            inner.data(id)?;
        }
        for &(id, ts, v) in &batch.points {
            if !v.is_nan() {
                inner.series[id as usize - 1].open.insert(ts, v);
            }
        }
        if let Some((host, p)) = &batch.progress {
            inner.progress.insert(host.clone(), *p);
        }
        Ok(())
    }

    fn agent_progress(&self, host: &str) -> Result<Option<AgentProgress>, StoreError> {
        Ok(self.read().progress.get(host).copied())
    }

    fn read_range(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        let inner = self.read();
        let s = inner.data(id)?;
        if start_ms >= end_ms {
            return Ok(Vec::new());
        }
        let sealed: Vec<(i64, f64)> = s.sealed.range(start_ms..end_ms).map(|(&t, &v)| (t, v)).collect();
        let open: Vec<(i64, f64)> = s.open.range(start_ms..end_ms).map(|(&t, &v)| (t, v)).collect();
        Ok(merge_points(&sealed, &open))
    }

    fn read_rollups(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Rollup>, StoreError> {
        let inner = self.read();
        let s = inner.data(id)?;
        let (lo, hi) = (minute_at_or_after(start_ms), minute_at_or_after(end_ms));
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut out: BTreeMap<i64, Rollup> = s.rollups.range(lo..hi).map(|(&m, r)| (m, *r)).collect();
        let open: Vec<(i64, f64)> = s.open.range(lo..hi).map(|(&t, &v)| (t, v)).collect();
        for minute in rollups_of(&open) {
            let m = minute.start_ms;
            let end = m.saturating_add(MINUTE_MS);
            let sealed: Vec<(i64, f64)> = s.sealed.range(m..end).map(|(&t, &v)| (t, v)).collect();
            let open_m: Vec<(i64, f64)> = s.open.range(m..end).map(|(&t, &v)| (t, v)).collect();
            if let Some(r) = minute_rollup(&sealed, &open_m, s.rollups.get(&m)) {
                out.insert(m, r);
            }
        }
        Ok(out.into_values().collect())
    }

    fn latest(&self, id: SeriesId) -> Result<Option<(i64, f64)>, StoreError> {
        let inner = self.read();
        let s = inner.data(id)?;
        let sealed = s.sealed.last_key_value().map(|(&t, &v)| (t, v));
        let open = s.open.last_key_value().map(|(&t, &v)| (t, v));
        Ok(match (sealed, open) {
            (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
            (a, b) => b.or(a),
        })
    }

    fn put_host(&self, rec: &HostRecord) -> Result<(), StoreError> {
        self.write_lock().hosts.insert(rec.host_id.clone(), rec.clone());
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        Ok(self.read().hosts.values().cloned().collect())
    }

    fn maintain(&self, now_ms: i64) -> Result<MaintenanceStats, StoreError> {
        Ok(self.seal_and_expire(Some(now_ms)))
    }

    fn seal_all_and_compact(&self) -> Result<MaintenanceStats, StoreError> {
        Ok(self.seal_and_expire(None))
    }

    fn disk_bytes(&self) -> u64 {
        0
    }

    fn audit_append(&self, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        match self.write_lock().audit.entry(seq) {
            std::collections::btree_map::Entry::Occupied(_) => Err(StoreError::AuditSeqTaken(seq)),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(record.to_vec());
                Ok(())
            }
        }
    }

    fn audit_scan(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.read().audit.range(from_seq..).take(limit).map(|(k, v)| (*k, v.clone())).collect())
    }

    fn audit_scan_back(&self, before_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.read().audit.range(..before_seq).rev().take(limit).map(|(k, v)| (*k, v.clone())).collect())
    }

    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.read().audit.last_key_value().map(|(k, v)| (*k, v.clone())))
    }

    fn model_state_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        super::layout::check_model_key(key)?;
        self.write_lock().model.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn model_state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().model.get(key).cloned())
    }

    fn model_state_delete(&self, key: &str) -> Result<(), StoreError> {
        self.write_lock().model.remove(key);
        Ok(())
    }

    fn model_state_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let inner = self.read();
        Ok(inner
            .model
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Replaces (`Some`) or removes (`None`) a stored audit record, bypassing the
    /// append-only rule: tests of tamper detection.
    pub(crate) fn tamper_audit_for_test(&self, seq: u64, record: Option<Vec<u8>>) {
        let mut inner = self.write_lock();
        match record {
            Some(r) => inner.audit.insert(seq, r),
            None => inner.audit.remove(&seq),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_store(opts: StoreOptions) -> Box<dyn Store> {
        Box::new(MemoryStore::new(opts))
    }

    crate::storage::conformance::conformance_tests!(make_store);

    #[test]
    fn helpers_behave() {
        assert_eq!(minute_of(-1), -60_000);
        assert_eq!(minute_at_or_after(1), 60_000);
        assert_eq!(minute_at_or_after(60_000), 60_000);
        assert_eq!(minute_at_or_after(i64::MAX), i64::MAX);
        assert!(minute_at_or_after(i64::MIN) <= i64::MIN + MINUTE_MS);
        assert_eq!(merge_points(&[(1, 1.0), (2, 2.0)], &[(2, 3.0), (4, 4.0)]), vec![(1, 1.0), (2, 3.0), (4, 4.0)]);
    }
}

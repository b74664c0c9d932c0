//! [`RocksStore`]: the [`Store`] on RocksDB. The on-disk layout is in [`super::layout`],
//! the block encoding in [`super::codec`]; the semantics shared with the in-memory store
//! are in [`super::memory`].
//!
//! In memory it keeps the series registry (both directions), the labels of every host
//! (for retention rules) and small per-series stats (open point count, oldest/newest open
//! timestamp, latest point), all rebuilt at open from `meta` and a scan of `open`.
//!
//! Concurrency: `write` runs concurrently with everything. Maintenance is serialised by a
//! mutex; it plans each seal (scan, encode, rollups) without blocking writers, then
//! commits under a short exclusive "seal gate" that writers take shared. Every write bumps
//! a per-series generation; a plan whose series was written to meanwhile is re-planned
//! under the gate, so a point written during maintenance is never lost. Reads use a
//! RocksDB snapshot, so they never see a seal half-applied.
//!
//! Retention deletes whole blocks (a block goes when its newest point is older than the
//! raw retention) and single rollups. It checks every series on every `maintain`.

use super::codec::{decode_block, decode_header, encode_block};
use super::layout::{
    self, CF_AUDIT, CF_BLOCKS, CF_META, CF_MODEL, CF_OPEN, CF_ROLLUPS, COLUMN_FAMILIES, HOST_PREFIX, SERIES_PREFIX,
    engine, point_key, point_key_after, series_end, series_start,
};
use super::memory::{
    MINUTE_MS, cutoff, merge_points, minute_at_or_after, minute_of, minute_rollup, retention_for, rollups_of,
    seal_bound,
};
use super::{
    AgentProgress, HostRecord, MaintenanceStats, Rollup, SeriesId, SeriesMeta, Store, StoreError, StoreOptions,
    WriteBatch,
};
use augur_core::SeriesKey;
use rocksdb::{BottommostLevelCompaction, CompactOptions, DB, ReadOptions, SnapshotWithThreadMode, WriteOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

/// Series planned per maintenance commit (bounds the memory of encoded blocks in flight).
const SEAL_GROUP: usize = 256;
/// Retention deletes per write batch.
const EXPIRE_BATCH: usize = 10_000;

/// In-memory stats of one series.
#[derive(Debug, Clone, Copy)]
struct SeriesStat {
    /// Points written since the last seal (an over-estimate when timestamps repeat).
    open_count: usize,
    oldest_open: i64,
    newest_open: i64,
    /// Newest point known; complete once sealed blocks were consulted too.
    latest: Option<(i64, f64)>,
    latest_complete: bool,
    /// Bumped by every write to the series.
    generation: u64,
}

impl SeriesStat {
    fn empty(latest_complete: bool) -> Self {
        SeriesStat {
            open_count: 0,
            oldest_open: i64::MAX,
            newest_open: i64::MIN,
            latest: None,
            latest_complete,
            generation: 0,
        }
    }

    fn record(&mut self, ts: i64, v: f64) {
        self.open_count += 1;
        self.oldest_open = self.oldest_open.min(ts);
        self.newest_open = self.newest_open.max(ts);
        match self.latest {
            Some((t, _)) if t > ts => {}
            _ => self.latest = Some((ts, v)),
        }
        self.generation = self.generation.wrapping_add(1);
    }
}

#[derive(Default)]
struct Registry {
    /// Index `id - 1`.
    metas: Vec<SeriesMeta>,
    by_key: HashMap<String, HashMap<SeriesKey, SeriesId>>,
}

/// What sealing one series will write.
#[derive(Debug)]
struct SealPlan {
    id: SeriesId,
    /// New or rewritten blocks: (first timestamp, encoded block).
    put_blocks: Vec<(i64, Vec<u8>)>,
    /// Keys (first timestamps) of replaced blocks whose first timestamp changed.
    delete_blocks: Vec<i64>,
    rollups: Vec<Rollup>,
    /// First and last timestamp of the sealed open points.
    sealed_range: Option<(i64, i64)>,
    points_sealed: u64,
    /// Open points left: count, oldest, newest.
    remaining: (usize, i64, i64),
}

/// The RocksDB-backed [`Store`].
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    opts: StoreOptions,
    registry: RwLock<Registry>,
    /// Ids below this are assigned.
    next_id: AtomicU64,
    /// Index = series id (slot 0 unused).
    stats: Mutex<Vec<SeriesStat>>,
    seal_gate: RwLock<()>,
    maintain_lock: Mutex<()>,
    /// Makes an audit append's existence check and put one step.
    audit_lock: Mutex<()>,
    host_labels: RwLock<HashMap<String, BTreeMap<String, String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bounded(lower: &[u8], upper: &[u8]) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(lower.to_vec());
    ro.set_iterate_upper_bound(upper.to_vec());
    ro
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1; // prefixes end in '/', never 0xff
    }
    end
}

impl RocksStore {
    /// Opens (or creates) the store in `path`, validates the format version and rebuilds
    /// the in-memory registry and per-series stats.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        let db = layout::open(path)?;
        let meta = layout::cf(&db, CF_META)?;

        let mut reg = Registry::default();
        {
            let mut it = db.raw_iterator_cf_opt(meta, bounded(SERIES_PREFIX, &prefix_end(SERIES_PREFIX)));
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let id_bytes: [u8; 8] = k[SERIES_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt { what: "series registry", reason: "bad key".to_owned() })?;
                let id = u64::from_be_bytes(id_bytes);
                if id != reg.metas.len() as u64 + 1 {
                    return Err(StoreError::Corrupt {
                        what: "series registry",
                        reason: format!("id {id} after {} ids", reg.metas.len()),
                    });
                }
                let m = layout::decode_series_meta(v)?;
                reg.by_key.entry(m.host_id.clone()).or_default().insert(m.key.clone(), id);
                reg.metas.push(m);
                it.next();
            }
            it.status().map_err(engine)?;
        }

        let mut host_labels = HashMap::new();
        {
            let mut it = db.raw_iterator_cf_opt(meta, bounded(HOST_PREFIX, &prefix_end(HOST_PREFIX)));
            it.seek_to_first();
            while let Some(v) = it.value() {
                let h = layout::decode_host(v)?;
                host_labels.insert(h.host_id, h.labels);
                it.next();
            }
            it.status().map_err(engine)?;
        }

        let mut stats = vec![SeriesStat::empty(false); reg.metas.len() + 1];
        {
            let mut it = db.raw_iterator_cf(layout::cf(&db, CF_OPEN)?);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let (id, ts) = layout::decode_point_key("open point", k)?;
                let s = stats.get_mut(id as usize).filter(|_| id != 0).ok_or_else(|| StoreError::Corrupt {
                    what: "open point",
                    reason: format!("unknown series {id}"),
                })?;
                s.record(ts, layout::decode_point_value(v)?);
                it.next();
            }
            it.status().map_err(engine)?;
        }

        let next_id = reg.metas.len() as u64 + 1;
        tracing::info!(
            path = %path.display(),
            series = reg.metas.len(),
            open_points = stats.iter().map(|s| s.open_count).sum::<usize>(),
            hosts = host_labels.len(),
            "storage opened"
        );
        Ok(RocksStore {
            db,
            path: path.to_owned(),
            opts,
            registry: RwLock::new(reg),
            next_id: AtomicU64::new(next_id),
            stats: Mutex::new(stats),
            seal_gate: RwLock::new(()),
            maintain_lock: Mutex::new(()),
            audit_lock: Mutex::new(()),
            host_labels: RwLock::new(host_labels),
        })
    }

    fn write_options(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.opts.sync_writes);
        wo
    }

    fn check_id(&self, id: SeriesId) -> Result<(), StoreError> {
        if id == 0 || id >= self.next_id.load(Ordering::Acquire) { Err(StoreError::UnknownSeries(id)) } else { Ok(()) }
    }

    /// Open points of a series with `start <= t < end` (`end == None`: no upper bound).
    fn open_points(
        &self,
        snap: &Snapshot<'_>,
        id: SeriesId,
        start: i64,
        end: Option<i64>,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let lower = point_key(id, start);
        let ro = match end {
            Some(end) => bounded(&lower, &point_key(id, end)),
            None => bounded(&lower, &series_end(id)),
        };
        let mut it = snap.raw_iterator_cf_opt(layout::cf(&self.db, CF_OPEN)?, ro);
        it.seek(lower);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, ts) = layout::decode_point_key("open point", k)?;
            out.push((ts, layout::decode_point_value(v)?));
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    /// Sealed points of a series with `start <= t < end`, ascending.
    fn sealed_points(
        &self,
        snap: &Snapshot<'_>,
        id: SeriesId,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let ro = bounded(&series_start(id), &point_key(id, end));
        let mut it = snap.raw_iterator_cf_opt(layout::cf(&self.db, CF_BLOCKS)?, ro);
        it.seek_for_prev(point_key(id, start));
        if !it.valid() {
            it.seek_to_first();
        }
        while let Some(v) = it.value() {
            if decode_header(v)?.max_ts >= start {
                let (_, pts) = decode_block(v)?;
                out.extend(pts.into_iter().filter(|p| p.0 >= start && p.0 < end));
            }
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    /// Stored rollups of a series with `lo <= start < hi`.
    fn stored_rollups(
        &self,
        snap: &Snapshot<'_>,
        id: SeriesId,
        lo: i64,
        hi: i64,
    ) -> Result<BTreeMap<i64, Rollup>, StoreError> {
        let mut out = BTreeMap::new();
        if lo >= hi {
            return Ok(out);
        }
        let lower = point_key(id, lo);
        let ro = bounded(&lower, &point_key(id, hi));
        let mut it = snap.raw_iterator_cf_opt(layout::cf(&self.db, CF_ROLLUPS)?, ro);
        it.seek(lower);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (_, m) = layout::decode_point_key("rollup", k)?;
            out.insert(m, layout::decode_rollup(m, v)?);
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    /// Plans sealing the due open points of one series (`now == None`: all of them).
    fn plan_seal(&self, id: SeriesId, now: Option<i64>) -> Result<SealPlan, StoreError> {
        let snap = self.db.snapshot();
        let open = self.open_points(&snap, id, i64::MIN, None)?;
        let mut plan = SealPlan {
            id,
            put_blocks: Vec::new(),
            delete_blocks: Vec::new(),
            rollups: Vec::new(),
            sealed_range: None,
            points_sealed: 0,
            remaining: (0, i64::MAX, i64::MIN),
        };
        let (Some(first), Some(last)) = (open.first(), open.last()) else {
            return Ok(plan);
        };
        let bound = match now {
            None => Some(None),
            Some(now) => seal_bound(&self.opts, open.len(), first.0, last.0, now),
        };
        let k = match bound {
            None => 0,
            Some(None) => open.len(),
            Some(Some(b)) => open.partition_point(|p| p.0 < b),
        };
        let (to_seal, remain) = open.split_at(k);
        if let (Some(f), Some(l)) = (remain.first(), remain.last()) {
            plan.remaining = (remain.len(), f.0, l.0);
        }
        let (Some(seal_first), Some(seal_last)) = (to_seal.first(), to_seal.last()) else {
            return Ok(plan);
        };
        plan.sealed_range = Some((seal_first.0, seal_last.0));
        plan.points_sealed = to_seal.len() as u64;

        let first_m = minute_of(seal_first.0);
        let last_end = minute_of(seal_last.0).saturating_add(MINUTE_MS);
        let ro = bounded(&series_start(id), &point_key(id, last_end));
        let mut it = snap.raw_iterator_cf_opt(layout::cf(&self.db, CF_BLOCKS)?, ro);
        it.seek_for_prev(point_key(id, first_m));
        if !it.valid() {
            it.seek_to_first();
        }
        let mut runs: Vec<&[(i64, f64)]> = Vec::new();
        let mut pi = 0;
        while pi < to_seal.len() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let (_, block_key_ts) = layout::decode_point_key("block", k)?;
            let h = decode_header(v)?;
            let (min_m, end_m) = (minute_of(h.min_ts), minute_of(h.max_ts).saturating_add(MINUTE_MS));
            let gap_end = pi + to_seal[pi..].partition_point(|p| p.0 < min_m);
            if gap_end > pi {
                runs.push(&to_seal[pi..gap_end]);
            }
            pi = gap_end;
            let in_end = pi + to_seal[pi..].partition_point(|p| p.0 < end_m);
            if in_end > pi {
                let new = &to_seal[pi..in_end];
                let (_, old) = decode_block(v)?;
                let merged = merge_points(&old, new);
                let stored = self.stored_rollups(&snap, id, min_m, end_m)?;
                let all = rollups_of(&merged);
                for fresh in rollups_of(new) {
                    let m = fresh.start_ms;
                    let had_old = {
                        let i = old.partition_point(|p| p.0 < m);
                        old.get(i).is_some_and(|p| p.0 < m.saturating_add(MINUTE_MS))
                    };
                    let mut r = all
                        .iter()
                        .find(|r| r.start_ms == m)
                        .copied()
                        .expect("every minute of the new points is a minute of the merged points");
                    if !had_old && let Some(s) = stored.get(&m) {
                        let mut s = *s;
                        s.merge(&r);
                        r = s;
                    }
                    plan.rollups.push(r);
                }
                let merged_first = merged[0].0;
                if merged_first != block_key_ts {
                    plan.delete_blocks.push(block_key_ts);
                }
                plan.put_blocks.push((merged_first, encode_block(&merged)?));
            }
            pi = in_end;
            it.next();
        }
        it.status().map_err(engine)?;
        if pi < to_seal.len() {
            runs.push(&to_seal[pi..]);
        }

        let target = self.opts.block_points.max(1);
        for run in runs {
            let (Some(rf), Some(rl)) = (run.first(), run.last()) else {
                continue;
            };
            let stored = self.stored_rollups(&snap, id, minute_of(rf.0), minute_of(rl.0).saturating_add(MINUTE_MS))?;
            for fresh in rollups_of(run) {
                plan.rollups.push(match stored.get(&fresh.start_ms) {
                    Some(old) => {
                        let mut old = *old;
                        old.merge(&fresh);
                        old
                    }
                    None => fresh,
                });
            }
            let mut start = 0;
            for i in 1..=run.len() {
                let cut = i == run.len() || (i - start >= target && minute_of(run[i].0) != minute_of(run[i - 1].0));
                if cut {
                    let chunk = &run[start..i];
                    plan.put_blocks.push((chunk[0].0, encode_block(chunk)?));
                    start = i;
                }
            }
        }
        Ok(plan)
    }

    fn add_to_batch(&self, plan: &SealPlan, wb: &mut rocksdb::WriteBatch) -> Result<(), StoreError> {
        let blocks = layout::cf(&self.db, CF_BLOCKS)?;
        for &ts in &plan.delete_blocks {
            wb.delete_cf(blocks, point_key(plan.id, ts));
        }
        for (ts, bytes) in &plan.put_blocks {
            wb.put_cf(blocks, point_key(plan.id, *ts), bytes);
        }
        let rollups = layout::cf(&self.db, CF_ROLLUPS)?;
        for r in &plan.rollups {
            wb.put_cf(rollups, point_key(plan.id, r.start_ms), layout::encode_rollup(r));
        }
        if let Some((first, last)) = plan.sealed_range {
            let open = layout::cf(&self.db, CF_OPEN)?;
            wb.delete_range_cf(open, point_key(plan.id, first).as_slice(), point_key_after(plan.id, last).as_slice());
        }
        Ok(())
    }

    /// Records a committed plan in the stats (caller holds the seal gate exclusively).
    fn committed(&self, plans: &[SealPlan], out: &mut MaintenanceStats) {
        let mut stats = lock(&self.stats);
        for p in plans {
            if let Some(s) = stats.get_mut(p.id as usize) {
                (s.open_count, s.oldest_open, s.newest_open) = p.remaining;
            }
            out.blocks_sealed += p.put_blocks.len() as u64;
            out.points_sealed += p.points_sealed;
            out.rollups_written += p.rollups.len() as u64;
        }
    }

    /// Seals every due series (`now == None`: every series with open points).
    fn seal_due(&self, now: Option<i64>, out: &mut MaintenanceStats) -> Result<(), StoreError> {
        let candidates: Vec<(SeriesId, u64)> = {
            let stats = lock(&self.stats);
            let stale = now.map(|n| cutoff(n, self.opts.max_open_age));
            stats
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, s)| {
                    s.open_count > 0
                        && stale.is_none_or(|stale| s.open_count >= self.opts.block_points || s.oldest_open < stale)
                })
                .map(|(id, s)| (id as SeriesId, s.generation))
                .collect()
        };
        for group in candidates.chunks(SEAL_GROUP) {
            let mut plans = Vec::with_capacity(group.len());
            for &(id, generation) in group {
                plans.push((self.plan_seal(id, now)?, generation));
            }
            let _gate = self.seal_gate.write().unwrap_or_else(PoisonError::into_inner);
            let (fresh, stale): (Vec<_>, Vec<_>) = {
                let stats = lock(&self.stats);
                plans
                    .into_iter()
                    .partition(|(p, generation)| stats.get(p.id as usize).is_some_and(|s| s.generation == *generation))
            };
            let mut ready: Vec<SealPlan> = fresh.into_iter().map(|(p, _)| p).collect();
            // Written to while planned: plan again, writers are held off by the gate.
            for (p, _) in stale {
                ready.push(self.plan_seal(p.id, now)?);
            }
            let mut wb = rocksdb::WriteBatch::default();
            for p in &ready {
                self.add_to_batch(p, &mut wb)?;
            }
            if !wb.is_empty() {
                self.db.write_opt(wb, &self.write_options()).map_err(engine)?;
            }
            self.committed(&ready, out);
        }
        Ok(())
    }

    /// Applies retention as of `now`.
    fn expire(&self, now: i64, out: &mut MaintenanceStats) -> Result<(), StoreError> {
        let cutoffs: Vec<(SeriesId, i64, i64)> = {
            let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            let labels = self.host_labels.read().unwrap_or_else(PoisonError::into_inner);
            reg.metas
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let (raw, rollup) = retention_for(&self.opts, labels.get(&m.host_id), &m.key);
                    (i as SeriesId + 1, cutoff(now, raw), cutoff(now, rollup))
                })
                .collect()
        };
        let blocks = layout::cf(&self.db, CF_BLOCKS)?;
        let rollups = layout::cf(&self.db, CF_ROLLUPS)?;
        let snap = self.db.snapshot();
        let mut bit = snap.raw_iterator_cf(blocks);
        let mut rit = snap.raw_iterator_cf(rollups);
        let mut wb = rocksdb::WriteBatch::default();
        for (id, raw_cut, roll_cut) in cutoffs {
            bit.seek(series_start(id));
            while let (Some(k), Some(v)) = (bit.key(), bit.value()) {
                let (sid, first) = layout::decode_point_key("block", k)?;
                if sid != id || first >= raw_cut || decode_header(v)?.max_ts >= raw_cut {
                    break;
                }
                wb.delete_cf(blocks, k);
                out.blocks_expired += 1;
                bit.next();
            }
            bit.status().map_err(engine)?;
            rit.seek(series_start(id));
            while let Some(k) = rit.key() {
                let (sid, start) = layout::decode_point_key("rollup", k)?;
                if sid != id || start >= roll_cut {
                    break;
                }
                wb.delete_cf(rollups, k);
                out.rollups_expired += 1;
                rit.next();
            }
            rit.status().map_err(engine)?;
            if wb.len() >= EXPIRE_BATCH {
                let full = std::mem::take(&mut wb);
                self.db.write_opt(full, &self.write_options()).map_err(engine)?;
            }
        }
        if !wb.is_empty() {
            self.db.write_opt(wb, &self.write_options()).map_err(engine)?;
        }
        Ok(())
    }
}

impl Store for RocksStore {
    fn resolve_series(&self, host: &str, key: &SeriesKey) -> Result<SeriesId, StoreError> {
        {
            let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(id) = reg.by_key.get(host).and_then(|m| m.get(key)) {
                return Ok(*id);
            }
        }
        let mut reg = self.registry.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = reg.by_key.get(host).and_then(|m| m.get(key)) {
            return Ok(*id);
        }
        let id = reg.metas.len() as SeriesId + 1;
        let meta = SeriesMeta { host_id: host.to_owned(), key: key.clone() };
        self.db
            .put_cf_opt(
                layout::cf(&self.db, CF_META)?,
                layout::series_meta_key(id),
                layout::encode_series_meta(&meta),
                &self.write_options(),
            )
            .map_err(engine)?;
        lock(&self.stats).push(SeriesStat::empty(true));
        reg.by_key.entry(meta.host_id.clone()).or_default().insert(meta.key.clone(), id);
        reg.metas.push(meta);
        self.next_id.store(id + 1, Ordering::Release);
        Ok(id)
    }

    fn lookup_series(&self, host: &str, key: &SeriesKey) -> Option<SeriesId> {
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        reg.by_key.get(host).and_then(|m| m.get(key)).copied()
    }

    fn series_count(&self, host: &str) -> usize {
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        reg.by_key.get(host).map_or(0, |m| m.len())
    }

    fn series_meta(&self, id: SeriesId) -> Option<SeriesMeta> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.registry.read().unwrap_or_else(PoisonError::into_inner).metas.get(i).cloned()
    }

    fn list_series(&self, host: Option<&str>) -> Vec<(SeriesId, SeriesMeta)> {
        let reg = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        match host {
            Some(h) => {
                let mut ids: Vec<SeriesId> =
                    reg.by_key.get(h).map(|m| m.values().copied().collect()).unwrap_or_default();
                ids.sort_unstable();
                ids.into_iter().map(|id| (id, reg.metas[id as usize - 1].clone())).collect()
            }
            None => reg.metas.iter().enumerate().map(|(i, m)| (i as SeriesId + 1, m.clone())).collect(),
        }
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let next = self.next_id.load(Ordering::Acquire);
        if let Some(&(id, _, _)) = batch.points.iter().find(|p| p.0 == 0 || p.0 >= next) {
            return Err(StoreError::UnknownSeries(id));
        }
        let open = layout::cf(&self.db, CF_OPEN)?;
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(64 + batch.points.len() * 32);
        for &(id, ts, v) in &batch.points {
            if !v.is_nan() {
                wb.put_cf(open, point_key(id, ts), layout::encode_point_value(v));
            }
        }
        if let Some((host, p)) = &batch.progress {
            let meta = layout::cf(&self.db, CF_META)?;
            wb.put_cf(meta, layout::progress_key(host), layout::encode_progress(p));
        }
        if wb.is_empty() {
            return Ok(());
        }
        let _gate = self.seal_gate.read().unwrap_or_else(PoisonError::into_inner);
        self.db.write_opt(wb, &self.write_options()).map_err(engine)?;
        let mut stats = lock(&self.stats);
        for &(id, ts, v) in &batch.points {
            if let Some(s) = stats.get_mut(id as usize).filter(|_| !v.is_nan()) {
                s.record(ts, v);
            }
        }
        Ok(())
    }

    fn agent_progress(&self, host: &str) -> Result<Option<AgentProgress>, StoreError> {
        let meta = layout::cf(&self.db, CF_META)?;
        match self.db.get_pinned_cf(meta, layout::progress_key(host)).map_err(engine)? {
            Some(v) => Ok(Some(layout::decode_progress(&v)?)),
            None => Ok(None),
        }
    }

    fn read_range(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, StoreError> {
        self.check_id(id)?;
        if start_ms >= end_ms {
            return Ok(Vec::new());
        }
        let snap = self.db.snapshot();
        let sealed = self.sealed_points(&snap, id, start_ms, end_ms)?;
        let open = self.open_points(&snap, id, start_ms, Some(end_ms))?;
        Ok(if open.is_empty() { sealed } else { merge_points(&sealed, &open) })
    }

    fn read_rollups(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Rollup>, StoreError> {
        self.check_id(id)?;
        let (lo, hi) = (minute_at_or_after(start_ms), minute_at_or_after(end_ms));
        if lo >= hi {
            return Ok(Vec::new());
        }
        let snap = self.db.snapshot();
        let mut out = self.stored_rollups(&snap, id, lo, hi)?;
        let open = self.open_points(&snap, id, lo, Some(hi))?;
        let minutes = rollups_of(&open);
        // Runs of consecutive minutes with open points, each read from the blocks once.
        let mut i = 0;
        while i < minutes.len() {
            let mut j = i + 1;
            while j < minutes.len() && minutes[j].start_ms == minutes[j - 1].start_ms.saturating_add(MINUTE_MS) {
                j += 1;
            }
            let run_lo = minutes[i].start_ms;
            let run_hi = minutes[j - 1].start_ms.saturating_add(MINUTE_MS);
            let sealed = self.sealed_points(&snap, id, run_lo, run_hi)?;
            for m in &minutes[i..j] {
                let m_end = m.start_ms.saturating_add(MINUTE_MS);
                let slice = |pts: &[(i64, f64)]| {
                    let a = pts.partition_point(|p| p.0 < m.start_ms);
                    let b = pts.partition_point(|p| p.0 < m_end);
                    pts[a..b].to_vec()
                };
                if let Some(r) = minute_rollup(&slice(&sealed), &slice(&open), out.get(&m.start_ms)) {
                    out.insert(m.start_ms, r);
                }
            }
            i = j;
        }
        Ok(out.into_values().collect())
    }

    fn latest(&self, id: SeriesId) -> Result<Option<(i64, f64)>, StoreError> {
        self.check_id(id)?;
        if let Some(s) = lock(&self.stats).get(id as usize).filter(|s| s.latest_complete) {
            return Ok(s.latest);
        }
        let snap = self.db.snapshot();
        let ro = bounded(&series_start(id), &series_end(id));
        let mut it = snap.raw_iterator_cf_opt(layout::cf(&self.db, CF_BLOCKS)?, ro);
        it.seek_to_last();
        let sealed = match it.value() {
            Some(v) => decode_block(v)?.1.last().copied(),
            None => None,
        };
        it.status().map_err(engine)?;
        let mut stats = lock(&self.stats);
        let s = stats.get_mut(id as usize).ok_or(StoreError::UnknownSeries(id))?;
        if !s.latest_complete {
            s.latest = match (s.latest, sealed) {
                (Some(o), Some(b)) => Some(if b.0 > o.0 { b } else { o }),
                (o, b) => o.or(b),
            };
            s.latest_complete = true;
        }
        Ok(s.latest)
    }

    fn put_host(&self, rec: &HostRecord) -> Result<(), StoreError> {
        let meta = layout::cf(&self.db, CF_META)?;
        self.db
            .put_cf_opt(meta, layout::host_key(&rec.host_id), layout::encode_host(rec)?, &self.write_options())
            .map_err(engine)?;
        self.host_labels
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(rec.host_id.clone(), rec.labels.clone());
        Ok(())
    }

    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let meta = layout::cf(&self.db, CF_META)?;
        let mut it = self.db.raw_iterator_cf_opt(meta, bounded(HOST_PREFIX, &prefix_end(HOST_PREFIX)));
        it.seek_to_first();
        let mut out = Vec::new();
        while let Some(v) = it.value() {
            out.push(layout::decode_host(v)?);
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    fn maintain(&self, now_ms: i64) -> Result<MaintenanceStats, StoreError> {
        let _m = lock(&self.maintain_lock);
        let mut stats = MaintenanceStats::default();
        self.seal_due(Some(now_ms), &mut stats)?;
        self.expire(now_ms, &mut stats)?;
        Ok(stats)
    }

    fn seal_all_and_compact(&self) -> Result<MaintenanceStats, StoreError> {
        let _m = lock(&self.maintain_lock);
        let mut stats = MaintenanceStats::default();
        self.seal_due(None, &mut stats)?;
        let mut copts = CompactOptions::default();
        copts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        copts.set_exclusive_manual_compaction(true);
        for name in COLUMN_FAMILIES {
            let cf = layout::cf(&self.db, name)?;
            self.db.flush_cf(cf).map_err(engine)?;
            self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &copts);
        }
        Ok(stats)
    }

    fn disk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.path)
    }

    fn audit_append(&self, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let cf = layout::cf(&self.db, CF_AUDIT)?;
        let key = layout::audit_key(seq);
        // Appends are serialized by the caller; the lock makes check-then-put atomic anyway.
        let _g = lock(&self.audit_lock);
        if self.db.get_pinned_cf(cf, key).map_err(engine)?.is_some() {
            return Err(StoreError::AuditSeqTaken(seq));
        }
        self.db.put_cf_opt(cf, key, record, &self.write_options()).map_err(engine)
    }

    fn audit_scan(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let cf = layout::cf(&self.db, CF_AUDIT)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(layout::audit_key(from_seq));
        let mut out = Vec::new();
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            out.push((layout::decode_audit_key(k)?, v.to_vec()));
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    fn audit_scan_back(&self, before_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        if before_seq == 0 || limit == 0 {
            return Ok(out);
        }
        let cf = layout::cf(&self.db, CF_AUDIT)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_for_prev(layout::audit_key(before_seq - 1));
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            out.push((layout::decode_audit_key(k)?, v.to_vec()));
            it.prev();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }

    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let cf = layout::cf(&self.db, CF_AUDIT)?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek_to_last();
        let last = match (it.key(), it.value()) {
            (Some(k), Some(v)) => Some((layout::decode_audit_key(k)?, v.to_vec())),
            _ => None,
        };
        it.status().map_err(engine)?;
        Ok(last)
    }

    fn model_state_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        layout::check_model_key(key)?;
        let cf = layout::cf(&self.db, CF_MODEL)?;
        self.db.put_cf_opt(cf, key.as_bytes(), value, &self.write_options()).map_err(engine)
    }

    fn model_state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = layout::cf(&self.db, CF_MODEL)?;
        self.db.get_cf(cf, key.as_bytes()).map_err(engine)
    }

    fn model_state_delete(&self, key: &str) -> Result<(), StoreError> {
        let cf = layout::cf(&self.db, CF_MODEL)?;
        self.db.delete_cf_opt(cf, key.as_bytes(), &self.write_options()).map_err(engine)
    }

    fn model_state_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let cf = layout::cf(&self.db, CF_MODEL)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(prefix.as_bytes().to_vec());
        if let Some(end) = layout::prefix_upper_bound(prefix.as_bytes()) {
            ro.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, ro);
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StoreError::Corrupt { what: "model state", reason: "key is not UTF-8".to_owned() })?;
            out.push((key, v.to_vec()));
            it.next();
        }
        it.status().map_err(engine)?;
        Ok(out)
    }
}

/// Replaces (`Some`) or removes (`None`) audit record `seq` in the closed database at
/// `path`, bypassing the append-only rule: tests of tamper detection.
#[cfg(test)]
pub(crate) fn tamper_audit_for_test(path: &Path, seq: u64, record: Option<&[u8]>) {
    let db = layout::open(path).expect("open a valid store");
    let cf = layout::cf(&db, CF_AUDIT).expect("audit exists");
    match record {
        Some(r) => db.put_cf(cf, layout::audit_key(seq), r).expect("overwrite"),
        None => db.delete_cf(cf, layout::audit_key(seq)).expect("delete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{self, T0, bits, key, put, rollup_bits};
    use crate::storage::memory::MemoryStore;
    use std::time::Duration;

    /// A RocksStore that owns its temporary directory.
    struct TempRocks {
        store: RocksStore,
        _dir: tempfile::TempDir,
    }

    impl Store for TempRocks {
        fn resolve_series(&self, host: &str, key: &SeriesKey) -> Result<SeriesId, StoreError> {
            self.store.resolve_series(host, key)
        }
        fn series_meta(&self, id: SeriesId) -> Option<SeriesMeta> {
            self.store.series_meta(id)
        }
        fn list_series(&self, host: Option<&str>) -> Vec<(SeriesId, SeriesMeta)> {
            self.store.list_series(host)
        }
        fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
            self.store.write(batch)
        }
        fn agent_progress(&self, host: &str) -> Result<Option<AgentProgress>, StoreError> {
            self.store.agent_progress(host)
        }
        fn read_range(&self, id: SeriesId, s: i64, e: i64) -> Result<Vec<(i64, f64)>, StoreError> {
            self.store.read_range(id, s, e)
        }
        fn read_rollups(&self, id: SeriesId, s: i64, e: i64) -> Result<Vec<Rollup>, StoreError> {
            self.store.read_rollups(id, s, e)
        }
        fn latest(&self, id: SeriesId) -> Result<Option<(i64, f64)>, StoreError> {
            self.store.latest(id)
        }
        fn put_host(&self, rec: &HostRecord) -> Result<(), StoreError> {
            self.store.put_host(rec)
        }
        fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
            self.store.hosts()
        }
        fn maintain(&self, now_ms: i64) -> Result<MaintenanceStats, StoreError> {
            self.store.maintain(now_ms)
        }
        fn seal_all_and_compact(&self) -> Result<MaintenanceStats, StoreError> {
            self.store.seal_all_and_compact()
        }
        fn disk_bytes(&self) -> u64 {
            self.store.disk_bytes()
        }
        fn audit_append(&self, seq: u64, record: &[u8]) -> Result<(), StoreError> {
            self.store.audit_append(seq, record)
        }
        fn audit_scan(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.store.audit_scan(from_seq, limit)
        }
        fn audit_scan_back(&self, before_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.store.audit_scan_back(before_seq, limit)
        }
        fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
            self.store.audit_last()
        }
        fn model_state_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.store.model_state_put(key, value)
        }
        fn model_state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.store.model_state_get(key)
        }
        fn model_state_delete(&self, key: &str) -> Result<(), StoreError> {
            self.store.model_state_delete(key)
        }
        fn model_state_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.store.model_state_list(prefix)
        }
    }

    fn make_store(opts: StoreOptions) -> Box<dyn Store> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path(), opts).expect("open");
        Box::new(TempRocks { store, _dir: dir })
    }

    conformance::conformance_tests!(make_store);

    #[test]
    fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions { block_points: 20, ..Default::default() };
        let progress = AgentProgress { incarnation: 3, acked_sequence: 99 };
        let host = HostRecord { host_id: "h1".into(), agent_version: "1".into(), ..Default::default() };
        let (a, b, before) = {
            let s = RocksStore::open(dir.path(), opts.clone()).expect("open");
            let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
            let b = s.resolve_series("h2", &key("container/x", "b").with_label("k", "v")).expect("resolve");
            let pts: Vec<_> = (0..100).map(|i| (a, T0 + i * 1000, i as f64 * 1.5)).collect();
            put(&s, &pts);
            s.seal_all_and_compact().expect("seal");
            // Open (unsealed) points, one overwriting a sealed point, plus progress.
            let batch = WriteBatch {
                points: vec![(a, T0 + 200_000, -0.0), (a, T0 + 5000, 42.0), (b, T0, 7.0)],
                progress: Some(("h1".into(), progress)),
            };
            s.write(&batch).expect("write");
            s.put_host(&host).expect("host");
            let before = (
                bits(&s.read_range(a, 0, i64::MAX).expect("read")),
                rollup_bits(&s.read_rollups(a, 0, i64::MAX).expect("rollups")),
                s.list_series(None),
            );
            (a, b, before)
        };
        let s = RocksStore::open(dir.path(), opts).expect("reopen");
        assert_eq!(s.list_series(None), before.2);
        assert_eq!(s.resolve_series("h1", &key("host", "a")).expect("resolve"), a);
        assert_eq!(s.resolve_series("h3", &key("host", "a")).expect("resolve"), 3, "ids stay dense");
        assert_eq!(bits(&s.read_range(a, 0, i64::MAX).expect("read")), before.0);
        assert_eq!(rollup_bits(&s.read_rollups(a, 0, i64::MAX).expect("rollups")), before.1);
        assert_eq!(s.read_range(b, 0, i64::MAX).expect("read"), vec![(T0, 7.0)]);
        assert_eq!(bits(&[s.latest(a).expect("latest").expect("some")]), bits(&[(T0 + 200_000, -0.0)]));
        assert_eq!(s.agent_progress("h1").expect("progress"), Some(progress));
        assert_eq!(s.hosts().expect("hosts"), vec![host]);
        // The open points were found again: sealing them moves exactly three.
        assert_eq!(s.seal_all_and_compact().expect("seal").points_sealed, 3);
        assert_eq!(bits(&s.read_range(a, 0, i64::MAX).expect("read")), before.0);
        assert!(s.disk_bytes() > 0);
    }

    #[test]
    fn latest_after_reopen_considers_sealed_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = {
            let s = RocksStore::open(dir.path(), StoreOptions::default()).expect("open");
            let a = s.resolve_series("h1", &key("host", "a")).expect("resolve");
            put(&s, &[(a, T0 + 9000, 9.0)]);
            s.seal_all_and_compact().expect("seal");
            put(&s, &[(a, T0, 1.0)]);
            a
        };
        let s = RocksStore::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(s.latest(a).expect("latest"), Some((T0 + 9000, 9.0)));
    }

    #[test]
    fn format_version_mismatch_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(RocksStore::open(dir.path(), StoreOptions::default()).expect("open"));
        layout::write_format_version_for_test(dir.path(), 99);
        let err = RocksStore::open(dir.path(), StoreOptions::default()).err().expect("refused");
        assert!(matches!(err, StoreError::FormatVersion { found: 99, expected: layout::FORMAT_VERSION }));
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[test]
    fn unusable_data_dir_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let err = RocksStore::open(&file, StoreOptions::default()).err().expect("refused");
        assert!(matches!(err, StoreError::DataDir { .. }), "{err}");
    }

    #[test]
    fn writes_during_maintenance_are_never_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions { block_points: 8, max_open_age: Duration::from_secs(1), ..Default::default() };
        let s = std::sync::Arc::new(RocksStore::open(dir.path(), opts).expect("open"));
        let ids: Vec<SeriesId> =
            (0..20).map(|n| s.resolve_series("h", &key("host", &format!("m{n}"))).expect("resolve")).collect();
        let rounds = 400;
        let writer = {
            let (s, ids) = (s.clone(), ids.clone());
            std::thread::spawn(move || {
                for r in 0..rounds {
                    // Every round writes a new second, and rewrites the previous one.
                    let mut points = Vec::new();
                    for &id in &ids {
                        points.push((id, T0 + r * 1000, r as f64));
                        if r > 0 {
                            points.push((id, T0 + (r - 1) * 1000, (r - 1) as f64));
                        }
                    }
                    s.write(&WriteBatch { points, progress: None }).expect("write");
                }
            })
        };
        let mut now = T0;
        while !writer.is_finished() {
            now += 7_000;
            s.maintain(now).expect("maintain");
        }
        writer.join().expect("writer");
        s.seal_all_and_compact().expect("seal");
        let expect: Vec<(i64, f64)> = (0..rounds).map(|r| (T0 + r * 1000, r as f64)).collect();
        for &id in &ids {
            assert_eq!(s.read_range(id, T0, T0 + rounds * 1000).expect("read"), expect);
            let r = s.read_rollups(id, T0, T0 + rounds * 1000).expect("rollups");
            assert_eq!(r.iter().map(|r| r.count).sum::<u64>(), rounds as u64);
        }
    }

    /// xorshift64*: deterministic, good enough to drive a model test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn randomized_operations_match_memory_store() {
        for seed in [1_u64, 7, 2024, 0xdead_beef] {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = StoreOptions {
                block_points: 1 + rng.below(40) as usize,
                max_open_age: Duration::from_secs(60 * (1 + rng.below(20))),
                ..Default::default()
            };
            let mem = MemoryStore::new(opts.clone());
            let mut rocks = RocksStore::open(dir.path(), opts.clone()).expect("open");
            let mut ids = Vec::new();
            for n in 0..4 {
                let k = key("host", &format!("m{n}"));
                let id = mem.resolve_series("h", &k).expect("resolve");
                assert_eq!(rocks.resolve_series("h", &k).expect("resolve"), id);
                ids.push(id);
            }
            let mut now = T0;
            let span = 3 * 3_600_000;
            for step in 0..400 {
                match rng.below(100) {
                    0..=59 => {
                        // A batch: mostly recent points, some late, some duplicates.
                        let mut points = Vec::new();
                        for _ in 0..1 + rng.below(30) {
                            let id = ids[rng.below(ids.len() as u64) as usize];
                            let ts = if rng.below(5) == 0 {
                                T0 + rng.below((now - T0 + 1) as u64) as i64
                            } else {
                                now - rng.below(120) as i64 * 1000
                            };
                            let v = match rng.below(20) {
                                0 => -0.0,
                                1 => f64::NAN,
                                _ => (rng.below(2001) as f64 - 1000.0) / 8.0,
                            };
                            points.push((id, ts, v));
                        }
                        let batch = WriteBatch { points, progress: None };
                        mem.write(&batch).expect("write");
                        rocks.write(&batch).expect("write");
                        now += rng.below(20_000) as i64;
                    }
                    60..=69 => {
                        now += rng.below(600_000) as i64;
                        mem.maintain(now).expect("maintain");
                        rocks.maintain(now).expect("maintain");
                    }
                    70 => {
                        mem.seal_all_and_compact().expect("seal");
                        rocks.seal_all_and_compact().expect("seal");
                    }
                    71..=73 => {
                        drop(rocks);
                        rocks = RocksStore::open(dir.path(), opts.clone()).expect("reopen");
                    }
                    _ => {
                        let id = ids[rng.below(ids.len() as u64) as usize];
                        let a = T0 - 60_000 + rng.below((now - T0 + 120_001) as u64) as i64;
                        let b = a + rng.below(span as u64) as i64;
                        let ctx = format!("seed {seed} step {step} series {id} [{a}, {b})");
                        assert_eq!(
                            bits(&rocks.read_range(id, a, b).expect("read")),
                            bits(&mem.read_range(id, a, b).expect("read")),
                            "read_range {ctx}"
                        );
                        assert_eq!(
                            rollup_bits(&rocks.read_rollups(id, a, b).expect("rollups")),
                            rollup_bits(&mem.read_rollups(id, a, b).expect("rollups")),
                            "read_rollups {ctx}"
                        );
                        let (l1, l2) = (rocks.latest(id).expect("latest"), mem.latest(id).expect("latest"));
                        assert_eq!(l1.map(|p| (p.0, p.1.to_bits())), l2.map(|p| (p.0, p.1.to_bits())), "latest {ctx}");
                    }
                }
            }
            for &id in &ids {
                assert_eq!(
                    bits(&rocks.read_range(id, i64::MIN, i64::MAX).expect("read")),
                    bits(&mem.read_range(id, i64::MIN, i64::MAX).expect("read")),
                    "seed {seed} final series {id}"
                );
                assert_eq!(
                    rollup_bits(&rocks.read_rollups(id, i64::MIN, i64::MAX).expect("rollups")),
                    rollup_bits(&mem.read_rollups(id, i64::MIN, i64::MAX).expect("rollups")),
                    "seed {seed} final rollups {id}"
                );
            }
        }
    }

    #[test]
    fn audit_and_model_state_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RocksStore::open(dir.path(), StoreOptions::default()).expect("open");
            s.audit_append(1, b"first").expect("append");
            s.audit_append(2, b"second").expect("append");
            s.model_state_put("bandit/oom", b"posterior").expect("put");
        }
        let s = RocksStore::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(s.audit_last().expect("last"), Some((2, b"second".to_vec())));
        assert!(matches!(s.audit_append(2, b"again"), Err(StoreError::AuditSeqTaken(2))));
        s.audit_append(3, b"third").expect("append after reopen");
        assert_eq!(s.audit_scan(0, 10).expect("scan").len(), 3);
        assert_eq!(s.model_state_get("bandit/oom").expect("get"), Some(b"posterior".to_vec()));
    }
}

//! The on-disk layout of [`RocksStore`](super::rocks::RocksStore), written down in one place.
//!
//! # Column families
//! | name      | key                                   | value                                   |
//! |-----------|---------------------------------------|-----------------------------------------|
//! | `meta`    | [`FORMAT_VERSION_KEY`]                | format version, `u32` big-endian        |
//! |           | `series/` + id (`u64` BE)             | [`encode_series_meta`]                  |
//! |           | `progress/` + host id                 | [`encode_progress`]                     |
//! |           | `host/` + host id                     | [`HostRecord`] as JSON                  |
//! | `open`    | [`point_key`] (series id, timestamp)  | `f64` bits, big-endian (8 bytes)        |
//! | `blocks`  | [`point_key`] (series id, first ts)   | a sealed block, see [`super::codec`]    |
//! | `rollups` | [`point_key`] (series id, minute)     | [`encode_rollup`] (48 bytes)            |
//! | `audit`   | [`audit_key`] (sequence, `u64` BE)    | one audit record, encoded and hash-chained by `remediate::audit` |
//! | `model`   | model-state key (UTF-8, e.g. `bandit/…`) | opaque bytes owned by the writer (posteriors, thresholds) |
//!
//! Keys of `open`, `blocks` and `rollups` are the series id as big-endian `u64`
//! followed by a timestamp as big-endian `i64` with the sign bit flipped, so byte order
//! equals numeric order and a series' time range is one contiguous key range.
//!
//! Invariants kept by the store (not by RocksDB):
//! - Sealed blocks of one series never share a minute: a block covers the whole minutes
//!   from its first to its last point, and no other block of the series has points in
//!   those minutes. Late data for a covered minute is merged into that block.
//! - The rollup of a minute is the aggregate of the sealed points in that minute (merged
//!   with an older rollup only when the minute's raw points have expired).
//!
//! The series registry keeps only `id -> (host, key)` on disk; the reverse index is
//! rebuilt in memory at open. [`FORMAT_VERSION`] is written when the database is
//! created and checked by [`validate`] on every open.

use super::{AgentProgress, HostRecord, Rollup, SeriesId, SeriesMeta, StoreError};
use augur_core::{MetricKind, SeriesKey};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Options};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the layout described above. Bump on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Small metadata: format version, series registry, agent progress, host records.
pub const CF_META: &str = "meta";
/// Raw points not sealed yet, one key per point.
pub const CF_OPEN: &str = "open";
/// Sealed, compressed per-series blocks.
pub const CF_BLOCKS: &str = "blocks";
/// One-minute rollups of sealed points.
pub const CF_ROLLUPS: &str = "rollups";
/// Audit trail: append-only records keyed by sequence number.
pub const CF_AUDIT: &str = "audit";
/// Small durable key-value state of learning parts (bandit posteriors, adaptive thresholds).
pub const CF_MODEL: &str = "model";

/// Every column family this version creates and opens.
pub const COLUMN_FAMILIES: [&str; 6] = [CF_META, CF_OPEN, CF_BLOCKS, CF_ROLLUPS, CF_AUDIT, CF_MODEL];

/// `meta` key of the format version.
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";
/// `meta` key prefix of series registry records.
pub const SERIES_PREFIX: &[u8] = b"series/";
/// `meta` key prefix of agent progress records.
pub const PROGRESS_PREFIX: &[u8] = b"progress/";
/// `meta` key prefix of host records.
pub const HOST_PREFIX: &[u8] = b"host/";

/// Length of an [`audit_key`].
pub const AUDIT_KEY_LEN: usize = 8;
/// Longest model-state key accepted.
pub const MAX_MODEL_KEY_LEN: usize = 512;

/// Length of a [`point_key`].
pub const POINT_KEY_LEN: usize = 16;
/// Length of an encoded rollup value.
pub const ROLLUP_VALUE_LEN: usize = 48;

/// Shared block cache size (all column families).
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Timestamp bytes whose byte order equals numeric order.
pub fn encode_ts(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`encode_ts`].
pub fn decode_ts(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Key of a point, block or rollup: series id then timestamp.
pub fn point_key(id: SeriesId, ts: i64) -> [u8; POINT_KEY_LEN] {
    let mut k = [0u8; POINT_KEY_LEN];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&encode_ts(ts));
    k
}

/// An exclusive upper bound just past `point_key(id, ts)` (works for `ts == i64::MAX`).
pub fn point_key_after(id: SeriesId, ts: i64) -> [u8; POINT_KEY_LEN + 1] {
    let mut k = [0u8; POINT_KEY_LEN + 1];
    k[..POINT_KEY_LEN].copy_from_slice(&point_key(id, ts));
    k
}

/// Inclusive lower bound of every key of a series.
pub fn series_start(id: SeriesId) -> [u8; 8] {
    id.to_be_bytes()
}

/// Exclusive upper bound of every key of a series.
pub fn series_end(id: SeriesId) -> [u8; POINT_KEY_LEN + 1] {
    point_key_after(id, i64::MAX)
}

/// Splits a [`point_key`].
pub fn decode_point_key(what: &'static str, k: &[u8]) -> Result<(SeriesId, i64), StoreError> {
    let (id, ts) = (k.get(..8), k.get(8..));
    match (id, ts) {
        (Some(id), Some(ts)) if k.len() == POINT_KEY_LEN => {
            let id = u64::from_be_bytes(id.try_into().expect("8 bytes by the length check"));
            let ts = decode_ts(ts.try_into().expect("8 bytes by the length check"));
            Ok((id, ts))
        }
        _ => Err(corrupt(what, format!("key of {} bytes, expected {POINT_KEY_LEN}", k.len()))),
    }
}

/// Decodes an `open` value.
pub fn decode_point_value(v: &[u8]) -> Result<f64, StoreError> {
    let b: [u8; 8] = v.try_into().map_err(|_| corrupt("open point", format!("value of {} bytes", v.len())))?;
    Ok(f64::from_bits(u64::from_be_bytes(b)))
}

/// Encodes an `open` value.
pub fn encode_point_value(v: f64) -> [u8; 8] {
    v.to_bits().to_be_bytes()
}

/// `audit` key of record `seq`: byte order equals sequence order.
pub fn audit_key(seq: u64) -> [u8; AUDIT_KEY_LEN] {
    seq.to_be_bytes()
}

/// Inverse of [`audit_key`].
pub fn decode_audit_key(k: &[u8]) -> Result<u64, StoreError> {
    let b: [u8; AUDIT_KEY_LEN] = k
        .try_into()
        .map_err(|_| corrupt("audit record", format!("key of {} bytes, expected {AUDIT_KEY_LEN}", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// Checks a model-state key: 1 to [`MAX_MODEL_KEY_LEN`] bytes.
pub fn check_model_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_MODEL_KEY_LEN {
        return Err(StoreError::InvalidKey(format!(
            "model-state key of {} bytes (must be 1 to {MAX_MODEL_KEY_LEN})",
            key.len()
        )));
    }
    Ok(())
}

/// The smallest key above every key starting with `prefix` (`None`: no upper bound).
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `meta` key of a series registry record.
pub fn series_meta_key(id: SeriesId) -> Vec<u8> {
    [SERIES_PREFIX, &id.to_be_bytes()].concat()
}

/// `meta` key of an agent progress record.
pub fn progress_key(host: &str) -> Vec<u8> {
    [PROGRESS_PREFIX, host.as_bytes()].concat()
}

/// `meta` key of a host record.
pub fn host_key(host: &str) -> Vec<u8> {
    [HOST_PREFIX, host.as_bytes()].concat()
}

/// Encodes agent progress: incarnation then acked sequence, both `u64` BE.
pub fn encode_progress(p: &AgentProgress) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&p.incarnation.to_be_bytes());
    b[8..].copy_from_slice(&p.acked_sequence.to_be_bytes());
    b
}

/// Inverse of [`encode_progress`].
pub fn decode_progress(v: &[u8]) -> Result<AgentProgress, StoreError> {
    let mut r = Reader::new("agent progress", v);
    let p = AgentProgress { incarnation: r.u64()?, acked_sequence: r.u64()? };
    r.finish()?;
    Ok(p)
}

/// Encodes a rollup value (the bucket start lives in the key).
pub fn encode_rollup(r: &Rollup) -> [u8; ROLLUP_VALUE_LEN] {
    let mut b = [0u8; ROLLUP_VALUE_LEN];
    b[0..8].copy_from_slice(&r.min.to_bits().to_be_bytes());
    b[8..16].copy_from_slice(&r.max.to_bits().to_be_bytes());
    b[16..24].copy_from_slice(&r.sum.to_bits().to_be_bytes());
    b[24..32].copy_from_slice(&r.count.to_be_bytes());
    b[32..40].copy_from_slice(&r.last.to_bits().to_be_bytes());
    b[40..48].copy_from_slice(&r.last_ms.to_be_bytes());
    b
}

/// Inverse of [`encode_rollup`].
pub fn decode_rollup(start_ms: i64, v: &[u8]) -> Result<Rollup, StoreError> {
    let mut r = Reader::new("rollup", v);
    let rollup = Rollup {
        start_ms,
        min: f64::from_bits(r.u64()?),
        max: f64::from_bits(r.u64()?),
        sum: f64::from_bits(r.u64()?),
        count: r.u64()?,
        last: f64::from_bits(r.u64()?),
        last_ms: r.u64()? as i64,
    };
    r.finish()?;
    Ok(rollup)
}

/// Encodes a series registry record: host, resource, metric, unit (each `u32` BE length
/// + UTF-8), kind byte (0 gauge, 1 counter), label count `u16` BE, then name/value pairs.
pub fn encode_series_meta(m: &SeriesMeta) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    let put = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u32).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    put(&mut b, &m.host_id);
    put(&mut b, &m.key.resource);
    put(&mut b, &m.key.metric);
    put(&mut b, &m.key.unit);
    b.push(match m.key.kind {
        MetricKind::Gauge => 0,
        MetricKind::Counter => 1,
    });
    b.extend_from_slice(&(m.key.labels.len() as u16).to_be_bytes());
    for (k, v) in &m.key.labels {
        put(&mut b, k);
        put(&mut b, v);
    }
    b
}

/// Inverse of [`encode_series_meta`].
pub fn decode_series_meta(v: &[u8]) -> Result<SeriesMeta, StoreError> {
    let mut r = Reader::new("series registry", v);
    let host_id = r.string()?;
    let resource = r.string()?;
    let metric = r.string()?;
    let unit = r.string()?;
    let kind = match r.u8()? {
        0 => MetricKind::Gauge,
        1 => MetricKind::Counter,
        k => {
            return Err(corrupt("series registry", format!("unknown metric kind {k}")));
        }
    };
    let n = r.u16()?;
    let mut labels = BTreeMap::new();
    for _ in 0..n {
        let k = r.string()?;
        let v = r.string()?;
        labels.insert(k, v);
    }
    r.finish()?;
    Ok(SeriesMeta { host_id, key: SeriesKey { resource, metric, unit, kind, labels } })
}

/// Encodes a host record as JSON.
pub fn encode_host(rec: &HostRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(|e| corrupt("host record", e.to_string()))
}

/// Inverse of [`encode_host`].
pub fn decode_host(v: &[u8]) -> Result<HostRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| corrupt("host record", e.to_string()))
}

fn corrupt(what: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt { what, reason }
}

/// Bounds-checked big-endian reader for the records above.
struct Reader<'a> {
    what: &'static str,
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, b: &'a [u8]) -> Self {
        Reader { what, b }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.b.len() < n {
            return Err(corrupt(self.what, "truncated".to_owned()));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("took 2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("took 4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("took 8 bytes")))
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(self.what, "invalid UTF-8".to_owned()))
    }

    fn finish(self) -> Result<(), StoreError> {
        if self.b.is_empty() { Ok(()) } else { Err(corrupt(self.what, format!("{} trailing bytes", self.b.len()))) }
    }
}

/// Maps a RocksDB error to the storage error.
pub(crate) fn engine(e: rocksdb::Error) -> StoreError {
    StoreError::Engine(e.into_string())
}

/// Options of one column family.
fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut o = Options::default();
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_cache_index_and_filter_blocks(true);
    // Keep index blocks of fresh files resident: sealing seeks once per series.
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    t.set_cache_index_and_filter_blocks_with_high_priority(true);
    match name {
        CF_OPEN => {
            // The ingest hot path: large memtables, cheap compression; keys are scanned
            // by range (seal, reads), so no bloom filter.
            o.set_write_buffer_size(64 << 20);
            o.set_max_write_buffer_number(3);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
        }
        CF_BLOCKS => {
            // Values are already pco-compressed; compressing them again wastes CPU.
            o.set_write_buffer_size(16 << 20);
            o.set_compression_type(DBCompressionType::None);
            t.set_block_size(16 << 10);
        }
        CF_ROLLUPS => {
            o.set_write_buffer_size(16 << 20);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
            t.set_block_size(16 << 10);
        }
        _ => {
            // meta, audit, model: small; meta is read by point lookups (progress).
            o.set_write_buffer_size(4 << 20);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
            if name == CF_META {
                t.set_bloom_filter(10.0, false);
            }
        }
    }
    o.set_block_based_table_factory(&t);
    o
}

/// Opens (creating when missing) the database at `path` with every column family of
/// this layout, then [`validate`]s it. Column families unknown to this version (from a
/// newer one) are opened too, so the version check can report the mismatch clearly.
pub(crate) fn open(path: &Path) -> Result<DB, StoreError> {
    std::fs::create_dir_all(path)
        .map_err(|e| StoreError::DataDir { path: path.display().to_string(), reason: e.to_string() })?;
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_bytes_per_sync(1 << 20);
    // RocksDB's own diagnostic LOG: warnings only, small and rotated (at INFO it writes
    // ~150 KB at every open and grows with each flush and compaction).
    db_opts.set_log_level(rocksdb::LogLevel::Warn);
    db_opts.set_max_log_file_size(1 << 20);
    db_opts.set_keep_log_file_num(4);
    db_opts.set_stats_dump_period_sec(0);
    // `meta` is written rarely; bound the WAL so it gets flushed and old logs go away.
    db_opts.set_max_total_wal_size(256 << 20);

    let mut names: Vec<String> = COLUMN_FAMILIES.iter().map(|s| (*s).to_owned()).collect();
    if let Ok(existing) = DB::list_cf(&Options::default(), path) {
        for name in existing {
            if name != "default" && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let descriptors: Vec<ColumnFamilyDescriptor> =
        names.iter().map(|n| ColumnFamilyDescriptor::new(n.as_str(), cf_options(n, &cache))).collect();
    let db = DB::open_cf_descriptors(&db_opts, path, descriptors)
        .map_err(|e| StoreError::DataDir { path: path.display().to_string(), reason: e.into_string() })?;
    validate(&db)?;
    Ok(db)
}

/// Checks the stored format version, writing it into a freshly created database.
/// A database that has data but no version is refused as version 0.
pub(crate) fn validate(db: &DB) -> Result<(), StoreError> {
    let meta = cf(db, CF_META)?;
    match db.get_cf(meta, FORMAT_VERSION_KEY).map_err(engine)? {
        Some(v) => {
            let b: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("format version", format!("value of {} bytes", v.len())))?;
            let found = u32::from_be_bytes(b);
            if found != FORMAT_VERSION {
                return Err(StoreError::FormatVersion { found, expected: FORMAT_VERSION });
            }
        }
        None => {
            for name in [CF_META, CF_OPEN, CF_BLOCKS, CF_ROLLUPS] {
                let mut it = db.raw_iterator_cf(cf(db, name)?);
                it.seek_to_first();
                if it.valid() {
                    return Err(StoreError::FormatVersion { found: 0, expected: FORMAT_VERSION });
                }
            }
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(meta, FORMAT_VERSION_KEY, FORMAT_VERSION.to_be_bytes(), &wo).map_err(engine)?;
        }
    }
    Ok(())
}

/// A column family handle of this layout.
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or_else(|| StoreError::Engine(format!("column family {name} is missing")))
}

/// Overwrites the stored format version (tests of the version check).
#[cfg(test)]
pub(crate) fn write_format_version_for_test(path: &Path, version: u32) {
    let db = open(path).expect("open a valid store");
    let meta = cf(&db, CF_META).expect("meta exists");
    db.put_cf(meta, FORMAT_VERSION_KEY, version.to_be_bytes()).expect("write version");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_bytes_sort_numerically() {
        let ts = [i64::MIN, -86_400_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(encode_ts(w[0]) < encode_ts(w[1]), "{} vs {}", w[0], w[1]);
            assert!(point_key(7, w[0]) < point_key(7, w[1]));
        }
        for t in ts {
            assert_eq!(decode_ts(encode_ts(t)), t);
            assert_eq!(decode_point_key("k", &point_key(3, t)).expect("valid"), (3, t));
            assert!(point_key_after(3, t).as_slice() > point_key(3, t).as_slice());
            assert!(series_end(3).as_slice() > point_key(3, t).as_slice());
            assert!(series_start(3).as_slice() <= point_key(3, t).as_slice());
        }
        assert!(point_key(1, i64::MAX) < point_key(2, i64::MIN));
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let key = SeriesKey::new("container/x", "cpu_seconds_total", "seconds", MetricKind::Counter)
            .with_label("mode", "user");
        let m = SeriesMeta { host_id: "h1".into(), key };
        let enc = encode_series_meta(&m);
        assert_eq!(decode_series_meta(&enc).expect("valid"), m);
        for n in 0..enc.len() {
            assert!(decode_series_meta(&enc[..n]).is_err());
        }
        let r = Rollup { start_ms: 60_000, min: -0.0, max: 3.5, sum: 4.0, count: 3, last: 1.0, last_ms: 61_000 };
        let d = decode_rollup(60_000, &encode_rollup(&r)).expect("valid");
        assert_eq!(d, r);
        assert!(d.min.is_sign_negative());
        assert!(decode_rollup(0, &[0; 47]).is_err());
        let p = AgentProgress { incarnation: 9, acked_sequence: 42 };
        assert_eq!(decode_progress(&encode_progress(&p)).expect("valid"), p);
        assert!(decode_progress(&[1, 2, 3]).is_err());
        assert!(decode_point_value(&[0; 7]).is_err());
        assert!(decode_point_key("k", &[0; 15]).is_err());
    }
}

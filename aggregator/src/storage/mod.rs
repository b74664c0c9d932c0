//! Time-series storage behind one seam.
//!
//! [`Store`] is what ingest, queries and maintenance use. Two implementations:
//! - [`rocks::RocksStore`]: the real one, RocksDB with column families; its on-disk
//!   layout (column families, key encoding, format version) is written down in
//!   [`layout`], and sealed blocks are encoded by [`codec`].
//! - [`memory::MemoryStore`]: a small in-memory store for fast logic tests.
//!
//! Both pass the same conformance suite (`storage::conformance`, run from each
//! implementation's tests). No `rocksdb::` type appears outside this folder.
//!
//! Model: a series (host + [`SeriesKey`]) gets a dense [`SeriesId`] when first seen.
//! Points are `(timestamp_ms, f64)`. New points land in an "open" raw area made durable
//! by RocksDB's WAL; maintenance seals runs of open points into compressed per-series
//! blocks, computes 1-minute rollups from them, and applies retention. Reads merge
//! sealed blocks and open points, so a point is visible as soon as `write` returns.
//! Writing the same (series, timestamp) twice keeps one point (the last written).

use augur_core::SeriesKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub mod codec;
pub mod layout;
pub mod memory;
pub mod rocks;

#[cfg(test)]
pub(crate) mod conformance;

/// Dense id of a series, assigned by the store.
pub type SeriesId = u64;

/// A series as stored: the host it belongs to and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesMeta {
    pub host_id: String,
    pub key: SeriesKey,
}

/// How far an agent incarnation's batches have been durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentProgress {
    pub incarnation: u64,
    /// Highest sequence stored (or permanently rejected); 0 when none.
    pub acked_sequence: u64,
}

/// One atomic write: points of many series plus, optionally, the agent progress that
/// they complete. Either everything is durable when `write` returns, or nothing is.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub points: Vec<(SeriesId, i64, f64)>,
    pub progress: Option<(String, AgentProgress)>,
}

/// One-minute (or coarser) aggregate of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Start of the bucket (inclusive), milliseconds since the epoch.
    pub start_ms: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    /// The value of the latest point in the bucket and its timestamp.
    pub last: f64,
    pub last_ms: i64,
}

impl Rollup {
    pub fn avg(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }

    /// A bucket holding one point.
    pub fn of_point(start_ms: i64, ts: i64, v: f64) -> Self {
        Rollup { start_ms, min: v, max: v, sum: v, count: 1, last: v, last_ms: ts }
    }

    /// Folds `other` (same bucket or a coarser grouping) into `self`.
    pub fn merge(&mut self, other: &Rollup) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_ms >= self.last_ms {
            self.last = other.last;
            self.last_ms = other.last_ms;
        }
    }
}

/// Host registry record, persisted so `augurctl hosts` survives restarts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostRecord {
    pub host_id: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub capabilities: Vec<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub incarnation: u64,
}

/// Retention for series that match a rule. Rules are tried in order; the first whose
/// `match_labels` are all present in the host's labels (or whose `resource_prefix`
/// matches the series resource) wins; series matching no rule use the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub match_host_labels: BTreeMap<String, String>,
    pub resource_prefix: Option<String>,
    pub raw: Duration,
    pub rollup: Duration,
}

/// Storage tuning and retention, from the aggregator config.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Seal a series' open points into a block when it has this many.
    pub block_points: usize,
    /// Seal open points older than this even when the block is not full.
    pub max_open_age: Duration,
    pub raw_retention: Duration,
    pub rollup_retention: Duration,
    pub retention_rules: Vec<RetentionRule>,
    /// fsync the WAL on every write (survives power loss, not only process death).
    pub sync_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_points: 1800,
            max_open_age: Duration::from_secs(3600),
            raw_retention: Duration::from_secs(14 * 86_400),
            rollup_retention: Duration::from_secs(365 * 86_400),
            retention_rules: Vec::new(),
            sync_writes: false,
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceStats {
    pub blocks_sealed: u64,
    pub points_sealed: u64,
    pub rollups_written: u64,
    pub blocks_expired: u64,
    pub rollups_expired: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("on-disk format version {found} is not supported (this build reads {expected})")]
    FormatVersion { found: u32, expected: u32 },
    #[error("corrupt record in {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("unknown series id {0}")]
    UnknownSeries(SeriesId),
    #[error("audit record {0} exists already (the audit trail is append-only)")]
    AuditSeqTaken(u64),
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// The storage seam. All methods are blocking; async callers use `spawn_blocking`
/// or a dedicated writer thread.
pub trait Store: Send + Sync + 'static {
    /// The id of `key` on `host`, created (durably) when new.
    fn resolve_series(&self, host: &str, key: &SeriesKey) -> Result<SeriesId, StoreError>;

    /// The id of `key` on `host` if it exists (never creates). The default walks the
    /// host's series; implementations override it with a map lookup.
    fn lookup_series(&self, host: &str, key: &SeriesKey) -> Option<SeriesId> {
        self.list_series(Some(host)).into_iter().find(|(_, m)| &m.key == key).map(|(id, _)| id)
    }

    /// Number of series of `host`. Implementations override it with a map lookup.
    fn series_count(&self, host: &str) -> usize {
        self.list_series(Some(host)).len()
    }

    /// The host and key of a series id.
    fn series_meta(&self, id: SeriesId) -> Option<SeriesMeta>;

    /// All series, or those of one host, in id order.
    fn list_series(&self, host: Option<&str>) -> Vec<(SeriesId, SeriesMeta)>;

    /// Stores points and progress atomically and durably (WAL).
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Stored progress of a host's agent, if any.
    fn agent_progress(&self, host: &str) -> Result<Option<AgentProgress>, StoreError>;

    /// Raw points of a series with `start_ms <= t < end_ms`, ascending, one per timestamp.
    fn read_range(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, f64)>, StoreError>;

    /// One-minute rollups with `start_ms <= bucket start < end_ms`, ascending, covering
    /// sealed and open data alike.
    fn read_rollups(&self, id: SeriesId, start_ms: i64, end_ms: i64) -> Result<Vec<Rollup>, StoreError>;

    /// The newest point of a series.
    fn latest(&self, id: SeriesId) -> Result<Option<(i64, f64)>, StoreError>;

    /// Inserts or replaces a host record.
    fn put_host(&self, rec: &HostRecord) -> Result<(), StoreError>;

    /// All host records, by host id.
    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;

    /// Seals blocks, writes rollups and applies retention as of `now_ms`.
    fn maintain(&self, now_ms: i64) -> Result<MaintenanceStats, StoreError>;

    /// Seals every open point regardless of age, flushes memtables and compacts:
    /// used at shutdown and by the storage benchmark.
    fn seal_all_and_compact(&self) -> Result<MaintenanceStats, StoreError>;

    /// Bytes the store occupies on disk (0 for in-memory stores).
    fn disk_bytes(&self) -> u64;

    /// Appends audit record `seq` (durably, like points). A `seq` already stored is refused
    /// with [`StoreError::AuditSeqTaken`]: the audit trail is append-only. The caller
    /// (`remediate::audit`) serializes appends, encodes and hash-chains the records.
    fn audit_append(&self, seq: u64, record: &[u8]) -> Result<(), StoreError>;

    /// Audit records with `seq >= from_seq`, ascending, at most `limit`.
    fn audit_scan(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// Audit records with `seq < before_seq`, descending, at most `limit` (newest first).
    fn audit_scan_back(&self, before_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The audit record with the highest sequence number.
    fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Stores a model-state value (bandit posteriors, adaptive thresholds...) under `key`,
    /// replacing any previous value. Keys are 1 to 512 bytes; use `part/name` prefixes.
    fn model_state_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// The model-state value under `key`.
    fn model_state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the model-state value under `key` (no error when absent).
    fn model_state_delete(&self, key: &str) -> Result<(), StoreError>;

    /// Model-state entries whose key starts with `prefix`, in key order.
    fn model_state_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// Start of the one-minute bucket holding `ts`.
pub fn minute_bucket(ts: i64) -> i64 {
    ts.div_euclid(60_000) * 60_000
}

//! The audit trail: every prediction that led to a decision, every decision, command,
//! outcome, halt, approval and workflow step, append-only and tamper-evident.
//!
//! Records form a hash chain: record `seq` carries `prev_hash` (the hash of record `seq - 1`,
//! all zeros for the first) and `hash = sha256(canonical encoding)` over every other field
//! (see [`record_hash`]). Sequence numbers start at 1 and have no gaps, and record times
//! never go backwards. [`AuditLog::verify`] walks the chain and reports the first broken
//! sequence number: a modified record (its hash no longer matches), a record whose hash was
//! recomputed after a change (the next record no longer links to it), a removed record (a
//! gap), or a removed tail (the chain ends before the head this process appended).
//!
//! Storage goes through the [`Store`] seam (`audit` column family, one value per sequence,
//! the record as JSON). Appends are serialized by one mutex held across the store write, so
//! the chain never forks; a reopened log continues from the stored head.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{Store, StoreError};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Records read from the store per page when scanning.
const PAGE: usize = 1024;
/// Results of one query when its `limit` is 0.
pub const DEFAULT_QUERY_LIMIT: usize = 1000;
/// Buffer of each live subscriber; a slower subscriber misses records (it is told how many).
const SUBSCRIBER_BUFFER: usize = 1024;

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A prediction crossed a threshold (model version, probability, top features).
    Prediction,
    /// A decision under policy (policy, alternatives considered, why; or why nothing).
    Decision,
    /// A command sent to an agent (the exact envelope).
    Command,
    /// A command's or action's outcome (agent report, or verification at the horizon).
    Outcome,
    /// Automation halted (too much of the fleet unhealthy).
    Halt,
    /// An operator approved or rejected a pending action.
    Approval,
    /// One step of a workflow (started, done, failed, rolled back, skipped).
    WorkflowStep,
    /// A workflow as a whole (started, succeeded, failed, rolled back).
    Workflow,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Prediction => "prediction",
            AuditKind::Decision => "decision",
            AuditKind::Command => "command",
            AuditKind::Outcome => "outcome",
            AuditKind::Halt => "halt",
            AuditKind::Approval => "approval",
            AuditKind::WorkflowStep => "workflow_step",
            AuditKind::Workflow => "workflow",
        }
    }
}

impl std::str::FromStr for AuditKind {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| AuditError::BadQuery(format!("unknown audit kind {s:?}")))
    }
}

/// What a caller appends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Ties together the prediction, decision, commands and outcomes of one action.
    pub action_id: String,
    pub kind: AuditKind,
    /// Host concerned ("" when fleet-wide, e.g. a halt).
    pub host: String,
    /// Resource concerned (workload, resource set, load balancer; "" when none).
    pub resource: String,
    pub detail: serde_json::Value,
}

/// A stored record: the entry plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time_ms: i64,
    pub action_id: String,
    pub kind: AuditKind,
    pub host: String,
    pub resource: String,
    pub detail: serde_json::Value,
    /// Hex sha256 of the previous record ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hex sha256 of this record's canonical encoding ([`record_hash`]).
    pub hash: String,
}

/// Filters of [`AuditLog::query`]; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditQuery {
    pub action_id: Option<String>,
    pub host: Option<String>,
    pub resource: Option<String>,
    pub kind: Option<AuditKind>,
    /// Records with `time_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Records with `time_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Records with `seq > after_seq` (paging, following).
    pub after_seq: Option<u64>,
    /// At most this many records (0: [`DEFAULT_QUERY_LIMIT`]).
    pub limit: usize,
    /// Keep the newest `limit` matches (still returned in ascending order) rather than the oldest.
    pub newest: bool,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// The first sequence number that is missing, altered or does not link to its predecessor.
    pub seq: u64,
    pub reason: String,
}

/// Result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records checked (up to the first break).
    pub records: u64,
    /// Last intact record (seq, hash); keep it elsewhere to detect a removed tail after a restart.
    pub head: Option<(u64, String)>,
    pub broken: Option<BrokenLink>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit storage: {0}")]
    Store(#[from] StoreError),
    #[error("audit record {seq} cannot be read: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("audit entry: {0}")]
    Invalid(String),
    #[error("audit query: {0}")]
    BadQuery(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub appended: AtomicU64,
    pub append_errors: AtomicU64,
}

#[derive(Debug, Clone)]
struct Head {
    seq: u64,
    hash: String,
    time_ms: i64,
}

/// The append-only, hash-chained audit log.
pub struct AuditLog {
    store: Arc<dyn Store>,
    head: Mutex<Head>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    live: tokio::sync::broadcast::Sender<AuditRecord>,
    pub stats: AuditStats,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `v` as JSON with object keys sorted at every level (independent of how the map
/// type orders keys), so the hash of a record does not depend on serde_json features.
fn canonical_json(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            out.push(b'{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(x, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// The hash of a record: hex sha256 over a domain tag, then `seq` and `time_ms` as 8 bytes
/// big-endian, then `action_id`, `kind`, `host`, `resource`, canonical JSON of `detail`
/// (keys sorted) and `prev_hash`, each as an 8-byte big-endian length and the UTF-8 bytes.
pub fn record_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(b"augur-audit-v1\n");
    h.update(r.seq.to_be_bytes());
    h.update(r.time_ms.to_be_bytes());
    let mut detail = Vec::new();
    canonical_json(&r.detail, &mut detail);
    for field in [r.action_id.as_bytes(), r.kind.as_str().as_bytes(), r.host.as_bytes(), r.resource.as_bytes(), &detail]
    {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.update((r.prev_hash.len() as u64).to_be_bytes());
    h.update(r.prev_hash.as_bytes());
    hex(&h.finalize())
}

fn decode(seq: u64, bytes: &[u8]) -> Result<AuditRecord, AuditError> {
    let r: AuditRecord =
        serde_json::from_slice(bytes).map_err(|e| AuditError::Corrupt { seq, reason: format!("not a record: {e}") })?;
    if r.seq != seq {
        return Err(AuditError::Corrupt { seq, reason: format!("stored under {seq} but says seq {}", r.seq) });
    }
    Ok(r)
}

impl AuditQuery {
    fn matches(&self, r: &AuditRecord) -> bool {
        self.action_id.as_ref().is_none_or(|a| *a == r.action_id)
            && self.host.as_ref().is_none_or(|h| *h == r.host)
            && self.resource.as_ref().is_none_or(|x| *x == r.resource)
            && self.kind.is_none_or(|k| k == r.kind)
            && self.since_ms.is_none_or(|t| r.time_ms >= t)
            && self.until_ms.is_none_or(|t| r.time_ms < t)
    }
}

impl AuditLog {
    /// Opens the log over `store`, continuing the stored chain (its head is read, not
    /// verified: call [`AuditLog::verify`] for that).
    pub fn open(store: Arc<dyn Store>) -> Result<Self, AuditError> {
        Self::with_clock(store, Box::new(augur_core::time::now_ms))
    }

    /// [`AuditLog::open`] with a clock (milliseconds since the epoch), for tests.
    pub fn with_clock(store: Arc<dyn Store>, clock: Box<dyn Fn() -> i64 + Send + Sync>) -> Result<Self, AuditError> {
        let head = match store.audit_last()? {
            Some((seq, bytes)) => {
                let r = decode(seq, &bytes)?;
                Head { seq, hash: r.hash, time_ms: r.time_ms }
            }
            None => Head { seq: 0, hash: GENESIS_HASH.to_owned(), time_ms: i64::MIN },
        };
        let (live, _) = tokio::sync::broadcast::channel(SUBSCRIBER_BUFFER);
        Ok(AuditLog { store, head: Mutex::new(head), clock, live, stats: AuditStats::default() })
    }

    /// Appends an entry: assigns the next sequence number and a time no earlier than the
    /// previous record's, links it to the previous hash, stores it durably, and returns it.
    /// Blocking (one store write); appends are serialized.
    pub fn append(&self, e: AuditEntry) -> Result<AuditRecord, AuditError> {
        if e.action_id.is_empty() && !matches!(e.kind, AuditKind::Halt) {
            return Err(AuditError::Invalid(format!("a {} record needs an action id", e.kind.as_str())));
        }
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let mut r = AuditRecord {
            seq: head.seq + 1,
            time_ms: (self.clock)().max(head.time_ms),
            action_id: e.action_id,
            kind: e.kind,
            host: e.host,
            resource: e.resource,
            detail: e.detail,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        let bytes = serde_json::to_vec(&r).map_err(|e| AuditError::Invalid(e.to_string()))?;
        if let Err(e) = self.store.audit_append(r.seq, &bytes) {
            self.stats.append_errors.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        *head = Head { seq: r.seq, hash: r.hash.clone(), time_ms: r.time_ms };
        drop(head);
        self.stats.appended.fetch_add(1, Ordering::Relaxed);
        let _ = self.live.send(r.clone());
        Ok(r)
    }

    /// Appends the audit counters to a Prometheus text page.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::http::metric;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        metric(
            out,
            "augur_audit_records_appended_total",
            "counter",
            "Audit records appended.",
            &[("", n(&self.stats.appended))],
        );
        metric(
            out,
            "augur_audit_append_errors_total",
            "counter",
            "Audit appends that failed.",
            &[("", n(&self.stats.append_errors))],
        );
        metric(
            out,
            "augur_audit_head_seq",
            "gauge",
            "Sequence number of the last audit record.",
            &[("", self.head_seq() as f64)],
        );
    }

    /// Records appended from now on, as they are appended.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AuditRecord> {
        self.live.subscribe()
    }

    /// Sequence number of the last appended record (0 when empty).
    pub fn head_seq(&self) -> u64 {
        self.head.lock().unwrap_or_else(PoisonError::into_inner).seq
    }

    /// Matching records in ascending sequence order. Blocking: reads the store from the
    /// first record that can match (a time bound is found by binary search, as record times
    /// never go backwards) and stops at the limit; `newest` reads backwards from the end.
    pub fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, AuditError> {
        if let (Some(a), Some(b)) = (q.since_ms, q.until_ms)
            && a > b
        {
            return Err(AuditError::BadQuery(format!("since_ms {a} is after until_ms {b}")));
        }
        let limit = if q.limit == 0 { DEFAULT_QUERY_LIMIT } else { q.limit };
        let after = q.after_seq.unwrap_or(0);
        let mut out = Vec::new();
        if q.newest {
            let mut before = match q.until_ms {
                Some(t) => self.first_seq_at_or_after(t)?,
                None => u64::MAX,
            };
            'back: loop {
                let page = self.store.audit_scan_back(before, PAGE)?;
                let Some(&(oldest, _)) = page.last() else { break };
                for (seq, bytes) in &page {
                    if *seq <= after {
                        break 'back;
                    }
                    let r = decode(*seq, bytes)?;
                    if q.since_ms.is_some_and(|t| r.time_ms < t) {
                        break 'back;
                    }
                    if q.matches(&r) {
                        out.push(r);
                        if out.len() >= limit {
                            break 'back;
                        }
                    }
                }
                if page.len() < PAGE {
                    break;
                }
                before = oldest;
            }
            out.reverse();
        } else {
            let mut from = after.saturating_add(1);
            if let Some(t) = q.since_ms {
                from = from.max(self.first_seq_at_or_after(t)?);
            }
            'fwd: loop {
                let page = self.store.audit_scan(from, PAGE)?;
                let Some(&(last, _)) = page.last() else { break };
                for (seq, bytes) in &page {
                    let r = decode(*seq, bytes)?;
                    if q.until_ms.is_some_and(|t| r.time_ms >= t) {
                        break 'fwd;
                    }
                    if q.matches(&r) {
                        out.push(r);
                        if out.len() >= limit {
                            break 'fwd;
                        }
                    }
                }
                if page.len() < PAGE || last == u64::MAX {
                    break;
                }
                from = last + 1;
            }
        }
        Ok(out)
    }

    /// The first sequence number whose record is at or after `t_ms` (one past the head when
    /// none is): record times never go backwards, so a binary search over sequence numbers
    /// finds it in O(log n) point reads.
    fn first_seq_at_or_after(&self, t_ms: i64) -> Result<u64, AuditError> {
        let (mut lo, mut hi) = (1u64, self.head_seq().saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.store.audit_scan(mid, 1)?.into_iter().next() {
                Some((seq, bytes)) if seq < hi => {
                    if decode(seq, &bytes)?.time_ms >= t_ms {
                        hi = mid;
                    } else {
                        lo = seq + 1;
                    }
                }
                // Nothing stored in [mid, hi).
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Walks the whole chain and reports the first broken link. Blocking.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let expected_head = self.head.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut prev: Option<(u64, String)> = None;
        let mut records = 0u64;
        let mut from = 1u64;
        let broken = |seq: u64, reason: String| Some(BrokenLink { seq, reason });
        let report = |records, head, broken| Ok(VerifyReport { records, head, broken });
        loop {
            let page = self.store.audit_scan(from, PAGE)?;
            for (seq, bytes) in &page {
                let seq = *seq;
                let want = prev.as_ref().map_or(1, |(s, _)| s + 1);
                if seq != want {
                    return report(
                        records,
                        prev,
                        broken(want, format!("record {want} is missing (next stored is {seq})")),
                    );
                }
                let r = match decode(seq, bytes) {
                    Ok(r) => r,
                    Err(e) => return report(records, prev, broken(seq, e.to_string())),
                };
                let want_prev = prev.as_ref().map_or(GENESIS_HASH, |(_, h)| h.as_str());
                if r.prev_hash != want_prev {
                    return report(
                        records,
                        prev,
                        broken(seq, format!("prev_hash does not match the hash of record {}", seq - 1)),
                    );
                }
                if record_hash(&r) != r.hash {
                    return report(records, prev, broken(seq, "contents do not match its hash".into()));
                }
                records += 1;
                prev = Some((seq, r.hash));
            }
            match page.last() {
                Some(&(last, _)) if page.len() == PAGE && last < u64::MAX => from = last + 1,
                _ => break,
            }
        }
        let stored = prev.as_ref().map_or(0, |(s, _)| *s);
        if stored < expected_head.seq {
            return report(
                records,
                prev,
                broken(
                    stored + 1,
                    format!("the chain ends at {stored} but {} records were appended", expected_head.seq),
                ),
            );
        }
        if stored == expected_head.seq && stored > 0 && prev.as_ref().is_some_and(|(_, h)| *h != expected_head.hash) {
            return report(records, prev, broken(stored, "the last record is not the one appended".into()));
        }
        report(records, prev, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;
    use crate::storage::memory::MemoryStore;
    use crate::storage::rocks::{RocksStore, tamper_audit_for_test};
    use serde_json::json;
    use std::sync::atomic::AtomicI64;

    fn entry(action: &str, kind: AuditKind, resource: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry { action_id: action.into(), kind, host: "h1".into(), resource: resource.into(), detail }
    }

    /// A log over `store` whose clock starts at 1000 and advances 10 ms per call.
    fn log_at(store: Arc<dyn Store>) -> AuditLog {
        let t = Arc::new(AtomicI64::new(1000));
        AuditLog::with_clock(store, Box::new(move || t.fetch_add(10, Ordering::Relaxed))).expect("open")
    }

    fn fill(log: &AuditLog, n: usize) -> Vec<AuditRecord> {
        (0..n)
            .map(|i| {
                let kind = if i % 2 == 0 { AuditKind::Command } else { AuditKind::Outcome };
                let res = if i % 3 == 0 { "web" } else { "db" };
                log.append(entry(&format!("a{}", i / 2), kind, res, json!({"i": i, "z": [1, {"b": 2, "a": 1}]})))
                    .expect("append")
            })
            .collect()
    }

    #[test]
    fn records_chain_and_hash_is_independent_of_key_order() {
        let log = log_at(Arc::new(MemoryStore::new(StoreOptions::default())));
        let r = fill(&log, 3);
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(r[0].prev_hash, GENESIS_HASH);
        assert_eq!(r[1].prev_hash, r[0].hash);
        assert_eq!(r[2].prev_hash, r[1].hash);
        assert_eq!(record_hash(&r[1]), r[1].hash);
        // Same content, keys in another order: same hash. Any changed field: another hash.
        let mut other = r[1].clone();
        other.detail = serde_json::from_str(r#"{"z":[1,{"a":1,"b":2}],"i":1}"#).expect("json");
        assert_eq!(record_hash(&other), r[1].hash);
        for change in [
            |r: &mut AuditRecord| r.time_ms += 1,
            |r: &mut AuditRecord| r.host.push('x'),
            |r: &mut AuditRecord| r.detail["i"] = json!(2),
            |r: &mut AuditRecord| r.kind = AuditKind::Halt,
            |r: &mut AuditRecord| r.prev_hash = GENESIS_HASH.into(),
        ] {
            let mut c = r[1].clone();
            change(&mut c);
            assert_ne!(record_hash(&c), r[1].hash);
        }
        // Field boundaries are unambiguous.
        let mut a = r[1].clone();
        let mut b = r[1].clone();
        (a.host, a.resource) = ("ab".into(), "c".into());
        (b.host, b.resource) = ("a".into(), "bc".into());
        assert_ne!(record_hash(&a), record_hash(&b));
        assert!(log.verify().expect("verify").ok());
    }

    #[test]
    fn time_never_goes_backwards_and_empty_action_ids_are_refused() {
        let t = Arc::new(AtomicI64::new(5000));
        let tc = t.clone();
        let log = AuditLog::with_clock(
            Arc::new(MemoryStore::new(StoreOptions::default())),
            Box::new(move || tc.load(Ordering::Relaxed)),
        )
        .expect("open");
        let a = log.append(entry("x", AuditKind::Decision, "web", json!(null))).expect("append");
        t.store(100, Ordering::Relaxed); // the wall clock steps back
        let b = log.append(entry("x", AuditKind::Outcome, "web", json!(null))).expect("append");
        assert_eq!((a.time_ms, b.time_ms), (5000, 5000));
        assert!(matches!(log.append(entry("", AuditKind::Command, "web", json!(1))), Err(AuditError::Invalid(_))));
        log.append(AuditEntry {
            action_id: "".into(),
            kind: AuditKind::Halt,
            host: "".into(),
            resource: "".into(),
            detail: json!({}),
        })
        .expect("a fleet-wide halt needs no action id");
    }

    #[test]
    fn queries_filter_by_action_resource_kind_time_and_limit() {
        let log = log_at(Arc::new(MemoryStore::new(StoreOptions::default())));
        let all = fill(&log, 12); // times 1000, 1010, ..., 1110
        let seqs = |q: AuditQuery| log.query(&q).expect("query").iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(AuditQuery::default()), (1..=12).collect::<Vec<_>>());
        assert_eq!(seqs(AuditQuery { action_id: Some("a2".into()), ..Default::default() }), vec![5, 6]);
        assert_eq!(seqs(AuditQuery { resource: Some("web".into()), ..Default::default() }), vec![1, 4, 7, 10]);
        assert_eq!(
            seqs(AuditQuery { kind: Some(AuditKind::Outcome), resource: Some("web".into()), ..Default::default() }),
            vec![4, 10]
        );
        assert_eq!(
            seqs(AuditQuery { since_ms: Some(1020), until_ms: Some(1050), ..Default::default() }),
            vec![3, 4, 5]
        );
        assert_eq!(seqs(AuditQuery { limit: 2, ..Default::default() }), vec![1, 2]);
        assert_eq!(seqs(AuditQuery { limit: 2, newest: true, ..Default::default() }), vec![11, 12]);
        assert_eq!(seqs(AuditQuery { after_seq: Some(10), ..Default::default() }), vec![11, 12]);
        assert_eq!(
            log.query(&AuditQuery { action_id: Some("a0".into()), ..Default::default() }).expect("q")[0],
            all[0]
        );
        assert!(matches!(
            log.query(&AuditQuery { since_ms: Some(5), until_ms: Some(1), ..Default::default() }),
            Err(AuditError::BadQuery(_))
        ));
        assert_eq!("workflow_step".parse::<AuditKind>().expect("known"), AuditKind::WorkflowStep);
        assert!("nope".parse::<AuditKind>().is_err());
    }

    #[test]
    fn queries_page_through_more_records_than_one_store_page() {
        let log = log_at(Arc::new(MemoryStore::new(StoreOptions::default())));
        for i in 0..(PAGE + 5) {
            log.append(entry("a", AuditKind::Command, if i == PAGE + 3 { "rare" } else { "web" }, json!(i)))
                .expect("append");
        }
        let r = log.query(&AuditQuery { resource: Some("rare".into()), ..Default::default() }).expect("query");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].seq, PAGE as u64 + 4);
        assert_eq!(log.verify().expect("verify").records, PAGE as u64 + 5);
    }

    #[test]
    fn queries_match_a_plain_filter_over_every_record_across_pages_both_ways() {
        let log = log_at(Arc::new(MemoryStore::new(StoreOptions::default())));
        let kinds = [AuditKind::Decision, AuditKind::Command, AuditKind::Outcome];
        let all: Vec<AuditRecord> = (0..(2 * PAGE + 300))
            .map(|i| {
                let e = entry(&format!("a{}", i % 97), kinds[i % 3], ["web", "db", "lb"][i % 5 % 3], json!(i));
                log.append(e).expect("append")
            })
            .collect();
        let t_end = all.last().expect("records").time_ms + 10;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for _ in 0..300 {
            let mut q = AuditQuery::default();
            if next(3) == 0 {
                q.action_id = Some(format!("a{}", next(100)));
            }
            if next(3) == 0 {
                q.resource = Some(["web", "db", "lb"][next(3) as usize].into());
            }
            if next(3) == 0 {
                q.kind = Some(kinds[next(3) as usize]);
            }
            if next(2) == 0 {
                q.since_ms = Some(900 + next((t_end - 800) as u64) as i64);
            }
            if next(2) == 0 {
                q.until_ms = Some(q.since_ms.unwrap_or(900) + next(30_000) as i64);
            }
            if next(3) == 0 {
                q.after_seq = Some(next(all.len() as u64 + 5));
            }
            q.limit = [0, 1, 7, 500, 5000][next(5) as usize];
            q.newest = next(2) == 0;
            let matching: Vec<&AuditRecord> =
                all.iter().filter(|r| q.matches(r) && q.after_seq.is_none_or(|a| r.seq > a)).collect();
            let limit = if q.limit == 0 { DEFAULT_QUERY_LIMIT } else { q.limit };
            let want: Vec<u64> = if q.newest {
                matching[matching.len().saturating_sub(limit)..].iter().map(|r| r.seq).collect()
            } else {
                matching.iter().take(limit).map(|r| r.seq).collect()
            };
            let got: Vec<u64> = log.query(&q).expect("query").iter().map(|r| r.seq).collect();
            assert_eq!(got, want, "{q:?}");
        }
    }

    #[test]
    fn verify_finds_the_first_modified_or_removed_record_in_memory() {
        let store = Arc::new(MemoryStore::new(StoreOptions::default()));
        let log = log_at(store.clone());
        let recs = fill(&log, 6);
        assert_eq!(
            log.verify().expect("verify"),
            VerifyReport { records: 6, head: Some((6, recs[5].hash.clone())), broken: None }
        );

        // A changed detail, hash left alone.
        let mut bad = recs[2].clone();
        bad.detail = json!({"i": 99});
        store.tamper_audit_for_test(3, Some(serde_json::to_vec(&bad).expect("json")));
        let v = log.verify().expect("verify");
        assert_eq!((v.records, v.broken.as_ref().map(|b| b.seq)), (2, Some(3)), "{v:?}");
        assert!(v.broken.expect("broken").reason.contains("hash"));

        // The same change with its hash recomputed: the next record no longer links.
        bad.hash = record_hash(&bad);
        store.tamper_audit_for_test(3, Some(serde_json::to_vec(&bad).expect("json")));
        let v = log.verify().expect("verify");
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(4), "{v:?}");
        assert!(v.broken.expect("broken").reason.contains("prev_hash"));

        // Restored, then a record removed from the middle.
        store.tamper_audit_for_test(3, Some(serde_json::to_vec(&recs[2]).expect("json")));
        assert!(log.verify().expect("verify").ok());
        store.tamper_audit_for_test(5, None);
        let v = log.verify().expect("verify");
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(5), "{v:?}");
        assert!(v.broken.expect("broken").reason.contains("missing"));

        // The tail removed: only the head this process appended shows it.
        store.tamper_audit_for_test(5, Some(serde_json::to_vec(&recs[4]).expect("json")));
        store.tamper_audit_for_test(6, None);
        let v = log.verify().expect("verify");
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(6), "{v:?}");

        // Garbage bytes.
        store.tamper_audit_for_test(6, Some(serde_json::to_vec(&recs[5]).expect("json")));
        store.tamper_audit_for_test(1, Some(b"{not json".to_vec()));
        assert_eq!(log.verify().expect("verify").broken.map(|b| b.seq), Some(1));
    }

    #[test]
    fn chain_survives_reopen_and_tampering_on_disk_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open =
            || -> Arc<dyn Store> { Arc::new(RocksStore::open(dir.path(), StoreOptions::default()).expect("open")) };
        let recs = {
            let log = log_at(open());
            fill(&log, 4)
        };
        let more = {
            let log = AuditLog::open(open()).expect("reopen");
            assert_eq!(log.head_seq(), 4);
            let r = log.append(entry("a9", AuditKind::Workflow, "web", json!({"after": "restart"}))).expect("append");
            assert_eq!((r.seq, r.prev_hash.as_str()), (5, recs[3].hash.as_str()));
            assert!(r.time_ms >= recs[3].time_ms);
            assert_eq!(log.verify().expect("verify").records, 5);
            r
        };
        // Modify record 2 on disk (hash recomputed to hide it) while the aggregator is down.
        let mut forged = recs[1].clone();
        forged.detail = json!({"i": "forged"});
        forged.hash = record_hash(&forged);
        tamper_audit_for_test(dir.path(), 2, Some(&serde_json::to_vec(&forged).expect("json")));
        let v = AuditLog::open(open()).expect("reopen").verify().expect("verify");
        assert_eq!(v.broken.map(|b| b.seq), Some(3));
        // Put it back, then delete record 3.
        tamper_audit_for_test(dir.path(), 2, Some(&serde_json::to_vec(&recs[1]).expect("json")));
        assert!(AuditLog::open(open()).expect("reopen").verify().expect("verify").ok());
        tamper_audit_for_test(dir.path(), 3, None);
        let log = AuditLog::open(open()).expect("reopen");
        let v = log.verify().expect("verify");
        assert_eq!((v.records, v.broken.map(|b| b.seq)), (2, Some(3)));
        // The head is still record 5, so appends continue the stored chain.
        assert_eq!(log.append(entry("a10", AuditKind::Outcome, "web", json!(1))).expect("append").prev_hash, more.hash);
    }

    #[tokio::test]
    async fn subscribers_see_new_records() {
        let log = log_at(Arc::new(MemoryStore::new(StoreOptions::default())));
        let mut rx = log.subscribe();
        let r = log.append(entry("a", AuditKind::Decision, "web", json!({"why": "x"}))).expect("append");
        assert_eq!(rx.recv().await.expect("record"), r);
    }
}

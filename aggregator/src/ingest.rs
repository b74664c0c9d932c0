//! Ingest: validates one agent session's batches and turns them into storage writes.
//!
//! A [`Session`] holds what one `Telemetry.Connect` stream has defined: its series
//! references and how far the agent incarnation's batches are stored. For each batch it
//! registers new series definitions, drops batches already stored (replays after a
//! reconnect), rejects bad points with a reason while keeping the good ones, and writes
//! accepted points together with the new progress in one atomic store write. The answer
//! is the [`Ack`] the agent receives.
//!
//! This module is synchronous and talks to the store through [`Store`]; the server runs
//! it off the async runtime.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use augur_proto::convert;
use augur_proto::v1::{Ack, BatchProblem, SampleBatch, SeriesDef};

use crate::features::FeatureEngine;
use crate::storage::{AgentProgress, SeriesId, Store, StoreError, WriteBatch};

/// gRPC status codes carried in [`Ack::code`].
pub const CODE_OK: i32 = 0;
pub const CODE_INVALID_ARGUMENT: i32 = 3;

/// At most this many distinct problems are listed in one Ack.
const MAX_PROBLEMS: usize = 20;

/// Limits applied to every batch.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    pub max_future_skew_ms: i64,
    pub max_past_age_ms: i64,
    pub max_series_per_host: usize,
    pub max_points_per_batch: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_future_skew_ms: 300_000,
            max_past_age_ms: 14 * 86_400_000,
            max_series_per_host: 100_000,
            max_points_per_batch: 200_000,
        }
    }
}

/// A batch that cannot be taken at all: the stream is ended with this error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("batch sequence must start at 1 (got 0)")]
    ZeroSequence,
    #[error("batch has {points} points; the limit is {limit}")]
    TooManyPoints { points: usize, limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts of one processed batch, for the host registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub accepted: u64,
    pub rejected: u64,
    /// Batches missing before this one (sequence gap).
    pub lost_batches: u64,
    pub new_series: u64,
    pub duplicate: bool,
}

/// Where a series reference of this stream points.
#[derive(Debug, Clone)]
enum Slot {
    Series(SeriesId),
    Refused(String),
}

/// State of one agent stream.
#[derive(Debug)]
pub struct Session {
    host_id: String,
    incarnation: u64,
    acked: u64,
    refs: HashMap<u32, Slot>,
    host_series: usize,
    /// Fed with every stored point.
    features: Option<Arc<FeatureEngine>>,
}

#[derive(Default)]
struct Problems {
    by_ref: Vec<BatchProblem>,
    rejected: u64,
}

impl Problems {
    fn add(&mut self, r: u32, reason: impl FnOnce() -> String, n: u32) {
        self.rejected += u64::from(n);
        if let Some(p) = self.by_ref.iter_mut().find(|p| p.r#ref == r) {
            p.points += n;
        } else if self.by_ref.len() < MAX_PROBLEMS {
            self.by_ref.push(BatchProblem { r#ref: r, reason: reason(), points: n });
        }
    }
}

impl Session {
    /// Starts a session for `host_id`'s agent `incarnation`, resuming from what the store
    /// says was already stored for that incarnation.
    pub fn open(store: &dyn Store, host_id: &str, incarnation: u64) -> Result<Self, StoreError> {
        let acked = match store.agent_progress(host_id)? {
            Some(p) if p.incarnation == incarnation => p.acked_sequence,
            _ => 0,
        };
        Ok(Session {
            host_id: host_id.to_owned(),
            incarnation,
            acked,
            refs: HashMap::new(),
            host_series: store.series_count(host_id),
            features: None,
        })
    }

    /// Feeds every point this session stores to `engine` as well.
    pub fn with_features(mut self, engine: Arc<FeatureEngine>) -> Self {
        self.features = Some(engine);
        self
    }

    /// Highest sequence durably stored for this incarnation.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Processes one batch at server time `now_ms` and returns the Ack to send.
    pub fn ingest(
        &mut self,
        store: &dyn Store,
        batch: &SampleBatch,
        now_ms: i64,
        limits: &IngestLimits,
    ) -> Result<(Ack, BatchStats), IngestError> {
        if batch.sequence == 0 {
            return Err(IngestError::ZeroSequence);
        }
        let total_points: usize = batch.series.iter().map(|s| s.values.len().max(s.timestamps_ms.len())).sum();
        if total_points > limits.max_points_per_batch {
            return Err(IngestError::TooManyPoints { points: total_points, limit: limits.max_points_per_batch });
        }
        let mut stats = BatchStats::default();
        let mut problems = Problems::default();

        // Definitions first: a replayed batch may define series later batches use.
        for def in &batch.defs {
            let slot = self.define(store, def, limits, &mut stats)?;
            self.refs.insert(def.r#ref, slot);
        }

        if batch.sequence <= self.acked {
            stats.duplicate = true;
            let ack = Ack {
                acked_sequence: self.acked,
                sequence: batch.sequence,
                code: CODE_OK,
                message: format!("sequence {} already stored", batch.sequence),
                duplicate: true,
                ..Default::default()
            };
            return Ok((ack, stats));
        }
        stats.lost_batches = batch.sequence - self.acked - 1;

        let lo = now_ms.saturating_sub(limits.max_past_age_ms);
        let hi = now_ms.saturating_add(limits.max_future_skew_ms);
        let mut write = WriteBatch { points: Vec::with_capacity(total_points), progress: None };
        for sp in &batch.series {
            let id = match self.refs.get(&sp.r#ref) {
                Some(Slot::Series(id)) => *id,
                Some(Slot::Refused(why)) => {
                    problems.add(sp.r#ref, || why.clone(), sp.values.len() as u32);
                    continue;
                }
                None => {
                    problems.add(
                        sp.r#ref,
                        || format!("series ref {} was not defined on this stream", sp.r#ref),
                        sp.values.len() as u32,
                    );
                    continue;
                }
            };
            if sp.timestamps_ms.len() != sp.values.len() {
                let n = sp.values.len().max(sp.timestamps_ms.len()) as u32;
                problems.add(
                    sp.r#ref,
                    || format!("{} timestamps but {} values", sp.timestamps_ms.len(), sp.values.len()),
                    n,
                );
                continue;
            }
            for (&ts, &v) in sp.timestamps_ms.iter().zip(&sp.values) {
                if !v.is_finite() {
                    problems.add(sp.r#ref, || format!("non-finite value {v} at {ts}"), 1);
                } else if ts > hi {
                    problems.add(
                        sp.r#ref,
                        || {
                            format!(
                                "timestamp {ts} is {}s in the future (limit {}s)",
                                (ts - now_ms) / 1000,
                                limits.max_future_skew_ms / 1000
                            )
                        },
                        1,
                    );
                } else if ts < lo {
                    problems.add(
                        sp.r#ref,
                        || format!("timestamp {ts} is older than the accepted {}s", limits.max_past_age_ms / 1000),
                        1,
                    );
                } else {
                    write.points.push((id, ts, v));
                }
            }
        }
        stats.accepted = write.points.len() as u64;
        stats.rejected = problems.rejected;
        write.progress = Some((
            self.host_id.clone(),
            AgentProgress { incarnation: self.incarnation, acked_sequence: batch.sequence },
        ));
        store.write(&write)?;
        self.acked = batch.sequence;
        if let Some(f) = &self.features {
            f.observe(&write.points, &|id| store.series_meta(id));
        }

        let (code, message) = if problems.rejected == 0 {
            (CODE_OK, String::new())
        } else {
            let mut m = format!("{} of {} points rejected", problems.rejected, problems.rejected + stats.accepted);
            for p in problems.by_ref.iter().take(3) {
                let _ = write!(m, "; ref {}: {}", p.r#ref, p.reason);
            }
            (CODE_INVALID_ARGUMENT, m)
        };
        let ack = Ack {
            acked_sequence: self.acked,
            sequence: batch.sequence,
            code,
            message,
            accepted_points: stats.accepted as u32,
            rejected_points: stats.rejected as u32,
            problems: problems.by_ref,
            duplicate: false,
        };
        Ok((ack, stats))
    }

    fn define(
        &mut self,
        store: &dyn Store,
        def: &SeriesDef,
        limits: &IngestLimits,
        stats: &mut BatchStats,
    ) -> Result<Slot, StoreError> {
        if convert::kind_from_wire(def.kind).is_none() {
            return Ok(Slot::Refused(format!("unknown metric kind {}", def.kind)));
        }
        let key = convert::key_of_def(def);
        if let Err(e) = key.validate() {
            return Ok(Slot::Refused(format!("invalid series definition: {e}")));
        }
        // A series this host already has never counts against the limit.
        let known = store.lookup_series(&self.host_id, &key).is_some();
        if !known && self.host_series >= limits.max_series_per_host {
            return Ok(Slot::Refused(format!("host has reached its limit of {} series", limits.max_series_per_host)));
        }
        let id = store.resolve_series(&self.host_id, &key)?;
        if !known {
            self.host_series += 1;
            stats.new_series += 1;
        }
        Ok(Slot::Series(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;
    use crate::storage::memory::MemoryStore;
    use augur_proto::v1::{self, SeriesPoints};

    const NOW: i64 = 1_800_000_000_000;

    fn def(r: u32, metric: &str) -> SeriesDef {
        SeriesDef {
            r#ref: r,
            resource: "host".into(),
            metric: metric.into(),
            unit: "bytes".into(),
            kind: v1::MetricKind::Gauge as i32,
            labels: Default::default(),
        }
    }

    fn pts(r: u32, p: &[(i64, f64)]) -> SeriesPoints {
        SeriesPoints {
            r#ref: r,
            timestamps_ms: p.iter().map(|x| x.0).collect(),
            values: p.iter().map(|x| x.1).collect(),
        }
    }

    fn batch(seq: u64, defs: Vec<SeriesDef>, series: Vec<SeriesPoints>) -> SampleBatch {
        SampleBatch { sequence: seq, defs, series, dropped_before: 0 }
    }

    fn setup() -> (MemoryStore, Session, IngestLimits) {
        let store = MemoryStore::new(StoreOptions::default());
        let s = Session::open(&store, "h1", 7).unwrap();
        (store, s, IngestLimits::default())
    }

    fn all_points(store: &MemoryStore, host: &str) -> usize {
        store.list_series(Some(host)).iter().map(|(id, _)| store.read_range(*id, 0, i64::MAX).unwrap().len()).sum()
    }

    #[test]
    fn good_batch_is_stored_and_acked() {
        let (store, mut s, lim) = setup();
        let b = batch(
            1,
            vec![def(0, "a"), def(1, "b")],
            vec![pts(0, &[(NOW, 1.0)]), pts(1, &[(NOW, 2.0), (NOW + 1000, 3.0)])],
        );
        let (ack, st) = s.ingest(&store, &b, NOW, &lim).unwrap();
        assert_eq!((ack.code, ack.acked_sequence, ack.accepted_points), (CODE_OK, 1, 3));
        assert_eq!(st.new_series, 2);
        assert_eq!(all_points(&store, "h1"), 3);
        assert_eq!(store.agent_progress("h1").unwrap(), Some(AgentProgress { incarnation: 7, acked_sequence: 1 }));
    }

    #[test]
    fn bad_points_are_rejected_with_reasons_and_good_ones_kept() {
        let (store, mut s, lim) = setup();
        let b = batch(
            1,
            vec![def(0, "a"), def(1, "bad-name")],
            vec![
                pts(0, &[(NOW, f64::NAN), (NOW + 1, f64::INFINITY), (NOW + 2, 5.0)]),
                pts(0, &[(NOW + 86_400_000, 1.0), (NOW - 30 * 86_400_000, 1.0)]),
                pts(1, &[(NOW, 1.0)]),
                pts(9, &[(NOW, 1.0)]),
                SeriesPoints { r#ref: 0, timestamps_ms: vec![NOW + 3], values: vec![] },
            ],
        );
        let (ack, st) = s.ingest(&store, &b, NOW, &lim).unwrap();
        assert_eq!(ack.code, CODE_INVALID_ARGUMENT);
        assert_eq!(ack.accepted_points, 1);
        assert_eq!(st.rejected, 7);
        let reasons: Vec<&str> = ack.problems.iter().map(|p| p.reason.as_str()).collect();
        let all = reasons.join(" | ");
        for needle in ["non-finite", "invalid series definition", "not defined on this stream"] {
            assert!(all.contains(needle), "{needle:?} missing from {all}");
        }
        assert!(ack.message.contains("7 of 8 points rejected"), "{}", ack.message);
        assert_eq!(all_points(&store, "h1"), 1);
        // The batch is done with: acked, and a replay is a duplicate.
        assert_eq!(ack.acked_sequence, 1);
    }

    #[test]
    fn future_and_past_reasons_are_specific() {
        let (store, mut s, lim) = setup();
        let b = batch(1, vec![def(0, "a")], vec![pts(0, &[(NOW + 3_600_000, 1.0)])]);
        let (ack, _) = s.ingest(&store, &b, NOW, &lim).unwrap();
        assert!(ack.problems[0].reason.contains("in the future"), "{:?}", ack.problems);
        let b = batch(2, vec![], vec![pts(0, &[(0, 1.0)])]);
        let (ack, _) = s.ingest(&store, &b, NOW, &lim).unwrap();
        assert!(ack.problems[0].reason.contains("older than"), "{:?}", ack.problems);
    }

    #[test]
    fn replays_are_deduplicated_and_gaps_counted() {
        let (store, mut s, lim) = setup();
        let b1 = batch(1, vec![def(0, "a")], vec![pts(0, &[(NOW, 1.0)])]);
        s.ingest(&store, &b1, NOW, &lim).unwrap();
        let (ack, st) = s.ingest(&store, &b1, NOW, &lim).unwrap();
        assert!(ack.duplicate && st.duplicate);
        assert_eq!(all_points(&store, "h1"), 1);
        // Gap: batches 2..4 lost by the agent's spool.
        let b5 = batch(5, vec![], vec![pts(0, &[(NOW + 5000, 5.0)])]);
        let (ack, st) = s.ingest(&store, &b5, NOW, &lim).unwrap();
        assert_eq!((ack.acked_sequence, st.lost_batches), (5, 3));
        // Out of order (older than acked): duplicate, nothing written.
        let b3 = batch(3, vec![], vec![pts(0, &[(NOW + 3000, 3.0)])]);
        let (ack, _) = s.ingest(&store, &b3, NOW, &lim).unwrap();
        assert!(ack.duplicate);
        assert_eq!(all_points(&store, "h1"), 2);
    }

    #[test]
    fn new_session_resumes_and_new_incarnation_restarts() {
        let (store, mut s, lim) = setup();
        s.ingest(&store, &batch(1, vec![def(0, "a")], vec![pts(0, &[(NOW, 1.0)])]), NOW, &lim).unwrap();
        s.ingest(&store, &batch(2, vec![], vec![pts(0, &[(NOW + 1000, 1.0)])]), NOW, &lim).unwrap();
        let s2 = Session::open(&store, "h1", 7).unwrap();
        assert_eq!(s2.acked(), 2);
        let mut s3 = Session::open(&store, "h1", 8).unwrap();
        assert_eq!(s3.acked(), 0);
        // The same series key maps to the same stored series across sessions.
        let (ack, st) =
            s3.ingest(&store, &batch(1, vec![def(3, "a")], vec![pts(3, &[(NOW + 2000, 1.0)])]), NOW, &lim).unwrap();
        assert_eq!((ack.acked_sequence, st.new_series), (1, 0));
        assert_eq!(store.list_series(Some("h1")).len(), 1);
    }

    #[test]
    fn defs_in_a_replayed_batch_are_still_registered() {
        let (store, mut s, lim) = setup();
        let b1 = batch(1, vec![def(0, "a")], vec![pts(0, &[(NOW, 1.0)])]);
        s.ingest(&store, &b1, NOW, &lim).unwrap();
        let mut s2 = Session::open(&store, "h1", 7).unwrap();
        s2.ingest(&store, &b1, NOW, &lim).unwrap();
        let (ack, _) = s2.ingest(&store, &batch(2, vec![], vec![pts(0, &[(NOW + 1000, 2.0)])]), NOW, &lim).unwrap();
        assert_eq!((ack.code, ack.accepted_points), (CODE_OK, 1));
    }

    #[test]
    fn series_limit_refuses_new_series_only() {
        let (store, mut s, mut lim) = setup();
        lim.max_series_per_host = 1;
        let b = batch(1, vec![def(0, "a"), def(1, "b")], vec![pts(0, &[(NOW, 1.0)]), pts(1, &[(NOW, 1.0)])]);
        let (ack, _) = s.ingest(&store, &b, NOW, &lim).unwrap();
        assert_eq!(ack.accepted_points, 1);
        assert!(ack.problems[0].reason.contains("limit of 1 series"), "{:?}", ack.problems);
        let mut s2 = Session::open(&store, "h1", 7).unwrap();
        let (ack, _) =
            s2.ingest(&store, &batch(2, vec![def(5, "a")], vec![pts(5, &[(NOW + 1, 1.0)])]), NOW, &lim).unwrap();
        assert_eq!(ack.accepted_points, 1, "a known series never counts against the limit");
    }

    #[test]
    fn protocol_errors_end_the_batch() {
        let (store, mut s, mut lim) = setup();
        assert!(matches!(s.ingest(&store, &batch(0, vec![], vec![]), NOW, &lim), Err(IngestError::ZeroSequence)));
        lim.max_points_per_batch = 2;
        let b = batch(1, vec![def(0, "a")], vec![pts(0, &[(NOW, 1.0), (NOW + 1, 1.0), (NOW + 2, 1.0)])]);
        assert!(matches!(s.ingest(&store, &b, NOW, &lim), Err(IngestError::TooManyPoints { points: 3, limit: 2 })));
        assert_eq!(all_points(&store, "h1"), 0);
    }
}

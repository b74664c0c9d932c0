//! The sampling loop: on a dedicated thread, every interval, run the samplers, turn
//! their samples into one batch, append it to the spool and wake the uplink.
//!
//! Sampling is blocking file I/O, so it stays off the async runtime. A slow tick is
//! followed by the next scheduled one (no catch-up burst); skipped ticks are counted.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use augur_core::time::now_ms;
use augur_proto::v1::{SampleBatch, SeriesPoints};
use prost::Message;
use serde::Serialize;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::config::AgentConfig;
use crate::sampler::{CgroupSampler, HostSampler, Sample, Sampler};
use crate::series_table::SeriesTable;
use crate::spool::Spool;
use crate::uplink::AgentStats;

/// What the tick thread shares with the rest of the agent.
pub struct TickShared {
    pub spool: Arc<Mutex<Spool>>,
    pub table: Arc<Mutex<SeriesTable>>,
    pub new_data: Arc<Notify>,
    pub stats: Arc<AgentStats>,
}

/// Handle on the sampler thread.
pub struct Ticker {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The agent's own status, written to `<state_dir>/status.json` for operators and tests.
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    pub host_id: &'a str,
    pub incarnation: u64,
    pub time_ms: i64,
    pub samples_produced: u64,
    pub batches_produced: u64,
    pub sample_errors: u64,
    pub acked_sequence: u64,
    pub sent_sequence: u64,
    pub next_sequence: u64,
    pub connected: bool,
    pub sessions: u64,
    pub points_rejected_by_aggregator: u64,
    pub spool_bytes: u64,
    pub spool_records: u64,
    pub spool_dropped_batches: u64,
}

/// Writes the status file atomically (tmp + rename). Failures are logged, not fatal.
pub fn write_status(dir: &Path, host_id: &str, incarnation: u64, stats: &AgentStats, spool: &Mutex<Spool>) {
    let (sp, next) = {
        let s = lock(spool);
        (s.stats(), s.next_seq())
    };
    let st = Status {
        host_id,
        incarnation,
        time_ms: now_ms(),
        samples_produced: stats.samples_produced.load(Ordering::Relaxed),
        batches_produced: stats.batches_produced.load(Ordering::Relaxed),
        sample_errors: stats.sample_errors.load(Ordering::Relaxed),
        acked_sequence: stats.acked_sequence.load(Ordering::Relaxed),
        sent_sequence: stats.sent_sequence.load(Ordering::Relaxed),
        next_sequence: next,
        connected: stats.connected.load(Ordering::Relaxed),
        sessions: stats.sessions.load(Ordering::Relaxed),
        points_rejected_by_aggregator: stats.points_rejected_by_aggregator.load(Ordering::Relaxed),
        spool_bytes: sp.bytes,
        spool_records: sp.records,
        spool_dropped_batches: sp.dropped_records,
    };
    let tmp = dir.join("status.json.tmp");
    let res = serde_json::to_vec_pretty(&st)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|_| std::fs::rename(&tmp, dir.join("status.json")));
    if let Err(e) = res {
        debug!(error = %e, "cannot write status file");
    }
}

/// Builds one batch from a tick's samples. Non-finite values are dropped and counted.
pub fn build_batch(samples: &[Sample], ts: i64, table: &mut SeriesTable, stats: &AgentStats) -> SampleBatch {
    let mut batch = SampleBatch { series: Vec::with_capacity(samples.len()), ..Default::default() };
    for s in samples {
        if !s.value.is_finite() {
            stats.dropped_non_finite.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match table.intern(&s.key) {
            Ok(r) => batch.series.push(SeriesPoints { r#ref: r, timestamps_ms: vec![ts], values: vec![s.value] }),
            Err(e) => {
                stats.sample_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "cannot intern series");
            }
        }
    }
    batch
}

impl Ticker {
    /// Starts the sampler thread.
    pub fn start(cfg: &AgentConfig, shared: TickShared) -> std::io::Result<Ticker> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let interval = cfg.interval;
        let mut samplers: Vec<Box<dyn Sampler>> =
            vec![Box::new(HostSampler::new(&cfg.host)), Box::new(CgroupSampler::new(&cfg.containers))];
        let state_dir = cfg.state_dir.clone();
        let host_id = crate::resolve_host_id(cfg).unwrap_or_default();
        let incarnation = lock(&shared.spool).incarnation();
        let handle = std::thread::Builder::new().name("augur-sampler".into()).spawn(move || {
            let mut out: Vec<Sample> = Vec::with_capacity(1024);
            let mut next = Instant::now();
            let mut ticks: u64 = 0;
            let mut spool_err_logged = false;
            loop {
                let ts = now_ms();
                out.clear();
                for s in samplers.iter_mut() {
                    s.sample(&mut out);
                }
                let errors: u64 = samplers.iter().map(|s| s.errors()).sum();
                shared.stats.sample_errors.store(errors, Ordering::Relaxed);
                let batch = build_batch(&out, ts, &mut lock(&shared.table), &shared.stats);
                let n = batch.series.len() as u64;
                let payload = batch.encode_to_vec();
                match lock(&shared.spool).append(&payload) {
                    Ok(_) => {
                        shared.stats.samples_produced.fetch_add(n, Ordering::Relaxed);
                        shared.stats.batches_produced.fetch_add(1, Ordering::Relaxed);
                        spool_err_logged = false;
                    }
                    Err(e) => {
                        if !spool_err_logged {
                            warn!(error = %e, "cannot append to the spool; samples of this tick are lost");
                            spool_err_logged = true;
                        }
                    }
                }
                shared.new_data.notify_one();
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    write_status(&state_dir, &host_id, incarnation, &shared.stats, &shared.spool);
                }
                next += interval;
                let now = Instant::now();
                if next < now {
                    // Fell behind (suspended, overloaded): resume on schedule, no burst.
                    next = now + interval;
                }
                match stop_rx.recv_timeout(next - now) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
        })?;
        Ok(Ticker { stop, handle })
    }

    /// Stops the thread after its current tick.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_core::{MetricKind, SeriesKey};

    #[test]
    fn batch_skips_non_finite_and_reuses_refs() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = SeriesTable::open(&dir.path().join("t"), false).unwrap();
        let stats = AgentStats::default();
        let k = |m: &str| SeriesKey::new("host", m, "ratio", MetricKind::Gauge);
        let samples = vec![
            Sample { key: k("a"), value: 1.0 },
            Sample { key: k("b"), value: f64::NAN },
            Sample { key: k("c"), value: 3.0 },
        ];
        let b1 = build_batch(&samples, 1000, &mut table, &stats);
        assert_eq!(b1.series.len(), 2);
        assert_eq!(stats.dropped_non_finite.load(Ordering::Relaxed), 1);
        let b2 = build_batch(&samples, 2000, &mut table, &stats);
        assert_eq!(b1.series[1].r#ref, b2.series[1].r#ref);
        assert_eq!(b2.series[1].timestamps_ms, vec![2000]);
        assert_eq!(b2.series[1].values, vec![3.0]);
    }
}

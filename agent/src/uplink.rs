//! Uplink: the one long-lived gRPC stream to the aggregator.
//!
//! Every batch is in the [`Spool`] before it is sent. A session sends Hello, reads
//! Welcome (which says what is already stored), then streams spooled batches in order
//! with at most `max_in_flight` unacknowledged, defining each series the first time the
//! session uses it. Acks delete batches from the spool. Any error ends the session; the
//! next starts after a jittered exponential backoff and replays from the oldest
//! unacknowledged batch. The only module of the agent that touches tonic.
//!
//! Commands from the aggregator go to the executor's bounded queue (see [`crate::actuator`]);
//! its reports wait in the outbox until a heartbeat sent after them is echoed (the
//! aggregator handles a stream in order, so it has them), and are sent again on the next
//! session otherwise.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use augur_core::time::now_ms;
use augur_proto::PROTOCOL_VERSION;
use augur_proto::v1::{
    AgentMessage, Heartbeat, Hello, SampleBatch, agent_message::Msg as AgentMsg, aggregator_message::Msg as AggMsg,
    telemetry_client::TelemetryClient,
};
use prost::Message;
use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::config::UplinkConfig;
use crate::series_table::SeriesTable;
use crate::spool::Spool;

/// Acknowledged batches are released from the spool at least this often…
const ACK_RELEASE_EVERY: Duration = Duration::from_secs(5);
/// …or once this many are acknowledged, whichever comes first.
const ACK_RELEASE_BATCHES: u64 = 256;

/// Live counters shared by the sampler loop, the uplink and the status file.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub samples_produced: AtomicU64,
    pub batches_produced: AtomicU64,
    pub sample_errors: AtomicU64,
    pub dropped_non_finite: AtomicU64,
    pub acked_sequence: AtomicU64,
    pub sent_sequence: AtomicU64,
    pub points_rejected_by_aggregator: AtomicU64,
    pub sessions: AtomicU64,
    pub connected: AtomicBool,
}

/// What the uplink shares with the rest of the agent.
pub struct UplinkShared {
    pub spool: Arc<Mutex<Spool>>,
    pub table: Arc<Mutex<SeriesTable>>,
    pub new_data: Arc<Notify>,
    pub stats: Arc<AgentStats>,
    /// The command executor.
    pub actions: crate::actuator::ExecutorHandle,
}

/// Everything the Hello message says.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host_id: String,
    pub incarnation: u64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub workloads: Vec<augur_proto::v1::DeclaredWorkload>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("aggregator: {0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Protocol(String),
    #[error("spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
}

/// Locks a mutex, carrying on with the data if a panicking thread poisoned it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs sessions until `shutdown` is set and notified.
pub async fn run(cfg: UplinkConfig, id: Identity, shared: UplinkShared, shutdown: Arc<Notify>) {
    let mut backoff = cfg.backoff_initial;
    loop {
        let started = tokio::time::Instant::now();
        let res = tokio::select! {
            r = session(&cfg, &id, &shared) => r,
            _ = shutdown.notified() => return,
        };
        shared.stats.connected.store(false, Ordering::Relaxed);
        match res {
            Ok(()) => info!("aggregator closed the stream"),
            Err(SessionError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                warn!(error = %s.message(), "aggregator refused this agent")
            }
            Err(e) => warn!(error = %e, "uplink session ended"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = cfg.backoff_initial;
        }
        // Full jitter between half and all of the current backoff.
        let ms = backoff.as_millis() as u64;
        let wait = Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)));
        debug!(?wait, "reconnecting after backoff");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.notified() => return,
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

async fn session(cfg: &UplinkConfig, id: &Identity, shared: &UplinkShared) -> Result<(), SessionError> {
    let channel = Endpoint::from_shared(cfg.url.clone())?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await?;
    let mut client =
        TelemetryClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<AgentMessage>(cfg.max_in_flight + 4);
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        host_id: id.host_id.clone(),
        incarnation: id.incarnation,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        labels: id.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        capabilities: id.capabilities.clone(),
        workloads: id.workloads.clone(),
    };
    tx.send(AgentMessage { msg: Some(AgentMsg::Hello(hello)) })
        .await
        .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = match tokio::time::timeout(cfg.connect_timeout, inbound.message()).await {
        Err(_) => {
            return Err(SessionError::Protocol("no Welcome within the connect timeout".into()));
        }
        Ok(m) => match m?.and_then(|m| m.msg) {
            Some(AggMsg::Welcome(w)) => w,
            other => {
                return Err(SessionError::Protocol(format!("expected Welcome, got {other:?}")));
            }
        },
    };
    shared.stats.sessions.fetch_add(1, Ordering::Relaxed);
    shared.stats.connected.store(true, Ordering::Relaxed);
    let mut acked = welcome.acked_sequence;
    lock(&shared.spool).ack(acked)?;
    shared.stats.acked_sequence.store(acked, Ordering::Relaxed);
    info!(aggregator = %welcome.aggregator_id, acked, "connected to aggregator");

    let mut sent = acked;
    let mut released = acked;
    let mut last_release = tokio::time::Instant::now();
    let mut defined: Vec<bool> = Vec::new();
    let max_bytes = (welcome.max_message_bytes as usize).clamp(64 << 10, 16 << 20) / 2;
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reports sent on this session (outbox seq), and heartbeats sent after them whose echo
    // confirms them: (heartbeat time_ms, outbox seq).
    let outbox = shared.actions.outbox.clone();
    let mut reports_sent = 0u64;
    let mut marks: std::collections::VecDeque<(i64, u64)> = std::collections::VecDeque::new();
    let mut last_mark = 0i64;
    let heartbeat_msg = |time_ms: i64| {
        let st = lock(&shared.spool).stats();
        AgentMessage {
            msg: Some(AgentMsg::Heartbeat(Heartbeat {
                time_ms,
                spool_bytes: st.bytes,
                spool_dropped_batches: st.dropped_records,
                queue_dropped_batches: 0,
                sample_errors: shared.stats.sample_errors.load(Ordering::Relaxed),
            })),
        }
    };
    loop {
        let reports = outbox.after(reports_sent);
        if let Some((last, _)) = reports.last() {
            let last = *last;
            for (_, r) in reports {
                tx.send(AgentMessage { msg: Some(AgentMsg::CommandReport(r)) })
                    .await
                    .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
            }
            reports_sent = last;
            last_mark = now_ms().max(last_mark + 1);
            marks.push_back((last_mark, reports_sent));
            // An aggregator that never echoes: forget the oldest marks (their reports are
            // sent again on the next session, which the aggregator deduplicates).
            if marks.len() > 1024 {
                marks.pop_front();
            }
            tx.send(heartbeat_msg(last_mark))
                .await
                .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
        }
        // Fill the window from the spool.
        while sent.saturating_sub(acked) < cfg.max_in_flight as u64 {
            let want = cfg.max_in_flight - sent.saturating_sub(acked) as usize;
            let recs = lock(&shared.spool).read_after(sent, want, max_bytes)?;
            if recs.is_empty() {
                break;
            }
            for (seq, payload) in recs {
                let mut batch = match SampleBatch::decode(payload.as_slice()) {
                    Ok(b) => b,
                    Err(e) => {
                        // Cannot happen unless the spool file was altered; skip it, counted by the gap.
                        warn!(seq, error = %e, "undecodable batch in spool, skipped");
                        sent = seq;
                        continue;
                    }
                };
                batch.sequence = seq;
                batch.dropped_before = seq.saturating_sub(sent.max(acked) + 1);
                {
                    let table = lock(&shared.table);
                    for sp in &batch.series {
                        let r = sp.r#ref as usize;
                        if defined.len() <= r {
                            defined.resize(r + 1, false);
                        }
                        if !defined[r] {
                            if let Some(d) = table.def(sp.r#ref) {
                                batch.defs.push(d.clone());
                            }
                            defined[r] = true;
                        }
                    }
                }
                tx.send(AgentMessage { msg: Some(AgentMsg::Batch(batch)) })
                    .await
                    .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
                sent = seq;
                shared.stats.sent_sequence.store(sent, Ordering::Relaxed);
            }
        }
        tokio::select! {
            m = inbound.message() => match m?.and_then(|m| m.msg) {
                Some(AggMsg::Ack(ack)) => {
                    if ack.rejected_points > 0 {
                        shared.stats.points_rejected_by_aggregator.fetch_add(u64::from(ack.rejected_points), Ordering::Relaxed);
                        warn!(seq = ack.sequence, rejected = ack.rejected_points, message = %ack.message, "aggregator rejected points");
                    }
                    if ack.acked_sequence > acked {
                        acked = ack.acked_sequence;
                        shared.stats.acked_sequence.store(acked, Ordering::Relaxed);
                        // Persisting an ack costs an fsync of the spool's meta file: do it
                        // every few seconds, or sooner during a large replay. Batches acked
                        // but not yet released here are deduplicated by the aggregator if
                        // they are ever sent again.
                        if last_release.elapsed() >= ACK_RELEASE_EVERY || acked - released >= ACK_RELEASE_BATCHES {
                            lock(&shared.spool).ack(acked)?;
                            released = acked;
                            last_release = tokio::time::Instant::now();
                        }
                    }
                }
                Some(AggMsg::HeartbeatReply(r)) => {
                    while marks.front().is_some_and(|(t, _)| *t <= r.time_ms) {
                        if let Some((_, seq)) = marks.pop_front() {
                            outbox.delivered(seq);
                        }
                    }
                }
                Some(AggMsg::Welcome(_)) => {}
                Some(AggMsg::Command(c)) => {
                    debug!(command = %c.id, kind = %c.kind, "command received");
                    shared.actions.submit(c);
                }
                None => return Ok(()),
            },
            _ = shared.new_data.notified() => {}
            _ = outbox.changed() => {}
            _ = heartbeat.tick() => {
                last_mark = now_ms().max(last_mark + 1);
                marks.push_back((last_mark, reports_sent));
                if marks.len() > 1024 {
                    marks.pop_front();
                }
                if tx.send(heartbeat_msg(last_mark)).await.is_err() {
                    return Err(SessionError::Protocol("outbound stream closed".into()));
                }
            }
        }
    }
}

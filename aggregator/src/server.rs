//! gRPC services: `Telemetry.Connect` (agent streams), `Query` and `Predictions`.
//!
//! The only module that touches tonic. Domain errors become `tonic::Status` in
//! [`status_of`]; storage work runs on the blocking pool, bounded by a semaphore so
//! ingest pushes back on agents (HTTP/2 flow control) instead of queueing without bound.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use augur_core::time::now_ms;
use augur_proto::PROTOCOL_VERSION;
use augur_proto::v1::{
    self, AgentMessage, AggregatorMessage, HeartbeatReply, Welcome,
    agent_message::Msg as AgentMsg,
    aggregator_message::Msg as AggMsg,
    predictions_server::{Predictions, PredictionsServer},
    query_server::{Query, QueryServer},
    telemetry_server::{Telemetry, TelemetryServer},
};
use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::features::FeatureEngine;
use crate::ingest::{IngestError, IngestLimits, Session};
use crate::predict::{self, PredictionEngine};
use crate::registry::{HelloInfo, Registry, SessionClaim};
use crate::storage::{Rollup, SeriesId, SeriesMeta, Store, StoreError};

/// Everything the services share.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub limits: IngestLimits,
    pub aggregator_id: String,
    pub max_message_bytes: usize,
    pub write_slots: Semaphore,
    /// Ingest on the async workers (writes without fsync) rather than the blocking pool.
    pub inline_writes: bool,
    /// Becomes true when the aggregator is shutting down; sessions then end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Fed by every session with the points it stores.
    pub features: Arc<FeatureEngine>,
    pub predictions: Arc<PredictionEngine>,
    /// The ONNX models, when a manifest is configured.
    pub models: Option<Arc<crate::model::ModelRegistry>>,
    /// Forecast candidates and the per-series choices made so far.
    pub forecasts: Arc<ForecastState>,
    /// Commands to connected agents; every agent session registers here.
    pub dispatcher: crate::remediate::dispatch::Dispatcher,
    /// The hash-chained audit trail.
    pub audit: Arc<crate::remediate::audit::AuditLog>,
    /// The decision engine (pending approvals, live precision and recall).
    pub remediator: Arc<crate::remediate::decide::Remediator>,
}

/// The forecasting state the `Forecast` RPC keeps between calls.
pub struct ForecastState {
    pub forecasting: crate::forecast::Forecasting,
    /// Per series: the chosen forecasters (bounded: cleared when it grows past
    /// [`ForecastState::MAX_SERIES`]).
    pub series: std::sync::Mutex<std::collections::HashMap<SeriesId, crate::forecast::SeriesForecaster>>,
}

impl ForecastState {
    pub const MAX_SERIES: usize = 100_000;

    pub fn new() -> Result<Self, crate::forecast::ForecastError> {
        Self::with_models(None)
    }

    /// With a model registry, its `forecast` model also competes (see `forecast::onnx_quantile`).
    pub fn with_models(
        models: Option<&Arc<crate::model::ModelRegistry>>,
    ) -> Result<Self, crate::forecast::ForecastError> {
        let candidates = crate::forecast::candidates_with_models(models);
        Ok(ForecastState {
            forecasting: crate::forecast::Forecasting::with_candidates(
                crate::forecast::ForecastConfig::default(),
                candidates,
            )?,
            series: Default::default(),
        })
    }
}

/// Builds the tonic services for `shared`.
pub fn services(
    shared: Arc<Shared>,
) -> (TelemetryServer<TelemetryService>, QueryServer<QueryService>, PredictionsServer<PredictionsService>) {
    let max = shared.max_message_bytes;
    let t = TelemetryServer::new(TelemetryService { shared: shared.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let q = QueryServer::new(QueryService { shared: shared.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(64 << 20);
    let p = PredictionsServer::new(PredictionsService { shared });
    (t, q, p)
}

/// Maps domain errors to gRPC statuses (the one place that does).
pub fn status_of(e: &(dyn std::error::Error + 'static)) -> Status {
    if let Some(e) = e.downcast_ref::<crate::orchestrator::OrchestrateError>() {
        use crate::orchestrator::OrchestrateError as O;
        return match e {
            O::BadRequest(m) => Status::invalid_argument(m.clone()),
            O::NotFound(m) => Status::not_found(m.clone()),
            O::Refused(m) => Status::failed_precondition(m.clone()),
            O::Unavailable(m) => Status::unavailable(m.clone()),
            O::Internal(m) => Status::internal(m.clone()),
        };
    }
    if let Some(e) = e.downcast_ref::<crate::forecast::ForecastError>() {
        use crate::forecast::ForecastError as F;
        return match e {
            F::NotEnoughHistory { .. } | F::StaleHistory { .. } => Status::failed_precondition(e.to_string()),
            F::BadRequest(_) => Status::invalid_argument(e.to_string()),
            _ => Status::internal(e.to_string()),
        };
    }
    if let Some(e) = e.downcast_ref::<IngestError>() {
        return match e {
            IngestError::Store(s) => status_of(s),
            other => Status::invalid_argument(other.to_string()),
        };
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return match e {
            StoreError::UnknownSeries(_) => Status::not_found(e.to_string()),
            _ => Status::unavailable(format!("storage: {e}")),
        };
    }
    Status::internal(e.to_string())
}

fn valid_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// `Telemetry` service.
pub struct TelemetryService {
    shared: Arc<Shared>,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<AggregatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    type ConnectStream = OutStream;

    async fn connect(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<OutStream>, Status> {
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage { msg: Some(AgentMsg::Hello(h)) }) => h,
            Some(_) => {
                return Err(Status::invalid_argument("the first message on a stream must be Hello"));
            }
            None => return Err(Status::invalid_argument("stream closed before Hello")),
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported; this aggregator speaks version {PROTOCOL_VERSION}",
                hello.protocol_version
            )));
        }
        if !valid_host_id(&hello.host_id) {
            return Err(Status::invalid_argument(format!(
                "host id {:?} must be 1-253 characters of [A-Za-z0-9._:-]",
                hello.host_id
            )));
        }
        if hello.incarnation == 0 {
            return Err(Status::invalid_argument("incarnation must be nonzero"));
        }
        let info = HelloInfo {
            host_id: hello.host_id.clone(),
            incarnation: hello.incarnation,
            agent_version: hello.agent_version.clone(),
            labels: hello.labels.into_iter().collect::<BTreeMap<_, _>>(),
            capabilities: hello.capabilities,
            workloads: hello
                .workloads
                .into_iter()
                .map(|w| crate::registry::DeclaredWorkload {
                    name: w.name,
                    resource: w.resource,
                    allowed_actions: w.allowed_actions,
                    kind: w.kind,
                    standby: w.standby,
                    peers: w.peers,
                    health: w.health,
                })
                .collect(),
        };
        let shared = self.shared.clone();
        let store = shared.store.clone();
        let (host, inc) = (info.host_id.clone(), info.incarnation);
        let features = shared.features.clone();
        let session =
            tokio::task::spawn_blocking(move || Session::open(&*store, &host, inc).map(|s| s.with_features(features)))
                .await
                .map_err(|e| Status::internal(format!("session setup panicked: {e}")))?
                .map_err(|e| status_of(&e))?;
        let acked = session.acked();
        let claim = {
            let reg = shared.registry.clone();
            let info = info.clone();
            tokio::task::spawn_blocking(move || reg.connected(&info, now_ms(), acked))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| status_of(&e))?
        };
        let (tx, rx) = mpsc::channel::<Result<AggregatorMessage, Status>>(256);
        let welcome = Welcome {
            protocol_version: PROTOCOL_VERSION,
            aggregator_id: shared.aggregator_id.clone(),
            acked_sequence: acked,
            max_series_per_batch: 50_000,
            max_message_bytes: shared.max_message_bytes as u32,
        };
        tx.send(Ok(AggregatorMessage { msg: Some(AggMsg::Welcome(welcome)) }))
            .await
            .map_err(|_| Status::cancelled("client went away"))?;
        let span = info_span!("agent_session", host = %info.host_id, incarnation = info.incarnation);
        info!(parent: &span, ?peer, agent_version = %info.agent_version, acked, "agent connected");
        tokio::spawn(run_session(shared, session, claim, inbound, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn run_session(
    shared: Arc<Shared>,
    mut session: Session,
    claim: SessionClaim,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<AggregatorMessage, Status>>,
) {
    let host = session.host_id().to_owned();
    let mut stopping = shared.stopping.clone();
    let SessionClaim { generation, mut newest } = claim;
    // Commands for this host are merged into the outbound stream; dropped with the session.
    let mut commands = shared.dispatcher.register(&host);
    let end = loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            Some(cmd) = commands.recv() => {
                debug!(command = %cmd.id, kind = %cmd.kind, "sending command");
                if tx.send(Ok(AggregatorMessage { msg: Some(AggMsg::Command(cmd)) })).await.is_err() {
                    break "agent stopped reading".to_owned();
                }
                continue;
            }
            _ = async { let _ = newest.wait_for(|g| *g != generation).await; } => {
                let _ = tx.send(Err(Status::aborted(
                    "replaced by a newer session for this host id (a reconnect, or two agents sharing one host id)",
                ))).await;
                break "replaced by a newer session".to_owned();
            }
            _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                let _ = tx.send(Err(Status::unavailable("aggregator shutting down; reconnect later"))).await;
                break "aggregator shutting down".to_owned();
            }
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => break "agent closed the stream".to_owned(),
            Err(status) => {
                // Malformed or oversized message: tell the agent why, then end the stream.
                let why = format!("receive error: {status}");
                let _ = tx.send(Err(status)).await;
                break why;
            }
        };
        let reply = match msg.msg {
            Some(AgentMsg::Batch(batch)) => {
                let permit = match shared.write_slots.acquire().await {
                    Ok(p) => p,
                    Err(_) => break "shutting down".to_owned(),
                };
                let res = if shared.inline_writes {
                    // Without fsync a write is a memtable insert and a WAL write(2): tens of
                    // microseconds, cheaper than handing the batch to another thread.
                    let r = session.ingest(&*shared.store, &batch, now_ms(), &shared.limits);
                    Ok((session, r))
                } else {
                    let sh = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        let r = session.ingest(&*sh.store, &batch, now_ms(), &sh.limits);
                        (session, r)
                    })
                    .await
                };
                drop(permit);
                let (s, r) = match res {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("ingest panicked: {e}")))).await;
                        return;
                    }
                };
                session = s;
                match r {
                    Ok((ack, stats)) => {
                        shared.registry.batch(&host, &stats, ack.acked_sequence, now_ms());
                        if ack.accepted_points > 0 {
                            // Score this host's fresh data now rather than at the next tick.
                            shared.predictions.data_arrived(&host);
                        }
                        if ack.code != 0 {
                            debug!(seq = ack.sequence, rejected = ack.rejected_points, msg = %ack.message, "batch partly rejected");
                        }
                        AggMsg::Ack(ack)
                    }
                    Err(e) => {
                        let status = status_of(&e);
                        let why = format!("batch refused: {e}");
                        let _ = tx.send(Err(status)).await;
                        break why;
                    }
                }
            }
            Some(AgentMsg::Heartbeat(hb)) => {
                shared.registry.seen(&host, now_ms());
                AggMsg::HeartbeatReply(HeartbeatReply { time_ms: hb.time_ms })
            }
            Some(AgentMsg::CommandReport(r)) => {
                debug!(command = %r.command_id, status = r.status, "command report");
                shared.dispatcher.report(&host, &r);
                continue;
            }
            Some(AgentMsg::Hello(_)) => {
                let _ = tx.send(Err(Status::invalid_argument("Hello may only be sent once per stream"))).await;
                break "second Hello".to_owned();
            }
            None => continue,
        };
        if tx.send(Ok(AggregatorMessage { msg: Some(reply) })).await.is_err() {
            break "agent stopped reading".to_owned();
        }
    };
    info!(reason = %end, "agent disconnected");
    let reg = shared.registry.clone();
    let res = tokio::task::spawn_blocking(move || reg.disconnected(&host, now_ms())).await;
    if let Ok(Err(e)) = res {
        warn!(error = %e, "could not persist host record");
    }
}

/// `Query` service.
pub struct QueryService {
    shared: Arc<Shared>,
}

fn series_info(m: &SeriesMeta) -> v1::SeriesInfo {
    augur_proto::convert::info_of(&m.host_id, &m.key)
}

/// Series of `host` matching the optional resource, metric and label filters.
fn select(
    store: &dyn Store,
    host: &str,
    resource: &str,
    metric: &str,
    labels: &std::collections::HashMap<String, String>,
) -> Vec<(SeriesId, SeriesMeta)> {
    store
        .list_series(Some(host))
        .into_iter()
        .filter(|(_, m)| resource.is_empty() || m.key.resource == resource)
        .filter(|(_, m)| metric.is_empty() || m.key.metric == metric)
        .filter(|(_, m)| labels.iter().all(|(k, v)| m.key.labels.get(k) == Some(v)))
        .collect()
}

/// Groups one-minute rollups into buckets of `step_ms` aligned to the epoch.
fn regroup(rollups: Vec<Rollup>, step_ms: i64) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for r in rollups {
        let b = r.start_ms.div_euclid(step_ms) * step_ms;
        match out.last_mut() {
            Some(last) if last.start_ms == b => last.merge(&r),
            _ => out.push(Rollup { start_ms: b, ..r }),
        }
    }
    out
}

fn bucket_points(points: &[(i64, f64)], step_ms: i64) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for &(ts, v) in points {
        let b = ts.div_euclid(step_ms) * step_ms;
        let one = Rollup::of_point(b, ts, v);
        match out.last_mut() {
            Some(last) if last.start_ms == b => last.merge(&one),
            _ => out.push(one),
        }
    }
    out
}

fn rollup_msg(r: &Rollup) -> v1::RollupPoint {
    v1::RollupPoint { timestamp_ms: r.start_ms, min: r.min, max: r.max, avg: r.avg(), last: r.last, count: r.count }
}

impl QueryService {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_of(&e))
    }
}

fn require_host(h: &str) -> Result<(), Status> {
    if h.is_empty() { Err(Status::invalid_argument("host_id is required")) } else { Ok(()) }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_hosts(&self, _: Request<v1::ListHostsRequest>) -> Result<Response<v1::ListHostsResponse>, Status> {
        let hosts = self
            .shared
            .registry
            .list()
            .into_iter()
            .map(|h| v1::HostInfo {
                host_id: h.record.host_id,
                labels: h.record.labels.into_iter().collect(),
                agent_version: h.record.agent_version,
                capabilities: h.record.capabilities,
                first_seen_ms: h.record.first_seen_ms,
                last_seen_ms: h.record.last_seen_ms,
                connected: h.connected,
                incarnation: h.record.incarnation,
                acked_sequence: h.acked_sequence,
                samples_stored: h.samples_stored,
                samples_rejected: h.samples_rejected,
                batches_lost: h.batches_lost,
                series: h.series,
            })
            .collect();
        Ok(Response::new(v1::ListHostsResponse { hosts }))
    }

    async fn list_resources(
        &self,
        req: Request<v1::ListResourcesRequest>,
    ) -> Result<Response<v1::ListResourcesResponse>, Status> {
        let host = req.into_inner().host_id;
        let resources = self
            .blocking(move |store| {
                let mut by: BTreeMap<(String, String), (u32, i64)> = BTreeMap::new();
                let filter = if host.is_empty() { None } else { Some(host.as_str()) };
                for (id, m) in store.list_series(filter) {
                    let last = store.latest(id)?.map(|p| p.0).unwrap_or(0);
                    let e = by.entry((m.host_id, m.key.resource)).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(last);
                }
                Ok(by
                    .into_iter()
                    .map(|((host_id, resource), (series, last))| v1::ResourceInfo {
                        host_id,
                        resource,
                        series,
                        last_sample_ms: last,
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(v1::ListResourcesResponse { resources }))
    }

    async fn list_series(
        &self,
        req: Request<v1::ListSeriesRequest>,
    ) -> Result<Response<v1::ListSeriesResponse>, Status> {
        let r = req.into_inner();
        require_host(&r.host_id)?;
        let series = self
            .blocking(move |store| {
                Ok(select(store, &r.host_id, &r.resource, &r.metric, &Default::default())
                    .iter()
                    .map(|(_, m)| series_info(m))
                    .collect())
            })
            .await?;
        Ok(Response::new(v1::ListSeriesResponse { series }))
    }

    async fn query_range(
        &self,
        req: Request<v1::QueryRangeRequest>,
    ) -> Result<Response<v1::QueryRangeResponse>, Status> {
        let r = req.into_inner();
        require_host(&r.host_id)?;
        if r.end_ms <= r.start_ms {
            return Err(Status::invalid_argument(format!("end_ms {} must be after start_ms {}", r.end_ms, r.start_ms)));
        }
        if r.step_ms < 0 {
            return Err(Status::invalid_argument("step_ms must not be negative"));
        }
        if r.step_ms > 0 && (r.end_ms - r.start_ms) / r.step_ms > 100_000 {
            return Err(Status::invalid_argument("more than 100000 steps requested; use a larger step"));
        }
        let series = self
            .blocking(move |store| {
                let mut out = Vec::new();
                for (id, m) in select(store, &r.host_id, &r.resource, &r.metric, &r.match_labels) {
                    let mut d = v1::SeriesData { series: Some(series_info(&m)), ..Default::default() };
                    if r.step_ms == 0 {
                        d.points = store
                            .read_range(id, r.start_ms, r.end_ms)?
                            .into_iter()
                            .map(|(timestamp_ms, value)| v1::Point { timestamp_ms, value })
                            .collect();
                    } else if r.step_ms >= 60_000 && r.step_ms % 60_000 == 0 {
                        let start = r.start_ms.div_euclid(60_000) * 60_000;
                        d.rollups = regroup(store.read_rollups(id, start, r.end_ms)?, r.step_ms)
                            .iter()
                            .map(rollup_msg)
                            .collect();
                    } else {
                        let pts = store.read_range(id, r.start_ms, r.end_ms)?;
                        d.rollups = bucket_points(&pts, r.step_ms).iter().map(rollup_msg).collect();
                    }
                    out.push(d);
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(v1::QueryRangeResponse { series }))
    }

    async fn latest(&self, req: Request<v1::LatestRequest>) -> Result<Response<v1::LatestResponse>, Status> {
        let r = req.into_inner();
        require_host(&r.host_id)?;
        let series = self
            .blocking(move |store| {
                let mut out = Vec::new();
                for (id, m) in select(store, &r.host_id, &r.resource, &r.metric, &Default::default()) {
                    let points = store
                        .latest(id)?
                        .map(|(timestamp_ms, value)| vec![v1::Point { timestamp_ms, value }])
                        .unwrap_or_default();
                    out.push(v1::SeriesData { series: Some(series_info(&m)), points, rollups: vec![] });
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(v1::LatestResponse { series }))
    }
}

/// `Predictions`: event subscriptions and on-demand predictions.
pub struct PredictionsService {
    shared: Arc<Shared>,
}

/// A subscription's filter, checked on the subscriber's task (never on the engine's).
struct EventFilter {
    prefixes: Vec<String>,
    host_labels: BTreeMap<String, String>,
    failure_types: Vec<String>,
    min_probability: f64,
}

impl EventFilter {
    fn matches(&self, ev: &predict::Event, labels_of: &dyn Fn(&str) -> BTreeMap<String, String>) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| ev.resource.starts_with(p.as_str())))
            && (self.failure_types.is_empty() || self.failure_types.contains(&ev.failure_type))
            && (ev.probability >= self.min_probability || ev.state == predict::EventState::Cleared)
            && (self.host_labels.is_empty() || {
                let labels = labels_of(&ev.host_id);
                self.host_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
    }
}

fn event_to_wire(ev: &predict::Event, dropped_before: u64) -> v1::PredictionEvent {
    v1::PredictionEvent {
        id: ev.id,
        time_ms: ev.time_ms,
        host_id: ev.host_id.clone(),
        resource: ev.resource.clone(),
        resource_kind: ev.resource_kind.as_str().to_owned(),
        failure_type: ev.failure_type.clone(),
        state: match ev.state {
            predict::EventState::Raised => v1::EventState::Raised,
            predict::EventState::Updated => v1::EventState::Updated,
            predict::EventState::Cleared => v1::EventState::Cleared,
            predict::EventState::Tick => v1::EventState::Tick,
        } as i32,
        probability: ev.probability,
        horizon_s: ev.horizon_s,
        probability_by_horizon_s: ev.probability_by_horizon_s.iter().map(|(h, p)| (*h, *p)).collect(),
        expected_time_to_failure_s: ev.expected_time_to_failure_s,
        top_features: ev
            .top_features
            .iter()
            .map(|c| v1::FeatureContribution { name: c.name.clone(), value: c.value, contribution: c.contribution })
            .collect(),
        model: Some(v1::ModelRef { name: ev.model_name.clone(), version: ev.model_version.clone() }),
        dropped_before,
        summary: ev.summary.clone(),
        anomaly_score: ev.anomaly.map_or(0.0, |a| a.0),
        anomaly_threshold: ev.anomaly.map_or(0.0, |a| a.1),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::PredictionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Predictions for PredictionsService {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<v1::SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        if !(0.0..=1.0).contains(&r.min_probability) {
            return Err(Status::invalid_argument(format!("min_probability {} is not in [0, 1]", r.min_probability)));
        }
        let filter = EventFilter {
            prefixes: r.resource_prefixes,
            host_labels: r.host_labels.into_iter().collect(),
            failure_types: r.failure_types,
            min_probability: r.min_probability,
        };
        let mut sub = self.shared.predictions.subscribe(r.every_tick);
        let registry = self.shared.registry.clone();
        let mut stopping = self.shared.stopping.clone();
        // A small channel to the transport: when the client reads slowly, this task waits
        // and the engine's ring (bounded per subscriber) absorbs and counts the loss.
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let labels_of = |host: &str| {
                registry
                    .list()
                    .into_iter()
                    .find(|h| h.record.host_id == host)
                    .map(|h| h.record.labels)
                    .unwrap_or_default()
            };
            let mut dropped = 0u64;
            loop {
                let next = tokio::select! {
                    n = sub.next() => n,
                    _ = stopping.wait_for(|s| *s) => None,
                };
                let Some((ev, lost)) = next else { break };
                dropped += lost;
                if !filter.matches(&ev, &labels_of) {
                    continue;
                }
                if tx.send(Ok(event_to_wire(&ev, dropped))).await.is_err() {
                    break; // the subscriber went away
                }
                dropped = 0;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn forecast(&self, req: Request<v1::ForecastRequest>) -> Result<Response<v1::ForecastResponse>, Status> {
        let r = req.into_inner();
        let (host, resource) = match r.resource.split_once('/') {
            Some((h, res)) => (h.to_owned(), res.to_owned()),
            None => (r.resource.clone(), augur_core::series::HOST_RESOURCE.to_owned()),
        };
        require_host(&host)?;
        if r.metric.is_empty() {
            return Err(Status::invalid_argument("metric is required"));
        }
        if r.horizon_s < 0 || r.horizon_s > 30 * 86_400 {
            return Err(Status::invalid_argument(format!("horizon_s {} is not in 0..=30 days", r.horizon_s)));
        }
        let horizon = std::time::Duration::from_secs(if r.horizon_s == 0 { 3600 } else { r.horizon_s as u64 });
        let shared = self.shared.clone();
        let resp = tokio::task::spawn_blocking(move || -> Result<v1::ForecastResponse, Status> {
            let store = &*shared.store;
            let found = select(store, &host, &resource, &r.metric, &r.match_labels);
            let (id, meta) = match found.as_slice() {
                [] => {
                    return Err(Status::not_found(format!("no series {} of {}/{}", r.metric, host, resource)));
                }
                [one] => one.clone(),
                many => {
                    let sets: Vec<String> = many.iter().take(5).map(|(_, m)| format!("{:?}", m.key.labels)).collect();
                    return Err(Status::invalid_argument(format!(
                        "{} series match; pick one with match_labels, e.g. one of {}",
                        many.len(),
                        sets.join(", ")
                    )));
                }
            };
            let now = now_ms();
            let plan = crate::forecast::plan_history(horizon);
            let from = now - plan.lookback.as_millis() as i64;
            let counter = meta.key.kind == augur_core::MetricKind::Counter;
            let mut history: Vec<(i64, f64)> = if plan.use_rollups {
                store
                    .read_rollups(id, from, now + 1)
                    .map_err(|e| status_of(&e))?
                    .into_iter()
                    .map(|ru| if counter { (ru.last_ms, ru.last) } else { (ru.start_ms, ru.avg()) })
                    .collect()
            } else {
                store.read_range(id, from, now + 1).map_err(|e| status_of(&e))?
            };
            if counter {
                history = crate::forecast::counter_rate(&history);
            }
            let mut req = crate::forecast::ForecastRequest::new(horizon);
            if !r.quantiles.is_empty() {
                req.quantiles = r.quantiles.clone();
            }
            req.non_negative = history.iter().all(|p| p.1 >= 0.0 || p.1.is_nan());
            let fc = &shared.forecasts;
            let mut state = fc.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.len() >= ForecastState::MAX_SERIES && !state.contains_key(&id) {
                state.clear();
            }
            let f = state
                .entry(id)
                .or_default()
                .forecast(&fc.forecasting, &history, now, &req)
                .map_err(|e| status_of(&e))?;
            Ok(v1::ForecastResponse {
                series: Some(series_info(&meta)),
                model: f.model.to_string(),
                horizon_s: f.horizon_s as i64,
                step_s: f.step_s as i64,
                target_ms: f.target_ms,
                quantiles: f.quantiles.iter().map(|(q, v)| v1::QuantileValue { quantile: *q, value: *v }).collect(),
                cv_pinball: f.cv_pinball,
                history_points: f.history_points as i64,
                filled_points: f.filled_points as i64,
                rate: counter,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(resp))
    }

    async fn predict_failure(
        &self,
        req: Request<v1::PredictFailureRequest>,
    ) -> Result<Response<v1::PredictFailureResponse>, Status> {
        let resource = req.into_inner().resource;
        if resource.is_empty() {
            return Err(Status::invalid_argument("resource is required (e.g. `host/cgroup/web`)"));
        }
        let found = self.shared.predictions.latest(&resource);
        if found.is_empty() && self.shared.features.resource(&resource, now_ms()).is_none() {
            return Err(Status::not_found(format!(
                "no live resource {resource:?}: names are `<host>`, `<host>/<resource>` or `<host>/fs:<mount>`"
            )));
        }
        Ok(Response::new(v1::PredictFailureResponse {
            resource,
            predictions: found.iter().map(|e| event_to_wire(e, 0)).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regroup_merges_minutes_into_steps() {
        let m = |start: i64, v: f64| Rollup::of_point(start, start + 1, v);
        let out = regroup(vec![m(0, 1.0), m(60_000, 3.0), m(300_000, 5.0)], 300_000);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].min, out[0].max, out[0].count, out[0].last), (1.0, 3.0, 2, 3.0));
        assert_eq!(out[1].start_ms, 300_000);
    }

    #[test]
    fn host_ids_are_checked() {
        assert!(valid_host_id("web-01.example.com"));
        assert!(!valid_host_id(""));
        assert!(!valid_host_id("a b"));
        assert!(!valid_host_id(&"x".repeat(254)));
    }
}

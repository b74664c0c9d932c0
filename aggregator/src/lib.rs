//! augur-aggregator: receives agent telemetry, stores it in RocksDB and serves queries.
//!
//! Layout:
//! - [`config`]: TOML config (what) and its validation.
//! - [`storage`]: the storage seam ([`storage::Store`]); RocksDB and in-memory stores.
//! - [`ingest`]: per-stream validation, deduplication and atomic writes.
//! - [`model`]: the ONNX Runtime seam: model manifest, registry, hot reload, batched inference.
//! - [`features`]: the streaming feature engine (one implementation, also behind
//!   `augur-aggregator features export`).
//! - [`http`]: `/metrics` (Prometheus) and `/healthz` beside gRPC on the same port.
//! - [`recording`]: the lossless recording file format (exported host data).
//! - [`predict`]: the prediction engine (tick thread, hysteresis, explanations, events).
//! - [`anomaly`]: per-host anomaly detectors learned online (whitened PCA residual + EWMA).
//! - [`forecast`]: per-series quantile forecasts, the model chosen by rolling-origin CV.
//! - [`remediate`]: the closed loop: decisions under policy, workflows, commands, audit trail.
//! - [`orchestrator`]: the `Orchestrator` gRPC service and the operations behind it and the REST gateway.
//! - [`rest`]: the REST/JSON gateway (`POST /orchestrate_migration`, `GET /remediation_events`...).
//! - [`registry`]: hosts that connected, their labels and counters.
//! - [`server`]: the gRPC services (the only tonic code).
//!
//! [`run`] starts everything and serves until the shutdown future resolves.

pub mod anomaly;
pub mod config;
pub mod features;
pub mod forecast;
pub mod http;
pub mod ingest;
pub mod model;
pub mod orchestrator;
pub mod predict;
pub mod recording;
pub mod registry;
pub mod remediate;
pub mod rest;
pub mod server;
pub mod storage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::config::AggregatorConfig;
use crate::features::{FeatureConfig, FeatureEngine};
use crate::ingest::IngestLimits;
use crate::predict::PredictionEngine;
use crate::registry::Registry;
use crate::server::Shared;
use crate::storage::Store;
use crate::storage::rocks::RocksStore;

/// How long shutdown waits for open calls after ending agent sessions.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the store, binds the listener and serves until `shutdown` resolves.
/// `on_ready` is called with the bound address (useful with port 0).
pub async fn run(
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr) + Send,
) -> anyhow::Result<()> {
    run_with(config, shutdown, move |addr, _| on_ready(addr)).await
}

/// [`run`], also handing `on_ready` the shared state (the dispatcher, the audit trail...):
/// component tests drive the closed loop through it.
pub async fn run_with(
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr, Arc<Shared>) + Send,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opts = config.store_options();
    let dir = config.data_dir.clone();
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || RocksStore::open(&dir, opts))
            .await?
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
    );
    let registry = Arc::new(Registry::load(store.clone()).context("loading the host registry")?);
    let features = Arc::new(FeatureEngine::new(FeatureConfig::default()));
    let scorer = predict::onnx::scorer_for(&config.predict, features.config())?;
    let predictions = PredictionEngine::new(config.predict.engine_config(), features.clone(), scorer.scorer.clone());
    let _engine_thread = predictions.spawn().context("starting the prediction thread")?;
    let dispatcher = remediate::dispatch::Dispatcher::default();
    let audit = Arc::new(remediate::audit::AuditLog::open(store.clone()).context("opening the audit trail")?);
    // The closed loop: prediction events -> decisions under policy and safety -> workflows.
    let remediator = remediate::decide::Remediator::new(
        config.remediation.clone(),
        features.clone(),
        predictions.clone(),
        registry.clone(),
        Arc::new(remediate::decide::WorkflowExecutor {
            dispatcher: dispatcher.clone(),
            audit: audit.clone(),
            step_timeout: config.remediation.safety.action_deadline,
        }),
        audit.clone(),
        store.clone(),
    );
    let i = &config.ingest;
    let shared = Arc::new(Shared {
        store: store.clone(),
        registry,
        limits: IngestLimits {
            max_future_skew_ms: i.max_future_skew.as_millis() as i64,
            max_past_age_ms: i.max_past_age.as_millis() as i64,
            max_series_per_host: i.max_series_per_host,
            max_points_per_batch: i.max_points_per_batch,
        },
        aggregator_id: config.aggregator_id.clone(),
        max_message_bytes: i.max_message_bytes as usize,
        write_slots: Semaphore::new(i.write_concurrency),
        inline_writes: !config.storage.sync_writes,
        stopping: stop_rx,
        features: features.clone(),
        predictions: predictions.clone(),
        models: scorer.registry.clone(),
        forecasts: Arc::new(
            server::ForecastState::with_models(scorer.registry.as_ref()).context("setting up forecasting")?,
        ),
        dispatcher,
        audit,
        remediator: remediator.clone(),
    });

    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %config.data_dir.display(), "aggregator listening");
    on_ready(addr, shared.clone());

    let maint = tokio::spawn(maintenance_loop(store.clone(), config.storage.maintenance_interval));
    let decisions = tokio::spawn(remediator.run(config.predict.tick, shared.stopping.clone()));
    let shared_stop = shared.stopping.clone();
    let (telemetry, query, predictions_svc) = server::services(shared.clone());
    // Operator requests (gRPC Orchestrator and the REST gateway) run plans through the same workflow engine.
    let orchestration = Arc::new(orchestrator::Orchestration::new(
        config.remediation.clone(),
        shared.registry.clone(),
        Arc::new(remediate::decide::WorkflowExecutor {
            dispatcher: shared.dispatcher.clone(),
            audit: shared.audit.clone(),
            step_timeout: config.remediation.safety.action_deadline,
        }),
        shared.remediator.clone(),
        shared.audit.clone(),
        shared.predictions.clone(),
        shared.features.clone(),
        shared.store.clone(),
        shared.forecasts.clone(),
    ));
    let routes = tonic::service::Routes::new(telemetry)
        .add_service(query)
        .add_service(predictions_svc)
        .add_service(orchestrator::service(orchestration.clone()));
    let router = http::routes(routes.into_axum_router(), shared).merge(rest::routes(orchestration));
    // Nagle off on every accepted connection (the builder's `tcp_nodelay` does not reach an
    // incoming stream we hand it): a Command written right after an Ack would otherwise wait
    // for the agent's delayed ACK, about 40 ms.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let serve = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            info!("shutting down: ending agent sessions");
            let _ = stop_tx.send(true);
        });
    // Agent sessions end at once on shutdown; other calls get a bounded grace period.
    let mut serve = std::pin::pin!(serve);
    let mut stop_seen = shared_stop.clone();
    tokio::select! {
        r = &mut serve => r.context("gRPC server")?,
        _ = async { let _ = stop_seen.wait_for(|s| *s).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; stopping anyway");
        }
    }
    maint.abort();
    decisions.abort();
    info!("aggregator stopped");
    Ok(())
}

async fn maintenance_loop(store: Arc<dyn Store>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.maintain(augur_core::time::now_ms())).await {
            Ok(Ok(stats)) => tracing::debug!(?stats, "maintenance pass"),
            Ok(Err(e)) => warn!(error = %e, "maintenance failed"),
            Err(e) => warn!(error = %e, "maintenance panicked"),
        }
    }
}

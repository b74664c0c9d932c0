//! Plain HTTP beside gRPC on the same port: `GET /metrics` (Prometheus text format) and
//! `GET /healthz`. The REST/JSON gateway will live here too.
//!
//! The gRPC services are turned into an axum router and these routes are added to it, so
//! one listener serves HTTP/2 gRPC and HTTP/1.1 scrapes.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::server::Shared;

/// Adds the HTTP routes to `router` (the gRPC services' router).
pub fn routes(router: axum::Router, shared: Arc<Shared>) -> axum::Router {
    let http = axum::Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(shared);
    router.merge(http)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&shared))
}

pub(crate) fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = if labels.is_empty() { writeln!(out, "{name} {v}") } else { writeln!(out, "{name}{{{labels}}} {v}") };
    }
}

/// The metrics page.
pub fn render(shared: &Shared) -> String {
    let mut out = String::new();
    let hosts = shared.registry.list();
    let sum = |f: fn(&crate::registry::HostView) -> u64| hosts.iter().map(f).sum::<u64>() as f64;
    metric(&mut out, "augur_hosts", "gauge", "Hosts known to the aggregator.", &[("", hosts.len() as f64)]);
    metric(
        &mut out,
        "augur_hosts_connected",
        "gauge",
        "Hosts with a live agent stream.",
        &[("", hosts.iter().filter(|h| h.connected).count() as f64)],
    );
    metric(
        &mut out,
        "augur_ingest_samples_stored_total",
        "counter",
        "Samples stored.",
        &[("", sum(|h| h.samples_stored))],
    );
    metric(
        &mut out,
        "augur_ingest_samples_rejected_total",
        "counter",
        "Samples refused by validation.",
        &[("", sum(|h| h.samples_rejected))],
    );
    metric(
        &mut out,
        "augur_ingest_batches_lost_total",
        "counter",
        "Batches agents reported lost before reaching the aggregator.",
        &[("", sum(|h| h.batches_lost))],
    );
    let f = shared.features.stats();
    metric(&mut out, "augur_features_resources", "gauge", "Resources with feature state.", &[("", f.resources as f64)]);
    metric(
        &mut out,
        "augur_features_tracked_series",
        "gauge",
        "Series feeding the feature engine.",
        &[("", f.tracked_series as f64)],
    );
    let p = shared.predictions.stats();
    metric(&mut out, "augur_predict_ticks_total", "counter", "Prediction ticks run.", &[("", p.ticks as f64)]);
    metric(
        &mut out,
        "augur_predict_tick_duration_ms",
        "summary",
        "Duration of a prediction tick (features and inference for every live resource), last 1000 ticks.",
        &[("quantile=\"0.5\"", p.tick_p50_ms), ("quantile=\"0.99\"", p.tick_p99_ms)],
    );
    metric(&mut out, "augur_predict_last_tick_ms", "gauge", "Duration of the latest tick.", &[("", p.last_tick_ms)]);
    metric(
        &mut out,
        "augur_predict_rows_scored_total",
        "counter",
        "Rows scored by models.",
        &[("", p.rows_scored as f64)],
    );
    metric(
        &mut out,
        "augur_predict_events_total",
        "counter",
        "Prediction events (raised, updated, cleared).",
        &[("", p.events as f64)],
    );
    metric(
        &mut out,
        "augur_predict_score_errors_total",
        "counter",
        "Model runs that failed.",
        &[("", p.score_errors as f64)],
    );
    if let Some(m) = &shared.models {
        let s = m.stats();
        metric(&mut out, "augur_models_serving", "gauge", "Models being served.", &[("", s.models_serving as f64)]);
        metric(
            &mut out,
            "augur_model_loads_total",
            "counter",
            "Models loaded at startup.",
            &[("", s.loads_total as f64)],
        );
        metric(
            &mut out,
            "augur_model_load_failures_total",
            "counter",
            "Models refused at startup.",
            &[("", s.load_failures_total as f64)],
        );
        metric(
            &mut out,
            "augur_model_reloads_total",
            "counter",
            "Models hot-reloaded.",
            &[("", s.reloads_total as f64)],
        );
        metric(
            &mut out,
            "augur_model_reload_failures_total",
            "counter",
            "Model files or manifests refused by hot reload (the previous models kept serving).",
            &[("", s.reload_failures_total as f64)],
        );
    }
    shared.dispatcher.render_metrics(&mut out);
    shared.audit.render_metrics(&mut out);
    shared.remediator.render_metrics(&mut out);
    out
}

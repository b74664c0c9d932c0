//! The REST/JSON gateway: the Orchestrator's operations (and failure predictions) over
//! plain HTTP/1.1 on the gRPC port, with the paths users know.
//!
//! | method | path                                   | body / query                         | answer                 |
//! |--------|----------------------------------------|--------------------------------------|------------------------|
//! | POST   | `/orchestrate_migration`               | `{workload, source_host, target_host?, dry_run?, reason?}` | action report |
//! | POST   | `/autonomous_remediate`                | `{host, workload, action?, failure_type?, args?, plan?, dry_run?, reason?}` | action report |
//! | POST   | `/predictive_scale`                    | `{set, delta?, dry_run?, reason?}`   | action report          |
//! | GET    | `/scaling_recommendations`             | `?set=`                              | recommendations        |
//! | GET    | `/remediation_events`                  | `?resource=&action_id=&kind=a,b&since_ms=&limit=` | audit records |
//! | GET    | `/remediation_events/verify`           |                                      | hash-chain verdict     |
//! | GET    | `/predict_failure`                     | `?resource=`                         | newest predictions     |
//! | GET    | `/pending_actions`                     |                                      | actions awaiting approval |
//! | POST   | `/pending_actions/{id}/approve`        | `{operator?, comment?}`              | action report (started) |
//! | POST   | `/pending_actions/{id}/reject`         | `{operator?, reason?}`               | `{action_id, rejected}` |
//!
//! Field names are the proto's. An action report is `{action_id, status, plan, steps,
//! message, detail}` with `status` one of succeeded, rolled_back, failed, dry_run,
//! pending_approval, started, nothing_to_do; a processed request answers 200 whatever the
//! action's outcome. Errors answer `{"error": message, "code": code}`: 400
//! `invalid_argument` (bad JSON, unknown fields, missing or malformed values), 404
//! `not_found` (unknown host, workload, set or action), 409 `refused` (a safety limit or
//! state), 503 `unavailable`, 500 `internal`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::orchestrator::{
    EventsQuery, MigrateRequest, OrchestrateError, Orchestration, RemediateRequest, ScaleRequest,
};
use crate::predict::{Event, EventState};

/// The gateway's routes over `o`.
pub fn routes(o: Arc<Orchestration>) -> axum::Router {
    axum::Router::new()
        .route("/orchestrate_migration", post(migrate))
        .route("/autonomous_remediate", post(remediate))
        .route("/predictive_scale", post(scale))
        .route("/scaling_recommendations", get(recommendations))
        .route("/remediation_events", get(events))
        .route("/remediation_events/verify", get(verify))
        .route("/predict_failure", get(predict_failure))
        .route("/pending_actions", get(pending))
        .route("/pending_actions/{id}/approve", post(approve))
        .route("/pending_actions/{id}/reject", post(reject))
        .with_state(o)
}

/// An error answer.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.2, "code": self.1}))).into_response()
    }
}

impl From<OrchestrateError> for ApiError {
    fn from(e: OrchestrateError) -> Self {
        match e {
            OrchestrateError::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, "invalid_argument", m),
            OrchestrateError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, "not_found", m),
            OrchestrateError::Refused(m) => ApiError(StatusCode::CONFLICT, "refused", m),
            OrchestrateError::Unavailable(m) => ApiError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            OrchestrateError::Internal(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "invalid_argument", format!("request body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "invalid_argument", format!("query string: {}", r.body_text()))
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn to_value(v: impl serde::Serialize) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

async fn migrate(State(o): State<Arc<Orchestration>>, body: Result<Json<MigrateRequest>, JsonRejection>) -> ApiResult {
    let Json(req) = body?;
    to_value(o.migrate(req).await?)
}

async fn remediate(
    State(o): State<Arc<Orchestration>>,
    body: Result<Json<RemediateRequest>, JsonRejection>,
) -> ApiResult {
    let Json(req) = body?;
    to_value(o.remediate(req).await?)
}

async fn scale(State(o): State<Arc<Orchestration>>, body: Result<Json<ScaleRequest>, JsonRejection>) -> ApiResult {
    let Json(req) = body?;
    to_value(o.scale(req).await?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct SetParam {
    set: String,
}

async fn recommendations(State(o): State<Arc<Orchestration>>, q: Result<Query<SetParam>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    to_value(o.recommendations(&q.set).await?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct EventsParams {
    resource: String,
    action_id: String,
    /// Comma-separated kinds.
    kind: String,
    since_ms: i64,
    limit: u32,
}

async fn events(State(o): State<Arc<Orchestration>>, q: Result<Query<EventsParams>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let kinds = q.kind.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
    let records = o
        .events(EventsQuery {
            resource: q.resource,
            action_id: q.action_id,
            kinds,
            since_ms: q.since_ms,
            limit: q.limit,
        })
        .await?;
    to_value(records)
}

async fn verify(State(o): State<Arc<Orchestration>>) -> ApiResult {
    to_value(o.verify().await?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ResourceParam {
    resource: String,
}

/// A prediction as JSON (the same fields as `augurctl --json predict`).
pub fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id, "time_ms": e.time_ms, "host_id": e.host_id, "resource": e.resource,
        "resource_kind": e.resource_kind.as_str(), "failure_type": e.failure_type,
        "state": match e.state {
            EventState::Raised => "RAISED",
            EventState::Updated => "UPDATED",
            EventState::Cleared => "CLEARED",
            EventState::Tick => "TICK",
        },
        "probability": e.probability, "horizon_s": e.horizon_s,
        "probability_by_horizon_s": e.probability_by_horizon_s.iter().map(|(h, p)| (h.to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
        "expected_time_to_failure_s": e.expected_time_to_failure_s,
        "top_features": e.top_features.iter().map(|c| json!({"name": c.name, "value": c.value, "contribution": c.contribution})).collect::<Vec<_>>(),
        "model": {"name": e.model_name, "version": e.model_version},
        "summary": e.summary,
    })
}

async fn predict_failure(
    State(o): State<Arc<Orchestration>>,
    q: Result<Query<ResourceParam>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let found = o.predict_failure(&q.resource)?;
    Ok(Json(json!({"resource": q.resource, "predictions": found.iter().map(|e| event_json(e)).collect::<Vec<_>>()})))
}

async fn pending(State(o): State<Arc<Orchestration>>) -> ApiResult {
    to_value(o.pending()?)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Verdict {
    operator: String,
    comment: String,
    reason: String,
}

async fn approve(State(o): State<Arc<Orchestration>>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let v = optional_body(&body)?;
    to_value(o.approve(&id, &v.operator, &v.comment)?)
}

async fn reject(State(o): State<Arc<Orchestration>>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let v = optional_body(&body)?;
    let p = o.reject(&id, &v.operator, &v.reason)?;
    Ok(Json(json!({"action_id": p.action_id, "rejected": true})))
}

/// Approve and reject take an optional JSON body (with or without a content type): an
/// empty one means defaults; anything else must parse.
fn optional_body(body: &[u8]) -> Result<Verdict, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Verdict::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_argument", format!("request body: {e}")))
}

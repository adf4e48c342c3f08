//! What operators and orchestrators poll: status, metrics, liveness, readiness.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trustlog_guest::model::StatusReport;

use super::{ApiError, AppState};
use crate::report::status_json;

/// How long readiness waits for the database and the publisher.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn snapshot(state: &AppState) -> Result<StatusReport, ApiError> {
    let now = state.clock.now();
    let report = state
        .front
        .lock()
        .await
        .status(now)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    state.tenant_metrics.status(&report);
    Ok(report)
}

/// `GET /v1/status`: the figures of `status --json`.
pub async fn status(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(status_json(&snapshot(&state).await?)))
}

/// `GET /metrics`: Prometheus text format, the gauges read from the database now.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // A database that does not answer leaves the gauges at their last value; the
    // counters are still worth scraping, and /readyz says what is wrong.
    if let Err(e) = snapshot(&state).await {
        tracing::warn!(error = %e.message, "metrics: status snapshot failed");
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 only when the database and the publisher both answer; else 503
/// with what failed.
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let (db, publisher) = tokio::join!(
        probe(async { state.db.ping().await.map_err(|e| e.to_string()) }),
        probe(state.publisher.ready()),
    );
    let ready = db.is_ok() && publisher.is_ok();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let body = json!({"ready": ready, "database": show(db), "publisher": show(publisher)});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn probe(check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

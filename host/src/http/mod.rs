//! The HTTP surface of `serve` (axum): ingest, status, metrics, probes and the
//! dead-letter admin API.
//!
//! Requests run on their own guest instance (`front`), not the worker's, so a
//! tick waiting on a slow broker never holds up a scrape or an insert.

mod admin;
mod operations;
mod probes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::db::Database;
use crate::metrics::{Metrics, TenantMetrics};
use crate::publisher::Publisher;
use crate::tenant::Tenant;
use crate::worker::Worker;

/// The largest request body accepted (a few thousand operations).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Everything the handlers share.
pub struct AppState {
    /// The scheduler, woken after inserts and replays.
    pub worker: Worker,
    /// A guest instance of the same tenant for requests.
    pub front: Mutex<Tenant>,
    pub db: Database,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    pub tenant_metrics: TenantMetrics,
    /// The admin API's bearer token; `None` turns the admin API off.
    pub admin_token: Option<String>,
    pub clock: Arc<dyn Clock>,
}

/// Every route of the API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/operations", post(operations::create))
        .route("/v1/status", get(probes::status))
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/v1/admin/dead-letters", get(admin::list))
        .route("/v1/admin/dead-letters/replay", post(admin::replay))
        .route("/v1/admin/dead-letters/purge", post(admin::purge))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {source}")]
pub struct ListenError {
    pub addr: String,
    pub source: std::io::Error,
}

/// Binds `addr` (port 0 picks a free port); the bound address is in the result.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), ListenError> {
    let fail = |source| ListenError {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: a status and a JSON body naming the field at fault, if any.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

impl ApiError {
    /// An error about one named field of the request.
    pub fn field(status: StatusCode, field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    /// An error about the request or the server as a whole.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.field {
            Some(field) => json!({"error": self.message, "field": field}),
            None => json!({"error": self.message}),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a JSON request body: UTF-8 first, so a binary body is named as such.
fn json_body(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

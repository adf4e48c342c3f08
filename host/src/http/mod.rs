//! The HTTP surface of `serve` (axum): ingest, status, metrics, probes, the
//! dead-letter admin API and the tenant admin API.
//!
//! Every tenant's routes live under `/v1/tenants/{tenant}/…`; the routes without
//! that prefix (`/v1/operations`, `/v1/admin/dead-letters…`) reach the tenant
//! named `default`, the only one of a host started without a config file.
//! Requests run on the tenant's own request instance, not its worker's, so a tick
//! waiting on a slow broker never holds up a scrape or an insert.

pub mod access;
mod admin;
mod operations;
mod probes;
mod tenants;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::{ConfigError, HostConfig};
use crate::tenants::{ReloadReport, Running, Tenants};

/// The largest request body accepted (a few thousand operations).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The tenant the routes without `/v1/tenants/{tenant}` reach.
pub const DEFAULT_TENANT: &str = "default";

/// Everything the handlers share.
pub struct AppState {
    /// The host's tenants.
    pub tenants: Arc<Tenants>,
    /// The host-wide admin token: every tenant's admin API and the tenant admin API.
    /// With neither it nor a tenant's own token, that admin API is off.
    pub admin_token: Option<String>,
    pub clock: Arc<dyn Clock>,
    /// The config file `serve --config` read, re-read on reload.
    pub config_path: Option<PathBuf>,
    /// One reload at a time (SIGHUP and the admin API may race).
    pub reloading: tokio::sync::Mutex<()>,
}

/// Why a reload did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the host was started without --config; there is nothing to reload")]
    NoConfig,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl AppState {
    /// Re-reads the config file and makes the host run what it says.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoConfig)?;
        let _one_at_a_time = self.reloading.lock().await;
        let config = HostConfig::load(path)?;
        let report = self.tenants.apply(config.tenants).await;
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }
}

/// The tenant a request is about: `{tenant}` in the path, else `default`.
pub struct Scoped(pub Arc<Running>);

impl FromRequestParts<Arc<AppState>> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| p)
            .unwrap_or_default();
        let id = params
            .get("tenant")
            .map(String::as_str)
            .unwrap_or(DEFAULT_TENANT);
        match state.tenants.get(id).await {
            Some(running) => Ok(Scoped(running)),
            None => Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "tenant",
                format!("no tenant {id:?} on this host"),
            )),
        }
    }
}

/// Every route of the API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/operations", post(operations::create))
        .route("/v1/tenants/{tenant}/operations", post(operations::create))
        .route("/v1/status", get(probes::status_all))
        .route("/v1/tenants/{tenant}/status", get(probes::status))
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/v1/admin/dead-letters", get(admin::list))
        .route("/v1/admin/dead-letters/replay", post(admin::replay))
        .route("/v1/admin/dead-letters/purge", post(admin::purge))
        .route("/v1/tenants/{tenant}/admin/dead-letters", get(admin::list))
        .route(
            "/v1/tenants/{tenant}/admin/dead-letters/replay",
            post(admin::replay),
        )
        .route(
            "/v1/tenants/{tenant}/admin/dead-letters/purge",
            post(admin::purge),
        )
        .route("/v1/admin/tenants", get(tenants::list))
        .route(
            "/v1/admin/tenants/{tenant}",
            put(tenants::put).delete(tenants::delete),
        )
        .route("/v1/admin/reload", post(tenants::reload))
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

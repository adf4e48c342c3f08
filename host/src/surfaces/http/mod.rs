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
pub mod audit;
pub mod lookup;
mod operations;
mod probes;
pub mod request_limits;
mod tenants;
pub mod tls;
mod transparency;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tokio::net::TcpListener;

use access::{Credential, Credentials, Role, Scope};

use crate::config::{ConfigError, HostConfig};
use crate::scheduling::clock::Clock;
use crate::scheduling::tenants::{ReloadReport, Running, Tenants};
use crate::surfaces::console::ConsoleState;
use crate::surfaces::console::sessions::{self, Session};

/// The largest body of an admin request (operations have their own limits, see
/// [`request_limits`]).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The tenant the routes without `/v1/tenants/{tenant}` reach.
pub const DEFAULT_TENANT: &str = "default";

/// Everything the handlers share.
pub struct AppState {
    /// The host's tenants.
    pub tenants: Arc<Tenants>,
    /// Where handlers read the time for status reports and dead-letter replays and purges.
    pub clock: Arc<dyn Clock>,
    /// The config file `serve --config` read, re-read on reload.
    pub config_path: Option<PathBuf>,
    /// One reload at a time (SIGHUP and the admin API may race).
    pub reloading: tokio::sync::Mutex<()>,
    /// The credentials the command line gave (`--admin-token`), kept across reloads.
    flag_credentials: Vec<Credential>,
    /// The credentials of the config file (`admin_token`, `[[credential]]`), replaced
    /// on reload.
    file_credentials: std::sync::RwLock<Vec<Credential>>,
    /// Every credential in force: the two above and each tenant's `admin_token`.
    credentials: std::sync::RwLock<Arc<Credentials>>,
    /// The console's sessions.
    pub console: ConsoleState,
}

/// The credentials a config file defines: its `admin_token` (an admin of the whole
/// host, named `admin_token`) and its `[[credential]]` entries.
pub fn file_credentials(config: &HostConfig) -> Vec<Credential> {
    let mut all: Vec<Credential> = config
        .admin_token
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| Credential::new("admin_token", Role::Admin, Scope::Host, t))
        .collect();
    all.extend(config.credentials.iter().cloned());
    all
}

impl AppState {
    /// The state of a host serving `tenants`; call [`AppState::refresh_credentials`]
    /// once the tenants are added.
    pub fn new(
        tenants: Arc<Tenants>,
        clock: Arc<dyn Clock>,
        config_path: Option<PathBuf>,
        flag_credentials: Vec<Credential>,
        file_credentials: Vec<Credential>,
    ) -> AppState {
        AppState {
            tenants,
            clock,
            config_path,
            reloading: tokio::sync::Mutex::new(()),
            flag_credentials,
            file_credentials: std::sync::RwLock::new(file_credentials),
            credentials: std::sync::RwLock::new(Arc::new(Credentials::default())),
            console: ConsoleState::default(),
        }
    }

    /// Recomputes the credentials in force from the host's and the running tenants'.
    pub async fn refresh_credentials(&self) {
        let mut all = self.flag_credentials.clone();
        all.extend(
            self.file_credentials
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        // A tenant still waiting to start has its credential already: its admin can
        // see why it waits.
        let running = self.tenants.list().await;
        let starting = self.tenants.all_starting();
        let specs = running
            .iter()
            .map(|t| &t.spec)
            .chain(starting.iter().map(|t| &t.spec));
        for spec in specs {
            if let Some(token) = spec.admin_token.as_deref().filter(|t| !t.is_empty()) {
                all.push(Credential::new(
                    format!("tenant {} admin_token", spec.id),
                    Role::Admin,
                    Scope::Tenant(spec.id.clone()),
                    token,
                ));
            }
        }
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Credentials::new(all));
    }

    /// The credentials in force.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a reload did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The host runs no config file: it was started without `--config`.
    #[error("the host was started without --config; there is nothing to reload")]
    NoConfig,
    /// The config file could not be read or is invalid; the host runs on unchanged.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl AppState {
    /// Re-reads the config file and makes the host run what it says.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoConfig)?;
        let _one_at_a_time = self.reloading.lock().await;
        let config = HostConfig::load(path)?;
        *self
            .file_credentials
            .write()
            .unwrap_or_else(|p| p.into_inner()) = file_credentials(&config);
        let started_with = self.tenants.shared_pool_size();
        if config.shared_pool_size != started_with {
            // A pool cannot be resized under the tenants using it.
            tracing::warn!(
                from = started_with,
                to = config.shared_pool_size,
                "shared_pool_size changed: shared pools keep {started_with} connections until the host restarts"
            );
        }
        let report = self.tenants.apply(config.tenants).await;
        self.refresh_credentials().await;
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }
}

/// Who sent a request: the credential its bearer secret matches. With credentials
/// configured, a request without a matching one is refused here (401), before any
/// tenant is looked up, so an unauthenticated caller learns nothing of the tenants.
pub struct Caller(pub Option<Credential>);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let credentials = state.credentials();
        if credentials.is_empty() {
            return Ok(Caller(None));
        }
        let refused = || {
            state.tenants.metrics().unauthenticated();
            ApiError::unauthenticated()
        };
        if let Some(secret) = bearer(&parts.headers) {
            return credentials
                .identify(secret)
                .map(|c| Caller(Some(c.clone())))
                .ok_or_else(refused);
        }
        // A browser's session: its cookie rides along on any request a page makes, a
        // page of another site's too, so whatever changes something must also prove
        // it came from our page (the CSRF token, and an Origin of ours if one is sent).
        let session = state.session_of(&parts.headers).ok_or_else(refused)?;
        let credential = credentials
            .by_digest(&session.credential_digest)
            .ok_or_else(refused)?;
        if !parts.method.is_safe() {
            same_origin(&parts.headers, &parts.uri)?;
            let token = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_matches(token) {
                return Err(csrf_refused());
            }
        }
        Ok(Caller(Some(credential.clone())))
    }
}

/// 403: a request that changes something, by cookie, without the session's CSRF token.
pub fn csrf_refused() -> ApiError {
    ApiError::field(
        StatusCode::FORBIDDEN,
        "csrf",
        "this request needs the console session's X-CSRF-Token",
    )
}

/// Refuses a request whose `Origin` names another site than the `Host` it was sent to.
/// Browsers send `Origin` on every POST; requests without one (curl, scripts) are let
/// through, since they carry no ambient cookie of a victim.
pub fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    // HTTP/2 names the host in the request's authority, not in a Host header.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err(ApiError::field(
            StatusCode::FORBIDDEN,
            "origin",
            format!(
                "a request from another site's page is refused (Origin {:?})",
                String::from_utf8_lossy(origin.as_bytes())
            ),
        )),
    }
}

impl AppState {
    /// The live console session a request's cookie names, if any.
    pub fn session_of(&self, headers: &HeaderMap) -> Option<Session> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(sessions::from_cookie_header)
            .and_then(|id| self.console.sessions.get(id))
    }

    /// The credential of the request's console session, if it is still configured.
    pub fn session_credential(&self, headers: &HeaderMap) -> Option<Credential> {
        let session = self.session_of(headers)?;
        self.credentials()
            .by_digest(&session.credential_digest)
            .cloned()
    }
}

/// The secret of `Authorization: Bearer SECRET`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl Caller {
    /// Lets the request do what `role` allows on `tenant` (`None`: a route of the
    /// whole host), or says why not. Without any credential configured, ingest and
    /// read are open and admin is off.
    pub fn require(&self, role: Role, tenant: Option<&str>) -> Result<(), ApiError> {
        match &self.0 {
            None if role == Role::Admin => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "the admin API is off: give serve an admin credential (--admin-token or \
                 TRUSTLOG_ADMIN_TOKEN, admin_token or a [[credential]] with role = \"admin\")",
            )),
            None => Ok(()),
            Some(c) if !c.reaches(tenant) => Err(match tenant {
                Some(id) => no_tenant(id),
                None => forbidden(c, role, "the whole host"),
            }),
            Some(c) if !c.role.allows(role) => Err(forbidden(c, role, "this route")),
            Some(_) => Ok(()),
        }
    }

    /// Whether the caller may see `tenant` at all.
    pub fn sees(&self, tenant: &str) -> bool {
        self.0.as_ref().is_none_or(|c| c.reaches(Some(tenant)))
    }

    /// Whether the caller reaches the whole host (or no credential is configured).
    pub fn host_wide(&self) -> bool {
        self.0.as_ref().is_none_or(|c| c.scope == Scope::Host)
    }

    /// The credential's name, for logs.
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("anonymous", |c| c.name.as_str())
    }

    /// What the credential's requests may carry.
    pub fn limits(&self) -> request_limits::RequestLimits {
        self.0.as_ref().map(|c| c.limits).unwrap_or_default()
    }
}

fn forbidden(c: &Credential, role: Role, on: &str) -> ApiError {
    ApiError::field(
        StatusCode::FORBIDDEN,
        "authorization",
        format!(
            "credential {:?} ({}) may not do what the {} role does on {on}",
            c.name,
            c.role.name(),
            role.name()
        ),
    )
}

fn no_tenant(id: &str) -> ApiError {
    ApiError::field(
        StatusCode::NOT_FOUND,
        "tenant",
        format!("no tenant {id:?} on this host"),
    )
}

/// The tenant a request names: `{tenant}` in the path, else `default`.
pub struct TenantId(pub String);

impl FromRequestParts<Arc<AppState>> for TenantId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| p)
            .unwrap_or_default();
        Ok(TenantId(
            params
                .get("tenant")
                .cloned()
                .unwrap_or_else(|| DEFAULT_TENANT.to_string()),
        ))
    }
}

impl AppState {
    /// The tenant `id` as `caller` may see it: one its credential does not reach is
    /// answered as missing, so tenants cannot be discovered.
    pub async fn tenant_for(&self, caller: &Caller, id: &str) -> Result<Arc<Running>, ApiError> {
        if !caller.sees(id) {
            return Err(no_tenant(id));
        }
        if let Some(running) = self.tenants.get(id).await {
            return Ok(running);
        }
        match self.tenants.starting(id) {
            Some(starting) => {
                let (error, attempts) = starting.last_error();
                Err(ApiError::field(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "tenant",
                    format!(
                        "tenant {id:?} has not started: {error} ({attempts} attempts so far; \
                         retrying)"
                    ),
                ))
            }
            None => Err(no_tenant(id)),
        }
    }
}

/// The tenant a request is about (`{tenant}` in the path, else `default`), and who
/// asks. A tenant the caller's credential does not reach is answered as missing.
pub struct Scoped(pub Arc<Running>, pub Caller);

impl FromRequestParts<Arc<AppState>> for Scoped {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let Ok(TenantId(id)) = TenantId::from_request_parts(parts, state).await;
        let tenant = state.tenant_for(&caller, &id).await?;
        Ok(Scoped(tenant, caller))
    }
}

/// Every route of the API.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/operations",
            post(operations::create).get(lookup::search),
        )
        .route(
            "/v1/tenants/{tenant}/operations",
            post(operations::create).get(lookup::search),
        )
        .route("/v1/operations/{op_id}", get(lookup::show))
        .route("/v1/tenants/{tenant}/operations/{op_id}", get(lookup::show))
        .route("/v1/operations/{op_id}/verify", get(lookup::verify))
        .route(
            "/v1/tenants/{tenant}/operations/{op_id}/verify",
            get(lookup::verify),
        )
        .route("/v1/operations/{op_id}/proof", get(transparency::proof))
        .route(
            "/v1/tenants/{tenant}/operations/{op_id}/proof",
            get(transparency::proof),
        )
        .route("/v1/ledger/checkpoint", get(transparency::checkpoint))
        .route(
            "/v1/tenants/{tenant}/ledger/checkpoint",
            get(transparency::checkpoint),
        )
        .route("/v1/ledger/tile/{*tile}", get(transparency::tile))
        .route(
            "/v1/tenants/{tenant}/ledger/tile/{*tile}",
            get(transparency::tile),
        )
        .route("/v1/history", get(lookup::history))
        .route("/v1/tenants/{tenant}/history", get(lookup::history))
        .route("/v1/status", get(probes::status_all))
        .route("/v1/tenants/{tenant}/status", get(probes::status))
        .route("/metrics", get(probes::metrics))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/v1/admin/dead-letters", get(admin::list))
        .route("/v1/admin/dead-letters/replay", post(admin::replay))
        .route("/v1/admin/dead-letters/purge", post(admin::purge))
        .route("/v1/admin/pause", post(admin::pause))
        .route("/v1/admin/resume", post(admin::resume))
        .route("/v1/tenants/{tenant}/admin/pause", post(admin::pause))
        .route("/v1/tenants/{tenant}/admin/resume", post(admin::resume))
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
        .merge(crate::surfaces::console::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {source}")]
pub struct ListenError {
    /// The address asked for, as given.
    pub addr: String,
    /// Why binding it, or reading the bound address back, failed.
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

/// How long requests in flight may take to finish once shutdown is asked for.
const HTTPS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on `listener`, over TLS when `tls` is given, until `shutdown`
/// resolves. HTTP/1.1 and HTTP/2 either way (h2 by ALPN, or prior knowledge in clear).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(HTTPS_GRACE));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, tls.config())?
        .handle(handle)
        .serve(router(state).into_make_service())
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
    /// 401: no credential, or one that matches none.
    pub fn unauthenticated() -> ApiError {
        ApiError::field(
            StatusCode::UNAUTHORIZED,
            "authorization",
            "a valid bearer credential is required (Authorization: Bearer SECRET)",
        )
    }

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

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.field {
            Some(field) => json!({"error": self.message, "field": field}),
            None => json!({"error": self.message}),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            return (
                self.status,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"trustlog\"")],
                axum::Json(body),
            )
                .into_response();
        }
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

//! The dead-letter admin API, behind a bearer token: the tenant's own or the
//! host's. With neither configured it is off (404); a missing or wrong token is a
//! 401 and changes nothing. A tenant's token opens that tenant's API only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, Scoped, json_body};
use crate::db::Replay;
use crate::report::dead_letter_json;
use crate::tenants::Running;

/// Dead letters per page when the caller names no limit.
const DEFAULT_PAGE: u32 = 100;
/// The largest page.
const MAX_PAGE: u32 = 10_000;

/// Why a request was refused before it did anything.
pub(super) enum Denied {
    Off,
    Unauthorized,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Off => ApiError::new(
                StatusCode::NOT_FOUND,
                "the admin API is off: start serve with --admin-token or TRUSTLOG_ADMIN_TOKEN, or give the tenant an admin_token",
            )
            .into_response(),
            Denied::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"trustlog-admin\"")],
                Json(
                    json!({"error": "a valid bearer token is required", "field": "authorization"}),
                ),
            )
                .into_response(),
        }
    }
}

/// Lets the request through when its bearer token is one of `accepted`.
fn bearer_matches(headers: &HeaderMap, accepted: &[&str]) -> Result<(), Denied> {
    if accepted.is_empty() {
        return Err(Denied::Off);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(Denied::Unauthorized)?;
    // Comparing digests takes the same time wherever the strings first differ.
    let given = Sha256::digest(given.as_bytes());
    if accepted
        .iter()
        .any(|token| Sha256::digest(token.as_bytes()) == given)
    {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// The host's token, or the tenant's own.
fn authorize(state: &AppState, tenant: &Running, headers: &HeaderMap) -> Result<(), Denied> {
    let accepted: Vec<&str> = [
        state.admin_token.as_deref(),
        tenant.spec.admin_token.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|t| !t.is_empty())
    .collect();
    bearer_matches(headers, &accepted)
}

/// The host's token only: the tenant admin API.
pub(super) fn authorize_host(state: &AppState, headers: &HeaderMap) -> Result<(), Denied> {
    let accepted: Vec<&str> = state
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .into_iter()
        .collect();
    bearer_matches(headers, &accepted)
}

/// Why a request was turned away before it did anything.
enum Refusal {
    Denied(Denied),
    Invalid(ApiError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Denied(d) => d.into_response(),
            Refusal::Invalid(e) => e.into_response(),
        }
    }
}

/// Authorizes a request, then parses its body.
fn admit<T>(
    state: &AppState,
    tenant: &Running,
    headers: &HeaderMap,
    body: &[u8],
    parse: fn(&[u8]) -> Result<T, ApiError>,
) -> Result<T, Refusal> {
    authorize(state, tenant, headers).map_err(Refusal::Denied)?;
    parse(body).map_err(Refusal::Invalid)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// `GET /v1/admin/dead-letters?after=OP_ID&limit=N`: one page, in op_id order.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Scoped(tenant): Scoped,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = authorize(&state, &tenant, &headers) {
        return denied.into_response();
    }
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return ApiError::field(
                StatusCode::BAD_REQUEST,
                "limit",
                format!("must be a whole number from 1 to {MAX_PAGE}"),
            )
            .into_response();
        }
    };
    let after = query.get("after").map(String::as_str);
    match tenant.db.dead_letters(after, limit).await {
        Ok(page) => {
            let next_after = (page.len() == limit as usize)
                .then(|| page.last().map(|d| d.op_id.clone()))
                .flatten();
            let items: Vec<Value> = page.iter().map(dead_letter_json).collect();
            Json(json!({"dead_letters": items, "next_after": next_after})).into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

/// `POST /v1/admin/dead-letters/replay` with `{"op_id": "…"}` or `{"all": true}`:
/// back to the retry queue, due now, with a fresh retry count.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    Scoped(tenant): Scoped,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let which = match admit(&state, &tenant, &headers, &body, replay_request) {
        Ok(w) => w,
        Err(refused) => return refused.into_response(),
    };
    match tenant
        .db
        .replay_dead_letters(which.clone(), state.clock.now())
        .await
    {
        Ok(0) if matches!(which, Replay::One(_)) => {
            let Replay::One(id) = which else {
                unreachable!("matched above")
            };
            ApiError::field(
                StatusCode::NOT_FOUND,
                "op_id",
                format!("{id:?} is not a dead letter"),
            )
            .into_response()
        }
        Ok(n) => {
            tenant.worker.retry_soon();
            tracing::info!(replayed = n, "dead letters replayed through the admin API");
            Json(json!({"replayed": n})).into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

fn replay_request(body: &[u8]) -> Result<Replay, ApiError> {
    let bad = |field: &str, message: &str| ApiError::field(StatusCode::BAD_REQUEST, field, message);
    let value = json_body(body)?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("body", "expected {\"op_id\": \"…\"} or {\"all\": true}"))?;
    if let Some(unknown) = obj.keys().find(|k| *k != "op_id" && *k != "all") {
        return Err(bad(unknown, "unknown field; expected op_id or all"));
    }
    match (obj.get("op_id"), obj.get("all")) {
        (Some(Value::String(id)), None) => Ok(Replay::One(id.clone())),
        (Some(_), None) => Err(bad("op_id", "must be a string")),
        (None, Some(Value::Bool(true))) => Ok(Replay::All),
        (None, Some(_)) => Err(bad("all", "must be true")),
        (Some(_), Some(_)) => Err(bad("op_id", "give op_id or all, not both")),
        (None, None) => Err(bad("op_id", "give op_id or all")),
    }
}

/// `POST /v1/admin/dead-letters/purge` with `{"older_than": "30d"}`: dead letters
/// dead-lettered longer ago than that leave the queue; their operations stay,
/// as `DB_ONLY`.
pub async fn purge(
    State(state): State<Arc<AppState>>,
    Scoped(tenant): Scoped,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let older_than = match admit(&state, &tenant, &headers, &body, purge_request) {
        Ok(d) => d,
        Err(refused) => return refused.into_response(),
    };
    match tenant
        .db
        .purge_dead_letters_older_than(older_than, state.clock.now())
        .await
    {
        Ok(n) => {
            tracing::info!(purged = n, "dead letters purged through the admin API");
            Json(json!({"purged": n})).into_response()
        }
        Err(e) => unavailable(e).into_response(),
    }
}

fn purge_request(body: &[u8]) -> Result<std::time::Duration, ApiError> {
    let bad =
        |field: &str, message: String| ApiError::field(StatusCode::BAD_REQUEST, field, message);
    let value = json_body(body)?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("body", "expected {\"older_than\": \"30d\"}".into()))?;
    if let Some(unknown) = obj.keys().find(|k| *k != "older_than") {
        return Err(bad(unknown, "unknown field; expected older_than".into()));
    }
    match obj.get("older_than") {
        Some(Value::String(s)) => humantime::parse_duration(s).map_err(|e| {
            bad(
                "older_than",
                format!("{s:?} is not a duration (e.g. 30d, 12h): {e}"),
            )
        }),
        Some(_) => Err(bad(
            "older_than",
            "must be a duration string such as \"30d\"".into(),
        )),
        None => Err(bad("older_than", "is required".into())),
    }
}

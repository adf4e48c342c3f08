//! The dead-letter admin API: an admin credential of the tenant or of the whole host
//! (see [`super::access`]). With no credential configured it is off (404); a missing
//! or wrong one is a 401 and changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::Role;
use super::{ApiError, AppState, Caller, Scoped, json_body};
use crate::db::Replay;
use crate::report::dead_letter_json;
use crate::tenants::Running;

/// Dead letters per page when the caller names no limit.
const DEFAULT_PAGE: u32 = 100;
/// The largest page.
const MAX_PAGE: u32 = 10_000;

/// Lets an admin of `tenant` through, then parses the body.
fn admit<T>(
    tenant: &Running,
    caller: &Caller,
    body: &[u8],
    parse: fn(&[u8]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    caller.require(Role::Admin, Some(tenant.id()))?;
    parse(body)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// `GET /v1/admin/dead-letters?after=OP_ID&limit=N`: one page, in op_id order.
pub async fn list(
    Scoped(tenant, caller): Scoped,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = caller.require(Role::Admin, Some(tenant.id())) {
        return refused.into_response();
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
    Scoped(tenant, caller): Scoped,
    body: Bytes,
) -> Response {
    let which = match admit(&tenant, &caller, &body, replay_request) {
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
            tracing::info!(
                credential = caller.name(),
                tenant = tenant.id(),
                replayed = n,
                "dead letters replayed through the admin API"
            );
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
    Scoped(tenant, caller): Scoped,
    body: Bytes,
) -> Response {
    let older_than = match admit(&tenant, &caller, &body, purge_request) {
        Ok(d) => d,
        Err(refused) => return refused.into_response(),
    };
    match tenant
        .db
        .purge_dead_letters_older_than(older_than, state.clock.now())
        .await
    {
        Ok(n) => {
            tracing::info!(
                credential = caller.name(),
                tenant = tenant.id(),
                purged = n,
                "dead letters purged through the admin API"
            );
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

//! The tenant's admin API (dead letters, replay, purge, pause, resume): an admin
//! credential of the tenant or of the whole host (see [`super::access`]). With no
//! credential configured it is off (404); a missing or wrong one is a 401 and changes
//! nothing. Every action is audited ([`super::audit`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::Role;
use super::audit::Audit;
use super::lookup::filter_from;
use super::{ApiError, AppState, Caller, Scoped, TenantId, json_body};
use crate::db::{OperationFilter, OperationState, Purge, Replay};
use crate::scheduling::tenants::Running;
use crate::surfaces::report::dead_letter_json;

/// Dead letters per page when the caller names no limit.
const DEFAULT_PAGE: u32 = 100;
/// The largest page.
const MAX_PAGE: u32 = 10_000;

/// The tenant `id`, if `caller` is an admin of it.
async fn admit(state: &AppState, caller: &Caller, id: &str) -> Result<Arc<Running>, ApiError> {
    let tenant = state.tenant_for(caller, id).await?;
    caller.require(Role::Admin, Some(tenant.id()))?;
    Ok(tenant)
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

/// `POST /v1/admin/dead-letters/replay` with `{"op_id": "…"}`, `{"op_ids": […]}`,
/// `{"filter": {…}}` or `{"all": true}`: back to the retry queue, due now, with a fresh
/// retry count.
pub async fn replay(
    State(state): State<Arc<AppState>>,
    TenantId(id): TenantId,
    caller: Caller,
    body: Bytes,
) -> Response {
    let mut audit = Audit::begin(&state, &caller, &id, "replay");
    let result = async {
        let tenant = audit.gate(admit(&state, &caller, &id).await)?;
        let asked = selection(&body, &["op_id", "op_ids", "filter", "all"])?;
        audit.args(selection_json(&asked));
        let which = replay_of(asked)?;
        let n = tenant
            .db
            .replay_dead_letters(which.clone(), state.clock.now())
            .await
            .map_err(unavailable)?;
        if let (0, Replay::One(op_id)) = (n, &which) {
            return Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "op_id",
                format!("{op_id:?} is not a dead letter"),
            ));
        }
        tenant.worker.retry_soon();
        Ok(json!({"replayed": n}))
    }
    .await;
    audit.finish(result)
}

/// Which dead letters a request names: exactly one of `op_id`, `op_ids` (a list),
/// `filter` (the search's fields; `{}` is every dead letter) or `all: true`, besides
/// what `extra` allows (a purge's `older_than`).
enum Selection {
    One(String),
    Ids(Vec<String>),
    Matching(OperationFilter),
    All,
    OlderThan(std::time::Duration),
}

/// The most op_ids one request may list.
const MAX_IDS: usize = 10_000;

fn selection(body: &[u8], accepted: &[&str]) -> Result<Selection, ApiError> {
    let bad =
        |field: &str, message: String| ApiError::field(StatusCode::BAD_REQUEST, field, message);
    let value = json_body(body)?;
    let expected = format!("expected one of {accepted:?}");
    let obj = value
        .as_object()
        .ok_or_else(|| bad("body", format!("a JSON object: {expected}")))?;
    if let Some(unknown) = obj.keys().find(|k| !accepted.contains(&k.as_str())) {
        return Err(bad(unknown, format!("unknown field; {expected}")));
    }
    let mut given = obj.iter();
    let (Some((key, v)), None) = (given.next(), given.next()) else {
        return Err(bad("body", format!("exactly one field: {expected}")));
    };
    match (key.as_str(), v) {
        ("op_id", Value::String(id)) => Ok(Selection::One(id.clone())),
        ("op_id", _) => Err(bad("op_id", "must be a string".into())),
        ("all", Value::Bool(true)) => Ok(Selection::All),
        ("all", _) => Err(bad("all", "must be true".into())),
        ("op_ids", Value::Array(ids)) if ids.len() <= MAX_IDS => ids
            .iter()
            .map(|id| id.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Selection::Ids)
            .ok_or_else(|| bad("op_ids", "must be a list of strings".into())),
        ("op_ids", Value::Array(_)) => Err(bad("op_ids", format!("at most {MAX_IDS} per request"))),
        ("op_ids", _) => Err(bad("op_ids", "must be a list of strings".into())),
        ("filter", Value::Object(f)) => {
            const FIELDS: [&str; 6] = ["op_id", "actor", "doid", "producer", "from", "to"];
            if let Some(unknown) = f.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err(bad(
                    &format!("filter.{unknown}"),
                    format!("unknown; expected one of {FIELDS:?}"),
                ));
            }
            if let Some((k, _)) = f.iter().find(|(_, v)| !v.is_string()) {
                return Err(bad(&format!("filter.{k}"), "must be a string".into()));
            }
            let mut filter = filter_from(|name| {
                f.get(name)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
            })?;
            filter.status = Some(OperationState::DeadLetter);
            Ok(Selection::Matching(filter))
        }
        ("filter", _) => Err(bad("filter", "must be an object of search fields".into())),
        ("older_than", Value::String(s)) => humantime::parse_duration(s)
            .map(Selection::OlderThan)
            .map_err(|e| {
                bad(
                    "older_than",
                    format!("{s:?} is not a duration (e.g. 30d, 12h): {e}"),
                )
            }),
        ("older_than", _) => Err(bad(
            "older_than",
            "must be a duration string such as \"30d\"".into(),
        )),
        (other, _) => Err(bad(other, format!("unknown field; {expected}"))),
    }
}

fn selection_json(which: &Selection) -> Value {
    match which {
        Selection::One(op_id) => json!({"op_id": op_id}),
        Selection::Ids(ids) => json!({"op_ids": ids.len()}),
        Selection::Matching(f) => json!({"filter": format!("{f:?}")}),
        Selection::All => json!({"all": true}),
        Selection::OlderThan(d) => {
            json!({"older_than": humantime::format_duration(*d).to_string()})
        }
    }
}

fn replay_of(asked: Selection) -> Result<Replay, ApiError> {
    Ok(match asked {
        Selection::One(id) => Replay::One(id),
        Selection::Ids(ids) => Replay::Ids(ids),
        Selection::Matching(f) => Replay::Matching(f),
        Selection::All => Replay::All,
        Selection::OlderThan(_) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "older_than",
                "a replay takes op_id, op_ids, filter or all",
            ));
        }
    })
}

/// `POST /v1/admin/dead-letters/purge` with `{"older_than": "30d"}`, `{"op_ids": […]}`
/// or `{"filter": {…}}`: those dead letters leave the queue; their operations stay, as
/// `DB_ONLY`.
pub async fn purge(
    State(state): State<Arc<AppState>>,
    TenantId(id): TenantId,
    caller: Caller,
    body: Bytes,
) -> Response {
    let mut audit = Audit::begin(&state, &caller, &id, "purge");
    let result = async {
        let tenant = audit.gate(admit(&state, &caller, &id).await)?;
        let which = selection(&body, &["older_than", "op_ids", "filter"])?;
        audit.args(selection_json(&which));
        let now = state.clock.now();
        let n = match which {
            Selection::OlderThan(age) => tenant.db.purge_dead_letters_older_than(age, now).await,
            Selection::Ids(ids) => tenant.db.purge_matching(Purge::Ids(ids), now).await,
            Selection::Matching(f) => tenant.db.purge_matching(Purge::Matching(f), now).await,
            // `selection` was told these are not accepted here.
            Selection::One(_) | Selection::All => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "body",
                    "a purge takes older_than, op_ids or filter",
                ));
            }
        }
        .map_err(unavailable)?;
        Ok(json!({"purged": n}))
    }
    .await;
    audit.finish(result)
}

/// `POST /v1/admin/pause`: this host delivers nothing more for the tenant once the
/// batch in flight is done, until resumed; operations are still stored.
pub async fn pause(
    State(state): State<Arc<AppState>>,
    TenantId(id): TenantId,
    caller: Caller,
    body: Bytes,
) -> Response {
    set_paused(&state, &id, &caller, &body, true).await
}

/// `POST /v1/admin/resume`: delivery of the tenant resumes at once.
pub async fn resume(
    State(state): State<Arc<AppState>>,
    TenantId(id): TenantId,
    caller: Caller,
    body: Bytes,
) -> Response {
    set_paused(&state, &id, &caller, &body, false).await
}

/// Pauses or resumes the tenant's delivery; `changed` says whether it was otherwise.
async fn set_paused(
    state: &AppState,
    id: &str,
    caller: &Caller,
    body: &[u8],
    paused: bool,
) -> Response {
    let mut audit = Audit::begin(state, caller, id, if paused { "pause" } else { "resume" });
    let result = async {
        let tenant = audit.gate(admit(state, caller, id).await)?;
        no_body(body)?;
        let changed = if paused {
            tenant.worker.pause(caller.name())
        } else {
            tenant.worker.resume()
        };
        Ok(json!({"paused": paused, "changed": changed}))
    }
    .await;
    audit.finish(result)
}

/// Pause and resume take no arguments: an empty body or `{}`.
fn no_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match json_body(body)? {
        Value::Object(o) if o.is_empty() => Ok(()),
        _ => Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            "takes no arguments: send an empty body or {}",
        )),
    }
}

//! Reading operations: search with keyset paging, one operation with its delivery
//! state and envelope, and the last hour of deliveries. Who may: a `read` credential
//! of the tenant or of the host (the seed's `FindByID`, for operators and the console).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use trustlog_guest::model::Position;

use super::access::Role;
use super::{ApiError, AppState, Scoped};
use std::path::PathBuf;

use trustlog_ledger::{FoundEntry, find_entry};

use crate::db::{FoundOperation, OperationFilter, OperationState};
use crate::scheduling::clock::now_micros;
use crate::scheduling::tenants::Running;
use crate::surfaces::ingest::parse_timestamp;
use crate::surfaces::report::{found_json, search_page_json};

/// Rows per page when the caller names no limit.
const DEFAULT_PAGE: u32 = 50;
/// The largest page.
const MAX_PAGE: u32 = 1_000;

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::BAD_REQUEST, field, message)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The filter of a search's query string; unknown parameters are refused, so a typo
/// does not silently widen a search (or a bulk action built from it).
pub fn filter_from_query(query: &HashMap<String, String>) -> Result<OperationFilter, ApiError> {
    const KNOWN: [&str; 10] = [
        "op_id", "actor", "doid", "producer", "status", "from", "to", "after", "limit", "count",
    ];
    if let Some(unknown) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter; expected one of {KNOWN:?}"),
        ));
    }
    filter_from(|name| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    })
}

/// The filter named by `get` (a query string or a JSON object's fields).
pub fn filter_from<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<OperationFilter, ApiError> {
    let time = |name: &str| {
        get(name)
            .map(|t| parse_timestamp(t).map_err(|e| bad(name, e.message)))
            .transpose()
    };
    Ok(OperationFilter {
        op_id: get("op_id").map(String::from),
        actor: get("actor").map(String::from),
        doid: get("doid").map(String::from),
        producer: get("producer").map(String::from),
        status: get("status")
            .map(|s| {
                s.parse::<OperationState>().map_err(|_| {
                    bad(
                        "status",
                        "one of NOT_TRUSTLOGGED, TRUSTLOGGED, DB_ONLY, PENDING, RETRYING, DEAD_LETTER",
                    )
                })
            })
            .transpose()?,
        from: time("from")?,
        to: time("to")?,
    })
}

/// The position an `after` token names (`MICROS|OP_ID`, as
/// [`search_page_json`] writes `next_after`; a row whose timestamp cannot be read sorts
/// last, at the largest timestamp).
pub fn parse_after(token: &str) -> Result<Position, ApiError> {
    token
        .split_once('|')
        .and_then(|(t, id)| {
            Some(Position {
                timestamp: t.parse().ok()?,
                op_id: id.to_string(),
            })
        })
        .ok_or_else(|| {
            bad(
                "after",
                "not a page token (give back next_after as it came)",
            )
        })
}

/// `GET /v1/operations?actor=…&status=…&from=…&after=…&limit=…&count=true`: one page in
/// (timestamp, op_id) order; `next_after` names the next page while there is one.
pub async fn search(
    Scoped(tenant, caller): Scoped,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let filter = filter_from_query(&query)?;
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Err(bad("limit", format!("a whole number from 1 to {MAX_PAGE}"))),
    };
    let after = query
        .get("after")
        .filter(|a| !a.is_empty())
        .map(|a| parse_after(a))
        .transpose()?;
    let page = tenant
        .db
        .search_operations(&filter, after.as_ref(), limit)
        .await
        .map_err(unavailable)?;
    let count = match query.get("count").map(String::as_str) {
        Some("true") => Some(
            tenant
                .db
                .count_operations(&filter)
                .await
                .map_err(unavailable)?,
        ),
        _ => None,
    };
    Ok(Json(search_page_json(&page, limit, count)))
}

/// The ledger file of a tenant whose publisher is the embedded ledger.
pub(super) fn ledger_path(tenant: &Running) -> Option<PathBuf> {
    crate::publisher::ledger_path(&tenant.spec.publisher)
}

/// Runs a file read off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The operation's first entry in the tenant's ledger, read off the async threads.
async fn ledger_entry(tenant: &Running, op_id: &str) -> Result<Option<FoundEntry>, ApiError> {
    let Some(path) = ledger_path(tenant) else {
        return Ok(None);
    };
    let op_id = op_id.to_string();
    blocking(move || find_entry(&path, &op_id))
        .await?
        .map_err(unavailable)
}

async fn found(tenant: &Running, op_id: &str) -> Result<FoundOperation, ApiError> {
    tenant
        .db
        .find_operation(op_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::field(
                StatusCode::NOT_FOUND,
                "op_id",
                format!("no operation {op_id:?}"),
            )
        })
}

/// What one operation is: stored fields, status, retry row, the canonical envelope the
/// trust log gets and its SHA-256, and, for a ledger, its entry there.
pub async fn describe(tenant: &Running, op_id: &str) -> Result<Value, ApiError> {
    let found = found(tenant, op_id).await?;
    let mut body = found_json(&found);
    body["ledger"] = match ledger_entry(tenant, op_id).await? {
        Some(e) => json!({
            "path": e.path,
            "seq": e.seq,
            "sha256": e.sha256,
            "hash": e.hash,
            "prev": e.prev,
            "previous": e.previous,
            "next": e.next,
            "again_at": e.again_at,
        }),
        None => Value::Null,
    };
    Ok(body)
}

/// `GET /v1/operations/{op_id}/verify`: whether the tenant's ledger holds exactly the
/// envelope the stored row makes, with a chain hash that follows and neighbours that
/// link to it; each check named with what was compared.
pub async fn verify(
    Scoped(tenant, caller): Scoped,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let op_id = params.get("op_id").map(String::as_str).unwrap_or_default();
    let found = found(&tenant, op_id).await?;
    let envelope = match &found.operation {
        Ok(op) => trustlog_guest::envelope::build(op).ok(),
        Err(_) => None,
    };
    let fail = |name: &str, detail: String| json!({"name": name, "ok": false, "detail": detail});
    let checks: Vec<Value> = match (envelope, ledger_path(&tenant)) {
        (None, _) => vec![fail(
            "envelope",
            "the stored row cannot be read or encoded".into(),
        )],
        (Some(_), None) => vec![fail(
            "ledger",
            "this tenant's publisher is not the embedded ledger: the evidence is held elsewhere"
                .into(),
        )],
        (Some(e), Some(path)) => match ledger_entry(&tenant, op_id).await? {
            None => vec![fail(
                "ledger entry",
                format!("no entry of {op_id:?} in {}", path.display()),
            )],
            Some(entry) => entry
                .check(&e.payload)
                .into_iter()
                .map(|c| json!(c))
                .collect(),
        },
    };
    let verified = checks.iter().all(|c| c["ok"] == true);
    Ok(Json(
        json!({"op_id": op_id, "verified": verified, "checks": checks}),
    ))
}

/// `GET /v1/operations/{op_id}`: see [`describe`].
pub async fn show(
    Scoped(tenant, caller): Scoped,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let op_id = params.get("op_id").map(String::as_str).unwrap_or_default();
    Ok(Json(describe(&tenant, op_id).await?))
}

/// `GET /v1/tenants/{tenant}/history`: the last hour of deliveries, in 10 s points.
pub async fn history(
    State(state): State<Arc<AppState>>,
    Scoped(tenant, caller): Scoped,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    Ok(Json(
        state
            .tenants
            .metrics()
            .history(tenant.id())
            .points(now_micros()),
    ))
}

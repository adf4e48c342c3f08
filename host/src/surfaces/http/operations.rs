//! `POST /v1/operations`: a JSON object or array of operations, the strategy applied.
//!
//! Each item is judged on its own: the valid items of a mixed batch are stored (or
//! published), the others are reported with the field at fault, and the answer lists
//! every item's outcome in input order. The status says the worst that happened:
//! 200 all accepted, 422 some rejected, 409 some already stored, 502 some not
//! confirmed by the trust log (trustlog-only).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use http_body_util::LengthLimitError;
use serde_json::{Value, json};
use trustlog_guest::model::{Operation, RecordOutcome, Strategy};

use super::access::Role;
use super::{ApiError, Scoped, json_body};
use crate::surfaces::ingest;

/// Operations per call into the guest.
const CHUNK: usize = 1000;

/// Stores (or publishes) the operations in the body.
pub async fn create(
    Scoped(tenant, caller): Scoped,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Ingest, Some(tenant.id()))?;
    let limits = tenant.spec.limits.requests.tighter(caller.limits());
    let whose = || {
        format!(
            "tenant {:?} takes from credential {:?}",
            tenant.id(),
            caller.name()
        )
    };
    // Read no further than the limit: an oversized body costs the limit, not its size.
    let body = axum::body::to_bytes(body, limits.body_bytes)
        .await
        .map_err(|e| match e.into_inner().downcast::<LengthLimitError>() {
            Ok(_) => ApiError::field(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!(
                    "larger than {} bytes, the most {}",
                    limits.body_bytes,
                    whose()
                ),
            ),
            Err(e) => ApiError::field(
                StatusCode::BAD_REQUEST,
                "body",
                format!("the body could not be read: {e}"),
            ),
        })?;
    let strategy = match query.get("strategy") {
        Some(s) => Some(
            s.parse::<Strategy>()
                .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "strategy", e.message))?,
        ),
        None => None,
    };
    if let Some(unknown) = query.keys().find(|k| *k != "strategy") {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            unknown,
            "unknown query parameter; only strategy is accepted",
        ));
    }
    let items = match json_body(&body)? {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "body",
                "expected an operation object or an array of them",
            ));
        }
    };

    if items.len() > limits.operations {
        return Err(ApiError::field(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!(
                "{} operations; {} is the most {} in one request",
                items.len(),
                limits.operations,
                whose()
            ),
        ));
    }

    let mut results: Vec<Value> = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, Operation)> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match ingest::from_value(item) {
            Ok(op) => {
                valid.push((index, op));
                results.push(Value::Null);
            }
            Err(e) => results.push(json!({
                "index": index, "op_id": e.op_id, "outcome": "rejected",
                "field": e.error.field, "message": e.error.message,
            })),
        }
    }

    let mut stored_any = false;
    for chunk in valid.chunks(CHUNK) {
        let ops = chunk.iter().map(|(_, op)| op.clone()).collect();
        let outcomes = tenant
            .with_front(async |t| t.record(ops, strategy).await)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        for ((index, op), outcome) in chunk.iter().zip(outcomes) {
            stored_any |= outcome == RecordOutcome::Stored;
            results[*index] = outcome_json(*index, &op.op_id, outcome);
        }
    }
    if stored_any {
        tenant.worker.wake();
    }

    let count = |what: &str| results.iter().filter(|r| r["outcome"] == what).count();
    let summary = json!({
        "stored": count("stored"),
        "published": count("published"),
        "duplicate": count("duplicate"),
        "rejected": count("rejected"),
        "publish_failed": count("publish_failed"),
    });
    let status = if summary["rejected"] != 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if summary["duplicate"] != 0 {
        StatusCode::CONFLICT
    } else if summary["publish_failed"] != 0 {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    let mut body = summary;
    body["results"] = Value::Array(results);
    Ok((status, Json(body)))
}

fn outcome_json(index: usize, op_id: &str, outcome: RecordOutcome) -> Value {
    match outcome {
        RecordOutcome::Stored => json!({"index": index, "op_id": op_id, "outcome": "stored"}),
        RecordOutcome::Published => {
            json!({"index": index, "op_id": op_id, "outcome": "published"})
        }
        RecordOutcome::Duplicate => json!({
            "index": index, "op_id": op_id, "outcome": "duplicate", "field": "op_id",
            "message": "an operation with this op_id already exists; the stored one is unchanged",
        }),
        RecordOutcome::Rejected(e) => json!({
            "index": index, "op_id": op_id, "outcome": "rejected",
            "field": e.field, "message": e.message,
        }),
        RecordOutcome::PublishFailed(e) => json!({
            "index": index, "op_id": op_id, "outcome": "publish_failed", "message": e.to_string(),
        }),
    }
}

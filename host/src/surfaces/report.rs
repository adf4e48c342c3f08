//! The JSON shapes operators read, shared by the CLI and the HTTP API so both
//! always print the same figures.

use serde_json::{Value, json};
use trustlog_guest::model::{Operation, StatusReport};

use crate::db::{DeadLetter, FoundOperation, Lease, RetryRow};
use crate::surfaces::ingest::format_timestamp;

/// The monitoring figures, as `status --json` and `GET /v1/status` print them, with
/// which host delivers according to the lease row.
pub fn status_json(r: &StatusReport, lease: Option<&Lease>) -> Value {
    let s = &r.stats;
    json!({
        "total": s.total,
        "trustlogged": s.trustlogged,
        "not_trustlogged": s.not_trustlogged,
        "db_only": s.db_only,
        "retry_pending": s.retry_pending,
        "dead_letter": s.dead_letter,
        "next_retry_at": s.next_retry_at.map(format_timestamp),
        "cursor_lag_seconds": r.cursor_lag_seconds,
        "cursor": s.cursor.as_ref().map(|p| json!({"timestamp": format_timestamp(p.timestamp), "op_id": p.op_id})),
        "delivery": delivery_json(lease),
    })
}

/// Which host delivers and what it last said of it (`running`, `outage: …`), from the
/// lease row; `null` when no host ever took it.
pub fn delivery_json(lease: Option<&Lease>) -> Value {
    match lease {
        None => Value::Null,
        Some(l) if l.is_held() => json!({
            "host": l.holder,
            "state": l.state,
            "since": format_timestamp(l.acquired_at),
        }),
        Some(l) if l.holder.is_empty() => json!({
            "host": null,
            "state": "none: the last host released the lease",
        }),
        Some(l) => json!({
            "host": null,
            "state": format!("none: the lease of {} ran out at {}", l.holder, format_timestamp(l.expires_at)),
        }),
    }
}

/// One dead letter, timestamps in RFC 3339.
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "op_id": d.op_id,
        "timestamp": d.timestamp.map(format_timestamp),
        "retry_count": d.retry_count,
        "error_message": d.error_message,
        "first_failed_at": format_timestamp(d.created_at),
        "dead_lettered_at": format_timestamp(d.updated_at),
        "last_retry_at": d.last_retry_at.map(format_timestamp),
    })
}

/// A retry row as the API and `operations show --json` print it.
pub fn retry_json(r: &RetryRow) -> Value {
    json!({
        "retry_count": r.retry_count,
        "retry_status": r.retry_status,
        "last_retry_at": r.last_retry_at.map(format_timestamp),
        "next_retry_at": r.next_retry_at.map(format_timestamp),
        "error_message": r.error_message,
        "created_at": format_timestamp(r.created_at),
        "updated_at": format_timestamp(r.updated_at),
    })
}

/// Why a stored row could not be read, or `null`.
pub fn fault_json(found: &FoundOperation) -> Value {
    match &found.operation {
        Ok(_) => Value::Null,
        Err(f) => json!({"column": f.column, "message": f.message}),
    }
}

/// One search result: the fields a list shows.
pub fn found_summary_json(found: &FoundOperation) -> Value {
    let op = found.operation.as_ref().ok();
    json!({
        "op_id": found.op_id,
        "timestamp": found.timestamp.map(format_timestamp),
        "op_actor": op.map(|o| &o.op_actor),
        "doid": op.map(|o| &o.doid),
        "producer_id": op.map(|o| &o.producer_id),
        "op_type": op.map(|o| &o.op_type),
        "op_source": op.map(|o| &o.op_source),
        "status": found.trustlog_status,
        "retry_status": found.retry.as_ref().map(|r| &r.retry_status),
        "retry_count": found.retry.as_ref().map(|r| r.retry_count),
        "error_message": found.retry.as_ref().map(|r| &r.error_message),
        "fault": fault_json(found),
    })
}

/// Every stored field of an operation, as `record` takes them.
pub fn operation_json(op: &Operation) -> Value {
    json!({
        "op_id": op.op_id,
        "op_actor": op.op_actor,
        "doid": op.doid,
        "producer_id": op.producer_id,
        "request_body_hash": op.request_body_hash,
        "response_body_hash": op.response_body_hash,
        "op_source": op.op_source,
        "op_type": op.op_type,
        "do_prefix": op.do_prefix,
        "do_repository": op.do_repository,
        "client_ip": op.client_ip,
        "server_ip": op.server_ip,
        "timestamp": format_timestamp(op.timestamp),
    })
}

/// One operation in full: stored fields, status, retry row, row fault, and the
/// canonical envelope the trust log gets with its SHA-256.
pub fn found_json(found: &FoundOperation) -> Value {
    let envelope = match &found.operation {
        Ok(op) => match trustlog_guest::envelope::build(op) {
            Ok(e) => json!({
                "payload": String::from_utf8_lossy(&e.payload),
                "sha256": e.sha256,
            }),
            Err(e) => json!({"error": format!("{}: {}", e.field, e.message)}),
        },
        Err(_) => Value::Null,
    };
    json!({
        "operation": found.operation.as_ref().ok().map(operation_json),
        "op_id": found.op_id,
        "status": found.trustlog_status,
        "retry": found.retry.as_ref().map(retry_json),
        "fault": fault_json(found),
        "envelope": envelope,
    })
}

/// One page of a search, as `GET /v1/operations` and `operations search --json` print
/// it: the rows, `next_after` while the page was full, and `count` when it was asked.
pub fn search_page_json(page: &[FoundOperation], limit: u32, count: Option<u64>) -> Value {
    let next_after = (page.len() == limit as usize)
        .then(|| page.last())
        .flatten()
        .map(|last| {
            let p = last.position();
            format!("{}|{}", p.timestamp, p.op_id)
        });
    let mut body = json!({
        "operations": page.iter().map(found_summary_json).collect::<Vec<_>>(),
        "next_after": next_after,
    });
    if let Some(n) = count {
        body["count"] = json!(n);
    }
    body
}

//! The JSON shapes operators read, shared by the CLI and the HTTP API so both
//! always print the same figures.

use serde_json::{Value, json};
use trustlog_guest::model::StatusReport;

use crate::db::{DeadLetter, Lease};
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

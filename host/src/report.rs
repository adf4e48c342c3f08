//! The JSON shapes operators read, shared by the CLI and the HTTP API so both
//! always print the same figures.

use serde_json::{Value, json};
use trustlog_guest::model::StatusReport;

use crate::db::DeadLetter;
use crate::ingest::format_timestamp;

/// The monitoring figures, as `status --json` and `GET /v1/status` print them.
pub fn status_json(r: &StatusReport) -> Value {
    let s = &r.stats;
    json!({
        "total": s.total,
        "trustlogged": s.trustlogged,
        "not_trustlogged": s.not_trustlogged,
        "db_only": s.db_only,
        "retry_pending": s.retry_pending,
        "dead_letter": s.dead_letter,
        "cursor_lag_seconds": r.cursor_lag_seconds,
        "cursor": s.cursor.as_ref().map(|p| json!({"timestamp": format_timestamp(p.timestamp), "op_id": p.op_id})),
    })
}

/// One dead letter, timestamps in RFC 3339.
pub fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "op_id": d.op_id,
        "timestamp": format_timestamp(d.timestamp),
        "retry_count": d.retry_count,
        "error_message": d.error_message,
        "first_failed_at": format_timestamp(d.created_at),
        "dead_lettered_at": format_timestamp(d.updated_at),
        "last_retry_at": d.last_retry_at.map(format_timestamp),
    })
}

//! Builders the adapters' own tests share (the backend-generic tests live in
//! `tests/conformance.rs`).

use trustlog_guest::model::{CursorMove, Micros, Operation, Position, RetryStatus, RetryUpdate};

/// The cursor key the adapters' tests move.
pub const DEFAULT_KEY: &str = trustlog_guest::model::DEFAULT_CURSOR_KEY;

/// A complete operation with id `id` at `timestamp`.
pub fn op(id: &str, timestamp: Micros) -> Operation {
    Operation {
        op_id: id.to_string(),
        op_actor: "actor".to_string(),
        doid: format!("10.1000/repo/{id}"),
        producer_id: "producer-1".to_string(),
        request_body_hash: Some("req-hash".to_string()),
        response_body_hash: None,
        op_source: "api".to_string(),
        op_type: "create".to_string(),
        do_prefix: "10.1000".to_string(),
        do_repository: "repo".to_string(),
        client_ip: Some("192.0.2.1".to_string()),
        server_ip: None,
        timestamp,
    }
}

/// A keyset position.
pub fn pos(timestamp: Micros, id: &str) -> Position {
    Position {
        timestamp,
        op_id: id.to_string(),
    }
}

/// A retry row after one failed retry.
pub fn retry(id: &str, status: RetryStatus, next: Option<Micros>) -> RetryUpdate {
    RetryUpdate {
        op_id: id.to_string(),
        retry_count: 1,
        retry_status: status,
        last_retry_at: Some(1),
        next_retry_at: next,
        error_message: "broker down".to_string(),
    }
}

/// A move of the default cursor from `expected` to `to`.
pub fn move_cursor(expected: Option<Position>, to: Position) -> Option<CursorMove> {
    Some(CursorMove {
        key: DEFAULT_KEY.to_string(),
        expected,
        to,
    })
}

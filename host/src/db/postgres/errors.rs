//! PostgreSQL's errors as the `db` interface's: unavailable, conflict, invalid (naming
//! the field), or other.

use super::*;

/// The field of an [`DbError::Invalid`] whose column PostgreSQL did not name.
pub(super) const UNKNOWN_FIELD: &str = "value";

/// Names the field behind an insert's "value too long" or NUL-byte refusal, which
/// PostgreSQL reports by type only ("value too long for type character varying(64)").
pub(super) fn blame_operation_field(ops: &[Operation], error: DbError) -> DbError {
    let DbError::Invalid(FieldError { field, message }) = &error else {
        return error;
    };
    if field != UNKNOWN_FIELD {
        return error;
    }
    // The declared length, when the message gives one: of the fields too long, the first
    // of that size is the one PostgreSQL tripped on.
    let declared: Option<usize> = message
        .rsplit_once('(')
        .and_then(|(_, n)| n.strip_suffix(')'))
        .and_then(|n| n.parse().ok());
    for op in ops {
        for (name, value) in [
            ("op_id", Some(&op.op_id)),
            ("op_actor", Some(&op.op_actor)),
            ("doid", Some(&op.doid)),
            ("producer_id", Some(&op.producer_id)),
            ("request_body_hash", op.request_body_hash.as_ref()),
            ("response_body_hash", op.response_body_hash.as_ref()),
            ("op_source", Some(&op.op_source)),
            ("op_type", Some(&op.op_type)),
            ("do_prefix", Some(&op.do_prefix)),
            ("do_repository", Some(&op.do_repository)),
            ("client_ip", op.client_ip.as_ref()),
            ("server_ip", op.server_ip.as_ref()),
        ] {
            let Some(value) = value else { continue };
            let max = LIMITS
                .iter()
                .find(|(f, _)| *f == name)
                .map_or(usize::MAX, |(_, n)| *n);
            let len = value.chars().count();
            let detail = if len > max && declared.is_none_or(|d| d == max) {
                format!("{name} is {len} characters long; at most {max} are allowed")
            } else if value.contains('\0') {
                format!("{name} contains a NUL character")
            } else {
                continue;
            };
            return DbError::Invalid(FieldError::new(
                name,
                format!("{message} (op_id {:?}: {detail})", op.op_id),
            ));
        }
    }
    error
}

/// The named CHECK constraints of the schema and the field each guards.
pub(super) const CHECKED_FIELDS: &[(&str, &str)] = &[
    ("operation_trustlog_status_value", "trustlog_status"),
    ("trustlog_retry_retry_status_value", "retry_status"),
];

/// The key value of a unique violation on op_id: "Key (op_id)=(op-1) already exists."
pub(super) fn conflicting_op_id(detail: &str) -> Option<String> {
    detail
        .strip_prefix("Key (op_id)=(")?
        .strip_suffix(") already exists.")
        .map(str::to_string)
}

/// SQLSTATEs worth retrying: the server is going away, overloaded or timed out, or the
/// transaction lost a lock race it will win next time.
pub(super) fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources, too many connections
        || matches!(
            code,
            "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up, shutting down)
                | "57014" // query_canceled (statement_timeout)
                | "55P03" // lock_not_available (lock_timeout)
                | "40001" // serialization_failure
                | "40P01" // deadlock_detected
        )
}

/// Maps a sqlx error onto the `db-error` variants, keeping the server's message.
pub(super) fn map_error(error: sqlx::Error) -> DbError {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
                return DbError::Other(message);
            };
            let code = pg.code();
            match code {
                "23505" => {
                    DbError::Conflict(pg.detail().and_then(conflicting_op_id).unwrap_or(message))
                }
                // string_data_right_truncation, character_not_in_repertoire (a NUL byte),
                // not_null_violation: the column is named when PostgreSQL knows it.
                "22001" | "22021" | "23502" => DbError::Invalid(FieldError::new(
                    pg.column().unwrap_or(UNKNOWN_FIELD),
                    message,
                )),
                "23514" => {
                    let constraint = pg.constraint().unwrap_or_default();
                    let field = CHECKED_FIELDS
                        .iter()
                        .find(|(name, _)| *name == constraint)
                        .map_or(constraint, |(_, field)| field);
                    DbError::Invalid(FieldError::new(
                        if field.is_empty() {
                            UNKNOWN_FIELD
                        } else {
                            field
                        },
                        message,
                    ))
                }
                // datetime_field_overflow: a timestamp PostgreSQL cannot hold.
                "22008" => DbError::Invalid(FieldError::new("timestamp", message)),
                _ if is_transient(code) => {
                    DbError::Unavailable(format!("{message} (SQLSTATE {code})"))
                }
                _ => DbError::Other(format!("{message} (SQLSTATE {code})")),
            }
        }
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed) => DbError::Unavailable(e.to_string()),
        other => DbError::Other(other.to_string()),
    }
}

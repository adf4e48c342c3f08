//! MySQL/MariaDB errors as the `db` interface's: unavailable, conflict, invalid (naming
//! the field), or other.

use super::*;

/// The named CHECK constraints of the schema and the field each guards.
pub(super) const CHECKED_FIELDS: &[(&str, &str)] = &[
    ("operation_op_id_chars", "op_id"),
    ("operation_trustlog_status_value", "trustlog_status"),
    ("trustlog_retry_retry_status_value", "retry_status"),
];

/// Server errors that name the column whose value was refused: data too long (1406),
/// out of range (1264), incorrect datetime (1292) or string (1366) value, NULL into
/// NOT NULL (1048), no value for a column without default (1364).
pub(super) const COLUMN_ERRORS: &[u16] = &[1406, 1264, 1292, 1366, 1048, 1364];
/// Server errors that pass with time or a retry: lock wait timeout (1205), deadlock
/// (1213), too many connections (1040, 1203), shutdown in progress (1053), disk or table
/// full (1021, 1114), read-only server during a failover (1290, 1836), connection killed
/// or timed out (1927, 4031), statement interrupted or timed out (1317, 1969, 3024),
/// network errors (1152 to 1161), statement to be re-prepared after DDL (1615).
pub(super) const TRANSIENT_ERRORS: &[u16] = &[
    1205, 1213, 1040, 1203, 1053, 1021, 1114, 1290, 1836, 1927, 4031, 1317, 1969, 3024, 1152, 1153,
    1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1615,
];

/// The server's error number, when `error` came from a MySQL or MariaDB server.
pub(super) fn server_error_number(error: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

/// Maps a sqlx error onto the `db-error` variants, keeping the server's message.
pub(super) fn map_error(error: sqlx::Error) -> DbError {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            let Some(number) = server_error_number(&*db) else {
                return DbError::Other(message);
            };
            match number {
                // Duplicate key, in its several spellings. The message names the value.
                1022 | 1062 | 1169 | 1586 | 1859 => DbError::Conflict(message),
                // A CHECK constraint: 4025 on MariaDB, 3819 on MySQL.
                4025 | 3819 => {
                    let name = quoted_after(&message, "constraint ").unwrap_or_default();
                    let field = CHECKED_FIELDS
                        .iter()
                        .find(|(constraint, _)| *constraint == name)
                        .map_or(name, |(_, field)| *field)
                        .to_string();
                    DbError::Invalid(FieldError::new(field, message))
                }
                n if COLUMN_ERRORS.contains(&n) => {
                    let field = quoted_after(&message, "column ")
                        .or_else(|| quoted_after(&message, "field "))
                        .map(str::to_string);
                    match field {
                        Some(field) => DbError::Invalid(FieldError::new(field, message)),
                        None => DbError::Other(format!("{message} (error {number})")),
                    }
                }
                n if TRANSIENT_ERRORS.contains(&n) => {
                    DbError::Unavailable(format!("{message} (error {number})"))
                }
                _ => DbError::Other(format!("{message} (error {number})")),
            }
        }
        sqlx::Error::Io(e) => DbError::Unavailable(e.to_string()),
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed) => {
            DbError::Unavailable(e.to_string())
        }
        other => DbError::Other(other.to_string()),
    }
}

/// The unquoted identifier that follows `word` (matched case-insensitively) in a server
/// message: `'op_id'`, or the last part of `` `db`.`table`.`op_id` ``.
pub(super) fn quoted_after<'m>(message: &'m str, word: &str) -> Option<&'m str> {
    let start = message.to_ascii_lowercase().find(word)? + word.len();
    let token = message[start..].split(' ').next()?;
    let last = token.rsplit('.').next()?;
    let name = last.trim_matches(|c| c == '\'' || c == '`' || c == '"');
    (!name.is_empty()).then_some(name)
}

//! Looking operations up for operators: one by op_id, or many by a filter in keyset
//! pages, each with its delivery state (status and retry row); and the dead letters a
//! filter or a list of op_ids selects, to replay or purge them.
//!
//! What every database does alike lives here: the filter's meaning (`Condition`),
//! the column layout of a found row (`col`) and how it is put together
//! (`FoundOperation::assemble`). Each adapter spells the SQL (its `Dialect`) and
//! reads the values.
//!
//! The search order is the scans' keyset order, (timestamp, op_id bytes), on a sort key
//! every adapter computes in SQL the same way: the timestamp in microseconds where the
//! database holds one it can read as such, and `i64::MAX` for a row whose timestamp it
//! cannot (a NULL, SQLite TEXT, PostgreSQL's infinities, a MariaDB zero date). Such a
//! row sorts after every other, by op_id among its likes, so paging reaches it exactly
//! once like any other row ([`FoundOperation::position`]).

use std::fmt;
use std::str::FromStr;

use sqlx::QueryBuilder;
use trustlog_guest::model::{DbError, Micros, Operation, Position, RowFault};

/// Which operations a search takes. `Default` takes every one; each field given narrows
/// it: text fields match exactly (byte for byte, no patterns, no case folding), `from`
/// is inclusive and `to` exclusive on `operation.timestamp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationFilter {
    /// `operation.op_id`.
    pub op_id: Option<String>,
    /// `operation.op_actor`.
    pub actor: Option<String>,
    /// `operation.doid`.
    pub doid: Option<String>,
    /// `operation.producer_id`.
    pub producer: Option<String>,
    /// The delivery state: a status of the operation or of its retry row.
    pub status: Option<OperationState>,
    /// Stamped at or after this instant.
    pub from: Option<Micros>,
    /// Stamped strictly before this instant.
    pub to: Option<Micros>,
}

/// Where an operation stands in delivery, as a filter names it: the first three are
/// `operation.trustlog_status`, the last three `trustlog_retry.retry_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationState {
    /// `NOT_TRUSTLOGGED`: stored, not yet delivered (retry rows included).
    NotTrustlogged,
    /// `TRUSTLOGGED`: the trust log confirmed it.
    Trustlogged,
    /// `DB_ONLY`: kept in the database only, never published.
    DbOnly,
    /// `PENDING`: its first delivery failed; waiting for the first retry.
    RetryPending,
    /// `RETRYING`: a retry failed too; waiting for the next one.
    Retrying,
    /// `DEAD_LETTER`: given up on.
    DeadLetter,
}

impl OperationState {
    /// Every state, in the order above.
    pub const ALL: [OperationState; 6] = [
        OperationState::NotTrustlogged,
        OperationState::Trustlogged,
        OperationState::DbOnly,
        OperationState::RetryPending,
        OperationState::Retrying,
        OperationState::DeadLetter,
    ];

    /// The string stored in the database (the seed's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::NotTrustlogged => "NOT_TRUSTLOGGED",
            OperationState::Trustlogged => "TRUSTLOGGED",
            OperationState::DbOnly => "DB_ONLY",
            OperationState::RetryPending => "PENDING",
            OperationState::Retrying => "RETRYING",
            OperationState::DeadLetter => "DEAD_LETTER",
        }
    }

    /// The SQL condition on `operation o` and `trustlog_retry r` that holds in this
    /// state. Literals, not binds, as the scans write theirs: only then can a planner
    /// prove a partial index on the status applies. Every one is a constant.
    fn condition(self) -> &'static str {
        match self {
            OperationState::NotTrustlogged => "o.trustlog_status = 'NOT_TRUSTLOGGED'",
            OperationState::Trustlogged => "o.trustlog_status = 'TRUSTLOGGED'",
            OperationState::DbOnly => "o.trustlog_status = 'DB_ONLY'",
            OperationState::RetryPending => "r.retry_status = 'PENDING'",
            OperationState::Retrying => "r.retry_status = 'RETRYING'",
            OperationState::DeadLetter => "r.retry_status = 'DEAD_LETTER'",
        }
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is none of [`OperationState`]'s spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "status {given:?} is not one of NOT_TRUSTLOGGED, TRUSTLOGGED, DB_ONLY, PENDING, RETRYING, DEAD_LETTER"
)]
pub struct UnknownState {
    /// The name given.
    pub given: String,
}

impl FromStr for OperationState {
    type Err = UnknownState;

    /// The state stored as `s`, spelled exactly as stored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState {
                given: s.to_string(),
            })
    }
}

/// An operation's row of `trustlog_retry`, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetryRow {
    /// Failed retries so far (0 right after a replay).
    pub retry_count: u32,
    /// `PENDING`, `RETRYING` or `DEAD_LETTER`, as stored (shown as it is, even an
    /// unknown value a hand-made row holds).
    pub retry_status: String,
    /// When the last attempt was made; `None` if it never was.
    pub last_retry_at: Option<Micros>,
    /// When the next attempt is due; `None` for a dead letter.
    pub next_retry_at: Option<Micros>,
    /// The last error (the publisher's message); empty where the column is NULL.
    pub error_message: String,
    /// When the first failure happened.
    pub created_at: Micros,
    /// When the row last changed.
    pub updated_at: Micros,
}

/// A column of a stored operation that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable column {column}: {message}")]
pub struct ColumnFault {
    /// The column, e.g. `timestamp` or `doid`.
    pub column: String,
    /// Why it cannot be read.
    pub message: String,
}

impl From<RowFault> for ColumnFault {
    fn from(fault: RowFault) -> Self {
        ColumnFault {
            column: fault.column,
            message: fault.message,
        }
    }
}

/// One stored operation with its delivery state. A row the host cannot make an
/// operation of is found all the same, its fault in place of the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundOperation {
    /// The operation's key.
    pub op_id: String,
    /// The timestamp it sorts by; `None` where the database does not hold one it can
    /// read as microseconds (a NULL, SQLite TEXT, PostgreSQL's infinities, a MariaDB
    /// zero date), and then the row sorts after every other (see [`Self::position`]).
    pub timestamp: Option<Micros>,
    /// `operation.trustlog_status`, as stored.
    pub trustlog_status: String,
    /// The operation, or the column that could not be read.
    pub operation: Result<Operation, ColumnFault>,
    /// Its retry row, if it has one.
    pub retry: Option<RetryRow>,
}

impl FoundOperation {
    /// Where the row stands in the search order: the last row's is the next page's
    /// `after`. A row whose timestamp cannot be read stands at `i64::MAX`.
    pub fn position(&self) -> Position {
        Position {
            timestamp: self.timestamp.unwrap_or(i64::MAX),
            op_id: self.op_id.clone(),
        }
    }

    /// The found row of `op_id` from what an adapter read: `read` is the operation
    /// (or its fault), `timestamp` the column [`col::TIMESTAMP`], `retry` the retry row.
    pub(super) fn assemble(
        op_id: String,
        read: Result<Operation, RowFault>,
        trustlog_status: String,
        timestamp: Option<Micros>,
        retry: Option<RetryRow>,
    ) -> FoundOperation {
        FoundOperation {
            op_id,
            timestamp,
            trustlog_status,
            operation: read.map_err(ColumnFault::from),
            retry,
        }
    }
}

/// Which dead letters a purge takes (see [`super::Database::purge_matching`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// The dead letters among these op_ids.
    Ids(Vec<String>),
    /// The dead letters among the operations the filter matches.
    Matching(OperationFilter),
}

/// The columns every adapter's search selects, in this order after the operation's
/// 13 (`operation_columns!`, read by the adapter's `operation_at`).
pub(super) mod col {
    /// `o.trustlog_status`.
    pub const STATUS: usize = 13;
    /// The timestamp in microseconds, NULL where it cannot be read (the sort key
    /// before it falls back to `i64::MAX`).
    pub const TIMESTAMP: usize = 14;
    /// `r.op_id`: NULL when the operation has no retry row.
    pub const RETRY_OP_ID: usize = 15;
    /// `r.retry_count`.
    pub const RETRY_COUNT: usize = 16;
    /// `r.retry_status`.
    pub const RETRY_STATUS: usize = 17;
    /// `r.last_retry_at`.
    pub const LAST_RETRY_AT: usize = 18;
    /// `r.next_retry_at`.
    pub const NEXT_RETRY_AT: usize = 19;
    /// `r.error_message`.
    pub const ERROR_MESSAGE: usize = 20;
    /// `r.created_at`.
    pub const CREATED_AT: usize = 21;
    /// `r.updated_at`.
    pub const UPDATED_AT: usize = 22;
}

/// The sort key of a row whose timestamp cannot be read, as SQL (every dialect's
/// `COALESCE(timestamp, …)` names it).
macro_rules! unreadable_key {
    () => {
        "9223372036854775807"
    };
}
pub(super) use unreadable_key;

/// How one database spells a search's parts.
pub(super) struct Dialect<DB: sqlx::Database> {
    /// The sort key over `operation o`: an integer, the timestamp in microseconds or
    /// `i64::MAX` ([`unreadable_key!`]) where it cannot be read.
    pub key: &'static str,
    /// Appends an exact, byte-for-byte comparison of `column` (of `o`) with `value`.
    pub push_equals: fn(&mut QueryBuilder<DB>, &'static str, &str),
    /// Whether `value` could be stored in `column` at all: a filter on a value that
    /// could not matches nothing, and is not sent (a server may refuse it outright).
    pub storable: fn(&'static str, &str) -> bool,
}

/// One part of a filter, as every database means it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Condition<'f> {
    /// `column` of `o` holds exactly `value`.
    Equals {
        /// The column.
        column: &'static str,
        /// The value.
        value: &'f str,
    },
    /// The delivery state.
    State(OperationState),
    /// The sort key is at or after this.
    From(Micros),
    /// The sort key is strictly before this.
    Before(Micros),
}

impl OperationFilter {
    /// Its parts, each one condition on a row of `operation o` left-joined with its
    /// `trustlog_retry r`.
    pub(super) fn conditions(&self) -> Vec<Condition<'_>> {
        let mut conditions = Vec::new();
        for (column, value) in [
            ("op_id", &self.op_id),
            ("op_actor", &self.actor),
            ("doid", &self.doid),
            ("producer_id", &self.producer),
        ] {
            if let Some(value) = value {
                conditions.push(Condition::Equals { column, value });
            }
        }
        conditions.extend(self.status.map(Condition::State));
        conditions.extend(self.from.map(Condition::From));
        conditions.extend(self.to.map(Condition::Before));
        conditions
    }
}

/// Appends ` AND <condition>` for each part of `filter`, every value bound.
pub(super) fn push_filter<DB>(
    qb: &mut QueryBuilder<DB>,
    filter: &OperationFilter,
    dialect: &Dialect<DB>,
) where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    for condition in filter.conditions() {
        qb.push(" AND ");
        match condition {
            Condition::Equals { column, value } if (dialect.storable)(column, value) => {
                (dialect.push_equals)(qb, column, value);
            }
            // No stored row can hold it: nothing matches.
            Condition::Equals { .. } => {
                qb.push("1 = 0");
            }
            Condition::State(state) => {
                qb.push(state.condition());
            }
            Condition::From(at) => {
                qb.push(dialect.key).push(" >= ").push_bind(at);
            }
            Condition::Before(at) => {
                qb.push(dialect.key).push(" < ").push_bind(at);
            }
        }
    }
}

/// `ids` sorted and without repeats: the order the purges and replays lock rows in
/// (as [`super::Database::apply`] does), and no id sent twice.
pub(super) fn sorted_ids(ids: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A retry column of `op_id` that cannot be read: the whole read fails, naming both,
/// as a dead-letter listing does.
pub(super) fn retry_fault(op_id: &str, column: &str, message: impl fmt::Display) -> DbError {
    DbError::Other(format!(
        "trustlog_retry.{column} of {op_id:?} cannot be read: {message}"
    ))
}

/// `retry_count` as stored, refused when out of range (negative, or past `u32`).
pub(super) fn retry_count(op_id: &str, count: i64) -> Result<u32, DbError> {
    u32::try_from(count)
        .map_err(|_| retry_fault(op_id, "retry_count", format!("{count} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_from_its_stored_spelling_and_back() {
        for state in OperationState::ALL {
            assert_eq!(state.as_str().parse::<OperationState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        for wrong in [
            "",
            "pending",
            "DEAD LETTER",
            "NOT_TRUSTLOGGED ",
            "DEAD_LETTER'--",
        ] {
            let err = wrong.parse::<OperationState>().unwrap_err();
            assert_eq!(err.given, wrong);
            assert!(err.to_string().contains("DEAD_LETTER"), "{err}");
        }
    }

    #[test]
    fn the_states_split_between_the_operation_and_its_retry_row() {
        for (i, state) in OperationState::ALL.into_iter().enumerate() {
            let column = if i < 3 {
                "o.trustlog_status"
            } else {
                "r.retry_status"
            };
            assert_eq!(
                state.condition(),
                format!("{column} = '{}'", state.as_str())
            );
        }
    }

    #[test]
    fn a_default_filter_has_no_conditions_and_each_field_adds_one() {
        assert!(OperationFilter::default().conditions().is_empty());
        let filter = OperationFilter {
            op_id: Some("a".into()),
            actor: Some("b".into()),
            doid: Some("c".into()),
            producer: Some("d".into()),
            status: Some(OperationState::DeadLetter),
            from: Some(1),
            to: Some(2),
        };
        assert_eq!(
            filter.conditions(),
            [
                Condition::Equals {
                    column: "op_id",
                    value: "a"
                },
                Condition::Equals {
                    column: "op_actor",
                    value: "b"
                },
                Condition::Equals {
                    column: "doid",
                    value: "c"
                },
                Condition::Equals {
                    column: "producer_id",
                    value: "d"
                },
                Condition::State(OperationState::DeadLetter),
                Condition::From(1),
                Condition::Before(2),
            ]
        );
    }

    #[test]
    fn a_row_whose_timestamp_cannot_be_read_stands_last() {
        let found = |timestamp| FoundOperation {
            op_id: "x".into(),
            timestamp,
            trustlog_status: "NOT_TRUSTLOGGED".into(),
            operation: Err(ColumnFault {
                column: "timestamp".into(),
                message: "infinite".into(),
            }),
            retry: None,
        };
        assert_eq!(found(Some(5)).position().timestamp, 5);
        assert_eq!(found(None).position().timestamp, i64::MAX);
        assert_eq!(found(None).position().op_id, "x");
    }

    #[test]
    fn ids_are_sorted_once_each() {
        let ids = ["b", "a", "b", "", "a"].map(String::from);
        assert_eq!(sorted_ids(&ids), ["", "a", "b"]);
    }
}

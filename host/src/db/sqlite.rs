//! The SQLite adapter: the `db` interface of `wit/trustlog.wit` as batched SQL.
//!
//! Every statement that touches many rows is one multi-row statement per chunk, and every
//! write runs in a transaction opened with `BEGIN IMMEDIATE`: it takes the write lock up
//! front, so two writers queue on the busy timeout instead of deadlocking on a lock
//! upgrade.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, TypeInfo, ValueRef};
use trustlog_guest::model::{
    CursorMove, DbError, DbStats, Fetched, FieldError, InsertOutcome, Micros, Operation, Position,
    RetryRow, RetryUpdate, RowFault, TEXT_FIELDS, TrustlogStatus, UnitOfWork,
};

use super::cursor_value::{format_position, parse_cursor_any, parse_cursor_of};
use super::schema_check::{Column, TABLES};
use super::search::{self, Dialect, FoundOperation, OperationFilter, Purge, col, unreadable_key};
use super::{Backlog, DeadLetter, Lease, Replay};

// PATH: the schema; the host crate points this at its own `sql/sqlite.sql`.
const SCHEMA: &str = include_str!("../../../sql/sqlite.sql");

/// Rows per multi-row INSERT into `operation`: 14 binds each, 14,000 in all, well under
/// SQLite's limit of 32,766 bind parameters per statement.
const INSERT_CHUNK: usize = 1_000;
/// Rows per multi-row upsert into `trustlog_retry` (8 binds each).
const RETRY_CHUNK: usize = 1_000;
/// op_ids per `IN (...)` list.
const ID_CHUNK: usize = 5_000;
/// Connections per pool. SQLite has one writer at a time, so more only adds contention;
/// and each connection is a thread with its own page and statement caches, about
/// 0.8 MiB, which is most of what an idle tenant costs (`trustlog bench --idle-tenants`
/// measured 2.2 MiB per tenant with 4, 1.3 MiB with 1, and no throughput change).
/// A single connection also serves a shared-cache memory database best: each extra
/// connection to one contends on table locks that the busy timeout does not cover.
const POOL_SIZE: u32 = 1;
/// Rows the connection's worker thread may buffer ahead of the task reading them.
const ROW_BUFFER: usize = 1_024;
/// How long a statement waits for another connection's write lock before failing busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The columns of [`Operation`], in field order, from `operation o`; rows are mapped by
/// index with [`operation_at`].
macro_rules! operation_columns {
    () => {
        "o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, \
         o.response_body_hash, o.op_source, o.op_type, o.do_prefix, o.do_repository, \
         o.client_ip, o.server_ip, o.timestamp"
    };
}
const OPERATION_COLUMN_COUNT: usize = 13;

// The waiting-row queries name their index: without statistics SQLite prefers the
// equality on `operation_trustlog_status` and sorts every waiting row for each batch.
// The status is a literal, not a bind, so the partial index provably applies, and the
// row value makes the keyset bound a single index range.

/// `scan_after(None, ?1)`.
const SCAN_FROM_START: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o INDEXED BY operation_waiting \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?1"
);
/// `scan_after(Some((?1, ?2)), ?3)`.
const SCAN_AFTER: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o INDEXED BY operation_waiting \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) > (?1, ?2) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?3"
);
/// `sweep_candidates((?1, ?2), ?3, ?4)`: one index range, from `since` up to the position.
const SWEEP: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o INDEXED BY operation_waiting \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < (?1, ?2) \
     AND o.timestamp >= ?3 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?4"
);
/// `has_waiting_since(?1)`: whether any row stamped at or after `?1` waits for the scan
/// or the catch-up; an index probe that stops at the first.
const WAITING_SINCE: &str = "SELECT EXISTS (SELECT 1 FROM operation o \
     INDEXED BY operation_waiting \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= ?1 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id))";
/// The earliest due time of the retry queue: the head of each status's range of
/// `trustlog_retry_due_order`.
const NEXT_RETRY_AT: &str = "SELECT MIN(due) FROM ( \
     SELECT * FROM (SELECT next_retry_at AS due FROM trustlog_retry \
      INDEXED BY trustlog_retry_due_order WHERE retry_status = 'PENDING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL \
     SELECT * FROM (SELECT next_retry_at AS due FROM trustlog_retry \
      INDEXED BY trustlog_retry_due_order WHERE retry_status = 'RETRYING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1))";
/// `backlog()`: rows waiting for their first delivery (from `operation_waiting`), retry
/// rows pending (from `trustlog_retry_due_order`), and the first due time.
const BACKLOG: &str = "SELECT \
     (SELECT COUNT(*) FROM operation o INDEXED BY operation_waiting \
      WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
      AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)), \
     (SELECT COUNT(*) FROM trustlog_retry INDEXED BY trustlog_retry_due_order \
      WHERE retry_status IN ('PENDING', 'RETRYING'))";
/// Creates a lease row, released, unless it exists: `?1` key, `?2` now.
const ENSURE_LEASE: &str = "INSERT INTO trustlog_lease (lease_key, holder, acquired_at, \
     renewed_at, expires_at, state) VALUES (?1, '', ?2, ?2, ?2, '') \
     ON CONFLICT (lease_key) DO NOTHING";
/// A lease row as it stands.
const READ_LEASE: &str = "SELECT holder, acquired_at, renewed_at, expires_at, state \
     FROM trustlog_lease WHERE lease_key = ?1";
/// Takes or renews a lease: `?1` key, `?2` holder, `?3` now, `?4` expiry, `?5` state,
/// with compare-and-set on `?6` the holder and `?7` the expiry read before.
const CLAIM_LEASE: &str = "UPDATE trustlog_lease SET \
     acquired_at = CASE WHEN holder = ?2 THEN acquired_at ELSE ?3 END, holder = ?2, \
     renewed_at = ?3, expires_at = ?4, state = ?5 \
     WHERE lease_key = ?1 AND holder = ?6 AND expires_at = ?7";
/// Hands a lease back at once: `?1` key, `?2` holder, `?3` now.
const RELEASE_LEASE: &str = "UPDATE trustlog_lease SET holder = '', state = '', \
     expires_at = ?3 WHERE lease_key = ?1 AND holder = ?2";
/// One status's due rows for [`DUE_RETRIES`]: a walk of `trustlog_retry_due_order` in
/// (due time, op_id) order that stops at the limit. The unary + keeps the join driven by
/// the due retry rows, never by the status index of `operation`.
macro_rules! due_of {
    ($status:literal) => {
        concat!(
            "SELECT * FROM (SELECT ",
            operation_columns!(),
            ", r.retry_count, r.next_retry_at AS due \
             FROM trustlog_retry r INDEXED BY trustlog_retry_due_order \
             JOIN operation o ON o.op_id = r.op_id \
             WHERE r.retry_status = '",
            $status,
            "' AND r.next_retry_at <= ?1 AND +o.trustlog_status = 'NOT_TRUSTLOGGED' \
             ORDER BY r.next_retry_at, r.op_id LIMIT ?2)"
        )
    };
}
/// `due_retries(?1, ?2)`: the operation's columns, then `retry_count` (then the due time).
/// One ordered, limited branch per status, merged: a single range over both statuses
/// would have to sort every due row for every batch.
const DUE_RETRIES: &str = concat!(
    due_of!("PENDING"),
    " UNION ALL ",
    due_of!("RETRYING"),
    " ORDER BY due, op_id LIMIT ?2"
);
/// The timestamp of the oldest waiting row with no retry row. Not MIN(): walking the
/// index in order stops at the first match, where MIN() over the NOT EXISTS filter would
/// visit every waiting row.
const OLDEST_WAITING: &str = "SELECT o.timestamp FROM operation o INDEXED BY operation_waiting \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// Rows per status, from the covering status index.
const COUNT_BY_STATUS: &str =
    "SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status";
/// Retry rows per status, from the covering due index.
const COUNT_RETRIES_BY_STATUS: &str =
    "SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status";
/// Marks waiting rows delivered; an `(op_id, ...)` list follows. The unary + keeps the
/// planner off the status index: without statistics it would walk every waiting row
/// instead of looking up each op_id by the primary key.
const MARK_TRUSTLOGGED: &str = "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' \
     WHERE +trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// Deletes retry rows; an `(op_id, ...)` list follows.
const DELETE_RETRIES: &str = "DELETE FROM trustlog_retry WHERE op_id IN ";
/// The columns of the four tables bound, with their declared types.
const COLUMNS: &str = "SELECT m.name, p.name, p.type FROM sqlite_master m \
     JOIN pragma_table_info(m.name) p \
     WHERE m.type = 'table' AND m.name IN (?, ?, ?, ?) ORDER BY m.name, p.cid";
/// Retry rows with a time held as text.
const TEXT_RETRY_TIMES: &str = "SELECT COUNT(*) FROM trustlog_retry \
     WHERE 'text' IN (typeof(next_retry_at), typeof(last_retry_at), typeof(created_at), \
     typeof(updated_at))";
/// One cursor's stored text.
const LOAD_CURSOR: &str = "SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = ?1";
/// Rewrites a cursor value read in another form in trustlog's: `?1` the new text, `?2`
/// the key, `?3` the text read.
const REWRITE_CURSOR: &str =
    "UPDATE trustlog_cursor SET cursor_value = ?1 WHERE cursor_key = ?2 AND cursor_value = ?3";
/// The columns of [`DeadLetter`], in field order, mapped by [`dead_letter_at`].
macro_rules! dead_letter_columns {
    () => {
        "r.op_id, o.timestamp, r.retry_count, r.error_message, r.created_at, r.updated_at, \
         r.last_retry_at"
    };
}
/// `dead_letters(None, ?1)`.
const DEAD_LETTERS_FROM_START: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' ORDER BY r.op_id LIMIT ?1"
);
/// `dead_letters(Some(?1), ?2)`.
const DEAD_LETTERS_AFTER: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.op_id > ?1 ORDER BY r.op_id LIMIT ?2"
);
/// `replay_dead_letters(Replay::One(?2), ?1)`.
const REPLAY_ONE: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = ?1, updated_at = ?1 WHERE op_id = ?2 AND retry_status = 'DEAD_LETTER'";
/// `replay_dead_letters(Replay::All, ?1)`.
const REPLAY_ALL: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = ?1, updated_at = ?1 WHERE retry_status = 'DEAD_LETTER'";
/// Sets the operations of the dead letters last changed before ?1 aside as db-only, so
/// nothing delivers them once their retry rows are gone. The unary + keeps the planner
/// on the primary key, as in [`MARK_TRUSTLOGGED`].
const PURGE_MARK_DB_ONLY: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE +trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN (SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at < ?1)";
/// Deletes the dead letters last changed before ?1. The write lock taken by BEGIN IMMEDIATE
/// keeps this the same set of rows [`PURGE_MARK_DB_ONLY`] read.
const PURGE_DELETE: &str =
    "DELETE FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' AND updated_at < ?1";
/// Reads the schema page: `SELECT 1` alone would not touch the database file.
const PING: &str = "SELECT COUNT(*) FROM sqlite_master";
/// A row's timestamp as a search reads it: the INTEGER the schema stores, NULL for any
/// other type. TEXT sorts after every number here, so a search ordering by the column
/// itself could not page past a text timestamp with an integer position.
macro_rules! search_timestamp {
    () => {
        "CASE WHEN typeof(o.timestamp) = 'integer' THEN o.timestamp END"
    };
}
/// The search's sort key (see [`search`]).
const SEARCH_KEY: &str = concat!(
    "COALESCE(",
    search_timestamp!(),
    ", ",
    unreadable_key!(),
    ")"
);
/// The columns of a found row, as [`search::col`] numbers them, mapped by [`found_at`].
macro_rules! found_columns {
    () => {
        concat!(
            operation_columns!(),
            ", o.trustlog_status, ",
            search_timestamp!(),
            ", r.op_id, r.retry_count, r.retry_status, r.last_retry_at, r.next_retry_at, \
             r.error_message, r.created_at, r.updated_at \
             FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id"
        )
    };
}
/// `find_operation(?1)`, by primary key.
const FIND: &str = concat!("SELECT ", found_columns!(), " WHERE o.op_id = ?1");
/// A search, completed by [`search::push_filter`], the keyset bound, the order and the
/// limit. `WHERE TRUE` so that every condition appends as ` AND …`.
const SEARCH: &str = concat!("SELECT ", found_columns!(), " WHERE TRUE");
/// A count, completed by [`search::push_filter`].
const COUNT: &str =
    "SELECT COUNT(*) FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id WHERE TRUE";
/// The op_ids of the operations a filter matches, completed by [`search::push_filter`].
const MATCHING_IDS: &str =
    "SELECT o.op_id FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id WHERE TRUE";
/// Replays listed or matched dead letters, in the pieces around its binds: `now`, `now`
/// again, then an `(op_id, ...)` list or a subquery of op_ids.
const REPLAY_LISTED: [&str; 3] = [
    "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, next_retry_at = ",
    ", updated_at = ",
    " WHERE retry_status = 'DEAD_LETTER' AND op_id IN ",
];
/// The listed dead letters last changed before a bound, in the pieces around it: the
/// bound, then an `(op_id, ...)` list.
const PURGEABLE_LISTED: [&str; 2] = [
    "SELECT op_id FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' AND updated_at < ",
    " AND op_id IN ",
];
/// The dead letters last changed before a bound among the operations a filter matches,
/// completed by the bound and [`search::push_filter`].
const PURGEABLE_MATCHING: &str = "SELECT r.op_id FROM trustlog_retry r \
     JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.updated_at < ";
/// Sets listed operations aside as db-only, as [`PURGE_MARK_DB_ONLY`] does; an
/// `(op_id, ...)` list follows.
const MARK_DB_ONLY_LISTED: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE +trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// How SQLite spells a search: `=` on TEXT compares bytes (the BINARY collation), and
/// any string can be stored.
const DIALECT: Dialect<Sqlite> = Dialect {
    key: SEARCH_KEY,
    push_equals: |qb, column, value| {
        qb.push("o.").push(column).push(" = ").push_bind(value);
    },
    storable: |_, _| true,
};

/// A pool of connections to one SQLite database, implementing the `db` interface.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pool: SqlitePool,
}

impl SqliteDb {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<SqliteDb, DbError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(map_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL syncs the WAL on every commit: an acknowledged row survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false)
            // Room for a whole batch, so the worker thread steps through it without
            // blocking on a full channel (the default holds 50 rows).
            .row_buffer_size(ROW_BUFFER);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            // A ping of an in-process SQLite connection proves nothing and costs a round trip
            // to its worker thread on every call.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(map_error)?;
        Ok(SqliteDb { pool })
    }

    /// The columns of trustlog's tables, with their declared types.
    pub async fn columns(&self) -> Result<Vec<Column>, DbError> {
        let rows = sqlx::query(COLUMNS)
            .bind(TABLES[0])
            .bind(TABLES[1])
            .bind(TABLES[2])
            .bind(TABLES[3])
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(Column {
                    table: row.try_get(0).map_err(map_error)?,
                    name: row.try_get(1).map_err(map_error)?,
                    data_type: row
                        .try_get::<String, _>(2)
                        .map_err(map_error)?
                        .to_lowercase(),
                    max_length: None,
                    collation: None,
                    precision: None,
                })
            })
            .collect()
    }

    /// How many retry rows hold a time as text (the seed's module writes them so): the
    /// due-retry walk compares integers and would never find them due.
    pub async fn text_retry_times(&self) -> Result<u64, DbError> {
        let present: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'trustlog_retry'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)?;
        if present == 0 {
            return Ok(0);
        }
        let count: i64 = sqlx::query_scalar(TEXT_RETRY_TIMES)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs statements that change existing tables, in one transaction.
    pub async fn alter(&self, statements: &[&str]) -> Result<(), DbError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    /// Creates the tables and indexes that are missing; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), DbError> {
        sqlx::raw_sql(SCHEMA)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Stores operations with one status; one outcome per input, in input order.
    pub async fn insert(
        &self,
        ops: Vec<Operation>,
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        for chunk in ops.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash, \
                 response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, \
                 server_ip, timestamp, trustlog_status) ",
            );
            qb.push_values(chunk, |mut row, op| {
                row.push_bind(op.op_id.as_str())
                    .push_bind(op.op_actor.as_str())
                    .push_bind(op.doid.as_str())
                    .push_bind(op.producer_id.as_str())
                    .push_bind(op.request_body_hash.as_deref())
                    .push_bind(op.response_body_hash.as_deref())
                    .push_bind(op.op_source.as_str())
                    .push_bind(op.op_type.as_str())
                    .push_bind(op.do_prefix.as_str())
                    .push_bind(op.do_repository.as_str())
                    .push_bind(op.client_ip.as_deref())
                    .push_bind(op.server_ip.as_deref())
                    .push_bind(op.timestamp)
                    .push_bind(status.as_str());
            });
            qb.push(" ON CONFLICT(op_id) DO NOTHING RETURNING op_id");
            let rows = qb.build().fetch_all(&mut *tx).await.map_err(map_error)?;
            let mut stored = rows
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<HashSet<String>, _>>()
                .map_err(map_error)?;
            // SQLite inserts VALUES rows in order, so of two equal op_ids in one batch the
            // first is stored; removing an id once claimed makes the second a Duplicate.
            for op in chunk {
                outcomes.push(if stored.remove(op.op_id.as_str()) {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::Duplicate
                });
            }
        }
        tx.commit().await.map_err(map_error)?;
        Ok(outcomes)
    }

    /// Reads a cursor's position; `None` when the row is missing or empty.
    pub async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
        let value: Option<String> = sqlx::query_scalar(LOAD_CURSOR)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        match parse_cursor_any(key, value.as_deref())? {
            Some((p, false)) => {
                // Written by another program (the seed's module writes a bare
                // timestamp): rewritten in trustlog's form, with compare-and-set on what
                // was read, so the compare-and-set of every move matches it.
                sqlx::query(REWRITE_CURSOR)
                    .bind(format_position(&p))
                    .bind(key)
                    .bind(value.as_deref())
                    .execute(&self.pool)
                    .await
                    .map_err(map_error)?;
                Ok(Some(p))
            }
            other => Ok(other.map(|(p, _)| p)),
        }
    }

    /// `NOT_TRUSTLOGGED` rows strictly after `after` in (timestamp, op_id) order.
    pub async fn scan_after(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        let rows = match after {
            None => {
                sqlx::query(SCAN_FROM_START)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            Some(p) => {
                sqlx::query(SCAN_AFTER)
                    .bind(p.timestamp)
                    .bind(p.op_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(map_error)?;
        super::fetch_each(&rows, operation_at)
    }

    /// Retry rows due at `now` (pending or retrying, operation still waiting), oldest due first.
    pub async fn due_retries(&self, now: Micros, limit: u32) -> Result<Fetched<RetryRow>, DbError> {
        let rows = sqlx::query(DUE_RETRIES)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        super::fetch_each_retry(&rows, operation_at, |row| {
            let count: i64 = row.try_get(OPERATION_COLUMN_COUNT).map_err(map_error)?;
            u32::try_from(count)
                .map_err(|_| DbError::Other(format!("retry_count {count} is out of range")))
        })
    }

    /// `NOT_TRUSTLOGGED` rows strictly before `before`, stamped at or after `since`, with
    /// no retry row: late commits.
    pub async fn sweep_candidates(
        &self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        let rows = sqlx::query(SWEEP)
            .bind(before.timestamp)
            .bind(before.op_id)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        super::fetch_each(&rows, operation_at)
    }

    /// What is left to deliver, from the indexes.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let row = sqlx::query(BACKLOG)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        let next_retry_at: Option<i64> = sqlx::query_scalar(NEXT_RETRY_AT)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(Backlog {
            waiting: count_in(&row, 0)?,
            retrying: count_in(&row, 1)?,
            next_retry_at,
        })
    }

    /// Whether any row stamped at or after `since` waits for the scan or the catch-up.
    pub async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
        sqlx::query_scalar(WAITING_SINCE)
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)
    }

    /// Creates the lease row `key`, released, unless it exists.
    pub(super) async fn ensure_lease(&self, key: &str) -> Result<(), DbError> {
        sqlx::query(ENSURE_LEASE)
            .bind(key)
            .bind(crate::scheduling::clock::now_micros())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Gives the lease to `holder` for `ttl` (by this machine's clock, which every host
    /// of one SQLite file shares) if it still is as `seen`; the row as it then stands,
    /// or `None` when another host changed it first.
    pub(super) async fn swap_lease(
        &self,
        seen: &Lease,
        holder: &str,
        ttl: Duration,
        state: &str,
    ) -> Result<Option<Lease>, DbError> {
        let now = crate::scheduling::clock::now_micros();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        // A lease need not survive a power cut (the hosts sharing a SQLite file are on
        // the machine that lost it), so its write skips the fsync every other commit
        // pays: renewals were most of what an idle tenant cost. The connection is the
        // pool's only one; it goes back with full syncing, or is closed.
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        sqlx::raw_sql("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        let taken = sqlx::query(CLAIM_LEASE)
            .bind(&seen.key)
            .bind(holder)
            .bind(now)
            .bind(expires_at)
            .bind(state)
            .bind(&seen.holder)
            .bind(seen.expires_at)
            .execute(&mut *conn)
            .await;
        if let Err(e) = sqlx::raw_sql("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
        {
            conn.close_on_drop();
            return Err(map_error(e));
        }
        let taken = taken.map_err(map_error)?.rows_affected();
        if taken != 1 {
            return Ok(None);
        }
        Ok(Some(Lease {
            key: seen.key.clone(),
            holder: holder.to_string(),
            acquired_at: if seen.holder == holder {
                seen.acquired_at
            } else {
                now
            },
            renewed_at: now,
            expires_at,
            state: state.to_string(),
            expired: false,
        }))
    }

    /// Releases the lease `key` if `holder` has it, so another host may take it at once.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
        sqlx::query(RELEASE_LEASE)
            .bind(key)
            .bind(holder)
            .bind(crate::scheduling::clock::now_micros())
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// The lease `key` as it stands (expired or not by this machine's clock), if it exists.
    pub async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
        let Some(row) = sqlx::query(READ_LEASE)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?
        else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get(3).map_err(map_error)?;
        Ok(Some(Lease {
            key: key.to_string(),
            holder: row.try_get(0).map_err(map_error)?,
            acquired_at: row.try_get(1).map_err(map_error)?,
            renewed_at: row.try_get(2).map_err(map_error)?,
            expires_at,
            state: row.try_get(4).map_err(map_error)?,
            expired: expires_at < crate::scheduling::clock::now_micros(),
        }))
    }

    /// The monitoring counts and the position of `cursor_key`, read in one snapshot.
    pub async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        // A deferred transaction: in WAL mode every read below sees the same snapshot.
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        let mut stats = DbStats::default();

        let rows = sqlx::query(COUNT_BY_STATUS)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
        for row in &rows {
            let status: String = row.try_get(0).map_err(map_error)?;
            let count = count_at(row)?;
            match status.as_str() {
                "NOT_TRUSTLOGGED" => stats.not_trustlogged = count,
                "TRUSTLOGGED" => stats.trustlogged = count,
                "DB_ONLY" => stats.db_only = count,
                other => {
                    return Err(DbError::Other(format!(
                        "operation.trustlog_status holds unknown value {other:?}"
                    )));
                }
            }
            stats.total += count;
        }

        let rows = sqlx::query(COUNT_RETRIES_BY_STATUS)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
        for row in &rows {
            let status: String = row.try_get(0).map_err(map_error)?;
            let count = count_at(row)?;
            match status.as_str() {
                "PENDING" | "RETRYING" => stats.retry_pending += count,
                "DEAD_LETTER" => stats.dead_letter += count,
                other => {
                    return Err(DbError::Other(format!(
                        "trustlog_retry.retry_status holds unknown value {other:?}"
                    )));
                }
            }
        }

        let value: Option<String> = sqlx::query_scalar(LOAD_CURSOR)
            .bind(cursor_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.cursor = parse_cursor_of(cursor_key, value.as_deref())?;

        // Read as the scan reads it: an application may have stored it as text. One
        // that cannot be read at all is about to be dead-lettered, and shows no lag.
        stats.oldest_waiting = sqlx::query(OLDEST_WAITING)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?
            .and_then(|row| timestamp_at(&row, 0).ok());

        stats.next_retry_at = sqlx::query_scalar(NEXT_RETRY_AT)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;

        tx.commit().await.map_err(map_error)?;
        Ok(stats)
    }

    /// Runs a unit of work in one transaction; on a cursor mismatch nothing is applied.
    pub async fn apply(&self, work: UnitOfWork) -> Result<(), DbError> {
        if let Some(CursorMove {
            key,
            expected: Some(expected),
            to,
        }) = &work.cursor
            && to <= expected
        {
            return Err(DbError::Other(format!(
                "cursor {key:?} only moves forward: refusing to move it from {} to {}",
                format_position(expected),
                format_position(to)
            )));
        }
        let UnitOfWork {
            now,
            trustlogged,
            retries,
            delete_retries,
            cursor,
        } = work;
        if cursor.is_none()
            && trustlogged.is_empty()
            && retries.is_empty()
            && delete_retries.is_empty()
        {
            return Ok(());
        }

        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;

        if let Some(CursorMove { key, expected, to }) = cursor {
            let to = format_position(&to);
            let moved = match expected {
                Some(expected) => sqlx::query(
                    "UPDATE trustlog_cursor SET cursor_value = ?1, last_updated_at = ?2 \
                     WHERE cursor_key = ?3 AND cursor_value = ?4",
                )
                .bind(to)
                .bind(now)
                .bind(key.as_str())
                .bind(format_position(&expected)),
                // A missing row is created; an existing one is taken only while empty
                // (the DO UPDATE's WHERE leaves a set cursor alone and reports no change).
                None => sqlx::query(
                    "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
                     VALUES (?1, ?2, ?3) ON CONFLICT(cursor_key) DO UPDATE SET \
                     cursor_value = excluded.cursor_value, \
                     last_updated_at = excluded.last_updated_at \
                     WHERE trustlog_cursor.cursor_value = ''",
                )
                .bind(key.as_str())
                .bind(to)
                .bind(now),
            }
            .execute(&mut *tx)
            .await
            .map_err(map_error)?
            .rows_affected();
            if moved != 1 {
                tx.rollback().await.map_err(map_error)?;
                tracing::debug!(cursor_key = %key, "cursor moved by another worker; unit of work rolled back");
                return Err(DbError::CursorMoved(key));
            }
        }

        for ids in trustlogged.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(MARK_TRUSTLOGGED);
            push_id_list(&mut qb, ids);
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }

        for chunk in retries.chunks(RETRY_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, last_retry_at, \
                 next_retry_at, error_message, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut row, r: &RetryUpdate| {
                row.push_bind(r.op_id.as_str())
                    .push_bind(i64::from(r.retry_count))
                    .push_bind(r.retry_status.as_str())
                    .push_bind(r.last_retry_at)
                    .push_bind(r.next_retry_at)
                    .push_bind(r.error_message.as_str())
                    .push_bind(now)
                    .push_bind(now);
            });
            // created_at is absent from the update list: it keeps the first failure's time.
            qb.push(
                " ON CONFLICT(op_id) DO UPDATE SET retry_count = excluded.retry_count, \
                 retry_status = excluded.retry_status, last_retry_at = excluded.last_retry_at, \
                 next_retry_at = excluded.next_retry_at, error_message = excluded.error_message, \
                 updated_at = excluded.updated_at",
            );
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }

        for ids in delete_retries.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(DELETE_RETRIES);
            push_id_list(&mut qb, ids);
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }

        tx.commit().await.map_err(map_error)?;
        Ok(())
    }

    /// Dead letters in op_id order, strictly after `after` when given, at most `limit`.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, DbError> {
        let rows = match after {
            None => {
                sqlx::query(DEAD_LETTERS_FROM_START)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            Some(after) => {
                sqlx::query(DEAD_LETTERS_AFTER)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(map_error)?;
        rows.iter().map(dead_letter_at).collect()
    }

    /// Puts dead letters back in the retry queue, due at `now`; returns how many changed.
    pub async fn replay_dead_letters(&self, which: Replay, now: Micros) -> Result<u64, DbError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        let replayed = match &which {
            Replay::One(op_id) => sqlx::query(REPLAY_ONE)
                .bind(now)
                .bind(op_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected(),
            Replay::All => sqlx::query(REPLAY_ALL)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected(),
            Replay::Ids(ids) => {
                let mut replayed = 0;
                for chunk in search::sorted_ids(ids).chunks(ID_CHUNK) {
                    let mut qb = replay_listed(now);
                    push_id_list(&mut qb, chunk);
                    replayed += qb
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(map_error)?
                        .rows_affected();
                }
                replayed
            }
            Replay::Matching(filter) => {
                let mut qb = replay_listed(now);
                qb.push("(").push(MATCHING_IDS);
                search::push_filter(&mut qb, filter, &DIALECT);
                qb.push(")");
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(map_error)?
                    .rows_affected()
            }
        };
        tx.commit().await.map_err(map_error)?;
        Ok(replayed)
    }

    /// Purges the dead letters `which` selects, last changed before `now`, keeping their
    /// operations as db-only; returns how many retry rows were deleted.
    pub async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        // Read first, then changed by op_id: marking an operation db-only may take it out
        // of the filter (one on NOT_TRUSTLOGGED), and a second look by the filter would
        // then miss its retry row. The write lock keeps the set as read.
        let mut ids: Vec<String> = Vec::new();
        match &which {
            Purge::Ids(listed) => {
                for chunk in search::sorted_ids(listed).chunks(ID_CHUNK) {
                    let mut qb = QueryBuilder::<Sqlite>::new(PURGEABLE_LISTED[0]);
                    qb.push_bind(now).push(PURGEABLE_LISTED[1]);
                    push_id_list(&mut qb, chunk);
                    ids.extend(
                        qb.build_query_scalar::<String>()
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(map_error)?,
                    );
                }
            }
            Purge::Matching(filter) => {
                let mut qb = QueryBuilder::<Sqlite>::new(PURGEABLE_MATCHING);
                qb.push_bind(now);
                search::push_filter(&mut qb, filter, &DIALECT);
                ids = qb
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_error)?;
            }
        }
        let mut purged = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(MARK_DB_ONLY_LISTED);
            push_id_list(&mut qb, chunk);
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
            let mut qb = QueryBuilder::<Sqlite>::new(DELETE_RETRIES);
            push_id_list(&mut qb, chunk);
            purged += qb
                .build()
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected();
        }
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// The operation `op_id` with its status and retry row, if it is stored.
    pub async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        let row = sqlx::query(FIND)
            .bind(op_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(found_at).transpose()
    }

    /// Up to `limit` operations `filter` matches, strictly after `after` in search order.
    pub async fn search_operations(
        &self,
        filter: &OperationFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<FoundOperation>, DbError> {
        let rows = search_query(filter, after, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(found_at).collect()
    }

    /// How many operations `filter` matches.
    pub async fn count_operations(&self, filter: &OperationFilter) -> Result<u64, DbError> {
        let mut qb = QueryBuilder::<Sqlite>::new(COUNT);
        search::push_filter(&mut qb, filter, &DIALECT);
        let row = qb.build().fetch_one(&self.pool).await.map_err(map_error)?;
        count_in(&row, 0)
    }

    /// Purges dead letters last changed before `before`, keeping their operations as
    /// db-only; returns how many retry rows were deleted.
    pub async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_error)?;
        sqlx::query(PURGE_MARK_DB_ONLY)
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let purged = sqlx::query(PURGE_DELETE)
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?
            .rows_affected();
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// Whether the database file can be read through the pool.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query(PING)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Moves the write-ahead log into the database file now, so that a bulk load's
    /// checkpoint does not land in whatever is timed next (`trustlog bench`).
    pub async fn settle(&self) -> Result<(), DbError> {
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Appends `(?, ?, ...)` binding `ids`; callers never pass an empty slice.
fn push_id_list(qb: &mut QueryBuilder<Sqlite>, ids: &[impl AsRef<str>]) {
    qb.push("(");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id.as_ref());
    }
    list.push_unseparated(")");
}

/// The search of [`SqliteDb::search_operations`].
fn search_query(
    filter: &OperationFilter,
    after: Option<&Position>,
    limit: u32,
) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new(SEARCH);
    search::push_filter(&mut qb, filter, &DIALECT);
    if let Some(after) = after {
        qb.push(" AND (")
            .push(SEARCH_KEY)
            .push(", o.op_id) > (")
            .push_bind(after.timestamp)
            .push(", ")
            .push_bind(after.op_id.as_str())
            .push(")");
    }
    qb.push(" ORDER BY ")
        .push(SEARCH_KEY)
        .push(", o.op_id LIMIT ")
        .push_bind(i64::from(limit));
    qb
}

/// [`REPLAY_LISTED`] up to its op_ids, due and updated at `now`.
fn replay_listed(now: Micros) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new(REPLAY_LISTED[0]);
    qb.push_bind(now)
        .push(REPLAY_LISTED[1])
        .push_bind(now)
        .push(REPLAY_LISTED[2]);
    qb
}

/// The [`FoundOperation`] in the columns `found_columns!` lists.
fn found_at(row: &SqliteRow) -> Result<FoundOperation, DbError> {
    let read = operation_at(row)?;
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let trustlog_status = row.try_get(col::STATUS).map_err(map_error)?;
    let timestamp = row.try_get(col::TIMESTAMP).map_err(map_error)?;
    let retry = match row
        .try_get::<Option<String>, _>(col::RETRY_OP_ID)
        .map_err(map_error)?
    {
        Some(_) => Some(retry_at(row, &op_id)?),
        None => None,
    };
    Ok(FoundOperation::assemble(
        op_id,
        read,
        trustlog_status,
        timestamp,
        retry,
    ))
}

/// The retry row of `op_id` in the columns `found_columns!` lists. Its times are read as
/// the scans read the operation's: the seed's module writes them as text.
fn retry_at(row: &SqliteRow, op_id: &str) -> Result<search::RetryRow, DbError> {
    let time = |index: usize, column: &str| {
        timestamp_at(row, index).map_err(|e| search::retry_fault(op_id, column, e))
    };
    let optional_time = |index: usize, column: &str| {
        let raw = row.try_get_raw(index).map_err(map_error)?;
        if raw.is_null() {
            return Ok(None);
        }
        time(index, column).map(Some)
    };
    let count: i64 = row
        .try_get(col::RETRY_COUNT)
        .map_err(|e| search::retry_fault(op_id, "retry_count", map_error(e)))?;
    let error_message: Option<String> = row
        .try_get(col::ERROR_MESSAGE)
        .map_err(|e| search::retry_fault(op_id, "error_message", map_error(e)))?;
    Ok(search::RetryRow {
        retry_count: search::retry_count(op_id, count)?,
        retry_status: row
            .try_get(col::RETRY_STATUS)
            .map_err(|e| search::retry_fault(op_id, "retry_status", map_error(e)))?,
        last_retry_at: optional_time(col::LAST_RETRY_AT, "last_retry_at")?,
        next_retry_at: optional_time(col::NEXT_RETRY_AT, "next_retry_at")?,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: time(col::CREATED_AT, "created_at")?,
        updated_at: time(col::UPDATED_AT, "updated_at")?,
    })
}

/// The [`Operation`] in the first [`OPERATION_COLUMN_COUNT`] columns of `row`.
fn operation_at(row: &SqliteRow) -> Result<Result<Operation, RowFault>, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let text = |i: usize| -> Result<String, RowFault> {
        // sqlx reads SQLite's NULL as an empty string; the field needs a value.
        match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Err(super::fault(
                &op_id,
                TEXT_FIELDS[i],
                DbError::Other("NULL where a value is needed".into()),
            )),
            _ => row
                .try_get(i)
                .map_err(|e| super::fault(&op_id, TEXT_FIELDS[i], map_error(e))),
        }
    };
    let optional = |i: usize| -> Result<Option<String>, RowFault> {
        row.try_get(i)
            .map_err(|e| super::fault(&op_id, TEXT_FIELDS[i], map_error(e)))
    };
    let read = || -> Result<Operation, RowFault> {
        Ok(Operation {
            op_actor: text(1)?,
            doid: text(2)?,
            producer_id: text(3)?,
            request_body_hash: optional(4)?,
            response_body_hash: optional(5)?,
            op_source: text(6)?,
            op_type: text(7)?,
            do_prefix: text(8)?,
            do_repository: text(9)?,
            client_ip: optional(10)?,
            server_ip: optional(11)?,
            timestamp: timestamp_at(row, 12).map_err(|e| super::fault(&op_id, "timestamp", e))?,
            op_id: op_id.clone(),
        })
    };
    Ok(read())
}

/// A timestamp as the schema stores it (INTEGER microseconds), or as TEXT in the forms
/// applications and drivers write (see [`super::text_time`]), despite the column's type.
fn timestamp_at(row: &SqliteRow, index: usize) -> Result<Micros, String> {
    let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Err("NULL where a timestamp is needed".into());
    }
    match raw.type_info().name() {
        "TEXT" => {
            let text: String = row.try_get(index).map_err(|e| e.to_string())?;
            super::text_time::parse(&text)
        }
        _ => row.try_get(index).map_err(|e| e.to_string()),
    }
}

/// The [`DeadLetter`] in the columns `dead_letter_columns!` lists.
fn dead_letter_at(row: &SqliteRow) -> Result<DeadLetter, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let count: i64 = row.try_get(2).map_err(map_error)?;
    let retry_count = u32::try_from(count)
        .map_err(|_| DbError::Other(format!("retry_count {count} of {op_id:?} is out of range")))?;
    let error_message: Option<String> = row.try_get(3).map_err(map_error)?;
    Ok(DeadLetter {
        timestamp: timestamp_at(row, 1).ok(),
        retry_count,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: row.try_get(4).map_err(map_error)?,
        updated_at: row.try_get(5).map_err(map_error)?,
        last_retry_at: row.try_get(6).map_err(map_error)?,
        op_id,
    })
}

/// The `COUNT(*)` in column 1 of `row`.
fn count_at(row: &SqliteRow) -> Result<u64, DbError> {
    count_in(row, 1)
}

/// The count in column `index`.
fn count_in(row: &SqliteRow, index: usize) -> Result<u64, DbError> {
    let count: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(count).map_err(|_| DbError::Other(format!("negative count {count}")))
}

/// SQLite's primary result codes this mapping distinguishes (the low byte of the extended code).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

/// The named CHECK constraints of the schema and the field each guards.
const CHECKED_FIELDS: &[(&str, &str)] = &[
    ("operation_op_id_length", "op_id"),
    ("operation_trustlog_status_value", "trustlog_status"),
    ("trustlog_retry_retry_status_value", "retry_status"),
];

/// Maps a sqlx error onto the `db-error` variants, keeping the database's message.
fn map_error(error: sqlx::Error) -> DbError {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message().to_string();
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            match db.kind() {
                // SQLite names the index, not the value: the message is all there is to report.
                sqlx::error::ErrorKind::UniqueViolation => DbError::Conflict(message),
                sqlx::error::ErrorKind::CheckViolation => {
                    // "CHECK constraint failed: <constraint name>"
                    let name = message.rsplit(": ").next().unwrap_or_default();
                    match CHECKED_FIELDS
                        .iter()
                        .find(|(constraint, _)| *constraint == name)
                    {
                        Some((_, field)) => DbError::Invalid(FieldError::new(*field, message)),
                        None => DbError::Other(message),
                    }
                }
                sqlx::error::ErrorKind::NotNullViolation => {
                    // "NOT NULL constraint failed: <table>.<column>"
                    match message.rsplit_once('.') {
                        Some((_, field)) if !field.is_empty() => {
                            DbError::Invalid(FieldError::new(field.to_string(), message))
                        }
                        _ => DbError::Other(message),
                    }
                }
                _ => match code & 0xff {
                    SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN => {
                        DbError::Unavailable(format!("{message} (code {code})"))
                    }
                    _ => DbError::Other(format!("{message} (code {code})")),
                },
            }
        }
        sqlx::Error::Io(e) => DbError::Unavailable(e.to_string()),
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed) => {
            DbError::Unavailable(e.to_string())
        }
        other => DbError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::cursor_value::{parse_any, parse_position};
    use crate::db::test_fixtures::*;
    use proptest::prelude::*;

    /// A migrated database in a fresh directory; keep the `TempDir` alive for the test.
    async fn fresh() -> (tempfile::TempDir, SqliteDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::connect(&url_of(&dir)).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    fn url_of(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("trustlog.db").display())
    }

    async fn fetch_all_waiting(db: &SqliteDb) -> Vec<Operation> {
        db.scan_after(None, u32::MAX).await.unwrap().rows
    }

    #[tokio::test]
    async fn connect_uses_wal_and_full_sync() {
        let (_dir, db) = fresh().await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "2 = FULL");
    }

    #[tokio::test]
    async fn an_in_memory_database_works_too() {
        let db = SqliteDb::connect("sqlite::memory:").await.unwrap();
        db.migrate().await.unwrap();
        db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert_eq!(
            db.scan_after(None, 10).await.unwrap().rows,
            vec![op("a", 1)]
        );
        db.close().await;
    }

    #[tokio::test]
    async fn chinese_utf8_text_round_trips() {
        let (_dir, db) = fresh().await;
        let mut o = op("操作-0001", 1);
        o.op_actor = "张三".to_string();
        o.doid = "10.1000/仓库/数字对象-甲".to_string();
        o.op_type = "创建".to_string();
        o.do_repository = "国家数据仓库".to_string();
        o.response_body_hash = Some("哈希值🙂".to_string());
        db.insert(vec![o.clone()], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert_eq!(fetch_all_waiting(&db).await, vec![o.clone()]);
        db.apply(UnitOfWork {
            now: 5,
            cursor: move_cursor(None, o.position()),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        assert_eq!(
            db.load_cursor(DEFAULT_KEY).await.unwrap(),
            Some(o.position())
        );
    }

    #[tokio::test]
    async fn an_op_id_over_64_characters_is_invalid_and_nothing_of_the_batch_is_stored() {
        let (_dir, db) = fresh().await;
        let long = "x".repeat(65);
        let err = db
            .insert(
                vec![op("fine", 1), op(&long, 2)],
                TrustlogStatus::NotTrustlogged,
            )
            .await
            .unwrap_err();
        match err {
            DbError::Invalid(FieldError { field, message }) => {
                assert_eq!(field, "op_id");
                assert!(message.contains("CHECK constraint failed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
        // 64 characters, not bytes: 64 Chinese characters fit.
        let wide = "操".repeat(64);
        db.insert(vec![op(&wide, 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_locked_database_is_unavailable() {
        let (dir, db) = fresh().await;
        let options = SqliteConnectOptions::from_str(&url_of(&dir))
            .unwrap()
            .busy_timeout(Duration::ZERO);
        let impatient = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let holder = db.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let err = impatient
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map(|_| ())
            .unwrap_err();
        match map_error(err) {
            DbError::Unavailable(m) => assert!(m.contains("locked"), "{m}"),
            other => panic!("{other:?}"),
        }
        holder.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn an_unopenable_path_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
        match SqliteDb::connect(&url).await {
            Err(DbError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    /// The plan of `sql` with every parameter bound to `1`, one detail line per step.
    async fn plan_of(db: &SqliteDb, sql: &str, params: usize) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for _ in 0..params {
            query = query.bind(1i64);
        }
        let rows = query.fetch_all(&db.pool).await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(3))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn the_queries_use_their_indexes_without_sorting() {
        let (_dir, db) = fresh().await;
        for (name, sql, params, index) in [
            (
                "scan from start",
                SCAN_FROM_START,
                1,
                "INDEX operation_waiting",
            ),
            (
                "scan after",
                SCAN_AFTER,
                3,
                "INDEX operation_waiting ((timestamp,op_id)>(?,?))",
            ),
            (
                "sweep",
                SWEEP,
                4,
                "INDEX operation_waiting (timestamp>? AND (timestamp,op_id)<(?,?))",
            ),
            (
                "waiting since",
                WAITING_SINCE,
                1,
                "INDEX operation_waiting (timestamp>?)",
            ),
            (
                "oldest waiting",
                OLDEST_WAITING,
                0,
                "INDEX operation_waiting",
            ),
            (
                "count by status",
                COUNT_BY_STATUS,
                0,
                "COVERING INDEX operation_trustlog_status",
            ),
            (
                "count retries",
                COUNT_RETRIES_BY_STATUS,
                0,
                "COVERING INDEX trustlog_retry_due",
            ),
        ] {
            let plan = plan_of(&db, sql, params).await;
            assert!(plan.contains(index), "{name}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{name}: {plan}");
        }
        for (name, sql) in [
            ("mark", MARK_TRUSTLOGGED),
            ("delete retries", DELETE_RETRIES),
        ] {
            let plan = plan_of(&db, &format!("{sql}(?1, ?2)"), 2).await;
            assert!(
                plan.contains("USING INDEX sqlite_autoindex_"),
                "{name}: {plan}"
            );
            assert!(plan.contains("(op_id=?)"), "{name}: {plan}");
        }
        // Each status is one index range read in (due time, op_id) order up to the limit;
        // only a branch's result (at most one batch) is sorted again for the merge.
        let plan = plan_of(&db, DUE_RETRIES, 2).await;
        let lines: Vec<&str> = plan.lines().collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains(
                    "SEARCH r USING INDEX trustlog_retry_due_order (retry_status=? AND next_retry_at<?)"
                ))
                .count(),
            2,
            "{plan}"
        );
        assert!(
            plan.contains("o USING INDEX sqlite_autoindex_operation_1 (op_id=?)"),
            "{plan}"
        );
        for (i, line) in lines.iter().enumerate() {
            if line.contains("TEMP B-TREE") {
                assert!(
                    i > 0 && lines[i - 1].starts_with("SCAN (subquery-"),
                    "only a branch's limited result may be sorted: {plan}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_search_looks_rows_up_by_the_index_its_filter_can_use() {
        let (_dir, db) = fresh().await;
        let given = |f: fn(&mut OperationFilter)| {
            let mut filter = OperationFilter::default();
            f(&mut filter);
            filter
        };
        for (name, filter, index) in [
            (
                "op_id",
                given(|f| f.op_id = Some("a".into())),
                "SEARCH o USING INDEX sqlite_autoindex_operation_1 (op_id=?)",
            ),
            (
                "status",
                given(|f| f.status = Some(search::OperationState::DbOnly)),
                "SEARCH o USING INDEX operation_trustlog_status (trustlog_status=?)",
            ),
            (
                "retry status",
                given(|f| f.status = Some(search::OperationState::DeadLetter)),
                "INDEX trustlog_retry_due_order (retry_status=?)",
            ),
        ] {
            let qb = search_query(&filter, Some(&pos(1, "a")), 10);
            let sql = qb.sql();
            let plan = plan_of(&db, sql.as_str(), sql.as_str().matches('?').count()).await;
            assert!(plan.contains(index), "{name}: {plan}");
            assert!(!plan.contains("SCAN o"), "{name}: {plan}");
        }
    }

    proptest! {
        #[test]
        fn positions_round_trip_through_the_cursor_text(timestamp in any::<i64>(), op_id in ".*") {
            let p = Position { timestamp, op_id };
            let text = format_position(&p);
            prop_assert_eq!(parse_position(&text), Ok(Some(p)));
        }

        #[test]
        fn the_cursor_text_agrees_with_chrono(timestamp in -8_000_000_000_000_000i64..8_000_000_000_000_000) {
            let text = format_position(&pos(timestamp, "id"));
            let chrono_text = chrono::DateTime::from_timestamp_micros(timestamp)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ|id")
                .to_string();
            prop_assert_eq!(text, chrono_text);
        }

        #[test]
        fn the_cursor_text_sorts_like_positions_within_rfc_3339_years(
            a in 0i64..253_402_300_800_000_000,
            b in 0i64..253_402_300_800_000_000,
        ) {
            let (ta, tb) = (format_position(&pos(a, "")), format_position(&pos(b, "")));
            prop_assert_eq!(a.cmp(&b), ta.cmp(&tb));
        }
    }

    #[test]
    fn cursor_text_examples() {
        assert_eq!(
            format_position(&pos(1_795_515_834_123_456, "op-00001")),
            "2026-11-24T10:23:54.123456Z|op-00001"
        );
        assert_eq!(
            format_position(&pos(-1, "a|b")),
            "1969-12-31T23:59:59.999999Z|a|b"
        );
        assert_eq!(
            parse_position("2026-11-24T10:23:54.123456Z|op|with|bars"),
            Ok(Some(pos(1_795_515_834_123_456, "op|with|bars")))
        );
        assert_eq!(
            parse_position("1970-01-01T00:00:00.000000Z|"),
            Ok(Some(pos(0, "")))
        );
        assert_eq!(parse_position(""), Ok(None));
        assert_eq!(
            format_position(&pos(253_402_300_800_000_000, "x")),
            "+10000-01-01T00:00:00.000000Z|x"
        );
        assert_eq!(
            format_position(&pos(-62_167_219_200_000_001, "x")),
            "-0001-12-31T23:59:59.999999Z|x"
        );
    }

    #[test]
    fn a_bare_timestamp_as_the_seed_writes_it_is_a_position_before_that_instant() {
        for (text, micros) in [
            ("2026-11-24T10:23:54.123456789Z", 1_795_515_834_123_456),
            ("2026-11-24 18:23:54.123456+08:00", 1_795_515_834_123_456),
            ("2026-11-24 10:23:54", 1_795_515_834_000_000),
        ] {
            assert_eq!(
                parse_any(text),
                Ok(Some((
                    Position {
                        timestamp: micros,
                        op_id: String::new()
                    },
                    false
                ))),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_any("2026-11-24T10:23:54.123456Z|a"),
            Ok(Some((
                Position {
                    timestamp: 1_795_515_834_123_456,
                    op_id: "a".into()
                },
                true
            )))
        );
        assert_eq!(parse_any(""), Ok(None));
        for bad in ["op-00001", "2026-11-24T10:23:54Z|a", "yesterday"] {
            assert!(matches!(parse_any(bad), Err(DbError::Other(_))), "{bad:?}");
        }
    }

    #[test]
    fn cursor_text_in_any_other_form_is_refused() {
        for bad in [
            "op-00001",
            "2026-11-24T10:23:54.123456Z",
            "2026-11-24T10:23:54.123Z|a",
            "2026-11-24T10:23:54Z|a",
            "2026-11-24 10:23:54.123456Z|a",
            "2026-11-24T10:23:54.123456+00:00|a",
            "2026-11-24t10:23:54.123456z|a",
            "2026-02-30T10:23:54.123456Z|a",
            "2026-13-01T10:23:54.123456Z|a",
            "2026-11-24T24:00:00.000000Z|a",
            "2026-11-24T10:23:60.000000Z|a",
            "+2026-11-24T10:23:54.123456Z|a",
            "02026-11-24T10:23:54.123456Z|a",
            "-0000-01-01T00:00:00.000000Z|a",
            "9999999999-01-01T00:00:00.000000Z|a",
            "+294248-01-01T00:00:00.000000Z|a",
            "|a",
        ] {
            assert!(
                matches!(parse_position(bad), Err(DbError::Other(_))),
                "{bad:?} was accepted"
            );
        }
    }
}

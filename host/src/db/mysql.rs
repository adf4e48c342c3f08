//! The MySQL / MariaDB adapter: the `db` interface of `wit/trustlog.wit` as batched SQL.
//!
//! Every statement that touches many rows is one multi-row statement per chunk, and every
//! write runs in one InnoDB transaction. Two workers on one cursor serialize on the row
//! lock of its `trustlog_cursor` row, taken first in [`MySqlDb::apply`], so they never
//! interleave their updates of `operation`. Only portable syntax is used (no
//! `RETURNING`, no `CREATE INDEX IF NOT EXISTS`, no row alias in upserts), so MySQL 8.0.16+
//! serves as well as MariaDB (the tests run against MariaDB 10.11).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow,
};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor, QueryBuilder, Row, SqlSafeStr, SqlStr, Transaction};
use tokio::sync::OwnedSemaphorePermit;
use trustlog_guest::model::{
    CursorMove, DbError, DbStats, Fetched, FieldError, InsertOutcome, Micros, Operation, Position,
    RetryRow, RetryUpdate, RowFault, TEXT_FIELDS, TrustlogStatus, UnitOfWork,
};
use trustlog_guest::validate::{MAX_TIMESTAMP, MIN_TIMESTAMP};

use super::cursor_value::{format_position, parse_cursor_any, parse_cursor_of};
use super::pool_share::{self, Held, Share};
use super::schema_check::{Column, TABLES};
use super::{Backlog, DeadLetter, Lease, Replay};

// PATH: the schema; the host crate points this at its own `sql/mysql.sql`.
const SCHEMA: &str = include_str!("../../../sql/mysql.sql");

/// Rows per multi-row INSERT into `operation`: 14 binds each, 14,000 in all, well under
/// the protocol's limit of 65,535 placeholders per prepared statement.
const INSERT_CHUNK: usize = 1_000;
/// Rows per multi-row upsert into `trustlog_retry` (8 binds each).
const RETRY_CHUNK: usize = 1_000;
/// op_ids per `IN (...)` list.
const ID_CHUNK: usize = 5_000;
/// How often [`MySqlDb::insert`] starts over when a concurrent insert of the same op_id
/// committed between its existence check and its INSERT; the next attempt sees that row.
const INSERT_ATTEMPTS: u32 = 3;
/// Connections per pool: enough for the scan, retry and sweep ticks and an HTTP handler
/// or two at once; every one holds a server thread.
const POOL_SIZE: u32 = 5;
/// How long a caller waits for a pooled connection (or a server that refuses connections)
/// before the call fails as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's SQL mode, set whole rather than added to the server's, so behaviour never
/// depends on server configuration. STRICT_ALL_TABLES turns an over-long or out-of-range
/// value into an error instead of a silently truncated row; the rest keep zero dates out.
const SESSION_SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,\
     NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'";

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

// The waiting-row queries name their index: the status leads it, so an equality on the
// literal status followed by a keyset range on (timestamp, op_id) is one ordered index
// range and needs no sort. The keyset bound is spelled out with OR rather than as a row
// comparison, which MariaDB cannot turn into an index range.

/// `scan_after(None, ?)`.
const SCAN_FROM_START: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `scan_after(Some(p), ?)`, binding p's timestamp twice, then its op_id and the limit.
const SCAN_AFTER: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND (o.timestamp > ? OR (o.timestamp = ? AND o.op_id > ?)) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `sweep_candidates(p, since, ?)`, binding p's timestamp twice, its op_id, `since` and
/// the limit: one index range, from `since` up to the position.
const SWEEP: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND (o.timestamp < ? OR (o.timestamp = ? AND o.op_id < ?)) AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `sweep_candidates` before a position past DATETIME's range: every waiting row with
/// no retry row stamped at or after `?`, then the limit.
const SWEEP_ALL_SINCE: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `has_waiting_since(?)`: whether any row stamped at or after `?` waits for the scan or
/// the catch-up; an index probe that stops at the first.
const WAITING_SINCE: &str = "SELECT CAST(EXISTS (SELECT 1 FROM operation o \
     FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)) AS SIGNED)";
/// The earliest due time of the retry queue: the head of each status's range of
/// `trustlog_retry_due`.
const NEXT_RETRY_AT: &str = "SELECT MIN(due) FROM ( \
     (SELECT next_retry_at AS due FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status = 'PENDING' AND next_retry_at IS NOT NULL \
      ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at AS due FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status = 'RETRYING' AND next_retry_at IS NOT NULL \
      ORDER BY next_retry_at LIMIT 1)) AS d";
/// `backlog()`: rows waiting for their first delivery (from `operation_waiting`), retry
/// rows pending (from `trustlog_retry_due`), and the first due time.
const BACKLOG: &str = "SELECT \
     (SELECT COUNT(*) FROM operation o FORCE INDEX (operation_waiting) \
      WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
      AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)), \
     (SELECT COUNT(*) FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status IN ('PENDING', 'RETRYING'))";
/// Creates a lease row, released, unless it exists.
const ENSURE_LEASE: &str = "INSERT INTO trustlog_lease (lease_key, holder, acquired_at, \
     renewed_at, expires_at, state) VALUES (?, '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), \
     UTC_TIMESTAMP(6), '') ON DUPLICATE KEY UPDATE lease_key = lease_key";
/// A lease row as it stands, and whether it has expired by the server's clock.
const READ_LEASE: &str = "SELECT holder, acquired_at, renewed_at, expires_at, state, \
     CAST(expires_at < UTC_TIMESTAMP(6) AS SIGNED) FROM trustlog_lease WHERE lease_key = ?";
/// Takes or renews a lease, with compare-and-set on the holder and expiry read before.
/// Binds: holder (for acquired_at), holder, ttl in µs, state, key, old holder, old expiry.
/// MySQL assigns left to right, so acquired_at is judged before holder changes.
const CLAIM_LEASE: &str = "UPDATE trustlog_lease SET \
     acquired_at = IF(holder = ?, acquired_at, UTC_TIMESTAMP(6)), holder = ?, \
     renewed_at = UTC_TIMESTAMP(6), \
     expires_at = TIMESTAMPADD(MICROSECOND, ?, UTC_TIMESTAMP(6)), state = ? \
     WHERE lease_key = ? AND holder = ? AND expires_at = ?";
/// Hands a lease back at once.
const RELEASE_LEASE: &str = "UPDATE trustlog_lease SET holder = '', state = '', \
     expires_at = UTC_TIMESTAMP(6) WHERE lease_key = ? AND holder = ?";
/// One status's due rows for [`DUE_RETRIES`], in (due time, op_id) order, stopping at the limit.
macro_rules! due_of {
    ($status:literal) => {
        concat!(
            "SELECT ",
            operation_columns!(),
            ", r.retry_count, r.next_retry_at AS due \
             FROM trustlog_retry r FORCE INDEX (trustlog_retry_due) \
             STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
             WHERE r.retry_status = '",
            $status,
            "' AND r.next_retry_at <= ? AND o.trustlog_status = 'NOT_TRUSTLOGGED' \
             ORDER BY r.next_retry_at, r.op_id LIMIT ?"
        )
    };
}
/// `due_retries(?, ?)`: the operation's columns, then `retry_count`. STRAIGHT_JOIN keeps
/// the join driven by the due retry rows, never by the status index of `operation`, and
/// the named index keeps their lookup a range of due rows however many dead letters
/// the table holds (on a small table the optimizer would rather read it all).
///
/// One ordered, limited branch per status, merged: a single range over both statuses
/// would have to sort every due row for every batch. Within one status InnoDB's index
/// is (due time, op_id) already, as a secondary index ends in the primary key.
/// Binds: now, limit, now, limit, limit.
const DUE_RETRIES: &str = concat!(
    "(",
    due_of!("PENDING"),
    ") UNION ALL (",
    due_of!("RETRYING"),
    ") ORDER BY due, op_id LIMIT ?"
);
/// The timestamp of the oldest waiting row with no retry row. Not MIN(): walking the
/// index in order stops at the first match, where MIN() over the NOT EXISTS filter would
/// visit every waiting row.
const OLDEST_WAITING: &str = "SELECT o.timestamp FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// Rows per status, from the status prefix of `operation_waiting`.
const COUNT_BY_STATUS: &str =
    "SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status";
/// Retry rows per status, from the covering due index.
const COUNT_RETRIES_BY_STATUS: &str =
    "SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status";
/// Which of a list of op_ids are stored; an `(op_id, ...)` list follows.
const EXISTING_IDS: &str = "SELECT op_id FROM operation WHERE op_id IN ";
/// Marks waiting rows delivered; an `(op_id, ...)` list follows. By primary key: had
/// InnoDB walked `operation_waiting` instead, its locking read of the waiting range would
/// wait for any writer's uncommitted row there (a transaction that stamped its row early
/// and commits late held every mark, and so every delivery, for as long as it stayed open).
const MARK_TRUSTLOGGED: &str = "UPDATE operation FORCE INDEX (PRIMARY) \
     SET trustlog_status = 'TRUSTLOGGED' \
     WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// Deletes retry rows; an `(op_id, ...)` list follows.
const DELETE_RETRIES: &str = "DELETE FROM trustlog_retry WHERE op_id IN ";
/// The columns of the four tables bound in the current database: table, column, type,
/// maximum length, collation and fractional digits. Cast to CHAR and SIGNED, since the
/// catalogue's own types differ between MySQL and MariaDB.
const COLUMNS: &str = "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), \
     CAST(DATA_TYPE AS CHAR), CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), \
     CAST(COLLATION_NAME AS CHAR), CAST(DATETIME_PRECISION AS SIGNED) \
     FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?, ?, ?)";
/// One cursor's stored text.
const LOAD_CURSOR: &str = "SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = ?";
/// Rewrites a cursor value read in another form in trustlog's: `?` the new text, `?`
/// the key, `?` the text read.
const REWRITE_CURSOR: &str =
    "UPDATE trustlog_cursor SET cursor_value = ? WHERE cursor_key = ? AND cursor_value = ?";
/// Creates a cursor row holding no position unless one exists. Not INSERT IGNORE, which
/// would also truncate an over-long key; the no-op update leaves an existing row as it is.
const ENSURE_CURSOR: &str = "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
     VALUES (?, '', ?) ON DUPLICATE KEY UPDATE cursor_key = cursor_key";
/// The compare-and-set: moves a cursor only while it still holds the expected text.
const MOVE_CURSOR: &str = "UPDATE trustlog_cursor SET cursor_value = ?, last_updated_at = ? \
     WHERE cursor_key = ? AND cursor_value = ?";
/// The columns of [`DeadLetter`], in field order, mapped by [`dead_letter_at`].
macro_rules! dead_letter_columns {
    () => {
        "r.op_id, o.timestamp, r.retry_count, r.error_message, r.created_at, r.updated_at, \
         r.last_retry_at"
    };
}
/// `dead_letters(None, ?)`. op_id is utf8mb4_bin in both tables: the order is byte order.
const DEAD_LETTERS_FROM_START: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' ORDER BY r.op_id LIMIT ?"
);
/// `dead_letters(Some(?), ?)`.
const DEAD_LETTERS_AFTER: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.op_id > ? ORDER BY r.op_id LIMIT ?"
);
/// `replay_dead_letters(Replay::One(op_id), now)`, binding now twice, then the op_id.
const REPLAY_ONE: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = ?, updated_at = ? WHERE op_id = ? AND retry_status = 'DEAD_LETTER'";
/// The op_ids `Replay::All` takes, read without locks. One UPDATE by status would walk
/// `trustlog_retry_due` under REPEATABLE READ and gap-lock the dead-letter range, where a
/// worker dead-lettering two rows at once could deadlock with it; updating by primary
/// key locks only the rows replayed.
const DEAD_LETTER_IDS: &str =
    "SELECT op_id FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' ORDER BY op_id";
/// Replays listed dead letters, in the pieces around its binds: `now`, `now` again, then
/// an `(op_id, ...)` list. The status is checked again: a row may have changed since it
/// was listed.
const REPLAY_LISTED: [&str; 3] = [
    "UPDATE trustlog_retry FORCE INDEX (PRIMARY) SET retry_status = 'PENDING', \
     retry_count = 0, next_retry_at = ",
    ", updated_at = ",
    " WHERE retry_status = 'DEAD_LETTER' AND op_id IN ",
];
/// The op_ids a purge takes, last changed at or before ?, read without locks: the purge
/// then locks their operations before their retry rows, by primary key, the way
/// [`MySqlDb::apply`] does, so it cannot deadlock with a worker. (A subquery in the
/// UPDATE would take shared next-key locks on `trustlog_retry` first.)
const PURGEABLE: &str = "SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at <= ? ORDER BY op_id";
/// Sets purged dead letters' operations aside as db-only, so nothing delivers them once
/// their retry rows are gone; an `(op_id, ...)` list follows.
const MARK_DB_ONLY: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// A round trip through the pool.
const PING: &str = "SELECT 1";
/// Starts the read-only transaction of [`MySqlDb::stats`]. Its reads share one snapshot
/// only under REPEATABLE READ, so that level is set for this transaction whatever the
/// server's default.
const BEGIN_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
     START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// The indexes the queries name, with the DDL adding each to a table that lacks it:
/// CREATE TABLE IF NOT EXISTS leaves a table created earlier (by the seed, say) alone.
const NAMED_INDEXES: &[(&str, &str, &str)] = &[
    (
        "operation",
        "operation_waiting",
        "ALTER TABLE operation ADD INDEX operation_waiting (trustlog_status, timestamp, op_id)",
    ),
    (
        "trustlog_retry",
        "trustlog_retry_due",
        "ALTER TABLE trustlog_retry ADD INDEX trustlog_retry_due (retry_status, next_retry_at)",
    ),
];
/// Whether the current database has an index of a table.
const HAS_INDEX: &str = "SELECT COUNT(*) FROM information_schema.statistics \
     WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?";

/// A pool of connections to one MySQL or MariaDB database, implementing the `db` interface.
#[derive(Debug, Clone)]
pub struct MySqlDb {
    pool: MySqlPool,
    /// The tenant's database on a pool other tenants share, which every statement names;
    /// `None` when the pool's own database is this one.
    database: Option<Arc<Qualified>>,
    /// This tenant's share of a shared pool.
    share: Option<Share>,
}

/// The statements of one database on a shared server, each table name qualified with
/// the database's, made once per statement. Not `USE`: a prepared statement keeps the
/// default database it was prepared under, and sqlx caches them per connection, so a
/// statement prepared for one tenant would go on reading that tenant's tables for the next.
#[derive(Debug)]
struct Qualified {
    name: String,
    statements: RwLock<HashMap<&'static str, SqlStr>>,
}

/// The words after which one of [`TABLES`] names a table rather than, say, a column.
const BEFORE_TABLE: [&str; 8] = [
    "FROM",
    "JOIN",
    "STRAIGHT_JOIN",
    "INTO",
    "UPDATE",
    "TABLE",
    "TABLES",
    "EXISTS",
];

/// `sql` with every table of [`TABLES`] it names prefixed by `` `database`. ``, and
/// `DATABASE()` (the connection's default) replaced by the database's name. `database`
/// has been checked as `[a-z0-9_]{1,63}` by the schema's creation.
fn qualify(sql: &str, database: &str) -> String {
    let sql = sql.replace("DATABASE()", &format!("'{database}'"));
    let mut out = String::with_capacity(sql.len() + 64);
    let mut previous = "";
    let mut rest = sql.as_str();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(start) = rest.find(is_word) {
        let (gap, from_word) = rest.split_at(start);
        let end = from_word
            .find(|c: char| !is_word(c))
            .unwrap_or(from_word.len());
        let (word, after) = from_word.split_at(end);
        out.push_str(gap);
        let a_table = TABLES.contains(&word)
            && !gap.ends_with('.')
            && BEFORE_TABLE
                .iter()
                .any(|k| k.eq_ignore_ascii_case(previous));
        if a_table {
            out.push_str(&format!("`{database}`."));
        }
        out.push_str(word);
        previous = word;
        rest = after;
    }
    out.push_str(rest);
    out
}

impl MySqlDb {
    /// `sql` as this database runs it: as written on a pool of its own, qualified on a
    /// shared one.
    fn sql(&self, sql: &'static str) -> SqlStr {
        let Some(database) = &self.database else {
            return sql.into_sql_str();
        };
        if let Some(made) = database
            .statements
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
        {
            return made.clone();
        }
        let made = AssertSqlSafe(Arc::<str>::from(qualify(sql, &database.name))).into_sql_str();
        database
            .statements
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sql, made.clone());
        made
    }

    /// The start of a statement a [`QueryBuilder`] completes, as [`MySqlDb::sql`] makes it.
    fn text(&self, sql: &'static str) -> String {
        self.sql(sql).as_str().to_string()
    }

    /// Any statement, qualified on a shared pool (see [`MySqlDb::sql`]); made anew each time.
    fn qualified(&self, sql: &str) -> String {
        match &self.database {
            Some(database) => qualify(sql, &database.name),
            None => sql.to_string(),
        }
    }

    /// A connection of the pool; on a shared pool, within the tenant's share.
    async fn conn(&self) -> Result<Held<PoolConnection<MySql>>, DbError> {
        let permit = self.permit().await?;
        let conn = self.pool.acquire().await.map_err(map_error)?;
        Ok(Held::new(conn, permit))
    }

    /// A transaction; on a shared pool, within the tenant's share.
    async fn begin(&self) -> Result<Held<Transaction<'static, MySql>>, DbError> {
        self.begin_with("BEGIN").await
    }

    /// [`MySqlDb::begin`], started by `begin` (statements that start a transaction).
    async fn begin_with(
        &self,
        begin: &'static str,
    ) -> Result<Held<Transaction<'static, MySql>>, DbError> {
        let permit = self.permit().await?;
        let tx = self.pool.begin_with(begin).await.map_err(map_error)?;
        Ok(Held::new(tx, permit))
    }

    /// On a shared pool, the tenant's permit to hold one more connection.
    async fn permit(&self) -> Result<Option<OwnedSemaphorePermit>, DbError> {
        pool_share::permit(self.share.as_ref()).await
    }

    /// Connects to the database at `url` (`mysql://user:password@host:port/database`).
    pub async fn connect(url: &str) -> Result<MySqlDb, DbError> {
        Ok(MySqlDb {
            pool: open_pool(url, POOL_SIZE, None).await?,
            database: None,
            share: None,
        })
    }

    /// Database `name` of the server `pool` connects to, over that pool, which other
    /// tenants share: every statement names the database's tables.
    pub fn in_database(pool: MySqlPool, name: &str, share: Share) -> MySqlDb {
        MySqlDb {
            pool,
            share: Some(share),
            database: Some(Arc::new(Qualified {
                name: name.to_string(),
                statements: RwLock::new(HashMap::new()),
            })),
        }
    }

    /// The columns of trustlog's tables in the current database, as the catalogue has them.
    pub async fn columns(&self) -> Result<Vec<Column>, DbError> {
        let rows = sqlx::query(self.sql(COLUMNS))
            .bind(TABLES[0])
            .bind(TABLES[1])
            .bind(TABLES[2])
            .bind(TABLES[3])
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        let count = |row: &MySqlRow, i: usize| -> Result<Option<u64>, DbError> {
            Ok(row
                .try_get::<Option<i64>, _>(i)
                .map_err(map_error)?
                .and_then(|n| u64::try_from(n).ok()))
        };
        rows.iter()
            .map(|row| {
                Ok(Column {
                    table: row.try_get(0).map_err(map_error)?,
                    name: row.try_get(1).map_err(map_error)?,
                    data_type: row
                        .try_get::<String, _>(2)
                        .map_err(map_error)?
                        .to_lowercase(),
                    max_length: count(row, 3)?,
                    collation: row.try_get(4).map_err(map_error)?,
                    precision: count(row, 5)?,
                })
            })
            .collect()
    }

    /// Runs statements that change existing tables, one by one (MySQL commits each).
    pub async fn alter(&self, statements: &[&str]) -> Result<(), DbError> {
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(self.qualified(sql)))
                .execute(&mut *self.conn().await?)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }

    /// Creates the tables and indexes that are missing; safe to run on every start.
    pub async fn migrate(&self) -> Result<(), DbError> {
        sqlx::raw_sql(self.sql(SCHEMA))
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        for (table, index, ddl) in NAMED_INDEXES {
            let present: i64 = sqlx::query_scalar(self.sql(HAS_INDEX))
                .bind(*table)
                .bind(*index)
                .fetch_one(&mut *self.conn().await?)
                .await
                .map_err(map_error)?;
            if present == 0 {
                match sqlx::query(self.sql(ddl))
                    .execute(&mut *self.conn().await?)
                    .await
                {
                    // Another process migrating at the same moment added it first.
                    Err(sqlx::Error::Database(e)) if server_error_number(&*e) == Some(1061) => {}
                    other => {
                        other.map_err(map_error)?;
                    }
                }
            }
        }
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
        let mut stamps = Vec::with_capacity(ops.len());
        for op in &ops {
            check_op_id(&op.op_id)?;
            stamps.push(to_datetime("timestamp", op.timestamp)?);
        }
        let mut attempt = 1;
        loop {
            match self.try_insert(&ops, &stamps, status).await {
                Err(DbError::Conflict(message)) if attempt < INSERT_ATTEMPTS => {
                    tracing::debug!(attempt, %message, "op_id inserted concurrently; starting over");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// One attempt of [`MySqlDb::insert`], in one transaction.
    ///
    /// MySQL has no portable `RETURNING`, and an affected-rows count cannot tell which rows
    /// of a multi-row statement were stored, so the outcomes are decided up front: one
    /// SELECT finds the op_ids already stored, the first occurrence of each other op_id is
    /// Inserted and the rest of the batch are Duplicates; then one plain INSERT per chunk
    /// stores the new rows. Not INSERT IGNORE: that would also turn an over-long value
    /// into a truncated row. A row committed by someone else after the SELECT makes the
    /// INSERT fail with a duplicate key (Conflict); everything rolls back and the caller
    /// starts over, and the next SELECT sees that row. A concurrent insert not yet
    /// committed makes ours wait on its row lock, not fail. The new rows go in op_id
    /// order, so two batches sharing op_ids lock them in the same order and cannot
    /// deadlock on each other. No locking read is needed, so nothing takes gap locks.
    async fn try_insert(
        &self,
        ops: &[Operation],
        stamps: &[NaiveDateTime],
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError> {
        let mut tx = self.begin().await?;
        let mut stored = HashSet::new();
        for chunk in ops.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(EXISTING_IDS));
            push_id_list(&mut qb, chunk.iter().map(|op| op.op_id.as_str()));
            let ids: Vec<String> = qb
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(map_error)?;
            // The key compares with PAD SPACE, so a stored 'a ' (from before the op_id
            // check existed) is the key 'a'; input op_ids never end in a space.
            stored.extend(
                ids.into_iter()
                    .map(|id| id.trim_end_matches(' ').to_string()),
            );
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut fresh = Vec::with_capacity(ops.len());
        let mut claimed = HashSet::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let id = op.op_id.as_str();
            if !stored.contains(id) && claimed.insert(id) {
                outcomes.push(InsertOutcome::Inserted);
                fresh.push(i);
            } else {
                outcomes.push(InsertOutcome::Duplicate);
            }
        }
        fresh.sort_unstable_by(|&a, &b| ops[a].op_id.cmp(&ops[b].op_id));
        for chunk in fresh.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash, \
                 response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, \
                 server_ip, timestamp, trustlog_status) ",
            ));
            qb.push_values(chunk, |mut row, &i| {
                let op = &ops[i];
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
                    .push_bind(stamps[i])
                    .push_bind(status.as_str());
            });
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)?;
        Ok(outcomes)
    }

    /// Reads a cursor's position; `None` when the row is missing or empty.
    pub async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
        let value: Option<String> = sqlx::query_scalar(self.sql(LOAD_CURSOR))
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        match parse_cursor_any(key, value.as_deref())? {
            Some((p, false)) => {
                // Written by another program (the seed's module writes a bare
                // timestamp): rewritten in trustlog's form, with compare-and-set on what
                // was read, so the compare-and-set of every move matches it.
                sqlx::query(self.sql(REWRITE_CURSOR))
                    .bind(format_position(&p))
                    .bind(key)
                    .bind(value.as_deref())
                    .execute(&mut *self.conn().await?)
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
        // Stored timestamps lie within DATETIME's range: a position before it is before
        // every row, one past it after every row.
        let after = after.filter(|p| p.timestamp >= MIN_TIMESTAMP);
        let rows = match after {
            None => {
                sqlx::query(self.sql(SCAN_FROM_START))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
            Some(p) if p.timestamp > MAX_TIMESTAMP => return Ok(Fetched::default()),
            Some(p) => {
                let at = to_datetime("timestamp", p.timestamp)?;
                sqlx::query(self.sql(SCAN_AFTER))
                    .bind(at)
                    .bind(at)
                    .bind(p.op_id)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
        }
        .map_err(map_error)?;
        super::fetch_each(&rows, operation_at)
    }

    /// Retry rows due at `now` (pending or retrying, operation still waiting), oldest due first.
    pub async fn due_retries(&self, now: Micros, limit: u32) -> Result<Fetched<RetryRow>, DbError> {
        if now < MIN_TIMESTAMP {
            return Ok(Fetched::default());
        }
        let now = to_datetime("now", now.min(MAX_TIMESTAMP))?;
        let rows = sqlx::query(self.sql(DUE_RETRIES))
            .bind(now)
            .bind(i64::from(limit))
            .bind(now)
            .bind(i64::from(limit))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
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
        if before.timestamp < MIN_TIMESTAMP || since > MAX_TIMESTAMP {
            return Ok(Fetched::default());
        }
        let since = to_datetime("since", since.max(MIN_TIMESTAMP))?;
        let rows = if before.timestamp > MAX_TIMESTAMP {
            // Every stored row lies before such a position.
            sqlx::query(self.sql(SWEEP_ALL_SINCE))
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await
        } else {
            let at = to_datetime("timestamp", before.timestamp)?;
            sqlx::query(self.sql(SWEEP))
                .bind(at)
                .bind(at)
                .bind(before.op_id)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await
        }
        .map_err(map_error)?;
        super::fetch_each(&rows, operation_at)
    }

    /// What is left to deliver, from the indexes.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let row = sqlx::query(self.sql(BACKLOG))
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(self.sql(NEXT_RETRY_AT))
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(Backlog {
            waiting: count_in(&row, 0)?,
            retrying: count_in(&row, 1)?,
            next_retry_at: next.map(micros_of),
        })
    }

    /// Whether any row stamped at or after `since` waits for the scan or the catch-up.
    pub async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
        if since > MAX_TIMESTAMP {
            return Ok(false);
        }
        let since = to_datetime("since", since.max(MIN_TIMESTAMP))?;
        let found: i64 = sqlx::query_scalar(self.sql(WAITING_SINCE))
            .bind(since)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(found != 0)
    }

    /// Creates the lease row `key`, released, unless it exists.
    pub(super) async fn ensure_lease(&self, key: &str) -> Result<(), DbError> {
        sqlx::query(self.sql(ENSURE_LEASE))
            .bind(key)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Gives the lease to `holder` for `ttl` (by the server's clock) if it still is as
    /// `seen`; the row as it then stands, or `None` when another host changed it first.
    pub(super) async fn swap_lease(
        &self,
        seen: &Lease,
        holder: &str,
        ttl: Duration,
        state: &str,
    ) -> Result<Option<Lease>, DbError> {
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let taken = sqlx::query(self.sql(CLAIM_LEASE))
            .bind(holder)
            .bind(holder)
            .bind(ttl)
            .bind(state)
            .bind(&seen.key)
            .bind(&seen.holder)
            .bind(to_datetime("expires_at", seen.expires_at)?)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_error)?
            .rows_affected();
        if taken != 1 {
            return Ok(None);
        }
        // MySQL updates return no rows: read back what the update wrote.
        self.read_lease(&seen.key).await
    }

    /// Releases the lease `key` if `holder` has it, so another host may take it at once.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
        sqlx::query(self.sql(RELEASE_LEASE))
            .bind(key)
            .bind(holder)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// The lease `key` as it stands (expired or not by the server's clock), if it exists.
    pub async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
        let Some(row) = sqlx::query(self.sql(READ_LEASE))
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(map_error)?
        else {
            return Ok(None);
        };
        let at = |i: usize| -> Result<Micros, DbError> {
            Ok(micros_of(row.try_get(i).map_err(map_error)?))
        };
        let expired: i64 = row.try_get(5).map_err(map_error)?;
        Ok(Some(Lease {
            key: key.to_string(),
            holder: row.try_get(0).map_err(map_error)?,
            acquired_at: at(1)?,
            renewed_at: at(2)?,
            expires_at: at(3)?,
            state: row.try_get(4).map_err(map_error)?,
            expired: expired != 0,
        }))
    }

    /// The monitoring counts and the position of `cursor_key`, read in one snapshot.
    pub async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        let mut tx = self.begin_with(BEGIN_SNAPSHOT).await?;
        let mut stats = DbStats::default();

        let rows = sqlx::query(self.sql(COUNT_BY_STATUS))
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

        let rows = sqlx::query(self.sql(COUNT_RETRIES_BY_STATUS))
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

        let value: Option<String> = sqlx::query_scalar(self.sql(LOAD_CURSOR))
            .bind(cursor_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.cursor = parse_cursor_of(cursor_key, value.as_deref())?;

        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(self.sql(OLDEST_WAITING))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.oldest_waiting = oldest.map(micros_of);

        let next: Option<DateTime<Utc>> = sqlx::query_scalar(self.sql(NEXT_RETRY_AT))
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.next_retry_at = next.map(micros_of);

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
            mut trustlogged,
            retries,
            mut delete_retries,
            cursor,
        } = work;
        if cursor.is_none()
            && trustlogged.is_empty()
            && retries.is_empty()
            && delete_retries.is_empty()
        {
            return Ok(());
        }
        // Every value is checked before the transaction starts; `now` only where it is stored.
        let now_at = if cursor.is_some() || !retries.is_empty() {
            Some(to_datetime("now", now)?)
        } else {
            None
        };
        let mut retry_times = Vec::with_capacity(retries.len());
        for r in &retries {
            retry_times.push((
                r.last_retry_at
                    .map(|t| to_datetime("last_retry_at", t))
                    .transpose()?,
                r.next_retry_at
                    .map(|t| to_datetime("next_retry_at", t))
                    .transpose()?,
            ));
        }
        // Rows are locked in key order, so two units sharing op_ids (the scan tick and a
        // retry tick, say) wait for each other instead of deadlocking. The sort is stable:
        // of two updates of one retry row the later still lands last.
        trustlogged.sort_unstable();
        delete_retries.sort_unstable();
        let mut order: Vec<usize> = (0..retries.len()).collect();
        order.sort_by(|&a, &b| retries[a].op_id.cmp(&retries[b].op_id));

        let mut tx = self.begin().await?;

        if let (Some(CursorMove { key, expected, to }), Some(now_at)) = (cursor, now_at) {
            // No position is stored as '', so expecting none is one compare-and-set on ''
            // once the row exists. The ensuring upsert takes the row's lock at once (an
            // UPDATE of a missing row would take a gap lock, and two workers holding one
            // would deadlock on their INSERTs); a concurrent first move waits for it and
            // then finds the cursor set.
            let expected = match expected {
                Some(p) => format_position(&p),
                None => {
                    sqlx::query(self.sql(ENSURE_CURSOR))
                        .bind(key.as_str())
                        .bind(now_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_error)?;
                    String::new()
                }
            };
            // The row lock serializes two workers: the second re-reads the committed value,
            // no longer matches and changes nothing. sqlx connects with CLIENT_FOUND_ROWS,
            // so rows_affected counts matched rows; the count of changed rows would agree
            // anyway, since the forward-only check makes the new value differ from the old.
            let moved = sqlx::query(self.sql(MOVE_CURSOR))
                .bind(format_position(&to))
                .bind(now_at)
                .bind(key.as_str())
                .bind(expected)
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
            let mut qb = QueryBuilder::<MySql>::new(self.text(MARK_TRUSTLOGGED));
            push_id_list(&mut qb, ids.iter().map(String::as_str));
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }

        if let Some(now_at) = now_at {
            for chunk in order.chunks(RETRY_CHUNK) {
                let mut qb = QueryBuilder::<MySql>::new(self.text(
                    "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, last_retry_at, \
                     next_retry_at, error_message, created_at, updated_at) ",
                ));
                qb.push_values(chunk, |mut row, &i| {
                    let r: &RetryUpdate = &retries[i];
                    let (last_retry_at, next_retry_at) = retry_times[i];
                    row.push_bind(r.op_id.as_str())
                        .push_bind(i64::from(r.retry_count))
                        .push_bind(r.retry_status.as_str())
                        .push_bind(last_retry_at)
                        .push_bind(next_retry_at)
                        .push_bind(r.error_message.as_str())
                        .push_bind(now_at)
                        .push_bind(now_at);
                });
                // created_at is absent from the update list: it keeps the first failure's
                // time. VALUES() is deprecated in MySQL 8.0.20+ in favour of a row alias,
                // which MariaDB lacks; both still accept VALUES().
                qb.push(
                    " ON DUPLICATE KEY UPDATE retry_count = VALUES(retry_count), \
                     retry_status = VALUES(retry_status), last_retry_at = VALUES(last_retry_at), \
                     next_retry_at = VALUES(next_retry_at), error_message = VALUES(error_message), \
                     updated_at = VALUES(updated_at)",
                );
                qb.build().execute(&mut *tx).await.map_err(map_error)?;
            }
        }
        for ids in delete_retries.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(DELETE_RETRIES));
            push_id_list(&mut qb, ids.iter().map(String::as_str));
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
                sqlx::query(self.sql(DEAD_LETTERS_FROM_START))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
            Some(after) => {
                sqlx::query(self.sql(DEAD_LETTERS_AFTER))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
        }
        .map_err(map_error)?;
        rows.iter().map(dead_letter_at).collect()
    }

    /// Puts dead letters back in the retry queue, due at `now`; returns how many changed.
    pub async fn replay_dead_letters(&self, which: Replay, now: Micros) -> Result<u64, DbError> {
        let now = to_datetime("now", now)?;
        match which {
            Replay::One(op_id) => {
                // Under PAD SPACE 'a ' would find 'a'; no stored op_id looks like that.
                if check_op_id(&op_id).is_err() {
                    return Ok(0);
                }
                let replayed = sqlx::query(self.sql(REPLAY_ONE))
                    .bind(now)
                    .bind(now)
                    .bind(op_id)
                    .execute(&mut *self.conn().await?)
                    .await
                    .map_err(map_error)?
                    .rows_affected();
                Ok(replayed)
            }
            Replay::All => {
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(self.sql(DEAD_LETTER_IDS))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_error)?;
                let mut replayed = 0;
                for chunk in ids.chunks(ID_CHUNK) {
                    let mut qb = QueryBuilder::<MySql>::new(self.text(REPLAY_LISTED[0]));
                    qb.push_bind(now)
                        .push(REPLAY_LISTED[1])
                        .push_bind(now)
                        .push(REPLAY_LISTED[2]);
                    push_id_list(&mut qb, chunk.iter().map(String::as_str));
                    replayed += qb
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(map_error)?
                        .rows_affected();
                }
                tx.commit().await.map_err(map_error)?;
                Ok(replayed)
            }
        }
    }

    /// Purges dead letters last changed before `before`, keeping their operations as
    /// db-only; returns how many retry rows were deleted.
    pub async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        // Stored times are whole microseconds within DATETIME's range, so "before `before`"
        // is "at or before the microsecond ahead of it", clamped into that range.
        let Some(last) = before.checked_sub(1).filter(|last| *last >= MIN_TIMESTAMP) else {
            return Ok(0);
        };
        let last = to_datetime("before", last.min(MAX_TIMESTAMP))?;
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(self.sql(PURGEABLE))
            .bind(last)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
        for chunk in ids.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(MARK_DB_ONLY));
            push_id_list(&mut qb, chunk.iter().map(String::as_str));
            qb.build().execute(&mut *tx).await.map_err(map_error)?;
        }
        // By op_id, not by status again: a row replayed since the read above has had its
        // operation set aside all the same, and left behind it would wait for ever in a
        // queue whose join skips db-only operations.
        let mut purged = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(DELETE_RETRIES));
            push_id_list(&mut qb, chunk.iter().map(String::as_str));
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

    /// Whether the server answers a query through the pool.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query(self.sql(PING))
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Does now what InnoDB would do after a bulk load at a moment of its own, likely in
    /// whatever is timed next (`trustlog bench`): recompute the statistics and write the
    /// table's dirty pages. `FOR EXPORT` is the one FLUSH that waits for those pages; it
    /// holds a read lock until `UNLOCK TABLES` on the same connection.
    pub async fn settle(&self) -> Result<(), DbError> {
        let mut conn = self.conn().await?;
        sqlx::raw_sql(self.sql("ANALYZE TABLE operation"))
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        let flushed = sqlx::raw_sql(self.sql("FLUSH TABLES operation FOR EXPORT"))
            .execute(&mut *conn)
            .await
            .map_err(map_error);
        let unlocked = sqlx::raw_sql("UNLOCK TABLES")
            .execute(&mut *conn)
            .await
            .map_err(map_error);
        flushed?;
        unlocked?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned; a shared
    /// server's pool stays open for the other tenants.
    pub async fn close(&self) {
        match &self.share {
            None => self.pool.close().await,
            Some(share) => share.close(),
        }
    }
}

/// `url` with a `mariadb:` scheme spelled `mysql:`, the one sqlx knows; anything else as is.
pub fn with_mysql_scheme(url: &str) -> String {
    match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_string(),
    }
}

/// A pool of at most `size` connections to the server at `url` (a `mysql://` URL), each
/// in trustlog's session mode: strict SQL, UTC and utf8mb4. With `lock_timeout`, a
/// statement gives up on a row or table lock after that long (whole seconds, at least 1).
pub async fn open_pool(
    url: &str,
    size: u32,
    lock_timeout: Option<Duration>,
) -> Result<MySqlPool, DbError> {
    let lock_wait = lock_timeout.map(|wait| {
        let seconds = wait.as_secs().max(1);
        format!("SET SESSION innodb_lock_wait_timeout = {seconds}, lock_wait_timeout = {seconds}")
    });
    let options = MySqlConnectOptions::from_str(url)
        .map_err(map_error)?
        // DATETIME columns hold UTC; NOW() and friends should agree with them.
        .timezone(Some("+00:00".to_string()))
        .charset("utf8mb4")
        // The whole sql_mode is set after connecting; sqlx's own additions to the
        // server's mode would only be overwritten.
        .pipes_as_concat(false)
        .no_engine_substitution(false);
    let pool = MySqlPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            let lock_wait = lock_wait.clone();
            Box::pin(async move {
                conn.execute(SESSION_SQL_MODE).await?;
                if let Some(sql) = lock_wait {
                    conn.execute(AssertSqlSafe(sql)).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(map_error)?;
    Ok(pool)
}

/// Appends `(?, ?, ...)` binding `ids`; callers never pass an empty list.
fn push_id_list<'a>(qb: &mut QueryBuilder<MySql>, ids: impl Iterator<Item = &'a str>) {
    qb.push("(");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

/// Refuses an op_id that the PAD SPACE key collation would not order by its bytes: one
/// ending in a space (equal to the op_id without it) or holding an ASCII control
/// character (sorting before the op_id without it). The schema's `operation_op_id_chars`
/// refuses the same for rows inserted with plain SQL.
fn check_op_id(op_id: &str) -> Result<(), DbError> {
    if op_id.ends_with(' ') || op_id.chars().any(|c| c.is_ascii_control()) {
        return Err(DbError::Invalid(FieldError::new(
            "op_id",
            format!(
                "{op_id:?} ends with a space or holds a control character, which MySQL's \
                 key collation cannot order byte by byte"
            ),
        )));
    }
    Ok(())
}

/// The DATETIME holding `micros` (UTC); `field` names the value when it lies outside
/// DATETIME's range, 1000-01-01 to 9999-12-31.
fn to_datetime(field: &str, micros: Micros) -> Result<NaiveDateTime, DbError> {
    (MIN_TIMESTAMP..=MAX_TIMESTAMP)
        .contains(&micros)
        .then(|| DateTime::from_timestamp_micros(micros))
        .flatten()
        .map(|at| at.naive_utc())
        .ok_or_else(|| {
            DbError::Invalid(FieldError::new(
                field,
                format!(
                    "{micros} µs since the epoch lies outside MySQL's DATETIME range, \
                     1000-01-01 to 9999-12-31"
                ),
            ))
        })
}

/// Microseconds since the epoch of a time read as UTC: a DATETIME of any precision
/// (holding UTC) or a TIMESTAMP (which the session's `+00:00` zone converts), both of
/// which sqlx decodes as `DateTime<Utc>`, where `NaiveDateTime` takes DATETIME only.
fn micros_of(at: DateTime<Utc>) -> Micros {
    at.timestamp_micros()
}

/// The [`Operation`] in the first [`OPERATION_COLUMN_COUNT`] columns of `row`.
fn operation_at(row: &MySqlRow) -> Result<Result<Operation, RowFault>, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let text = |i: usize| -> Result<String, RowFault> {
        row.try_get(i)
            .map_err(|e| super::fault(&op_id, TEXT_FIELDS[i], map_error(e)))
    };
    let optional = |i: usize| -> Result<Option<String>, RowFault> {
        row.try_get(i)
            .map_err(|e| super::fault(&op_id, TEXT_FIELDS[i], map_error(e)))
    };
    let read = || -> Result<Operation, RowFault> {
        // DATETIME of any precision and TIMESTAMP (converted by the session's UTC zone).
        let timestamp: DateTime<Utc> = row
            .try_get(12)
            .map_err(|e| super::fault(&op_id, "timestamp", map_error(e)))?;
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
            timestamp: micros_of(timestamp),
            op_id: op_id.clone(),
        })
    };
    Ok(read())
}

/// The [`DeadLetter`] in the columns `dead_letter_columns!` lists.
fn dead_letter_at(row: &MySqlRow) -> Result<DeadLetter, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let timestamp: Option<DateTime<Utc>> = row.try_get(1).ok();
    let count: i64 = row.try_get(2).map_err(map_error)?;
    let retry_count = u32::try_from(count)
        .map_err(|_| DbError::Other(format!("retry_count {count} of {op_id:?} is out of range")))?;
    let error_message: Option<String> = row.try_get(3).map_err(map_error)?;
    let created_at: DateTime<Utc> = row.try_get(4).map_err(map_error)?;
    let updated_at: DateTime<Utc> = row.try_get(5).map_err(map_error)?;
    let last_retry_at: Option<DateTime<Utc>> = row.try_get(6).map_err(map_error)?;
    Ok(DeadLetter {
        timestamp: timestamp.map(micros_of),
        retry_count,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_of(created_at),
        updated_at: micros_of(updated_at),
        last_retry_at: last_retry_at.map(micros_of),
        op_id,
    })
}

/// The `COUNT(*)` in column 1 of `row`.
fn count_at(row: &MySqlRow) -> Result<u64, DbError> {
    count_in(row, 1)
}

/// The count in column `index`.
fn count_in(row: &MySqlRow, index: usize) -> Result<u64, DbError> {
    let count: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(count).map_err(|_| DbError::Other(format!("negative count {count}")))
}

/// The named CHECK constraints of the schema and the field each guards.
const CHECKED_FIELDS: &[(&str, &str)] = &[
    ("operation_op_id_chars", "op_id"),
    ("operation_trustlog_status_value", "trustlog_status"),
    ("trustlog_retry_retry_status_value", "retry_status"),
];

/// Server errors that name the column whose value was refused: data too long (1406),
/// out of range (1264), incorrect datetime (1292) or string (1366) value, NULL into
/// NOT NULL (1048), no value for a column without default (1364).
const COLUMN_ERRORS: &[u16] = &[1406, 1264, 1292, 1366, 1048, 1364];
/// Server errors that pass with time or a retry: lock wait timeout (1205), deadlock
/// (1213), too many connections (1040, 1203), shutdown in progress (1053), disk or table
/// full (1021, 1114), read-only server during a failover (1290, 1836), connection killed
/// or timed out (1927, 4031), statement interrupted or timed out (1317, 1969, 3024),
/// network errors (1152 to 1161), statement to be re-prepared after DDL (1615).
const TRANSIENT_ERRORS: &[u16] = &[
    1205, 1213, 1040, 1203, 1053, 1021, 1114, 1290, 1836, 1927, 4031, 1317, 1969, 3024, 1152, 1153,
    1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1615,
];

/// The server's error number, when `error` came from a MySQL or MariaDB server.
fn server_error_number(error: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

/// Maps a sqlx error onto the `db-error` variants, keeping the server's message.
fn map_error(error: sqlx::Error) -> DbError {
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
fn quoted_after<'m>(message: &'m str, word: &str) -> Option<&'m str> {
    let start = message.to_ascii_lowercase().find(word)? + word.len();
    let token = message[start..].split(' ').next()?;
    let last = token.rsplit('.').next()?;
    let name = last.trim_matches(|c| c == '\'' || c == '`' || c == '"');
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_fixtures::*;
    use proptest::prelude::*;
    use sqlx::mysql::MySqlConnection;
    use sqlx::{AssertSqlSafe, Connection};
    use std::sync::atomic::{AtomicU32, Ordering};
    use trustlog_guest::model::RetryStatus;

    /// The server the tests use unless `TRUSTLOG_TEST_MYSQL_URL` names another; the
    /// account must be allowed to create and drop databases.
    const DEFAULT_TEST_URL: &str = "mysql://root@127.0.0.1:3306/test";

    fn admin_url() -> String {
        std::env::var("TRUSTLOG_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.to_string())
    }

    /// `url` with its database replaced by `database`.
    fn url_with_database(url: &str, database: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority_start..].find('/') {
            Some(slash) => &base[..authority_start + slash],
            None => base,
        };
        match query {
            Some(query) => format!("{base}/{database}?{query}"),
            None => format!("{base}/{database}"),
        }
    }

    async fn admin_connection(url: &str) -> MySqlConnection {
        MySqlConnection::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach the MySQL/MariaDB server at {url}: {e}. The tests need a real \
                 server: start it, or set TRUSTLOG_TEST_MYSQL_URL to one where this account \
                 may create databases"
            )
        })
    }

    /// A database of its own for one test, so tests run in parallel; dropped with the
    /// value, also when the test panics.
    struct TestDb {
        name: String,
        admin: String,
        url: String,
    }

    impl TestDb {
        async fn create() -> TestDb {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let admin = admin_url();
            let name = format!(
                "trustlog_t_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut conn = admin_connection(&admin).await;
            conn.execute(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
                .await
                .unwrap();
            conn.close().await.unwrap();
            TestDb {
                url: url_with_database(&admin, &name),
                name,
                admin,
            }
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // Drop cannot await, and the test's own runtime may be blocked running it: a
            // runtime of its own on a thread of its own does the dropping.
            let dropped = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(async move {
                        let mut conn = MySqlConnection::connect(&admin).await?;
                        // A test that panicked inside a transaction may leave a lock behind
                        // until its connection goes; give up on the drop instead of hanging.
                        conn.execute("SET SESSION lock_wait_timeout = 10").await?;
                        conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                            .await?;
                        conn.close().await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })
            })
            .join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
                Err(_) => eprintln!("could not drop test database {}", self.name),
            }
        }
    }

    /// A migrated database of its own; keep the `TestDb` alive for the test.
    #[test]
    fn qualifying_names_each_table_the_statement_reads_or_writes_and_nothing_else() {
        assert_eq!(
            qualify(DEAD_LETTERS_AFTER, "t1"),
            DEAD_LETTERS_AFTER
                .replace("FROM trustlog_retry r", "FROM `t1`.trustlog_retry r")
                .replace("JOIN operation o", "JOIN `t1`.operation o")
        );
        assert_eq!(
            qualify(ENSURE_CURSOR, "t1"),
            "INSERT INTO `t1`.trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
             VALUES (?, '', ?) ON DUPLICATE KEY UPDATE cursor_key = cursor_key"
        );
        let waiting = qualify(SCAN_AFTER, "t1");
        assert!(waiting.contains("FROM `t1`.operation o FORCE INDEX (operation_waiting)"));
        assert!(waiting.contains("SELECT 1 FROM `t1`.trustlog_retry r WHERE r.op_id = o.op_id"));
        let columns = qualify(COLUMNS, "t1");
        assert!(columns.contains("TABLE_SCHEMA = 't1'"), "{columns}");
        assert!(
            columns.contains("FROM information_schema.COLUMNS"),
            "{columns}"
        );
        let schema = qualify(SCHEMA, "t1");
        for table in TABLES {
            assert!(
                schema.contains(&format!("CREATE TABLE IF NOT EXISTS `t1`.{table} (")),
                "{table}"
            );
        }
        assert_eq!(
            qualify(NAMED_INDEXES[0].2, "t1"),
            "ALTER TABLE `t1`.operation ADD INDEX operation_waiting (trustlog_status, timestamp, op_id)"
        );
        assert_eq!(
            qualify("FLUSH TABLES operation FOR EXPORT", "t1"),
            "FLUSH TABLES `t1`.operation FOR EXPORT"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn databases_on_one_shared_pool_see_only_their_own_tables() {
        let (server, other) = (TestDb::create().await, TestDb::create().await);
        let lone = MySqlDb::connect(&server.url).await.unwrap();
        lone.migrate().await.unwrap();
        // The pool's own database holds a row neither tenant may see.
        lone.insert(vec![op("decoy", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let mine = TestDb::create().await;
        let pool = open_pool(&server.url, 2, None).await.unwrap();
        let a = MySqlDb::in_database(pool.clone(), &mine.name, Share::of(2));
        let b = MySqlDb::in_database(pool, &other.name, Share::of(2));
        a.migrate().await.unwrap();
        b.migrate().await.unwrap();
        a.insert(vec![op("a-1", 2)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let seen = |db: &MySqlDb| {
            let db = db.clone();
            async move {
                db.scan_after(None, 10)
                    .await
                    .unwrap()
                    .rows
                    .into_iter()
                    .map(|o| o.op_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(seen(&a).await, ["a-1"]);
        assert!(seen(&b).await.is_empty());
        assert_eq!(seen(&lone).await, ["decoy"]);
        a.close().await;
        assert_eq!(
            seen(&b).await,
            Vec::<String>::new(),
            "closing one leaves the pool open"
        );
    }

    /// Tenants on a shared pool prepare more statements than a connection caches, so
    /// most statements evict another and close it first. Where the socket let Nagle hold
    /// back the statement after that close (sqlx 0.9.0), each waited for the server's
    /// delayed ACK, about 40 ms, and a thousand tenants' idle statements alone filled the
    /// pool; without it each takes well under a millisecond here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_past_a_connections_cache_do_not_wait_for_delayed_acks() {
        let t = TestDb::create().await;
        let pool = open_pool(&t.url, 1, None).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        // Twice around 250 distinct statements: every one after the first 100 evicts.
        let began = std::time::Instant::now();
        for round in 0..2 {
            for i in 0..250_i64 {
                let sql = AssertSqlSafe(format!("SELECT CAST(? + {i} AS SIGNED)"));
                let got: i64 = sqlx::query_scalar(sql)
                    .bind(round)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                assert_eq!(got, round + i);
            }
        }
        let took = began.elapsed();
        assert!(
            took < std::time::Duration::from_secs(5),
            "500 statements, 400 of them evicting another, took {took:?}: delayed ACKs?"
        );
    }

    async fn fresh() -> (TestDb, MySqlDb) {
        let t = TestDb::create().await;
        let db = MySqlDb::connect(&t.url).await.unwrap();
        db.migrate().await.unwrap();
        (t, db)
    }

    /// Every retry row as (op_id, retry_count, retry_status, next_retry_at, created_at, updated_at).
    async fn retry_rows(db: &MySqlDb) -> Vec<(String, i64, String, Option<i64>, i64, i64)> {
        sqlx::query(
            "SELECT op_id, retry_count, retry_status, next_retry_at, created_at, updated_at \
             FROM trustlog_retry ORDER BY op_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get::<Option<DateTime<Utc>>, _>(3).map(micros_of),
                micros_of(r.get(4)),
                micros_of(r.get(5)),
            )
        })
        .collect()
    }

    async fn fetch_all_waiting(db: &MySqlDb) -> Vec<Operation> {
        db.scan_after(None, u32::MAX).await.unwrap().rows
    }

    fn ids(ops: Vec<Operation>) -> Vec<String> {
        ops.into_iter().map(|o| o.op_id).collect()
    }

    #[tokio::test]
    async fn migrate_adds_the_named_indexes_to_tables_created_without_them() {
        let t = TestDb::create().await;
        let db = MySqlDb::connect(&t.url).await.unwrap();
        // The schema's tables with neither index nor constraint, as an older creator made them.
        let bare = SCHEMA
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("INDEX ")
                    || l.starts_with("CONSTRAINT ")
                    || l.starts_with("CHECK ")
                    || l.starts_with("--"))
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace(",\n)", "\n)");
        sqlx::raw_sql(AssertSqlSafe(bare))
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            db.scan_after(None, 10).await.is_err(),
            "FORCE INDEX needs the index"
        );
        db.migrate().await.unwrap();
        db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert_eq!(fetch_all_waiting(&db).await, vec![op("a", 1)]);
        let retry_index: i64 = sqlx::query_scalar(HAS_INDEX)
            .bind("trustlog_retry")
            .bind("trustlog_retry_due")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(retry_index > 0);
    }

    #[tokio::test]
    async fn connect_sets_strict_mode_utc_and_utf8mb4() {
        let (_t, db) = fresh().await;
        // Every connection of the pool, not just the first.
        let mut conns = Vec::new();
        for _ in 0..POOL_SIZE {
            conns.push(db.pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let (mode, zone, charset): (String, String, String) = sqlx::query_as(
                "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.character_set_connection",
            )
            .fetch_one(&mut **conn)
            .await
            .unwrap();
            assert!(mode.split(',').any(|m| m == "STRICT_ALL_TABLES"), "{mode}");
            assert_eq!(zone, "+00:00");
            assert_eq!(charset, "utf8mb4");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_of_the_same_op_ids_store_each_exactly_once() {
        let (t, one) = fresh().await;
        let two = MySqlDb::connect(&t.url).await.unwrap();
        for round in 0..10 {
            // Overlapping batches, in opposite orders, each with a repeat of its own.
            let mut a: Vec<Operation> = (0..300)
                .map(|i| op(&format!("r{round}-{i:03}"), i))
                .collect();
            a.push(op(&format!("r{round}-000"), 0));
            let mut b: Vec<Operation> = (150..450)
                .map(|i| op(&format!("r{round}-{i:03}"), i))
                .collect();
            b.reverse();
            let (ra, rb) = tokio::join!(
                tokio::spawn({
                    let (db, a) = (one.clone(), a.clone());
                    async move { db.insert(a, TrustlogStatus::NotTrustlogged).await }
                }),
                tokio::spawn({
                    let (db, b) = (two.clone(), b.clone());
                    async move { db.insert(b, TrustlogStatus::NotTrustlogged).await }
                }),
            );
            let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
            let mut inserted = std::collections::HashMap::<&str, u32>::new();
            for (o, outcome) in a.iter().zip(&ra).chain(b.iter().zip(&rb)) {
                if *outcome == InsertOutcome::Inserted {
                    *inserted.entry(o.op_id.as_str()).or_default() += 1;
                }
            }
            assert_eq!(inserted.len(), 450, "round {round}");
            assert!(inserted.values().all(|n| *n == 1), "round {round}");
            assert_eq!(ra[300], InsertOutcome::Duplicate);
        }
        assert_eq!(two.stats(DEFAULT_KEY).await.unwrap().total, 4_500);
        two.close().await;
    }

    #[tokio::test]
    async fn chinese_utf8_text_round_trips() {
        let (_t, db) = fresh().await;
        let mut o = op("操作-0001", 1);
        o.op_actor = "张三".to_string();
        o.doid = "10.1000/仓库/数字对象-甲".to_string();
        o.op_type = "创建".to_string();
        o.do_repository = "国家数据仓库".to_string();
        o.response_body_hash = Some("哈希值🙂".to_string());
        // VARCHAR keeps trailing spaces; only the key collation ignores them.
        o.producer_id = " 生产者 ".to_string();
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
        // Each column holds its full size in four-byte characters too.
        let mut wide = op(&"操".repeat(64), 2);
        wide.doid = "🙂".repeat(512);
        wide.op_actor = "张".repeat(128);
        wide.client_ip = Some("库".repeat(45));
        db.insert(vec![wide.clone()], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert_eq!(fetch_all_waiting(&db).await, vec![o, wide]);
    }

    #[tokio::test]
    async fn datetime_stores_the_ends_of_its_range_as_such() {
        let (_t, db) = fresh().await;
        db.insert(
            vec![op("first", MIN_TIMESTAMP), op("last", MAX_TIMESTAMP)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        let text: String =
            sqlx::query_scalar("SELECT CONCAT(MIN(timestamp), '|', MAX(timestamp)) FROM operation")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            text,
            "1000-01-01 00:00:00.000000|9999-12-31 23:59:59.999999"
        );
    }

    #[tokio::test]
    async fn timestamps_outside_datetime_are_invalid_and_nothing_of_the_batch_is_stored() {
        let (_t, db) = fresh().await;
        for bad in [MIN_TIMESTAMP - 1, MAX_TIMESTAMP + 1, i64::MIN, i64::MAX] {
            match db
                .insert(
                    vec![op("fine", 1), op("bad", bad)],
                    TrustlogStatus::NotTrustlogged,
                )
                .await
            {
                Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "timestamp"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let mut r = retry("fine", RetryStatus::Pending, Some(MAX_TIMESTAMP + 1));
        match db
            .apply(UnitOfWork {
                now: 1,
                retries: vec![r.clone()],
                ..UnitOfWork::default()
            })
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "next_retry_at"),
            other => panic!("{other:?}"),
        }
        r.next_retry_at = Some(5);
        match db
            .apply(UnitOfWork {
                now: i64::MIN,
                retries: vec![r],
                ..UnitOfWork::default()
            })
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "now"),
            other => panic!("{other:?}"),
        }
        let stats = db.stats(DEFAULT_KEY).await.unwrap();
        assert_eq!(stats, DbStats::default());
    }

    #[tokio::test]
    async fn positions_and_times_beyond_datetime_bound_the_queries_as_they_would_anywhere() {
        let (_t, db) = fresh().await;
        db.insert(
            vec![op("a", MIN_TIMESTAMP), op("b", 0), op("c", MAX_TIMESTAMP)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        db.apply(UnitOfWork {
            now: 1,
            retries: vec![retry("b", RetryStatus::Pending, Some(MAX_TIMESTAMP))],
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        // "b" has a retry row, so it belongs to the retry tick and no scan returns it.
        assert_eq!(
            ids(db
                .scan_after(Some(pos(i64::MIN, "z")), 10)
                .await
                .unwrap()
                .rows),
            vec!["a", "c"]
        );
        assert!(
            db.scan_after(Some(pos(i64::MAX, "")), 10)
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        assert_eq!(
            ids(db
                .sweep_candidates(pos(i64::MAX, ""), i64::MIN, 10)
                .await
                .unwrap()
                .rows),
            vec!["a", "c"]
        );
        assert!(
            db.sweep_candidates(pos(i64::MIN, "z"), i64::MIN, 10)
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        assert_eq!(db.due_retries(i64::MAX, 10).await.unwrap().rows.len(), 1);
        assert!(db.due_retries(i64::MIN, 10).await.unwrap().rows.is_empty());
    }

    #[tokio::test]
    async fn the_scan_orders_op_ids_by_their_bytes() {
        let (_t, db) = fresh().await;
        // Case, a shared prefix, inner spaces and characters beyond the BMP: byte order,
        // the order the guest's Position compares in.
        let mut expected = vec!["B", "a", "a b", "ab", "a~", "é", "z", "操", "🙂", "A", ""];
        db.insert(
            expected.iter().map(|id| op(id, 7)).collect(),
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        expected.sort_unstable();
        assert_eq!(ids(fetch_all_waiting(&db).await), expected);
        // One row at a time, each strictly after the last.
        let mut cursor = None;
        let mut seen = Vec::new();
        while let Some(o) = db.scan_after(cursor.clone(), 1).await.unwrap().rows.pop() {
            cursor = Some(o.position());
            seen.push(o.op_id);
        }
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn op_ids_the_key_collation_cannot_order_by_bytes_are_invalid() {
        let (_t, db) = fresh().await;
        for bad in ["a ", "a\tb", "line\n", "\u{7f}"] {
            match db
                .insert(
                    vec![op("fine", 1), op(bad, 2)],
                    TrustlogStatus::NotTrustlogged,
                )
                .await
            {
                Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "op_id"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // The schema refuses them from plain SQL too, naming the field.
        let err = sqlx::query(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) VALUES ('x ', 'a', 'd', 'p', 's', 't', 'dp', \
             'dr', '2026-01-01')",
        )
        .execute(&db.pool)
        .await
        .unwrap_err();
        match map_error(err) {
            DbError::Invalid(FieldError { field, message }) => {
                assert_eq!(field, "op_id");
                assert!(message.contains("operation_op_id_chars"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = sqlx::query("UPDATE operation SET trustlog_status = 'LOST'")
            .execute(&db.pool)
            .await;
        assert!(err.is_ok(), "no rows, so no check");
        db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let err = sqlx::query("UPDATE operation SET trustlog_status = 'LOST'")
            .execute(&db.pool)
            .await
            .unwrap_err();
        match map_error(err) {
            DbError::Invalid(FieldError { field, .. }) => assert_eq!(field, "trustlog_status"),
            other => panic!("{other:?}"),
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 1);
    }

    #[tokio::test]
    async fn of_two_updates_of_one_retry_row_in_a_unit_the_later_wins() {
        let (_t, db) = fresh().await;
        let mut later = retry("m", RetryStatus::DeadLetter, None);
        later.retry_count = 5;
        later.error_message = "x".repeat(100_000);
        db.apply(UnitOfWork {
            now: 1,
            retries: vec![
                retry("z", RetryStatus::Pending, Some(3)),
                retry("m", RetryStatus::Pending, Some(2)),
                retry("a", RetryStatus::Pending, Some(1)),
                later,
            ],
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        let rows = retry_rows(&db).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[1].1, rows[1].2.as_str(), rows[1].3),
            (5, "DEAD_LETTER", None)
        );
        let message_len: i64 = sqlx::query_scalar(
            "SELECT CHAR_LENGTH(error_message) FROM trustlog_retry WHERE op_id = 'm'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(message_len, 100_000, "long error messages are kept whole");
    }

    #[tokio::test]
    async fn stats_read_one_snapshot_even_where_read_committed_is_the_default() {
        let (t, db) = fresh().await;
        db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let mut reader = MySqlConnection::connect(&t.url).await.unwrap();
        reader
            .execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .unwrap();
        let mut tx = reader.begin_with(BEGIN_SNAPSHOT).await.unwrap();
        let count = "SELECT COUNT(*) FROM operation";
        let before: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
        db.insert(vec![op("b", 2)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let after: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
        assert_eq!((before, after), (1, 1));
        tx.commit().await.unwrap();
        // The level applied to that transaction only.
        let later: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut reader)
            .await
            .unwrap();
        assert_eq!(later, 2);
        let level: String = match sqlx::query_scalar("SELECT @@SESSION.transaction_isolation")
            .fetch_one(&mut reader)
            .await
        {
            Ok(level) => level,
            // MariaDB before 11.1 knows the variable by its old name only.
            Err(_) => sqlx::query_scalar("SELECT @@SESSION.tx_isolation")
                .fetch_one(&mut reader)
                .await
                .unwrap(),
        };
        assert_eq!(level, "READ-COMMITTED");
        reader.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_racing_for_a_new_cursor_key_exactly_one_wins() {
        let (t, one) = fresh().await;
        let two = MySqlDb::connect(&t.url).await.unwrap();
        for round in 0..20 {
            let key = format!("new-{round}");
            let work = UnitOfWork {
                now: round,
                cursor: Some(CursorMove {
                    key: key.clone(),
                    expected: None,
                    to: pos(round, "x"),
                }),
                ..UnitOfWork::default()
            };
            let (a, b) = tokio::join!(
                tokio::spawn({
                    let (db, work) = (one.clone(), work.clone());
                    async move { db.apply(work).await }
                }),
                tokio::spawn({
                    let db = two.clone();
                    async move { db.apply(work).await }
                }),
            );
            let mut results = [a.unwrap(), b.unwrap()];
            results.sort_by_key(|r| r.is_err());
            assert_eq!(
                results,
                [Ok(()), Err(DbError::CursorMoved(key.clone()))],
                "round {round}"
            );
        }
        two.close().await;
    }

    #[tokio::test]
    async fn an_op_id_over_64_characters_is_invalid_and_nothing_of_the_batch_is_stored() {
        let (_t, db) = fresh().await;
        let long = "x".repeat(65);
        // Straight to the adapter: the guest's own validation would refuse it first.
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
                assert!(message.contains("Data too long"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
        // 64 characters, not bytes: 64 ASCII and 64 Chinese characters fit.
        db.insert(
            vec![op(&"x".repeat(64), 1), op(&"操".repeat(64), 1)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        // Every column is checked, and the error names it.
        let mut o = op("y", 1);
        o.client_ip = Some("1".repeat(46));
        match db.insert(vec![o], TrustlogStatus::NotTrustlogged).await {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "client_ip"),
            other => panic!("{other:?}"),
        }
        let stats = db.stats(DEFAULT_KEY).await.unwrap();
        assert_eq!(stats.total, 2);
    }

    #[tokio::test]
    async fn duplicate_keys_are_conflicts() {
        let (_t, db) = fresh().await;
        db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let err =
            sqlx::query("INSERT INTO trustlog_cursor VALUES ('k', '', NOW()), ('k', '', NOW())")
                .execute(&db.pool)
                .await
                .unwrap_err();
        match map_error(err) {
            DbError::Conflict(message) => assert!(message.contains("'k'"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_wait_timeouts_and_deadlocks_are_unavailable() {
        let (_t, db) = fresh().await;
        db.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let lock = "UPDATE operation SET op_actor = 'locker' WHERE op_id = ?";

        let mut holder = db.pool.begin().await.unwrap();
        sqlx::query(lock)
            .bind("a")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut impatient = db.pool.acquire().await.unwrap();
        impatient
            .execute("SET SESSION innodb_lock_wait_timeout = 1")
            .await
            .unwrap();
        let err = sqlx::query(lock)
            .bind("a")
            .execute(&mut *impatient)
            .await
            .unwrap_err();
        match map_error(err) {
            DbError::Unavailable(m) => assert!(m.contains("1205"), "{m}"),
            other => panic!("{other:?}"),
        }
        holder.rollback().await.unwrap();
        drop(impatient);

        // Each holds one row and wants the other's.
        let mut one = db.pool.begin().await.unwrap();
        let mut two = db.pool.begin().await.unwrap();
        sqlx::query(lock)
            .bind("a")
            .execute(&mut *one)
            .await
            .unwrap();
        sqlx::query(lock)
            .bind("b")
            .execute(&mut *two)
            .await
            .unwrap();
        let (r1, r2) = tokio::join!(
            sqlx::query(lock).bind("b").execute(&mut *one),
            sqlx::query(lock).bind("a").execute(&mut *two),
        );
        let err = match (r1, r2) {
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
            other => panic!("expected one deadlock victim: {other:?}"),
        };
        match map_error(err) {
            DbError::Unavailable(m) => assert!(m.contains("1213"), "{m}"),
            other => panic!("{other:?}"),
        }
        one.rollback().await.unwrap();
        two.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        // Nothing listens on port 1; the pool keeps trying until its acquire timeout.
        match MySqlDb::connect("mysql://root@127.0.0.1:1/test").await {
            Err(DbError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    /// One row of `EXPLAIN`, by column name (MySQL adds columns MariaDB lacks).
    #[derive(Debug)]
    struct Step {
        select_type: String,
        table: String,
        access: String,
        key: String,
        extra: String,
    }

    /// The plan of `sql`, binding each of `binds` in turn.
    async fn plan_of(db: &MySqlDb, sql: &str, binds: &[Bind]) -> Vec<Step> {
        let sql = format!("EXPLAIN {sql}");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            query = match bind {
                Bind::Int(n) => query.bind(*n),
                Bind::Text(s) => query.bind(*s),
                Bind::At(t) => query.bind(DateTime::from_timestamp_micros(*t).unwrap().naive_utc()),
            };
        }
        let text = |row: &MySqlRow, column: &str| -> String {
            row.try_get::<Option<String>, _>(column)
                .unwrap()
                .unwrap_or_default()
        };
        query
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| Step {
                select_type: text(row, "select_type"),
                table: text(row, "table"),
                access: text(row, "type"),
                key: text(row, "key"),
                extra: text(row, "Extra"),
            })
            .collect()
    }

    enum Bind {
        Int(i64),
        Text(&'static str),
        At(Micros),
    }

    #[tokio::test]
    async fn the_queries_use_their_indexes_without_sorting() {
        let (_t, db) = fresh().await;
        let base = 1_795_515_834_000_000;
        // 10,000 rows: most delivered, as in a table that has been running for a while.
        let ops: Vec<Operation> = (0..10_000)
            .map(|i| op(&format!("op-{i:05}"), base + i / 3))
            .collect();
        db.insert(ops, TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        db.apply(UnitOfWork {
            now: base,
            trustlogged: (0..8_000).map(|i| format!("op-{i:05}")).collect(),
            retries: (8_000..8_100)
                .map(|i| retry(&format!("op-{i:05}"), RetryStatus::Pending, Some(base + i)))
                .collect(),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        sqlx::raw_sql("ANALYZE TABLE operation, trustlog_retry")
            .execute(&db.pool)
            .await
            .unwrap();
        // A keyset bound in the waiting rows: the timestamp twice, the op_id, the limit.
        let bound = || {
            vec![
                Bind::At(base + 2_900),
                Bind::At(base + 2_900),
                Bind::Text("op-08700"),
                Bind::Int(1_000),
            ]
        };
        for (name, sql, binds) in [
            ("scan from start", SCAN_FROM_START, vec![Bind::Int(1_000)]),
            ("scan after", SCAN_AFTER, bound()),
            (
                "sweep",
                SWEEP,
                vec![
                    Bind::At(base + 2_900),
                    Bind::At(base + 2_900),
                    Bind::Text("op-08700"),
                    Bind::At(MIN_TIMESTAMP),
                    Bind::Int(1_000),
                ],
            ),
            (
                "catch-up",
                SWEEP,
                vec![
                    Bind::At(base + 2_900),
                    Bind::At(base + 2_900),
                    Bind::Text("op-08700"),
                    Bind::At(base + 2_800),
                    Bind::Int(1_000),
                ],
            ),
            ("waiting since", WAITING_SINCE, vec![Bind::At(base + 2_800)]),
            ("oldest waiting", OLDEST_WAITING, vec![]),
        ] {
            let plan = plan_of(&db, sql, &binds).await;
            let o = plan.iter().find(|s| s.table == "o").unwrap();
            assert_eq!(o.key, "operation_waiting", "{name}: {plan:?}");
            assert!(
                matches!(o.access.as_str(), "range" | "ref"),
                "{name}: {plan:?}"
            );
            assert!(
                plan.iter()
                    .all(|s| !s.extra.contains("filesort") && !s.extra.contains("temporary")),
                "{name}: {plan:?}"
            );
            // NOT EXISTS is a primary-key probe per row, or, while the retry table is small,
            // one pass over it into a hash table (MariaDB's choice, by cost).
            if let Some(r) = plan.iter().find(|s| s.table == "r") {
                assert!(
                    r.select_type == "MATERIALIZED"
                        || (r.key == "PRIMARY"
                            && matches!(r.access.as_str(), "eq_ref" | "unique_subquery")),
                    "{name}: {plan:?}"
                );
                assert!(r.extra.contains("Using index"), "{name}: {plan:?}");
            }
        }
        for (name, sql, key) in [
            ("count by status", COUNT_BY_STATUS, "operation_waiting"),
            (
                "count retries",
                COUNT_RETRIES_BY_STATUS,
                "trustlog_retry_due",
            ),
        ] {
            let plan = plan_of(&db, sql, &[]).await;
            assert_eq!(plan[0].key, key, "{name}: {plan:?}");
            assert!(plan[0].extra.contains("Using index"), "{name}: {plan:?}");
            assert!(!plan[0].extra.contains("filesort"), "{name}: {plan:?}");
        }
        for (name, sql) in [
            ("existing ids", EXISTING_IDS),
            ("mark", MARK_TRUSTLOGGED),
            ("delete retries", DELETE_RETRIES),
        ] {
            let plan = plan_of(
                &db,
                &format!("{sql}(?, ?)"),
                &[Bind::Text("op-08500"), Bind::Text("op-09999")],
            )
            .await;
            assert_eq!(plan[0].key, "PRIMARY", "{name}: {plan:?}");
            assert_eq!(plan[0].access, "range", "{name}: {plan:?}");
        }
        // Each status is one index range read in (due time, op_id) order up to the limit,
        // each operation one primary-key lookup; only the merged result (at most two
        // batches) is sorted.
        let at = Bind::At(base + 8_050);
        let plan = plan_of(
            &db,
            DUE_RETRIES,
            &[
                at,
                Bind::Int(100),
                Bind::At(base + 8_050),
                Bind::Int(100),
                Bind::Int(100),
            ],
        )
        .await;
        let steps: Vec<(&str, &str, &str)> = plan
            .iter()
            .filter(|s| s.table == "r" || s.table == "o")
            .map(|s| (s.table.as_str(), s.key.as_str(), s.access.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("r", "trustlog_retry_due", "range"),
                ("o", "PRIMARY", "eq_ref"),
                ("r", "trustlog_retry_due", "range"),
                ("o", "PRIMARY", "eq_ref"),
            ],
            "{plan:?}"
        );
        for step in plan.iter().filter(|s| s.table == "r") {
            assert!(!step.extra.contains("filesort"), "{plan:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the op_id and timestamp, a cursor stored by `apply` reads back as it was.
        #[test]
        fn positions_round_trip_through_the_stored_cursor(
            timestamp in any::<i64>(),
            op_id in "[^\\x00-\\x1f\\x7f]{0,63}[^ \\x00-\\x1f\\x7f]?",
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (got, want) = runtime.block_on(async {
                let (_t, db) = fresh().await;
                let key = format!("prop-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
                let to = Position { timestamp, op_id: op_id.clone() };
                db.apply(UnitOfWork {
                    now: 1,
                    cursor: Some(CursorMove { key: key.clone(), expected: None, to: to.clone() }),
                    ..UnitOfWork::default()
                })
                .await
                .unwrap();
                let got = db.load_cursor(&key).await.unwrap();
                db.close().await;
                (got, Some(to))
            });
            prop_assert_eq!(got, want);
        }
    }

    static NEXT_KEY: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn server_messages_name_their_column_or_constraint() {
        for (message, word, name) in [
            (
                "Data too long for column 'op_id' at row 1",
                "column ",
                "op_id",
            ),
            ("Column 'op_actor' cannot be null", "column ", "op_actor"),
            (
                "Incorrect datetime value: '0000-00-00' for column `db`.`operation`.`timestamp` at row 1",
                "column ",
                "timestamp",
            ),
            (
                "Field 'doid' doesn't have a default value",
                "field ",
                "doid",
            ),
            (
                "CONSTRAINT `operation_op_id_chars` failed for `test`.`operation`",
                "constraint ",
                "operation_op_id_chars",
            ),
            (
                "Check constraint 'trustlog_retry_retry_status_value' is violated.",
                "constraint ",
                "trustlog_retry_retry_status_value",
            ),
        ] {
            assert_eq!(quoted_after(message, word), Some(name), "{message}");
        }
        assert_eq!(quoted_after("no such thing", "column "), None);
    }

    #[test]
    fn urls_get_their_database_replaced() {
        assert_eq!(
            url_with_database("mysql://root@127.0.0.1:3306/test", "x"),
            "mysql://root@127.0.0.1:3306/x"
        );
        assert_eq!(
            url_with_database("mysql://u:p@h/test?ssl-mode=DISABLED", "x"),
            "mysql://u:p@h/x?ssl-mode=DISABLED"
        );
        assert_eq!(url_with_database("mysql://h:3306", "x"), "mysql://h:3306/x");
    }
}

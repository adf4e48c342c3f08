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
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
    MySqlRow,
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
use super::search::{self, Dialect, FoundOperation, OperationFilter, Purge, col, unreadable_key};
use super::{Backlog, DeadLetter, Lease, Replay};

mod errors;
mod rows;
mod statements;

use errors::*;
use rows::*;
use statements::*;

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
                let replayed = self.replay_listed(&mut tx, &ids, now).await?;
                tx.commit().await.map_err(map_error)?;
                Ok(replayed)
            }
            Replay::Ids(ids) => {
                let ids = storable_ids(&ids);
                let mut tx = self.begin().await?;
                let replayed = self.replay_listed(&mut tx, &ids, now).await?;
                tx.commit().await.map_err(map_error)?;
                Ok(replayed)
            }
            Replay::Matching(filter) => {
                let mut tx = self.begin().await?;
                let mut qb = QueryBuilder::<MySql>::new(self.text(DEAD_LETTERS_MATCHING));
                search::push_filter(&mut qb, &filter, &DIALECT);
                qb.push(IN_ID_ORDER);
                let ids: Vec<String> = qb
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_error)?;
                let replayed = self.replay_listed(&mut tx, &ids, now).await?;
                tx.commit().await.map_err(map_error)?;
                Ok(replayed)
            }
        }
    }

    /// Replays the dead letters among `ids` (sorted: rows are locked in key order), by
    /// primary key, in the transaction `tx`; how many changed. The status is checked
    /// again: a row may have changed since it was listed.
    async fn replay_listed(
        &self,
        tx: &mut MySqlConnection,
        ids: &[impl AsRef<str>],
        now: NaiveDateTime,
    ) -> Result<u64, DbError> {
        let mut replayed = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(self.text(REPLAY_LISTED[0]));
            qb.push_bind(now)
                .push(REPLAY_LISTED[1])
                .push_bind(now)
                .push(REPLAY_LISTED[2]);
            push_id_list(&mut qb, chunk.iter().map(AsRef::as_ref));
            replayed += qb
                .build()
                .execute(&mut *tx)
                .await
                .map_err(map_error)?
                .rows_affected();
        }
        Ok(replayed)
    }

    /// Purges dead letters last changed before `before`, keeping their operations as
    /// db-only; returns how many retry rows were deleted.
    pub async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        let Some(last) = last_before(before)? else {
            return Ok(0);
        };
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(self.sql(PURGEABLE))
            .bind(last)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
        let purged = self.purge_listed(&mut tx, &ids).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// Purges the dead letters `which` selects, last changed before `now`, keeping their
    /// operations as db-only; returns how many retry rows were deleted.
    pub async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
        let Some(last) = last_before(now)? else {
            return Ok(0);
        };
        let mut tx = self.begin().await?;
        let mut ids: Vec<String> = Vec::new();
        match &which {
            Purge::Ids(listed) => {
                for chunk in storable_ids(listed).chunks(ID_CHUNK) {
                    let mut qb = QueryBuilder::<MySql>::new(self.text(PURGEABLE_LISTED[0]));
                    qb.push_bind(last).push(PURGEABLE_LISTED[1]);
                    push_id_list(&mut qb, chunk.iter().copied());
                    ids.extend(
                        qb.build_query_scalar::<String>()
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(map_error)?,
                    );
                }
            }
            Purge::Matching(filter) => {
                let mut qb = QueryBuilder::<MySql>::new(self.text(PURGEABLE_MATCHING));
                qb.push_bind(last);
                search::push_filter(&mut qb, filter, &DIALECT);
                qb.push(IN_ID_ORDER);
                ids = qb
                    .build_query_scalar()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_error)?;
            }
        }
        let purged = self.purge_listed(&mut tx, &ids).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// Marks the operations of the dead letters `ids` (in op_id order) db-only and
    /// deletes their retry rows, by primary key, in the transaction `tx` that read them;
    /// how many retry rows were deleted.
    async fn purge_listed(&self, tx: &mut MySqlConnection, ids: &[String]) -> Result<u64, DbError> {
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
        Ok(purged)
    }

    /// The operation `op_id` with its status and retry row, if it is stored.
    pub async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        // Under PAD SPACE 'a ' would find 'a'; no stored op_id looks like that.
        if check_op_id(op_id).is_err() {
            return Ok(None);
        }
        let row = sqlx::query(self.sql(FIND))
            .bind(op_id)
            .fetch_optional(&mut *self.conn().await?)
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
        let mut qb = QueryBuilder::<MySql>::new(self.text(SEARCH));
        search::push_filter(&mut qb, filter, &DIALECT);
        if let Some(after) = after {
            // Spelled out with OR, as the scans' bound: MariaDB plans a row comparison
            // badly. The op_ids compare as bytes: a position is the caller's, and under
            // PAD SPACE 'a' would sort after 'a\t' (the pad, 0x20, after the tab). Stored
            // op_ids sort in byte order under either, as [`check_op_id`] keeps them.
            qb.push(" AND (")
                .push(SEARCH_KEY)
                .push(" > ")
                .push_bind(after.timestamp)
                .push(" OR (")
                .push(SEARCH_KEY)
                .push(" = ")
                .push_bind(after.timestamp)
                .push(" AND CAST(o.op_id AS BINARY) > CAST(")
                .push_bind(after.op_id.as_str())
                .push(" AS BINARY)))");
        }
        qb.push(" ORDER BY ")
            .push(SEARCH_KEY)
            .push(", o.op_id LIMIT ")
            .push_bind(i64::from(limit));
        let rows = qb
            .build()
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        rows.iter().map(found_at).collect()
    }

    /// How many operations `filter` matches.
    pub async fn count_operations(&self, filter: &OperationFilter) -> Result<u64, DbError> {
        let mut qb = QueryBuilder::<MySql>::new(self.text(COUNT));
        search::push_filter(&mut qb, filter, &DIALECT);
        let row = qb
            .build()
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        count_in(&row, 0)
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

/// How MySQL and MariaDB spell a search. `=` is not exact on their text: utf8mb4_bin
/// pads with spaces ('a' = 'a '), and a column of another collation (a table the seed
/// made) may fold case, so the bytes are compared too; the plain `=` before lets the
/// primary key serve an op_id.
const DIALECT: Dialect<MySql> = Dialect {
    key: SEARCH_KEY,
    push_equals: |qb, column, value| {
        qb.push("o.")
            .push(column)
            .push(" = ")
            .push_bind(value)
            .push(" AND CAST(o.")
            .push(column)
            .push(" AS BINARY) = CAST(")
            .push_bind(value)
            .push(" AS BINARY)");
    },
    // The key's PAD SPACE collation would match an op_id the schema refuses to store to
    // one it holds.
    storable: |column, value| column != "op_id" || check_op_id(value).is_ok(),
};

/// `ids` an op_id can be (see [`check_op_id`]), sorted once each: the order rows are
/// locked in.
fn storable_ids(ids: &[String]) -> Vec<&str> {
    search::sorted_ids(ids)
        .into_iter()
        .filter(|id| check_op_id(id).is_ok())
        .collect()
}

/// The last stored instant before `before`: stored times are whole microseconds within
/// DATETIME's range, so "before `before`" is "at or before the microsecond ahead of it",
/// clamped into that range; `None` when nothing stored can lie before it.
fn last_before(before: Micros) -> Result<Option<NaiveDateTime>, DbError> {
    let Some(last) = before.checked_sub(1).filter(|last| *last >= MIN_TIMESTAMP) else {
        return Ok(None);
    };
    to_datetime("before", last.min(MAX_TIMESTAMP)).map(Some)
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

#[cfg(test)]
mod tests;

//! The PostgreSQL adapter: the `db` interface of `wit/trustlog.wit` as batched SQL.
//!
//! Every statement that touches many rows binds whole arrays (`UNNEST`, `= ANY`), so a
//! batch is one statement whatever its size and never meets the 65,535-bind limit.
//! Writes run in READ COMMITTED transactions: the cursor's compare-and-set comes first,
//! so its row lock queues a second worker on the same cursor, which then re-reads the
//! row, finds it moved and rolls back.

use std::collections::HashSet;
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgConnection, PgDatabaseError, PgHasArrayType, PgListener,
    PgPool, PgPoolOptions, PgRow, PgTypeInfo, PgValueFormat, Postgres,
};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Decode, Encode, QueryBuilder, Row, Transaction, Type, TypeInfo, ValueRef};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::{
    CursorMove, DbError, DbStats, Fetched, FieldError, InsertOutcome, Micros, Operation, Position,
    RetryRow, RetryUpdate, RowFault, TEXT_FIELDS, TrustlogStatus, UnitOfWork,
};
use trustlog_guest::validate::LIMITS;

use super::cursor_value::{format_position, parse_cursor_any, parse_cursor_of};
use super::pool_share::{self, Held, Share};
use super::schema_check::{Column, TABLES};
use super::search::{self, Dialect, FoundOperation, OperationFilter, Purge, col, unreadable_key};
use super::shared_server::WakeHub;
use super::{Backlog, DeadLetter, Lease, Replay};
use tokio::sync::OwnedSemaphorePermit;

mod errors;
mod listener;
mod rows;
mod statements;

use errors::*;
pub(super) use listener::{Heard, spawn_wake_listener};
use rows::*;
use statements::*;

/// A pool of at most `size` connections to `url`, each in the time zone the URL names.
/// With `lock_timeout`, a statement gives up on a lock after that long.
pub(super) async fn open_pool(
    url: &str,
    size: u32,
    lock_timeout: Option<Duration>,
) -> Result<PgPool, DbError> {
    let mut options = PgConnectOptions::from_str(url).map_err(map_error)?;
    if let Some(wait) = lock_timeout {
        options = options.options([("lock_timeout", format!("{}ms", wait.as_millis()))]);
    }
    // A `timestamp` column without time zone holds times in the session's zone:
    // every query reads it cast to TIMESTAMPTZ, and PostgreSQL converts the same
    // way where it compares one with the relay's TIMESTAMPTZ parameters or stores
    // them in one. sqlx starts every session in UTC, over what `options` says, so
    // a zone the URL names (`options=-c TimeZone=…`) is set once connected.
    let zone = session_zone(options.get_options());
    if options.get_application_name().is_none() {
        // Names the relay's sessions in pg_stat_activity.
        options = options.application_name("trustlog");
    }
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            let zone = zone.clone();
            Box::pin(async move {
                if let Some(zone) = zone {
                    sqlx::query("SELECT set_config('TimeZone', $1, false)")
                        .bind(zone)
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(map_error)
}

/// `schema` as an identifier. Schema names are checked to `[a-z0-9_]` before they get
/// here ([`super::schemas`]); the quotes keep a name such as `user` from being a keyword.
fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// A pool of connections to one PostgreSQL database (and schema), implementing the `db` interface.
#[derive(Debug, Clone)]
pub struct PostgresDb {
    pool: PgPool,
    /// Set where the pool is shared by tenants of one server: every use of a connection
    /// puts it in this schema first (see [`PostgresDb::conn`]).
    schema: Option<Arc<str>>,
    /// The shared server's one listener, where the pool is shared.
    wakes: Option<Arc<WakeHub>>,
    /// This tenant's share of a shared pool.
    share: Option<Share>,
    /// When the scan last checked the statistics; shared by clones of the pool.
    stats_checked: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Whether a statistics refresh is running in the background.
    analyzing: Arc<AtomicBool>,
}

impl PostgresDb {
    /// Connects to `url` (`postgres://user@host:port/db`, libpq parameters such as
    /// `?options=-c%20search_path%3Dmyschema` included).
    pub async fn connect(url: &str) -> Result<PostgresDb, DbError> {
        let pool = open_pool(url, POOL_SIZE, None).await?;
        Ok(PostgresDb {
            pool,
            schema: None,
            wakes: None,
            share: None,
            stats_checked: Arc::new(std::sync::Mutex::new(None)),
            analyzing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// This tenant's schema on `pool`, a pool of a server other tenants share (see
    /// [`super::shared_server`]).
    pub fn in_schema(pool: PgPool, schema: &str, wakes: Arc<WakeHub>, share: Share) -> PostgresDb {
        PostgresDb {
            pool,
            schema: Some(Arc::from(schema)),
            wakes: Some(wakes),
            share: Some(share),
            stats_checked: Arc::new(std::sync::Mutex::new(None)),
            analyzing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A connection of the pool, its `search_path` this tenant's schema where the pool
    /// is shared. Set on every use, since the last user may have been another tenant;
    /// PostgreSQL plans a prepared statement again when the `search_path` changed, so a
    /// statement cached on the connection never reaches another tenant's tables.
    async fn conn(&self) -> Result<Held<PoolConnection<Postgres>>, DbError> {
        let permit = self.permit().await?;
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        if let Some(schema) = &self.schema {
            sqlx::query("SELECT set_config('search_path', $1, false)")
                .bind(quoted(schema))
                .execute(&mut *conn)
                .await
                .map_err(map_error)?;
        }
        Ok(Held::new(conn, permit))
    }

    /// On a shared pool, the tenant's permit to hold one more connection.
    async fn permit(&self) -> Result<Option<OwnedSemaphorePermit>, DbError> {
        pool_share::permit(self.share.as_ref()).await
    }

    /// A transaction in this tenant's schema: on a shared pool the `SET LOCAL` goes in
    /// the same round trip as the `BEGIN`.
    async fn begin(&self) -> Result<Held<Transaction<'static, Postgres>>, DbError> {
        self.begin_with("BEGIN").await
    }

    /// [`PostgresDb::begin`], started by `begin` (a `BEGIN` with its options).
    async fn begin_with(
        &self,
        begin: &'static str,
    ) -> Result<Held<Transaction<'static, Postgres>>, DbError> {
        let permit = self.permit().await?;
        let tx = match &self.schema {
            None => self.pool.begin_with(begin).await,
            Some(schema) => {
                let begin = format!("{begin}; SET LOCAL search_path TO {}", quoted(schema));
                self.pool.begin_with(sqlx::AssertSqlSafe(begin)).await
            }
        }
        .map_err(map_error)?;
        Ok(Held::new(tx, permit))
    }

    /// The columns of trustlog's tables in the current schema, as the catalogue has them.
    pub async fn columns(&self) -> Result<Vec<Column>, DbError> {
        let rows = sqlx::query(COLUMNS)
            .bind(&TABLES[..])
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|row| {
                Ok(Column {
                    table: row.try_get(0).map_err(map_error)?,
                    name: row.try_get(1).map_err(map_error)?,
                    data_type: row.try_get(2).map_err(map_error)?,
                    max_length: row
                        .try_get::<Option<i32>, _>(3)
                        .map_err(map_error)?
                        .and_then(|n| u64::try_from(n).ok()),
                    collation: row.try_get(4).map_err(map_error)?,
                    precision: None,
                })
            })
            .collect()
    }

    /// Runs statements that change existing tables, in one transaction.
    pub async fn alter(&self, statements: &[&str]) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)
    }

    /// Creates the tables, indexes and wake-up trigger that are missing; safe to run on
    /// every start, from several processes at once.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.conn().await?;
        if let Err(e) = sqlx::raw_sql(SCHEMA).execute(&mut *conn).await {
            // The script opens its own transaction, which an error leaves open and failed:
            // the connection must not serve anyone else.
            conn.close_on_drop();
            return Err(map_error(e));
        }
        sqlx::raw_sql(ANALYZE_IF_STALE)
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Starts [`ANALYZE_IF_STALE`] on a connection of its own if [`STATS_CHECK_EVERY`] has
    /// passed since the last check and none is running. The scan does not wait for it: an
    /// ANALYZE of a large table takes a tenth of a second or more, and run inline it held
    /// up the batch it landed in (the paced p99 latency on PostgreSQL was 150 ms against a
    /// p50 of 2 ms). A failure is logged: the scan works with stale statistics, only slower.
    fn refresh_statistics_if_due(&self) {
        {
            let mut checked = self.stats_checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.is_some_and(|at| at.elapsed() < STATS_CHECK_EVERY) {
                return;
            }
            *checked = Some(std::time::Instant::now());
        }
        if self.analyzing.swap(true, Ordering::AcqRel) {
            return;
        }
        let db = self.clone();
        tokio::spawn(async move {
            let analyzed = async {
                let mut conn = db.conn().await?;
                sqlx::raw_sql(ANALYZE_IF_STALE)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_error)
            };
            if let Err(e) = analyzed.await {
                tracing::warn!(error = %e, "refreshing the statistics of operation failed; scanning on");
            }
            db.analyzing.store(false, Ordering::Release);
        });
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
        let timestamps = ops
            .iter()
            .map(|op| {
                PgTime::stored(op.timestamp).map_err(|message| {
                    DbError::Invalid(FieldError::new(
                        "timestamp",
                        format!("op_id {:?}: {message}", op.op_id),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let column = |f: fn(&Operation) -> &str| ops.iter().map(f).collect::<Vec<&str>>();
        let optional =
            |f: fn(&Operation) -> Option<&str>| ops.iter().map(f).collect::<Vec<Option<&str>>>();
        let rows = sqlx::query(INSERT)
            .bind(column(|o| &o.op_id))
            .bind(column(|o| &o.op_actor))
            .bind(column(|o| &o.doid))
            .bind(column(|o| &o.producer_id))
            .bind(optional(|o| o.request_body_hash.as_deref()))
            .bind(optional(|o| o.response_body_hash.as_deref()))
            .bind(column(|o| &o.op_source))
            .bind(column(|o| &o.op_type))
            .bind(column(|o| &o.do_prefix))
            .bind(column(|o| &o.do_repository))
            .bind(optional(|o| o.client_ip.as_deref()))
            .bind(optional(|o| o.server_ip.as_deref()))
            .bind(timestamps)
            .bind(status.as_str())
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| blame_operation_field(&ops, map_error(e)))?;
        let mut stored = rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<HashSet<String>, _>>()
            .map_err(map_error)?;
        // Removing an id once claimed makes a second copy in the batch a Duplicate.
        Ok(ops
            .iter()
            .map(|op| {
                if stored.remove(op.op_id.as_str()) {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::Duplicate
                }
            })
            .collect())
    }

    /// Reads a cursor's position; `None` when the row is missing or empty.
    pub async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
        let value: Option<String> = sqlx::query_scalar(LOAD_CURSOR)
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
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
        self.refresh_statistics_if_due();
        let rows = match after {
            None => {
                sqlx::query(SCAN_FROM_START)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
            Some(p) => {
                sqlx::query(SCAN_AFTER)
                    .bind(PgTime::bound(p.timestamp))
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
        let rows = sqlx::query(DUE_RETRIES)
            .bind(PgTime::bound(now))
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

    /// `NOT_TRUSTLOGGED` rows strictly before `before` with no retry row: late commits.
    pub async fn sweep_candidates(
        &self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        let rows = if since <= PG_MIN_MICROS {
            sqlx::query(SWEEP)
                .bind(PgTime::bound(before.timestamp))
                .bind(before.op_id)
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await
        } else {
            sqlx::query(SWEEP_SINCE)
                .bind(PgTime::bound(before.timestamp))
                .bind(before.op_id)
                .bind(PgTime::bound(since))
                .bind(i64::from(limit))
                .fetch_all(&mut *self.conn().await?)
                .await
        }
        .map_err(map_error)?;
        super::fetch_each(&rows, operation_at)
    }

    /// The monitoring counts and the position of `cursor_key`, read in one snapshot.
    pub async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        // REPEATABLE READ: every read below sees the snapshot of the first.
        let mut tx = self
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
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

        let oldest = sqlx::query(OLDEST_WAITING)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.oldest_waiting = oldest.as_ref().map(|row| micros_at(row, 0)).transpose()?;

        let next = sqlx::query(NEXT_RETRY_AT)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_error)?;
        stats.next_retry_at = optional_micros_at(&next, 0)?;

        tx.commit().await.map_err(map_error)?;
        Ok(stats)
    }

    /// What is left to deliver, from the indexes.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        let row = sqlx::query(BACKLOG)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(Backlog {
            waiting: count_in(&row, 0)?,
            retrying: count_in(&row, 1)?,
            next_retry_at: optional_micros_at(&row, 2)?,
        })
    }

    /// Whether any row stamped at or after `since` waits for the scan or the catch-up.
    pub async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
        let found = sqlx::query(WAITING_SINCE)
            .bind(PgTime::bound(since))
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(found.is_some())
    }

    /// Creates the lease row `key`, released, unless it exists.
    pub(super) async fn ensure_lease(&self, key: &str) -> Result<(), DbError> {
        sqlx::query(ENSURE_LEASE)
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
        // A renewal lost to a server crash only lets another host take over sooner; it
        // need not wait for the WAL to reach the disk, as every delivery's commit does.
        let mut tx = self.begin().await?;
        sqlx::raw_sql("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let taken = sqlx::query(CLAIM_LEASE)
            .bind(&seen.key)
            .bind(holder)
            .bind(ttl)
            .bind(state)
            .bind(&seen.holder)
            .bind(PgTime::bound(seen.expires_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        taken
            .map(|row| {
                Ok(Lease {
                    key: seen.key.clone(),
                    holder: holder.to_string(),
                    acquired_at: micros_at(&row, 0)?,
                    renewed_at: micros_at(&row, 1)?,
                    expires_at: micros_at(&row, 2)?,
                    state: state.to_string(),
                    expired: false,
                })
            })
            .transpose()
    }

    /// Releases the lease `key` if `holder` has it, so another host may take it at once.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
        sqlx::query(RELEASE_LEASE)
            .bind(key)
            .bind(holder)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// The lease `key` as it stands (expired or not by the server's clock), if it exists.
    pub async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
        let Some(row) = sqlx::query(READ_LEASE)
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(map_error)?
        else {
            return Ok(None);
        };
        Ok(Some(Lease {
            key: key.to_string(),
            holder: row.try_get(0).map_err(map_error)?,
            acquired_at: micros_at(&row, 1)?,
            renewed_at: micros_at(&row, 2)?,
            expires_at: micros_at(&row, 3)?,
            state: row.try_get(4).map_err(map_error)?,
            expired: row.try_get(5).map_err(map_error)?,
        }))
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
        // Every value is checked before the transaction opens; `now` only where it is used.
        let stored_now = || {
            PgTime::stored(now).map_err(|message| DbError::Invalid(FieldError::new("now", message)))
        };
        let cursor = cursor
            .map(|c| Ok::<_, DbError>((c, stored_now()?)))
            .transpose()?;
        let retries = if retries.is_empty() {
            None
        } else {
            Some(RetryColumns::new(retries, stored_now()?)?)
        };

        // The common unit, a batch all confirmed that moves a set cursor, is one statement.
        if let (
            Some((
                CursorMove {
                    key,
                    expected: Some(expected),
                    to,
                },
                at,
            )),
            None,
            true,
        ) = (&cursor, &retries, delete_retries.is_empty())
        {
            let (moved, _marked): (i64, i64) = sqlx::query_as(MARK_AND_MOVE)
                .bind(format_position(to))
                .bind(*at)
                .bind(key.as_str())
                .bind(format_position(expected))
                .bind(&trustlogged)
                .fetch_one(&mut *self.conn().await?)
                .await
                .map_err(map_error)?;
            if moved != 1 {
                tracing::debug!(cursor_key = %key, "cursor moved by another worker; nothing marked");
                return Err(DbError::CursorMoved(key.clone()));
            }
            return Ok(());
        }

        let mut tx = self.begin().await?;

        if let Some((CursorMove { key, expected, to }, at)) = cursor {
            let to = format_position(&to);
            let moved = match expected {
                Some(expected) => sqlx::query(MOVE_CURSOR)
                    .bind(to)
                    .bind(at)
                    .bind(key.as_str())
                    .bind(format_position(&expected)),
                None => sqlx::query(START_CURSOR)
                    .bind(key.as_str())
                    .bind(to)
                    .bind(at),
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

        if !trustlogged.is_empty() {
            sqlx::query(MARK_TRUSTLOGGED)
                .bind(trustlogged)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }

        if let Some(r) = retries {
            sqlx::query(UPSERT_RETRIES)
                .bind(r.op_id)
                .bind(r.retry_count)
                .bind(r.retry_status)
                .bind(r.last_retry_at)
                .bind(r.next_retry_at)
                .bind(r.error_message)
                .bind(r.now)
                .execute(&mut *tx)
                .await
                .map_err(|e| match map_error(e) {
                    // The only column a caller's string can overflow here.
                    DbError::Invalid(FieldError { field, message }) if field == UNKNOWN_FIELD => {
                        DbError::Invalid(FieldError::new("op_id", message))
                    }
                    other => other,
                })?;
        }

        if !delete_retries.is_empty() {
            sqlx::query(DELETE_RETRIES)
                .bind(delete_retries)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
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
                    .fetch_all(&mut *self.conn().await?)
                    .await
            }
            Some(after) => {
                sqlx::query(DEAD_LETTERS_AFTER)
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
        let now = PgTime::stored(now)
            .map_err(|message| DbError::Invalid(FieldError::new("now", message)))?;
        let mut conn = self.conn().await?;
        let replayed = match &which {
            Replay::One(op_id) => {
                sqlx::query(REPLAY_ONE)
                    .bind(now)
                    .bind(op_id.as_str())
                    .execute(&mut *conn)
                    .await
            }
            Replay::All => sqlx::query(REPLAY_ALL).bind(now).execute(&mut *conn).await,
            Replay::Ids(ids) => {
                sqlx::query(REPLAY_LISTED)
                    .bind(now)
                    .bind(storable_ids(ids))
                    .execute(&mut *conn)
                    .await
            }
            Replay::Matching(filter) => {
                let mut qb = QueryBuilder::<Postgres>::new(REPLAY_MATCHING[0]);
                qb.push_bind(now)
                    .push(REPLAY_MATCHING[1])
                    .push_bind(now)
                    .push(REPLAY_MATCHING[2])
                    .push(MATCHING_IDS);
                search::push_filter(&mut qb, filter, &DIALECT);
                qb.push(")");
                qb.build().execute(&mut *conn).await
            }
        }
        .map_err(map_error)?
        .rows_affected();
        Ok(replayed)
    }

    /// Purges dead letters last changed before `before`, keeping their operations as
    /// db-only; returns how many retry rows were deleted.
    pub async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(PURGEABLE)
            .bind(PgTime::bound(before))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_error)?;
        let purged = purge_listed(&mut tx, &ids).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// Purges the dead letters `which` selects, last changed before `now`, keeping their
    /// operations as db-only; returns how many retry rows were deleted.
    pub async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
        let before = PgTime::bound(now);
        let mut tx = self.begin().await?;
        let ids: Vec<String> = match &which {
            Purge::Ids(listed) => {
                sqlx::query_scalar(PURGEABLE_LISTED)
                    .bind(before)
                    .bind(storable_ids(listed))
                    .fetch_all(&mut *tx)
                    .await
            }
            Purge::Matching(filter) => {
                let mut qb = QueryBuilder::<Postgres>::new(PURGEABLE_MATCHING);
                qb.push_bind(before);
                search::push_filter(&mut qb, filter, &DIALECT);
                qb.push(PURGEABLE_MATCHING_ORDER);
                qb.build_query_scalar().fetch_all(&mut *tx).await
            }
        }
        .map_err(map_error)?;
        let purged = purge_listed(&mut tx, &ids).await?;
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
    }

    /// The operation `op_id` with its status and retry row, if it is stored.
    pub async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        if !(DIALECT.storable)("op_id", op_id) {
            return Ok(None);
        }
        let row = sqlx::query(FIND)
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
        let mut qb = QueryBuilder::<Postgres>::new(SEARCH);
        search::push_filter(&mut qb, filter, &DIALECT);
        if let Some(after) = after {
            // PostgreSQL cannot bind a NUL character. No stored op_id holds one, so none
            // lies between `a` and `a\0…`: after the op_id cut at its NUL is the same.
            let op_id = after.op_id.split('\0').next().unwrap_or_default();
            qb.push(" AND (")
                .push(SEARCH_KEY)
                .push(", o.op_id) > (")
                .push_bind(after.timestamp)
                .push(", ")
                .push_bind(op_id)
                .push(")");
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
        let mut qb = QueryBuilder::<Postgres>::new(COUNT);
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
        sqlx::query(PING)
            .fetch_one(&mut *self.conn().await?)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Does now what autovacuum and the checkpointer would do after a bulk load at a
    /// moment of their own, likely in whatever is timed next (`trustlog bench`).
    /// VACUUM cannot run in a transaction block, so each statement goes alone.
    pub async fn settle(&self) -> Result<(), DbError> {
        for statement in ["VACUUM (ANALYZE) operation", "CHECKPOINT"] {
            sqlx::raw_sql(statement)
                .execute(&mut *self.conn().await?)
                .await
                .map_err(map_error)?;
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned; a pool shared
    /// with other tenants stays open for them.
    pub async fn close(&self) {
        match &self.share {
            None => self.pool.close().await,
            Some(share) => share.close(),
        }
    }

    /// Spawns a task that calls `wake.notify_one()` whenever an INSERT on this schema's
    /// `operation` table commits, from any client; abort the handle to stop it.
    ///
    /// It also wakes once each time it starts listening, the first time included: a row
    /// committed while it was not listening sent a notification nobody received. A lost
    /// connection is logged and listened on again, with a backoff while that fails.
    pub fn spawn_listener(&self, wake: Arc<Notify>) -> JoinHandle<()> {
        if let (Some(hub), Some(schema)) = (&self.wakes, &self.schema) {
            return hub.subscribe(schema, wake);
        }
        let mut own: Option<String> = None;
        spawn_wake_listener(
            self.pool.connect_options().as_ref().clone(),
            move |heard| match heard {
                Heard::Listening { schema } => {
                    own = schema.map(str::to_string);
                    wake.notify_one();
                }
                // Other schemas' tenants share the channel; a payload naming no schema
                // (an older trigger, a hand-made NOTIFY) may concern anyone.
                Heard::Notified { payload } => {
                    if payload.is_empty() || own.as_deref().is_none_or(|s| s == payload) {
                        wake.notify_one();
                    }
                }
            },
        )
    }
}

/// How PostgreSQL spells a search: `=` on text compares bytes under every deterministic
/// collation, and no text can hold a NUL character.
const DIALECT: Dialect<Postgres> = Dialect {
    key: SEARCH_KEY,
    push_equals: |qb, column, value| {
        qb.push("o.").push(column).push(" = ").push_bind(value);
    },
    storable: |_, value| !value.contains('\0'),
};

/// `ids` without those PostgreSQL cannot hold (a NUL would fail the whole statement),
/// sorted once each.
fn storable_ids(ids: &[String]) -> Vec<&str> {
    search::sorted_ids(ids)
        .into_iter()
        .filter(|id| (DIALECT.storable)("op_id", id))
        .collect()
}

/// Marks the operations of the dead letters `ids` db-only and deletes their retry rows,
/// in the transaction `tx` read them in, locking operations before retry rows as
/// [`PostgresDb::apply`] does; how many retry rows were deleted.
async fn purge_listed(tx: &mut PgConnection, ids: &[String]) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query(MARK_DB_ONLY)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
    // By op_id, not by status again: a row replayed since the read above has had its
    // operation set aside all the same, and left behind it would wait for ever in a
    // queue whose join skips db-only operations.
    Ok(sqlx::query(DELETE_RETRIES)
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?
        .rows_affected())
}

/// The zone a libpq `options` string sets (`-c TimeZone=Asia/Shanghai`), if any.
fn session_zone(options: Option<&str>) -> Option<String> {
    options?
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("-c").unwrap_or(word).split_once('='))
        .find(|(key, _)| key.eq_ignore_ascii_case("timezone"))
        .map(|(_, zone)| zone.to_string())
}

#[cfg(test)]
mod tests;

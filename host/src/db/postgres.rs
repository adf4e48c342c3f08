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
    PgArgumentBuffer, PgConnectOptions, PgDatabaseError, PgHasArrayType, PgListener, PgPool,
    PgPoolOptions, PgRow, PgTypeInfo, PgValueFormat, Postgres,
};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Decode, Encode, Row, Transaction, Type, TypeInfo, ValueRef};
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
use super::shared_server::WakeHub;
use super::{Backlog, DeadLetter, Lease, Replay};
use tokio::sync::OwnedSemaphorePermit;

// PATH: the schema; the host crate points this at its own `sql/postgresql.sql`.
const SCHEMA: &str = include_str!("../../../sql/postgresql.sql");

/// Connections per pool: a worker needs one at a time, the rest serve inserts and status.
const POOL_SIZE: u32 = 5;
/// How long a call waits for a free connection (or a new one) before failing unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel the schema's insert trigger notifies.
const WAKE_CHANNEL: &str = "trustlog_operation";
/// How long the listener waits for a connection before counting the attempt failed; its
/// loop then tries again, so a short wait only makes the failure show sooner.
const LISTEN_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the longest wait before listening again after the listener failed.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Unix time of PostgreSQL's epoch, 2000-01-01T00:00:00Z, in microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// PostgreSQL's earliest timestamp, 4714-11-24T00:00:00Z BC, in Unix microseconds. Its
/// latest (294276 AD) lies beyond every `i64` of Unix microseconds.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

/// The columns of [`Operation`], in field order, from `operation o`; rows are mapped by
/// index with [`operation_at`].
macro_rules! operation_columns {
    () => {
        "o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, \
         o.response_body_hash, o.op_source, o.op_type, o.do_prefix, o.do_repository, \
         o.client_ip, o.server_ip, o.timestamp::timestamptz"
    };
}
const OPERATION_COLUMN_COUNT: usize = 13;

// The waiting-row queries repeat the partial index's predicate as a literal, not a bind,
// so the planner can prove the index applies to generic plans too; the row value makes
// the keyset bound a single index range in (timestamp, op_id) order, so no query sorts.

/// `scan_after(None, $1)`.
const SCAN_FROM_START: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $1"
);
/// Refreshes the planner's statistics when a fifth of the table (and at least 10,000
/// rows) changed since the last ANALYZE. Right after a bulk load, before autovacuum gets
/// to it, the planner takes the backlog for a few rows and sorts all of it for every
/// batch instead of walking `operation_waiting`: half the throughput at 100k rows, and
/// worse as the backlog grows. Every command that writes migrates first, so `serve`
/// starts with fresh statistics, and the scan checks again every
/// [`STATS_CHECK_EVERY`]: a table that grows from empty while `serve` runs (a stream
/// of inserts) looked empty to the last ANALYZE, and autovacuum may not come for a minute.
const ANALYZE_IF_STALE: &str = "DO $$ BEGIN \
     IF EXISTS (SELECT 1 FROM pg_stat_user_tables WHERE relid = 'operation'::regclass \
     AND n_mod_since_analyze > GREATEST(10000, n_live_tup / 5)) THEN ANALYZE operation; \
     END IF; END $$";
/// How often the scan checks whether the statistics went stale (a read of
/// pg_stat_user_tables; the ANALYZE itself runs only when they did).
const STATS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// `scan_after(Some(($1, $2)), $3)`.
const SCAN_AFTER: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) > ($1, $2) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $3"
);
/// `sweep_candidates(($1, $2), MIN, $3)`: every waiting row before the position.
const SWEEP: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < ($1, $2) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $3"
);
/// `sweep_candidates(($1, $2), $3, $4)`: one index range, from `since` up to the position
/// (the catch-up). The scalar bounds on the timestamp repeat the row value's for the
/// planner, which estimates a plain range from its histogram but a row comparison only
/// by rule of thumb: without them it took a narrow window for much of the table and
/// sorted it instead of walking the index.
const SWEEP_SINCE: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < ($1, $2) \
     AND o.timestamp >= $3 AND o.timestamp <= $1 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $4"
);
/// `has_waiting_since($1)`: whether any row stamped at or after `$1` waits for the scan
/// or the catch-up; an index probe that stops at the first.
/// In the index's order, like [`OLDEST_WAITING`], so the planner walks it from `$1`.
const WAITING_SINCE: &str = "SELECT 1 FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= $1 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// The earliest due time of the retry queue, by `trustlog_retry_due_order`.
const NEXT_RETRY_AT: &str = "SELECT MIN(next_retry_at)::timestamptz FROM ( \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'PENDING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'RETRYING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1)) AS due";
/// `backlog()`: rows waiting for their first delivery (from `operation_waiting`), retry
/// rows pending (from `trustlog_retry_due_order`), and the first due time.
const BACKLOG: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM operation o WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)), \
     (SELECT COUNT(*) FROM trustlog_retry WHERE retry_status IN ('PENDING', 'RETRYING')), (",
    "SELECT MIN(next_retry_at)::timestamptz FROM ( \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'PENDING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'RETRYING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1)) AS due",
    ")"
);
/// Creates a lease row, released, unless it exists.
const ENSURE_LEASE: &str = "INSERT INTO trustlog_lease (lease_key, holder, acquired_at, \
     renewed_at, expires_at, state) VALUES ($1, '', clock_timestamp(), clock_timestamp(), \
     clock_timestamp(), '') ON CONFLICT (lease_key) DO NOTHING";
/// A lease row as it stands, and whether it has expired by the server's clock.
const READ_LEASE: &str = "SELECT holder, acquired_at, renewed_at, expires_at, state, \
     expires_at < clock_timestamp() FROM trustlog_lease WHERE lease_key = $1";
/// Takes or renews a lease: `$1` key, `$2` holder, `$3` ttl in microseconds, `$4` state,
/// `$5` the holder it must still have, `$6` its expiry as read (compare-and-set on both;
/// expiries are whole microseconds, as bound, so the comparison is exact).
const CLAIM_LEASE: &str = "UPDATE trustlog_lease SET holder = $2, \
     acquired_at = CASE WHEN holder = $2 THEN acquired_at ELSE clock_timestamp() END, \
     renewed_at = clock_timestamp(), \
     expires_at = clock_timestamp() + $3 * INTERVAL '1 microsecond', state = $4 \
     WHERE lease_key = $1 AND holder = $5 AND expires_at = $6 \
     RETURNING acquired_at, renewed_at, expires_at";
/// Hands a lease back at once.
const RELEASE_LEASE: &str = "UPDATE trustlog_lease SET holder = '', state = '', \
     expires_at = clock_timestamp() WHERE lease_key = $1 AND holder = $2";
/// One status's due rows for [`DUE_RETRIES`]: a walk of `trustlog_retry_due_order` in
/// (due time, op_id) order, each row looking its operation up by primary key, stopping
/// at the limit.
macro_rules! due_of {
    ($status:literal) => {
        concat!(
            "(SELECT ",
            operation_columns!(),
            ", r.retry_count::int8, r.next_retry_at::timestamptz AS due \
             FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
             WHERE r.retry_status = '",
            $status,
            "' AND r.next_retry_at <= $1 AND o.trustlog_status = 'NOT_TRUSTLOGGED' \
             ORDER BY r.next_retry_at, r.op_id LIMIT $2)"
        )
    };
}
/// `due_retries($1, $2)`: the operation's columns, then `retry_count` (then the due time).
/// One ordered, limited branch per status, merged: a single range over both statuses
/// would have to sort every due row for every batch.
const DUE_RETRIES: &str = concat!(
    due_of!("PENDING"),
    " UNION ALL ",
    due_of!("RETRYING"),
    " ORDER BY due, op_id LIMIT $2"
);
/// The timestamp of the oldest waiting row with no retry row. Not MIN(): walking the
/// index in order stops at the first match, where MIN() over the NOT EXISTS filter would
/// visit every waiting row.
const OLDEST_WAITING: &str = "SELECT o.timestamp::timestamptz FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// Rows per status. Exact counts read every row (PostgreSQL keeps no row count); the
/// status is not indexed because each index slows the insert and the status update.
const COUNT_BY_STATUS: &str =
    "SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status";
/// Retry rows per status.
const COUNT_RETRIES_BY_STATUS: &str =
    "SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status";
/// Stores a batch: one array per column, unnested in input order, so of two equal op_ids
/// in one batch the first is stored and the second meets it as a conflict.
const INSERT: &str = "INSERT INTO operation (op_id, op_actor, doid, producer_id, \
     request_body_hash, response_body_hash, op_source, op_type, do_prefix, do_repository, \
     client_ip, server_ip, timestamp, trustlog_status) \
     SELECT u.*, $14 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
     $13::timestamptz[]) AS u \
     ON CONFLICT (op_id) DO NOTHING RETURNING op_id";
/// Marks waiting rows delivered.
const MARK_TRUSTLOGGED: &str = "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' \
     WHERE op_id = ANY($1) AND trustlog_status = 'NOT_TRUSTLOGGED'";
/// Inserts or overwrites retry rows; created_at is absent from the update list, so it
/// keeps the first failure's time.
const UPSERT_RETRIES: &str = "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, \
     last_retry_at, next_retry_at, error_message, created_at, updated_at) \
     SELECT u.*, $7, $7 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::timestamptz[], \
     $5::timestamptz[], $6::text[]) AS u \
     ON CONFLICT (op_id) DO UPDATE SET retry_count = excluded.retry_count, \
     retry_status = excluded.retry_status, last_retry_at = excluded.last_retry_at, \
     next_retry_at = excluded.next_retry_at, error_message = excluded.error_message, \
     updated_at = excluded.updated_at";
/// Deletes retry rows.
const DELETE_RETRIES: &str = "DELETE FROM trustlog_retry WHERE op_id = ANY($1)";
/// Moves a set cursor: `$1` the new value, `$2` the time, `$3` the key, `$4` the old value.
const MOVE_CURSOR: &str = "UPDATE trustlog_cursor SET cursor_value = $1, last_updated_at = $2 \
     WHERE cursor_key = $3 AND cursor_value = $4";
/// Sets a cursor with no position: a missing row is created; an existing one is taken
/// only while empty (the DO UPDATE's WHERE leaves a set cursor alone and reports no change).
const START_CURSOR: &str = "INSERT INTO trustlog_cursor (cursor_key, cursor_value, \
     last_updated_at) VALUES ($1, $2, $3) ON CONFLICT (cursor_key) DO UPDATE SET \
     cursor_value = excluded.cursor_value, last_updated_at = excluded.last_updated_at \
     WHERE trustlog_cursor.cursor_value = ''";
/// The columns of the tables named in `$1` in the current schema: table, column, type,
/// maximum length and collation (the database's where the column names none).
const COLUMNS: &str = "SELECT c.table_name::text, c.column_name::text, c.data_type::text, \
     c.character_maximum_length::int4, \
     CASE WHEN c.collation_name IS NOT NULL THEN c.collation_name::text \
          WHEN c.data_type IN ('character varying', 'text', 'character') \
          THEN (SELECT datcollate::text FROM pg_database WHERE datname = current_database()) END \
     FROM information_schema.columns c \
     WHERE c.table_schema = current_schema() AND c.table_name = ANY($1)";
/// One cursor's stored text.
const LOAD_CURSOR: &str = "SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = $1";
/// Rewrites a cursor value read in another form in trustlog's: `$1` the new text, `$2`
/// the key, `$3` the text read.
const REWRITE_CURSOR: &str =
    "UPDATE trustlog_cursor SET cursor_value = $1 WHERE cursor_key = $2 AND cursor_value = $3";
/// The columns of [`DeadLetter`], in field order, mapped by [`dead_letter_at`].
macro_rules! dead_letter_columns {
    () => {
        "r.op_id, o.timestamp::timestamptz, r.retry_count::int8, r.error_message, \
         r.created_at::timestamptz, r.updated_at::timestamptz, r.last_retry_at::timestamptz"
    };
}
/// `dead_letters(None, $1)`. op_id is COLLATE "C" in both tables: the order is byte order.
const DEAD_LETTERS_FROM_START: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' ORDER BY r.op_id LIMIT $1"
);
/// `dead_letters(Some($1), $2)`.
const DEAD_LETTERS_AFTER: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.op_id > $1 ORDER BY r.op_id LIMIT $2"
);
/// `replay_dead_letters(Replay::One($2), $1)`.
const REPLAY_ONE: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = $1, updated_at = $1 WHERE op_id = $2 AND retry_status = 'DEAD_LETTER'";
/// `replay_dead_letters(Replay::All, $1)`. One statement whatever the count: it locks
/// dead-letter rows only, which the workers' units of work leave alone, so it cannot
/// deadlock with them.
const REPLAY_ALL: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = $1, updated_at = $1 WHERE retry_status = 'DEAD_LETTER'";
/// The op_ids a purge before $1 takes, read without locks: the purge then locks their
/// operations before their retry rows, the order [`PostgresDb::apply`] locks in.
const PURGEABLE: &str = "SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at < $1 ORDER BY op_id";
/// Sets purged dead letters' operations aside as db-only, so nothing delivers them once
/// their retry rows are gone.
const MARK_DB_ONLY: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE op_id = ANY($1) AND trustlog_status = 'NOT_TRUSTLOGGED'";
/// A round trip through the pool.
const PING: &str = "SELECT 1";
/// The schema `operation` resolves to on this connection: the trigger's payload for it.
const OWN_SCHEMA: &str = "SELECT n.nspname::text FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = to_regclass('operation')";

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
        let replayed = match &which {
            Replay::One(op_id) => sqlx::query(REPLAY_ONE).bind(now).bind(op_id.as_str()),
            Replay::All => sqlx::query(REPLAY_ALL).bind(now),
        }
        .execute(&mut *self.conn().await?)
        .await
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
        if ids.is_empty() {
            tx.rollback().await.map_err(map_error)?;
            return Ok(0);
        }
        sqlx::query(MARK_DB_ONLY)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        // By op_id, not by status again: a row replayed since the read above has had its
        // operation set aside all the same, and left behind it would wait for ever in a
        // queue whose join skips db-only operations.
        let purged = sqlx::query(DELETE_RETRIES)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?
            .rows_affected();
        tx.commit().await.map_err(map_error)?;
        Ok(purged)
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

/// What the wake-up listener heard.
pub(super) enum Heard<'a> {
    /// It listens, for the first time or again after its connection was lost: rows
    /// committed meanwhile sent notifications nobody received. `schema` is the one
    /// `operation` resolves to on its connection.
    Listening { schema: Option<&'a str> },
    /// A notification; the trigger's payload names the schema inserted into.
    Notified { payload: &'a str },
}

/// Spawns a task that LISTENs on [`WAKE_CHANNEL`] for good and tells `heard` what it
/// hears; abort the handle to stop it. A failure is logged and listened on again,
/// with a backoff while that fails.
pub(super) fn spawn_wake_listener(
    options: PgConnectOptions,
    mut heard: impl FnMut(Heard<'_>) + Send + 'static,
) -> JoinHandle<()> {
    // A pool of its own with the same options (search_path included): the listener
    // holds its connection for good, which must not cost the workers one of theirs,
    // and `close()` must not wait for it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(LISTEN_ACQUIRE_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    tokio::spawn(async move {
        let mut backoff = LISTEN_BACKOFF_MIN;
        loop {
            let Err(error) = listen(&pool, &mut heard, &mut backoff).await;
            tracing::warn!(
                %error,
                retry_in = ?backoff,
                "PostgreSQL wake-up listener failed; listening again shortly"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        }
    })
}

/// LISTENs until the listener fails; resets `backoff` once listening.
async fn listen(
    pool: &PgPool,
    heard: &mut impl FnMut(Heard<'_>),
    backoff: &mut Duration,
) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Its pool is never closed; without this a close would end every receive.
    listener.ignore_pool_close_event(true);
    let schema: Option<String> = sqlx::query_scalar(OWN_SCHEMA)
        .fetch_optional(&mut listener)
        .await?;
    listener.listen(WAKE_CHANNEL).await?;
    *backoff = LISTEN_BACKOFF_MIN;
    tracing::debug!(
        channel = WAKE_CHANNEL,
        ?schema,
        "listening for new operations"
    );
    heard(Heard::Listening {
        schema: schema.as_deref(),
    });
    loop {
        match listener.try_recv().await? {
            Some(notification) => heard(Heard::Notified {
                payload: notification.payload(),
            }),
            None => {
                // PgListener has already reconnected and listens again.
                tracing::warn!(
                    channel = WAKE_CHANNEL,
                    "PostgreSQL wake-up listener lost its connection; listening again"
                );
                heard(Heard::Listening {
                    schema: schema.as_deref(),
                });
            }
        }
    }
}

/// A timestamp bound as PostgreSQL's `timestamptz`: microseconds since 2000-01-01 UTC.
///
/// Exact over every `i64` of Unix microseconds PostgreSQL can hold, which chrono's
/// `DateTime` (±262,143 years) is not; the encoding is the one sqlx uses for `DateTime`.
#[derive(Debug, Clone, Copy)]
struct PgTime(i64);

impl PgTime {
    /// A value to store; refused when PostgreSQL cannot hold it.
    fn stored(micros: Micros) -> Result<PgTime, String> {
        if micros < PG_MIN_MICROS {
            return Err(format!(
                "{micros} µs since the Unix epoch is before 4714-11-24T00:00:00Z BC, \
                 the earliest timestamp PostgreSQL stores"
            ));
        }
        Ok(PgTime(micros - PG_EPOCH_MICROS))
    }

    /// A bound to compare with: an instant before PostgreSQL's range is `-infinity`,
    /// which sorts before every stored value just as the instant would.
    fn bound(micros: Micros) -> PgTime {
        PgTime::stored(micros).unwrap_or(PgTime(i64::MIN))
    }
}

impl Type<Postgres> for PgTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for PgTime {
    fn array_type_info() -> PgTypeInfo {
        <DateTime<Utc> as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for PgTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.0, buf)
    }

    fn size_hint(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

/// The Unix microseconds of the `timestamptz` in column `index` of `row`.
///
/// Decoded from the wire by hand: sqlx's chrono decoding panics on `infinity` and on
/// years chrono cannot represent, both of which a row written by hand may hold.
fn micros_at(row: &PgRow, index: usize) -> Result<Micros, DbError> {
    let value = row.try_get_raw(index).map_err(map_error)?;
    let type_info = value.type_info().into_owned();
    let bad =
        |what: String| DbError::Other(format!("column {index} ({}): {what}", type_info.name()));
    // A `timestamp` without time zone comes cast by the query (`::timestamptz`), so the
    // session's zone applies; read raw, it would be taken as UTC whatever the zone.
    if !<PgTime as Type<Postgres>>::compatible(&type_info) {
        return Err(bad("expected a TIMESTAMPTZ".to_string()));
    }
    if value.is_null() {
        return Err(bad("unexpected NULL".to_string()));
    }
    if value.format() != PgValueFormat::Binary {
        return Err(bad("expected the binary format".to_string()));
    }
    let pg = <i64 as Decode<Postgres>>::decode(value).map_err(|e| bad(e.to_string()))?;
    if pg == i64::MIN || pg == i64::MAX {
        return Err(bad("the timestamp is infinite".to_string()));
    }
    pg.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
        bad(format!(
            "{pg} µs after 2000-01-01 is beyond the range of i64 Unix microseconds"
        ))
    })
}

/// `trustlog_retry` rows as the arrays [`UPSERT_RETRIES`] binds.
struct RetryColumns {
    op_id: Vec<String>,
    retry_count: Vec<i64>,
    retry_status: Vec<&'static str>,
    last_retry_at: Vec<Option<PgTime>>,
    next_retry_at: Vec<Option<PgTime>>,
    error_message: Vec<String>,
    now: PgTime,
}

impl RetryColumns {
    /// The columns of `retries`, written at `now`.
    fn new(retries: Vec<RetryUpdate>, now: PgTime) -> Result<RetryColumns, DbError> {
        // One statement cannot update a row twice; the last update of an op_id wins, as
        // it would applied one after the other.
        let mut seen = HashSet::new();
        let mut retries: Vec<RetryUpdate> = retries
            .into_iter()
            .rev()
            .filter(|r| seen.insert(r.op_id.clone()))
            .collect();
        retries.reverse();
        let time = |field: &'static str, micros: Option<Micros>, op_id: &str| {
            micros
                .map(|m| {
                    PgTime::stored(m).map_err(|message| {
                        DbError::Invalid(FieldError::new(
                            field,
                            format!("op_id {op_id:?}: {message}"),
                        ))
                    })
                })
                .transpose()
        };
        let mut columns = RetryColumns {
            op_id: Vec::with_capacity(retries.len()),
            retry_count: Vec::with_capacity(retries.len()),
            retry_status: Vec::with_capacity(retries.len()),
            last_retry_at: Vec::with_capacity(retries.len()),
            next_retry_at: Vec::with_capacity(retries.len()),
            error_message: Vec::with_capacity(retries.len()),
            now,
        };
        for r in retries {
            columns
                .last_retry_at
                .push(time("last_retry_at", r.last_retry_at, &r.op_id)?);
            columns
                .next_retry_at
                .push(time("next_retry_at", r.next_retry_at, &r.op_id)?);
            columns.retry_count.push(i64::from(r.retry_count));
            columns.retry_status.push(r.retry_status.as_str());
            columns.error_message.push(r.error_message);
            columns.op_id.push(r.op_id);
        }
        Ok(columns)
    }
}

/// The [`Operation`] in the first [`OPERATION_COLUMN_COUNT`] columns of `row`.
fn operation_at(row: &PgRow) -> Result<Result<Operation, RowFault>, DbError> {
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
            timestamp: micros_at(row, 12).map_err(|e| super::fault(&op_id, "timestamp", e))?,
            op_id: op_id.clone(),
        })
    };
    Ok(read())
}

/// Like [`micros_at`], for a nullable column.
fn optional_micros_at(row: &PgRow, index: usize) -> Result<Option<Micros>, DbError> {
    if row.try_get_raw(index).map_err(map_error)?.is_null() {
        return Ok(None);
    }
    micros_at(row, index).map(Some)
}

/// The [`DeadLetter`] in the columns `dead_letter_columns!` lists.
fn dead_letter_at(row: &PgRow) -> Result<DeadLetter, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let count: i64 = row.try_get(2).map_err(map_error)?;
    let retry_count = u32::try_from(count)
        .map_err(|_| DbError::Other(format!("retry_count {count} of {op_id:?} is out of range")))?;
    let error_message: Option<String> = row.try_get(3).map_err(map_error)?;
    Ok(DeadLetter {
        timestamp: micros_at(row, 1).ok(),
        retry_count,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_at(row, 4)?,
        updated_at: micros_at(row, 5)?,
        last_retry_at: optional_micros_at(row, 6)?,
        op_id,
    })
}

/// The `COUNT(*)` in column 1 of `row`.
fn count_at(row: &PgRow) -> Result<u64, DbError> {
    count_in(row, 1)
}

/// The count in column `index`.
fn count_in(row: &PgRow, index: usize) -> Result<u64, DbError> {
    let count: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(count).map_err(|_| DbError::Other(format!("negative count {count}")))
}

/// The zone a libpq `options` string sets (`-c TimeZone=Asia/Shanghai`), if any.
fn session_zone(options: Option<&str>) -> Option<String> {
    options?
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("-c").unwrap_or(word).split_once('='))
        .find(|(key, _)| key.eq_ignore_ascii_case("timezone"))
        .map(|(_, zone)| zone.to_string())
}

/// The field of an [`DbError::Invalid`] whose column PostgreSQL did not name.
const UNKNOWN_FIELD: &str = "value";

/// Names the field behind an insert's "value too long" or NUL-byte refusal, which
/// PostgreSQL reports by type only ("value too long for type character varying(64)").
fn blame_operation_field(ops: &[Operation], error: DbError) -> DbError {
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
const CHECKED_FIELDS: &[(&str, &str)] = &[
    ("operation_trustlog_status_value", "trustlog_status"),
    ("trustlog_retry_retry_status_value", "retry_status"),
];

/// The key value of a unique violation on op_id: "Key (op_id)=(op-1) already exists."
fn conflicting_op_id(detail: &str) -> Option<String> {
    detail
        .strip_prefix("Key (op_id)=(")?
        .strip_suffix(") already exists.")
        .map(str::to_string)
}

/// SQLSTATEs worth retrying: the server is going away, overloaded or timed out, or the
/// transaction lost a lock race it will win next time.
fn is_transient(code: &str) -> bool {
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
fn map_error(error: sqlx::Error) -> DbError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_fixtures::*;
    use sqlx::{Connection, Executor, PgConnection};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;
    use trustlog_guest::model::RetryStatus;

    /// The server every test uses; each test works in a schema of its own.
    fn admin_url() -> String {
        std::env::var("TRUSTLOG_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    async fn admin() -> PgConnection {
        let url = admin_url();
        PgConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is unreachable ({e}); these tests need a running server \
                 (set TRUSTLOG_TEST_POSTGRES_URL to point elsewhere)"
            )
        })
    }

    /// A schema of the test's own, dropped with everything in it when this is dropped.
    struct TestSchema {
        name: String,
    }

    impl TestSchema {
        async fn new() -> TestSchema {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let name = format!(
                "trustlog_t_{}_{nanos}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let mut admin = admin().await;
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                .await
                .unwrap();
            TestSchema { name }
        }

        /// The admin URL with this schema as the search_path; also the application_name,
        /// so a test can find its own sessions in pg_stat_activity.
        fn url(&self) -> String {
            let base = admin_url();
            let sep = if base.contains('?') { '&' } else { '?' };
            format!(
                "{base}{sep}options=-c%20search_path%3D{0}&application_name={0}",
                self.name
            )
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            // Drop cannot await, and the test's runtime may be shutting down: a thread
            // with a runtime of its own drops the schema.
            let (name, url) = (self.name.clone(), admin_url());
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut conn = PgConnection::connect(&url).await?;
                    conn.execute("SET lock_timeout = '10s'").await?;
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .await?;
                    Ok::<_, sqlx::Error>(())
                })
            })
            .join();
            if let Ok(Err(e)) = dropped {
                eprintln!("could not drop test schema {}: {e}", self.name);
            }
        }
    }

    /// A migrated adapter in a fresh schema; keep the `TestSchema` alive for the test.
    async fn fresh() -> (TestSchema, PostgresDb) {
        let schema = TestSchema::new().await;
        let db = PostgresDb::connect(&schema.url()).await.unwrap();
        db.migrate().await.unwrap();
        (schema, db)
    }

    async fn status_of(db: &PostgresDb, id: &str) -> String {
        sqlx::query_scalar("SELECT trustlog_status::text FROM operation WHERE op_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    }

    /// The `timestamptz` in column `index` of `row`, or `None` for NULL.
    fn optional_micros_at(row: &PgRow, index: usize) -> Option<Micros> {
        let null = row.try_get_raw(index).unwrap().is_null();
        (!null).then(|| micros_at(row, index).unwrap())
    }

    /// Every retry row as (op_id, retry_count, retry_status, next_retry_at, created_at, updated_at).
    async fn retry_rows(db: &PostgresDb) -> Vec<(String, i64, String, Option<i64>, i64, i64)> {
        sqlx::query(
            "SELECT op_id::text, retry_count, retry_status::text, next_retry_at, created_at, \
             updated_at FROM trustlog_retry ORDER BY op_id",
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
                optional_micros_at(r, 3),
                micros_at(r, 4).unwrap(),
                micros_at(r, 5).unwrap(),
            )
        })
        .collect()
    }

    async fn fetch_all_waiting(db: &PostgresDb) -> Vec<Operation> {
        db.scan_after(None, u32::MAX).await.unwrap().rows
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_of_one_schema_all_succeed() {
        let schema = TestSchema::new().await;
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(PostgresDb::connect(&schema.url()).await.unwrap());
        }
        for round in 0..2 {
            let tasks: Vec<_> = dbs
                .iter()
                .map(|db| {
                    let db = db.clone();
                    tokio::spawn(async move { db.migrate().await })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap(), Ok(()), "round {round}");
            }
        }
        dbs[0]
            .insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert_eq!(fetch_all_waiting(&dbs[3]).await, vec![op("a", 1)]);
    }

    #[tokio::test]
    async fn connect_works_in_the_schema_of_the_url_and_a_failed_migration_leaks_nothing() {
        let (schema, db) = fresh().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
        )
        .bind(&schema.name)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            tables,
            [
                "operation",
                "trustlog_cursor",
                "trustlog_lease",
                "trustlog_retry"
            ]
        );
        let collation: String = sqlx::query_scalar(
            "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'operation' AND column_name = 'op_id'",
        )
        .bind(&schema.name)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(collation, "C");

        // A search_path naming no existing schema: the script fails inside its own
        // transaction, and the connection it failed on must not come back aborted.
        let base = admin_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let app = format!("{}_nowhere", schema.name);
        let missing = format!(
            "{base}{sep}options=-c%20search_path%3D{}_missing&application_name={app}",
            schema.name
        );
        let nowhere = PostgresDb::connect(&missing).await.unwrap();
        match nowhere.migrate().await {
            Err(DbError::Other(m)) => assert!(m.contains("schema"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The pool returns a connection in the background; give it the time to.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let aborted: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'idle in transaction (aborted)'",
        )
        .bind(&app)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(aborted, 0);
        for _ in 0..POOL_SIZE {
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&nowhere.pool)
                .await
                .unwrap();
            assert_eq!(one, 1);
        }
        nowhere.close().await;
    }

    #[tokio::test]
    async fn chinese_utf8_text_round_trips() {
        let (_schema, db) = fresh().await;
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
    async fn op_ids_sort_by_their_bytes_like_positions_do() {
        let (_schema, db) = fresh().await;
        // Under a linguistic collation "a" < "B" and "é" sorts next to "e".
        let ids = ["B", "a", "e", "é", "z", "Z", "操", "🙂", "a-1", "a_1", "a1"];
        db.insert(
            ids.iter().map(|id| op(id, 1)).collect(),
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        let mut expected: Vec<Position> = ids.iter().map(|id| pos(1, id)).collect();
        expected.sort();
        let scanned: Vec<Position> = fetch_all_waiting(&db)
            .await
            .iter()
            .map(Operation::position)
            .collect();
        assert_eq!(scanned, expected);
        // And the keyset bound agrees: after each position comes exactly the rest.
        for (i, p) in expected.iter().enumerate() {
            let after: Vec<Position> = db
                .scan_after(Some(p.clone()), 100)
                .await
                .unwrap()
                .rows
                .iter()
                .map(Operation::position)
                .collect();
            assert_eq!(after, expected[i + 1..], "after {p:?}");
        }
    }

    #[tokio::test]
    async fn the_ends_of_postgresql_s_range_are_stored_as_such_and_bound_the_keyset_queries() {
        let (_schema, db) = fresh().await;
        let stamps = [
            PG_MIN_MICROS,           // 4714-11-24T00:00:00Z BC, PostgreSQL's first instant
            -62_135_596_800_000_001, // a microsecond before 0001-01-01
            -30_610_224_000_000_000, // 1000-01-01T00:00:00Z
            -1,
            0,
            1,
            1_795_515_834_123_456,     // 2026-11-24T10:23:54.123456Z
            4_102_444_800_000_001,     // 2100-01-01 and a microsecond
            253_402_300_799_999_999,   // 9999-12-31T23:59:59.999999Z
            8_210_266_876_799_999_999, // +262142-12-31T23:59:59.999999Z, chrono's last
            i64::MAX,                  // beyond chrono, within PostgreSQL
        ];
        let ops: Vec<Operation> = stamps
            .iter()
            .enumerate()
            .map(|(i, t)| op(&format!("t{i:02}"), *t))
            .collect();
        db.insert(ops, TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let text: String = sqlx::query_scalar(
            "SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
             FROM operation WHERE op_id = 't08'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(text, "9999-12-31T23:59:59.999999");

        // Keyset bounds at the extremes, and below PostgreSQL's range.
        for (bound, expected_first) in [
            (pos(i64::MIN, ""), Some("t00")),
            (pos(PG_MIN_MICROS - 1, "zzz"), Some("t00")),
            (pos(PG_MIN_MICROS, "t00"), Some("t01")),
            (pos(i64::MAX, "t10"), None),
        ] {
            let first = db.scan_after(Some(bound.clone()), 1).await.unwrap().rows;
            assert_eq!(
                first.first().map(|o| o.op_id.as_str()),
                expected_first,
                "after {bound:?}"
            );
        }
        assert!(
            db.sweep_candidates(pos(PG_MIN_MICROS - 1, "t00"), i64::MIN, 10)
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        assert_eq!(
            db.sweep_candidates(pos(i64::MAX, "t10"), i64::MIN, 100)
                .await
                .unwrap()
                .rows
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn timestamps_before_postgresql_s_range_are_invalid_and_store_nothing() {
        let (_schema, db) = fresh().await;
        for t in [i64::MIN, PG_MIN_MICROS - 1] {
            match db
                .insert(
                    vec![op("fine", 1), op("early", t)],
                    TrustlogStatus::NotTrustlogged,
                )
                .await
            {
                Err(DbError::Invalid(FieldError { field, message })) => {
                    assert_eq!(field, "timestamp");
                    assert!(message.contains("\"early\""), "{message}");
                }
                other => panic!("{t}: {other:?}"),
            }
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
        let mut early = retry("fine", RetryStatus::Pending, Some(i64::MIN));
        early.last_retry_at = None;
        match db
            .apply(UnitOfWork {
                now: 1,
                retries: vec![early],
                ..UnitOfWork::default()
            })
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "next_retry_at"),
            other => panic!("{other:?}"),
        }
        match db
            .apply(UnitOfWork {
                now: i64::MIN,
                cursor: move_cursor(None, pos(1, "a")),
                ..UnitOfWork::default()
            })
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "now"),
            other => panic!("{other:?}"),
        }
        assert_eq!(db.load_cursor(DEFAULT_KEY).await.unwrap(), None);
    }

    #[tokio::test]
    async fn timestamps_agree_with_sqlx_s_chrono_mapping() {
        let (_schema, db) = fresh().await;
        // A spread of instants over chrono's range, from a fixed-seed LCG.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut stamps = vec![PG_MIN_MICROS, -1, 0, 1, 8_210_266_876_799_999_999];
        for _ in 0..500 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let span = (8_210_266_876_799_999_999 - PG_MIN_MICROS) as u64;
            stamps.push(PG_MIN_MICROS + (state % span) as i64);
        }
        let ops: Vec<Operation> = stamps
            .iter()
            .enumerate()
            .map(|(i, t)| op(&format!("r{i:04}"), *t))
            .collect();
        db.insert(ops.clone(), TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let rows = sqlx::query("SELECT op_id::text, timestamp FROM operation ORDER BY op_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows.len(), ops.len());
        for (row, o) in rows.iter().zip(&ops) {
            let via_chrono: DateTime<Utc> = row.get(1);
            assert_eq!(via_chrono.timestamp_micros(), o.timestamp, "{}", o.op_id);
            assert_eq!(micros_at(row, 1).unwrap(), o.timestamp, "{}", o.op_id);
        }
        // And a value written by sqlx's chrono mapping reads back the same way.
        let at = DateTime::from_timestamp_micros(1_795_515_834_123_456).unwrap();
        let row = sqlx::query("SELECT $1::timestamptz")
            .bind(at)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(micros_at(&row, 0).unwrap(), 1_795_515_834_123_456);
    }

    #[tokio::test]
    async fn infinite_or_unrepresentable_stored_timestamps_are_row_faults_not_panics() {
        let (_schema, db) = fresh().await;
        for (id, stamp) in [("inf", "infinity"), ("far", "294276-12-31 23:59:59+00")] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, \
                 op_type, do_prefix, do_repository, timestamp) \
                 VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', '{stamp}')"
            )))
            .execute(&db.pool)
            .await
            .unwrap();
            let fetched = db.scan_after(None, 10).await.unwrap();
            assert!(fetched.rows.is_empty(), "{stamp}: {fetched:?}");
            match &fetched.faults[..] {
                [f] => {
                    assert_eq!((f.op_id.as_str(), f.column.as_str()), (id, "timestamp"));
                    assert!(f.message.contains("column 12"), "{}", f.message);
                }
                other => panic!("{stamp}: {other:?}"),
            }
            sqlx::query("DELETE FROM operation")
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn apply_with_one_op_id_twice_in_its_retries_keeps_the_last() {
        let (_schema, db) = fresh().await;
        let mut last = retry("a", RetryStatus::DeadLetter, None);
        last.retry_count = 5;
        db.apply(UnitOfWork {
            now: 100,
            retries: vec![
                retry("a", RetryStatus::Pending, Some(160)),
                retry("b", RetryStatus::Pending, Some(170)),
                last,
            ],
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        assert_eq!(
            retry_rows(&db).await,
            vec![
                (
                    "a".to_string(),
                    5,
                    "DEAD_LETTER".to_string(),
                    None,
                    100,
                    100
                ),
                (
                    "b".to_string(),
                    1,
                    "PENDING".to_string(),
                    Some(170),
                    100,
                    100
                ),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compare_and_set_blocked_on_the_winner_s_row_lock_loses_after_its_commit() {
        let (schema, one) = fresh().await;
        let two = PostgresDb::connect(&schema.url()).await.unwrap();
        one.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        one.apply(UnitOfWork {
            now: 1,
            cursor: move_cursor(None, pos(1, "a")),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        // The winner holds the cursor row's lock in an open transaction...
        let mut winner = one.pool.begin().await.unwrap();
        let moved = sqlx::query(MOVE_CURSOR)
            .bind(format_position(&pos(2, "b")))
            .bind(PgTime::bound(2))
            .bind(DEFAULT_KEY)
            .bind(format_position(&pos(1, "a")))
            .execute(&mut *winner)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(moved, 1);
        // ...so the loser's identical move waits on it rather than failing at once...
        let loser = tokio::spawn(async move {
            two.apply(UnitOfWork {
                now: 3,
                trustlogged: vec!["b".into()],
                cursor: move_cursor(Some(pos(1, "a")), pos(2, "b")),
                ..UnitOfWork::default()
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !loser.is_finished(),
            "the second CAS did not wait for the row lock"
        );
        // ...and re-reads the row once the winner commits: the value moved, so it loses.
        winner.commit().await.unwrap();
        assert_eq!(
            loser.await.unwrap(),
            Err(DbError::CursorMoved(DEFAULT_KEY.to_string()))
        );
        assert_eq!(status_of(&one, "b").await, "NOT_TRUSTLOGGED");
    }

    #[tokio::test]
    async fn an_op_id_over_64_characters_is_invalid_and_nothing_of_the_batch_is_stored() {
        let (_schema, db) = fresh().await;
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
                assert!(message.contains("value too long"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
        // 64 characters fit, and they are characters, not bytes: 64 Chinese ones too.
        let wide = "操".repeat(64);
        assert_eq!(
            db.insert(
                vec![op(&"x".repeat(64), 1), op(&wide, 1)],
                TrustlogStatus::NotTrustlogged
            )
            .await
            .unwrap(),
            vec![InsertOutcome::Inserted; 2]
        );
        // A too-long retry op_id is named too.
        match db
            .apply(UnitOfWork {
                now: 1,
                retries: vec![retry(&long, RetryStatus::Pending, Some(2))],
                ..UnitOfWork::default()
            })
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "op_id"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn other_too_long_or_nul_values_name_their_field() {
        let (_schema, db) = fresh().await;
        let mut ops = vec![op("a", 1), op("b", 2)];
        ops[1].op_source = "s".repeat(65);
        ops[1].doid = "d".repeat(513);
        match db.insert(ops, TrustlogStatus::NotTrustlogged).await {
            // PostgreSQL checks columns in table order: doid (512) comes first.
            Err(DbError::Invalid(FieldError { field, message })) => {
                assert_eq!(field, "doid", "{message}");
                assert!(message.contains("\"b\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let mut nul = op("c", 3);
        nul.server_ip = Some("192.0.2.1\0".to_string());
        match db.insert(vec![nul], TrustlogStatus::NotTrustlogged).await {
            Err(DbError::Invalid(FieldError { field, message })) => {
                assert_eq!(field, "server_ip", "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn constraint_violations_map_to_conflict_and_invalid() {
        let (_schema, db) = fresh().await;
        db.insert(vec![op("op-1", 1)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        let plain_insert = |id: &str, status: &str| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
                 do_prefix, do_repository, timestamp, trustlog_status) \
                 VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', now(), '{status}')"
            )))
        };
        let err = plain_insert("op-1", "TRUSTLOGGED")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert_eq!(map_error(err), DbError::Conflict("op-1".to_string()));
        let err = plain_insert("op-2", "LOST")
            .execute(&db.pool)
            .await
            .unwrap_err();
        match map_error(err) {
            DbError::Invalid(FieldError { field, message }) => {
                assert_eq!(field, "trustlog_status");
                assert!(
                    message.contains("operation_trustlog_status_value"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let err = sqlx::query("INSERT INTO operation (op_id) VALUES ('op-3')")
            .execute(&db.pool)
            .await
            .unwrap_err();
        match map_error(err) {
            DbError::Invalid(FieldError { field, .. }) => assert_eq!(field, "op_actor"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_lock_timeout_is_unavailable() {
        let (_schema, db) = fresh().await;
        db.apply(UnitOfWork {
            now: 1,
            cursor: move_cursor(None, pos(1, "a")),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        let mut holder = db.pool.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM trustlog_cursor FOR UPDATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut impatient = db.pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = '50ms'")
            .execute(&mut *impatient)
            .await
            .unwrap();
        let err = sqlx::query("UPDATE trustlog_cursor SET cursor_value = ''")
            .execute(&mut *impatient)
            .await
            .unwrap_err();
        match map_error(err) {
            DbError::Unavailable(m) => assert!(m.contains("55P03"), "{m}"),
            other => panic!("{other:?}"),
        }
        holder.rollback().await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        // Port 1 on the loopback: refused at once. The pool retries a refused connection
        // until its acquire timeout, so this takes about that long.
        match PostgresDb::connect("postgres://postgres@127.0.0.1:1/test").await {
            Err(DbError::Unavailable(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    /// Waits for one wake-up, at most `within`.
    async fn woken(wake: &Notify, within: Duration) -> bool {
        tokio::time::timeout(within, wake.notified()).await.is_ok()
    }

    /// Inserts one row over a plain connection of its own, as an application would.
    async fn insert_by_hand(schema: &TestSchema, id: &str) {
        let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', clock_timestamp())"
        )))
        .await
        .unwrap();
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_insert_from_any_client_wakes_the_listener() {
        let (schema, db) = fresh().await;
        let wake = Arc::new(Notify::new());
        let listener = db.spawn_listener(wake.clone());
        assert!(
            woken(&wake, Duration::from_secs(10)).await,
            "never listened"
        );
        // Nothing else wakes it: other tests insert into schemas of their own.
        assert!(!woken(&wake, Duration::from_millis(300)).await);

        let started = Instant::now();
        insert_by_hand(&schema, "by-hand").await;
        assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
        println!("wake-up {:?} after the insert began", started.elapsed());

        // The adapter's own inserts wake it too, once per statement.
        db.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
        assert!(woken(&wake, Duration::from_secs(1)).await);
        listener.abort();
    }

    #[tokio::test]
    async fn the_listener_listens_again_after_its_backend_is_terminated() {
        let (schema, db) = fresh().await;
        let wake = Arc::new(Notify::new());
        let listener = db.spawn_listener(wake.clone());
        assert!(
            woken(&wake, Duration::from_secs(10)).await,
            "never listened"
        );

        let listening_backends = || async {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_stat_activity \
                 WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&schema.name)
            .fetch_all(&db.pool)
            .await
            .unwrap()
        };
        let before = listening_backends().await;
        assert_eq!(before.len(), 1, "{before:?}");
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(before[0])
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert!(terminated);

        // Listening again wakes it (a row may have come in unannounced meanwhile)...
        assert!(
            woken(&wake, Duration::from_secs(10)).await,
            "did not listen again"
        );
        let after = listening_backends().await;
        assert_eq!(after.len(), 1, "{after:?}");
        assert_ne!(after, before);
        // ...and a later insert wakes it as before.
        insert_by_hand(&schema, "after-terminate").await;
        assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
        listener.abort();
    }

    /// A TCP proxy to the test server that can go down (dropping every connection through
    /// it and refusing new ones) and come back on the same port.
    struct Proxy {
        port: u16,
        tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Proxy {
        async fn start() -> Proxy {
            let proxy = Proxy {
                port: 0,
                tasks: Arc::default(),
            };
            proxy.serve(0).await
        }

        async fn serve(self, port: u16) -> Proxy {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let upstream = PgConnectOptions::from_str(&admin_url()).unwrap();
            let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
            let tasks = self.tasks.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    tasks.lock().unwrap().push(relay.abort_handle());
                }
            });
            self.tasks.lock().unwrap().push(accept.abort_handle());
            Proxy { port, ..self }
        }

        /// Drops every connection and the listening socket.
        fn stop(&self) {
            for task in self.tasks.lock().unwrap().drain(..) {
                task.abort();
            }
        }

        /// The URL of `schema` through this proxy.
        fn url(&self, schema: &TestSchema) -> String {
            let direct = PgConnectOptions::from_str(&admin_url()).unwrap();
            schema.url().replacen(
                &format!("{}:{}", direct.get_host(), direct.get_port()),
                &format!("127.0.0.1:{}", self.port),
                1,
            )
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_listener_outlives_a_server_outage_longer_than_a_reconnect() {
        let (schema, _db) = fresh().await;
        let proxy = Proxy::start().await;
        let url = proxy.url(&schema);
        assert_ne!(url, schema.url());
        let through_proxy = PostgresDb::connect(&url).await.unwrap();
        let wake = Arc::new(Notify::new());
        let listener = through_proxy.spawn_listener(wake.clone());
        assert!(
            woken(&wake, Duration::from_secs(10)).await,
            "never listened"
        );

        // Down for longer than the listener waits for a connection, so it gives up on
        // this one and starts over; a row comes in meanwhile.
        proxy.stop();
        tokio::time::sleep(LISTEN_ACQUIRE_TIMEOUT + Duration::from_millis(500)).await;
        insert_by_hand(&schema, "during-outage").await;
        assert!(!woken(&wake, Duration::from_millis(200)).await);
        let proxy = proxy.serve(url_port(&url)).await;

        // Back: it listens again and wakes for the row it could not hear of...
        assert!(
            woken(&wake, Duration::from_secs(10)).await,
            "did not listen again"
        );
        // ...and hears of the next one.
        insert_by_hand(&schema, "after-outage").await;
        assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
        listener.abort();
        proxy.stop();
    }

    fn url_port(url: &str) -> u16 {
        PgConnectOptions::from_str(url).unwrap().get_port()
    }

    /// The plan of `sql`, run as a prepared statement with `args`, one line per node;
    /// `generic` asks for the plan made without the values, which a prepared statement
    /// switches to after five runs when it is no costlier.
    async fn plan_of(
        conn: &mut PgConnection,
        sql: &str,
        types: &str,
        args: &str,
        generic: bool,
    ) -> String {
        let mode = if generic {
            "force_generic_plan"
        } else {
            "force_custom_plan"
        };
        let prepare = if types.is_empty() {
            format!("PREPARE plan_me AS {sql}")
        } else {
            format!("PREPARE plan_me ({types}) AS {sql}")
        };
        let explain = if args.is_empty() {
            "EXPLAIN EXECUTE plan_me".to_string()
        } else {
            format!("EXPLAIN EXECUTE plan_me ({args})")
        };
        conn.execute(sqlx::AssertSqlSafe(format!(
            "SET plan_cache_mode = {mode}; {prepare}"
        )))
        .await
        .unwrap();
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        conn.execute("DEALLOCATE plan_me").await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Loads 100k waiting rows from another connection, past any ANALYZE, and waits until
    /// the statistics collector has counted them; returns a connection for EXPLAIN.
    async fn load_100k_unanalyzed(schema: &TestSchema) -> PgConnection {
        let mut loader = PgConnection::connect(&schema.url()).await.unwrap();
        loader
            .execute(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
                 do_prefix, do_repository, timestamp) \
                 SELECT 'op-' || lpad(i::text, 6, '0'), 'a', 'd', 'p', 'IRP', 'Create', '10.1', \
                 'r', timestamptz '2026-11-24 10:00:00+00' + i * interval '1 microsecond' \
                 FROM generate_series(1, 100000) i",
            )
            .await
            .unwrap();
        // A backend hands its counts to the shared statistics when it exits.
        loader.close().await.unwrap();
        let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let changed: Option<i64> = sqlx::query_scalar(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'operation'::regclass",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if changed.unwrap_or(0) >= 100_000 || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        conn
    }

    const PLAN_TYPES: &str = "timestamptz, text, int8";
    const PLAN_ARGS: &str = "'2026-11-24 10:00:00.05+00', 'op-050000', 100";

    #[tokio::test]
    async fn start_up_after_a_bulk_load_refreshes_statistics_so_scans_walk_the_index() {
        let (schema, db) = fresh().await;
        let mut conn = load_100k_unanalyzed(&schema).await;
        let before = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
        println!("before start-up:\n{before}");

        db.migrate().await.unwrap();
        let after = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
        assert!(after.contains("using operation_waiting"), "{after}");
        assert!(!after.contains("Sort"), "{after}");
    }

    #[tokio::test]
    async fn a_table_that_grows_while_serving_gets_fresh_statistics_from_the_scan() {
        // Migrated while empty, as a new deployment is; then a stream of inserts.
        let (schema, db) = fresh().await;
        let mut conn = load_100k_unanalyzed(&schema).await;
        let before = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
        println!("while the statistics say empty:\n{before}");

        assert_eq!(db.scan_after(None, 100).await.unwrap().rows.len(), 100);
        // The refresh runs beside the scan, not in its way; it lands within moments.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let after = loop {
            let plan = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
            let walks = plan.contains("using operation_waiting") && !plan.contains("Sort");
            if walks || std::time::Instant::now() > deadline {
                break plan;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(after.contains("using operation_waiting"), "{after}");
        assert!(!after.contains("Sort"), "{after}");
    }

    #[tokio::test]
    async fn a_retry_batch_reads_only_its_own_rows_however_many_are_due() {
        // 20,000 rows due at one instant, as `dead-letters replay --all` leaves them: a
        // batch must walk the index to its limit, not sort all of them.
        let (schema, _db) = fresh().await;
        let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
        conn.execute(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             SELECT 'op-' || lpad(i::text, 6, '0'), 'a', 'd', 'p', 'IRP', 'Create', '10.1', \
             'r', timestamptz '2026-11-24 10:00:00+00' + i * interval '1 microsecond' \
             FROM generate_series(1, 20000) i; \
             INSERT INTO trustlog_retry (op_id, retry_count, retry_status, next_retry_at, \
             error_message, created_at, updated_at) \
             SELECT op_id, 0, CASE WHEN op_id < 'op-010000' THEN 'PENDING' ELSE 'RETRYING' END, \
             timestamptz '2026-11-24 11:00:00+00', 'down', now(), now() FROM operation; \
             ANALYZE",
        )
        .await
        .unwrap();
        for generic in [false, true] {
            let plan = plan_of(
                &mut conn,
                DUE_RETRIES,
                "timestamptz, int8",
                "'2026-11-24 12:00:00+00', 100",
                generic,
            )
            .await;
            println!("due retries, 20,000 due (generic: {generic}):\n{plan}");
            assert!(
                plan.contains("Index Scan using trustlog_retry_due_order"),
                "{plan}"
            );
            assert!(
                !plan.lines().any(|l| l.trim_start().starts_with("->  Sort")),
                "{plan}"
            );
        }
    }

    #[tokio::test]
    async fn the_queries_use_their_indexes_without_sorting() {
        let (schema, db) = fresh().await;
        let base = 1_795_515_834_000_000;
        db.insert(
            (0..10_000)
                .map(|i| op(&format!("op-{i:05}"), base + i * 1_000))
                .collect(),
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        // A relay part way through a backlog: the first rows delivered, some waiting for
        // retries, the cursor at op-05000.
        db.apply(UnitOfWork {
            now: base,
            trustlogged: (0..2_000).map(|i| format!("op-{i:05}")).collect(),
            // Of the retry rows most are dead letters or not yet due.
            retries: (2_000..3_000)
                .map(|i| match i {
                    2_000..2_800 => retry(&format!("op-{i:05}"), RetryStatus::DeadLetter, None),
                    2_800..2_900 => {
                        retry(&format!("op-{i:05}"), RetryStatus::Pending, Some(base * 2))
                    }
                    _ => retry(&format!("op-{i:05}"), RetryStatus::Retrying, Some(base)),
                })
                .collect(),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
        conn.execute("ANALYZE").await.unwrap();

        let at = "'2026-11-24 10:23:59+00'";
        let scans = [
            (
                "scan from start",
                SCAN_FROM_START,
                "int8",
                "1000".to_string(),
            ),
            (
                "scan after",
                SCAN_AFTER,
                "timestamptz, text, int8",
                format!("{at}, 'op-05000', 1000"),
            ),
            (
                "sweep",
                SWEEP,
                "timestamptz, text, int8",
                format!("{at}, 'op-05000', 1000"),
            ),
            (
                "catch-up",
                SWEEP_SINCE,
                "timestamptz, text, timestamptz, int8",
                format!("{at}, 'op-05000', '2026-11-24 10:23:58.95+00', 1000"),
            ),
            (
                "waiting since",
                WAITING_SINCE,
                "timestamptz",
                "'2026-11-24 10:23:58.95+00'".to_string(),
            ),
            ("oldest waiting", OLDEST_WAITING, "", String::new()),
        ];
        for generic in [false, true] {
            for (name, sql, types, args) in &scans {
                let plan = plan_of(&mut conn, sql, types, args, generic).await;
                println!("{name} (generic: {generic}):\n{plan}");
                assert!(plan.contains("operation_waiting"), "{name}: {plan}");
                assert!(!plan.contains("Seq Scan on operation"), "{name}: {plan}");
                // The catch-up's window is bounded on both sides: when the planner expects
                // few rows in it, it may read them through the index and sort those few.
                if *name != "catch-up" {
                    assert!(!plan.contains("Sort"), "{name}: {plan}");
                }
            }
            for (name, sql, index) in [
                ("mark", MARK_TRUSTLOGGED, "operation_pkey"),
                ("delete retries", DELETE_RETRIES, "trustlog_retry_pkey"),
            ] {
                let plan = plan_of(
                    &mut conn,
                    sql,
                    "text[]",
                    "array['op-02001', 'op-05002', 'op-09999']",
                    generic,
                )
                .await;
                println!("{name} (generic: {generic}):\n{plan}");
                assert!(plan.contains(index), "{name}: {plan}");
                assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
            }
            // The join is driven by the due retry rows, never by the waiting rows, and stops
            // at the limit: nothing above the nested loop sorts.
            let plan = plan_of(
                &mut conn,
                DUE_RETRIES,
                "timestamptz, int8",
                &format!("{at}, 1000"),
                generic,
            )
            .await;
            println!("due retries (generic: {generic}):\n{plan}");
            assert!(plan.contains("operation_pkey"), "{plan}");
            assert!(!plan.contains("Seq Scan on operation"), "{plan}");
            assert!(!plan.contains("operation_waiting"), "{plan}");
            assert!(plan.contains("Merge Append"), "{plan}");
            assert!(plan.contains("Nested Loop"), "{plan}");
            assert!(
                plan.contains("Index Scan on trustlog_retry_due")
                    || plan.contains("Index Scan using trustlog_retry_due"),
                "{plan}"
            );
        }
        conn.close().await.unwrap();
    }
}

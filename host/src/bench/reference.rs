//! The reference of DESIGN.md §7, rerun beside trustlog: a hand-written minimal
//! relay loop on the same fresh database and backlog. Each transaction selects
//! one batch of waiting rows after the cursor (whole rows, as a relay must read
//! what it would send), marks them `TRUSTLOGGED` in one statement and upserts the
//! cursor. It publishes nothing, retries nothing and guards nothing: it is the
//! floor any relay over these tables pays, so trustlog's rate over its rate is
//! what the rest of trustlog costs or saves.

use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row};

use crate::publisher::options::redact;

use super::delivery::Target;
use super::stats::round;
use super::{BenchError, BenchOptions};

/// The cursor row the loop keeps (its own key, so it never meets trustlog's).
const CURSOR_KEY: &str = "bench-reference";

/// The loop's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceReport {
    /// What ran: the minimal keyset loop.
    pub reference: &'static str,
    /// The fresh database it worked in, since removed (password redacted).
    pub fresh_db: String,
    /// Rows marked, and per transaction.
    pub rows: u32,
    /// Rows the loop marks per transaction (the engine's `batch_size`).
    pub batch: u32,
    /// Rows marked `TRUSTLOGGED` per second.
    pub rows_per_sec: f64,
    /// Wall time the loop took to mark every row, s.
    pub seconds: f64,
}

/// Stores `opts.ops` operations in a fresh database and times the loop over them.
pub(super) async fn run(opts: &BenchOptions) -> Result<ReferenceReport, BenchError> {
    let target = Target::create(opts, "reference").await?;
    let result = measure(opts, &target).await;
    target.remove().await?;
    result
}

async fn measure(opts: &BenchOptions, target: &Target) -> Result<ReferenceReport, BenchError> {
    target.store(opts.ops).await?;
    let url = target.db_url();
    let failed = |e: sqlx::Error| BenchError::Database {
        url: redact(url),
        message: e.to_string(),
    };
    let batch = opts.config.batch_size;
    tracing::info!(ops = opts.ops, batch, "reference loop");
    let (marked, took) = match url.split_once(':').map_or("", |(s, _)| s) {
        "postgres" | "postgresql" => postgres(url, batch).await.map_err(failed)?,
        "mysql" | "mariadb" => mysql(url, batch).await.map_err(failed)?,
        _ => sqlite(url, batch).await.map_err(failed)?,
    };
    if marked != u64::from(opts.ops) {
        return Err(BenchError::Incomplete {
            phase: "reference",
            message: format!("the loop marked {marked} of {} operations", opts.ops),
        });
    }
    Ok(ReferenceReport {
        reference: "minimal keyset loop",
        fresh_db: redact(url),
        rows: opts.ops,
        batch,
        rows_per_sec: round(marked as f64 / took, 0),
        seconds: round(took, 3),
    })
}

/// One batch of whole waiting rows after a keyset position, in keyset order: the
/// dialects differ in the table hint, the keyset comparison and the placeholders.
macro_rules! select_batch {
    ($hint:literal, $after:literal, $limit:literal) => {
        concat!(
            "SELECT op_id, op_actor, doid, producer_id, request_body_hash, \
             response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, \
             server_ip, timestamp FROM operation ",
            $hint,
            " WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND ",
            $after,
            " ORDER BY timestamp, op_id LIMIT ",
            $limit
        )
    };
}

/// Reads a row's text columns, as a relay building envelopes would; returns its op_id.
macro_rules! read_row {
    ($row:expr) => {{
        let op_id: String = $row.try_get(0)?;
        for i in 1..12 {
            let _: Option<String> = $row.try_get(i)?;
        }
        op_id
    }};
}

/// Appends `(?, ?, …)` binding `ids` to an `UPDATE … WHERE op_id IN `.
fn mark_in<'a, DB: sqlx::Database>(sql: &'static str, ids: &'a [String]) -> QueryBuilder<DB>
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(sql);
    q.push("(");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.as_str());
    }
    list.push_unseparated(")");
    q
}

async fn postgres(url: &str, batch: u32) -> Result<(u64, f64), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    // A hand-written loop runs beside autovacuum; the bulk load just now is news to it.
    sqlx::query("ANALYZE operation").execute(&mut conn).await?;
    let select = select_batch!("", "(timestamp, op_id) > ($1, $2)", "$3");
    let mut after = (chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, String::new());
    let mut marked = 0u64;
    let started = Instant::now();
    loop {
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(select)
            .bind(after.0)
            .bind(&after.1)
            .bind(i64::from(batch))
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get(12)?, last.try_get(0)?);
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(read_row!(row));
        }
        let updated = sqlx::query(
            "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' WHERE op_id = ANY($1)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
             VALUES ($1, $2, now()) ON CONFLICT (cursor_key) DO UPDATE \
             SET cursor_value = excluded.cursor_value, last_updated_at = excluded.last_updated_at",
        )
        .bind(CURSOR_KEY)
        .bind(format!("{}|{}", after.0.to_rfc3339(), after.1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        marked += updated;
    }
    Ok((marked, started.elapsed().as_secs_f64()))
}

async fn mysql(url: &str, batch: u32) -> Result<(u64, f64), sqlx::Error> {
    let mut conn =
        sqlx::MySqlConnection::connect_with(&MySqlConnectOptions::from_str(url)?).await?;
    // MariaDB does not turn a row comparison into an index range; spelled out, it does.
    // The hint is the one trustlog's adapter gives: without it the optimizer may sort.
    let select = select_batch!(
        "FORCE INDEX (operation_waiting)",
        "(timestamp > ? OR (timestamp = ? AND op_id > ?))",
        "?"
    );
    let mut after = (chrono::DateTime::UNIX_EPOCH.naive_utc(), String::new());
    let mut marked = 0u64;
    let started = Instant::now();
    loop {
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(select)
            .bind(after.0)
            .bind(after.0)
            .bind(&after.1)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get(12)?, last.try_get(0)?);
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(read_row!(row));
        }
        let updated = mark_in::<sqlx::MySql>(
            "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' WHERE op_id IN ",
            &ids,
        )
        .build()
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
             VALUES (?, ?, NOW(6)) ON DUPLICATE KEY UPDATE \
             cursor_value = VALUES(cursor_value), last_updated_at = VALUES(last_updated_at)",
        )
        .bind(CURSOR_KEY)
        .bind(format!("{}|{}", after.0, after.1))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        marked += updated;
    }
    Ok((marked, started.elapsed().as_secs_f64()))
}

async fn sqlite(url: &str, batch: u32) -> Result<(u64, f64), sqlx::Error> {
    // The durability trustlog's adapter runs with, or the comparison would be unfair to it.
    let options = SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    // The hint is the one trustlog's adapter gives: without it the planner may sort.
    let select = select_batch!(
        "INDEXED BY operation_waiting",
        "(timestamp, op_id) > (?1, ?2)",
        "?3"
    );
    let mut after = (i64::MIN, String::new());
    let mut marked = 0u64;
    let started = Instant::now();
    loop {
        let mut tx = conn.begin().await?;
        let rows = sqlx::query(select)
            .bind(after.0)
            .bind(&after.1)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get(12)?, last.try_get(0)?);
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(read_row!(row));
        }
        let updated = mark_in::<sqlx::Sqlite>(
            "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' WHERE op_id IN ",
            &ids,
        )
        .build()
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
             VALUES (?1, ?2, ?3) ON CONFLICT (cursor_key) DO UPDATE \
             SET cursor_value = excluded.cursor_value, last_updated_at = excluded.last_updated_at",
        )
        .bind(CURSOR_KEY)
        .bind(format!("{}|{}", after.0, after.1))
        .bind(crate::scheduling::clock::now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        marked += updated;
    }
    Ok((marked, started.elapsed().as_secs_f64()))
}

//! Delivery latency under concurrent application writers whose transactions commit
//! out of timestamp order: each writer stamps its row when its transaction starts
//! (PostgreSQL `now()`, MariaDB `UTC_TIMESTAMP(6)`; SQLite, whose writers take turns,
//! the application's clock), holds the transaction 0–300 ms, then commits, with plain
//! SQL naming only the seed's columns. The hosts run as `serve` does, at its defaults.
//! A row's latency runs from its COMMIT returning to the commit that marked it
//! `TRUSTLOGGED`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::sandbox::imports::Probe;

use super::delivery::Target;
use super::hosts::Host;
use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions};

/// The longest a writer holds its transaction open.
const HOLD_MAX_MS: u64 = 300;
/// How long delivery may take after the last commit before the run is a failure.
const GRACE: Duration = Duration::from_secs(120);

/// The writers mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WritersReport {
    /// Concurrent writers that committed rows out of timestamp order.
    pub writers: u32,
    /// Rows committed by all the writers together.
    pub rows: u32,
    /// Hosts delivering the rows on the one database.
    pub hosts: u32,
    /// Transactions were held 0 to this many ms between their timestamp and commit.
    pub hold_max_ms: u64,
    /// COMMIT to `TRUSTLOGGED`, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile of COMMIT to `TRUSTLOGGED`, ms.
    pub p99_ms: Option<f64>,
    /// Slowest COMMIT to `TRUSTLOGGED`, ms.
    pub max_ms: Option<f64>,
    /// Rows delivered within 100 ms and within 1 s of their commit.
    pub within_100ms: u32,
    /// Rows delivered within 1 s of their commit.
    pub within_1s: u32,
    /// Rows marked by each kind of tick: the cursor's scan, the catch-up of rows that
    /// committed behind it, the sweep, retries.
    pub through_scan: u64,
    /// Rows marked by the catch-up of rows that committed behind the cursor.
    pub through_catch_up: u64,
    /// Rows marked by the sweep.
    pub through_sweep: u64,
    /// Rows marked by retries of failed deliveries.
    pub through_retry: u64,
    /// Envelopes the ledger holds beyond one per row (ledger publishers only).
    pub ledger_duplicates: Option<u64>,
}

/// Runs `opts.writers` writers of `opts.writer_rows` rows each against `opts.hosts`
/// hosts on a fresh target.
pub(super) async fn run(opts: &BenchOptions) -> Result<WritersReport, BenchError> {
    let target = Target::for_hosts(opts, "writers").await?;
    let result = measure(opts, &target).await;
    target.remove().await?;
    result
}

async fn measure(opts: &BenchOptions, target: &Target) -> Result<WritersReport, BenchError> {
    let probe = Arc::new(Probe::default());
    probe.record_marks();
    let mut hosts = Vec::new();
    for _ in 0..opts.hosts.max(1) {
        hosts.push(Host::start(opts, target, false, &probe).await?);
    }
    tracing::info!(
        writers = opts.writers,
        rows = opts.writer_rows,
        hosts = hosts.len(),
        "writers committing out of timestamp order"
    );
    let seed = crate::scheduling::clock::now_micros() as u64 | 1;
    let writers = (0..opts.writers).map(|w| {
        let url = target.db_url().to_string();
        let rows = opts.writer_rows;
        tokio::spawn(async move { write(&url, w, rows, seed.wrapping_mul(u64::from(w) + 7)).await })
    });
    let mut committed: HashMap<String, Instant> = HashMap::new();
    for w in futures_util::future::join_all(writers).await {
        let rows = w
            .map_err(|e| BenchError::Tenant(format!("a writer failed: {e}")))?
            .map_err(|e| target.db_failed(e))?;
        committed.extend(rows);
    }
    let total = committed.len();
    let deadline = Instant::now() + GRACE;
    let mut marks: HashMap<String, Instant> = HashMap::new();
    while committed.keys().any(|k| !marks.contains_key(k)) {
        if Instant::now() > deadline {
            return Err(BenchError::Incomplete {
                phase: "writers",
                message: format!("{} of {total} rows delivered within {GRACE:?}", marks.len()),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        marks.extend(probe.take_marks());
    }
    let mut by_tick: HashMap<String, f64> = HashMap::new();
    for host in &hosts {
        for (tick, n) in host.published_by_tick() {
            *by_tick.entry(tick).or_default() += n;
        }
    }
    for host in hosts {
        host.stop().await;
    }
    let latencies_ms: Vec<f64> = committed
        .iter()
        .map(|(id, done)| marks[id].saturating_duration_since(*done).as_secs_f64() * 1e3)
        .collect();
    let latencies_ms = sorted(latencies_ms);
    let within = |ms: f64| latencies_ms.iter().filter(|&&l| l <= ms).count() as u32;
    let ms = |p| percentile(&latencies_ms, p).map(|x| round(x, 1));
    let count = |tick: &str| by_tick.get(tick).copied().unwrap_or(0.0) as u64;
    Ok(WritersReport {
        writers: opts.writers,
        rows: total as u32,
        hosts: opts.hosts.max(1),
        hold_max_ms: HOLD_MAX_MS,
        p50_ms: ms(50.0),
        p99_ms: ms(99.0),
        max_ms: ms(100.0),
        within_100ms: within(100.0),
        within_1s: within(1000.0),
        through_scan: count("scan"),
        through_catch_up: count("catch_up"),
        through_sweep: count("sweep"),
        through_retry: count("retry"),
        ledger_duplicates: ledger_duplicates(target.publisher_url(), total),
    })
}

/// Entries the ledger at `url` holds beyond `rows`, when `url` is a ledger.
fn ledger_duplicates(url: &str, rows: usize) -> Option<u64> {
    let path = super::fresh::file_path(url, "ledger")?;
    let entries = std::fs::read_to_string(path).ok()?.lines().count();
    Some(entries.saturating_sub(rows) as u64)
}

/// One writer: `rows` transactions, each holding its row 0–300 ms between its
/// timestamp and its commit; the instant each COMMIT returned, by op_id.
async fn write(
    url: &str,
    writer: u32,
    rows: u32,
    mut dice: u64,
) -> Result<Vec<(String, Instant)>, sqlx::Error> {
    let mut done = Vec::with_capacity(rows as usize);
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    let insert = |op_id: &str, stamp: &str| {
        format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) VALUES ('{op_id}', 'bench-writer', \
             '10.1000/bench/{op_id}', 'bench', 'IRP', 'Create', '10.1000', 'bench', {stamp})"
        )
    };
    match scheme {
        "postgres" | "postgresql" => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            for i in 0..rows {
                let id = format!("w{writer:02}-{i:06}");
                let mut tx = c.begin().await?;
                tx.execute(AssertSqlSafe(insert(&id, "now()"))).await?;
                tokio::time::sleep(hold(&mut dice)).await;
                tx.commit().await?;
                done.push((id, Instant::now()));
            }
        }
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let mut c = sqlx::MySqlConnection::connect(&url).await?;
            for i in 0..rows {
                let id = format!("w{writer:02}-{i:06}");
                let mut tx = c.begin().await?;
                tx.execute(AssertSqlSafe(insert(&id, "UTC_TIMESTAMP(6)")))
                    .await?;
                tokio::time::sleep(hold(&mut dice)).await;
                tx.commit().await?;
                done.push((id, Instant::now()));
            }
        }
        _ => {
            let mut c = sqlx::SqliteConnection::connect(url).await?;
            for i in 0..rows {
                let id = format!("w{writer:02}-{i:06}");
                let stamp = crate::scheduling::clock::now_micros().to_string();
                tokio::time::sleep(hold(&mut dice)).await;
                let mut tx = c.begin().await?;
                tx.execute(AssertSqlSafe(insert(&id, &stamp))).await?;
                tx.commit().await?;
                done.push((id, Instant::now()));
            }
        }
    }
    Ok(done)
}

/// The next hold, 0–300 ms, from a xorshift generator.
fn hold(dice: &mut u64) -> Duration {
    *dice ^= *dice << 13;
    *dice ^= *dice >> 7;
    *dice ^= *dice << 17;
    Duration::from_millis(*dice % (HOLD_MAX_MS + 1))
}

//! Does the cost of a scan batch depend on the backlog behind it? One scan batch
//! is timed with each backlog size already in the table, and the resident memory
//! is read after: a keyset scan that streams stays flat; one that loaded the
//! backlog, or sorted it, would not.
//!
//! Each size is timed twice, on two fresh tables: as stored, and with the rows the
//! timed batches read already in the database's cache. A backlog bigger than the
//! cache (MariaDB's buffer pool is 128 MiB by default and reads past the OS cache)
//! has its oldest rows, the ones a drain reads first, evicted while the newer ones
//! are stored, so as stored the large backlog is also timed reading pages from disk;
//! that first read of a row is the same whatever the scan, and the cached figure
//! leaves it out to show what the scan itself costs as the backlog grows.

use std::time::Instant;

use serde::Serialize;

use trustlog_guest::model::Position;

use crate::clock::now_micros;

use super::delivery::Target;
use super::rss;
use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, EngineKind};

/// Scan batches timed per backlog size, at most; the median is reported.
const TIMED_BATCHES: u32 = 20;

/// One backlog size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    /// Rows waiting in the table when the batches were timed.
    pub rows: u32,
    /// Median time of one scan batch (read, publish, mark, cursor) as stored, ms.
    pub scan_batch_ms: f64,
    /// The same with the rows it reads already in the database's cache, ms.
    pub scan_batch_ms_cached: f64,
    /// Resident memory after the batches, MiB.
    pub rss_mib: Option<f64>,
}

/// The scaling mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    pub engine: EngineKind,
    pub batch: u32,
    /// Scan batches timed per size (after one that loads the cursor).
    pub timed_batches: u32,
    pub points: Vec<ScalingPoint>,
    /// Batch time with the largest backlog over the smallest, as stored.
    pub scan_batch_ratio: f64,
    /// The same with the rows in the database's cache (target ≤ 1.3).
    pub scan_batch_ratio_cached: f64,
    /// Resident memory with the largest backlog over the smallest.
    pub rss_ratio: Option<f64>,
}

/// Times scan batches against each backlog size of `opts.scaling_rows`, smallest first.
pub(super) async fn run(
    opts: &BenchOptions,
    engine: EngineKind,
) -> Result<ScalingReport, BenchError> {
    let mut sizes = opts.scaling_rows.clone();
    sizes.sort_unstable();
    // As many batches for every size as the smallest backlog holds after the first
    // (which loads the cursor), so each size is timed over the same work.
    let batch = opts.config.batch_size;
    let timed = (sizes.first().copied().unwrap_or(0) / batch)
        .saturating_sub(1)
        .min(TIMED_BATCHES);
    if timed == 0 {
        return Err(BenchError::Incomplete {
            phase: "scaling",
            message: format!(
                "the smallest backlog holds fewer than two batches of {batch}; store more rows"
            ),
        });
    }
    let mut points = Vec::with_capacity(sizes.len());
    for rows in sizes {
        let as_stored = timed_batches(opts, engine, rows, timed, Cache::AsStored).await?;
        let cached = timed_batches(opts, engine, rows, timed, Cache::Warmed).await?;
        points.push(ScalingPoint {
            rows,
            scan_batch_ms: round(as_stored.median_ms, 3),
            scan_batch_ms_cached: round(cached.median_ms, 3),
            rss_mib: max_rss(as_stored.rss_mib, cached.rss_mib).map(|m| round(m, 1)),
        });
    }
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            return Err(BenchError::Incomplete {
                phase: "scaling",
                message: "no backlog sizes given".into(),
            });
        }
    };
    let rss_ratio = match (first.rss_mib, last.rss_mib) {
        (Some(a), Some(b)) => Some(round(b / a, 3)),
        _ => None,
    };
    Ok(ScalingReport {
        engine,
        batch: opts.config.batch_size,
        timed_batches: timed,
        scan_batch_ratio: round(last.scan_batch_ms / first.scan_batch_ms, 3),
        scan_batch_ratio_cached: round(last.scan_batch_ms_cached / first.scan_batch_ms_cached, 3),
        rss_ratio,
        points,
    })
}

/// Whether the timed rows are read once before they are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    AsStored,
    Warmed,
}

/// One timing of one backlog size.
struct Timing {
    median_ms: f64,
    rss_mib: Option<f64>,
}

/// Stores `rows` on a fresh target and times `timed` scan batches there.
async fn timed_batches(
    opts: &BenchOptions,
    engine: EngineKind,
    rows: u32,
    timed: u32,
    cache: Cache,
) -> Result<Timing, BenchError> {
    let label = match cache {
        Cache::AsStored => format!("scale{rows}"),
        Cache::Warmed => format!("scale{rows}c"),
    };
    let target = Target::create(opts, &label).await?;
    let timing = time_batches(opts, engine, &target, rows, timed, cache).await;
    target.remove().await?;
    timing
}

async fn time_batches(
    opts: &BenchOptions,
    engine: EngineKind,
    target: &Target,
    rows: u32,
    timed: u32,
    cache: Cache,
) -> Result<Timing, BenchError> {
    tracing::info!(rows, ?cache, "scaling: storing the backlog");
    target.store(rows).await?;
    if cache == Cache::Warmed {
        // The batch that loads the cursor and the timed ones.
        read_ahead(target, opts.config.batch_size, timed + 1).await?;
    }
    let mut tenant = target.tenant(opts, engine).await?;
    // The first batch loads the cursor; it is not the steady state being measured.
    tenant.scan_tick(now_micros()).await?;
    let mut times = Vec::with_capacity(timed as usize);
    for _ in 0..timed {
        let started = Instant::now();
        let report = tenant.scan_tick(now_micros()).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if report.fetched < opts.config.batch_size {
            return Err(BenchError::Incomplete {
                phase: "scaling",
                message: format!(
                    "a scan batch fetched {} rows of {} with {rows} stored",
                    report.fetched, opts.config.batch_size
                ),
            });
        }
    }
    Ok(Timing {
        median_ms: percentile(&sorted(times), 50.0).unwrap_or(f64::NAN),
        rss_mib: rss::current_mib(),
    })
}

/// Reads the first `batches` scan batches with the scan's own query, one batch at a
/// time (so the bench holds no more of the backlog than the relay would), and drops them.
async fn read_ahead(target: &Target, batch: u32, batches: u32) -> Result<(), BenchError> {
    let mut after: Option<Position> = None;
    for _ in 0..batches {
        let rows = target
            .db
            .scan_after(after.take(), batch)
            .await
            .map_err(|e| BenchError::Database {
                url: crate::publisher::options::redact(target.db_url()),
                message: e.to_string(),
            })?;
        let Some(last) = rows.last() else { break };
        after = Some(Position {
            timestamp: last.timestamp,
            op_id: last.op_id.clone(),
        });
    }
    Ok(())
}

/// The larger of two readings, or the one there is.
fn max_rss(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

//! Does the cost of a scan batch depend on the backlog behind it? One scan batch
//! is timed with each backlog size already in the table, and the resident memory
//! is read after: a keyset scan that streams stays flat; one that loaded the
//! backlog, or sorted it, would not.

use std::time::Instant;

use serde::Serialize;

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
    /// Median time of one scan batch (read, publish, mark, cursor), ms.
    pub scan_batch_ms: f64,
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
    /// Batch time with the largest backlog over the smallest (target ≤ 1.3).
    pub scan_batch_ratio: f64,
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
        let target = Target::create(opts, &format!("scale{rows}")).await?;
        let point = point(opts, engine, &target, rows, timed).await;
        target.remove().await?;
        points.push(point?);
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
        rss_ratio,
        points,
    })
}

async fn point(
    opts: &BenchOptions,
    engine: EngineKind,
    target: &Target,
    rows: u32,
    timed: u32,
) -> Result<ScalingPoint, BenchError> {
    tracing::info!(rows, "scaling: storing the backlog");
    target.store(rows).await?;
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
    let median = percentile(&sorted(times), 50.0).unwrap_or(f64::NAN);
    Ok(ScalingPoint {
        rows,
        scan_batch_ms: round(median, 3),
        rss_mib: rss::current_mib().map(|m| round(m, 1)),
    })
}

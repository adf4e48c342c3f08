//! Does the cost of a scan batch depend on the backlog behind it? Every backlog size
//! is stored, each on its own fresh target, and scan batches are timed on them in
//! turns, one batch on each size per turn, so a slow spell of a noisy machine falls
//! on every size alike. After each batch its backlog gets as many new rows behind it
//! as the batch took, so every timed batch has exactly its size waiting.
//!
//! The resident memory is read as each size's first batch is done and after the
//! last turn: a keyset scan that streams stays flat; one that loaded the backlog,
//! or sorted it, would not.

use std::time::Instant;

use serde::Serialize;

use crate::clock::now_micros;
use crate::tenant::Tenant;

use super::delivery::{Backlog, Target};
use super::rss;
use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, EngineKind};

/// Scan batches timed per backlog size; the median is reported.
const TIMED_BATCHES: u32 = 40;

/// One backlog size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    /// Rows waiting in the table when each batch was timed.
    pub rows: u32,
    /// Median time of one scan batch (read, publish, mark, cursor), ms.
    pub scan_batch_ms: f64,
    /// Resident memory once this size's first batch was done (the smaller sizes'
    /// tenants running too), MiB.
    pub rss_mib: Option<f64>,
}

/// The scaling mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    pub engine: EngineKind,
    pub batch: u32,
    /// Scan batches timed per size, in turns (after the untimed ones of [`Self::untimed_batches`]).
    pub timed_batches: u32,
    /// Batches per size run before the timed ones: the one that loads the cursor,
    /// then as many as replace the smallest backlog's rows by rows stored after the
    /// largest backlog (see [`run`]).
    pub untimed_batches: u32,
    pub points: Vec<ScalingPoint>,
    /// Batch time with the largest backlog over the smallest (target ≤ 1.3).
    pub scan_batch_ratio: f64,
    /// Resident memory after the last turn, every size's tenant running, MiB.
    pub rss_end_mib: Option<f64>,
    /// Resident memory at the end (or after the largest size's first batch, when
    /// higher) over that after the smallest size's first batch.
    pub rss_ratio: Option<f64>,
}

/// One backlog size being timed.
struct Lane {
    rows: u32,
    target: Target,
    backlog: Backlog,
    tenant: Tenant,
    times_ms: Vec<f64>,
    rss_mib: Option<f64>,
}

/// Times scan batches against each backlog size of `opts.scaling_rows`.
///
/// The sizes are stored smallest first, and the smallest was written before a
/// larger one that may have overflowed the database's cache (MariaDB's buffer pool
/// is 128 MiB by default). The untimed turns take the smallest backlog's rows away
/// and leave it rows written since, as a relay that keeps up reads them; the largest
/// keeps its oldest rows, which such a cache holds no more.
pub(super) async fn run(
    opts: &BenchOptions,
    engine: EngineKind,
) -> Result<ScalingReport, BenchError> {
    let mut sizes = opts.scaling_rows.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let batch = opts.config.batch_size;
    let (Some(&smallest), Some(_)) = (sizes.first(), sizes.last()) else {
        return Err(BenchError::Incomplete {
            phase: "scaling",
            message: "no backlog sizes given".into(),
        });
    };
    if smallest < batch {
        return Err(BenchError::Incomplete {
            phase: "scaling",
            message: format!(
                "the smallest backlog ({smallest} rows) holds less than one batch of {batch}"
            ),
        });
    }
    let mut lanes = Vec::with_capacity(sizes.len());
    let result = timed_turns(opts, engine, &sizes, &mut lanes).await;
    let rss_end = rss::current_mib();
    for lane in lanes.drain(..) {
        lane.target.remove().await?;
    }
    let points = result?;
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let highest = match (last.rss_mib, rss_end) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let rss_ratio = match (first.rss_mib, highest) {
        (Some(a), Some(b)) => Some(round(b / a, 3)),
        _ => None,
    };
    Ok(ScalingReport {
        engine,
        batch,
        timed_batches: TIMED_BATCHES,
        untimed_batches: 1 + smallest.div_ceil(batch),
        scan_batch_ratio: round(last.scan_batch_ms / first.scan_batch_ms, 3),
        rss_end_mib: rss_end.map(|m| round(m, 1)),
        rss_ratio,
        points,
    })
}

/// Stores every size into `lanes`, runs the untimed then the timed turns, and returns
/// the figures; the caller removes the lanes' targets whatever happens.
async fn timed_turns(
    opts: &BenchOptions,
    engine: EngineKind,
    sizes: &[u32],
    lanes: &mut Vec<Lane>,
) -> Result<Vec<ScalingPoint>, BenchError> {
    for &rows in sizes {
        tracing::info!(rows, "scaling: storing the backlog");
        let target = Target::create(opts, &format!("scale{rows}")).await?;
        // Until it is in `lanes`, a failure here removes the target itself.
        let stored = target.store_backlog(rows).await;
        let (_, backlog) = match stored {
            Ok(s) => s,
            Err(e) => {
                target.remove().await?;
                return Err(e);
            }
        };
        let tenant = match target.tenant(opts, engine).await {
            Ok(t) => t,
            Err(e) => {
                target.remove().await?;
                return Err(e);
            }
        };
        let mut lane = Lane {
            rows,
            target,
            backlog,
            tenant,
            times_ms: Vec::with_capacity(TIMED_BATCHES as usize),
            rss_mib: None,
        };
        // The first batch loads the cursor; it is not the steady state being measured.
        let first = scan_batch(opts, &mut lane).await;
        lane.rss_mib = rss::current_mib();
        lanes.push(lane);
        first?;
    }
    let untimed = sizes[0].div_ceil(opts.config.batch_size);
    for _ in 0..untimed {
        for lane in lanes.iter_mut() {
            scan_batch(opts, lane).await?;
        }
    }
    for _ in 0..TIMED_BATCHES {
        for lane in lanes.iter_mut() {
            let took = scan_batch(opts, lane).await?;
            lane.times_ms.push(took * 1000.0);
        }
    }
    Ok(lanes
        .iter()
        .map(|lane| ScalingPoint {
            rows: lane.rows,
            scan_batch_ms: round(
                percentile(&sorted(lane.times_ms.clone()), 50.0).unwrap_or(f64::NAN),
                3,
            ),
            rss_mib: lane.rss_mib.map(|m| round(m, 1)),
        })
        .collect())
}

/// Runs one scan batch on `lane` and stores as many rows behind its backlog as the
/// batch took; returns the batch's time alone, seconds.
async fn scan_batch(opts: &BenchOptions, lane: &mut Lane) -> Result<f64, BenchError> {
    let started = Instant::now();
    let report = lane.tenant.scan_tick(now_micros()).await?;
    let took = started.elapsed().as_secs_f64();
    let batch = opts.config.batch_size;
    if report.fetched < batch {
        return Err(BenchError::Incomplete {
            phase: "scaling",
            message: format!(
                "a scan batch fetched {} rows of {batch} with {} waiting",
                report.fetched, lane.rows
            ),
        });
    }
    lane.target
        .top_up(&mut lane.backlog, report.fetched)
        .await?;
    Ok(took)
}

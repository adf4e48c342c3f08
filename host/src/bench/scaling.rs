//! Does the cost of a scan batch depend on the backlog behind it, and does the
//! memory? Two passes over the backlog sizes, each size on its own fresh target,
//! every batch followed by as many new rows behind the backlog as it took, so each
//! batch has exactly its size waiting:
//!
//! - memory: each size alone, one after the other; the resident memory is read after
//!   its batches. A keyset scan that streams stays flat; one that loaded the backlog,
//!   or sorted it, would not. (Read with every size running at once, it would count
//!   the second size's connections and tenant, not its backlog.)
//! - time: every size stored anew, then scan batches timed in turns, one on each
//!   size per turn, so a slow spell of a noisy machine falls on every size alike.

use std::time::Instant;

use serde::Serialize;

use crate::scheduling::clock::now_micros;
use crate::scheduling::tenant::Tenant;

use super::delivery::{Backlog, Target};
use super::rss;
use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, EngineKind};

/// Scan batches timed per backlog size; the median is reported.
const TIMED_BATCHES: u32 = 40;
/// Scan batches each size runs alone before its resident memory is read.
const MEMORY_BATCHES: u32 = 10;

/// One backlog size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    /// Rows waiting in the table when each batch ran.
    pub rows: u32,
    /// Median time of one scan batch (read, publish, mark, cursor), ms.
    pub scan_batch_ms: f64,
    /// Resident memory after this size's batches of the memory pass, MiB.
    pub rss_mib: Option<f64>,
}

/// The scaling mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    /// The engine whose scan batches were timed, wasm or native.
    pub engine: EngineKind,
    /// Operations per scan batch (the engine's `batch_size`).
    pub batch: u32,
    /// Scan batches timed per size, in turns, after the untimed ones.
    pub timed_batches: u32,
    /// Batches per size run in turns before the timed ones: the one that loads the
    /// cursor, then as many as replace the smallest backlog's rows (see the mode's `run`).
    pub untimed_batches: u32,
    /// Batches each size ran alone before its memory was read.
    pub memory_batches: u32,
    /// Each backlog size's figures, smallest first.
    pub points: Vec<ScalingPoint>,
    /// Batch time with the largest backlog over the smallest (target ≤ 1.3).
    pub scan_batch_ratio: f64,
    /// Resident memory with the largest backlog over the smallest.
    pub rss_ratio: Option<f64>,
}

/// Measures each backlog size of `opts.scaling_rows`, memory first, then time.
///
/// In the time pass the sizes are stored smallest first, and the smallest was written
/// before a larger one that may have overflowed the database's cache (MariaDB's
/// buffer pool is 128 MiB by default). The untimed turns take the smallest backlog's
/// rows away and leave it rows written since, as a relay that keeps up reads them;
/// the largest keeps its oldest rows, which such a cache holds no more.
pub(super) async fn run(
    opts: &BenchOptions,
    engine: EngineKind,
) -> Result<ScalingReport, BenchError> {
    // A batch's cost is what is measured, so each call settles the batch it reads.
    let serial = BenchOptions {
        config: trustlog_guest::model::Config {
            pipeline_depth: 1,
            ..opts.config.clone()
        },
        ..opts.clone()
    };
    let opts = &serial;
    let mut sizes = opts.scaling_rows.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let batch = opts.config.batch_size;
    let Some(&smallest) = sizes.first() else {
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
    let mut rss_mib = Vec::with_capacity(sizes.len());
    for &rows in &sizes {
        let mut lane = Lane::store(opts, engine, rows, "mem").await?;
        let batches = run_batches(&mut lane, batch, MEMORY_BATCHES).await;
        rss_mib.push(rss::current_mib());
        lane.target.remove().await?;
        batches?;
    }
    // The batch that loads the cursor, then as many as the smallest backlog holds.
    let untimed = 1 + smallest.div_ceil(batch);
    let mut lanes = Vec::with_capacity(sizes.len());
    let result = timed_turns(opts, engine, &sizes, untimed, &mut lanes).await;
    for lane in lanes.drain(..) {
        lane.target.remove().await?;
    }
    let medians = result?;
    let points: Vec<ScalingPoint> = sizes
        .iter()
        .zip(medians)
        .zip(&rss_mib)
        .map(|((&rows, median), rss)| ScalingPoint {
            rows,
            scan_batch_ms: round(median, 3),
            rss_mib: rss.map(|m| round(m, 1)),
        })
        .collect();
    let (first, last) = (&points[0], &points[points.len() - 1]);
    let rss_ratio = match (first.rss_mib, last.rss_mib) {
        (Some(a), Some(b)) => Some(round(b / a, 3)),
        _ => None,
    };
    Ok(ScalingReport {
        engine,
        batch,
        timed_batches: TIMED_BATCHES,
        untimed_batches: untimed,
        memory_batches: MEMORY_BATCHES,
        scan_batch_ratio: round(last.scan_batch_ms / first.scan_batch_ms, 3),
        rss_ratio,
        points,
    })
}

/// Stores every size into `lanes`, runs `untimed` then the timed turns, and returns
/// each size's median batch time, ms; the caller removes the lanes' targets whatever
/// happens.
async fn timed_turns(
    opts: &BenchOptions,
    engine: EngineKind,
    sizes: &[u32],
    untimed: u32,
    lanes: &mut Vec<Lane>,
) -> Result<Vec<f64>, BenchError> {
    for &rows in sizes {
        lanes.push(Lane::store(opts, engine, rows, "time").await?);
    }
    let batch = opts.config.batch_size;
    for _ in 0..untimed {
        for lane in lanes.iter_mut() {
            scan_batch(lane, batch).await?;
        }
    }
    let mut times_ms = vec![Vec::with_capacity(TIMED_BATCHES as usize); lanes.len()];
    for _ in 0..TIMED_BATCHES {
        for (lane, times) in lanes.iter_mut().zip(&mut times_ms) {
            times.push(scan_batch(lane, batch).await? * 1000.0);
        }
    }
    Ok(times_ms
        .into_iter()
        .map(|t| percentile(&sorted(t), 50.0).unwrap_or(f64::NAN))
        .collect())
}

/// One backlog size on its fresh target, with a tenant to scan it.
struct Lane {
    rows: u32,
    target: Target,
    backlog: Backlog,
    tenant: Tenant,
}

impl Lane {
    /// Creates a target for `rows` (named after `pass`), stores the backlog and starts
    /// a tenant on it; removes the target again when a step fails.
    async fn store(
        opts: &BenchOptions,
        engine: EngineKind,
        rows: u32,
        pass: &str,
    ) -> Result<Lane, BenchError> {
        tracing::info!(rows, pass, "scaling: storing the backlog");
        let target = Target::create(opts, &format!("scale{pass}{rows}")).await?;
        let started = async {
            let (_, backlog) = target.store_backlog(rows).await?;
            let tenant = target.tenant(opts, engine).await?;
            Ok::<_, BenchError>((backlog, tenant))
        }
        .await;
        match started {
            Ok((backlog, tenant)) => Ok(Lane {
                rows,
                target,
                backlog,
                tenant,
            }),
            Err(e) => {
                target.remove().await?;
                Err(e)
            }
        }
    }
}

/// Runs `n` scan batches of `batch` on `lane`.
async fn run_batches(lane: &mut Lane, batch: u32, n: u32) -> Result<(), BenchError> {
    for _ in 0..n {
        scan_batch(lane, batch).await?;
    }
    Ok(())
}

/// Runs one scan batch on `lane` and stores as many rows behind its backlog as the
/// batch took; returns the batch's time alone, seconds.
async fn scan_batch(lane: &mut Lane, batch: u32) -> Result<f64, BenchError> {
    let started = Instant::now();
    let report = lane.tenant.scan_tick(now_micros()).await?;
    let took = started.elapsed().as_secs_f64();
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

//! The scheduler: drains the scan, runs the retry and sweep ticks on their
//! intervals, wakes on new rows, and stops between batches on shutdown.
//!
//! Fresh rows and retries share one delivery budget. A pass gives each active kind
//! of tick (scan, then retry, then sweep) one batch in turn, and goes round again
//! while any of them came back full. The scan is active in every pass; the retry
//! and sweep ticks join when their interval is due, also in the middle of a long
//! drain. So while a backlog streams in and retries are due, they alternate batch
//! for batch, and either gets every batch when the other has nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, watch};
use tracing::Instrument;
use trustlog_guest::model::{Micros, Operation, RecordOutcome, Strategy};

use crate::clock::{Clock, SystemClock};
use crate::limits::LimitKind;
use crate::metrics::TenantMetrics;
use crate::tenant::{Tenant, TenantError};

/// How often each tick runs when there is nothing to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Idle poll of the scan (the seed's 10 s); a new row wakes it sooner.
    pub poll: Duration,
    /// How often due retries are looked for.
    pub retry: Duration,
    /// How often rows left behind the cursor are looked for.
    pub sweep: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            poll: Duration::from_secs(10),
            retry: Duration::from_secs(10),
            sweep: Duration::from_secs(60),
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `--until-drained`: nothing was left to deliver or due.
    Drained,
    /// A shutdown was requested; the batch in flight was finished.
    Shutdown,
    /// The guest ran into one of its limits: the tenant is stopped, with the reason.
    LimitExceeded { limit: LimitKind, reason: String },
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub exit: Exit,
    pub published: u64,
    pub retry_scheduled: u64,
    pub dead_lettered: u64,
    pub errors: u64,
}

/// A tenant with its scheduler: shareable, so records and ticks interleave.
#[derive(Clone)]
pub struct Worker {
    tenant: Arc<Mutex<Tenant>>,
    wake: Arc<Notify>,
    retry_now: Arc<AtomicBool>,
    intervals: Intervals,
    clock: Arc<dyn Clock>,
    metrics: Option<TenantMetrics>,
}

/// Pause after a pass with a failed tick, so an outage or a trapping guest is not
/// a busy loop; it doubles with each failed pass in a row, up to `MAX_ERROR_PAUSE`.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause after failed passes (the seed's poll interval).
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(10);

/// One kind of tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Scan,
    Retry,
    Sweep,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Lane::Scan => "scan",
            Lane::Retry => "retry",
            Lane::Sweep => "sweep",
        }
    }
}

#[derive(Default)]
struct Pass {
    fetched: u64,
    errored: bool,
    /// A limit the guest ran into: the run ends.
    limit: Option<(LimitKind, String)>,
}

impl Worker {
    /// A worker driving `tenant` on the wall clock.
    pub fn new(tenant: Tenant, intervals: Intervals) -> Worker {
        Worker {
            tenant: Arc::new(Mutex::new(tenant)),
            wake: Arc::new(Notify::new()),
            retry_now: Arc::new(AtomicBool::new(false)),
            intervals,
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }

    /// The same worker reading the time from `clock` (tests drive the schedule with it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Worker {
        self.clock = clock;
        self
    }

    /// The same worker counting its ticks into `metrics`.
    pub async fn with_metrics(mut self, metrics: TenantMetrics) -> Worker {
        self.tenant.lock().await.set_metrics(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// The notifier that wakes the idle scanner; database listeners signal it.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Wakes the scanner now (rows were stored elsewhere in this process).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the retry tick at the next wake-up instead of at its interval (after a replay).
    pub fn retry_soon(&self) {
        self.retry_now.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The tenant, for calls outside the schedule.
    pub fn tenant(&self) -> &Arc<Mutex<Tenant>> {
        &self.tenant
    }

    /// Records operations and wakes the scanner for the stored ones.
    pub async fn record(
        &self,
        ops: Vec<Operation>,
        strategy: Option<Strategy>,
    ) -> Result<Vec<RecordOutcome>, TenantError> {
        let outcomes = self.tenant.lock().await.record(ops, strategy).await?;
        if outcomes.contains(&RecordOutcome::Stored) {
            self.wake.notify_one();
        }
        Ok(outcomes)
    }

    /// Runs until shutdown, or until drained when `until_drained`.
    pub async fn run(&self, until_drained: bool, mut shutdown: watch::Receiver<bool>) -> Summary {
        let mut summary = Summary {
            exit: Exit::Shutdown,
            published: 0,
            retry_scheduled: 0,
            dead_lettered: 0,
            errors: 0,
        };
        let retry_every = micros(self.intervals.retry);
        let sweep_every = micros(self.intervals.sweep);
        let start = self.clock.now();
        let (mut next_retry, mut next_sweep) = (start, start);
        let mut failed_passes: u32 = 0;
        loop {
            let mut pass = Pass::default();
            let mut lanes = vec![Lane::Scan];
            let (mut retry_joined, mut sweep_joined) = (false, false);
            // Round-robin, one batch per lane per turn; see the module comment.
            while !lanes.is_empty() && !*shutdown.borrow() {
                let now = self.clock.now();
                let nudged = self.retry_now.swap(false, Ordering::SeqCst);
                // Retry and sweep join when their interval is due, again during a long drain;
                // until drained, once per pass, so that a pass ends.
                let due = |joined: bool, next: Micros| {
                    if until_drained { !joined } else { now >= next }
                };
                if !lanes.contains(&Lane::Retry) && (nudged || due(retry_joined, next_retry)) {
                    lanes.push(Lane::Retry);
                    retry_joined = true;
                    next_retry = now.saturating_add(retry_every);
                }
                if !lanes.contains(&Lane::Sweep) && due(sweep_joined, next_sweep) {
                    lanes.push(Lane::Sweep);
                    sweep_joined = true;
                    next_sweep = now.saturating_add(sweep_every);
                }
                let mut still = Vec::with_capacity(lanes.len());
                for lane in lanes {
                    if *shutdown.borrow() {
                        break;
                    }
                    if self.one_batch(lane, &mut pass, &mut summary).await {
                        still.push(lane);
                    }
                    if let Some((limit, reason)) = pass.limit.take() {
                        summary.exit = Exit::LimitExceeded { limit, reason };
                        return summary;
                    }
                }
                lanes = still;
            }
            if *shutdown.borrow() {
                return summary;
            }
            if until_drained && !pass.errored && pass.fetched == 0 {
                summary.exit = Exit::Drained;
                return summary;
            }
            // A pass that delivered something is not a stuck one: the pause does not grow.
            failed_passes = match (pass.errored, pass.fetched) {
                (false, _) => 0,
                (true, 0) => failed_passes + 1,
                (true, _) => 1,
            };
            let wait = if pass.errored {
                ERROR_PAUSE
                    .saturating_mul(1 << (failed_passes - 1).min(8))
                    .min(MAX_ERROR_PAUSE)
            } else if until_drained && pass.fetched > 0 {
                Duration::ZERO
            } else {
                let now = self.clock.now();
                let until = |t: Micros| Duration::from_micros(t.saturating_sub(now).max(0) as u64);
                self.intervals
                    .poll
                    .min(until(next_retry))
                    .min(until(next_sweep))
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Runs one batch of `lane`; true when the batch came back full (more to do).
    async fn one_batch(&self, lane: Lane, pass: &mut Pass, summary: &mut Summary) -> bool {
        let kind = lane.name();
        let span = tracing::info_span!(
            "tick",
            tick = kind,
            fetched = tracing::field::Empty,
            published = tracing::field::Empty,
            retry_scheduled = tracing::field::Empty,
            dead_lettered = tracing::field::Empty,
            more = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = async {
            let mut tenant = self.tenant.lock().await;
            let now = self.clock.now();
            match lane {
                Lane::Scan => tenant.scan_tick(now).await,
                Lane::Retry => tenant.retry_tick(now).await,
                Lane::Sweep => tenant.sweep_tick(now).await,
            }
        }
        .instrument(span.clone())
        .await;
        let took = started.elapsed();
        match result {
            Ok(r) => {
                span.record("fetched", r.fetched)
                    .record("published", r.published)
                    .record("retry_scheduled", r.retry_scheduled)
                    .record("dead_lettered", r.dead_lettered)
                    .record("more", r.more);
                if let Some(m) = &self.metrics {
                    m.tick(kind, &r, took);
                }
                pass.fetched += u64::from(r.fetched);
                summary.published += u64::from(r.published);
                summary.retry_scheduled += u64::from(r.retry_scheduled);
                summary.dead_lettered += u64::from(r.dead_lettered);
                if r.fetched > 0 {
                    span.in_scope(|| {
                        tracing::debug!(
                            cursor_conflict = r.cursor_conflict,
                            seconds = took.as_secs_f64(),
                            "tick done"
                        )
                    });
                }
                r.more
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.tick_failed(kind, took);
                }
                summary.errors += 1;
                pass.errored = true;
                if let Some(limit) = e.limit() {
                    pass.limit = Some((limit, e.to_string()));
                }
                span.in_scope(|| tracing::warn!(error = %e, "tick failed; will try again"));
                false
            }
        }
    }
}

fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

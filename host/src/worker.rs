//! The scheduler: drains the scan, runs the retry and sweep ticks on their
//! intervals, wakes on new rows, and stops between batches on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, watch};
use trustlog_guest::model::{Micros, Operation, RecordOutcome, Strategy, TickReport};

use crate::clock::now_micros;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `--until-drained`: nothing was left to deliver or due.
    Drained,
    /// A shutdown was requested; the batch in flight was finished.
    Shutdown,
}

/// Totals of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    intervals: Intervals,
}

/// Pause after a failed tick so an outage is not a busy loop.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Pass {
    fetched: u64,
    errored: bool,
}

impl Worker {
    /// A worker driving `tenant`.
    pub fn new(tenant: Tenant, intervals: Intervals) -> Worker {
        Worker {
            tenant: Arc::new(Mutex::new(tenant)),
            wake: Arc::new(Notify::new()),
            intervals,
        }
    }

    /// The notifier that wakes the idle scanner; database listeners signal it.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
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
        let (mut next_retry, mut next_sweep) = (now_micros(), now_micros());
        loop {
            let mut pass = Pass::default();
            self.drain("scan", &mut pass, &mut summary, &shutdown, |t, now| {
                Box::pin(t.scan_tick(now))
            })
            .await;
            let now = now_micros();
            if until_drained || now >= next_retry {
                self.drain("retry", &mut pass, &mut summary, &shutdown, |t, now| {
                    Box::pin(t.retry_tick(now))
                })
                .await;
                next_retry = now_micros().saturating_add(retry_every);
            }
            if until_drained || now >= next_sweep {
                self.drain("sweep", &mut pass, &mut summary, &shutdown, |t, now| {
                    Box::pin(t.sweep_tick(now))
                })
                .await;
                next_sweep = now_micros().saturating_add(sweep_every);
            }
            if *shutdown.borrow() {
                return summary;
            }
            if until_drained && !pass.errored && pass.fetched == 0 {
                summary.exit = Exit::Drained;
                return summary;
            }
            let wait = if pass.errored {
                ERROR_PAUSE.min(self.intervals.poll)
            } else if until_drained && pass.fetched > 0 {
                Duration::ZERO
            } else {
                let now = now_micros();
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

    /// Runs one kind of tick until its batch comes back short, an error, or shutdown.
    async fn drain(
        &self,
        kind: &'static str,
        pass: &mut Pass,
        summary: &mut Summary,
        shutdown: &watch::Receiver<bool>,
        tick: impl for<'a> Fn(
            &'a mut Tenant,
            Micros,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = Result<TickReport, TenantError>> + Send + 'a>,
        >,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = {
                let mut tenant = self.tenant.lock().await;
                tick(&mut tenant, now_micros()).await
            };
            match result {
                Ok(r) => {
                    pass.fetched += u64::from(r.fetched);
                    summary.published += u64::from(r.published);
                    summary.retry_scheduled += u64::from(r.retry_scheduled);
                    summary.dead_lettered += u64::from(r.dead_lettered);
                    if r.fetched > 0 {
                        tracing::debug!(
                            tick = kind,
                            fetched = r.fetched,
                            published = r.published,
                            retry_scheduled = r.retry_scheduled,
                            dead_lettered = r.dead_lettered,
                            cursor_conflict = r.cursor_conflict,
                            "tick"
                        );
                    }
                    if !r.more {
                        return;
                    }
                }
                Err(e) => {
                    summary.errors += 1;
                    pass.errored = true;
                    tracing::warn!(tick = kind, error = %e, "tick failed; will try again");
                    return;
                }
            }
        }
    }
}

fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

//! The scheduler: drains the scan, catches up late commits, runs the retry and
//! sweep ticks on their intervals, wakes on new rows, pauses through outages,
//! stands by while another host delivers, and stops between batches on shutdown.
//!
//! Fresh rows and retries share one delivery budget. A pass gives each active kind
//! of tick (scan, catch-up, then retry, then sweep) one batch in turn, and goes round
//! again while any of them came back full. The scan and the catch-up are active in
//! every pass; the retry and sweep ticks join when their interval is due, also in the
//! middle of a long drain. So while a backlog streams in and retries are due, they
//! alternate batch for batch, and either gets every batch when the other has nothing.
//!
//! A pass starts whenever something may be waiting: a row recorded through this
//! host, a PostgreSQL notification (sent at commit, so late commits wake it too), a
//! row seen by the watch probe where the database cannot notify, a due retry or
//! sweep, or the idle poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Notify, broadcast, watch};
use tracing::Instrument;
use trustlog_guest::model::{
    DbError, EngineError, Micros, Operation, RecordOutcome, Strategy, TickReport,
};

use crate::db::Database;
use crate::publisher::Publisher;
use crate::sandbox::limits::LimitKind;
use crate::sandbox::runtime::CallError;
use crate::scheduling::clock::{Clock, SystemClock};
use crate::scheduling::lease::{LeaseKeeper, STANDBY_POLL};
use crate::scheduling::tenant::{Tenant, TenantError};
use crate::surfaces::metrics::TenantMetrics;

/// How often each tick runs when there is nothing to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Idle poll of the scan (the seed's 10 s); a new row wakes it sooner.
    pub poll: Duration,
    /// How often due retries are looked for.
    pub retry: Duration,
    /// How often rows left behind the cursor, however far, are looked for.
    pub sweep: Duration,
    /// How often an idle worker asks the database whether rows wait, where the database
    /// cannot notify it (MariaDB, SQLite written by other processes, PostgreSQL
    /// without LISTEN): one indexed probe, so rows another program writes are
    /// delivered within about this.
    pub watch: Duration,
    /// How long a host's lease on the tenant lasts unless renewed: a standby takes over
    /// from a host that died within about this (at once if it died on the same machine).
    pub lease_ttl: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            poll: Duration::from_secs(10),
            retry: Duration::from_secs(10),
            sweep: Duration::from_secs(60),
            watch: Duration::from_millis(50),
            lease_ttl: crate::scheduling::lease::DEFAULT_TTL,
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `--until-drained`: every row is delivered, db-only or a dead letter.
    Drained,
    /// A shutdown was requested; the batch in flight was finished.
    Shutdown,
    /// The guest ran into one of its limits: the tenant is stopped, with the reason.
    LimitExceeded {
        /// Which limit the guest ran into: memory, table or CPU.
        limit: LimitKind,
        /// The failed call's error, for the log and the status.
        reason: String,
    },
    /// `--until-drained` with a bound: the bound passed with rows still to deliver.
    TimedOut(Left),
    /// `--until-drained`: every tick failed, delivering nothing, for longer than
    /// [`DrainBounds::give_up_after`].
    Failing {
        /// The last tick's error.
        error: String,
        /// How long ticks had been failing.
        failing_for: Duration,
        /// What was left to deliver.
        left: Left,
    },
}

/// When a drain (`run(true, …)`) gives up instead of waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBounds {
    /// The longest a drain may take (`--max-wait`); unbounded when `None`.
    pub max_wait: Option<Duration>,
    /// How long ticks may fail in a row, delivering nothing, before the drain ends
    /// (`--give-up-after`); an outage of the database or the trust log is not a failing
    /// tick: it is waited out (bounded by `max_wait`).
    pub give_up_after: Duration,
}

impl Default for DrainBounds {
    fn default() -> Self {
        DrainBounds {
            max_wait: None,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
        }
    }
}

/// How long a drain lets ticks fail before it ends, by default: six failed passes at the
/// longest error pause, long enough for a database restart, short enough for a script.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What was left to deliver when a bounded drain gave up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Left {
    /// Rows waiting for their first delivery.
    pub waiting: u64,
    /// Rows in the retry queue.
    pub retrying: u64,
    /// When the next retry is due.
    pub next_retry_at: Option<Micros>,
    /// Why delivery was paused, if it was.
    pub outage: Option<String>,
}

/// Totals of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Why the run ended.
    pub exit: Exit,
    /// Envelopes the trust log confirmed, summed over every tick.
    pub published: u64,
    /// Rows whose delivery failed and that were scheduled for a retry.
    pub retry_scheduled: u64,
    /// Rows given up on and dead-lettered.
    pub dead_lettered: u64,
    /// Ticks that failed as a whole: the call returned an error or the guest trapped.
    pub errors: u64,
}

impl Summary {
    /// This run's counts added to a later run's, which ended as `later` did.
    pub fn then(self, later: Summary) -> Summary {
        Summary {
            exit: later.exit,
            published: self.published + later.published,
            retry_scheduled: self.retry_scheduled + later.retry_scheduled,
            dead_lettered: self.dead_lettered + later.dead_lettered,
            errors: self.errors + later.errors,
        }
    }
}

/// What cannot be reached during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageOf {
    /// The trust log (broker, ledger file).
    Publisher,
    /// The database.
    Database,
}

impl OutageOf {
    /// `publisher` or `database`, as metrics and status name it.
    pub fn name(self) -> &'static str {
        match self {
            OutageOf::Publisher => "publisher",
            OutageOf::Database => "database",
        }
    }
}

/// What a worker does now, as `/v1/status`, `/readyz` and the lease row show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivering, or idle with nothing to deliver.
    Active,
    /// Another host holds the lease and delivers; this one stands by.
    Standby {
        /// The host delivering, as the lease row names it.
        holder: String,
    },
    /// Delivery is paused while the publisher or the database cannot be reached; the
    /// worker probes it and resumes within seconds of its return.
    Outage {
        /// Which side is unreachable: the publisher or the database.
        of: OutageOf,
        /// When it began, in Unix microseconds.
        since: Micros,
        /// The last error seen.
        reason: String,
    },
}

impl Delivery {
    /// `active`, `standby` or `outage`.
    pub fn name(&self) -> &'static str {
        match self {
            Delivery::Active => "active",
            Delivery::Standby { .. } => "standby",
            Delivery::Outage { .. } => "outage",
        }
    }

    /// One line for logs and the lease row.
    pub fn describe(&self) -> String {
        match self {
            Delivery::Active => "running".into(),
            Delivery::Standby { holder } => format!("standby: {holder} delivers"),
            Delivery::Outage { of, reason, .. } => {
                format!("outage: {} unreachable: {reason}", of.name())
            }
        }
    }
}

/// How this worker shares its database with other hosts.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This host's name in the lease row.
    pub holder: String,
    /// How long a lease lasts unless renewed.
    pub ttl: Duration,
}

/// A tenant with its scheduler: shareable, so records and ticks interleave.
#[derive(Clone)]
pub struct Worker {
    tenant: Arc<Mutex<Tenant>>,
    db: Database,
    publisher: Publisher,
    cursor_key: String,
    catch_up_window: Micros,
    wake: Arc<Notify>,
    retry_now: Arc<AtomicBool>,
    intervals: Intervals,
    /// Whether the idle worker polls the database with the watch probe.
    watching: bool,
    lease: Option<LeaseSettings>,
    drain: DrainBounds,
    delivery: Arc<StdMutex<Delivery>>,
    clock: Arc<dyn Clock>,
    metrics: Option<TenantMetrics>,
    /// Set while an operator has paused delivery.
    pause: Arc<watch::Sender<Option<Pause>>>,
    /// Where each tick's outcome goes, for a program embedding the host.
    reports: Option<broadcast::Sender<TickEvent>>,
}

/// One tick as it ended, as [`Worker::with_reports`] sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct TickEvent {
    /// Which tick: `scan`, `catch_up`, `retry` or `sweep`.
    pub tick: &'static str,
    /// How long it took, the guest call and its I/O.
    pub took: Duration,
    /// The guest's report, or why the tick failed.
    pub outcome: Result<TickReport, String>,
}

/// Delivery paused by an operator: no batch starts until it is resumed. Rows keep
/// being stored; the pause lives in this host's memory, so a restart resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// When it was paused, in Unix microseconds.
    pub since: Micros,
    /// The credential that paused it.
    pub by: String,
}

/// Pause after a pass with a failed tick, so a trapping guest is not a busy loop; it
/// doubles with each failed pass in a row, up to `MAX_ERROR_PAUSE`.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause after failed passes (the seed's poll interval).
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(10);
/// The first wait before an outage's probe; it doubles up to `MAX_PROBE_PAUSE`.
const PROBE_PAUSE: Duration = Duration::from_millis(250);
/// The longest wait between two probes of an outage: delivery resumes within this (and
/// the probe itself) of the publisher's or the database's return.
const MAX_PROBE_PAUSE: Duration = Duration::from_secs(2);
/// How long one outage probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a drain sleeps before looking again while it waits for a due retry.
const DRAIN_RECHECK: Duration = Duration::from_secs(1);
/// How many times `intervals.watch` the watch probe slows to while no row comes.
const WATCH_SLOWEST: u32 = 20;

/// One kind of tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Scan,
    CatchUp,
    Retry,
    Sweep,
    /// Not a lane of its own: what ends a pass that left scan batches out.
    ScanSettle,
}

impl Lane {
    /// The `tick` label of its metrics: settling delivers the scan's batches, so it
    /// counts as the scan.
    fn series(self) -> &'static str {
        match self {
            Lane::ScanSettle => Lane::Scan.name(),
            other => other.name(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lane::Scan => "scan",
            Lane::ScanSettle => "scan_settle",
            Lane::CatchUp => "catch_up",
            Lane::Retry => "retry",
            Lane::Sweep => "sweep",
        }
    }
}

#[derive(Default)]
struct Pass {
    fetched: u64,
    errored: bool,
    /// The error of the pass's last failed tick.
    error: Option<String>,
    /// A limit the guest ran into: the run ends.
    limit: Option<(LimitKind, String)>,
    /// What could not be reached, and why, if a tick found out.
    outage: Option<(OutageOf, String)>,
    /// The lease was lost in the middle of the pass.
    lease_lost: bool,
    /// The last scan tick left batches out (it said `more`).
    scan_out: bool,
}

/// What a run carries from pass to pass.
struct Run {
    summary: Summary,
    /// The failure deliveries are meeting, while they meet one; logged when it starts.
    failing: Option<String>,
    /// The last error of a failed tick, logged once until another takes its place.
    tick_error: Option<String>,
    /// After a takeover from a host that died, its last batch is published again.
    redelivery_suspected: bool,
    /// The last message of a drain waiting for rows, logged when it changes.
    waiting_for: Option<String>,
    /// The watch probe's current pace.
    watch_pause: Duration,
    next_retry: Micros,
    next_sweep: Micros,
}

/// An outage in progress.
struct Outage {
    of: OutageOf,
    began: Instant,
    pause: Duration,
}

impl Worker {
    /// A worker driving `tenant` on the wall clock.
    pub fn new(tenant: Tenant, intervals: Intervals) -> Worker {
        let db = tenant.db().clone();
        let publisher = tenant.publisher().clone();
        let config = tenant.config();
        let cursor_key = config.cursor_key.clone();
        let catch_up_window =
            Micros::try_from(config.catch_up_window_micros).unwrap_or(Micros::MAX);
        Worker {
            tenant: Arc::new(Mutex::new(tenant)),
            db,
            publisher,
            cursor_key,
            catch_up_window,
            wake: Arc::new(Notify::new()),
            retry_now: Arc::new(AtomicBool::new(false)),
            intervals,
            watching: false,
            lease: None,
            drain: DrainBounds::default(),
            delivery: Arc::new(StdMutex::new(Delivery::Active)),
            clock: Arc::new(SystemClock),
            metrics: None,
            pause: Arc::new(watch::Sender::new(None)),
            reports: None,
        }
    }

    /// The same worker sending every tick's outcome to `reports` (a tick goes on
    /// whether or not anyone receives it).
    pub fn with_reports(mut self, reports: broadcast::Sender<TickEvent>) -> Worker {
        self.reports = Some(reports);
        self
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

    /// The same worker polling the database every `intervals.watch` while idle, for
    /// rows written by programs that cannot wake it.
    pub fn watching(mut self, on: bool) -> Worker {
        self.watching = on;
        self
    }

    /// The same worker delivering only while it holds the database's lease.
    pub fn with_lease(mut self, lease: LeaseSettings) -> Worker {
        self.lease = Some(lease);
        self
    }

    /// The same worker giving up a drain (`run(true, …)`) within `bounds`.
    pub fn with_drain_bounds(mut self, bounds: DrainBounds) -> Worker {
        self.drain = bounds;
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

    /// Pauses delivery once the batch in flight is done; false when it already was.
    pub fn pause(&self, by: &str) -> bool {
        let since = self.clock.now();
        self.pause.send_if_modified(|p| {
            if p.is_some() {
                return false;
            }
            *p = Some(Pause {
                since,
                by: by.to_string(),
            });
            true
        })
    }

    /// Resumes a paused delivery at once; false when it was not paused.
    pub fn resume(&self) -> bool {
        let resumed = self.pause.send_if_modified(|p| p.take().is_some());
        if resumed {
            self.wake.notify_one();
        }
        resumed
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Option<Pause> {
        self.pause.borrow().clone()
    }

    /// The tenant, for calls outside the schedule.
    pub fn tenant(&self) -> &Arc<Mutex<Tenant>> {
        &self.tenant
    }

    /// What the worker does now.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_delivery(&self, to: Delivery, lease: Option<&LeaseKeeper>) {
        if let Some(k) = lease {
            k.set_state(&to.describe());
        }
        *self.delivery.lock().unwrap_or_else(|p| p.into_inner()) = to;
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
        let keeper = self
            .lease
            .as_ref()
            .map(|l| LeaseKeeper::start(self.db.clone(), &self.cursor_key, &l.holder, l.ttl));
        let start = self.clock.now();
        let mut run = Run {
            summary: Summary {
                exit: Exit::Shutdown,
                published: 0,
                retry_scheduled: 0,
                dead_lettered: 0,
                errors: 0,
            },
            failing: None,
            tick_error: None,
            redelivery_suspected: false,
            waiting_for: None,
            watch_pause: self.intervals.watch,
            next_retry: start,
            next_sweep: start,
        };
        let exit = self
            .drive(until_drained, &mut shutdown, &mut run, keeper.as_ref())
            .await;
        run.summary.exit = exit;
        if let Some(k) = keeper {
            // What this host held of the trust log goes before the lease, so the host
            // that takes the lease finds it free.
            self.publisher.hold(false);
            k.release().await;
            if let Some(m) = &self.metrics {
                m.lease_held(false);
            }
        }
        run.summary
    }

    async fn drive(
        &self,
        until_drained: bool,
        shutdown: &mut watch::Receiver<bool>,
        run: &mut Run,
        lease: Option<&LeaseKeeper>,
    ) -> Exit {
        let started = Instant::now();
        let mut failed_passes: u32 = 0;
        // When the passes that fail and deliver nothing began failing.
        let mut failing_since: Option<Instant> = None;
        let mut outage: Option<Outage> = None;
        let mut held = lease.is_none();
        loop {
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
            if until_drained && self.drain.max_wait.is_some_and(|w| started.elapsed() >= w) {
                return Exit::TimedOut(self.left(outage.as_ref()).await);
            }

            if self.pause.borrow().is_some() {
                let mut resumed = self.pause.subscribe();
                tokio::select! {
                    _ = resumed.wait_for(Option::is_none) => {}
                    _ = shutdown.changed() => {}
                    // --max-wait still bounds a drain that is paused.
                    _ = tokio::time::sleep(DRAIN_RECHECK) => {}
                }
                continue;
            }

            if let Some(k) = lease {
                if !k.holds() {
                    if held {
                        tracing::warn!(cursor_key = %self.cursor_key, "lease lost; standing by");
                        held = false;
                    }
                    // A host standing by probes nothing: should it take the lease again,
                    // its next pass finds out whether the outage lasts.
                    if let Some(o) = outage.take()
                        && let Some(m) = &self.metrics
                    {
                        m.outage(o.of, false);
                    }
                    let state = match (k.error(), k.lease()) {
                        // No answer from the database: who delivers cannot be known.
                        (Some(reason), _) => Some(Delivery::Outage {
                            of: OutageOf::Database,
                            since: self.clock.now(),
                            reason: format!("the lease cannot be renewed: {reason}"),
                        }),
                        (None, Some(l)) if l.is_held() && l.holder != k.holder() => {
                            Some(Delivery::Standby { holder: l.holder })
                        }
                        // Not claimed yet (starting), or lapsed here before the row says
                        // so: what it was.
                        _ => None,
                    };
                    match (state, self.delivery()) {
                        (Some(Delivery::Outage { .. }), Delivery::Outage { .. }) | (None, _) => {}
                        (Some(state), _) => self.set_delivery(state, lease),
                    }
                    self.publisher.hold(false);
                    if let Some(m) = &self.metrics {
                        m.lease_held(false);
                    }
                    if until_drained && self.nothing_left().await {
                        return Exit::Drained;
                    }
                    tokio::select! {
                        _ = k.changed(STANDBY_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                if !held {
                    held = true;
                    self.publisher.hold(true);
                    tracing::info!(cursor_key = %self.cursor_key, holder = k.holder(), "lease taken; delivering");
                    // Another host may have moved the cursor while this one stood by.
                    if let Err(e) = self.tenant.lock().await.reset_engine().await {
                        tracing::warn!(error = %e, "could not reset the engine after taking the lease");
                    }
                    if outage.is_none() {
                        self.set_delivery(Delivery::Active, lease);
                    }
                }
                if let Some(m) = &self.metrics {
                    m.lease_held(true);
                }
                if let Some(from) = k.take_takeover() {
                    tracing::warn!(
                        cursor_key = %self.cursor_key,
                        from = %from,
                        "took over from a host whose lease ran out without a release; its last batch may be delivered twice"
                    );
                    if let Some(m) = &self.metrics {
                        m.takeover();
                    }
                    run.redelivery_suspected = true;
                }
            }

            if let Some(o) = outage.as_mut() {
                tokio::select! {
                    _ = tokio::time::sleep(o.pause) => {}
                    _ = shutdown.changed() => continue,
                }
                match self.probe(o.of).await {
                    Ok(()) => {
                        tracing::info!(
                            unreachable = o.of.name(),
                            seconds = o.began.elapsed().as_secs_f64(),
                            "reachable again; delivery resumes"
                        );
                        if let Some(m) = &self.metrics {
                            m.outage(o.of, false);
                        }
                        outage = None;
                        self.set_delivery(Delivery::Active, lease);
                        // What the outage left untouched is due at once.
                        let now = self.clock.now();
                        run.next_retry = now;
                        run.next_sweep = now;
                    }
                    Err(reason) => {
                        tracing::debug!(unreachable = o.of.name(), %reason, "still unreachable");
                        if let Delivery::Outage { of, since, .. } = self.delivery() {
                            self.set_delivery(Delivery::Outage { of, since, reason }, lease);
                        }
                        o.pause = (o.pause * 2).min(MAX_PROBE_PAUSE);
                        continue;
                    }
                }
            }

            let pass = self.pass(until_drained, shutdown, run, lease).await;
            if let Some((limit, reason)) = pass.limit {
                return Exit::LimitExceeded { limit, reason };
            }
            if *shutdown.borrow() {
                return Exit::Shutdown;
            }
            if pass.lease_lost {
                continue;
            }
            if let Some((of, reason)) = pass.outage {
                tracing::warn!(
                    unreachable = of.name(),
                    error = %reason,
                    "delivery paused: the {} cannot be reached; probing until it answers",
                    of.name()
                );
                if let Some(m) = &self.metrics {
                    m.outage(of, true);
                }
                let since = self.clock.now();
                self.set_delivery(Delivery::Outage { of, since, reason }, lease);
                outage = Some(Outage {
                    of,
                    began: Instant::now(),
                    pause: PROBE_PAUSE,
                });
                continue;
            }
            if pass.fetched > 0 {
                run.watch_pause = self.intervals.watch;
            }
            // A pass that delivered something is not a stuck one: the pause does not grow.
            failed_passes = match (pass.errored, pass.fetched) {
                (false, _) => 0,
                (true, 0) => failed_passes + 1,
                (true, _) => 1,
            };
            failing_since = match (pass.errored && pass.fetched == 0, failing_since) {
                (false, _) => None,
                (true, None) => Some(Instant::now()),
                (true, since) => since,
            };
            if until_drained
                && let Some(since) = failing_since
                && since.elapsed() >= self.drain.give_up_after
            {
                return Exit::Failing {
                    error: pass.error.unwrap_or_default(),
                    failing_for: since.elapsed(),
                    left: self.left(None).await,
                };
            }
            let wait = if pass.errored {
                ERROR_PAUSE
                    .saturating_mul(1 << (failed_passes - 1).min(8))
                    .min(MAX_ERROR_PAUSE)
            } else if until_drained && pass.fetched > 0 {
                Duration::ZERO
            } else if until_drained {
                match self.drain_wait(run).await {
                    None => return Exit::Drained,
                    Some(wait) => wait,
                }
            } else {
                let now = self.clock.now();
                let until = |t: Micros| Duration::from_micros(t.saturating_sub(now).max(0) as u64);
                self.intervals
                    .poll
                    .min(until(run.next_retry))
                    .min(until(run.next_sweep))
            };
            if wait.is_zero() {
                continue;
            }
            // After a failed pass the pause is the point: rows waiting would cut it short.
            let since = if self.watching && !until_drained && !pass.errored {
                Some(self.watch_since().await)
            } else {
                None
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
                _ = self.watch_for_rows(since, &mut run.watch_pause) => {}
            }
        }
    }

    /// One pass: the lanes in turn, a batch each, while any comes back full. A pass
    /// cut short (shutdown, pause, lease lost, outage) settles the scan batches out, so
    /// nothing confirmed waits unmarked while this host does not deliver.
    async fn pass(
        &self,
        until_drained: bool,
        shutdown: &watch::Receiver<bool>,
        run: &mut Run,
        lease: Option<&LeaseKeeper>,
    ) -> Pass {
        let mut pass = self.lanes(until_drained, shutdown, run, lease).await;
        if pass.scan_out && pass.limit.is_none() {
            self.one_batch(Lane::ScanSettle, &mut pass, run).await;
        }
        pass
    }

    /// The lanes in turn, a batch each, while any comes back full.
    async fn lanes(
        &self,
        until_drained: bool,
        shutdown: &watch::Receiver<bool>,
        run: &mut Run,
        lease: Option<&LeaseKeeper>,
    ) -> Pass {
        let retry_every = micros(self.intervals.retry);
        let sweep_every = micros(self.intervals.sweep);
        let mut pass = Pass::default();
        let mut lanes = vec![Lane::Scan, Lane::CatchUp];
        let (mut retry_joined, mut sweep_joined) = (false, false);
        // Round-robin, one batch per lane per turn; see the module comment.
        while !lanes.is_empty() && !*shutdown.borrow() && self.pause.borrow().is_none() {
            let now = self.clock.now();
            let nudged = self.retry_now.swap(false, Ordering::SeqCst);
            // Retry and sweep join when their interval is due, again during a long drain;
            // until drained, once per pass, so that a pass ends.
            let due = |joined: bool, next: Micros| {
                if until_drained { !joined } else { now >= next }
            };
            if !lanes.contains(&Lane::Retry) && (nudged || due(retry_joined, run.next_retry)) {
                lanes.push(Lane::Retry);
                retry_joined = true;
                run.next_retry = now.saturating_add(retry_every);
            }
            if !lanes.contains(&Lane::Sweep) && due(sweep_joined, run.next_sweep) {
                lanes.push(Lane::Sweep);
                sweep_joined = true;
                run.next_sweep = now.saturating_add(sweep_every);
            }
            let mut still = Vec::with_capacity(lanes.len());
            for lane in lanes {
                if *shutdown.borrow() || self.pause.borrow().is_some() {
                    break;
                }
                if lease.is_some_and(|k| !k.holds()) {
                    pass.lease_lost = true;
                    return pass;
                }
                if self.one_batch(lane, &mut pass, run).await {
                    still.push(lane);
                }
                if pass.limit.is_some() || pass.outage.is_some() {
                    return pass;
                }
            }
            lanes = still;
        }
        pass
    }

    /// Runs one batch of `lane`; true when the batch came back full (more to do).
    async fn one_batch(&self, lane: Lane, pass: &mut Pass, run: &mut Run) -> bool {
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
                Lane::ScanSettle => tenant.scan_settle(now).await,
                Lane::CatchUp => tenant.catch_up_tick(now).await,
                Lane::Retry => tenant.retry_tick(now).await,
                Lane::Sweep => tenant.sweep_tick(now).await,
            }
        }
        .instrument(span.clone())
        .await;
        let took = started.elapsed();
        if let Some(reports) = &self.reports {
            // No receiver is not an error: nobody is listening now.
            let _ = reports.send(TickEvent {
                tick: kind,
                took,
                outcome: result.as_ref().cloned().map_err(|e| e.to_string()),
            });
        }
        if matches!(lane, Lane::Scan | Lane::ScanSettle) {
            pass.scan_out = result.as_ref().is_ok_and(|r| r.more && !r.cursor_conflict);
        }
        match result {
            Ok(r) => {
                span.record("fetched", r.fetched)
                    .record("published", r.published)
                    .record("retry_scheduled", r.retry_scheduled)
                    .record("dead_lettered", r.dead_lettered)
                    .record("more", r.more);
                if let Some(m) = &self.metrics {
                    m.tick(lane.series(), &r, took);
                    if r.cursor_conflict {
                        // Published, then another worker committed those rows.
                        m.redelivered(u64::from(r.fetched));
                    }
                    if run.redelivery_suspected && r.published > 0 {
                        m.redelivered(u64::from(r.published));
                    }
                }
                if r.published > 0 {
                    run.redelivery_suspected = false;
                }
                if run.tick_error.take().is_some() {
                    span.in_scope(|| tracing::info!("ticks succeed again"));
                }
                pass.fetched += u64::from(r.fetched);
                run.summary.published += u64::from(r.published);
                run.summary.retry_scheduled += u64::from(r.retry_scheduled);
                run.summary.dead_lettered += u64::from(r.dead_lettered);
                if r.fetched > 0 {
                    span.in_scope(|| {
                        tracing::debug!(
                            cursor_conflict = r.cursor_conflict,
                            seconds = took.as_secs_f64(),
                            "tick done"
                        )
                    });
                }
                self.note_failures(&r, run, &span);
                if r.unavailable > 0 {
                    let reason = r
                        .error
                        .clone()
                        .unwrap_or_else(|| "the trust log did not answer".into());
                    pass.outage = Some((OutageOf::Publisher, reason));
                }
                r.more
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.tick_failed(lane.series(), took);
                }
                run.summary.errors += 1;
                pass.errored = true;
                if let Some(limit) = e.limit() {
                    pass.limit = Some((limit, e.to_string()));
                }
                if let Some(reason) = database_unavailable(&e) {
                    pass.outage = Some((OutageOf::Database, reason));
                }
                let error = e.to_string();
                pass.error = Some(error.clone());
                if run.tick_error.as_deref() != Some(error.as_str()) {
                    span.in_scope(|| tracing::warn!(%error, "tick failed; will try again"));
                    run.tick_error = Some(error);
                } else {
                    span.in_scope(|| tracing::debug!(%error, "tick failed again"));
                }
                false
            }
        }
    }

    /// Logs delivery failures once when they start and once when they stop, not per row.
    fn note_failures(&self, r: &TickReport, run: &mut Run, span: &tracing::Span) {
        let failed = r.retry_scheduled + r.dead_lettered;
        if failed > 0 && r.unavailable == 0 {
            if run.failing.is_none() {
                let error = r.error.clone().unwrap_or_default();
                span.in_scope(|| {
                    tracing::warn!(
                        retry_scheduled = r.retry_scheduled,
                        dead_lettered = r.dead_lettered,
                        %error,
                        "deliveries failing; further failures are counted in the metrics"
                    )
                });
                run.failing = Some(error);
            }
        } else if r.published > 0 && run.failing.take().is_some() {
            span.in_scope(|| tracing::info!("deliveries succeed again"));
        }
    }

    /// Whether the outage's publisher or database answers again.
    async fn probe(&self, of: OutageOf) -> Result<(), String> {
        let probe = async {
            match of {
                OutageOf::Publisher => self.publisher.ready().await,
                OutageOf::Database => self.db.ping().await.map_err(|e| e.to_string()),
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }

    /// Until drained: `None` once nothing is left to deliver, else how long to wait
    /// before the next pass (until the next retry is due, at most [`DRAIN_RECHECK`]).
    async fn drain_wait(&self, run: &mut Run) -> Option<Duration> {
        let left = match self.db.backlog().await {
            Ok(left) => left,
            Err(error) => {
                tracing::warn!(%error, "could not read what is left to deliver; looking again");
                return Some(DRAIN_RECHECK);
            }
        };
        if left.is_empty() {
            return None;
        }
        let now = self.clock.now();
        let message = match left.next_retry_at {
            Some(due) if left.waiting == 0 => format!(
                "{} rows wait in the retry queue; the next is due in {:.0} s",
                left.retrying,
                (due.saturating_sub(now).max(0) as f64 / 1e6).ceil()
            ),
            _ => format!(
                "{} rows wait for delivery and {} in the retry queue",
                left.waiting, left.retrying
            ),
        };
        if run.waiting_for.as_deref() != Some(message.as_str()) {
            tracing::info!("not drained yet: {message}");
            run.waiting_for = Some(message);
        }
        let wait = match left.next_retry_at {
            Some(due) if left.waiting == 0 => {
                let until = Duration::from_micros(due.saturating_sub(now).max(0) as u64);
                if until.is_zero() {
                    self.retry_now.store(true, Ordering::SeqCst);
                }
                until.min(DRAIN_RECHECK)
            }
            _ => Duration::from_millis(100),
        };
        Some(wait.max(Duration::from_millis(10)))
    }

    /// Whether nothing is left to deliver (a standby's until-drained check). While the
    /// other host drains a backlog, the index probe answers at its first row, where a
    /// count would walk the whole backlog every second.
    async fn nothing_left(&self) -> bool {
        if !self
            .db
            .has_waiting_since(Micros::MIN)
            .await
            .is_ok_and(|any| !any)
        {
            return false;
        }
        self.db.backlog().await.is_ok_and(|left| left.is_empty())
    }

    /// What a bounded drain leaves behind.
    async fn left(&self, outage: Option<&Outage>) -> Left {
        let left = self.db.backlog().await.unwrap_or_default();
        Left {
            waiting: left.waiting,
            retrying: left.retrying,
            next_retry_at: left.next_retry_at,
            outage: outage.map(|_| self.delivery().describe()),
        }
    }

    /// The oldest timestamp the watch probe looks at: what the scan and the catch-up
    /// would take, from the catch-up window behind the cursor onwards.
    async fn watch_since(&self) -> Micros {
        match self.db.load_cursor(&self.cursor_key).await {
            Ok(Some(p)) => p.timestamp.saturating_sub(self.catch_up_window),
            Ok(None) | Err(_) => Micros::MIN,
        }
    }

    /// Returns once the database holds a row to deliver stamped at or after `since`
    /// (or cannot say); never when not watching. It asks every `intervals.watch` at
    /// first, then a tenth less often at each empty answer, down to every
    /// [`WATCH_SLOWEST`] times that: rows that keep coming are seen within the interval,
    /// and a tenant that gets none costs a probe a second, not twenty.
    async fn watch_for_rows(&self, since: Option<Micros>, pause: &mut Duration) {
        let Some(since) = since else {
            return std::future::pending().await;
        };
        let slowest = self.intervals.watch.saturating_mul(WATCH_SLOWEST);
        loop {
            tokio::time::sleep(*pause).await;
            *pause = pause.mul_f64(1.1).min(slowest);
            match self.db.has_waiting_since(since).await {
                Ok(false) => {}
                Ok(true) => return,
                // The pass it starts meets the error and pauses.
                Err(_) => return,
            }
        }
    }
}

/// The database's message when a tick failed because it cannot be reached.
fn database_unavailable(e: &TenantError) -> Option<String> {
    match e {
        TenantError::Call(CallError::Engine(EngineError::Db(DbError::Unavailable(m)))) => {
            Some(m.clone())
        }
        _ => None,
    }
}

fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

//! The host side of the guest's imports (`db`, `publisher`, `log`), in the
//! engine's own types: one implementation behind both the wasm component and
//! the natively compiled engine, so the two differ by the boundary only.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use trustlog_guest::engine::Level;
use trustlog_guest::envelope_batch::EnvelopeBatch;
use trustlog_guest::model as m;

use crate::db::Database;
use crate::publisher::Publisher;
use crate::sandbox::epoch::Computing;
use crate::sandbox::in_order::{InOrder, Pending};
use crate::sandbox::limits::EPOCH_TICK;
use crate::sandbox::send_line::SendLine;
use crate::surfaces::metrics::TenantMetrics;

/// What a measuring run collects from a tenant's calls: exact delivery latencies
/// and where the time of each engine call went (guest code or host imports).
#[derive(Debug, Default)]
pub struct Probe {
    latencies_micros: Mutex<Vec<i64>>,
    engine_call_nanos: AtomicU64,
    host_import_nanos: AtomicU64,
    /// When each op_id's `TRUSTLOGGED` committed, once [`Probe::record_marks`] asked.
    marks: Mutex<Option<HashMap<String, Instant>>>,
}

impl Probe {
    /// From now on, notes the instant each row's `TRUSTLOGGED` commits.
    pub fn record_marks(&self) {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.get_or_insert_with(HashMap::new);
    }

    /// The instants noted since the last call, by op_id.
    pub fn take_marks(&self) -> HashMap<String, Instant> {
        self.marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn wants_marks(&self) -> bool {
        self.marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn marked(&self, ids: Vec<String>, at: Instant) {
        if let Some(marks) = self
            .marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            marks.extend(ids.into_iter().map(|id| (id, at)));
        }
    }

    /// Insert→`TRUSTLOGGED` latencies observed so far, in microseconds; empties the probe's list.
    pub fn take_latencies(&self) -> Vec<i64> {
        std::mem::take(
            &mut *self
                .latencies_micros
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Total time spent in engine calls (guest code and the host imports they made).
    pub fn engine_call_time(&self) -> Duration {
        Duration::from_nanos(self.engine_call_nanos.load(Ordering::Relaxed))
    }

    /// Total time spent in host imports, within engine calls.
    pub fn host_import_time(&self) -> Duration {
        Duration::from_nanos(self.host_import_nanos.load(Ordering::Relaxed))
    }

    /// Engine call time that was not spent in host imports: guest code and the boundary.
    pub fn guest_time(&self) -> Duration {
        self.engine_call_time()
            .saturating_sub(self.host_import_time())
    }

    /// Adds one engine call's duration.
    pub fn engine_call(&self, took: Duration) {
        self.engine_call_nanos
            .fetch_add(nanos(took), Ordering::Relaxed);
    }

    fn host_import(&self, took: Duration) {
        self.host_import_nanos
            .fetch_add(nanos(took), Ordering::Relaxed);
    }

    fn delivered(&self, latencies: &[i64]) {
        self.latencies_micros
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(latencies);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One tenant's adapters as the guest's imports see them.
pub struct HostImports {
    tenant: Arc<str>,
    db: Database,
    publisher: Publisher,
    metrics: Option<TenantMetrics>,
    probe: Option<Arc<Probe>>,
    /// Timestamps of the rows the last reads returned, so the commit that marks them
    /// can observe insert→`TRUSTLOGGED` latency. Filled only when observed.
    fetched: Fetched,
    /// Batches sent to the trust log, published in order; started at the first send.
    sends: Option<SendLine>,
    /// Units of work begun, committed one after another.
    commits: InOrder,
    log: LogAllowance,
    /// When the last import that waited a whole epoch tick or more returned, in
    /// nanoseconds after `created`; 0 for never. The CPU limiter counts such a wait
    /// as a rest (see [`crate::sandbox::limits::TenantLimiter::should_yield`]).
    waited_until_nanos: AtomicU64,
    created: Instant,
    /// The engine's count of computing guests, for the component's imports: a wait
    /// here counts this guest as resting, so the epoch ticker can rest with it.
    computing: Option<Computing>,
}

impl HostImports {
    /// The imports of `tenant`, over its database and publisher.
    pub fn new(
        tenant: Arc<str>,
        db: Database,
        publisher: Publisher,
        log: LogAllowance,
    ) -> HostImports {
        HostImports {
            tenant,
            db,
            publisher,
            metrics: None,
            probe: None,
            fetched: Fetched::default(),
            sends: None,
            commits: InOrder::default(),
            log,
            waited_until_nanos: AtomicU64::new(0),
            created: Instant::now(),
            computing: None,
        }
    }

    /// Feeds publish and delivery observations into `metrics`.
    pub fn set_metrics(&mut self, metrics: Option<TenantMetrics>) {
        self.metrics = metrics;
    }

    /// Counts this guest as resting in `computing` while an import waits.
    pub fn set_computing(&mut self, computing: Option<Computing>) {
        self.computing = computing;
    }

    /// Feeds exact latencies and host-import time into `probe`.
    pub fn set_probe(&mut self, probe: Option<Arc<Probe>>) {
        self.probe = probe;
    }

    fn observed(&self) -> bool {
        self.metrics.is_some() || self.probe.is_some()
    }

    /// Notes the rows a read returned, for the commit that marks them.
    fn remember<'a>(&mut self, rows: impl Iterator<Item = &'a m::Operation>) {
        if self.observed() {
            self.fetched.read(rows);
        }
    }

    /// Times one import into the probe, if there is one, and notes a long wait.
    async fn timed<R>(&self, f: impl Future<Output = R>) -> R {
        let resting = self.computing.as_ref().map(Computing::rest);
        let started = Instant::now();
        let r = f.await;
        drop(resting);
        let took = started.elapsed();
        if let Some(p) = &self.probe {
            p.host_import(took);
        }
        if took >= EPOCH_TICK {
            let ended = nanos(self.created.elapsed()).max(1);
            self.waited_until_nanos.store(ended, Ordering::Relaxed);
        }
        r
    }

    /// When the last import that waited a whole epoch tick or more returned.
    pub fn waited_until(&self) -> Option<Instant> {
        match self.waited_until_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.created + Duration::from_nanos(n)),
        }
    }

    /// `db.insert`.
    pub async fn insert(
        &mut self,
        ops: Vec<m::Operation>,
        status: m::TrustlogStatus,
    ) -> Result<Vec<m::InsertOutcome>, m::DbError> {
        self.timed(self.db.insert(ops, status)).await
    }

    /// `db.load-cursor`.
    pub async fn load_cursor(&mut self, key: &str) -> Result<Option<m::Position>, m::DbError> {
        self.timed(self.db.load_cursor(key)).await
    }

    /// `db.scan-after`.
    pub async fn scan_after(
        &mut self,
        after: Option<m::Position>,
        limit: u32,
    ) -> Result<m::Fetched<m::Operation>, m::DbError> {
        let fetched = self.timed(self.db.scan_after(after, limit)).await?;
        self.remember(fetched.rows.iter());
        Ok(fetched)
    }

    /// `db.due-retries`.
    pub async fn due_retries(
        &mut self,
        now: m::Micros,
        limit: u32,
    ) -> Result<m::Fetched<m::RetryRow>, m::DbError> {
        let fetched = self.timed(self.db.due_retries(now, limit)).await?;
        self.remember(fetched.rows.iter().map(|r| &r.op));
        Ok(fetched)
    }

    /// `db.sweep-candidates`.
    pub async fn sweep_candidates(
        &mut self,
        before: m::Position,
        since: m::Micros,
        limit: u32,
    ) -> Result<m::Fetched<m::Operation>, m::DbError> {
        let cursor_at = before.timestamp;
        let fetched = self
            .timed(self.db.sweep_candidates(before, since, limit))
            .await?;
        let rows = &fetched.rows;
        if let Some(m) = &self.metrics
            && !rows.is_empty()
        {
            let tick = if since == m::Micros::MIN {
                "sweep"
            } else {
                "catch_up"
            };
            m.late_rows(
                tick,
                rows.iter().map(|op| cursor_at.saturating_sub(op.timestamp)),
            );
        }
        self.remember(fetched.rows.iter());
        Ok(fetched)
    }

    /// `db.stats`.
    pub async fn stats(&mut self, cursor_key: &str) -> Result<m::DbStats, m::DbError> {
        self.timed(self.db.stats(cursor_key)).await
    }

    /// `db.apply`: one transaction; observes the latency of every row it marks.
    pub async fn apply(&mut self, work: m::UnitOfWork) -> Result<(), m::DbError> {
        let watch = self.commit_watch(&work);
        self.timed(commit(self.db.clone(), work, watch)).await
    }

    /// `db.begin-apply`: the unit of work starts on the runtime, after the ones begun before it.
    pub fn begin_apply(&mut self, work: m::UnitOfWork) -> Pending<Result<(), m::DbError>> {
        let watch = self.commit_watch(&work);
        self.commits.spawn(commit(self.db.clone(), work, watch))
    }

    /// `commit.outcome`: waits for a unit of work begun by [`HostImports::begin_apply`].
    pub async fn commit_outcome(
        &mut self,
        pending: Pending<Result<(), m::DbError>>,
    ) -> Result<(), m::DbError> {
        self.timed(pending.wait())
            .await
            .unwrap_or_else(|why| Err(m::DbError::Other(format!("the commit ended: {why}"))))
    }

    /// What the commit of `work` reports once it is done.
    fn commit_watch(&mut self, work: &m::UnitOfWork) -> CommitWatch {
        if !self.observed() {
            return CommitWatch::default();
        }
        CommitWatch {
            metrics: self.metrics.clone(),
            probe: self.probe.clone(),
            marked: self.fetched.take(&work.trustlogged),
            ids: self
                .probe
                .as_ref()
                .filter(|p| p.wants_marks())
                .map(|_| work.trustlogged.clone()),
            confirmed: work.trustlogged.len() as u64,
        }
    }

    /// `publisher.publish`: one result per envelope. A batch whose layout is broken
    /// (only a faulty guest sends one) is refused envelope by envelope, as permanent:
    /// the same guest would send it broken again.
    pub async fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), m::PublishError>> {
        let envelopes = match self.unpacked(&batch) {
            Ok(envelopes) => envelopes,
            Err(refusal) => return refusal,
        };
        let delivery = deliver(self.publisher.clone(), self.metrics.clone(), envelopes);
        self.timed(delivery).await
    }

    /// `publisher.send`: the batch joins the line of batches to publish, in order (see
    /// [`SendLine`]); a malformed one is refused at once, as by `publish`.
    pub fn send(&mut self, batch: EnvelopeBatch) -> Pending<Vec<Result<(), m::PublishError>>> {
        let envelopes = match self.unpacked(&batch) {
            Ok(envelopes) => envelopes,
            Err(refusal) => {
                let (answer, pending) = Pending::channel();
                let _ = answer.send(refusal);
                return pending;
            }
        };
        let (publisher, metrics) = (self.publisher.clone(), self.metrics.clone());
        self.sends
            .get_or_insert_with(|| {
                SendLine::start(Box::new(move |envelopes| {
                    Box::pin(deliver(publisher.clone(), metrics.clone(), envelopes))
                }))
            })
            .send(envelopes)
    }

    /// The envelopes of `batch`, or a permanent refusal of each when its layout is broken.
    fn unpacked(
        &self,
        batch: &EnvelopeBatch,
    ) -> Result<Vec<m::Envelope>, Vec<Result<(), m::PublishError>>> {
        batch.envelopes().map_err(|fault| {
            tracing::warn!(tenant = %self.tenant, %fault, "refusing a malformed envelope batch");
            let refusal = m::PublishError::Permanent(format!("malformed envelope batch: {fault}"));
            vec![Err(refusal); batch.len()]
        })
    }

    /// `delivery.confirmations`: waits for a batch sent by [`HostImports::send`]; a
    /// delivery that ended without an answer leaves every envelope unconfirmed.
    pub async fn confirmations(
        &mut self,
        pending: Pending<Vec<Result<(), m::PublishError>>>,
    ) -> Vec<Result<(), m::PublishError>> {
        self.timed(pending.wait()).await.unwrap_or_else(|why| {
            tracing::error!(tenant = %self.tenant, %why, "a delivery ended without an answer");
            Vec::new()
        })
    }

    /// `digest.sha256`: one digest per payload, with the CPU's SHA instructions where it has them.
    pub fn sha256<'a>(&self, payloads: impl Iterator<Item = &'a [u8]>) -> Vec<[u8; 32]> {
        let started = Instant::now();
        let digests = payloads.map(|p| Sha256::digest(p).into()).collect();
        if let Some(p) = &self.probe {
            p.host_import(started.elapsed());
        }
        digests
    }

    /// `log.log`, rate-limited: a guest that logs without end must not flood the host's log or its disk.
    pub fn log(&mut self, level: Level, message: &str) {
        let tenant = &*self.tenant;
        let (admit, dropped) = self.log.admit();
        if dropped > 0 {
            tracing::warn!(target: "trustlog::guest", tenant, dropped, "guest log lines dropped over the last second (log_lines_per_sec)");
            if let Some(m) = &self.metrics {
                m.guest_log_dropped(dropped);
            }
        }
        if !admit {
            return;
        }
        match level {
            Level::Trace => tracing::trace!(target: "trustlog::guest", tenant, "{message}"),
            Level::Debug => tracing::debug!(target: "trustlog::guest", tenant, "{message}"),
            Level::Info => tracing::info!(target: "trustlog::guest", tenant, "{message}"),
            Level::Warn => tracing::warn!(target: "trustlog::guest", tenant, "{message}"),
            Level::Error => tracing::error!(target: "trustlog::guest", tenant, "{message}"),
        }
    }
}

/// Publishes `envelopes` and judges their failures; see [`HostImports::publish`].
async fn deliver(
    publisher: Publisher,
    metrics: Option<TenantMetrics>,
    envelopes: Vec<m::Envelope>,
) -> Vec<Result<(), m::PublishError>> {
    let started = Instant::now();
    let results = publisher.publish(envelopes).await;
    if let Some(metrics) = &metrics {
        metrics.publish(started.elapsed());
    }
    judge_outage(&publisher, results).await
}

/// What a commit reports when it is done: the latency of every row it marks, and
/// the rows delivered again when it fails. Empty when nobody observes.
#[derive(Default)]
struct CommitWatch {
    metrics: Option<TenantMetrics>,
    probe: Option<Arc<Probe>>,
    /// Insert timestamps of the rows it marks, where the read that returned them was seen.
    marked: Vec<m::Micros>,
    /// The op_ids it marks, when the probe notes when each was marked.
    ids: Option<Vec<String>>,
    confirmed: u64,
}

/// Runs `work` in one transaction and reports it to `watch`.
async fn commit(db: Database, work: m::UnitOfWork, watch: CommitWatch) -> Result<(), m::DbError> {
    if let Err(e) = db.apply(work).await {
        // Confirmed by the trust log but not marked: they are delivered again. (A
        // cursor conflict is counted by the worker, which sees it in the report.)
        if let Some(m) = &watch.metrics
            && !matches!(e, m::DbError::CursorMoved(_))
        {
            m.redelivered(watch.confirmed);
        }
        return Err(e);
    }
    if watch.metrics.is_none() && watch.probe.is_none() {
        return Ok(());
    }
    let committed = crate::scheduling::clock::now_micros();
    let latencies: Vec<i64> = watch
        .marked
        .into_iter()
        .map(|ts| committed.saturating_sub(ts))
        .collect();
    if let Some(m) = &watch.metrics {
        m.delivered(latencies.iter().copied());
    }
    if let Some(p) = &watch.probe {
        p.delivered(&latencies);
        if let Some(ids) = watch.ids {
            p.marked(ids, Instant::now());
        }
    }
    Ok(())
}

/// The insert timestamps of the rows the last reads returned, by op_id: as many
/// reads as a pipeline can have out, and one more.
#[derive(Debug, Default)]
struct Fetched {
    timestamps: HashMap<String, m::Micros>,
    /// The op_ids of each read kept, oldest first, to forget them by.
    reads: VecDeque<Vec<String>>,
}

impl Fetched {
    /// Reads kept: a pipeline's batches out, and the one read meanwhile.
    const READS: usize = trustlog_guest::model::MAX_PIPELINE_DEPTH as usize + 1;

    fn read<'a>(&mut self, rows: impl Iterator<Item = &'a m::Operation>) {
        if self.reads.len() == Self::READS
            && let Some(oldest) = self.reads.pop_front()
        {
            for id in oldest {
                self.timestamps.remove(&id);
            }
        }
        let mut ids = Vec::new();
        for op in rows {
            ids.push(op.op_id.clone());
            self.timestamps.insert(op.op_id.clone(), op.timestamp);
        }
        self.reads.push_back(ids);
    }

    /// The timestamps of `marked` that a kept read returned, forgotten as they are taken.
    fn take(&mut self, marked: &[String]) -> Vec<m::Micros> {
        marked
            .iter()
            .filter_map(|id| self.timestamps.remove(id))
            .collect()
    }
}

/// How long the probe that tells a broker outage from a refused envelope may take.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Envelopes that failed transiently because the trust log as a whole is down, not
/// because of anything in them, become [`m::PublishError::Unavailable`]: after such a
/// failure the publisher is asked whether it answers at all, and if it does not, the
/// rows keep their retries and the worker waits for it. A broker that answers but
/// refused or lost these envelopes leaves them transient, so they spend retries and a
/// bad envelope still reaches the dead letters.
async fn judge_outage(
    publisher: &Publisher,
    mut results: Vec<Result<(), m::PublishError>>,
) -> Vec<Result<(), m::PublishError>> {
    if !results
        .iter()
        .any(|r| matches!(r, Err(m::PublishError::Transient(_))))
    {
        return results;
    }
    let down = match tokio::time::timeout(READY_PROBE_TIMEOUT, publisher.ready()).await {
        Ok(Ok(())) => return results,
        Ok(Err(why)) => why,
        Err(_) => format!("no answer within {READY_PROBE_TIMEOUT:?}"),
    };
    for result in &mut results {
        if let Err(m::PublishError::Transient(message)) = result {
            *result = Err(m::PublishError::Unavailable(format!(
                "{message} (the trust log does not answer: {down})"
            )));
        }
    }
    results
}

/// A tenant's allowance of guest log lines a second, shared by all its instances: a
/// fresh instance (after a trap, or a restart after a limit) gets no fresh allowance.
#[derive(Debug, Clone)]
pub struct LogAllowance {
    per_second: u32,
    gate: Arc<std::sync::Mutex<LogGate>>,
}

impl LogAllowance {
    /// At most `per_second` lines a second.
    pub fn new(per_second: u32) -> LogAllowance {
        LogAllowance {
            per_second,
            gate: Arc::default(),
        }
    }

    fn admit(&self) -> (bool, u64) {
        self.gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(self.per_second)
    }
}

/// Lets a tenant's guest log at most so many lines a second; counts the rest.
#[derive(Debug)]
struct LogGate {
    window: Instant,
    passed: u32,
    dropped: u64,
}

impl Default for LogGate {
    fn default() -> Self {
        LogGate {
            window: Instant::now(),
            passed: 0,
            dropped: 0,
        }
    }
}

impl LogGate {
    /// Whether the next line may pass; at a new window, how many were dropped in the last.
    fn admit(&mut self, per_second: u32) -> (bool, u64) {
        let mut dropped_before = 0;
        if self.window.elapsed() >= Duration::from_secs(1) {
            dropped_before = std::mem::take(&mut self.dropped);
            self.window = Instant::now();
            self.passed = 0;
        }
        if self.passed < per_second {
            self.passed += 1;
            (true, dropped_before)
        } else {
            self.dropped += 1;
            (false, dropped_before)
        }
    }
}

//! The engine: orchestrates one tick at a time over the [`Host`] imports.
//!
//! Every decision lives in the pure modules (backoff, cursor, plan, envelope,
//! validate); this module only sequences the batched host calls, one
//! crossing per batch.

use std::collections::HashSet;

use crate::cursor::{Cursor, FUTURE_SLACK_MICROS};
use crate::envelope_batch::{EnvelopeBatch, Unjoined};
use crate::model::*;
use crate::packed::{RetryRows, Rows};
use crate::pipeline::{Committing, Pipeline, Sent, Tally};
use crate::plan::{self, Attempt};
use crate::validate;

/// The imports the engine needs: the `db`, `publisher`, `log` and `digest` interfaces.
pub trait Host {
    /// A batch handed to the trust log by [`Host::send`], confirmations still to collect.
    type Delivery;
    /// A unit of work handed to the database by [`Host::begin_apply`], outcome still to collect.
    type Commit;

    /// Stores `ops` with one status; one outcome per input, in order.
    fn insert(
        &mut self,
        ops: Vec<Operation>,
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError>;
    /// Reads the position of cursor `key`; none when it was never set.
    fn load_cursor(&mut self, key: &str) -> Result<Option<Position>, DbError>;
    /// `NOT_TRUSTLOGGED` rows after `after` with no retry row, in keyset order.
    fn scan_after(&mut self, after: Option<Position>, limit: u32) -> Result<Rows, DbError>;
    /// Retry rows due at `now` (pending or retrying), oldest due first.
    fn due_retries(&mut self, now: Micros, limit: u32) -> Result<RetryRows, DbError>;
    /// `NOT_TRUSTLOGGED` rows before `before`, from `since` on, with no retry row.
    fn sweep_candidates(
        &mut self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Rows, DbError>;
    /// The monitoring counts, relative to cursor `cursor_key`.
    fn stats(&mut self, cursor_key: &str) -> Result<DbStats, DbError>;
    /// Runs a unit of work in a single transaction.
    fn apply(&mut self, work: UnitOfWork) -> Result<(), DbError>;
    /// Starts a unit of work in a single transaction and returns at once; units begun
    /// one after another commit in that order.
    fn begin_apply(&mut self, work: UnitOfWork) -> Self::Commit;
    /// Waits for a unit of work begun by [`Host::begin_apply`].
    fn commit_outcome(&mut self, commit: Self::Commit) -> Result<(), DbError>;
    /// Delivers a sealed batch; one result per envelope, in order.
    fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), PublishError>>;
    /// Hands a sealed batch to the trust log and returns at once; batches sent one
    /// after another reach it in that order.
    fn send(&mut self, batch: EnvelopeBatch) -> Self::Delivery;
    /// Waits for a sent batch's confirmations: one result per envelope, in order.
    fn confirmations(&mut self, delivery: Self::Delivery) -> Vec<Result<(), PublishError>>;
    /// Emits one record into the host's log.
    fn log(&mut self, level: Level, message: &str);
    /// The SHA-256 of each payload, in order: `payloads` cut where `ends` say.
    fn sha256(&mut self, payloads: &[u8], ends: &[u32]) -> Vec<[u8; 32]>;
}

/// Log levels of the `log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The finest detail.
    Trace,
    /// Detail for diagnosis, such as what a catch-up tick found.
    Debug,
    /// Normal events worth noting, such as rows a sweep found.
    Info,
    /// Something unexpected that delivery recovers from, such as a cursor conflict.
    Warn,
    /// A failure that needs attention.
    Error,
}

/// The engine's state between calls: its configuration, its cursor and the scan's
/// batches out (`D` and `C` are the host's [`Host::Delivery`] and [`Host::Commit`]).
pub struct Engine<D, C> {
    config: Option<Config>,
    cursor: Cursor,
    pipeline: Pipeline<D, C>,
}

impl<D, C> Default for Engine<D, C> {
    fn default() -> Self {
        Engine {
            config: None,
            cursor: Cursor::default(),
            pipeline: Pipeline::default(),
        }
    }
}

impl<D, C> Engine<D, C> {
    /// A fresh, unconfigured engine.
    pub fn new() -> Self {
        Engine::default()
    }

    /// Checks and adopts `cfg`, and forgets the cursor position it had cached.
    pub fn configure(&mut self, cfg: Config) -> Result<(), EngineError> {
        if cfg.cursor_key.is_empty() {
            return Err(EngineError::InvalidConfig(FieldError::new(
                "cursor_key",
                "must not be empty",
            )));
        }
        if cfg.batch_size == 0 {
            return Err(EngineError::InvalidConfig(FieldError::new(
                "batch_size",
                "must be at least 1",
            )));
        }
        if !(1..=MAX_PIPELINE_DEPTH).contains(&cfg.pipeline_depth) {
            return Err(EngineError::InvalidConfig(FieldError::new(
                "pipeline_depth",
                format!("must be 1 to {MAX_PIPELINE_DEPTH}"),
            )));
        }
        cfg.backoff.validate().map_err(EngineError::InvalidConfig)?;
        // The cursor is read anew at the next tick: the host configures again when
        // another worker may have moved it meanwhile. What the scan had out is let go
        // of; its rows are delivered again.
        self.cursor = Cursor::default();
        self.pipeline = Pipeline::default();
        self.config = Some(cfg);
        Ok(())
    }

    fn config(&self) -> Result<&Config, EngineError> {
        self.config.as_ref().ok_or(EngineError::NotConfigured)
    }

    /// Applies a strategy to `ops`; one outcome per input, in order.
    pub fn record(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        ops: Vec<Operation>,
        strategy: Option<Strategy>,
    ) -> Result<Vec<RecordOutcome>, EngineError> {
        let strategy = strategy.unwrap_or(self.config()?.default_strategy);
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; ops.len()];
        let mut valid = Vec::with_capacity(ops.len());
        let mut valid_at = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            match validate::operation(&op) {
                Ok(()) => {
                    valid_at.push(i);
                    valid.push(op);
                }
                Err(e) => outcomes[i] = Some(RecordOutcome::Rejected(e)),
            }
        }
        match strategy {
            Strategy::DbOnly | Strategy::DbAndTrustlog => {
                let status = if strategy == Strategy::DbOnly {
                    TrustlogStatus::DbOnly
                } else {
                    TrustlogStatus::NotTrustlogged
                };
                let stored = if valid.is_empty() {
                    Vec::new()
                } else {
                    host.insert(valid, status)?
                };
                for (i, outcome) in valid_at.iter().zip(stored) {
                    outcomes[*i] = Some(match outcome {
                        InsertOutcome::Inserted => RecordOutcome::Stored,
                        InsertOutcome::Duplicate => RecordOutcome::Duplicate,
                    });
                }
            }
            Strategy::TrustlogOnly => {
                // Nothing is stored, so a repeated op_id inside one call is the only duplicate we can see.
                let mut seen = HashSet::new();
                let mut unique = Vec::with_capacity(valid.len());
                for (i, op) in valid_at.iter().zip(&valid) {
                    if seen.insert(op.op_id.as_str()) {
                        unique.push((*i, op));
                    } else {
                        outcomes[*i] = Some(RecordOutcome::Duplicate);
                    }
                }
                let (batch, slots) =
                    build_envelopes(host, unique.iter().map(|(_, op)| op.view()), unique.len());
                let mut batch_at = Vec::with_capacity(batch.len());
                for ((i, _), slot) in unique.iter().zip(slots) {
                    match slot {
                        Ok(()) => batch_at.push(*i),
                        Err(Unbuilt::Invalid(e)) => outcomes[*i] = Some(RecordOutcome::Rejected(e)),
                        Err(unbuilt) => {
                            outcomes[*i] = Some(RecordOutcome::PublishFailed(unbuilt.into()))
                        }
                    }
                }
                let results = if batch.is_empty() {
                    Vec::new()
                } else {
                    host.publish(batch)
                };
                let mut results = results.into_iter();
                for i in batch_at {
                    outcomes[i] = Some(match results.next() {
                        Some(Ok(())) => RecordOutcome::Published,
                        Some(Err(e)) => RecordOutcome::PublishFailed(e),
                        None => RecordOutcome::PublishFailed(PublishError::Transient(
                            "publisher returned no result".into(),
                        )),
                    });
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    RecordOutcome::Rejected(FieldError::new(
                        "op_id",
                        "no outcome from the database",
                    ))
                })
            })
            .collect())
    }

    fn cursor_position(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        key: &str,
    ) -> Result<Option<Position>, EngineError> {
        if let Some(p) = self.cursor.known() {
            return Ok(p.clone());
        }
        let p = host.load_cursor(key)?;
        self.cursor.loaded(p.clone());
        Ok(p)
    }

    /// Reads the next batch after the cursor and delivers it, pipelined: up to
    /// `pipeline_depth` batches are out at once (see `scan-tick` in the WIT for the
    /// whole contract). The report counts the batches whose commit this call saw.
    ///
    /// The cursor moves over each batch's rows settled in order, up to the first one
    /// the trust log could not be reached for, and no further than
    /// [`FUTURE_SLACK_MICROS`] past `now`. A batch that stops short of its end stalls
    /// the run: the batches out after it commit what they settled without moving the
    /// cursor, nothing more is read, and the next call reads from where the cursor
    /// stopped, which finds exactly the rows still to deliver.
    pub fn scan_tick(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<TickReport, EngineError> {
        let cfg = self.config()?.clone();
        let mut tally = Tally::default();
        let from = match self.pipeline.read_from.clone() {
            Some(from) => from,
            None => {
                let at = self.cursor_position(host, &cfg.cursor_key)?;
                self.pipeline.planned = at.clone();
                at
            }
        };
        let fetched_rows = match host.scan_after(from.clone(), cfg.batch_size) {
            Ok(rows) => rows,
            Err(e) => return Err(self.read_failed(host, now, &cfg, &mut tally, e)),
        };
        let rows = match fetched_rows.views() {
            Ok(rows) => rows,
            Err(e) => return Err(self.read_failed(host, now, &cfg, &mut tally, e)),
        };
        let faults = fetched_rows.faults();
        let fetched = (rows.len() + faults.len()) as u32;
        let full = fetched >= cfg.batch_size;
        // A fault has no position to read on from, so a batch with one is the run's last.
        let mut flush = !full || !faults.is_empty() || rows.is_empty();
        if fetched > 0 {
            let last = Cursor::furthest(&rows).map(OperationRef::position);
            let prepared = prepare(host, rows.into_iter().map(|op| (op, 0, true)), faults, true);
            let delivery = (!prepared.batch.is_empty()).then(|| host.send(prepared.batch));
            self.pipeline.read_from = Some(last.or(from));
            self.pipeline.sent.push_back(Sent {
                delivery,
                rows: fetched_rows,
                attempts: prepared.attempts,
                failed: prepared.failed,
                unreadable: prepared.unreadable,
                fetched,
            });
        }
        let depth = cfg.pipeline_depth as usize;
        while self.pipeline.out() > 0 && (flush || self.pipeline.out() >= depth) {
            match self.settle_next(host, now, &cfg, &mut tally)? {
                Flow::Going => {}
                Flow::Short => flush = true,
                Flow::Conflict => break,
            }
        }
        if self.pipeline.out() == 0 {
            self.pipeline = Pipeline::default();
        }
        let more = tally_more(&tally, full) || self.pipeline.out() > 0;
        Ok(tally.report(more))
    }

    /// Settles every batch the scan has out, in order, and waits for the last commit;
    /// reads nothing.
    pub fn scan_settle(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<TickReport, EngineError> {
        let cfg = self.config()?.clone();
        let mut tally = Tally::default();
        self.settle_all(host, now, &cfg, &mut tally)?;
        let more = tally_more(&tally, false);
        Ok(tally.report(more))
    }

    /// Settles every batch out, in order, until none is or a commit meets a cursor
    /// conflict (which lets go of the rest); the pipeline then starts afresh.
    fn settle_all(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
        cfg: &Config,
        tally: &mut Tally,
    ) -> Result<(), EngineError> {
        while self.pipeline.out() > 0 {
            if self.settle_next(host, now, cfg, tally)? == Flow::Conflict {
                break;
            }
        }
        self.pipeline = Pipeline::default();
        Ok(())
    }

    /// A failed read settles what is out before it returns the read's error, unless
    /// settling fails too: then that error, which left rows uncommitted, is returned.
    fn read_failed(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
        cfg: &Config,
        tally: &mut Tally,
        e: DbError,
    ) -> EngineError {
        if let Err(settling) = self.settle_all(host, now, cfg, tally) {
            return settling;
        }
        self.cursor.forget();
        e.into()
    }

    /// The next step of the pipeline: the oldest sent batch's confirmations, the commit
    /// before it, and its own commit begun; or, with nothing sent, the last commit.
    fn settle_next(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
        cfg: &Config,
        tally: &mut Tally,
    ) -> Result<Flow, EngineError> {
        let Some(sent) = self.pipeline.sent.pop_front() else {
            return self.finish_commit(host, tally, 0);
        };
        let results = match sent.delivery {
            Some(delivery) => host.confirmations(delivery),
            None => Vec::new(),
        };
        // Commits go in order: this batch's waits for the outcome of the one before.
        if self.finish_commit(host, tally, sent.fetched)? == Flow::Conflict {
            return Ok(Flow::Conflict);
        }
        let (mut work, outcome) = conclude(
            now,
            &cfg.backoff,
            sent.attempts,
            sent.failed,
            sent.unreadable,
            results,
        );
        let rows = sent.rows.views().map_err(EngineError::Db)?;
        let horizon = now.saturating_add(FUTURE_SLACK_MICROS);
        let movable: Vec<&OperationRef<'_>> =
            Cursor::movable(&rows, &outcome.unavailable, horizon).collect();
        let short = movable.len() < rows.len() || !outcome.unavailable.is_empty();
        if !self.pipeline.stalled {
            work.cursor = Cursor::plan_move(&cfg.cursor_key, &self.pipeline.planned, movable);
        }
        self.pipeline.stalled |= short;
        let to = work.cursor.as_ref().map(|m| m.to.clone());
        if let Some(to) = &to {
            self.pipeline.planned = Some(to.clone());
        }
        self.pipeline.committing = Some(Committing {
            commit: host.begin_apply(work),
            to,
            fetched: sent.fetched,
            outcome,
        });
        Ok(if short { Flow::Short } else { Flow::Going })
    }

    /// Collects the outcome of the commit out, if any. On a cursor conflict everything
    /// out is let go of (with `popped` rows already taken off it) and the cursor is
    /// read anew next time; on another failure, the same, and the error is returned.
    fn finish_commit(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        tally: &mut Tally,
        popped: u32,
    ) -> Result<Flow, EngineError> {
        let Some(committing) = self.pipeline.committing.take() else {
            return Ok(Flow::Going);
        };
        match host.commit_outcome(committing.commit) {
            Ok(()) => {
                if let Some(to) = committing.to {
                    self.cursor.committed(to);
                }
                tally.committed(committing.fetched, committing.outcome);
                Ok(Flow::Going)
            }
            Err(DbError::CursorMoved(key)) => {
                // Another worker got there first; what we published is delivered at least once.
                let dropped = self.pipeline.drop_all();
                tally.conflicted(committing.fetched + popped + dropped);
                self.cursor.forget();
                host.log(
                    Level::Warn,
                    &format!("cursor {key:?} moved by another worker; rescanning"),
                );
                Ok(Flow::Conflict)
            }
            Err(e) => {
                self.pipeline.drop_all();
                self.cursor.forget();
                Err(e.into())
            }
        }
    }

    /// Re-publishes a batch of due retries.
    pub fn retry_tick(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<TickReport, EngineError> {
        let cfg = self.config()?.clone();
        let fetched_rows = host.due_retries(now, cfg.batch_size)?;
        let rows = fetched_rows.views()?;
        let faults = fetched_rows.faults();
        let fetched = (rows.len() + faults.len()) as u32;
        if fetched == 0 {
            return Ok(TickReport::default());
        }
        let (work, outcome) = deliver(
            host,
            now,
            &cfg.backoff,
            rows.into_iter().map(|(op, retries)| (op, retries, false)),
            faults,
            false,
        );
        host.apply(work)?;
        Ok(report(fetched, outcome, fetched >= cfg.batch_size))
    }

    /// Delivers a batch of rows left behind the cursor (late commits, manual fixes),
    /// however far behind.
    pub fn sweep_tick(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<TickReport, EngineError> {
        self.behind_cursor(host, now, Behind::Sweep)
    }

    /// Delivers a batch of rows that committed after the cursor passed their position,
    /// looking back only `catch_up_window_micros`: cheap enough for every wake-up.
    pub fn catch_up_tick(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<TickReport, EngineError> {
        if self.config()?.catch_up_window_micros == 0 {
            return Ok(TickReport::default());
        }
        self.behind_cursor(host, now, Behind::CatchUp)
    }

    fn behind_cursor(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
        how: Behind,
    ) -> Result<TickReport, EngineError> {
        let cfg = self.config()?.clone();
        let Some(before) = self.cursor_position(host, &cfg.cursor_key)? else {
            return Ok(TickReport::default());
        };
        let since = match how {
            Behind::Sweep => Micros::MIN,
            Behind::CatchUp => before.timestamp.saturating_sub(
                Micros::try_from(cfg.catch_up_window_micros).unwrap_or(Micros::MAX),
            ),
        };
        let fetched_rows = host.sweep_candidates(before, since, cfg.batch_size)?;
        let rows = fetched_rows.views()?;
        let faults = fetched_rows.faults();
        let fetched = (rows.len() + faults.len()) as u32;
        if fetched == 0 {
            return Ok(TickReport::default());
        }
        let (level, what) = match how {
            Behind::Sweep => (Level::Info, "sweep"),
            Behind::CatchUp => (Level::Debug, "catch-up"),
        };
        host.log(
            level,
            &format!("{what} found {fetched} rows behind the cursor"),
        );
        let (work, outcome) = deliver(
            host,
            now,
            &cfg.backoff,
            rows.into_iter().map(|op| (op, 0, true)),
            faults,
            true,
        );
        host.apply(work)?;
        Ok(report(fetched, outcome, fetched >= cfg.batch_size))
    }

    /// The monitoring figures at `now`.
    pub fn status(
        &mut self,
        host: &mut impl Host<Delivery = D, Commit = C>,
        now: Micros,
    ) -> Result<StatusReport, EngineError> {
        let cfg = self.config()?;
        let stats = host.stats(&cfg.cursor_key)?;
        let cursor_lag_seconds = stats
            .oldest_waiting
            .map_or(0.0, |t| now.saturating_sub(t).max(0) as f64 / 1e6);
        Ok(StatusReport {
            stats,
            cursor_lag_seconds,
        })
    }
}

/// Where the pipeline stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// On as planned.
    Going,
    /// A batch settled short of its end: settle everything out and read no more.
    Short,
    /// A commit met a cursor moved by another worker: everything out was let go of.
    Conflict,
}

/// Whether the scan should be called again at once: after a conflict, to rescan; after
/// a full read, unless the trust log could not be reached.
fn tally_more(tally: &Tally, full: bool) -> bool {
    tally.conflicted_now() || (full && tally.unavailable() == 0)
}

/// Which rows behind the cursor a tick looks at.
#[derive(Debug, Clone, Copy)]
enum Behind {
    /// All of them.
    Sweep,
    /// Those within the catch-up window.
    CatchUp,
}

/// A batch the trust log could not be reached for is not worth following with another
/// at once: `more` is cleared, and the host pauses until it is back.
fn report(fetched: u32, outcome: plan::Outcome, more: bool) -> TickReport {
    let mut tally = Tally::default();
    tally.committed(fetched, outcome);
    let more = tally_more(&tally, more);
    tally.report(more)
}

/// Why an operation went without an envelope.
enum Unbuilt {
    /// Its fields cannot be encoded, now or ever.
    Invalid(FieldError),
    /// The batch had no room left for it; a later attempt will find some.
    NoRoom,
    /// The host's digest answer fell short; a later attempt may succeed.
    NoDigest(String),
}

impl From<Unbuilt> for PublishError {
    fn from(why: Unbuilt) -> Self {
        match why {
            Unbuilt::Invalid(e) => PublishError::Permanent(format!("cannot build envelope: {e}")),
            Unbuilt::NoRoom => PublishError::Transient(
                "the envelope batch was full; a later batch takes this one".into(),
            ),
            Unbuilt::NoDigest(why) => PublishError::Transient(why),
        }
    }
}

/// The envelopes of `count` operations, packed in order and sealed by the host's
/// `digest` in one call, with one slot per operation: `Ok` if it is the batch's next
/// envelope, or why it is not in the batch.
fn build_envelopes<'a>(
    host: &mut impl Host,
    ops: impl Iterator<Item = OperationRef<'a>>,
    count: usize,
) -> (EnvelopeBatch, Vec<Result<(), Unbuilt>>) {
    let mut batch = EnvelopeBatch::with_capacity(count);
    let mut slots: Vec<Result<(), Unbuilt>> = ops
        .map(|op| {
            // A stored row may hold what `record` would have refused (plain SQL, SQLite's
            // unbounded TEXT): it can never be delivered as it is.
            validate::stored(op).map_err(Unbuilt::Invalid)?;
            batch.push(op).map_err(|e| match e {
                Unjoined::Invalid(e) => Unbuilt::Invalid(e),
                Unjoined::Full => Unbuilt::NoRoom,
            })
        })
        .collect();
    if batch.is_empty() {
        return (batch, slots);
    }
    let (payloads, ends) = batch.payloads();
    let digests = host.sha256(payloads, ends);
    if digests.len() != batch.len() {
        let why = format!(
            "the host hashed {} of {} payloads",
            digests.len(),
            batch.len()
        );
        for slot in slots.iter_mut().filter(|s| s.is_ok()) {
            *slot = Err(Unbuilt::NoDigest(why.clone()));
        }
        return (EnvelopeBatch::default(), slots);
    }
    batch.seal(&digests);
    (batch, slots)
}

/// A batch's rows on their way: the envelopes to hand over, and the rows that failed
/// before any was sent.
struct Prepared {
    batch: EnvelopeBatch,
    /// One per envelope of `batch`, in order.
    attempts: Vec<Attempt>,
    /// A row whose envelope cannot be built fails for good: it never will be. So
    /// does a row the host could not read (a `fault`).
    failed: Vec<(Attempt, PublishError)>,
    /// Rows the host could not read.
    unreadable: u32,
}

/// Builds the envelopes of `rows` and sets aside what cannot be sent: unbuildable
/// rows and `faults` (of attempts that are `first` or not).
fn prepare<'a>(
    host: &mut impl Host,
    rows: impl Iterator<Item = (OperationRef<'a>, u32, bool)>,
    faults: &[RowFault],
    first: bool,
) -> Prepared {
    let (ops, all): (Vec<OperationRef<'a>>, Vec<Attempt>) = rows
        .map(|(op, retries_done, first)| {
            let attempt = Attempt {
                op_id: op.op_id.to_owned(),
                retries_done,
                first,
            };
            (op, attempt)
        })
        .unzip();
    let count = ops.len();
    let (batch, slots) = build_envelopes(host, ops.into_iter(), count);
    let mut attempts = Vec::with_capacity(count);
    let mut failed = Vec::new();
    for (attempt, slot) in all.into_iter().zip(slots) {
        match slot {
            Ok(()) => attempts.push(attempt),
            Err(why) => failed.push((attempt, why.into())),
        }
    }
    for fault in faults {
        let attempt = Attempt {
            op_id: fault.op_id.clone(),
            retries_done: fault.retry_count,
            first,
        };
        failed.push((attempt, PublishError::Permanent(fault.to_string())));
    }
    Prepared {
        batch,
        attempts,
        failed,
        unreadable: faults.len() as u32,
    }
}

/// The unit of work of a batch whose envelopes got `results` (a short answer leaves
/// the rest unconfirmed).
fn conclude(
    now: Micros,
    backoff: &Backoff,
    mut attempts: Vec<Attempt>,
    failed: Vec<(Attempt, PublishError)>,
    unreadable: u32,
    mut results: Vec<Result<(), PublishError>>,
) -> (UnitOfWork, plan::Outcome) {
    results.truncate(attempts.len());
    results.resize_with(attempts.len(), || {
        Err(PublishError::Transient(
            "publisher returned no result for this envelope".into(),
        ))
    });
    for (attempt, why) in failed {
        attempts.push(attempt);
        results.push(Err(why));
    }
    let (work, mut outcome) = plan::deliveries(now, backoff, attempts, results);
    outcome.unreadable = unreadable;
    (work, outcome)
}

/// Delivers `rows` at once: builds, publishes and waits, then plans the unit of work.
fn deliver<'a>(
    host: &mut impl Host,
    now: Micros,
    backoff: &Backoff,
    rows: impl Iterator<Item = (OperationRef<'a>, u32, bool)>,
    faults: &[RowFault],
    first: bool,
) -> (UnitOfWork, plan::Outcome) {
    let prepared = prepare(host, rows, faults, first);
    let results = if prepared.batch.is_empty() {
        Vec::new()
    } else {
        host.publish(prepared.batch)
    };
    conclude(
        now,
        backoff,
        prepared.attempts,
        prepared.failed,
        prepared.unreadable,
        results,
    )
}

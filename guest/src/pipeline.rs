//! What the scan has out between calls: batches at the trust log and the one
//! committing, with where the next read starts and where the cursor will stand.
//!
//! The engine sequences the pipeline ([`crate::engine`]); this module only holds
//! its state and adds up what the settled batches report.

use std::collections::VecDeque;

use crate::model::{Position, PublishError, TickReport};
use crate::packed::Rows;
use crate::plan::{Attempt, Outcome};

/// A batch handed to the trust log, its confirmations not yet collected.
pub struct Sent<D> {
    /// The trust log's handle on its envelopes; none when no row could be built into one.
    pub delivery: Option<D>,
    /// The rows as read, for the cursor's move once the batch settles.
    pub rows: Rows,
    /// One per envelope sent, in order.
    pub attempts: Vec<Attempt>,
    /// Rows that failed before sending (unbuildable or unreadable), with why.
    pub failed: Vec<(Attempt, PublishError)>,
    /// Rows the host could not read (also in `failed`).
    pub unreadable: u32,
    /// Rows read, readable or not.
    pub fetched: u32,
}

/// A batch whose unit of work the database is committing.
pub struct Committing<C> {
    /// The database's handle on the transaction.
    pub commit: C,
    /// Where the cursor stands once it commits; none when it moves no cursor.
    pub to: Option<Position>,
    /// Rows read, readable or not.
    pub fetched: u32,
    /// What the batch's deliveries came to.
    pub outcome: Outcome,
}

/// The scan's batches out, oldest first; empty between runs.
pub struct Pipeline<D, C> {
    /// Sent to the trust log, in the order read.
    pub sent: VecDeque<Sent<D>>,
    /// Older than every batch in `sent`.
    pub committing: Option<Committing<C>>,
    /// Where the next read starts; `None` when nothing is out, so the read starts at
    /// the committed cursor (`Some(None)`: the table's start).
    pub read_from: Option<Option<Position>>,
    /// The cursor once every commit begun succeeds: the next move's expected value.
    pub planned: Option<Position>,
    /// A batch settled short of its end: the ones after it move no cursor.
    pub stalled: bool,
}

impl<D, C> Default for Pipeline<D, C> {
    fn default() -> Self {
        Pipeline {
            sent: VecDeque::new(),
            committing: None,
            read_from: None,
            planned: None,
            stalled: false,
        }
    }
}

impl<D, C> Pipeline<D, C> {
    /// Batches out: sent, or committing.
    pub fn out(&self) -> usize {
        self.sent.len() + usize::from(self.committing.is_some())
    }

    /// Lets go of everything out (its rows are delivered again later) and returns how
    /// many rows it held.
    pub fn drop_all(&mut self) -> u32 {
        let rows = self.sent.iter().map(|s| s.fetched).sum::<u32>()
            + self.committing.as_ref().map_or(0, |c| c.fetched);
        *self = Pipeline::default();
        rows
    }
}

/// What the batches settled in one call came to.
#[derive(Debug, Default)]
pub struct Tally {
    report: TickReport,
}

impl Tally {
    /// Adds a batch whose commit succeeded.
    pub fn committed(&mut self, fetched: u32, outcome: Outcome) {
        let r = &mut self.report;
        r.fetched += fetched;
        r.published += outcome.published;
        r.retry_scheduled += outcome.retry_scheduled;
        r.dead_lettered += outcome.dead_lettered;
        r.unavailable += outcome.unavailable.len() as u32;
        r.unreadable += outcome.unreadable;
        // An unavailable failure says the most; else the first one seen.
        let unavailable = !outcome.unavailable.is_empty();
        if r.error.is_none() || (unavailable && r.unavailable == outcome.unavailable.len() as u32) {
            r.error = outcome.error.or(r.error.take());
        }
    }

    /// Notes rows lost to a cursor conflict: read, and let go of uncommitted.
    pub fn conflicted(&mut self, rows: u32) {
        self.report.fetched += rows;
        self.report.cursor_conflict = true;
    }

    /// Whether a commit met a cursor another worker had moved.
    pub fn conflicted_now(&self) -> bool {
        self.report.cursor_conflict
    }

    /// Rows the trust log could not be reached for, so far.
    pub fn unavailable(&self) -> u32 {
        self.report.unavailable
    }

    /// The report, with `more` as the caller decided.
    pub fn report(self, more: bool) -> TickReport {
        TickReport {
            more,
            ..self.report
        }
    }
}

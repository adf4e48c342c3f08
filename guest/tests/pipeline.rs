//! The pipelined scan as a specification: over an in-memory database and trust log
//! that fail rows as scripted, whatever the depth, batch size and failures, the
//! cursor never passes a row that is neither delivered nor in the retry queue, units
//! commit in the order their batches were read, nothing is published twice, and once
//! the trust log answers again every row ends delivered or in the retry queue.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use trustlog_guest::engine::{Engine, Host, Level};
use trustlog_guest::envelope_batch::{EnvelopeBatch, spans};
use trustlog_guest::model::{
    Config, DbError, DbStats, Fetched, InsertOutcome, MAX_PIPELINE_DEPTH, Micros, Operation,
    Position, PublishError, TickReport, TrustlogStatus, UnitOfWork,
};
use trustlog_guest::packed::{RetryRows, Rows};

const NOW: Micros = 1_764_000_000_000_000;

/// What the scripted trust log does with an op_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Confirm,
    Transient,
    Permanent,
    Unavailable,
}

/// The database and the trust log, in memory, checking every unit of work.
#[derive(Default)]
struct Fake {
    rows: BTreeMap<Position, Operation>,
    delivered: HashSet<String>,
    retry: HashSet<String>,
    cursor: Option<Position>,
    fates: HashMap<String, Fate>,
    published: Vec<String>,
    /// The cursor positions units moved to, in commit order.
    moves: Vec<Position>,
}

impl Fake {
    fn waiting(&self, p: &Position) -> bool {
        let id = &p.op_id;
        !self.delivered.contains(id) && !self.retry.contains(id)
    }

    fn results(&mut self, batch: &EnvelopeBatch) -> Vec<Result<(), PublishError>> {
        let ids = spans(&batch.op_id_ends, batch.op_ids.len())
            .map(|span| batch.op_ids[span.unwrap()].to_string())
            .collect::<Vec<_>>();
        ids.into_iter()
            .map(
                |id| match self.fates.get(&id).copied().unwrap_or(Fate::Confirm) {
                    Fate::Confirm => {
                        self.published.push(id);
                        Ok(())
                    }
                    Fate::Transient => Err(PublishError::Transient(format!("{id} nacked"))),
                    Fate::Permanent => Err(PublishError::Permanent(format!("{id} refused"))),
                    Fate::Unavailable => Err(PublishError::Unavailable("down".into())),
                },
            )
            .collect()
    }
}

impl Host for Fake {
    type Delivery = Vec<Result<(), PublishError>>;
    type Commit = Result<(), DbError>;

    fn insert(
        &mut self,
        ops: Vec<Operation>,
        _status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError> {
        let mut outcomes = Vec::new();
        for op in ops {
            let p = op.view().position();
            outcomes.push(InsertOutcome::Inserted);
            self.rows.insert(p, op);
        }
        Ok(outcomes)
    }

    fn load_cursor(&mut self, _key: &str) -> Result<Option<Position>, DbError> {
        Ok(self.cursor.clone())
    }

    fn scan_after(&mut self, after: Option<Position>, limit: u32) -> Result<Rows, DbError> {
        let rows = self
            .rows
            .iter()
            .filter(|(p, _)| after.as_ref().is_none_or(|a| *p > a) && self.waiting(p))
            .take(limit as usize)
            .map(|(_, op)| op.clone())
            .collect();
        Ok(Rows::Owned(Fetched {
            rows,
            faults: Vec::new(),
        }))
    }

    fn due_retries(&mut self, _now: Micros, _limit: u32) -> Result<RetryRows, DbError> {
        Ok(RetryRows::Owned(Fetched::default()))
    }

    fn sweep_candidates(
        &mut self,
        _before: Position,
        _since: Micros,
        _limit: u32,
    ) -> Result<Rows, DbError> {
        Ok(Rows::Owned(Fetched::default()))
    }

    fn stats(&mut self, _cursor_key: &str) -> Result<DbStats, DbError> {
        Ok(DbStats::default())
    }

    fn apply(&mut self, work: UnitOfWork) -> Result<(), DbError> {
        if let Some(m) = &work.cursor
            && m.expected != self.cursor
        {
            return Err(DbError::CursorMoved(m.key.clone()));
        }
        self.delivered.extend(work.trustlogged.iter().cloned());
        for r in &work.retries {
            self.retry.insert(r.op_id.clone());
        }
        for id in &work.delete_retries {
            self.retry.remove(id);
        }
        if let Some(m) = work.cursor {
            if let Some(last) = self.moves.last() {
                assert!(
                    m.to > *last,
                    "units commit in read order: {last:?} then {:?}",
                    m.to
                );
            }
            // The invariant: every row up to the cursor is delivered or in the retry queue.
            for p in self.rows.keys().take_while(|p| **p <= m.to) {
                assert!(
                    !self.waiting(p),
                    "the cursor moved to {:?} past waiting {p:?}",
                    m.to
                );
            }
            self.moves.push(m.to.clone());
            self.cursor = Some(m.to);
        }
        Ok(())
    }

    fn begin_apply(&mut self, work: UnitOfWork) -> Self::Commit {
        self.apply(work)
    }

    fn commit_outcome(&mut self, commit: Self::Commit) -> Result<(), DbError> {
        commit
    }

    fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), PublishError>> {
        self.results(&batch)
    }

    fn send(&mut self, batch: EnvelopeBatch) -> Self::Delivery {
        self.results(&batch)
    }

    fn confirmations(&mut self, delivery: Self::Delivery) -> Vec<Result<(), PublishError>> {
        delivery
    }

    fn log(&mut self, _level: Level, _message: &str) {}

    fn sha256(&mut self, payloads: &[u8], ends: &[u32]) -> Vec<[u8; 32]> {
        spans(ends, payloads.len())
            .map(|s| {
                let mut d = [0u8; 32];
                for (i, b) in payloads[s.unwrap()].iter().enumerate() {
                    d[i % 32] ^= b;
                }
                d
            })
            .collect()
    }
}

fn operation(i: usize, timestamp: Micros) -> Operation {
    Operation {
        op_id: format!("op-{i:04}"),
        op_actor: "actor".into(),
        doid: "10.1000/1".into(),
        producer_id: "producer".into(),
        request_body_hash: None,
        response_body_hash: None,
        op_source: "api".into(),
        op_type: "create".into(),
        do_prefix: "10.1000".into(),
        do_repository: "repo".into(),
        client_ip: None,
        server_ip: None,
        timestamp,
    }
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        14 => Just(Fate::Confirm),
        2 => Just(Fate::Transient),
        1 => Just(Fate::Permanent),
        3 => Just(Fate::Unavailable),
    ]
}

/// Scan ticks until one says there is no more, at most `limit`.
fn drain(
    engine: &mut Engine<Vec<Result<(), PublishError>>, Result<(), DbError>>,
    host: &mut Fake,
    limit: usize,
) -> Vec<TickReport> {
    let mut reports = Vec::new();
    for _ in 0..limit {
        let r = engine.scan_tick(host, NOW).expect("a scan tick");
        let more = r.more;
        reports.push(r);
        if !more {
            return reports;
        }
    }
    panic!("still more after {limit} scan ticks");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_pipelined_scan_keeps_the_serial_invariants(
        fates in prop::collection::vec(fate(), 0..120),
        per_timestamp in 1usize..4,
        batch_size in 1u32..12,
        pipeline_depth in 1u32..=MAX_PIPELINE_DEPTH,
        stop_after in 0usize..40,
    ) {
        let mut host = Fake::default();
        let ops: Vec<Operation> = (0..fates.len())
            .map(|i| operation(i, NOW - 1_000_000 + (i / per_timestamp) as Micros))
            .collect();
        host.insert(ops.clone(), TrustlogStatus::NotTrustlogged).unwrap();
        host.fates = ops.iter().map(|o| o.op_id.clone()).zip(fates.iter().copied()).collect();
        let mut engine = Engine::new();
        engine
            .configure(Config { batch_size, pipeline_depth, ..Config::default() })
            .unwrap();

        // Some ticks, then settle: what was confirmed is committed, the rest waits.
        let mut published = 0;
        for _ in 0..stop_after {
            let r = engine.scan_tick(&mut host, NOW).unwrap();
            published += r.published;
            if !r.more {
                break;
            }
        }
        let settled = engine.scan_settle(&mut host, NOW).unwrap();
        prop_assert!(!settled.more);
        published += settled.published;
        prop_assert_eq!(published as usize, host.published.len());
        prop_assert_eq!(&host.delivered, &host.published.iter().cloned().collect::<HashSet<_>>());
        let reports = drain(&mut engine, &mut host, 1_000);
        // A run stops at an unavailable row: nothing is read past the batch holding it.
        let unavailable: u32 = reports.iter().map(|r| r.unavailable).sum();
        prop_assert!(unavailable == 0 || !reports.last().unwrap().more);

        // The trust log answers again: every row is delivered or in the retry queue.
        host.fates.retain(|_, f| *f != Fate::Unavailable);
        for _ in 0..1_000 {
            let r = drain(&mut engine, &mut host, 1_000);
            if r.iter().all(|r| r.fetched == 0) {
                break;
            }
        }
        for op in &ops {
            let id = &op.op_id;
            let expected = match host.fates.get(id).copied().unwrap_or(Fate::Confirm) {
                Fate::Confirm => host.delivered.contains(id),
                _ => host.retry.contains(id),
            };
            prop_assert!(expected, "{} ended neither delivered nor retried as scripted", id);
        }
        let distinct: HashSet<&String> = host.published.iter().collect();
        prop_assert_eq!(distinct.len(), host.published.len(), "an op_id published twice");
        // Rows a stalled run marked past the cursor keep it where it stopped; it only
        // ever passed settled rows (checked at every unit), and it has moved.
        prop_assert!(ops.is_empty() || host.cursor.is_some());
    }
}

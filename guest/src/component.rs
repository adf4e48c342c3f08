//! The component layer: wit-bindgen glue between the WIT world and [`Engine`].
//!
//! Conversions move values between the generated types and [`crate::model`];
//! strings are moved, not copied, except where an import borrows a slice.

// The bindings are generated from the WIT, whose docs are the reference.
#![allow(missing_docs)]

use std::cell::RefCell;

use crate::engine::{Engine, Host, Level};
use crate::envelope_batch::EnvelopeBatch;
use crate::model as m;
use crate::packed;

wit_bindgen::generate!({
    world: "trustlog",
    path: "../wit",
    // Test guests built on this crate (tests/guests/hostile) export their own wrapper.
    pub_export_macro: true,
    export_macro_name: "export_trustlog",
});

use exports::trustlog::engine::engine as x;
pub use trustlog::engine::{db, digest, log, monitoring, publisher, types as t};

thread_local! {
    // A component instance is single-threaded; the host keeps one instance per tenant.
    static ENGINE: RefCell<ComponentEngine> = RefCell::new(Engine::new());
}

/// The engine over the component's imports, holding their resources while batches are out.
pub type ComponentEngine = Engine<publisher::Delivery, db::Commit>;

/// The engine as the component's export.
pub struct Component;

#[cfg(feature = "export")]
export_trustlog!(Component);

/// The imports, as the engine's [`Host`].
pub struct Imports;

impl Host for Imports {
    type Delivery = publisher::Delivery;
    type Commit = db::Commit;

    fn insert(
        &mut self,
        ops: Vec<m::Operation>,
        status: m::TrustlogStatus,
    ) -> Result<Vec<m::InsertOutcome>, m::DbError> {
        let ops: Vec<t::Operation> = ops.into_iter().map(Into::into).collect();
        db::insert(&ops, status.into())
            .map(|v| {
                v.into_iter()
                    .map(|o| match o {
                        db::InsertOutcome::Inserted => m::InsertOutcome::Inserted,
                        db::InsertOutcome::Duplicate => m::InsertOutcome::Duplicate,
                    })
                    .collect()
            })
            .map_err(Into::into)
    }

    fn load_cursor(&mut self, key: &str) -> Result<Option<m::Position>, m::DbError> {
        db::load_cursor(key)
            .map(|p| p.map(Into::into))
            .map_err(Into::into)
    }

    fn scan_after(
        &mut self,
        after: Option<m::Position>,
        limit: u32,
    ) -> Result<packed::Rows, m::DbError> {
        let after = after.map(t::Position::from);
        let batch = db::scan_after(after.as_ref(), limit)?;
        Ok(packed::Rows::Packed(batch.into()))
    }

    fn due_retries(&mut self, now: m::Micros, limit: u32) -> Result<packed::RetryRows, m::DbError> {
        let batch = db::due_retries(now, limit)?;
        Ok(packed::RetryRows::Packed(packed::RetryBatch {
            ops: batch.ops.into(),
            retry_counts: batch.retry_counts,
        }))
    }

    fn sweep_candidates(
        &mut self,
        before: m::Position,
        since: m::Micros,
        limit: u32,
    ) -> Result<packed::Rows, m::DbError> {
        let batch = db::sweep_candidates(&before.into(), since, limit)?;
        Ok(packed::Rows::Packed(batch.into()))
    }

    fn stats(&mut self, cursor_key: &str) -> Result<m::DbStats, m::DbError> {
        db::stats(cursor_key).map(Into::into).map_err(Into::into)
    }

    fn apply(&mut self, work: m::UnitOfWork) -> Result<(), m::DbError> {
        db::apply(&work.into()).map_err(Into::into)
    }

    fn begin_apply(&mut self, work: m::UnitOfWork) -> db::Commit {
        db::begin_apply(&work.into())
    }

    fn commit_outcome(&mut self, commit: db::Commit) -> Result<(), m::DbError> {
        commit.outcome().map_err(Into::into)
    }

    fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), m::PublishError>> {
        publisher::publish(&envelopes(batch))
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    fn send(&mut self, batch: EnvelopeBatch) -> publisher::Delivery {
        publisher::send(&envelopes(batch))
    }

    fn confirmations(&mut self, delivery: publisher::Delivery) -> Vec<Result<(), m::PublishError>> {
        delivery
            .confirmations()
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    fn log(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    fn sha256(&mut self, payloads: &[u8], ends: &[u32]) -> Vec<[u8; 32]> {
        // A short or ragged answer yields fewer digests; the engine retries those rows.
        digest::sha256(payloads, ends)
            .chunks_exact(32)
            .map(|d| d.try_into().expect("chunks of 32"))
            .collect()
    }
}

fn envelopes(batch: EnvelopeBatch) -> t::EnvelopeBatch {
    t::EnvelopeBatch {
        op_ids: batch.op_ids,
        op_id_ends: batch.op_id_ends,
        payloads: batch.payloads,
        payload_ends: batch.payload_ends,
        sha256: batch.sha256,
    }
}

/// Runs `f` on this instance's engine with the real imports.
pub fn with_engine<R>(
    f: impl FnOnce(&mut ComponentEngine, &mut Imports) -> Result<R, m::EngineError>,
) -> Result<R, x::EngineError> {
    ENGINE
        .with(|e| f(&mut e.borrow_mut(), &mut Imports))
        .map_err(Into::into)
}

impl x::Guest for Component {
    fn configure(cfg: t::Config) -> Result<(), x::EngineError> {
        with_engine(|e, _| e.configure(cfg.into()))
    }

    fn record(
        ops: Vec<t::Operation>,
        strategy: Option<t::Strategy>,
    ) -> Result<Vec<x::RecordOutcome>, x::EngineError> {
        let ops = ops.into_iter().map(Into::into).collect();
        let outcomes = with_engine(|e, h| e.record(h, ops, strategy.map(Into::into)))?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                m::RecordOutcome::Stored => x::RecordOutcome::Stored,
                m::RecordOutcome::Published => x::RecordOutcome::Published,
                m::RecordOutcome::Rejected(f) => x::RecordOutcome::Rejected(f.into()),
                m::RecordOutcome::Duplicate => x::RecordOutcome::Duplicate,
                m::RecordOutcome::PublishFailed(p) => x::RecordOutcome::PublishFailed(p.into()),
            })
            .collect())
    }

    fn scan_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
        with_engine(|e, h| e.scan_tick(h, now)).map(Into::into)
    }

    fn scan_settle(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
        with_engine(|e, h| e.scan_settle(h, now)).map(Into::into)
    }

    fn retry_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
        with_engine(|e, h| e.retry_tick(h, now)).map(Into::into)
    }

    fn sweep_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
        with_engine(|e, h| e.sweep_tick(h, now)).map(Into::into)
    }

    fn catch_up_tick(now: t::Micros) -> Result<x::TickReport, x::EngineError> {
        with_engine(|e, h| e.catch_up_tick(h, now)).map(Into::into)
    }

    fn status(now: t::Micros) -> Result<monitoring::StatusReport, x::EngineError> {
        let r = with_engine(|e, h| e.status(h, now))?;
        Ok(monitoring::StatusReport {
            stats: r.stats.into(),
            cursor_lag_seconds: r.cursor_lag_seconds,
        })
    }
}

impl From<t::Config> for m::Config {
    fn from(cfg: t::Config) -> Self {
        m::Config {
            cursor_key: cfg.cursor_key,
            batch_size: cfg.batch_size,
            backoff: m::Backoff {
                base_micros: cfg.backoff.base_micros,
                factor: cfg.backoff.factor,
                cap_micros: cfg.backoff.cap_micros,
                max_retries: cfg.backoff.max_retries,
            },
            default_strategy: cfg.default_strategy.into(),
            catch_up_window_micros: cfg.catch_up_window_micros,
            pipeline_depth: cfg.pipeline_depth,
        }
    }
}

impl From<t::Operation> for m::Operation {
    fn from(o: t::Operation) -> Self {
        m::Operation {
            op_id: o.op_id,
            op_actor: o.op_actor,
            doid: o.doid,
            producer_id: o.producer_id,
            request_body_hash: o.request_body_hash,
            response_body_hash: o.response_body_hash,
            op_source: o.op_source,
            op_type: o.op_type,
            do_prefix: o.do_prefix,
            do_repository: o.do_repository,
            client_ip: o.client_ip,
            server_ip: o.server_ip,
            timestamp: o.timestamp,
        }
    }
}

impl From<m::Operation> for t::Operation {
    fn from(o: m::Operation) -> Self {
        t::Operation {
            op_id: o.op_id,
            op_actor: o.op_actor,
            doid: o.doid,
            producer_id: o.producer_id,
            request_body_hash: o.request_body_hash,
            response_body_hash: o.response_body_hash,
            op_source: o.op_source,
            op_type: o.op_type,
            do_prefix: o.do_prefix,
            do_repository: o.do_repository,
            client_ip: o.client_ip,
            server_ip: o.server_ip,
            timestamp: o.timestamp,
        }
    }
}

impl From<t::Position> for m::Position {
    fn from(p: t::Position) -> Self {
        m::Position {
            timestamp: p.timestamp,
            op_id: p.op_id,
        }
    }
}

impl From<m::Position> for t::Position {
    fn from(p: m::Position) -> Self {
        t::Position {
            timestamp: p.timestamp,
            op_id: p.op_id,
        }
    }
}

impl From<m::TrustlogStatus> for t::TrustlogStatus {
    fn from(s: m::TrustlogStatus) -> Self {
        match s {
            m::TrustlogStatus::NotTrustlogged => t::TrustlogStatus::NotTrustlogged,
            m::TrustlogStatus::Trustlogged => t::TrustlogStatus::Trustlogged,
            m::TrustlogStatus::DbOnly => t::TrustlogStatus::DbOnly,
        }
    }
}

impl From<t::Strategy> for m::Strategy {
    fn from(s: t::Strategy) -> Self {
        match s {
            t::Strategy::DbOnly => m::Strategy::DbOnly,
            t::Strategy::DbAndTrustlog => m::Strategy::DbAndTrustlog,
            t::Strategy::TrustlogOnly => m::Strategy::TrustlogOnly,
        }
    }
}

impl From<m::RetryStatus> for t::RetryStatus {
    fn from(s: m::RetryStatus) -> Self {
        match s {
            m::RetryStatus::Pending => t::RetryStatus::Pending,
            m::RetryStatus::Retrying => t::RetryStatus::Retrying,
            m::RetryStatus::DeadLetter => t::RetryStatus::DeadLetter,
        }
    }
}

impl From<m::FieldError> for t::FieldError {
    fn from(f: m::FieldError) -> Self {
        t::FieldError {
            field: f.field,
            message: f.message,
        }
    }
}

impl From<t::DbError> for m::DbError {
    fn from(e: t::DbError) -> Self {
        match e {
            t::DbError::Conflict(s) => m::DbError::Conflict(s),
            t::DbError::Invalid(f) => m::DbError::Invalid(m::FieldError {
                field: f.field,
                message: f.message,
            }),
            t::DbError::CursorMoved(s) => m::DbError::CursorMoved(s),
            t::DbError::Unavailable(s) => m::DbError::Unavailable(s),
            t::DbError::Other(s) => m::DbError::Other(s),
        }
    }
}

impl From<m::DbError> for t::DbError {
    fn from(e: m::DbError) -> Self {
        match e {
            m::DbError::Conflict(s) => t::DbError::Conflict(s),
            m::DbError::Invalid(f) => t::DbError::Invalid(f.into()),
            m::DbError::CursorMoved(s) => t::DbError::CursorMoved(s),
            m::DbError::Unavailable(s) => t::DbError::Unavailable(s),
            m::DbError::Other(s) => t::DbError::Other(s),
        }
    }
}

impl From<t::PublishError> for m::PublishError {
    fn from(e: t::PublishError) -> Self {
        match e {
            t::PublishError::Transient(s) => m::PublishError::Transient(s),
            t::PublishError::Permanent(s) => m::PublishError::Permanent(s),
            t::PublishError::Unavailable(s) => m::PublishError::Unavailable(s),
        }
    }
}

impl From<m::PublishError> for t::PublishError {
    fn from(e: m::PublishError) -> Self {
        match e {
            m::PublishError::Transient(s) => t::PublishError::Transient(s),
            m::PublishError::Permanent(s) => t::PublishError::Permanent(s),
            m::PublishError::Unavailable(s) => t::PublishError::Unavailable(s),
        }
    }
}

impl From<monitoring::DbStats> for m::DbStats {
    fn from(s: monitoring::DbStats) -> Self {
        m::DbStats {
            total: s.total,
            trustlogged: s.trustlogged,
            not_trustlogged: s.not_trustlogged,
            db_only: s.db_only,
            retry_pending: s.retry_pending,
            dead_letter: s.dead_letter,
            cursor: s.cursor.map(Into::into),
            oldest_waiting: s.oldest_waiting,
            next_retry_at: s.next_retry_at,
        }
    }
}

impl From<m::DbStats> for monitoring::DbStats {
    fn from(s: m::DbStats) -> Self {
        monitoring::DbStats {
            total: s.total,
            trustlogged: s.trustlogged,
            not_trustlogged: s.not_trustlogged,
            db_only: s.db_only,
            retry_pending: s.retry_pending,
            dead_letter: s.dead_letter,
            cursor: s.cursor.map(Into::into),
            oldest_waiting: s.oldest_waiting,
            next_retry_at: s.next_retry_at,
        }
    }
}

impl From<m::UnitOfWork> for db::UnitOfWork {
    fn from(w: m::UnitOfWork) -> Self {
        db::UnitOfWork {
            now: w.now,
            trustlogged: w.trustlogged,
            retries: w
                .retries
                .into_iter()
                .map(|r| db::RetryUpdate {
                    op_id: r.op_id,
                    retry_count: r.retry_count,
                    retry_status: r.retry_status.into(),
                    last_retry_at: r.last_retry_at,
                    next_retry_at: r.next_retry_at,
                    error_message: r.error_message,
                })
                .collect(),
            delete_retries: w.delete_retries,
            cursor: w.cursor.map(|c| db::CursorMove {
                key: c.key,
                expected: c.expected.map(Into::into),
                to: c.to.into(),
            }),
        }
    }
}

impl From<m::EngineError> for x::EngineError {
    fn from(e: m::EngineError) -> Self {
        match e {
            m::EngineError::NotConfigured => x::EngineError::NotConfigured,
            m::EngineError::InvalidConfig(f) => x::EngineError::InvalidConfig(f.into()),
            m::EngineError::Db(d) => x::EngineError::Db(d.into()),
        }
    }
}

impl From<m::TickReport> for x::TickReport {
    fn from(r: m::TickReport) -> Self {
        x::TickReport {
            fetched: r.fetched,
            published: r.published,
            retry_scheduled: r.retry_scheduled,
            dead_lettered: r.dead_lettered,
            more: r.more,
            cursor_conflict: r.cursor_conflict,
            unavailable: r.unavailable,
            unreadable: r.unreadable,
            error: r.error,
        }
    }
}

impl From<t::OperationBatch> for packed::OperationBatch {
    fn from(b: t::OperationBatch) -> Self {
        packed::OperationBatch {
            text: b.text,
            ends: b.ends,
            absent: b.absent,
            timestamps: b.timestamps,
            faults: b
                .faults
                .into_iter()
                .map(|f| m::RowFault {
                    op_id: f.op_id,
                    column: f.column,
                    message: f.message,
                    retry_count: f.retry_count,
                })
                .collect(),
        }
    }
}

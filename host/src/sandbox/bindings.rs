//! Host-side bindings of `wit/trustlog.wit` and conversions to the model types.
//!
//! Adapters speak [`trustlog_guest::model`]; only this module knows the
//! generated types, so the wasm boundary stays in one place.

// `bindgen!` below generates public items from the WIT, whose docs are the reference;
// an attribute on the macro call itself is ignored, so the allow covers this module.
#![allow(missing_docs)]

use trustlog_guest::model as m;
use trustlog_guest::packed;

wasmtime::component::bindgen!({
    world: "trustlog",
    path: "../wit",
    // Handing off traps when a guest hoards handles (see `TenantState::hold`).
    imports: {
        "trustlog:engine/publisher.send": async | trappable,
        "trustlog:engine/db.begin-apply": async | trappable,
        default: async,
    },
    exports: { default: async },
    with: {
        "trustlog:engine/publisher.delivery": crate::sandbox::runtime::SentBatch,
        "trustlog:engine/db.commit": crate::sandbox::runtime::BegunCommit,
    },
});

pub use exports::trustlog::engine::engine as x;
pub use trustlog::engine::{db, digest, log, monitoring, publisher, types as t};

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

impl From<t::TrustlogStatus> for m::TrustlogStatus {
    fn from(s: t::TrustlogStatus) -> Self {
        match s {
            t::TrustlogStatus::NotTrustlogged => m::TrustlogStatus::NotTrustlogged,
            t::TrustlogStatus::Trustlogged => m::TrustlogStatus::Trustlogged,
            t::TrustlogStatus::DbOnly => m::TrustlogStatus::DbOnly,
        }
    }
}

impl From<m::Strategy> for t::Strategy {
    fn from(s: m::Strategy) -> Self {
        match s {
            m::Strategy::DbOnly => t::Strategy::DbOnly,
            m::Strategy::DbAndTrustlog => t::Strategy::DbAndTrustlog,
            m::Strategy::TrustlogOnly => t::Strategy::TrustlogOnly,
        }
    }
}

impl From<t::RetryStatus> for m::RetryStatus {
    fn from(s: t::RetryStatus) -> Self {
        match s {
            t::RetryStatus::Pending => m::RetryStatus::Pending,
            t::RetryStatus::Retrying => m::RetryStatus::Retrying,
            t::RetryStatus::DeadLetter => m::RetryStatus::DeadLetter,
        }
    }
}

impl From<t::FieldError> for m::FieldError {
    fn from(f: t::FieldError) -> Self {
        m::FieldError {
            field: f.field,
            message: f.message,
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

impl From<t::DbError> for m::DbError {
    fn from(e: t::DbError) -> Self {
        match e {
            t::DbError::Conflict(s) => m::DbError::Conflict(s),
            t::DbError::Invalid(f) => m::DbError::Invalid(f.into()),
            t::DbError::CursorMoved(s) => m::DbError::CursorMoved(s),
            t::DbError::Unavailable(s) => m::DbError::Unavailable(s),
            t::DbError::Other(s) => m::DbError::Other(s),
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

impl From<t::PublishError> for m::PublishError {
    fn from(e: t::PublishError) -> Self {
        match e {
            t::PublishError::Transient(s) => m::PublishError::Transient(s),
            t::PublishError::Permanent(s) => m::PublishError::Permanent(s),
            t::PublishError::Unavailable(s) => m::PublishError::Unavailable(s),
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

impl From<db::UnitOfWork> for m::UnitOfWork {
    fn from(w: db::UnitOfWork) -> Self {
        m::UnitOfWork {
            now: w.now,
            trustlogged: w.trustlogged,
            retries: w
                .retries
                .into_iter()
                .map(|r| m::RetryUpdate {
                    op_id: r.op_id,
                    retry_count: r.retry_count,
                    retry_status: r.retry_status.into(),
                    last_retry_at: r.last_retry_at,
                    next_retry_at: r.next_retry_at,
                    error_message: r.error_message,
                })
                .collect(),
            delete_retries: w.delete_retries,
            cursor: w.cursor.map(|c| m::CursorMove {
                key: c.key,
                expected: c.expected.map(Into::into),
                to: c.to.into(),
            }),
        }
    }
}

impl From<x::EngineError> for m::EngineError {
    fn from(e: x::EngineError) -> Self {
        match e {
            x::EngineError::NotConfigured => m::EngineError::NotConfigured,
            x::EngineError::InvalidConfig(f) => m::EngineError::InvalidConfig(f.into()),
            x::EngineError::Db(d) => m::EngineError::Db(d.into()),
        }
    }
}

impl From<x::TickReport> for m::TickReport {
    fn from(r: x::TickReport) -> Self {
        m::TickReport {
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

impl From<x::RecordOutcome> for m::RecordOutcome {
    fn from(o: x::RecordOutcome) -> Self {
        match o {
            x::RecordOutcome::Stored => m::RecordOutcome::Stored,
            x::RecordOutcome::Published => m::RecordOutcome::Published,
            x::RecordOutcome::Rejected(f) => m::RecordOutcome::Rejected(f.into()),
            x::RecordOutcome::Duplicate => m::RecordOutcome::Duplicate,
            x::RecordOutcome::PublishFailed(p) => m::RecordOutcome::PublishFailed(p.into()),
        }
    }
}

impl From<m::Config> for t::Config {
    fn from(c: m::Config) -> Self {
        t::Config {
            cursor_key: c.cursor_key,
            batch_size: c.batch_size,
            backoff: t::Backoff {
                base_micros: c.backoff.base_micros,
                factor: c.backoff.factor,
                cap_micros: c.backoff.cap_micros,
                max_retries: c.backoff.max_retries,
            },
            default_strategy: c.default_strategy.into(),
            catch_up_window_micros: c.catch_up_window_micros,
            pipeline_depth: c.pipeline_depth,
        }
    }
}

impl From<packed::OperationBatch> for t::OperationBatch {
    fn from(b: packed::OperationBatch) -> Self {
        t::OperationBatch {
            text: b.text,
            ends: b.ends,
            absent: b.absent,
            timestamps: b.timestamps,
            faults: b
                .faults
                .into_iter()
                .map(|f| t::RowFault {
                    op_id: f.op_id,
                    column: f.column,
                    message: f.message,
                    retry_count: f.retry_count,
                })
                .collect(),
        }
    }
}

//! The guest's engine compiled natively into the host: the very same logic as
//! the component, over the very same imports, minus the sandbox. It exists so
//! `trustlog bench --engine native` measures what the component boundary costs.
//!
//! The engine is synchronous, like the guest's view of its imports. Each call runs
//! on a blocking thread that waits on the async adapters, so the runtime's worker
//! threads are never held.

use std::sync::Arc;

use trustlog_guest::engine::{Engine, Host, Level};
use trustlog_guest::envelope_batch::{EnvelopeBatch, spans};
use trustlog_guest::model as m;
use trustlog_guest::packed::{RetryRows, Rows};

use crate::sandbox::imports::{HostImports, Probe};
use crate::sandbox::in_order::Pending;
use crate::sandbox::runtime::CallError;
use crate::surfaces::metrics::TenantMetrics;

/// The engine over the blocking imports, holding their handed-off work while batches are out.
type NativeEngine =
    Engine<Pending<Vec<Result<(), m::PublishError>>>, Pending<Result<(), m::DbError>>>;

/// The engine and its imports, handed to a blocking thread for each call.
struct Parts {
    engine: NativeEngine,
    host: BlockingImports,
}

/// The imports, called synchronously from the engine's thread.
struct BlockingImports {
    runtime: tokio::runtime::Handle,
    imports: HostImports,
}

impl Host for BlockingImports {
    type Delivery = Pending<Vec<Result<(), m::PublishError>>>;
    type Commit = Pending<Result<(), m::DbError>>;

    fn insert(
        &mut self,
        ops: Vec<m::Operation>,
        status: m::TrustlogStatus,
    ) -> Result<Vec<m::InsertOutcome>, m::DbError> {
        self.runtime.block_on(self.imports.insert(ops, status))
    }

    fn load_cursor(&mut self, key: &str) -> Result<Option<m::Position>, m::DbError> {
        self.runtime.block_on(self.imports.load_cursor(key))
    }

    fn scan_after(&mut self, after: Option<m::Position>, limit: u32) -> Result<Rows, m::DbError> {
        self.runtime
            .block_on(self.imports.scan_after(after, limit))
            .map(Rows::Owned)
    }

    fn due_retries(&mut self, now: m::Micros, limit: u32) -> Result<RetryRows, m::DbError> {
        self.runtime
            .block_on(self.imports.due_retries(now, limit))
            .map(RetryRows::Owned)
    }

    fn sweep_candidates(
        &mut self,
        before: m::Position,
        since: m::Micros,
        limit: u32,
    ) -> Result<Rows, m::DbError> {
        self.runtime
            .block_on(self.imports.sweep_candidates(before, since, limit))
            .map(Rows::Owned)
    }

    fn stats(&mut self, cursor_key: &str) -> Result<m::DbStats, m::DbError> {
        self.runtime.block_on(self.imports.stats(cursor_key))
    }

    fn apply(&mut self, work: m::UnitOfWork) -> Result<(), m::DbError> {
        self.runtime.block_on(self.imports.apply(work))
    }

    fn begin_apply(&mut self, work: m::UnitOfWork) -> Self::Commit {
        self.imports.begin_apply(work)
    }

    fn commit_outcome(&mut self, commit: Self::Commit) -> Result<(), m::DbError> {
        self.runtime.block_on(self.imports.commit_outcome(commit))
    }

    fn publish(&mut self, batch: EnvelopeBatch) -> Vec<Result<(), m::PublishError>> {
        self.runtime.block_on(self.imports.publish(batch))
    }

    fn send(&mut self, batch: EnvelopeBatch) -> Self::Delivery {
        self.imports.send(batch)
    }

    fn confirmations(&mut self, delivery: Self::Delivery) -> Vec<Result<(), m::PublishError>> {
        self.runtime.block_on(self.imports.confirmations(delivery))
    }

    fn log(&mut self, level: Level, message: &str) {
        self.imports.log(level, message);
    }

    fn sha256(&mut self, payloads: &[u8], ends: &[u32]) -> Vec<[u8; 32]> {
        let slices = spans(ends, payloads.len())
            .map_while(Result::ok)
            .map(|span| &payloads[span]);
        self.imports.sha256(slices)
    }
}

/// One tenant's natively compiled engine; the counterpart of [`crate::sandbox::runtime::Instance`].
pub struct NativeInstance {
    tenant: Arc<str>,
    /// `None` only while a call has the parts, or after a call panicked.
    parts: Option<Box<Parts>>,
}

impl NativeInstance {
    /// A fresh, unconfigured engine for `tenant` over `imports`.
    pub fn new(tenant: Arc<str>, imports: HostImports) -> NativeInstance {
        NativeInstance {
            tenant,
            parts: Some(Box::new(Parts {
                engine: Engine::new(),
                host: BlockingImports {
                    runtime: tokio::runtime::Handle::current(),
                    imports,
                },
            })),
        }
    }

    /// Feeds publish and delivery observations into `metrics`.
    pub fn set_metrics(&mut self, metrics: Option<TenantMetrics>) {
        if let Some(p) = &mut self.parts {
            p.host.imports.set_metrics(metrics);
        }
    }

    /// Feeds latencies and import times into `probe`.
    pub fn set_probe(&mut self, probe: Option<Arc<Probe>>) {
        if let Some(p) = &mut self.parts {
            p.host.imports.set_probe(probe);
        }
    }

    /// Runs `f` on a blocking thread; a panic there is this engine's trap.
    async fn call<R: Send + 'static>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut NativeEngine, &mut BlockingImports) -> Result<R, m::EngineError>
        + Send
        + 'static,
    ) -> Result<R, CallError> {
        let trap = |message: String| CallError::Trap {
            tenant: self.tenant.to_string(),
            call,
            message,
        };
        let Some(mut parts) = self.parts.take() else {
            return Err(trap("the engine panicked in an earlier call".into()));
        };
        let joined = tokio::task::spawn_blocking(move || {
            let r = f(&mut parts.engine, &mut parts.host);
            (parts, r)
        })
        .await;
        match joined {
            Ok((parts, r)) => {
                self.parts = Some(parts);
                r.map_err(CallError::Engine)
            }
            Err(e) => Err(trap(e.to_string())),
        }
    }

    /// Configures the engine; must come first.
    pub async fn configure(&mut self, cfg: m::Config) -> Result<(), CallError> {
        self.call("configure", move |e, _| e.configure(cfg)).await
    }

    /// Applies a strategy to `ops`; one outcome per input.
    pub async fn record(
        &mut self,
        ops: Vec<m::Operation>,
        strategy: Option<m::Strategy>,
    ) -> Result<Vec<m::RecordOutcome>, CallError> {
        self.call("record", move |e, h| e.record(h, ops, strategy))
            .await
    }

    /// One scan batch.
    pub async fn scan_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        self.call("scan-tick", move |e, h| e.scan_tick(h, now))
            .await
    }

    /// Settles the scan batches out.
    pub async fn scan_settle(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        self.call("scan-settle", move |e, h| e.scan_settle(h, now))
            .await
    }

    /// One retry batch.
    pub async fn retry_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        self.call("retry-tick", move |e, h| e.retry_tick(h, now))
            .await
    }

    /// One sweep batch.
    pub async fn sweep_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        self.call("sweep-tick", move |e, h| e.sweep_tick(h, now))
            .await
    }

    /// One catch-up batch.
    pub async fn catch_up_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        self.call("catch-up-tick", move |e, h| e.catch_up_tick(h, now))
            .await
    }

    /// The monitoring figures.
    pub async fn status(&mut self, now: m::Micros) -> Result<m::StatusReport, CallError> {
        self.call("status", move |e, h| e.status(h, now)).await
    }
}

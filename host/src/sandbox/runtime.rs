//! The wasmtime side: one engine and pre-linked component per process, one
//! store and instance per tenant, and the imports the guest calls.

use std::sync::Arc;
use std::time::Instant;

use sha2::Digest;
use trustlog_guest::engine::Level;
use trustlog_guest::envelope_batch::{EnvelopeBatch, spans};
use trustlog_guest::model as m;
use trustlog_guest::packed::{OperationBatch, RetryBatch};
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable, WasmList};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::db::Database;
use crate::publisher::Publisher;
use crate::sandbox::bindings::{self, TrustlogPre, db, log, monitoring, publisher, t};
use crate::sandbox::component_cache;
use crate::sandbox::epoch::{self, Busy, Computing};
use crate::sandbox::guest_output::GuestOutput;
use crate::sandbox::imports::{HostImports, LogAllowance, Probe};
use crate::sandbox::in_order::Pending;
use crate::sandbox::limits::{LimitKind, Limits, TenantLimiter};
use crate::surfaces::metrics::TenantMetrics;

/// The component built from `guest/` by `host/build.rs`.
pub static GUEST_WASM: &[u8] = include_bytes!(env!("TRUSTLOG_GUEST_WASM"));

/// Why the runtime or an instance could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The component file could not be read.
    #[error("reading the component {}: {message}", path.display())]
    Read {
        /// The component file asked for.
        path: std::path::PathBuf,
        /// Why reading it failed.
        message: String,
    },
    /// The wasmtime engine or its epoch ticker could not be created.
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// The component could not be compiled, or its machine code not serialised for the cache.
    #[error(transparent)]
    Component(#[from] component_cache::CacheError),
    /// The host's imports could not be linked, or the component's exports do not match.
    #[error("linking the component: {0}")]
    Link(String),
    /// A tenant's instance could not be created from the linked component.
    #[error("tenant {tenant}: instantiating the component: {message}")]
    Instantiate {
        /// The tenant the instance was for.
        tenant: String,
        /// Why instantiation failed.
        message: String,
    },
}

/// Why one call into the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guest answered with an error of its own.
    #[error("{0}")]
    Engine(m::EngineError),
    /// The guest trapped; the instance is unusable and must be replaced.
    #[error("tenant {tenant}: guest trapped in {call}: {message}")]
    Trap {
        /// The tenant whose guest trapped.
        tenant: String,
        /// The guest export that was called (`scan-tick`, `record`, …).
        call: &'static str,
        /// The trap, with wasmtime's context.
        message: String,
    },
    /// The guest ran into one of its limits; the tenant must be stopped.
    #[error("tenant {tenant}: guest exceeded its {} limit in {call}: {message}", kind.name())]
    Limit {
        /// The tenant whose guest ran into the limit.
        tenant: String,
        /// The guest export that was called (`scan-tick`, `record`, …).
        call: &'static str,
        /// Which limit it was: memory, table or CPU.
        kind: LimitKind,
        /// The trap the limit caused, with wasmtime's context.
        message: String,
    },
}

/// How instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allocation {
    /// Allocated and freed per instance (tools and tests with a tenant or two).
    #[default]
    OnDemand,
    /// Slots for this many instances reserved up front and recycled, with
    /// copy-on-write heap images: instantiation is a few page mappings.
    Pooling {
        /// Instances the pool holds slots for: the most that can be live at once.
        instances: u32,
    },
}

/// A wasmtime engine as trustlog runs it, with what drives its epoch ticker: how
/// many of its guests are computing.
#[derive(Clone)]
pub struct WasmEngine {
    engine: Engine,
    computing: Computing,
}

impl WasmEngine {
    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A wasmtime engine as trustlog runs it: components, epoch interruption (with its
/// ticker), and the allocation.
pub fn engine(allocation: Allocation) -> Result<WasmEngine, RuntimeError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Epochs, not fuel, bound a call's CPU: fuel counts every block the guest runs,
    // which cost the delivery 4% in `trustlog bench` (0.895 → 0.934 of native);
    // an epoch check is one load and compare at function entries and loop heads.
    config.epoch_interruption(true);
    // `perf` names the guest's functions only from a perf map, written when asked.
    if std::env::var_os("TRUSTLOG_PERF_MAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if let Allocation::Pooling { instances } = allocation {
        let mut pool = PoolingAllocationConfig::default();
        // A trustlog component holds a handful of core modules (the engine, the WASI
        // adapter, shims), one or two memories and a few tables; room for twice that.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(instances);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Copy-on-write heap images are on by default; say so, the pool relies on them.
        config.memory_init_cow(true);
    }
    let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
    let computing = Computing::default();
    epoch::start_ticker(&engine, computing.clone())
        .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;
    Ok(WasmEngine { engine, computing })
}

/// Which component `wasm` is: the SHA-256 of its bytes.
pub fn component_digest(wasm: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(wasm).into()
}

/// The process-wide engine and the component, compiled and linked once.
#[derive(Clone)]
pub struct Runtime {
    engine: WasmEngine,
    pre: TrustlogPre<TenantState>,
    /// SHA-256 of the component's bytes: which component this is.
    digest: [u8; 32],
}

impl Runtime {
    /// Compiles (or loads from cache) the embedded component and links it.
    pub fn new() -> Result<Runtime, RuntimeError> {
        Self::with_component(GUEST_WASM)
    }

    /// Same as [`Runtime::new`] for the component in the file at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Runtime, RuntimeError> {
        let wasm = std::fs::read(path).map_err(|e| RuntimeError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::with_component(&wasm)
    }

    /// Same as [`Runtime::new`] for another component binary.
    pub fn with_component(wasm: &[u8]) -> Result<Runtime, RuntimeError> {
        Self::on_engine(&engine(Allocation::OnDemand)?, wasm)
    }

    /// The component `wasm`, compiled for (and linked on) a shared `engine`.
    pub fn on_engine(engine: &WasmEngine, wasm: &[u8]) -> Result<Runtime, RuntimeError> {
        let engine = engine.clone();
        let digest = component_digest(wasm);
        let component = component_cache::load(&engine.engine, wasm, &component_cache::cache_dir())?;
        let mut linker = Linker::<TenantState>::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        link_imports(&mut linker).map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let pre = TrustlogPre::new(pre).map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        Ok(Runtime {
            engine,
            pre,
            digest,
        })
    }

    /// Whether both run the very same component bytes.
    pub fn same_component(&self, other: &Runtime) -> bool {
        self.digest == other.digest
    }

    /// The engine the component is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine.engine
    }

    /// A fresh sandbox for `tenant` within `limits`, wired to its own database and
    /// publisher, its guest's log lines counted against `log`.
    pub async fn instantiate(
        &self,
        tenant: &str,
        db: Database,
        publisher: Publisher,
        limits: Limits,
        log: LogAllowance,
    ) -> Result<Instance, RuntimeError> {
        let failed = |message: String| RuntimeError::Instantiate {
            tenant: tenant.to_string(),
            message,
        };
        let tenant: Arc<str> = Arc::from(tenant);
        // No preopened dirs, no env, no args, no sockets: the guest's only way out is our imports.
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(tenant.clone(), "stdout"))
            .stderr(GuestOutput::new(tenant.clone(), "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut imports = HostImports::new(tenant.clone(), db, publisher, log);
        // The ticker rests while this guest waits in an import, unless another computes.
        imports.set_computing(Some(self.engine.computing.clone()));
        let state = TenantState {
            imports,
            wasi,
            table: ResourceTable::new(),
            limiter: TenantLimiter::new(limits),
            handed_off: 0,
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Each tick the guest computes through is charged to the call, and a guest that
        // has computed a whole tick since it last rested yields, so it never holds a
        // runtime thread from others for long.
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.limiter.cpu_tick()?;
            let waited_until = state.imports.waited_until();
            if state.limiter.should_yield(waited_until, Instant::now()) {
                Ok(UpdateDeadline::Yield(1))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        Ok(Instance {
            store,
            bindings,
            tenant,
            computing: self.engine.computing.clone(),
        })
    }
}

/// What a tenant's store holds: its imports and its WASI context.
pub struct TenantState {
    imports: HostImports,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: TenantLimiter,
    /// Batches sent and units of work begun that the guest holds uncollected.
    handed_off: usize,
}

impl WasiView for TenantState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl t::Host for TenantState {}
impl monitoring::Host for TenantState {}

impl db::Host for TenantState {
    async fn insert(
        &mut self,
        ops: Vec<t::Operation>,
        status: t::TrustlogStatus,
    ) -> Result<Vec<db::InsertOutcome>, t::DbError> {
        let ops = ops.into_iter().map(Into::into).collect();
        let outcomes = self.imports.insert(ops, status.into()).await?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                m::InsertOutcome::Inserted => db::InsertOutcome::Inserted,
                m::InsertOutcome::Duplicate => db::InsertOutcome::Duplicate,
            })
            .collect())
    }

    async fn load_cursor(&mut self, key: String) -> Result<Option<t::Position>, t::DbError> {
        Ok(self.imports.load_cursor(&key).await?.map(Into::into))
    }

    async fn scan_after(
        &mut self,
        after: Option<t::Position>,
        limit: u32,
    ) -> Result<t::OperationBatch, t::DbError> {
        let rows = self
            .imports
            .scan_after(after.map(Into::into), limit)
            .await?;
        Ok(OperationBatch::pack_fetched(rows)?.into())
    }

    async fn due_retries(
        &mut self,
        now: t::Micros,
        limit: u32,
    ) -> Result<db::RetryBatch, t::DbError> {
        let rows = self.imports.due_retries(now, limit).await?;
        let batch = RetryBatch::pack_fetched(rows)?;
        Ok(db::RetryBatch {
            ops: batch.ops.into(),
            retry_counts: batch.retry_counts,
        })
    }

    async fn sweep_candidates(
        &mut self,
        before: t::Position,
        since: t::Micros,
        limit: u32,
    ) -> Result<t::OperationBatch, t::DbError> {
        let rows = self
            .imports
            .sweep_candidates(before.into(), since, limit)
            .await?;
        Ok(OperationBatch::pack_fetched(rows)?.into())
    }

    async fn stats(&mut self, cursor_key: String) -> Result<monitoring::DbStats, t::DbError> {
        Ok(self.imports.stats(&cursor_key).await?.into())
    }

    async fn apply(&mut self, work: db::UnitOfWork) -> Result<(), t::DbError> {
        Ok(self.imports.apply(work.into()).await?)
    }

    async fn begin_apply(
        &mut self,
        work: db::UnitOfWork,
    ) -> wasmtime::Result<Resource<BegunCommit>> {
        self.may_hold()?;
        let pending = self.imports.begin_apply(work.into());
        Ok(self.table.push(BegunCommit(Some(pending)))?)
    }
}

/// The host side of a `commit` resource: the unit of work running on the runtime,
/// until its outcome is collected (the guest's handle outlives the collection).
pub struct BegunCommit(Option<Pending<Result<(), m::DbError>>>);

/// The host side of a `delivery` resource: the batch on its way to the trust log,
/// until its confirmations are collected.
pub struct SentBatch(Option<Pending<Vec<Result<(), m::PublishError>>>>);

/// The most handed-off batches and units of work a guest may hold uncollected: its
/// pipeline's, with room to spare. Each is a task on the runtime, so a guest that
/// hoards them could exhaust the host; it traps instead.
const MAX_HANDED_OFF: usize = 4 * trustlog_guest::model::MAX_PIPELINE_DEPTH as usize;

impl TenantState {
    /// Counts a further hand-off, refused when the guest holds too many.
    fn may_hold(&mut self) -> wasmtime::Result<()> {
        if self.handed_off >= MAX_HANDED_OFF {
            wasmtime::bail!(
                "the guest holds {} batches and units of work uncollected (at most {MAX_HANDED_OFF})",
                self.handed_off
            );
        }
        self.handed_off += 1;
        Ok(())
    }

    /// Takes a handed-off piece out of the table as the guest drops its handle.
    fn release<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<T> {
        let value = self.table.delete(handle)?;
        self.handed_off = self.handed_off.saturating_sub(1);
        Ok(value)
    }
}

impl db::HostCommit for TenantState {
    async fn outcome(&mut self, commit: Resource<BegunCommit>) -> Result<(), t::DbError> {
        let Some(pending) = self.table.get_mut(&commit).ok().and_then(|c| c.0.take()) else {
            return Err(t::DbError::Other(
                "this commit's outcome was collected already".into(),
            ));
        };
        Ok(self.imports.commit_outcome(pending).await?)
    }

    async fn drop(&mut self, commit: Resource<BegunCommit>) -> wasmtime::Result<()> {
        // Dropped uncollected, the unit of work still runs to its end.
        self.release(commit)?;
        Ok(())
    }
}

impl publisher::Host for TenantState {
    async fn publish(&mut self, batch: t::EnvelopeBatch) -> Vec<Result<(), t::PublishError>> {
        let results = self.imports.publish(envelopes(batch)).await;
        results.into_iter().map(|r| r.map_err(Into::into)).collect()
    }

    async fn send(&mut self, batch: t::EnvelopeBatch) -> wasmtime::Result<Resource<SentBatch>> {
        self.may_hold()?;
        let pending = self.imports.send(envelopes(batch));
        Ok(self.table.push(SentBatch(Some(pending)))?)
    }
}

impl publisher::HostDelivery for TenantState {
    async fn confirmations(
        &mut self,
        delivery: Resource<SentBatch>,
    ) -> Vec<Result<(), t::PublishError>> {
        let Some(pending) = self.table.get_mut(&delivery).ok().and_then(|d| d.0.take()) else {
            // Collected already: nothing is confirmed twice.
            return Vec::new();
        };
        let results = self.imports.confirmations(pending).await;
        results.into_iter().map(|r| r.map_err(Into::into)).collect()
    }

    async fn drop(&mut self, delivery: Resource<SentBatch>) -> wasmtime::Result<()> {
        // Dropped uncollected, the batch still goes out; its rows stay unmarked.
        self.release(delivery)?;
        Ok(())
    }
}

fn envelopes(batch: t::EnvelopeBatch) -> EnvelopeBatch {
    EnvelopeBatch {
        op_ids: batch.op_ids,
        op_id_ends: batch.op_id_ends,
        payloads: batch.payloads,
        payload_ends: batch.payload_ends,
        sha256: batch.sha256,
    }
}

/// The component's imports: `db`, `publisher` and `log` through the generated
/// bindings; `digest` by hand (see [`DIGEST_INTERFACE`]).
fn link_imports(linker: &mut Linker<TenantState>) -> wasmtime::Result<()> {
    db::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    publisher::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    linker.instance(DIGEST_INTERFACE)?.func_wrap(
        "sha256",
        |store, (payloads, ends): (WasmList<u8>, WasmList<u32>)| {
            // The payloads are hashed where the guest wrote them, not copied out first.
            let bytes = payloads.as_le_slice(&store);
            let ends: Vec<u32> = ends
                .as_le_slice(&store)
                .iter()
                .map(|e| u32::from_le(*e))
                .collect();
            let slices = spans(&ends, bytes.len())
                .map_while(Result::ok)
                .map(|span| &bytes[span]);
            Ok((store.data().imports.sha256(slices).concat(),))
        },
    )
}

/// `digest` is linked by hand: its bindings would copy a batch's payloads out of
/// the guest only to hash them, and the same payloads cross again to be published.
/// A bad end stops the answer short, and the engine retries the rows left unhashed.
const DIGEST_INTERFACE: &str = "trustlog:engine/digest@0.1.0";

impl log::Host for TenantState {
    async fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        self.imports.log(level, &message);
    }
}

/// One tenant's live guest instance.
pub struct Instance {
    store: Store<TenantState>,
    bindings: bindings::Trustlog,
    tenant: Arc<str>,
    computing: Computing,
}

impl Instance {
    /// Classifies a failed call: a limit the guest ran into, or a plain trap.
    fn trap(&mut self, call: &'static str, e: wasmtime::Error) -> CallError {
        let tenant = self.tenant.to_string();
        let message = format!("{e:#}");
        let kind = self.store.data_mut().limiter.take_hit();
        match kind {
            Some(kind) => CallError::Limit {
                tenant,
                call,
                kind,
                message,
            },
            None => CallError::Trap {
                tenant,
                call,
                message,
            },
        }
    }

    /// Gives the next call its whole CPU budget, counted from the next tick; the
    /// guest counts as computing (the ticker ticks) until the guard is dropped.
    fn start_call(&mut self) -> Busy {
        self.store.data_mut().limiter.start_call();
        self.store.set_epoch_deadline(1);
        self.computing.enter()
    }

    /// Feeds this instance's publish and delivery observations into `metrics`.
    pub fn set_metrics(&mut self, metrics: Option<TenantMetrics>) {
        self.store.data_mut().imports.set_metrics(metrics);
    }

    /// Feeds this instance's latencies and call times into `probe`.
    pub fn set_probe(&mut self, probe: Option<Arc<Probe>>) {
        self.store.data_mut().imports.set_probe(probe);
    }

    /// Configures the engine; must come first.
    pub async fn configure(&mut self, cfg: m::Config) -> Result<(), CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_configure(&mut self.store, &cfg.into())
            .await;
        r.map_err(|e| self.trap("configure", e))?
            .map_err(|e| CallError::Engine(e.into()))
    }

    /// Applies a strategy to `ops`; one outcome per input.
    pub async fn record(
        &mut self,
        ops: Vec<m::Operation>,
        strategy: Option<m::Strategy>,
    ) -> Result<Vec<m::RecordOutcome>, CallError> {
        let ops: Vec<t::Operation> = ops.into_iter().map(Into::into).collect();
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_record(&mut self.store, &ops, strategy.map(Into::into))
            .await;
        let outcomes = r
            .map_err(|e| self.trap("record", e))?
            .map_err(|e| CallError::Engine(e.into()))?;
        Ok(outcomes.into_iter().map(Into::into).collect())
    }

    /// One scan batch.
    pub async fn scan_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_scan_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("scan-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// Settles the scan batches out.
    pub async fn scan_settle(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_scan_settle(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("scan-settle", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// One retry batch.
    pub async fn retry_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_retry_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("retry-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// One sweep batch.
    pub async fn sweep_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_sweep_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("sweep-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// One catch-up batch.
    pub async fn catch_up_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_catch_up_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("catch-up-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// The monitoring figures.
    pub async fn status(&mut self, now: m::Micros) -> Result<m::StatusReport, CallError> {
        let _computing = self.start_call();
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_status(&mut self.store, now)
            .await;
        let s = r
            .map_err(|e| self.trap("status", e))?
            .map_err(|e| CallError::Engine(e.into()))?;
        Ok(m::StatusReport {
            stats: s.stats.into(),
            cursor_lag_seconds: s.cursor_lag_seconds,
        })
    }
}

//! The wasmtime side: one engine and pre-linked component per process, one
//! store and instance per tenant, and the imports the guest calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use trustlog_guest::model as m;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, TrustlogPre, db, log, monitoring, publisher, t};
use crate::component_cache;
use crate::db::Database;
use crate::guest_output::GuestOutput;
use crate::metrics::TenantMetrics;
use crate::publisher::Publisher;

/// The component built from `guest/` by `host/build.rs`.
pub static GUEST_WASM: &[u8] = include_bytes!(env!("TRUSTLOG_GUEST_WASM"));

/// Why the runtime or an instance could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("wasmtime engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Component(#[from] component_cache::CacheError),
    #[error("linking the component: {0}")]
    Link(String),
    #[error("tenant {tenant}: instantiating the component: {message}")]
    Instantiate { tenant: String, message: String },
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
        tenant: String,
        call: &'static str,
        message: String,
    },
}

/// The process-wide engine and the component, compiled and linked once.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: TrustlogPre<TenantState>,
}

impl Runtime {
    /// Compiles (or loads from cache) the embedded component and links it.
    pub fn new() -> Result<Runtime, RuntimeError> {
        Self::with_component(GUEST_WASM)
    }

    /// Same as [`Runtime::new`] for another component binary.
    pub fn with_component(wasm: &[u8]) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let component = component_cache::load(&engine, wasm, &component_cache::cache_dir())?;
        let mut linker = Linker::<TenantState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        bindings::Trustlog::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        let pre = TrustlogPre::new(pre).map_err(|e| RuntimeError::Link(format!("{e:#}")))?;
        Ok(Runtime { engine, pre })
    }

    /// A fresh sandbox for `tenant`, wired to its own database and publisher.
    pub async fn instantiate(
        &self,
        tenant: &str,
        db: Database,
        publisher: Publisher,
    ) -> Result<Instance, RuntimeError> {
        let tenant: Arc<str> = Arc::from(tenant);
        // No preopened dirs, no env, no args, no sockets: the guest's only way out is our imports.
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(tenant.clone(), "stdout"))
            .stderr(GuestOutput::new(tenant.clone(), "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = TenantState {
            tenant: tenant.clone(),
            db,
            publisher,
            wasi,
            table: ResourceTable::new(),
            metrics: None,
            fetched: HashMap::new(),
        };
        let mut store = Store::new(&self.engine, state);
        let bindings = self.pre.instantiate_async(&mut store).await.map_err(|e| {
            RuntimeError::Instantiate {
                tenant: tenant.to_string(),
                message: format!("{e:#}"),
            }
        })?;
        Ok(Instance {
            store,
            bindings,
            tenant,
        })
    }
}

/// What a tenant's store holds: its adapters and its WASI context.
pub struct TenantState {
    tenant: Arc<str>,
    db: Database,
    publisher: Publisher,
    wasi: WasiCtx,
    table: ResourceTable,
    metrics: Option<TenantMetrics>,
    /// Timestamps of the rows the current tick read, by op_id, so the commit that marks
    /// them can observe insert→`TRUSTLOGGED` latency. Filled only when metrics are on.
    fetched: HashMap<String, m::Micros>,
}

impl TenantState {
    /// Notes the rows a tick read (one read per tick, so the last one is the one applied).
    fn remember<'a>(&mut self, rows: impl Iterator<Item = &'a m::Operation>) {
        if self.metrics.is_some() {
            self.fetched.clear();
            self.fetched
                .extend(rows.map(|op| (op.op_id.clone(), op.timestamp)));
        }
    }
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
        let outcomes = self
            .db
            .insert(ops, status.into())
            .await
            .map_err(t::DbError::from)?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                m::InsertOutcome::Inserted => db::InsertOutcome::Inserted,
                m::InsertOutcome::Duplicate => db::InsertOutcome::Duplicate,
            })
            .collect())
    }

    async fn load_cursor(&mut self, key: String) -> Result<Option<t::Position>, t::DbError> {
        Ok(self.db.load_cursor(&key).await?.map(Into::into))
    }

    async fn scan_after(
        &mut self,
        after: Option<t::Position>,
        limit: u32,
    ) -> Result<Vec<t::Operation>, t::DbError> {
        let rows = self.db.scan_after(after.map(Into::into), limit).await?;
        self.remember(rows.iter());
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn due_retries(
        &mut self,
        now: t::Micros,
        limit: u32,
    ) -> Result<Vec<db::RetryRow>, t::DbError> {
        let rows = self.db.due_retries(now, limit).await?;
        self.remember(rows.iter().map(|r| &r.op));
        Ok(rows
            .into_iter()
            .map(|r| db::RetryRow {
                op: r.op.into(),
                retry_count: r.retry_count,
            })
            .collect())
    }

    async fn sweep_candidates(
        &mut self,
        before: t::Position,
        limit: u32,
    ) -> Result<Vec<t::Operation>, t::DbError> {
        let rows = self.db.sweep_candidates(before.into(), limit).await?;
        self.remember(rows.iter());
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn stats(&mut self, cursor_key: String) -> Result<monitoring::DbStats, t::DbError> {
        Ok(self.db.stats(&cursor_key).await?.into())
    }

    async fn apply(&mut self, work: db::UnitOfWork) -> Result<(), t::DbError> {
        let work: m::UnitOfWork = work.into();
        let Some(metrics) = self.metrics.clone() else {
            return Ok(self.db.apply(work).await?);
        };
        let marked: Vec<m::Micros> = work
            .trustlogged
            .iter()
            .filter_map(|id| self.fetched.get(id).copied())
            .collect();
        self.fetched.clear();
        self.db.apply(work).await?;
        let committed = crate::clock::now_micros();
        metrics.delivered(marked.into_iter().map(|ts| committed.saturating_sub(ts)));
        Ok(())
    }
}

impl publisher::Host for TenantState {
    async fn publish(&mut self, batch: Vec<t::Envelope>) -> Vec<Result<(), t::PublishError>> {
        let batch = batch
            .into_iter()
            .map(|e| m::Envelope {
                op_id: e.op_id,
                payload: e.payload,
                sha256: e.sha256,
            })
            .collect();
        let started = Instant::now();
        let results = self.publisher.publish(batch).await;
        if let Some(metrics) = &self.metrics {
            metrics.publish(started.elapsed());
        }
        results.into_iter().map(|r| r.map_err(Into::into)).collect()
    }
}

impl log::Host for TenantState {
    async fn log(&mut self, level: log::Level, message: String) {
        let tenant = &*self.tenant;
        match level {
            log::Level::Trace => tracing::trace!(target: "trustlog::guest", tenant, "{message}"),
            log::Level::Debug => tracing::debug!(target: "trustlog::guest", tenant, "{message}"),
            log::Level::Info => tracing::info!(target: "trustlog::guest", tenant, "{message}"),
            log::Level::Warn => tracing::warn!(target: "trustlog::guest", tenant, "{message}"),
            log::Level::Error => tracing::error!(target: "trustlog::guest", tenant, "{message}"),
        }
    }
}

/// One tenant's live guest instance.
pub struct Instance {
    store: Store<TenantState>,
    bindings: bindings::Trustlog,
    tenant: Arc<str>,
}

impl Instance {
    fn trap(&self, call: &'static str, e: wasmtime::Error) -> CallError {
        CallError::Trap {
            tenant: self.tenant.to_string(),
            call,
            message: format!("{e:#}"),
        }
    }

    /// Feeds this instance's publish and delivery observations into `metrics`.
    pub fn set_metrics(&mut self, metrics: Option<TenantMetrics>) {
        self.store.data_mut().metrics = metrics;
    }

    /// Configures the engine; must come first.
    pub async fn configure(&mut self, cfg: m::Config) -> Result<(), CallError> {
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
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_scan_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("scan-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// One retry batch.
    pub async fn retry_tick(&mut self, now: m::Micros) -> Result<m::TickReport, CallError> {
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
        let r = self
            .bindings
            .trustlog_engine_engine()
            .call_sweep_tick(&mut self.store, now)
            .await;
        Ok(r.map_err(|e| self.trap("sweep-tick", e))?
            .map_err(|e| CallError::Engine(e.into()))?
            .into())
    }

    /// The monitoring figures.
    pub async fn status(&mut self, now: m::Micros) -> Result<m::StatusReport, CallError> {
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

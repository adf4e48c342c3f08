//! One tenant: its adapters, its configuration and its guest instance.
//!
//! A trap leaves an instance unusable, so the tenant drops it and builds a
//! fresh one for the next call: a guest fault costs one call, never the host.

use std::sync::Arc;
use std::time::Instant;

use trustlog_guest::model as m;

use crate::db::Database;
use crate::publisher::Publisher;
use crate::sandbox::imports::{HostImports, LogAllowance, Probe};
use crate::sandbox::limits::Limits;
use crate::sandbox::native::NativeInstance;
use crate::sandbox::runtime::{CallError, Instance, Runtime, RuntimeError};
use crate::surfaces::metrics::TenantMetrics;

/// Why a tenant call failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The runtime or the guest instance could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A call into the guest failed: an error it returned, a trap, or a limit it hit.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl TenantError {
    /// The limit the guest ran into, when that is why the call failed.
    pub fn limit(&self) -> Option<crate::sandbox::limits::LimitKind> {
        match self {
            TenantError::Call(CallError::Limit { kind, .. }) => Some(*kind),
            _ => None,
        }
    }
}

/// Where a tenant's engine runs.
#[derive(Clone)]
pub enum Backend {
    /// In a wasm sandbox of this runtime: how trustlog runs.
    Wasm(Runtime),
    /// Compiled into the host, unsandboxed: to measure what the sandbox costs.
    Native,
}

/// A live engine of either backend.
enum Live {
    Wasm(Instance),
    Native(NativeInstance),
}

/// Calls the same method on whichever engine is live.
macro_rules! on_live {
    ($live:expr, $i:ident => $call:expr) => {
        match $live {
            Live::Wasm($i) => $call,
            Live::Native($i) => $call,
        }
    };
}

/// A tenant's adapters and its (lazily rebuilt) guest instance.
pub struct Tenant {
    id: String,
    backend: Backend,
    db: Database,
    publisher: Publisher,
    config: m::Config,
    limits: Limits,
    /// Shared by every instance of the tenant, and with its request tenant.
    log: LogAllowance,
    instance: Option<Live>,
    metrics: Option<TenantMetrics>,
    probe: Option<Arc<Probe>>,
}

impl Tenant {
    /// Instantiates and configures the guest for `id`; fails on a bad configuration.
    pub async fn new(
        runtime: Runtime,
        id: &str,
        db: Database,
        publisher: Publisher,
        config: m::Config,
    ) -> Result<Tenant, TenantError> {
        Self::with_limits(runtime, id, db, publisher, config, Limits::default()).await
    }

    /// Same as [`Tenant::new`], every instance held to `limits`.
    pub async fn with_limits(
        runtime: Runtime,
        id: &str,
        db: Database,
        publisher: Publisher,
        config: m::Config,
        limits: Limits,
    ) -> Result<Tenant, TenantError> {
        Self::on_backend(Backend::Wasm(runtime), id, db, publisher, config, limits).await
    }

    /// Same as [`Tenant::with_limits`] on either backend (limits bind the wasm one only).
    pub async fn on_backend(
        backend: Backend,
        id: &str,
        db: Database,
        publisher: Publisher,
        config: m::Config,
        limits: Limits,
    ) -> Result<Tenant, TenantError> {
        let log = LogAllowance::new(limits.log_lines_per_sec);
        Self::sharing_log(backend, id, db, publisher, config, limits, log).await
    }

    /// Same as [`Tenant::on_backend`], its guest's log lines counted against `log`,
    /// which another tenant object of the same tenant holds too.
    pub async fn sharing_log(
        backend: Backend,
        id: &str,
        db: Database,
        publisher: Publisher,
        config: m::Config,
        limits: Limits,
        log: LogAllowance,
    ) -> Result<Tenant, TenantError> {
        let mut tenant = Tenant {
            id: id.to_string(),
            backend,
            db,
            publisher,
            config,
            limits,
            log,
            instance: None,
            metrics: None,
            probe: None,
        };
        tenant.instance().await?;
        Ok(tenant)
    }

    /// The allowance its guest's log lines are counted against.
    pub fn log_allowance(&self) -> LogAllowance {
        self.log.clone()
    }

    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The tenant's publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Configures the live engine again, so it forgets what it cached of the database
    /// (the cursor): after another host delivered for a while, it reads it anew.
    pub async fn reset_engine(&mut self) -> Result<(), TenantError> {
        let config = self.config.clone();
        if self.instance.is_none() {
            return Ok(());
        }
        self.call(async |l| on_live!(l, i => i.configure(config).await))
            .await
    }

    /// Feeds publish and delivery observations into `metrics`, in this and every later instance.
    pub fn set_metrics(&mut self, metrics: TenantMetrics) {
        if let Some(live) = &mut self.instance {
            on_live!(live, i => i.set_metrics(Some(metrics.clone())));
        }
        self.metrics = Some(metrics);
    }

    /// Feeds exact latencies and the time split of every call into `probe`.
    pub fn set_probe(&mut self, probe: Arc<Probe>) {
        if let Some(live) = &mut self.instance {
            on_live!(live, i => i.set_probe(Some(probe.clone())));
        }
        self.probe = Some(probe);
    }

    /// The limits every instance of this tenant is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine configuration the guest runs with.
    pub fn config(&self) -> &m::Config {
        &self.config
    }

    async fn instance(&mut self) -> Result<&mut Live, TenantError> {
        if self.instance.is_none() {
            let mut live = match &self.backend {
                Backend::Wasm(runtime) => Live::Wasm(
                    runtime
                        .instantiate(
                            &self.id,
                            self.db.clone(),
                            self.publisher.clone(),
                            self.limits,
                            self.log.clone(),
                        )
                        .await?,
                ),
                Backend::Native => Live::Native(NativeInstance::new(
                    Arc::from(self.id.as_str()),
                    HostImports::new(
                        Arc::from(self.id.as_str()),
                        self.db.clone(),
                        self.publisher.clone(),
                        self.log.clone(),
                    ),
                )),
            };
            on_live!(&mut live, i => i.configure(self.config.clone()).await)?;
            on_live!(&mut live, i => {
                i.set_metrics(self.metrics.clone());
                i.set_probe(self.probe.clone());
            });
            self.instance = Some(live);
        }
        Ok(self.instance.as_mut().expect("set above"))
    }

    async fn call<R>(
        &mut self,
        f: impl AsyncFnOnce(&mut Live) -> Result<R, CallError>,
    ) -> Result<R, TenantError> {
        let live = self.instance().await?;
        let started = Instant::now();
        let result = f(live).await;
        if let Some(p) = &self.probe {
            p.engine_call(started.elapsed());
        }
        match &result {
            Err(e @ CallError::Trap { .. }) => {
                tracing::error!(tenant = %self.id, error = %e, "guest trapped; replacing its instance");
                if let Some(m) = &self.metrics {
                    m.trapped();
                }
                self.instance = None;
            }
            Err(e @ CallError::Limit { kind, .. }) => {
                tracing::error!(tenant = %self.id, error = %e, limit = kind.name(), "guest exceeded a limit; dropping its instance");
                if let Some(m) = &self.metrics {
                    m.trapped();
                    m.limit_exceeded(kind.name());
                }
                self.instance = None;
            }
            _ => {}
        }
        Ok(result?)
    }

    /// Applies a strategy to `ops`.
    pub async fn record(
        &mut self,
        ops: Vec<m::Operation>,
        strategy: Option<m::Strategy>,
    ) -> Result<Vec<m::RecordOutcome>, TenantError> {
        self.call(async |l| on_live!(l, i => i.record(ops, strategy).await))
            .await
    }

    /// One scan batch at `now`.
    pub async fn scan_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.scan_tick(now).await))
            .await
    }

    /// Settles the scan batches out at `now`: before stopping, standing by or pausing.
    pub async fn scan_settle(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.scan_settle(now).await))
            .await
    }

    /// One retry batch at `now`.
    pub async fn retry_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.retry_tick(now).await))
            .await
    }

    /// One sweep batch at `now`.
    pub async fn sweep_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.sweep_tick(now).await))
            .await
    }

    /// One catch-up batch at `now`.
    pub async fn catch_up_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.catch_up_tick(now).await))
            .await
    }

    /// The monitoring figures at `now`.
    pub async fn status(&mut self, now: m::Micros) -> Result<m::StatusReport, TenantError> {
        self.call(async |l| on_live!(l, i => i.status(now).await))
            .await
    }
}

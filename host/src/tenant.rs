//! One tenant: its adapters, its configuration and its guest instance.
//!
//! A trap leaves an instance unusable, so the tenant drops it and builds a
//! fresh one for the next call: a guest fault costs one call, never the host.

use trustlog_guest::model as m;

use crate::db::Database;
use crate::limits::Limits;
use crate::metrics::TenantMetrics;
use crate::publisher::Publisher;
use crate::runtime::{CallError, Instance, Runtime, RuntimeError};

/// Why a tenant call failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Call(#[from] CallError),
}

impl TenantError {
    /// The limit the guest ran into, when that is why the call failed.
    pub fn limit(&self) -> Option<crate::limits::LimitKind> {
        match self {
            TenantError::Call(CallError::Limit { kind, .. }) => Some(*kind),
            _ => None,
        }
    }
}

/// A tenant's adapters and its (lazily rebuilt) guest instance.
pub struct Tenant {
    id: String,
    runtime: Runtime,
    db: Database,
    publisher: Publisher,
    config: m::Config,
    limits: Limits,
    instance: Option<Instance>,
    metrics: Option<TenantMetrics>,
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
        let mut tenant = Tenant {
            id: id.to_string(),
            runtime,
            db,
            publisher,
            config,
            limits,
            instance: None,
            metrics: None,
        };
        tenant.instance().await?;
        Ok(tenant)
    }

    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tenant's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Feeds publish and delivery observations into `metrics`, in this and every later instance.
    pub fn set_metrics(&mut self, metrics: TenantMetrics) {
        if let Some(instance) = &mut self.instance {
            instance.set_metrics(Some(metrics.clone()));
        }
        self.metrics = Some(metrics);
    }

    /// The limits every instance of this tenant is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The engine configuration the guest runs with.
    pub fn config(&self) -> &m::Config {
        &self.config
    }

    async fn instance(&mut self) -> Result<&mut Instance, TenantError> {
        if self.instance.is_none() {
            let mut instance = self
                .runtime
                .instantiate(
                    &self.id,
                    self.db.clone(),
                    self.publisher.clone(),
                    self.limits,
                )
                .await?;
            instance.configure(self.config.clone()).await?;
            instance.set_metrics(self.metrics.clone());
            self.instance = Some(instance);
        }
        Ok(self.instance.as_mut().expect("set above"))
    }

    async fn call<R>(
        &mut self,
        f: impl AsyncFnOnce(&mut Instance) -> Result<R, CallError>,
    ) -> Result<R, TenantError> {
        let result = f(self.instance().await?).await;
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
        self.call(async |i| i.record(ops, strategy).await).await
    }

    /// One scan batch at `now`.
    pub async fn scan_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |i| i.scan_tick(now).await).await
    }

    /// One retry batch at `now`.
    pub async fn retry_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |i| i.retry_tick(now).await).await
    }

    /// One sweep batch at `now`.
    pub async fn sweep_tick(&mut self, now: m::Micros) -> Result<m::TickReport, TenantError> {
        self.call(async |i| i.sweep_tick(now).await).await
    }

    /// The monitoring figures at `now`.
    pub async fn status(&mut self, now: m::Micros) -> Result<m::StatusReport, TenantError> {
        self.call(async |i| i.status(now).await).await
    }
}

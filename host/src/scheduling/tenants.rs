//! The tenants of one host, each in a sandbox of its own with its own pool,
//! publisher and worker task; added, removed and replaced while the host runs.
//!
//! Replacing a tenant (a new component, a new setting) stops its worker between
//! two batches before the new one starts, so no row is delivered by both: what is
//! in flight finishes, the cursor in the database hands over the rest.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, RwLock, watch};
use tokio::task::JoinHandle;
use trustlog_guest::model::DbError;

use crate::adapters::Adapters;
use crate::config::TenantSpec;
use crate::db::Database;
use crate::db::shared_server::{DEFAULT_POOL_SIZE, SharedServers};
use crate::publisher::Publisher;
use crate::sandbox::imports::LogAllowance;
use crate::sandbox::limits::{MAX_RESTART_PAUSE, RESTART_COUNT_RESET};
use crate::sandbox::runtime::{GUEST_WASM, Runtime, RuntimeError, WasmEngine, component_digest};
use crate::scheduling::tenant::{Backend, Tenant, TenantError};
use crate::scheduling::worker::{Delivery, DrainBounds, Exit, LeaseSettings, Summary, Worker};
use crate::surfaces::metrics::{Metrics, TenantMetrics};

/// Why a tenant could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A tenant with this id is already running or waiting to start.
    #[error("tenant {id}: already running")]
    Exists {
        /// The tenant's id.
        id: String,
    },
    /// Its database could not be connected to or migrated.
    #[error("tenant {id}: database {url}: {message}")]
    Database {
        /// The tenant's id.
        id: String,
        /// The database URL, its password redacted.
        url: String,
        /// What went wrong with the database.
        message: String,
        /// It did not answer (rather than refusing what it holds): worth retrying.
        unavailable: bool,
    },
    /// Its publisher URL could not be used.
    #[error("tenant {id}: publisher {url}: {message}")]
    Publisher {
        /// The tenant's id.
        id: String,
        /// The publisher URL, its password redacted.
        url: String,
        /// Why the publisher could not be set up.
        message: String,
    },
    /// Its component file could not be read.
    #[error("tenant {id}: reading its component {path}: {message}")]
    Component {
        /// The tenant's id.
        id: String,
        /// The component file, as configured.
        path: String,
        /// The I/O error reading it.
        message: String,
    },
    /// Its component could not be compiled or linked.
    #[error("tenant {id}: {source}")]
    Runtime {
        /// The tenant's id.
        id: String,
        /// Why compiling or linking the component failed.
        #[source]
        source: RuntimeError,
    },
    /// Its guest could not be instantiated or configured.
    #[error("tenant {id}: {source}")]
    Guest {
        /// The tenant's id.
        id: String,
        /// Why instantiating or configuring the guest failed.
        #[source]
        source: TenantError,
    },
}

impl StartError {
    /// Whether the database did not answer: the tenant is retried rather than the
    /// host stopped. Publishers connect lazily (one that is down puts the started
    /// tenant in an outage), so a publisher error here is a bad URL; that, a
    /// component that cannot be read or compiled, or tables that cannot be served
    /// as they are, need the operator instead.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StartError::Database {
                unavailable: true,
                ..
            }
        )
    }
}

/// The first wait before a tenant that could not start is tried again; it doubles
/// with each failed attempt up to [`START_RETRY_MAX`].
pub const START_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two attempts to start a tenant.
pub const START_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// A tenant whose database did not answer at start, tried again with backoff until
/// it starts; the host and the other tenants run meanwhile.
pub struct Starting {
    /// What it will run.
    pub spec: TenantSpec,
    /// The last attempt's error, and how many attempts failed.
    last: StdMutex<(String, u32)>,
    /// Set when it is removed or the host shuts down: the retries end. An attempt
    /// in progress finishes and closes what it opened (aborting it could leave a
    /// listener task behind).
    cancel: watch::Sender<bool>,
}

impl Starting {
    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// Why the last attempt failed, and how many have.
    pub fn last_error(&self) -> (String, u32) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn failed(&self, error: String) -> u32 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.0 = error;
        last.1 += 1;
        last.1
    }

    fn stop_retrying(&self) {
        let _ = self.cancel.send(true);
    }
}

/// What [`Tenants::start`] did with a tenant.
pub enum Started {
    /// It runs.
    Running(Arc<Running>),
    /// Its database did not answer; it is being retried.
    Retrying(Arc<Starting>),
}

/// Where a tenant's worker stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// The worker is running.
    Running,
    /// `--until-drained`: everything was delivered.
    Drained,
    /// The worker stopped: a limit exceeded, or a shutdown.
    Stopped {
        /// Why it stopped: the limit exceeded, or the shutdown.
        reason: String,
    },
}

impl RunState {
    /// `running`, `drained` or `stopped`, as status reports name it.
    pub fn name(&self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Drained => "drained",
            RunState::Stopped { .. } => "stopped",
        }
    }

    /// Why the worker stopped, if it did.
    pub fn reason(&self) -> Option<&str> {
        match self {
            RunState::Stopped { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One tenant at work: its adapters, its worker, and a guest instance for requests.
pub struct Running {
    /// What it runs: its entry of the configuration.
    pub spec: TenantSpec,
    /// Its worker, which delivers its recorded operations.
    pub worker: Worker,
    /// Its database: where its operations are recorded and its cursor is kept.
    pub db: Database,
    /// Its publisher: where its operations are delivered.
    pub publisher: Publisher,
    /// Its metrics, labelled with its id.
    pub metrics: TenantMetrics,
    /// How long instantiating and configuring its guest took at start.
    pub instantiate: std::time::Duration,
    runtime: Runtime,
    /// The worker's allowance of guest log lines, which the request instance shares.
    log: LogAllowance,
    /// Built at the first request: an idle tenant holds one instance, not two.
    front: Mutex<Option<Tenant>>,
    state: StdMutex<RunState>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<Summary>>>,
    listener: Option<JoinHandle<()>>,
}

impl Running {
    /// The tenant's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// What its worker does now: delivering, standing by for another host, or paused
    /// by an outage.
    pub fn delivery(&self) -> Delivery {
        self.worker.delivery()
    }

    /// Where its worker stands.
    pub fn state(&self) -> RunState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, state: RunState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Runs `f` on the tenant's request instance (not the worker's, so a tick waiting on
    /// a slow broker never holds up a scrape or an insert).
    pub async fn with_front<R>(
        &self,
        f: impl AsyncFnOnce(&mut Tenant) -> Result<R, TenantError>,
    ) -> Result<R, TenantError> {
        let mut front = self.front.lock().await;
        if front.is_none() {
            let mut tenant = Tenant::sharing_log(
                Backend::Wasm(self.runtime.clone()),
                &self.spec.id,
                self.db.clone(),
                self.publisher.clone(),
                self.spec.engine.clone(),
                self.spec.limits,
                self.log.clone(),
            )
            .await?;
            tenant.set_metrics(self.metrics.clone());
            *front = Some(tenant);
        }
        f(front.as_mut().expect("set above")).await
    }

    /// Stops the worker between two batches and waits for it.
    async fn stop_worker(&self) -> Option<Summary> {
        let _ = self.stop.send(true);
        if let Some(l) = &self.listener {
            l.abort();
        }
        match self.task.lock().await.take() {
            Some(task) => task.await.ok(),
            None => None,
        }
    }

    /// Stops the worker and closes the adapters.
    async fn stop(&self) -> Option<Summary> {
        let summary = self.stop_worker().await;
        self.db.close().await;
        summary
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Ids of tenants started that were not there before.
    pub added: Vec<String>,
    /// Ids of tenants stopped because the new configuration drops them.
    pub removed: Vec<String>,
    /// Ids of tenants restarted with a changed entry or component.
    pub replaced: Vec<String>,
    /// Ids of tenants left running, or waiting for their database, as they were.
    pub unchanged: Vec<String>,
    /// Tenants that could not be started, with the reason; the others went ahead.
    pub failed: Vec<(String, String)>,
    /// Tenants whose database did not answer, being retried, with the error.
    pub retrying: Vec<(String, String)>,
}

/// Every tenant of the host.
pub struct Tenants {
    engine: WasmEngine,
    metrics: Arc<Metrics>,
    until_drained: bool,
    /// When a drain gives up (`--max-wait`, `--give-up-after`).
    drain: DrainBounds,
    /// This process's name in the tenants' lease rows.
    holder: String,
    /// The database servers whose connections tenants share.
    servers: SharedServers,
    /// Compiled components by the SHA-256 of their bytes: tenants running the same
    /// component share its machine code, and a changed file is recompiled.
    runtimes: StdMutex<HashMap<[u8; 32], Runtime>>,
    running: RwLock<BTreeMap<String, Arc<Running>>>,
    /// Tenants waiting for their database, by id.
    starting: StdMutex<BTreeMap<String, Arc<Starting>>>,
    /// Held while the set of tenants changes (add, remove, replace, reload, a
    /// waiting tenant starting), so two changes of one id never interleave.
    changing: Mutex<()>,
    /// Signalled whenever a worker ends.
    ended: Arc<Notify>,
    /// The adapters tenants' URLs are connected with.
    adapters: Adapters,
}

impl Tenants {
    /// An empty host on `engine`, reporting into `metrics`.
    pub fn new(engine: WasmEngine, metrics: Arc<Metrics>, until_drained: bool) -> Arc<Tenants> {
        Self::draining(engine, metrics, until_drained, DrainBounds::default())
    }

    /// An empty host whose drains (`until_drained`) give up within `drain`.
    pub fn draining(
        engine: WasmEngine,
        metrics: Arc<Metrics>,
        until_drained: bool,
        drain: DrainBounds,
    ) -> Arc<Tenants> {
        Self::sharing(engine, metrics, until_drained, drain, DEFAULT_POOL_SIZE)
    }

    /// Same as [`Tenants::draining`], tenants with a `schema` on one server sharing a
    /// pool of at most `pool_size` connections (and one listener) per server.
    pub fn sharing(
        engine: WasmEngine,
        metrics: Arc<Metrics>,
        until_drained: bool,
        drain: DrainBounds,
        pool_size: u32,
    ) -> Arc<Tenants> {
        Self::with_adapters(
            engine,
            metrics,
            until_drained,
            drain,
            pool_size,
            Adapters::new(),
        )
    }

    /// Same as [`Tenants::sharing`], tenants' URLs connected with `adapters`.
    pub fn with_adapters(
        engine: WasmEngine,
        metrics: Arc<Metrics>,
        until_drained: bool,
        drain: DrainBounds,
        pool_size: u32,
        adapters: Adapters,
    ) -> Arc<Tenants> {
        Arc::new(Tenants {
            adapters,
            servers: SharedServers::new(pool_size),
            engine,
            metrics,
            until_drained,
            drain,
            holder: crate::scheduling::lease::holder_id(),
            runtimes: StdMutex::new(HashMap::new()),
            running: RwLock::new(BTreeMap::new()),
            starting: StdMutex::new(BTreeMap::new()),
            changing: Mutex::new(()),
            ended: Arc::new(Notify::new()),
        })
    }

    /// Connections of each pool tenants share, as the host started with.
    pub fn shared_pool_size(&self) -> u32 {
        self.servers.pool_size()
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tenant `id`, if it is there.
    pub async fn get(&self, id: &str) -> Option<Arc<Running>> {
        self.running.read().await.get(id).cloned()
    }

    /// Every tenant, by id.
    pub async fn list(&self) -> Vec<Arc<Running>> {
        self.running.read().await.values().cloned().collect()
    }

    /// The tenant `id`, if it waits for its database.
    pub fn starting(&self, id: &str) -> Option<Arc<Starting>> {
        self.starting_map().get(id).cloned()
    }

    /// Every tenant waiting for its database, by id.
    pub fn all_starting(&self) -> Vec<Arc<Starting>> {
        self.starting_map().values().cloned().collect()
    }

    fn starting_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Starting>>> {
        self.starting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `id` off the tenants waiting to start, if it is the same `one`.
    fn take_starting(&self, id: &str, one: Option<&Arc<Starting>>) -> Option<Arc<Starting>> {
        let mut map = self.starting_map();
        match (map.get(id), one) {
            (Some(current), Some(one)) if !Arc::ptr_eq(current, one) => None,
            (Some(_), _) => map.remove(id),
            (None, _) => None,
        }
    }

    /// Starts a tenant, or, when its database does not answer (and the host is not
    /// draining, which needs it now), lists it as starting and tries again with
    /// backoff. Any other error is returned: it needs the operator.
    pub async fn start(self: &Arc<Self>, spec: TenantSpec) -> Result<Started, StartError> {
        let _one_change = self.changing.lock().await;
        self.start_locked(spec).await
    }

    async fn start_locked(self: &Arc<Self>, spec: TenantSpec) -> Result<Started, StartError> {
        if self.starting(&spec.id).is_some() {
            return Err(StartError::Exists { id: spec.id });
        }
        match self.add_locked(spec.clone()).await {
            Ok(running) => Ok(Started::Running(running)),
            Err(e) if e.is_transient() && !self.until_drained => {
                let starting = Arc::new(Starting {
                    spec,
                    last: StdMutex::new((e.to_string(), 1)),
                    cancel: watch::Sender::new(false),
                });
                tracing::warn!(
                    tenant = starting.id(),
                    error = %e,
                    retry_in = ?START_RETRY_FIRST,
                    "tenant not started: trying again; the other tenants run on"
                );
                self.metrics.tenant_down(starting.id());
                tokio::spawn(retry_start(Arc::downgrade(self), starting.clone()));
                self.starting_map()
                    .insert(starting.id().to_string(), starting.clone());
                Ok(Started::Retrying(starting))
            }
            Err(e) => Err(e),
        }
    }

    fn runtime(&self, spec: &TenantSpec) -> Result<Runtime, StartError> {
        let wasm: Cow<'static, [u8]> = match &spec.component {
            Some(path) => Cow::Owned(std::fs::read(path).map_err(|e| StartError::Component {
                id: spec.id.clone(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?),
            None => Cow::Borrowed(GUEST_WASM),
        };
        let key = component_digest(&wasm);
        let mut cache = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runtime) = cache.get(&key) {
            return Ok(runtime.clone());
        }
        let runtime =
            Runtime::on_engine(&self.engine, &wasm).map_err(|source| StartError::Runtime {
                id: spec.id.clone(),
                source,
            })?;
        cache.insert(key, runtime.clone());
        Ok(runtime)
    }

    /// Connects, migrates and instantiates `spec`, without starting its worker.
    async fn prepare(&self, spec: TenantSpec) -> Result<Running, StartError> {
        let id = spec.id.clone();
        let db_failed = |e: DbError| StartError::Database {
            id: id.clone(),
            url: crate::publisher::options::redact(&spec.db),
            unavailable: matches!(e, DbError::Unavailable(_)),
            message: e.to_string(),
        };
        // A schema lives on a server other tenants share (and is created there if missing).
        let db = match &spec.schema {
            Some(schema) => self.servers.connect(&schema.server, &schema.name).await,
            None => self.adapters.connect_database(&spec.db).await,
        }
        .map_err(db_failed)?;
        db.migrate().await.map_err(db_failed)?;
        let publisher = self
            .adapters
            .connect_publisher(&spec.publisher)
            .await
            .map_err(|e| StartError::Publisher {
                id: id.clone(),
                url: crate::publisher::options::redact(&spec.publisher),
                message: e.to_string(),
            })?;
        let runtime = self.runtime(&spec)?;
        let instantiating = std::time::Instant::now();
        let tenant = Tenant::with_limits(
            runtime.clone(),
            &id,
            db.clone(),
            publisher.clone(),
            spec.engine.clone(),
            spec.limits,
        )
        .await
        .map_err(|source| StartError::Guest {
            id: id.clone(),
            source,
        })?;
        // Instantiation and the configure call: what a pooled, pre-linked instance costs.
        let instantiate = instantiating.elapsed();
        let instantiate_us = instantiate.as_micros() as u64;
        tracing::debug!(tenant = %id, instantiate_us, "guest instantiated");
        let metrics = self.metrics.tenant(&id);
        let log = tenant.log_allowance();
        let listening = !spec.poll_only && db.notifies();
        let worker = Worker::new(tenant, spec.intervals)
            .with_metrics(metrics.clone())
            .await
            .watching(!listening)
            .with_lease(LeaseSettings {
                holder: self.holder.clone(),
                ttl: spec.intervals.lease_ttl,
            })
            .with_drain_bounds(self.drain);
        let listener = if listening {
            db.spawn_listener(worker.wake_handle())
        } else {
            None
        };
        let (stop, _) = watch::channel(false);
        Ok(Running {
            spec,
            worker,
            db,
            publisher,
            metrics,
            instantiate,
            runtime,
            log,
            front: Mutex::new(None),
            state: StdMutex::new(RunState::Running),
            stop,
            task: Mutex::new(None),
            listener,
        })
    }

    /// Starts the worker of a prepared tenant and lists it.
    async fn launch(&self, running: Running) -> Arc<Running> {
        let running = Arc::new(running);
        // Before the worker starts: a predecessor stopping under the same id marked the
        // tenant down, and a worker stopped at once by a limit must leave it down.
        running.metrics.up(true);
        let worker = running.worker.clone();
        let stopped = running.stop.subscribe();
        let until_drained = self.until_drained;
        let me = running.clone();
        let ended = self.ended.clone();
        // --until-drained promises an end, so a limit ends its tenant there.
        let restart_after = running.spec.limits.restart_after.filter(|_| !until_drained);
        let task = tokio::spawn(async move {
            let mut began = std::time::Instant::now();
            let mut summary = worker.run(until_drained, stopped.clone()).await;
            let mut pause: Option<Duration> = None;
            while let Exit::LimitExceeded { reason, .. } = &summary.exit
                && let Some(first) = restart_after
            {
                // Limits hit again and again double the pause, deliveries between them or
                // not, so a guest that fails now and then cannot claim a core by it; a
                // run that lasted a while starts the count again.
                let wait = match pause {
                    Some(p) if began.elapsed() < RESTART_COUNT_RESET => {
                        (p * 2).min(MAX_RESTART_PAUSE)
                    }
                    _ => first,
                };
                pause = Some(wait);
                let shown = humantime::format_duration(wait);
                tracing::error!(tenant = %me.spec.id, %reason, restart_in = %shown, "tenant stopped by a limit; it starts again after a pause");
                me.metrics.up(false);
                me.set_state(RunState::Stopped {
                    reason: format!("{reason}; starting again in {shown}"),
                });
                let mut asked = stopped.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = asked.wait_for(|stop| *stop) => {
                        summary.exit = Exit::Shutdown;
                        break;
                    }
                }
                me.metrics.restarted();
                me.metrics.up(true);
                me.set_state(RunState::Running);
                tracing::info!(tenant = %me.spec.id, "tenant started again");
                began = std::time::Instant::now();
                let next = worker.run(until_drained, stopped.clone()).await;
                summary = summary.then(next);
            }
            let state = match &summary.exit {
                Exit::Drained => RunState::Drained,
                Exit::Shutdown => RunState::Stopped {
                    reason: "shut down".into(),
                },
                Exit::LimitExceeded { reason, .. } => {
                    tracing::error!(tenant = %me.spec.id, %reason, "tenant stopped");
                    RunState::Stopped {
                        reason: reason.clone(),
                    }
                }
                Exit::TimedOut(left) => {
                    let mut reason = format!(
                        "not drained within --max-wait: {} rows wait for delivery, {} in the retry queue",
                        left.waiting, left.retrying
                    );
                    if let Some(due) = left.next_retry_at {
                        reason.push_str(&format!(
                            " (next due {})",
                            crate::surfaces::ingest::format_timestamp(due)
                        ));
                    }
                    if let Some(outage) = &left.outage {
                        reason.push_str(&format!("; {outage}"));
                    }
                    tracing::error!(tenant = %me.spec.id, %reason, "drain gave up");
                    RunState::Stopped { reason }
                }
                Exit::Failing {
                    error,
                    failing_for,
                    left,
                } => {
                    let reason = format!(
                        "every tick failed for {:.0} s, delivering nothing: {error}; \
                         {} rows wait for delivery, {} in the retry queue",
                        failing_for.as_secs_f64(),
                        left.waiting,
                        left.retrying
                    );
                    tracing::error!(tenant = %me.spec.id, %reason, "drain gave up");
                    RunState::Stopped { reason }
                }
            };
            me.metrics.up(false);
            me.set_state(state);
            ended.notify_waiters();
            summary
        });
        *running.task.lock().await = Some(task);
        self.running
            .write()
            .await
            .insert(running.spec.id.clone(), running.clone());
        tracing::info!(tenant = %running.spec.id, db = %crate::publisher::options::redact(&running.spec.db), publisher = %crate::publisher::options::redact(&running.spec.publisher), listening = running.listener.is_some(), "tenant started");
        running
    }

    /// Adds and starts a tenant.
    pub async fn add(&self, spec: TenantSpec) -> Result<Arc<Running>, StartError> {
        let _one_change = self.changing.lock().await;
        self.add_locked(spec).await
    }

    async fn add_locked(&self, spec: TenantSpec) -> Result<Arc<Running>, StartError> {
        if self.running.read().await.contains_key(&spec.id) {
            return Err(StartError::Exists { id: spec.id });
        }
        let prepared = self.prepare(spec).await?;
        Ok(self.launch(prepared).await)
    }

    /// Stops and removes a tenant; false if there was none by that id.
    pub async fn remove(&self, id: &str) -> bool {
        let _one_change = self.changing.lock().await;
        self.remove_locked(id).await
    }

    async fn remove_locked(&self, id: &str) -> bool {
        if let Some(starting) = self.take_starting(id, None) {
            starting.stop_retrying();
            self.metrics.remove_tenant(id);
            tracing::info!(tenant = id, "tenant removed before it could start");
            return true;
        }
        let Some(running) = self.running.write().await.remove(id) else {
            return false;
        };
        let summary = running.stop().await;
        self.metrics.remove_tenant(id);
        tracing::info!(tenant = id, ?summary, "tenant removed");
        true
    }

    /// Replaces (or adds) a tenant: the new one is ready before the old one stops,
    /// and the old one answers requests until the new one takes its place.
    pub async fn replace(&self, spec: TenantSpec) -> Result<Arc<Running>, StartError> {
        let _one_change = self.changing.lock().await;
        self.replace_locked(spec).await
    }

    async fn replace_locked(&self, spec: TenantSpec) -> Result<Arc<Running>, StartError> {
        let prepared = self.prepare(spec).await?;
        if let Some(waiting) = self.take_starting(&prepared.spec.id, None) {
            waiting.stop_retrying();
        }
        let old = self.get(&prepared.spec.id).await;
        if let Some(old) = &old {
            old.stop_worker().await;
        }
        // The old pool closes when its last request lets go of it; closing it here
        // would fail a request that picked the old tenant a moment before the swap.
        Ok(self.launch(prepared).await)
    }

    /// Makes the host run exactly `specs`: adds, removes and replaces what changed.
    pub async fn apply(self: &Arc<Self>, specs: Vec<TenantSpec>) -> ReloadReport {
        let _one_change = self.changing.lock().await;
        let mut report = ReloadReport::default();
        let running: BTreeMap<String, TenantSpec> = self
            .running
            .read()
            .await
            .iter()
            .map(|(id, r)| (id.clone(), r.spec.clone()))
            .collect();
        let waiting: BTreeMap<String, Arc<Starting>> = self.starting_map().clone();
        for id in running.keys().chain(waiting.keys()) {
            if !specs.iter().any(|s| &s.id == id) {
                self.remove_locked(id).await;
                report.removed.push(id.clone());
            }
        }
        for spec in specs {
            let id = spec.id.clone();
            let started = match (waiting.get(&id), running.get(&id)) {
                // Still waiting for its database, with the same entry.
                (Some(w), _) if w.spec == spec => {
                    report.unchanged.push(id);
                    continue;
                }
                // Waiting with an older entry: start the new one instead.
                (Some(_), _) => {
                    self.remove_locked(&id).await;
                    self.start_locked(spec).await
                }
                // A changed component file at the same path counts as a change.
                (None, Some(old)) if *old == spec && !self.component_changed(&spec).await => {
                    report.unchanged.push(id);
                    continue;
                }
                (None, Some(_)) => {
                    match self.replace_locked(spec).await {
                        Ok(_) => report.replaced.push(id),
                        Err(e) => report.failed.push((id, e.to_string())),
                    }
                    continue;
                }
                (None, None) => self.start_locked(spec).await,
            };
            match started {
                Ok(Started::Running(_)) => report.added.push(id),
                Ok(Started::Retrying(starting)) => {
                    report.retrying.push((id, starting.last_error().0))
                }
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        report
    }

    async fn component_changed(&self, spec: &TenantSpec) -> bool {
        // The built-in component cannot change under a running host.
        if spec.component.is_none() {
            return false;
        }
        let Some(running) = self.get(&spec.id).await else {
            return true;
        };
        match self.runtime(spec) {
            Ok(runtime) => !runtime.same_component(&running.runtime),
            Err(_) => true,
        }
    }

    /// Waits until no worker runs any more (with `--until-drained`: all drained).
    pub async fn wait_all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let all = self
                .list()
                .await
                .iter()
                .all(|r| r.state() != RunState::Running);
            if all {
                return;
            }
            ended.await;
        }
    }

    /// Stops every tenant between batches; what each delivered, by id.
    pub async fn shutdown(&self) -> Vec<(String, Summary)> {
        for starting in std::mem::take(&mut *self.starting_map()).into_values() {
            starting.stop_retrying();
        }
        let all: Vec<Arc<Running>> = std::mem::take(&mut *self.running.write().await)
            .into_values()
            .collect();
        let mut summaries = Vec::new();
        for running in &all {
            let _ = running.stop.send(true);
        }
        for running in all {
            if let Some(s) = running.stop().await {
                summaries.push((running.spec.id.clone(), s));
            }
        }
        summaries
    }
}

/// Tries to start `starting` again, with backoff, until it starts, is removed, or the
/// host is gone.
async fn retry_start(tenants: std::sync::Weak<Tenants>, starting: Arc<Starting>) {
    let mut cancelled = starting.cancel.subscribe();
    let mut pause = START_RETRY_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = cancelled.wait_for(|c| *c) => return,
        }
        let Some(host) = tenants.upgrade() else {
            return;
        };
        match host.prepare(starting.spec.clone()).await {
            Ok(prepared) => {
                let _one_change = host.changing.lock().await;
                // Removed or replaced while this attempt ran: what it opened is closed,
                // and the series the attempt made go too unless a successor has them.
                if host.take_starting(starting.id(), Some(&starting)).is_none() {
                    prepared.stop().await;
                    if host.get(starting.id()).await.is_none() {
                        host.metrics.remove_tenant(starting.id());
                    }
                    return;
                }
                let attempts = starting.last_error().1 + 1;
                host.launch(prepared).await;
                tracing::info!(tenant = starting.id(), attempts, "tenant started at last");
                return;
            }
            Err(e) => {
                pause = (pause * 2).min(START_RETRY_MAX);
                let attempts = starting.failed(e.to_string());
                tracing::warn!(
                    tenant = starting.id(),
                    error = %e,
                    attempts,
                    retry_in = ?pause,
                    "tenant still not started"
                );
            }
        }
    }
}

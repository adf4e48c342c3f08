//! The host as a library: one tenant, delivering in the background of a program of
//! the user's own.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use trustlog_host::embed::Trustlog;
//!
//! let trustlog = Trustlog::builder()
//!     .database_url("sqlite://app.db")
//!     .publisher_url("ledger://app.ledger")
//!     .start()
//!     .await?;
//! // … record operations with `trustlog.record(…)` or in the application's own SQL …
//! let summary = trustlog.drain().await;
//! println!("delivered {}", summary.published);
//! # Ok(()) }
//! ```
//!
//! Adapters of the user's own come in as a [`Database`]/[`Publisher`] made with
//! `custom`, or by URL through [`Adapters`]; the engine is the built-in component
//! unless [`Builder::component`] names another. There is no lease: one embedded
//! handle delivers for its cursor key (run `trustlog serve` where several hosts share
//! a database).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use trustlog_guest::model::{Config, DbError, Operation, RecordOutcome, StatusReport, Strategy};

use crate::adapters::Adapters;
use crate::db::{Backlog, Database};
use crate::publisher::{Publisher, PublisherError};
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::{Runtime, RuntimeError};
use crate::scheduling::clock::now_micros;
use crate::scheduling::tenant::{Tenant, TenantError};
use crate::scheduling::worker::{Intervals, Summary, TickEvent, Worker};

/// Why an embedded host could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// [`Builder::start`] was called with no database.
    #[error("no database: give the builder one with `database` or `database_url`")]
    NoDatabase,
    /// [`Builder::start`] was called with no publisher.
    #[error("no publisher: give the builder one with `publisher` or `publisher_url`")]
    NoPublisher,
    /// The database could not be connected to or migrated.
    #[error("database {url}: {source}")]
    Database {
        /// The URL, password redacted; `(given)` for a database given connected.
        url: String,
        /// What the adapter said.
        source: DbError,
    },
    /// The publisher URL could not be used.
    #[error(transparent)]
    Publisher(#[from] PublisherError),
    /// The component could not be read or compiled.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The engine refused the configuration.
    #[error(transparent)]
    Tenant(#[from] TenantError),
}

/// Which engine the host runs.
#[derive(Debug, Clone, Default)]
pub enum Component {
    /// The component built into this crate.
    #[default]
    BuiltIn,
    /// A component's bytes.
    Bytes(Arc<[u8]>),
    /// A component file.
    File(PathBuf),
}

/// A database or a publisher: given connected, or by URL.
#[derive(Debug)]
enum Given<T> {
    Connected(T),
    Url(String),
}

/// Sets up an embedded host; [`Builder::start`] starts it.
#[derive(Debug)]
pub struct Builder {
    tenant: String,
    component: Component,
    db: Option<Given<Database>>,
    publisher: Option<Given<Publisher>>,
    adapters: Adapters,
    config: Config,
    limits: Limits,
    intervals: Intervals,
    migrate: bool,
    reports: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            tenant: "default".into(),
            component: Component::BuiltIn,
            db: None,
            publisher: None,
            adapters: Adapters::new(),
            config: Config::default(),
            limits: Limits::default(),
            intervals: Intervals::default(),
            migrate: true,
            reports: 256,
        }
    }
}

impl Builder {
    /// The tenant's name in logs and in the guest's calls (`default` unless set).
    pub fn tenant(mut self, id: &str) -> Builder {
        self.tenant = id.to_string();
        self
    }

    /// The engine to run (the built-in component unless set).
    pub fn component(mut self, component: Component) -> Builder {
        self.component = component;
        self
    }

    /// The database, connected already (a built-in adapter, or [`Database::custom`]).
    pub fn database(mut self, db: Database) -> Builder {
        self.db = Some(Given::Connected(db));
        self
    }

    /// The database, by URL, connected at start through [`Builder::adapters`].
    pub fn database_url(mut self, url: &str) -> Builder {
        self.db = Some(Given::Url(url.to_string()));
        self
    }

    /// The trust log, connected already (a built-in adapter, or [`Publisher::custom`]).
    pub fn publisher(mut self, publisher: Publisher) -> Builder {
        self.publisher = Some(Given::Connected(publisher));
        self
    }

    /// The trust log, by URL, connected at start through [`Builder::adapters`].
    pub fn publisher_url(mut self, url: &str) -> Builder {
        self.publisher = Some(Given::Url(url.to_string()));
        self
    }

    /// The registry URLs are connected with (the built-in adapters unless set).
    pub fn adapters(mut self, adapters: Adapters) -> Builder {
        self.adapters = adapters;
        self
    }

    /// The engine's configuration: cursor key, batch size, backoff, strategy.
    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// What the guest may use: memory, CPU per call, log lines.
    pub fn limits(mut self, limits: Limits) -> Builder {
        self.limits = limits;
        self
    }

    /// How often each tick runs when there is nothing to drain.
    pub fn intervals(mut self, intervals: Intervals) -> Builder {
        self.intervals = intervals;
        self
    }

    /// Whether start creates the missing tables (it does unless set to `false`).
    pub fn migrate(mut self, migrate: bool) -> Builder {
        self.migrate = migrate;
        self
    }

    /// How many tick reports a slow [`Trustlog::reports`] receiver may fall behind
    /// before it skips the oldest (256 unless set).
    pub fn report_capacity(mut self, reports: usize) -> Builder {
        self.reports = reports.max(1);
        self
    }

    /// Connects, migrates, instantiates and configures the engine, and starts
    /// delivering in the background of the current tokio runtime.
    pub async fn start(self) -> Result<Trustlog, EmbedError> {
        let (db, shown) = match self.db.ok_or(EmbedError::NoDatabase)? {
            Given::Connected(db) => (db, "(given)".to_string()),
            Given::Url(url) => {
                let shown = crate::publisher::options::redact(&url);
                match self.adapters.connect_database(&url).await {
                    Ok(db) => (db, shown),
                    Err(source) => return Err(EmbedError::Database { url: shown, source }),
                }
            }
        };
        if self.migrate {
            db.migrate()
                .await
                .map_err(|source| EmbedError::Database { url: shown, source })?;
        }
        let publisher = match self.publisher.ok_or(EmbedError::NoPublisher)? {
            Given::Connected(p) => p,
            Given::Url(url) => self.adapters.connect_publisher(&url).await?,
        };
        let runtime = match &self.component {
            Component::BuiltIn => Runtime::new()?,
            Component::Bytes(wasm) => Runtime::with_component(wasm)?,
            Component::File(path) => Runtime::from_file(path)?,
        };
        let tenant = Tenant::with_limits(
            runtime,
            &self.tenant,
            db.clone(),
            publisher,
            self.config,
            self.limits,
        )
        .await?;
        let (reports, _) = broadcast::channel(self.reports);
        let listening = db.notifies();
        let worker = Worker::new(tenant, self.intervals)
            .watching(!listening)
            .with_reports(reports.clone());
        let listener = listening
            .then(|| db.spawn_listener(worker.wake_handle()))
            .flatten();
        let (stop, stopped) = watch::channel(false);
        let running = worker.clone();
        let task = tokio::spawn(async move { running.run(false, stopped).await });
        Ok(Trustlog {
            worker,
            db,
            stop,
            task,
            listener,
            reports,
        })
    }
}

/// A running embedded host: it delivers in the background until
/// [`Trustlog::shutdown`] or [`Trustlog::drain`].
pub struct Trustlog {
    worker: Worker,
    db: Database,
    stop: watch::Sender<bool>,
    task: JoinHandle<Summary>,
    listener: Option<JoinHandle<()>>,
    reports: broadcast::Sender<TickEvent>,
}

impl std::fmt::Debug for Trustlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trustlog")
            .field("db", &self.db)
            .field("delivery", &self.worker.delivery())
            .finish_non_exhaustive()
    }
}

impl Trustlog {
    /// A builder with the defaults: the built-in component, the built-in adapters,
    /// the engine's default configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Stores operations (with the engine's default strategy unless `strategy` is
    /// given) and wakes delivery for them; one outcome per operation.
    pub async fn record(
        &self,
        ops: Vec<Operation>,
        strategy: Option<Strategy>,
    ) -> Result<Vec<RecordOutcome>, TenantError> {
        self.worker.record(ops, strategy).await
    }

    /// What the engine reports of the tenant: counts by status, cursor, retry queue.
    pub async fn status(&self) -> Result<StatusReport, TenantError> {
        self.worker.tenant().lock().await.status(now_micros()).await
    }

    /// What is left to deliver, from the database's indexes.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        self.db.backlog().await
    }

    /// Every tick's outcome from now on (a receiver that falls behind skips the oldest).
    pub fn reports(&self) -> broadcast::Receiver<TickEvent> {
        self.reports.subscribe()
    }

    /// Stops once the batch in flight is done; the totals of the run.
    pub async fn shutdown(self) -> Summary {
        let (summary, _) = self.stop_background().await;
        summary
    }

    /// Delivers everything stored (every row delivered, db-only or a dead letter),
    /// then stops; the totals of the whole run.
    pub async fn drain(self) -> Summary {
        let (background, worker) = self.stop_background().await;
        let (_, not_stopped) = watch::channel(false);
        background.then(worker.run(true, not_stopped).await)
    }

    async fn stop_background(self) -> (Summary, Worker) {
        // Only fails when the run already ended (a limit stopped it); then nothing waits.
        let _ = self.stop.send(true);
        let summary = match self.task.await {
            Ok(summary) => summary,
            // The worker task panicked: a bug, which the host does not hide.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Some(listener) = self.listener {
            listener.abort();
        }
        (summary, self.worker)
    }
}

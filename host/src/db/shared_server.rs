//! Tenants whose schemas live on one database server share its connections: one pool
//! per server, sized by the operator, and on PostgreSQL one LISTEN connection per server
//! that wakes each tenant whose schema a notification names. Without it every tenant held
//! a pool and a listener of its own, and about 25 tenants filled a server's default 100
//! connections.
//!
//! On PostgreSQL each use of a shared connection first puts it in the tenant's schema
//! ([`super::postgres::PostgresDb::in_schema`]); on MariaDB/MySQL, where a schema is a
//! database, every statement names the tenant's database
//! ([`super::mysql::MySqlDb::in_database`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::DbError;

use super::Database;
use super::mysql::{self, MySqlDb};
use super::pool_share::{SHARED_LOCK_TIMEOUT, Share};
use super::postgres::{self, Heard, PostgresDb};
use super::schemas;

/// Connections per shared server unless the config's `shared_pool_size` says otherwise.
pub const DEFAULT_POOL_SIZE: u32 = 10;

/// The servers tenants share, by the URL their `schema` was given for.
pub struct SharedServers {
    pool_size: u32,
    postgres: tokio::sync::Mutex<HashMap<String, PgServer>>,
    mysql: tokio::sync::Mutex<HashMap<String, MySqlPool>>,
}

/// One PostgreSQL server's pool and wake-up listener.
#[derive(Clone)]
struct PgServer {
    pool: PgPool,
    wakes: Arc<WakeHub>,
}

impl SharedServers {
    /// No server yet; each pool will hold at most `pool_size` connections.
    pub fn new(pool_size: u32) -> SharedServers {
        SharedServers {
            pool_size,
            postgres: tokio::sync::Mutex::new(HashMap::new()),
            mysql: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Connections each pool holds at most.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// The database of the tenant whose schema is `schema` on `server`, on the pool every
    /// tenant of that server shares, creating the schema when it is missing. The pool is
    /// made at the first tenant; a server that does not answer then is asked again at the
    /// next.
    pub async fn connect(&self, server: &str, schema: &str) -> Result<Database, DbError> {
        match schemas::server(server)? {
            schemas::Server::Postgres => self.connect_postgres(server, schema).await,
            schemas::Server::MySql => self.connect_mysql(server, schema).await,
        }
    }

    async fn connect_mysql(&self, server: &str, database: &str) -> Result<Database, DbError> {
        let mut servers = self.mysql.lock().await;
        let pool = match servers.get(server) {
            Some(pool) => pool.clone(),
            None => {
                let url = mysql::with_mysql_scheme(server);
                let pool =
                    mysql::open_pool(&url, self.pool_size, Some(SHARED_LOCK_TIMEOUT)).await?;
                servers.insert(server.to_string(), pool.clone());
                pool
            }
        };
        drop(servers);
        schemas::ensure_in_mysql(&pool, database).await?;
        Ok(Database::MySql(MySqlDb::in_database(
            pool,
            database,
            Share::of(self.pool_size),
        )))
    }

    async fn connect_postgres(&self, server: &str, schema: &str) -> Result<Database, DbError> {
        let mut servers = self.postgres.lock().await;
        let shared = match servers.get(server) {
            Some(s) => s.clone(),
            None => {
                let pool =
                    postgres::open_pool(server, self.pool_size, Some(SHARED_LOCK_TIMEOUT)).await?;
                let wakes = Arc::new(WakeHub::new(pool.clone()));
                let s = PgServer { pool, wakes };
                servers.insert(server.to_string(), s.clone());
                s
            }
        };
        drop(servers);
        schemas::ensure_in_postgres(&shared.pool, schema).await?;
        Ok(Database::Postgres(PostgresDb::in_schema(
            shared.pool,
            schema,
            shared.wakes,
            Share::of(self.pool_size),
        )))
    }
}

/// A subscription's key and the tenant's wake-up.
type Subscriber = (u64, Arc<Notify>);

/// The one LISTEN of a server and the tenants it wakes, by schema.
pub struct WakeHub {
    /// The server's pool, whose connect options the listener's own connection copies.
    pool: PgPool,
    tenants: Mutex<HashMap<String, Vec<Subscriber>>>,
    next: std::sync::atomic::AtomicU64,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for WakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeHub")
            .field("listening", &self.is_listening())
            .finish_non_exhaustive()
    }
}

impl WakeHub {
    fn new(pool: PgPool) -> WakeHub {
        WakeHub {
            pool,
            tenants: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
            listener: Mutex::new(None),
        }
    }

    fn is_listening(&self) -> bool {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Wakes `wake` whenever an INSERT into `schema`'s `operation` commits, and once at
    /// once (rows may have come while nobody listened). Aborting the handle ends it.
    pub fn subscribe(self: &Arc<Self>, schema: &str, wake: Arc<Notify>) -> JoinHandle<()> {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(schema.to_string())
            .or_default()
            .push((key, wake.clone()));
        {
            let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
            if listener.is_none() {
                *listener = Some(self.spawn_listener());
            }
        }
        wake.notify_one();
        let subscription = Subscription {
            hub: self.clone(),
            schema: schema.to_string(),
            key,
        };
        // The task only holds the subscription: aborting it drops it, which unsubscribes.
        tokio::spawn(async move {
            let _subscribed = subscription;
            std::future::pending::<()>().await
        })
    }

    fn wake(&self, schema: Option<&str>) {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut woken = |list: &Vec<Subscriber>| {
            list.iter().for_each(|(_, w)| w.notify_one());
        };
        match schema {
            Some(s) => tenants.get(s).into_iter().for_each(&mut woken),
            None => tenants.values().for_each(woken),
        }
    }

    /// The server's one listener: a notification naming no schema wakes every tenant.
    fn spawn_listener(self: &Arc<Self>) -> JoinHandle<()> {
        let hub = Arc::downgrade(self);
        postgres::spawn_wake_listener(self.pool.connect_options().as_ref().clone(), move |heard| {
            let Some(hub) = hub.upgrade() else { return };
            match heard {
                Heard::Listening { .. } | Heard::Notified { payload: "" } => hub.wake(None),
                Heard::Notified { payload } => hub.wake(Some(payload)),
            }
        })
    }
}

/// A tenant's place in a [`WakeHub`]; dropping it takes the tenant out.
struct Subscription {
    hub: Arc<WakeHub>,
    schema: String,
    key: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut tenants = self.hub.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = tenants.get_mut(&self.schema) {
            list.retain(|(k, _)| *k != self.key);
            if list.is_empty() {
                tenants.remove(&self.schema);
            }
        }
    }
}

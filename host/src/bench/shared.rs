//! Many tenants on one database server (`--shared-tenants N`): N tenants, a schema
//! each (a database each on MariaDB), started in one host as `serve --config` starts
//! them, sharing the server's pool. Reports the time to start them all, the resident
//! memory each idle tenant adds, the most sessions the host held on the server
//! (sampled throughout), and the delivery of a small backlog per tenant written by
//! another client, with every tenant's ledger checked to hold its own rows and nothing
//! else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, PgConnection};

use crate::config::{SharedSchema, TenantSpec};
use crate::db::schemas;
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::{self, Allocation};
use crate::scheduling::tenants::Tenants;
use crate::scheduling::worker::{DrainBounds, Intervals};
use crate::surfaces::metrics::Metrics;

use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, rss, run_tag};

/// The shared-server mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SharedReport {
    /// What the run's schemas were named after (`TAG_t00000`, …), since dropped.
    pub tag: String,
    /// Tenants started on the one database server, a schema each.
    pub tenants: u32,
    /// Rows each tenant delivers.
    pub rows_per_tenant: u32,
    /// Connections of the pool the tenants share (`shared_pool_size`).
    pub pool_size: u32,
    /// The tenants' `watch_interval` and `lease_ttl`, ms.
    pub watch_interval_ms: u64,
    /// The tenants' `lease_ttl`, ms.
    pub lease_ttl_ms: u64,
    /// The server's own connection limit.
    pub server_max_connections: Option<i64>,
    /// The most sessions the host held on the server at any sample (every 100 ms).
    pub max_host_sessions: i64,
    /// From the first tenant's start to the last one running, s.
    pub start_seconds: f64,
    /// One tenant's start (schema, tables, guest), ms.
    pub start_p50_ms: Option<f64>,
    /// 99th percentile of one tenant's start, ms.
    pub start_p99_ms: Option<f64>,
    /// Slowest tenant start, ms.
    pub start_max_ms: Option<f64>,
    /// Resident memory with one tenant, then with all of them idle, MiB.
    pub rss_one_tenant_mib: Option<f64>,
    /// Resident memory with all the tenants up and idle, MiB.
    pub rss_all_tenants_mib: Option<f64>,
    /// What each tenant beyond the first added, MiB (target ≤ 0.5).
    pub rss_per_idle_tenant_mib: Option<f64>,
    /// From the first backlog row written to the last one delivered, s.
    pub delivery_seconds: f64,
    /// Rows delivered by all the tenants per second of `delivery_seconds`.
    pub ops_per_sec: f64,
    /// Ledger entries of one tenant holding another's op_id (anything else fails the run).
    pub crossed: u64,
}

/// The kind of server, which decides how sessions are counted and rows written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    MySql,
}

/// The server the tenants share, as the run set it up.
struct Server {
    kind: Kind,
    /// The URL every tenant's `db` gives: tagged so the host's sessions can be counted.
    shared_url: String,
    /// The URL the bench's own connections use.
    admin_url: String,
    tag: String,
}

impl Server {
    async fn new(url: &str, tag: &str) -> Result<Server, BenchError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        let admin_url = crate::db::mysql::with_mysql_scheme(url);
        match scheme {
            "postgres" | "postgresql" => {
                let sep = if url.contains('?') { '&' } else { '?' };
                Ok(Server {
                    kind: Kind::Postgres,
                    shared_url: format!("{url}{sep}application_name={tag}"),
                    admin_url,
                    tag: tag.to_string(),
                })
            }
            "mysql" | "mariadb" => {
                // The pool's own database, which nothing else uses: processlist names it.
                schemas::ensure(url, tag).await.map_err(|e| setup(tag, e))?;
                let shared_url = crate::config::with_schema(url, tag, "db".into())
                    .map_err(|e| setup("db", e))?;
                Ok(Server {
                    kind: Kind::MySql,
                    shared_url,
                    admin_url,
                    tag: tag.to_string(),
                })
            }
            _ => Err(BenchError::Setup {
                what: "db".into(),
                message: "--shared-tenants puts tenants on one server: pass a postgres:// or mysql:// --db".into(),
            }),
        }
    }

    /// One query's integer answer, on a connection of the bench's own.
    async fn scalar(&self, sql: String) -> Result<i64, sqlx::Error> {
        let sql = AssertSqlSafe(sql);
        match self.kind {
            Kind::Postgres => {
                let mut c = PgConnection::connect(&self.admin_url).await?;
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await;
                let _ = c.close().await;
                n
            }
            Kind::MySql => {
                let mut c = MySqlConnection::connect(&self.admin_url).await?;
                let n = sqlx::query_scalar(sql).fetch_one(&mut c).await;
                let _ = c.close().await;
                n
            }
        }
    }

    async fn max_connections(&self) -> Option<i64> {
        let sql = match self.kind {
            Kind::Postgres => {
                "SELECT setting::bigint FROM pg_settings WHERE name = 'max_connections'"
            }
            Kind::MySql => "SELECT CAST(@@max_connections AS SIGNED)",
        };
        self.scalar(sql.into()).await.ok()
    }

    /// The query counting the host's sessions: by application_name on PostgreSQL, by
    /// the pool's default database on MariaDB.
    fn sessions_sql(&self) -> String {
        match self.kind {
            Kind::Postgres => format!(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{}'",
                self.tag
            ),
            Kind::MySql => format!(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE db = '{}'",
                self.tag
            ),
        }
    }

    /// Samples the host's sessions every 100 ms on a connection of its own, keeping
    /// the most seen, until the handle is aborted.
    fn sample_sessions(&self, most: Arc<AtomicI64>) -> tokio::task::JoinHandle<()> {
        let (kind, url, sql) = (self.kind, self.admin_url.clone(), self.sessions_sql());
        tokio::spawn(async move {
            let sql = sql.as_str();
            macro_rules! sample {
                ($conn:ty) => {{
                    let Ok(mut c) = <$conn>::connect(&url).await else {
                        return;
                    };
                    loop {
                        if let Ok(n) = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                            .fetch_one(&mut c)
                            .await
                        {
                            most.fetch_max(n, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }};
            }
            match kind {
                Kind::Postgres => sample!(PgConnection),
                Kind::MySql => sample!(MySqlConnection),
            }
        })
    }

    /// `rows` rows into each schema, written by another client in one statement each.
    async fn write_backlogs(&self, schemas: &[String], rows: u32) -> Result<(), sqlx::Error> {
        let now = match self.kind {
            Kind::Postgres => "now()",
            Kind::MySql => "UTC_TIMESTAMP(6)",
        };
        let statements = schemas.iter().enumerate().map(|(i, schema)| {
            let values: Vec<String> = (0..rows)
                .map(|k| {
                    format!(
                        "('{}', 'bench', '10.1000/shared', 'bench', 'IRP', 'Create', '10.1000', 'bench', {now})",
                        op_id(i, k)
                    )
                })
                .collect();
            format!(
                "INSERT INTO {schema}.operation (op_id, op_actor, doid, producer_id, op_source, \
                 op_type, do_prefix, do_repository, timestamp) VALUES {}",
                values.join(", ")
            )
        });
        match self.kind {
            Kind::Postgres => {
                let mut c = PgConnection::connect(&self.admin_url).await?;
                for sql in statements {
                    c.execute(AssertSqlSafe(sql)).await?;
                }
                c.close().await
            }
            Kind::MySql => {
                let mut c = MySqlConnection::connect(&self.admin_url).await?;
                for sql in statements {
                    c.execute(AssertSqlSafe(sql)).await?;
                }
                c.close().await
            }
        }
    }

    /// Schemas delivered in full, each counted on one connection for the whole round.
    async fn fully_delivered(
        &self,
        schemas: &[String],
        rows: u32,
    ) -> Result<Vec<bool>, sqlx::Error> {
        let want = i64::from(rows);
        let mut done = Vec::with_capacity(schemas.len());
        macro_rules! count_all {
            ($conn:ty) => {{
                let mut c = <$conn>::connect(&self.admin_url).await?;
                for schema in schemas {
                    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {schema}.operation WHERE trustlog_status = 'TRUSTLOGGED'"
                    )))
                    .fetch_one(&mut c)
                    .await?;
                    done.push(n == want);
                }
                c.close().await?;
            }};
        }
        match self.kind {
            Kind::Postgres => count_all!(PgConnection),
            Kind::MySql => count_all!(MySqlConnection),
        }
        Ok(done)
    }

    /// Drops every schema the run created, and the pool's database on MariaDB.
    async fn remove(&self, schemas: &[String]) -> Result<(), BenchError> {
        let mut all: Vec<&str> = schemas.iter().map(String::as_str).collect();
        if self.kind == Kind::MySql {
            all.push(&self.tag);
        }
        for name in all {
            schemas::drop(&self.admin_url, name)
                .await
                .map_err(|e| setup(&format!("dropping {name}"), e))?;
        }
        Ok(())
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        what: what.to_string(),
        message: e.to_string(),
    }
}

fn op_id(tenant: usize, row: u32) -> String {
    format!("t{tenant:05}-{row:04}")
}

/// The directory the tenants' ledgers go in, beside the `--publisher` ledger.
fn ledgers_dir(publisher: &str, tag: &str) -> Result<PathBuf, BenchError> {
    let path = super::fresh::file_path(publisher, "ledger").ok_or_else(|| BenchError::Setup {
        what: "publisher".into(),
        message: "--shared-tenants gives each tenant a ledger of its own: pass --publisher ledger://PATH (the files go beside PATH)".into(),
    })?;
    Ok(path
        .parent()
        .map(|p| p.join(tag))
        .unwrap_or_else(|| PathBuf::from(tag)))
}

fn spec(server: &Server, schema: &str, dir: &Path, i: usize, opts: &BenchOptions) -> TenantSpec {
    TenantSpec {
        id: format!("t{i:05}"),
        db: server.shared_url.clone(),
        publisher: format!("ledger://{}", dir.join(format!("t{i:05}.ledger")).display()),
        engine: opts.config.clone(),
        intervals: Intervals {
            watch: opts.shared_watch,
            lease_ttl: opts.shared_lease_ttl,
            ..Intervals::default()
        },
        limits: Limits::default(),
        admin_token: None,
        component: None,
        poll_only: false,
        schema: Some(SharedSchema {
            server: server.shared_url.clone(),
            name: schema.to_string(),
        }),
    }
}

/// Runs the mode and removes what it created, whatever the outcome.
pub(super) async fn run(opts: &BenchOptions) -> Result<SharedReport, BenchError> {
    let tag = run_tag("shared");
    let dir = ledgers_dir(&opts.publisher, &tag)?;
    std::fs::create_dir_all(&dir).map_err(|e| setup(&dir.display().to_string(), e))?;
    let server = Server::new(&opts.db, &tag).await?;
    let schemas: Vec<String> = (0..opts.shared_tenants)
        .map(|i| format!("{tag}_t{i:05}"))
        .collect();
    let result = measure(opts, &server, &schemas, &dir).await;
    let removed = server.remove(&schemas).await;
    let files = std::fs::remove_dir_all(&dir).map_err(|e| setup("removing ledgers", e));
    let report = result?;
    removed?;
    files?;
    Ok(report)
}

async fn measure(
    opts: &BenchOptions,
    server: &Server,
    schemas: &[String],
    dir: &Path,
) -> Result<SharedReport, BenchError> {
    let n = schemas.len();
    let rows = opts.tenant_rows;
    let engine = runtime::engine(Allocation::Pooling {
        instances: (n as u32).saturating_mul(3).saturating_add(8),
    })
    .map_err(|e| BenchError::Tenant(e.to_string()))?;
    let metrics = Metrics::new().map_err(|e| BenchError::Tenant(e.to_string()))?;
    let tenants = Tenants::sharing(
        engine,
        metrics,
        false,
        DrainBounds::default(),
        opts.shared_pool_size,
    );
    let most_sessions = Arc::new(AtomicI64::new(0));
    let sampler = server.sample_sessions(most_sessions.clone());

    let mut start_ms = Vec::with_capacity(n);
    let mut rss_one = None;
    let started = Instant::now();
    for (i, schema) in schemas.iter().enumerate() {
        let one = Instant::now();
        tenants
            .add(spec(server, schema, dir, i, opts))
            .await
            .map_err(|e| BenchError::Tenant(e.to_string()))?;
        start_ms.push(one.elapsed().as_secs_f64() * 1e3);
        if i == 0 {
            tokio::time::sleep(opts.idle_settle).await;
            rss_one = rss::current_mib();
        }
        if (i + 1) % 100 == 0 {
            tracing::info!(started = i + 1, "shared tenants");
        }
    }
    let start_seconds = started.elapsed().as_secs_f64() - opts.idle_settle.as_secs_f64();
    tokio::time::sleep(opts.idle_settle).await;
    let rss_all = rss::current_mib();

    let writing = Instant::now();
    server
        .write_backlogs(schemas, rows)
        .await
        .map_err(|e| setup("writing the backlogs", e))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut waiting: Vec<usize> = (0..n).collect();
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            return Err(BenchError::Incomplete {
                phase: "shared",
                message: format!(
                    "{} tenants still delivering after 10 minutes",
                    waiting.len()
                ),
            });
        }
        let names: Vec<String> = waiting.iter().map(|&i| schemas[i].clone()).collect();
        let done = server
            .fully_delivered(&names, rows)
            .await
            .map_err(|e| setup("counting delivered rows", e))?;
        waiting = waiting
            .into_iter()
            .zip(done)
            .filter_map(|(i, d)| (!d).then_some(i))
            .collect();
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let delivery_seconds = writing.elapsed().as_secs_f64();
    tenants.shutdown().await;
    sampler.abort();

    let crossed = check_ledgers(dir, n, rows)?;
    // The last figure: a drop after shutdown would not be the host's.
    let max_host_sessions = most_sessions.load(Ordering::Relaxed);
    let start = sorted(start_ms);
    let ms = |p| percentile(&start, p).map(|x| round(x, 1));
    let total = f64::from(rows) * n as f64;
    Ok(SharedReport {
        tag: server.tag.clone(),
        tenants: n as u32,
        rows_per_tenant: rows,
        pool_size: opts.shared_pool_size,
        watch_interval_ms: opts.shared_watch.as_millis() as u64,
        lease_ttl_ms: opts.shared_lease_ttl.as_millis() as u64,
        server_max_connections: server.max_connections().await,
        max_host_sessions,
        start_seconds: round(start_seconds, 2),
        start_p50_ms: ms(50.0),
        start_p99_ms: ms(99.0),
        start_max_ms: ms(100.0),
        rss_one_tenant_mib: rss_one.map(|m| round(m, 1)),
        rss_all_tenants_mib: rss_all.map(|m| round(m, 1)),
        rss_per_idle_tenant_mib: match (rss_one, rss_all) {
            (Some(one), Some(all)) if n > 1 => Some(round((all - one) / (n - 1) as f64, 3)),
            _ => None,
        },
        delivery_seconds: round(delivery_seconds, 2),
        ops_per_sec: round(total / delivery_seconds, 0),
        crossed,
    })
}

/// Reads every tenant's ledger: each must hold exactly its own `rows` op_ids. Entries
/// of another tenant are counted (and fail the run); a missing or repeated row fails it.
fn check_ledgers(dir: &Path, n: usize, rows: u32) -> Result<u64, BenchError> {
    let mut crossed = 0;
    for i in 0..n {
        let path = dir.join(format!("t{i:05}.ledger"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| setup(&path.display().to_string(), e))?;
        let mut ids = std::collections::BTreeSet::new();
        let own = format!("t{i:05}-");
        for line in text.lines() {
            let entry: serde_json::Value =
                serde_json::from_str(line).map_err(|e| setup(&path.display().to_string(), e))?;
            let id = entry["payload"]["op_id"].as_str().unwrap_or_default();
            if !id.starts_with(&own) {
                crossed += 1;
            }
            ids.insert(id.to_string());
        }
        let want: std::collections::BTreeSet<String> = (0..rows).map(|k| op_id(i, k)).collect();
        if crossed == 0 && (ids != want || text.lines().count() != rows as usize) {
            return Err(BenchError::Incomplete {
                phase: "shared",
                message: format!(
                    "tenant t{i:05}'s ledger holds {} entries, {} distinct, not its {rows} rows",
                    text.lines().count(),
                    ids.len()
                ),
            });
        }
    }
    if crossed > 0 {
        return Err(BenchError::Incomplete {
            phase: "shared",
            message: format!("{crossed} ledger entries belong to another tenant"),
        });
    }
    Ok(crossed)
}

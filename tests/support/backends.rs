//! Isolated databases for the suites: a file for SQLite, a schema for
//! PostgreSQL, a database for MySQL/MariaDB, so tests run in parallel.
//! An unreachable server fails the test: nothing is ever skipped.

// Test SQL is built from our own names and literals, never from outside input.
use sqlx::{AssertSqlSafe, Connection, Executor};

/// Instantiates each named `async fn(Backend)` once per database, as the tests
/// `sqlite::NAME`, `postgres::NAME` and `mysql::NAME`.
#[macro_export]
macro_rules! on_every_database {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::support::backends::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::support::backends::Backend::Postgres).await } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test($crate::support::backends::Backend::MySql).await } )* }
    };
}

/// Instantiates each named `async fn(Backend)` once per server with schemas, as the
/// tests `postgres_shared::NAME` and `mysql_shared::NAME`, with [`on_a_shared_pool`]
/// true: the suite's `connect` then reaches the test's schema the way tenants sharing a
/// server do, over one pool to the server that names the schema in every use.
#[macro_export]
macro_rules! on_every_shared_server {
    ($($test:ident),* $(,)?) => {
        mod postgres_shared { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { $crate::support::backends::SHARED_POOL.scope(true, super::$test($crate::support::backends::Backend::Postgres)).await } )* }
        mod mysql_shared { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { $crate::support::backends::SHARED_POOL.scope(true, super::$test($crate::support::backends::Backend::MySql)).await } )* }
    };
}

/// Instantiates each named `async fn(Backend)` once more on SQLite, as the tests
/// `sqlite_custom::NAME`, with [`through_a_custom_adapter`] true: the suite's `connect`
/// then reaches the database through an adapter written outside the host crate
/// ([`crate::support::forwarding`]), registered by URL scheme.
#[macro_export]
macro_rules! through_a_custom_adapter {
    ($($test:ident),* $(,)?) => {
        mod sqlite_custom { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { $crate::support::backends::CUSTOM_ADAPTER.scope(true, super::$test($crate::support::backends::Backend::Sqlite)).await } )* }
    };
}

tokio::task_local! {
    /// Set by [`on_every_shared_server`] for the test it runs.
    pub static SHARED_POOL: bool;
    /// Set by [`through_a_custom_adapter`] for the test it runs.
    pub static CUSTOM_ADAPTER: bool;
}

/// Whether the running test reaches its database through a custom adapter.
pub fn through_a_custom_adapter() -> bool {
    CUSTOM_ADAPTER.try_with(|custom| *custom).unwrap_or(false)
}

/// Whether the running test reaches its database over a shared server's pool.
pub fn on_a_shared_pool() -> bool {
    SHARED_POOL.try_with(|shared| *shared).unwrap_or(false)
}

/// The three database kinds every suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// The PostgreSQL server the tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("TRUSTLOG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The MySQL/MariaDB server the tests use.
pub fn mysql_admin_url() -> String {
    std::env::var("TRUSTLOG_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// An isolated, empty database; dropped when the value is.
pub struct TestDb {
    pub backend: Backend,
    /// The URL `trustlog --db` takes.
    pub url: String,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates a fresh database of `backend`.
    pub async fn create(backend: Backend) -> TestDb {
        let name = super::unique_name("trustlog_t");
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("trustlog.db").display());
                TestDb {
                    backend,
                    url,
                    name,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is unreachable ({e}); start it (see DESIGN.md §6)"));
                conn.execute(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                    .await
                    .unwrap();
                let sep = if admin.contains('?') { '&' } else { '?' };
                let url = format!("{admin}{sep}options=-c%20search_path%3D{name}");
                TestDb {
                    backend,
                    url,
                    name,
                    _dir: None,
                }
            }
            Backend::MySql => {
                let admin = mysql_admin_url();
                let mut conn = sqlx::MySqlConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("MySQL/MariaDB at {admin} is unreachable ({e}); start it (see DESIGN.md §6)"));
                conn.execute(AssertSqlSafe(format!(
                    "CREATE DATABASE {name} CHARACTER SET utf8mb4"
                )))
                .await
                .unwrap();
                let (base, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
                let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
                let url = match query {
                    Some(q) => format!("{server}/{name}?{q}"),
                    None => format!("{server}/{name}"),
                };
                TestDb {
                    backend,
                    url,
                    name,
                    _dir: None,
                }
            }
        }
    }

    /// The server URL as a tenant's `db` gives it and the schema (a database on MariaDB)
    /// a tenant's `schema` names; SQLite has none.
    pub fn server_and_schema(&self) -> Option<(String, &str)> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some((postgres_admin_url(), &self.name)),
            Backend::MySql => Some((mysql_admin_url(), &self.name)),
        }
    }

    /// Runs one SQL statement with no parameters, as another client of the database would.
    pub async fn execute(&self, sql: &str) {
        execute_at(self.backend, &self.url, sql).await
    }

    /// Reads one integer with a query of no parameters.
    pub async fn scalar(&self, sql: &str) -> i64 {
        scalar_at(self.backend, &self.url, sql).await
    }

    /// Reads the first column, as text, of every row a query of no parameters returns.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        let sql = AssertSqlSafe(sql.to_string());
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
        }
    }

    /// SQL for the database's own clock at the start of the transaction (PostgreSQL,
    /// `now()`) or at the statement (MariaDB, `UTC_TIMESTAMP(6)`), in the column's type;
    /// SQLite has no microsecond clock, so this host's is written in.
    pub fn clock_sql(&self) -> String {
        match self.backend {
            Backend::Sqlite => trustlog_host::scheduling::clock::now_micros().to_string(),
            Backend::Postgres => "now()".into(),
            Backend::MySql => "UTC_TIMESTAMP(6)".into(),
        }
    }

    /// SQL for a timestamp literal of `micros` in this database's column type.
    pub fn timestamp_sql(&self, micros: i64) -> String {
        let t = super::rfc3339(micros);
        match self.backend {
            Backend::Sqlite => micros.to_string(),
            Backend::Postgres => format!("'{t}'::timestamptz"),
            Backend::MySql => format!("'{}'", t.trim_end_matches('Z').replace('T', " ")),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let drop_sql = match self.backend {
            Backend::Sqlite => return,
            Backend::Postgres => format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
            Backend::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let (backend, admin) = (
            self.backend,
            if self.backend == Backend::Postgres {
                postgres_admin_url()
            } else {
                mysql_admin_url()
            },
        );
        // Drop runs inside the test's runtime; clean up on a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if backend == Backend::Postgres {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = c.execute(AssertSqlSafe(drop_sql.clone())).await;
                    }
                } else if let Ok(mut c) = sqlx::MySqlConnection::connect(&admin).await {
                    let _ = c.execute(AssertSqlSafe(drop_sql.clone())).await;
                }
            })
        })
        .join();
    }
}

/// The server URL the tests use for `backend` (SQLite has none).
pub fn admin_url(backend: Backend) -> String {
    match backend {
        Backend::Postgres => postgres_admin_url(),
        Backend::MySql => mysql_admin_url(),
        Backend::Sqlite => panic!("SQLite has no server"),
    }
}

/// Runs one SQL statement with no parameters on the `backend` database at `url`.
pub async fn execute_at(backend: Backend, url: &str, sql: &str) {
    let sql = AssertSqlSafe(sql.to_string());
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
    }
}

/// Sessions PostgreSQL holds for clients that named themselves `app` (their
/// `application_name`); with `listening`, only those whose last statement was a
/// `LISTEN`: a session that listens stays idle after it, waiting for notifications.
pub async fn postgres_sessions(app: &str, listening: bool) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{app}'{}",
        if listening {
            " AND query ILIKE 'LISTEN%'"
        } else {
            ""
        }
    );
    scalar_at(Backend::Postgres, &postgres_admin_url(), &sql).await
}

/// Reads one integer with a query of no parameters from the `backend` database at `url`.
pub async fn scalar_at(backend: Backend, url: &str, sql: &str) -> i64 {
    let sql = AssertSqlSafe(sql.to_string());
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

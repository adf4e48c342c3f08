//! Creating and dropping a schema of a shared database server: a PostgreSQL
//! schema, or a MariaDB/MySQL database (which is what MySQL calls a schema).
//! SQLite has none; a tenant or a bench run gets a database file of its own.

use sqlx::{AssertSqlSafe, Connection, MySqlConnection, MySqlPool, PgConnection, PgPool};
use trustlog_guest::model::{DbError, FieldError};

/// The server a URL points at, as far as schemas go.
pub(super) enum Server {
    Postgres,
    MySql,
}

pub(super) fn server(url: &str) -> Result<Server, DbError> {
    match url.split_once(':').map(|(scheme, _)| scheme) {
        Some("postgres" | "postgresql") => Ok(Server::Postgres),
        Some("mysql" | "mariadb") => Ok(Server::MySql),
        _ => Err(DbError::Invalid(FieldError::new(
            "db",
            format!(
                "schemas exist on postgres:// and mysql:// servers only, not {}",
                crate::publisher::options::redact(url)
            ),
        ))),
    }
}

/// Refuses anything but `[a-z0-9_]{1,63}`: the name is spliced into DDL, which takes no parameters.
fn checked(name: &str) -> Result<&str, DbError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(DbError::Invalid(FieldError::new(
            "schema",
            format!("bad schema name {name:?}; expected 1-63 characters of a-z, 0-9 and _"),
        )))
    }
}

fn unavailable(e: sqlx::Error) -> DbError {
    DbError::Unavailable(e.to_string())
}

/// Runs `$ddl` through `$exec` (a connection or a pool, evaluated at each use); with
/// `$only_if_missing`, only when the schema `$name` is absent. Asked first, so a user
/// without CREATE rights can use a schema made for it. `$param` is the driver's
/// placeholder.
macro_rules! run_ddl {
    ($exec:expr, $param:literal, $name:expr, $ddl:expr, $only_if_missing:expr) => {{
        let missing = !$only_if_missing || {
            let found: i64 = sqlx::query_scalar(AssertSqlSafe(concat!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ",
                $param
            )))
            .bind($name)
            .fetch_one($exec)
            .await
            .map_err(unavailable)?;
            found == 0
        };
        if missing {
            sqlx::raw_sql(AssertSqlSafe($ddl.to_string()))
                .execute($exec)
                .await
                .map_err(|e| DbError::Other(format!("{}: {e}", $ddl)))?;
        }
        Ok::<(), DbError>(())
    }};
}

/// Runs one DDL statement on the server `url` points at, over a connection of its own
/// (see [`run_ddl`]).
async fn execute(url: &str, name: &str, ddl: &str, only_if_missing: bool) -> Result<(), DbError> {
    match server(url)? {
        Server::Postgres => {
            let mut conn = PgConnection::connect(url).await.map_err(unavailable)?;
            run_ddl!(&mut conn, "$1", name, ddl, only_if_missing)?;
            conn.close().await.map_err(unavailable)
        }
        Server::MySql => {
            let url = super::mysql::with_mysql_scheme(url);
            let mut conn = MySqlConnection::connect(&url).await.map_err(unavailable)?;
            run_ddl!(&mut conn, "?", name, ddl, only_if_missing)?;
            conn.close().await.map_err(unavailable)
        }
    }
}

/// The DDL that creates schema `name` unless it exists.
fn create(server: Server, name: &str) -> String {
    match server {
        Server::Postgres => format!("CREATE SCHEMA IF NOT EXISTS {name}"),
        Server::MySql => format!(
            "CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ),
    }
}

/// Creates schema `name` on the server of `url` unless it exists.
pub async fn ensure(url: &str, name: &str) -> Result<(), DbError> {
    let name = checked(name)?;
    execute(url, name, &create(server(url)?, name), true).await
}

/// Creates schema `name` over a PostgreSQL pool tenants share, unless it exists.
pub(super) async fn ensure_in_postgres(pool: &PgPool, name: &str) -> Result<(), DbError> {
    let name = checked(name)?;
    run_ddl!(pool, "$1", name, create(Server::Postgres, name), true)
}

/// Creates database `name` over a MariaDB/MySQL pool tenants share, unless it exists.
pub(super) async fn ensure_in_mysql(pool: &MySqlPool, name: &str) -> Result<(), DbError> {
    let name = checked(name)?;
    run_ddl!(pool, "?", name, create(Server::MySql, name), true)
}

/// Drops schema `name` and everything in it, if it exists.
pub async fn drop(url: &str, name: &str) -> Result<(), DbError> {
    let name = checked(name)?;
    let ddl = match server(url)? {
        Server::Postgres => format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
        Server::MySql => format!("DROP DATABASE IF EXISTS {name}"),
    };
    execute(url, name, &ddl, false).await
}

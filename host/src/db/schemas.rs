//! Creating and dropping a schema of a shared database server: a PostgreSQL
//! schema, or a MariaDB/MySQL database (which is what MySQL calls a schema).
//! SQLite has none; a tenant or a bench run gets a database file of its own.

use sqlx::{AssertSqlSafe, Connection, MySqlConnection, PgConnection};
use trustlog_guest::model::{DbError, FieldError};

/// The server a URL points at, as far as schemas go.
enum Server {
    Postgres,
    MySql,
}

fn server(url: &str) -> Result<Server, DbError> {
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

/// Runs one DDL statement on the server `url` points at, unless `exists` finds the schema.
async fn execute(url: &str, name: &str, ddl: &str, only_if_missing: bool) -> Result<(), DbError> {
    // Asked first, so a user without CREATE rights can use a schema made for it.
    const EXISTS: &str = "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ";
    let statement_failed = |e: sqlx::Error| DbError::Other(format!("{ddl}: {e}"));
    match server(url)? {
        Server::Postgres => {
            let mut conn = PgConnection::connect(url).await.map_err(unavailable)?;
            let exists: i64 = sqlx::query_scalar(AssertSqlSafe(format!("{EXISTS}$1")))
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(unavailable)?;
            if !(only_if_missing && exists > 0) {
                sqlx::raw_sql(AssertSqlSafe(ddl.to_string()))
                    .execute(&mut conn)
                    .await
                    .map_err(statement_failed)?;
            }
            conn.close().await.map_err(unavailable)
        }
        Server::MySql => {
            let url = url.replacen("mariadb", "mysql", 1);
            let mut conn = MySqlConnection::connect(&url).await.map_err(unavailable)?;
            let exists: i64 = sqlx::query_scalar(AssertSqlSafe(format!("{EXISTS}?")))
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(unavailable)?;
            if !(only_if_missing && exists > 0) {
                sqlx::raw_sql(AssertSqlSafe(ddl.to_string()))
                    .execute(&mut conn)
                    .await
                    .map_err(statement_failed)?;
            }
            conn.close().await.map_err(unavailable)
        }
    }
}

/// Creates schema `name` on the server of `url` unless it exists.
pub async fn ensure(url: &str, name: &str) -> Result<(), DbError> {
    let name = checked(name)?;
    let ddl = match server(url)? {
        Server::Postgres => format!("CREATE SCHEMA IF NOT EXISTS {name}"),
        Server::MySql => format!(
            "CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ),
    };
    execute(url, name, &ddl, true).await
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

//! Database adapters, chosen by URL; each speaks the WIT `db` interface.

pub mod cursor_value;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod test_fixtures;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::{
    DbError, DbStats, InsertOutcome, Micros, Operation, Position, RetryRow, TrustlogStatus,
    UnitOfWork,
};

/// A database connection pool behind one of the adapters.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(sqlite::SqliteDb),
    Postgres(postgres::PostgresDb),
    MySql(mysql::MySqlDb),
}

/// Calls the same method on whichever adapter is inside.
macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match $self {
            Database::Sqlite($db) => $call,
            Database::Postgres($db) => $call,
            Database::MySql($db) => $call,
        }
    };
}

impl Database {
    /// Connects by URL: `sqlite://PATH`, `postgres://…` (or `postgresql://…`), `mysql://…` (or `mariadb://…`).
    pub async fn connect(url: &str) -> Result<Database, DbError> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("sqlite") => Ok(Database::Sqlite(sqlite::SqliteDb::connect(url).await?)),
            Some("postgres" | "postgresql") => Ok(Database::Postgres(
                postgres::PostgresDb::connect(url).await?,
            )),
            Some("mysql") => Ok(Database::MySql(mysql::MySqlDb::connect(url).await?)),
            // sqlx knows MariaDB as mysql://; accept the name users reach for.
            Some("mariadb") => Ok(Database::MySql(
                mysql::MySqlDb::connect(&url.replacen("mariadb", "mysql", 1)).await?,
            )),
            _ => Err(DbError::Invalid(trustlog_guest::model::FieldError::new(
                "db",
                format!(
                    "unsupported database URL {url:?}; expected sqlite://PATH, postgres://… or mysql://…"
                ),
            ))),
        }
    }

    /// Wakes `wake` whenever any client inserts a row, where the database can say so
    /// (PostgreSQL LISTEN/NOTIFY); `None` where only the idle poll can notice.
    pub fn spawn_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        match self {
            Database::Postgres(db) => Some(db.spawn_listener(wake)),
            Database::Sqlite(_) | Database::MySql(_) => None,
        }
    }

    /// Creates or updates the schema; idempotent.
    pub async fn migrate(&self) -> Result<(), DbError> {
        dispatch!(self, db => db.migrate().await)
    }

    /// Stores operations with one status; one outcome per input.
    pub async fn insert(
        &self,
        ops: Vec<Operation>,
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError> {
        dispatch!(self, db => db.insert(ops, status).await)
    }

    /// Reads a cursor's position.
    pub async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
        dispatch!(self, db => db.load_cursor(key).await)
    }

    /// `NOT_TRUSTLOGGED` rows after a keyset position.
    pub async fn scan_after(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<Operation>, DbError> {
        dispatch!(self, db => db.scan_after(after, limit).await)
    }

    /// Retry rows due at `now`.
    pub async fn due_retries(&self, now: Micros, limit: u32) -> Result<Vec<RetryRow>, DbError> {
        dispatch!(self, db => db.due_retries(now, limit).await)
    }

    /// Rows left behind a position with no retry row.
    pub async fn sweep_candidates(
        &self,
        before: Position,
        limit: u32,
    ) -> Result<Vec<Operation>, DbError> {
        dispatch!(self, db => db.sweep_candidates(before, limit).await)
    }

    /// The monitoring counts.
    pub async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        dispatch!(self, db => db.stats(cursor_key).await)
    }

    /// Runs a unit of work in one transaction.
    pub async fn apply(&self, work: UnitOfWork) -> Result<(), DbError> {
        dispatch!(self, db => db.apply(work).await)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self, db => db.close().await)
    }
}

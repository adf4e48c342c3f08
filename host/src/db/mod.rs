//! Database adapters, chosen by URL; each speaks the WIT `db` interface.

pub mod adapter;
pub mod cursor_value;
pub mod mysql;
pub mod pool_share;
pub mod postgres;
pub mod schema_check;
pub mod schemas;
pub mod search;
pub mod shared_server;
pub mod sqlite;
#[cfg(test)]
mod test_fixtures;
mod text_time;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::{
    self, DbError, DbStats, Fetched, InsertOutcome, Micros, Operation, Position, RowFault,
    TrustlogStatus, UnitOfWork,
};

pub use adapter::{DatabaseAdapter, Unsupported};
use schema_check::{Dialect, SchemaReport};
pub use search::{
    ColumnFault, FoundOperation, OperationFilter, OperationState, Purge, RetryRow, UnknownState,
};

/// One dead letter, as an operator sees it: the retry row joined with its operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The operation's key.
    pub op_id: String,
    /// The operation's own timestamp; `None` when the stored value cannot be read (a
    /// row dead-lettered for just that).
    pub timestamp: Option<Micros>,
    /// Retries made before it was parked.
    pub retry_count: u32,
    /// The last error (the publisher's message).
    pub error_message: String,
    /// When the first failure happened (`trustlog_retry.created_at`).
    pub created_at: Micros,
    /// When the row was dead-lettered (`trustlog_retry.updated_at`, its last change).
    pub updated_at: Micros,
    /// When the last attempt was made; `None` if it never was.
    pub last_retry_at: Option<Micros>,
}

/// Reads `rows` with `read`: a row it cannot make an operation of is kept as a fault
/// (the engine dead-letters it, naming the column), so one unreadable row never stops
/// the others. Only a row whose op_id itself cannot be read fails the whole read.
fn fetch_each<R>(
    rows: &[R],
    read: impl Fn(&R) -> Result<Result<Operation, RowFault>, DbError>,
) -> Result<Fetched<Operation>, DbError> {
    let mut fetched = Fetched::default();
    for row in rows {
        match read(row)? {
            Ok(op) => fetched.rows.push(op),
            Err(fault) => fetched.faults.push(fault),
        }
    }
    Ok(fetched)
}

/// [`fetch_each`] for due retries, each with its retry count (`count`).
fn fetch_each_retry<R>(
    rows: &[R],
    read: impl Fn(&R) -> Result<Result<Operation, RowFault>, DbError>,
    count: impl Fn(&R) -> Result<u32, DbError>,
) -> Result<Fetched<model::RetryRow>, DbError> {
    let mut fetched = Fetched::default();
    for row in rows {
        let retry_count = count(row)?;
        match read(row)? {
            Ok(op) => fetched.rows.push(model::RetryRow { op, retry_count }),
            Err(fault) => fetched.faults.push(RowFault {
                retry_count,
                ..fault
            }),
        }
    }
    Ok(fetched)
}

/// What a failed read of `column` of the row `op_id` becomes.
fn fault(op_id: &str, column: &str, message: impl std::fmt::Display) -> RowFault {
    RowFault {
        op_id: op_id.to_string(),
        column: column.to_string(),
        message: message.to_string(),
        retry_count: 0,
    }
}

/// What is left to deliver, read from the indexes (not a count of the whole table):
/// what a drain waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Rows waiting for their first delivery: `NOT_TRUSTLOGGED` with no retry row.
    pub waiting: u64,
    /// Retry rows `PENDING` or `RETRYING`.
    pub retrying: u64,
    /// When the first of them is due.
    pub next_retry_at: Option<Micros>,
}

impl Backlog {
    /// Whether nothing is left: every row delivered, db-only or a dead letter.
    pub fn is_empty(&self) -> bool {
        self.waiting == 0 && self.retrying == 0
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The dead letter of one op_id.
    One(String),
    /// Every dead letter.
    All,
    /// The dead letters among these op_ids.
    Ids(Vec<String>),
    /// The dead letters among the operations the filter matches.
    Matching(OperationFilter),
}

/// The lease that names the one host delivering for a cursor key: hosts sharing a
/// database take it in turns through this row (`trustlog_lease`), with no service
/// of their own. Times are the database server's (SQLite: the host's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    /// The cursor key it guards.
    pub key: String,
    /// The host holding it; empty once released.
    pub holder: String,
    /// When the holder took it.
    pub acquired_at: Micros,
    /// When the holder last renewed it.
    pub renewed_at: Micros,
    /// When it runs out unless renewed.
    pub expires_at: Micros,
    /// What the holder last said of its delivery (`running`, `outage: …`).
    pub state: String,
    /// Whether it had run out when read.
    pub expired: bool,
}

impl Lease {
    /// Whether `holder` may take it now: it is free, run out, or already its own.
    fn is_free(&self, holder: &str) -> bool {
        self.holder == holder || self.holder.is_empty() || self.expired
    }

    /// Whether a live host holds it.
    pub fn is_held(&self) -> bool {
        !self.holder.is_empty() && !self.expired
    }
}

/// What a claim on a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClaim {
    /// The lease as it stands after the claim.
    pub lease: Lease,
    /// Whether the claimer holds it now.
    pub held: bool,
    /// The host whose lease ran out and was taken over without being released: it
    /// may have published a batch it never committed, which is now delivered again.
    pub took_over_from: Option<String>,
}

/// A database connection pool behind one of the adapters.
///
/// The built-in adapters are arms of their own, called without indirection on the
/// delivery path; an adapter of a user's own is the `Custom` arm.
#[derive(Clone, Debug)]
pub enum Database {
    /// The SQLite adapter, on one database file.
    Sqlite(sqlite::SqliteDb),
    /// The PostgreSQL adapter.
    Postgres(postgres::PostgresDb),
    /// The MySQL adapter, which also serves MariaDB.
    MySql(mysql::MySqlDb),
    /// An adapter implemented outside this crate.
    Custom(Arc<dyn DatabaseAdapter>),
}

/// Calls the same method on whichever adapter is inside.
macro_rules! dispatch {
    ($self:ident, $db:ident => $call:expr) => {
        match $self {
            Database::Sqlite($db) => $call,
            Database::Postgres($db) => $call,
            Database::MySql($db) => $call,
            Database::Custom($db) => $call,
        }
    };
}

impl Database {
    /// Wraps an adapter of the user's own.
    pub fn custom(adapter: impl DatabaseAdapter) -> Database {
        Database::Custom(Arc::new(adapter))
    }

    /// The adapter inside, as a trait object: for an adapter of the user's own that
    /// wraps a built-in one (to count, trace or filter its calls).
    pub fn into_adapter(self) -> Arc<dyn DatabaseAdapter> {
        match self {
            Database::Sqlite(db) => Arc::new(db),
            Database::Postgres(db) => Arc::new(db),
            Database::MySql(db) => Arc::new(db),
            Database::Custom(db) => db,
        }
    }

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
                mysql::MySqlDb::connect(&mysql::with_mysql_scheme(url)).await?,
            )),
            _ => Err(DbError::Invalid(trustlog_guest::model::FieldError::new(
                "db",
                format!(
                    "unsupported database URL {:?}; expected sqlite://PATH, postgres://… or mysql://…",
                    crate::publisher::options::redact(url)
                ),
            ))),
        }
    }

    /// Wakes `wake` whenever any client inserts a row, where the database can say so
    /// (PostgreSQL LISTEN/NOTIFY); `None` where only the idle poll can notice.
    pub fn spawn_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        match self {
            Database::Postgres(db) => Some(db.spawn_listener(wake)),
            Database::Custom(db) => db.spawn_listener(wake),
            Database::Sqlite(_) | Database::MySql(_) => None,
        }
    }

    /// How trustlog's tables, where they exist, measure up to what it needs.
    pub async fn inspect(&self) -> Result<SchemaReport, DbError> {
        let (columns, dialect) = match self {
            Database::Sqlite(db) => (db.columns().await?, Dialect::Sqlite),
            Database::Postgres(db) => (db.columns().await?, Dialect::Postgres),
            Database::MySql(db) => (db.columns().await?, Dialect::MySql),
            Database::Custom(db) => return db.inspect().await,
        };
        let report = schema_check::judge(dialect, &columns);
        Ok(match self {
            Database::Sqlite(db) => report.with_text_retry_times(db.text_retry_times().await?),
            _ => report,
        })
    }

    /// Creates the tables and indexes that are missing; idempotent. Tables that exist
    /// but cannot be served as they are (see [`Database::inspect`]) are left alone, and
    /// the error carries the report: what differs, and the SQL that would change it.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let report = self.inspect().await?;
        if report.needs_change() {
            return Err(DbError::Other(format!(
                "the tables cannot be served as they are; `trustlog migrate --apply` \
                 makes these changes:\n{report}"
            )));
        }
        dispatch!(self, db => db.migrate().await)
    }

    /// Runs the SQL of every change `report` names, then [`Database::migrate`].
    pub async fn apply_changes(&self, report: &SchemaReport) -> Result<(), DbError> {
        let fixes = report.fixes();
        if !fixes.is_empty() {
            match self {
                Database::Sqlite(db) => db.alter(&fixes).await?,
                Database::Postgres(db) => db.alter(&fixes).await?,
                Database::MySql(db) => db.alter(&fixes).await?,
                Database::Custom(_) => {
                    return Err(DbError::Other(
                        "this adapter's tables cannot be changed by trustlog".into(),
                    ));
                }
            }
        }
        self.migrate().await
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

    /// `NOT_TRUSTLOGGED` rows after a keyset position (and those that could not be read).
    pub async fn scan_after(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        dispatch!(self, db => db.scan_after(after, limit).await)
    }

    /// Retry rows due at `now` (and those that could not be read).
    pub async fn due_retries(
        &self,
        now: Micros,
        limit: u32,
    ) -> Result<Fetched<model::RetryRow>, DbError> {
        dispatch!(self, db => db.due_retries(now, limit).await)
    }

    /// Rows left behind a position, stamped at or after `since`, with no retry row (and
    /// those that could not be read).
    pub async fn sweep_candidates(
        &self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        dispatch!(self, db => db.sweep_candidates(before, since, limit).await)
    }

    /// What is left to deliver, from the indexes.
    pub async fn backlog(&self) -> Result<Backlog, DbError> {
        dispatch!(self, db => db.backlog().await)
    }

    /// Whether any row stamped at or after `since` waits with no retry row: what a
    /// host polls between passes where the database cannot notify it.
    pub async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
        dispatch!(self, db => db.has_waiting_since(since).await)
    }

    /// Whether the database tells the host of new rows by itself (PostgreSQL's
    /// LISTEN), so that it need not be polled for them.
    pub fn notifies(&self) -> bool {
        match self {
            Database::Postgres(_) => true,
            Database::Custom(db) => db.notifies(),
            Database::Sqlite(_) | Database::MySql(_) => false,
        }
    }

    /// Takes or renews the lease `key` for `holder` for `ttl`, recording `state`: taken
    /// if free, run out or already `holder`'s, by the database's clock.
    pub async fn claim_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        state: &str,
    ) -> Result<LeaseClaim, DbError> {
        self.claim(key, holder, ttl, state, None).await
    }

    /// Takes the lease `key` for `holder` from `from`, whose process is known to have
    /// died, even before its lease runs out (still only if `from` holds it).
    pub async fn claim_lease_from(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        state: &str,
        from: &str,
    ) -> Result<LeaseClaim, DbError> {
        self.claim(key, holder, ttl, state, Some(from)).await
    }

    /// Reads the lease (creating it, released, when missing), judges whether `holder`
    /// may take it, and takes it with compare-and-set on the holder and expiry read: of
    /// two hosts claiming at once, one changes the row and the other finds it changed.
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
        state: &str,
        take_from: Option<&str>,
    ) -> Result<LeaseClaim, DbError> {
        let seen = match self.read_lease(key).await? {
            Some(lease) => lease,
            None => {
                dispatch!(self, db => db.ensure_lease(key).await)?;
                self.read_lease(key).await?.ok_or_else(|| {
                    DbError::Other(format!("lease {key:?} vanished while it was taken"))
                })?
            }
        };
        let not_for_us = LeaseClaim {
            lease: seen.clone(),
            held: false,
            took_over_from: None,
        };
        if !seen.is_free(holder) && take_from != Some(seen.holder.as_str()) {
            return Ok(not_for_us);
        }
        let Some(taken) = dispatch!(self, db => db.swap_lease(&seen, holder, ttl, state).await)?
        else {
            // Another host took or renewed it between the read and the update.
            return Ok(not_for_us);
        };
        let took_over_from =
            (!seen.holder.is_empty() && seen.holder != holder).then(|| seen.holder.clone());
        Ok(LeaseClaim {
            lease: taken,
            held: true,
            took_over_from,
        })
    }

    /// Releases the lease `key` if `holder` holds it.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
        dispatch!(self, db => db.release_lease(key, holder).await)
    }

    /// The lease `key` as it stands; `None` if no host ever took it.
    pub async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
        dispatch!(self, db => db.read_lease(key).await)
    }

    /// The monitoring counts.
    pub async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        dispatch!(self, db => db.stats(cursor_key).await)
    }

    /// Runs a unit of work in one transaction.
    pub async fn apply(&self, work: UnitOfWork) -> Result<(), DbError> {
        dispatch!(self, db => db.apply(work).await)
    }

    /// Dead letters in op_id order (byte order, as the keyset elsewhere), strictly after
    /// `after` when given, at most `limit`.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, DbError> {
        dispatch!(self, db => db.dead_letters(after, limit).await)
    }

    /// Puts dead letters back in the retry queue, due at `now`: retry_status 'PENDING',
    /// retry_count 0, next_retry_at = now, updated_at = now (error_message, created_at,
    /// last_retry_at kept). Only rows whose retry_status is 'DEAD_LETTER' change, whatever
    /// `which` names: an op_id or a filter that also takes other rows leaves them as they
    /// are. Returns how many rows changed (0 when the op_id is not a dead letter).
    pub async fn replay_dead_letters(&self, which: Replay, now: Micros) -> Result<u64, DbError> {
        dispatch!(self, db => db.replay_dead_letters(which, now).await)
    }

    /// Purges dead letters whose updated_at is strictly before `before`, in one
    /// transaction: their operations that are still 'NOT_TRUSTLOGGED' get trustlog_status
    /// 'DB_ONLY' (kept in the database, never published, so the sweep of rows behind the
    /// cursor does not re-deliver them), and their retry rows are deleted. Returns how
    /// many retry rows were deleted.
    pub async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        dispatch!(self, db => db.purge_dead_letters(before).await)
    }

    /// Purges the dead letters `which` selects, last changed before `now`, exactly as
    /// [`Database::purge_dead_letters`] does, in one transaction: their operations still
    /// 'NOT_TRUSTLOGGED' become 'DB_ONLY' and their retry rows are deleted. Only rows whose
    /// retry_status is 'DEAD_LETTER' go; `now` leaves one dead-lettered while the request
    /// was on its way (by a clock ahead of the caller's) for the next look. Returns how
    /// many retry rows were deleted.
    pub async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
        dispatch!(self, db => db.purge_matching(which, now).await)
    }

    /// The operation `op_id` with its status and retry row; `None` when none is stored.
    /// A row the host cannot make an operation of is found with its fault.
    pub async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        dispatch!(self, db => db.find_operation(op_id).await)
    }

    /// Up to `limit` operations `filter` matches, strictly after `after`, in keyset order
    /// (timestamp, then op_id bytes, as the scans read): the last row's
    /// [`FoundOperation::position`] is the next page's `after`, so a page never repeats
    /// or skips a row, however many share one timestamp. Rows that cannot be read are
    /// found with their fault, never left out.
    pub async fn search_operations(
        &self,
        filter: &OperationFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<FoundOperation>, DbError> {
        dispatch!(self, db => db.search_operations(filter, after, limit).await)
    }

    /// How many operations `filter` matches: as many as paging through
    /// [`Database::search_operations`] finds.
    pub async fn count_operations(&self, filter: &OperationFilter) -> Result<u64, DbError> {
        dispatch!(self, db => db.count_operations(filter).await)
    }

    /// [`Database::purge_dead_letters`] of those dead-lettered more than `age` before `now`.
    pub async fn purge_dead_letters_older_than(
        &self,
        age: std::time::Duration,
        now: Micros,
    ) -> Result<u64, DbError> {
        let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        self.purge_dead_letters(now.saturating_sub(age)).await
    }

    /// Whether the database answers (a trivial query through the pool), for /readyz.
    pub async fn ping(&self) -> Result<(), DbError> {
        dispatch!(self, db => db.ping().await)
    }

    /// Does now the background work a bulk load leaves the database (a checkpoint,
    /// statistics, vacuum), so it does not land at a random moment of what is timed next.
    pub async fn settle(&self) -> Result<(), DbError> {
        dispatch!(self, db => db.settle().await)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self, db => db.close().await)
    }
}

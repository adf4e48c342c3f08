//! The trait a database adapter implements: the WIT `db` interface the guest calls,
//! and what the host itself asks of the store (backlog, leases, dead letters).
//!
//! The built-in adapters implement it, and [`Database`](super::Database) dispatches to
//! them statically; an adapter of a user's own goes in as
//! [`Database::custom`](super::Database::custom) (or by URL scheme through
//! [`Adapters`](crate::adapters::Adapters)) and is called through `dyn`.
//!
//! Every method's contract is the one the conformance suite (`tests/conformance.rs`)
//! holds the built-in adapters to; docs/writing-an-adapter.md walks through it. The
//! operator's lookups (find, search, count, purge by selection) came later: they have
//! defaults answering [`Unsupported`], so an adapter written before them still builds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::{
    DbError, DbStats, Fetched, InsertOutcome, Micros, Operation, Position, RetryRow,
    TrustlogStatus, UnitOfWork,
};

use super::schema_check::SchemaReport;
use super::search::{FoundOperation, OperationFilter, Purge};
use super::{Backlog, DeadLetter, Lease, Replay};

/// What an adapter answers for a method it does not implement (a default of
/// [`DatabaseAdapter`]). It travels as [`DbError::Other`], the `db` interface having no
/// kind of its own for it (its variants mirror the WIT `db-error`);
/// [`Unsupported::of`] tells it apart again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} is unsupported by this adapter ({adapter})")]
pub struct Unsupported {
    /// The trait method, e.g. `search_operations`.
    pub method: String,
    /// The adapter's type.
    pub adapter: String,
}

impl Unsupported {
    /// The refusal of `method` by the adapter type `A`.
    pub fn by<A: ?Sized>(method: &str) -> Unsupported {
        Unsupported {
            method: method.to_string(),
            adapter: std::any::type_name::<A>().to_string(),
        }
    }

    /// The refusal `error` carries, if it is one.
    pub fn of(error: &DbError) -> Option<Unsupported> {
        let DbError::Other(message) = error else {
            return None;
        };
        let (method, rest) = message.split_once(UNSUPPORTED)?;
        let adapter = rest.strip_prefix('(')?.strip_suffix(')')?;
        let well_formed = !method.is_empty() && !method.contains(' ');
        well_formed.then(|| Unsupported {
            method: method.to_string(),
            adapter: adapter.to_string(),
        })
    }
}

/// What [`Unsupported`]'s message says between the method and the adapter.
const UNSUPPORTED: &str = " is unsupported by this adapter ";

impl From<Unsupported> for DbError {
    fn from(unsupported: Unsupported) -> DbError {
        DbError::Other(unsupported.to_string())
    }
}

/// A store of operations, their cursor, retry rows and leases (see the module docs).
///
/// Errors: [`DbError::Unavailable`] for a store that does not answer (the host waits
/// it out as an outage), [`DbError::CursorMoved`] for a compare-and-set that found the
/// cursor moved, [`DbError::Invalid`] for input the store refuses, and
/// [`DbError::Other`] for the rest.
#[async_trait::async_trait]
pub trait DatabaseAdapter: std::fmt::Debug + Send + Sync + 'static {
    /// Creates whatever the store needs that is missing; idempotent. Called before a
    /// tenant starts.
    async fn migrate(&self) -> Result<(), DbError> {
        Ok(())
    }

    /// How the store's tables measure up to what trustlog needs (`trustlog migrate`);
    /// a store without trustlog's SQL tables reports nothing to change.
    async fn inspect(&self) -> Result<SchemaReport, DbError> {
        Ok(SchemaReport::default())
    }

    /// Stores operations with one status; one outcome per input, in input order: an
    /// op_id already stored is `Duplicate` and changes nothing.
    async fn insert(
        &self,
        ops: Vec<Operation>,
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError>;

    /// The position stored under a cursor key; `None` before the first commit.
    async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError>;

    /// Up to `limit` `NOT_TRUSTLOGGED` rows strictly after `after` in keyset order
    /// (timestamp, then op_id bytes), and the rows it could not read as faults.
    async fn scan_after(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError>;

    /// Up to `limit` retry rows `PENDING` or `RETRYING` due at `now`, with their
    /// operations, in due order.
    async fn due_retries(&self, now: Micros, limit: u32) -> Result<Fetched<RetryRow>, DbError>;

    /// Up to `limit` `NOT_TRUSTLOGGED` rows at or before `before`, stamped at or after
    /// `since`, that have no retry row: rows a late commit left behind the cursor.
    async fn sweep_candidates(
        &self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError>;

    /// Runs a unit of work in one transaction: status marks, retry rows, and the cursor
    /// move with compare-and-set (a cursor not at `expected` is
    /// [`DbError::CursorMoved`], and nothing of the unit is kept).
    async fn apply(&self, work: UnitOfWork) -> Result<(), DbError>;

    /// The monitoring counts for `cursor_key`.
    async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError>;

    /// What is left to deliver: what a drain waits for.
    async fn backlog(&self) -> Result<Backlog, DbError>;

    /// Whether any row stamped at or after `since` waits with no retry row: what an
    /// idle host probes where the store cannot notify it.
    async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError>;

    /// The lease `key` as it stands; `None` if no host ever took it.
    async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError>;

    /// Creates the lease `key`, released (empty holder), unless it exists.
    async fn ensure_lease(&self, key: &str) -> Result<(), DbError>;

    /// Gives the lease to `holder` for `ttl`, recording `state`, only if it still is
    /// as `seen` (same holder, same expiry): the lease as it then stands, or `None`
    /// when another host changed it first.
    async fn swap_lease(
        &self,
        seen: &Lease,
        holder: &str,
        ttl: Duration,
        state: &str,
    ) -> Result<Option<Lease>, DbError>;

    /// Releases the lease `key` if `holder` holds it.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError>;

    /// Dead letters in op_id byte order, strictly after `after`, at most `limit`.
    async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, DbError>;

    /// Puts dead letters back in the retry queue, due at `now`; how many changed.
    async fn replay_dead_letters(&self, which: Replay, now: Micros) -> Result<u64, DbError>;

    /// Deletes dead letters last changed before `before`, their operations marked
    /// `DB_ONLY`; how many were deleted.
    async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError>;

    /// Deletes the dead letters `which` selects that were last changed before `now`,
    /// their operations marked `DB_ONLY`, in one transaction; how many were deleted.
    async fn purge_matching(&self, _which: Purge, _now: Micros) -> Result<u64, DbError> {
        Err(Unsupported::by::<Self>("purge_matching").into())
    }

    /// The operation `op_id` with its status and retry row, or its fault where it cannot
    /// be read; `None` when none is stored.
    async fn find_operation(&self, _op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        Err(Unsupported::by::<Self>("find_operation").into())
    }

    /// Up to `limit` operations `filter` matches, strictly after `after`, in keyset
    /// order (see [`FoundOperation::position`]).
    async fn search_operations(
        &self,
        _filter: &OperationFilter,
        _after: Option<&Position>,
        _limit: u32,
    ) -> Result<Vec<FoundOperation>, DbError> {
        Err(Unsupported::by::<Self>("search_operations").into())
    }

    /// How many operations `filter` matches.
    async fn count_operations(&self, _filter: &OperationFilter) -> Result<u64, DbError> {
        Err(Unsupported::by::<Self>("count_operations").into())
    }

    /// Whether the store answers now, for `/readyz`.
    async fn ping(&self) -> Result<(), DbError> {
        self.backlog().await.map(|_| ())
    }

    /// Does now the background work a bulk load leaves (checkpoints, statistics).
    async fn settle(&self) -> Result<(), DbError> {
        Ok(())
    }

    /// Closes the store's connections.
    async fn close(&self) {}

    /// Whether the store tells the host of new rows by itself, so the host need not
    /// poll for them; if so, [`DatabaseAdapter::spawn_listener`] starts that.
    fn notifies(&self) -> bool {
        false
    }

    /// Wakes `wake` whenever any client inserts a row; `None` where the store cannot.
    fn spawn_listener(&self, _wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        None
    }
}

/// Implements [`DatabaseAdapter`] for a built-in adapter by its inherent methods.
macro_rules! builtin_adapter {
    ($adapter:ty, $arm:ident) => {
        #[async_trait::async_trait]
        impl DatabaseAdapter for $adapter {
            async fn migrate(&self) -> Result<(), DbError> {
                <$adapter>::migrate(self).await
            }
            async fn inspect(&self) -> Result<SchemaReport, DbError> {
                super::Database::$arm(self.clone()).inspect().await
            }
            async fn insert(
                &self,
                ops: Vec<Operation>,
                status: TrustlogStatus,
            ) -> Result<Vec<InsertOutcome>, DbError> {
                <$adapter>::insert(self, ops, status).await
            }
            async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
                <$adapter>::load_cursor(self, key).await
            }
            async fn scan_after(
                &self,
                after: Option<Position>,
                limit: u32,
            ) -> Result<Fetched<Operation>, DbError> {
                <$adapter>::scan_after(self, after, limit).await
            }
            async fn due_retries(
                &self,
                now: Micros,
                limit: u32,
            ) -> Result<Fetched<RetryRow>, DbError> {
                <$adapter>::due_retries(self, now, limit).await
            }
            async fn sweep_candidates(
                &self,
                before: Position,
                since: Micros,
                limit: u32,
            ) -> Result<Fetched<Operation>, DbError> {
                <$adapter>::sweep_candidates(self, before, since, limit).await
            }
            async fn apply(&self, work: UnitOfWork) -> Result<(), DbError> {
                <$adapter>::apply(self, work).await
            }
            async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
                <$adapter>::stats(self, cursor_key).await
            }
            async fn backlog(&self) -> Result<Backlog, DbError> {
                <$adapter>::backlog(self).await
            }
            async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
                <$adapter>::has_waiting_since(self, since).await
            }
            async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
                <$adapter>::read_lease(self, key).await
            }
            async fn ensure_lease(&self, key: &str) -> Result<(), DbError> {
                <$adapter>::ensure_lease(self, key).await
            }
            async fn swap_lease(
                &self,
                seen: &Lease,
                holder: &str,
                ttl: Duration,
                state: &str,
            ) -> Result<Option<Lease>, DbError> {
                <$adapter>::swap_lease(self, seen, holder, ttl, state).await
            }
            async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
                <$adapter>::release_lease(self, key, holder).await
            }
            async fn dead_letters(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> Result<Vec<DeadLetter>, DbError> {
                <$adapter>::dead_letters(self, after, limit).await
            }
            async fn replay_dead_letters(
                &self,
                which: Replay,
                now: Micros,
            ) -> Result<u64, DbError> {
                <$adapter>::replay_dead_letters(self, which, now).await
            }
            async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
                <$adapter>::purge_dead_letters(self, before).await
            }
            async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
                <$adapter>::purge_matching(self, which, now).await
            }
            async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
                <$adapter>::find_operation(self, op_id).await
            }
            async fn search_operations(
                &self,
                filter: &OperationFilter,
                after: Option<&Position>,
                limit: u32,
            ) -> Result<Vec<FoundOperation>, DbError> {
                <$adapter>::search_operations(self, filter, after, limit).await
            }
            async fn count_operations(&self, filter: &OperationFilter) -> Result<u64, DbError> {
                <$adapter>::count_operations(self, filter).await
            }
            async fn ping(&self) -> Result<(), DbError> {
                <$adapter>::ping(self).await
            }
            async fn settle(&self) -> Result<(), DbError> {
                <$adapter>::settle(self).await
            }
            async fn close(&self) {
                <$adapter>::close(self).await
            }
            fn notifies(&self) -> bool {
                super::Database::$arm(self.clone()).notifies()
            }
            fn spawn_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
                super::Database::$arm(self.clone()).spawn_listener(wake)
            }
        }
    };
}

builtin_adapter!(super::sqlite::SqliteDb, Sqlite);
builtin_adapter!(super::postgres::PostgresDb, Postgres);
builtin_adapter!(super::mysql::MySqlDb, MySql);

#[cfg(test)]
mod tests {
    use super::*;

    /// An adapter written before the lookups existed: it implements only what was
    /// required then, each answer a plain refusal (only the defaults are called here).
    #[derive(Debug)]
    struct Older;

    fn refused<T>() -> Result<T, DbError> {
        Err(DbError::Other("not called by this test".into()))
    }

    #[async_trait::async_trait]
    impl DatabaseAdapter for Older {
        async fn insert(
            &self,
            _ops: Vec<Operation>,
            _status: TrustlogStatus,
        ) -> Result<Vec<InsertOutcome>, DbError> {
            refused()
        }
        async fn load_cursor(&self, _key: &str) -> Result<Option<Position>, DbError> {
            refused()
        }
        async fn scan_after(
            &self,
            _after: Option<Position>,
            _limit: u32,
        ) -> Result<Fetched<Operation>, DbError> {
            refused()
        }
        async fn due_retries(
            &self,
            _now: Micros,
            _limit: u32,
        ) -> Result<Fetched<RetryRow>, DbError> {
            refused()
        }
        async fn sweep_candidates(
            &self,
            _before: Position,
            _since: Micros,
            _limit: u32,
        ) -> Result<Fetched<Operation>, DbError> {
            refused()
        }
        async fn apply(&self, _work: UnitOfWork) -> Result<(), DbError> {
            refused()
        }
        async fn stats(&self, _cursor_key: &str) -> Result<DbStats, DbError> {
            refused()
        }
        async fn backlog(&self) -> Result<Backlog, DbError> {
            refused()
        }
        async fn has_waiting_since(&self, _since: Micros) -> Result<bool, DbError> {
            refused()
        }
        async fn read_lease(&self, _key: &str) -> Result<Option<Lease>, DbError> {
            refused()
        }
        async fn ensure_lease(&self, _key: &str) -> Result<(), DbError> {
            refused()
        }
        async fn swap_lease(
            &self,
            _seen: &Lease,
            _holder: &str,
            _ttl: Duration,
            _state: &str,
        ) -> Result<Option<Lease>, DbError> {
            refused()
        }
        async fn release_lease(&self, _key: &str, _holder: &str) -> Result<(), DbError> {
            refused()
        }
        async fn dead_letters(
            &self,
            _after: Option<&str>,
            _limit: u32,
        ) -> Result<Vec<DeadLetter>, DbError> {
            refused()
        }
        async fn replay_dead_letters(&self, _which: Replay, _now: Micros) -> Result<u64, DbError> {
            refused()
        }
        async fn purge_dead_letters(&self, _before: Micros) -> Result<u64, DbError> {
            refused()
        }
    }

    #[tokio::test]
    async fn an_adapter_without_the_lookups_refuses_them_by_name() {
        let db = super::super::Database::custom(Older);
        let filter = OperationFilter::default();
        let errors = [
            ("find_operation", db.find_operation("a").await.map(|_| ())),
            (
                "search_operations",
                db.search_operations(&filter, None, 10).await.map(|_| ()),
            ),
            (
                "count_operations",
                db.count_operations(&filter).await.map(|_| ()),
            ),
            (
                "purge_matching",
                db.purge_matching(Purge::Ids(vec!["a".into()]), 1)
                    .await
                    .map(|_| ()),
            ),
        ];
        for (method, result) in errors {
            let error = result.unwrap_err();
            let unsupported = Unsupported::of(&error)
                .unwrap_or_else(|| panic!("{method}: not an Unsupported: {error:?}"));
            assert_eq!(unsupported.method, method);
            assert!(unsupported.adapter.ends_with("::Older"), "{unsupported:?}");
            assert!(
                error.to_string().contains("unsupported by this adapter"),
                "{error}"
            );
        }
    }

    #[test]
    fn only_an_unsupported_refusal_reads_as_one() {
        let refusal = Unsupported::by::<Older>("find_operation");
        assert_eq!(Unsupported::of(&refusal.clone().into()), Some(refusal));
        for other in [
            DbError::Other("database error: disk full".into()),
            DbError::Other("is unsupported by this adapter (x)".into()),
            DbError::Other("a b is unsupported by this adapter (x)".into()),
            DbError::Unavailable("find_operation is unsupported by this adapter (x)".into()),
        ] {
            assert_eq!(Unsupported::of(&other), None, "{other:?}");
        }
    }
}

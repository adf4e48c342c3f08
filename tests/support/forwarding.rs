//! A database adapter written outside the host crate, as a user would: it forwards
//! every call to a built-in adapter through the public [`DatabaseAdapter`] trait, so a
//! suite run through it checks the `Custom` arm and the trait's whole surface.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use trustlog_guest::model::{
    DbError, DbStats, Fetched, InsertOutcome, Micros, Operation, Position, RetryRow,
    TrustlogStatus, UnitOfWork,
};
use trustlog_host::adapters::Adapters;
use trustlog_host::db::schema_check::SchemaReport;
use trustlog_host::db::{
    Backlog, DatabaseAdapter, DeadLetter, FoundOperation, Lease, OperationFilter, Purge, Replay,
};

/// The scheme prefix that routes a URL through [`Forwarding`]: `forward+sqlite://…`.
pub const PREFIX: &str = "forward+";

/// Forwards to `inner`, counting the calls.
#[derive(Debug)]
pub struct Forwarding {
    inner: Arc<dyn DatabaseAdapter>,
    calls: Arc<AtomicU64>,
}

impl Forwarding {
    fn call(&self) -> &dyn DatabaseAdapter {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_ref()
    }
}

/// A registry serving `forward+SCHEME://…` by [`Forwarding`] over the built-in adapter
/// of `SCHEME://…`, every call counted into `calls`.
pub fn adapters(calls: Arc<AtomicU64>) -> Adapters {
    let mut adapters = Adapters::new();
    for scheme in ["sqlite", "postgres", "mysql"] {
        let calls = calls.clone();
        adapters = adapters.with_database(&format!("{PREFIX}{scheme}"), move |url| {
            let calls = calls.clone();
            async move {
                let url = url.strip_prefix(PREFIX).unwrap_or(&url).to_string();
                let inner = Adapters::new().connect_database(&url).await?.into_adapter();
                Ok(Forwarding { inner, calls })
            }
        });
    }
    adapters
}

#[async_trait::async_trait]
impl DatabaseAdapter for Forwarding {
    async fn migrate(&self) -> Result<(), DbError> {
        self.call().migrate().await
    }
    async fn inspect(&self) -> Result<SchemaReport, DbError> {
        self.call().inspect().await
    }
    async fn insert(
        &self,
        ops: Vec<Operation>,
        status: TrustlogStatus,
    ) -> Result<Vec<InsertOutcome>, DbError> {
        self.call().insert(ops, status).await
    }
    async fn load_cursor(&self, key: &str) -> Result<Option<Position>, DbError> {
        self.call().load_cursor(key).await
    }
    async fn scan_after(
        &self,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        self.call().scan_after(after, limit).await
    }
    async fn due_retries(&self, now: Micros, limit: u32) -> Result<Fetched<RetryRow>, DbError> {
        self.call().due_retries(now, limit).await
    }
    async fn sweep_candidates(
        &self,
        before: Position,
        since: Micros,
        limit: u32,
    ) -> Result<Fetched<Operation>, DbError> {
        self.call().sweep_candidates(before, since, limit).await
    }
    async fn apply(&self, work: UnitOfWork) -> Result<(), DbError> {
        self.call().apply(work).await
    }
    async fn stats(&self, cursor_key: &str) -> Result<DbStats, DbError> {
        self.call().stats(cursor_key).await
    }
    async fn backlog(&self) -> Result<Backlog, DbError> {
        self.call().backlog().await
    }
    async fn has_waiting_since(&self, since: Micros) -> Result<bool, DbError> {
        self.call().has_waiting_since(since).await
    }
    async fn read_lease(&self, key: &str) -> Result<Option<Lease>, DbError> {
        self.call().read_lease(key).await
    }
    async fn ensure_lease(&self, key: &str) -> Result<(), DbError> {
        self.call().ensure_lease(key).await
    }
    async fn swap_lease(
        &self,
        seen: &Lease,
        holder: &str,
        ttl: Duration,
        state: &str,
    ) -> Result<Option<Lease>, DbError> {
        self.call().swap_lease(seen, holder, ttl, state).await
    }
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), DbError> {
        self.call().release_lease(key, holder).await
    }
    async fn dead_letters(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, DbError> {
        self.call().dead_letters(after, limit).await
    }
    async fn replay_dead_letters(&self, which: Replay, now: Micros) -> Result<u64, DbError> {
        self.call().replay_dead_letters(which, now).await
    }
    async fn purge_dead_letters(&self, before: Micros) -> Result<u64, DbError> {
        self.call().purge_dead_letters(before).await
    }
    async fn purge_matching(&self, which: Purge, now: Micros) -> Result<u64, DbError> {
        self.call().purge_matching(which, now).await
    }
    async fn find_operation(&self, op_id: &str) -> Result<Option<FoundOperation>, DbError> {
        self.call().find_operation(op_id).await
    }
    async fn search_operations(
        &self,
        filter: &OperationFilter,
        after: Option<&Position>,
        limit: u32,
    ) -> Result<Vec<FoundOperation>, DbError> {
        self.call().search_operations(filter, after, limit).await
    }
    async fn count_operations(&self, filter: &OperationFilter) -> Result<u64, DbError> {
        self.call().count_operations(filter).await
    }
    async fn ping(&self) -> Result<(), DbError> {
        self.call().ping().await
    }
    async fn settle(&self) -> Result<(), DbError> {
        self.call().settle().await
    }
    async fn close(&self) {
        self.call().close().await
    }
    fn notifies(&self) -> bool {
        self.call().notifies()
    }
    fn spawn_listener(&self, wake: Arc<Notify>) -> Option<JoinHandle<()>> {
        self.call().spawn_listener(wake)
    }
}

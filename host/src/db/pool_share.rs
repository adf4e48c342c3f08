//! A tenant's share of a pool that every tenant of one server uses: at most half its
//! connections at once. A tenant whose transactions are slow, or wait on a lock an
//! application holds, then ties up its own share and no more; the other half serves
//! every other tenant. Shared pools also give up on a lock after
//! [`SHARED_LOCK_TIMEOUT`], so even a share stuck on locks comes back.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use trustlog_guest::model::DbError;

/// How long a statement on a shared pool waits for a lock before it fails (as
/// unavailable, so the tick is retried): long enough for any lock trustlog's own
/// transactions hold, short enough that a stuck one frees its connection.
pub const SHARED_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a use waits for its tenant's share before it fails as unavailable.
const SHARE_WAIT: Duration = Duration::from_secs(10);

/// One tenant's connections of a shared pool.
#[derive(Debug, Clone)]
pub struct Share {
    permits: Arc<Semaphore>,
    size: u32,
}

/// The permit a tenant on a shared pool needs to hold one more connection; none
/// where the pool is the tenant's own (`share` is `None`).
pub async fn permit(share: Option<&Share>) -> Result<Option<OwnedSemaphorePermit>, DbError> {
    match share {
        Some(share) => share.take().await.map(Some),
        None => Ok(None),
    }
}

impl Share {
    /// Half of a pool of `pool_size` connections, and at least one.
    pub fn of(pool_size: u32) -> Share {
        let size = (pool_size / 2).max(1);
        Share {
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// Connections the tenant may hold at once.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Ends the tenant's use of the pool (which stays open for the others): every use
    /// after this fails as unavailable, as on a closed pool of its own.
    pub fn close(&self) {
        self.permits.close();
    }

    /// A permit to hold one connection, or unavailable once `SHARE_WAIT` (10 s) passed with
    /// every connection of the share in use.
    pub async fn take(&self) -> Result<OwnedSemaphorePermit, DbError> {
        self.take_within(SHARE_WAIT).await
    }

    async fn take_within(&self, wait: Duration) -> Result<OwnedSemaphorePermit, DbError> {
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(DbError::Unavailable(
                "the tenant's pool share is closed".into(),
            )),
            Err(_) => Err(DbError::Unavailable(format!(
                "the tenant's share of the shared pool ({} connections) stayed in use for \
                 {wait:?}: its own slow or locked transactions hold them",
                self.size
            ))),
        }
    }
}

/// A connection or transaction of a pool, with the tenant's permit to hold it where the
/// pool is shared; the permit goes back when it is dropped (or the transaction ends).
pub struct Held<T> {
    inner: T,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<T> Held<T> {
    /// `inner`, held under `permit` (none on a pool of the tenant's own).
    pub fn new(inner: T, permit: Option<OwnedSemaphorePermit>) -> Held<T> {
        Held {
            inner,
            _permit: permit,
        }
    }
}

impl<DB: sqlx::Database> Held<sqlx::pool::PoolConnection<DB>> {
    /// Closes the connection instead of giving it back to the pool (see sqlx's own).
    pub fn close_on_drop(&mut self) {
        self.inner.close_on_drop();
    }
}

impl<DB: sqlx::Database> Held<sqlx::Transaction<'static, DB>> {
    /// Commits the transaction, then gives the connection back to the share.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Rolls the transaction back, then gives the connection back to the share.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl<T: Deref> Deref for Held<T> {
    type Target = T::Target;

    fn deref(&self) -> &T::Target {
        &self.inner
    }
}

impl<T: DerefMut> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T::Target {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_share_is_half_the_pool_and_a_full_share_is_unavailable_after_its_wait() {
        assert_eq!(Share::of(1).size(), 1);
        assert_eq!(Share::of(3).size(), 1);
        assert_eq!(Share::of(10).size(), 5);
        let share = Share::of(4);
        let first = share.take().await.unwrap();
        let _second = share.take().await.unwrap();
        let err = share
            .take_within(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DbError::Unavailable(m) if m.contains("2 connections")),
            "{err:?}"
        );
        drop(first);
        let _again = share
            .take()
            .await
            .expect("a permit given back is taken again");
        share.close();
        assert!(matches!(share.take().await, Err(DbError::Unavailable(m)) if m.contains("closed")));
    }
}

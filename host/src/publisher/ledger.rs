//! `ledger://PATH`: the embedded, hash-chained, append-only file.
//!
//! File I/O and fsync block, so each batch runs on tokio's blocking pool.
//! The ledger is opened lazily and again after a failure to open, so a
//! missing disk or a lock held elsewhere makes it unavailable for a while, not a crash.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use trustlog_guest::model::{Envelope, PublishError};

use crate::ledger::{self, Ledger};

/// A ledger file shared by every clone of this publisher.
#[derive(Clone, Debug)]
pub struct LedgerPublisher {
    path: PathBuf,
    ledger: Arc<Mutex<Option<Ledger>>>,
}

impl LedgerPublisher {
    /// Opens the ledger at `path` now if it can; otherwise at the first publish.
    pub async fn open(path: PathBuf) -> LedgerPublisher {
        let publisher = LedgerPublisher {
            path,
            ledger: Arc::new(Mutex::new(None)),
        };
        let p = publisher.clone();
        let opened = tokio::task::spawn_blocking(move || p.with_ledger(|_| ())).await;
        if let Ok(Err(e)) = opened {
            tracing::warn!(path = %publisher.path.display(), error = %e, "ledger not available yet; will retry at each publish");
        }
        publisher
    }

    fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> Result<R, ledger::LedgerError> {
        // A poisoned lock only means a panic elsewhere mid-batch; the ledger's own state is
        // updated after fsync, so it is still consistent.
        let mut slot = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Ledger::open(&self.path)?);
        }
        Ok(f(slot.as_mut().expect("opened above")))
    }

    /// Opens the ledger now if it is not open yet, saying why it cannot be (locked by a
    /// running `serve`, a missing directory).
    pub async fn open_now(&self) -> Result<(), ledger::LedgerError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.with_ledger(|_| ())).await {
            Ok(opened) => opened,
            Err(e) => Err(ledger::LedgerError::Io {
                path: self.path.clone(),
                action: "open",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Whether the ledger file is open (opening it now if it was not) and still appends.
    pub async fn ready(&self) -> Result<(), String> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.with_ledger(|l| l.health())).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("ledger {}: {e}", self.path.display())),
            Ok(Err(e)) => Err(format!("ledger {}: {e}", self.path.display())),
            Err(e) => Err(format!("ledger {}: {e}", self.path.display())),
        }
    }

    /// Appends the batch and fsyncs it; one result per envelope.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        let this = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            this.with_ledger(|l| ledger::publish_batch(l, &batch))
        })
        .await;
        let error = match joined {
            Ok(Ok(results)) => return results,
            Ok(Err(e)) => format!("ledger {}: {e}", self.path.display()),
            Err(e) => format!("ledger {}: writer task failed: {e}", self.path.display()),
        };
        // Not open (locked by another process, a missing directory): the ledger as a
        // whole cannot be written, whatever the envelopes hold.
        vec![Err(PublishError::Unavailable(error)); n]
    }
}

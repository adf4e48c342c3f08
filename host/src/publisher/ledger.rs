//! `ledger://PATH`: the embedded, hash-chained, append-only file.
//!
//! File I/O and fsync block, so each batch runs on tokio's blocking pool.
//! The ledger is opened at the first publish and again after a failure to open,
//! so a missing disk or a lock held elsewhere makes it unavailable for a while,
//! not a crash. Only one process may append to a ledger, and an open one holds its
//! lock: a host standing by for another (see `crate::scheduling::lease`) closes it after each
//! use, so the host delivering can open it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use trustlog_guest::model::{Envelope, PublishError};

use crate::ledger::{self, Ledger};

/// A ledger file shared by every clone of this publisher.
#[derive(Clone, Debug)]
pub struct LedgerPublisher {
    path: PathBuf,
    /// Signs a checkpoint after each batch: the ledger is a transparency log (v2).
    signing_key: Option<Arc<ledger::SigningKey>>,
    ledger: Arc<Mutex<Option<Ledger>>>,
    /// Whether the ledger stays open (and locked) between uses.
    keep_open: Arc<AtomicBool>,
}

impl LedgerPublisher {
    /// A publisher to the ledger at `path`, opened at its first use.
    pub async fn open(path: PathBuf) -> LedgerPublisher {
        Self::signed(path, None)
    }

    /// A publisher to the ledger at `path` that signs its checkpoints with `key` (none:
    /// a v1 hash chain).
    pub fn signed(path: PathBuf, signing_key: Option<ledger::SigningKey>) -> LedgerPublisher {
        LedgerPublisher {
            path,
            signing_key: signing_key.map(Arc::new),
            ledger: Arc::new(Mutex::new(None)),
            keep_open: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The verifier key of the key that signs this ledger's checkpoints, if it is signed.
    pub fn verifier_key(&self) -> Option<ledger::VerifierKey> {
        self.signing_key.as_ref().map(|k| k.verifier_key().clone())
    }

    /// Waits until every confirmed batch is in a signed checkpoint; that checkpoint's
    /// size (`None` for an unsigned ledger).
    pub async fn signed_size(&self) -> Result<Option<u64>, ledger::LedgerError> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.with_ledger(|l| l.signed_size())).await {
            Ok(signed) => signed,
            Err(e) => Err(ledger::LedgerError::Io {
                path: self.path.clone(),
                action: "wait for the signed checkpoint",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// Keeps the ledger open between batches (`true`, the default), or closes it now and
    /// after every later use (`false`: this host stands by for another one).
    pub fn hold(&self, keep_open: bool) {
        self.keep_open.store(keep_open, Ordering::SeqCst);
        if !keep_open {
            let mut slot = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
            *slot = None;
        }
    }

    fn with_ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> Result<R, ledger::LedgerError> {
        // A poisoned lock only means a panic elsewhere mid-batch; the ledger's own state is
        // updated after fsync, so it is still consistent.
        let mut slot = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let options = ledger::LedgerOptions {
                signing_key: self.signing_key.as_deref().cloned(),
                ..Default::default()
            };
            *slot = Some(Ledger::open_with(&self.path, options)?);
        }
        let result = f(slot.as_mut().expect("opened above"));
        if !self.keep_open.load(Ordering::SeqCst) {
            *slot = None;
        }
        Ok(result)
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

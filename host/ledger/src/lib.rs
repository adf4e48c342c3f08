//! The embedded trust log: an append-only, hash-chained ledger file.
//!
//! # Format
//!
//! The ledger is a text file of JSON lines, one entry per line:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","sha256":"<64 hex>","hash":"<64 hex>","payload":<payload bytes verbatim>}\n
//! ```
//!
//! - `seq` starts at 1 and increases by 1.
//! - `sha256` = lower-case hex SHA-256 of the payload bytes exactly as embedded.
//! - `hash` = lower-case hex SHA-256 of ( prev hash as 32 raw bytes || seq as u64
//!   big-endian 8 bytes || payload sha256 as 32 raw bytes ).
//! - `prev` = the previous entry's `hash`; for seq 1 it is 64 zeros.
//! - The payload is a JSON value (the canonical JSON of an operation) embedded
//!   verbatim; it never contains a newline.
//!
//! The fields appear in exactly that order, with no whitespace outside the
//! payload; [`verify`] rejects any other spelling of an entry.
//!
//! A head anchor file beside it, `<path>.head`, holds `{"seq":N,"hash":"<hex>"}`
//! (followed by one `\n`) of the last entry, rewritten (write `<path>.head.tmp`,
//! then rename over) after each confirmed batch.
//!
//! # Durability
//!
//! [`Ledger::append`] writes a whole batch with one `write_all` and one
//! `sync_data`, and reports success only after both. A crash can leave a partial
//! last line; [`Ledger::open`] truncates it, since no batch containing it was
//! ever confirmed. Whole lines of a batch whose fsync never returned may survive
//! a crash too; they chain correctly, so `open` keeps them, and the caller, which
//! never saw that batch confirmed, publishes those operations again: delivery is
//! at least once.
//!
//! Only one process may append: `open` takes an exclusive lock on the file.
//! [`verify`] takes no lock and checks a ledger at rest; on a ledger that is
//! being appended to it may see a partial last line or a lagging anchor.

#![warn(missing_docs)]

// Why the anchor exists at all: a pure hash chain cannot see its tail removed,
// or a line appended; every remaining prefix of a valid chain is itself a valid
// chain, and anyone can compute a correct next entry. The anchor, rewritten only
// by the lock holder after each confirmed batch, records where the chain must
// end and with which hash, so both edits show up as a disagreement with it.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use trustlog_guest::model::{Envelope, PublishError};

mod entry;
mod error;
mod recovery;
mod verify;

use entry::*;
pub use error::{LedgerError, VerifyError};
use recovery::*;
pub use verify::{VerifyReport, verify};

/// The `prev` of entry 1, and the head hash of an empty ledger.
const ZERO_HASH: [u8; 32] = [0; 32];

/// Bytes of one entry besides its payload, rounded up; sizes the batch buffer.
const LINE_OVERHEAD: usize = 256;

/// An open ledger, locked for appending by this process.
pub struct Ledger {
    file: File,
    path: PathBuf,
    head: PathBuf,
    head_tmp: PathBuf,
    seq: u64,
    hash: [u8; 32],
    // The length of the file as of the last confirmed batch: where a failed
    // batch is cut back to.
    size: u64,
    // Reused across batches so a steady publisher stops allocating for lines.
    buf: Vec<u8>,
    // Set when a failed batch could not be cut back off the file: the file then
    // holds bytes the in-memory chain does not know, and appending after them
    // would break the chain. Reopening recovers the tail from the file itself.
    poisoned: Option<String>,
    #[cfg(test)]
    fault: Option<Fault>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("hash", &hex::encode(self.hash))
            .field("size", &self.size)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if missing) the ledger at `path` for appending, recovering its tail.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let io_err = |action| {
            move |source| LedgerError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };
        // O_APPEND: every write lands at the current end, including after a
        // rollback has cut the file back.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_err("lock")(source)),
        }
        let len = file.metadata().map_err(io_err("stat"))?.len();
        let end = end_of_last_line(&file, len).map_err(io_err("read"))?;
        let head = head_path(path);

        let anchor = match read_anchor(&head) {
            Ok(anchor) => anchor,
            // An anchor is renamed into place without an fsync, so a crash can
            // leave it empty or zero-filled; that is as good as missing.
            Err(AnchorError::Blank) => {
                tracing::warn!(head = %head.display(), "head anchor is empty (a crash before it reached disk); rebuilding it");
                None
            }
            Err(AnchorError::Io(source)) => {
                return Err(LedgerError::Io {
                    path: head,
                    action: "read the head anchor",
                    source,
                });
            }
            Err(AnchorError::Corrupt(reason)) => {
                return Err(LedgerError::CorruptAnchor { path: head, reason });
            }
        };

        // Reconcile before truncating anything: if the ledger is bad, the torn
        // bytes are evidence, and they stay on disk for whoever investigates.
        let (seq, hash, rewrite_anchor) = reconcile(path, &file, end, anchor)?;

        if end < len {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = len - end,
                "truncating a partial last line left by a crash; its batch was never confirmed"
            );
            file.set_len(end)
                .map_err(io_err("truncate the torn tail of"))?;
        }

        let ledger = Ledger {
            file,
            path: path.to_owned(),
            head_tmp: suffixed(path, ".head.tmp"),
            head,
            seq,
            hash,
            size: end,
            buf: Vec::new(),
            poisoned: None,
            #[cfg(test)]
            fault: None,
        };
        if rewrite_anchor {
            ledger.write_anchor().map_err(|source| LedgerError::Io {
                path: ledger.head.clone(),
                action: "write the head anchor",
                source,
            })?;
        }
        tracing::debug!(path = %path.display(), entries = seq, "ledger open");
        Ok(ledger)
    }

    /// Appends a batch and fsyncs it; Ok only once every entry is durable.
    pub fn append(&mut self, batch: &[Envelope]) -> Result<(), LedgerError> {
        let mut staged = Staged::new(&mut self.buf, self.seq, self.hash, batch);
        for envelope in batch {
            staged
                .push(envelope)
                .map_err(|reason| LedgerError::InvalidEnvelope {
                    path: self.path.clone(),
                    op_id: envelope.op_id.clone(),
                    reason,
                })?;
        }
        let (seq, hash) = staged.end();
        self.commit(seq, hash)
    }

    /// Whether the ledger still appends: a batch it could not cut back off the file
    /// stops it for good, until an operator looks at the file.
    pub fn health(&self) -> Result<(), LedgerError> {
        match &self.poisoned {
            Some(reason) => Err(LedgerError::Poisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Number of entries (the last seq).
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether the ledger has no entries yet.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Writes the lines staged in `buf`, which take the chain to `seq` and `hash`.
    fn commit(&mut self, seq: u64, hash: [u8; 32]) -> Result<(), LedgerError> {
        if let Some(reason) = &self.poisoned {
            return Err(LedgerError::Poisoned {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        if seq == self.seq {
            return Ok(());
        }
        if let Err((action, source)) = self.write_durably() {
            self.roll_back();
            return Err(LedgerError::Io {
                path: self.path.clone(),
                action,
                source,
            });
        }
        self.seq = seq;
        self.hash = hash;
        self.size += self.buf.len() as u64;

        // No fsync for the anchor: it is tamper evidence, not the record. A
        // crash that loses it leaves it lagging (or blank), and open repairs it
        // from the fsynced entries after checking they chain from it. For the
        // same reason a failure here does not unconfirm the batch: the entries
        // are durable, and failing would only make the caller publish them twice.
        if let Err(error) = self.write_anchor() {
            tracing::warn!(
                head = %self.head.display(),
                %error,
                "could not rewrite the head anchor; the batch is durable and the next open repairs it"
            );
        }
        Ok(())
    }

    fn write_durably(&mut self) -> Result<(), (&'static str, io::Error)> {
        #[cfg(test)]
        if let Some(fault) = self.fault.take() {
            return fault.inject(&mut self.file, &self.buf);
        }
        self.file.write_all(&self.buf).map_err(|e| ("write", e))?;
        self.file.sync_data().map_err(|e| ("fsync", e))
    }

    fn roll_back(&mut self) {
        // The cut need not be fsynced: the next confirmed batch's sync_data
        // makes the length durable with it, and if a crash comes first, what
        // survives is either a torn line (truncated on open) or whole lines that
        // chain (kept on open, and republished by the caller that saw them fail).
        if let Err(error) = self.file.set_len(self.size) {
            let reason = format!(
                "a failed batch could not be cut back to byte {}: {error}",
                self.size
            );
            tracing::error!(path = %self.path.display(), %reason, "ledger poisoned");
            self.poisoned = Some(reason);
        }
    }

    fn write_anchor(&self) -> io::Result<()> {
        let mut hash = [0u8; 64];
        encode_hex(&self.hash, &mut hash);
        let text = format!("{{\"seq\":{},\"hash\":\"{}\"}}\n", self.seq, hex_str(&hash));
        fs::write(&self.head_tmp, text)?;
        fs::rename(&self.head_tmp, &self.head)
    }
}

/// A batch being rendered into the ledger's buffer, not yet written.
///
/// The chain advances here, aside from the ledger's own state, which adopts
/// it only after the fsync: a failed batch leaves the in-memory chain exactly
/// at the file's durable end.
struct Staged<'l> {
    buf: &'l mut Vec<u8>,
    seq: u64,
    hash: [u8; 32],
    // The hex of `hash`, kept so each line's `prev` is a copy, not an encoding.
    hash_hex: [u8; 64],
}

impl<'l> Staged<'l> {
    /// Starts a batch in `buf` after entry `seq`, whose hash is `hash`.
    fn new(buf: &'l mut Vec<u8>, seq: u64, hash: [u8; 32], batch: &[Envelope]) -> Staged<'l> {
        let mut hash_hex = [0u8; 64];
        encode_hex(&hash, &mut hash_hex);
        buf.clear();
        buf.reserve(batch.iter().map(|e| e.payload.len() + LINE_OVERHEAD).sum());
        Staged {
            buf,
            seq,
            hash,
            hash_hex,
        }
    }

    /// Validates an envelope and renders its line, or says why it is refused.
    fn push(&mut self, envelope: &Envelope) -> Result<(), String> {
        let (digest, digest_hex) = validate(envelope)?;
        let prev_hex = self.hash_hex;
        self.seq += 1;
        self.hash = chain_hash(&self.hash, self.seq, &digest);
        encode_hex(&self.hash, &mut self.hash_hex);
        render_line(
            self.buf,
            self.seq,
            &prev_hex,
            &digest_hex,
            &self.hash_hex,
            &envelope.payload,
        );
        Ok(())
    }

    fn end(self) -> (u64, [u8; 32]) {
        (self.seq, self.hash)
    }
}

/// Publishes a batch: one result per envelope, in order, for the publisher adapter.
pub fn publish_batch(ledger: &mut Ledger, batch: &[Envelope]) -> Vec<Result<(), PublishError>> {
    let mut staged = Staged::new(&mut ledger.buf, ledger.seq, ledger.hash, batch);
    let mut results: Vec<Result<(), PublishError>> = batch
        .iter()
        .map(|envelope| {
            staged.push(envelope).map_err(|reason| {
                PublishError::Permanent(format!("envelope {}: {reason}", envelope.op_id))
            })
        })
        .collect();
    let (seq, hash) = staged.end();
    if let Err(error) = ledger.commit(seq, hash) {
        // The whole batch was cut back off the file (or the ledger stopped
        // appending), so every envelope that was about to be written may be
        // published again as it is. A write or fsync that fails (a full disk, a
        // lost mount) is the ledger's fault, never the envelope's.
        let message = error.to_string();
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(PublishError::Unavailable(message.clone()));
        }
    }
    results
}

/// A failure injected into the next batch write, so tests can drive the
/// rollback path against a real file.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Half the batch reaches the file, then the write fails.
    TornWrite,
    /// The whole batch reaches the file, then fsync fails.
    FailedSync,
}

#[cfg(test)]
impl Fault {
    fn inject(self, file: &mut File, buf: &[u8]) -> Result<(), (&'static str, io::Error)> {
        match self {
            Fault::TornWrite => {
                file.write_all(&buf[..buf.len() / 2])
                    .map_err(|e| ("write", e))?;
                Err((
                    "write",
                    io::Error::other("injected: the device failed mid-write"),
                ))
            }
            Fault::FailedSync => {
                file.write_all(buf).map_err(|e| ("write", e))?;
                Err(("fsync", io::Error::other("injected: fsync failed")))
            }
        }
    }
}

#[cfg(test)]
mod tests;

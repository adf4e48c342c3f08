//! The embedded trust log: an append-only, hash-chained ledger file (v1) that can
//! also be a signed transparency log (v2) any static file server can publish.
//!
//! # Format (v1 and v2)
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
//! A hash chain with an unsigned anchor catches accidents, not someone who can
//! write the directory: they can rewrite an entry, chain the rest again and
//! rewrite the anchor. v2 adds what they cannot forge without the key.
//!
//! # v2: the signed transparency log
//!
//! A ledger opened with [`Ledger::open_with`] and a [`SigningKey`] keeps, beside
//! the same entries and anchor, a log directory `<path>.tlog/`:
//!
//! ```text
//! <path>.tlog/checkpoint                     the latest signed checkpoint
//! <path>.tlog/tile/<L>/<N>[.p/<W>]           hash tiles (C2SP tlog-tiles)
//! <path>.tlog/tile/entries/<N>[.p/<W>]       entry bundles
//! <path>.tlog/v1-head                        {"seq":N,"hash":"<hex>"}: only if it was ever v1
//! ```
//!
//! - **Leaves.** Entry `seq` is leaf `seq - 1` of an RFC 6962 Merkle tree whose
//!   leaf data is the entry's payload, byte for byte as stored in its line (the
//!   envelope's canonical JSON): leaf hash SHA-256(0x00 ‖ payload), node hash
//!   SHA-256(0x01 ‖ left ‖ right). A leaf must fit an entry bundle's 16-bit
//!   length, so a v2 ledger refuses payloads over 65,535 bytes.
//! - **Tiles** follow c2sp.org/tlog-tiles: tiles 256 wide; `<N>` in 3-digit path
//!   elements, all but the last prefixed `x`; `.p/<W>` for a partial tile of `W`.
//!   Level 0 holds leaf hashes, level L the roots of full tiles of level L−1.
//!   Entry bundles hold the leaves, each as a big-endian u16 length and the bytes.
//!   Partial tiles stay for every checkpointed size until their tile is full,
//!   then are removed (their emptied `<N>.p/` directory stays).
//! - **Checkpoint** (c2sp.org/tlog-checkpoint), a C2SP signed note with one
//!   Ed25519 signature by the ledger's key:
//!
//!   ```text
//!   <origin>
//!   <tree size>
//!   <base64 root hash>
//!   trustlog-chain-head <64 hex>
//!   [trustlog-v1-head <seq> <64 hex>]
//!
//!   — <key name> <base64 key id and signature>
//!   ```
//!
//!   The origin is [`LedgerOptions::origin`], by default the key's name. The
//!   `trustlog-chain-head` line signs the hash chain's head at the tree size, so an
//!   open can check the tail against the signature as v1 checks it against the
//!   anchor. A ledger that was v1 when it was first opened with a key keeps its
//!   entries as the first leaves, and every later checkpoint carries a
//!   `trustlog-v1-head` line with the v1 head (the last v1 entry's seq and hash,
//!   what its `.head` said): the v1 history is bound into the signed tree. Both
//!   lines can be recomputed from the entries by anyone, monitors included.
//! - **Keys** are Go's note keys: [`generate_key`] makes a signer key
//!   `PRIVATE+KEY+<name>+<hash>+<base64>` and a verifier key `<name>+<hash>+<base64>`.
//!
//! Each confirmed batch adds its leaves, writes the tiles it finished or changed,
//! and signs one checkpoint: tiles and a signature per batch, not per entry. This
//! happens on a thread of the ledger's own, beside the next batch's write and fsync;
//! [`Ledger::signed_size`] waits for it, and dropping the ledger finishes it.
//!
//! A v2 ledger opened without a key is refused ([`LedgerError::KeyRequired`]), and
//! [`verify`] refuses it ([`VerifyError::SignedLedger`]): neither may quietly
//! treat it as v1. A v1 ledger opened without a key stays exactly as it was.
//!
//! # What is proved, to whom
//!
//! Whoever holds only the verifier key, not the files, can check:
//! - [`check_inclusion`] an [`InclusionProof`] from [`prove_inclusion`]: the
//!   checkpoint's signature, that the payload hashes to the leaf and carries the
//!   op_id, and the audit path from that leaf to the signed root;
//! - [`check_consistency`] a [`ConsistencyProof`] from [`prove_consistency`]: both
//!   signatures, one origin, and that the newer tree extends the older one. A log
//!   rewritten, truncated or forked after a checkpoint someone kept cannot prove
//!   consistency with it, and two signed checkpoints of one size with different
//!   roots are a fork on their face.
//!
//! With the files too, [`verify_v2`] checks everything: entries, chain, anchor, the
//! tree recomputed from the entries against the checkpoint's root and chain head,
//! the v1 head, and every tile and entry bundle on disk. Without the signing key,
//! an edit anywhere shows: the signed root or chain head no longer matches.
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
//! In v2 the entries stay the record: tiles and checkpoint are derived from them,
//! written only after the batch's fsync, and not fsynced themselves (the checkpoint
//! is written to `checkpoint.tmp` and renamed over; [`LedgerOptions::sync_checkpoint`]
//! adds an fsync). Since a checkpoint only ever covers fsynced entries, one lost in
//! a crash is signed again, identically (Ed25519 is deterministic), from the same
//! entries: no checkpoint inconsistent with an earlier one is ever signed. On open,
//! a checkpoint that lags the entries is brought up to date after checking the
//! entries past it chain from its signed chain head; tiles that are missing or cut
//! short, or whose right edge does not hash up to the signed root, are rebuilt from
//! the entries.
//!
//! Only one process may append: `open` takes an exclusive lock on the file, and
//! holds it until its publishing thread has finished. [`verify`], [`verify_v2`]
//! and the provers take no lock and check a ledger at rest; on a ledger that is
//! being appended to they may see a partial last line or a lagging anchor.

#![warn(missing_docs)]

// Why the anchor exists at all: a pure hash chain cannot see its tail removed,
// or a line appended; every remaining prefix of a valid chain is itself a valid
// chain, and anyone can compute a correct next entry. The anchor, rewritten only
// by the lock holder after each confirmed batch, records where the chain must
// end and with which hash, so both edits show up as a disagreement with it.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use trustlog_guest::model::{Envelope, PublishError};

mod audit;
mod checkpoint;
mod entry;
mod error;
mod keys;
mod lookup;
mod proof;
mod publisher;
mod recovery;
mod served;
mod tiles;
mod tlog;
mod tlog_recovery;
mod tree;
mod verify;

pub use audit::{SignedReport, V1Head, verify_v2};
pub use checkpoint::CheckpointError;
use entry::*;
pub use error::{LedgerError, VerifyError};
pub use keys::{KeyError, KeyPair, SigningKey, VerifierKey, generate_key};
pub use lookup::{EntryCheck, FoundEntry, Neighbour, find_entry};
pub use proof::{
    CheckError, ConsistencyProof, ConsistencyReport, InclusionProof, InclusionReport, MerkleHash,
    ProofError, check_consistency, check_inclusion, latest_checkpoint, prove_consistency,
    prove_inclusion,
};
use publisher::Publisher;
use recovery::*;
pub use served::{TileError, read_tile};
use tiles::{Layer, MAX_LEAF_LEN, tlog_dir};
use tlog::Tlog;
pub use tlog::{DEFAULT_CHECKPOINT_INTERVAL, LedgerOptions};
use tlog_recovery::Entries;
use verify::check_anchor;
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
    // Where each payload of the staged batch sits in `buf`: a v2 ledger's leaves,
    // handed to its publishing thread with `buf` itself rather than copied.
    leaves: Vec<Range<usize>>,
    // Set when a failed batch could not be cut back off the file: the file then
    // holds bytes the in-memory chain does not know, and appending after them
    // would break the chain. Reopening recovers the tail from the file itself.
    poisoned: Option<String>,
    // The signed side of a v2 ledger, publishing on its own thread; None for v1.
    tlog: Option<Publisher>,
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
            .field("tlog", &self.tlog)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if missing) the ledger at `path` for appending, recovering its tail.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, LedgerOptions::default())
    }

    /// [`Ledger::open`] with options: with a signing key, a v2 ledger (a v1 one is continued as v2).
    pub fn open_with(path: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let signing = match options.signing_key {
            Some(key) => {
                let origin = options.origin.unwrap_or_else(|| key.name().to_string());
                check_origin(&origin)?;
                Some((key, origin))
            }
            None => None,
        };
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
        let tlog = tlog_dir(path);
        if signing.is_none() && tlog.exists() {
            return Err(LedgerError::KeyRequired {
                path: path.to_owned(),
                tlog,
            });
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

        let tlog = match signing {
            Some((key, origin)) => {
                let entries = Entries {
                    path,
                    file: &file,
                    end,
                    seq,
                    hash,
                };
                let tlog = Tlog::open(&entries, key, origin, options.sync_checkpoint)?;
                let dir = tlog.dir.root().to_owned();
                let interval = options
                    .checkpoint_interval
                    .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
                Some(
                    Publisher::start(tlog, interval).map_err(|source| LedgerError::Io {
                        path: dir,
                        action: "start the publishing thread for",
                        source,
                    })?,
                )
            }
            None => None,
        };
        let ledger = Ledger {
            file,
            path: path.to_owned(),
            head_tmp: suffixed(path, ".head.tmp"),
            head,
            seq,
            hash,
            size: end,
            buf: Vec::new(),
            leaves: Vec::new(),
            poisoned: None,
            tlog,
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
        let leaves = self.tlog.is_some().then_some(&mut self.leaves);
        let mut staged = Staged::new(&mut self.buf, leaves, self.seq, self.hash, batch);
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

    /// The tree size of the last checkpoint this ledger signed, once the batches already
    /// confirmed are published (it waits for them); `None` for a v1 ledger.
    pub fn signed_size(&self) -> Option<u64> {
        self.tlog.as_ref().and_then(Publisher::signed)
    }

    /// The verifier key of a v2 ledger's checkpoints; `None` for a v1 ledger.
    pub fn verifier_key(&self) -> Option<&VerifierKey> {
        self.tlog.as_ref().map(Publisher::verifier)
    }

    /// Writes the lines staged in `buf`, which take the chain to `seq` and `hash`,
    /// and hands them to the transparency log of a v2 ledger.
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
        if let Some(tlog) = &mut self.tlog
            && let Err(reason) = tlog.send(&mut self.buf, &mut self.leaves, hash)
        {
            // The batch is durable, so it stays confirmed; but a v2 ledger that can
            // no longer sign must not go on appending as if it could.
            tracing::error!(path = %self.path.display(), %reason, "ledger poisoned");
            self.poisoned = Some(reason);
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

impl Drop for Ledger {
    fn drop(&mut self) {
        // Finish publishing while the lock is still held: the file, and its lock,
        // are dropped after this.
        self.tlog.take();
    }
}

/// A batch being rendered into the ledger's buffer, not yet written.
///
/// The chain advances here, aside from the ledger's own state, which adopts
/// it only after the fsync: a failed batch leaves the in-memory chain exactly
/// at the file's durable end.
struct Staged<'l> {
    buf: &'l mut Vec<u8>,
    // Each rendered payload's place in `buf`, kept for a v2 ledger only.
    leaves: Option<&'l mut Vec<Range<usize>>>,
    seq: u64,
    hash: [u8; 32],
    // The hex of `hash`, kept so each line's `prev` is a copy, not an encoding.
    hash_hex: [u8; 64],
}

impl<'l> Staged<'l> {
    /// Starts a batch in `buf` after entry `seq`, whose hash is `hash`; a v2
    /// ledger passes `leaves` to learn where each payload lands.
    fn new(
        buf: &'l mut Vec<u8>,
        mut leaves: Option<&'l mut Vec<Range<usize>>>,
        seq: u64,
        hash: [u8; 32],
        batch: &[Envelope],
    ) -> Staged<'l> {
        let mut hash_hex = [0u8; 64];
        encode_hex(&hash, &mut hash_hex);
        buf.clear();
        buf.reserve(batch.iter().map(|e| e.payload.len() + LINE_OVERHEAD).sum());
        if let Some(leaves) = leaves.as_deref_mut() {
            leaves.clear();
            leaves.reserve(batch.len());
        }
        Staged {
            buf,
            leaves,
            seq,
            hash,
            hash_hex,
        }
    }

    /// Validates an envelope and renders its line, or says why it is refused.
    fn push(&mut self, envelope: &Envelope) -> Result<(), String> {
        if self.leaves.is_some() && envelope.payload.len() > MAX_LEAF_LEN {
            return Err(format!(
                "payload of {} bytes is more than the {MAX_LEAF_LEN} a transparency-log leaf can hold (an entry bundle's 16-bit length)",
                envelope.payload.len(),
            ));
        }
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
        if let Some(leaves) = self.leaves.as_deref_mut() {
            // The line ends with the payload, then `}` and the newline.
            let end = self.buf.len() - 2;
            leaves.push(end - envelope.payload.len()..end);
        }
        Ok(())
    }

    fn end(self) -> (u64, [u8; 32]) {
        (self.seq, self.hash)
    }
}

/// Publishes a batch: one result per envelope, in order, for the publisher adapter.
pub fn publish_batch(ledger: &mut Ledger, batch: &[Envelope]) -> Vec<Result<(), PublishError>> {
    let leaves = ledger.tlog.is_some().then_some(&mut ledger.leaves);
    let mut staged = Staged::new(&mut ledger.buf, leaves, ledger.seq, ledger.hash, batch);
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

/// Refuses an origin that cannot be a checkpoint's first line as it is.
fn check_origin(origin: &str) -> Result<(), LedgerError> {
    let reason = if origin.is_empty() {
        "it is empty"
    } else if origin.chars().any(char::is_control) {
        "it holds a newline or another control character"
    } else if origin.trim() != origin {
        "it starts or ends with whitespace"
    } else {
        return Ok(());
    };
    Err(LedgerError::InvalidOrigin {
        origin: origin.to_string(),
        reason,
    })
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
#[cfg(test)]
mod tests_merkle;
#[cfg(test)]
mod tests_signed;

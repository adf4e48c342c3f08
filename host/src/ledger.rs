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

/// A failure to open or append to the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An I/O call failed; `action` says which.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// The file the call was on: the ledger or its head anchor.
        path: PathBuf,
        /// The call that failed, e.g. `read` or `read the head anchor`.
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// Another open `Ledger` (in this or another process) holds the lock.
    #[error("{} is locked by another process: only one publisher may append to a ledger", .path.display())]
    Locked {
        /// The ledger file another holder has locked.
        path: PathBuf,
    },
    /// An entry at the end of the file is malformed or does not chain.
    #[error("corrupt tail in {}: {} at byte {offset}: {reason}", .path.display(), seq_label(*.seq))]
    CorruptTail {
        /// The ledger file with the bad tail.
        path: PathBuf,
        /// The seq the bad entry claims, when it can be read.
        seq: Option<u64>,
        /// The byte offset at which the bad entry starts.
        offset: u64,
        /// What is wrong with the entry.
        reason: String,
    },
    /// The ledger has fewer entries than its head anchor records.
    #[error(
        "ledger {} ends at entry {ledger} but the head anchor says {anchor}: entries removed by hand, or an older copy restored",
        .path.display()
    )]
    ShorterThanAnchor {
        /// The ledger file that came up short.
        path: PathBuf,
        /// The seq of its last entry; 0 when it is empty.
        ledger: u64,
        /// The seq the head anchor records.
        anchor: u64,
    },
    /// The last entry's hash differs from the one the head anchor records.
    #[error(
        "ledger {}: entry {seq} has hash {ledger_hash} but the head anchor says {anchor_hash}: the ledger was rewritten",
        .path.display()
    )]
    AnchorMismatch {
        /// The ledger file whose last entry disagrees with the anchor.
        path: PathBuf,
        /// The seq of the last entry, which the anchor agrees on.
        seq: u64,
        /// Lower-case hex hash of the ledger's last entry.
        ledger_hash: String,
        /// Lower-case hex hash the head anchor records.
        anchor_hash: String,
    },
    /// The head anchor file exists but cannot be parsed.
    #[error("head anchor {} is corrupt: {reason}", .path.display())]
    CorruptAnchor {
        /// The head anchor file, `<ledger>.head`.
        path: PathBuf,
        /// Why it could not be parsed.
        reason: String,
    },
    /// The ledger has no head anchor, and its full chain failed verification.
    #[error("ledger {} has no head anchor and its chain does not verify: {source}", .path.display())]
    Unanchored {
        /// The ledger file that has no head anchor.
        path: PathBuf,
        /// What verifying its whole chain found wrong.
        #[source]
        source: VerifyError,
    },
    /// An envelope given to [`Ledger::append`] is invalid; nothing was written.
    #[error("refusing envelope {op_id} for {}: {reason}", .path.display())]
    InvalidEnvelope {
        /// The ledger the batch was for.
        path: PathBuf,
        /// The `op_id` of the refused envelope.
        op_id: String,
        /// Why the envelope was refused.
        reason: String,
    },
    /// An earlier failed batch could not be removed; appends stop until reopen.
    #[error("ledger {} refuses appends until reopened: {reason}", .path.display())]
    Poisoned {
        /// The ledger file that refuses appends.
        path: PathBuf,
        /// Why the failed batch could not be cut back off the file.
        reason: String,
    },
}

/// A reason [`verify`] rejects a ledger.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// An I/O call failed; `action` says which.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// The file the call was on: the ledger or its head anchor.
        path: PathBuf,
        /// The call that failed, e.g. `read` or `read the head anchor`.
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The first bad entry: its 1-based line, the seq it claims if readable, and why.
    #[error("{}: {}: {reason}", .path.display(), entry_label(*.line, *.seq))]
    BadEntry {
        /// The ledger file being verified.
        path: PathBuf,
        /// The 1-based line of the bad entry.
        line: u64,
        /// The seq the entry claims, when it can be read.
        seq: Option<u64>,
        /// What is wrong with the entry.
        reason: String,
    },
    /// The chain is intact but ends elsewhere than the head anchor says.
    #[error(
        "{}: ledger ends at entry {ledger} but the head anchor says {anchor}: entries removed or appended by hand",
        .path.display()
    )]
    AnchorSeq {
        /// The ledger file being verified.
        path: PathBuf,
        /// The seq the chain ends at: its number of entries.
        ledger: u64,
        /// The seq the head anchor records.
        anchor: u64,
    },
    /// The chain ends at the anchor's seq but with another hash.
    #[error(
        "{}: entry {seq} has hash {ledger_hash} but the head anchor says {anchor_hash}: the ledger was rewritten",
        .path.display()
    )]
    AnchorHash {
        /// The ledger file being verified.
        path: PathBuf,
        /// The seq of the last entry, which the anchor agrees on.
        seq: u64,
        /// Lower-case hex hash of the chain's last entry.
        ledger_hash: String,
        /// Lower-case hex hash the head anchor records.
        anchor_hash: String,
    },
    /// A non-empty ledger has no head anchor beside it.
    #[error("{}: ledger has {entries} entries but no head anchor {}", .path.display(), .head.display())]
    AnchorMissing {
        /// The ledger file being verified.
        path: PathBuf,
        /// Where its head anchor was expected: `<path>.head`.
        head: PathBuf,
        /// How many entries the ledger holds.
        entries: u64,
    },
    /// The head anchor file exists but cannot be parsed.
    #[error("head anchor {} is corrupt: {reason}", .path.display())]
    CorruptAnchor {
        /// The head anchor file, `<ledger>.head`.
        path: PathBuf,
        /// Why it could not be parsed.
        reason: String,
    },
}

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked: the last seq.
    pub entries: u64,
    /// Lower-case hex hash of the last entry; 64 zeros for an empty ledger.
    pub head_hash: String,
}

fn entry_label(line: u64, seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("entry {seq} (line {line})"),
        None => format!("line {line}"),
    }
}

fn seq_label(seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("entry {seq}"),
        None => "the last line".to_string(),
    }
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

/// Checks every entry, the chain and the head anchor.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })?;
    let (entries, hash) = walk_chain(path, BufReader::with_capacity(1 << 18, file))?;
    let head = head_path(path);
    let anchor = match read_anchor(&head) {
        Ok(anchor) => anchor,
        Err(AnchorError::Blank) => {
            return Err(VerifyError::CorruptAnchor {
                path: head,
                reason: "empty (a crash before it reached disk; the next open rebuilds it)"
                    .to_string(),
            });
        }
        Err(AnchorError::Corrupt(reason)) => {
            return Err(VerifyError::CorruptAnchor { path: head, reason });
        }
        Err(AnchorError::Io(source)) => {
            return Err(VerifyError::Io {
                path: head,
                action: "read the head anchor",
                source,
            });
        }
    };
    match anchor {
        None if entries == 0 => {}
        None => {
            return Err(VerifyError::AnchorMissing {
                path: path.to_owned(),
                head,
                entries,
            });
        }
        Some(anchor) if anchor.seq != entries => {
            return Err(VerifyError::AnchorSeq {
                path: path.to_owned(),
                ledger: entries,
                anchor: anchor.seq,
            });
        }
        Some(anchor) if anchor.hash != hash => {
            return Err(VerifyError::AnchorHash {
                path: path.to_owned(),
                seq: entries,
                ledger_hash: hex::encode(hash),
                anchor_hash: hex::encode(anchor.hash),
            });
        }
        Some(_) => {}
    }
    Ok(VerifyReport {
        entries,
        head_hash: hex::encode(hash),
    })
}

/// Checks an envelope on its own, returning its payload's digest and its hex.
fn validate(envelope: &Envelope) -> Result<([u8; 32], [u8; 64]), String> {
    let payload = envelope.payload.as_slice();
    if payload.contains(&b'\n') {
        return Err("payload contains a newline byte".to_string());
    }
    let raw = serde_json::from_slice::<&RawValue>(payload)
        .map_err(|e| format!("payload is not a single JSON value: {e}"))?;
    // The parser skips whitespace around the value, but the ledger embeds the
    // bytes verbatim and a reader's RawValue would not include it, so the
    // digest would no longer match what verify sees.
    if raw.get().len() != payload.len() {
        return Err("payload has whitespace around its JSON value".to_string());
    }
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let mut computed = [0u8; 64];
    encode_hex(&digest, &mut computed);
    if !computed.eq_ignore_ascii_case(envelope.sha256.as_bytes()) {
        return Err(format!(
            "sha256 {} does not match its payload (computed {})",
            envelope.sha256,
            hex_str(&computed)
        ));
    }
    Ok((digest, computed))
}

fn chain_hash(prev: &[u8; 32], seq: u64, digest: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(digest);
    hasher.finalize().into()
}

/// Renders one entry from its fields, already in hex.
fn render_line(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 64],
    digest: &[u8; 64],
    hash: &[u8; 64],
    payload: &[u8],
) {
    buf.extend_from_slice(b"{\"seq\":");
    push_decimal(buf, seq);
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\",\"sha256\":\"");
    buf.extend_from_slice(digest);
    buf.extend_from_slice(b"\",\"hash\":\"");
    buf.extend_from_slice(hash);
    buf.extend_from_slice(b"\",\"payload\":");
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"}\n");
}

fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Lower-case hex of a digest, into a fixed buffer (no allocation per entry).
fn encode_hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    hex::encode_to_slice(bytes, out).expect("64 bytes hold the hex of 32");
}

fn hex_str(hex: &[u8; 64]) -> &str {
    std::str::from_utf8(hex).expect("hex digits are ASCII")
}

/// Decodes a `hash`-style field, accepting only its canonical spelling.
fn decode_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[derive(Deserialize)]
struct Line<'a> {
    seq: u64,
    prev: &'a str,
    sha256: &'a str,
    hash: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// One entry that passed [`check_entry`].
struct Entry {
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
}

/// Why [`check_entry`] rejected a line: the seq it claims if readable, and why.
struct EntryFault {
    seq: Option<u64>,
    reason: String,
}

/// Checks one line (without its `\n`) on its own and, where known, against
/// the seq and prev it must have. `scratch` is reused to re-render it.
fn check_entry(
    raw: &[u8],
    expected_seq: Option<u64>,
    expected_prev: Option<&[u8; 32]>,
    scratch: &mut Vec<u8>,
) -> Result<Entry, EntryFault> {
    let unreadable = |reason: String| EntryFault { seq: None, reason };
    let text = std::str::from_utf8(raw).map_err(|e| unreadable(format!("not UTF-8: {e}")))?;
    let line: Line<'_> =
        serde_json::from_str(text).map_err(|e| unreadable(format!("not a ledger entry: {e}")))?;
    let fault = |reason: String| EntryFault {
        seq: Some(line.seq),
        reason,
    };

    match expected_seq {
        Some(expected) if line.seq != expected => {
            return Err(fault(format!("out of sequence: expected seq {expected}")));
        }
        None if line.seq == 0 => return Err(fault("seq 0: seqs start at 1".to_string())),
        _ => {}
    }
    let mut prev_hex = [0u8; 64];
    let prev = match expected_prev {
        Some(expected) => {
            encode_hex(expected, &mut prev_hex);
            if prev_hex != line.prev.as_bytes() {
                return Err(fault(format!(
                    "chain broken: prev {} is not the previous entry's hash {}",
                    line.prev,
                    hex_str(&prev_hex)
                )));
            }
            *expected
        }
        None => {
            let prev = decode_hash(line.prev).ok_or_else(|| {
                fault(format!(
                    "prev {:?} is not 64 lower-case hex digits",
                    line.prev
                ))
            })?;
            encode_hex(&prev, &mut prev_hex);
            prev
        }
    };

    let payload = line.payload.get().as_bytes();
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let mut digest_hex = [0u8; 64];
    encode_hex(&digest, &mut digest_hex);
    if digest_hex != line.sha256.as_bytes() {
        return Err(fault(format!(
            "payload sha256 mismatch: stored {}, computed {}",
            line.sha256,
            hex_str(&digest_hex)
        )));
    }
    let hash = chain_hash(&prev, line.seq, &digest);
    let mut hash_hex = [0u8; 64];
    encode_hex(&hash, &mut hash_hex);
    if hash_hex != line.hash.as_bytes() {
        return Err(fault(format!(
            "hash mismatch: stored {}, computed {}",
            line.hash,
            hex_str(&hash_hex)
        )));
    }

    // The digests cover only the payload; re-rendering catches edits to the
    // rest of the line that JSON parsing forgives (spacing, escapes, key order,
    // extra fields).
    scratch.clear();
    render_line(
        scratch,
        line.seq,
        &prev_hex,
        &digest_hex,
        &hash_hex,
        payload,
    );
    if scratch[..scratch.len() - 1] != *raw {
        return Err(fault("not in the canonical form of an entry".to_string()));
    }
    Ok(Entry {
        seq: line.seq,
        prev,
        hash,
    })
}

/// Reads entries from the start, checking each and the chain; returns the
/// count and the last hash.
fn walk_chain(path: &Path, mut reader: impl BufRead) -> Result<(u64, [u8; 32]), VerifyError> {
    let mut line = Vec::with_capacity(4096);
    let mut scratch = Vec::with_capacity(4096);
    let mut entries = 0u64;
    let mut hash = ZERO_HASH;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| VerifyError::Io {
                path: path.to_owned(),
                action: "read",
                source,
            })?;
        if read == 0 {
            return Ok((entries, hash));
        }
        // The walk stops at the first bad line, so line numbers and seqs agree.
        let number = entries + 1;
        let bad = |seq, reason| VerifyError::BadEntry {
            path: path.to_owned(),
            line: number,
            seq,
            reason,
        };
        if line.pop() != Some(b'\n') {
            return Err(bad(
                None,
                "incomplete last line (no newline): a torn write, which the next open truncates"
                    .to_string(),
            ));
        }
        let entry = check_entry(&line, Some(number), Some(&hash), &mut scratch)
            .map_err(|fault| bad(fault.seq, fault.reason))?;
        entries = number;
        hash = entry.hash;
    }
}

/// Works out the ledger's last seq and hash from its complete lines (those
/// before `end`) and its anchor; says whether the anchor must be rewritten.
fn reconcile(
    path: &Path,
    file: &File,
    end: u64,
    anchor: Option<Anchor>,
) -> Result<(u64, [u8; 32], bool), LedgerError> {
    let io_err = |source| LedgerError::Io {
        path: path.to_owned(),
        action: "read",
        source,
    };
    let corrupt = |seq, offset, reason| LedgerError::CorruptTail {
        path: path.to_owned(),
        seq,
        offset,
        reason,
    };
    let mut scratch = Vec::new();

    if end == 0 {
        return match anchor {
            None => Ok((0, ZERO_HASH, false)),
            Some(a) if a.seq == 0 && a.hash == ZERO_HASH => Ok((0, ZERO_HASH, false)),
            Some(a) => Err(LedgerError::ShorterThanAnchor {
                path: path.to_owned(),
                ledger: 0,
                anchor: a.seq,
            }),
        };
    }

    let (mut start, raw) = line_before(file, end).map_err(io_err)?;
    let last =
        check_entry(&raw, None, None, &mut scratch).map_err(|f| corrupt(f.seq, start, f.reason))?;

    let Some(anchor) = anchor else {
        tracing::warn!(path = %path.display(), "no head anchor; verifying the whole chain before writing one");
        let mut reader = file;
        reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let (entries, hash) = walk_chain(path, BufReader::with_capacity(1 << 18, reader.take(end)))
            .map_err(|source| LedgerError::Unanchored {
                path: path.to_owned(),
                source,
            })?;
        return Ok((entries, hash, true));
    };

    if last.seq < anchor.seq {
        return Err(LedgerError::ShorterThanAnchor {
            path: path.to_owned(),
            ledger: last.seq,
            anchor: anchor.seq,
        });
    }
    if last.seq == anchor.seq {
        if last.hash != anchor.hash {
            return Err(LedgerError::AnchorMismatch {
                path: path.to_owned(),
                seq: last.seq,
                ledger_hash: hex::encode(last.hash),
                anchor_hash: hex::encode(anchor.hash),
            });
        }
        return Ok((last.seq, last.hash, false));
    }

    // Entries past the anchor: a crash between a batch's fsync and its anchor
    // rewrite. Adopt them only if they chain, back to the anchor's hash.
    tracing::warn!(
        path = %path.display(),
        anchor = anchor.seq,
        ledger = last.seq,
        "entries beyond the head anchor; checking they chain from it"
    );
    let (seq, hash) = (last.seq, last.hash);
    let mut next = last;
    while next.seq > anchor.seq + 1 {
        let want = next.seq - 1;
        if start == 0 {
            return Err(corrupt(
                Some(next.seq),
                0,
                format!(
                    "the file starts at entry {}, not after the anchor's entry {}",
                    next.seq, anchor.seq
                ),
            ));
        }
        let (line_start, raw) = line_before(file, start).map_err(io_err)?;
        let entry = check_entry(&raw, Some(want), None, &mut scratch)
            .map_err(|f| corrupt(f.seq.or(Some(want)), line_start, f.reason))?;
        if entry.hash != next.prev {
            return Err(corrupt(
                Some(next.seq),
                start,
                format!(
                    "chain broken: prev is not entry {want}'s hash {}",
                    hex::encode(entry.hash)
                ),
            ));
        }
        start = line_start;
        next = entry;
    }
    if next.prev != anchor.hash {
        return Err(corrupt(
            Some(next.seq),
            start,
            format!(
                "does not chain from the head anchor (entry {} with hash {})",
                anchor.seq,
                hex::encode(anchor.hash)
            ),
        ));
    }
    Ok((seq, hash, true))
}

/// The offset just past the last `\n` of the first `len` bytes (0 if none).
fn end_of_last_line(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let n = chunk.len().min(end as usize);
        let from = end - n as u64;
        read_at(file, from, &mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

/// The line that ends (with its `\n`) at `end`: its start offset and bytes
/// without the `\n`. Reads backwards, so the tail costs what the tail is.
fn line_before(file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    let stop = end - 1;
    let mut start = stop;
    let mut line: Vec<u8> = Vec::new();
    let mut chunk_len = 4096usize;
    while start > 0 {
        let n = chunk_len.min(start as usize);
        let from = start - n as u64;
        let mut piece = vec![0u8; n];
        read_at(file, from, &mut piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            piece.drain(..=i);
            piece.extend_from_slice(&line);
            return Ok((from + i as u64 + 1, piece));
        }
        piece.extend_from_slice(&line);
        line = piece;
        start = from;
        chunk_len = (chunk_len * 2).min(1 << 20);
    }
    Ok((0, line))
}

fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.read_exact(buf)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn head_path(path: &Path) -> PathBuf {
    suffixed(path, ".head")
}

struct Anchor {
    seq: u64,
    hash: [u8; 32],
}

enum AnchorError {
    Io(io::Error),
    Blank,
    Corrupt(String),
}

fn read_anchor(head: &Path) -> Result<Option<Anchor>, AnchorError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AnchorLine<'a> {
        seq: u64,
        hash: &'a str,
    }
    let bytes = match fs::read(head) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AnchorError::Io(e)),
    };
    if bytes.iter().all(|&b| b == 0) {
        return Err(AnchorError::Blank);
    }
    let line: AnchorLine<'_> =
        serde_json::from_slice(&bytes).map_err(|e| AnchorError::Corrupt(e.to_string()))?;
    let hash = decode_hash(line.hash).ok_or_else(|| {
        AnchorError::Corrupt(format!(
            "hash {:?} is not 64 lower-case hex digits",
            line.hash
        ))
    })?;
    Ok(Some(Anchor {
        seq: line.seq,
        hash,
    }))
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;
    use tempfile::TempDir;

    fn envelope(op_id: &str, payload: &[u8]) -> Envelope {
        Envelope {
            op_id: op_id.to_string(),
            payload: payload.to_vec(),
            sha256: hex::encode(Sha256::digest(payload)),
        }
    }

    /// About 500 bytes of canonical-looking operation JSON.
    fn op_payload(i: u64) -> Vec<u8> {
        format!(
            concat!(
                r#"{{"client_ip":"10.0.{}.{}","do_prefix":"21.T11148","do_repository":"repo-{}","#,
                r#""doid":"21.T11148/{:016x}","op_actor":"actor-{}","op_id":"op-{:08}","#,
                r#""op_source":"handle-server","op_type":"CREATE","producer_id":"producer-{}","#,
                r#""request_body_hash":"{:064x}","response_body_hash":"{:064x}","#,
                r#""server_ip":"10.1.0.1","timestamp":{},"note":"caf\u00e9 é ✓"}}"#
            ),
            i % 256,
            i % 7,
            i % 13,
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i % 97,
            i,
            i % 5,
            i,
            i.wrapping_mul(31),
            1_700_000_000_000_000 + i
        )
        .into_bytes()
    }

    fn envelopes(from: u64, count: u64) -> Vec<Envelope> {
        (from..from + count)
            .map(|i| envelope(&format!("op-{i:08}"), &op_payload(i)))
            .collect()
    }

    fn ledger_path(dir: &TempDir) -> PathBuf {
        dir.path().join("trust.log")
    }

    /// A ledger of `count` entries written in batches of `batch`, closed again.
    fn ledger_with(dir: &TempDir, count: u64, batch: u64) -> PathBuf {
        let path = ledger_path(dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let mut next = 1;
        while next <= count {
            let n = batch.min(count - next + 1);
            ledger.append(&envelopes(next, n)).unwrap();
            next += n;
        }
        path
    }

    fn read_lines(path: &Path) -> Vec<Vec<u8>> {
        let bytes = fs::read(path).unwrap();
        bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[Vec<u8>]) {
        fs::write(path, lines.concat()).unwrap();
    }

    /// Byte offset of `needle` inside line `line` (1-based) of the file.
    fn offset_in_line(path: &Path, line: usize, needle: &str) -> usize {
        let lines = read_lines(path);
        let start: usize = lines[..line - 1].iter().map(Vec::len).sum();
        let at = lines[line - 1]
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap_or_else(|| panic!("{needle:?} not in line {line}"));
        start + at
    }

    fn bad_entry(result: Result<VerifyReport, VerifyError>) -> (u64, Option<u64>, String) {
        match result {
            Err(VerifyError::BadEntry {
                line, seq, reason, ..
            }) => (line, seq, reason),
            other => panic!("expected a bad entry, got {other:?}"),
        }
    }

    /// A line for entry `seq` after `prev`, chained correctly: what a forger can compute.
    fn forged_line(seq: u64, prev: &[u8; 32], payload: &[u8]) -> (Vec<u8>, [u8; 32]) {
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let hash = chain_hash(prev, seq, &digest);
        let hex = |bytes: &[u8; 32]| <[u8; 64]>::try_from(hex::encode(bytes).as_bytes()).unwrap();
        let mut line = Vec::new();
        render_line(
            &mut line,
            seq,
            &hex(prev),
            &hex(&digest),
            &hex(&hash),
            payload,
        );
        (line, hash)
    }

    fn stored_hash(line: &[u8]) -> [u8; 32] {
        let text = std::str::from_utf8(line).unwrap();
        let line: Line<'_> = serde_json::from_str(text.trim_end()).unwrap();
        decode_hash(line.hash).unwrap()
    }

    #[test]
    fn append_then_verify_passes_with_every_entry_counted() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 25, 10);
        let report = verify(&path).unwrap();
        assert_eq!(report.entries, 25);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 25);
        assert_eq!(report.head_hash, hex::encode(stored_hash(&lines[24])));
    }

    #[test]
    fn entries_have_the_documented_format() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        ledger
            .append(&[envelope("a", br#"{"x":1}"#), envelope("b", b"[true, null]")])
            .unwrap();

        let zeros = "0".repeat(64);
        let sha1 = hex::encode(Sha256::digest(br#"{"x":1}"#));
        let mut pre1 = Vec::new();
        pre1.extend_from_slice(&[0u8; 32]);
        pre1.extend_from_slice(&1u64.to_be_bytes());
        pre1.extend_from_slice(&Sha256::digest(br#"{"x":1}"#));
        let hash1 = hex::encode(Sha256::digest(&pre1));
        let sha2 = hex::encode(Sha256::digest(b"[true, null]"));
        let mut pre2 = hex::decode(&hash1).unwrap();
        pre2.extend_from_slice(&2u64.to_be_bytes());
        pre2.extend_from_slice(&Sha256::digest(b"[true, null]"));
        let hash2 = hex::encode(Sha256::digest(&pre2));

        let expected = format!(
            "{{\"seq\":1,\"prev\":\"{zeros}\",\"sha256\":\"{sha1}\",\"hash\":\"{hash1}\",\"payload\":{{\"x\":1}}}}\n\
             {{\"seq\":2,\"prev\":\"{hash1}\",\"sha256\":\"{sha2}\",\"hash\":\"{hash2}\",\"payload\":[true, null]}}\n"
        );
        assert_eq!(
            String::from_utf8(fs::read(&path).unwrap()).unwrap(),
            expected
        );
        assert_eq!(
            fs::read_to_string(head_path(&path)).unwrap(),
            format!("{{\"seq\":2,\"hash\":\"{hash2}\"}}\n")
        );
        assert!(!suffixed(&path, ".head.tmp").exists());
    }

    #[test]
    fn reopening_continues_the_chain() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 3);
        ledger.append(&envelopes(4, 2)).unwrap();
        assert_eq!(ledger.len(), 5);
        drop(ledger);

        assert_eq!(verify(&path).unwrap().entries, 5);
        let seqs: Vec<u64> = read_lines(&path)
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_empty_ledger_without_anchor_verifies_with_zero_entries() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let ledger = Ledger::open(&path).unwrap();
        assert!(ledger.is_empty());
        drop(ledger);
        assert!(!head_path(&path).exists());
        assert_eq!(
            verify(&path).unwrap(),
            VerifyReport {
                entries: 0,
                head_hash: "0".repeat(64)
            }
        );
        assert_eq!(Ledger::open(&path).unwrap().len(), 0);
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 2, 2);
        let mut ledger = Ledger::open(&path).unwrap();
        let before = fs::read(&path).unwrap();
        ledger.append(&[]).unwrap();
        assert!(publish_batch(&mut ledger, &[]).is_empty());
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(ledger.len(), 2);
    }

    #[test]
    fn changing_a_byte_in_a_payload_a_hash_or_a_seq_fails_verify_naming_that_entry() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let original = fs::read(&path).unwrap();
        let mutate = |at: usize, byte: u8| {
            let mut bytes = original.clone();
            bytes[at] = byte;
            fs::write(&path, bytes).unwrap();
            bad_entry(verify(&path))
        };

        let at = offset_in_line(&path, 3, "handle-server") + 1;
        let (line, seq, reason) = mutate(at, b'A');
        assert_eq!((line, seq), (3, Some(3)));
        assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");

        let at = offset_in_line(&path, 2, "\"hash\":\"") + 8;
        let byte = if original[at] == b'0' { b'1' } else { b'0' };
        let (line, seq, reason) = mutate(at, byte);
        assert_eq!((line, seq), (2, Some(2)));
        assert!(reason.starts_with("hash mismatch"), "{reason}");

        let at = offset_in_line(&path, 4, "\"seq\":4") + 6;
        let (line, seq, reason) = mutate(at, b'7');
        assert_eq!((line, seq), (4, Some(7)));
        assert!(reason.contains("expected seq 4"), "{reason}");

        let at = offset_in_line(&path, 5, "\"prev\":\"") + 20;
        let byte = if original[at] == b'0' { b'1' } else { b'0' };
        let (line, seq, reason) = mutate(at, byte);
        assert_eq!((line, seq), (5, Some(5)));
        assert!(reason.starts_with("chain broken"), "{reason}");

        let at = offset_in_line(&path, 1, "\"sha256\":\"") + 9 + 63;
        let byte = if original[at] == b'0' { b'1' } else { b'0' };
        let (line, seq, reason) = mutate(at, byte);
        assert_eq!((line, seq), (1, Some(1)));
        assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");
    }

    #[test]
    fn every_single_byte_change_anywhere_fails_verify_at_its_own_line() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        ledger
            .append(&[
                envelope("a", br#"{"k":"caf\u00e9","n":[1,2.5,-3e2]}"#),
                envelope("b", "\"é ✓ z\"".as_bytes()),
                envelope("c", b"null"),
            ])
            .unwrap();
        drop(ledger);
        let original = fs::read(&path).unwrap();

        for at in 0..original.len() {
            let own_line = original[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bytes = original.clone();
                bytes[at] ^= flip;
                fs::write(&path, &bytes).unwrap();
                match verify(&path) {
                    Err(VerifyError::BadEntry { line, .. }) => {
                        assert_eq!(
                            line, own_line,
                            "byte {at} ^ {flip:#x} blamed the wrong line"
                        )
                    }
                    other => panic!("byte {at} ^ {flip:#x} was not caught: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn removing_a_middle_line_fails_verify_at_its_place() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let mut lines = read_lines(&path);
        lines.remove(2);
        write_lines(&path, &lines);
        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (3, Some(4)));
        assert!(reason.contains("out of sequence"), "{reason}");
    }

    #[test]
    fn swapping_two_lines_fails_verify() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let mut lines = read_lines(&path);
        lines.swap(1, 2);
        write_lines(&path, &lines);
        let (line, seq, _) = bad_entry(verify(&path));
        assert_eq!((line, seq), (2, Some(3)));
    }

    #[test]
    fn removing_the_last_line_is_caught_by_the_head_anchor() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let mut lines = read_lines(&path);
        lines.pop();
        write_lines(&path, &lines);

        let error = verify(&path).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::AnchorSeq {
                    ledger: 4,
                    anchor: 5,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().ends_with(
                "ledger ends at entry 4 but the head anchor says 5: entries removed or appended by hand"
            ),
            "{error}"
        );

        let error = Ledger::open(&path).unwrap_err();
        assert!(
            matches!(
                error,
                LedgerError::ShorterThanAnchor {
                    ledger: 4,
                    anchor: 5,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn appending_a_copy_of_a_line_by_hand_fails_verify() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let mut lines = read_lines(&path);
        lines.push(lines[4].clone());
        write_lines(&path, &lines);
        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (6, Some(5)));
        assert!(reason.contains("expected seq 6"), "{reason}");
    }

    #[test]
    fn appending_a_correctly_chained_line_by_hand_is_caught_by_the_head_anchor() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let mut lines = read_lines(&path);
        let (forged, _) = forged_line(6, &stored_hash(&lines[4]), br#"{"forged":true}"#);
        lines.push(forged);
        write_lines(&path, &lines);
        let error = verify(&path).unwrap_err();
        assert!(
            matches!(
                error,
                VerifyError::AnchorSeq {
                    ledger: 6,
                    anchor: 5,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn rewriting_history_and_rechaining_it_is_caught_by_the_anchor_hash() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 4, 4);
        let lines = read_lines(&path);
        let mut forged_lines = vec![lines[0].clone()];
        let mut prev = stored_hash(&lines[0]);
        for seq in 2..=4 {
            let (line, hash) =
                forged_line(seq, &prev, format!("{{\"rewritten\":{seq}}}").as_bytes());
            forged_lines.push(line);
            prev = hash;
        }
        write_lines(&path, &forged_lines);

        let error = verify(&path).unwrap_err();
        assert!(
            matches!(error, VerifyError::AnchorHash { seq: 4, .. }),
            "{error:?}"
        );
        let error = Ledger::open(&path).unwrap_err();
        assert!(
            matches!(error, LedgerError::AnchorMismatch { seq: 4, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_or_not_json_is_a_bad_entry_naming_its_line() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let original = read_lines(&path);

        let mut lines = original.clone();
        lines[1] = b"\xff\xfe not text\n".to_vec();
        write_lines(&path, &lines);
        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (2, None));
        assert!(reason.starts_with("not UTF-8"), "{reason}");

        let mut lines = original;
        lines[2] = b"hello\n".to_vec();
        write_lines(&path, &lines);
        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (3, None));
        assert!(reason.starts_with("not a ledger entry"), "{reason}");
    }

    #[test]
    fn a_respelled_but_equivalent_line_is_not_canonical() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 2, 2);
        let mut lines = read_lines(&path);
        let spaced =
            String::from_utf8(lines[1].clone())
                .unwrap()
                .replacen(",\"prev\"", ", \"prev\"", 1);
        lines[1] = spaced.into_bytes();
        write_lines(&path, &lines);
        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (2, Some(2)));
        assert_eq!(reason, "not in the canonical form of an entry");
    }

    #[test]
    fn verify_errors_name_the_path_entry_and_line() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let mut lines = read_lines(&path);
        lines.swap(0, 1);
        write_lines(&path, &lines);
        let message = verify(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: entry 2 (line 1): out of sequence: expected seq 1",
                path.display()
            )
        );
    }

    #[test]
    fn a_torn_tail_is_reported_by_verify_truncated_on_open_and_the_next_append_verifies() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let intact = fs::read(&path).unwrap();
        let mut torn = intact.clone();
        torn.extend_from_slice(br#"{"seq":4,"prev":"ab"#);
        fs::write(&path, &torn).unwrap();

        let (line, seq, reason) = bad_entry(verify(&path));
        assert_eq!((line, seq), (4, None));
        assert!(reason.starts_with("incomplete last line"), "{reason}");

        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 3);
        assert_eq!(fs::read(&path).unwrap(), intact);
        ledger.append(&envelopes(4, 2)).unwrap();
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 5);
    }

    #[test]
    fn a_crash_mid_batch_keeps_its_whole_chained_lines_and_drops_the_torn_one() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let anchor_after_first_batch = fs::read(head_path(&path)).unwrap();
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.append(&envelopes(4, 3)).unwrap();
        drop(ledger);
        // The crash: the anchor was never rewritten, and entry 6 only half written.
        fs::write(head_path(&path), anchor_after_first_batch).unwrap();
        let bytes = fs::read(&path).unwrap();
        let cut = bytes.len() - 40;
        fs::write(&path, &bytes[..cut]).unwrap();

        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 5);
        assert_eq!(verify(&path).unwrap().entries, 5);
        ledger.append(&envelopes(6, 1)).unwrap();
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 6);
    }

    #[test]
    fn entries_beyond_a_lagging_anchor_are_checked_and_adopted_on_open() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 4, 4);
        let lagging = fs::read(head_path(&path)).unwrap();
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.append(&envelopes(5, 3)).unwrap();
        drop(ledger);
        fs::write(head_path(&path), lagging).unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::AnchorSeq {
                ledger: 7,
                anchor: 4,
                ..
            })
        ));

        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 7);
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 7);
    }

    #[test]
    fn entries_beyond_the_anchor_that_do_not_chain_from_it_refuse_to_open() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 5, 5);
        let lines = read_lines(&path);
        let wrong = hex::encode(stored_hash(&lines[1]));
        fs::write(
            head_path(&path),
            format!("{{\"seq\":3,\"hash\":\"{wrong}\"}}\n"),
        )
        .unwrap();
        let error = Ledger::open(&path).unwrap_err();
        match &error {
            LedgerError::CorruptTail {
                seq: Some(4),
                reason,
                ..
            } => {
                assert!(
                    reason.contains("does not chain from the head anchor"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_line_beyond_a_lagging_anchor_refuses_to_open_naming_it() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 2, 2);
        let lagging = fs::read(head_path(&path)).unwrap();
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.append(&envelopes(3, 3)).unwrap();
        drop(ledger);
        fs::write(head_path(&path), lagging).unwrap();
        let mut lines = read_lines(&path);
        lines[3] = b"garbage\n".to_vec();
        write_lines(&path, &lines);

        let error = Ledger::open(&path).unwrap_err();
        assert!(
            matches!(error, LedgerError::CorruptTail { seq: Some(4), .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("entry 4 at byte"), "{error}");
    }

    #[test]
    fn a_missing_anchor_is_rebuilt_after_verifying_the_whole_chain() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 6, 2);
        let anchor = fs::read(head_path(&path)).unwrap();
        fs::remove_file(head_path(&path)).unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::AnchorMissing { entries: 6, .. })
        ));

        let ledger = Ledger::open(&path).unwrap();
        assert_eq!(ledger.len(), 6);
        assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);
    }

    #[test]
    fn a_missing_anchor_with_a_broken_chain_refuses_to_open() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 6, 2);
        fs::remove_file(head_path(&path)).unwrap();
        let mut lines = read_lines(&path);
        lines.remove(1);
        write_lines(&path, &lines);
        let error = Ledger::open(&path).unwrap_err();
        match error {
            LedgerError::Unanchored {
                source:
                    VerifyError::BadEntry {
                        line: 2,
                        seq: Some(3),
                        ..
                    },
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert!(!head_path(&path).exists());
    }

    #[test]
    fn a_blank_anchor_left_by_a_crash_counts_as_missing() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let anchor = fs::read(head_path(&path)).unwrap();
        fs::write(head_path(&path), b"").unwrap();
        assert!(matches!(
            verify(&path),
            Err(VerifyError::CorruptAnchor { .. })
        ));
        assert_eq!(Ledger::open(&path).unwrap().len(), 3);
        assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);
    }

    #[test]
    fn an_unparseable_anchor_refuses_to_open() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        fs::write(head_path(&path), b"{\"seq\":3}").unwrap();
        assert!(matches!(
            Ledger::open(&path),
            Err(LedgerError::CorruptAnchor { .. })
        ));
        assert!(matches!(
            verify(&path),
            Err(VerifyError::CorruptAnchor { .. })
        ));
    }

    #[test]
    fn an_anchor_ahead_of_an_emptied_ledger_refuses_to_open() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        fs::write(&path, b"").unwrap();
        let error = Ledger::open(&path).unwrap_err();
        assert!(
            matches!(
                error,
                LedgerError::ShorterThanAnchor {
                    ledger: 0,
                    anchor: 3,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_corrupt_last_line_refuses_to_open_naming_it() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 3, 3);
        let mut lines = read_lines(&path);
        let last = String::from_utf8(lines[2].clone())
            .unwrap()
            .replace("CREATE", "DELETE");
        lines[2] = last.into_bytes();
        write_lines(&path, &lines);
        let start = (lines[0].len() + lines[1].len()) as u64;
        match Ledger::open(&path).unwrap_err() {
            LedgerError::CorruptTail {
                seq: Some(3),
                offset,
                reason,
                ..
            } => {
                assert_eq!(offset, start);
                assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_second_open_while_the_first_is_alive_is_refused_as_locked() {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 1, 1);
        let first = Ledger::open(&path).unwrap();
        let error = Ledger::open(&path).unwrap_err();
        assert!(
            matches!(&error, LedgerError::Locked { path: p } if *p == path),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("locked by another process"),
            "{error}"
        );
        drop(first);
        assert_eq!(Ledger::open(&path).unwrap().len(), 1);
    }

    #[test]
    fn an_envelope_whose_sha256_does_not_match_is_permanent_and_the_rest_is_written() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let mut bad = envelope("op-bad", br#"{"n":2}"#);
        bad.sha256 = hex::encode(Sha256::digest(b"something else"));
        let batch = [
            envelope("op-1", br#"{"n":1}"#),
            bad,
            envelope("op-3", br#"{"n":3}"#),
        ];

        let results = publish_batch(&mut ledger, &batch);
        assert_eq!(results[0], Ok(()));
        match &results[1] {
            Err(PublishError::Permanent(message)) => {
                assert!(
                    message.contains("op-bad") && message.contains("does not match"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(results[2], Ok(()));
        assert_eq!(ledger.len(), 2);
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 2);
        assert!(!fs::read_to_string(&path).unwrap().contains("\"n\":2"));
    }

    #[test]
    fn payloads_that_are_not_one_json_value_on_one_line_are_permanent() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let cases: [(&str, &[u8], &str); 6] = [
            ("newline", b"{\"a\":\n1}", "newline"),
            ("not-json", b"{nope}", "not a single JSON value"),
            ("two-values", b"1 2", "not a single JSON value"),
            ("empty", b"", "not a single JSON value"),
            ("padded", b" 1\t", "whitespace around"),
            ("not-utf8", b"\"\xff\"", "not a single JSON value"),
        ];
        let batch: Vec<Envelope> = cases
            .iter()
            .map(|(id, payload, _)| envelope(id, payload))
            .collect();
        let results = publish_batch(&mut ledger, &batch);
        for ((id, _, why), result) in cases.iter().zip(&results) {
            match result {
                Err(PublishError::Permanent(message)) => {
                    assert!(
                        message.contains(id) && message.contains(why),
                        "{id}: {message}"
                    )
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert_eq!(ledger.len(), 0);
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn append_refuses_a_batch_with_an_invalid_envelope_whole() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let batch = [envelope("op-1", b"1"), envelope("op-2", b"not json")];
        match ledger.append(&batch).unwrap_err() {
            LedgerError::InvalidEnvelope { op_id, .. } => assert_eq!(op_id, "op-2"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ledger.len(), 0);
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn an_uppercase_sha256_of_the_right_digest_is_accepted() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let mut upper = envelope("op-1", b"{}");
        upper.sha256 = upper.sha256.to_uppercase();
        ledger.append(&[upper]).unwrap();
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 1);
    }

    /// Drives a failure of the batch write against a real file: the fault
    /// writes part or all of the batch for real, then reports an error as the
    /// OS would, so what is tested is the real rollback and state handling.
    fn failed_batch_is_rolled_back_and_unavailable(fault: Fault) {
        let dir = TempDir::new().unwrap();
        let path = ledger_with(&dir, 2, 2);
        let mut ledger = Ledger::open(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let anchor = fs::read(head_path(&path)).unwrap();

        ledger.fault = Some(fault);
        let mut batch = envelopes(3, 3);
        batch[1].sha256 = "00".repeat(32);
        let results = publish_batch(&mut ledger, &batch);
        assert!(
            matches!(&results[0], Err(PublishError::Unavailable(m)) if m.contains("injected")),
            "{results:?}"
        );
        assert!(
            matches!(&results[1], Err(PublishError::Permanent(_))),
            "{results:?}"
        );
        assert!(
            matches!(&results[2], Err(PublishError::Unavailable(_))),
            "{results:?}"
        );
        assert_eq!(ledger.len(), 2);
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);

        let results = publish_batch(&mut ledger, &envelopes(3, 3));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        drop(ledger);
        assert_eq!(verify(&path).unwrap().entries, 5);
    }

    #[test]
    fn a_write_that_fails_midway_is_cut_back_and_reported_unavailable() {
        failed_batch_is_rolled_back_and_unavailable(Fault::TornWrite);
    }

    #[test]
    fn a_batch_whose_fsync_fails_is_cut_back_and_reported_unavailable() {
        failed_batch_is_rolled_back_and_unavailable(Fault::FailedSync);
    }

    /// A real OS failure: /dev/full refuses every write with ENOSPC, and being
    /// a device it cannot be truncated either, so the ledger must also stop.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_real_enospc_is_unavailable_and_a_failed_cut_back_stops_appends() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut ledger = Ledger::open(&path).unwrap();

        let results = publish_batch(&mut ledger, &envelopes(1, 2));
        for result in &results {
            match result {
                Err(PublishError::Unavailable(message)) => {
                    assert!(
                        message.contains("cannot write") && message.contains("trust.log"),
                        "{message}"
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ledger.len(), 0);
        assert!(!head_path(&path).exists());
        assert!(matches!(
            ledger.append(&envelopes(1, 1)),
            Err(LedgerError::Poisoned { .. })
        ));
        assert!(matches!(
            &publish_batch(&mut ledger, &envelopes(1, 1))[0],
            Err(PublishError::Unavailable(_))
        ));
        assert!(matches!(ledger.health(), Err(LedgerError::Poisoned { .. })));
    }

    #[test]
    fn appending_100k_entries_in_batches_of_1000_is_timed() {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let batches: Vec<Vec<Envelope>> = (0..100).map(|b| envelopes(b * 1000 + 1, 1000)).collect();
        let payload_bytes: usize = batches.iter().flatten().map(|e| e.payload.len()).sum();

        let mut ledger = Ledger::open(&path).unwrap();
        let started = Instant::now();
        for batch in &batches {
            ledger.append(batch).unwrap();
        }
        let appended = started.elapsed();
        drop(ledger);
        let started = Instant::now();
        let report = verify(&path).unwrap();
        let verified = started.elapsed();

        let file_bytes = fs::metadata(&path).unwrap().len();
        println!(
            "appended 100000 entries ({} B payload each on average, {:.1} MB file) in {:?}; verified in {:?}",
            payload_bytes / 100_000,
            file_bytes as f64 / 1e6,
            appended,
            verified
        );
        assert_eq!(report.entries, 100_000);
        let started = Instant::now();
        assert_eq!(Ledger::open(&path).unwrap().len(), 100_000);
        println!(
            "reopened the 100000-entry ledger in {:?}",
            started.elapsed()
        );
    }

    proptest! {
        #[test]
        fn hex_encoding_matches_the_hex_crate(bytes in any::<[u8; 32]>()) {
            let mut out = [0u8; 64];
            encode_hex(&bytes, &mut out);
            prop_assert_eq!(hex_str(&out), hex::encode(bytes));
        }

        #[test]
        fn seqs_render_as_plain_decimal(n in any::<u64>()) {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            prop_assert_eq!(out, n.to_string().into_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_json_strings_in_any_batch_splits_verify(
            batches in prop::collection::vec(
                (prop::collection::vec(any::<String>(), 0..12), any::<bool>()),
                1..8,
            )
        ) {
            let dir = TempDir::new().unwrap();
            let path = ledger_path(&dir);
            let mut ledger = Ledger::open(&path).unwrap();
            let mut total = 0u64;
            for (strings, reopen) in &batches {
                let batch: Vec<Envelope> = strings
                    .iter()
                    .enumerate()
                    .map(|(i, s)| envelope(&format!("op-{total}-{i}"), &serde_json::to_vec(s).unwrap()))
                    .collect();
                let results = publish_batch(&mut ledger, &batch);
                prop_assert!(results.iter().all(Result::is_ok), "{:?}", results);
                total += batch.len() as u64;
                prop_assert_eq!(ledger.len(), total);
                if *reopen {
                    drop(ledger);
                    ledger = Ledger::open(&path).unwrap();
                    prop_assert_eq!(ledger.len(), total);
                }
            }
            drop(ledger);
            let report = verify(&path).unwrap();
            prop_assert_eq!(report.entries, total);
        }
    }
}

//! Why the ledger could not be opened, appended to, or verified.

use super::*;

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

pub(super) fn entry_label(line: u64, seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("entry {seq} (line {line})"),
        None => format!("line {line}"),
    }
}

pub(super) fn seq_label(seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!("entry {seq}"),
        None => "the last line".to_string(),
    }
}

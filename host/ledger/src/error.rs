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
        source: Box<VerifyError>,
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
    /// The ledger is a signed (v2) transparency log and was opened without its signing key.
    #[error(
        "ledger {} is a signed transparency log ({} exists): open it with its signing key; \
         appending unsigned would leave its checkpoint behind",
        .path.display(), .tlog.display()
    )]
    KeyRequired {
        /// The ledger file.
        path: PathBuf,
        /// Its log directory, whose presence makes it v2.
        tlog: PathBuf,
    },
    /// The configured checkpoint origin cannot be a checkpoint's first line.
    #[error("invalid checkpoint origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The origin that was refused.
        origin: String,
        /// Why.
        reason: &'static str,
    },
    /// The checkpoint cannot be read, or is not signed by this ledger's key.
    #[error("checkpoint {} refused: {source}", .path.display())]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// The checkpoint names another origin than the one configured.
    #[error(
        "checkpoint {} is for origin {checkpoint:?}, but the ledger was opened as {configured:?}",
        .path.display()
    )]
    OriginMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The origin the checkpoint carries.
        checkpoint: String,
        /// The origin the ledger was opened with.
        configured: String,
    },
    /// The ledger has fewer entries than its signed checkpoint covers.
    #[error(
        "ledger {} ends at entry {ledger} but its signed checkpoint covers {checkpoint}: entries removed by hand, or an older copy restored",
        .path.display()
    )]
    ShorterThanCheckpoint {
        /// The ledger file that came up short.
        path: PathBuf,
        /// The seq of its last entry; 0 when it is empty.
        ledger: u64,
        /// The tree size the checkpoint signs.
        checkpoint: u64,
    },
    /// The entries disagree with the signed checkpoint (its root or its chain head).
    #[error("ledger {} does not match its signed checkpoint of {size} entries: {reason}", .path.display())]
    CheckpointMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The tree size the checkpoint signs.
        size: u64,
        /// What differs.
        reason: String,
    },
    /// An entry is longer than a transparency-log leaf can be (an entry bundle's u16 length).
    #[error(
        "ledger {}: entry {seq} has a payload of {len} bytes, more than the 65535 a transparency-log leaf can hold",
        .path.display()
    )]
    EntryTooLarge {
        /// The ledger file.
        path: PathBuf,
        /// The entry's seq.
        seq: u64,
        /// Its payload's length in bytes.
        len: usize,
    },
    /// A file of the log directory besides tiles and checkpoint is damaged or disagrees.
    #[error("{} is corrupt: {reason}", .path.display())]
    CorruptTlog {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Rebuilding the tiles from the entries found an entry that does not verify.
    #[error("ledger {}: rebuilding its transparency log found it broken: {source}", .path.display())]
    Rebuild {
        /// The ledger file.
        path: PathBuf,
        /// What verifying the entries found wrong.
        #[source]
        source: VerifyError,
    },
    /// A checkpoint could not be signed.
    #[error("cannot sign checkpoint {}: {source}", .path.display())]
    Sign {
        /// The checkpoint file.
        path: PathBuf,
        /// Why signing failed.
        #[source]
        source: CheckpointError,
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
    /// [`verify`] was given a signed (v2) ledger, which only [`verify_v2`] can vouch for.
    #[error(
        "{} is a signed transparency log ({} exists): verify it with its verifier key (verify_v2)",
        .path.display(), .tlog.display()
    )]
    SignedLedger {
        /// The ledger file.
        path: PathBuf,
        /// Its log directory.
        tlog: PathBuf,
    },
    /// [`verify_v2`] was given a ledger that has no checkpoint.
    #[error("{}: no signed checkpoint at {}: not a v2 ledger", .path.display(), .checkpoint.display())]
    Unsigned {
        /// The ledger file.
        path: PathBuf,
        /// Where its checkpoint was expected.
        checkpoint: PathBuf,
    },
    /// The verifier key given to [`verify_v2`] cannot be read.
    #[error("{source}")]
    BadVerifierKey {
        /// Why it cannot.
        #[from]
        source: KeyError,
    },
    /// The checkpoint cannot be read, or is not signed by the given key.
    #[error("checkpoint {} refused: {source}", .path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// The checkpoint signs another number of entries than the ledger has.
    #[error(
        "{}: ledger ends at entry {ledger} but the signed checkpoint covers {checkpoint}",
        .path.display()
    )]
    CheckpointSize {
        /// The ledger file.
        path: PathBuf,
        /// The ledger's number of entries.
        ledger: u64,
        /// The tree size the checkpoint signs.
        checkpoint: u64,
    },
    /// The Merkle root of the entries differs from the one the checkpoint signs.
    #[error(
        "{}: the {size} entries have Merkle root {ledger_root} but the signed checkpoint says {checkpoint_root}: the ledger was rewritten",
        .path.display()
    )]
    CheckpointRoot {
        /// The ledger file.
        path: PathBuf,
        /// The tree size.
        size: u64,
        /// Base64 root computed from the entries.
        ledger_root: String,
        /// Base64 root the checkpoint signs.
        checkpoint_root: String,
    },
    /// A chain hash the checkpoint signs (its chain head, or the v1 head) differs from the entry's.
    #[error(
        "{}: entry {seq} has chain hash {ledger_hash} but the signed checkpoint's {what} is {checkpoint_hash}",
        .path.display()
    )]
    CheckpointChain {
        /// The ledger file.
        path: PathBuf,
        /// Which line: `chain head` or `v1 head`.
        what: &'static str,
        /// The entry the line names.
        seq: u64,
        /// Lower-case hex chain hash of that entry.
        ledger_hash: String,
        /// Lower-case hex hash the checkpoint signs.
        checkpoint_hash: String,
    },
    /// A tile or entry bundle is missing, unexpected, or differs from the tree the entries make.
    #[error("{}: {reason}", .path.display())]
    Tile {
        /// The tile file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The log directory's record of the v1 head is missing, damaged, or disagrees with the checkpoint.
    #[error("{}: {reason}", .path.display())]
    V1HeadFile {
        /// The file, `<ledger>.tlog/v1-head`.
        path: PathBuf,
        /// What is wrong with it.
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

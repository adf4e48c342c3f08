//! Checking a ledger at rest: every entry, the chain, and the head anchor.

use super::*;

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked: the last seq.
    pub entries: u64,
    /// Lower-case hex hash of the last entry; 64 zeros for an empty ledger.
    pub head_hash: String,
}

/// Checks every entry, the chain and the head anchor of a v1 ledger; refuses a v2 one,
/// whose checkpoint only [`verify_v2`](crate::verify_v2) can check.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    // Saying "ok" for a signed ledger without checking its signature is the false
    // assurance v2 exists to remove.
    let tlog = tlog_dir(path);
    if tlog.exists() {
        return Err(VerifyError::SignedLedger {
            path: path.to_owned(),
            tlog,
        });
    }
    let file = File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })?;
    let (entries, hash) = walk_chain(path, BufReader::with_capacity(1 << 18, file))?;
    check_anchor(path, entries, hash)?;
    Ok(VerifyReport {
        entries,
        head_hash: hex::encode(hash),
    })
}

/// Checks the head anchor against a chain of `entries` ending in `hash`.
pub(super) fn check_anchor(path: &Path, entries: u64, hash: [u8; 32]) -> Result<(), VerifyError> {
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
    Ok(())
}

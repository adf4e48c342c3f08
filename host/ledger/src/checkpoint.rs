//! The signed checkpoint: its text (C2SP tlog-checkpoint) with trustlog's extension
//! lines, its Ed25519 signature (a C2SP signed note), and reading one back.

use signed_note::{Note, NoteError, Signature};
use tlog_tiles::Hash;

use super::keys::{SigningKey, VerifierKey};
use super::*;

/// Extension line: the hash chain's head at the checkpoint's size, `<name> <64 hex>`.
pub(crate) const CHAIN_HEAD: &str = "trustlog-chain-head";
/// Extension line: where a v1 ledger ended when it became v2, `<name> <seq> <64 hex>`.
pub(crate) const V1_HEAD: &str = "trustlog-v1-head";

/// Why a checkpoint could not be read, or is not one the given key signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a signed note holding a checkpoint trustlog can read.
    #[error("not a signed checkpoint: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// No signature on it is by the expected key.
    #[error("not signed by {key} (signed by: {signers})")]
    NotSignedBy {
        /// The expected verifier key.
        key: String,
        /// The `<name>+<key id>` of each signature it does carry.
        signers: String,
    },
    /// It carries a signature by the expected key, and that signature does not verify.
    #[error("its signature by {key} does not verify: the checkpoint was altered after signing")]
    BadSignature {
        /// The expected verifier key.
        key: String,
    },
}

/// A checkpoint as trustlog writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checkpoint {
    pub(crate) origin: String,
    pub(crate) size: u64,
    pub(crate) root: Hash,
    /// The hash chain's head at `size`; every checkpoint trustlog signs has it.
    pub(crate) chain_head: Option<[u8; 32]>,
    /// Where the ledger was when it turned from v1 to v2, if it was ever v1.
    pub(crate) v1_head: Option<Anchor>,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, then the extension lines.
    pub(crate) fn text(&self) -> Result<String, CheckpointError> {
        let mut extension = String::new();
        if let Some(head) = &self.chain_head {
            extension.push_str(&format!("{CHAIN_HEAD} {}\n", hex::encode(head)));
        }
        if let Some(head) = &self.v1_head {
            extension.push_str(&format!(
                "{V1_HEAD} {} {}\n",
                head.seq,
                hex::encode(head.hash)
            ));
        }
        let head = tlog_tiles::Checkpoint::new(&self.origin, self.size, self.root, &extension)
            .map_err(|e| CheckpointError::Malformed {
                reason: e.to_string(),
            })?;
        String::from_utf8(head.to_bytes()).map_err(|e| CheckpointError::Malformed {
            reason: e.to_string(),
        })
    }

    /// The signed note: the text and one Ed25519 signature by `key`.
    pub(crate) fn sign(&self, key: &SigningKey) -> Result<String, CheckpointError> {
        let malformed = |e: NoteError| CheckpointError::Malformed {
            reason: e.to_string(),
        };
        let mut note = Note::new(self.text()?.as_bytes(), &[]).map_err(malformed)?;
        note.add_sigs(&[key.signer()]).map_err(malformed)?;
        String::from_utf8(note.to_bytes()).map_err(|e| CheckpointError::Malformed {
            reason: e.to_string(),
        })
    }

    /// Reads a signed checkpoint and checks it carries a valid signature by `key`.
    pub(crate) fn verify(note: &str, key: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
        let parsed = parse_note(note)?;
        match parsed.verify(&key.verifiers()) {
            Ok(_) => {}
            Err(NoteError::UnverifiedNote) => {
                return Err(CheckpointError::NotSignedBy {
                    key: key.as_str().to_string(),
                    signers: signers(note),
                });
            }
            Err(NoteError::InvalidSignature { .. }) => {
                return Err(CheckpointError::BadSignature {
                    key: key.as_str().to_string(),
                });
            }
            Err(e) => {
                return Err(CheckpointError::Malformed {
                    reason: e.to_string(),
                });
            }
        }
        Checkpoint::from_text(parsed.text())
    }

    /// Reads a signed checkpoint without checking who signed it: for a prover, which
    /// hands the note on to a checker that holds the key.
    pub(crate) fn read_unverified(note: &str) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::from_text(parse_note(note)?.text())
    }

    fn from_text(text: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let malformed = |reason: String| CheckpointError::Malformed { reason };
        let head =
            tlog_tiles::Checkpoint::from_bytes(text).map_err(|e| malformed(e.to_string()))?;
        let mut checkpoint = Checkpoint {
            origin: head.origin().to_string(),
            size: head.size(),
            root: *head.hash(),
            chain_head: None,
            v1_head: None,
        };
        // Lines of other names are left alone: the signature covers them, and
        // nothing here relies on what they say.
        for line in head.extension().lines() {
            let mut words = line.split(' ');
            match words.next() {
                Some(CHAIN_HEAD) => {
                    let hash = words
                        .next()
                        .and_then(decode_hash)
                        .filter(|_| words.next().is_none())
                        .ok_or_else(|| malformed(format!("bad {CHAIN_HEAD} line {line:?}")))?;
                    if checkpoint.chain_head.replace(hash).is_some() {
                        return Err(malformed(format!("two {CHAIN_HEAD} lines")));
                    }
                }
                Some(V1_HEAD) => {
                    let seq = words.next().and_then(|seq| seq.parse().ok());
                    let hash = words.next().and_then(decode_hash);
                    let (Some(seq), Some(hash), None) = (seq, hash, words.next()) else {
                        return Err(malformed(format!("bad {V1_HEAD} line {line:?}")));
                    };
                    if checkpoint.v1_head.replace(Anchor { seq, hash }).is_some() {
                        return Err(malformed(format!("two {V1_HEAD} lines")));
                    }
                }
                _ => {}
            }
        }
        Ok(checkpoint)
    }
}

fn parse_note(note: &str) -> Result<Note, CheckpointError> {
    Note::from_bytes(note.as_bytes()).map_err(|e| CheckpointError::Malformed {
        reason: e.to_string(),
    })
}

/// The `<name>+<key id>` of every signature on a note, for saying who did sign it.
fn signers(note: &str) -> String {
    let Some((_, block)) = note.rsplit_once("\n\n") else {
        return "nobody".to_string();
    };
    let names: Vec<String> = block
        .lines()
        .filter_map(|line| Signature::from_bytes(line.as_bytes()).ok())
        .map(|sig| format!("{}+{:08x}", sig.name(), sig.id()))
        .collect();
    if names.is_empty() {
        "nobody".to_string()
    } else {
        names.join(", ")
    }
}

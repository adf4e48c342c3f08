//! Offline proofs: that an operation is in the log (inclusion) and that the log
//! extends an older checkpoint (consistency). Each is made from the ledger's files
//! and checked with nothing but the verifier key.

use std::borrow::Cow;

use base64::prelude::*;
use serde::{Deserializer, Serialize, Serializer};
use tlog_tiles::{Hash, TileHashReader};

use super::checkpoint::Checkpoint;
use super::keys::VerifierKey;
use super::tiles::{DiskTiles, TileDir};
use super::tlog::CHECKPOINT;
use super::*;

/// A SHA-256 Merkle tree hash, in JSON as standard base64 (as checkpoints spell roots).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MerkleHash(pub [u8; 32]);

impl MerkleHash {
    /// The RFC 6962 leaf hash of `data`: SHA-256(0x00 ‖ data).
    pub fn of_leaf(data: &[u8]) -> MerkleHash {
        MerkleHash(tlog_tiles::record_hash(data).0)
    }
}

impl From<Hash> for MerkleHash {
    fn from(hash: Hash) -> MerkleHash {
        MerkleHash(hash.0)
    }
}

impl From<MerkleHash> for Hash {
    fn from(hash: MerkleHash) -> Hash {
        Hash(hash.0)
    }
}

impl fmt::Display for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64_STANDARD.encode(self.0))
    }
}

impl fmt::Debug for MerkleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleHash({self})")
    }
}

impl Serialize for MerkleHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MerkleHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MerkleHash, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        let bytes = BASE64_STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        let hash = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            serde::de::Error::custom(format!("a hash is 32 bytes, not {}", bytes.len()))
        })?;
        Ok(MerkleHash(hash))
    }
}

/// Proof that an operation's envelope is a leaf of the tree a signed checkpoint commits to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The checkpoint the proof is against, as the signed note the ledger wrote.
    pub checkpoint: String,
    /// The operation's id, as its payload carries it.
    pub op_id: String,
    /// The leaf's index in the tree: the entry's seq − 1.
    pub index: u64,
    /// The envelope's payload exactly as logged (the operation's canonical JSON): the leaf.
    pub payload: String,
    /// The payload's RFC 6962 leaf hash, SHA-256(0x00 ‖ payload).
    pub leaf_hash: MerkleHash,
    /// The RFC 6962 audit path from the leaf up to the checkpoint's root.
    pub proof: Vec<MerkleHash>,
}

/// What a successful [`check_inclusion`] established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionReport {
    /// The origin of the log that signed the checkpoint.
    pub origin: String,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The leaf's index.
    pub index: u64,
    /// The operation proved to be in the log.
    pub op_id: String,
}

/// Proof that the log as of a newer checkpoint extends an older checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older checkpoint, as the signed note that was given.
    pub old_checkpoint: String,
    /// The ledger's latest checkpoint, as the signed note it wrote.
    pub new_checkpoint: String,
    /// The RFC 6962 consistency proof from the old tree size to the new.
    pub proof: Vec<MerkleHash>,
}

/// What a successful [`check_consistency`] established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    /// The log's origin.
    pub origin: String,
    /// The older checkpoint's tree size.
    pub old_size: u64,
    /// The newer checkpoint's tree size.
    pub new_size: u64,
}

/// Why a proof could not be made from a ledger's files.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// An I/O call failed; `action` says which.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// The file the call was on.
        path: PathBuf,
        /// The call that failed.
        action: &'static str,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The ledger has no checkpoint: it is not a v2 ledger.
    #[error("{}: no signed checkpoint at {}: not a v2 ledger", .path.display(), .checkpoint.display())]
    Unsigned {
        /// The ledger file.
        path: PathBuf,
        /// Where its checkpoint was expected.
        checkpoint: PathBuf,
    },
    /// The ledger's checkpoint cannot be read.
    #[error("checkpoint {} unreadable: {source}", .path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// The older checkpoint given to [`prove_consistency`] cannot be read.
    #[error("the old checkpoint is unreadable: {source}")]
    OldCheckpoint {
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// An entry of the ledger does not verify.
    #[error("{source}")]
    Ledger {
        /// What verifying the entries found.
        #[from]
        source: VerifyError,
    },
    /// No entry the checkpoint covers has this op_id.
    #[error("{}: no operation {op_id:?} among the {size} entries the latest checkpoint covers", .path.display())]
    NotFound {
        /// The ledger file.
        path: PathBuf,
        /// The op_id looked for.
        op_id: String,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// A tile is missing, or the tiles do not hash up to the checkpoint's root.
    #[error("{}: {reason}", .path.display())]
    Tiles {
        /// The tile file, or the log directory when no one file is to blame.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The entry's payload is not the leaf the signed tree holds at its index.
    #[error(
        "{}: entry {} ({op_id}) is not the leaf the signed tree holds at index {index}: the ledger was rewritten",
        .path.display(), .index + 1
    )]
    LeafMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The operation.
        op_id: String,
        /// The leaf index.
        index: u64,
    },
    /// The older checkpoint is of another log.
    #[error("the old checkpoint is of origin {old:?}, the ledger {} of {current:?}", .path.display())]
    OriginMismatch {
        /// The ledger file.
        path: PathBuf,
        /// The old checkpoint's origin.
        old: String,
        /// The ledger's checkpoint's origin.
        current: String,
    },
    /// The log does not extend the older checkpoint: rewritten, truncated or forked.
    #[error(
        "{}: the log of {new_size} entries does not extend the checkpoint of {old_size}: {reason}",
        .path.display()
    )]
    Inconsistent {
        /// The ledger file.
        path: PathBuf,
        /// The old checkpoint's tree size.
        old_size: u64,
        /// The ledger's checkpoint's tree size.
        new_size: u64,
        /// What disagrees.
        reason: String,
    },
}

/// Why a proof does not check out.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The verifier key cannot be read.
    #[error("{source}")]
    Key {
        /// Why.
        #[from]
        source: KeyError,
    },
    /// A checkpoint in the proof is malformed or not signed by the verifier key.
    #[error("{which} refused: {source}")]
    Checkpoint {
        /// Which checkpoint: `checkpoint`, `old checkpoint` or `new checkpoint`.
        which: &'static str,
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// The payload does not hash to the leaf hash the proof states.
    #[error("the payload of {op_id} hashes to leaf {computed}, not to the stated {stated}")]
    PayloadMismatch {
        /// The operation the proof is for.
        op_id: String,
        /// The leaf hash in the proof.
        stated: MerkleHash,
        /// The leaf hash of the payload.
        computed: MerkleHash,
    },
    /// The payload is not the operation the proof names.
    #[error("the proof is for {stated:?} but its payload's op_id is {payload:?}")]
    OpIdMismatch {
        /// The op_id the proof names.
        stated: String,
        /// The payload's op_id, if it has one.
        payload: Option<String>,
    },
    /// The leaf index is not inside the checkpoint's tree.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The stated index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// The audit path does not lead from the leaf to the checkpoint's root.
    #[error(
        "the proof does not lead from {op_id}'s leaf at index {index} to the root of the signed tree of {size}"
    )]
    InvalidProof {
        /// The operation.
        op_id: String,
        /// The stated index.
        index: u64,
        /// The checkpoint's tree size.
        size: u64,
    },
    /// The two checkpoints are of different logs.
    #[error("the checkpoints are of different origins, {old:?} and {new:?}")]
    OriginMismatch {
        /// The old checkpoint's origin.
        old: String,
        /// The new checkpoint's origin.
        new: String,
    },
    /// The "new" checkpoint has fewer entries than the "old" one.
    #[error("the new checkpoint covers {new_size} entries, fewer than the old one's {old_size}")]
    Rollback {
        /// The old tree size.
        old_size: u64,
        /// The new tree size.
        new_size: u64,
    },
    /// Two checkpoints of one size with different roots, both signed: the log forked.
    #[error(
        "fork: two signed checkpoints of {size} entries with different roots, {old_root} and {new_root}"
    )]
    Fork {
        /// The tree size both sign.
        size: u64,
        /// The old checkpoint's root.
        old_root: MerkleHash,
        /// The new checkpoint's root.
        new_root: MerkleHash,
    },
    /// The consistency proof does not connect the two roots: rewritten or forked.
    #[error(
        "the proof does not show the tree of {new_size} extending the tree of {old_size}: rewritten or forked"
    )]
    Inconsistent {
        /// The old tree size.
        old_size: u64,
        /// The new tree size.
        new_size: u64,
    },
}

/// The latest checkpoint of the v2 ledger at `path`, as the signed note it wrote.
pub fn latest_checkpoint(path: &Path) -> Result<String, ProofError> {
    let file = tlog_dir(path).join(CHECKPOINT);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ProofError::Unsigned {
                path: path.to_owned(),
                checkpoint: file,
            });
        }
        Err(source) => {
            return Err(ProofError::Io {
                path: file,
                action: "read the checkpoint",
                source,
            });
        }
    };
    String::from_utf8(bytes).map_err(|e| ProofError::Checkpoint {
        path: file,
        source: CheckpointError::Malformed {
            reason: e.to_string(),
        },
    })
}

fn read_latest(path: &Path) -> Result<(String, Checkpoint), ProofError> {
    let text = latest_checkpoint(path)?;
    let checkpoint =
        Checkpoint::read_unverified(&text).map_err(|source| ProofError::Checkpoint {
            path: tlog_dir(path).join(CHECKPOINT),
            source,
        })?;
    Ok((text, checkpoint))
}

/// Proves that the operation `op_id` is in the log as of its latest checkpoint (the
/// first entry carrying that op_id, when delivery repeated it).
pub fn prove_inclusion(path: &Path, op_id: &str) -> Result<InclusionProof, ProofError> {
    let (text, checkpoint) = read_latest(path)?;
    let file = File::open(path).map_err(|source| ProofError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })?;
    let mut found = None;
    // Stop at the checkpoint's last entry: past it, a writer may be mid-line.
    if checkpoint.size > 0 {
        let reader = BufReader::with_capacity(1 << 18, file);
        walk_entries(path, reader, |entry, payload| {
            if payload_op_id(payload).as_deref() == Some(op_id) {
                found = Some((entry.seq - 1, payload.to_vec()));
                return Ok(ControlFlow::Break(()));
            }
            Ok(if entry.seq < checkpoint.size {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        })?;
    }
    let Some((index, payload)) = found else {
        return Err(ProofError::NotFound {
            path: path.to_owned(),
            op_id: op_id.to_string(),
            size: checkpoint.size,
        });
    };

    let dir = TileDir::new(tlog_dir(path));
    let tiles = DiskTiles::new(&dir);
    let reader = TileHashReader::new(checkpoint.size, checkpoint.root, &tiles);
    let proof = tlog_tiles::prove_record(checkpoint.size, index, &reader)
        .map_err(|e| tiles_error(&dir, &tiles, e))?;
    let leaf = tlog_tiles::record_hash(&payload);
    // Never hand out a proof that does not check: the entries and the signed tiles
    // disagreeing means the ledger was rewritten under the checkpoint.
    tlog_tiles::check_record(&proof, checkpoint.size, checkpoint.root, index, leaf).map_err(
        |_| ProofError::LeafMismatch {
            path: path.to_owned(),
            op_id: op_id.to_string(),
            index,
        },
    )?;
    Ok(InclusionProof {
        checkpoint: text,
        op_id: op_id.to_string(),
        index,
        payload: String::from_utf8(payload).expect("check_entry accepted the line as UTF-8"),
        leaf_hash: leaf.into(),
        proof: proof.into_iter().map(MerkleHash::from).collect(),
    })
}

/// Checks an inclusion proof with nothing but the log's verifier key: the checkpoint's
/// signature, that the payload hashes to the leaf and is the named operation, and that
/// the audit path leads from that leaf to the signed root.
pub fn check_inclusion(
    proof: &InclusionProof,
    verifier_key: &str,
) -> Result<InclusionReport, CheckError> {
    let key = VerifierKey::parse(verifier_key)?;
    let checkpoint =
        Checkpoint::verify(&proof.checkpoint, &key).map_err(|source| CheckError::Checkpoint {
            which: "checkpoint",
            source,
        })?;
    let leaf = MerkleHash::of_leaf(proof.payload.as_bytes());
    if leaf != proof.leaf_hash {
        return Err(CheckError::PayloadMismatch {
            op_id: proof.op_id.clone(),
            stated: proof.leaf_hash,
            computed: leaf,
        });
    }
    let payload_op = payload_op_id(proof.payload.as_bytes());
    if payload_op.as_deref() != Some(proof.op_id.as_str()) {
        return Err(CheckError::OpIdMismatch {
            stated: proof.op_id.clone(),
            payload: payload_op.map(Cow::into_owned),
        });
    }
    if proof.index >= checkpoint.size {
        return Err(CheckError::IndexOutOfRange {
            index: proof.index,
            size: checkpoint.size,
        });
    }
    let path: Vec<Hash> = proof.proof.iter().copied().map(Hash::from).collect();
    tlog_tiles::check_record(
        &path,
        checkpoint.size,
        checkpoint.root,
        proof.index,
        leaf.into(),
    )
    .map_err(|_| CheckError::InvalidProof {
        op_id: proof.op_id.clone(),
        index: proof.index,
        size: checkpoint.size,
    })?;
    Ok(InclusionReport {
        origin: checkpoint.origin,
        size: checkpoint.size,
        index: proof.index,
        op_id: proof.op_id.clone(),
    })
}

/// Proves that the log as of its latest checkpoint extends `old_checkpoint` (a signed
/// note it wrote before); fails when it does not: rewritten, truncated or forked.
pub fn prove_consistency(
    path: &Path,
    old_checkpoint: &str,
) -> Result<ConsistencyProof, ProofError> {
    let old = Checkpoint::read_unverified(old_checkpoint)
        .map_err(|source| ProofError::OldCheckpoint { source })?;
    let (text, new) = read_latest(path)?;
    if old.origin != new.origin {
        return Err(ProofError::OriginMismatch {
            path: path.to_owned(),
            old: old.origin,
            current: new.origin,
        });
    }
    let inconsistent = |reason: String| ProofError::Inconsistent {
        path: path.to_owned(),
        old_size: old.size,
        new_size: new.size,
        reason,
    };
    let proof = if old.size > new.size {
        return Err(inconsistent(
            "the log is shorter than the old checkpoint: truncated or rolled back".to_string(),
        ));
    } else if old.size == 0 {
        if old.root != tlog_tiles::EMPTY_HASH {
            return Err(inconsistent(
                "the old checkpoint's root is not the empty tree's".to_string(),
            ));
        }
        Vec::new()
    } else if old.size == new.size {
        if old.root != new.root {
            return Err(inconsistent(format!(
                "fork: the same size with roots {} and {}",
                old.root, new.root
            )));
        }
        Vec::new()
    } else {
        let dir = TileDir::new(tlog_dir(path));
        let tiles = DiskTiles::new(&dir);
        let reader = TileHashReader::new(new.size, new.root, &tiles);
        let proof = tlog_tiles::prove_tree(new.size, old.size, &reader)
            .map_err(|e| tiles_error(&dir, &tiles, e))?;
        tlog_tiles::check_tree(&proof, new.size, new.root, old.size, old.root).map_err(|_| {
            inconsistent(format!(
                "its first {} entries have another root than the old checkpoint's {}: rewritten or forked",
                old.size, old.root
            ))
        })?;
        proof
    };
    Ok(ConsistencyProof {
        old_checkpoint: old_checkpoint.to_string(),
        new_checkpoint: text,
        proof: proof.into_iter().map(MerkleHash::from).collect(),
    })
}

/// Checks a consistency proof with nothing but the log's verifier key: both
/// signatures, one origin, and that the new tree extends the old one.
pub fn check_consistency(
    proof: &ConsistencyProof,
    verifier_key: &str,
) -> Result<ConsistencyReport, CheckError> {
    let key = VerifierKey::parse(verifier_key)?;
    let old = Checkpoint::verify(&proof.old_checkpoint, &key).map_err(|source| {
        CheckError::Checkpoint {
            which: "old checkpoint",
            source,
        }
    })?;
    let new = Checkpoint::verify(&proof.new_checkpoint, &key).map_err(|source| {
        CheckError::Checkpoint {
            which: "new checkpoint",
            source,
        }
    })?;
    if old.origin != new.origin {
        return Err(CheckError::OriginMismatch {
            old: old.origin,
            new: new.origin,
        });
    }
    let inconsistent = CheckError::Inconsistent {
        old_size: old.size,
        new_size: new.size,
    };
    if old.size > new.size {
        return Err(CheckError::Rollback {
            old_size: old.size,
            new_size: new.size,
        });
    }
    if old.size == new.size {
        if old.root != new.root {
            return Err(CheckError::Fork {
                size: old.size,
                old_root: old.root.into(),
                new_root: new.root.into(),
            });
        }
        if !proof.proof.is_empty() {
            return Err(inconsistent);
        }
    } else if old.size == 0 {
        if old.root != tlog_tiles::EMPTY_HASH || !proof.proof.is_empty() {
            return Err(inconsistent);
        }
    } else {
        let path: Vec<Hash> = proof.proof.iter().copied().map(Hash::from).collect();
        tlog_tiles::check_tree(&path, new.size, new.root, old.size, old.root)
            .map_err(|_| inconsistent)?;
    }
    Ok(ConsistencyReport {
        origin: new.origin,
        old_size: old.size,
        new_size: new.size,
    })
}

/// The top-level `op_id` of a payload, if it is a JSON object with a string one.
fn payload_op_id(payload: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Operation<'a> {
        #[serde(borrow, default)]
        op_id: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Operation<'_>>(payload).ok()?.op_id
}

fn tiles_error(dir: &TileDir, tiles: &DiskTiles<'_>, error: tlog_tiles::Error) -> ProofError {
    match tiles.take_failure() {
        Some((path, source)) => ProofError::Tiles {
            path,
            reason: format!("unreadable tile: {source}"),
        },
        None => ProofError::Tiles {
            path: dir.root().to_owned(),
            reason: format!("the tiles do not hash up to the signed checkpoint's root: {error}"),
        },
    }
}

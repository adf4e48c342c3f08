//! Checking a signed (v2) ledger at rest with its verifier key: every entry and the
//! chain, the tree the entries make, every tile against that tree, and the checkpoint.

use std::collections::BTreeSet;

use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::keys::VerifierKey;
use super::tiles::{HASH_SIZE, TILE_WIDTH, TileDir, TileId};
use super::tlog::{CHECKPOINT, V1_HEAD};
use super::tree::Tree;
use super::*;

/// What a successful [`verify_v2`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// Entries checked: the last seq, and the checkpoint's tree size.
    pub entries: u64,
    /// Lower-case hex hash of the last entry (the chain head); 64 zeros for an empty ledger.
    pub head_hash: String,
    /// The checkpoint's origin line.
    pub origin: String,
    /// The Merkle root the checkpoint signs, in base64 as the checkpoint spells it.
    pub root_hash: String,
    /// Tile and entry-bundle files checked, partial versions included.
    pub tiles: u64,
    /// Where the ledger was when it became v2, if it was ever v1.
    pub v1_head: Option<V1Head>,
}

/// The v1 head a v2 ledger's checkpoints sign: where its v1 history ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Head {
    /// The last v1 entry's seq.
    pub seq: u64,
    /// Its lower-case hex chain hash: the v1 ledger's head anchor at the time.
    pub hash: String,
}

/// Checks a v2 ledger with nothing but its verifier key: the checkpoint's signature,
/// every entry and the chain, the head anchor, the Merkle tree recomputed from the
/// entries against the checkpoint's root, its chain-head and v1-head lines, and
/// every tile and entry bundle on disk against that tree.
pub fn verify_v2(path: &Path, verifier_key: &str) -> Result<SignedReport, VerifyError> {
    let key = VerifierKey::parse(verifier_key)?;
    let dir = TileDir::new(tlog_dir(path));
    let checkpoint = read_checkpoint(path, &dir, &key)?;
    let mut on_disk = list_tiles(&dir)?;

    let file = File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })?;
    let mut tree = Tree::default();
    let mut tiles = Tiles {
        dir: &dir,
        on_disk: &mut on_disk,
        checked: 0,
        first_fault: None,
    };
    let v1_seq = checkpoint.v1_head.map(|head| head.seq);
    let mut v1_hash = None;
    let (entries, hash) = walk_entries(
        path,
        BufReader::with_capacity(1 << 18, file),
        |entry, payload| {
            if payload.len() > MAX_LEAF_LEN {
                return Err(VerifyError::BadEntry {
                    path: path.to_owned(),
                    line: entry.seq,
                    seq: Some(entry.seq),
                    reason: format!(
                        "payload of {} bytes is more than the 65535 a transparency-log leaf can hold",
                        payload.len()
                    ),
                });
            }
            let Ok(()) = tree.push(payload, &mut |id, data| {
                tiles.check(id, &data);
                Ok::<(), std::convert::Infallible>(())
            });
            if Some(entry.seq) == v1_seq {
                v1_hash = Some(entry.hash);
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    check_anchor(path, entries, hash)?;

    // What the signature vouches for comes first: a rewritten entry shows as a root
    // that is not the signed one, whatever the tiles say.
    if entries != checkpoint.size {
        return Err(VerifyError::CheckpointSize {
            path: path.to_owned(),
            ledger: entries,
            checkpoint: checkpoint.size,
        });
    }
    let root = tree.root();
    if root != checkpoint.root {
        return Err(VerifyError::CheckpointRoot {
            path: path.to_owned(),
            size: entries,
            ledger_root: root.to_string(),
            checkpoint_root: checkpoint.root.to_string(),
        });
    }
    let chain_mismatch =
        |what, seq, ledger: [u8; 32], signed: [u8; 32]| VerifyError::CheckpointChain {
            path: path.to_owned(),
            what,
            seq,
            ledger_hash: hex::encode(ledger),
            checkpoint_hash: hex::encode(signed),
        };
    match checkpoint.chain_head {
        Some(signed) if signed == hash => {}
        Some(signed) => return Err(chain_mismatch("chain head", entries, hash, signed)),
        None => {
            return Err(VerifyError::Checkpoint {
                path: dir.root().join(CHECKPOINT),
                source: CheckpointError::Malformed {
                    reason: format!("no {} line", super::checkpoint::CHAIN_HEAD),
                },
            });
        }
    }
    if let Some(signed) = checkpoint.v1_head {
        match v1_hash {
            Some(ledger) if ledger == signed.hash => {}
            Some(ledger) => return Err(chain_mismatch("v1 head", signed.seq, ledger, signed.hash)),
            None => {
                return Err(VerifyError::CheckpointSize {
                    path: path.to_owned(),
                    ledger: entries,
                    checkpoint: signed.seq,
                });
            }
        }
        check_v1_head_file(&dir, signed)?;
    }

    for (id, data) in tree.unfinished_since(0) {
        tiles.check(id, data);
    }
    let checked = tiles.checked;
    if let Some(fault) = tiles.first_fault {
        return Err(fault);
    }
    if let Some(stray) = on_disk.iter().next() {
        return Err(VerifyError::Tile {
            path: dir.file(stray),
            reason: format!("not a tile of a tree of {entries} entries"),
        });
    }
    Ok(SignedReport {
        entries,
        head_hash: hex::encode(hash),
        origin: checkpoint.origin,
        root_hash: root.to_string(),
        tiles: checked,
        v1_head: checkpoint.v1_head.map(|head| V1Head {
            seq: head.seq,
            hash: hex::encode(head.hash),
        }),
    })
}

fn read_checkpoint(
    path: &Path,
    dir: &TileDir,
    key: &VerifierKey,
) -> Result<Checkpoint, VerifyError> {
    let file = dir.root().join(CHECKPOINT);
    let text = match fs::read(&file) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| VerifyError::Checkpoint {
            path: file.clone(),
            source: CheckpointError::Malformed {
                reason: e.to_string(),
            },
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::Unsigned {
                path: path.to_owned(),
                checkpoint: file,
            });
        }
        Err(source) => {
            return Err(VerifyError::Io {
                path: file,
                action: "read the checkpoint",
                source,
            });
        }
    };
    Checkpoint::verify(&text, key).map_err(|source| VerifyError::Checkpoint { path: file, source })
}

fn check_v1_head_file(dir: &TileDir, signed: Anchor) -> Result<(), VerifyError> {
    let file = dir.root().join(V1_HEAD);
    let bad = |reason: String| VerifyError::V1HeadFile {
        path: file.clone(),
        reason,
    };
    match read_anchor(&file) {
        Ok(Some(recorded)) if recorded == signed => Ok(()),
        Ok(Some(recorded)) => Err(bad(format!(
            "records the v1 head as entry {} ({}), the signed checkpoint as entry {} ({})",
            recorded.seq,
            hex::encode(recorded.hash),
            signed.seq,
            hex::encode(signed.hash)
        ))),
        Ok(None) => Err(bad(
            "missing, while the checkpoint signs a v1 head".to_string()
        )),
        Err(AnchorError::Io(source)) => Err(VerifyError::Io {
            path: file,
            action: "read the v1 head",
            source,
        }),
        Err(AnchorError::Blank) => Err(bad("empty".to_string())),
        Err(AnchorError::Corrupt(reason)) => Err(bad(reason)),
    }
}

/// Every tile file under the log directory, by coordinates; anything else there is an error.
fn list_tiles(dir: &TileDir) -> Result<BTreeSet<TileId>, VerifyError> {
    let mut found = BTreeSet::new();
    let top = dir.root().join("tile");
    // A log of no entries has no tiles yet.
    if !top.exists() {
        return Ok(found);
    }
    let mut stack = vec![top];
    while let Some(folder) = stack.pop() {
        let listing = fs::read_dir(&folder).map_err(|source| VerifyError::Io {
            path: folder.clone(),
            action: "list",
            source,
        })?;
        for item in listing {
            let item = item.map_err(|source| VerifyError::Io {
                path: folder.clone(),
                action: "list",
                source,
            })?;
            let file = item.path();
            let kind = item.file_type().map_err(|source| VerifyError::Io {
                path: file.clone(),
                action: "stat",
                source,
            })?;
            if kind.is_dir() {
                stack.push(file);
                continue;
            }
            let id = file
                .strip_prefix(dir.root())
                .ok()
                .and_then(|relative| relative.to_str())
                .and_then(|relative| {
                    TileId::parse(&relative.replace(std::path::MAIN_SEPARATOR, "/"))
                })
                .ok_or_else(|| VerifyError::Tile {
                    path: file.clone(),
                    reason: "not a tile path".to_string(),
                })?;
            found.insert(id);
        }
    }
    Ok(found)
}

/// Compares the tiles the recomputed tree makes with the files, remembering the first fault.
struct Tiles<'a> {
    dir: &'a TileDir,
    // Files not yet matched to a tile of the tree.
    on_disk: &'a mut BTreeSet<TileId>,
    checked: u64,
    first_fault: Option<VerifyError>,
}

impl Tiles<'_> {
    /// Checks tile `id` against `data`, and every narrower partial version of it on disk
    /// against the same prefix.
    fn check(&mut self, id: TileId, data: &[u8]) {
        if self.first_fault.is_some() {
            return;
        }
        let versions: Vec<TileId> = self
            .on_disk
            .range(TileId { width: 1, ..id }..=id)
            .copied()
            .collect();
        if !versions.contains(&id) {
            self.first_fault = Some(VerifyError::Tile {
                path: self.dir.file(&id),
                reason: "missing".to_string(),
            });
            return;
        }
        for version in versions {
            self.on_disk.remove(&version);
            self.checked += 1;
            let want = match id.layer {
                Layer::Hashes(_) => Some(&data[..usize::from(version.width) * HASH_SIZE]),
                Layer::Entries => bundle_prefix(data, version.width).map(|end| &data[..end]),
            };
            let file = self.dir.file(&version);
            let fault = match fs::read(&file) {
                Ok(found) if Some(found.as_slice()) == want => continue,
                Ok(found) => format!(
                    "{} bytes that differ from the {} the entries make{}",
                    found.len(),
                    want.map_or(0, <[u8]>::len),
                    if version.width < TILE_WIDTH && version != id {
                        " (an older partial version)"
                    } else {
                        ""
                    }
                ),
                Err(e) => format!("unreadable: {e}"),
            };
            self.first_fault = Some(VerifyError::Tile {
                path: file,
                reason: fault,
            });
            return;
        }
    }
}

/// Bytes of an entry bundle's first `count` entries.
fn bundle_prefix(bundle: &[u8], count: u16) -> Option<usize> {
    let mut at = 0usize;
    for _ in 0..count {
        let len = u16::from_be_bytes(bundle.get(at..at + 2)?.try_into().ok()?);
        at += 2 + usize::from(len);
    }
    (at <= bundle.len()).then_some(at)
}

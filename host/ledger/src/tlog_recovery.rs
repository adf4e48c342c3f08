//! Opening a v2 ledger: reading its checkpoint, checking it against the entries, and
//! bringing tiles and checkpoint up to date after a crash, or making them for a v1
//! ledger that becomes v2.

use std::ops::ControlFlow;

use super::checkpoint::Checkpoint;
use super::keys::SigningKey;
use super::tiles::{
    HASH_SIZE, MAX_LEAF_LEN, TILE_WIDTH, TileDir, TileId, push_bundle_entry, tlog_dir,
};
use super::tlog::{CHECKPOINT, Tlog, V1_HEAD, write_replacing};
use super::tree::{Tree, index_at, levels, width_at};
use super::*;

/// Bytes of tail read backwards to resume from the checkpoint; past this the log
/// is rebuilt from the start instead, reading forwards in bounded memory.
const TAIL_BUDGET: usize = 64 << 20;

/// The ledger's entries as v1 recovery left them: complete lines up to `end`,
/// the last one `seq` with chain hash `hash`.
pub(crate) struct Entries<'a> {
    pub(crate) path: &'a Path,
    pub(crate) file: &'a File,
    pub(crate) end: u64,
    pub(crate) seq: u64,
    pub(crate) hash: [u8; 32],
}

/// One entry read back from the tail of the ledger.
struct TailEntry {
    seq: u64,
    hash: [u8; 32],
    prev: [u8; 32],
    payload: Vec<u8>,
}

impl Tlog {
    /// Opens the signed side of the ledger whose entries are `entries`.
    pub(crate) fn open(
        entries: &Entries<'_>,
        key: SigningKey,
        origin: String,
        sync_checkpoint: bool,
    ) -> Result<Tlog, LedgerError> {
        let dir = tlog_dir(entries.path);
        let created = !dir.exists();
        let opened = Tlog::open_dir(
            entries,
            TileDir::new(dir.clone()),
            key,
            origin,
            sync_checkpoint,
        );
        if opened.is_err() && created {
            // A v1 ledger that could not become v2 stays v1, openable without a key.
            if let Err(error) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "could not remove the log directory of a failed conversion");
            }
        }
        opened
    }

    fn open_dir(
        entries: &Entries<'_>,
        dir: TileDir,
        key: SigningKey,
        origin: String,
        sync_checkpoint: bool,
    ) -> Result<Tlog, LedgerError> {
        let fresh = is_fresh(dir.root());
        fs::create_dir_all(dir.root()).map_err(|source| LedgerError::Io {
            path: dir.root().to_owned(),
            action: "create the log directory",
            source,
        })?;
        let recorded = read_v1_head(&dir)?;
        let checkpoint = read_checkpoint(&dir, &key, &origin)?;

        let v1_head = if fresh {
            let head = (entries.seq > 0).then_some(Anchor {
                seq: entries.seq,
                hash: entries.hash,
            });
            if let Some(head) = head {
                tracing::info!(
                    path = %entries.path.display(),
                    entries = head.seq,
                    "continuing a v1 ledger as a signed transparency log; its entries become the first leaves"
                );
                write_v1_head(&dir, head)?;
            }
            head
        } else {
            let corrupt = |reason: String| LedgerError::CorruptTlog {
                path: dir.root().join(V1_HEAD),
                reason,
            };
            // Without a checkpoint (lost in a crash) the file is all there is; with
            // one, the signed line decides, and the file must agree with it.
            match (recorded, checkpoint.as_ref().map(|c| c.v1_head)) {
                (file, None) => file,
                (None, Some(None)) => None,
                (None, Some(Some(signed))) => {
                    write_v1_head(&dir, signed)?;
                    Some(signed)
                }
                (Some(file), Some(Some(signed))) if file == signed => Some(file),
                (Some(file), Some(Some(signed))) => {
                    return Err(corrupt(format!(
                        "it records the v1 head as entry {} ({}), the signed checkpoint as entry {} ({})",
                        file.seq,
                        hex::encode(file.hash),
                        signed.seq,
                        hex::encode(signed.hash)
                    )));
                }
                (Some(file), Some(None)) => {
                    return Err(corrupt(format!(
                        "it records a v1 head (entry {}) that the signed checkpoint does not",
                        file.seq
                    )));
                }
            }
        };

        let mut tlog = Tlog {
            dir,
            key,
            origin,
            sync_checkpoint,
            tree: Tree::default(),
            v1_head,
            pending: Vec::new(),
            signed: None,
        };
        let tail = match &checkpoint {
            Some(checkpoint) => tlog.resume(entries, checkpoint)?,
            None => None,
        };
        let current = match tail {
            Some(tail) => {
                for entry in &tail {
                    check_leaf_len(entries.path, entry.seq, &entry.payload)?;
                    let dir = &tlog.dir;
                    tlog.tree
                        .push(&entry.payload, &mut |id, data| write_tile(dir, &id, &data))?;
                }
                let since = checkpoint.as_ref().map_or(0, |c| c.size);
                for (id, data) in tlog.tree.unfinished_since(since) {
                    write_tile(&tlog.dir, &id, data)?;
                }
                tail.is_empty()
            }
            None => {
                if checkpoint.is_some() {
                    tracing::warn!(
                        dir = %tlog.dir.root().display(),
                        "cannot pick the tree up from the tiles at the checkpoint (lost or damaged in a crash, or too far behind the entries); rebuilding them from the entries"
                    );
                }
                tlog.rebuild(entries, checkpoint.as_ref())?;
                false
            }
        };
        if current {
            tlog.signed = Some(tlog.tree.size());
        } else {
            tlog.write_checkpoint(entries.hash)?;
        }
        tracing::debug!(dir = %tlog.dir.root().display(), size = tlog.tree.size(), "transparency log open");
        Ok(tlog)
    }

    /// Picks the tree up from the tiles of the checkpoint's size, after checking
    /// them against it and the entries. Returns the entries past the checkpoint,
    /// or `None` when the tiles cannot be trusted and must be rebuilt.
    fn resume(
        &mut self,
        entries: &Entries<'_>,
        checkpoint: &Checkpoint,
    ) -> Result<Option<Vec<TailEntry>>, LedgerError> {
        let path = entries.path;
        let size = checkpoint.size;
        if size > entries.seq {
            return Err(LedgerError::ShorterThanCheckpoint {
                path: path.to_owned(),
                ledger: entries.seq,
                checkpoint: size,
            });
        }
        let Some(chain_head) = checkpoint.chain_head else {
            return Err(LedgerError::BadCheckpoint {
                path: self.dir.root().join(CHECKPOINT),
                source: CheckpointError::Malformed {
                    reason: format!("no {} line", super::checkpoint::CHAIN_HEAD),
                },
            });
        };
        // The unfinished level-0 tile's leaves, and entry `size` for its chain hash.
        let unfinished_from = size - size % u64::from(TILE_WIDTH);
        let first = (unfinished_from + 1).min(size.max(1));
        let Some(mut tail) = read_tail(entries, first)? else {
            return Ok(None);
        };
        let head = match size {
            0 => ZERO_HASH,
            _ => tail[(size - first) as usize].hash,
        };
        if let Some(entry) = tail.first().filter(|e| e.seq == 1 && e.prev != ZERO_HASH) {
            return Err(LedgerError::CorruptTail {
                path: path.to_owned(),
                seq: Some(entry.seq),
                offset: 0,
                reason: "entry 1's prev is not 64 zeros".to_string(),
            });
        }
        if head != chain_head {
            return Err(LedgerError::CheckpointMismatch {
                path: path.to_owned(),
                size,
                reason: format!(
                    "entry {size} has chain hash {} but the signed checkpoint's chain head is {}: the ledger was rewritten",
                    hex::encode(head),
                    hex::encode(chain_head)
                ),
            });
        }

        let mut hashes = Vec::new();
        for level in 0..levels(size) {
            let width = width_at(size, level);
            if width == 0 {
                hashes.push(Vec::new());
                continue;
            }
            let id = TileId::hashes(level as u8, index_at(size, level), width);
            match self.dir.read_hashes(&id) {
                Ok(data) => hashes.push(data),
                Err((file, error)) => {
                    tracing::warn!(tile = %file.display(), %error, "unreadable tile");
                    return Ok(None);
                }
            }
        }
        let unfinished = &tail[..tail.partition_point(|e| e.seq <= size)];
        let unfinished = &unfinished[unfinished.partition_point(|e| e.seq <= unfinished_from)..];
        let mut bundle = Vec::new();
        for entry in unfinished {
            check_leaf_len(path, entry.seq, &entry.payload)?;
            push_bundle_entry(&mut bundle, &entry.payload);
        }
        let tree = match Tree::resume(size, hashes, bundle) {
            Ok(tree) => tree,
            Err(reason) => {
                tracing::warn!(dir = %self.dir.root().display(), %reason, "tiles do not fit the checkpoint");
                return Ok(None);
            }
        };
        let leaves_match = match tree.unfinished_hashes().next() {
            Some((id, data)) if id.layer == Layer::Hashes(0) => unfinished
                .iter()
                .zip(data.chunks(HASH_SIZE))
                .all(|(entry, hash)| tlog_tiles::record_hash(&entry.payload).0 == hash),
            _ => unfinished.is_empty(),
        };
        if !leaves_match || tree.root() != checkpoint.root || !self.full_tiles_present(size) {
            return Ok(None);
        }
        self.tree = tree;
        // A crash may have lost the checkpoint's partial tiles while keeping the
        // checkpoint; writing them again costs a few small files.
        for (id, data) in self.tree.unfinished_since(0) {
            write_tile(&self.dir, &id, data)?;
        }
        Ok(Some(
            tail.split_off(tail.partition_point(|e| e.seq <= size)),
        ))
    }

    /// Whether every full tile and entry bundle a tree of `size` leaves has is on
    /// disk, at its size. Only their presence: their bytes are `verify_v2`'s to check.
    fn full_tiles_present(&self, size: u64) -> bool {
        let present = |id: TileId, fits: &dyn Fn(u64) -> bool| match fs::metadata(
            self.dir.file(&id),
        ) {
            Ok(meta) if fits(meta.len()) => true,
            other => {
                tracing::warn!(tile = %self.dir.file(&id).display(), found = ?other.map(|m| m.len()), "tile missing or cut short");
                false
            }
        };
        let full_hashes = (TILE_WIDTH as usize * HASH_SIZE) as u64;
        (0..levels(size)).all(|level| {
            (0..index_at(size, level)).all(|index| {
                present(TileId::hashes(level as u8, index, TILE_WIDTH), &|len| {
                    len == full_hashes
                })
            })
        }) && (0..index_at(size, 0)).all(|index| {
            // Each entry is 2 length bytes and at least one byte of JSON.
            present(TileId::entries(index, TILE_WIDTH), &|len| {
                len >= 3 * u64::from(TILE_WIDTH)
            })
        })
    }

    /// Builds the tree and every tile from the entries, checking the tree against
    /// the checkpoint when it reaches the checkpoint's size.
    fn rebuild(
        &mut self,
        entries: &Entries<'_>,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), LedgerError> {
        let path = entries.path;
        let mut tree = Tree::default();
        let mut failure = None;
        let check = |tree: &Tree, head: &[u8; 32]| -> Result<(), LedgerError> {
            match checkpoint {
                Some(c) if c.size == tree.size() => {
                    if c.root != tree.root() || c.chain_head != Some(*head) {
                        return Err(LedgerError::CheckpointMismatch {
                            path: path.to_owned(),
                            size: c.size,
                            reason: format!(
                                "the entries give root {} and chain head {}, the signed checkpoint root {} and chain head {}: the ledger was rewritten",
                                tree.root(),
                                hex::encode(head),
                                c.root,
                                c.chain_head.map_or("(none)".to_string(), hex::encode)
                            ),
                        });
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        };
        check(&tree, &ZERO_HASH)?;
        let mut reader = entries.file;
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                action: "read",
                source,
            })?;
        let reader = BufReader::with_capacity(1 << 18, reader.take(entries.end));
        let dir = &self.dir;
        let walked = walk_entries(path, reader, |entry, payload| {
            let step = check_leaf_len(path, entry.seq, payload)
                .and_then(|()| tree.push(payload, &mut |id, data| write_tile(dir, &id, &data)))
                .and_then(|()| check(&tree, &entry.hash));
            Ok(match step {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    failure = Some(error);
                    ControlFlow::Break(())
                }
            })
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let (seq, _) = walked.map_err(|source| LedgerError::Rebuild {
            path: path.to_owned(),
            source,
        })?;
        debug_assert_eq!(seq, entries.seq, "v1 recovery counted the same entries");
        for (id, data) in tree.unfinished_since(0) {
            write_tile(&self.dir, &id, data)?;
        }
        self.tree = tree;
        Ok(())
    }
}

/// Whether the log directory has nothing of a log yet: missing, or left empty by
/// a crash while a ledger was first being made v2.
fn is_fresh(dir: &Path) -> bool {
    [CHECKPOINT, V1_HEAD, "tile"]
        .iter()
        .all(|name| !dir.join(name).exists())
}

fn write_tile(dir: &TileDir, id: &TileId, data: &[u8]) -> Result<(), LedgerError> {
    dir.write(id, data).map_err(|source| LedgerError::Io {
        path: dir.file(id),
        action: "write the tile",
        source,
    })?;
    if id.is_full() {
        dir.remove_partials(id).map_err(|source| LedgerError::Io {
            path: dir.root().join(id.partials_path()),
            action: "remove the partial tiles",
            source,
        })?;
    }
    Ok(())
}

fn check_leaf_len(path: &Path, seq: u64, payload: &[u8]) -> Result<(), LedgerError> {
    if payload.len() > MAX_LEAF_LEN {
        return Err(LedgerError::EntryTooLarge {
            path: path.to_owned(),
            seq,
            len: payload.len(),
        });
    }
    Ok(())
}

/// The entries from `first` to the last, read backwards from the end and checked
/// to chain; `None` if they exceed [`TAIL_BUDGET`].
fn read_tail(entries: &Entries<'_>, first: u64) -> Result<Option<Vec<TailEntry>>, LedgerError> {
    let path = entries.path;
    let mut tail = Vec::new();
    let mut scratch = Vec::new();
    let mut start = entries.end;
    let mut bytes = 0usize;
    let mut next_prev: Option<[u8; 32]> = None;
    let mut want = entries.seq;
    while want >= first {
        if start == 0 {
            return Err(LedgerError::CorruptTail {
                path: path.to_owned(),
                seq: Some(want + 1),
                offset: 0,
                reason: format!("the file starts at entry {}, not at entry 1", want + 1),
            });
        }
        let (line_start, raw) =
            line_before(entries.file, start).map_err(|source| LedgerError::Io {
                path: path.to_owned(),
                action: "read",
                source,
            })?;
        bytes += raw.len();
        if bytes > TAIL_BUDGET {
            return Ok(None);
        }
        let entry = check_entry(&raw, Some(want), None, &mut scratch).map_err(|f| {
            LedgerError::CorruptTail {
                path: path.to_owned(),
                seq: f.seq.or(Some(want)),
                offset: line_start,
                reason: f.reason,
            }
        })?;
        if next_prev.is_some_and(|prev| prev != entry.hash) {
            return Err(LedgerError::CorruptTail {
                path: path.to_owned(),
                seq: Some(want + 1),
                offset: start,
                reason: format!(
                    "chain broken: prev is not entry {want}'s hash {}",
                    hex::encode(entry.hash)
                ),
            });
        }
        next_prev = Some(entry.prev);
        tail.push(TailEntry {
            seq: want,
            hash: entry.hash,
            prev: entry.prev,
            payload: raw[entry.payload].to_vec(),
        });
        start = line_start;
        want -= 1;
    }
    tail.reverse();
    Ok(Some(tail))
}

/// Reads the checkpoint, if there is one, and checks it is this ledger's own.
fn read_checkpoint(
    dir: &TileDir,
    key: &SigningKey,
    origin: &str,
) -> Result<Option<Checkpoint>, LedgerError> {
    let file = dir.root().join(CHECKPOINT);
    let bytes = match fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LedgerError::Io {
                path: file,
                action: "read the checkpoint",
                source,
            });
        }
    };
    // Renamed into place without an fsync (unless asked for), so a crash can
    // leave it empty or zero-filled: as good as missing, and signed again from
    // the fsynced entries.
    if bytes.iter().all(|&b| b == 0) {
        tracing::warn!(checkpoint = %file.display(), "checkpoint is empty (a crash before it reached disk); signing it again");
        return Ok(None);
    }
    let text = String::from_utf8(bytes).map_err(|e| LedgerError::BadCheckpoint {
        path: file.clone(),
        source: CheckpointError::Malformed {
            reason: e.to_string(),
        },
    })?;
    let checkpoint = Checkpoint::verify(&text, key.verifier_key()).map_err(|source| {
        LedgerError::BadCheckpoint {
            path: file.clone(),
            source,
        }
    })?;
    if checkpoint.origin != origin {
        return Err(LedgerError::OriginMismatch {
            path: file,
            checkpoint: checkpoint.origin,
            configured: origin.to_string(),
        });
    }
    Ok(Some(checkpoint))
}

fn read_v1_head(dir: &TileDir) -> Result<Option<Anchor>, LedgerError> {
    let file = dir.root().join(V1_HEAD);
    match read_anchor(&file) {
        Ok(head) => Ok(head),
        Err(AnchorError::Io(source)) => Err(LedgerError::Io {
            path: file,
            action: "read the v1 head",
            source,
        }),
        // Written once, and fsynced: a blank one is damage, not a crash.
        Err(AnchorError::Blank) => Err(LedgerError::CorruptTlog {
            path: file,
            reason: "empty".to_string(),
        }),
        Err(AnchorError::Corrupt(reason)) => Err(LedgerError::CorruptTlog { path: file, reason }),
    }
}

/// Records the v1 head durably before the first checkpoint carries it, so a crash
/// that loses that checkpoint cannot lose where v1 ended.
fn write_v1_head(dir: &TileDir, head: Anchor) -> Result<(), LedgerError> {
    let file = dir.root().join(V1_HEAD);
    let text = format!(
        "{{\"seq\":{},\"hash\":\"{}\"}}\n",
        head.seq,
        hex::encode(head.hash)
    );
    let tmp = dir.root().join(format!("{V1_HEAD}.tmp"));
    write_replacing(&tmp, &file, text.as_bytes(), true)
        .and_then(|()| {
            File::open(dir.root())
                .and_then(|d| d.sync_all())
                .map_err(|e| ("fsync the log directory", e))
        })
        .map_err(|(action, source)| LedgerError::Io {
            path: file,
            action,
            source,
        })
}

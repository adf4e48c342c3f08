//! The ledger's signed side (v2): the tree, tiles and checkpoint kept beside the
//! entries, and what each confirmed batch publishes.

use std::convert::Infallible;

use super::checkpoint::Checkpoint;
use super::keys::SigningKey;
use super::tiles::{TileDir, TileId};
use super::tree::Tree;
use super::*;

/// The signed checkpoint's file name in the log directory.
pub(crate) const CHECKPOINT: &str = "checkpoint";
/// Where a v1 ledger ended when it became v2, as `{"seq":N,"hash":"<hex>"}`.
pub(crate) const V1_HEAD: &str = "v1-head";

/// How [`Ledger::open_with`] opens a ledger.
#[derive(Debug, Clone, Default)]
pub struct LedgerOptions {
    /// The key that signs checkpoints: `Some` keeps (or makes) the ledger a v2
    /// transparency log; `None` keeps a v1 ledger exactly as it was, and refuses a v2 one.
    pub signing_key: Option<SigningKey>,
    /// The checkpoints' origin line; `None` uses the signing key's name, as C2SP recommends.
    pub origin: Option<String>,
    /// Whether each checkpoint is fsynced before it is renamed into place. Off by
    /// default: a checkpoint only ever covers fsynced entries, so one lost in a crash
    /// is signed again, identically, on the next open (see the crate's durability notes).
    pub sync_checkpoint: bool,
    /// The shortest time between two checkpoints: batches confirmed within it are
    /// published together, under one. `None` takes [`DEFAULT_CHECKPOINT_INTERVAL`];
    /// zero publishes every batch on its own. A batch after a quiet spell goes out at
    /// once, and so does everything held when [`Ledger::signed_size`] is asked.
    pub checkpoint_interval: Option<std::time::Duration>,
}

/// How often a busy ledger signs a checkpoint at most: 100 ms. Each publication writes
/// the right edge's partial tiles (the partial entry bundle alone holds up to 255
/// payloads) as new files and signs once; at one per batch, a busy drain of batches of
/// 100 made about 300 a second, at one per 100 ms it makes ten (BENCHMARKS.md, Signed
/// ledger). Go's checksum database signs once a second.
pub const DEFAULT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The signed side of an open v2 ledger.
pub(crate) struct Tlog {
    pub(crate) dir: TileDir,
    pub(crate) key: SigningKey,
    pub(crate) origin: String,
    pub(crate) sync_checkpoint: bool,
    pub(crate) tree: Tree,
    pub(crate) v1_head: Option<Anchor>,
    // Tiles whose write failed, retried before the next checkpoint; while any is
    // left no checkpoint is signed, so none ever points at a missing tile.
    pub(crate) pending: Vec<(TileId, Vec<u8>)>,
    // The size of the last checkpoint written by this process.
    pub(crate) signed: Option<u64>,
}

impl fmt::Debug for Tlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tlog")
            .field("dir", &self.dir.root())
            .field("origin", &self.origin)
            .field("key", &self.key)
            .field("size", &self.tree.size())
            .field("signed", &self.signed)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Tlog {
    /// Adds a confirmed batch's payloads as leaves, writes the tiles they touch and
    /// signs a checkpoint. The batch is durable already, so nothing here fails it:
    /// a failure is logged, the checkpoint lags, and a later batch or open catches up.
    pub(crate) fn publish<'p>(&mut self, payloads: impl Iterator<Item = &'p [u8]>, head: [u8; 32]) {
        let before = self.tree.size();
        let mut finished = std::mem::take(&mut self.pending);
        for payload in payloads {
            let Ok(()) = self.tree.push(payload, &mut |id, data| {
                finished.push((id, data));
                Ok::<(), Infallible>(())
            });
        }
        for (id, data) in finished {
            self.write_tile(id, data);
        }
        for (id, data) in self.tree.unfinished_since(before) {
            if let Err(error) = self.dir.write(&id, data) {
                tracing::warn!(tile = %self.dir.file(&id).display(), %error, "could not write a tile; retrying with the next batch");
                self.pending.push((id, data.to_vec()));
            }
        }
        if !self.pending.is_empty() {
            tracing::warn!(
                dir = %self.dir.root().display(),
                tiles = self.pending.len(),
                "checkpoint withheld until every tile it covers is written"
            );
            return;
        }
        if let Err(error) = self.write_checkpoint(head) {
            tracing::warn!(%error, "could not write the checkpoint; the next batch or open writes it");
        }
    }

    fn write_tile(&mut self, id: TileId, data: Vec<u8>) {
        match self.dir.write(&id, &data) {
            Ok(()) if id.is_full() => {
                // Stale partials are prefixes of the full tile, so failing to drop
                // them costs disk, never correctness.
                match self.dir.remove_partials(&id) {
                    // Not moving it costs a mkdir later, nothing else.
                    Ok(()) => {
                        if let Err(error) = self.dir.hand_on_partials_dir(&id) {
                            tracing::debug!(tile = %self.dir.file(&id).display(), %error, "kept a full tile's empty partials directory");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(tile = %self.dir.file(&id).display(), %error, "could not remove a full tile's partial versions");
                    }
                }
            }
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(tile = %self.dir.file(&id).display(), %error, "could not write a tile; retrying with the next batch");
                self.pending.push((id, data));
            }
        }
    }

    /// Signs a checkpoint of the whole tree, whose chain head is `head`, and renames it into place.
    pub(crate) fn write_checkpoint(&mut self, head: [u8; 32]) -> Result<(), LedgerError> {
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
            chain_head: Some(head),
            v1_head: self.v1_head,
        };
        let file = self.dir.root().join(CHECKPOINT);
        let note = checkpoint
            .sign(&self.key)
            .map_err(|source| LedgerError::Sign {
                path: file.clone(),
                source,
            })?;
        let tmp = self.dir.root().join(format!("{CHECKPOINT}.tmp"));
        write_replacing(&tmp, &file, note.as_bytes(), self.sync_checkpoint).map_err(
            |(action, source)| LedgerError::Io {
                path: file.clone(),
                action,
                source,
            },
        )?;
        self.signed = Some(checkpoint.size);
        Ok(())
    }
}

/// Writes `data` to `tmp`, optionally fsyncs it, and renames it over `file`, so a
/// reader sees the old bytes or the new, never a mix.
pub(crate) fn write_replacing(
    tmp: &Path,
    file: &Path,
    data: &[u8],
    sync: bool,
) -> Result<(), (&'static str, io::Error)> {
    let mut out = File::create(tmp).map_err(|e| ("create", e))?;
    out.write_all(data).map_err(|e| ("write", e))?;
    if sync {
        out.sync_data().map_err(|e| ("fsync", e))?;
    }
    drop(out);
    fs::rename(tmp, file).map_err(|e| ("rename into place", e))
}

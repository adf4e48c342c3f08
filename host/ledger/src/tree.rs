//! The log's Merkle tree as its writer keeps it: the rightmost, unfinished tile of
//! every level, which is all that appending a leaf and computing the root need.

use tlog_tiles::{Hash, HashReader, Tile};

use super::tiles::{HASH_SIZE, Layer, TILE_HEIGHT, TILE_WIDTH, TileId, push_bundle_entry};

/// Bytes of a full hash tile.
const FULL_TILE: usize = TILE_WIDTH as usize * HASH_SIZE;

/// An RFC 6962 tree over the ledger's payloads, held as its unfinished tiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    size: u64,
    // hashes[L]: the hashes at tree level 8L of tile level L's unfinished tile,
    // back to back. Every finished tile has been handed out and is one hash in
    // the level above, so these are exactly the tree's right edge.
    hashes: Vec<Vec<u8>>,
    // The unfinished level-0 tile's leaves, as its entry bundle.
    bundle: Vec<u8>,
}

impl Tree {
    /// A tree of `size` leaves from its unfinished tiles: `hashes[L]` of tile level L,
    /// and the unfinished entry bundle. Says what does not fit `size` instead.
    pub(crate) fn resume(size: u64, hashes: Vec<Vec<u8>>, bundle: Vec<u8>) -> Result<Tree, String> {
        for (level, data) in hashes.iter().enumerate() {
            let want = usize::from(width_at(size, level)) * HASH_SIZE;
            if data.len() != want {
                return Err(format!(
                    "tile level {level} has {} bytes of hashes where a tree of {size} leaves has {want}",
                    data.len()
                ));
            }
        }
        if hashes.len() < levels(size) {
            return Err(format!(
                "{} tile levels where a tree of {size} leaves has {}",
                hashes.len(),
                levels(size)
            ));
        }
        Ok(Tree {
            size,
            hashes,
            bundle,
        })
    }

    /// Number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf, handing each tile it finishes (hashes and entries) to `finished`.
    pub(crate) fn push<E>(
        &mut self,
        leaf: &[u8],
        finished: &mut impl FnMut(TileId, Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        push_bundle_entry(&mut self.bundle, leaf);
        self.size += 1;
        let mut hash = tlog_tiles::record_hash(leaf);
        let mut level = 0;
        loop {
            if self.hashes.len() == level {
                self.hashes.push(Vec::with_capacity(FULL_TILE));
            }
            let tile = &mut self.hashes[level];
            tile.extend_from_slice(&hash.0);
            if tile.len() < FULL_TILE {
                break;
            }
            let full = std::mem::replace(tile, Vec::with_capacity(FULL_TILE));
            hash = Tile::subtree_hash(&full);
            let index = index_at(self.size - 1, level);
            if level == 0 {
                let bundle = std::mem::take(&mut self.bundle);
                finished(TileId::entries(index, TILE_WIDTH), bundle)?;
            }
            finished(TileId::hashes(level as u8, index, TILE_WIDTH), full)?;
            level += 1;
        }
        Ok(())
    }

    /// The unfinished tiles that differ from those of a tree of `since` leaves
    /// (pass 0 for all of them), with their bytes.
    pub(crate) fn unfinished_since(&self, since: u64) -> impl Iterator<Item = (TileId, &[u8])> {
        let hashes = self
            .hashes
            .iter()
            .enumerate()
            .filter_map(move |(level, data)| {
                let id = TileId::hashes(
                    level as u8,
                    index_at(self.size, level),
                    width_at(self.size, level),
                );
                let moved = shifted(self.size, level) != shifted(since, level);
                (!data.is_empty() && moved).then_some((id, data.as_slice()))
            });
        let bundle = (!self.bundle.is_empty() && self.size != since).then(|| {
            (
                TileId::entries(index_at(self.size, 0), width_at(self.size, 0)),
                self.bundle.as_slice(),
            )
        });
        bundle.into_iter().chain(hashes)
    }

    /// The unfinished hash tile of each level, lowest first.
    pub(crate) fn unfinished_hashes(&self) -> impl Iterator<Item = (TileId, &[u8])> {
        self.unfinished_since(0)
            .filter(|(id, _)| matches!(id.layer, Layer::Hashes(_)))
    }

    /// The RFC 6962 root hash.
    pub(crate) fn root(&self) -> Hash {
        tlog_tiles::tree_hash(self.size, self)
            .expect("the unfinished tiles hold every hash of the tree's right edge")
    }
}

impl HashReader for Tree {
    // tree_hash asks only for the perfect subtrees along the right edge, and each
    // of those lies within one level's unfinished tile.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                let tile = Tile::from_index(TILE_HEIGHT, index);
                let level = usize::from(tile.level());
                match self.hashes.get(level) {
                    Some(data) if tile.level_index() == index_at(self.size, level) => {
                        tile.hash_at_index(data, index)
                    }
                    _ => Err(tlog_tiles::Error::IndexesNotInTree),
                }
            })
            .collect()
    }
}

/// `size` in units of tile level `level`'s hashes: how many of them exist.
fn shifted(size: u64, level: usize) -> u64 {
    size.checked_shr(u32::from(TILE_HEIGHT) * level as u32)
        .unwrap_or(0)
}

/// Index of tile level `level`'s unfinished tile in a tree of `size` leaves.
pub(crate) fn index_at(size: u64, level: usize) -> u64 {
    shifted(size, level) >> TILE_HEIGHT
}

/// Width of tile level `level`'s unfinished tile in a tree of `size` leaves (0: none).
pub(crate) fn width_at(size: u64, level: usize) -> u16 {
    (shifted(size, level) % u64::from(TILE_WIDTH)) as u16
}

/// Tile levels a tree of `size` leaves has hashes in.
pub(crate) fn levels(size: u64) -> usize {
    (0..).take_while(|&level| shifted(size, level) > 0).count()
}

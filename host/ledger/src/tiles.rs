//! Where the transparency log's tiles live: C2SP tlog-tiles coordinates, their paths,
//! the entry-bundle encoding, and the files under `<ledger>.tlog/`.

use std::cell::RefCell;
use std::fmt::Write as _;

use tlog_tiles::{Tile, TileReader};

use super::*;

/// Levels of the tree one tile spans; C2SP fixes it at 8, so 256 hashes a tile.
pub(crate) const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub(crate) const TILE_WIDTH: u16 = 1 << TILE_HEIGHT;
/// Bytes of one hash in a tile.
pub(crate) const HASH_SIZE: usize = tlog_tiles::HASH_SIZE;
/// The largest leaf an entry bundle can carry: its length prefix is a big-endian u16.
pub(crate) const MAX_LEAF_LEN: usize = u16::MAX as usize;

/// Which layer of the log a tile belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Layer {
    /// Merkle tree hashes at tree level 8 × the given tile level.
    Hashes(u8),
    /// The leaves themselves, as an entry bundle.
    Entries,
}

/// One tile: its layer, its index within the layer, and its width (256 when full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TileId {
    pub(crate) layer: Layer,
    pub(crate) index: u64,
    pub(crate) width: u16,
}

impl TileId {
    pub(crate) fn hashes(level: u8, index: u64, width: u16) -> TileId {
        TileId {
            layer: Layer::Hashes(level),
            index,
            width,
        }
    }

    pub(crate) fn entries(index: u64, width: u16) -> TileId {
        TileId {
            layer: Layer::Entries,
            index,
            width,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The same tile, full.
    pub(crate) fn full(&self) -> TileId {
        TileId {
            width: TILE_WIDTH,
            ..*self
        }
    }

    /// The tile's path under the log's directory: `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`, with `<N>` in 3-digit elements, all but the last `x`-prefixed.
    pub(crate) fn path(&self) -> String {
        let mut path = self.index_path();
        if !self.is_full() {
            write!(path, ".p/{}", self.width).expect("writing to a String");
        }
        path
    }

    /// The directory holding the tile's partial versions, `<N>.p`.
    pub(crate) fn partials_path(&self) -> String {
        self.index_path() + ".p"
    }

    fn index_path(&self) -> String {
        let mut path = String::from("tile/");
        match self.layer {
            Layer::Hashes(level) => write!(path, "{level}").expect("writing to a String"),
            Layer::Entries => path.push_str("entries"),
        }
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        for (i, group) in groups.iter().rev().enumerate() {
            let prefix = if i + 1 < groups.len() { "x" } else { "" };
            write!(path, "/{prefix}{group:03}").expect("writing to a String");
        }
        path
    }

    /// Parses a path written by [`TileId::path`], and only its canonical spelling.
    pub(crate) fn parse(path: &str) -> Option<TileId> {
        let rest = path.strip_prefix("tile/")?;
        let (layer, rest) = rest.split_once('/')?;
        let layer = match layer {
            "entries" => Layer::Entries,
            level => Layer::Hashes(level.parse().ok().filter(|l| *l < 64)?),
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => (index, width.parse().ok()?),
            None => (rest, TILE_WIDTH),
        };
        let mut n = 0u64;
        for group in index.split('/') {
            let digits = group.strip_prefix('x').unwrap_or(group);
            n = n
                .checked_mul(1000)?
                .checked_add(digits.parse::<u64>().ok().filter(|g| *g < 1000)?)?;
        }
        let id = TileId {
            layer,
            index: n,
            width,
        };
        ((1..=TILE_WIDTH).contains(&width) && id.path() == path).then_some(id)
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// Appends one leaf to an entry bundle: its length as a big-endian u16, then its bytes.
pub(crate) fn push_bundle_entry(bundle: &mut Vec<u8>, leaf: &[u8]) {
    let len = u16::try_from(leaf.len()).expect("leaves are checked against MAX_LEAF_LEN");
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(leaf);
}

/// The log's directory beside the ledger, `<ledger>.tlog`.
pub(crate) fn tlog_dir(ledger: &Path) -> PathBuf {
    suffixed(ledger, ".tlog")
}

/// The tile files under a log directory.
#[derive(Debug, Clone)]
pub(crate) struct TileDir {
    root: PathBuf,
}

impl TileDir {
    pub(crate) fn new(root: PathBuf) -> TileDir {
        TileDir { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn file(&self, id: &TileId) -> PathBuf {
        self.root.join(id.path())
    }

    /// Writes a tile in place. No temporary file and no fsync: a tile's bytes are
    /// fixed by its coordinates, the checkpoint that makes it reachable is renamed
    /// into place only after it, and a tile lost or torn by a crash is rewritten
    /// from the fsynced entries when the ledger is next opened.
    pub(crate) fn write(&self, id: &TileId, data: &[u8]) -> io::Result<()> {
        let file = self.file(id);
        match fs::write(&file, data) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = file.parent().expect("a tile path has a parent");
                fs::create_dir_all(parent)?;
                fs::write(&file, data)
            }
            other => other,
        }
    }

    /// Removes a full tile's partial versions, which C2SP lets a log drop once the
    /// full tile is there: they would otherwise pile up, one per checkpoint.
    ///
    /// Their emptied `<N>.p/` directory stays: removing a directory cost milliseconds
    /// on the filesystems measured here, a file microseconds.
    pub(crate) fn remove_partials(&self, full: &TileId) -> io::Result<()> {
        let listing = match fs::read_dir(self.root.join(full.partials_path())) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for item in listing {
            fs::remove_file(item?.path())?;
        }
        Ok(())
    }

    /// Moves a full tile's emptied `<N>.p/` to where the same layer's next tile keeps
    /// its partials, so its first partial finds the directory made. On ext4 a mkdir
    /// was the largest single cost of publishing a batch, a rename a fraction of it.
    pub(crate) fn hand_on_partials_dir(&self, full: &TileId) -> io::Result<()> {
        let next = TileId {
            index: full.index + 1,
            ..*full
        };
        let from = self.root.join(full.partials_path());
        let to = self.root.join(next.partials_path());
        match fs::rename(&from, &to) {
            // The next tile starts a new group of a thousand (`x001/000.p`).
            Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
                fs::create_dir_all(to.parent().expect("a tile path has a parent"))?;
                fs::rename(&from, &to)
            }
            other => other,
        }
    }

    /// Reads a hash tile of the given width: its own file, or else a prefix of the
    /// full tile, since a partial may be removed once the full tile is written.
    pub(crate) fn read_hashes(&self, id: &TileId) -> Result<Vec<u8>, (PathBuf, io::Error)> {
        let want = usize::from(id.width) * HASH_SIZE;
        let exact = self.file(id);
        let (file, mut data) = match fs::read(&exact) {
            Ok(data) => (exact.clone(), data),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !id.is_full() => {
                let full = self.file(&id.full());
                match fs::read(&full) {
                    Ok(data) => (full, data),
                    // Name the tile that was asked for, not the fallback.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err((exact, e)),
                    Err(e) => return Err((full, e)),
                }
            }
            Err(e) => return Err((exact, e)),
        };
        if data.len() < want || (data.len() != want && file == exact) {
            return Err((
                file,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} bytes where a tile of {} hashes has {want}",
                        data.len(),
                        id.width
                    ),
                ),
            ));
        }
        data.truncate(want);
        Ok(data)
    }
}

/// Hash tiles read from a log directory, for tlog_tiles' `TileHashReader`, which
/// authenticates every tile against a checkpoint's root before using a hash.
pub(crate) struct DiskTiles<'a> {
    dir: &'a TileDir,
    // tlog_tiles' error type carries no detail, so the failing file is kept here.
    failure: RefCell<Option<(PathBuf, io::Error)>>,
}

impl<'a> DiskTiles<'a> {
    pub(crate) fn new(dir: &'a TileDir) -> DiskTiles<'a> {
        DiskTiles {
            dir,
            failure: RefCell::new(None),
        }
    }

    /// The file that failed to read, if any did.
    pub(crate) fn take_failure(&self) -> Option<(PathBuf, io::Error)> {
        self.failure.borrow_mut().take()
    }
}

impl TileReader for DiskTiles<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        tiles
            .iter()
            .map(|tile| {
                let width = u16::try_from(tile.width()).map_err(|_| tlog_tiles::Error::BadMath)?;
                let id = TileId::hashes(tile.level(), tile.level_index(), width);
                self.dir.read_hashes(&id).map_err(|failure| {
                    *self.failure.borrow_mut() = Some(failure);
                    tlog_tiles::Error::InvalidTile
                })
            })
            .collect()
    }

    // Nothing to cache: the tiles are read where they are kept.
    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

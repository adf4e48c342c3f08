//! The log's tiles as C2SP tlog-tiles clients fetch them, by the paths the spec names,
//! from a ledger that may be being appended to.

use super::tiles::{HASH_SIZE, Layer, TileDir, TileId};
use super::*;

/// Why a tile cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// The path is not a tile's canonical tlog-tiles path.
    #[error("{path:?} is not a tile path: tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")]
    NotATile {
        /// The path asked for.
        path: String,
    },
    /// The log has no such tile (yet, or any more: a partial is dropped once full).
    #[error("{}: no such tile", .file.display())]
    Missing {
        /// The tile's file.
        file: PathBuf,
    },
    /// The tile's file could not be read.
    #[error("cannot read {}: {source}", .file.display())]
    Io {
        /// The tile's file.
        file: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The full tile a dropped partial is cut from is shorter than the partial.
    #[error("{}: {reason}", .file.display())]
    Damaged {
        /// The tile's file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The tile at `tile` (a tlog-tiles path such as `tile/0/x001/234.p/17`) of the v2
/// ledger at `ledger`. A partial tile that was dropped once its full tile was written
/// is cut from the full one, so a client holding an older checkpoint still gets the
/// bytes it asks for. Only canonical tile paths are read: nothing else under the
/// ledger's directory can be named.
pub fn read_tile(ledger: &Path, tile: &str) -> Result<Vec<u8>, TileError> {
    let id = TileId::parse(tile).ok_or_else(|| TileError::NotATile {
        path: tile.to_string(),
    })?;
    let dir = TileDir::new(tlog_dir(ledger));
    let exact = dir.file(&id);
    match fs::read(&exact) {
        Ok(data) => return Ok(data),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !id.is_full() => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TileError::Missing { file: exact });
        }
        Err(source) => {
            return Err(TileError::Io {
                file: exact,
                source,
            });
        }
    }
    let full = dir.file(&id.full());
    let data = match fs::read(&full) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TileError::Missing { file: exact });
        }
        Err(source) => return Err(TileError::Io { file: full, source }),
    };
    let width = usize::from(id.width);
    let cut = match id.layer {
        Layer::Hashes(_) => Some(width * HASH_SIZE).filter(|&end| end <= data.len()),
        Layer::Entries => bundle_prefix(&data, width),
    };
    match cut {
        Some(end) => Ok(data[..end].to_vec()),
        None => Err(TileError::Damaged {
            file: full,
            reason: format!("too short to hold the {width} entries of {id}"),
        }),
    }
}

/// The length of an entry bundle's first `count` entries, each a big-endian u16 length
/// and that many bytes; `None` if the bundle holds fewer.
fn bundle_prefix(bundle: &[u8], count: usize) -> Option<usize> {
    let mut at = 0usize;
    for _ in 0..count {
        let len = bundle.get(at..at + 2)?;
        at += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    (at <= bundle.len()).then_some(at)
}

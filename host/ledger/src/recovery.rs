//! Opening after a crash: the last complete line, the head anchor, and which of them
//! the ledger ends at.

use super::*;

/// Works out the ledger's last seq and hash from its complete lines (those
/// before `end`) and its anchor; says whether the anchor must be rewritten.
pub(super) fn reconcile(
    path: &Path,
    file: &File,
    end: u64,
    anchor: Option<Anchor>,
) -> Result<(u64, [u8; 32], bool), LedgerError> {
    let io_err = |source| LedgerError::Io {
        path: path.to_owned(),
        action: "read",
        source,
    };
    let corrupt = |seq, offset, reason| LedgerError::CorruptTail {
        path: path.to_owned(),
        seq,
        offset,
        reason,
    };
    let mut scratch = Vec::new();

    if end == 0 {
        return match anchor {
            None => Ok((0, ZERO_HASH, false)),
            Some(a) if a.seq == 0 && a.hash == ZERO_HASH => Ok((0, ZERO_HASH, false)),
            Some(a) => Err(LedgerError::ShorterThanAnchor {
                path: path.to_owned(),
                ledger: 0,
                anchor: a.seq,
            }),
        };
    }

    let (mut start, raw) = line_before(file, end).map_err(io_err)?;
    let last =
        check_entry(&raw, None, None, &mut scratch).map_err(|f| corrupt(f.seq, start, f.reason))?;

    let Some(anchor) = anchor else {
        tracing::warn!(path = %path.display(), "no head anchor; verifying the whole chain before writing one");
        let mut reader = file;
        reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let (entries, hash) = walk_chain(path, BufReader::with_capacity(1 << 18, reader.take(end)))
            .map_err(|source| LedgerError::Unanchored {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        return Ok((entries, hash, true));
    };

    if last.seq < anchor.seq {
        return Err(LedgerError::ShorterThanAnchor {
            path: path.to_owned(),
            ledger: last.seq,
            anchor: anchor.seq,
        });
    }
    if last.seq == anchor.seq {
        if last.hash != anchor.hash {
            return Err(LedgerError::AnchorMismatch {
                path: path.to_owned(),
                seq: last.seq,
                ledger_hash: hex::encode(last.hash),
                anchor_hash: hex::encode(anchor.hash),
            });
        }
        return Ok((last.seq, last.hash, false));
    }

    // Entries past the anchor: a crash between a batch's fsync and its anchor
    // rewrite. Adopt them only if they chain, back to the anchor's hash.
    tracing::warn!(
        path = %path.display(),
        anchor = anchor.seq,
        ledger = last.seq,
        "entries beyond the head anchor; checking they chain from it"
    );
    let (seq, hash) = (last.seq, last.hash);
    let mut next = last;
    while next.seq > anchor.seq + 1 {
        let want = next.seq - 1;
        if start == 0 {
            return Err(corrupt(
                Some(next.seq),
                0,
                format!(
                    "the file starts at entry {}, not after the anchor's entry {}",
                    next.seq, anchor.seq
                ),
            ));
        }
        let (line_start, raw) = line_before(file, start).map_err(io_err)?;
        let entry = check_entry(&raw, Some(want), None, &mut scratch)
            .map_err(|f| corrupt(f.seq.or(Some(want)), line_start, f.reason))?;
        if entry.hash != next.prev {
            return Err(corrupt(
                Some(next.seq),
                start,
                format!(
                    "chain broken: prev is not entry {want}'s hash {}",
                    hex::encode(entry.hash)
                ),
            ));
        }
        start = line_start;
        next = entry;
    }
    if next.prev != anchor.hash {
        return Err(corrupt(
            Some(next.seq),
            start,
            format!(
                "does not chain from the head anchor (entry {} with hash {})",
                anchor.seq,
                hex::encode(anchor.hash)
            ),
        ));
    }
    Ok((seq, hash, true))
}

/// The offset just past the last `\n` of the first `len` bytes (0 if none).
pub(super) fn end_of_last_line(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let n = chunk.len().min(end as usize);
        let from = end - n as u64;
        read_at(file, from, &mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

/// The line that ends (with its `\n`) at `end`: its start offset and bytes
/// without the `\n`. Reads backwards, so the tail costs what the tail is.
pub(super) fn line_before(file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    let stop = end - 1;
    let mut start = stop;
    let mut line: Vec<u8> = Vec::new();
    let mut chunk_len = 4096usize;
    while start > 0 {
        let n = chunk_len.min(start as usize);
        let from = start - n as u64;
        let mut piece = vec![0u8; n];
        read_at(file, from, &mut piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            piece.drain(..=i);
            piece.extend_from_slice(&line);
            return Ok((from + i as u64 + 1, piece));
        }
        piece.extend_from_slice(&line);
        line = piece;
        start = from;
        chunk_len = (chunk_len * 2).min(1 << 20);
    }
    Ok((0, line))
}

pub(super) fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    reader.read_exact(buf)
}

pub(super) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub(super) fn head_path(path: &Path) -> PathBuf {
    suffixed(path, ".head")
}

/// A point of the hash chain: an entry's seq and its `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Anchor {
    pub(super) seq: u64,
    pub(super) hash: [u8; 32],
}

#[derive(Debug)]
pub(super) enum AnchorError {
    Io(io::Error),
    Blank,
    Corrupt(String),
}

pub(super) fn read_anchor(head: &Path) -> Result<Option<Anchor>, AnchorError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AnchorLine<'a> {
        seq: u64,
        hash: &'a str,
    }
    let bytes = match fs::read(head) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AnchorError::Io(e)),
    };
    if bytes.iter().all(|&b| b == 0) {
        return Err(AnchorError::Blank);
    }
    let line: AnchorLine<'_> =
        serde_json::from_slice(&bytes).map_err(|e| AnchorError::Corrupt(e.to_string()))?;
    let hash = decode_hash(line.hash).ok_or_else(|| {
        AnchorError::Corrupt(format!(
            "hash {:?} is not 64 lower-case hex digits",
            line.hash
        ))
    })?;
    Ok(Some(Anchor {
        seq: line.seq,
        hash,
    }))
}

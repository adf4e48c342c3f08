//! One entry of the ledger: the line it is written as, its chain hash, and the
//! checks that read it back.

use super::*;

/// Checks an envelope on its own, returning its payload's digest and its hex.
pub(super) fn validate(envelope: &Envelope) -> Result<([u8; 32], [u8; 64]), String> {
    let payload = envelope.payload.as_slice();
    if payload.contains(&b'\n') {
        return Err("payload contains a newline byte".to_string());
    }
    let raw = serde_json::from_slice::<&RawValue>(payload)
        .map_err(|e| format!("payload is not a single JSON value: {e}"))?;
    // The parser skips whitespace around the value, but the ledger embeds the
    // bytes verbatim and a reader's RawValue would not include it, so the
    // digest would no longer match what verify sees.
    if raw.get().len() != payload.len() {
        return Err("payload has whitespace around its JSON value".to_string());
    }
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let mut computed = [0u8; 64];
    encode_hex(&digest, &mut computed);
    if !computed.eq_ignore_ascii_case(envelope.sha256.as_bytes()) {
        return Err(format!(
            "sha256 {} does not match its payload (computed {})",
            envelope.sha256,
            hex_str(&computed)
        ));
    }
    Ok((digest, computed))
}

pub(super) fn chain_hash(prev: &[u8; 32], seq: u64, digest: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(digest);
    hasher.finalize().into()
}

/// Renders one entry from its fields, already in hex.
pub(super) fn render_line(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 64],
    digest: &[u8; 64],
    hash: &[u8; 64],
    payload: &[u8],
) {
    buf.extend_from_slice(b"{\"seq\":");
    push_decimal(buf, seq);
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\",\"sha256\":\"");
    buf.extend_from_slice(digest);
    buf.extend_from_slice(b"\",\"hash\":\"");
    buf.extend_from_slice(hash);
    buf.extend_from_slice(b"\",\"payload\":");
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"}\n");
}

pub(super) fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Lower-case hex of a digest, into a fixed buffer (no allocation per entry).
pub(super) fn encode_hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    hex::encode_to_slice(bytes, out).expect("64 bytes hold the hex of 32");
}

pub(super) fn hex_str(hex: &[u8; 64]) -> &str {
    std::str::from_utf8(hex).expect("hex digits are ASCII")
}

/// Decodes a `hash`-style field, accepting only its canonical spelling.
pub(super) fn decode_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[derive(Deserialize)]
pub(super) struct Line<'a> {
    pub(super) seq: u64,
    pub(super) prev: &'a str,
    pub(super) sha256: &'a str,
    pub(super) hash: &'a str,
    #[serde(borrow)]
    pub(super) payload: &'a RawValue,
}

/// One entry that passed [`check_entry`].
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) prev: [u8; 32],
    pub(super) hash: [u8; 32],
    /// Where the payload sits in the line that was checked: the transparency log's leaf.
    pub(super) payload: Range<usize>,
}

/// Why [`check_entry`] rejected a line: the seq it claims if readable, and why.
pub(super) struct EntryFault {
    pub(super) seq: Option<u64>,
    pub(super) reason: String,
}

/// Checks one line (without its `\n`) on its own and, where known, against
/// the seq and prev it must have. `scratch` is reused to re-render it.
pub(super) fn check_entry(
    raw: &[u8],
    expected_seq: Option<u64>,
    expected_prev: Option<&[u8; 32]>,
    scratch: &mut Vec<u8>,
) -> Result<Entry, EntryFault> {
    let unreadable = |reason: String| EntryFault { seq: None, reason };
    let text = std::str::from_utf8(raw).map_err(|e| unreadable(format!("not UTF-8: {e}")))?;
    let line: Line<'_> =
        serde_json::from_str(text).map_err(|e| unreadable(format!("not a ledger entry: {e}")))?;
    let fault = |reason: String| EntryFault {
        seq: Some(line.seq),
        reason,
    };

    match expected_seq {
        Some(expected) if line.seq != expected => {
            return Err(fault(format!("out of sequence: expected seq {expected}")));
        }
        None if line.seq == 0 => return Err(fault("seq 0: seqs start at 1".to_string())),
        _ => {}
    }
    let mut prev_hex = [0u8; 64];
    let prev = match expected_prev {
        Some(expected) => {
            encode_hex(expected, &mut prev_hex);
            if prev_hex != line.prev.as_bytes() {
                return Err(fault(format!(
                    "chain broken: prev {} is not the previous entry's hash {}",
                    line.prev,
                    hex_str(&prev_hex)
                )));
            }
            *expected
        }
        None => {
            let prev = decode_hash(line.prev).ok_or_else(|| {
                fault(format!(
                    "prev {:?} is not 64 lower-case hex digits",
                    line.prev
                ))
            })?;
            encode_hex(&prev, &mut prev_hex);
            prev
        }
    };

    let payload = line.payload.get().as_bytes();
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let mut digest_hex = [0u8; 64];
    encode_hex(&digest, &mut digest_hex);
    if digest_hex != line.sha256.as_bytes() {
        return Err(fault(format!(
            "payload sha256 mismatch: stored {}, computed {}",
            line.sha256,
            hex_str(&digest_hex)
        )));
    }
    let hash = chain_hash(&prev, line.seq, &digest);
    let mut hash_hex = [0u8; 64];
    encode_hex(&hash, &mut hash_hex);
    if hash_hex != line.hash.as_bytes() {
        return Err(fault(format!(
            "hash mismatch: stored {}, computed {}",
            line.hash,
            hex_str(&hash_hex)
        )));
    }

    // The digests cover only the payload; re-rendering catches edits to the
    // rest of the line that JSON parsing forgives (spacing, escapes, key order,
    // extra fields).
    scratch.clear();
    render_line(
        scratch,
        line.seq,
        &prev_hex,
        &digest_hex,
        &hash_hex,
        payload,
    );
    if scratch[..scratch.len() - 1] != *raw {
        return Err(fault("not in the canonical form of an entry".to_string()));
    }
    let start = payload.as_ptr() as usize - raw.as_ptr() as usize;
    Ok(Entry {
        seq: line.seq,
        prev,
        hash,
        payload: start..start + payload.len(),
    })
}

/// Reads entries from the start, checking each and the chain; returns the
/// count and the last hash.
pub(super) fn walk_chain(
    path: &Path,
    reader: impl BufRead,
) -> Result<(u64, [u8; 32]), VerifyError> {
    walk_entries(path, reader, |_, _| Ok(ControlFlow::Continue(())))
}

/// [`walk_chain`], handing each checked entry and its payload to `each`, which
/// may stop the walk early; returns the count and hash of the last entry walked.
pub(super) fn walk_entries(
    path: &Path,
    mut reader: impl BufRead,
    mut each: impl FnMut(&Entry, &[u8]) -> Result<ControlFlow<()>, VerifyError>,
) -> Result<(u64, [u8; 32]), VerifyError> {
    let mut line = Vec::with_capacity(4096);
    let mut scratch = Vec::with_capacity(4096);
    let mut entries = 0u64;
    let mut hash = ZERO_HASH;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| VerifyError::Io {
                path: path.to_owned(),
                action: "read",
                source,
            })?;
        if read == 0 {
            return Ok((entries, hash));
        }
        // The walk stops at the first bad line, so line numbers and seqs agree.
        let number = entries + 1;
        let bad = |seq, reason| VerifyError::BadEntry {
            path: path.to_owned(),
            line: number,
            seq,
            reason,
        };
        if line.pop() != Some(b'\n') {
            return Err(bad(
                None,
                "incomplete last line (no newline): a torn write, which the next open truncates"
                    .to_string(),
            ));
        }
        let entry = check_entry(&line, Some(number), Some(&hash), &mut scratch)
            .map_err(|fault| bad(fault.seq, fault.reason))?;
        entries = number;
        hash = entry.hash;
        if each(&entry, &line[entry.payload.clone()])?.is_break() {
            return Ok((entries, hash));
        }
    }
}

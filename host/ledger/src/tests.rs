//! The ledger's specification: format, durability, recovery and verification.

use super::*;
use proptest::prelude::*;
use std::time::Instant;
use tempfile::TempDir;

pub(crate) fn envelope(op_id: &str, payload: &[u8]) -> Envelope {
    Envelope {
        op_id: op_id.to_string(),
        payload: payload.to_vec(),
        sha256: hex::encode(Sha256::digest(payload)),
    }
}

/// About 500 bytes of canonical-looking operation JSON.
pub(crate) fn op_payload(i: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"client_ip":"10.0.{}.{}","do_prefix":"21.T11148","do_repository":"repo-{}","#,
            r#""doid":"21.T11148/{:016x}","op_actor":"actor-{}","op_id":"op-{:08}","#,
            r#""op_source":"handle-server","op_type":"CREATE","producer_id":"producer-{}","#,
            r#""request_body_hash":"{:064x}","response_body_hash":"{:064x}","#,
            r#""server_ip":"10.1.0.1","timestamp":{},"note":"caf\u00e9 é ✓"}}"#
        ),
        i % 256,
        i % 7,
        i % 13,
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        i % 97,
        i,
        i % 5,
        i,
        i.wrapping_mul(31),
        1_700_000_000_000_000 + i
    )
    .into_bytes()
}

pub(crate) fn envelopes(from: u64, count: u64) -> Vec<Envelope> {
    (from..from + count)
        .map(|i| envelope(&format!("op-{i:08}"), &op_payload(i)))
        .collect()
}

pub(crate) fn ledger_path(dir: &TempDir) -> PathBuf {
    dir.path().join("trust.log")
}

/// A ledger of `count` entries written in batches of `batch`, closed again.
pub(crate) fn ledger_with(dir: &TempDir, count: u64, batch: u64) -> PathBuf {
    let path = ledger_path(dir);
    let mut ledger = Ledger::open(&path).unwrap();
    let mut next = 1;
    while next <= count {
        let n = batch.min(count - next + 1);
        ledger.append(&envelopes(next, n)).unwrap();
        next += n;
    }
    path
}

pub(crate) fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

pub(crate) fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    fs::write(path, lines.concat()).unwrap();
}

/// Byte offset of `needle` inside line `line` (1-based) of the file.
pub(crate) fn offset_in_line(path: &Path, line: usize, needle: &str) -> usize {
    let lines = read_lines(path);
    let start: usize = lines[..line - 1].iter().map(Vec::len).sum();
    let at = lines[line - 1]
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle:?} not in line {line}"));
    start + at
}

fn bad_entry(result: Result<VerifyReport, VerifyError>) -> (u64, Option<u64>, String) {
    match result {
        Err(VerifyError::BadEntry {
            line, seq, reason, ..
        }) => (line, seq, reason),
        other => panic!("expected a bad entry, got {other:?}"),
    }
}

/// A line for entry `seq` after `prev`, chained correctly: what a forger can compute.
pub(crate) fn forged_line(seq: u64, prev: &[u8; 32], payload: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let digest: [u8; 32] = Sha256::digest(payload).into();
    let hash = chain_hash(prev, seq, &digest);
    let hex = |bytes: &[u8; 32]| <[u8; 64]>::try_from(hex::encode(bytes).as_bytes()).unwrap();
    let mut line = Vec::new();
    render_line(
        &mut line,
        seq,
        &hex(prev),
        &hex(&digest),
        &hex(&hash),
        payload,
    );
    (line, hash)
}

pub(crate) fn stored_hash(line: &[u8]) -> [u8; 32] {
    let text = std::str::from_utf8(line).unwrap();
    let line: Line<'_> = serde_json::from_str(text.trim_end()).unwrap();
    decode_hash(line.hash).unwrap()
}

#[test]
fn append_then_verify_passes_with_every_entry_counted() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 25, 10);
    let report = verify(&path).unwrap();
    assert_eq!(report.entries, 25);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 25);
    assert_eq!(report.head_hash, hex::encode(stored_hash(&lines[24])));
}

#[test]
fn entries_have_the_documented_format() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    ledger
        .append(&[envelope("a", br#"{"x":1}"#), envelope("b", b"[true, null]")])
        .unwrap();

    let zeros = "0".repeat(64);
    let sha1 = hex::encode(Sha256::digest(br#"{"x":1}"#));
    let mut pre1 = Vec::new();
    pre1.extend_from_slice(&[0u8; 32]);
    pre1.extend_from_slice(&1u64.to_be_bytes());
    pre1.extend_from_slice(&Sha256::digest(br#"{"x":1}"#));
    let hash1 = hex::encode(Sha256::digest(&pre1));
    let sha2 = hex::encode(Sha256::digest(b"[true, null]"));
    let mut pre2 = hex::decode(&hash1).unwrap();
    pre2.extend_from_slice(&2u64.to_be_bytes());
    pre2.extend_from_slice(&Sha256::digest(b"[true, null]"));
    let hash2 = hex::encode(Sha256::digest(&pre2));

    let expected = format!(
        "{{\"seq\":1,\"prev\":\"{zeros}\",\"sha256\":\"{sha1}\",\"hash\":\"{hash1}\",\"payload\":{{\"x\":1}}}}\n\
             {{\"seq\":2,\"prev\":\"{hash1}\",\"sha256\":\"{sha2}\",\"hash\":\"{hash2}\",\"payload\":[true, null]}}\n"
    );
    assert_eq!(
        String::from_utf8(fs::read(&path).unwrap()).unwrap(),
        expected
    );
    assert_eq!(
        fs::read_to_string(head_path(&path)).unwrap(),
        format!("{{\"seq\":2,\"hash\":\"{hash2}\"}}\n")
    );
    assert!(!suffixed(&path, ".head.tmp").exists());
}

#[test]
fn reopening_continues_the_chain() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let mut ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.len(), 3);
    ledger.append(&envelopes(4, 2)).unwrap();
    assert_eq!(ledger.len(), 5);
    drop(ledger);

    assert_eq!(verify(&path).unwrap().entries, 5);
    let seqs: Vec<u64> = read_lines(&path)
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn an_empty_ledger_without_anchor_verifies_with_zero_entries() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path).unwrap();
    assert!(ledger.is_empty());
    drop(ledger);
    assert!(!head_path(&path).exists());
    assert_eq!(
        verify(&path).unwrap(),
        VerifyReport {
            entries: 0,
            head_hash: "0".repeat(64)
        }
    );
    assert_eq!(Ledger::open(&path).unwrap().len(), 0);
}

#[test]
fn an_empty_batch_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 2, 2);
    let mut ledger = Ledger::open(&path).unwrap();
    let before = fs::read(&path).unwrap();
    ledger.append(&[]).unwrap();
    assert!(publish_batch(&mut ledger, &[]).is_empty());
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(ledger.len(), 2);
}

#[test]
fn changing_a_byte_in_a_payload_a_hash_or_a_seq_fails_verify_naming_that_entry() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let original = fs::read(&path).unwrap();
    let mutate = |at: usize, byte: u8| {
        let mut bytes = original.clone();
        bytes[at] = byte;
        fs::write(&path, bytes).unwrap();
        bad_entry(verify(&path))
    };

    let at = offset_in_line(&path, 3, "handle-server") + 1;
    let (line, seq, reason) = mutate(at, b'A');
    assert_eq!((line, seq), (3, Some(3)));
    assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");

    let at = offset_in_line(&path, 2, "\"hash\":\"") + 8;
    let byte = if original[at] == b'0' { b'1' } else { b'0' };
    let (line, seq, reason) = mutate(at, byte);
    assert_eq!((line, seq), (2, Some(2)));
    assert!(reason.starts_with("hash mismatch"), "{reason}");

    let at = offset_in_line(&path, 4, "\"seq\":4") + 6;
    let (line, seq, reason) = mutate(at, b'7');
    assert_eq!((line, seq), (4, Some(7)));
    assert!(reason.contains("expected seq 4"), "{reason}");

    let at = offset_in_line(&path, 5, "\"prev\":\"") + 20;
    let byte = if original[at] == b'0' { b'1' } else { b'0' };
    let (line, seq, reason) = mutate(at, byte);
    assert_eq!((line, seq), (5, Some(5)));
    assert!(reason.starts_with("chain broken"), "{reason}");

    let at = offset_in_line(&path, 1, "\"sha256\":\"") + 9 + 63;
    let byte = if original[at] == b'0' { b'1' } else { b'0' };
    let (line, seq, reason) = mutate(at, byte);
    assert_eq!((line, seq), (1, Some(1)));
    assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");
}

#[test]
fn every_single_byte_change_anywhere_fails_verify_at_its_own_line() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    ledger
        .append(&[
            envelope("a", br#"{"k":"caf\u00e9","n":[1,2.5,-3e2]}"#),
            envelope("b", "\"é ✓ z\"".as_bytes()),
            envelope("c", b"null"),
        ])
        .unwrap();
    drop(ledger);
    let original = fs::read(&path).unwrap();

    for at in 0..original.len() {
        let own_line = original[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        for flip in [0x01u8, 0x20, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= flip;
            fs::write(&path, &bytes).unwrap();
            match verify(&path) {
                Err(VerifyError::BadEntry { line, .. }) => {
                    assert_eq!(
                        line, own_line,
                        "byte {at} ^ {flip:#x} blamed the wrong line"
                    )
                }
                other => panic!("byte {at} ^ {flip:#x} was not caught: {other:?}"),
            }
        }
    }
}

#[test]
fn removing_a_middle_line_fails_verify_at_its_place() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let mut lines = read_lines(&path);
    lines.remove(2);
    write_lines(&path, &lines);
    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (3, Some(4)));
    assert!(reason.contains("out of sequence"), "{reason}");
}

#[test]
fn swapping_two_lines_fails_verify() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let mut lines = read_lines(&path);
    lines.swap(1, 2);
    write_lines(&path, &lines);
    let (line, seq, _) = bad_entry(verify(&path));
    assert_eq!((line, seq), (2, Some(3)));
}

#[test]
fn removing_the_last_line_is_caught_by_the_head_anchor() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let mut lines = read_lines(&path);
    lines.pop();
    write_lines(&path, &lines);

    let error = verify(&path).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::AnchorSeq {
                ledger: 4,
                anchor: 5,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().ends_with(
            "ledger ends at entry 4 but the head anchor says 5: entries removed or appended by hand"
        ),
        "{error}"
    );

    let error = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::ShorterThanAnchor {
                ledger: 4,
                anchor: 5,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn appending_a_copy_of_a_line_by_hand_fails_verify() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let mut lines = read_lines(&path);
    lines.push(lines[4].clone());
    write_lines(&path, &lines);
    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (6, Some(5)));
    assert!(reason.contains("expected seq 6"), "{reason}");
}

#[test]
fn appending_a_correctly_chained_line_by_hand_is_caught_by_the_head_anchor() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let mut lines = read_lines(&path);
    let (forged, _) = forged_line(6, &stored_hash(&lines[4]), br#"{"forged":true}"#);
    lines.push(forged);
    write_lines(&path, &lines);
    let error = verify(&path).unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::AnchorSeq {
                ledger: 6,
                anchor: 5,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn rewriting_history_and_rechaining_it_is_caught_by_the_anchor_hash() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 4, 4);
    let lines = read_lines(&path);
    let mut forged_lines = vec![lines[0].clone()];
    let mut prev = stored_hash(&lines[0]);
    for seq in 2..=4 {
        let (line, hash) = forged_line(seq, &prev, format!("{{\"rewritten\":{seq}}}").as_bytes());
        forged_lines.push(line);
        prev = hash;
    }
    write_lines(&path, &forged_lines);

    let error = verify(&path).unwrap_err();
    assert!(
        matches!(error, VerifyError::AnchorHash { seq: 4, .. }),
        "{error:?}"
    );
    let error = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(error, LedgerError::AnchorMismatch { seq: 4, .. }),
        "{error:?}"
    );
}

#[test]
fn a_line_that_is_not_utf8_or_not_json_is_a_bad_entry_naming_its_line() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let original = read_lines(&path);

    let mut lines = original.clone();
    lines[1] = b"\xff\xfe not text\n".to_vec();
    write_lines(&path, &lines);
    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (2, None));
    assert!(reason.starts_with("not UTF-8"), "{reason}");

    let mut lines = original;
    lines[2] = b"hello\n".to_vec();
    write_lines(&path, &lines);
    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (3, None));
    assert!(reason.starts_with("not a ledger entry"), "{reason}");
}

#[test]
fn a_respelled_but_equivalent_line_is_not_canonical() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 2, 2);
    let mut lines = read_lines(&path);
    let spaced =
        String::from_utf8(lines[1].clone())
            .unwrap()
            .replacen(",\"prev\"", ", \"prev\"", 1);
    lines[1] = spaced.into_bytes();
    write_lines(&path, &lines);
    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (2, Some(2)));
    assert_eq!(reason, "not in the canonical form of an entry");
}

#[test]
fn verify_errors_name_the_path_entry_and_line() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let mut lines = read_lines(&path);
    lines.swap(0, 1);
    write_lines(&path, &lines);
    let message = verify(&path).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: entry 2 (line 1): out of sequence: expected seq 1",
            path.display()
        )
    );
}

#[test]
fn a_torn_tail_is_reported_by_verify_truncated_on_open_and_the_next_append_verifies() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let intact = fs::read(&path).unwrap();
    let mut torn = intact.clone();
    torn.extend_from_slice(br#"{"seq":4,"prev":"ab"#);
    fs::write(&path, &torn).unwrap();

    let (line, seq, reason) = bad_entry(verify(&path));
    assert_eq!((line, seq), (4, None));
    assert!(reason.starts_with("incomplete last line"), "{reason}");

    let mut ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.len(), 3);
    assert_eq!(fs::read(&path).unwrap(), intact);
    ledger.append(&envelopes(4, 2)).unwrap();
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 5);
}

#[test]
fn a_crash_mid_batch_keeps_its_whole_chained_lines_and_drops_the_torn_one() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let anchor_after_first_batch = fs::read(head_path(&path)).unwrap();
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.append(&envelopes(4, 3)).unwrap();
    drop(ledger);
    // The crash: the anchor was never rewritten, and entry 6 only half written.
    fs::write(head_path(&path), anchor_after_first_batch).unwrap();
    let bytes = fs::read(&path).unwrap();
    let cut = bytes.len() - 40;
    fs::write(&path, &bytes[..cut]).unwrap();

    let mut ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.len(), 5);
    assert_eq!(verify(&path).unwrap().entries, 5);
    ledger.append(&envelopes(6, 1)).unwrap();
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 6);
}

#[test]
fn entries_beyond_a_lagging_anchor_are_checked_and_adopted_on_open() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 4, 4);
    let lagging = fs::read(head_path(&path)).unwrap();
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.append(&envelopes(5, 3)).unwrap();
    drop(ledger);
    fs::write(head_path(&path), lagging).unwrap();
    assert!(matches!(
        verify(&path),
        Err(VerifyError::AnchorSeq {
            ledger: 7,
            anchor: 4,
            ..
        })
    ));

    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.len(), 7);
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 7);
}

#[test]
fn entries_beyond_the_anchor_that_do_not_chain_from_it_refuse_to_open() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 5, 5);
    let lines = read_lines(&path);
    let wrong = hex::encode(stored_hash(&lines[1]));
    fs::write(
        head_path(&path),
        format!("{{\"seq\":3,\"hash\":\"{wrong}\"}}\n"),
    )
    .unwrap();
    let error = Ledger::open(&path).unwrap_err();
    match &error {
        LedgerError::CorruptTail {
            seq: Some(4),
            reason,
            ..
        } => {
            assert!(
                reason.contains("does not chain from the head anchor"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_broken_line_beyond_a_lagging_anchor_refuses_to_open_naming_it() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 2, 2);
    let lagging = fs::read(head_path(&path)).unwrap();
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.append(&envelopes(3, 3)).unwrap();
    drop(ledger);
    fs::write(head_path(&path), lagging).unwrap();
    let mut lines = read_lines(&path);
    lines[3] = b"garbage\n".to_vec();
    write_lines(&path, &lines);

    let error = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(error, LedgerError::CorruptTail { seq: Some(4), .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("entry 4 at byte"), "{error}");
}

#[test]
fn a_missing_anchor_is_rebuilt_after_verifying_the_whole_chain() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 6, 2);
    let anchor = fs::read(head_path(&path)).unwrap();
    fs::remove_file(head_path(&path)).unwrap();
    assert!(matches!(
        verify(&path),
        Err(VerifyError::AnchorMissing { entries: 6, .. })
    ));

    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.len(), 6);
    assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);
}

#[test]
fn a_missing_anchor_with_a_broken_chain_refuses_to_open() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 6, 2);
    fs::remove_file(head_path(&path)).unwrap();
    let mut lines = read_lines(&path);
    lines.remove(1);
    write_lines(&path, &lines);
    let error = Ledger::open(&path).unwrap_err();
    match error {
        LedgerError::Unanchored { source, .. }
            if matches!(
                *source,
                VerifyError::BadEntry {
                    line: 2,
                    seq: Some(3),
                    ..
                }
            ) => {}
        other => panic!("{other:?}"),
    }
    assert!(!head_path(&path).exists());
}

#[test]
fn a_blank_anchor_left_by_a_crash_counts_as_missing() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let anchor = fs::read(head_path(&path)).unwrap();
    fs::write(head_path(&path), b"").unwrap();
    assert!(matches!(
        verify(&path),
        Err(VerifyError::CorruptAnchor { .. })
    ));
    assert_eq!(Ledger::open(&path).unwrap().len(), 3);
    assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);
}

#[test]
fn an_unparseable_anchor_refuses_to_open() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    fs::write(head_path(&path), b"{\"seq\":3}").unwrap();
    assert!(matches!(
        Ledger::open(&path),
        Err(LedgerError::CorruptAnchor { .. })
    ));
    assert!(matches!(
        verify(&path),
        Err(VerifyError::CorruptAnchor { .. })
    ));
}

#[test]
fn an_anchor_ahead_of_an_emptied_ledger_refuses_to_open() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    fs::write(&path, b"").unwrap();
    let error = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::ShorterThanAnchor {
                ledger: 0,
                anchor: 3,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_corrupt_last_line_refuses_to_open_naming_it() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 3, 3);
    let mut lines = read_lines(&path);
    let last = String::from_utf8(lines[2].clone())
        .unwrap()
        .replace("CREATE", "DELETE");
    lines[2] = last.into_bytes();
    write_lines(&path, &lines);
    let start = (lines[0].len() + lines[1].len()) as u64;
    match Ledger::open(&path).unwrap_err() {
        LedgerError::CorruptTail {
            seq: Some(3),
            offset,
            reason,
            ..
        } => {
            assert_eq!(offset, start);
            assert!(reason.starts_with("payload sha256 mismatch"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_open_while_the_first_is_alive_is_refused_as_locked() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 1, 1);
    let first = Ledger::open(&path).unwrap();
    let error = Ledger::open(&path).unwrap_err();
    assert!(
        matches!(&error, LedgerError::Locked { path: p } if *p == path),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("locked by another process"),
        "{error}"
    );
    drop(first);
    assert_eq!(Ledger::open(&path).unwrap().len(), 1);
}

#[test]
fn an_envelope_whose_sha256_does_not_match_is_permanent_and_the_rest_is_written() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    let mut bad = envelope("op-bad", br#"{"n":2}"#);
    bad.sha256 = hex::encode(Sha256::digest(b"something else"));
    let batch = [
        envelope("op-1", br#"{"n":1}"#),
        bad,
        envelope("op-3", br#"{"n":3}"#),
    ];

    let results = publish_batch(&mut ledger, &batch);
    assert_eq!(results[0], Ok(()));
    match &results[1] {
        Err(PublishError::Permanent(message)) => {
            assert!(
                message.contains("op-bad") && message.contains("does not match"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(results[2], Ok(()));
    assert_eq!(ledger.len(), 2);
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 2);
    assert!(!fs::read_to_string(&path).unwrap().contains("\"n\":2"));
}

#[test]
fn payloads_that_are_not_one_json_value_on_one_line_are_permanent() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        ("newline", b"{\"a\":\n1}", "newline"),
        ("not-json", b"{nope}", "not a single JSON value"),
        ("two-values", b"1 2", "not a single JSON value"),
        ("empty", b"", "not a single JSON value"),
        ("padded", b" 1\t", "whitespace around"),
        ("not-utf8", b"\"\xff\"", "not a single JSON value"),
    ];
    let batch: Vec<Envelope> = cases
        .iter()
        .map(|(id, payload, _)| envelope(id, payload))
        .collect();
    let results = publish_batch(&mut ledger, &batch);
    for ((id, _, why), result) in cases.iter().zip(&results) {
        match result {
            Err(PublishError::Permanent(message)) => {
                assert!(
                    message.contains(id) && message.contains(why),
                    "{id}: {message}"
                )
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(ledger.len(), 0);
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn append_refuses_a_batch_with_an_invalid_envelope_whole() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    let batch = [envelope("op-1", b"1"), envelope("op-2", b"not json")];
    match ledger.append(&batch).unwrap_err() {
        LedgerError::InvalidEnvelope { op_id, .. } => assert_eq!(op_id, "op-2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ledger.len(), 0);
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn an_uppercase_sha256_of_the_right_digest_is_accepted() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path).unwrap();
    let mut upper = envelope("op-1", b"{}");
    upper.sha256 = upper.sha256.to_uppercase();
    ledger.append(&[upper]).unwrap();
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 1);
}

/// Drives a failure of the batch write against a real file: the fault
/// writes part or all of the batch for real, then reports an error as the
/// OS would, so what is tested is the real rollback and state handling.
fn failed_batch_is_rolled_back_and_unavailable(fault: Fault) {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 2, 2);
    let mut ledger = Ledger::open(&path).unwrap();
    let before = fs::read(&path).unwrap();
    let anchor = fs::read(head_path(&path)).unwrap();

    ledger.fault = Some(fault);
    let mut batch = envelopes(3, 3);
    batch[1].sha256 = "00".repeat(32);
    let results = publish_batch(&mut ledger, &batch);
    assert!(
        matches!(&results[0], Err(PublishError::Unavailable(m)) if m.contains("injected")),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(PublishError::Permanent(_))),
        "{results:?}"
    );
    assert!(
        matches!(&results[2], Err(PublishError::Unavailable(_))),
        "{results:?}"
    );
    assert_eq!(ledger.len(), 2);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(fs::read(head_path(&path)).unwrap(), anchor);

    let results = publish_batch(&mut ledger, &envelopes(3, 3));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(ledger);
    assert_eq!(verify(&path).unwrap().entries, 5);
}

#[test]
fn a_write_that_fails_midway_is_cut_back_and_reported_unavailable() {
    failed_batch_is_rolled_back_and_unavailable(Fault::TornWrite);
}

#[test]
fn a_batch_whose_fsync_fails_is_cut_back_and_reported_unavailable() {
    failed_batch_is_rolled_back_and_unavailable(Fault::FailedSync);
}

/// A real OS failure: /dev/full refuses every write with ENOSPC, and being
/// a device it cannot be truncated either, so the ledger must also stop.
#[cfg(target_os = "linux")]
#[test]
fn a_real_enospc_is_unavailable_and_a_failed_cut_back_stops_appends() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let mut ledger = Ledger::open(&path).unwrap();

    let results = publish_batch(&mut ledger, &envelopes(1, 2));
    for result in &results {
        match result {
            Err(PublishError::Unavailable(message)) => {
                assert!(
                    message.contains("cannot write") && message.contains("trust.log"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ledger.len(), 0);
    assert!(!head_path(&path).exists());
    assert!(matches!(
        ledger.append(&envelopes(1, 1)),
        Err(LedgerError::Poisoned { .. })
    ));
    assert!(matches!(
        &publish_batch(&mut ledger, &envelopes(1, 1))[0],
        Err(PublishError::Unavailable(_))
    ));
    assert!(matches!(ledger.health(), Err(LedgerError::Poisoned { .. })));
}

#[test]
fn appending_100k_entries_in_batches_of_1000_is_timed() {
    let dir = TempDir::new().unwrap();
    let path = ledger_path(&dir);
    let batches: Vec<Vec<Envelope>> = (0..100).map(|b| envelopes(b * 1000 + 1, 1000)).collect();
    let payload_bytes: usize = batches.iter().flatten().map(|e| e.payload.len()).sum();

    let mut ledger = Ledger::open(&path).unwrap();
    let started = Instant::now();
    for batch in &batches {
        ledger.append(batch).unwrap();
    }
    let appended = started.elapsed();
    drop(ledger);
    let started = Instant::now();
    let report = verify(&path).unwrap();
    let verified = started.elapsed();

    let file_bytes = fs::metadata(&path).unwrap().len();
    println!(
        "appended 100000 entries ({} B payload each on average, {:.1} MB file) in {:?}; verified in {:?}",
        payload_bytes / 100_000,
        file_bytes as f64 / 1e6,
        appended,
        verified
    );
    assert_eq!(report.entries, 100_000);
    let started = Instant::now();
    assert_eq!(Ledger::open(&path).unwrap().len(), 100_000);
    println!(
        "reopened the 100000-entry ledger in {:?}",
        started.elapsed()
    );
}

proptest! {
    #[test]
    fn hex_encoding_matches_the_hex_crate(bytes in any::<[u8; 32]>()) {
        let mut out = [0u8; 64];
        encode_hex(&bytes, &mut out);
        prop_assert_eq!(hex_str(&out), hex::encode(bytes));
    }

    #[test]
    fn seqs_render_as_plain_decimal(n in any::<u64>()) {
        let mut out = Vec::new();
        push_decimal(&mut out, n);
        prop_assert_eq!(out, n.to_string().into_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_json_strings_in_any_batch_splits_verify(
        batches in prop::collection::vec(
            (prop::collection::vec(any::<String>(), 0..12), any::<bool>()),
            1..8,
        )
    ) {
        let dir = TempDir::new().unwrap();
        let path = ledger_path(&dir);
        let mut ledger = Ledger::open(&path).unwrap();
        let mut total = 0u64;
        for (strings, reopen) in &batches {
            let batch: Vec<Envelope> = strings
                .iter()
                .enumerate()
                .map(|(i, s)| envelope(&format!("op-{total}-{i}"), &serde_json::to_vec(s).unwrap()))
                .collect();
            let results = publish_batch(&mut ledger, &batch);
            prop_assert!(results.iter().all(Result::is_ok), "{:?}", results);
            total += batch.len() as u64;
            prop_assert_eq!(ledger.len(), total);
            if *reopen {
                drop(ledger);
                ledger = Ledger::open(&path).unwrap();
                prop_assert_eq!(ledger.len(), total);
            }
        }
        drop(ledger);
        let report = verify(&path).unwrap();
        prop_assert_eq!(report.entries, total);
    }
}

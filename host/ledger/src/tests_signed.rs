//! The signed ledger (v2): its files, keys, checkpoints and proofs, what each attack
//! on it looks like, and how it comes back from a crash. Real files in temp dirs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::checkpoint::Checkpoint;
use super::tests::{
    envelope, envelopes, forged_line, ledger_path, ledger_with, read_lines, stored_hash,
    write_lines,
};
use super::tests_merkle::rfc6962;
use super::tiles::TileDir;
use super::tree::Tree;
use super::*;
use proptest::prelude::*;
use tempfile::TempDir;

const NAME: &str = "trustlog.example/ledger";

fn keys() -> KeyPair {
    generate_key(NAME).unwrap()
}

/// A signed ledger's options, publishing every batch as soon as it is confirmed, so the
/// files a test looks at do not depend on timing (the default interval has its own test).
fn signed(keys: &KeyPair) -> LedgerOptions {
    LedgerOptions {
        signing_key: Some(SigningKey::parse(&keys.signer_key).unwrap()),
        checkpoint_interval: Some(Duration::ZERO),
        ..LedgerOptions::default()
    }
}

fn open_signed(path: &Path, keys: &KeyPair) -> Result<Ledger, LedgerError> {
    Ledger::open_with(path, signed(keys))
}

/// Appends entries `from..from + count` in batches of `batch`, each published before
/// the next is appended, so every batch leaves its own tiles and checkpoint (batches
/// that queue up are published together: see the test of that).
fn append_all(ledger: &mut Ledger, from: u64, count: u64, batch: u64) {
    let mut next = from;
    while next < from + count {
        let n = batch.min(from + count - next);
        ledger.append(&envelopes(next, n)).unwrap();
        next += n;
        assert_eq!(ledger.signed_size(), Some(next - 1));
    }
}

/// A v2 ledger of `count` entries written in batches of `batch`, closed again.
fn signed_ledger(dir: &TempDir, keys: &KeyPair, count: u64, batch: u64) -> PathBuf {
    let path = ledger_path(dir);
    let mut ledger = open_signed(&path, keys).unwrap();
    append_all(&mut ledger, 1, count, batch);
    assert_eq!(ledger.signed_size(), Some(count));
    path
}

fn payload_of(line: &[u8]) -> String {
    let line: Line<'_> = serde_json::from_slice(line.trim_ascii_end()).unwrap();
    line.payload.get().to_string()
}

fn leaves(path: &Path) -> Vec<rfc6962::H> {
    read_lines(path)
        .iter()
        .map(|line| rfc6962::leaf(payload_of(line).as_bytes()))
        .collect()
}

fn b64(hash: &rfc6962::H) -> String {
    MerkleHash(*hash).to_string()
}

fn checkpoint_of(text: &str) -> Checkpoint {
    Checkpoint::read_unverified(text).unwrap()
}

fn tile_file(path: &Path, tile: &str) -> PathBuf {
    tlog_dir(path).join(tile)
}

/// Whether a full tile's partial versions are gone (their directory may stay, empty).
fn partials_gone(path: &Path, tile: &str) -> bool {
    match fs::read_dir(tile_file(path, &format!("{tile}.p"))) {
        Ok(mut listing) => listing.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

fn write_head(path: &Path, seq: u64, hash: &[u8; 32]) {
    fs::write(
        head_path(path),
        format!("{{\"seq\":{seq},\"hash\":\"{}\"}}\n", hex::encode(hash)),
    )
    .unwrap();
}

/// What an attacker with write access but no key can do: rewrite entry `seq`'s payload,
/// chain every later entry again and rewrite the head anchor.
fn rewrite_entry(path: &Path, seq: usize, edit: impl Fn(&str) -> String) {
    let lines = read_lines(path);
    let mut out = lines[..seq - 1].to_vec();
    let mut prev = if seq == 1 {
        [0u8; 32]
    } else {
        stored_hash(&lines[seq - 2])
    };
    for (i, line) in lines[seq - 1..].iter().enumerate() {
        let payload = payload_of(line);
        let payload = if i == 0 { edit(&payload) } else { payload };
        let (forged, hash) = forged_line((seq + i) as u64, &prev, payload.as_bytes());
        out.push(forged);
        prev = hash;
    }
    write_lines(path, &out);
    write_head(path, lines.len() as u64, &prev);
}

/// ... and, with this very crate, every tile and entry bundle again; returns the tree.
fn retile(path: &Path) -> Tree {
    let dir = TileDir::new(tlog_dir(path));
    fs::remove_dir_all(dir.root().join("tile")).unwrap();
    let mut tree = Tree::default();
    for line in read_lines(path) {
        tree.push(payload_of(&line).as_bytes(), &mut |id, data| {
            dir.write(&id, &data)
        })
        .unwrap();
    }
    for (id, data) in tree.unfinished_since(0) {
        dir.write(&id, data).unwrap();
    }
    tree
}

/// Every file under `dir`, by path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for item in fs::read_dir(&folder).unwrap() {
            let file = item.unwrap().path();
            if file.is_dir() {
                stack.push(file);
            } else {
                files.insert(file.clone(), fs::read(&file).unwrap());
            }
        }
    }
    files
}

fn restore(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    fs::remove_dir_all(dir).unwrap();
    for (file, bytes) in files {
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, bytes).unwrap();
    }
}

/// A copy of the ledger at `from` (its entries, anchor and log directory) at `to`.
fn copy_ledger(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap();
    fs::copy(head_path(from), head_path(to)).unwrap();
    for (file, bytes) in snapshot(&tlog_dir(from)) {
        let relative = file.strip_prefix(tlog_dir(from)).unwrap();
        let target = tlog_dir(to).join(relative);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(target, bytes).unwrap();
    }
}

/// Deterministic picks in `0..below`, so a failure names the same entries every run.
fn picks(count: usize, below: u64, mut x: u64) -> Vec<u64> {
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        })
        .collect()
}

fn flip(file: &Path, at: usize) -> Vec<u8> {
    let original = fs::read(file).unwrap();
    let mut bytes = original.clone();
    bytes[at] ^= 0x01;
    fs::write(file, bytes).unwrap();
    original
}

#[test]
fn keys_are_go_note_keys_and_the_signer_knows_its_verifier() {
    let pair = keys();
    assert!(pair.signer_key.starts_with(&format!("PRIVATE+KEY+{NAME}+")));
    assert!(pair.verifier_key.starts_with(&format!("{NAME}+")));
    let signer = SigningKey::parse(&format!("{}\n", pair.signer_key)).unwrap();
    assert_eq!(signer.name(), NAME);
    assert_eq!(signer.verifier_key().as_str(), pair.verifier_key);
    assert_eq!(VerifierKey::parse(&pair.verifier_key).unwrap().name(), NAME);

    // Go's own example key pair (golang.org/x/mod/sumdb/note).
    let go = SigningKey::parse(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    )
    .unwrap();
    assert_eq!(
        go.verifier_key().as_str(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    );

    let secret = pair.signer_key.splitn(5, '+').nth(4).unwrap();
    for shown in [format!("{pair:?}"), format!("{signer:?}")] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(&pair.verifier_key), "{shown}");
    }

    for name in ["", "has space", "a+b"] {
        assert!(
            matches!(generate_key(name), Err(KeyError::InvalidName { .. })),
            "{name:?}"
        );
    }
    assert!(matches!(
        SigningKey::parse(&pair.verifier_key),
        Err(KeyError::BadSigner { .. })
    ));
    assert!(matches!(
        VerifierKey::parse(&pair.signer_key),
        Err(KeyError::BadVerifier { .. })
    ));
    let other = generate_key("other.example/log").unwrap();
    let fields = |key: &str| key.splitn(5, '+').map(str::to_string).collect::<Vec<_>>();
    let mut mixed = fields(&pair.signer_key);
    mixed[4] = fields(&other.signer_key)[4].clone();
    let wrong_id = mixed.join("+");
    match SigningKey::parse(&wrong_id) {
        Err(KeyError::BadSigner { reason }) => assert!(reason.contains("hash"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_signed_ledger_keeps_c2sp_tiles_bundles_and_a_signed_checkpoint_beside_it() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 700, 100);
    let leaves = leaves(&path);
    let root = rfc6962::mth(&leaves);

    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    let anchor = read_anchor(&head_path(&path)).unwrap().unwrap();
    assert_eq!(
        report,
        SignedReport {
            entries: 700,
            head_hash: hex::encode(anchor.hash),
            origin: NAME.to_string(),
            root_hash: b64(&root),
            // Hash tiles 0/000, 0/001, 0/002.p/88, 0/002.p/188, 1/000.p/2 and 1/000.p/1,
            // and the four bundles.
            tiles: 10,
            v1_head: None,
        }
    );

    let text = latest_checkpoint(&path).unwrap();
    let (body, signature) = text.split_once("\n\n").unwrap();
    assert_eq!(
        body,
        format!(
            "{NAME}\n700\n{}\ntrustlog-chain-head {}",
            b64(&root),
            hex::encode(anchor.hash)
        )
    );
    assert!(signature.starts_with(&format!("— {NAME} ")), "{signature}");
    assert!(signature.ends_with('\n') && signature.lines().count() == 1);
    // The signature is a plain C2SP signed note, as any Go or Rust client checks it.
    let note = signed_note::Note::from_bytes(text.as_bytes()).unwrap();
    let verifier = signed_note::StandardVerifier::new(&pair.verifier_key).unwrap();
    note.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .unwrap();

    for (tile, leaves_from, count) in [
        ("tile/entries/000", 0, 256),
        ("tile/entries/001", 256, 256),
        ("tile/entries/002.p/188", 512, 188),
        ("tile/entries/002.p/88", 512, 88),
    ] {
        let mut want = Vec::new();
        for line in &read_lines(&path)[leaves_from..leaves_from + count] {
            let payload = payload_of(line);
            want.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            want.extend_from_slice(payload.as_bytes());
        }
        assert_eq!(fs::read(tile_file(&path, tile)).unwrap(), want, "{tile}");
    }
    for (tile, level, index, width) in [
        ("tile/0/000", 0, 0, 256),
        ("tile/0/002.p/188", 0, 2, 188),
        ("tile/1/000.p/2", 1, 0, 2),
    ] {
        assert_eq!(
            fs::read(tile_file(&path, tile)).unwrap(),
            rfc6962::tile(&leaves, level, index, width),
            "{tile}"
        );
    }
    // C2SP lets a log drop partial tiles once the full one is there; it does.
    assert!(partials_gone(&path, "tile/0/000"));
    assert!(partials_gone(&path, "tile/entries/001"));
    assert!(!partials_gone(&path, "tile/0/002"));
    assert!(!tile_file(&path, "checkpoint.tmp").exists());
}

#[test]
fn every_batch_signs_one_checkpoint_and_a_reopened_ledger_carries_on() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    let mut ledger = open_signed(&path, &pair).unwrap();
    assert_eq!(ledger.signed_size(), Some(0));
    let empty = latest_checkpoint(&path).unwrap();
    assert_eq!(checkpoint_of(&empty).root, tlog_tiles::EMPTY_HASH);
    assert_eq!(ledger.verifier_key().unwrap().as_str(), pair.verifier_key);

    let mut total = 0;
    for (batch, reopen) in [
        (1, false),
        (255, true),
        (256, false),
        (1, true),
        (600, true),
        (3, false),
    ] {
        ledger.append(&envelopes(total + 1, batch)).unwrap();
        total += batch;
        assert_eq!(ledger.signed_size(), Some(total));
        assert_eq!(
            checkpoint_of(&latest_checkpoint(&path).unwrap()).size,
            total
        );
        if reopen {
            drop(ledger);
            ledger = open_signed(&path, &pair).unwrap();
            assert_eq!((ledger.len(), ledger.signed_size()), (total, Some(total)));
        }
    }
    drop(ledger);
    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    assert_eq!(report.entries, total);
    assert_eq!(report.root_hash, b64(&rfc6962::mth(&leaves(&path))));
}

#[test]
fn batches_appended_faster_than_they_are_published_go_out_together_and_the_log_is_the_same() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    // The first batch goes out at once; the others, appended well within the
    // interval, wait for it and go out together, as soon as someone asks.
    let options = LedgerOptions {
        checkpoint_interval: Some(Duration::from_secs(10)),
        ..signed(&pair)
    };
    let mut ledger = Ledger::open_with(&path, options).unwrap();
    ledger.append(&envelopes(1, 1)).unwrap();
    assert_eq!(ledger.signed_size(), Some(1));
    let mut total = 1;
    // Sizes that cross tile edges at every level of a small tree, appended back to back.
    for n in (0..60).map(|i| 1 + (i * 37) % 211) {
        ledger.append(&envelopes(total + 1, n)).unwrap();
        total += n;
    }
    let asked = Instant::now();
    assert_eq!(ledger.signed_size(), Some(total));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "waited {:?} for the interval instead of publishing when asked",
        asked.elapsed()
    );
    drop(ledger);
    // Published one by one, the last tile of each layer would have kept a partial per
    // batch that ended in it; published together, it has the final one only.
    let partials = |layer: &str| {
        let dir = tile_file(&path, &format!("tile/{layer}/{:03}.p", total / 256));
        fs::read_dir(dir).unwrap().count()
    };
    assert_eq!((partials("0"), partials("entries")), (1, 1));
    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    assert_eq!(report.entries, total);
    assert_eq!(report.root_hash, b64(&rfc6962::mth(&leaves(&path))));
    for index in [0, 255, 256, total / 2, total - 1] {
        let proof = prove_inclusion(&path, &format!("op-{:08}", index + 1)).unwrap();
        assert_eq!(
            check_inclusion(&proof, &pair.verifier_key).unwrap().index,
            index
        );
    }
}

#[test]
fn a_signed_ledger_is_refused_without_its_key_by_open_and_by_v1_verify() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    drop(open_signed(&path, &pair).unwrap());
    // Even with no entry yet: its empty checkpoint is signed.
    match Ledger::open(&path) {
        Err(LedgerError::KeyRequired { path: p, tlog }) => {
            assert_eq!((p, tlog), (path.clone(), tlog_dir(&path)))
        }
        other => panic!("{other:?}"),
    }
    let mut ledger = open_signed(&path, &pair).unwrap();
    ledger.append(&envelopes(1, 3)).unwrap();
    drop(ledger);
    let error = Ledger::open(&path).unwrap_err();
    assert!(
        error.to_string().contains("open it with its signing key"),
        "{error}"
    );
    // A v1 head planted beside a ledger that was never v1 is not taken up.
    let planted = tlog_dir(&path).join("v1-head");
    fs::write(&planted, fs::read(head_path(&path)).unwrap()).unwrap();
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::CorruptTlog { .. })
    ));
    fs::remove_file(&planted).unwrap();
    assert!(matches!(
        verify(&path),
        Err(VerifyError::SignedLedger { .. })
    ));
    assert!(matches!(
        verify_v2(&path, &pair.verifier_key),
        Ok(SignedReport { entries: 3, .. })
    ));
}

#[test]
fn a_v1_ledger_opened_without_a_key_stays_v1_and_with_one_becomes_v2_binding_its_v1_head() {
    let dir = TempDir::new().unwrap();
    let path = ledger_with(&dir, 300, 100);
    let mut ledger = Ledger::open(&path).unwrap();
    ledger.append(&envelopes(301, 20)).unwrap();
    assert_eq!(ledger.signed_size(), None);
    drop(ledger);
    assert!(!tlog_dir(&path).exists());
    assert!(matches!(
        verify_v2(&path, &keys().verifier_key),
        Err(VerifyError::Unsigned { .. })
    ));
    let v1_head = read_anchor(&head_path(&path)).unwrap().unwrap();
    assert_eq!(verify(&path).unwrap().head_hash, hex::encode(v1_head.hash));

    let pair = keys();
    let mut ledger = open_signed(&path, &pair).unwrap();
    assert_eq!(ledger.signed_size(), Some(320));
    let line = format!("trustlog-v1-head 320 {}", hex::encode(v1_head.hash));
    assert!(latest_checkpoint(&path).unwrap().contains(&line));
    ledger.append(&envelopes(321, 30)).unwrap();
    drop(ledger);
    // Every later checkpoint carries it, so the latest one alone binds v1's history.
    let text = latest_checkpoint(&path).unwrap();
    assert!(text.contains(&line), "{text}");
    assert_eq!(checkpoint_of(&text).size, 350);
    assert_eq!(
        fs::read_to_string(tlog_dir(&path).join("v1-head")).unwrap(),
        format!(
            "{{\"seq\":320,\"hash\":\"{}\"}}\n",
            hex::encode(v1_head.hash)
        )
    );
    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    assert_eq!(
        report.v1_head,
        Some(V1Head {
            seq: 320,
            hash: hex::encode(v1_head.hash)
        })
    );
    assert_eq!(report.root_hash, b64(&rfc6962::mth(&leaves(&path))));

    // The record of the v1 head must agree with what the checkpoints sign.
    let v1_file = tlog_dir(&path).join("v1-head");
    let recorded = fs::read(&v1_file).unwrap();
    fs::write(
        &v1_file,
        "{\"seq\":1,\"hash\":\"".to_string() + &"ab".repeat(32) + "\"}\n",
    )
    .unwrap();
    assert!(matches!(
        verify_v2(&path, &pair.verifier_key),
        Err(VerifyError::V1HeadFile { .. })
    ));
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::CorruptTlog { .. })
    ));
    fs::write(&v1_file, recorded).unwrap();

    // The v1 entries are leaves like any other: provable, and bound by the root.
    let proof = prove_inclusion(&path, "op-00000007").unwrap();
    assert_eq!(proof.index, 6);
    check_inclusion(&proof, &pair.verifier_key).unwrap();
    rewrite_entry(&path, 7, |p| p.replace("CREATE", "DELETE"));
    retile(&path);
    assert!(matches!(
        verify_v2(&path, &pair.verifier_key),
        Err(VerifyError::CheckpointRoot { size: 350, .. })
    ));
}

#[test]
fn the_demo_attack_rewriting_an_entry_rechaining_and_retiling_without_the_key_is_caught() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 700, 100);
    let honest_proof = prove_inclusion(&path, "op-00000200").unwrap();

    // The 20-line script: one entry's op_actor changed, the chain and the head
    // anchor recomputed, and here the tiles and bundles too.
    rewrite_entry(&path, 123, |p| {
        p.replace("\"op_actor\":\"actor-26\"", "\"op_actor\":\"actor-evil\"")
    });
    assert!(fs::read_to_string(&path).unwrap().contains("actor-evil"));
    let forged = retile(&path);
    // Everything v1 checks still passes...
    let file = File::open(&path).unwrap();
    let (entries, hash) = walk_chain(&path, BufReader::new(file)).unwrap();
    check_anchor(&path, entries, hash).unwrap();
    // ...but not the signed checkpoint.
    assert!(matches!(
        verify(&path),
        Err(VerifyError::SignedLedger { .. })
    ));
    match verify_v2(&path, &pair.verifier_key) {
        Err(VerifyError::CheckpointRoot {
            size: 700,
            ledger_root,
            checkpoint_root,
            ..
        }) => {
            assert_eq!(ledger_root, forged.root().to_string());
            assert_eq!(
                checkpoint_root,
                honest_proof.checkpoint.lines().nth(2).unwrap()
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::CheckpointMismatch { size: 700, .. })
    ));
    // The forged tiles do not hash up to the signed root, so no proof comes from them.
    assert!(matches!(
        prove_inclusion(&path, "op-00000123"),
        Err(ProofError::Tiles { .. })
    ));
    // A proof handed out before the attack still checks: the signed tree is unchanged.
    check_inclusion(&honest_proof, &pair.verifier_key).unwrap();

    // With a key of their own (even under the same name) the forger can sign the
    // rewritten tree, and whoever holds the log's verifier key refuses it.
    let forger = SigningKey::parse(&generate_key(NAME).unwrap().signer_key).unwrap();
    let note = Checkpoint {
        origin: NAME.to_string(),
        size: 700,
        root: forged.root(),
        chain_head: Some(stored_hash(read_lines(&path).last().unwrap())),
        v1_head: None,
    }
    .sign(&forger)
    .unwrap();
    fs::write(tlog_dir(&path).join("checkpoint"), &note).unwrap();
    match verify_v2(&path, &pair.verifier_key) {
        Err(VerifyError::Checkpoint {
            source: CheckpointError::NotSignedBy { key, signers },
            ..
        }) => {
            assert_eq!(key, pair.verifier_key);
            assert!(signers.starts_with(NAME), "{signers}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::BadCheckpoint {
            source: CheckpointError::NotSignedBy { .. },
            ..
        })
    ));
    let forged_proof = prove_inclusion(&path, "op-00000123").unwrap();
    assert!(forged_proof.payload.contains("actor-evil"));
    assert!(matches!(
        check_inclusion(&forged_proof, &pair.verifier_key),
        Err(CheckError::Checkpoint {
            source: CheckpointError::NotSignedBy { .. },
            ..
        })
    ));
    check_inclusion(&forged_proof, forger.verifier_key().as_str()).unwrap();
}

#[test]
fn a_flipped_byte_in_an_entry_a_tile_a_bundle_or_the_checkpoint_is_caught() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 700, 100);
    let vk = pair.verifier_key.as_str();

    let lines = read_lines(&path);
    let at = lines[..4].iter().map(Vec::len).sum::<usize>() + lines[4].len() - 20;
    let original = flip(&path, at);
    match verify_v2(&path, vk) {
        Err(VerifyError::BadEntry { line: 5, .. }) => {}
        other => panic!("{other:?}"),
    }
    fs::write(&path, original).unwrap();

    for (tile, at) in [
        ("tile/0/000", 31),
        ("tile/0/002.p/188", 187 * 32),
        ("tile/1/000.p/2", 40),
        ("tile/entries/001", 1000),
        ("tile/entries/002.p/188", 5),
        ("tile/0/002.p/88", 0),
        ("tile/entries/002.p/88", 2000),
    ] {
        let file = tile_file(&path, tile);
        let original = flip(&file, at);
        match verify_v2(&path, vk) {
            Err(VerifyError::Tile { path: p, reason }) => {
                assert_eq!(p, file, "{tile}: {reason}");
                assert!(reason.contains("differ"), "{tile}: {reason}");
            }
            other => panic!("{tile}: {other:?}"),
        }
        fs::write(&file, original).unwrap();
    }

    let checkpoint = tile_file(&path, "checkpoint");
    let text = fs::read_to_string(&checkpoint).unwrap();
    let other_root = b64(&[7u8; 32]);
    let root = text.lines().nth(2).unwrap();
    let sig_at = text.len() - 10;
    let sig_char = if text.as_bytes()[sig_at] == b'A' {
        "B"
    } else {
        "A"
    };
    for tampered in [
        text.replacen(root, &other_root, 1),
        text.replacen("\n700\n", "\n699\n", 1),
        format!("{}{sig_char}{}", &text[..sig_at], &text[sig_at + 1..]),
    ] {
        fs::write(&checkpoint, &tampered).unwrap();
        assert!(
            matches!(
                verify_v2(&path, vk),
                Err(VerifyError::Checkpoint {
                    source: CheckpointError::BadSignature { .. },
                    ..
                })
            ),
            "{tampered}"
        );
    }
    fs::write(&checkpoint, &text).unwrap();

    fs::write(tile_file(&path, "tile/0/notes.txt"), b"hello").unwrap();
    assert!(matches!(
        verify_v2(&path, vk),
        Err(VerifyError::Tile { reason, .. }) if reason == "not a tile path"
    ));
    fs::remove_file(tile_file(&path, "tile/0/notes.txt")).unwrap();
    fs::write(tile_file(&path, "tile/0/002.p/200"), [0u8; 200 * 32]).unwrap();
    assert!(matches!(
        verify_v2(&path, vk),
        Err(VerifyError::Tile { reason, .. }) if reason.contains("not a tile of a tree of 700")
    ));
    fs::remove_file(tile_file(&path, "tile/0/002.p/200")).unwrap();
    fs::remove_file(tile_file(&path, "tile/0/001")).unwrap();
    assert!(matches!(
        verify_v2(&path, vk),
        Err(VerifyError::Tile { reason, .. }) if reason == "missing"
    ));
}

#[test]
fn tiles_are_served_by_their_c2sp_paths_and_a_dropped_partial_is_cut_from_its_full_tile() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    let mut ledger = open_signed(&path, &pair).unwrap();
    append_all(&mut ledger, 1, 100, 100);
    assert_eq!(ledger.signed_size(), Some(100));
    // What a client holding the checkpoint of size 100 fetched then.
    let hashes_at_100 = fs::read(tile_file(&path, "tile/0/000.p/100")).unwrap();
    let entries_at_100 = fs::read(tile_file(&path, "tile/entries/000.p/100")).unwrap();
    append_all(&mut ledger, 101, 500, 100);
    assert_eq!(ledger.signed_size(), Some(600));
    assert!(partials_gone(&path, "tile/0/000") && partials_gone(&path, "tile/entries/000"));

    for tile in [
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
        "tile/entries/002.p/88",
    ] {
        assert_eq!(
            read_tile(&path, tile).unwrap(),
            fs::read(tile_file(&path, tile)).unwrap(),
            "{tile}"
        );
    }
    assert_eq!(read_tile(&path, "tile/0/000.p/100").unwrap(), hashes_at_100);
    assert_eq!(
        read_tile(&path, "tile/entries/000.p/100").unwrap(),
        entries_at_100
    );
    // The cut partial is the prefix of the served full tile.
    assert!(
        read_tile(&path, "tile/0/000")
            .unwrap()
            .starts_with(&hashes_at_100)
    );

    for missing in [
        "tile/0/003",
        "tile/0/002.p/89",
        "tile/2/000.p/1",
        "tile/entries/005",
    ] {
        assert!(
            matches!(read_tile(&path, missing), Err(TileError::Missing { .. })),
            "{missing}"
        );
    }
    for outside in [
        "checkpoint",
        "tile/../checkpoint",
        "tile/0/../../checkpoint",
        "../trustlog.ledger",
        "tile/0/000/../001",
        "/etc/passwd",
        "tile/0/001.p/../../001",
    ] {
        assert!(
            matches!(read_tile(&path, outside), Err(TileError::NotATile { .. })),
            "{outside}"
        );
    }
}

#[test]
fn a_truncated_log_is_caught_even_with_its_anchor_and_tiles_redone() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 700, 100);
    let lines = read_lines(&path);
    write_lines(&path, &lines[..650]);
    write_head(&path, 650, &stored_hash(&lines[649]));
    retile(&path);

    assert!(matches!(
        verify_v2(&path, &pair.verifier_key),
        Err(VerifyError::CheckpointSize {
            ledger: 650,
            checkpoint: 700,
            ..
        })
    ));
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::ShorterThanCheckpoint {
            ledger: 650,
            checkpoint: 700,
            ..
        })
    ));
}

#[test]
fn a_log_re_signed_with_another_key_is_refused_and_a_cosigned_one_is_not() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 300, 100);
    let old = latest_checkpoint(&path).unwrap();
    let mut ledger = open_signed(&path, &pair).unwrap();
    ledger.append(&envelopes(301, 10)).unwrap();
    drop(ledger);
    let proof = prove_inclusion(&path, "op-00000042").unwrap();
    let consistency = prove_consistency(&path, &old).unwrap();

    let other = SigningKey::parse(&generate_key("other.example/log").unwrap().signer_key).unwrap();
    let checkpoint = checkpoint_of(&proof.checkpoint);
    let resigned = checkpoint.sign(&other).unwrap();
    fs::write(tile_file(&path, "checkpoint"), &resigned).unwrap();
    match verify_v2(&path, &pair.verifier_key) {
        Err(VerifyError::Checkpoint {
            source: CheckpointError::NotSignedBy { signers, .. },
            ..
        }) => assert!(signers.starts_with("other.example/log+"), "{signers}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        open_signed(&path, &pair),
        Err(LedgerError::BadCheckpoint { .. })
    ));
    let mut swapped = proof.clone();
    swapped.checkpoint = resigned.clone();
    assert!(matches!(
        check_inclusion(&swapped, &pair.verifier_key),
        Err(CheckError::Checkpoint {
            which: "checkpoint",
            ..
        })
    ));
    let mut swapped = consistency.clone();
    swapped.new_checkpoint = resigned;
    assert!(matches!(
        check_consistency(&swapped, &pair.verifier_key),
        Err(CheckError::Checkpoint {
            which: "new checkpoint",
            ..
        })
    ));

    // Clients ignore signatures by keys they do not know (a witness's cosignature,
    // say), so one more signature on the log's own checkpoint changes nothing.
    let mut note = signed_note::Note::from_bytes(proof.checkpoint.as_bytes()).unwrap();
    note.add_sigs(&[other.signer()]).unwrap();
    let cosigned = String::from_utf8(note.to_bytes()).unwrap();
    fs::write(tile_file(&path, "checkpoint"), &cosigned).unwrap();
    assert_eq!(verify_v2(&path, &pair.verifier_key).unwrap().entries, 310);
    let mut cosigned_proof = proof;
    cosigned_proof.checkpoint = cosigned;
    check_inclusion(&cosigned_proof, &pair.verifier_key).unwrap();
}

#[test]
fn a_fork_shows_in_the_consistency_check() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let a = signed_ledger(&dir, &pair, 300, 100);
    let b = dir.path().join("fork.log");
    copy_ledger(&a, &b);
    let common = latest_checkpoint(&a).unwrap();

    let mut ledger = open_signed(&a, &pair).unwrap();
    ledger.append(&envelopes(301, 50)).unwrap();
    drop(ledger);
    let mut ledger = open_signed(&b, &pair).unwrap();
    let other: Vec<Envelope> = (301..351)
        .map(|i| {
            envelope(
                &format!("op-{i:08}"),
                format!("{{\"op_id\":\"op-{i:08}\",\"fork\":true}}").as_bytes(),
            )
        })
        .collect();
    ledger.append(&other).unwrap();
    drop(ledger);
    let cp_a = latest_checkpoint(&a).unwrap();
    let cp_b = latest_checkpoint(&b).unwrap();
    assert_eq!(checkpoint_of(&cp_a).size, checkpoint_of(&cp_b).size);

    // Both logs extend what they shared, and each alone verifies.
    for path in [&a, &b] {
        check_consistency(
            &prove_consistency(path, &common).unwrap(),
            &pair.verifier_key,
        )
        .unwrap();
        verify_v2(path, &pair.verifier_key).unwrap();
    }
    // Two signed checkpoints of one size with different roots: a fork, on their face.
    let fork = ConsistencyProof {
        old_checkpoint: cp_a.clone(),
        new_checkpoint: cp_b.clone(),
        proof: Vec::new(),
    };
    match check_consistency(&fork, &pair.verifier_key) {
        Err(CheckError::Fork { size: 350, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        prove_consistency(&b, &cp_a),
        Err(ProofError::Inconsistent {
            old_size: 350,
            new_size: 350,
            ..
        })
    ));

    // Across sizes: b grows on, and no proof takes a's checkpoint to b's tree.
    let mut ledger = open_signed(&b, &pair).unwrap();
    ledger.append(&envelopes(351, 40)).unwrap();
    drop(ledger);
    let cp_b_later = latest_checkpoint(&b).unwrap();
    assert!(matches!(
        prove_consistency(&b, &cp_a),
        Err(ProofError::Inconsistent {
            old_size: 350,
            new_size: 390,
            ..
        })
    ));
    let honest = prove_consistency(&b, &cp_b).unwrap();
    check_consistency(&honest, &pair.verifier_key).unwrap();
    let passed_off = ConsistencyProof {
        old_checkpoint: cp_a,
        new_checkpoint: cp_b_later,
        proof: honest.proof,
    };
    assert!(matches!(
        check_consistency(&passed_off, &pair.verifier_key),
        Err(CheckError::Inconsistent {
            old_size: 350,
            new_size: 390
        })
    ));
    let backwards = ConsistencyProof {
        old_checkpoint: passed_off.new_checkpoint.clone(),
        new_checkpoint: cp_b,
        proof: Vec::new(),
    };
    assert!(matches!(
        check_consistency(&backwards, &pair.verifier_key),
        Err(CheckError::Rollback {
            old_size: 390,
            new_size: 350
        })
    ));
}

#[test]
fn inclusion_proofs_of_1000_random_entries_verify_and_any_tampering_fails() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let count = 1800;
    let path = signed_ledger(&dir, &pair, count, 333);
    let vk = pair.verifier_key.as_str();
    let leaves = leaves(&path);
    let root = rfc6962::mth(&leaves);

    for index in picks(1000, count, 0x9e37_79b9_7f4a_7c15) {
        let op_id = format!("op-{:08}", index + 1);
        let proof = prove_inclusion(&path, &op_id).unwrap();
        let json = serde_json::to_string(&proof).unwrap();
        let proof: InclusionProof = serde_json::from_str(&json).unwrap();
        let report = check_inclusion(&proof, vk).unwrap();
        assert_eq!(
            report,
            InclusionReport {
                origin: NAME.to_string(),
                size: count,
                index,
                op_id,
            }
        );
        let expected: Vec<MerkleHash> = rfc6962::path(index as usize, &leaves)
            .into_iter()
            .map(MerkleHash)
            .collect();
        assert_eq!(proof.proof, expected, "audit path of {index}");
        assert_eq!(proof.leaf_hash, MerkleHash(leaves[index as usize]));
    }
    assert_eq!(
        checkpoint_of(&latest_checkpoint(&path).unwrap()).root.0,
        root
    );

    let proof = prove_inclusion(&path, "op-00000777").unwrap();
    let json: serde_json::Value = serde_json::to_value(&proof).unwrap();
    assert_eq!(json["index"], 776);
    assert_eq!(json["leaf_hash"], proof.leaf_hash.to_string());
    assert_eq!(json["proof"].as_array().unwrap().len(), proof.proof.len());

    let tamper = |edit: &dyn Fn(&mut InclusionProof)| {
        let mut bad = proof.clone();
        edit(&mut bad);
        check_inclusion(&bad, vk).unwrap_err()
    };
    for i in 0..proof.proof.len() {
        assert!(matches!(
            tamper(&|p| p.proof[i].0[i % 32] ^= 1),
            CheckError::InvalidProof { .. }
        ));
    }
    assert!(matches!(
        tamper(&|p| {
            p.proof.pop();
        }),
        CheckError::InvalidProof { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.proof.push(MerkleHash([0; 32]))),
        CheckError::InvalidProof { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.index += 1),
        CheckError::InvalidProof { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.index -= 1),
        CheckError::InvalidProof { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.index = count),
        CheckError::IndexOutOfRange { .. }
    ));
    // A payload that is not the leaf: caught by its hash, or, with the hash
    // recomputed to match, by the path.
    let edited = proof.payload.replace("CREATE", "DELETE");
    assert!(matches!(
        tamper(&|p| p.payload = edited.clone()),
        CheckError::PayloadMismatch { .. }
    ));
    assert!(matches!(
        tamper(&|p| {
            p.payload = edited.clone();
            p.leaf_hash = MerkleHash::of_leaf(edited.as_bytes());
        }),
        CheckError::InvalidProof { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.op_id = "op-00000778".to_string()),
        CheckError::OpIdMismatch { .. }
    ));
    assert!(matches!(
        tamper(&|p| p.checkpoint = p.checkpoint.replacen("\n1800\n", "\n1801\n", 1)),
        CheckError::Checkpoint { .. }
    ));
    assert!(matches!(
        check_inclusion(&proof, &keys().verifier_key),
        Err(CheckError::Checkpoint {
            source: CheckpointError::NotSignedBy { .. },
            ..
        })
    ));

    // Not in the log: no proof is made, and none can be made up.
    assert!(matches!(
        prove_inclusion(&path, "op-99999999"),
        Err(ProofError::NotFound { size: 1800, .. })
    ));
    let made_up = r#"{"op_id":"op-99999999","op_type":"CREATE"}"#;
    assert!(matches!(
        tamper(&|p| {
            p.op_id = "op-99999999".to_string();
            p.payload = made_up.to_string();
            p.leaf_hash = MerkleHash::of_leaf(made_up.as_bytes());
        }),
        CheckError::InvalidProof { .. }
    ));
    // Entries past the latest checkpoint (one lagging after a crash) are not
    // provable until a checkpoint covers them.
    let lagging = latest_checkpoint(&path).unwrap();
    let mut ledger = open_signed(&path, &pair).unwrap();
    ledger.append(&envelopes(count + 1, 1)).unwrap();
    drop(ledger);
    let op_id = format!("op-{:08}", count + 1);
    prove_inclusion(&path, &op_id).unwrap();
    fs::write(tile_file(&path, "checkpoint"), lagging).unwrap();
    assert!(matches!(
        prove_inclusion(&path, &op_id),
        Err(ProofError::NotFound { size: 1800, .. })
    ));
}

#[test]
fn consistency_proofs_between_many_sizes_verify_and_match_the_rfc() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    let mut ledger = open_signed(&path, &pair).unwrap();
    let mut checkpoints = vec![latest_checkpoint(&path).unwrap()];
    let mut total = 0;
    for batch in [
        1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 255, 256, 257, 300, 1, 512,
    ] {
        ledger.append(&envelopes(total + 1, batch)).unwrap();
        total += batch;
        // Publishing runs beside appending: wait for this batch's checkpoint.
        assert_eq!(ledger.signed_size(), Some(total));
        let current = latest_checkpoint(&path).unwrap();
        let leaves = leaves(&path);
        for old in &checkpoints {
            let proof = prove_consistency(&path, old).unwrap();
            let report = check_consistency(&proof, &pair.verifier_key).unwrap();
            let old_size = checkpoint_of(old).size;
            assert_eq!((report.old_size, report.new_size), (old_size, total));
            assert_eq!(proof.new_checkpoint, current);
            let expected: Vec<MerkleHash> = match old_size {
                0 => Vec::new(),
                m => rfc6962::proof(m as usize, &leaves)
                    .into_iter()
                    .map(MerkleHash)
                    .collect(),
            };
            assert_eq!(proof.proof, expected, "{old_size} -> {total}");
            let json = serde_json::to_string(&proof).unwrap();
            assert_eq!(
                serde_json::from_str::<ConsistencyProof>(&json).unwrap(),
                proof
            );
            if let Some(first) = proof.proof.first() {
                let mut bad = proof.clone();
                bad.proof[0] = MerkleHash([first.0[0] ^ 1; 32]);
                assert!(check_consistency(&bad, &pair.verifier_key).is_err());
            }
        }
        let same = prove_consistency(&path, &current).unwrap();
        assert!(same.proof.is_empty());
        check_consistency(&same, &pair.verifier_key).unwrap();
        checkpoints.push(current);
    }
    drop(ledger);
    verify_v2(&path, &pair.verifier_key).unwrap();
}

#[test]
fn a_torn_last_line_is_cut_and_the_signed_log_carries_on() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 300, 100);
    let intact = fs::read(&path).unwrap();
    let mut torn = intact.clone();
    torn.extend_from_slice(br#"{"seq":301,"prev":"ab"#);
    fs::write(&path, &torn).unwrap();
    assert!(verify_v2(&path, &pair.verifier_key).is_err());

    let mut ledger = open_signed(&path, &pair).unwrap();
    assert_eq!((ledger.len(), ledger.signed_size()), (300, Some(300)));
    assert_eq!(fs::read(&path).unwrap(), intact);
    ledger.append(&envelopes(301, 20)).unwrap();
    drop(ledger);
    assert_eq!(verify_v2(&path, &pair.verifier_key).unwrap().entries, 320);
}

#[test]
fn tiles_and_checkpoint_lagging_the_entries_after_a_crash_are_brought_up_to_date_on_open() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 300, 100);
    let tlog = tlog_dir(&path);
    let before = snapshot(&tlog);
    let anchor = fs::read(head_path(&path)).unwrap();
    let mut ledger = open_signed(&path, &pair).unwrap();
    ledger.append(&envelopes(301, 150)).unwrap();
    drop(ledger);
    // The crash: the batch's fsync returned, and nothing after it reached disk.
    restore(&tlog, &before);
    fs::write(head_path(&path), anchor).unwrap();
    assert!(verify_v2(&path, &pair.verifier_key).is_err());

    let ledger = open_signed(&path, &pair).unwrap();
    assert_eq!((ledger.len(), ledger.signed_size()), (450, Some(450)));
    drop(ledger);
    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    assert_eq!(report.root_hash, b64(&rfc6962::mth(&leaves(&path))));

    // Only the checkpoint lagging, after a tile it covered partly became full and
    // lost its partial versions: the open reads the full tile's prefix instead.
    let path = dir.path().join("second.log");
    let mut ledger = open_signed(&path, &pair).unwrap();
    ledger.append(&envelopes(1, 250)).unwrap();
    assert_eq!(ledger.signed_size(), Some(250));
    let checkpoint = latest_checkpoint(&path).unwrap();
    ledger.append(&envelopes(251, 10)).unwrap();
    drop(ledger);
    assert!(partials_gone(&path, "tile/0/000"));
    fs::write(tile_file(&path, "checkpoint"), checkpoint).unwrap();
    let ledger = open_signed(&path, &pair).unwrap();
    assert_eq!(ledger.signed_size(), Some(260));
    drop(ledger);
    verify_v2(&path, &pair.verifier_key).unwrap();
}

#[test]
fn a_lost_or_damaged_checkpoint_or_tile_is_rebuilt_from_the_entries_on_open() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 700, 100);
    let checkpoint = latest_checkpoint(&path).unwrap();
    let checkpoint_file = tile_file(&path, "checkpoint");

    type Damage<'a> = (&'a str, &'a dyn Fn(&Path));
    let damage: [Damage<'_>; 6] = [
        ("blank checkpoint", &|f| {
            fs::write(f.join("checkpoint"), [0u8; 40]).unwrap()
        }),
        ("no checkpoint", &|f| {
            fs::remove_file(f.join("checkpoint")).unwrap()
        }),
        ("no full tile", &|f| {
            fs::remove_file(f.join("tile/0/001")).unwrap()
        }),
        ("empty bundle", &|f| {
            fs::write(f.join("tile/entries/000"), b"").unwrap()
        }),
        ("flipped partial tile", &|f| {
            flip(&f.join("tile/0/002.p/188"), 3);
        }),
        ("no tiles at all", &|f| {
            fs::remove_dir_all(f.join("tile")).unwrap()
        }),
    ];
    for (what, damage) in damage {
        damage(&tlog_dir(&path));
        assert!(verify_v2(&path, &pair.verifier_key).is_err(), "{what}");
        let ledger = open_signed(&path, &pair).unwrap();
        assert_eq!(ledger.signed_size(), Some(700), "{what}");
        drop(ledger);
        verify_v2(&path, &pair.verifier_key).unwrap();
        // Ed25519 signatures are deterministic: the same tree signs to the same bytes.
        assert_eq!(
            fs::read_to_string(&checkpoint_file).unwrap(),
            checkpoint,
            "{what}"
        );
    }
}

#[test]
fn a_failed_batch_leaves_the_signed_log_as_it_was() {
    for fault in [Fault::TornWrite, Fault::FailedSync] {
        let dir = TempDir::new().unwrap();
        let pair = keys();
        let path = signed_ledger(&dir, &pair, 300, 100);
        let before = snapshot(&tlog_dir(&path));
        let mut ledger = open_signed(&path, &pair).unwrap();
        ledger.fault = Some(fault);
        let results = publish_batch(&mut ledger, &envelopes(301, 50));
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(PublishError::Unavailable(_)))),
            "{results:?}"
        );
        assert_eq!(ledger.signed_size(), Some(300));
        assert_eq!(snapshot(&tlog_dir(&path)), before, "{fault:?}");

        let results = publish_batch(&mut ledger, &envelopes(301, 50));
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(ledger.signed_size(), Some(350));
        drop(ledger);
        verify_v2(&path, &pair.verifier_key).unwrap();
    }
}

#[test]
fn a_tile_that_cannot_be_written_withholds_the_checkpoint_until_it_is() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = ledger_path(&dir);
    let mut ledger = open_signed(&path, &pair).unwrap();
    // A file where the bundles' directory should be: every bundle write fails.
    let blocker = tile_file(&path, "tile/entries");
    fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    fs::write(&blocker, b"in the way").unwrap();

    ledger.append(&envelopes(1, 10)).unwrap();
    assert_eq!((ledger.len(), ledger.signed_size()), (10, Some(0)));
    assert_eq!(checkpoint_of(&latest_checkpoint(&path).unwrap()).size, 0);

    fs::remove_file(&blocker).unwrap();
    ledger.append(&envelopes(11, 5)).unwrap();
    assert_eq!(ledger.signed_size(), Some(15));
    drop(ledger);
    // The retried partial bundle of 10 stays, a prefix of the one of 15.
    assert!(tile_file(&path, "tile/entries/000.p/10").exists());
    assert_eq!(verify_v2(&path, &pair.verifier_key).unwrap().entries, 15);
}

#[test]
fn payloads_too_long_for_a_leaf_are_refused_by_v2_and_stop_a_v1_ledger_becoming_v2() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let long = serde_json::to_vec(&"x".repeat(70_000)).unwrap();
    let path = ledger_path(&dir);
    let mut ledger = open_signed(&path, &pair).unwrap();
    let results = publish_batch(
        &mut ledger,
        &[
            envelope("long", &long),
            envelope("short", b"{\"op_id\":\"short\"}"),
        ],
    );
    match &results[0] {
        Err(PublishError::Permanent(message)) => assert!(message.contains("65535"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(results[1], Ok(()));
    assert_eq!(ledger.signed_size(), Some(1));
    drop(ledger);

    let v1 = dir.path().join("v1.log");
    let mut ledger = Ledger::open(&v1).unwrap();
    ledger.append(&envelopes(1, 2)).unwrap();
    ledger.append(&[envelope("long", &long)]).unwrap();
    drop(ledger);
    assert!(matches!(
        open_signed(&v1, &pair),
        Err(LedgerError::EntryTooLarge {
            seq: 3,
            len: 70_002,
            ..
        })
    ));
    // The failed conversion leaves nothing behind: the ledger is still plain v1.
    assert!(!tlog_dir(&v1).exists());
    assert_eq!(Ledger::open(&v1).unwrap().len(), 3);
}

#[test]
fn the_origin_defaults_to_the_key_name_and_must_stay_the_same() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let path = signed_ledger(&dir, &pair, 3, 3);
    assert!(
        latest_checkpoint(&path)
            .unwrap()
            .starts_with(&format!("{NAME}\n3\n"))
    );

    let custom = dir.path().join("custom.log");
    let mut options = signed(&pair);
    options.origin = Some("example.com/custom-log".to_string());
    let mut ledger = Ledger::open_with(&custom, options.clone()).unwrap();
    ledger.append(&envelopes(1, 2)).unwrap();
    drop(ledger);
    assert!(
        latest_checkpoint(&custom)
            .unwrap()
            .starts_with("example.com/custom-log\n2\n")
    );
    assert_eq!(
        verify_v2(&custom, &pair.verifier_key).unwrap().origin,
        "example.com/custom-log"
    );
    drop(Ledger::open_with(&custom, options).unwrap());
    assert!(matches!(
        open_signed(&custom, &pair),
        Err(LedgerError::OriginMismatch { .. })
    ));
    assert!(matches!(
        open_signed(&custom, &keys()),
        Err(LedgerError::BadCheckpoint {
            source: CheckpointError::NotSignedBy { .. },
            ..
        })
    ));
    // Consistency is between checkpoints of one log.
    assert!(matches!(
        prove_consistency(&custom, &latest_checkpoint(&path).unwrap()),
        Err(ProofError::OriginMismatch { .. })
    ));

    for origin in ["", "two\nlines", " padded", "tab\there"] {
        let path = dir.path().join("refused.log");
        let mut options = signed(&pair);
        options.origin = Some(origin.to_string());
        assert!(
            matches!(
                Ledger::open_with(&path, options),
                Err(LedgerError::InvalidOrigin { .. })
            ),
            "{origin:?}"
        );
        assert!(!path.exists());
    }
}

#[test]
fn a_synced_checkpoint_is_the_same_checkpoint() {
    let dir = TempDir::new().unwrap();
    let pair = keys();
    let plain = signed_ledger(&dir, &pair, 30, 10);
    let synced = dir.path().join("synced.log");
    let mut options = signed(&pair);
    options.sync_checkpoint = true;
    let mut ledger = Ledger::open_with(&synced, options).unwrap();
    append_all(&mut ledger, 1, 30, 10);
    drop(ledger);
    assert_eq!(
        latest_checkpoint(&synced).unwrap(),
        latest_checkpoint(&plain).unwrap()
    );
}

/// Appends the batches to a fresh ledger, signed or not; returns the time taken.
fn time_appends(
    dir: &TempDir,
    name: &str,
    batches: &[Vec<Envelope>],
    options: LedgerOptions,
) -> Duration {
    let path = dir.path().join(name);
    let mut ledger = Ledger::open_with(&path, options).unwrap();
    let started = Instant::now();
    for batch in batches {
        ledger.append(batch).unwrap();
    }
    // Publishing the last batches is part of appending them.
    drop(ledger);
    started.elapsed()
}

/// Times v1, v2 and (in release builds) v2 with fsynced checkpoints appending the same
/// batches in `dir`, alternating runs so drift in the disk or the page cache hits
/// them alike; prints the medians.
fn compare_appends(dir: &TempDir, place: &str, pair: &KeyPair, batches: &[Vec<Envelope>]) {
    let rounds = if cfg!(debug_assertions) { 1 } else { 3 };
    let mut synced = signed(pair);
    synced.sync_checkpoint = true;
    let mut kinds = vec![("v1", LedgerOptions::default()), ("v2", signed(pair))];
    if !cfg!(debug_assertions) {
        kinds.push(("v2 with fsynced checkpoints", synced));
    }
    let mut times = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for (i, (kind, options)) in kinds.iter().enumerate() {
            let name = format!("{}-{round}.log", kind.replace(' ', "-"));
            times[i].push(time_appends(dir, &name, batches, options.clone()));
        }
    }
    let medians: Vec<Duration> = times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[rounds / 2]
        })
        .collect();
    let files = snapshot(&tlog_dir(&dir.path().join("v2-0.log"))).len();
    // On a line of its own: libtest prints the test's name without a newline.
    println!();
    for ((kind, _), median) in kinds.iter().zip(&medians) {
        let against = match *kind {
            "v1" => String::new(),
            _ => format!(
                " ({files} log files): {:+.1}% against v1",
                (median.as_secs_f64() / medians[0].as_secs_f64() - 1.0) * 100.0
            ),
        };
        println!(
            "{kind} ({place}): appended 100000 entries in batches of 1000 in {median:?} (median of {rounds}){against}"
        );
    }
}

#[test]
fn appending_100k_signed_entries_in_batches_of_1000_is_timed_beside_v1() {
    let pair = keys();
    let batches: Vec<Vec<Envelope>> = (0..100).map(|b| envelopes(b * 1000 + 1, 1000)).collect();
    let dir = TempDir::new().unwrap();
    compare_appends(&dir, "temp dir", &pair, &batches);
    // The same on tmpfs, where making a file costs microseconds instead of the
    // fraction of a millisecond some disks' filesystems charge: what is left is
    // hashing, signing and writing.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        compare_appends(&TempDir::new_in(shm).unwrap(), "tmpfs", &pair, &batches);
    }

    let path = dir.path().join("v2-0.log");
    let started = Instant::now();
    let report = verify_v2(&path, &pair.verifier_key).unwrap();
    println!(
        "v2: verified the 100000-entry ledger and its {} tiles in {:?}",
        report.tiles,
        started.elapsed()
    );
    assert_eq!(report.entries, 100_000);
    let started = Instant::now();
    assert_eq!(
        open_signed(&path, &pair).unwrap().signed_size(),
        Some(100_000)
    );
    println!(
        "v2: reopened the 100000-entry ledger in {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let proof = prove_inclusion(&path, "op-00099999").unwrap();
    check_inclusion(&proof, &pair.verifier_key).unwrap();
    println!(
        "v2: proved and checked the inclusion of entry 99999 in {:?}",
        started.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_batches_and_reopens_give_the_reference_tree_and_provable_entries(
        batches in prop::collection::vec((0u64..300, any::<bool>()), 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        let dir = TempDir::new().unwrap();
        let pair = keys();
        let path = ledger_path(&dir);
        let mut ledger = open_signed(&path, &pair).unwrap();
        let mut total = 0;
        for (count, reopen) in &batches {
            ledger.append(&envelopes(total + 1, *count)).unwrap();
            total += count;
            prop_assert_eq!(ledger.signed_size(), Some(total));
            if *reopen {
                drop(ledger);
                ledger = open_signed(&path, &pair).unwrap();
            }
        }
        drop(ledger);
        let report = verify_v2(&path, &pair.verifier_key).unwrap();
        let leaves = leaves(&path);
        prop_assert_eq!(report.root_hash, b64(&rfc6962::mth(&leaves)));
        if total > 0 {
            let index = pick.index(total as usize);
            let proof = prove_inclusion(&path, &format!("op-{:08}", index + 1)).unwrap();
            prop_assert_eq!(check_inclusion(&proof, &pair.verifier_key).unwrap().index, index as u64);
        }
    }
}

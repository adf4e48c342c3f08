//! A signed ledger through the real binary: a key made by `ledger keygen`, a drain to
//! `ledger://PATH?signing_key=FILE`, then what an auditor runs with the verifier key
//! alone: `verify --key`, `prove` and `check-proof`, `consistency` against an older
//! checkpoint; and the attack a hash chain misses (an entry rewritten, the chain and
//! its anchor recomputed) caught.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;

fn drain(s: &Scratch, url: &str, prefix: &str, n: usize, start: i64) {
    run_ok(
        &["record", "--db", &s.db_url()],
        &op_lines(prefix, n, |i| start + i as i64),
    );
    run_ok(
        &[
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            url,
            "--until-drained",
        ],
        "",
    );
}

/// A new signing key in `dir/NAME.key`; its verifier key.
fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let out = run_ok(
        &[
            "ledger",
            "keygen",
            "--out",
            file.to_str().unwrap(),
            "--name",
            "audit.example/log",
        ],
        "",
    );
    (file, stdout(&out).trim().to_string())
}

fn signed_url(s: &Scratch, key_file: &Path) -> String {
    format!("{}?signing_key={}", s.ledger_url(), key_file.display())
}

fn checkpoint_file(ledger: &Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.tlog/checkpoint", ledger.display()))
}

/// `ledger consistency LEDGER --old CHECKPOINT --key VERIFIER`.
fn consistency(ledger: &Path, old: &Path, verifier: &str) -> std::process::Output {
    run(
        &[
            "ledger",
            "consistency",
            ledger.to_str().unwrap(),
            "--old",
            old.to_str().unwrap(),
            "--key",
            verifier,
        ],
        "",
    )
}

/// `ledger check-proof FILE --key VERIFIER`.
fn check_proof(file: &Path, verifier: &str) -> std::process::Output {
    run(
        &[
            "ledger",
            "check-proof",
            file.to_str().unwrap(),
            "--key",
            verifier,
        ],
        "",
    )
}

/// `ledger verify LEDGER --key VERIFIER`.
fn verify_with(ledger: &Path, verifier: &str) -> std::process::Output {
    run(
        &[
            "ledger",
            "verify",
            ledger.to_str().unwrap(),
            "--key",
            verifier,
        ],
        "",
    )
}

/// Copies a directory's files, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_tree(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The attack of the issue: one payload changed, every hash after it and the head
/// anchor recomputed, as anyone who can write the directory could.
fn rewrite_and_rehash(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut prev = [0u8; 32];
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut payload = e["payload"].to_string();
        if i == 3 {
            payload = payload.replace("张三", "FORGED");
        }
        let digest: [u8; 32] = Sha256::digest(payload.as_bytes()).into();
        let seq = e["seq"].as_u64().unwrap();
        let mut h = Sha256::new();
        h.update(prev);
        h.update(seq.to_be_bytes());
        h.update(digest);
        let hash: [u8; 32] = h.finalize().into();
        out.push_str(&format!(
            "{{\"seq\":{seq},\"prev\":\"{}\",\"sha256\":\"{}\",\"hash\":\"{}\",\"payload\":{payload}}}\n",
            hex::encode(prev),
            hex::encode(digest),
            hex::encode(hash)
        ));
        prev = hash;
    }
    std::fs::write(path, out).unwrap();
    let last = text.lines().count();
    std::fs::write(
        format!("{}.head", path.display()),
        format!("{{\"seq\":{last},\"hash\":\"{}\"}}\n", hex::encode(prev)),
    )
    .unwrap();
}

#[test]
fn an_auditor_checks_a_signed_ledger_with_the_verifier_key_alone_and_a_rewrite_is_caught() {
    let s = Scratch::new();
    let (key_file, verifier) = keygen(s.dir.path(), "ledger");
    assert!(verifier.starts_with("audit.example/log+"), "{verifier}");
    let secret = std::fs::read_to_string(&key_file).unwrap();
    assert!(secret.starts_with("PRIVATE+KEY+audit.example/log+"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = run(
        &["ledger", "keygen", "--out", key_file.to_str().unwrap()],
        "",
    );
    assert!(!again.status.success(), "a key is never overwritten");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), secret);

    let url = signed_url(&s, &key_file);
    let ledger = s.ledger_path();
    let ledger_arg = ledger.to_str().unwrap();
    drain(&s, &url, "first", 40, T0);
    let old_checkpoint = s.dir.path().join("old.checkpoint");
    std::fs::copy(checkpoint_file(&ledger), &old_checkpoint).unwrap();
    drain(&s, &url, "second", 25, T0 + 1_000);

    let verified = verify_with(&ledger, &verifier);
    assert!(verified.status.success());
    assert!(
        stdout(&verified).contains("65 entries"),
        "{}",
        stdout(&verified)
    );

    let proof = run_ok(&["ledger", "prove", ledger_arg, "first-000007"], "");
    let proof_file = s.dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).unwrap();
    let checked = check_proof(&proof_file, &verifier);
    assert!(checked.status.success());
    assert!(stdout(&checked).contains("first-000007"));
    let absent = run(&["ledger", "prove", ledger_arg, "never-recorded"], "");
    assert!(!absent.status.success());

    let consistent = consistency(&ledger, &old_checkpoint, &verifier);
    assert!(consistent.status.success());
    assert!(
        stdout(&consistent).contains("size 65"),
        "{}",
        stdout(&consistent)
    );

    // Another key does not verify this log.
    let (_, other) = keygen(s.dir.path(), "other");
    assert!(!verify_with(&ledger, &other).status.success());

    // The rewrite a hash chain with an unsigned head cannot see.
    rewrite_and_rehash(&ledger);
    let forged = verify_with(&ledger, &verifier);
    assert!(
        !forged.status.success(),
        "the rewritten log passed: {}",
        stdout(&forged)
    );
    let tampered_proof = std::fs::read_to_string(&proof_file)
        .unwrap()
        .replace("张三", "FORGED");
    std::fs::write(&proof_file, tampered_proof).unwrap();
    let bad = check_proof(&proof_file, &verifier);
    assert!(!bad.status.success(), "a tampered proof passed");
}

#[test]
fn a_ledger_url_with_an_unreadable_key_or_an_unknown_option_is_refused_naming_it() {
    let s = Scratch::new();
    run_ok(&["record", "--db", &s.db_url()], &op_lines("x", 1, |_| T0));
    for (url, says) in [
        (
            format!("{}?signing_key=/nonexistent/key", s.ledger_url()),
            "/nonexistent/key",
        ),
        (format!("{}?colour=red", s.ledger_url()), "colour"),
    ] {
        let out = run(
            &[
                "serve",
                "--db",
                &s.db_url(),
                "--publisher",
                &url,
                "--until-drained",
            ],
            "",
        );
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(why.contains(says), "{url}: {why}");
    }
}

#[test]
fn a_log_rolled_back_to_an_older_signed_state_or_forked_fails_the_consistency_check() {
    let keys = tempfile::tempdir().unwrap();
    let (key_file, verifier) = keygen(keys.path(), "shared");
    let a = Scratch::new();
    let b = Scratch::new();
    // Both logs hold the same first 40 operations, signed by the same key.
    drain(&a, &signed_url(&a, &key_file), "first", 40, T0);
    drain(&b, &signed_url(&b, &key_file), "first", 40, T0);
    let rolled_back = tempfile::tempdir().unwrap();
    copy_tree(a.dir.path(), rolled_back.path());
    let a_at_40 = keys.path().join("a-40.checkpoint");
    std::fs::copy(checkpoint_file(&a.ledger_path()), &a_at_40).unwrap();

    // Then they part: 25 different operations each, so two signed trees of 65.
    drain(&a, &signed_url(&a, &key_file), "second", 25, T0 + 1_000);
    drain(&b, &signed_url(&b, &key_file), "forked", 25, T0 + 1_000);
    let a_at_65 = keys.path().join("a-65.checkpoint");
    let b_at_65 = keys.path().join("b-65.checkpoint");
    std::fs::copy(checkpoint_file(&a.ledger_path()), &a_at_65).unwrap();
    std::fs::copy(checkpoint_file(&b.ledger_path()), &b_at_65).unwrap();
    assert_ne!(
        std::fs::read(&a_at_65).unwrap(),
        std::fs::read(&b_at_65).unwrap()
    );

    // What an auditor kept is extended by the honest log, and by the other at 40,
    // where both were the same.
    assert!(
        consistency(&a.ledger_path(), &a_at_40, &verifier)
            .status
            .success()
    );
    assert!(
        consistency(&b.ledger_path(), &a_at_40, &verifier)
            .status
            .success()
    );

    let fork = consistency(&b.ledger_path(), &a_at_65, &verifier);
    assert!(!fork.status.success(), "a fork passed: {}", stdout(&fork));
    let why = String::from_utf8_lossy(&fork.stderr);
    assert!(why.contains("fork"), "{why}");

    // The whole directory put back as it was at 40: a log that verifies on its own,
    // with its own valid signed checkpoint, and is caught against the one kept at 65.
    let rolled = rolled_back
        .path()
        .join(a.ledger_path().file_name().unwrap());
    let alone = verify_with(&rolled, &verifier);
    assert!(
        alone.status.success(),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    let truncated = consistency(&rolled, &a_at_65, &verifier);
    assert!(
        !truncated.status.success(),
        "a truncated log passed: {}",
        stdout(&truncated)
    );

    // Cut without its signed state put back, the log fails verification outright.
    let text = std::fs::read_to_string(a.ledger_path()).unwrap();
    let kept: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
    std::fs::write(a.ledger_path(), kept).unwrap();
    let cut = verify_with(&a.ledger_path(), &verifier);
    assert!(!cut.status.success(), "a cut log passed: {}", stdout(&cut));
}

/// RFC 6962's Merkle tree hash over leaf hashes, computed here and not by the crate
/// under test, to check what the served tiles add up to.
fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let split = leaves.len().next_power_of_two() / 2;
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(merkle_root(&leaves[..split]));
    h.update(merkle_root(&leaves[split..]));
    h.finalize().into()
}

#[tokio::test]
async fn the_checkpoint_tiles_and_proofs_are_served_to_readers_and_add_up_to_the_signed_root() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let (key_file, verifier) = keygen(dir.path(), "served");
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let ledger = dir.path().join("a.ledger");
    run_ok(
        &["record", "--db", &db],
        &op_lines("served", 300, |i| T0 + i as i64),
    );
    let config = format!(
        "[[tenant]]\nid = \"acme\"\ndb = \"{db}\"\npublisher = \"ledger://{}?signing_key={}\"\n\
         [[tenant]]\nid = \"globex\"\ndb = \"sqlite://{}\"\npublisher = \"ledger://{}\"\n\
         [[credential]]\nname = \"acme-read\"\nrole = \"read\"\ntenant = \"acme\"\nsecret = \"acme-read-secret-000\"\n\
         [[credential]]\nname = \"acme-ingest\"\nrole = \"ingest\"\ntenant = \"acme\"\nsecret = \"acme-ingest-secret-0\"\n\
         [[credential]]\nname = \"globex-read\"\nrole = \"read\"\ntenant = \"globex\"\nsecret = \"globex-read-secret-0\"\n",
        ledger.display(),
        key_file.display(),
        dir.path().join("g.db").display(),
        dir.path().join("g.ledger").display()
    );
    let config_file = dir.path().join("trustlog.toml");
    std::fs::write(&config_file, config).unwrap();
    let server = Server::start(&["--config", config_file.to_str().unwrap()]);
    let get = |route: &str, secret: Option<&str>| {
        let req = server.http.get(format!("{}{route}", server.base));
        let req = match secret {
            Some(s) => req.bearer_auth(s),
            None => req,
        };
        async move { req.send().await.unwrap() }
    };
    let read = |route: &str| get(route, Some("acme-read-secret-000"));
    let bytes = |route: String| async move {
        let response = read(&route).await;
        assert_eq!(response.status(), 200, "{route}");
        response.bytes().await.unwrap().to_vec()
    };

    let base = "/v1/tenants/acme/ledger";
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoint = loop {
        let response = read(&format!("{base}/checkpoint")).await;
        if response.status() == 200 {
            assert_eq!(response.headers()["cache-control"], "no-store");
            let text = response.text().await.unwrap();
            if text.lines().nth(1) == Some("300") {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the 300 rows were not signed in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        checkpoint,
        std::fs::read_to_string(checkpoint_file(&ledger)).unwrap()
    );
    // A standard client: the signed note checks with the verifier key alone.
    let note = signed_note::Note::from_bytes(checkpoint.as_bytes()).unwrap();
    let key = signed_note::StandardVerifier::new(&verifier).unwrap();
    note.verify(&signed_note::VerifierList::new(vec![Box::new(key)]))
        .unwrap();
    let root = base64::engine::general_purpose::STANDARD
        .decode(checkpoint.lines().nth(2).unwrap())
        .unwrap();

    // 300 leaves: the full tile 0/000 and the partial 0/001.p/44, with their bundles.
    let full = read(&format!("{base}/tile/0/000")).await;
    assert_eq!(
        full.headers()["cache-control"],
        "private, max-age=31536000, immutable"
    );
    let mut hashes = full.bytes().await.unwrap().to_vec();
    hashes.extend(bytes(format!("{base}/tile/0/001.p/44")).await);
    let leaves: Vec<[u8; 32]> = hashes.chunks(32).map(|c| c.try_into().unwrap()).collect();
    assert_eq!(leaves.len(), 300);
    assert_eq!(merkle_root(&leaves).to_vec(), root);
    let mut bundles = bytes(format!("{base}/tile/entries/000")).await;
    bundles.extend(bytes(format!("{base}/tile/entries/001.p/44")).await);
    let mut at = 0;
    for (i, leaf) in leaves.iter().enumerate() {
        let len = usize::from(u16::from_be_bytes([bundles[at], bundles[at + 1]]));
        let entry = &bundles[at + 2..at + 2 + len];
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(entry);
        assert_eq!(&<[u8; 32]>::from(h.finalize()), leaf, "entry {i}");
        at += 2 + len;
    }
    assert_eq!(at, bundles.len());

    // A proof over HTTP checks offline with the verifier key, as the CLI's does.
    let proof = bytes("/v1/tenants/acme/operations/served-000123/proof".into()).await;
    let parsed: trustlog_host::ledger::InclusionProof = serde_json::from_slice(&proof).unwrap();
    assert_eq!(parsed.index, 123);
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof).unwrap();
    let checked = check_proof(&proof_file, &verifier);
    assert!(checked.status.success());
    assert!(stdout(&checked).contains("served-000123"));

    let status = |route: String, secret: Option<&'static str>| {
        let response = get(&route, secret);
        async move { response.await.status().as_u16() }
    };
    for route in [
        format!("{base}/checkpoint"),
        format!("{base}/tile/0/000"),
        "/v1/tenants/acme/operations/served-000001/proof".to_string(),
    ] {
        assert_eq!(status(route.clone(), None).await, 401, "{route}");
        assert_eq!(
            status(route.clone(), Some("wrong-secret-0000000")).await,
            401,
            "{route}"
        );
        assert_eq!(
            status(route.clone(), Some("acme-ingest-secret-0")).await,
            403,
            "{route}"
        );
        assert_eq!(
            status(route.clone(), Some("globex-read-secret-0")).await,
            404,
            "{route}"
        );
    }
    let reader = Some("acme-read-secret-000");
    for (route, want) in [
        ("/v1/tenants/acme/operations/never-recorded/proof", 404),
        ("/v1/tenants/acme/ledger/tile/0/002", 404),
        ("/v1/tenants/acme/ledger/tile/%2E%2E%2Fcheckpoint", 400),
        ("/v1/tenants/acme/ledger/tile/0/..%2F..%2F..%2Fa.db", 400),
        ("/v1/tenants/acme/ledger/tile/entries/000.p/0", 400),
    ] {
        assert_eq!(status(route.to_string(), reader).await, want, "{route}");
    }
    // An unsigned (v1) ledger has no checkpoint to serve.
    assert_eq!(
        status(
            "/v1/tenants/globex/ledger/checkpoint".into(),
            Some("globex-read-secret-0")
        )
        .await,
        404
    );
}

#[test]
fn the_demo_signs_a_new_ledger_with_a_key_it_makes_beside_it_and_says_where() {
    let s = Scratch::new();
    let ledger = s.ledger_path();
    let key_file = std::path::PathBuf::from(format!("{}.key", ledger.display()));
    let demo = |s: &Scratch| {
        run_ok(
            &[
                "demo",
                "--ops",
                "25",
                "--db",
                &s.db_url(),
                "--publisher",
                &s.ledger_url(),
            ],
            "",
        )
    };
    let first = stdout(&demo(&s));
    let said = format!("made a signing key in {}", key_file.display());
    assert!(first.contains(&said), "{first}");
    let verifier = first
        .split("its verifier key is ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        first.contains("checkpoint signed by trustlog-demo at size 25"),
        "{first}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&key_file).unwrap();

    // Run again: the same key signs the grown log, which still extends the first.
    let at_25 = s.dir.path().join("25.checkpoint");
    std::fs::copy(checkpoint_file(&ledger), &at_25).unwrap();
    let second = stdout(&demo(&s));
    assert!(
        second.contains(&format!("signing with the key in {}", key_file.display())),
        "{second}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    let verified = verify_with(&ledger, &verifier);
    assert!(verified.status.success());
    assert!(
        stdout(&verified).contains("50 entries"),
        "{}",
        stdout(&verified)
    );
    assert!(consistency(&ledger, &at_25, &verifier).status.success());

    // A ledger that exists unsigned is left a v1 chain, and the demo says how to sign it.
    let v1 = Scratch::new();
    drain(&v1, &v1.ledger_url(), "old", 5, T0);
    let third = stdout(&demo(&v1));
    assert!(
        third.contains("unsigned (v1) ledger and stays so"),
        "{third}"
    );
    assert!(!checkpoint_file(&v1.ledger_path()).exists());
    assert!(!std::path::Path::new(&format!("{}.key", v1.ledger_path().display())).exists());
    let plain = run_ok(
        &["ledger", "verify", v1.ledger_path().to_str().unwrap()],
        "",
    );
    assert!(stdout(&plain).contains("30 entries"), "{}", stdout(&plain));
}

//! A signed ledger through the real binary: a key made by `ledger keygen`, a drain to
//! `ledger://PATH?signing_key=FILE`, then what an auditor runs with the verifier key
//! alone: `verify --key`, `prove` and `check-proof`, `consistency` against an older
//! checkpoint; and the attack a hash chain misses (an entry rewritten, the chain and
//! its anchor recomputed) caught.

mod support;

use std::path::Path;

use sha2::{Digest, Sha256};
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
    let key_file = s.dir.path().join("ledger.key");
    let out = run_ok(
        &[
            "ledger",
            "keygen",
            "--out",
            key_file.to_str().unwrap(),
            "--name",
            "audit.example/log",
        ],
        "",
    );
    let verifier = stdout(&out).trim().to_string();
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

    let url = format!("{}?signing_key={}", s.ledger_url(), key_file.display());
    let ledger = s.ledger_path();
    let ledger_arg = ledger.to_str().unwrap();
    drain(&s, &url, "first", 40, T0);
    let old_checkpoint = s.dir.path().join("old.checkpoint");
    std::fs::copy(
        format!("{}.tlog/checkpoint", ledger.display()),
        &old_checkpoint,
    )
    .unwrap();
    drain(&s, &url, "second", 25, T0 + 1_000);

    let verified = run_ok(&["ledger", "verify", ledger_arg, "--key", &verifier], "");
    assert!(
        stdout(&verified).contains("65 entries"),
        "{}",
        stdout(&verified)
    );

    let proof = run_ok(&["ledger", "prove", ledger_arg, "first-000007"], "");
    let proof_file = s.dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).unwrap();
    let checked = run_ok(
        &[
            "ledger",
            "check-proof",
            proof_file.to_str().unwrap(),
            "--key",
            &verifier,
        ],
        "",
    );
    assert!(stdout(&checked).contains("first-000007"));
    let absent = run(&["ledger", "prove", ledger_arg, "never-recorded"], "");
    assert!(!absent.status.success());

    let consistent = run_ok(
        &[
            "ledger",
            "consistency",
            ledger_arg,
            "--old",
            old_checkpoint.to_str().unwrap(),
            "--key",
            &verifier,
        ],
        "",
    );
    assert!(
        stdout(&consistent).contains("size 65"),
        "{}",
        stdout(&consistent)
    );

    // Another key does not verify this log.
    let other_key = s.dir.path().join("other.key");
    let other = run_ok(
        &[
            "ledger",
            "keygen",
            "--out",
            other_key.to_str().unwrap(),
            "--name",
            "audit.example/log",
        ],
        "",
    );
    let refused = run(
        &[
            "ledger",
            "verify",
            ledger_arg,
            "--key",
            stdout(&other).trim(),
        ],
        "",
    );
    assert!(!refused.status.success());

    // The rewrite a hash chain with an unsigned head cannot see.
    rewrite_and_rehash(&ledger);
    let forged = run(&["ledger", "verify", ledger_arg, "--key", &verifier], "");
    assert!(
        !forged.status.success(),
        "the rewritten log passed: {}",
        stdout(&forged)
    );
    let tampered_proof = std::fs::read_to_string(&proof_file)
        .unwrap()
        .replace("张三", "FORGED");
    std::fs::write(&proof_file, tampered_proof).unwrap();
    let bad = run(
        &[
            "ledger",
            "check-proof",
            proof_file.to_str().unwrap(),
            "--key",
            &verifier,
        ],
        "",
    );
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

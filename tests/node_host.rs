//! The Node host (`host/node`, the same component transpiled with jco) and this one are
//! interchangeable: each reads, continues and verifies what the other wrote, from the
//! same cursor, delivering nothing twice; and both run the very component this binary
//! exports.
//!
//! Needs Node.js 20 and npm: the first test to run installs the package's
//! dependencies (`npm ci`) when they are missing and transpiles the component this
//! binary exports, so `cargo test` alone suffices.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Runs a command in `host/node`, insisting on success.
fn in_node_dir(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(node_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {program} (Node.js 20 and npm are needed): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Installs the Node host's dependencies when missing and transpiles the component this
/// binary exports; once per test process. Returns the digest `component export` printed.
fn prepared() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        if !node_dir().join("node_modules/.package-lock.json").exists() {
            in_node_dir("npm", &["ci", "--no-audit", "--no-fund"]);
        }
        std::fs::create_dir_all(node_dir().join("build")).unwrap();
        let wasm = node_dir().join("build/trustlog.wasm");
        let out = run_ok(&["component", "export", wasm.to_str().unwrap()], "");
        let line = String::from_utf8(out.stdout).unwrap();
        let digest = line.split_whitespace().next().unwrap().to_string();
        in_node_dir("npm", &["run", "--silent", "transpile"]);
        digest
    })
}

fn node(args: &[&str]) -> Command {
    prepared();
    let mut cmd = Command::new("node");
    cmd.arg(node_dir().join("bin/trustlog.mjs"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the Node host to the end and returns its JSON summary (its last stdout line).
fn node_ok(args: &[&str]) -> Value {
    let out = node(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node host {args:?} failed with {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("the last line is not a JSON summary ({e}): {stdout}"))
}

fn rust_drain(s: &Scratch) {
    run_ok(
        &[
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            &s.ledger_url(),
            "--until-drained",
        ],
        "",
    );
}

fn node_drain(s: &Scratch) -> Value {
    node_ok(&[
        "serve",
        "--db",
        s.db_path().to_str().unwrap(),
        "--ledger",
        s.ledger_path().to_str().unwrap(),
        "--until-drained",
    ])
}

fn record(s: &Scratch, prefix: &str, n: usize, start: i64) {
    // Five rows per timestamp, so hand-overs fall between rows sharing one.
    run_ok(
        &["record", "--db", &s.db_url()],
        &op_lines(prefix, n, |i| start + (i / 5) as i64),
    );
}

fn verify_ledger(s: &Scratch) -> String {
    let out = run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    String::from_utf8(out.stdout).unwrap()
}

/// Every recorded op_id is in the ledger exactly once, and nothing else is.
fn assert_delivered_once(s: &Scratch, expected: &HashSet<String>) {
    let ids = ledger_op_ids(&s.ledger_path());
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct.len(), ids.len(), "an op_id delivered twice");
    assert_eq!(&distinct, expected);
    let st = status(&s.db_url());
    assert_eq!(st["trustlogged"], expected.len() as u64, "{st}");
    assert_eq!(st["not_trustlogged"], 0, "{st}");
}

fn ids(prefix: &str, n: usize) -> impl Iterator<Item = String> {
    (0..n).map(move |i| format!("{prefix}-{i:06}"))
}

const T0: i64 = 1_764_000_000_000_000;

#[test]
fn both_hosts_run_the_component_this_binary_exports() {
    let digest = prepared();
    let s = Scratch::new();
    let summary = node_ok(&[
        "demo",
        "--db",
        s.db_path().to_str().unwrap(),
        "--ledger",
        s.ledger_path().to_str().unwrap(),
        "--ops",
        "300",
    ]);
    assert_eq!(summary["component_sha256"], *digest, "{summary}");
    assert_eq!(summary["delivered"], 300, "{summary}");
    let exported = std::fs::read(node_dir().join("build/trustlog.wasm")).unwrap();
    assert_eq!(
        exported,
        trustlog_host::sandbox::runtime::GUEST_WASM,
        "the export is the embedded component, byte for byte"
    );
}

#[test]
fn what_the_node_host_writes_passes_status_and_ledger_verify() {
    let s = Scratch::new();
    let summary = node_ok(&[
        "demo",
        "--db",
        s.db_path().to_str().unwrap(),
        "--ledger",
        s.ledger_path().to_str().unwrap(),
        "--ops",
        "1000",
    ]);
    let st = status(&s.db_url());
    assert_eq!(
        (&st["total"], &st["trustlogged"], &st["dead_letter"]),
        (&Value::from(1000), &Value::from(1000), &Value::from(0)),
        "{st}"
    );
    assert_eq!(
        st["cursor"]["op_id"], summary["stats"]["cursor"]["op_id"],
        "both hosts read one cursor"
    );
    let verified = verify_ledger(&s);
    assert!(
        verified.starts_with("ledger ok: 1000 entries"),
        "{verified}"
    );
    assert!(
        verified.contains(summary["ledger_head"].as_str().unwrap()),
        "{verified} vs {summary}"
    );
}

#[test]
fn the_hosts_take_turns_on_one_database_and_ledger_from_the_same_cursor() {
    let s = Scratch::new();
    run_ok(&["migrate", "--db", &s.db_url()], "");
    let mut expected = HashSet::new();

    record(&s, "rust-first", 2000, T0);
    expected.extend(ids("rust-first", 2000));
    rust_drain(&s);

    // Rows sharing the cursor's timestamp, after it in op_id order, then later ones.
    record(&s, "rust-first-z", 10, T0 + 399);
    expected.extend(ids("rust-first-z", 10));
    record(&s, "node-next", 2000, T0 + 1_000);
    expected.extend(ids("node-next", 2000));
    let summary = node_drain(&s);
    assert_eq!(summary["delivered"], 2010, "{summary}");

    record(&s, "rust-again", 2000, T0 + 2_000);
    expected.extend(ids("rust-again", 2000));
    rust_drain(&s);

    assert_delivered_once(&s, &expected);
    assert!(verify_ledger(&s).starts_with("ledger ok: 6010 entries"));
}

/// Polls the database until `serve` has delivered some rows but not all.
fn wait_for_some_delivered(s: &Scratch, of: i64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    block_on(async {
        let pool = s.pool().await;
        loop {
            let done = count_status(&pool, "TRUSTLOGGED").await;
            if done > 0 {
                assert!(done < of, "the whole backlog went before the stop");
                return;
            }
            assert!(child.try_wait().unwrap().is_none(), "serve exited early");
            assert!(Instant::now() < deadline, "nothing delivered in 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn sigterm(child: Child) -> Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_backlog_the_node_host_stopped_halfway_is_finished_by_this_host() {
    let s = Scratch::new();
    run_ok(&["migrate", "--db", &s.db_url()], "");
    record(&s, "half", 30_000, T0);
    let mut child = node(&[
        "serve",
        "--db",
        s.db_path().to_str().unwrap(),
        "--ledger",
        s.ledger_path().to_str().unwrap(),
        "--batch-size",
        "50",
    ])
    .spawn()
    .unwrap();
    wait_for_some_delivered(&s, 30_000, &mut child);
    let out = sigterm(child);
    assert!(
        out.status.success(),
        "the node host stops cleanly on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let handed_over = status(&s.db_url())["trustlogged"].as_u64().unwrap();
    assert!(
        handed_over > 0 && handed_over < 30_000,
        "{handed_over} delivered"
    );

    rust_drain(&s);
    assert_delivered_once(&s, &ids("half", 30_000).collect());
}

#[test]
fn a_backlog_this_host_stopped_halfway_is_finished_by_the_node_host() {
    let s = Scratch::new();
    run_ok(&["migrate", "--db", &s.db_url()], "");
    record(&s, "half", 30_000, T0);
    let mut child = bin()
        .args([
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            &s.ledger_url(),
            "--batch-size",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_some_delivered(&s, 30_000, &mut child);
    let out = sigterm(child);
    assert!(
        out.status.success(),
        "serve stops cleanly on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let summary = node_drain(&s);
    assert!(summary["delivered"].as_u64().unwrap() > 0, "{summary}");
    assert_delivered_once(&s, &ids("half", 30_000).collect());
    assert!(verify_ledger(&s).starts_with("ledger ok: 30000 entries"));
}

//! Shared helpers for the test suites: sample operations, the binary, SQL peeks.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sqlx::Row;
use sqlx::sqlite::SqlitePool;

/// The `trustlog` binary under test.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trustlog"));
    // TRUSTLOG_TEST_SERVER_LOG=trustlog=debug shows every tick of the servers a test starts.
    let log = std::env::var("TRUSTLOG_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into());
    cmd.env("RUST_LOG", log)
        // Port 0: tests run side by side, and `serve` prints the port it got.
        .env("TRUSTLOG_LISTEN", "127.0.0.1:0")
        .env_remove("TRUSTLOG_DB")
        .env_remove("TRUSTLOG_PUBLISHER")
        .env_remove("TRUSTLOG_ADMIN_TOKEN");
    cmd
}

/// Runs the binary with `args`, feeding `stdin`.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning trustlog");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary and insists on exit code 0.
pub fn run_ok(args: &[&str], stdin: &str) -> Output {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "trustlog {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Sends SIGTERM to a running `serve`, waits, and insists on exit code 0.
pub fn stop(child: std::process::Child) -> Output {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "serve exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A local port nothing listens on: bound, then released.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory with a database and a ledger in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh scratch directory.
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("trustlog.db")
    }

    /// `sqlite://…` of the database.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.db_path().display())
    }

    /// The ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("trustlog.ledger")
    }

    /// `ledger://…` of the ledger.
    pub fn ledger_url(&self) -> String {
        format!("ledger://{}", self.ledger_path().display())
    }

    /// A pool on the database, for peeking as the application would.
    pub async fn pool(&self) -> SqlitePool {
        SqlitePool::connect(&format!("{}?mode=rwc", self.db_url()))
            .await
            .unwrap()
    }
}

/// RFC 3339 of `micros` since the epoch, six fractional digits.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One operation as a JSON line, like an application would send it.
pub fn op_line(op_id: &str, micros: i64) -> String {
    serde_json::json!({
        "op_id": op_id,
        "op_actor": "张三",
        "doid": format!("10.1000/{op_id}"),
        "producer_id": "svc-test",
        "request_body_hash": "a".repeat(64),
        "response_body_hash": null,
        "op_source": "IRP",
        "op_type": "Create",
        "do_prefix": "10.1000",
        "do_repository": "repo",
        "client_ip": "192.0.2.1",
        "server_ip": null,
        "timestamp": rfc3339(micros),
    })
    .to_string()
}

/// `n` JSON lines with ids `{prefix}-{i}`, timestamps from `micros(i)`.
pub fn op_lines(prefix: &str, n: usize, micros: impl Fn(usize) -> i64) -> String {
    (0..n)
        .map(|i| op_line(&format!("{prefix}-{i:06}"), micros(i)) + "\n")
        .collect()
}

/// Every ledger entry's payload, parsed.
pub fn ledger_payloads(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["payload"].clone())
        .collect()
}

/// How many entries a ledger that a running `serve` may be appending to holds so far:
/// a line it is still writing (no newline yet) is not counted, nor parsed.
pub fn ledger_entries_so_far(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}

/// The op_ids in the ledger, in order.
pub fn ledger_op_ids(path: &Path) -> Vec<String> {
    ledger_payloads(path)
        .iter()
        .map(|p| p["op_id"].as_str().unwrap().to_string())
        .collect()
}

/// `status --json` of the database.
pub fn status(db_url: &str) -> serde_json::Value {
    let out = run_ok(&["status", "--db", db_url, "--json"], "");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Count of operations with `status`.
pub async fn count_status(pool: &SqlitePool, status: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM operation WHERE trustlog_status = ?")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

/// A tokio runtime for the synchronous e2e tests that peek with sqlx.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
/// A name no other test (or test process) uses at the same time: `PREFIX_PID_SEQ_NANOS`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub mod backends;
pub mod brokers;
pub mod forwarding;
pub mod guests;
pub mod proxy;
pub mod server;

//! End-to-end on every database: the real binary, real servers, rows written
//! by other clients while `serve` runs.

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::backends::{Backend, TestDb};
use support::*;

const T0: i64 = 1_764_000_000_000_000;

on_every_database!(
    recorded_operations_are_delivered_and_the_ledger_verifies,
    rows_inserted_by_another_client_while_serving_are_delivered,
    a_database_the_seed_module_filled_is_migrated_served_and_verified
);

fn plain_insert(t: &TestDb, id: &str, micros: i64) -> String {
    format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
         VALUES ('{id}', 'app', 'doid', 'prod', 'IRP', 'Create', '10.1', 'repo', {})",
        t.timestamp_sql(micros)
    )
}

fn spawn_serve(db: &str, ledger: &str, extra: &[&str]) -> Child {
    bin()
        .args(["serve", "--db", db, "--publisher", ledger])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn recorded_operations_are_delivered_and_the_ledger_verifies(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("l.ledger");
    let ledger = format!("ledger://{}", ledger_path.display());
    run_ok(&["migrate", "--db", &t.url], "");
    run_ok(&["migrate", "--db", &t.url], "");
    let out = run_ok(
        &["record", "--db", &t.url, "--publisher", &ledger],
        &op_lines("e2e", 2_000, |i| T0 + (i / 7) as i64),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(r#""stored":2000"#),
        "{b:?}"
    );
    run_ok(
        &[
            "serve",
            "--db",
            &t.url,
            "--publisher",
            &ledger,
            "--until-drained",
            "--batch-size",
            "300",
        ],
        "",
    );
    let st = status(&t.url);
    assert_eq!(
        (st["trustlogged"].as_u64(), st["not_trustlogged"].as_u64()),
        (Some(2_000), Some(0)),
        "{b:?}: {st}"
    );
    let mut ids = ledger_op_ids(&ledger_path);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2_000, "{b:?}");
    run_ok(&["ledger", "verify", ledger_path.to_str().unwrap()], "");
}

async fn rows_inserted_by_another_client_while_serving_are_delivered(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("l.ledger");
    run_ok(&["migrate", "--db", &t.url], "");
    let serve = spawn_serve(
        &t.url,
        &format!("ledger://{}", ledger_path.display()),
        &["--poll-interval", "200ms"],
    );
    for i in 0..30 {
        t.execute(&plain_insert(&t, &format!("sql-{i}"), T0 + i))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while t
        .scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
        .await
        < 30
    {
        assert!(
            Instant::now() < deadline,
            "{b:?}: rows inserted by another client were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(serve);
    assert_eq!(ledger_op_ids(&ledger_path).len(), 30, "{b:?}");
}

/// Waits until `op_id` is delivered; returns how long it took from `since`.
async fn delivered_after(t: &TestDb, op_id: &str, since: Instant, limit: Duration) -> Duration {
    loop {
        let n = t.scalar(&format!("SELECT COUNT(*) FROM operation WHERE op_id = '{op_id}' AND trustlog_status = 'TRUSTLOGGED'")).await;
        if n == 1 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{op_id} was not delivered within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_row_inserted_with_psql_wakes_the_idle_scanner() {
    let t = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["migrate", "--db", &t.url], "");
    // A 60 s poll: only NOTIFY can deliver within the test's limits.
    let serve = spawn_serve(
        &t.url,
        &format!("ledger://{}", dir.path().join("l").display()),
        &[
            "--poll-interval",
            "60s",
            "--retry-interval",
            "60s",
            "--sweep-interval",
            "60s",
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // psql itself, as any application would: the trigger is in the database, not in us.
    let url_for_psql = t
        .url
        .replace("options=-c%20search_path%3D", "options=-csearch_path%3D");
    let since = Instant::now();
    let psql = std::process::Command::new("psql")
        .arg(&url_for_psql)
        .arg("-qc")
        .arg(plain_insert(&t, "from-psql", T0))
        .status()
        .unwrap();
    assert!(psql.success());
    delivered_after(&t, "from-psql", since, Duration::from_secs(5)).await;

    // 200 inserts from another connection, one at a time, each waited for.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let since = Instant::now();
        t.execute(&plain_insert(&t, &format!("wake-{i}"), T0 + 1 + i))
            .await;
        latencies
            .push(delivered_after(&t, &format!("wake-{i}"), since, Duration::from_secs(5)).await);
    }
    latencies.sort();
    let (p50, p99) = (latencies[100], latencies[197]);
    println!(
        "insert→TRUSTLOGGED while idle, 200 inserts: p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    assert!(
        p50 < Duration::from_secs(1),
        "the median is far below the 60 s poll: {p50:?}"
    );
    stop(serve);
}

/// Sessions of the host named `app` (its `application_name`): all of them, and those
/// listening.
async fn host_sessions(app: &str) -> (i64, i64) {
    (
        support::backends::postgres_sessions(app, false).await,
        support::backends::postgres_sessions(app, true).await,
    )
}

/// Serves `t` under the session name `app` with `extra` arguments until a row another
/// client inserts is delivered; then the host's sessions as PostgreSQL sees them, once
/// one of them listens or after three seconds (the listener starts beside the worker).
async fn sessions_while_serving(t: &TestDb, app: &str, id: &str, extra: &[&str]) -> (i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}&application_name={app}", t.url);
    let ledger = format!("ledger://{}", dir.path().join("l").display());
    let serve = spawn_serve(&url, &ledger, extra);
    t.execute(&plain_insert(t, id, T0)).await;
    delivered_after(t, id, Instant::now(), Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let sessions = loop {
        let sessions = host_sessions(app).await;
        if sessions.1 > 0 || Instant::now() > deadline {
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop(serve);
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_poll_only_serves_without_listen() {
    let t = TestDb::create(Backend::Postgres).await;
    assert!(t.url.contains('?'), "{}", t.url);
    run_ok(&["migrate", "--db", &t.url], "");
    // The same host without --poll-only listens: the check below can see a LISTEN.
    let app = unique_name("tl_listening");
    let (all, listening) = sessions_while_serving(&t, &app, "notified", &[]).await;
    assert!(
        all >= 1 && listening == 1,
        "{all} sessions, {listening} listening"
    );

    let app = unique_name("tl_polling");
    let (all, listening) = sessions_while_serving(
        &t,
        &app,
        "polled",
        &["--poll-only", "--poll-interval", "300ms"],
    )
    .await;
    assert!(all >= 1, "the host's sessions are seen: {all}");
    assert_eq!(listening, 0, "--poll-only never LISTENs ({all} sessions)");
}

/// The fixture of `tests/fixtures/seed/` for `b`: the seed's tables as a Go developer
/// declares them, and rows inserted with the seed's own statement.
fn seed_fixture(b: Backend) -> String {
    let file = match b {
        Backend::Sqlite => "sqlite.sql",
        Backend::Postgres => "postgresql.sql",
        Backend::MySql => "mysql.sql",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/seed")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn a_database_the_seed_module_filled_is_migrated_served_and_verified(b: Backend) {
    let t = TestDb::create(b).await;
    if let Some(path) = t.url.strip_prefix("sqlite://") {
        // The application created the file, as it created the tables.
        std::fs::File::create(path).unwrap();
    }
    for statement in seed_fixture(b).split(";\n") {
        let sql: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !sql.trim().is_empty() {
            t.execute(&sql).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("seed.ledger");
    let ledger = format!("ledger://{}", ledger_path.display());
    let serve = [
        "serve",
        "--db",
        &t.url,
        "--publisher",
        &ledger,
        "--until-drained",
    ];

    let report = run(&["migrate", "--db", &t.url], "");
    let said = String::from_utf8_lossy(&report.stdout).to_string();
    assert!(
        said.contains("operation.timestamp"),
        "{b:?}: its type is noted: {said}"
    );
    assert!(
        said.contains("trustlog_lease: missing; migrate creates it"),
        "{said}"
    );
    // MySQL: utf8mb4's default collation is case-blind, and op_ids must compare as
    // bytes. SQLite: the seed's pending retry holds its times as text.
    let changes = match b {
        Backend::MySql => 2,
        Backend::Sqlite => 1,
        Backend::Postgres => 0,
    };
    if changes > 0 {
        assert!(!report.status.success(), "{said}");
        assert!(said.contains("trustlog_retry: needs a change"), "{said}");
        if b == Backend::MySql {
            assert!(said.contains("operation: needs a change"), "{said}");
            assert!(said.contains("COLLATE utf8mb4_bin"), "{said}");
        }
        let refused = run(&serve, "");
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "serve refuses: {why}");
        assert!(why.contains("cannot be served as they are"), "{why}");
        assert_eq!(
            t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
                .await,
            2,
            "a refusal changes nothing"
        );
        let applied = run_ok(&["migrate", "--db", &t.url, "--apply"], "");
        let applied = String::from_utf8_lossy(&applied.stdout);
        assert!(
            applied.contains(&format!("changes applied: {changes}")),
            "{applied}"
        );
        let again = run_ok(&["migrate", "--db", &t.url], "");
        let again = String::from_utf8_lossy(&again.stdout);
        assert!(again.contains("trustlog_retry: serves as is"), "{again}");
    } else {
        assert!(
            report.status.success(),
            "{said}\n{}",
            String::from_utf8_lossy(&report.stderr)
        );
        assert!(said.contains("operation: serves as is"), "{said}");
    }

    run_ok(&serve, "");
    let st = status(&t.url);
    assert_eq!(
        (st["trustlogged"].as_u64(), st["not_trustlogged"].as_u64()),
        (Some(12), Some(0)),
        "{b:?}: {st}"
    );
    run_ok(&["ledger", "verify", ledger_path.to_str().unwrap()], "");
    let payloads = ledger_payloads(&ledger_path);
    let mut delivered: Vec<(String, String)> = payloads
        .iter()
        .map(|p| {
            (
                p["op_id"].as_str().unwrap().to_string(),
                p["timestamp"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    delivered.sort();
    // The ten rows the seed left waiting, once each, at the instants it stored (MySQL's
    // DATETIME(3) keeps milliseconds); the two it delivered are not delivered again.
    let want: Vec<(String, String)> = (2..12)
        .map(|i| {
            let micros = [0, 123_456, 246_912][i % 3];
            let frac = match b {
                Backend::MySql => micros / 1000 * 1000,
                _ => micros,
            };
            (
                format!("seed-op-{i:03}"),
                format!("2026-11-24T02:{i:02}:00.{frac:06}Z"),
            )
        })
        .collect();
    assert_eq!(delivered, want, "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        0,
        "{b:?}: the seed's pending retry is done"
    );
}

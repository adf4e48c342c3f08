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
    rows_inserted_by_another_client_while_serving_are_delivered
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_poll_only_serves_without_listen() {
    let t = TestDb::create(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["migrate", "--db", &t.url], "");
    let serve = bin()
        .args([
            "serve",
            "--db",
            &t.url,
            "--publisher",
            &format!("ledger://{}", dir.path().join("l").display()),
        ])
        .args([
            "--poll-only",
            "--poll-interval",
            "300ms",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    t.execute(&plain_insert(&t, "polled", T0)).await;
    delivered_after(&t, "polled", Instant::now(), Duration::from_secs(10)).await;
    let out = stop(serve);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(r#""listening":false"#),
        "--poll-only never LISTENs: {log}"
    );
}

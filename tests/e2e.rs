//! End-to-end: the real `trustlog` binary on SQLite and the ledger.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Row;
use support::brokers::{Broker, TestBroker};
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;

#[test]
fn ten_thousand_recorded_operations_are_all_trustlogged_and_the_ledger_proves_it() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    let input = op_lines("bulk", 10_000, |i| T0 + i as i64);
    let out = run_ok(&["record", "--db", &db, "--publisher", &ledger], &input);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stored"], 10_000);

    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
            "--batch-size",
            "1000",
        ],
        "",
    );

    let st = status(&db);
    assert_eq!(
        (
            st["total"].as_u64(),
            st["trustlogged"].as_u64(),
            st["not_trustlogged"].as_u64()
        ),
        (Some(10_000), Some(10_000), Some(0))
    );
    assert_eq!(st["cursor_lag_seconds"], 0.0);
    let mut ids = ledger_op_ids(&s.ledger_path());
    assert_eq!(ids.len(), 10_000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10_000, "every op_id exactly once");

    let verified = run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    assert!(String::from_utf8_lossy(&verified.stdout).contains("10000 entries"));

    // One changed byte inside entry 5000's payload must be caught and named.
    let mut bytes = std::fs::read(s.ledger_path()).unwrap();
    let line_start = bytes
        .split(|b| *b == b'\n')
        .take(4999)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let at = line_start
        + bytes[line_start..]
            .windows(5)
            .position(|w| w == b"bulk-")
            .unwrap()
        + 2;
    bytes[at] ^= 0x01;
    std::fs::write(s.ledger_path(), &bytes).unwrap();
    let failed = run(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("5000"), "names the bad entry: {stderr}");
}

#[test]
fn rows_inserted_with_plain_sql_are_delivered_while_serve_runs() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(&["migrate", "--db", &db], "");
    let child = bin()
        .args([
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--poll-interval",
            "100ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    block_on(async {
        let pool = s.pool().await;
        for i in 0..50 {
            // The outbox way: the application's own INSERT, no trustlog code involved.
            sqlx::query(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
                 VALUES (?, 'app', 'doid', 'prod', 'IRP', 'Create', '10.1', 'repo', ?)",
            )
            .bind(format!("sql-{i}"))
            .bind(T0 + i)
            .execute(&pool)
            .await
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while count_status(&pool, "TRUSTLOGGED").await < 50 {
            assert!(
                Instant::now() < deadline,
                "rows inserted with SQL were not delivered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // SIGTERM: a graceful stop, exit code 0.
    stop(child);
    assert_eq!(ledger_op_ids(&s.ledger_path()).len(), 50);
}

#[test]
fn db_only_rows_are_never_published_and_trustlog_only_rows_are_never_stored() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &[
            "record",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--strategy",
            "db-only",
        ],
        &op_lines("dbonly", 20, |i| T0 + i as i64),
    );
    let out = run_ok(
        &[
            "record",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--strategy",
            "trustlog-only",
        ],
        &op_lines("tlonly", 30, |i| T0 + i as i64),
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["published"],
        30
    );
    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
        ],
        "",
    );

    let ids = ledger_op_ids(&s.ledger_path());
    assert_eq!(ids.len(), 30);
    assert!(
        ids.iter().all(|id| id.starts_with("tlonly-")),
        "db-only rows never reach the ledger"
    );
    let st = status(&db);
    assert_eq!(
        (
            st["total"].as_u64(),
            st["db_only"].as_u64(),
            st["trustlogged"].as_u64()
        ),
        (Some(20), Some(20), Some(0))
    );
    block_on(async {
        let pool = s.pool().await;
        let stored: i64 = sqlx::query("SELECT COUNT(*) FROM operation WHERE op_id LIKE 'tlonly-%'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 0, "trustlog-only rows are not stored");
    });
}

#[test]
fn two_hundred_fifty_rows_on_one_timestamp_are_each_delivered_exactly_once() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("tie", 250, |_| T0),
    );
    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
            "--batch-size",
            "100",
        ],
        "",
    );
    let ids = ledger_op_ids(&s.ledger_path());
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (250, 250));
    assert_eq!(status(&db)["trustlogged"], 250);
}

#[test]
fn timestamps_survive_the_round_trip_to_the_microsecond() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    let stamps = [
        T0 + 1,
        T0 + 999_999,
        -1,
        0,
        253_402_300_799_999_999,
        T0 + 123_456,
    ];
    let input: String = stamps
        .iter()
        .enumerate()
        .map(|(i, t)| op_line(&format!("ts-{i}"), *t) + "\n")
        .collect();
    run_ok(&["record", "--db", &db, "--publisher", &ledger], &input);
    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
        ],
        "",
    );
    block_on(async {
        let pool = s.pool().await;
        for (i, t) in stamps.iter().enumerate() {
            let stored: i64 = sqlx::query("SELECT timestamp FROM operation WHERE op_id = ?")
                .bind(format!("ts-{i}"))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(stored, *t);
        }
    });
    let payloads = ledger_payloads(&s.ledger_path());
    for (i, t) in stamps.iter().enumerate() {
        let p = payloads
            .iter()
            .find(|p| p["op_id"] == format!("ts-{i}"))
            .unwrap();
        assert_eq!(p["timestamp"].as_str().unwrap(), rfc3339(*t));
    }
}

#[test]
fn bad_lines_are_refused_naming_the_field_and_good_ones_are_stored() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    let long_id = "x".repeat(65);
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        op_line("good-1", T0),
        op_line(&long_id, T0),
        op_line("good-2", T0).replace("192.0.2.1", "not-an-ip"),
        r#"{"op_id":"partial"}"#
    );
    let out = run(&["record", "--db", &db, "--publisher", &ledger], &input);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("op_id: is 65 characters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3") && stderr.contains("client_ip"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4") && stderr.contains("op_actor"),
        "{stderr}"
    );
    assert_eq!(status(&db)["total"], 1);

    // Bytes that are not UTF-8, a wrong type, a 10 MB line and an op_id twice in one
    // input: each refused line is named with its field, and the good ones are stored.
    let mut input = op_line("good-3", T0).into_bytes();
    input.extend_from_slice(b"\n{\"op_id\": \"bin\xff\xfe\"}\n");
    input.extend_from_slice(
        op_line("typed", T0)
            .replace(r#""doid":"10.1000/typed""#, r#""doid":42"#)
            .as_bytes(),
    );
    input.push(b'\n');
    input.extend_from_slice(
        op_line("huge", T0)
            .replace("张三", &"z".repeat(10 * 1024 * 1024))
            .as_bytes(),
    );
    input.push(b'\n');
    input.extend_from_slice(op_line("twice", T0).as_bytes());
    input.push(b'\n');
    input.extend_from_slice(op_line("twice", T0 + 1).as_bytes());
    input.push(b'\n');
    let mut child = bin()
        .args(["record", "--db", &db, "--publisher", &ledger])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (line, field) in [
        ("line 2: ", "operation: the line is not UTF-8"),
        ("line 3: ", "doid"),
        ("line 4: ", "op_actor"),
        ("line 6: ", "conflict"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(line) && l.contains(field)),
            "{line}{field} in {stderr:.2000}"
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &summary["stored"],
            &summary["rejected"],
            &summary["duplicate"]
        ),
        (&2.into(), &3.into(), &1.into()),
        "{summary}"
    );
    assert_eq!(
        status(&db)["total"],
        3,
        "good-1 from before, good-3 and twice"
    );

    // A duplicate op_id is a conflict and leaves the stored row as it was.
    let again = run(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_line("good-1", T0 + 5).replace("张三", "mallory"),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("conflict"));
    block_on(async {
        let pool = s.pool().await;
        let row = sqlx::query("SELECT op_actor, timestamp FROM operation WHERE op_id = 'good-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            (row.get::<String, _>(0), row.get::<i64, _>(1)),
            ("张三".to_string(), T0)
        );
    });
}

#[test]
fn env_vars_supply_the_database_and_publisher() {
    let s = Scratch::new();
    let out = bin()
        .args(["demo", "--ops", "25"])
        .env("TRUSTLOG_DB", s.db_url())
        .env("TRUSTLOG_PUBLISHER", s.ledger_url())
        .env("TRUSTLOG_BATCH_SIZE", "10")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ledger_op_ids(&s.ledger_path()).len(), 25);
    assert_eq!(status(&s.db_url())["trustlogged"], 25);
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["record", "--help"],
        vec!["status", "--help"],
        vec!["ledger", "verify", "--help"],
        vec!["demo", "--help"],
        vec!["migrate", "--help"],
        vec!["dead-letters", "list", "--help"],
        vec!["dead-letters", "replay", "--help"],
        vec!["dead-letters", "purge", "--help"],
    ] {
        let out = run_ok(&args, "");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    assert!(!run(&["no-such-command"], "").status.success());
}

#[test]
fn serve_logs_json_with_one_tick_span_per_batch_carrying_its_counts() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("log", 250, |i| T0 + i as i64),
    );
    let out = bin()
        .args([
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
        ])
        // One batch at a time, so each scan tick commits the batch it reads.
        .args(["--batch-size", "100", "--pipeline-depth", "1"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "trustlog=debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ticks: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "tick done")
        .map(|l| &l["span"])
        .collect();
    assert!(ticks.iter().all(|span| span["name"] == "tick"), "{stderr}");
    let scanned: Vec<u64> = ticks
        .iter()
        .filter(|span| span["tick"] == "scan")
        .map(|span| span["fetched"].as_u64().unwrap())
        .collect();
    assert_eq!(scanned, [100, 100, 50], "{stderr}");
    assert!(
        ticks
            .iter()
            .all(|span| span["published"] == span["fetched"])
    );
}

#[test]
fn recording_beside_a_running_serve_leaves_its_ledger_alone_and_publishing_there_fails_fast() {
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(&["migrate", "--db", &db], "");
    let server = Server::start(&["--db", &db, "--publisher", &ledger]);
    // serve holds the ledger: recording rows for it to deliver never opens it, whether
    // the publisher is given as a flag or in the environment.
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("flag", 50, |i| T0 + i as i64),
    );
    let out = bin()
        .args(["record", "--db", &db])
        .env("TRUSTLOG_PUBLISHER", &ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(op_lines("env", 50, |i| T0 + 100 + i as i64).as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = block_on(server.wait_status(Duration::from_secs(10), |st| st["trustlogged"] == 100));
    assert_eq!(
        st["retry_pending"], 0,
        "nothing failed for want of the ledger: {st}"
    );

    // Publishing itself needs the ledger serve holds: refused at once, saying what to do.
    let asked = Instant::now();
    let out = run(
        &[
            "record",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--strategy",
            "trustlog-only",
        ],
        &op_lines("sync", 1, |_| T0),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(stderr.contains("locked by another process"), "{stderr}");
    assert!(stderr.contains("--strategy db-and-trustlog"), "{stderr}");
    assert_eq!(ledger_op_ids(&s.ledger_path()).len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_drained_waits_for_due_retries_and_a_max_wait_gives_up_naming_what_is_left() {
    let receiver = TestBroker::create(Broker::Webhook).await;
    let s = Scratch::new();
    let db = s.db_url();
    run_ok(
        &["record", "--db", &db],
        &op_lines("due", 5, |i| T0 + i as i64),
    );
    // Each first delivery fails (503): the drain waits the second for the retries.
    let once = receiver.once_busy_url();
    let serve = |publisher: String, extra: &'static [&'static str]| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            bin()
                .args([
                    "serve",
                    "--db",
                    &db,
                    "--publisher",
                    &publisher,
                    "--until-drained",
                ])
                .args(["--backoff-base", "1s"])
                .args(extra)
                .env("RUST_LOG", "info")
                .output()
                .unwrap()
        })
    };
    let out = serve(once, &[]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not drained yet: 5 rows wait in the retry queue; the next is due in 1 s"),
        "it says what it waits for: {stderr}"
    );
    let st = status(&db);
    assert_eq!(
        (st["trustlogged"].as_u64(), st["retry_pending"].as_u64()),
        (Some(5), Some(0)),
        "{st}"
    );

    // A receiver that never confirms: a bounded drain exits 1 and names what is left.
    run_ok(&["record", "--db", &db], &op_lines("stuck", 1, |_| T0 + 10));
    let asked = Instant::now();
    let out = serve(receiver.busy_url(), &["--max-wait", "3s"])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        stderr.contains(
            "not drained within --max-wait: 0 rows wait for delivery, 1 in the retry queue"
        ),
        "{stderr}"
    );
}

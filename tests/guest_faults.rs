//! A guest that traps or panics during a tick costs that tick only: the host logs
//! it, replaces the instance, tries again later, marks nothing the publisher did
//! not confirm, and keeps serving. The guests are built for the test
//! (tests/guests/hostile) and run through the real binary.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::guests::{Hostile, hostile};
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;

/// `serve` on the scratch database and ledger, running the hostile guest `kind`.
fn serve_hostile(s: &Scratch, kind: Hostile, extra: &[&str]) -> Server {
    let (db, ledger) = (s.db_url(), s.ledger_url());
    let component = hostile(kind);
    let mut args = vec![
        "--db",
        &db,
        "--publisher",
        &ledger,
        "--component",
        component.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_dying_between_publish_and_commit_fails_that_tick_only_and_everything_is_delivered()
{
    const N: usize = 1_000;
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("dies", N, |i| T0 + i as i64),
    );
    let server = serve_hostile(&s, Hostile::TrapAfterPublish, &["--batch-size", "200"]);

    let st = server
        .wait_status(Duration::from_secs(60), |st| st["trustlogged"] == N as u64)
        .await;
    assert_eq!(st["not_trustlogged"], 0, "{st}");
    assert_eq!(server.get("/healthz").await.0, 200, "still serving");

    let log = server.stderr.lock().unwrap().clone();
    let traps = log.matches("replacing its instance").count();
    assert!(
        traps >= 3,
        "every second unit of work dies; {traps} traps logged:\n{log}"
    );
    assert!(
        log.contains("hostile guest: dying after publishing"),
        "{log}"
    );
    let m = server.metrics().await;
    let errors: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("trustlog_tick_errors_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(
        errors >= traps as f64,
        "tick errors {errors} < traps {traps}"
    );

    // Each dead tick had published its batch without marking it; the next tick published
    // it again. So the ledger holds duplicates, and every row, and nothing unconfirmed
    // was marked.
    let ids = ledger_op_ids(&s.ledger_path());
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "every op_id is in the ledger");
    assert!(
        ids.len() >= N + 100,
        "the batches of the dead ticks were published again: {} entries for {N} rows",
        ids.len()
    );
    drop(server);
    let out = run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_trapping_in_every_tick_marks_nothing_waits_between_tries_and_the_host_keeps_serving()
 {
    let s = Scratch::new();
    let server = serve_hostile(&s, Hostile::TrapEveryTick, &["--poll-interval", "200ms"]);
    let body: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::from_str(&op_line(&format!("kept-{i}"), T0 + i)).unwrap())
        .collect();
    let (code, answer) = server
        .post(None, "/v1/operations", serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(code, 200, "ingest does not go through the ticks: {answer}");

    let window = Duration::from_secs(4);
    let cpu_before = server.cpu_time();
    tokio::time::sleep(window).await;
    let cpu = (server.cpu_time() - cpu_before).as_secs_f64() / window.as_secs_f64();

    let (code, st) = server.get("/v1/status").await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["not_trustlogged"], 10, "nothing marked: {st}");
    assert_eq!(st["trustlogged"], 0, "{st}");
    assert!(
        ledger_op_ids(&s.ledger_path()).is_empty(),
        "nothing was published"
    );
    assert_eq!(server.get("/healthz").await.0, 200);
    let log = server.stderr.lock().unwrap().clone();
    let traps = log.matches("replacing its instance").count();
    assert!(
        (2..=20).contains(&traps),
        "tried again, after a pause each time: {traps} traps in {window:?}\n{log}"
    );
    assert!(
        cpu < 0.10,
        "a failing guest must not spin the host: {cpu:.3} CPU"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sending_malformed_envelope_batches_publishes_nothing_and_its_rows_dead_letter_naming_the_fault()
 {
    const N: usize = 20;
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("ragged", N, |i| T0 + i as i64),
    );
    let server = serve_hostile(&s, Hostile::MalformedEnvelopes, &[]);
    let st = server
        .wait_status(Duration::from_secs(30), |st| st["dead_letter"] == N as u64)
        .await;
    // Dead letters keep their NOT_TRUSTLOGGED status; none was marked delivered.
    assert_eq!(st["trustlogged"], 0, "{st}");
    assert_eq!(server.get("/healthz").await.0, 200, "still serving");
    assert!(
        ledger_op_ids(&s.ledger_path()).is_empty(),
        "a batch the host cannot read is not published"
    );
    drop(server);
    let out = run_ok(&["dead-letters", "list", "--db", &db, "--json"], "");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), N);
    let message = lines[0]["error_message"].as_str().unwrap();
    assert!(
        message.contains("malformed envelope batch: envelope 0: its op_id spans bytes"),
        "{message}"
    );
}

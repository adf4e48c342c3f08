//! The real component on real SQLite, driven tick by tick with an injected clock.

mod support;

use std::time::{Duration, Instant};

use sqlx::Row;
use support::brokers::{Broker, TestBroker};
use support::*;
use trustlog_guest::model::{Config, Operation, RecordOutcome, Strategy};
use trustlog_host::db::Database;
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::tenant::Tenant;
use trustlog_host::scheduling::worker::{Intervals, Worker};
use trustlog_host::surfaces::ingest;

const T0: i64 = 1_764_000_000_000_000;
const MIN: i64 = 60_000_000;

fn op(id: &str) -> Operation {
    ingest::parse_line(&op_line(id, T0)).unwrap()
}

async fn tenant(s: &Scratch, publisher_url: &str, config: Config) -> Tenant {
    let db = Database::connect(&s.db_url()).await.unwrap();
    db.migrate().await.unwrap();
    let publisher = Publisher::connect(publisher_url).await.unwrap();
    Tenant::new(Runtime::new().unwrap(), "test", db, publisher, config)
        .await
        .unwrap()
}

async fn retry_row(s: &Scratch, op_id: &str) -> (i64, String, Option<i64>, Option<i64>, String) {
    let pool = s.pool().await;
    let r = sqlx::query("SELECT retry_count, retry_status, next_retry_at, last_retry_at, error_message FROM trustlog_retry WHERE op_id = ?")
        .bind(op_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// A receiver that answers but fails every envelope (HTTP 503) until told to accept:
/// transient failures that spend retries, as a broker that is up but refuses would.
async fn refusing_receiver() -> (TestBroker, String) {
    let receiver = TestBroker::create(Broker::Webhook).await;
    let url = receiver.switch_url();
    (receiver, url)
}

/// A ledger whose path is a directory: every open fails, as a broken disk would.
fn broken_ledger(s: &Scratch) -> (std::path::PathBuf, String) {
    let path = s.dir.path().join("unwritable.ledger");
    std::fs::create_dir(&path).unwrap();
    let url = format!("ledger://{}", path.display());
    (path, url)
}

#[tokio::test]
async fn a_failing_publisher_retries_exactly_on_the_schedule_then_dead_letters() {
    let s = Scratch::new();
    let (_receiver, url) = refusing_receiver().await;
    let mut t = tenant(&s, &url, Config::default()).await;
    assert_eq!(
        t.record(vec![op("doomed")], None).await.unwrap(),
        [RecordOutcome::Stored]
    );

    let first = t.scan_tick(T0).await.unwrap();
    assert_eq!(
        (first.fetched, first.published, first.retry_scheduled),
        (1, 0, 1)
    );
    let (count, status, next, last, error) = retry_row(&s, "doomed").await;
    assert_eq!(
        (count, status.as_str(), next, last),
        (0, "PENDING", Some(T0 + MIN), None)
    );
    assert!(
        error.contains("503"),
        "the publisher's error is kept: {error}"
    );

    // Retries 1..4 each fail and push the next one out: 2m, 4m, 8m, 16m.
    let mut due = T0 + MIN;
    for (n, wait) in [(1, 2), (2, 4), (3, 8), (4, 16)] {
        assert_eq!(
            t.retry_tick(due - 1).await.unwrap().fetched,
            0,
            "not due a microsecond early"
        );
        let r = t.retry_tick(due).await.unwrap();
        assert_eq!((r.fetched, r.retry_scheduled), (1, 1));
        let (count, status, next, last, _) = retry_row(&s, "doomed").await;
        assert_eq!(
            (count, status.as_str(), next, last),
            (n, "RETRYING", Some(due + wait * MIN), Some(due))
        );
        due += wait * MIN;
    }
    // The 5th failed retry dead-letters.
    let r = t.retry_tick(due).await.unwrap();
    assert_eq!(r.dead_lettered, 1);
    let (count, status, next, _, _) = retry_row(&s, "doomed").await;
    assert_eq!((count, status.as_str(), next), (5, "DEAD_LETTER", None));
    assert_eq!(
        t.retry_tick(due + 365 * 24 * 60 * MIN)
            .await
            .unwrap()
            .fetched,
        0,
        "dead letters are not retried"
    );
    let st = t.status(due).await.unwrap();
    assert_eq!(
        (
            st.stats.dead_letter,
            st.stats.not_trustlogged,
            st.stats.trustlogged
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_retry_that_succeeds_marks_the_row_and_deletes_its_retry_row_together() {
    let s = Scratch::new();
    let (receiver, url) = refusing_receiver().await;
    let mut t = tenant(&s, &url, Config::default()).await;
    t.record(vec![op("late")], None).await.unwrap();
    assert_eq!(t.scan_tick(T0).await.unwrap().retry_scheduled, 1);
    // The receiver takes envelopes again.
    receiver.accept();
    let r = t.retry_tick(T0 + MIN).await.unwrap();
    assert_eq!((r.fetched, r.published), (1, 1));
    let pool = s.pool().await;
    assert_eq!(count_status(&pool, "TRUSTLOGGED").await, 1);
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM trustlog_retry")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let got: Vec<String> = receiver
        .received()
        .await
        .into_iter()
        .map(|r| r.op_id)
        .collect();
    assert_eq!(got, ["late"]);
}

#[tokio::test]
async fn a_broken_ledger_leaves_the_row_waiting_and_delivers_it_once_the_disk_is_back() {
    let s = Scratch::new();
    let (path, url) = broken_ledger(&s);
    let mut t = tenant(&s, &url, Config::default()).await;
    t.record(vec![op("patient")], None).await.unwrap();
    let r = t.scan_tick(T0).await.unwrap();
    assert_eq!((r.fetched, r.unavailable, r.retry_scheduled), (1, 1, 0));
    assert!(r.error.unwrap().contains("unwritable.ledger"));
    let pool = s.pool().await;
    let queued: i64 = sqlx::query("SELECT COUNT(*) FROM trustlog_retry")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "an unreachable trust log spends no retry");
    // The disk comes back: the path is free again, the publisher reopens it.
    std::fs::remove_dir(&path).unwrap();
    let r = t.scan_tick(T0 + 1).await.unwrap();
    assert_eq!(r.published, 1);
    assert_eq!(ledger_op_ids(&path), ["patient"]);
}

#[tokio::test]
async fn configurable_backoff_is_honoured() {
    let s = Scratch::new();
    let (_receiver, url) = refusing_receiver().await;
    let backoff = trustlog_guest::model::Backoff {
        base_micros: 1_000_000,
        factor: 3,
        max_retries: 2,
        ..Default::default()
    };
    let config = Config {
        backoff,
        ..Config::default()
    };
    let mut t = tenant(&s, &url, config).await;
    t.record(vec![op("x")], None).await.unwrap();
    t.scan_tick(T0).await.unwrap();
    assert_eq!(retry_row(&s, "x").await.2, Some(T0 + 1_000_000));
    t.retry_tick(T0 + 1_000_000).await.unwrap();
    assert_eq!(retry_row(&s, "x").await.2, Some(T0 + 1_000_000 + 3_000_000));
    t.retry_tick(T0 + 4_000_000).await.unwrap();
    assert_eq!(retry_row(&s, "x").await.1, "DEAD_LETTER");
}

#[tokio::test]
async fn a_bad_configuration_is_refused_naming_the_field() {
    let s = Scratch::new();
    let db = Database::connect(&s.db_url()).await.unwrap();
    let config = Config {
        batch_size: 0,
        ..Config::default()
    };
    let err = Tenant::new(
        Runtime::new().unwrap(),
        "t",
        db,
        Publisher::Disabled,
        config,
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("batch_size"), "{err}");
}

#[tokio::test]
async fn a_row_recorded_through_the_host_wakes_the_idle_scanner() {
    let s = Scratch::new();
    let t = tenant(&s, &s.ledger_url(), Config::default()).await;
    let intervals = Intervals {
        poll: Duration::from_secs(30),
        retry: Duration::from_secs(30),
        sweep: Duration::from_secs(30),
        ..Intervals::default()
    };
    let worker = Worker::new(t, intervals);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let w = worker.clone();
        async move { w.run(false, stopped).await }
    });
    // Let the first (empty) pass finish so the worker is idle in its 30 s poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    worker
        .record(vec![op("wake-me")], Some(Strategy::DbAndTrustlog))
        .await
        .unwrap();
    let pool = s.pool().await;
    while count_status(&pool, "TRUSTLOGGED").await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the scanner was not woken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).unwrap();
    let summary = running.await.unwrap();
    assert_eq!(summary.published, 1);
}

#[tokio::test]
async fn rows_left_behind_the_cursor_are_found_by_the_sweep() {
    let s = Scratch::new();
    let mut t = tenant(&s, &s.ledger_url(), Config::default()).await;
    t.record(
        vec![ingest::parse_line(&op_line("early", T0 + 10)).unwrap()],
        None,
    )
    .await
    .unwrap();
    assert_eq!(t.scan_tick(T0 + 20).await.unwrap().published, 1);
    // A late commit: its timestamp is behind the cursor, so no scan will ever see it.
    t.record(
        vec![ingest::parse_line(&op_line("late", T0 + 5)).unwrap()],
        None,
    )
    .await
    .unwrap();
    assert_eq!(t.scan_tick(T0 + 30).await.unwrap().fetched, 0);
    let swept = t.sweep_tick(T0 + 40).await.unwrap();
    assert_eq!((swept.fetched, swept.published), (1, 1));
    assert_eq!(ledger_op_ids(&s.ledger_path()), ["early", "late"]);
}

#[tokio::test]
async fn sqlite_rows_of_each_unreadable_kind_dead_letter_alone_and_go_timestamps_are_read() {
    let s = Scratch::new();
    let mut t = tenant(&s, &s.ledger_url(), Config::default()).await;
    let pool = s.pool().await;
    let insert = |id: &str, actor: &str, stamp: &str| {
        format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('{id}', {actor}, 'd', 'p', 'IRP', 'Create', '10.1', 'r', {stamp})"
        )
    };
    for sql in [
        insert("good-1", "'app'", &T0.to_string()),
        // A time.Time as mattn/go-sqlite3 writes it, TEXT in the INTEGER column.
        insert("go-time", "'app'", "'2025-11-24 10:23:54.123456789+08:00'"),
        // Text that is not UTF-8.
        insert("bad-utf8", "CAST(X'C328' AS TEXT)", &(T0 + 2).to_string()),
        // Longer than the column's limit: SQLite does not enforce VARCHAR sizes.
        insert(
            "too-long",
            &format!("'{}'", "x".repeat(300)),
            &(T0 + 3).to_string(),
        ),
        // A timestamp in no known form.
        insert("no-time", "'app'", "'next tuesday'"),
        insert("good-2", "'app'", &(T0 + 5).to_string()),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let r = t.scan_tick(T0 + 10).await.unwrap();
    assert_eq!(
        (r.fetched, r.published, r.dead_lettered, r.unreadable),
        (6, 3, 3, 2),
        "{r:?}"
    );
    let mut held = ledger_op_ids(&s.ledger_path());
    held.sort();
    assert_eq!(held, ["go-time", "good-1", "good-2"]);
    let go = ledger_payloads(&s.ledger_path())
        .into_iter()
        .find(|p| p["op_id"] == "go-time")
        .unwrap();
    assert_eq!(
        go["timestamp"], "2025-11-24T02:23:54.123456Z",
        "read as UTC, cut to the µs"
    );
    let db = Database::connect(&s.db_url()).await.unwrap();
    let parked = db.dead_letters(None, 10).await.unwrap();
    let why = |id: &str| {
        parked
            .iter()
            .find(|d| d.op_id == id)
            .unwrap_or_else(|| panic!("{id} not dead-lettered: {parked:?}"))
            .error_message
            .clone()
    };
    assert!(
        why("bad-utf8").contains("unreadable column op_actor"),
        "{}",
        why("bad-utf8")
    );
    assert!(why("too-long").contains("op_actor"), "{}", why("too-long"));
    assert!(
        why("no-time").contains("unreadable column timestamp"),
        "{}",
        why("no-time")
    );
    assert!(
        why("no-time").contains("next tuesday"),
        "{}",
        why("no-time")
    );
    assert_eq!(
        parked
            .iter()
            .find(|d| d.op_id == "no-time")
            .unwrap()
            .timestamp,
        None
    );
    assert_eq!(
        t.scan_tick(T0 + 20).await.unwrap().fetched,
        0,
        "nothing is stuck"
    );
}

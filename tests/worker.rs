//! The scheduler on every database, in process: the retry schedule driven by an
//! injected clock (minutes of backoff pass in milliseconds), and fresh rows and
//! due retries sharing the delivery budget.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::backends::{Backend, TestDb};
use support::brokers::{Broker, TestBroker};
use support::*;
use tokio::sync::watch;
use trustlog_guest::model::{Config, RetryStatus, RetryUpdate, TrustlogStatus, UnitOfWork};
use trustlog_host::db::Database;
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::clock::{Clock, ManualClock, now_micros};
use trustlog_host::scheduling::tenant::Tenant;
use trustlog_host::scheduling::worker::{Delivery, DrainBounds, Exit, Intervals, Worker};
use trustlog_host::surfaces::ingest;
use trustlog_host::surfaces::metrics::Metrics;

const MIN: Duration = Duration::from_secs(60);

on_every_database!(
    the_worker_walks_the_whole_retry_schedule_on_an_injected_clock,
    fresh_rows_and_due_retries_take_turns_batch_for_batch,
    a_forty_minute_outage_ends_with_every_row_delivered_and_no_retry_spent,
    a_drain_waits_for_due_retries_and_a_bounded_one_says_what_is_left,
    a_drain_whose_every_tick_fails_ends_with_the_last_error_and_what_is_left,
    a_worker_stopped_mid_drain_settles_the_batches_it_left_out,
);

async fn worker(t: &TestDb, publisher: &str, batch_size: u32, intervals: Intervals) -> Worker {
    let db = Database::connect(&t.url).await.unwrap();
    db.migrate().await.unwrap();
    let config = Config {
        batch_size,
        ..Config::default()
    };
    let tenant = Tenant::new(
        Runtime::new().unwrap(),
        "worker-test",
        db,
        Publisher::connect(publisher).await.unwrap(),
        config,
    )
    .await
    .unwrap();
    Worker::new(tenant, intervals)
}

/// Polls `sql` until it reads `want`, for at most 10 s of real time.
async fn eventually(t: &TestDb, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = t.scalar(sql).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}: {sql} reads {got}, not {want}",
            t.backend
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn the_worker_walks_the_whole_retry_schedule_on_an_injected_clock(b: Backend) {
    let t = TestDb::create(b).await;
    // A receiver that answers but fails every envelope: transient failures, no outage.
    let receiver = TestBroker::create(Broker::Webhook).await;
    let fast = Intervals {
        poll: Duration::from_millis(20),
        retry: Duration::from_millis(20),
        sweep: Duration::from_secs(3600),
        ..Intervals::default()
    };
    let clock = ManualClock::at(now_micros());
    let w = worker(&t, &receiver.busy_url(), 100, fast)
        .await
        .with_clock(Arc::new(clock.clone()));
    let op = ingest::parse_line(&op_line("r", clock.now())).unwrap();
    w.record(vec![op], None).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn({
        let w = w.clone();
        async move { w.run(false, stopped).await }
    });

    let row = |count: i64, status: &str| {
        format!(
            "SELECT COUNT(*) FROM trustlog_retry WHERE op_id = 'r' AND retry_count = {count} AND retry_status = '{status}'"
        )
    };
    eventually(&t, &row(0, "PENDING"), 1).await;
    // The seed's schedule: 1, 2, 4, 8, 16 minutes; the fifth failed retry dead-letters.
    for (n, wait) in [1u32, 2, 4, 8].into_iter().enumerate() {
        clock.advance(MIN * wait - Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = if n == 0 { "PENDING" } else { "RETRYING" };
        assert_eq!(
            t.scalar(&row(n as i64, before)).await,
            1,
            "{b:?}: retry {} ran a second early",
            n + 1
        );
        clock.advance(Duration::from_secs(1));
        eventually(&t, &row(n as i64 + 1, "RETRYING"), 1).await;
    }
    clock.advance(MIN * 16);
    eventually(&t, &row(5, "DEAD_LETTER"), 1).await;
    clock.advance(MIN * 60);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        t.scalar(&row(5, "DEAD_LETTER")).await,
        1,
        "{b:?}: a dead letter is never retried by itself"
    );
    stop.send(true).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.exit, Exit::Shutdown);
    assert_eq!(
        (
            summary.retry_scheduled,
            summary.dead_lettered,
            summary.published
        ),
        (5, 1, 0),
        "{b:?}"
    );
}

async fn fresh_rows_and_due_retries_take_turns_batch_for_batch(b: Backend) {
    let t = TestDb::create(b).await;
    let db = Database::connect(&t.url).await.unwrap();
    db.migrate().await.unwrap();
    let t0 = now_micros() - 3_600_000_000;
    let op = |id: String, at: i64| ingest::parse_line(&op_line(&id, at)).unwrap();
    let retries: Vec<_> = (0..500)
        .map(|i| op(format!("retry-{i:04}"), t0 + i))
        .collect();
    let fresh: Vec<_> = (0..2000)
        .map(|i| op(format!("fresh-{i:04}"), t0 + 1000 + i))
        .collect();
    db.insert(retries.clone(), TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: t0,
        retries: retries
            .iter()
            .map(|o| RetryUpdate {
                op_id: o.op_id.clone(),
                retry_count: 0,
                retry_status: RetryStatus::Pending,
                last_retry_at: None,
                next_retry_at: Some(t0),
                error_message: "broker was down".into(),
            })
            .collect(),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    db.insert(fresh, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let w = worker(
        &t,
        &format!("ledger://{}", path.display()),
        100,
        Intervals::default(),
    )
    .await;
    let (_stop, stopped) = watch::channel(false);
    let summary = w.run(true, stopped).await;
    assert_eq!(
        (summary.exit, summary.published),
        (Exit::Drained, 2500),
        "{b:?}"
    );

    let ids = ledger_op_ids(&path);
    assert_eq!(ids.len(), 2500, "{b:?}");
    // Batch for batch: scan 100, retry 100, scan 100, … until the retries run out.
    for (n, batch) in ids.chunks(100).take(10).enumerate() {
        let want = if n % 2 == 0 { "fresh-" } else { "retry-" };
        assert!(
            batch.iter().all(|id| id.starts_with(want)),
            "{b:?}: batch {n} should be all {want}: {:?}…",
            &batch[..3]
        );
    }
    assert!(ids[1000..].iter().all(|id| id.starts_with("fresh-")));
}

async fn a_forty_minute_outage_ends_with_every_row_delivered_and_no_retry_spent(b: Backend) {
    use support::proxy::TcpProxy;
    let t = TestDb::create(b).await;
    let receiver = TestBroker::create(Broker::Webhook).await;
    let proxy = TcpProxy::start(receiver.upstream()).await;
    let fast = Intervals {
        poll: Duration::from_millis(20),
        retry: Duration::from_millis(20),
        sweep: Duration::from_millis(200),
        ..Intervals::default()
    };
    let clock = ManualClock::at(now_micros());
    let w = worker(&t, &receiver.url_via(&proxy), 100, fast)
        .await
        .with_clock(Arc::new(clock.clone()))
        .watching(true);
    // A row that already failed twice: its third retry falls inside the outage.
    let db = Database::connect(&t.url).await.unwrap();
    let retried = ingest::parse_line(&op_line("retried", clock.now() - 1)).unwrap();
    db.insert(vec![retried], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: clock.now(),
        retries: vec![RetryUpdate {
            op_id: "retried".into(),
            retry_count: 2,
            retry_status: RetryStatus::Retrying,
            last_retry_at: Some(clock.now()),
            next_retry_at: Some(clock.now() + 4 * 60_000_000),
            error_message: "nacked".into(),
        }],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn({
        let w = w.clone();
        async move { w.run(false, stopped).await }
    });
    let ops = |from: usize| -> Vec<_> {
        (from..from + 50)
            .map(|i| ingest::parse_line(&op_line(&format!("o-{i:03}"), clock.now())).unwrap())
            .collect()
    };
    w.record(ops(0), None).await.unwrap();
    let delivered = "SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'";
    eventually(&t, delivered, 50).await;

    proxy.cut();
    w.record(ops(50), None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(w.delivery(), Delivery::Outage { .. }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{b:?}: {:?}",
            w.delivery()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Forty minutes pass, more than the whole schedule (1+2+4+8+16 = 31 minutes).
    for _ in 0..40 {
        clock.advance(MIN);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(w.delivery(), Delivery::Outage { .. }), "{b:?}");
    assert_eq!(t.scalar(delivered).await, 50, "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        1,
        "{b:?}: no row went to the retry queue during the outage"
    );
    assert_eq!(
        t.scalar("SELECT retry_count FROM trustlog_retry WHERE op_id = 'retried'")
            .await,
        2,
        "{b:?}: the retry due in the outage kept its budget"
    );

    proxy.restore();
    eventually(&t, delivered, 101).await;
    assert_eq!(t.scalar("SELECT COUNT(*) FROM trustlog_retry").await, 0);
    assert_eq!(w.delivery(), Delivery::Active);
    stop.send(true).unwrap();
    let summary = running.await.unwrap();
    assert_eq!(
        (summary.dead_lettered, summary.retry_scheduled),
        (0, 0),
        "{b:?}"
    );
}

async fn a_drain_waits_for_due_retries_and_a_bounded_one_says_what_is_left(b: Backend) {
    let t = TestDb::create(b).await;
    let receiver = TestBroker::create(Broker::Webhook).await;
    let config_backoff = trustlog_guest::model::Backoff {
        base_micros: 1_000_000,
        ..Default::default()
    };
    let db = Database::connect(&t.url).await.unwrap();
    db.migrate().await.unwrap();
    let tenant = Tenant::new(
        Runtime::new().unwrap(),
        "drain-test",
        db,
        Publisher::connect(&receiver.once_busy_url()).await.unwrap(),
        Config {
            backoff: config_backoff,
            ..Config::default()
        },
    )
    .await
    .unwrap();
    let w = Worker::new(tenant, Intervals::default());
    let ops: Vec<_> = (0..10)
        .map(|i| ingest::parse_line(&op_line(&format!("d-{i}"), now_micros())).unwrap())
        .collect();
    w.record(ops, None).await.unwrap();
    // Every first delivery fails: the drain waits the second for the retries.
    let started = std::time::Instant::now();
    let (_stop, stopped) = watch::channel(false);
    let summary = w.run(true, stopped).await;
    assert_eq!(
        (summary.exit, summary.retry_scheduled, summary.published),
        (Exit::Drained, 10, 10),
        "{b:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{b:?}: it waited for the retries"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
            .await,
        10,
        "{b:?}"
    );

    // A receiver that never confirms: a bounded drain gives up and says what is left.
    let stuck = worker(&t, &receiver.busy_url(), 100, Intervals::default())
        .await
        .with_drain_bounds(DrainBounds {
            max_wait: Some(Duration::from_secs(2)),
            ..DrainBounds::default()
        });
    stuck
        .record(
            vec![ingest::parse_line(&op_line("never", now_micros())).unwrap()],
            None,
        )
        .await
        .unwrap();
    let (_stop, stopped) = watch::channel(false);
    let summary = stuck.run(true, stopped).await;
    match summary.exit {
        Exit::TimedOut(left) => {
            assert_eq!((left.waiting, left.retrying), (0, 1), "{b:?}: {left:?}");
            assert!(left.next_retry_at.is_some(), "{b:?}");
        }
        other => panic!("{b:?}: {other:?}"),
    }
}

async fn a_drain_whose_every_tick_fails_ends_with_the_last_error_and_what_is_left(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = format!("ledger://{}", dir.path().join("l").display());
    let w = worker(&t, &ledger, 100, Intervals::default())
        .await
        .with_drain_bounds(DrainBounds {
            max_wait: None,
            give_up_after: Duration::from_secs(2),
        });
    let now = now_micros();
    let ops = (0..3)
        .map(|i| ingest::parse_line(&op_line(&format!("op-{i}"), now + i)).unwrap())
        .collect();
    w.record(ops, None).await.unwrap();
    // A column the scan reads is gone: every tick fails the same way, and no outage
    // explains it, so waiting on would wait forever.
    t.execute("ALTER TABLE operation RENAME COLUMN doid TO doid_was")
        .await;
    let started = std::time::Instant::now();
    let (_stop, stopped) = watch::channel(false);
    let summary = w.run(true, stopped).await;
    match summary.exit {
        Exit::Failing {
            error,
            failing_for,
            left,
        } => {
            assert!(error.contains("doid"), "{b:?}: names the column: {error}");
            assert!(
                failing_for >= Duration::from_secs(2),
                "{b:?}: {failing_for:?}"
            );
            assert_eq!((left.waiting, left.retrying), (3, 0), "{b:?}: {left:?}");
        }
        other => panic!("{b:?}: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{b:?}: gave up soon after the bound, not at some later timeout"
    );
    assert_eq!(summary.published, 0, "{b:?}");
}

async fn a_worker_stopped_mid_drain_settles_the_batches_it_left_out(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let metrics = Metrics::new().unwrap();
    // Batches of 10 at the default depth of 3: the drain is many batches long, and
    // between any two scan ticks batches are out, published and not yet marked.
    let w = worker(
        &t,
        &format!("ledger://{}", path.display()),
        10,
        Intervals::default(),
    )
    .await
    .with_metrics(metrics.tenant("settle"))
    .await;
    let ops: Vec<_> = (0..20_000)
        .map(|i| {
            ingest::parse_line(&op_line(&format!("s-{i:05}"), now_micros() - 1_000_000 + i))
                .unwrap()
        })
        .collect();
    w.record(ops, None).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn({
        let w = w.clone();
        async move { w.run(false, stopped).await }
    });
    let delivered = "SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while t.scalar(delivered).await < 200 {
        assert!(tokio::time::Instant::now() < deadline, "{b:?}: no delivery");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).unwrap();
    let summary = running.await.unwrap();
    let marked = t.scalar(delivered).await;
    assert!(
        marked < 20_000,
        "{b:?}: stopped before the end of the drain"
    );
    // Everything the ledger took is marked: the batches out were settled, not dropped.
    let in_ledger = ledger_op_ids(&path);
    assert_eq!(in_ledger.len() as i64, marked, "{b:?}");
    assert_eq!(summary.published as i64, marked, "{b:?}");
    // The settling counts as the scan's delivery.
    let text = metrics.render().unwrap();
    let scan = format!(r#"trustlog_published_total{{tenant="settle",tick="scan"}} {marked}"#);
    assert!(text.contains(&scan), "{b:?}: {scan} not in\n{text}");
    assert!(!text.contains("scan_settle"), "{b:?}");
}

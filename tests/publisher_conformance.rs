//! The publisher conformance suite: written once, run against every adapter with the
//! real servers (ledger, NATS JetStream, RabbitMQ, Redis Streams, an HTTP receiver,
//! Mosquitto). Each test gets its own stream, queue, key, topic or file, and reads back
//! what arrived with a plain consumer of that broker.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sqlx::Row;
use support::brokers::{Broker, Received, TestBroker};
use support::proxy::TcpProxy;
use support::*;
use trustlog_guest::model::{Config, Operation, RecordOutcome};
use trustlog_host::db::Database;
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::tenant::Tenant;
use trustlog_host::surfaces::ingest;

const T0: i64 = 1_764_000_000_000_000;
const MIN: i64 = 60_000_000;

/// Instantiates each test once per adapter: the first list for every adapter, the
/// second for those that talk to a server over a connection.
macro_rules! publisher_conformance {
    (all: [$($all:ident),* $(,)?], networked: [$($net:ident),* $(,)?]) => {
        publisher_conformance!(@one ledger, Ledger, [$($all),*]);
        publisher_conformance!(@one nats, Nats, [$($all,)* $($net),*]);
        publisher_conformance!(@one amqp, Amqp, [$($all,)* $($net),*]);
        publisher_conformance!(@one redis, Redis, [$($all,)* $($net),*]);
        publisher_conformance!(@one webhook, Webhook, [$($all,)* $($net),*]);
        publisher_conformance!(@one mqtt, Mqtt, [$($all,)* $($net),*]);
    };
    (@one $m:ident, $kind:ident, [$($test:ident),*]) => {
        mod $m { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::Broker::$kind).await }
        )* }
    };
}

publisher_conformance!(
    all: [
        a_batch_of_1000_is_confirmed_and_read_back_by_a_plain_consumer,
        the_same_envelope_twice_is_deduplicated_where_the_broker_can,
        an_empty_batch_sends_nothing,
    ],
    networked: [
        a_connection_cut_mid_batch_leaves_only_unconfirmed_envelopes_waiting_with_their_retries_unspent,
        a_broker_that_is_down_leaves_the_batch_waiting_and_is_used_once_it_is_back,
        a_permanent_refusal_dead_letters_at_once_keeping_the_brokers_message,
        readiness_follows_the_broker_through_a_cut_and_back,
    ]
);

fn op(id: &str) -> Operation {
    ingest::parse_line(&op_line(id, T0)).unwrap()
}

fn ops(prefix: &str, n: usize) -> Vec<Operation> {
    (0..n).map(|i| op(&format!("{prefix}-{i:05}"))).collect()
}

fn ids(ops: &[Operation]) -> BTreeSet<String> {
    ops.iter().map(|o| o.op_id.clone()).collect()
}

/// A tenant on a fresh SQLite database that publishes to `publisher_url`.
async fn tenant(s: &Scratch, publisher_url: &str, batch_size: u32) -> Tenant {
    let db = Database::connect(&s.db_url()).await.unwrap();
    db.migrate().await.unwrap();
    let publisher = Publisher::connect(publisher_url).await.unwrap();
    // One batch at a time: each scan tick commits what it read, so a test reads the
    // outcome of its batch right after the tick.
    let config = Config {
        batch_size,
        pipeline_depth: 1,
        ..Config::default()
    };
    Tenant::new(Runtime::new().unwrap(), "test", db, publisher, config)
        .await
        .unwrap()
}

async fn record_all(t: &mut Tenant, ops: Vec<Operation>) {
    let n = ops.len();
    let outcomes = t.record(ops, None).await.unwrap();
    assert_eq!(outcomes, vec![RecordOutcome::Stored; n]);
}

async fn op_ids_with_status(s: &Scratch, status: &str) -> BTreeSet<String> {
    sqlx::query("SELECT op_id FROM operation WHERE trustlog_status = ?")
        .bind(status)
        .fetch_all(&s.pool().await)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn retry_rows(s: &Scratch) -> Vec<(String, String, String)> {
    sqlx::query("SELECT op_id, retry_status, error_message FROM trustlog_retry ORDER BY op_id")
        .fetch_all(&s.pool().await)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Every received envelope is intact: its bytes hash to its sha256, and the id the
/// broker carries is the op_id inside.
fn assert_intact(received: &[Received]) {
    for r in received {
        assert_eq!(
            trustlog_guest::envelope::sha256_hex(&r.payload),
            r.sha256,
            "bytes and hash of {} disagree",
            r.op_id
        );
        let body: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(
            body["op_id"],
            r.op_id.as_str(),
            "the broker's id is the op_id"
        );
    }
}

fn received_ids(received: &[Received]) -> BTreeSet<String> {
    received.iter().map(|r| r.op_id.clone()).collect()
}

async fn a_batch_of_1000_is_confirmed_and_read_back_by_a_plain_consumer(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let s = Scratch::new();
    let mut t = tenant(&s, &broker.url(), 1000).await;
    let batch = ops("k", 1000);
    let expected = ids(&batch);
    record_all(&mut t, batch).await;

    let report = t.scan_tick(T0).await.unwrap();
    assert_eq!(
        (report.fetched, report.published),
        (1000, 1000),
        "{report:?}"
    );
    assert_eq!(op_ids_with_status(&s, "TRUSTLOGGED").await, expected);

    let received = broker.wait_received(1000).await;
    assert_eq!(received.len(), 1000, "exactly one copy of each");
    assert_eq!(received_ids(&received), expected);
    assert_intact(&received);
}

async fn the_same_envelope_twice_is_deduplicated_where_the_broker_can(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let publisher = Publisher::connect(&broker.url()).await.unwrap();
    let batch: Vec<_> = ops("d", 10)
        .iter()
        .map(|o| trustlog_guest::envelope::build(o).unwrap())
        .collect();
    for _ in 0..2 {
        let results = publisher.publish(batch.clone()).await;
        assert_eq!(results, vec![Ok(()); 10], "a re-delivery is confirmed too");
    }
    let copies = if broker.deduplicates() { 10 } else { 20 };
    let received = broker.wait_received(copies).await;
    // Give a wrong extra copy the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = if received.len() == copies {
        broker.received().await
    } else {
        received
    };
    assert_eq!(
        received.len(),
        copies,
        "{kind:?} keeps {copies} copies of 10 envelopes"
    );
    assert_eq!(received_ids(&received).len(), 10);
    assert_intact(&received);
}

async fn an_empty_batch_sends_nothing(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let publisher = Publisher::connect(&broker.url()).await.unwrap();
    assert_eq!(publisher.publish(Vec::new()).await, Vec::new());
    assert!(broker.received().await.is_empty());
}

async fn a_connection_cut_mid_batch_leaves_only_unconfirmed_envelopes_waiting_with_their_retries_unspent(
    kind: Broker,
) {
    let broker = TestBroker::create(kind).await;
    let proxy = TcpProxy::start(broker.upstream()).await;
    let s = Scratch::new();
    let mut t = tenant(&s, &broker.url_via(&proxy), 2000).await;
    let batch = ops("cut", 2000);
    let expected = ids(&batch);
    record_all(&mut t, batch).await;

    // About 1 MB goes up for 2,000 envelopes; cut a third of the way in.
    proxy.cut_after_upstream_bytes(300_000);
    let report = t.scan_tick(T0).await.unwrap();
    assert!(proxy.is_cut(), "the cut happened during the batch");
    assert_eq!(report.fetched, 2000);
    assert!(report.published < 2000, "{report:?}");

    let trustlogged = op_ids_with_status(&s, "TRUSTLOGGED").await;
    let waiting = op_ids_with_status(&s, "NOT_TRUSTLOGGED").await;
    println!(
        "{kind:?}: {} confirmed before the cut, {} left waiting; error: {:?}",
        trustlogged.len(),
        waiting.len(),
        report.error
    );
    // The broker as a whole went away: what it did not confirm is left as it was, no
    // retry spent, for the worker to send once it is back.
    assert_eq!(
        (report.unavailable as usize, report.retry_scheduled),
        (waiting.len(), 0),
        "{kind:?}: {report:?}"
    );
    assert_eq!(
        trustlogged.len() + waiting.len(),
        2000,
        "every envelope has one outcome"
    );
    assert!(
        retry_rows(&s).await.is_empty(),
        "{kind:?}: a cut spends no retry"
    );
    // The cursor stops before the first envelope left waiting, so the scan sends it again.
    let db = Database::connect(&s.db_url()).await.unwrap();
    let cursor = db
        .load_cursor(trustlog_guest::model::DEFAULT_CURSOR_KEY)
        .await
        .unwrap();
    let first_waiting = waiting.iter().next().unwrap();
    assert!(
        cursor
            .as_ref()
            .is_none_or(|c| c.op_id.as_str() < first_waiting.as_str()),
        "{kind:?}: cursor {cursor:?} passed {first_waiting}"
    );
    // Nothing is TRUSTLOGGED that the broker does not hold.
    let held = received_ids(&broker.wait_for_ids(&trustlogged).await);
    assert!(
        trustlogged.is_subset(&held),
        "{} confirmed but missing",
        trustlogged.difference(&held).count()
    );

    proxy.restore();
    let report = t.scan_tick(T0 + 1).await.unwrap();
    assert_eq!(report.published as usize, waiting.len(), "{report:?}");
    assert_eq!(op_ids_with_status(&s, "TRUSTLOGGED").await, expected);
    assert!(retry_rows(&s).await.is_empty());
    let received = broker.wait_for_ids(&expected).await;
    assert_eq!(received_ids(&received), expected);
    assert_intact(&received);
}

async fn a_broker_that_is_down_leaves_the_batch_waiting_and_is_used_once_it_is_back(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let proxy = TcpProxy::start(broker.upstream()).await;
    proxy.cut();
    let s = Scratch::new();
    // Starting with the broker down is not an error.
    let mut t = tenant(&s, &broker.url_via(&proxy), 100).await;
    let batch = ops("down", 5);
    let expected = ids(&batch);
    record_all(&mut t, batch).await;

    let started = Instant::now();
    let report = t.scan_tick(T0).await.unwrap();
    assert_eq!(
        (report.published, report.retry_scheduled, report.unavailable),
        (0, 0, 5),
        "{report:?}"
    );
    let why = report.error.unwrap_or_default();
    assert!(
        why.contains(&proxy.addr().port().to_string()),
        "{kind:?}: the error names the broker: {why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a dead broker costs at most the timeout, took {:?}",
        started.elapsed()
    );
    assert!(retry_rows(&s).await.is_empty(), "{kind:?}: no retry spent");

    proxy.restore();
    // The worker probes until the broker answers; the next scan sends the batch.
    readiness_becomes(&t.publisher().clone(), true)
        .await
        .unwrap();
    let report = t.scan_tick(T0 + MIN).await.unwrap();
    assert_eq!(report.published, 5, "{report:?}");
    assert_eq!(op_ids_with_status(&s, "TRUSTLOGGED").await, expected);
    assert_eq!(
        received_ids(&broker.wait_for_ids(&expected).await),
        expected
    );
}

/// Polls `ready()` until it is `Ok` (or `Err`, when `want_ok` is false), for at most 15 s.
async fn readiness_becomes(publisher: &Publisher, want_ok: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = publisher.ready().await;
        if r.is_ok() == want_ok {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "readiness stuck at {r:?}, wanted ok = {want_ok}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readiness_follows_the_broker_through_a_cut_and_back(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let proxy = TcpProxy::start(broker.upstream()).await;
    let publisher = Publisher::connect(&broker.url_via(&proxy)).await.unwrap();
    readiness_becomes(&publisher, true).await.unwrap();
    proxy.cut();
    let why = readiness_becomes(&publisher, false).await.unwrap_err();
    assert!(
        why.contains(&proxy.addr().port().to_string()),
        "{kind:?}: the reason names the broker: {why}"
    );
    proxy.restore();
    readiness_becomes(&publisher, true).await.unwrap();
}

async fn a_permanent_refusal_dead_letters_at_once_keeping_the_brokers_message(kind: Broker) {
    let broker = TestBroker::create(kind).await;
    let refusing = broker
        .refusing()
        .await
        .expect("networked brokers can refuse");
    let s = Scratch::new();
    let mut t = tenant(&s, &refusing.url, 100).await;
    record_all(&mut t, ops("no", 3)).await;

    let report = t.scan_tick(T0).await.unwrap();
    assert_eq!(
        (report.published, report.dead_lettered),
        (0, 3),
        "{report:?}"
    );
    let rows = retry_rows(&s).await;
    assert_eq!(rows.len(), 3);
    for (op_id, status, error) in rows {
        assert_eq!(status, "DEAD_LETTER", "{op_id}");
        assert!(
            error.contains(refusing.says),
            "{op_id}: {error:?} lacks {:?}",
            refusing.says
        );
    }
    assert!(op_ids_with_status(&s, "TRUSTLOGGED").await.is_empty());
}

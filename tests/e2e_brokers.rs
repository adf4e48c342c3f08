//! End-to-end through every broker: the real binary drains PostgreSQL into NATS
//! JetStream, RabbitMQ, Redis Streams, an HTTP receiver and Mosquitto, and a plain
//! consumer of each checks what arrived: exactly the op_ids recorded, each envelope
//! the operation recorded under that id, and the digest beside it that envelope's.
//!
//! `TRUSTLOG_E2E_OPS` scales the run (default 3,000) and `TRUSTLOG_E2E_BATCH` sets
//! `--batch-size` (default 1,000); with a release build it gives the
//! figures quoted in the README (Performance): `TRUSTLOG_E2E_OPS=100000 cargo test --release --test
//! e2e_brokers -- --nocapture --test-threads 1`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use sha2::{Digest, Sha256};

use support::backends::{Backend, TestDb};
use support::brokers::{Broker, TestBroker};
use support::*;

const T0: i64 = 1_764_000_000_000_000;

macro_rules! through_every_broker {
    ($($m:ident: $kind:ident),* $(,)?) => {
        $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
           async fn $m() { postgres_drains_into(Broker::$kind).await } )*
    };
}

through_every_broker!(
    postgres_to_nats_jetstream: Nats,
    postgres_to_rabbitmq: Amqp,
    postgres_to_redis_streams: Redis,
    postgres_to_webhook: Webhook,
    postgres_to_mqtt: Mqtt,
);

fn batch_size() -> String {
    std::env::var("TRUSTLOG_E2E_BATCH").unwrap_or_else(|_| "1000".into())
}

fn ops_to_run() -> usize {
    std::env::var("TRUSTLOG_E2E_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

async fn postgres_drains_into(kind: Broker) {
    let n = ops_to_run();
    let db = TestDb::create(Backend::Postgres).await;
    let broker = TestBroker::create(kind).await;
    let url = broker.url();
    let db_url = db.url.clone();
    let stamp = |i: usize| T0 + (i / 3) as i64;
    let lines = op_lines("e2e", n, stamp);
    let batch = batch_size();
    let batch_arg = batch.clone();

    let elapsed = tokio::task::spawn_blocking(move || {
        run_ok(&["record", "--db", &db_url, "--publisher", &url], &lines);
        let started = Instant::now();
        run_ok(
            &[
                "serve",
                "--db",
                &db_url,
                "--publisher",
                &url,
                "--until-drained",
                "--batch-size",
                &batch_arg,
            ],
            "",
        );
        started.elapsed()
    })
    .await
    .unwrap();

    let received = broker
        .wait_until(|got| got.iter().map(|r| &r.op_id).collect::<BTreeSet<_>>().len() >= n)
        .await;
    let distinct: BTreeSet<_> = received.iter().map(|r| r.op_id.as_str()).collect();
    println!(
        "e2e PostgreSQL -> {kind:?}, batch {batch}: {n} ops delivered in {:.2} s = {:.0} ops/s ({} messages, {} distinct op_ids)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        received.len(),
        distinct.len()
    );
    // Exactly the ids recorded: none missing, none made up.
    let expected: BTreeMap<String, serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("e2e-{i:06}");
            let op = serde_json::from_str(&op_line(&id, stamp(i))).unwrap();
            (id, op)
        })
        .collect();
    assert!(
        distinct
            .iter()
            .copied()
            .eq(expected.keys().map(String::as_str)),
        "{kind:?}: {} distinct op_ids arrived, {n} recorded",
        distinct.len()
    );
    // Each message: the envelope of the operation recorded under its id, and its digest.
    for r in &received {
        let envelope: serde_json::Value = serde_json::from_slice(&r.payload)
            .unwrap_or_else(|e| panic!("{kind:?}: {}: the payload is not JSON: {e}", r.op_id));
        assert_eq!(
            envelope, expected[&r.op_id],
            "{kind:?}: {}'s envelope is the operation recorded",
            r.op_id
        );
        assert_eq!(
            r.sha256,
            hex::encode(Sha256::digest(&r.payload)),
            "{kind:?}: {}'s digest is its payload's SHA-256",
            r.op_id
        );
    }
    let status = status(&db.url);
    assert_eq!(
        (
            status["trustlogged"].as_u64(),
            status["not_trustlogged"].as_u64()
        ),
        (Some(n as u64), Some(0)),
        "{status}"
    );
}

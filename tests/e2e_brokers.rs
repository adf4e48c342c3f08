//! End-to-end through every broker: the real binary drains PostgreSQL into NATS
//! JetStream, RabbitMQ, Redis Streams, an HTTP receiver and Mosquitto, and a plain
//! consumer of each counts the distinct op_ids that arrived.
//!
//! `TRUSTLOG_E2E_OPS` scales the run (default 3,000) and `TRUSTLOG_E2E_BATCH` sets
//! `--batch-size` (default 1,000); with a release build it gives the
//! figures quoted in the README: `TRUSTLOG_E2E_OPS=100000 cargo test --release --test
//! e2e_brokers -- --nocapture --test-threads 1`.

mod support;

use std::collections::BTreeSet;
use std::time::Instant;

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
    let lines = op_lines("e2e", n, |i| T0 + (i / 3) as i64);
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
    assert_eq!(distinct.len(), n, "{kind:?}: every op_id arrived");
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

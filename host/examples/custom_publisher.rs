//! A trust log of the user's own, plugged into the host through its public API.
//!
//! `MemoryLog` keeps every confirmed envelope in a list; it is registered under the
//! `memory://` scheme, the host is started embedded on a fresh SQLite file, 10,000
//! operations are recorded and drained, and the last line printed is a JSON summary:
//!
//! ```text
//! cargo run --release --example custom_publisher
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use trustlog_guest::model::{Envelope, Operation, PublishError, RecordOutcome};
use trustlog_host::adapters::Adapters;
use trustlog_host::embed::Trustlog;
use trustlog_host::publisher::PublisherAdapter;

/// How many operations the example delivers.
const OPERATIONS: u32 = 10_000;
/// How many are recorded per call.
const PER_RECORD: u32 = 500;

/// A trust log in memory: an envelope is confirmed once it is in the list.
#[derive(Debug, Clone, Default)]
struct MemoryLog {
    entries: Arc<Mutex<Vec<Envelope>>>,
}

#[async_trait::async_trait]
impl PublisherAdapter for MemoryLog {
    async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let confirmed = batch.iter().map(|_| Ok(())).collect();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch);
        confirmed
    }
}

/// Operation `i`, as an application would record it.
fn operation(i: u32, at: i64) -> Operation {
    Operation {
        op_id: format!("example-{i:06}"),
        op_actor: format!("user-{}", i % 17),
        doid: format!("10.1000/doc-{i}"),
        producer_id: "custom-publisher-example".into(),
        request_body_hash: None,
        response_body_hash: None,
        op_source: "IRP".into(),
        op_type: "Create".into(),
        do_prefix: "10.1000".into(),
        do_repository: "example-repository".into(),
        client_ip: Some("192.0.2.1".into()),
        server_ip: None,
        timestamp: at + i64::from(i),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let log = MemoryLog::default();
    let registered = log.clone();
    let adapters = Adapters::new().with_publisher("memory", move |_url| {
        let log = registered.clone();
        async move { Ok(log) }
    });
    let trustlog = Trustlog::builder()
        .database_url(&format!("sqlite://{}", dir.path().join("app.db").display()))
        .publisher_url("memory://example")
        .adapters(adapters)
        .start()
        .await?;

    let started = Instant::now();
    let base = chrono::Utc::now().timestamp_micros();
    let mut stored = 0;
    for first in (0..OPERATIONS).step_by(PER_RECORD as usize) {
        let ops = (first..first + PER_RECORD)
            .map(|i| operation(i, base))
            .collect();
        let outcomes = trustlog.record(ops, None).await?;
        stored += outcomes
            .iter()
            .filter(|o| **o == RecordOutcome::Stored)
            .count();
    }
    let summary = trustlog.drain().await;
    let seconds = started.elapsed().as_secs_f64();

    let entries = log.entries.lock().unwrap_or_else(|p| p.into_inner());
    let distinct: BTreeSet<&str> = entries.iter().map(|e| e.op_id.as_str()).collect();
    let digests_match = entries
        .iter()
        .all(|e| hex::encode(Sha256::digest(&e.payload)) == e.sha256);
    let ok = distinct.len() == OPERATIONS as usize && digests_match;
    println!(
        "{}",
        serde_json::json!({
            "publisher": "memory://example",
            "recorded": stored,
            "published": summary.published,
            "distinct_op_ids": distinct.len(),
            "digests_match": digests_match,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "ops_per_sec": (f64::from(OPERATIONS) / seconds).round(),
            "delivered": entries.len(),
        })
    );
    if !ok {
        return Err(format!(
            "{} distinct of {OPERATIONS} delivered, digests match: {digests_match}",
            distinct.len()
        )
        .into());
    }
    Ok(())
}

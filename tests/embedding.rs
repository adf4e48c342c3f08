//! The host as a library: an embedded handle with a publisher and a database of the
//! user's own, as a program outside this crate builds it.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::forwarding;
use trustlog_guest::model::{
    Config, Envelope, Operation, PublishError, RecordOutcome, TrustlogStatus,
};
use trustlog_host::db::Database;
use trustlog_host::embed::{EmbedError, Trustlog};
use trustlog_host::publisher::{Publisher, PublisherAdapter, PublisherError};
use trustlog_host::scheduling::worker::Intervals;
use trustlog_host::surfaces::ingest;

const T0: i64 = 1_764_000_000_000_000;

/// A trust log in memory that confirms everything, or cannot be reached while `down`
/// is set.
#[derive(Debug, Clone, Default)]
struct MemoryLog {
    entries: Arc<Mutex<Vec<Envelope>>>,
    down: Arc<AtomicBool>,
}

impl MemoryLog {
    fn op_ids(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.op_id.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl PublisherAdapter for MemoryLog {
    async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        if self.down.load(Ordering::SeqCst) {
            return batch
                .iter()
                .map(|_| Err(PublishError::Unavailable("memory log is down".into())))
                .collect();
        }
        let results = batch.iter().map(|_| Ok(())).collect();
        self.entries.lock().unwrap().extend(batch);
        results
    }

    async fn ready(&self) -> Result<(), String> {
        match self.down.load(Ordering::SeqCst) {
            true => Err("memory log is down".into()),
            false => Ok(()),
        }
    }
}

fn ops(prefix: &str, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|i| {
            ingest::parse_line(&support::op_line(
                &format!("{prefix}-{i:05}"),
                T0 + i as i64,
            ))
            .unwrap()
        })
        .collect()
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("app.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_host_delivers_what_it_records_to_a_publisher_of_its_own_and_reports_each_tick()
{
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::default();
    let trustlog = Trustlog::builder()
        .database_url(&sqlite_url(&dir))
        .publisher(Publisher::custom(log.clone()))
        .config(Config {
            batch_size: 50,
            ..Config::default()
        })
        .start()
        .await
        .unwrap();
    let mut reports = trustlog.reports();

    let outcomes = trustlog.record(ops("e", 250), None).await.unwrap();
    assert!(
        outcomes.iter().all(|o| *o == RecordOutcome::Stored),
        "{outcomes:?}"
    );
    let again = trustlog.record(ops("e", 1), None).await.unwrap();
    assert_eq!(again, vec![RecordOutcome::Duplicate]);

    // Delivered in the background, batch by batch, each tick reported.
    let mut published = 0;
    while published < 250 {
        let event = tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .expect("a tick within 30 s")
            .unwrap();
        let report = event
            .outcome
            .unwrap_or_else(|e| panic!("{} failed: {e}", event.tick));
        // A scan tick reports the batches whose commit it saw: one, or every batch out
        // when a short read settles the pipeline.
        let most = 50 * Config::default().pipeline_depth;
        assert!(report.published <= most, "{report:?}");
        published += report.published;
    }
    assert_eq!(published, 250);
    let status = trustlog.status().await.unwrap();
    assert_eq!(status.stats.trustlogged, 250, "{status:?}");
    assert_eq!(status.stats.not_trustlogged, 0, "{status:?}");
    assert!(trustlog.backlog().await.unwrap().is_empty());

    let summary = trustlog.shutdown().await;
    assert_eq!(summary.published, 250);
    let ids: BTreeSet<String> = log.op_ids().into_iter().collect();
    assert_eq!(ids.len(), 250, "each delivered once");
    assert_eq!(log.op_ids().len(), 250);
    assert!(ids.iter().all(|id| id.starts_with("e-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_another_program_writes_are_delivered_and_a_drain_ends_once_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let log = MemoryLog::default();
    let trustlog = Trustlog::builder()
        .database_url(&url)
        .publisher(Publisher::custom(log.clone()))
        .intervals(Intervals {
            watch: Duration::from_millis(10),
            ..Intervals::default()
        })
        .start()
        .await
        .unwrap();
    // The application writes its rows itself, in its own transaction.
    let app = Database::connect(&url).await.unwrap();
    app.insert(ops("app", 120), TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    app.insert(ops("local", 5), TrustlogStatus::DbOnly)
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while log.op_ids().len() < 120 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the watch probe found them: {}",
        log.op_ids().len()
    );

    trustlog.record(ops("late", 30), None).await.unwrap();
    let summary = trustlog.drain().await;
    assert_eq!(summary.published, 150, "{summary:?}");
    let ids = log.op_ids();
    assert_eq!(ids.len(), 150);
    assert!(
        !ids.iter().any(|id| id.starts_with("local-")),
        "db-only rows stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_its_trust_log_is_down_nothing_is_marked_or_spent_and_delivery_resumes_on_its_return()
{
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::default();
    log.down.store(true, Ordering::SeqCst);
    let trustlog = Trustlog::builder()
        .database_url(&sqlite_url(&dir))
        .publisher(Publisher::custom(log.clone()))
        .start()
        .await
        .unwrap();
    let mut reports = trustlog.reports();
    trustlog.record(ops("d", 20), None).await.unwrap();
    // The first tick that read the rows (a pass may start with ticks that find none).
    let report = loop {
        let event = tokio::time::timeout(Duration::from_secs(30), reports.recv())
            .await
            .expect("a tick within 30 s")
            .unwrap();
        let report = event.outcome.unwrap();
        if report.fetched > 0 {
            break report;
        }
    };
    assert_eq!(report.published, 0, "{report:?}");
    assert_eq!(report.unavailable, 20, "{report:?}");
    let status = trustlog.status().await.unwrap();
    assert_eq!(status.stats.trustlogged, 0, "{status:?}");
    assert_eq!(status.stats.not_trustlogged, 20, "{status:?}");
    assert_eq!(status.stats.retry_pending, 0, "no retry spent: {status:?}");
    assert_eq!(status.stats.cursor, None, "the cursor stays: {status:?}");
    assert!(log.op_ids().is_empty());

    log.down.store(false, Ordering::SeqCst);
    let summary = trustlog.drain().await;
    assert_eq!(summary.published, 20, "{summary:?}");
    assert_eq!(log.op_ids().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_of_a_registered_scheme_reach_adapters_of_the_users_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::default();
    let registered = log.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let adapters = forwarding::adapters(calls.clone()).with_publisher("memory", move |url| {
        let log = registered.clone();
        async move {
            match url.as_str() {
                "memory://ops" => Ok(log),
                _ => Err(PublisherError::InvalidUrl {
                    url,
                    message: "only memory://ops is here".into(),
                }),
            }
        }
    });
    let trustlog = Trustlog::builder()
        .adapters(adapters.clone())
        .database_url(&format!("{}{}", forwarding::PREFIX, sqlite_url(&dir)))
        .publisher_url("memory://ops")
        .start()
        .await
        .unwrap();
    trustlog.record(ops("r", 40), None).await.unwrap();
    let summary = trustlog.drain().await;
    assert_eq!(summary.published, 40);
    assert_eq!(log.op_ids().len(), 40);
    assert!(
        calls.load(Ordering::Relaxed) > 10,
        "the database calls went through the user's adapter"
    );

    let e = Trustlog::builder()
        .adapters(adapters)
        .database_url(&sqlite_url(&dir))
        .publisher_url("memory://elsewhere")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EmbedError::Publisher(PublisherError::InvalidUrl { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("only memory://ops is here"), "{e}");
}

#[tokio::test]
async fn a_builder_missing_a_part_or_given_an_unknown_scheme_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let e = Trustlog::builder()
        .publisher(Publisher::custom(MemoryLog::default()))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, EmbedError::NoDatabase), "{e}");
    let e = Trustlog::builder()
        .database_url(&sqlite_url(&dir))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, EmbedError::NoPublisher), "{e}");
    let e = Trustlog::builder()
        .database_url("kafka://u:hunter2@k:9092/ops")
        .publisher(Publisher::custom(MemoryLog::default()))
        .start()
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("kafka://"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is redacted: {text}"
    );
    let e = Trustlog::builder()
        .database_url(&sqlite_url(&dir))
        .publisher_url("kafka://k:9092/ops")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(e, EmbedError::Publisher(PublisherError::UnsupportedUrl(_))),
        "{e}"
    );
    let e = Trustlog::builder()
        .database_url(&sqlite_url(&dir))
        .publisher(Publisher::custom(MemoryLog::default()))
        .config(Config {
            batch_size: 0,
            ..Config::default()
        })
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("batch_size"), "{e}");
}

//! DESIGN.md §4 as tests that would catch a regression: nothing is lost when the
//! host is stopped, gracefully or with `kill -9`, in the middle of its work.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::brokers::{Broker, TestBroker};
use support::*;

const T0: i64 = 1_764_000_000_000_000;

#[test]
fn sigterm_during_a_large_drain_returns_within_5_s_and_loses_nothing() {
    const N: usize = 50_000;
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("drain", N, |i| T0 + i as i64),
    );
    let child = bin()
        .args(["serve", "--db", &db, "--publisher", &ledger])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marked_before = block_on(async {
        let pool = s.pool().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let marked = count_status(&pool, "TRUSTLOGGED").await;
            if marked >= 2_000 {
                return marked;
            }
            assert!(Instant::now() < deadline, "the drain never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let asked = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    assert!(
        out.status.success(),
        "serve exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let marked = block_on(async { count_status(&s.pool().await, "TRUSTLOGGED").await });
    assert!(
        (marked_before..N as i64).contains(&marked),
        "stopped part way: {marked} of {N} marked"
    );
    // Whatever was marked was confirmed: every TRUSTLOGGED op_id is in the ledger.
    let in_ledger: std::collections::BTreeSet<String> =
        ledger_op_ids(&s.ledger_path()).into_iter().collect();
    assert!(in_ledger.len() as i64 >= marked);

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
    let st = status(&db);
    assert_eq!(
        (st["trustlogged"].as_u64(), st["not_trustlogged"].as_u64()),
        (Some(N as u64), Some(0))
    );
    run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    let ids = ledger_op_ids(&s.ledger_path());
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "every op_id is in the ledger");
    println!(
        "SIGTERM after {marked_before} marked: exited in {took:?}; {} duplicates in the ledger",
        ids.len() - N
    );
}

/// Operations the writer streams in while the host is being killed.
const STREAMED: usize = 50_000;
/// How many times the host is killed.
const KILLS: usize = 20;

/// A small xorshift generator: random kill moments, reproducible from the printed seed.
struct Dice(u64);

impl Dice {
    fn seeded() -> Dice {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("kill moments seed: {seed}");
        Dice(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Streams `STREAMED` operations into the database from this process (the application)
/// while `serve` is started and killed with SIGKILL `KILLS` times at random moments;
/// then one last `serve --until-drained`. Returns the scratch directory and the op_ids.
fn stream_while_killing(publisher: &str) -> (Scratch, BTreeSet<String>) {
    let s = Scratch::new();
    let db = s.db_url();
    run_ok(&["migrate", "--db", &db], "");
    let writer = {
        let url = format!("{db}?mode=rwc");
        std::thread::spawn(move || {
            block_on(async {
                let pool = sqlx::sqlite::SqlitePool::connect(&url).await.unwrap();
                for chunk in 0..STREAMED / 250 {
                    let mut tx = pool.begin().await.unwrap();
                    for i in chunk * 250..(chunk + 1) * 250 {
                        sqlx::query(
                            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, \
                             op_type, do_prefix, do_repository, timestamp) \
                             VALUES (?, 'app', 'doid', 'prod', 'IRP', 'Create', '10.1', 'repo', ?)",
                        )
                        .bind(format!("crash-{i:06}"))
                        .bind(T0 + i as i64)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    }
                    tx.commit().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
    };
    let mut dice = Dice::seeded();
    for _ in 0..KILLS {
        let mut child = bin()
            .args(["serve", "--db", &db, "--publisher", publisher])
            .args(["--poll-interval", "50ms", "--batch-size", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + dice.below(500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.join().unwrap();
    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            publisher,
            "--until-drained",
        ],
        "",
    );
    let st = status(&db);
    assert_eq!(
        (
            st["trustlogged"].as_u64(),
            st["not_trustlogged"].as_u64(),
            st["dead_letter"].as_u64()
        ),
        (Some(STREAMED as u64), Some(0), Some(0)),
        "{st}"
    );
    let ids = (0..STREAMED).map(|i| format!("crash-{i:06}")).collect();
    (s, ids)
}

#[test]
fn kill_9_twenty_times_while_50k_stream_in_loses_nothing() {
    let s = Scratch::new();
    let ledger = s.ledger_url();
    let (db, expected) = stream_while_killing(&ledger);
    drop(db);
    run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    let ids = ledger_op_ids(&s.ledger_path());
    let held: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(held, expected, "every op_id is in the ledger");
    println!(
        "{KILLS} kills: {} ledger entries for {STREAMED} operations, {} duplicates",
        ids.len(),
        ids.len() - STREAMED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_with_jetstream_leaves_each_op_id_in_the_stream_once() {
    let broker = TestBroker::create(Broker::Nats).await;
    let url = broker.url();
    let (_s, expected) = tokio::task::spawn_blocking(move || stream_while_killing(&url))
        .await
        .unwrap();
    let received = broker.wait_for_ids(&expected).await;
    let held: Vec<&str> = received.iter().map(|r| r.op_id.as_str()).collect();
    let distinct: BTreeSet<&str> = held.iter().copied().collect();
    assert_eq!(distinct.len(), STREAMED);
    assert_eq!(held.len(), STREAMED, "JetStream dropped every re-delivery");
}

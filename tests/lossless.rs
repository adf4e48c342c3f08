//! DESIGN.md §4 as tests that would catch a regression: nothing is lost when the
//! host is stopped, gracefully or with `kill -9`, in the middle of its work.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::backends::{Backend, TestDb};
use support::brokers::{Broker, TestBroker};
use support::server::Server;
use support::*;
use trustlog_host::clock::now_micros;

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

/// When one late row was stamped, and when its COMMIT was sent and came back.
#[derive(Clone, Copy)]
struct Committed {
    stamped: i64,
    sent: Instant,
    done: Instant,
}

/// One application transaction that takes its timestamp, waits `hold`, then commits:
/// the row becomes visible late, possibly behind rows stamped after it.
async fn insert_late(t: &TestDb, op_id: &str, hold: Duration) -> Committed {
    use sqlx::{AssertSqlSafe, Connection, Executor};
    let stamped = now_micros();
    let insert = format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
         do_prefix, do_repository, timestamp) \
         VALUES ('{op_id}', 'app', 'doid', 'prod', 'IRP', 'Create', '10.1', 'repo', {})",
        t.timestamp_sql(stamped)
    );
    let sent;
    match t.backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&t.url).await.unwrap();
            let mut tx = c.begin().await.unwrap();
            tx.execute(AssertSqlSafe(insert)).await.unwrap();
            tokio::time::sleep(hold).await;
            sent = Instant::now();
            tx.commit().await.unwrap();
        }
        Backend::MySql => {
            let mut c = sqlx::MySqlConnection::connect(&t.url).await.unwrap();
            let mut tx = c.begin().await.unwrap();
            tx.execute(AssertSqlSafe(insert)).await.unwrap();
            tokio::time::sleep(hold).await;
            sent = Instant::now();
            tx.commit().await.unwrap();
        }
        Backend::Sqlite => unreachable!("SQLite has one writer at a time: no commit is late"),
    }
    Committed {
        stamped,
        sent,
        done: Instant::now(),
    }
}

/// Rows that surely committed in timestamp order: every row stamped later sent its
/// COMMIT only after this one's came back. The cursor must deliver each of these,
/// since no later row was visible to move it past them.
fn surely_in_order(rows: &[Committed]) -> usize {
    rows.iter()
        .filter(|r| {
            rows.iter()
                .filter(|o| o.stamped > r.stamped)
                .all(|o| o.sent > r.done)
        })
        .count()
}

/// 8 writers, 25 rows each, every row held 0–500 ms between its timestamp and its
/// commit; one row held 1.5 s while the others commit past it; and one last row
/// after them all.
async fn late_commits_are_all_delivered_and_in_order_commits_go_through_the_cursor(b: Backend) {
    const WRITERS: usize = 8;
    const ROWS: usize = 25;
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l");
    run_ok(&["migrate", "--db", &t.url], "");
    let server = Server::start(&[
        "--db",
        &t.url,
        "--publisher",
        &format!("ledger://{}", ledger.display()),
        "--poll-interval",
        "100ms",
        "--sweep-interval",
        "2s",
    ]);
    let t = std::sync::Arc::new(t);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let t = t.clone();
        writers.push(tokio::spawn(async move {
            let mut dice = Dice::seeded();
            let mut done = Vec::new();
            for i in 0..ROWS {
                let hold = Duration::from_millis(dice.below(500));
                done.push(insert_late(&t, &format!("late-{w}-{i:03}"), hold).await);
            }
            done
        }));
    }
    let straggler = {
        let t = t.clone();
        tokio::spawn(async move { insert_late(&t, "straggler", Duration::from_millis(1500)).await })
    };
    let mut rows = Vec::new();
    for w in writers {
        rows.extend(w.await.unwrap());
    }
    rows.push(straggler.await.unwrap());
    rows.push(insert_late(&t, "last", Duration::ZERO).await);
    let in_order = surely_in_order(&rows);
    let total = WRITERS * ROWS + 2;
    server
        .wait_status(Duration::from_secs(30), |st| st["trustlogged"] == total)
        .await;

    let metrics = server.text("/metrics").await.1;
    let count = |tick: &str| -> f64 {
        let series = format!("trustlog_published_total{{tenant=\"default\",tick=\"{tick}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
            .parse()
            .unwrap()
    };
    let (scan, sweep, retry) = (count("scan"), count("sweep"), count("retry"));
    println!(
        "{b:?}: {total} rows, {in_order} surely committed in order; {scan} delivered through the cursor, {sweep} by the sweep"
    );
    assert_eq!(
        scan + sweep + retry,
        total as f64,
        "{b:?}: each row marked once"
    );
    assert!(
        sweep >= 1.0,
        "{b:?}: the straggler committed behind the cursor"
    );
    assert!(in_order >= 1, "{b:?}: the last row commits in order");
    assert!(
        scan >= in_order as f64,
        "{b:?}: rows that commit in order go through the cursor, not the sweep: {scan} < {in_order}"
    );
    let ids: BTreeSet<String> = ledger_op_ids(&ledger).into_iter().collect();
    assert_eq!(ids.len(), total, "{b:?}");
    assert!(ids.contains("straggler") && ids.contains("last"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_commits_from_8_writers_are_all_delivered() {
    late_commits_are_all_delivered_and_in_order_commits_go_through_the_cursor(Backend::Postgres)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_late_commits_from_8_writers_are_all_delivered() {
    late_commits_are_all_delivered_and_in_order_commits_go_through_the_cursor(Backend::MySql).await
}

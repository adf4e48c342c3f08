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
    stop(child);
    let took = asked.elapsed();
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

    let metrics = server.metrics().await;
    let count = |tick: &str| -> f64 {
        let series = format!("trustlog_published_total{{tenant=\"default\",tick=\"{tick}\"}}");
        *metrics
            .get(&series)
            .unwrap_or_else(|| panic!("no {series} in {metrics:?}"))
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

/// Inserts `ids` straight into the database, as the application does, whatever the host is doing.
async fn insert_directly(t: &TestDb, ids: impl Iterator<Item = String>) {
    let at = now_micros();
    let values: Vec<String> = ids
        .enumerate()
        .map(|(i, id)| {
            format!(
                "('{id}', 'app', 'doid', 'prod', 'IRP', 'Create', '10.1', 'repo', {})",
                t.timestamp_sql(at + i as i64)
            )
        })
        .collect();
    t.execute(&format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
         do_prefix, do_repository, timestamp) VALUES {}",
        values.join(", ")
    ))
    .await;
}

/// Waits `window` and returns the share of one CPU the server used meanwhile.
async fn cpu_share_over(server: &Server, window: Duration) -> f64 {
    let before = server.cpu_time();
    tokio::time::sleep(window).await;
    (server.cpu_time() - before).as_secs_f64() / window.as_secs_f64()
}

async fn trustlogged(t: &TestDb) -> i64 {
    t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
        .await
}

async fn wait_trustlogged(t: &TestDb, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while trustlogged(t).await < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            trustlogged(t).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The database stalls (every byte held) and, later, the broker goes away; both through
/// TCP proxies in front of the real PostgreSQL and NATS. Scaled to fit CI: a 10 s stall
/// and 20 s down, with a 1–2 s backoff standing in for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_database_stall_and_a_broker_outage_the_host_waits_quietly_and_delivers_everything()
 {
    use support::proxy::TcpProxy;
    let t = TestDb::create(Backend::Postgres).await;
    run_ok(&["migrate", "--db", &t.url], "");
    let broker = TestBroker::create(Broker::Nats).await;
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    assert!(t.url.contains("127.0.0.1:5432"), "{}", t.url);
    let db_proxy = TcpProxy::start(pg).await;
    let nats_proxy = TcpProxy::start(broker.upstream()).await;
    let proxied_db = t
        .url
        .replace("127.0.0.1:5432", &db_proxy.addr().to_string());
    let server = Server::start(&[
        "--db",
        &proxied_db,
        "--publisher",
        &broker.url_via(&nats_proxy),
        "--poll-interval",
        "200ms",
        "--retry-interval",
        "1s",
        "--backoff-base",
        "1s",
        "--backoff-cap",
        "2s",
        "--max-retries",
        "1000",
    ]);
    let batch = |from: usize, n: usize| (from..from + n).map(|i| format!("out-{i:05}"));

    insert_directly(&t, batch(0, 500)).await;
    wait_trustlogged(&t, 500, Duration::from_secs(30)).await;
    assert_eq!(server.get("/readyz").await.0, 200);

    // The database hangs: every query of the host waits, none fails, nothing spins.
    db_proxy.stall();
    insert_directly(&t, batch(500, 100)).await;
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["publisher"], "ok", "{ready}");
    assert!(
        ready["database"].as_str().unwrap().contains("no answer"),
        "{ready}"
    );
    let share = cpu_share_over(&server, Duration::from_secs(8)).await;
    println!(
        "database stalled: the host used {:.1}% of a CPU",
        share * 100.0
    );
    assert!(
        share < 0.10,
        "the host spun while the database hung: {share:.3}"
    );
    db_proxy.resume();
    wait_trustlogged(&t, 600, Duration::from_secs(30)).await;
    assert_eq!(server.get("/readyz").await.0, 200);

    // The broker goes away: deliveries fail transiently and wait in the retry queue.
    nats_proxy.cut();
    insert_directly(&t, batch(600, 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["database"], "ok", "{ready}");
    let why = ready["publisher"].as_str().unwrap();
    assert!(why.contains(&nats_proxy.addr().port().to_string()), "{why}");
    let share = cpu_share_over(&server, Duration::from_secs(15)).await;
    println!("broker down: the host used {:.1}% of a CPU", share * 100.0);
    assert!(
        share < 0.10,
        "the host spun while the broker was down: {share:.3}"
    );
    assert!(
        t.scalar(
            "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status IN ('PENDING', 'RETRYING')"
        )
        .await
            > 0,
        "failed deliveries wait in the retry queue"
    );
    nats_proxy.restore();
    wait_trustlogged(&t, 700, Duration::from_secs(60)).await;
    assert_eq!(server.get("/readyz").await.0, 200);
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        0,
        "every retry was delivered, none dead-lettered"
    );
    let expected: BTreeSet<String> = batch(0, 700).collect();
    let received = broker.wait_for_ids(&expected).await;
    let distinct: BTreeSet<&str> = received.iter().map(|r| r.op_id.as_str()).collect();
    assert_eq!(distinct.len(), 700);
}

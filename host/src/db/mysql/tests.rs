//! The MySQL/MariaDB adapter against a real server, beyond the conformance suite.

use super::*;
use crate::db::test_fixtures::*;
use proptest::prelude::*;
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};
use std::sync::atomic::{AtomicU32, Ordering};
use trustlog_guest::model::RetryStatus;

/// The server the tests use unless `TRUSTLOG_TEST_MYSQL_URL` names another; the
/// account must be allowed to create and drop databases.
const DEFAULT_TEST_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn admin_url() -> String {
    std::env::var("TRUSTLOG_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.to_string())
}

/// `url` with its database replaced by `database`.
fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

async fn admin_connection(url: &str) -> MySqlConnection {
    MySqlConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the MySQL/MariaDB server at {url}: {e}. The tests need a real \
                 server: start it, or set TRUSTLOG_TEST_MYSQL_URL to one where this account \
                 may create databases"
        )
    })
}

/// A database of its own for one test, so tests run in parallel; dropped with the
/// value, also when the test panics.
struct TestDb {
    name: String,
    admin: String,
    url: String,
}

impl TestDb {
    async fn create() -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = admin_url();
        let name = format!(
            "trustlog_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = admin_connection(&admin).await;
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .await
            .unwrap();
        conn.close().await.unwrap();
        TestDb {
            url: url_with_database(&admin, &name),
            name,
            admin,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await, and the test's own runtime may be blocked running it: a
        // runtime of its own on a thread of its own does the dropping.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async move {
                    let mut conn = MySqlConnection::connect(&admin).await?;
                    // A test that panicked inside a transaction may leave a lock behind
                    // until its connection goes; give up on the drop instead of hanging.
                    conn.execute("SET SESSION lock_wait_timeout = 10").await?;
                    conn.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                        .await?;
                    conn.close().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}

/// A migrated database of its own; keep the `TestDb` alive for the test.
#[test]
fn qualifying_names_each_table_the_statement_reads_or_writes_and_nothing_else() {
    assert_eq!(
        qualify(DEAD_LETTERS_AFTER, "t1"),
        DEAD_LETTERS_AFTER
            .replace("FROM trustlog_retry r", "FROM `t1`.trustlog_retry r")
            .replace("JOIN operation o", "JOIN `t1`.operation o")
    );
    assert_eq!(
        qualify(ENSURE_CURSOR, "t1"),
        "INSERT INTO `t1`.trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
             VALUES (?, '', ?) ON DUPLICATE KEY UPDATE cursor_key = cursor_key"
    );
    let waiting = qualify(SCAN_AFTER, "t1");
    assert!(waiting.contains("FROM `t1`.operation o FORCE INDEX (operation_waiting)"));
    assert!(waiting.contains("SELECT 1 FROM `t1`.trustlog_retry r WHERE r.op_id = o.op_id"));
    let columns = qualify(COLUMNS, "t1");
    assert!(columns.contains("TABLE_SCHEMA = 't1'"), "{columns}");
    assert!(
        columns.contains("FROM information_schema.COLUMNS"),
        "{columns}"
    );
    let schema = qualify(SCHEMA, "t1");
    for table in TABLES {
        assert!(
            schema.contains(&format!("CREATE TABLE IF NOT EXISTS `t1`.{table} (")),
            "{table}"
        );
    }
    assert_eq!(
        qualify(NAMED_INDEXES[0].2, "t1"),
        "ALTER TABLE `t1`.operation ADD INDEX operation_waiting (trustlog_status, timestamp, op_id)"
    );
    assert_eq!(
        qualify("FLUSH TABLES operation FOR EXPORT", "t1"),
        "FLUSH TABLES `t1`.operation FOR EXPORT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_on_one_shared_pool_see_only_their_own_tables() {
    let (server, other) = (TestDb::create().await, TestDb::create().await);
    let lone = MySqlDb::connect(&server.url).await.unwrap();
    lone.migrate().await.unwrap();
    // The pool's own database holds a row neither tenant may see.
    lone.insert(vec![op("decoy", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let mine = TestDb::create().await;
    let pool = open_pool(&server.url, 2, None).await.unwrap();
    let a = MySqlDb::in_database(pool.clone(), &mine.name, Share::of(2));
    let b = MySqlDb::in_database(pool, &other.name, Share::of(2));
    a.migrate().await.unwrap();
    b.migrate().await.unwrap();
    a.insert(vec![op("a-1", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let seen = |db: &MySqlDb| {
        let db = db.clone();
        async move {
            db.scan_after(None, 10)
                .await
                .unwrap()
                .rows
                .into_iter()
                .map(|o| o.op_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seen(&a).await, ["a-1"]);
    assert!(seen(&b).await.is_empty());
    assert_eq!(seen(&lone).await, ["decoy"]);
    a.close().await;
    assert_eq!(
        seen(&b).await,
        Vec::<String>::new(),
        "closing one leaves the pool open"
    );
}

/// Tenants on a shared pool prepare more statements than a connection caches, so
/// most statements evict another and close it first. Where the socket let Nagle hold
/// back the statement after that close (sqlx 0.9.0), each waited for the server's
/// delayed ACK, about 40 ms, and a thousand tenants' idle statements alone filled the
/// pool; without it each takes well under a millisecond here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_past_a_connections_cache_do_not_wait_for_delayed_acks() {
    let t = TestDb::create().await;
    let pool = open_pool(&t.url, 1, None).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // Twice around 250 distinct statements: every one after the first 100 evicts.
    let began = std::time::Instant::now();
    for round in 0..2 {
        for i in 0..250_i64 {
            let sql = AssertSqlSafe(format!("SELECT CAST(? + {i} AS SIGNED)"));
            let got: i64 = sqlx::query_scalar(sql)
                .bind(round)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(got, round + i);
        }
    }
    let took = began.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "500 statements, 400 of them evicting another, took {took:?}: delayed ACKs?"
    );
}

async fn fresh() -> (TestDb, MySqlDb) {
    let t = TestDb::create().await;
    let db = MySqlDb::connect(&t.url).await.unwrap();
    db.migrate().await.unwrap();
    (t, db)
}

/// Every retry row as (op_id, retry_count, retry_status, next_retry_at, created_at, updated_at).
async fn retry_rows(db: &MySqlDb) -> Vec<(String, i64, String, Option<i64>, i64, i64)> {
    sqlx::query(
        "SELECT op_id, retry_count, retry_status, next_retry_at, created_at, updated_at \
             FROM trustlog_retry ORDER BY op_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get::<Option<DateTime<Utc>>, _>(3).map(micros_of),
            micros_of(r.get(4)),
            micros_of(r.get(5)),
        )
    })
    .collect()
}

async fn fetch_all_waiting(db: &MySqlDb) -> Vec<Operation> {
    db.scan_after(None, u32::MAX).await.unwrap().rows
}

fn ids(ops: Vec<Operation>) -> Vec<String> {
    ops.into_iter().map(|o| o.op_id).collect()
}

#[tokio::test]
async fn migrate_adds_the_named_indexes_to_tables_created_without_them() {
    let t = TestDb::create().await;
    let db = MySqlDb::connect(&t.url).await.unwrap();
    // The schema's tables with neither index nor constraint, as an older creator made them.
    let bare = SCHEMA
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("INDEX ")
                || l.starts_with("CONSTRAINT ")
                || l.starts_with("CHECK ")
                || l.starts_with("--"))
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(",\n)", "\n)");
    sqlx::raw_sql(AssertSqlSafe(bare))
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        db.scan_after(None, 10).await.is_err(),
        "FORCE INDEX needs the index"
    );
    db.migrate().await.unwrap();
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(fetch_all_waiting(&db).await, vec![op("a", 1)]);
    let retry_index: i64 = sqlx::query_scalar(HAS_INDEX)
        .bind("trustlog_retry")
        .bind("trustlog_retry_due")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(retry_index > 0);
}

#[tokio::test]
async fn connect_sets_strict_mode_utc_and_utf8mb4() {
    let (_t, db) = fresh().await;
    // Every connection of the pool, not just the first.
    let mut conns = Vec::new();
    for _ in 0..POOL_SIZE {
        conns.push(db.pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        let (mode, zone, charset): (String, String, String) = sqlx::query_as(
            "SELECT @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.character_set_connection",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap();
        assert!(mode.split(',').any(|m| m == "STRICT_ALL_TABLES"), "{mode}");
        assert_eq!(zone, "+00:00");
        assert_eq!(charset, "utf8mb4");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_of_the_same_op_ids_store_each_exactly_once() {
    let (t, one) = fresh().await;
    let two = MySqlDb::connect(&t.url).await.unwrap();
    for round in 0..10 {
        // Overlapping batches, in opposite orders, each with a repeat of its own.
        let mut a: Vec<Operation> = (0..300)
            .map(|i| op(&format!("r{round}-{i:03}"), i))
            .collect();
        a.push(op(&format!("r{round}-000"), 0));
        let mut b: Vec<Operation> = (150..450)
            .map(|i| op(&format!("r{round}-{i:03}"), i))
            .collect();
        b.reverse();
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let (db, a) = (one.clone(), a.clone());
                async move { db.insert(a, TrustlogStatus::NotTrustlogged).await }
            }),
            tokio::spawn({
                let (db, b) = (two.clone(), b.clone());
                async move { db.insert(b, TrustlogStatus::NotTrustlogged).await }
            }),
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        let mut inserted = std::collections::HashMap::<&str, u32>::new();
        for (o, outcome) in a.iter().zip(&ra).chain(b.iter().zip(&rb)) {
            if *outcome == InsertOutcome::Inserted {
                *inserted.entry(o.op_id.as_str()).or_default() += 1;
            }
        }
        assert_eq!(inserted.len(), 450, "round {round}");
        assert!(inserted.values().all(|n| *n == 1), "round {round}");
        assert_eq!(ra[300], InsertOutcome::Duplicate);
    }
    assert_eq!(two.stats(DEFAULT_KEY).await.unwrap().total, 4_500);
    two.close().await;
}

#[tokio::test]
async fn chinese_utf8_text_round_trips() {
    let (_t, db) = fresh().await;
    let mut o = op("操作-0001", 1);
    o.op_actor = "张三".to_string();
    o.doid = "10.1000/仓库/数字对象-甲".to_string();
    o.op_type = "创建".to_string();
    o.do_repository = "国家数据仓库".to_string();
    o.response_body_hash = Some("哈希值🙂".to_string());
    // VARCHAR keeps trailing spaces; only the key collation ignores them.
    o.producer_id = " 生产者 ".to_string();
    db.insert(vec![o.clone()], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(fetch_all_waiting(&db).await, vec![o.clone()]);
    db.apply(UnitOfWork {
        now: 5,
        cursor: move_cursor(None, o.position()),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.load_cursor(DEFAULT_KEY).await.unwrap(),
        Some(o.position())
    );
    // Each column holds its full size in four-byte characters too.
    let mut wide = op(&"操".repeat(64), 2);
    wide.doid = "🙂".repeat(512);
    wide.op_actor = "张".repeat(128);
    wide.client_ip = Some("库".repeat(45));
    db.insert(vec![wide.clone()], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(fetch_all_waiting(&db).await, vec![o, wide]);
}

#[tokio::test]
async fn datetime_stores_the_ends_of_its_range_as_such() {
    let (_t, db) = fresh().await;
    db.insert(
        vec![op("first", MIN_TIMESTAMP), op("last", MAX_TIMESTAMP)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let text: String =
        sqlx::query_scalar("SELECT CONCAT(MIN(timestamp), '|', MAX(timestamp)) FROM operation")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        text,
        "1000-01-01 00:00:00.000000|9999-12-31 23:59:59.999999"
    );
}

#[tokio::test]
async fn timestamps_outside_datetime_are_invalid_and_nothing_of_the_batch_is_stored() {
    let (_t, db) = fresh().await;
    for bad in [MIN_TIMESTAMP - 1, MAX_TIMESTAMP + 1, i64::MIN, i64::MAX] {
        match db
            .insert(
                vec![op("fine", 1), op("bad", bad)],
                TrustlogStatus::NotTrustlogged,
            )
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "timestamp"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let mut r = retry("fine", RetryStatus::Pending, Some(MAX_TIMESTAMP + 1));
    match db
        .apply(UnitOfWork {
            now: 1,
            retries: vec![r.clone()],
            ..UnitOfWork::default()
        })
        .await
    {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "next_retry_at"),
        other => panic!("{other:?}"),
    }
    r.next_retry_at = Some(5);
    match db
        .apply(UnitOfWork {
            now: i64::MIN,
            retries: vec![r],
            ..UnitOfWork::default()
        })
        .await
    {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "now"),
        other => panic!("{other:?}"),
    }
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(stats, DbStats::default());
}

#[tokio::test]
async fn positions_and_times_beyond_datetime_bound_the_queries_as_they_would_anywhere() {
    let (_t, db) = fresh().await;
    db.insert(
        vec![op("a", MIN_TIMESTAMP), op("b", 0), op("c", MAX_TIMESTAMP)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: 1,
        retries: vec![retry("b", RetryStatus::Pending, Some(MAX_TIMESTAMP))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    // "b" has a retry row, so it belongs to the retry tick and no scan returns it.
    assert_eq!(
        ids(db
            .scan_after(Some(pos(i64::MIN, "z")), 10)
            .await
            .unwrap()
            .rows),
        vec!["a", "c"]
    );
    assert!(
        db.scan_after(Some(pos(i64::MAX, "")), 10)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert_eq!(
        ids(db
            .sweep_candidates(pos(i64::MAX, ""), i64::MIN, 10)
            .await
            .unwrap()
            .rows),
        vec!["a", "c"]
    );
    assert!(
        db.sweep_candidates(pos(i64::MIN, "z"), i64::MIN, 10)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert_eq!(db.due_retries(i64::MAX, 10).await.unwrap().rows.len(), 1);
    assert!(db.due_retries(i64::MIN, 10).await.unwrap().rows.is_empty());
}

#[tokio::test]
async fn the_scan_orders_op_ids_by_their_bytes() {
    let (_t, db) = fresh().await;
    // Case, a shared prefix, inner spaces and characters beyond the BMP: byte order,
    // the order the guest's Position compares in.
    let mut expected = vec!["B", "a", "a b", "ab", "a~", "é", "z", "操", "🙂", "A", ""];
    db.insert(
        expected.iter().map(|id| op(id, 7)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    expected.sort_unstable();
    assert_eq!(ids(fetch_all_waiting(&db).await), expected);
    // One row at a time, each strictly after the last.
    let mut cursor = None;
    let mut seen = Vec::new();
    while let Some(o) = db.scan_after(cursor.clone(), 1).await.unwrap().rows.pop() {
        cursor = Some(o.position());
        seen.push(o.op_id);
    }
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn op_ids_the_key_collation_cannot_order_by_bytes_are_invalid() {
    let (_t, db) = fresh().await;
    for bad in ["a ", "a\tb", "line\n", "\u{7f}"] {
        match db
            .insert(
                vec![op("fine", 1), op(bad, 2)],
                TrustlogStatus::NotTrustlogged,
            )
            .await
        {
            Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "op_id"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // The schema refuses them from plain SQL too, naming the field.
    let err = sqlx::query(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) VALUES ('x ', 'a', 'd', 'p', 's', 't', 'dp', \
             'dr', '2026-01-01')",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    match map_error(err) {
        DbError::Invalid(FieldError { field, message }) => {
            assert_eq!(field, "op_id");
            assert!(message.contains("operation_op_id_chars"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = sqlx::query("UPDATE operation SET trustlog_status = 'LOST'")
        .execute(&db.pool)
        .await;
    assert!(err.is_ok(), "no rows, so no check");
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE operation SET trustlog_status = 'LOST'")
        .execute(&db.pool)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Invalid(FieldError { field, .. }) => assert_eq!(field, "trustlog_status"),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 1);
}

#[tokio::test]
async fn of_two_updates_of_one_retry_row_in_a_unit_the_later_wins() {
    let (_t, db) = fresh().await;
    let mut later = retry("m", RetryStatus::DeadLetter, None);
    later.retry_count = 5;
    later.error_message = "x".repeat(100_000);
    db.apply(UnitOfWork {
        now: 1,
        retries: vec![
            retry("z", RetryStatus::Pending, Some(3)),
            retry("m", RetryStatus::Pending, Some(2)),
            retry("a", RetryStatus::Pending, Some(1)),
            later,
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let rows = retry_rows(&db).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[1].1, rows[1].2.as_str(), rows[1].3),
        (5, "DEAD_LETTER", None)
    );
    let message_len: i64 = sqlx::query_scalar(
        "SELECT CHAR_LENGTH(error_message) FROM trustlog_retry WHERE op_id = 'm'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(message_len, 100_000, "long error messages are kept whole");
}

#[tokio::test]
async fn stats_read_one_snapshot_even_where_read_committed_is_the_default() {
    let (t, db) = fresh().await;
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let mut reader = MySqlConnection::connect(&t.url).await.unwrap();
    reader
        .execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    let mut tx = reader.begin_with(BEGIN_SNAPSHOT).await.unwrap();
    let count = "SELECT COUNT(*) FROM operation";
    let before: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    db.insert(vec![op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
    assert_eq!((before, after), (1, 1));
    tx.commit().await.unwrap();
    // The level applied to that transaction only.
    let later: i64 = sqlx::query_scalar(count)
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(later, 2);
    let level: String = match sqlx::query_scalar("SELECT @@SESSION.transaction_isolation")
        .fetch_one(&mut reader)
        .await
    {
        Ok(level) => level,
        // MariaDB before 11.1 knows the variable by its old name only.
        Err(_) => sqlx::query_scalar("SELECT @@SESSION.tx_isolation")
            .fetch_one(&mut reader)
            .await
            .unwrap(),
    };
    assert_eq!(level, "READ-COMMITTED");
    reader.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_for_a_new_cursor_key_exactly_one_wins() {
    let (t, one) = fresh().await;
    let two = MySqlDb::connect(&t.url).await.unwrap();
    for round in 0..20 {
        let key = format!("new-{round}");
        let work = UnitOfWork {
            now: round,
            cursor: Some(CursorMove {
                key: key.clone(),
                expected: None,
                to: pos(round, "x"),
            }),
            ..UnitOfWork::default()
        };
        let (a, b) = tokio::join!(
            tokio::spawn({
                let (db, work) = (one.clone(), work.clone());
                async move { db.apply(work).await }
            }),
            tokio::spawn({
                let db = two.clone();
                async move { db.apply(work).await }
            }),
        );
        let mut results = [a.unwrap(), b.unwrap()];
        results.sort_by_key(|r| r.is_err());
        assert_eq!(
            results,
            [Ok(()), Err(DbError::CursorMoved(key.clone()))],
            "round {round}"
        );
    }
    two.close().await;
}

#[tokio::test]
async fn an_op_id_over_64_characters_is_invalid_and_nothing_of_the_batch_is_stored() {
    let (_t, db) = fresh().await;
    let long = "x".repeat(65);
    // Straight to the adapter: the guest's own validation would refuse it first.
    let err = db
        .insert(
            vec![op("fine", 1), op(&long, 2)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap_err();
    match err {
        DbError::Invalid(FieldError { field, message }) => {
            assert_eq!(field, "op_id");
            assert!(message.contains("Data too long"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
    // 64 characters, not bytes: 64 ASCII and 64 Chinese characters fit.
    db.insert(
        vec![op(&"x".repeat(64), 1), op(&"操".repeat(64), 1)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    // Every column is checked, and the error names it.
    let mut o = op("y", 1);
    o.client_ip = Some("1".repeat(46));
    match db.insert(vec![o], TrustlogStatus::NotTrustlogged).await {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "client_ip"),
        other => panic!("{other:?}"),
    }
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(stats.total, 2);
}

#[tokio::test]
async fn duplicate_keys_are_conflicts() {
    let (_t, db) = fresh().await;
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO trustlog_cursor VALUES ('k', '', NOW()), ('k', '', NOW())")
        .execute(&db.pool)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Conflict(message) => assert!(message.contains("'k'"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_timeouts_and_deadlocks_are_unavailable() {
    let (_t, db) = fresh().await;
    db.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let lock = "UPDATE operation SET op_actor = 'locker' WHERE op_id = ?";

    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(lock)
        .bind("a")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut impatient = db.pool.acquire().await.unwrap();
    impatient
        .execute("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let err = sqlx::query(lock)
        .bind("a")
        .execute(&mut *impatient)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Unavailable(m) => assert!(m.contains("1205"), "{m}"),
        other => panic!("{other:?}"),
    }
    holder.rollback().await.unwrap();
    drop(impatient);

    // Each holds one row and wants the other's.
    let mut one = db.pool.begin().await.unwrap();
    let mut two = db.pool.begin().await.unwrap();
    sqlx::query(lock)
        .bind("a")
        .execute(&mut *one)
        .await
        .unwrap();
    sqlx::query(lock)
        .bind("b")
        .execute(&mut *two)
        .await
        .unwrap();
    let (r1, r2) = tokio::join!(
        sqlx::query(lock).bind("b").execute(&mut *one),
        sqlx::query(lock).bind("a").execute(&mut *two),
    );
    let err = match (r1, r2) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected one deadlock victim: {other:?}"),
    };
    match map_error(err) {
        DbError::Unavailable(m) => assert!(m.contains("1213"), "{m}"),
        other => panic!("{other:?}"),
    }
    one.rollback().await.unwrap();
    two.rollback().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Nothing listens on port 1; the pool keeps trying until its acquire timeout.
    match MySqlDb::connect("mysql://root@127.0.0.1:1/test").await {
        Err(DbError::Unavailable(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// One row of `EXPLAIN`, by column name (MySQL adds columns MariaDB lacks).
#[derive(Debug)]
struct Step {
    select_type: String,
    table: String,
    access: String,
    key: String,
    extra: String,
}

/// The plan of `sql`, binding each of `binds` in turn.
async fn plan_of(db: &MySqlDb, sql: &str, binds: &[Bind]) -> Vec<Step> {
    let sql = format!("EXPLAIN {sql}");
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        query = match bind {
            Bind::Int(n) => query.bind(*n),
            Bind::Text(s) => query.bind(*s),
            Bind::At(t) => query.bind(DateTime::from_timestamp_micros(*t).unwrap().naive_utc()),
        };
    }
    let text = |row: &MySqlRow, column: &str| -> String {
        row.try_get::<Option<String>, _>(column)
            .unwrap()
            .unwrap_or_default()
    };
    query
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| Step {
            select_type: text(row, "select_type"),
            table: text(row, "table"),
            access: text(row, "type"),
            key: text(row, "key"),
            extra: text(row, "Extra"),
        })
        .collect()
}

enum Bind {
    Int(i64),
    Text(&'static str),
    At(Micros),
}

#[tokio::test]
async fn the_queries_use_their_indexes_without_sorting() {
    let (_t, db) = fresh().await;
    let base = 1_795_515_834_000_000;
    // 10,000 rows: most delivered, as in a table that has been running for a while.
    let ops: Vec<Operation> = (0..10_000)
        .map(|i| op(&format!("op-{i:05}"), base + i / 3))
        .collect();
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: base,
        trustlogged: (0..8_000).map(|i| format!("op-{i:05}")).collect(),
        retries: (8_000..8_100)
            .map(|i| retry(&format!("op-{i:05}"), RetryStatus::Pending, Some(base + i)))
            .collect(),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    sqlx::raw_sql("ANALYZE TABLE operation, trustlog_retry")
        .execute(&db.pool)
        .await
        .unwrap();
    // A keyset bound in the waiting rows: the timestamp twice, the op_id, the limit.
    let bound = || {
        vec![
            Bind::At(base + 2_900),
            Bind::At(base + 2_900),
            Bind::Text("op-08700"),
            Bind::Int(1_000),
        ]
    };
    for (name, sql, binds) in [
        ("scan from start", SCAN_FROM_START, vec![Bind::Int(1_000)]),
        ("scan after", SCAN_AFTER, bound()),
        (
            "sweep",
            SWEEP,
            vec![
                Bind::At(base + 2_900),
                Bind::At(base + 2_900),
                Bind::Text("op-08700"),
                Bind::At(MIN_TIMESTAMP),
                Bind::Int(1_000),
            ],
        ),
        (
            "catch-up",
            SWEEP,
            vec![
                Bind::At(base + 2_900),
                Bind::At(base + 2_900),
                Bind::Text("op-08700"),
                Bind::At(base + 2_800),
                Bind::Int(1_000),
            ],
        ),
        ("waiting since", WAITING_SINCE, vec![Bind::At(base + 2_800)]),
        ("oldest waiting", OLDEST_WAITING, vec![]),
    ] {
        let plan = plan_of(&db, sql, &binds).await;
        let o = plan.iter().find(|s| s.table == "o").unwrap();
        assert_eq!(o.key, "operation_waiting", "{name}: {plan:?}");
        assert!(
            matches!(o.access.as_str(), "range" | "ref"),
            "{name}: {plan:?}"
        );
        assert!(
            plan.iter()
                .all(|s| !s.extra.contains("filesort") && !s.extra.contains("temporary")),
            "{name}: {plan:?}"
        );
        // NOT EXISTS is a primary-key probe per row, or, while the retry table is small,
        // one pass over it into a hash table (MariaDB's choice, by cost).
        if let Some(r) = plan.iter().find(|s| s.table == "r") {
            assert!(
                r.select_type == "MATERIALIZED"
                    || (r.key == "PRIMARY"
                        && matches!(r.access.as_str(), "eq_ref" | "unique_subquery")),
                "{name}: {plan:?}"
            );
            assert!(r.extra.contains("Using index"), "{name}: {plan:?}");
        }
    }
    for (name, sql, key) in [
        ("count by status", COUNT_BY_STATUS, "operation_waiting"),
        (
            "count retries",
            COUNT_RETRIES_BY_STATUS,
            "trustlog_retry_due",
        ),
    ] {
        let plan = plan_of(&db, sql, &[]).await;
        assert_eq!(plan[0].key, key, "{name}: {plan:?}");
        assert!(plan[0].extra.contains("Using index"), "{name}: {plan:?}");
        assert!(!plan[0].extra.contains("filesort"), "{name}: {plan:?}");
    }
    for (name, sql) in [
        ("existing ids", EXISTING_IDS),
        ("mark", MARK_TRUSTLOGGED),
        ("delete retries", DELETE_RETRIES),
    ] {
        let plan = plan_of(
            &db,
            &format!("{sql}(?, ?)"),
            &[Bind::Text("op-08500"), Bind::Text("op-09999")],
        )
        .await;
        assert_eq!(plan[0].key, "PRIMARY", "{name}: {plan:?}");
        assert_eq!(plan[0].access, "range", "{name}: {plan:?}");
    }
    // Each status is one index range read in (due time, op_id) order up to the limit,
    // each operation one primary-key lookup; only the merged result (at most two
    // batches) is sorted.
    let at = Bind::At(base + 8_050);
    let plan = plan_of(
        &db,
        DUE_RETRIES,
        &[
            at,
            Bind::Int(100),
            Bind::At(base + 8_050),
            Bind::Int(100),
            Bind::Int(100),
        ],
    )
    .await;
    let steps: Vec<(&str, &str, &str)> = plan
        .iter()
        .filter(|s| s.table == "r" || s.table == "o")
        .map(|s| (s.table.as_str(), s.key.as_str(), s.access.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("r", "trustlog_retry_due", "range"),
            ("o", "PRIMARY", "eq_ref"),
            ("r", "trustlog_retry_due", "range"),
            ("o", "PRIMARY", "eq_ref"),
        ],
        "{plan:?}"
    );
    for step in plan.iter().filter(|s| s.table == "r") {
        assert!(!step.extra.contains("filesort"), "{plan:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the op_id and timestamp, a cursor stored by `apply` reads back as it was.
    #[test]
    fn positions_round_trip_through_the_stored_cursor(
        timestamp in any::<i64>(),
        op_id in "[^\\x00-\\x1f\\x7f]{0,63}[^ \\x00-\\x1f\\x7f]?",
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (got, want) = runtime.block_on(async {
            let (_t, db) = fresh().await;
            let key = format!("prop-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
            let to = Position { timestamp, op_id: op_id.clone() };
            db.apply(UnitOfWork {
                now: 1,
                cursor: Some(CursorMove { key: key.clone(), expected: None, to: to.clone() }),
                ..UnitOfWork::default()
            })
            .await
            .unwrap();
            let got = db.load_cursor(&key).await.unwrap();
            db.close().await;
            (got, Some(to))
        });
        prop_assert_eq!(got, want);
    }
}

static NEXT_KEY: AtomicU32 = AtomicU32::new(0);

#[test]
fn server_messages_name_their_column_or_constraint() {
    for (message, word, name) in [
        (
            "Data too long for column 'op_id' at row 1",
            "column ",
            "op_id",
        ),
        ("Column 'op_actor' cannot be null", "column ", "op_actor"),
        (
            "Incorrect datetime value: '0000-00-00' for column `db`.`operation`.`timestamp` at row 1",
            "column ",
            "timestamp",
        ),
        (
            "Field 'doid' doesn't have a default value",
            "field ",
            "doid",
        ),
        (
            "CONSTRAINT `operation_op_id_chars` failed for `test`.`operation`",
            "constraint ",
            "operation_op_id_chars",
        ),
        (
            "Check constraint 'trustlog_retry_retry_status_value' is violated.",
            "constraint ",
            "trustlog_retry_retry_status_value",
        ),
    ] {
        assert_eq!(quoted_after(message, word), Some(name), "{message}");
    }
    assert_eq!(quoted_after("no such thing", "column "), None);
}

#[test]
fn urls_get_their_database_replaced() {
    assert_eq!(
        url_with_database("mysql://root@127.0.0.1:3306/test", "x"),
        "mysql://root@127.0.0.1:3306/x"
    );
    assert_eq!(
        url_with_database("mysql://u:p@h/test?ssl-mode=DISABLED", "x"),
        "mysql://u:p@h/x?ssl-mode=DISABLED"
    );
    assert_eq!(url_with_database("mysql://h:3306", "x"), "mysql://h:3306/x");
}

//! The PostgreSQL adapter against a real server, beyond the conformance suite.

use super::*;
use crate::db::test_fixtures::*;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use trustlog_guest::model::RetryStatus;

/// The server every test uses; each test works in a schema of its own.
fn admin_url() -> String {
    std::env::var("TRUSTLOG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

async fn admin() -> PgConnection {
    let url = admin_url();
    PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is unreachable ({e}); these tests need a running server \
                 (set TRUSTLOG_TEST_POSTGRES_URL to point elsewhere)"
        )
    })
}

/// A schema of the test's own, dropped with everything in it when this is dropped.
struct TestSchema {
    name: String,
}

impl TestSchema {
    async fn new() -> TestSchema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "trustlog_t_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = admin().await;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .unwrap();
        TestSchema { name }
    }

    /// The admin URL with this schema as the search_path; also the application_name,
    /// so a test can find its own sessions in pg_stat_activity.
    fn url(&self) -> String {
        let base = admin_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!(
            "{base}{sep}options=-c%20search_path%3D{0}&application_name={0}",
            self.name
        )
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: a thread
        // with a runtime of its own drops the schema.
        let (name, url) = (self.name.clone(), admin_url());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect(&url).await?;
                conn.execute("SET lock_timeout = '10s'").await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE"
                )))
                .await?;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// A migrated adapter in a fresh schema; keep the `TestSchema` alive for the test.
async fn fresh() -> (TestSchema, PostgresDb) {
    let schema = TestSchema::new().await;
    let db = PostgresDb::connect(&schema.url()).await.unwrap();
    db.migrate().await.unwrap();
    (schema, db)
}

async fn status_of(db: &PostgresDb, id: &str) -> String {
    sqlx::query_scalar("SELECT trustlog_status::text FROM operation WHERE op_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The `timestamptz` in column `index` of `row`, or `None` for NULL.
fn optional_micros_at(row: &PgRow, index: usize) -> Option<Micros> {
    let null = row.try_get_raw(index).unwrap().is_null();
    (!null).then(|| micros_at(row, index).unwrap())
}

/// Every retry row as (op_id, retry_count, retry_status, next_retry_at, created_at, updated_at).
async fn retry_rows(db: &PostgresDb) -> Vec<(String, i64, String, Option<i64>, i64, i64)> {
    sqlx::query(
        "SELECT op_id::text, retry_count, retry_status::text, next_retry_at, created_at, \
             updated_at FROM trustlog_retry ORDER BY op_id",
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
            optional_micros_at(r, 3),
            micros_at(r, 4).unwrap(),
            micros_at(r, 5).unwrap(),
        )
    })
    .collect()
}

async fn fetch_all_waiting(db: &PostgresDb) -> Vec<Operation> {
    db.scan_after(None, u32::MAX).await.unwrap().rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_one_schema_all_succeed() {
    let schema = TestSchema::new().await;
    let mut dbs = Vec::new();
    for _ in 0..4 {
        dbs.push(PostgresDb::connect(&schema.url()).await.unwrap());
    }
    for round in 0..2 {
        let tasks: Vec<_> = dbs
            .iter()
            .map(|db| {
                let db = db.clone();
                tokio::spawn(async move { db.migrate().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()), "round {round}");
        }
    }
    dbs[0]
        .insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(fetch_all_waiting(&dbs[3]).await, vec![op("a", 1)]);
}

#[tokio::test]
async fn connect_works_in_the_schema_of_the_url_and_a_failed_migration_leaks_nothing() {
    let (schema, db) = fresh().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(&schema.name)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "operation",
            "trustlog_cursor",
            "trustlog_lease",
            "trustlog_retry"
        ]
    );
    let collation: String = sqlx::query_scalar(
        "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'operation' AND column_name = 'op_id'",
    )
    .bind(&schema.name)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(collation, "C");

    // A search_path naming no existing schema: the script fails inside its own
    // transaction, and the connection it failed on must not come back aborted.
    let base = admin_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let app = format!("{}_nowhere", schema.name);
    let missing = format!(
        "{base}{sep}options=-c%20search_path%3D{}_missing&application_name={app}",
        schema.name
    );
    let nowhere = PostgresDb::connect(&missing).await.unwrap();
    match nowhere.migrate().await {
        Err(DbError::Other(m)) => assert!(m.contains("schema"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The pool returns a connection in the background; give it the time to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'idle in transaction (aborted)'",
    )
    .bind(&app)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(aborted, 0);
    for _ in 0..POOL_SIZE {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&nowhere.pool)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
    nowhere.close().await;
}

#[tokio::test]
async fn chinese_utf8_text_round_trips() {
    let (_schema, db) = fresh().await;
    let mut o = op("操作-0001", 1);
    o.op_actor = "张三".to_string();
    o.doid = "10.1000/仓库/数字对象-甲".to_string();
    o.op_type = "创建".to_string();
    o.do_repository = "国家数据仓库".to_string();
    o.response_body_hash = Some("哈希值🙂".to_string());
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
}

#[tokio::test]
async fn op_ids_sort_by_their_bytes_like_positions_do() {
    let (_schema, db) = fresh().await;
    // Under a linguistic collation "a" < "B" and "é" sorts next to "e".
    let ids = ["B", "a", "e", "é", "z", "Z", "操", "🙂", "a-1", "a_1", "a1"];
    db.insert(
        ids.iter().map(|id| op(id, 1)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let mut expected: Vec<Position> = ids.iter().map(|id| pos(1, id)).collect();
    expected.sort();
    let scanned: Vec<Position> = fetch_all_waiting(&db)
        .await
        .iter()
        .map(Operation::position)
        .collect();
    assert_eq!(scanned, expected);
    // And the keyset bound agrees: after each position comes exactly the rest.
    for (i, p) in expected.iter().enumerate() {
        let after: Vec<Position> = db
            .scan_after(Some(p.clone()), 100)
            .await
            .unwrap()
            .rows
            .iter()
            .map(Operation::position)
            .collect();
        assert_eq!(after, expected[i + 1..], "after {p:?}");
    }
}

#[tokio::test]
async fn the_ends_of_postgresql_s_range_are_stored_as_such_and_bound_the_keyset_queries() {
    let (_schema, db) = fresh().await;
    let stamps = [
        PG_MIN_MICROS,           // 4714-11-24T00:00:00Z BC, PostgreSQL's first instant
        -62_135_596_800_000_001, // a microsecond before 0001-01-01
        -30_610_224_000_000_000, // 1000-01-01T00:00:00Z
        -1,
        0,
        1,
        1_795_515_834_123_456,     // 2026-11-24T10:23:54.123456Z
        4_102_444_800_000_001,     // 2100-01-01 and a microsecond
        253_402_300_799_999_999,   // 9999-12-31T23:59:59.999999Z
        8_210_266_876_799_999_999, // +262142-12-31T23:59:59.999999Z, chrono's last
        i64::MAX,                  // beyond chrono, within PostgreSQL
    ];
    let ops: Vec<Operation> = stamps
        .iter()
        .enumerate()
        .map(|(i, t)| op(&format!("t{i:02}"), *t))
        .collect();
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let text: String = sqlx::query_scalar(
        "SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') \
             FROM operation WHERE op_id = 't08'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(text, "9999-12-31T23:59:59.999999");

    // Keyset bounds at the extremes, and below PostgreSQL's range.
    for (bound, expected_first) in [
        (pos(i64::MIN, ""), Some("t00")),
        (pos(PG_MIN_MICROS - 1, "zzz"), Some("t00")),
        (pos(PG_MIN_MICROS, "t00"), Some("t01")),
        (pos(i64::MAX, "t10"), None),
    ] {
        let first = db.scan_after(Some(bound.clone()), 1).await.unwrap().rows;
        assert_eq!(
            first.first().map(|o| o.op_id.as_str()),
            expected_first,
            "after {bound:?}"
        );
    }
    assert!(
        db.sweep_candidates(pos(PG_MIN_MICROS - 1, "t00"), i64::MIN, 10)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
    assert_eq!(
        db.sweep_candidates(pos(i64::MAX, "t10"), i64::MIN, 100)
            .await
            .unwrap()
            .rows
            .len(),
        10
    );
}

#[tokio::test]
async fn timestamps_before_postgresql_s_range_are_invalid_and_store_nothing() {
    let (_schema, db) = fresh().await;
    for t in [i64::MIN, PG_MIN_MICROS - 1] {
        match db
            .insert(
                vec![op("fine", 1), op("early", t)],
                TrustlogStatus::NotTrustlogged,
            )
            .await
        {
            Err(DbError::Invalid(FieldError { field, message })) => {
                assert_eq!(field, "timestamp");
                assert!(message.contains("\"early\""), "{message}");
            }
            other => panic!("{t}: {other:?}"),
        }
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
    let mut early = retry("fine", RetryStatus::Pending, Some(i64::MIN));
    early.last_retry_at = None;
    match db
        .apply(UnitOfWork {
            now: 1,
            retries: vec![early],
            ..UnitOfWork::default()
        })
        .await
    {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "next_retry_at"),
        other => panic!("{other:?}"),
    }
    match db
        .apply(UnitOfWork {
            now: i64::MIN,
            cursor: move_cursor(None, pos(1, "a")),
            ..UnitOfWork::default()
        })
        .await
    {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "now"),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.load_cursor(DEFAULT_KEY).await.unwrap(), None);
}

#[tokio::test]
async fn timestamps_agree_with_sqlx_s_chrono_mapping() {
    let (_schema, db) = fresh().await;
    // A spread of instants over chrono's range, from a fixed-seed LCG.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut stamps = vec![PG_MIN_MICROS, -1, 0, 1, 8_210_266_876_799_999_999];
    for _ in 0..500 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let span = (8_210_266_876_799_999_999 - PG_MIN_MICROS) as u64;
        stamps.push(PG_MIN_MICROS + (state % span) as i64);
    }
    let ops: Vec<Operation> = stamps
        .iter()
        .enumerate()
        .map(|(i, t)| op(&format!("r{i:04}"), *t))
        .collect();
    db.insert(ops.clone(), TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let rows = sqlx::query("SELECT op_id::text, timestamp FROM operation ORDER BY op_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), ops.len());
    for (row, o) in rows.iter().zip(&ops) {
        let via_chrono: DateTime<Utc> = row.get(1);
        assert_eq!(via_chrono.timestamp_micros(), o.timestamp, "{}", o.op_id);
        assert_eq!(micros_at(row, 1).unwrap(), o.timestamp, "{}", o.op_id);
    }
    // And a value written by sqlx's chrono mapping reads back the same way.
    let at = DateTime::from_timestamp_micros(1_795_515_834_123_456).unwrap();
    let row = sqlx::query("SELECT $1::timestamptz")
        .bind(at)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(micros_at(&row, 0).unwrap(), 1_795_515_834_123_456);
}

#[tokio::test]
async fn infinite_or_unrepresentable_stored_timestamps_are_row_faults_not_panics() {
    let (_schema, db) = fresh().await;
    for (id, stamp) in [("inf", "infinity"), ("far", "294276-12-31 23:59:59+00")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, \
                 op_type, do_prefix, do_repository, timestamp) \
                 VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', '{stamp}')"
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        let fetched = db.scan_after(None, 10).await.unwrap();
        assert!(fetched.rows.is_empty(), "{stamp}: {fetched:?}");
        match &fetched.faults[..] {
            [f] => {
                assert_eq!((f.op_id.as_str(), f.column.as_str()), (id, "timestamp"));
                assert!(f.message.contains("column 12"), "{}", f.message);
            }
            other => panic!("{stamp}: {other:?}"),
        }
        sqlx::query("DELETE FROM operation")
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn apply_with_one_op_id_twice_in_its_retries_keeps_the_last() {
    let (_schema, db) = fresh().await;
    let mut last = retry("a", RetryStatus::DeadLetter, None);
    last.retry_count = 5;
    db.apply(UnitOfWork {
        now: 100,
        retries: vec![
            retry("a", RetryStatus::Pending, Some(160)),
            retry("b", RetryStatus::Pending, Some(170)),
            last,
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        retry_rows(&db).await,
        vec![
            (
                "a".to_string(),
                5,
                "DEAD_LETTER".to_string(),
                None,
                100,
                100
            ),
            (
                "b".to_string(),
                1,
                "PENDING".to_string(),
                Some(170),
                100,
                100
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_blocked_on_the_winner_s_row_lock_loses_after_its_commit() {
    let (schema, one) = fresh().await;
    let two = PostgresDb::connect(&schema.url()).await.unwrap();
    one.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    one.apply(UnitOfWork {
        now: 1,
        cursor: move_cursor(None, pos(1, "a")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    // The winner holds the cursor row's lock in an open transaction...
    let mut winner = one.pool.begin().await.unwrap();
    let moved = sqlx::query(MOVE_CURSOR)
        .bind(format_position(&pos(2, "b")))
        .bind(PgTime::bound(2))
        .bind(DEFAULT_KEY)
        .bind(format_position(&pos(1, "a")))
        .execute(&mut *winner)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(moved, 1);
    // ...so the loser's identical move waits on it rather than failing at once...
    let loser = tokio::spawn(async move {
        two.apply(UnitOfWork {
            now: 3,
            trustlogged: vec!["b".into()],
            cursor: move_cursor(Some(pos(1, "a")), pos(2, "b")),
            ..UnitOfWork::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !loser.is_finished(),
        "the second CAS did not wait for the row lock"
    );
    // ...and re-reads the row once the winner commits: the value moved, so it loses.
    winner.commit().await.unwrap();
    assert_eq!(
        loser.await.unwrap(),
        Err(DbError::CursorMoved(DEFAULT_KEY.to_string()))
    );
    assert_eq!(status_of(&one, "b").await, "NOT_TRUSTLOGGED");
}

#[tokio::test]
async fn an_op_id_over_64_characters_is_invalid_and_nothing_of_the_batch_is_stored() {
    let (_schema, db) = fresh().await;
    let long = "x".repeat(65);
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
            assert!(message.contains("value too long"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
    // 64 characters fit, and they are characters, not bytes: 64 Chinese ones too.
    let wide = "操".repeat(64);
    assert_eq!(
        db.insert(
            vec![op(&"x".repeat(64), 1), op(&wide, 1)],
            TrustlogStatus::NotTrustlogged
        )
        .await
        .unwrap(),
        vec![InsertOutcome::Inserted; 2]
    );
    // A too-long retry op_id is named too.
    match db
        .apply(UnitOfWork {
            now: 1,
            retries: vec![retry(&long, RetryStatus::Pending, Some(2))],
            ..UnitOfWork::default()
        })
        .await
    {
        Err(DbError::Invalid(FieldError { field, .. })) => assert_eq!(field, "op_id"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn other_too_long_or_nul_values_name_their_field() {
    let (_schema, db) = fresh().await;
    let mut ops = vec![op("a", 1), op("b", 2)];
    ops[1].op_source = "s".repeat(65);
    ops[1].doid = "d".repeat(513);
    match db.insert(ops, TrustlogStatus::NotTrustlogged).await {
        // PostgreSQL checks columns in table order: doid (512) comes first.
        Err(DbError::Invalid(FieldError { field, message })) => {
            assert_eq!(field, "doid", "{message}");
            assert!(message.contains("\"b\""), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut nul = op("c", 3);
    nul.server_ip = Some("192.0.2.1\0".to_string());
    match db.insert(vec![nul], TrustlogStatus::NotTrustlogged).await {
        Err(DbError::Invalid(FieldError { field, message })) => {
            assert_eq!(field, "server_ip", "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 0);
}

#[tokio::test]
async fn constraint_violations_map_to_conflict_and_invalid() {
    let (_schema, db) = fresh().await;
    db.insert(vec![op("op-1", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let plain_insert = |id: &str, status: &str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
                 do_prefix, do_repository, timestamp, trustlog_status) \
                 VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', now(), '{status}')"
        )))
    };
    let err = plain_insert("op-1", "TRUSTLOGGED")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(map_error(err), DbError::Conflict("op-1".to_string()));
    let err = plain_insert("op-2", "LOST")
        .execute(&db.pool)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Invalid(FieldError { field, message }) => {
            assert_eq!(field, "trustlog_status");
            assert!(
                message.contains("operation_trustlog_status_value"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let err = sqlx::query("INSERT INTO operation (op_id) VALUES ('op-3')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Invalid(FieldError { field, .. }) => assert_eq!(field, "op_actor"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_lock_timeout_is_unavailable() {
    let (_schema, db) = fresh().await;
    db.apply(UnitOfWork {
        now: 1,
        cursor: move_cursor(None, pos(1, "a")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM trustlog_cursor FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut impatient = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '50ms'")
        .execute(&mut *impatient)
        .await
        .unwrap();
    let err = sqlx::query("UPDATE trustlog_cursor SET cursor_value = ''")
        .execute(&mut *impatient)
        .await
        .unwrap_err();
    match map_error(err) {
        DbError::Unavailable(m) => assert!(m.contains("55P03"), "{m}"),
        other => panic!("{other:?}"),
    }
    holder.rollback().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on the loopback: refused at once. The pool retries a refused connection
    // until its acquire timeout, so this takes about that long.
    match PostgresDb::connect("postgres://postgres@127.0.0.1:1/test").await {
        Err(DbError::Unavailable(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// Waits for one wake-up, at most `within`.
async fn woken(wake: &Notify, within: Duration) -> bool {
    tokio::time::timeout(within, wake.notified()).await.is_ok()
}

/// Inserts one row over a plain connection of its own, as an application would.
async fn insert_by_hand(schema: &TestSchema, id: &str) {
    let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('{id}', 'a', 'd', 'p', 's', 't', 'x', 'r', clock_timestamp())"
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn an_insert_from_any_client_wakes_the_listener() {
    let (schema, db) = fresh().await;
    let wake = Arc::new(Notify::new());
    let listener = db.spawn_listener(wake.clone());
    assert!(
        woken(&wake, Duration::from_secs(10)).await,
        "never listened"
    );
    // Nothing else wakes it: other tests insert into schemas of their own.
    assert!(!woken(&wake, Duration::from_millis(300)).await);

    let started = Instant::now();
    insert_by_hand(&schema, "by-hand").await;
    assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
    println!("wake-up {:?} after the insert began", started.elapsed());

    // The adapter's own inserts wake it too, once per statement.
    db.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert!(woken(&wake, Duration::from_secs(1)).await);
    listener.abort();
}

#[tokio::test]
async fn the_listener_listens_again_after_its_backend_is_terminated() {
    let (schema, db) = fresh().await;
    let wake = Arc::new(Notify::new());
    let listener = db.spawn_listener(wake.clone());
    assert!(
        woken(&wake, Duration::from_secs(10)).await,
        "never listened"
    );

    let listening_backends = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity \
                 WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&schema.name)
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let before = listening_backends().await;
    assert_eq!(before.len(), 1, "{before:?}");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(terminated);

    // Listening again wakes it (a row may have come in unannounced meanwhile)...
    assert!(
        woken(&wake, Duration::from_secs(10)).await,
        "did not listen again"
    );
    let after = listening_backends().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before);
    // ...and a later insert wakes it as before.
    insert_by_hand(&schema, "after-terminate").await;
    assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
    listener.abort();
}

/// A TCP proxy to the test server that can go down (dropping every connection through
/// it and refusing new ones) and come back on the same port.
struct Proxy {
    port: u16,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let proxy = Proxy {
            port: 0,
            tasks: Arc::default(),
        };
        proxy.serve(0).await
    }

    async fn serve(self, port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = PgConnectOptions::from_str(&admin_url()).unwrap();
        let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(relay.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
        Proxy { port, ..self }
    }

    /// Drops every connection and the listening socket.
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// The URL of `schema` through this proxy.
    fn url(&self, schema: &TestSchema) -> String {
        let direct = PgConnectOptions::from_str(&admin_url()).unwrap();
        schema.url().replacen(
            &format!("{}:{}", direct.get_host(), direct.get_port()),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_outlives_a_server_outage_longer_than_a_reconnect() {
    let (schema, _db) = fresh().await;
    let proxy = Proxy::start().await;
    let url = proxy.url(&schema);
    assert_ne!(url, schema.url());
    let through_proxy = PostgresDb::connect(&url).await.unwrap();
    let wake = Arc::new(Notify::new());
    let listener = through_proxy.spawn_listener(wake.clone());
    assert!(
        woken(&wake, Duration::from_secs(10)).await,
        "never listened"
    );

    // Down for longer than the listener waits for a connection, so it gives up on
    // this one and starts over; a row comes in meanwhile.
    proxy.stop();
    tokio::time::sleep(LISTEN_ACQUIRE_TIMEOUT + Duration::from_millis(500)).await;
    insert_by_hand(&schema, "during-outage").await;
    assert!(!woken(&wake, Duration::from_millis(200)).await);
    let proxy = proxy.serve(url_port(&url)).await;

    // Back: it listens again and wakes for the row it could not hear of...
    assert!(
        woken(&wake, Duration::from_secs(10)).await,
        "did not listen again"
    );
    // ...and hears of the next one.
    insert_by_hand(&schema, "after-outage").await;
    assert!(woken(&wake, Duration::from_secs(1)).await, "no wake-up");
    listener.abort();
    proxy.stop();
}

fn url_port(url: &str) -> u16 {
    PgConnectOptions::from_str(url).unwrap().get_port()
}

/// The plan of `sql`, run as a prepared statement with `args`, one line per node;
/// `generic` asks for the plan made without the values, which a prepared statement
/// switches to after five runs when it is no costlier.
async fn plan_of(
    conn: &mut PgConnection,
    sql: &str,
    types: &str,
    args: &str,
    generic: bool,
) -> String {
    let mode = if generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    let prepare = if types.is_empty() {
        format!("PREPARE plan_me AS {sql}")
    } else {
        format!("PREPARE plan_me ({types}) AS {sql}")
    };
    let explain = if args.is_empty() {
        "EXPLAIN EXECUTE plan_me".to_string()
    } else {
        format!("EXPLAIN EXECUTE plan_me ({args})")
    };
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET plan_cache_mode = {mode}; {prepare}"
    )))
    .await
    .unwrap();
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(explain))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    conn.execute("DEALLOCATE plan_me").await.unwrap();
    rows.iter()
        .map(|r| r.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads 100k waiting rows from another connection, past any ANALYZE, and waits until
/// the statistics collector has counted them; returns a connection for EXPLAIN.
async fn load_100k_unanalyzed(schema: &TestSchema) -> PgConnection {
    let mut loader = PgConnection::connect(&schema.url()).await.unwrap();
    loader
        .execute(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
                 do_prefix, do_repository, timestamp) \
                 SELECT 'op-' || lpad(i::text, 6, '0'), 'a', 'd', 'p', 'IRP', 'Create', '10.1', \
                 'r', timestamptz '2026-11-24 10:00:00+00' + i * interval '1 microsecond' \
                 FROM generate_series(1, 100000) i",
        )
        .await
        .unwrap();
    // A backend hands its counts to the shared statistics when it exits.
    loader.close().await.unwrap();
    let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changed: Option<i64> = sqlx::query_scalar(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = 'operation'::regclass",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if changed.unwrap_or(0) >= 100_000 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conn
}

const PLAN_TYPES: &str = "timestamptz, text, int8";
const PLAN_ARGS: &str = "'2026-11-24 10:00:00.05+00', 'op-050000', 100";

#[tokio::test]
async fn start_up_after_a_bulk_load_refreshes_statistics_so_scans_walk_the_index() {
    let (schema, db) = fresh().await;
    let mut conn = load_100k_unanalyzed(&schema).await;
    let before = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
    println!("before start-up:\n{before}");

    db.migrate().await.unwrap();
    let after = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
    assert!(after.contains("using operation_waiting"), "{after}");
    assert!(!after.contains("Sort"), "{after}");
}

#[tokio::test]
async fn a_table_that_grows_while_serving_gets_fresh_statistics_from_the_scan() {
    // Migrated while empty, as a new deployment is; then a stream of inserts.
    let (schema, db) = fresh().await;
    let mut conn = load_100k_unanalyzed(&schema).await;
    let before = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
    println!("while the statistics say empty:\n{before}");

    assert_eq!(db.scan_after(None, 100).await.unwrap().rows.len(), 100);
    // The refresh runs beside the scan, not in its way; it lands within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let plan = plan_of(&mut conn, SCAN_AFTER, PLAN_TYPES, PLAN_ARGS, false).await;
        let walks = plan.contains("using operation_waiting") && !plan.contains("Sort");
        if walks || std::time::Instant::now() > deadline {
            break plan;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(after.contains("using operation_waiting"), "{after}");
    assert!(!after.contains("Sort"), "{after}");
}

#[tokio::test]
async fn a_retry_batch_reads_only_its_own_rows_however_many_are_due() {
    // 20,000 rows due at one instant, as `dead-letters replay --all` leaves them: a
    // batch must walk the index to its limit, not sort all of them.
    let (schema, _db) = fresh().await;
    let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
    conn.execute(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             SELECT 'op-' || lpad(i::text, 6, '0'), 'a', 'd', 'p', 'IRP', 'Create', '10.1', \
             'r', timestamptz '2026-11-24 10:00:00+00' + i * interval '1 microsecond' \
             FROM generate_series(1, 20000) i; \
             INSERT INTO trustlog_retry (op_id, retry_count, retry_status, next_retry_at, \
             error_message, created_at, updated_at) \
             SELECT op_id, 0, CASE WHEN op_id < 'op-010000' THEN 'PENDING' ELSE 'RETRYING' END, \
             timestamptz '2026-11-24 11:00:00+00', 'down', now(), now() FROM operation; \
             ANALYZE",
    )
    .await
    .unwrap();
    for generic in [false, true] {
        let plan = plan_of(
            &mut conn,
            DUE_RETRIES,
            "timestamptz, int8",
            "'2026-11-24 12:00:00+00', 100",
            generic,
        )
        .await;
        println!("due retries, 20,000 due (generic: {generic}):\n{plan}");
        assert!(
            plan.contains("Index Scan using trustlog_retry_due_order"),
            "{plan}"
        );
        assert!(
            !plan.lines().any(|l| l.trim_start().starts_with("->  Sort")),
            "{plan}"
        );
    }
}

#[tokio::test]
async fn the_queries_use_their_indexes_without_sorting() {
    let (schema, db) = fresh().await;
    let base = 1_795_515_834_000_000;
    db.insert(
        (0..10_000)
            .map(|i| op(&format!("op-{i:05}"), base + i * 1_000))
            .collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    // A relay part way through a backlog: the first rows delivered, some waiting for
    // retries, the cursor at op-05000.
    db.apply(UnitOfWork {
        now: base,
        trustlogged: (0..2_000).map(|i| format!("op-{i:05}")).collect(),
        // Of the retry rows most are dead letters or not yet due.
        retries: (2_000..3_000)
            .map(|i| match i {
                2_000..2_800 => retry(&format!("op-{i:05}"), RetryStatus::DeadLetter, None),
                2_800..2_900 => retry(&format!("op-{i:05}"), RetryStatus::Pending, Some(base * 2)),
                _ => retry(&format!("op-{i:05}"), RetryStatus::Retrying, Some(base)),
            })
            .collect(),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let mut conn = PgConnection::connect(&schema.url()).await.unwrap();
    conn.execute("ANALYZE").await.unwrap();

    let at = "'2026-11-24 10:23:59+00'";
    let scans = [
        (
            "scan from start",
            SCAN_FROM_START,
            "int8",
            "1000".to_string(),
        ),
        (
            "scan after",
            SCAN_AFTER,
            "timestamptz, text, int8",
            format!("{at}, 'op-05000', 1000"),
        ),
        (
            "sweep",
            SWEEP,
            "timestamptz, text, int8",
            format!("{at}, 'op-05000', 1000"),
        ),
        (
            "catch-up",
            SWEEP_SINCE,
            "timestamptz, text, timestamptz, int8",
            format!("{at}, 'op-05000', '2026-11-24 10:23:58.95+00', 1000"),
        ),
        (
            "waiting since",
            WAITING_SINCE,
            "timestamptz",
            "'2026-11-24 10:23:58.95+00'".to_string(),
        ),
        ("oldest waiting", OLDEST_WAITING, "", String::new()),
    ];
    for generic in [false, true] {
        for (name, sql, types, args) in &scans {
            let plan = plan_of(&mut conn, sql, types, args, generic).await;
            println!("{name} (generic: {generic}):\n{plan}");
            assert!(plan.contains("operation_waiting"), "{name}: {plan}");
            assert!(!plan.contains("Seq Scan on operation"), "{name}: {plan}");
            // The catch-up's window is bounded on both sides: when the planner expects
            // few rows in it, it may read them through the index and sort those few.
            if *name != "catch-up" {
                assert!(!plan.contains("Sort"), "{name}: {plan}");
            }
        }
        for (name, sql, index) in [
            ("mark", MARK_TRUSTLOGGED, "operation_pkey"),
            ("delete retries", DELETE_RETRIES, "trustlog_retry_pkey"),
        ] {
            let plan = plan_of(
                &mut conn,
                sql,
                "text[]",
                "array['op-02001', 'op-05002', 'op-09999']",
                generic,
            )
            .await;
            println!("{name} (generic: {generic}):\n{plan}");
            assert!(plan.contains(index), "{name}: {plan}");
            assert!(!plan.contains("Seq Scan"), "{name}: {plan}");
        }
        // The join is driven by the due retry rows, never by the waiting rows, and stops
        // at the limit: nothing above the nested loop sorts.
        let plan = plan_of(
            &mut conn,
            DUE_RETRIES,
            "timestamptz, int8",
            &format!("{at}, 1000"),
            generic,
        )
        .await;
        println!("due retries (generic: {generic}):\n{plan}");
        assert!(plan.contains("operation_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan on operation"), "{plan}");
        assert!(!plan.contains("operation_waiting"), "{plan}");
        assert!(plan.contains("Merge Append"), "{plan}");
        assert!(plan.contains("Nested Loop"), "{plan}");
        assert!(
            plan.contains("Index Scan on trustlog_retry_due")
                || plan.contains("Index Scan using trustlog_retry_due"),
            "{plan}"
        );
    }
    conn.close().await.unwrap();
}

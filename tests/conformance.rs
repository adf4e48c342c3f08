//! The database conformance suite: written once, run against SQLite,
//! PostgreSQL and MySQL/MariaDB. Each test gets its own database.

mod support;

use std::collections::BTreeSet;

use support::backends::{Backend, TestDb};
use support::*;
use trustlog_guest::model::{
    Config, CursorMove, DbError, InsertOutcome, Operation, Position, RecordOutcome, TrustlogStatus,
    UnitOfWork,
};
use trustlog_host::db::Database;
use trustlog_host::ingest;
use trustlog_host::publisher::Publisher;
use trustlog_host::runtime::Runtime;
use trustlog_host::tenant::Tenant;

const T0: i64 = 1_764_000_000_000_000;

/// Instantiates every conformance test once per backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Postgres).await } )* }
        mod mysql { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::MySql).await } )* }
    };
}

conformance!(
    microsecond_timestamps_round_trip,
    null_and_empty_string_stay_distinct,
    chinese_text_round_trips,
    a_64_character_op_id_fits_and_a_65_character_one_is_refused,
    a_duplicate_op_id_is_a_conflict_and_leaves_the_stored_row_untouched,
    rows_sharing_a_timestamp_across_batches_are_delivered_exactly_once,
    two_workers_on_one_cursor_never_both_advance_it,
    a_stale_compare_and_set_applies_nothing,
    the_retry_schedule_runs_on_the_injected_clock,
    the_sweep_delivers_rows_behind_the_cursor,
    db_only_rows_are_never_scanned,
    rows_owned_by_the_retry_queue_are_never_scanned,
    stats_match_the_rows,
    migrate_is_idempotent,
);

async fn connect(t: &TestDb) -> Database {
    let db = Database::connect(&t.url)
        .await
        .unwrap_or_else(|e| panic!("{:?} at {}: {e}", t.backend, t.url));
    db.migrate().await.unwrap();
    db
}

fn op(id: &str, micros: i64) -> Operation {
    ingest::parse_line(&op_line(id, micros)).unwrap()
}

async fn tenant(t: &TestDb, publisher: &str, config: Config) -> Tenant {
    let db = connect(t).await;
    Tenant::new(
        Runtime::new().unwrap(),
        "conformance",
        db,
        Publisher::connect(publisher).await.unwrap(),
        config,
    )
    .await
    .unwrap()
}

async fn microsecond_timestamps_round_trip(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let stamps = [
        T0 + 1,
        T0 + 999_999,
        -30_610_224_000_000_000,
        253_402_300_799_999_999,
        0,
        -1,
    ];
    let ops: Vec<Operation> = stamps
        .iter()
        .enumerate()
        .map(|(i, s)| op(&format!("ts-{i}"), *s))
        .collect();
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let rows = db.scan_after(None, 100).await.unwrap();
    for (i, s) in stamps.iter().enumerate() {
        let row = rows.iter().find(|r| r.op_id == format!("ts-{i}")).unwrap();
        assert_eq!(row.timestamp, *s, "{b:?}: ts-{i}");
    }
}

async fn null_and_empty_string_stay_distinct(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let mut a = op("nulls", T0);
    (
        a.request_body_hash,
        a.response_body_hash,
        a.client_ip,
        a.server_ip,
    ) = (None, None, None, None);
    let mut e = op("empties", T0 + 1);
    (e.request_body_hash, e.response_body_hash) = (Some(String::new()), Some(String::new()));
    (e.client_ip, e.server_ip) = (Some(String::new()), Some(String::new()));
    db.insert(vec![a.clone(), e.clone()], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let rows = db.scan_after(None, 10).await.unwrap();
    assert_eq!(rows, vec![a, e], "{b:?}");
}

async fn chinese_text_round_trips(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let mut o = op("中文-操作-1", T0);
    o.op_actor = "张三（审计员）".into();
    o.doid = "10.1000/数字对象/🧾".into();
    o.do_repository = "仓库".into();
    db.insert(vec![o.clone()], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(db.scan_after(None, 10).await.unwrap(), vec![o], "{b:?}");
}

async fn a_64_character_op_id_fits_and_a_65_character_one_is_refused(b: Backend) {
    let t = TestDb::create(b).await;
    // Through the engine: refused before any I/O, naming the field.
    let mut tn = tenant(&t, "ledger:///dev/null/unused", Config::default()).await;
    let outcomes = tn
        .record(vec![op(&"a".repeat(64), T0), op(&"b".repeat(65), T0)], None)
        .await
        .unwrap();
    assert_eq!(outcomes[0], RecordOutcome::Stored);
    match &outcomes[1] {
        RecordOutcome::Rejected(e) => assert_eq!(e.field, "op_id", "{b:?}: {e}"),
        other => panic!("{b:?}: expected a rejection, got {other:?}"),
    }
    // And the database itself refuses what slips past: the schema is the last line.
    let db = connect(&t).await;
    match db
        .insert(
            vec![op(&"c".repeat(65), T0)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
    {
        Err(DbError::Invalid(e)) => assert_eq!(e.field, "op_id", "{b:?}: {e}"),
        other => panic!("{b:?}: expected Invalid(op_id), got {other:?}"),
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM operation").await, 1);
}

async fn a_duplicate_op_id_is_a_conflict_and_leaves_the_stored_row_untouched(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let original = op("dup", T0);
    let mut impostor = op("dup", T0 + 7);
    impostor.op_actor = "mallory".into();
    let first = db
        .insert(
            vec![original.clone(), impostor.clone()],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
    assert_eq!(
        first,
        [InsertOutcome::Inserted, InsertOutcome::Duplicate],
        "{b:?}: inside one batch the first wins"
    );
    let again = db
        .insert(vec![impostor], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(again, [InsertOutcome::Duplicate], "{b:?}");
    assert_eq!(
        db.scan_after(None, 10).await.unwrap(),
        vec![original],
        "{b:?}"
    );
}

async fn rows_sharing_a_timestamp_across_batches_are_delivered_exactly_once(b: Backend) {
    let t = TestDb::create(b).await;
    let ledger = tempfile::tempdir().unwrap();
    let path = ledger.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config {
            batch_size: 100,
            ..Config::default()
        },
    )
    .await;
    let ops: Vec<Operation> = (0..250).map(|i| op(&format!("tie-{i:03}"), T0)).collect();
    tn.record(ops, None).await.unwrap();
    let mut fetched = vec![];
    loop {
        let r = tn.scan_tick(T0 + 1).await.unwrap();
        fetched.push(r.fetched);
        if !r.more {
            break;
        }
    }
    assert_eq!(fetched, [100, 100, 50], "{b:?}");
    let ids = ledger_op_ids(&path);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 250, "{b:?}");
    assert_eq!(ids.len(), 250, "{b:?}: nothing repeated");
    assert_eq!(tn.scan_tick(T0 + 2).await.unwrap().fetched, 0);
}

async fn two_workers_on_one_cursor_never_both_advance_it(b: Backend) {
    let t = TestDb::create(b).await;
    let (one, two) = (connect(&t).await, connect(&t).await);
    one.insert(
        (0..10).map(|i| op(&format!("w-{i}"), T0 + i)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let start = Position {
        timestamp: T0 - 1,
        op_id: String::new(),
    };
    let seed = UnitOfWork {
        now: T0,
        cursor: Some(CursorMove {
            key: "k".into(),
            expected: None,
            to: start.clone(),
        }),
        ..Default::default()
    };
    one.apply(seed).await.unwrap();
    for round in 0..20 {
        let at = one.load_cursor("k").await.unwrap();
        let to = Position {
            timestamp: T0 + round,
            op_id: format!("w-{round}"),
        };
        let work = |id: &str| UnitOfWork {
            now: T0,
            trustlogged: vec![id.to_string()],
            cursor: Some(CursorMove {
                key: "k".into(),
                expected: at.clone(),
                to: to.clone(),
            }),
            ..Default::default()
        };
        let (a, b2) = tokio::join!(
            one.apply(work(&format!("w-{round}"))),
            two.apply(work(&format!("w-{round}")))
        );
        let wins = [&a, &b2].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            wins, 1,
            "{b:?} round {round}: exactly one worker advances ({a:?}, {b2:?})"
        );
        for r in [a, b2] {
            if let Err(e) = r {
                assert!(
                    matches!(e, DbError::CursorMoved(_)),
                    "{b:?}: the loser is told the cursor moved: {e:?}"
                );
            }
        }
        assert_eq!(one.load_cursor("k").await.unwrap(), Some(to));
    }
}

async fn a_stale_compare_and_set_applies_nothing(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![op("s-1", T0), op("s-2", T0 + 1)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let p1 = Position {
        timestamp: T0,
        op_id: "s-1".into(),
    };
    db.apply(UnitOfWork {
        now: T0,
        trustlogged: vec!["s-1".into()],
        cursor: Some(CursorMove {
            key: "k".into(),
            expected: None,
            to: p1,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let stale = UnitOfWork {
        now: T0,
        trustlogged: vec!["s-2".into()],
        cursor: Some(CursorMove {
            key: "k".into(),
            expected: None,
            to: Position {
                timestamp: T0 + 1,
                op_id: "s-2".into(),
            },
        }),
        ..Default::default()
    };
    assert!(
        matches!(db.apply(stale).await, Err(DbError::CursorMoved(_))),
        "{b:?}"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
            .await,
        1,
        "{b:?}: the whole unit rolled back"
    );
}

async fn the_retry_schedule_runs_on_the_injected_clock(b: Backend) {
    const MIN: i64 = 60_000_000;
    let t = TestDb::create(b).await;
    let broken = tempfile::tempdir().unwrap();
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", broken.path().display()),
        Config::default(),
    )
    .await;
    tn.record(vec![op("r", T0)], None).await.unwrap();
    assert_eq!(tn.scan_tick(T0).await.unwrap().retry_scheduled, 1);
    let mut due = T0 + MIN;
    for wait in [2, 4, 8, 16] {
        assert_eq!(tn.retry_tick(due - 1).await.unwrap().fetched, 0, "{b:?}");
        assert_eq!(
            tn.retry_tick(due).await.unwrap().retry_scheduled,
            1,
            "{b:?}"
        );
        due += wait * MIN;
    }
    assert_eq!(tn.retry_tick(due).await.unwrap().dead_lettered, 1, "{b:?}");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' AND retry_count = 5").await, 1, "{b:?}");
}

async fn the_sweep_delivers_rows_behind_the_cursor(b: Backend) {
    let t = TestDb::create(b).await;
    let ledger = tempfile::tempdir().unwrap();
    let path = ledger.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    tn.record(vec![op("early", T0 + 10)], None).await.unwrap();
    tn.scan_tick(T0 + 20).await.unwrap();
    // A late commit, written by another client straight into the table.
    t.execute(&format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
         VALUES ('late', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', {})",
        t.timestamp_sql(T0 + 5)
    ))
    .await;
    assert_eq!(
        tn.scan_tick(T0 + 30).await.unwrap().fetched,
        0,
        "{b:?}: the cursor has passed it"
    );
    assert_eq!(tn.sweep_tick(T0 + 40).await.unwrap().published, 1, "{b:?}");
    assert_eq!(ledger_op_ids(&path), ["early", "late"], "{b:?}");
}

async fn db_only_rows_are_never_scanned(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("quiet", T0)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    assert!(db.scan_after(None, 10).await.unwrap().is_empty(), "{b:?}");
    assert!(
        db.sweep_candidates(
            Position {
                timestamp: T0 + 1,
                op_id: String::new()
            },
            10
        )
        .await
        .unwrap()
        .is_empty(),
        "{b:?}"
    );
}

async fn stats_match_the_rows(b: Backend) {
    let t = TestDb::create(b).await;
    let broken = tempfile::tempdir().unwrap();
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", broken.path().display()),
        Config::default(),
    )
    .await;
    tn.record(
        (0..3).map(|i| op(&format!("a-{i}"), T0 + i)).collect(),
        None,
    )
    .await
    .unwrap();
    tn.record(
        vec![op("quiet", T0)],
        Some(trustlog_guest::model::Strategy::DbOnly),
    )
    .await
    .unwrap();
    tn.scan_tick(T0 + 10).await.unwrap();
    tn.record(vec![op("waiting", T0 + 50)], None).await.unwrap();
    let s = tn.status(T0 + 2_000_050).await.unwrap();
    let st = &s.stats;
    assert_eq!(
        (
            st.total,
            st.not_trustlogged,
            st.db_only,
            st.retry_pending,
            st.dead_letter
        ),
        (5, 4, 1, 3, 0),
        "{b:?}"
    );
    assert_eq!(st.oldest_waiting, Some(T0 + 50), "{b:?}");
    assert!(
        (s.cursor_lag_seconds - 2.0).abs() < 1e-9,
        "{b:?}: {}",
        s.cursor_lag_seconds
    );
    assert_eq!(
        st.cursor,
        Some(Position {
            timestamp: T0 + 2,
            op_id: "a-2".into()
        }),
        "{b:?}"
    );
}

async fn migrate_is_idempotent(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("kept", T0)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db.migrate().await.unwrap();
    assert_eq!(t.scalar("SELECT COUNT(*) FROM operation").await, 1, "{b:?}");
}

async fn rows_owned_by_the_retry_queue_are_never_scanned(b: Backend) {
    // A fresh cursor over old data must not re-deliver dead letters behind the retry tick's back.
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![op("parked", T0), op("fresh", T0 + 1)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let dead = trustlog_guest::model::RetryUpdate {
        op_id: "parked".into(),
        retry_count: 5,
        retry_status: trustlog_guest::model::RetryStatus::DeadLetter,
        last_retry_at: Some(T0),
        next_retry_at: None,
        error_message: "gave up".into(),
    };
    db.apply(UnitOfWork {
        now: T0,
        retries: vec![dead],
        ..Default::default()
    })
    .await
    .unwrap();
    let ids: Vec<String> = db
        .scan_after(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.op_id)
        .collect();
    assert_eq!(ids, ["fresh"], "{b:?}");
}

//! The database conformance suite: written once, run against SQLite,
//! PostgreSQL and MySQL/MariaDB. Each test gets its own database.

mod support;

use std::collections::{BTreeSet, HashSet};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use support::backends::{Backend, TestDb, on_a_shared_pool, through_a_custom_adapter};
use support::brokers::{Broker, TestBroker};
use support::forwarding;
use support::*;
use trustlog_guest::model::{
    Config, CursorMove, DbError, DbStats, InsertOutcome, Micros, Operation, Position,
    RecordOutcome, RetryStatus, RetryUpdate, TrustlogStatus, UnitOfWork,
};
use trustlog_guest::validate::{MAX_TIMESTAMP, MIN_TIMESTAMP};
use trustlog_host::db::shared_server::SharedServers;
use trustlog_host::db::{
    Database, DeadLetter, FoundOperation, OperationFilter, OperationState, Purge, Replay, RetryRow,
};
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::tenant::Tenant;
use trustlog_host::surfaces::ingest;

const T0: i64 = 1_764_000_000_000_000;

/// The suite, on every database, again on every server tenants share, and again
/// through an adapter of a user's own.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        on_every_database!($($test),*);
        on_every_shared_server!($($test),*);
        through_a_custom_adapter!($($test),*);
    };
}

conformance!(
    a_backlog_of_100k_rows_drains_through_scan_and_apply_in_batches_of_1000,
    microsecond_timestamps_round_trip_exactly,
    null_and_empty_string_stay_distinct_in_the_optional_fields,
    chinese_text_round_trips,
    a_64_character_op_id_fits_and_a_65_character_one_is_refused,
    a_duplicate_op_id_is_a_conflict_and_leaves_the_stored_row_untouched,
    insert_reports_inserted_and_duplicate_in_input_order_and_leaves_stored_rows_untouched,
    insert_spanning_several_chunks_keeps_outcomes_in_order,
    insert_of_nothing_is_nothing,
    rows_sharing_a_timestamp_across_batches_are_delivered_exactly_once,
    rows_sharing_one_timestamp_are_each_scanned_exactly_once_in_op_id_order,
    two_workers_racing_for_one_cursor_move_exactly_one_wins,
    two_pipelined_engines_on_one_cursor_deliver_every_row_and_never_move_it_back,
    apply_with_a_stale_expected_position_returns_cursor_moved_and_changes_nothing,
    apply_marks_only_waiting_rows_trustlogged,
    apply_of_nothing_touches_nothing,
    apply_takes_an_empty_cursor_value_as_no_position,
    apply_refuses_to_move_a_cursor_backwards_or_in_place,
    apply_upserts_retry_rows_keeping_created_at_and_deletes_them,
    due_retries_honour_next_retry_at_and_skip_dead_letters_and_delivered_rows,
    sweep_candidates_are_waiting_rows_behind_the_cursor_without_retry_rows,
    a_malformed_stored_cursor_is_an_error_naming_the_key,
    the_retry_schedule_runs_on_the_injected_clock,
    the_sweep_delivers_rows_behind_the_cursor,
    db_only_rows_are_never_scanned_or_swept,
    rows_owned_by_the_retry_queue_are_never_scanned,
    stats_count_every_status_and_read_the_cursor,
    migrating_twice_is_harmless,
    dead_letters_are_listed_in_op_id_order_with_their_error_and_paged_by_after,
    replaying_one_dead_letter_makes_it_due_now_with_a_fresh_count_and_leaves_the_others,
    replaying_all_dead_letters_requeues_every_one,
    purging_dead_letters_older_than_a_cutoff_deletes_them_and_keeps_their_operations_as_db_only,
    ping_answers,
    settling_after_a_load_changes_no_row_and_leaves_the_tables_writable,
    a_replayed_dead_letter_is_delivered_by_the_next_retry_tick,
    the_catch_up_delivers_late_commits_within_its_window_and_leaves_older_ones_to_the_sweep,
    a_row_stamped_in_the_future_is_delivered_without_taking_the_cursor_past_now,
    an_unreachable_trust_log_leaves_rows_cursor_and_retry_budgets_as_they_were,
    the_watch_probe_sees_only_rows_the_scan_or_the_catch_up_would_take,
    one_host_holds_a_lease_until_it_releases_it_or_lets_it_run_out,
    of_hosts_claiming_one_free_lease_at_once_exactly_one_gets_it,
    a_row_the_host_cannot_read_is_dead_lettered_alone_naming_its_column_and_replayed_once_fixed,
    a_cursor_the_seed_wrote_as_a_bare_timestamp_is_taken_as_a_position_and_rewritten,
    rows_of_every_poison_kind_a_database_can_hold_are_dead_lettered_alone_naming_the_column,
    find_operation_shows_the_row_with_its_status_and_retry_row_or_nothing,
    an_unreadable_row_is_found_and_searched_with_its_fault_and_paged_past_exactly_once,
    search_matches_each_filter_field_exactly_and_in_combination_and_the_count_agrees,
    search_pages_in_keyset_order_across_rows_sharing_a_timestamp_without_repeating_or_skipping,
    replaying_by_ids_or_by_filter_changes_only_dead_letters,
    purging_by_ids_or_by_filter_takes_only_dead_letters_and_keeps_their_operations_as_db_only,
    replaying_and_purging_by_a_list_of_ids_longer_than_a_chunk,
    filter_values_and_ids_that_look_like_sql_or_patterns_are_matched_literally,
);

/// The test's database, migrated: over a pool of its own, or under
/// [`on_every_shared_server`] over a pool to the server that every use points at the
/// test's schema.
async fn connect(t: &TestDb) -> Database {
    let db = match t.server_and_schema() {
        Some((server, schema)) if on_a_shared_pool() => {
            shared_with_a_neighbour(t, &server, schema).await
        }
        _ if through_a_custom_adapter() => {
            let calls = Arc::new(AtomicU64::new(0));
            let url = format!("{}{}", forwarding::PREFIX, t.url);
            let db = forwarding::adapters(calls.clone())
                .connect_database(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(matches!(db, Database::Custom(_)), "{db:?}");
            db.ping().await.unwrap();
            assert_eq!(calls.load(Ordering::Relaxed), 1, "the call went through it");
            db
        }
        _ => Database::connect(&t.url)
            .await
            .unwrap_or_else(|e| panic!("{:?} at {}: {e}", t.backend, t.url)),
    };
    db.migrate().await.unwrap();
    db
}

/// The test's schema on a pool of one connection that a neighbour tenant uses between
/// every two of the test's calls, in a schema of its own holding a row of its own: a
/// call that did not put the connection in the test's schema would meet the
/// neighbour's tables (on MariaDB, a statement naming no database meets the server
/// URL's, which has none of trustlog's).
async fn shared_with_a_neighbour(t: &TestDb, server: &str, schema: &str) -> Database {
    let servers = SharedServers::new(1);
    let db = servers
        .connect(server, schema)
        .await
        .unwrap_or_else(|e| panic!("{:?} shared at {server}: {e}", t.backend));
    let neighbour_db = TestDb::create(t.backend).await;
    let (_, neighbour_schema) = neighbour_db.server_and_schema().unwrap();
    let neighbour = servers.connect(server, neighbour_schema).await.unwrap();
    neighbour.migrate().await.unwrap();
    neighbour
        .insert(
            vec![op("neighbour-row", T0)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
    // The task owns the neighbour's schema: it is dropped with the test's runtime.
    tokio::spawn(async move {
        let _owned = neighbour_db;
        loop {
            let _ = neighbour.ping().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
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
    assert_eq!(
        db.scan_after(None, 10).await.unwrap().rows,
        vec![o],
        "{b:?}"
    );
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
        db.scan_after(None, 10).await.unwrap().rows,
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
    // At the default depth of 3 the first two batches are still out when their calls
    // return; the third read comes back short and settles all three.
    assert_eq!(fetched, [0, 0, 250], "{b:?}");
    let ids = ledger_op_ids(&path);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 250, "{b:?}");
    assert_eq!(ids.len(), 250, "{b:?}: nothing repeated");
    assert_eq!(tn.scan_tick(T0 + 2).await.unwrap().fetched, 0);
}

async fn the_retry_schedule_runs_on_the_injected_clock(b: Backend) {
    const MIN: i64 = 60_000_000;
    let t = TestDb::create(b).await;
    // A receiver that answers but fails every envelope: transient failures.
    let receiver = TestBroker::create(Broker::Webhook).await;
    let mut tn = tenant(&t, &receiver.busy_url(), Config::default()).await;
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
        .rows
        .into_iter()
        .map(|o| o.op_id)
        .collect();
    assert_eq!(ids, ["fresh"], "{b:?}");
}

const DEFAULT_KEY: &str = trustlog_guest::model::DEFAULT_CURSOR_KEY;

/// `op` at any instant, even one chrono cannot print.
fn op_at(id: &str, timestamp: Micros) -> Operation {
    Operation {
        timestamp,
        ..op(id, 0)
    }
}

fn pos(timestamp: Micros, id: &str) -> Position {
    Position {
        timestamp,
        op_id: id.to_string(),
    }
}

fn retry(id: &str, status: RetryStatus, next: Option<Micros>) -> RetryUpdate {
    RetryUpdate {
        op_id: id.to_string(),
        retry_count: 1,
        retry_status: status,
        last_retry_at: Some(1),
        next_retry_at: next,
        error_message: "broker down".to_string(),
    }
}

fn move_cursor(expected: Option<Position>, to: Position) -> Option<CursorMove> {
    Some(CursorMove {
        key: DEFAULT_KEY.to_string(),
        expected,
        to,
    })
}

fn ids(ops: Vec<Operation>) -> Vec<String> {
    ops.into_iter().map(|o| o.op_id).collect()
}

/// Whether the row `id` has `status`, read as another client would.
async fn status_is(t: &TestDb, id: &str, status: &str) -> bool {
    t.scalar(&format!(
        "SELECT COUNT(*) FROM operation WHERE op_id = '{id}' AND trustlog_status = '{status}'"
    ))
    .await
        == 1
}

/// Whether `trustlog_retry` holds exactly this row, timestamps compared in the column's own type.
async fn has_retry_row(
    t: &TestDb,
    id: &str,
    count: i64,
    status: &str,
    next: Option<Micros>,
    created: Micros,
    updated: Micros,
) -> bool {
    let next = match next {
        Some(n) => format!("= {}", t.timestamp_sql(n)),
        None => "IS NULL".to_string(),
    };
    t.scalar(&format!(
        "SELECT COUNT(*) FROM trustlog_retry WHERE op_id = '{id}' AND retry_count = {count} \
         AND retry_status = '{status}' AND next_retry_at {next} \
         AND created_at = {} AND updated_at = {}",
        t.timestamp_sql(created),
        t.timestamp_sql(updated)
    ))
    .await
        == 1
}

async fn migrating_twice_is_harmless(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("kept", T0)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db.migrate().await.unwrap();
    assert_eq!(t.scalar("SELECT COUNT(*) FROM operation").await, 1, "{b:?}");
    assert_eq!(
        db.scan_after(None, u32::MAX).await.unwrap().rows,
        vec![op("kept", T0)],
        "{b:?}"
    );
}

async fn insert_reports_inserted_and_duplicate_in_input_order_and_leaves_stored_rows_untouched(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let first = db
        .insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(
        first,
        vec![InsertOutcome::Inserted, InsertOutcome::Inserted],
        "{b:?}"
    );

    let mut changed_a = op("a", 99);
    changed_a.op_actor = "mallory".to_string();
    let mut first_c = op("c", 3);
    first_c.op_actor = "first".to_string();
    let mut second_c = op("c", 98);
    second_c.op_actor = "second".to_string();
    let outcomes = db
        .insert(
            vec![changed_a, first_c, second_c, op("d", 4)],
            TrustlogStatus::Trustlogged,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            InsertOutcome::Duplicate,
            InsertOutcome::Inserted,
            InsertOutcome::Duplicate,
            InsertOutcome::Inserted
        ],
        "{b:?}"
    );
    // The stored a keeps its content and status; the first c of the batch won.
    assert_eq!(
        db.scan_after(None, u32::MAX).await.unwrap().rows,
        vec![op("a", 1), op("b", 2)],
        "{b:?}"
    );
    assert!(status_is(&t, "c", "TRUSTLOGGED").await, "{b:?}");
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM operation WHERE op_id = 'c' AND op_actor = 'first' AND timestamp = {}",
            t.timestamp_sql(3)
        ))
        .await,
        1,
        "{b:?}: c keeps the first actor and timestamp"
    );
}

async fn insert_spanning_several_chunks_keeps_outcomes_in_order(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("op-01500", 0)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let mut ops: Vec<Operation> = (0..2_500).map(|i| op(&format!("op-{i:05}"), i)).collect();
    // A repeat, late in the batch (in a later chunk), of an id stored early in it.
    ops[1_200] = op("op-00007", 7);
    let outcomes = db
        .insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2_500, "{b:?}");
    for (i, outcome) in outcomes.iter().enumerate() {
        let expected = if i == 1_200 || i == 1_500 {
            InsertOutcome::Duplicate
        } else {
            InsertOutcome::Inserted
        };
        assert_eq!(*outcome, expected, "{b:?}: input {i}");
    }
    assert_eq!(db.stats(DEFAULT_KEY).await.unwrap().total, 2_499, "{b:?}");
}

async fn insert_of_nothing_is_nothing(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    assert!(
        db.insert(Vec::new(), TrustlogStatus::NotTrustlogged)
            .await
            .unwrap()
            .is_empty(),
        "{b:?}"
    );
}

async fn null_and_empty_string_stay_distinct_in_the_optional_fields(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let mut empty = op("empty", T0);
    (empty.request_body_hash, empty.response_body_hash) =
        (Some(String::new()), Some(String::new()));
    (empty.client_ip, empty.server_ip) = (Some(String::new()), Some(String::new()));
    let mut null = op("null", T0 + 1);
    (
        null.request_body_hash,
        null.response_body_hash,
        null.client_ip,
        null.server_ip,
    ) = (None, None, None, None);
    db.insert(
        vec![empty.clone(), null.clone()],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    assert_eq!(
        db.scan_after(None, u32::MAX).await.unwrap().rows,
        vec![empty, null],
        "{b:?}"
    );
    assert_eq!(
        t.scalar(
            "SELECT COUNT(*) FROM operation WHERE request_body_hash IS NULL \
             AND response_body_hash IS NULL AND client_ip IS NULL AND server_ip IS NULL"
        )
        .await,
        1,
        "{b:?}: only the null row holds NULLs"
    );
}

async fn microsecond_timestamps_round_trip_exactly(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // Every backend stores 1000-01-01 through 9999-12-31 to the microsecond.
    let mut stamps = vec![
        MIN_TIMESTAMP, // 1000-01-01T00:00:00Z
        MIN_TIMESTAMP + 1,
        -1, // 1969-12-31T23:59:59.999999Z
        0,
        1,
        T0 + 1,
        T0 + 999_999,
        1_795_515_834_123_456, // 2026-11-24T10:23:54.123456Z
        4_102_444_800_000_001, // 2100-01-01 and a microsecond
        MAX_TIMESTAMP,         // 9999-12-31T23:59:59.999999Z
    ];
    // And each keeps what lies beyond, as far as its column type reaches.
    stamps.extend(match b {
        Backend::Sqlite => vec![
            i64::MIN,
            -62_135_596_800_000_001, // a microsecond before 0001-01-01
            i64::MAX,
        ],
        Backend::Postgres => vec![
            -210_866_803_200_000_000, // 4714-11-24T00:00:00Z BC, PostgreSQL's first instant
            -62_135_596_800_000_001,  // a microsecond before 0001-01-01
            8_210_266_876_799_999_999, // +262142-12-31T23:59:59.999999Z, chrono's last
            i64::MAX,                 // beyond chrono, within PostgreSQL
        ],
        Backend::MySql => vec![],
    });
    stamps.sort();
    let ops: Vec<Operation> = stamps
        .iter()
        .enumerate()
        .map(|(i, s)| op_at(&format!("t{i:02}"), *s))
        .collect();
    db.insert(ops.clone(), TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(
        db.scan_after(None, u32::MAX).await.unwrap().rows,
        ops,
        "{b:?}: returned exactly, in timestamp order"
    );

    // The cursor text carries them exactly too, up to the largest.
    let mut expected = None;
    for o in &ops {
        db.apply(UnitOfWork {
            now: 1,
            cursor: move_cursor(expected.clone(), o.position()),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        assert_eq!(
            db.load_cursor(DEFAULT_KEY).await.unwrap(),
            Some(o.position()),
            "{b:?}"
        );
        expected = Some(o.position());
    }
}

async fn rows_sharing_one_timestamp_are_each_scanned_exactly_once_in_op_id_order(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let ts = 1_795_515_834_123_456;
    // Inserted out of order so the scan, not the insert, provides the order.
    let mut ids: Vec<String> = (0..250).map(|i| format!("op-{i:03}")).collect();
    ids.reverse();
    db.insert(
        ids.iter().map(|id| op(id, ts)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();

    let mut seen = Vec::new();
    let mut batches = 0;
    loop {
        let cursor = db.load_cursor(DEFAULT_KEY).await.unwrap();
        let batch = db.scan_after(cursor.clone(), 100).await.unwrap().rows;
        let Some(last) = batch.last() else { break };
        batches += 1;
        db.apply(UnitOfWork {
            now: 1,
            cursor: move_cursor(cursor, last.position()),
            ..UnitOfWork::default()
        })
        .await
        .unwrap();
        seen.extend(batch.into_iter().map(|o| o.op_id));
    }
    ids.sort();
    assert_eq!(batches, 3, "{b:?}");
    assert_eq!(seen, ids, "{b:?}");
}

async fn apply_marks_only_waiting_rows_trustlogged(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.insert(vec![op("k", 2)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: 1,
        trustlogged: vec!["a".into(), "k".into(), "missing".into()],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert!(status_is(&t, "a", "TRUSTLOGGED").await, "{b:?}");
    assert!(status_is(&t, "k", "DB_ONLY").await, "{b:?}");
}

async fn apply_of_nothing_touches_nothing(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // Not even `now`, which not every backend could store, is looked at.
    db.apply(UnitOfWork {
        now: i64::MIN,
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap(),
        DbStats::default(),
        "{b:?}"
    );
}

async fn apply_with_a_stale_expected_position_returns_cursor_moved_and_changes_nothing(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![op("a", 1), op("b", 2), op("c", 3), op("d", 4)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: 10,
        trustlogged: vec!["d".into()],
        retries: vec![retry("b", RetryStatus::Pending, Some(100))],
        cursor: move_cursor(None, pos(2, "b")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let stale = UnitOfWork {
        now: 20,
        trustlogged: vec!["a".into(), "c".into()],
        retries: vec![retry("c", RetryStatus::Retrying, Some(200))],
        delete_retries: vec!["b".into()],
        cursor: move_cursor(Some(pos(1, "a")), pos(3, "c")),
    };
    assert_eq!(
        db.apply(stale).await,
        Err(DbError::CursorMoved(DEFAULT_KEY.to_string())),
        "{b:?}"
    );

    // A cursor that was never set is stale for an expected position too.
    let never_set = UnitOfWork {
        now: 20,
        trustlogged: vec!["a".into()],
        cursor: Some(CursorMove {
            key: "other".into(),
            expected: Some(pos(1, "a")),
            to: pos(3, "c"),
        }),
        ..UnitOfWork::default()
    };
    assert_eq!(
        db.apply(never_set).await,
        Err(DbError::CursorMoved("other".to_string())),
        "{b:?}"
    );

    // And expecting no position fails once one is set.
    let expected_none = UnitOfWork {
        now: 20,
        trustlogged: vec!["a".into()],
        cursor: move_cursor(None, pos(3, "c")),
        ..UnitOfWork::default()
    };
    assert_eq!(
        db.apply(expected_none).await,
        Err(DbError::CursorMoved(DEFAULT_KEY.to_string())),
        "{b:?}"
    );

    for id in ["a", "b", "c"] {
        assert!(status_is(&t, id, "NOT_TRUSTLOGGED").await, "{b:?}: {id}");
    }
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
            .await,
        1,
        "{b:?}: only the unit that held its position took effect"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        1,
        "{b:?}"
    );
    assert!(
        has_retry_row(&t, "b", 1, "PENDING", Some(100), 10, 10).await,
        "{b:?}: the retry rows are as they were"
    );
    assert_eq!(
        db.load_cursor(DEFAULT_KEY).await.unwrap(),
        Some(pos(2, "b")),
        "{b:?}"
    );
    assert_eq!(db.load_cursor("other").await.unwrap(), None, "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_cursor").await,
        1,
        "{b:?}: a failed unit leaves no cursor row behind"
    );
}

async fn apply_takes_an_empty_cursor_value_as_no_position(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    t.execute(&format!(
        "INSERT INTO trustlog_cursor VALUES ('{DEFAULT_KEY}', '', {})",
        t.timestamp_sql(0)
    ))
    .await;
    assert_eq!(db.load_cursor(DEFAULT_KEY).await.unwrap(), None, "{b:?}");
    db.apply(UnitOfWork {
        now: 7,
        cursor: move_cursor(None, pos(1, "a")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM trustlog_cursor WHERE cursor_key = '{DEFAULT_KEY}' \
             AND cursor_value = '1970-01-01T00:00:00.000001Z|a' AND last_updated_at = {}",
            t.timestamp_sql(7)
        ))
        .await,
        1,
        "{b:?}"
    );
}

async fn apply_refuses_to_move_a_cursor_backwards_or_in_place(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("a", 1)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: 1,
        cursor: move_cursor(None, pos(5, "e")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    for to in [pos(5, "e"), pos(5, "d"), pos(4, "z")] {
        let work = UnitOfWork {
            now: 2,
            trustlogged: vec!["a".into()],
            cursor: move_cursor(Some(pos(5, "e")), to.clone()),
            ..UnitOfWork::default()
        };
        match db.apply(work).await {
            Err(DbError::Other(m)) => assert!(m.contains(DEFAULT_KEY), "{b:?}: {m}"),
            other => panic!("{b:?}: moving to {to:?}: {other:?}"),
        }
    }
    assert!(status_is(&t, "a", "NOT_TRUSTLOGGED").await, "{b:?}");
    assert_eq!(
        db.load_cursor(DEFAULT_KEY).await.unwrap(),
        Some(pos(5, "e")),
        "{b:?}"
    );
}

async fn apply_upserts_retry_rows_keeping_created_at_and_deletes_them(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("a", 1), op("b", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: 100,
        retries: vec![
            retry("a", RetryStatus::Pending, Some(160)),
            retry("b", RetryStatus::Pending, Some(160)),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let mut again = retry("a", RetryStatus::Retrying, Some(400));
    again.retry_count = 2;
    db.apply(UnitOfWork {
        now: 200,
        retries: vec![again],
        delete_retries: vec!["b".into()],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        1,
        "{b:?}: b is deleted"
    );
    assert!(
        has_retry_row(&t, "a", 2, "RETRYING", Some(400), 100, 200).await,
        "{b:?}: a is overwritten, keeping its created_at"
    );
}

async fn due_retries_honour_next_retry_at_and_skip_dead_letters_and_delivered_rows(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let ids = [
        "due-late",
        "due-early",
        "due-tie",
        "future",
        "dead",
        "delivered",
        "unscheduled",
    ];
    db.insert(
        ids.iter().map(|id| op(id, 1)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let mut retrying = retry("due-late", RetryStatus::Retrying, Some(300));
    retrying.retry_count = 3;
    db.apply(UnitOfWork {
        now: 1,
        retries: vec![
            retrying,
            retry("due-early", RetryStatus::Pending, Some(100)),
            retry("due-tie", RetryStatus::Pending, Some(300)),
            retry("future", RetryStatus::Pending, Some(301)),
            retry("dead", RetryStatus::DeadLetter, Some(50)),
            retry("delivered", RetryStatus::Pending, Some(50)),
            retry("unscheduled", RetryStatus::Pending, None),
        ],
        trustlogged: vec!["delivered".into()],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let due = db.due_retries(300, 10).await.unwrap().rows;
    let got: Vec<(&str, u32)> = due
        .iter()
        .map(|r| (r.op.op_id.as_str(), r.retry_count))
        .collect();
    assert_eq!(
        got,
        vec![("due-early", 1), ("due-late", 3), ("due-tie", 1)],
        "{b:?}"
    );
    assert_eq!(due[0].op, op("due-early", 1), "{b:?}");
    assert_eq!(db.due_retries(300, 1).await.unwrap().rows.len(), 1, "{b:?}");
    assert!(
        db.due_retries(99, 10).await.unwrap().rows.is_empty(),
        "{b:?}"
    );
    assert!(
        db.due_retries(i64::MIN, 10).await.unwrap().rows.is_empty(),
        "{b:?}"
    );
    assert_eq!(
        db.due_retries(i64::MAX, 10).await.unwrap().rows.len(),
        4,
        "{b:?}"
    );
}

async fn sweep_candidates_are_waiting_rows_behind_the_cursor_without_retry_rows(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![
            op("a", 1),
            op("b", 2),
            op("c", 3),
            op("d", 3),
            op("e", 4),
            op("f", 5),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: 1,
        trustlogged: vec!["c".into()],
        retries: vec![retry("b", RetryStatus::Pending, Some(10))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    // Strictly before (4, "e"): d shares c's timestamp and is behind; e itself is not.
    assert_eq!(
        ids(db
            .sweep_candidates(pos(4, "e"), i64::MIN, 10)
            .await
            .unwrap()
            .rows),
        vec!["a", "d"],
        "{b:?}"
    );
    assert_eq!(
        ids(db
            .sweep_candidates(pos(4, "e"), i64::MIN, 1)
            .await
            .unwrap()
            .rows),
        vec!["a"],
        "{b:?}"
    );
    assert_eq!(
        ids(db
            .sweep_candidates(pos(3, "d"), i64::MIN, 10)
            .await
            .unwrap()
            .rows),
        vec!["a"],
        "{b:?}"
    );
    // The catch-up's window: only rows stamped at or after `since`.
    assert_eq!(
        ids(db.sweep_candidates(pos(4, "e"), 3, 10).await.unwrap().rows),
        vec!["d"],
        "{b:?}"
    );
    assert_eq!(
        ids(db.sweep_candidates(pos(4, "e"), 1, 10).await.unwrap().rows),
        vec!["a", "d"],
        "{b:?}"
    );
    assert!(
        db.sweep_candidates(pos(4, "e"), 4, 10)
            .await
            .unwrap()
            .rows
            .is_empty(),
        "{b:?}"
    );
}

/// Inserts `id` stamped `at` with plain SQL, as another client would, naming only the
/// seed's columns.
async fn insert_by_hand(t: &TestDb, id: &str, at: Micros) {
    t.execute(&format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
         VALUES ('{id}', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', {})",
        t.timestamp_sql(at)
    ))
    .await;
}

async fn the_catch_up_delivers_late_commits_within_its_window_and_leaves_older_ones_to_the_sweep(
    b: Backend,
) {
    const WINDOW: u64 = 60_000_000;
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let config = Config {
        catch_up_window_micros: WINDOW,
        ..Config::default()
    };
    let mut tn = tenant(&t, &format!("ledger://{}", path.display()), config).await;
    tn.record(vec![op("now", T0)], None).await.unwrap();
    assert_eq!(tn.scan_tick(T0).await.unwrap().published, 1, "{b:?}");
    // Two commits behind the cursor: one a second late, one two minutes late.
    insert_by_hand(&t, "recent", T0 - 1_000_000).await;
    insert_by_hand(&t, "old", T0 - 120_000_000).await;
    assert_eq!(tn.scan_tick(T0).await.unwrap().fetched, 0, "{b:?}");
    let caught = tn.catch_up_tick(T0).await.unwrap();
    assert_eq!((caught.fetched, caught.published), (1, 1), "{b:?}");
    assert_eq!(tn.catch_up_tick(T0).await.unwrap().fetched, 0, "{b:?}");
    assert_eq!(tn.sweep_tick(T0).await.unwrap().published, 1, "{b:?}");
    assert_eq!(ledger_op_ids(&path), ["now", "recent", "old"], "{b:?}");

    // A zero window turns the catch-up off: the sweep remains.
    let t = TestDb::create(b).await;
    let off = Config {
        catch_up_window_micros: 0,
        ..Config::default()
    };
    let other = dir.path().join("other");
    let mut tn = tenant(&t, &format!("ledger://{}", other.display()), off).await;
    tn.record(vec![op("now-2", T0)], None).await.unwrap();
    tn.scan_tick(T0).await.unwrap();
    insert_by_hand(&t, "recent-2", T0 - 1).await;
    assert_eq!(tn.catch_up_tick(T0).await.unwrap().fetched, 0, "{b:?}");
    assert_eq!(tn.sweep_tick(T0).await.unwrap().published, 1, "{b:?}");
}

async fn a_row_stamped_in_the_future_is_delivered_without_taking_the_cursor_past_now(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    // A skewed application clock, an hour ahead, and a value far in the future.
    let hour = 3_600_000_000;
    insert_by_hand(&t, "ahead", T0 + hour).await;
    insert_by_hand(&t, "year-9999", MAX_TIMESTAMP - 1).await;
    insert_by_hand(&t, "on-time", T0).await;
    let r = tn.scan_tick(T0).await.unwrap();
    assert_eq!((r.fetched, r.published), (3, 3), "{b:?}");
    let cursor = connect(&t).await.load_cursor(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        cursor,
        Some(pos(T0, "on-time")),
        "{b:?}: at now, not an hour ahead"
    );
    // The rows that follow, stamped right, go through the cursor at once.
    for i in 1..=20 {
        insert_by_hand(&t, &format!("next-{i:02}"), T0 + i * 1_000).await;
    }
    let r = tn.scan_tick(T0 + 30_000).await.unwrap();
    assert_eq!(r.published, 20, "{b:?}");
    assert_eq!(
        tn.sweep_tick(T0 + 30_000).await.unwrap().fetched,
        0,
        "{b:?}"
    );
    assert_eq!(ledger_op_ids(&path).len(), 23, "{b:?}");
}

async fn an_unreachable_trust_log_leaves_rows_cursor_and_retry_budgets_as_they_were(b: Backend) {
    let t = TestDb::create(b).await;
    // A ledger whose path is a directory cannot be opened: unreachable as a whole.
    let dir = tempfile::tempdir().unwrap();
    let broken = format!("ledger://{}", dir.path().display());
    let mut down = tenant(&t, &broken, Config::default()).await;
    down.record(vec![op("a", T0), op("b", T0 + 1)], None)
        .await
        .unwrap();
    let db = connect(&t).await;
    db.insert(vec![op("r", T0 - 10)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: T0,
        retries: vec![RetryUpdate {
            retry_count: 3,
            ..retry("r", RetryStatus::Retrying, Some(T0))
        }],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let scan = down.scan_tick(T0 + 100).await.unwrap();
    assert_eq!(
        (scan.fetched, scan.unavailable, scan.retry_scheduled),
        (2, 2, 0),
        "{b:?}"
    );
    assert!(!scan.more, "{b:?}");
    assert!(
        scan.error.as_deref().is_some_and(|e| e.contains("ledger")),
        "{scan:?}"
    );
    let retried = down.retry_tick(T0 + 100).await.unwrap();
    assert_eq!((retried.fetched, retried.unavailable), (1, 1), "{b:?}");
    // Nothing moved: no cursor, no new retry row, the retry's count unspent.
    assert_eq!(db.load_cursor(DEFAULT_KEY).await.unwrap(), None, "{b:?}");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM trustlog_retry").await, 1);
    assert_eq!(
        t.scalar("SELECT retry_count FROM trustlog_retry WHERE op_id = 'r'")
            .await,
        3,
        "{b:?}"
    );

    // Once the trust log answers, everything goes out, the retry among them.
    let up = tempfile::tempdir().unwrap();
    let path = up.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    assert_eq!(tn.scan_tick(T0 + 200).await.unwrap().published, 2, "{b:?}");
    assert_eq!(tn.retry_tick(T0 + 200).await.unwrap().published, 1, "{b:?}");
    assert_eq!(ledger_op_ids(&path), ["a", "b", "r"], "{b:?}");
}

async fn the_watch_probe_sees_only_rows_the_scan_or_the_catch_up_would_take(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    assert!(!db.has_waiting_since(Micros::MIN).await.unwrap(), "{b:?}");
    db.insert(
        vec![op("a", T0), op("b", T0 + 5)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    assert!(db.has_waiting_since(Micros::MIN).await.unwrap(), "{b:?}");
    assert!(db.has_waiting_since(T0 + 5).await.unwrap(), "{b:?}");
    assert!(!db.has_waiting_since(T0 + 6).await.unwrap(), "{b:?}");
    db.apply(UnitOfWork {
        now: T0,
        trustlogged: vec!["b".into()],
        retries: vec![retry("a", RetryStatus::Pending, Some(T0))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert!(
        !db.has_waiting_since(Micros::MIN).await.unwrap(),
        "{b:?}: delivered and retried rows are not waiting"
    );
    db.insert(vec![op("k", T0 + 9)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    assert!(!db.has_waiting_since(Micros::MIN).await.unwrap(), "{b:?}");
}

async fn one_host_holds_a_lease_until_it_releases_it_or_lets_it_run_out(b: Backend) {
    use std::time::Duration;
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let long = Duration::from_secs(60);
    assert_eq!(db.read_lease("k").await.unwrap(), None, "{b:?}");

    let a = db
        .claim_lease("k", "host-a", long, "running")
        .await
        .unwrap();
    assert!(a.held && a.took_over_from.is_none(), "{b:?}: {a:?}");
    let other = db
        .claim_lease("k", "host-b", long, "running")
        .await
        .unwrap();
    assert!(!other.held, "{b:?}: {other:?}");
    assert_eq!(other.lease.holder, "host-a", "{b:?}");
    assert!(other.lease.is_held(), "{b:?}");
    // Renewing keeps when it was taken and records the holder's state.
    let renewed = db
        .claim_lease("k", "host-a", long, "outage: publisher unreachable")
        .await
        .unwrap();
    assert!(renewed.held, "{b:?}");
    assert_eq!(renewed.lease.acquired_at, a.lease.acquired_at, "{b:?}");
    let read = db.read_lease("k").await.unwrap().unwrap();
    assert_eq!(
        (read.holder.as_str(), read.state.as_str()),
        ("host-a", "outage: publisher unreachable"),
        "{b:?}"
    );
    // Other keys are other leases.
    assert!(db.claim_lease("k2", "host-b", long, "").await.unwrap().held);

    // Released: the next host takes it at once, and nothing was taken over.
    db.release_lease("k", "host-b").await.unwrap();
    assert_eq!(
        db.read_lease("k").await.unwrap().unwrap().holder,
        "host-a",
        "{b:?}: only the holder releases"
    );
    db.release_lease("k", "host-a").await.unwrap();
    assert!(
        !db.read_lease("k").await.unwrap().unwrap().is_held(),
        "{b:?}"
    );
    let b_took = db
        .claim_lease("k", "host-b", Duration::from_secs(1), "running")
        .await
        .unwrap();
    assert!(
        b_took.held && b_took.took_over_from.is_none(),
        "{b:?}: {b_took:?}"
    );

    // host-b stops renewing: once its lease runs out, host-a takes over from it.
    assert!(
        !db.claim_lease("k", "host-a", long, "").await.unwrap().held,
        "{b:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let over = db
        .claim_lease("k", "host-a", long, "running")
        .await
        .unwrap();
    assert!(over.held, "{b:?}: {over:?}");
    assert_eq!(over.took_over_from.as_deref(), Some("host-b"), "{b:?}");

    // A holder known to be dead may be taken over before its lease runs out; a wrong
    // name takes nothing.
    let wrong = db
        .claim_lease_from("k", "host-c", long, "", "host-x")
        .await
        .unwrap();
    assert!(!wrong.held, "{b:?}");
    let forced = db
        .claim_lease_from("k", "host-c", long, "", "host-a")
        .await
        .unwrap();
    assert!(forced.held, "{b:?}");
    assert_eq!(forced.took_over_from.as_deref(), Some("host-a"), "{b:?}");
}

async fn of_hosts_claiming_one_free_lease_at_once_exactly_one_gets_it(b: Backend) {
    use std::time::Duration;
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // A connection pool each, as separate hosts have.
    let mut hosts = Vec::new();
    for _ in 0..6 {
        hosts.push(connect(&t).await);
    }
    for round in 0..5 {
        let key = format!("race-{round}");
        let claims = futures_util::future::join_all(hosts.iter().enumerate().map(|(h, db)| {
            let key = key.clone();
            async move {
                db.claim_lease(&key, &format!("host-{h}"), Duration::from_secs(60), "")
                    .await
            }
        }))
        .await;
        // A claim that lost a race may also fail as busy; it never holds.
        let held: Vec<String> = claims
            .into_iter()
            .filter_map(|c| c.ok().filter(|c| c.held).map(|c| c.lease.holder))
            .collect();
        assert_eq!(held.len(), 1, "{b:?} round {round}: {held:?}");
        assert_eq!(db.read_lease(&key).await.unwrap().unwrap().holder, held[0]);
    }
}

async fn db_only_rows_are_never_scanned_or_swept(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(vec![op("quiet", T0)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    assert!(
        db.scan_after(None, 10).await.unwrap().rows.is_empty(),
        "{b:?}"
    );
    assert!(
        db.sweep_candidates(pos(T0 + 1, ""), i64::MIN, 10)
            .await
            .unwrap()
            .rows
            .is_empty(),
        "{b:?}"
    );

    db.insert(
        vec![op("kept-1", 1), op("kept-3", 3)],
        TrustlogStatus::DbOnly,
    )
    .await
    .unwrap();
    db.insert(vec![op("sent-2", 2)], TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    assert_eq!(
        ids(db.scan_after(None, 10).await.unwrap().rows),
        vec!["sent-2"],
        "{b:?}"
    );
    assert_eq!(
        ids(db.scan_after(Some(pos(0, "")), 10).await.unwrap().rows),
        vec!["sent-2"],
        "{b:?}"
    );
    assert_eq!(
        ids(db
            .sweep_candidates(pos(10, ""), i64::MIN, 10)
            .await
            .unwrap()
            .rows),
        vec!["sent-2"],
        "{b:?}"
    );
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!((stats.db_only, stats.oldest_waiting), (3, Some(2)), "{b:?}");
}

async fn stats_count_every_status_and_read_the_cursor(b: Backend) {
    // Straight from the adapter: every count, the cursor and the oldest row owed.
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap(),
        DbStats::default(),
        "{b:?}"
    );
    db.insert(
        (1..=6).map(|i| op(&format!("w{i}"), i)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.insert(vec![op("t1", 7), op("t2", 8)], TrustlogStatus::Trustlogged)
        .await
        .unwrap();
    db.insert(vec![op("k1", 0)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: 1,
        trustlogged: vec!["w6".into()],
        retries: vec![
            retry("w1", RetryStatus::Pending, Some(5)),
            retry("w2", RetryStatus::Retrying, Some(5)),
            retry("w3", RetryStatus::DeadLetter, None),
        ],
        cursor: move_cursor(None, pos(5, "w5")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap(),
        DbStats {
            total: 9,
            trustlogged: 3,
            not_trustlogged: 5,
            db_only: 1,
            retry_pending: 2,
            dead_letter: 1,
            cursor: Some(pos(5, "w5")),
            // w1..w3 wait in the retry queue, so w4 is the oldest the scan or sweep owes.
            oldest_waiting: Some(4),
            // w1 and w2 are due at 5; the dead letter is due never.
            next_retry_at: Some(5),
        },
        "{b:?}"
    );
    assert_eq!(db.stats("unknown").await.unwrap().cursor, None, "{b:?}");
    // What a drain waits for, from the indexes: w4 and w5 wait for their first
    // delivery, w1 and w2 in the retry queue (the dead letter w3 waits for nobody).
    assert_eq!(
        db.backlog().await.unwrap(),
        trustlog_host::db::Backlog {
            waiting: 2,
            retrying: 2,
            next_retry_at: Some(5),
        },
        "{b:?}"
    );

    // Through the engine: what a failed delivery leaves, and the lag it reports.
    let t = TestDb::create(b).await;
    let receiver = TestBroker::create(Broker::Webhook).await;
    let mut tn = tenant(&t, &receiver.busy_url(), Config::default()).await;
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
    assert_eq!(st.cursor, Some(pos(T0 + 2, "a-2")), "{b:?}");
}

async fn two_workers_racing_for_one_cursor_move_exactly_one_wins(b: Backend) {
    let t = TestDb::create(b).await;
    let (one, two) = (connect(&t).await, connect(&t).await);
    one.insert(
        (0..200).map(|i| op(&format!("op-{i:03}"), i)).collect(),
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();

    // The first round races to create the cursor, the others to move it.
    for round in 0..20 {
        let (at_one, at_two) =
            tokio::join!(one.load_cursor(DEFAULT_KEY), two.load_cursor(DEFAULT_KEY));
        let expected = at_one.unwrap();
        assert_eq!(expected, at_two.unwrap(), "{b:?} round {round}");
        let batch = one.scan_after(expected.clone(), 10).await.unwrap().rows;
        let to = batch.last().unwrap().position();
        let work = UnitOfWork {
            now: round,
            trustlogged: batch.iter().map(|o| o.op_id.clone()).collect(),
            cursor: move_cursor(expected, to.clone()),
            ..UnitOfWork::default()
        };
        let (a, b2) = tokio::join!(
            tokio::spawn({
                let (db, work) = (one.clone(), work.clone());
                async move { db.apply(work).await }
            }),
            tokio::spawn({
                let db = two.clone();
                async move { db.apply(work).await }
            }),
        );
        let mut results = [a.unwrap(), b2.unwrap()];
        results.sort_by_key(|r| r.is_err());
        assert_eq!(
            results,
            [Ok(()), Err(DbError::CursorMoved(DEFAULT_KEY.to_string()))],
            "{b:?} round {round}: exactly one worker advances, the loser is told the cursor moved"
        );
        assert_eq!(
            one.load_cursor(DEFAULT_KEY).await.unwrap(),
            Some(to),
            "{b:?} round {round}"
        );
    }
    let stats = two.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        (stats.trustlogged, stats.not_trustlogged),
        (200, 0),
        "{b:?}"
    );
    assert_eq!(stats.cursor, Some(pos(199, "op-199")), "{b:?}");
    one.close().await;
    two.close().await;
}

async fn two_pipelined_engines_on_one_cursor_deliver_every_row_and_never_move_it_back(b: Backend) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("one"), dir.path().join("two")];
    let config = Config {
        batch_size: 10,
        pipeline_depth: 3,
        ..Config::default()
    };
    let mut engines = Vec::new();
    for path in &paths {
        engines.push(tenant(&t, &format!("ledger://{}", path.display()), config.clone()).await);
    }
    let ops: Vec<Operation> = (0..120)
        .map(|i| op(&format!("op-{i:03}"), T0 + i))
        .collect();
    engines[0].record(ops, None).await.unwrap();
    let db = connect(&t).await;
    let (mut conflicts, mut last) = (0, None);
    let mut done = [false, false];
    for _ in 0..2_000 {
        for (i, engine) in engines.iter_mut().enumerate() {
            let r = engine.scan_tick(T0 + 1_000_000).await.unwrap();
            conflicts += u32::from(r.cursor_conflict);
            done[i] = !r.more;
            // Batches commit in order, each from where the one before left the cursor.
            let at = db.load_cursor(DEFAULT_KEY).await.unwrap();
            assert!(
                at >= last,
                "{b:?}: the cursor went back from {last:?} to {at:?}"
            );
            last = at;
        }
        if done == [true, true] {
            break;
        }
    }
    assert_eq!(
        done,
        [true, true],
        "{b:?}: still delivering after 2,000 rounds"
    );
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        (stats.trustlogged, stats.not_trustlogged),
        (120, 0),
        "{b:?}"
    );
    assert_eq!(stats.cursor, Some(pos(T0 + 119, "op-119")), "{b:?}");
    let delivered: HashSet<String> = paths.iter().flat_map(|p| ledger_op_ids(p)).collect();
    assert_eq!(delivered.len(), 120, "{b:?}: every row in a ledger");
    assert!(conflicts > 0, "{b:?}: the engines never met on the cursor");
}

async fn a_malformed_stored_cursor_is_an_error_naming_the_key(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    t.execute(&format!(
        "INSERT INTO trustlog_cursor VALUES ('{DEFAULT_KEY}', '2026-11-24T10:23:54.123Z|a', {})",
        t.timestamp_sql(0)
    ))
    .await;
    match db.load_cursor(DEFAULT_KEY).await {
        Err(DbError::Other(m)) => assert!(m.contains(DEFAULT_KEY), "{b:?}: {m}"),
        other => panic!("{b:?}: {other:?}"),
    }
}

async fn a_backlog_of_100k_rows_drains_through_scan_and_apply_in_batches_of_1000(b: Backend) {
    // Throughput is measured by `trustlog bench`, not here: this proves the bulk
    // statements hold up at a realistic backlog on every database.
    const ROWS: i64 = 100_000;
    const BATCH: u32 = 1_000;
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let base = 1_795_515_834_000_000;
    let ops: Vec<Operation> = (0..ROWS)
        .map(|i| {
            let mut o = op_at(&format!("op-{i:07}"), base + i / 4);
            o.request_body_hash = Some(format!("{:064x}", i * 7919));
            o
        })
        .collect();
    for chunk in ops.chunks(BATCH as usize) {
        db.insert(chunk.to_vec(), TrustlogStatus::NotTrustlogged)
            .await
            .unwrap();
    }
    let (mut delivered, mut cursor) = (0usize, db.load_cursor(DEFAULT_KEY).await.unwrap());
    loop {
        let batch = db.scan_after(cursor.clone(), BATCH).await.unwrap().rows;
        let Some(last) = batch.last() else { break };
        let to = last.position();
        let work = UnitOfWork {
            now: base,
            trustlogged: batch.iter().map(|o| o.op_id.clone()).collect(),
            cursor: move_cursor(cursor, to.clone()),
            ..UnitOfWork::default()
        };
        db.apply(work).await.unwrap();
        delivered += batch.len();
        cursor = Some(to);
    }
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(delivered, ROWS as usize, "{b:?}");
    assert_eq!(
        (stats.trustlogged, stats.not_trustlogged),
        (ROWS as u64, 0),
        "{b:?}"
    );
}

/// A dead-letter retry row as the retry tick leaves it.
fn dead(id: &str, count: u32, error: &str, last: Option<Micros>) -> RetryUpdate {
    RetryUpdate {
        op_id: id.to_string(),
        retry_count: count,
        retry_status: RetryStatus::DeadLetter,
        last_retry_at: last,
        next_retry_at: None,
        error_message: error.to_string(),
    }
}

/// The op_ids of a page of dead letters.
fn dead_ids(page: &[DeadLetter]) -> Vec<&str> {
    page.iter().map(|d| d.op_id.as_str()).collect()
}

async fn dead_letters_are_listed_in_op_id_order_with_their_error_and_paged_by_after(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // Byte order: 'B' (0x42) before 'a' (0x61), 'é' (0xC3 0xA9) after 'z'.
    db.insert(
        vec![
            op("dl-a", T0 + 1),
            op("dl-B", T0 + 2),
            op("dl-é", T0 + 3),
            op("dl-z", T0 + 4),
            op("waiting", T0 + 5),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    let mut pending = retry("waiting", RetryStatus::Pending, Some(T0 + 300));
    pending.error_message = "still trying".into();
    db.apply(UnitOfWork {
        now: T0 + 100,
        retries: vec![
            dead("dl-a", 5, "broker said 503", Some(T0 + 90)),
            dead("dl-é", 5, "证书无效 (certificate invalid)", Some(T0 + 91)),
            dead("dl-z", 0, "permanent: 422 doid not registered", None),
            pending,
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    // dl-B fails first at T0+100 and is dead-lettered later, keeping its created_at.
    db.apply(UnitOfWork {
        now: T0 + 100,
        retries: vec![retry("dl-B", RetryStatus::Retrying, Some(T0 + 150))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 200,
        retries: vec![dead("dl-B", 3, "timed out", Some(T0 + 199))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    // The schema allows a NULL error, as a row written by the seed may hold.
    t.execute("UPDATE trustlog_retry SET error_message = NULL WHERE op_id = 'dl-z'")
        .await;

    let letter =
        |op_id: &str, timestamp, retry_count, error: &str, created, updated, last| DeadLetter {
            op_id: op_id.to_string(),
            timestamp: Some(timestamp),
            retry_count,
            error_message: error.to_string(),
            created_at: created,
            updated_at: updated,
            last_retry_at: last,
        };
    let all = vec![
        letter(
            "dl-B",
            T0 + 2,
            3,
            "timed out",
            T0 + 100,
            T0 + 200,
            Some(T0 + 199),
        ),
        letter(
            "dl-a",
            T0 + 1,
            5,
            "broker said 503",
            T0 + 100,
            T0 + 100,
            Some(T0 + 90),
        ),
        letter("dl-z", T0 + 4, 0, "", T0 + 100, T0 + 100, None),
        letter(
            "dl-é",
            T0 + 3,
            5,
            "证书无效 (certificate invalid)",
            T0 + 100,
            T0 + 100,
            Some(T0 + 91),
        ),
    ];
    assert_eq!(
        db.dead_letters(None, 10).await.unwrap(),
        all,
        "{b:?}: every dead letter, the pending retry left out"
    );

    let first = db.dead_letters(None, 2).await.unwrap();
    assert_eq!(dead_ids(&first), ["dl-B", "dl-a"], "{b:?}");
    let second = db.dead_letters(Some("dl-a"), 2).await.unwrap();
    assert_eq!(second, all[2..], "{b:?}");
    assert!(
        db.dead_letters(Some("dl-é"), 2).await.unwrap().is_empty(),
        "{b:?}: nothing after the last"
    );
    // `after` need not be a stored op_id: strictly after it in byte order.
    assert_eq!(
        dead_ids(&db.dead_letters(Some("dl-C"), 10).await.unwrap()),
        ["dl-a", "dl-z", "dl-é"],
        "{b:?}"
    );
    assert_eq!(
        dead_ids(&db.dead_letters(Some(""), 10).await.unwrap()),
        ["dl-B", "dl-a", "dl-z", "dl-é"],
        "{b:?}"
    );
    assert!(
        db.dead_letters(None, 0).await.unwrap().is_empty(),
        "{b:?}: limit 0"
    );
}

async fn replaying_one_dead_letter_makes_it_due_now_with_a_fresh_count_and_leaves_the_others(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![op("a", T0), op("b", T0), op("p", T0)],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![
            dead("a", 5, "gave up", Some(T0 + 5)),
            dead("b", 5, "gave up", Some(T0 + 5)),
            retry("p", RetryStatus::Pending, Some(T0 + 50)),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let now = T0 + 100;
    assert!(
        db.due_retries(now, 10)
            .await
            .unwrap()
            .rows
            .iter()
            .all(|r| r.op.op_id == "p"),
        "{b:?}: a dead letter is never due"
    );

    assert_eq!(
        db.replay_dead_letters(Replay::One("a".into()), now)
            .await
            .unwrap(),
        1,
        "{b:?}"
    );
    assert!(
        has_retry_row(&t, "a", 0, "PENDING", Some(now), T0 + 10, now).await,
        "{b:?}: pending, count 0, due and updated now, created_at kept"
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM trustlog_retry WHERE op_id = 'a' \
             AND error_message = 'gave up' AND last_retry_at = {}",
            t.timestamp_sql(T0 + 5)
        ))
        .await,
        1,
        "{b:?}: the last error and attempt are kept"
    );
    let due: Vec<(String, u32)> = db
        .due_retries(now, 10)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| (r.op.op_id, r.retry_count))
        .collect();
    assert_eq!(
        due,
        [("p".to_string(), 1), ("a".to_string(), 0)],
        "{b:?}: due at now, with a fresh count"
    );
    assert!(
        db.due_retries(now - 1, 10)
            .await
            .unwrap()
            .rows
            .iter()
            .all(|r| r.op.op_id != "a"),
        "{b:?}: not due before now"
    );
    assert!(
        has_retry_row(&t, "b", 5, "DEAD_LETTER", None, T0 + 10, T0 + 10).await,
        "{b:?}: the other dead letter is untouched"
    );
    assert_eq!(
        dead_ids(&db.dead_letters(None, 10).await.unwrap()),
        ["b"],
        "{b:?}"
    );

    // Anything that is not a dead letter: nothing changes.
    for id in ["a", "p", "nope", "b ", ""] {
        assert_eq!(
            db.replay_dead_letters(Replay::One(id.into()), now + 1)
                .await
                .unwrap(),
            0,
            "{b:?}: {id:?} is not a dead letter"
        );
    }
    assert!(
        has_retry_row(&t, "a", 0, "PENDING", Some(now), T0 + 10, now).await,
        "{b:?}: a replayed row is not replayed again"
    );
    assert!(
        has_retry_row(&t, "p", 1, "PENDING", Some(T0 + 50), T0 + 10, T0 + 10).await,
        "{b:?}: a pending retry is left alone"
    );
    assert!(
        has_retry_row(&t, "b", 5, "DEAD_LETTER", None, T0 + 10, T0 + 10).await,
        "{b:?}: 'b ' is not 'b'"
    );
}

async fn replaying_all_dead_letters_requeues_every_one(b: Backend) {
    // More than one chunk of any adapter's id lists.
    const DEAD: usize = 6_000;
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let mut ops: Vec<Operation> = (0..DEAD).map(|i| op(&format!("dl-{i:05}"), T0)).collect();
    ops.push(op("later", T0));
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let mut retries: Vec<RetryUpdate> = (0..DEAD)
        .map(|i| dead(&format!("dl-{i:05}"), 5, "gave up", Some(T0 + 5)))
        .collect();
    retries.push(retry("later", RetryStatus::Pending, Some(T0 + 1_000)));
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries,
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let now = T0 + 100;
    assert_eq!(
        db.replay_dead_letters(Replay::All, now).await.unwrap(),
        DEAD as u64,
        "{b:?}"
    );
    assert_eq!(
        t.scalar(&format!(
            "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'PENDING' \
             AND retry_count = 0 AND next_retry_at = {0} AND updated_at = {0} \
             AND created_at = {1} AND error_message = 'gave up' AND last_retry_at = {2}",
            t.timestamp_sql(now),
            t.timestamp_sql(T0 + 10),
            t.timestamp_sql(T0 + 5)
        ))
        .await,
        DEAD as i64,
        "{b:?}: every one pending, count 0, due now, the rest kept"
    );
    assert!(
        has_retry_row(
            &t,
            "later",
            1,
            "PENDING",
            Some(T0 + 1_000),
            T0 + 10,
            T0 + 10
        )
        .await,
        "{b:?}: the pending retry keeps its own schedule"
    );
    let due = db.due_retries(now, 10_000).await.unwrap().rows;
    assert_eq!(due.len(), DEAD, "{b:?}");
    assert!(due.iter().all(|r| r.retry_count == 0), "{b:?}");
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        (stats.retry_pending, stats.dead_letter),
        (DEAD as u64 + 1, 0),
        "{b:?}"
    );
    assert_eq!(
        db.replay_dead_letters(Replay::All, now + 1).await.unwrap(),
        0,
        "{b:?}: nothing left to replay"
    );
}

async fn purging_dead_letters_older_than_a_cutoff_deletes_them_and_keeps_their_operations_as_db_only(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![
            op("old-1", T0 + 1),
            op("old-2", T0 + 2),
            op("old-done", T0 + 3),
            op("young", T0 + 4),
            op("pending", T0 + 5),
            op("plain", T0 + 6),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![
            dead("old-1", 5, "gave up", Some(T0 + 9)),
            dead("old-2", 5, "gave up", Some(T0 + 9)),
            // Delivered some other way after all: it stays delivered.
            dead("old-done", 5, "gave up", Some(T0 + 9)),
            retry("pending", RetryStatus::Pending, Some(T0 + 60)),
        ],
        trustlogged: vec!["old-done".into()],
        cursor: move_cursor(None, pos(T0 + 6, "plain")),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 1_000,
        retries: vec![dead("young", 5, "gave up", Some(T0 + 999))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    assert_eq!(
        db.purge_dead_letters(i64::MIN).await.unwrap(),
        0,
        "{b:?}: nothing is older than the earliest instant"
    );
    // Strictly before: young, dead-lettered at exactly the cutoff, stays.
    assert_eq!(db.purge_dead_letters(T0 + 1_000).await.unwrap(), 3, "{b:?}");
    for id in ["old-1", "old-2"] {
        assert!(
            status_is(&t, id, "DB_ONLY").await,
            "{b:?}: {id} is kept as db-only"
        );
    }
    assert!(
        status_is(&t, "old-done", "TRUSTLOGGED").await,
        "{b:?}: a delivered row stays delivered"
    );
    for id in ["young", "pending", "plain"] {
        assert!(status_is(&t, id, "NOT_TRUSTLOGGED").await, "{b:?}: {id}");
    }
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry WHERE op_id LIKE 'old-%'")
            .await,
        0,
        "{b:?}: the purged retry rows are gone"
    );
    assert!(
        has_retry_row(&t, "young", 5, "DEAD_LETTER", None, T0 + 1_000, T0 + 1_000).await,
        "{b:?}: the younger dead letter stays"
    );
    assert!(
        has_retry_row(&t, "pending", 1, "PENDING", Some(T0 + 60), T0 + 10, T0 + 10).await,
        "{b:?}: a pending retry stays, however old"
    );

    // Nothing delivers a purged row again: not the sweep behind the cursor, not a scan.
    assert_eq!(
        ids(db
            .sweep_candidates(pos(i64::MAX, ""), i64::MIN, 100)
            .await
            .unwrap()
            .rows),
        ["plain"],
        "{b:?}"
    );
    assert_eq!(
        ids(db.scan_after(None, 100).await.unwrap().rows),
        ["plain"],
        "{b:?}"
    );
    assert!(
        db.due_retries(i64::MAX, 100)
            .await
            .unwrap()
            .rows
            .iter()
            .all(|r| r.op.op_id == "pending"),
        "{b:?}"
    );
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap(),
        DbStats {
            total: 6,
            trustlogged: 1,
            not_trustlogged: 3,
            db_only: 2,
            retry_pending: 1,
            dead_letter: 1,
            cursor: Some(pos(T0 + 6, "plain")),
            // young and pending belong to the retry queue; plain is the oldest owed.
            oldest_waiting: Some(T0 + 6),
            next_retry_at: Some(T0 + 60),
        },
        "{b:?}: the counts add up"
    );

    assert_eq!(
        db.purge_dead_letters(T0 + 1_000).await.unwrap(),
        0,
        "{b:?}: purging again finds nothing"
    );
    assert_eq!(
        db.purge_dead_letters(i64::MAX).await.unwrap(),
        1,
        "{b:?}: a cutoff beyond every instant takes the rest"
    );
    assert!(status_is(&t, "young", "DB_ONLY").await, "{b:?}");
    assert!(db.dead_letters(None, 10).await.unwrap().is_empty(), "{b:?}");
}

async fn ping_answers(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.ping().await.unwrap_or_else(|e| panic!("{b:?}: {e}"));
    db.close().await;
    match db.ping().await {
        Err(DbError::Unavailable(_)) => {}
        other => panic!("{b:?}: a closed pool must not look ready, got {other:?}"),
    }
}

async fn settling_after_a_load_changes_no_row_and_leaves_the_tables_writable(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let ops: Vec<Operation> = (0..2_000)
        .map(|i| op(&format!("s-{i:04}"), T0 + i))
        .collect();
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let before = db.stats("default").await.unwrap();
    db.settle().await.unwrap_or_else(|e| panic!("{b:?}: {e}"));
    assert_eq!(db.stats("default").await.unwrap(), before, "{b:?}");
    let rows = db.scan_after(None, 5_000).await.unwrap().rows;
    assert_eq!(rows.len(), 2_000, "{b:?}: every row is still there");
    assert_eq!(rows[0].op_id, "s-0000", "{b:?}");
    // MariaDB's flush holds a read lock until it is released on the same connection.
    db.apply(UnitOfWork {
        now: T0 + 5_000,
        trustlogged: vec!["s-0000".into()],
        ..UnitOfWork::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{b:?}: the tables take writes again: {e}"));
    assert!(status_is(&t, "s-0000", "TRUSTLOGGED").await, "{b:?}");
}

async fn a_replayed_dead_letter_is_delivered_by_the_next_retry_tick(b: Backend) {
    const MIN: i64 = 60_000_000;
    let t = TestDb::create(b).await;
    // A receiver that answers but fails every envelope: transient failures.
    let receiver = TestBroker::create(Broker::Webhook).await;
    let mut failing = tenant(&t, &receiver.busy_url(), Config::default()).await;
    failing.record(vec![op("r", T0)], None).await.unwrap();
    assert_eq!(failing.scan_tick(T0).await.unwrap().retry_scheduled, 1);
    let mut due = T0 + MIN;
    for wait in [2, 4, 8, 16] {
        assert_eq!(
            failing.retry_tick(due).await.unwrap().retry_scheduled,
            1,
            "{b:?}"
        );
        due += wait * MIN;
    }
    assert_eq!(
        failing.retry_tick(due).await.unwrap().dead_lettered,
        1,
        "{b:?}"
    );
    let db = connect(&t).await;
    let parked = db.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead_ids(&parked), ["r"], "{b:?}");
    assert_eq!(
        (
            parked[0].retry_count,
            parked[0].timestamp,
            parked[0].updated_at
        ),
        (5, Some(T0), due),
        "{b:?}"
    );
    assert!(!parked[0].error_message.is_empty(), "{b:?}: {parked:?}");

    // The broker is fixed; an operator replays the dead letter.
    let ledger = tempfile::tempdir().unwrap();
    let path = ledger.path().join("l");
    let mut working = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    let now = due + MIN;
    assert_eq!(
        working.retry_tick(now).await.unwrap().fetched,
        0,
        "{b:?}: a dead letter waits for the operator"
    );
    assert_eq!(
        db.replay_dead_letters(Replay::One("r".into()), now)
            .await
            .unwrap(),
        1,
        "{b:?}"
    );
    assert_eq!(working.retry_tick(now).await.unwrap().published, 1, "{b:?}");
    assert!(status_is(&t, "r", "TRUSTLOGGED").await, "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry").await,
        0,
        "{b:?}: the retry row is gone"
    );
    assert_eq!(ledger_op_ids(&path), ["r"], "{b:?}");
}

/// A value each database lets plain SQL store in `operation.timestamp` that is no
/// timestamp the host can read: SQLite keeps TEXT in its INTEGER column, PostgreSQL has
/// `infinity`, MariaDB (outside strict zero-date mode) a zero date.
fn unreadable_timestamp(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "'yesterday'",
        Backend::Postgres => "'infinity'",
        Backend::MySql => "'0000-00-00 00:00:00'",
    }
}

async fn a_row_the_host_cannot_read_is_dead_lettered_alone_naming_its_column_and_replayed_once_fixed(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    insert_by_hand(&t, "before", T0).await;
    t.execute(&format!(
        "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
         VALUES ('poison', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', {})",
        unreadable_timestamp(b)
    ))
    .await;
    insert_by_hand(&t, "after", T0 + 2).await;

    // One pass: the rows around it go out, it is dead-lettered on its own.
    let r = tn.scan_tick(T0 + 10).await.unwrap();
    assert_eq!(
        (r.fetched, r.published, r.dead_lettered, r.unreadable),
        (3, 2, 1, 1),
        "{b:?}: {r:?}"
    );
    assert_eq!(ledger_op_ids(&path), ["before", "after"], "{b:?}");
    let db = connect(&t).await;
    let parked = db.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead_ids(&parked), ["poison"], "{b:?}");
    let why = &parked[0].error_message;
    assert!(
        why.contains("poison") && why.contains("unreadable column timestamp"),
        "{b:?}: {why}"
    );
    // Nothing else is stuck behind it.
    assert_eq!(tn.scan_tick(T0 + 20).await.unwrap().fetched, 0, "{b:?}");

    // Fixed by hand and replayed, it is delivered like any other.
    t.execute(&format!(
        "UPDATE operation SET timestamp = {} WHERE op_id = 'poison'",
        t.timestamp_sql(T0 + 1)
    ))
    .await;
    assert_eq!(
        db.replay_dead_letters(Replay::One("poison".into()), T0 + 30)
            .await
            .unwrap(),
        1
    );
    assert_eq!(tn.retry_tick(T0 + 30).await.unwrap().published, 1, "{b:?}");
    assert_eq!(ledger_op_ids(&path), ["before", "after", "poison"], "{b:?}");
}

async fn a_cursor_the_seed_wrote_as_a_bare_timestamp_is_taken_as_a_position_and_rewritten(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    // What the seed's worker leaves: a row it delivered, and its cursor at that row's
    // instant, an RFC 3339 timestamp with nanoseconds and no op_id.
    insert_by_hand(&t, "seen-by-seed", T0 - 1).await;
    t.execute("UPDATE operation SET trustlog_status = 'TRUSTLOGGED'")
        .await;
    insert_by_hand(&t, "same-instant", T0).await;
    insert_by_hand(&t, "later", T0 + 1).await;
    let stamp = format!("{}000", rfc3339(T0).trim_end_matches('Z'));
    t.execute(&format!(
        "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
         VALUES ('{DEFAULT_KEY}', '{stamp}Z', {})",
        t.timestamp_sql(T0)
    ))
    .await;
    let r = tn.scan_tick(T0 + 10).await.unwrap();
    assert_eq!(
        (r.fetched, r.published, r.cursor_conflict),
        (2, 2, false),
        "{b:?}: {r:?}"
    );
    assert_eq!(ledger_op_ids(&path), ["same-instant", "later"], "{b:?}");
    let db = connect(&t).await;
    assert_eq!(
        db.load_cursor(DEFAULT_KEY).await.unwrap(),
        Some(pos(T0 + 1, "later")),
        "{b:?}: moved on from it, in trustlog's own form"
    );
}

async fn rows_of_every_poison_kind_a_database_can_hold_are_dead_lettered_alone_naming_the_column(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    if let Some(path) = t.url.strip_prefix("sqlite://") {
        std::fs::File::create(path).unwrap();
    }
    // The operation table as another application declared it, before trustlog came:
    // wide text columns that may be NULL. Text that is not UTF-8 only SQLite can hold:
    // PostgreSQL checks the encoding of all text, MySQL in strict mode too, and a binary
    // column is not one trustlog serves (`migrate` asks for a change).
    let (key, text, time) = match b {
        Backend::Sqlite => ("TEXT", "TEXT", "INTEGER"),
        Backend::Postgres => ("VARCHAR(64)", "TEXT", "TIMESTAMPTZ"),
        Backend::MySql => (
            "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "TEXT",
            "DATETIME(6)",
        ),
    };
    t.execute(&format!(
        "CREATE TABLE operation (op_id {key} NOT NULL PRIMARY KEY, op_actor {text} NULL, \
         doid {text} NULL, producer_id {text} NULL, request_body_hash {text} NULL, \
         response_body_hash {text} NULL, op_source {text} NULL, op_type {text} NULL, \
         do_prefix {text} NULL, do_repository {text} NULL, client_ip {text} NULL, \
         server_ip {text} NULL, \
         trustlog_status VARCHAR(20) NOT NULL DEFAULT 'NOT_TRUSTLOGGED', timestamp {time} NOT NULL)"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let mut tn = tenant(
        &t,
        &format!("ledger://{}", path.display()),
        Config::default(),
    )
    .await;
    let row = |id: &str, actor: &str, doid: &str, prefix: &str, at: &str| {
        format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('{id}', {actor}, {doid}, 'p', 'IRP', 'Create', {prefix}, 'r', {at})"
        )
    };
    let at = |i: i64| t.timestamp_sql(T0 + i);
    let too_long = format!("'{}'", "x".repeat(300));
    let not_utf8 = (b == Backend::Sqlite).then_some("CAST(X'C328' AS TEXT)");
    let mut rows = vec![
        (row("before", "'app'", "'d'", "'10.1'", &at(0)), None),
        (
            row(
                "bad-time",
                "'app'",
                "'d'",
                "'10.1'",
                unreadable_timestamp(b),
            ),
            Some("unreadable column timestamp"),
        ),
        (
            row("too-long", &too_long, "'d'", "'10.1'", &at(2)),
            Some("op_actor"),
        ),
        (
            row("null-doid", "'app'", "NULL", "'10.1'", &at(3)),
            Some("unreadable column doid"),
        ),
    ];
    if let Some(bytes) = not_utf8 {
        rows.push((
            row("not-utf8", "'app'", "'d'", bytes, &at(4)),
            Some("unreadable column do_prefix"),
        ));
    }
    rows.push((row("after", "'app'", "'d'", "'10.1'", &at(5)), None));
    for (sql, _) in &rows {
        t.execute(sql).await;
    }
    let poisoned = rows.iter().filter(|(_, why)| why.is_some()).count() as u32;

    let r = tn.scan_tick(T0 + 10).await.unwrap();
    assert_eq!(
        (r.fetched, r.published, r.dead_lettered),
        (poisoned + 2, 2, poisoned),
        "{b:?}: {r:?}"
    );
    assert_eq!(ledger_op_ids(&path), ["before", "after"], "{b:?}");
    let parked = connect(&t).await.dead_letters(None, 10).await.unwrap();
    for (sql, why) in &rows {
        let Some(why) = why else { continue };
        let id = sql.split('\'').nth(1).unwrap();
        let parked = parked
            .iter()
            .find(|d| d.op_id == id)
            .unwrap_or_else(|| panic!("{b:?}: {id} is not a dead letter: {parked:?}"));
        assert!(
            parked.error_message.contains(why),
            "{b:?}: {id}: {}",
            parked.error_message
        );
    }
    assert_eq!(
        tn.scan_tick(T0 + 20).await.unwrap().fetched,
        0,
        "{b:?}: nothing is stuck"
    );
}

/// MySQL and MariaDB: an operation table declared with any of the time types Go schemas
/// use is read, each at the precision it keeps, as UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_datetime_of_every_precision_and_timestamp_columns_are_read() {
    for (ty, want) in [
        ("DATETIME", "2026-11-24T02:03:04.000000Z"),
        ("DATETIME(3)", "2026-11-24T02:03:04.123000Z"),
        ("DATETIME(6)", "2026-11-24T02:03:04.123456Z"),
        ("TIMESTAMP", "2026-11-24T02:03:04.000000Z"),
        ("TIMESTAMP(6)", "2026-11-24T02:03:04.123456Z"),
    ] {
        let t = TestDb::create(Backend::MySql).await;
        t.execute(&format!(
            "CREATE TABLE operation (op_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin \
             NOT NULL PRIMARY KEY, op_actor VARCHAR(128) NOT NULL, doid VARCHAR(512) NOT NULL, \
             producer_id VARCHAR(128) NOT NULL, request_body_hash VARCHAR(128) NULL, \
             response_body_hash VARCHAR(128) NULL, op_source VARCHAR(64) NOT NULL, \
             op_type VARCHAR(64) NOT NULL, do_prefix VARCHAR(128) NOT NULL, \
             do_repository VARCHAR(128) NOT NULL, client_ip VARCHAR(45) NULL, \
             server_ip VARCHAR(45) NULL, \
             trustlog_status VARCHAR(32) NOT NULL DEFAULT 'NOT_TRUSTLOGGED', \
             timestamp {ty} NOT NULL)"
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut tn = tenant(
            &t,
            &format!("ledger://{}", path.display()),
            Config::default(),
        )
        .await;
        // As an application in UTC writes it; the column keeps what its precision can.
        t.execute(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('o-1', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', '2026-11-24 02:03:04.123456')",
        )
        .await;
        // 2026-11-24T06:00:00Z: after the row.
        let r = tn.scan_tick(1_795_500_000_000_000).await.unwrap();
        assert_eq!((r.fetched, r.published), (1, 1), "{ty}: {r:?}");
        let payloads = ledger_payloads(&path);
        assert_eq!(payloads[0]["timestamp"], want, "{ty}");
    }
}

/// PostgreSQL: a `timestamp` column without time zone holds UTC, or the zone the URL
/// names for the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_timestamp_without_zone_is_read_as_utc_or_in_the_zone_the_url_names() {
    for (zone, want) in [
        (None, "2026-11-24T10:23:54.123456Z"),
        (Some("Asia/Shanghai"), "2026-11-24T02:23:54.123456Z"),
        (Some("America/New_York"), "2026-11-24T15:23:54.123456Z"),
    ] {
        let mut t = TestDb::create(Backend::Postgres).await;
        if let Some(zone) = zone {
            t.url = format!("{}%20-c%20TimeZone%3D{zone}", t.url);
        }
        t.execute(
            "CREATE TABLE operation (op_id VARCHAR(64) COLLATE \"C\" NOT NULL PRIMARY KEY, \
             op_actor VARCHAR(128) NOT NULL, doid VARCHAR(512) NOT NULL, \
             producer_id VARCHAR(128) NOT NULL, request_body_hash VARCHAR(128) NULL, \
             response_body_hash VARCHAR(128) NULL, op_source VARCHAR(64) NOT NULL, \
             op_type VARCHAR(64) NOT NULL, do_prefix VARCHAR(128) NOT NULL, \
             do_repository VARCHAR(128) NOT NULL, client_ip VARCHAR(45) NULL, \
             server_ip VARCHAR(45) NULL, \
             trustlog_status VARCHAR(20) NOT NULL DEFAULT 'NOT_TRUSTLOGGED', \
             timestamp TIMESTAMP NOT NULL)",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let mut tn = tenant(
            &t,
            &format!("ledger://{}", path.display()),
            Config::default(),
        )
        .await;
        // The wall-clock time the application wrote, in its zone.
        t.execute(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
             do_prefix, do_repository, timestamp) \
             VALUES ('o-1', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', '2026-11-24 10:23:54.123456')",
        )
        .await;
        // 2026-11-25T00:00:00Z: after the row in every zone here.
        let r = tn.scan_tick(1_795_564_800_000_000).await.unwrap();
        assert_eq!((r.fetched, r.published), (1, 1), "{zone:?}: {r:?}");
        assert_eq!(ledger_payloads(&path)[0]["timestamp"], want, "{zone:?}");
        // Recorded through trustlog and read back: the same instant.
        let db = connect(&t).await;
        db.insert(
            vec![op("o-2", 1_795_561_200_000_000)],
            TrustlogStatus::NotTrustlogged,
        )
        .await
        .unwrap();
        let r = tn.scan_tick(1_795_564_800_000_000).await.unwrap();
        assert_eq!(r.published, 1, "{zone:?}: {r:?}");
        assert_eq!(
            ledger_payloads(&path)[1]["timestamp"],
            "2026-11-24T23:00:00.000000Z",
            "{zone:?}"
        );
    }
}

// The operator's lookups: one operation, a search by filter in keyset pages, its count,
// and the dead letters a list of op_ids or a filter selects, to replay or to purge.

/// `op_at` with an actor, doid and producer of its own.
fn op_of(id: &str, at: Micros, actor: &str, doid: &str, producer: &str) -> Operation {
    Operation {
        op_actor: actor.to_string(),
        doid: doid.to_string(),
        producer_id: producer.to_string(),
        ..op_at(id, at)
    }
}

/// The op_ids of found rows, in their order.
fn found_ids(found: &[FoundOperation]) -> Vec<&str> {
    found.iter().map(|f| f.op_id.as_str()).collect()
}

/// Every row `filter` matches, `limit` rows a page, each page strictly after the last
/// row of the page before.
async fn every_page(db: &Database, filter: &OperationFilter, limit: u32) -> Vec<FoundOperation> {
    let mut found: Vec<FoundOperation> = Vec::new();
    loop {
        let after = found.last().map(FoundOperation::position);
        let page = db
            .search_operations(filter, after.as_ref(), limit)
            .await
            .unwrap();
        assert!(
            page.len() <= limit as usize,
            "{} rows at limit {limit}",
            page.len()
        );
        let last = page.len() < limit as usize;
        found.extend(page);
        assert!(found.len() <= 10_000, "the pages do not end");
        if last {
            return found;
        }
    }
}

/// The op_ids `filter` matches, in one page; its count must agree.
async fn matching(db: &Database, filter: &OperationFilter) -> Vec<String> {
    let found = db.search_operations(filter, None, 1_000).await.unwrap();
    assert_eq!(
        db.count_operations(filter).await.unwrap(),
        found.len() as u64,
        "the count of {filter:?}"
    );
    found.into_iter().map(|f| f.op_id).collect()
}

/// A filter on one text field or the other: `field` is the name the filter gives it.
fn on(field: &str, value: &str) -> OperationFilter {
    let value = Some(value.to_string());
    match field {
        "op_id" => OperationFilter {
            op_id: value,
            ..OperationFilter::default()
        },
        "actor" => OperationFilter {
            actor: value,
            ..OperationFilter::default()
        },
        "doid" => OperationFilter {
            doid: value,
            ..OperationFilter::default()
        },
        "producer" => OperationFilter {
            producer: value,
            ..OperationFilter::default()
        },
        other => panic!("no text field {other}"),
    }
}

/// A filter on the delivery state alone.
fn in_state(state: OperationState) -> OperationFilter {
    OperationFilter {
        status: Some(state),
        ..OperationFilter::default()
    }
}

async fn find_operation_shows_the_row_with_its_status_and_retry_row_or_nothing(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // Odd microseconds and an instant before 1970: the timestamp comes back exact.
    let plain = op_at("plain", T0 + 123_457);
    let old = op_at("old", -1_000_001);
    db.insert(
        vec![
            plain.clone(),
            old.clone(),
            op("retried", T0),
            op("parked", T0),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.insert(vec![op("kept", T0)], TrustlogStatus::DbOnly)
        .await
        .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![
            retry("retried", RetryStatus::Retrying, Some(T0 + 60)),
            dead("parked", 5, "证书无效 (certificate invalid)", Some(T0 + 9)),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let found = |op: Operation, status: &str, retry: Option<RetryRow>| FoundOperation {
        op_id: op.op_id.clone(),
        timestamp: Some(op.timestamp),
        trustlog_status: status.to_string(),
        operation: Ok(op),
        retry,
    };
    assert_eq!(
        db.find_operation("plain").await.unwrap(),
        Some(found(plain, "NOT_TRUSTLOGGED", None)),
        "{b:?}"
    );
    assert_eq!(
        db.find_operation("old").await.unwrap(),
        Some(found(old, "NOT_TRUSTLOGGED", None)),
        "{b:?}"
    );
    assert_eq!(
        db.find_operation("retried").await.unwrap(),
        Some(found(
            op("retried", T0),
            "NOT_TRUSTLOGGED",
            Some(RetryRow {
                retry_count: 1,
                retry_status: "RETRYING".into(),
                last_retry_at: Some(1),
                next_retry_at: Some(T0 + 60),
                error_message: "broker down".into(),
                created_at: T0 + 10,
                updated_at: T0 + 10,
            })
        )),
        "{b:?}"
    );
    let parked = RetryRow {
        retry_count: 5,
        retry_status: "DEAD_LETTER".into(),
        last_retry_at: Some(T0 + 9),
        next_retry_at: None,
        error_message: "证书无效 (certificate invalid)".into(),
        created_at: T0 + 10,
        updated_at: T0 + 10,
    };
    assert_eq!(
        db.find_operation("parked").await.unwrap(),
        Some(found(
            op("parked", T0),
            "NOT_TRUSTLOGGED",
            Some(parked.clone())
        )),
        "{b:?}"
    );
    assert_eq!(
        db.find_operation("kept").await.unwrap(),
        Some(found(op("kept", T0), "DB_ONLY", None)),
        "{b:?}"
    );
    // The schema allows a NULL error, as a row written by the seed may hold.
    t.execute("UPDATE trustlog_retry SET error_message = NULL WHERE op_id = 'parked'")
        .await;
    assert_eq!(
        db.find_operation("parked").await.unwrap().unwrap().retry,
        Some(RetryRow {
            error_message: String::new(),
            ..parked
        }),
        "{b:?}"
    );
    // Byte for byte: no padding, no case folding, no pattern.
    for absent in [
        "nope",
        "plain ",
        "PLAIN",
        "",
        "pla%",
        "plain' OR '1'='1",
        "plain\0",
    ] {
        assert_eq!(
            db.find_operation(absent).await.unwrap(),
            None,
            "{b:?}: {absent:?}"
        );
    }
}

async fn an_unreadable_row_is_found_and_searched_with_its_fault_and_paged_past_exactly_once(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    insert_by_hand(&t, "before", T0).await;
    for id in ["poison-b", "poison-a"] {
        t.execute(&format!(
            "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) \
             VALUES ('{id}', 'app', 'd', 'p', 'IRP', 'Create', '10.1', 'r', {})",
            unreadable_timestamp(b)
        ))
        .await;
    }
    insert_by_hand(&t, "after", T0 + 2).await;
    // As the scan leaves one: dead-lettered, naming the column.
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![dead("poison-a", 0, "unreadable column timestamp", None)],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let found = db
        .find_operation("poison-a")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{b:?}: an unreadable row is found all the same"));
    assert_eq!(
        (found.timestamp, found.trustlog_status.as_str()),
        (None, "NOT_TRUSTLOGGED"),
        "{b:?}"
    );
    match &found.operation {
        Err(fault) => assert_eq!(fault.column, "timestamp", "{b:?}: {fault}"),
        Ok(op) => panic!("{b:?}: read as {op:?}"),
    }
    assert_eq!(
        found.retry.as_ref().map(|r| r.retry_status.as_str()),
        Some("DEAD_LETTER"),
        "{b:?}"
    );

    // A timestamp that cannot be read sorts last, by op_id among its likes, and pages
    // like any other row: in one page or a row at a time, each row once.
    let everything = OperationFilter::default();
    let all = db.search_operations(&everything, None, 100).await.unwrap();
    assert_eq!(
        found_ids(&all),
        ["before", "after", "poison-a", "poison-b"],
        "{b:?}"
    );
    assert!(all[..2].iter().all(|f| f.operation.is_ok()), "{b:?}");
    assert!(
        all[2..]
            .iter()
            .all(|f| f.timestamp.is_none() && f.operation.is_err()),
        "{b:?}: {all:?}"
    );
    assert_eq!(all[2], found, "{b:?}: search and find agree");
    assert_eq!(all[3].position(), pos(i64::MAX, "poison-b"), "{b:?}");
    for limit in [1, 2, 3] {
        assert_eq!(
            every_page(&db, &everything, limit).await,
            all,
            "{b:?}: {limit}"
        );
    }
    assert_eq!(db.count_operations(&everything).await.unwrap(), 4, "{b:?}");
    // And it filters as the i64::MAX it sorts at: after any `from`, before no `to`.
    assert_eq!(
        matching(
            &db,
            &OperationFilter {
                from: Some(T0 + 1),
                ..OperationFilter::default()
            }
        )
        .await,
        ["after", "poison-a", "poison-b"],
        "{b:?}"
    );
    assert_eq!(
        matching(
            &db,
            &OperationFilter {
                to: Some(i64::MAX),
                ..OperationFilter::default()
            }
        )
        .await,
        ["before", "after"],
        "{b:?}"
    );
    assert_eq!(
        matching(&db, &in_state(OperationState::DeadLetter)).await,
        ["poison-a"],
        "{b:?}"
    );
}

async fn search_matches_each_filter_field_exactly_and_in_combination_and_the_count_agrees(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    db.insert(
        vec![
            op_of("a1", T0 + 1, "alice", "d/1", "p1"),
            op_of("b1", T0 + 4, "bob", "d/1", "p1"),
            op_of("b2", T0 + 5, "bob", "d/2", "p1"),
            op_of("b3", T0 + 6, "bob", "d/3", "p2"),
            // Not alice: another case, a trailing space, another letter.
            op_of("c1", T0 + 7, "Alice", "d/1", "p1"),
            op_of("c2", T0 + 8, "alice ", "d/1", "p1"),
            op_of("c3", T0 + 9, "alicé", "d/1 ", "P1"),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.insert(
        vec![op_of("a2", T0 + 2, "alice", "d/2", "p2")],
        TrustlogStatus::Trustlogged,
    )
    .await
    .unwrap();
    db.insert(
        vec![op_of("a3", T0 + 3, "alice", "d/1", "p2")],
        TrustlogStatus::DbOnly,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![
            retry("b1", RetryStatus::Pending, Some(T0 + 60)),
            retry("b2", RetryStatus::Retrying, Some(T0 + 120)),
            dead("b3", 5, "gave up", Some(T0 + 9)),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    let with = |f: &dyn Fn(&mut OperationFilter)| {
        let mut filter = OperationFilter::default();
        f(&mut filter);
        filter
    };
    let cases: Vec<(OperationFilter, Vec<&str>)> = vec![
        (
            OperationFilter::default(),
            vec!["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"],
        ),
        (on("op_id", "b2"), vec!["b2"]),
        (on("op_id", "B2"), vec![]),
        (on("op_id", "b2 "), vec![]),
        (on("op_id", "b"), vec![]),
        (on("actor", "alice"), vec!["a1", "a2", "a3"]),
        (on("actor", "Alice"), vec!["c1"]),
        (on("actor", "alice "), vec!["c2"]),
        (on("actor", "alicé"), vec!["c3"]),
        (on("actor", "ALICE"), vec![]),
        (on("doid", "d/1"), vec!["a1", "a3", "b1", "c1", "c2"]),
        (on("doid", "d/1 "), vec!["c3"]),
        (on("producer", "p2"), vec!["a2", "a3", "b3"]),
        (on("producer", "P1"), vec!["c3"]),
        (
            in_state(OperationState::NotTrustlogged),
            vec!["a1", "b1", "b2", "b3", "c1", "c2", "c3"],
        ),
        (in_state(OperationState::Trustlogged), vec!["a2"]),
        (in_state(OperationState::DbOnly), vec!["a3"]),
        (in_state(OperationState::RetryPending), vec!["b1"]),
        (in_state(OperationState::Retrying), vec!["b2"]),
        (in_state(OperationState::DeadLetter), vec!["b3"]),
        // `from` inclusive, `to` exclusive.
        (
            with(&|f| f.from = Some(T0 + 4)),
            vec!["b1", "b2", "b3", "c1", "c2", "c3"],
        ),
        (with(&|f| f.to = Some(T0 + 4)), vec!["a1", "a2", "a3"]),
        (
            with(&|f| {
                f.from = Some(T0 + 2);
                f.to = Some(T0 + 5);
            }),
            vec!["a2", "a3", "b1"],
        ),
        (
            with(&|f| {
                f.from = Some(T0 + 5);
                f.to = Some(T0 + 5);
            }),
            vec![],
        ),
        (
            with(&|f| f.from = Some(i64::MIN)),
            vec!["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"],
        ),
        // Every field given narrows the rest.
        (
            with(&|f| {
                f.actor = Some("bob".into());
                f.producer = Some("p1".into());
            }),
            vec!["b1", "b2"],
        ),
        (
            with(&|f| {
                f.actor = Some("bob".into());
                f.status = Some(OperationState::DeadLetter);
            }),
            vec!["b3"],
        ),
        (
            with(&|f| {
                f.doid = Some("d/1".into());
                f.status = Some(OperationState::NotTrustlogged);
                f.from = Some(T0 + 4);
            }),
            vec!["b1", "c1", "c2"],
        ),
        (
            with(&|f| {
                f.actor = Some("alice".into());
                f.status = Some(OperationState::RetryPending);
            }),
            vec![],
        ),
        (
            with(&|f| {
                f.op_id = Some("a2".into());
                f.actor = Some("alice".into());
                f.doid = Some("d/2".into());
                f.producer = Some("p2".into());
                f.status = Some(OperationState::Trustlogged);
                f.from = Some(T0 + 2);
                f.to = Some(T0 + 3);
            }),
            vec!["a2"],
        ),
        (
            with(&|f| {
                f.op_id = Some("a2".into());
                f.producer = Some("p1".into());
            }),
            vec![],
        ),
    ];
    for (filter, want) in &cases {
        assert_eq!(&matching(&db, filter).await, want, "{b:?}: {filter:?}");
    }
    // The retry row comes with the operation.
    let b1 = db
        .search_operations(&in_state(OperationState::RetryPending), None, 10)
        .await
        .unwrap();
    assert_eq!(
        b1[0]
            .retry
            .as_ref()
            .map(|r| (r.retry_count, r.next_retry_at)),
        Some((1, Some(T0 + 60))),
        "{b:?}"
    );
    assert!(
        db.search_operations(&OperationFilter::default(), None, 0)
            .await
            .unwrap()
            .is_empty(),
        "{b:?}: limit 0"
    );
}

async fn search_pages_in_keyset_order_across_rows_sharing_a_timestamp_without_repeating_or_skipping(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    // Byte order among the rows sharing T0: 'B' (0x42) before 'a' (0x61), 'é' after 'z'.
    let mut shared: Vec<String> = (0..25).map(|i| format!("s-{i:02}")).collect();
    shared.extend(["S-x", "s-B", "s-a", "s-é", "s-z"].map(String::from));
    let mut ops: Vec<Operation> = shared
        .iter()
        .enumerate()
        .map(|(i, id)| op_of(id, T0, "app", "d", if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    ops.extend([
        op_of("z-first", T0 - 1, "app", "d", "odd"),
        op_of("a-last", T0 + 1, "app", "d", "even"),
    ]);
    db.insert(ops.clone(), TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    // Delivered and retried rows are paged alike.
    db.apply(UnitOfWork {
        now: T0 + 10,
        trustlogged: vec!["s-03".into(), "s-é".into()],
        retries: vec![dead("s-07", 5, "gave up", None)],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    ops.sort_by_key(Operation::position);
    let want: Vec<&str> = ops.iter().map(|o| o.op_id.as_str()).collect();
    assert_eq!(want.first(), Some(&"z-first"));
    assert_eq!(want.last(), Some(&"a-last"));

    let everything = OperationFilter::default();
    for limit in [1, 2, 3, 7, 29, 30, 100] {
        let found = every_page(&db, &everything, limit).await;
        assert_eq!(found_ids(&found), want, "{b:?}: {limit} a page");
        assert!(
            found.iter().all(|f| f.timestamp.is_some()
                && f.position() == f.operation.as_ref().unwrap().position()),
            "{b:?}"
        );
    }
    assert_eq!(
        db.count_operations(&everything).await.unwrap(),
        want.len() as u64,
        "{b:?}: the count is what the pages hold"
    );
    let odd = on("producer", "odd");
    let want_odd: Vec<&str> = ops
        .iter()
        .filter(|o| o.producer_id == "odd")
        .map(|o| o.op_id.as_str())
        .collect();
    assert_eq!(
        found_ids(&every_page(&db, &odd, 4).await),
        want_odd,
        "{b:?}"
    );
    assert_eq!(
        db.count_operations(&odd).await.unwrap(),
        want_odd.len() as u64,
        "{b:?}"
    );
    // `after` need not be a stored row: strictly after it in (timestamp, op_id bytes).
    for (after, first) in [
        (pos(T0, "s-05x"), "s-06"),
        (pos(T0, "S"), "S-x"),
        (pos(T0, ""), "S-x"),
        (pos(T0 - 1, "z-first"), "S-x"),
        (pos(T0, "s-é"), "a-last"),
        (pos(i64::MIN, ""), "z-first"),
    ] {
        let page = db
            .search_operations(&everything, Some(&after), 1)
            .await
            .unwrap();
        assert_eq!(found_ids(&page), [first], "{b:?}: after {after:?}");
    }
    assert!(
        db.search_operations(&everything, Some(&pos(T0 + 1, "a-last")), 10)
            .await
            .unwrap()
            .is_empty(),
        "{b:?}: nothing after the last"
    );
    assert!(
        db.search_operations(&everything, Some(&pos(i64::MAX, "")), 10)
            .await
            .unwrap()
            .is_empty(),
        "{b:?}"
    );
}

/// Dead letters `dl-a` (alice), `dl-b` (alice), `dl-c` (bob), a pending retry `p`
/// (alice), `waiting` (alice, no retry row) and `done` (alice, delivered after being
/// dead-lettered), all dead-lettered or failed at T0 + 10.
async fn dead_letters_of_two_actors(db: &Database) {
    db.insert(
        vec![
            op_of("dl-a", T0 + 1, "alice", "d", "p"),
            op_of("dl-b", T0 + 2, "alice", "d", "p"),
            op_of("dl-c", T0 + 3, "bob", "d", "p"),
            op_of("p", T0 + 4, "alice", "d", "p"),
            op_of("waiting", T0 + 5, "alice", "d", "p"),
            op_of("done", T0 + 6, "alice", "d", "p"),
        ],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries: vec![
            dead("dl-a", 5, "gave up", Some(T0 + 9)),
            dead("dl-b", 5, "gave up", Some(T0 + 9)),
            dead("dl-c", 5, "gave up", Some(T0 + 9)),
            retry("p", RetryStatus::Pending, Some(T0 + 60)),
            dead("done", 5, "gave up", Some(T0 + 9)),
        ],
        trustlogged: vec!["done".into()],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
}

async fn replaying_by_ids_or_by_filter_changes_only_dead_letters(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    dead_letters_of_two_actors(&db).await;
    let now = T0 + 100;
    let t = &t;
    let dead_row =
        |id: &'static str| has_retry_row(t, id, 5, "DEAD_LETTER", None, T0 + 10, T0 + 10);
    let replayed_at =
        |id: &'static str, at: Micros| has_retry_row(t, id, 0, "PENDING", Some(at), T0 + 10, at);
    let pending_kept = || has_retry_row(t, "p", 1, "PENDING", Some(T0 + 60), T0 + 10, T0 + 10);

    // Among the ids, only the dead letter changes; the rest are left as they are.
    assert_eq!(
        db.replay_dead_letters(
            Replay::Ids(
                ["dl-a", "p", "waiting", "nope", "dl-a", "dl-c ", ""]
                    .map(String::from)
                    .to_vec()
            ),
            now
        )
        .await
        .unwrap(),
        1,
        "{b:?}"
    );
    assert!(replayed_at("dl-a", now).await, "{b:?}: due now, count 0");
    assert!(
        pending_kept().await,
        "{b:?}: a pending retry keeps its schedule"
    );
    assert!(dead_row("dl-b").await && dead_row("dl-c").await, "{b:?}");
    assert!(
        !has_retry_row(t, "waiting", 0, "PENDING", Some(now), T0 + 10, now).await,
        "{b:?}: a row without a retry row gets none"
    );
    assert_eq!(
        db.replay_dead_letters(Replay::Ids(Vec::new()), now)
            .await
            .unwrap(),
        0,
        "{b:?}"
    );

    // By filter: alice's dead letters, whatever the operation's status (`done` was
    // delivered after all); not bob's, not the pending retry, not dl-a again.
    let alice = on("actor", "alice");
    assert_eq!(
        db.replay_dead_letters(Replay::Matching(alice.clone()), now + 1)
            .await
            .unwrap(),
        2,
        "{b:?}"
    );
    assert!(replayed_at("dl-b", now + 1).await, "{b:?}");
    assert!(replayed_at("done", now + 1).await, "{b:?}");
    assert!(replayed_at("dl-a", now).await, "{b:?}: replayed once");
    assert!(dead_row("dl-c").await, "{b:?}: bob's is left");
    assert!(pending_kept().await, "{b:?}");
    // A filter taking only rows that are no dead letters replays nothing.
    assert_eq!(
        db.replay_dead_letters(
            Replay::Matching(OperationFilter {
                status: Some(OperationState::RetryPending),
                ..OperationFilter::default()
            }),
            now + 2
        )
        .await
        .unwrap(),
        0,
        "{b:?}"
    );
    assert!(pending_kept().await, "{b:?}");
    // The filter matching everything takes the last one.
    assert_eq!(
        db.replay_dead_letters(Replay::Matching(OperationFilter::default()), now + 3)
            .await
            .unwrap(),
        1,
        "{b:?}"
    );
    assert!(replayed_at("dl-c", now + 3).await, "{b:?}");
    assert!(db.dead_letters(None, 10).await.unwrap().is_empty(), "{b:?}");
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap().retry_pending,
        5,
        "{b:?}"
    );
}

async fn purging_by_ids_or_by_filter_takes_only_dead_letters_and_keeps_their_operations_as_db_only(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    dead_letters_of_two_actors(&db).await;
    let now = T0 + 1_000;
    // Dead-lettered at the very instant of the purges below: not before it, so it stays.
    db.insert(
        vec![op_of("young", T0 + 7, "alice", "d", "p")],
        TrustlogStatus::NotTrustlogged,
    )
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now,
        retries: vec![dead("young", 5, "gave up", Some(now - 1))],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let retry_rows = || async {
        t.strings("SELECT op_id FROM trustlog_retry ORDER BY op_id")
            .await
    };

    assert_eq!(
        db.purge_matching(
            Purge::Ids(
                ["dl-a", "p", "waiting", "nope", "dl-a", "dl-c "]
                    .map(String::from)
                    .to_vec()
            ),
            now
        )
        .await
        .unwrap(),
        1,
        "{b:?}"
    );
    assert!(status_is(&t, "dl-a", "DB_ONLY").await, "{b:?}");
    assert!(status_is(&t, "p", "NOT_TRUSTLOGGED").await, "{b:?}");
    assert!(status_is(&t, "waiting", "NOT_TRUSTLOGGED").await, "{b:?}");
    assert_eq!(
        retry_rows().await,
        ["dl-b", "dl-c", "done", "p", "young"],
        "{b:?}"
    );
    assert_eq!(
        db.purge_matching(Purge::Ids(Vec::new()), now)
            .await
            .unwrap(),
        0,
        "{b:?}"
    );

    // alice's dead letters last changed before now: dl-b, and done, which stays
    // delivered; young is as old as the cutoff, p is no dead letter.
    assert_eq!(
        db.purge_matching(Purge::Matching(on("actor", "alice")), now)
            .await
            .unwrap(),
        2,
        "{b:?}"
    );
    assert!(status_is(&t, "dl-b", "DB_ONLY").await, "{b:?}");
    assert!(status_is(&t, "done", "TRUSTLOGGED").await, "{b:?}");
    assert!(status_is(&t, "young", "NOT_TRUSTLOGGED").await, "{b:?}");
    assert_eq!(retry_rows().await, ["dl-c", "p", "young"], "{b:?}");
    assert!(
        has_retry_row(&t, "p", 1, "PENDING", Some(T0 + 60), T0 + 10, T0 + 10).await,
        "{b:?}: the pending retry is untouched"
    );

    // A filter on NOT_TRUSTLOGGED still deletes the retry row of the operation it sets
    // aside as db-only (which the filter then no longer matches).
    assert_eq!(
        db.purge_matching(
            Purge::Matching(in_state(OperationState::NotTrustlogged)),
            now
        )
        .await
        .unwrap(),
        1,
        "{b:?}"
    );
    assert!(status_is(&t, "dl-c", "DB_ONLY").await, "{b:?}");
    assert_eq!(retry_rows().await, ["p", "young"], "{b:?}");
    assert_eq!(
        db.purge_matching(Purge::Matching(OperationFilter::default()), now + 1)
            .await
            .unwrap(),
        1,
        "{b:?}: young, once the cutoff is past it"
    );
    assert_eq!(retry_rows().await, ["p"], "{b:?}");

    // Nothing delivers a purged row again, and the counts add up.
    assert_eq!(
        ids(db.scan_after(None, 100).await.unwrap().rows),
        ["waiting"],
        "{b:?}"
    );
    assert_eq!(
        ids(db
            .sweep_candidates(pos(i64::MAX, ""), i64::MIN, 100)
            .await
            .unwrap()
            .rows),
        ["waiting"],
        "{b:?}"
    );
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        (
            stats.total,
            stats.db_only,
            stats.trustlogged,
            stats.not_trustlogged,
            stats.retry_pending,
            stats.dead_letter
        ),
        (7, 4, 1, 2, 1, 0),
        "{b:?}"
    );
    assert_eq!(
        matching(&db, &in_state(OperationState::DbOnly)).await,
        ["dl-a", "dl-b", "dl-c", "young"],
        "{b:?}"
    );
}

async fn replaying_and_purging_by_a_list_of_ids_longer_than_a_chunk(b: Backend) {
    // More than one chunk of any adapter's id lists.
    const DEAD: usize = 6_000;
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let id = |i: usize| format!("dl-{i:05}");
    let mut ops: Vec<Operation> = (0..DEAD).map(|i| op(&id(i), T0)).collect();
    ops.push(op("pending", T0));
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let mut retries: Vec<RetryUpdate> = (0..DEAD)
        .map(|i| dead(&id(i), 5, "gave up", None))
        .collect();
    retries.push(retry("pending", RetryStatus::Pending, Some(T0 + 60)));
    db.apply(UnitOfWork {
        now: T0 + 10,
        retries,
        ..UnitOfWork::default()
    })
    .await
    .unwrap();

    // Listed in reverse, with the pending retry among them.
    let mut first: Vec<String> = (0..5_500).rev().map(id).collect();
    first.push("pending".into());
    assert_eq!(
        db.purge_matching(Purge::Ids(first), T0 + 100)
            .await
            .unwrap(),
        5_500,
        "{b:?}"
    );
    assert_eq!(
        db.replay_dead_letters(Replay::Ids((0..DEAD).map(id).collect()), T0 + 100)
            .await
            .unwrap(),
        (DEAD - 5_500) as u64,
        "{b:?}: only those left are dead letters"
    );
    let stats = db.stats(DEFAULT_KEY).await.unwrap();
    assert_eq!(
        (stats.db_only, stats.retry_pending, stats.dead_letter),
        (5_500, (DEAD - 5_500) as u64 + 1, 0),
        "{b:?}"
    );
}

async fn filter_values_and_ids_that_look_like_sql_or_patterns_are_matched_literally(b: Backend) {
    let t = TestDb::create(b).await;
    let db = connect(&t).await;
    let tricky = [
        "x' OR '1'='1",
        "'; DROP TABLE operation; --",
        "%",
        "_",
        "a%",
        "a_c",
        "\\",
        "a\\'b",
        "\"quoted\"",
        "$1",
        "?",
        "*/ /*",
    ];
    let mut ops: Vec<Operation> = tricky
        .iter()
        .enumerate()
        .map(|(i, v)| op_of(&format!("id-{i:02}"), T0 + i as i64, v, v, v))
        .collect();
    // Rows a pattern or an injected OR would take too.
    ops.push(op_of("abc", T0 + 50, "abc", "abc", "abc"));
    ops.push(op_of("aXc", T0 + 51, "aXc", "aXc", "aXc"));
    ops.push(op_of("id'quote", T0 + 52, "q", "q", "q"));
    ops.push(op_of("id%", T0 + 53, "q", "q", "q"));
    ops.push(op_of("id_1", T0 + 54, "q", "q", "q"));
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let total = tricky.len() as u64 + 5;

    for field in ["actor", "doid", "producer"] {
        for (i, v) in tricky.iter().enumerate() {
            assert_eq!(
                matching(&db, &on(field, v)).await,
                [format!("id-{i:02}")],
                "{b:?}: {field} = {v:?}"
            );
        }
        for absent in ["x", "a", "ac", "' OR ''='", "%%", "a\0"] {
            assert!(
                matching(&db, &on(field, absent)).await.is_empty(),
                "{b:?}: {field} = {absent:?}"
            );
        }
    }
    for (id, want) in [
        ("id'quote", vec!["id'quote"]),
        ("id%", vec!["id%"]),
        ("id_1", vec!["id_1"]),
        ("id_", vec![]),
        ("id' OR '1'='1", vec![]),
        ("id\0", vec![]),
    ] {
        assert_eq!(
            matching(&db, &on("op_id", id)).await,
            want,
            "{b:?}: op_id = {id:?}"
        );
        assert_eq!(
            db.find_operation(id).await.unwrap().map(|f| f.op_id),
            want.first().map(|w| w.to_string()),
            "{b:?}: find {id:?}"
        );
    }
    // A page ending at a row whose op_id has a quote goes on after it.
    let after = pos(T0 + 52, "id'quote");
    assert_eq!(
        found_ids(
            &db.search_operations(&OperationFilter::default(), Some(&after), 10)
                .await
                .unwrap()
        ),
        ["id%", "id_1"],
        "{b:?}"
    );
    let after = pos(T0 + 52, "id'quote\0x");
    assert_eq!(
        found_ids(
            &db.search_operations(&OperationFilter::default(), Some(&after), 10)
                .await
                .unwrap()
        ),
        ["id%", "id_1"],
        "{b:?}: after an op_id no database stores"
    );

    // Dead letters selected by such values: only the one named.
    db.apply(UnitOfWork {
        now: T0 + 100,
        retries: (0..tricky.len())
            .map(|i| dead(&format!("id-{i:02}"), 5, "gave up", None))
            .chain(["abc", "aXc", "id'quote", "id%", "id_1"].map(|id| dead(id, 5, "gave up", None)))
            .collect(),
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    let injected: Vec<String> = ["x' OR '1'='1", "id_", "%", "id\0", "' OR 1=1 --"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        db.replay_dead_letters(Replay::Ids(injected.clone()), T0 + 200)
            .await
            .unwrap(),
        0,
        "{b:?}"
    );
    assert_eq!(
        db.purge_matching(Purge::Ids(injected), T0 + 200)
            .await
            .unwrap(),
        0,
        "{b:?}"
    );
    assert_eq!(
        db.replay_dead_letters(Replay::Matching(on("actor", "x' OR '1'='1")), T0 + 200)
            .await
            .unwrap(),
        1,
        "{b:?}"
    );
    assert_eq!(
        db.purge_matching(Purge::Matching(on("doid", "a_c")), T0 + 200)
            .await
            .unwrap(),
        1,
        "{b:?}: a_c, not abc nor aXc"
    );
    assert!(status_is(&t, "abc", "NOT_TRUSTLOGGED").await, "{b:?}");
    assert_eq!(
        db.stats(DEFAULT_KEY).await.unwrap().dead_letter,
        total - 2,
        "{b:?}"
    );
    // And every table is still there, every row in it.
    assert_eq!(
        db.count_operations(&OperationFilter::default())
            .await
            .unwrap(),
        total,
        "{b:?}"
    );
}

//! The SQL the PostgreSQL adapter runs, and the limits it runs it with.

use super::*;

// PATH: the schema; the host crate points this at its own `sql/postgresql.sql`.
pub(super) const SCHEMA: &str = include_str!("../../../../sql/postgresql.sql");

/// Connections per pool: a worker needs one at a time, the rest serve inserts and status.
pub(super) const POOL_SIZE: u32 = 5;
/// How long a call waits for a free connection (or a new one) before failing unavailable.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel the schema's insert trigger notifies.
pub(super) const WAKE_CHANNEL: &str = "trustlog_operation";
/// How long the listener waits for a connection before counting the attempt failed; its
/// loop then tries again, so a short wait only makes the failure show sooner.
pub(super) const LISTEN_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the longest wait before listening again after the listener failed.
pub(super) const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Unix time of PostgreSQL's epoch, 2000-01-01T00:00:00Z, in microseconds.
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// PostgreSQL's earliest timestamp, 4714-11-24T00:00:00Z BC, in Unix microseconds. Its
/// latest (294276 AD) lies beyond every `i64` of Unix microseconds.
pub(super) const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

/// The columns of [`Operation`], in field order, from `operation o`; rows are mapped by
/// index with [`operation_at`].
macro_rules! operation_columns {
    () => {
        "o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, \
         o.response_body_hash, o.op_source, o.op_type, o.do_prefix, o.do_repository, \
         o.client_ip, o.server_ip, o.timestamp::timestamptz"
    };
}
pub(super) const OPERATION_COLUMN_COUNT: usize = 13;

// The waiting-row queries repeat the partial index's predicate as a literal, not a bind,
// so the planner can prove the index applies to generic plans too; the row value makes
// the keyset bound a single index range in (timestamp, op_id) order, so no query sorts.

/// `scan_after(None, $1)`.
pub(super) const SCAN_FROM_START: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $1"
);
/// Refreshes the planner's statistics when a fifth of the table (and at least 10,000
/// rows) changed since the last ANALYZE. Right after a bulk load, before autovacuum gets
/// to it, the planner takes the backlog for a few rows and sorts all of it for every
/// batch instead of walking `operation_waiting`: half the throughput at 100k rows, and
/// worse as the backlog grows. Every command that writes migrates first, so `serve`
/// starts with fresh statistics, and the scan checks again every
/// [`STATS_CHECK_EVERY`]: a table that grows from empty while `serve` runs (a stream
/// of inserts) looked empty to the last ANALYZE, and autovacuum may not come for a minute.
pub(super) const ANALYZE_IF_STALE: &str = "DO $$ BEGIN \
     IF EXISTS (SELECT 1 FROM pg_stat_user_tables WHERE relid = 'operation'::regclass \
     AND n_mod_since_analyze > GREATEST(10000, n_live_tup / 5)) THEN ANALYZE operation; \
     END IF; END $$";
/// How often the scan checks whether the statistics went stale (a read of
/// pg_stat_user_tables; the ANALYZE itself runs only when they did).
pub(super) const STATS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// `scan_after(Some(($1, $2)), $3)`.
pub(super) const SCAN_AFTER: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) > ($1, $2) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $3"
);
/// `sweep_candidates(($1, $2), MIN, $3)`: every waiting row before the position.
pub(super) const SWEEP: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < ($1, $2) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $3"
);
/// `sweep_candidates(($1, $2), $3, $4)`: one index range, from `since` up to the position
/// (the catch-up). The scalar bounds on the timestamp repeat the row value's for the
/// planner, which estimates a plain range from its histogram but a row comparison only
/// by rule of thumb: without them it took a narrow window for much of the table and
/// sorted it instead of walking the index.
pub(super) const SWEEP_SINCE: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < ($1, $2) \
     AND o.timestamp >= $3 AND o.timestamp <= $1 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT $4"
);
/// `has_waiting_since($1)`: whether any row stamped at or after `$1` waits for the scan
/// or the catch-up; an index probe that stops at the first.
/// In the index's order, like [`OLDEST_WAITING`], so the planner walks it from `$1`.
pub(super) const WAITING_SINCE: &str = "SELECT 1 FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= $1 \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// The earliest due time of the retry queue, by `trustlog_retry_due_order`.
pub(super) const NEXT_RETRY_AT: &str = "SELECT MIN(next_retry_at)::timestamptz FROM ( \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'PENDING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'RETRYING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1)) AS due";
/// `backlog()`: rows waiting for their first delivery (from `operation_waiting`), retry
/// rows pending (from `trustlog_retry_due_order`), and the first due time.
pub(super) const BACKLOG: &str = concat!(
    "SELECT (SELECT COUNT(*) FROM operation o WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)), \
     (SELECT COUNT(*) FROM trustlog_retry WHERE retry_status IN ('PENDING', 'RETRYING')), (",
    "SELECT MIN(next_retry_at)::timestamptz FROM ( \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'PENDING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at FROM trustlog_retry WHERE retry_status = 'RETRYING' \
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1)) AS due",
    ")"
);
/// Creates a lease row, released, unless it exists.
pub(super) const ENSURE_LEASE: &str = "INSERT INTO trustlog_lease (lease_key, holder, acquired_at, \
     renewed_at, expires_at, state) VALUES ($1, '', clock_timestamp(), clock_timestamp(), \
     clock_timestamp(), '') ON CONFLICT (lease_key) DO NOTHING";
/// A lease row as it stands, and whether it has expired by the server's clock.
pub(super) const READ_LEASE: &str = "SELECT holder, acquired_at, renewed_at, expires_at, state, \
     expires_at < clock_timestamp() FROM trustlog_lease WHERE lease_key = $1";
/// Takes or renews a lease: `$1` key, `$2` holder, `$3` ttl in microseconds, `$4` state,
/// `$5` the holder it must still have, `$6` its expiry as read (compare-and-set on both;
/// expiries are whole microseconds, as bound, so the comparison is exact).
pub(super) const CLAIM_LEASE: &str = "UPDATE trustlog_lease SET holder = $2, \
     acquired_at = CASE WHEN holder = $2 THEN acquired_at ELSE clock_timestamp() END, \
     renewed_at = clock_timestamp(), \
     expires_at = clock_timestamp() + $3 * INTERVAL '1 microsecond', state = $4 \
     WHERE lease_key = $1 AND holder = $5 AND expires_at = $6 \
     RETURNING acquired_at, renewed_at, expires_at";
/// Hands a lease back at once.
pub(super) const RELEASE_LEASE: &str = "UPDATE trustlog_lease SET holder = '', state = '', \
     expires_at = clock_timestamp() WHERE lease_key = $1 AND holder = $2";
/// One status's due rows for [`DUE_RETRIES`]: a walk of `trustlog_retry_due_order` in
/// (due time, op_id) order, each row looking its operation up by primary key, stopping
/// at the limit.
macro_rules! due_of {
    ($status:literal) => {
        concat!(
            "(SELECT ",
            operation_columns!(),
            ", r.retry_count::int8, r.next_retry_at::timestamptz AS due \
             FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
             WHERE r.retry_status = '",
            $status,
            "' AND r.next_retry_at <= $1 AND o.trustlog_status = 'NOT_TRUSTLOGGED' \
             ORDER BY r.next_retry_at, r.op_id LIMIT $2)"
        )
    };
}
/// `due_retries($1, $2)`: the operation's columns, then `retry_count` (then the due time).
/// One ordered, limited branch per status, merged: a single range over both statuses
/// would have to sort every due row for every batch.
pub(super) const DUE_RETRIES: &str = concat!(
    due_of!("PENDING"),
    " UNION ALL ",
    due_of!("RETRYING"),
    " ORDER BY due, op_id LIMIT $2"
);
/// The timestamp of the oldest waiting row with no retry row. Not MIN(): walking the
/// index in order stops at the first match, where MIN() over the NOT EXISTS filter would
/// visit every waiting row.
pub(super) const OLDEST_WAITING: &str = "SELECT o.timestamp::timestamptz FROM operation o \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// Rows per status. Exact counts read every row (PostgreSQL keeps no row count); the
/// status is not indexed because each index slows the insert and the status update.
pub(super) const COUNT_BY_STATUS: &str =
    "SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status";
/// Retry rows per status.
pub(super) const COUNT_RETRIES_BY_STATUS: &str =
    "SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status";
/// Stores a batch: one array per column, unnested in input order, so of two equal op_ids
/// in one batch the first is stored and the second meets it as a conflict.
pub(super) const INSERT: &str = "INSERT INTO operation (op_id, op_actor, doid, producer_id, \
     request_body_hash, response_body_hash, op_source, op_type, do_prefix, do_repository, \
     client_ip, server_ip, timestamp, trustlog_status) \
     SELECT u.*, $14 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
     $13::timestamptz[]) AS u \
     ON CONFLICT (op_id) DO NOTHING RETURNING op_id";
/// Marks waiting rows delivered.
pub(super) const MARK_TRUSTLOGGED: &str = "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' \
     WHERE op_id = ANY($1) AND trustlog_status = 'NOT_TRUSTLOGGED'";
/// The unit of work of a batch that was all confirmed, in one statement: the cursor
/// moves with compare-and-set (`MOVE_CURSOR`'s) and the rows are marked only if it
/// moved. Answers how many cursor rows moved, 0 or 1. One round trip, where the
/// transaction's BEGIN, two statements and COMMIT take four.
pub(super) const MARK_AND_MOVE: &str = "WITH moved AS (UPDATE trustlog_cursor \
     SET cursor_value = $1, last_updated_at = $2 WHERE cursor_key = $3 AND cursor_value = $4 \
     RETURNING 1), \
     marked AS (UPDATE operation SET trustlog_status = 'TRUSTLOGGED' \
     WHERE op_id = ANY($5) AND trustlog_status = 'NOT_TRUSTLOGGED' \
     AND EXISTS (SELECT 1 FROM moved) RETURNING 1) \
     SELECT (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM marked)";
/// Inserts or overwrites retry rows; created_at is absent from the update list, so it
/// keeps the first failure's time.
pub(super) const UPSERT_RETRIES: &str = "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, \
     last_retry_at, next_retry_at, error_message, created_at, updated_at) \
     SELECT u.*, $7, $7 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::timestamptz[], \
     $5::timestamptz[], $6::text[]) AS u \
     ON CONFLICT (op_id) DO UPDATE SET retry_count = excluded.retry_count, \
     retry_status = excluded.retry_status, last_retry_at = excluded.last_retry_at, \
     next_retry_at = excluded.next_retry_at, error_message = excluded.error_message, \
     updated_at = excluded.updated_at";
/// Deletes retry rows.
pub(super) const DELETE_RETRIES: &str = "DELETE FROM trustlog_retry WHERE op_id = ANY($1)";
/// Moves a set cursor: `$1` the new value, `$2` the time, `$3` the key, `$4` the old value.
pub(super) const MOVE_CURSOR: &str = "UPDATE trustlog_cursor SET cursor_value = $1, last_updated_at = $2 \
     WHERE cursor_key = $3 AND cursor_value = $4";
/// Sets a cursor with no position: a missing row is created; an existing one is taken
/// only while empty (the DO UPDATE's WHERE leaves a set cursor alone and reports no change).
pub(super) const START_CURSOR: &str = "INSERT INTO trustlog_cursor (cursor_key, cursor_value, \
     last_updated_at) VALUES ($1, $2, $3) ON CONFLICT (cursor_key) DO UPDATE SET \
     cursor_value = excluded.cursor_value, last_updated_at = excluded.last_updated_at \
     WHERE trustlog_cursor.cursor_value = ''";
/// The columns of the tables named in `$1` in the current schema: table, column, type,
/// maximum length and collation (the database's where the column names none).
pub(super) const COLUMNS: &str = "SELECT c.table_name::text, c.column_name::text, c.data_type::text, \
     c.character_maximum_length::int4, \
     CASE WHEN c.collation_name IS NOT NULL THEN c.collation_name::text \
          WHEN c.data_type IN ('character varying', 'text', 'character') \
          THEN (SELECT datcollate::text FROM pg_database WHERE datname = current_database()) END \
     FROM information_schema.columns c \
     WHERE c.table_schema = current_schema() AND c.table_name = ANY($1)";
/// One cursor's stored text.
pub(super) const LOAD_CURSOR: &str =
    "SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = $1";
/// Rewrites a cursor value read in another form in trustlog's: `$1` the new text, `$2`
/// the key, `$3` the text read.
pub(super) const REWRITE_CURSOR: &str =
    "UPDATE trustlog_cursor SET cursor_value = $1 WHERE cursor_key = $2 AND cursor_value = $3";
/// The columns of [`DeadLetter`], in field order, mapped by [`dead_letter_at`].
macro_rules! dead_letter_columns {
    () => {
        "r.op_id, o.timestamp::timestamptz, r.retry_count::int8, r.error_message, \
         r.created_at::timestamptz, r.updated_at::timestamptz, r.last_retry_at::timestamptz"
    };
}
/// `dead_letters(None, $1)`. op_id is COLLATE "C" in both tables: the order is byte order.
pub(super) const DEAD_LETTERS_FROM_START: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' ORDER BY r.op_id LIMIT $1"
);
/// `dead_letters(Some($1), $2)`.
pub(super) const DEAD_LETTERS_AFTER: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.op_id > $1 ORDER BY r.op_id LIMIT $2"
);
/// `replay_dead_letters(Replay::One($2), $1)`.
pub(super) const REPLAY_ONE: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = $1, updated_at = $1 WHERE op_id = $2 AND retry_status = 'DEAD_LETTER'";
/// `replay_dead_letters(Replay::All, $1)`. One statement whatever the count: it locks
/// dead-letter rows only, which the workers' units of work leave alone, so it cannot
/// deadlock with them.
pub(super) const REPLAY_ALL: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = $1, updated_at = $1 WHERE retry_status = 'DEAD_LETTER'";
/// The op_ids a purge before $1 takes, read without locks: the purge then locks their
/// operations before their retry rows, the order [`PostgresDb::apply`] locks in.
pub(super) const PURGEABLE: &str = "SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at < $1 ORDER BY op_id";
/// Sets purged dead letters' operations aside as db-only, so nothing delivers them once
/// their retry rows are gone.
pub(super) const MARK_DB_ONLY: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE op_id = ANY($1) AND trustlog_status = 'NOT_TRUSTLOGGED'";
/// A round trip through the pool.
pub(super) const PING: &str = "SELECT 1";
/// A row's timestamp as a search reads it: microseconds since the epoch (EXTRACT gives
/// an exact numeric), NULL where it cannot be read as such (an infinity, NULL, or at or
/// past the last microsecond of i64, where EXTRACT itself is no longer exact). The
/// ordering is by this, not by the column: `-infinity` would otherwise sort first, where
/// no `i64` position can stand before it.
macro_rules! search_timestamp {
    () => {
        "CASE WHEN o.timestamp::timestamptz > '-infinity' \
         AND o.timestamp::timestamptz < '294247-01-10 04:00:54.775807+00' \
         THEN (EXTRACT(EPOCH FROM o.timestamp::timestamptz) * 1000000)::int8 END"
    };
}
/// The search's sort key (see [`crate::db::search`]).
pub(super) const SEARCH_KEY: &str = concat!(
    "COALESCE(",
    search_timestamp!(),
    ", ",
    unreadable_key!(),
    ")"
);
/// The columns of a found row, as [`col`] numbers them, mapped by [`found_at`].
macro_rules! found_columns {
    () => {
        concat!(
            operation_columns!(),
            ", o.trustlog_status, ",
            search_timestamp!(),
            ", r.op_id, r.retry_count::int8, r.retry_status, r.last_retry_at::timestamptz, \
             r.next_retry_at::timestamptz, r.error_message, r.created_at::timestamptz, \
             r.updated_at::timestamptz \
             FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id"
        )
    };
}
/// `find_operation($1)`, by primary key.
pub(super) const FIND: &str = concat!("SELECT ", found_columns!(), " WHERE o.op_id = $1");
/// A search, completed by [`search::push_filter`], the keyset bound, the order and the
/// limit. `WHERE TRUE` so that every condition appends as ` AND …`.
pub(super) const SEARCH: &str = concat!("SELECT ", found_columns!(), " WHERE TRUE");
/// A count, completed by [`search::push_filter`].
pub(super) const COUNT: &str =
    "SELECT COUNT(*) FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id WHERE TRUE";
/// The op_ids of the operations a filter matches, completed by [`search::push_filter`].
pub(super) const MATCHING_IDS: &str =
    "SELECT o.op_id FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id WHERE TRUE";
/// `replay_dead_letters(Replay::Ids($2), $1)`. Like [`REPLAY_ALL`], it locks dead-letter
/// rows only.
pub(super) const REPLAY_LISTED: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', \
     retry_count = 0, next_retry_at = $1, updated_at = $1 \
     WHERE op_id = ANY($2) AND retry_status = 'DEAD_LETTER'";
/// Replays the dead letters among a subquery's op_ids, in the pieces around its binds:
/// `now`, `now` again, then the subquery ([`MATCHING_IDS`] and its filter). The
/// subquery reads without locks: only dead-letter rows are locked, as by [`REPLAY_ALL`].
pub(super) const REPLAY_MATCHING: [&str; 3] = [
    "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, next_retry_at = ",
    ", updated_at = ",
    " WHERE retry_status = 'DEAD_LETTER' AND op_id IN (",
];
/// The listed op_ids (`$2`) a purge before `$1` takes, read without locks, as
/// [`PURGEABLE`].
pub(super) const PURGEABLE_LISTED: &str = "SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at < $1 AND op_id = ANY($2) \
     ORDER BY op_id";
/// The dead letters last changed before a bound among the operations a filter matches:
/// completed by the bound, [`search::push_filter`] and [`PURGEABLE_MATCHING_ORDER`].
pub(super) const PURGEABLE_MATCHING: &str = "SELECT r.op_id FROM trustlog_retry r \
     JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.updated_at < ";
/// The end of [`PURGEABLE_MATCHING`]: op_id order, the order the purge locks rows in.
pub(super) const PURGEABLE_MATCHING_ORDER: &str = " ORDER BY r.op_id";
/// The schema `operation` resolves to on this connection: the trigger's payload for it.
pub(super) const OWN_SCHEMA: &str = "SELECT n.nspname::text FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.oid = to_regclass('operation')";

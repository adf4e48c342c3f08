//! The SQL the MySQL/MariaDB adapter runs, and the limits it runs it with.

use super::*;

// PATH: the schema; the host crate points this at its own `sql/mysql.sql`.
pub(super) const SCHEMA: &str = include_str!("../../../../sql/mysql.sql");

/// Rows per multi-row INSERT into `operation`: 14 binds each, 14,000 in all, well under
/// the protocol's limit of 65,535 placeholders per prepared statement.
pub(super) const INSERT_CHUNK: usize = 1_000;
/// Rows per multi-row upsert into `trustlog_retry` (8 binds each).
pub(super) const RETRY_CHUNK: usize = 1_000;
/// op_ids per `IN (...)` list.
pub(super) const ID_CHUNK: usize = 5_000;
/// How often [`MySqlDb::insert`] starts over when a concurrent insert of the same op_id
/// committed between its existence check and its INSERT; the next attempt sees that row.
pub(super) const INSERT_ATTEMPTS: u32 = 3;
/// Connections per pool: enough for the scan, retry and sweep ticks and an HTTP handler
/// or two at once; every one holds a server thread.
pub(super) const POOL_SIZE: u32 = 5;
/// How long a caller waits for a pooled connection (or a server that refuses connections)
/// before the call fails as unavailable.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's SQL mode, set whole rather than added to the server's, so behaviour never
/// depends on server configuration. STRICT_ALL_TABLES turns an over-long or out-of-range
/// value into an error instead of a silently truncated row; the rest keep zero dates out.
pub(super) const SESSION_SQL_MODE: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,\
     NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'";

/// The columns of [`Operation`], in field order, from `operation o`; rows are mapped by
/// index with [`operation_at`].
macro_rules! operation_columns {
    () => {
        "o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, \
         o.response_body_hash, o.op_source, o.op_type, o.do_prefix, o.do_repository, \
         o.client_ip, o.server_ip, o.timestamp"
    };
}
pub(super) const OPERATION_COLUMN_COUNT: usize = 13;

// The waiting-row queries name their index: the status leads it, so an equality on the
// literal status followed by a keyset range on (timestamp, op_id) is one ordered index
// range and needs no sort. The keyset bound is spelled out with OR rather than as a row
// comparison, which MariaDB cannot turn into an index range.

/// `scan_after(None, ?)`.
pub(super) const SCAN_FROM_START: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `scan_after(Some(p), ?)`, binding p's timestamp twice, then its op_id and the limit.
pub(super) const SCAN_AFTER: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND (o.timestamp > ? OR (o.timestamp = ? AND o.op_id > ?)) \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `sweep_candidates(p, since, ?)`, binding p's timestamp twice, its op_id, `since` and
/// the limit: one index range, from `since` up to the position.
pub(super) const SWEEP: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND (o.timestamp < ? OR (o.timestamp = ? AND o.op_id < ?)) AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `sweep_candidates` before a position past DATETIME's range: every waiting row with
/// no retry row stamped at or after `?`, then the limit.
pub(super) const SWEEP_ALL_SINCE: &str = concat!(
    "SELECT ",
    operation_columns!(),
    " FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT ?"
);
/// `has_waiting_since(?)`: whether any row stamped at or after `?` waits for the scan or
/// the catch-up; an index probe that stops at the first.
pub(super) const WAITING_SINCE: &str = "SELECT CAST(EXISTS (SELECT 1 FROM operation o \
     FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.timestamp >= ? \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)) AS SIGNED)";
/// The earliest due time of the retry queue: the head of each status's range of
/// `trustlog_retry_due`.
pub(super) const NEXT_RETRY_AT: &str = "SELECT MIN(due) FROM ( \
     (SELECT next_retry_at AS due FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status = 'PENDING' AND next_retry_at IS NOT NULL \
      ORDER BY next_retry_at LIMIT 1) UNION ALL \
     (SELECT next_retry_at AS due FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status = 'RETRYING' AND next_retry_at IS NOT NULL \
      ORDER BY next_retry_at LIMIT 1)) AS d";
/// `backlog()`: rows waiting for their first delivery (from `operation_waiting`), retry
/// rows pending (from `trustlog_retry_due`), and the first due time.
pub(super) const BACKLOG: &str = "SELECT \
     (SELECT COUNT(*) FROM operation o FORCE INDEX (operation_waiting) \
      WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
      AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)), \
     (SELECT COUNT(*) FROM trustlog_retry FORCE INDEX (trustlog_retry_due) \
      WHERE retry_status IN ('PENDING', 'RETRYING'))";
/// Creates a lease row, released, unless it exists.
pub(super) const ENSURE_LEASE: &str = "INSERT INTO trustlog_lease (lease_key, holder, acquired_at, \
     renewed_at, expires_at, state) VALUES (?, '', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), \
     UTC_TIMESTAMP(6), '') ON DUPLICATE KEY UPDATE lease_key = lease_key";
/// A lease row as it stands, and whether it has expired by the server's clock.
pub(super) const READ_LEASE: &str = "SELECT holder, acquired_at, renewed_at, expires_at, state, \
     CAST(expires_at < UTC_TIMESTAMP(6) AS SIGNED) FROM trustlog_lease WHERE lease_key = ?";
/// Takes or renews a lease, with compare-and-set on the holder and expiry read before.
/// Binds: holder (for acquired_at), holder, ttl in µs, state, key, old holder, old expiry.
/// MySQL assigns left to right, so acquired_at is judged before holder changes.
pub(super) const CLAIM_LEASE: &str = "UPDATE trustlog_lease SET \
     acquired_at = IF(holder = ?, acquired_at, UTC_TIMESTAMP(6)), holder = ?, \
     renewed_at = UTC_TIMESTAMP(6), \
     expires_at = TIMESTAMPADD(MICROSECOND, ?, UTC_TIMESTAMP(6)), state = ? \
     WHERE lease_key = ? AND holder = ? AND expires_at = ?";
/// Hands a lease back at once.
pub(super) const RELEASE_LEASE: &str = "UPDATE trustlog_lease SET holder = '', state = '', \
     expires_at = UTC_TIMESTAMP(6) WHERE lease_key = ? AND holder = ?";
/// One status's due rows for [`DUE_RETRIES`], in (due time, op_id) order, stopping at the limit.
macro_rules! due_of {
    ($status:literal) => {
        concat!(
            "SELECT ",
            operation_columns!(),
            ", r.retry_count, r.next_retry_at AS due \
             FROM trustlog_retry r FORCE INDEX (trustlog_retry_due) \
             STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
             WHERE r.retry_status = '",
            $status,
            "' AND r.next_retry_at <= ? AND o.trustlog_status = 'NOT_TRUSTLOGGED' \
             ORDER BY r.next_retry_at, r.op_id LIMIT ?"
        )
    };
}
/// `due_retries(?, ?)`: the operation's columns, then `retry_count`. STRAIGHT_JOIN keeps
/// the join driven by the due retry rows, never by the status index of `operation`, and
/// the named index keeps their lookup a range of due rows however many dead letters
/// the table holds (on a small table the optimizer would rather read it all).
///
/// One ordered, limited branch per status, merged: a single range over both statuses
/// would have to sort every due row for every batch. Within one status InnoDB's index
/// is (due time, op_id) already, as a secondary index ends in the primary key.
/// Binds: now, limit, now, limit, limit.
pub(super) const DUE_RETRIES: &str = concat!(
    "(",
    due_of!("PENDING"),
    ") UNION ALL (",
    due_of!("RETRYING"),
    ") ORDER BY due, op_id LIMIT ?"
);
/// The timestamp of the oldest waiting row with no retry row. Not MIN(): walking the
/// index in order stops at the first match, where MIN() over the NOT EXISTS filter would
/// visit every waiting row.
pub(super) const OLDEST_WAITING: &str = "SELECT o.timestamp FROM operation o FORCE INDEX (operation_waiting) \
     WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' \
     AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id) \
     ORDER BY o.timestamp, o.op_id LIMIT 1";
/// Rows per status, from the status prefix of `operation_waiting`.
pub(super) const COUNT_BY_STATUS: &str =
    "SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status";
/// Retry rows per status, from the covering due index.
pub(super) const COUNT_RETRIES_BY_STATUS: &str =
    "SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status";
/// Which of a list of op_ids are stored; an `(op_id, ...)` list follows.
pub(super) const EXISTING_IDS: &str = "SELECT op_id FROM operation WHERE op_id IN ";
/// Marks waiting rows delivered; an `(op_id, ...)` list follows. By primary key: had
/// InnoDB walked `operation_waiting` instead, its locking read of the waiting range would
/// wait for any writer's uncommitted row there (a transaction that stamped its row early
/// and commits late held every mark, and so every delivery, for as long as it stayed open).
pub(super) const MARK_TRUSTLOGGED: &str = "UPDATE operation FORCE INDEX (PRIMARY) \
     SET trustlog_status = 'TRUSTLOGGED' \
     WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// Deletes retry rows; an `(op_id, ...)` list follows.
pub(super) const DELETE_RETRIES: &str = "DELETE FROM trustlog_retry WHERE op_id IN ";
/// The columns of the four tables bound in the current database: table, column, type,
/// maximum length, collation and fractional digits. Cast to CHAR and SIGNED, since the
/// catalogue's own types differ between MySQL and MariaDB.
pub(super) const COLUMNS: &str = "SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), \
     CAST(DATA_TYPE AS CHAR), CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), \
     CAST(COLLATION_NAME AS CHAR), CAST(DATETIME_PRECISION AS SIGNED) \
     FROM information_schema.COLUMNS \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?, ?, ?)";
/// One cursor's stored text.
pub(super) const LOAD_CURSOR: &str =
    "SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = ?";
/// Rewrites a cursor value read in another form in trustlog's: `?` the new text, `?`
/// the key, `?` the text read.
pub(super) const REWRITE_CURSOR: &str =
    "UPDATE trustlog_cursor SET cursor_value = ? WHERE cursor_key = ? AND cursor_value = ?";
/// Creates a cursor row holding no position unless one exists. Not INSERT IGNORE, which
/// would also truncate an over-long key; the no-op update leaves an existing row as it is.
pub(super) const ENSURE_CURSOR: &str = "INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at) \
     VALUES (?, '', ?) ON DUPLICATE KEY UPDATE cursor_key = cursor_key";
/// The compare-and-set: moves a cursor only while it still holds the expected text.
pub(super) const MOVE_CURSOR: &str = "UPDATE trustlog_cursor SET cursor_value = ?, last_updated_at = ? \
     WHERE cursor_key = ? AND cursor_value = ?";
/// The columns of [`DeadLetter`], in field order, mapped by [`dead_letter_at`].
macro_rules! dead_letter_columns {
    () => {
        "r.op_id, o.timestamp, r.retry_count, r.error_message, r.created_at, r.updated_at, \
         r.last_retry_at"
    };
}
/// `dead_letters(None, ?)`. op_id is utf8mb4_bin in both tables: the order is byte order.
pub(super) const DEAD_LETTERS_FROM_START: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' ORDER BY r.op_id LIMIT ?"
);
/// `dead_letters(Some(?), ?)`.
pub(super) const DEAD_LETTERS_AFTER: &str = concat!(
    "SELECT ",
    dead_letter_columns!(),
    " FROM trustlog_retry r STRAIGHT_JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.op_id > ? ORDER BY r.op_id LIMIT ?"
);
/// `replay_dead_letters(Replay::One(op_id), now)`, binding now twice, then the op_id.
pub(super) const REPLAY_ONE: &str = "UPDATE trustlog_retry SET retry_status = 'PENDING', retry_count = 0, \
     next_retry_at = ?, updated_at = ? WHERE op_id = ? AND retry_status = 'DEAD_LETTER'";
/// The op_ids `Replay::All` takes, read without locks. One UPDATE by status would walk
/// `trustlog_retry_due` under REPEATABLE READ and gap-lock the dead-letter range, where a
/// worker dead-lettering two rows at once could deadlock with it; updating by primary
/// key locks only the rows replayed.
pub(super) const DEAD_LETTER_IDS: &str =
    "SELECT op_id FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' ORDER BY op_id";
/// Replays listed dead letters, in the pieces around its binds: `now`, `now` again, then
/// an `(op_id, ...)` list. The status is checked again: a row may have changed since it
/// was listed.
pub(super) const REPLAY_LISTED: [&str; 3] = [
    "UPDATE trustlog_retry FORCE INDEX (PRIMARY) SET retry_status = 'PENDING', \
     retry_count = 0, next_retry_at = ",
    ", updated_at = ",
    " WHERE retry_status = 'DEAD_LETTER' AND op_id IN ",
];
/// The op_ids a purge takes, last changed at or before ?, read without locks: the purge
/// then locks their operations before their retry rows, by primary key, the way
/// [`MySqlDb::apply`] does, so it cannot deadlock with a worker. (A subquery in the
/// UPDATE would take shared next-key locks on `trustlog_retry` first.)
pub(super) const PURGEABLE: &str = "SELECT op_id FROM trustlog_retry \
     WHERE retry_status = 'DEAD_LETTER' AND updated_at <= ? ORDER BY op_id";
/// Sets purged dead letters' operations aside as db-only, so nothing delivers them once
/// their retry rows are gone; an `(op_id, ...)` list follows.
pub(super) const MARK_DB_ONLY: &str = "UPDATE operation SET trustlog_status = 'DB_ONLY' \
     WHERE trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ";
/// A round trip through the pool.
pub(super) const PING: &str = "SELECT 1";
/// A row's timestamp as a search reads it: microseconds since the epoch (TIMESTAMPDIFF is
/// exact to the microsecond, for DATETIME and for TIMESTAMP in the session's UTC), NULL
/// where it cannot be read as such: a NULL, a zero date or a zero month or day, which
/// sort by their digits among the real dates, where no position could name them.
macro_rules! search_timestamp {
    () => {
        "IF(MONTH(o.timestamp) = 0 OR DAYOFMONTH(o.timestamp) = 0, NULL, \
         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', o.timestamp))"
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
            ", r.op_id, r.retry_count, r.retry_status, r.last_retry_at, r.next_retry_at, \
             r.error_message, r.created_at, r.updated_at \
             FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id"
        )
    };
}
/// `find_operation(?)`, by primary key.
pub(super) const FIND: &str = concat!("SELECT ", found_columns!(), " WHERE o.op_id = ?");
/// A search, completed by [`search::push_filter`], the keyset bound, the order and the
/// limit. `WHERE TRUE` so that every condition appends as ` AND …`.
pub(super) const SEARCH: &str = concat!("SELECT ", found_columns!(), " WHERE TRUE");
/// A count, completed by [`search::push_filter`].
pub(super) const COUNT: &str =
    "SELECT COUNT(*) FROM operation o LEFT JOIN trustlog_retry r ON r.op_id = o.op_id WHERE TRUE";
/// The dead letters among the operations a filter matches, completed by
/// [`search::push_filter`] and [`IN_ID_ORDER`]; read without locks, as
/// [`DEAD_LETTER_IDS`].
pub(super) const DEAD_LETTERS_MATCHING: &str = "SELECT r.op_id FROM trustlog_retry r \
     JOIN operation o ON o.op_id = r.op_id WHERE r.retry_status = 'DEAD_LETTER'";
/// The listed op_ids a purge takes, last changed at or before a bound, read without
/// locks as [`PURGEABLE`], in the pieces around the bound; an `(op_id, ...)` list follows.
pub(super) const PURGEABLE_LISTED: [&str; 2] = [
    "SELECT op_id FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER' AND updated_at <= ",
    " AND op_id IN ",
];
/// The dead letters last changed at or before a bound among the operations a filter
/// matches, completed by the bound, [`search::push_filter`] and [`IN_ID_ORDER`].
pub(super) const PURGEABLE_MATCHING: &str = "SELECT r.op_id FROM trustlog_retry r \
     JOIN operation o ON o.op_id = r.op_id \
     WHERE r.retry_status = 'DEAD_LETTER' AND r.updated_at <= ";
/// The end of a selection of dead letters: op_id order, the order their rows are locked in.
pub(super) const IN_ID_ORDER: &str = " ORDER BY r.op_id";
/// Starts the read-only transaction of [`MySqlDb::stats`]. Its reads share one snapshot
/// only under REPEATABLE READ, so that level is set for this transaction whatever the
/// server's default.
pub(super) const BEGIN_SNAPSHOT: &str = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
     START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY";

/// The indexes the queries name, with the DDL adding each to a table that lacks it:
/// CREATE TABLE IF NOT EXISTS leaves a table created earlier (by the seed, say) alone.
pub(super) const NAMED_INDEXES: &[(&str, &str, &str)] = &[
    (
        "operation",
        "operation_waiting",
        "ALTER TABLE operation ADD INDEX operation_waiting (trustlog_status, timestamp, op_id)",
    ),
    (
        "trustlog_retry",
        "trustlog_retry_due",
        "ALTER TABLE trustlog_retry ADD INDEX trustlog_retry_due (retry_status, next_retry_at)",
    ),
];
/// Whether the current database has an index of a table.
pub(super) const HAS_INDEX: &str = "SELECT COUNT(*) FROM information_schema.statistics \
     WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?";

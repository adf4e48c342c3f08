-- trustlog schema for SQLite (3.35 or newer: the adapter uses RETURNING and row values).
--
-- Idempotent: every statement is IF NOT EXISTS, so running it on each start is safe.
-- Table, column and status names follow the seed (go-trustlog-persistence), so a
-- database shared with it keeps working.
--
-- Timestamps
--   Every time column holds INTEGER microseconds since the Unix epoch, UTC.
--   (The design allows integer microseconds or 6-digit text; integers give a total
--   order with op_id as tie-breaker, compare cheaply and make keyset scans on
--   (timestamp, op_id) plain index range scans.) Many rows may share one timestamp.
--
-- operation.trustlog_status
--   NOT_TRUSTLOGGED  stored, waiting for delivery: the only status any scan reads
--                    (the cursor scan, the retry join and the sweep of late commits).
--   TRUSTLOGGED      the trust log confirmed it.
--   DB_ONLY          stored under the db-only strategy: kept in the database only and
--                    never published; no scan, retry or sweep ever picks it up.
--
-- Inserting from an application with plain SQL (trustlog_status defaults to
-- NOT_TRUSTLOGGED, so the relay delivers the row):
--
--   INSERT INTO operation (op_id, op_actor, doid, producer_id,
--                          request_body_hash, response_body_hash,
--                          op_source, op_type, do_prefix, do_repository,
--                          client_ip, server_ip, timestamp)
--   VALUES ('op-00001', 'alice', '10.1000/repo/obj-1', 'producer-1',
--           'sha256:ab12...', NULL,
--           'api', 'create', '10.1000', 'repo',
--           '192.0.2.10', NULL,
--           1795515834123456);          -- 2026-11-24T10:23:54.123456Z
--
--   Pass the application's microsecond clock. Lacking one, SQLite 3.42+ gives
--   millisecond resolution with CAST(unixepoch('subsec') * 1000000 AS INTEGER).
--   A row whose op_id exists is refused; add ON CONFLICT(op_id) DO NOTHING to skip it.
--
-- trustlog_cursor.cursor_value
--   '<RFC 3339 UTC, exactly 6 fractional digits, Z>|<op_id>', e.g.
--   '2026-11-24T10:23:54.123456Z|op-00001'; split at the first '|'. An empty string
--   means the cursor has no position yet.

CREATE TABLE IF NOT EXISTS operation (
    op_id              TEXT    NOT NULL PRIMARY KEY
                       CONSTRAINT operation_op_id_length CHECK (length(op_id) <= 64),
    op_actor           TEXT    NOT NULL,
    doid               TEXT    NOT NULL,
    producer_id        TEXT    NOT NULL,
    request_body_hash  TEXT    NULL,
    response_body_hash TEXT    NULL,
    op_source          TEXT    NOT NULL,
    op_type            TEXT    NOT NULL,
    do_prefix          TEXT    NOT NULL,
    do_repository      TEXT    NOT NULL,
    client_ip          TEXT    NULL,
    server_ip          TEXT    NULL,
    trustlog_status    TEXT    NOT NULL DEFAULT 'NOT_TRUSTLOGGED'
                       CONSTRAINT operation_trustlog_status_value
                       CHECK (trustlog_status IN ('NOT_TRUSTLOGGED', 'TRUSTLOGGED', 'DB_ONLY')),
    timestamp          INTEGER NOT NULL
);

-- The rows still waiting, in keyset order. The cursor scan, the sweep of rows left
-- behind the cursor and the lag figure (oldest waiting row) all read this index;
-- being partial, it stays as small as the backlog rather than the whole table.
-- The relay's queries name it (INDEXED BY operation_waiting): keep the name.
CREATE INDEX IF NOT EXISTS operation_waiting
    ON operation (timestamp, op_id)
    WHERE trustlog_status = 'NOT_TRUSTLOGGED';

-- The per-status counts of the monitoring figures.
CREATE INDEX IF NOT EXISTS operation_trustlog_status
    ON operation (trustlog_status);

CREATE TABLE IF NOT EXISTS trustlog_cursor (
    cursor_key      TEXT    NOT NULL PRIMARY KEY,
    cursor_value    TEXT    NOT NULL,
    last_updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS trustlog_retry (
    op_id         TEXT    NOT NULL PRIMARY KEY,
    retry_count   INTEGER NOT NULL DEFAULT 0,
    retry_status  TEXT    NOT NULL DEFAULT 'PENDING'
                  CONSTRAINT trustlog_retry_retry_status_value
                  CHECK (retry_status IN ('PENDING', 'RETRYING', 'DEAD_LETTER')),
    last_retry_at INTEGER NULL,
    next_retry_at INTEGER NULL,
    error_message TEXT    NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Due retries (status, then due time, then op_id) and the pending / dead-letter counts.
-- op_id is part of the key so that rows due at the same instant (a replay of many dead
-- letters) come out in the relay's order without a sort: each retry batch reads only
-- its own rows. It replaces trustlog_retry_due (status, due time), dropped below.
CREATE INDEX IF NOT EXISTS trustlog_retry_due_order
    ON trustlog_retry (retry_status, next_retry_at, op_id);
DROP INDEX IF EXISTS trustlog_retry_due;

-- Which host delivers for a cursor key (trustlog_cursor.cursor_key). Hosts sharing the
-- database take turns through this row: one holds it, renews it every few seconds and
-- releases it when it stops; the others stand by and take it once it is released or has
-- run out (a host killed without a release). holder is '' once released; state is what
-- the holder last said of its delivery ('running', 'outage: ...'). Times are integer
-- microseconds from the hosts' clock.
CREATE TABLE IF NOT EXISTS trustlog_lease (
    lease_key   TEXT    NOT NULL PRIMARY KEY,
    holder      TEXT    NOT NULL,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT ''
);

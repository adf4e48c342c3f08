-- trustlog schema for PostgreSQL (14 or newer: CREATE OR REPLACE TRIGGER).
--
-- Idempotent: run it on every start (`trustlog migrate` does), or by hand with
-- `psql -f postgresql.sql`. It creates its objects in the first schema of the
-- search_path, so one database can hold several tenants, one schema each. The whole
-- script is one transaction holding an advisory lock per schema: CREATE ... IF NOT
-- EXISTS and CREATE OR REPLACE are not safe against a concurrent run of themselves on
-- PostgreSQL (a duplicate-key error on the catalog, "tuple concurrently updated"), so
-- concurrent runs wait for each other instead.
-- Table, column and status names follow the seed (go-trustlog-persistence), so a
-- database shared with it keeps working.
--
-- Timestamps
--   TIMESTAMPTZ, microsecond precision, as PostgreSQL stores it. (timestamp, op_id) is
--   the keyset order the relay reads in; many rows may share one timestamp.
--
-- operation.op_id
--   COLLATE "C": byte order, which for UTF-8 is code point order. The relay's keyset
--   order is (timestamp, op_id bytes); under a linguistic collation the index would
--   sort differently from the relay and a scan could skip or repeat rows.
--   VARCHAR sizes count characters, not bytes.
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
--           '2026-11-24 10:23:54.123456+00');
--
--   Lacking the application's own clock, clock_timestamp() gives the current time
--   (now() is the start of the transaction). Either way a row may commit after the
--   relay has moved past its timestamp; the relay's sweep finds such late rows.
--   A row whose op_id exists is refused; add ON CONFLICT (op_id) DO NOTHING to skip it.
--
-- Wake-up
--   Every INSERT statement on operation, from any client, sends one NOTIFY on the
--   channel trustlog_operation (one per statement, not per row; the payload is the
--   table's schema, so tenants in other schemas can ignore it). PostgreSQL delivers it
--   when the inserting transaction commits, so a row that commits late, behind rows
--   the relay has already passed, wakes it too: the relay scans, and its catch-up
--   delivers rows behind the cursor at once. NOTIFY is best effort: a notification
--   sent while the relay is not listening is lost, and the relay's idle poll is the
--   fallback that finds the row.
--
-- trustlog_cursor.cursor_value
--   '<RFC 3339 UTC, exactly 6 fractional digits, Z>|<op_id>', e.g.
--   '2026-11-24T10:23:54.123456Z|op-00001'; split at the first '|'. An empty string
--   means the cursor has no position yet.

BEGIN;

-- Quiet the "already exists, skipping" notices of every run after the first.
SET LOCAL client_min_messages = warning;

SELECT pg_advisory_xact_lock(hashtext('trustlog schema ' || coalesce(current_schema(), '')));

CREATE TABLE IF NOT EXISTS operation (
    op_id              VARCHAR(64)  COLLATE "C" NOT NULL PRIMARY KEY,
    op_actor           VARCHAR(128) NOT NULL,
    doid               VARCHAR(512) NOT NULL,
    producer_id        VARCHAR(128) NOT NULL,
    request_body_hash  VARCHAR(128) NULL,
    response_body_hash VARCHAR(128) NULL,
    op_source          VARCHAR(64)  NOT NULL,
    op_type            VARCHAR(64)  NOT NULL,
    do_prefix          VARCHAR(128) NOT NULL,
    do_repository      VARCHAR(128) NOT NULL,
    client_ip          VARCHAR(45)  NULL,
    server_ip          VARCHAR(45)  NULL,
    trustlog_status    VARCHAR(20)  NOT NULL DEFAULT 'NOT_TRUSTLOGGED'
                       CONSTRAINT operation_trustlog_status_value
                       CHECK (trustlog_status IN ('NOT_TRUSTLOGGED', 'TRUSTLOGGED', 'DB_ONLY')),
    timestamp          TIMESTAMPTZ  NOT NULL
);

-- The rows still waiting, in keyset order. The cursor scan, the sweep of rows left
-- behind the cursor and the lag figure (oldest waiting row) all read this index;
-- being partial, it stays as small as the backlog rather than the whole table.
-- The relay's queries repeat its predicate literally so the planner can use it.
CREATE INDEX IF NOT EXISTS operation_waiting
    ON operation (timestamp, op_id)
    WHERE trustlog_status = 'NOT_TRUSTLOGGED';

CREATE TABLE IF NOT EXISTS trustlog_cursor (
    cursor_key      TEXT        NOT NULL PRIMARY KEY,
    cursor_value    TEXT        NOT NULL,
    last_updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS trustlog_retry (
    -- The collation of operation.op_id, so the two join and compare without a cast.
    op_id         VARCHAR(64) COLLATE "C" NOT NULL PRIMARY KEY,
    retry_count   BIGINT      NOT NULL DEFAULT 0,
    retry_status  VARCHAR(20) NOT NULL DEFAULT 'PENDING'
                  CONSTRAINT trustlog_retry_retry_status_value
                  CHECK (retry_status IN ('PENDING', 'RETRYING', 'DEAD_LETTER')),
    last_retry_at TIMESTAMPTZ NULL,
    next_retry_at TIMESTAMPTZ NULL,
    error_message TEXT        NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Due retries (status, then due time, then op_id). op_id is part of the key so that rows
-- due at the same instant (a replay of many dead letters) come out in the relay's order
-- without a sort: each retry batch reads only its own rows. It replaces
-- trustlog_retry_due (status, due time), dropped below.
CREATE INDEX IF NOT EXISTS trustlog_retry_due_order
    ON trustlog_retry (retry_status, next_retry_at, op_id);
DROP INDEX IF EXISTS trustlog_retry_due;

-- Which host delivers for a cursor key (trustlog_cursor.cursor_key). Hosts sharing
-- the database take turns through this row: one holds it, renews it every few seconds
-- and releases it when it stops; the others stand by and take it once it is released
-- or has run out (a host killed without a release). holder is '' once released; state
-- is what the holder last said of its delivery ('running', 'outage: ...').
CREATE TABLE IF NOT EXISTS trustlog_lease (
    lease_key   TEXT        NOT NULL PRIMARY KEY,
    holder      TEXT        NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    state       TEXT        NOT NULL DEFAULT ''
);

-- The wake-up NOTIFY (see the header). A statement-level trigger sends one
-- notification per INSERT statement however many rows it carries.
CREATE OR REPLACE FUNCTION trustlog_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trustlog_operation', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER trustlog_operation_notify
    AFTER INSERT ON operation
    FOR EACH STATEMENT EXECUTE FUNCTION trustlog_notify();

COMMIT;

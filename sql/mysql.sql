-- trustlog schema for MySQL 8.0.16+ and MariaDB (InnoDB, utf8mb4; tested on MariaDB 10.11).
--
-- Idempotent: every statement is CREATE TABLE IF NOT EXISTS with its indexes inside it
-- (CREATE INDEX IF NOT EXISTS is MariaDB-only), so running it on each start is safe:
--   mariadb test < sql/mysql.sql        or        mysql test < sql/mysql.sql
-- Table, column and status names follow the seed (go-trustlog-persistence), so a
-- database shared with it keeps working.
--
-- Text
--   utf8mb4 throughout, so any Unicode text (Chinese, emoji) fits. VARCHAR sizes count
--   characters and match the LIMITS of guest/src/validate.rs. The relay's connections
--   run with STRICT_ALL_TABLES: an over-long value is an error, never silently cut.
--   The collation is utf8mb4_bin: case-sensitive, and comparing code points, which is
--   UTF-8 byte order, the order the relay's keyset cursor uses.
--
-- operation.op_id
--   At most 64 characters. utf8mb4_bin is a PAD SPACE collation on both servers (the
--   NO PAD binary collations, utf8mb4_0900_bin and utf8mb4_nopad_bin, exist on one
--   server each): it compares as if the shorter string were padded with spaces, so
--   'a' and 'a ' are the same key, and 'a<TAB>' sorts before 'a'. Byte order and the
--   index order agree exactly when no op_id ends in a space or holds an ASCII control
--   character; operation_op_id_chars refuses those, so the keyset scan can never see
--   rows out of the relay's order.
--
-- Timestamps
--   DATETIME(6) holding UTC, microsecond precision; never TIMESTAMP, which converts
--   through the session time zone and ends in 2038. The relay's connections set
--   time_zone = '+00:00'. The range is 1000-01-01 00:00:00.000000 to
--   9999-12-31 23:59:59.999999. Many rows may share one timestamp; op_id breaks ties.
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
--           UTC_TIMESTAMP(6));          -- e.g. 2026-11-24 10:23:54.123456
--
--   Pass UTC: UTC_TIMESTAMP(6), or the application's clock converted to UTC; NOW(6)
--   is in the session time zone. A row whose op_id exists is refused with error 1062;
--   add ON DUPLICATE KEY UPDATE op_id = op_id to skip it (not INSERT IGNORE, which
--   also turns a too-long value into a silently truncated one).
--
-- trustlog_cursor.cursor_value
--   '<RFC 3339 UTC, exactly 6 fractional digits, Z>|<op_id>', e.g.
--   '2026-11-24T10:23:54.123456Z|op-00001'; split at the first '|'. An empty string
--   means the cursor has no position yet.

CREATE TABLE IF NOT EXISTS operation (
    op_id              VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
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
    trustlog_status    VARCHAR(32)  NOT NULL DEFAULT 'NOT_TRUSTLOGGED',
    timestamp          DATETIME(6)  NOT NULL,
    PRIMARY KEY (op_id),
    -- MySQL has no partial index, so the status leads: one index serves the cursor
    -- scan and the sweep (an equality on the status, then a range in keyset order, no
    -- sort), the lag figure (oldest waiting row) and the per-status counts.
    -- The relay's queries name it (FORCE INDEX (operation_waiting)): keep the name.
    INDEX operation_waiting (trustlog_status, timestamp, op_id),
    -- LIKE compares without padding, so this sees the trailing space '<>' would not.
    CONSTRAINT operation_op_id_chars
        CHECK (op_id NOT LIKE '% ' AND op_id NOT REGEXP '[[:cntrl:]]'),
    CONSTRAINT operation_trustlog_status_value
        CHECK (trustlog_status IN ('NOT_TRUSTLOGGED', 'TRUSTLOGGED', 'DB_ONLY'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS trustlog_cursor (
    cursor_key      VARCHAR(255) NOT NULL,
    cursor_value    VARCHAR(255) NOT NULL,
    last_updated_at DATETIME(6)  NOT NULL,
    PRIMARY KEY (cursor_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS trustlog_retry (
    op_id         VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    retry_count   INT         NOT NULL DEFAULT 0,
    retry_status  VARCHAR(32) NOT NULL DEFAULT 'PENDING',
    last_retry_at DATETIME(6) NULL,
    next_retry_at DATETIME(6) NULL,
    -- A publisher's error text has no length limit; MEDIUMTEXT holds 16 MiB.
    error_message MEDIUMTEXT  NULL,
    created_at    DATETIME(6) NOT NULL,
    updated_at    DATETIME(6) NOT NULL,
    PRIMARY KEY (op_id),
    -- Due retries (status, then due time) and the pending / dead-letter counts.
    INDEX trustlog_retry_due (retry_status, next_retry_at),
    CONSTRAINT trustlog_retry_retry_status_value
        CHECK (retry_status IN ('PENDING', 'RETRYING', 'DEAD_LETTER'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Which host delivers for a cursor key (trustlog_cursor.cursor_key). Hosts sharing the
-- database take turns through this row: one holds it, renews it every few seconds and
-- releases it when it stops; the others stand by and take it once it is released or has
-- run out (a host killed without a release). holder is '' once released; state is what
-- the holder last said of its delivery ('running', 'outage: ...').
CREATE TABLE IF NOT EXISTS trustlog_lease (
    lease_key   VARCHAR(255)  NOT NULL,
    holder      VARCHAR(255)  NOT NULL,
    acquired_at DATETIME(6)   NOT NULL,
    renewed_at  DATETIME(6)   NOT NULL,
    expires_at  DATETIME(6)   NOT NULL,
    state       VARCHAR(1024) NOT NULL DEFAULT '',
    PRIMARY KEY (lease_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

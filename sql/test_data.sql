-- Sample rows for trying trustlog by hand on PostgreSQL or MySQL/MariaDB.
--
--   psql postgres://postgres@127.0.0.1/test -f sql/postgresql.sql -f sql/test_data.sql
--   mariadb -h 127.0.0.1 -u root test < sql/mysql.sql && mariadb -h 127.0.0.1 -u root test < sql/test_data.sql
--
-- Timestamps are UTC. MySQL's DATETIME(6) takes them as written; PostgreSQL reads a
-- literal without an offset in the session's time zone, so run psql with PGTZ=UTC if
-- the server's TimeZone is not UTC. (SQLite stores integer microseconds: see sql/sqlite.sql.)
--
-- Five rows wait for delivery (three share one timestamp, so the keyset cursor's
-- tie-break matters), one is a db-only row no scan picks up, one is already
-- trustlogged, one is in the retry queue and one is a dead letter.

INSERT INTO operation
    (op_id, op_actor, doid, producer_id, request_body_hash, response_body_hash,
     op_source, op_type, do_prefix, do_repository, client_ip, server_ip, trustlog_status, timestamp)
VALUES
    ('sample-0001', 'alice', '10.1000/sample.1', 'svc-orders', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', NULL,
     'IRP', 'Create', '10.1000', 'repo-a', '192.0.2.10', '198.51.100.7', 'NOT_TRUSTLOGGED', '2026-11-24 09:00:00.000001'),
    ('sample-0002', 'bob', '10.1000/sample.2', 'svc-orders', NULL, NULL,
     'DOIP', 'Update', '10.1000', 'repo-a', NULL, NULL, 'NOT_TRUSTLOGGED', '2026-11-24 09:00:00.000002'),
    ('sample-0003', '张三', '10.1000/样本.3', 'svc-档案', '', '',
     'IRP', 'Retrieve', '10.1000', '仓库-b', '2001:db8::1', '', 'NOT_TRUSTLOGGED', '2026-11-24 09:00:00.000002'),
    ('sample-0004', 'carol', '10.1000/sample.4', 'svc-billing', NULL, 'cafe',
     'IRP', 'Delete', '10.1000', 'repo-c', '192.0.2.11', NULL, 'NOT_TRUSTLOGGED', '2026-11-24 09:00:00.000002'),
    ('sample-0005', 'dave', '10.1000/sample.5', 'svc-billing', NULL, NULL,
     'DOIP', 'Create', '10.1000', 'repo-c', NULL, NULL, 'NOT_TRUSTLOGGED', '2026-11-24 09:00:01.500000'),
    ('sample-0006', 'erin', '10.1000/sample.6', 'svc-audit', NULL, NULL,
     'IRP', 'Create', '10.1000', 'repo-d', NULL, NULL, 'DB_ONLY', '2026-11-24 09:00:02.000000'),
    ('sample-0007', 'frank', '10.1000/sample.7', 'svc-audit', NULL, NULL,
     'IRP', 'Update', '10.1000', 'repo-d', NULL, NULL, 'TRUSTLOGGED', '2026-11-24 08:59:00.000000'),
    ('sample-0008', 'grace', '10.1000/sample.8', 'svc-orders', NULL, NULL,
     'IRP', 'Create', '10.1000', 'repo-a', NULL, NULL, 'NOT_TRUSTLOGGED', '2026-11-24 08:58:00.000000'),
    ('sample-0009', 'heidi', '10.1000/sample.9', 'svc-orders', NULL, NULL,
     'IRP', 'Create', '10.1000', 'repo-a', NULL, NULL, 'NOT_TRUSTLOGGED', '2026-11-24 08:57:00.000000');

INSERT INTO trustlog_retry
    (op_id, retry_count, retry_status, last_retry_at, next_retry_at, error_message, created_at, updated_at)
VALUES
    ('sample-0008', 2, 'RETRYING', '2026-11-24 09:01:00.000000', '2026-11-24 09:05:00.000000',
     'transient: connection refused', '2026-11-24 08:58:00.000000', '2026-11-24 09:01:00.000000'),
    ('sample-0009', 5, 'DEAD_LETTER', '2026-11-24 09:30:00.000000', NULL,
     'permanent: 422 doid not registered', '2026-11-24 08:57:00.000000', '2026-11-24 09:30:00.000000');

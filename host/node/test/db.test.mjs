// The SQLite adapter's guarantees, those host/src/db/sqlite.rs tests for its own: the
// connection's settings, what insert and apply do and refuse, and how failures map.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';

import Database from 'better-sqlite3';

import { SqliteDb } from '../src/db.mjs';
import { DbError } from '../src/db-error.mjs';
import { RECORD_FIELDS } from '../src/pack.mjs';

const KEY = 'operation_scan';
let dir;
let db;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'trustlog-db-'));
  db = SqliteDb.open(join(dir, 'trustlog.db'));
});
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

function op(opId, timestamp, fields = {}) {
  return {
    opId, opActor: 'alice', doid: `10.1000/${opId}`, producerId: 'p', requestBodyHash: 'sha256:1', responseBodyHash: undefined,
    opSource: 'api', opType: 'create', doPrefix: '10.1000', doRepository: 'repo', clientIp: '192.0.2.1', serverIp: undefined,
    timestamp: BigInt(timestamp), ...fields,
  };
}

/** The operations of a packed batch, read back by its ends as the guest reads them. */
function unpack(batch) {
  const text = Buffer.from(batch.text, 'utf8');
  const ops = [];
  let start = 0;
  batch.timestamps.forEach((timestamp, row) => {
    const o = { timestamp };
    RECORD_FIELDS.forEach((field, i) => {
      const end = batch.ends[row * RECORD_FIELDS.length + i];
      const bit = { 4: 1, 5: 2, 10: 4, 11: 8 }[i];
      o[field] = bit && batch.absent[row] & bit ? undefined : text.subarray(start, end).toString('utf8');
      start = end;
    });
    ops.push(o);
  });
  return ops;
}

const position = (timestamp, opId) => ({ timestamp: BigInt(timestamp), opId });
const work = (fields) => ({ now: 5n, trustlogged: [], retries: [], deleteRetries: [], cursor: undefined, ...fields });

function thrown(f) {
  try {
    f();
  } catch (e) {
    return e;
  }
  assert.fail('expected a failure');
}

test('the connection uses WAL, full sync and a 10 s busy timeout', () => {
  const c = db.connection;
  assert.equal(c.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(c.pragma('synchronous', { simple: true }), 2);
  assert.equal(c.pragma('busy_timeout', { simple: true }), 10_000);
});

test('Chinese UTF-8 text round-trips through insert, scan, apply and the cursor', () => {
  const o = op('操作-0001', 1, { opActor: '张三', doid: '10.1000/仓库/数字对象-甲', opType: '创建', responseBodyHash: '哈希值🙂' });
  assert.deepEqual(db.insert([o], 'not-trustlogged'), ['inserted']);
  assert.deepEqual(unpack(db.scanAfter(undefined, 10)), [o]);
  db.apply(work({ cursor: { key: KEY, expected: undefined, to: position(1, o.opId) } }));
  assert.deepEqual(db.loadCursor(KEY), position(1, o.opId));
});

test('an op_id over 64 characters is invalid, naming op_id, and nothing of the batch is stored', () => {
  const e = thrown(() => db.insert([op('fine', 1), op('x'.repeat(65), 2)], 'not-trustlogged'));
  assert.ok(e instanceof DbError);
  assert.equal(e.tag, 'invalid');
  assert.equal(e.val.field, 'op_id');
  assert.match(e.val.message, /CHECK constraint failed/);
  assert.equal(db.stats(KEY).total, 0n);
  // 64 characters, not bytes: 64 Chinese characters fit.
  assert.deepEqual(db.insert([op('操'.repeat(64), 1)], 'db-only'), ['inserted']);
});

test('an existing op_id is a duplicate and stays untouched; of two in one batch the first is stored', () => {
  db.insert([op('a', 1)], 'db-only');
  assert.deepEqual(db.insert([op('a', 9, { opActor: 'mallory' }), op('b', 2), op('b', 3)], 'not-trustlogged'), ['duplicate', 'inserted', 'duplicate']);
  const rows = db.connection.prepare('SELECT op_id, op_actor, timestamp, trustlog_status FROM operation ORDER BY op_id').all();
  assert.deepEqual(rows, [
    { op_id: 'a', op_actor: 'alice', timestamp: 1, trustlog_status: 'DB_ONLY' },
    { op_id: 'b', op_actor: 'alice', timestamp: 2, trustlog_status: 'NOT_TRUSTLOGGED' },
  ]);
});

test('scan-after reads waiting rows strictly after the position, skipping rows with a retry row', () => {
  db.insert([op('a', 1), op('b', 1), op('c', 2), op('d', 3)], 'not-trustlogged');
  db.insert([op('local', 2)], 'db-only');
  db.apply(work({ retries: [{ opId: 'c', retryCount: 0, retryStatus: 'pending', lastRetryAt: undefined, nextRetryAt: 100n, errorMessage: 'nack' }] }));
  assert.deepEqual(unpack(db.scanAfter(position(1, 'a'), 10)).map((o) => o.opId), ['b', 'd']);
  assert.deepEqual(unpack(db.scanAfter(undefined, 2)).map((o) => o.opId), ['a', 'b']);
  assert.deepEqual(unpack(db.sweepCandidates(position(3, 'd'), 1n, 10)).map((o) => o.opId), ['a', 'b']);
  assert.deepEqual(unpack(db.sweepCandidates(position(3, 'd'), 2n, 10)).map((o) => o.opId), []);
});

test('due retries come joined with their operations, oldest due first, with their counts', () => {
  db.insert([op('a', 1), op('b', 2), op('c', 3)], 'not-trustlogged');
  const retry = (opId, retryStatus, nextRetryAt, retryCount) => ({ opId, retryCount, retryStatus, lastRetryAt: 1n, nextRetryAt, errorMessage: 'x' });
  db.apply(work({ retries: [retry('a', 'retrying', 30n, 2), retry('b', 'pending', 20n, 0), retry('c', 'dead-letter', undefined, 5)] }));
  const due = db.dueRetries(30n, 10);
  assert.deepEqual(unpack(due.ops).map((o) => o.opId), ['b', 'a']);
  assert.deepEqual([...due.retryCounts], [0, 2]);
  assert.equal(unpack(db.dueRetries(29n, 10).ops).length, 1);
  const stats = db.stats(KEY);
  assert.equal(stats.retryPending, 2n);
  assert.equal(stats.deadLetter, 1n);
  assert.equal(stats.nextRetryAt, 20n);
});

test('apply is one transaction with compare-and-set on the cursor: a mismatch applies nothing', () => {
  db.insert([op('a', 1), op('b', 2)], 'not-trustlogged');
  db.apply(work({ trustlogged: ['a'], cursor: { key: KEY, expected: undefined, to: position(1, 'a') } }));
  const stale = work({
    trustlogged: ['b'],
    retries: [{ opId: 'b', retryCount: 0, retryStatus: 'pending', lastRetryAt: undefined, nextRetryAt: 9n, errorMessage: 'e' }],
    cursor: { key: KEY, expected: position(0, 'z'), to: position(2, 'b') },
  });
  const e = thrown(() => db.apply(stale));
  assert.deepEqual([e.tag, e.val], ['cursor-moved', KEY]);
  // Setting a cursor believed unset, while it is set, is a mismatch too.
  assert.equal(thrown(() => db.apply({ ...stale, cursor: { ...stale.cursor, expected: undefined } })).tag, 'cursor-moved');
  const stats = db.stats(KEY);
  assert.deepEqual([stats.trustlogged, stats.notTrustlogged, stats.retryPending], [1n, 1n, 0n]);
  assert.deepEqual(stats.cursor, position(1, 'a'));
  db.apply({ ...stale, cursor: { ...stale.cursor, expected: position(1, 'a') } });
  assert.deepEqual(db.loadCursor(KEY), position(2, 'b'));
});

test('a cursor only moves forward', () => {
  const e = thrown(() => db.apply(work({ cursor: { key: KEY, expected: position(5, 'b'), to: position(5, 'a') } })));
  assert.equal(e.tag, 'other');
  assert.match(e.val, /only moves forward/);
});

test('a cursor the seed wrote as a bare timestamp is read as the instant before it, and rewritten', () => {
  db.connection.prepare("INSERT INTO trustlog_cursor VALUES (?, '2026-11-24 18:23:54.123456+08:00', 0)").run(KEY);
  assert.deepEqual(db.loadCursor(KEY), position(1_795_515_834_123_456n, ''));
  assert.equal(db.connection.prepare('SELECT cursor_value FROM trustlog_cursor').pluck().get(), '2026-11-24T10:23:54.123456Z|');
  db.connection.prepare("UPDATE trustlog_cursor SET cursor_value = 'op-00001'").run();
  const e = thrown(() => db.loadCursor(KEY));
  assert.equal(e.tag, 'other');
  assert.match(e.val, /cursor "operation_scan": malformed cursor value "op-00001"/);
});

test('a database locked by another writer is unavailable', () => {
  const impatient = new SqliteDb(new Database(join(dir, 'trustlog.db'), { timeout: 0 }), { migrate: false });
  impatient.connection.pragma('busy_timeout = 0');
  db.connection.prepare('BEGIN IMMEDIATE').run();
  try {
    const e = thrown(() => impatient.insert([op('a', 1)], 'not-trustlogged'));
    assert.equal(e.tag, 'unavailable');
    assert.match(e.val, /locked|busy/i);
  } finally {
    db.connection.prepare('ROLLBACK').run();
    impatient.close();
  }
});

test('an unopenable path is unavailable', () => {
  const e = thrown(() => SqliteDb.open(join(dir, 'no', 'such', 'dir', 'x.db')));
  assert.equal(e.tag, 'unavailable');
});

test('a row that cannot be read is a fault naming its column; the rows around it go on', () => {
  db.insert([op('a', 1), op('c', 3)], 'not-trustlogged');
  const c = db.connection;
  c.prepare("INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) VALUES ('b', CAST(X'61ff' AS TEXT), 'd', 'p', 'api', 'create', '10', 'r', 2)").run();
  c.prepare("INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) VALUES ('t', 'x', 'd', 'p', 'api', 'create', '10', 'r', '2026-11-24T10:23:54.123456Z')").run();
  // A U+FFFD really stored is text like any other.
  c.prepare("INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, do_prefix, do_repository, timestamp) VALUES ('u', 'a\uFFFDb', 'd', 'p', 'api', 'create', '10', 'r', 4)").run();
  const batch = db.scanAfter(undefined, 10);
  assert.deepEqual(unpack(batch).map((o) => [o.opId, o.timestamp]), [['a', 1n], ['c', 3n], ['u', 4n], ['t', 1_795_515_834_123_456n]]);
  assert.deepEqual(batch.faults.map((f) => [f.opId, f.column, f.retryCount]), [['b', 'op_actor', 0]]);
  assert.match(batch.faults[0].message, /not UTF-8/);
});

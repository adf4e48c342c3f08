// How the component's calls and failures cross the boundary: engine errors as
// EngineError with the WIT variant, a trap as a fresh instance on the next call, and a
// trust log that stops answering as `unavailable` rather than a spent retry.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SqliteDb } from '../src/db.mjs';
import { DEFAULT_CONFIG, Engine, EngineError } from '../src/engine.mjs';

const NOW = 1_764_000_010_000_000n;

function op(i) {
  return {
    opId: `op-${i}`, opActor: 'a', doid: 'd', producerId: 'p', requestBodyHash: undefined, responseBodyHash: undefined,
    opSource: 'api', opType: 'create', doPrefix: '10.1000', doRepository: 'r', clientIp: undefined, serverIp: undefined,
    timestamp: 1_764_000_000_000_000n + BigInt(i),
  };
}

async function engineOver(publisher) {
  const db = SqliteDb.open(':memory:');
  const engine = await Engine.create({ db, publisher, log: { log() {} } });
  return { db, engine };
}

const confirmAll = { publish: (envelopes) => envelopes.map(() => ({ tag: 'ok', val: undefined })) };

test('a call before configure fails as engine-error not-configured', async () => {
  const { db, engine } = await engineOver(confirmAll);
  assert.throws(() => engine.scanTick(NOW), (e) => e instanceof EngineError && e.payload.tag === 'not-configured' && e.message === 'engine not configured');
  db.close();
});

test('an invalid configuration is refused naming its field', async () => {
  const { db, engine } = await engineOver(confirmAll);
  assert.throws(() => engine.configure({ ...DEFAULT_CONFIG, batchSize: 0 }), (e) => e.payload.tag === 'invalid-config' && /batch/.test(e.payload.val.field));
  db.close();
});

test('a database failure reaches the caller as engine-error db, with the db-error case', async () => {
  const { db, engine } = await engineOver(confirmAll);
  engine.configure(DEFAULT_CONFIG);
  db.connection.exec('DROP TABLE trustlog_cursor');
  assert.throws(() => engine.scanTick(NOW), (e) => e.payload.tag === 'db' && e.payload.val.tag === 'other' && /no such table/.test(e.message));
  db.close();
});

test('a trap leaves the engine usable: the next call runs on a fresh instance, configured as before', async () => {
  let fail = true;
  const publisher = {
    publish(envelopes) {
      if (fail) {
        fail = false;
        throw new Error('a host bug, not a publish-error');
      }
      return confirmAll.publish(envelopes);
    },
  };
  const { db, engine } = await engineOver(publisher);
  engine.configure({ ...DEFAULT_CONFIG, batchSize: 2, pipelineDepth: 3 });
  engine.record([op(1), op(2), op(3)], undefined);
  assert.throws(() => engine.scanTick(NOW), /a host bug/);
  const report = engine.scanTick(NOW);
  assert.equal(report.published, 0, 'the pipeline depth configured before the trap still holds: the batch is out');
  assert.equal(report.more, true);
  const settled = engine.scanSettle(NOW);
  assert.equal(settled.published, 2, 'the batch size configured before the trap still holds');
  assert.equal(settled.more, false);
  db.close();
});

test('a transient failure while the trust log does not answer is unavailable: no retry is spent', async () => {
  const publisher = {
    publish: (envelopes) => envelopes.map(() => ({ tag: 'err', val: { tag: 'transient', val: 'timeout' } })),
    ready() {
      throw new Error('connection refused');
    },
  };
  const { db, engine } = await engineOver(publisher);
  engine.configure(DEFAULT_CONFIG);
  engine.record([op(1)], undefined);
  const report = engine.scanTick(NOW);
  assert.equal(report.unavailable, 1);
  assert.equal(report.retryScheduled, 0);
  assert.match(report.error, /the trust log does not answer: connection refused/);
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).retryPending, 0n);
  db.close();
});

test('a unit of work begun in the pipeline fails through its commit\'s outcome, as apply fails: a moved cursor is a conflict', async () => {
  const { db, engine } = await engineOver(confirmAll);
  engine.configure({ ...DEFAULT_CONFIG, batchSize: 2, pipelineDepth: 3 });
  engine.record([op(1), op(2), op(3)], undefined);
  const first = engine.scanTick(NOW);
  assert.deepEqual([first.fetched, first.more], [0, true], 'the batch is out, not committed');
  // Another worker moves the cursor before the batch commits.
  db.apply({ now: NOW, trustlogged: [], retries: [], deleteRetries: [], cursor: { key: DEFAULT_CONFIG.cursorKey, expected: undefined, to: { timestamp: op(1).timestamp, opId: 'op-1' } } });
  const settled = engine.scanSettle(NOW);
  assert.equal(settled.cursorConflict, true);
  assert.equal(settled.published, 0, 'nothing counted as committed');
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).trustlogged, 0n, 'the conflicting unit of work applied nothing');
  assert.equal(db.loadCursor(DEFAULT_CONFIG.cursorKey).opId, 'op-1', 'the other worker\'s cursor stands');
  // The next scan reads from that cursor and delivers the rest.
  const next = engine.scanTick(NOW);
  const rest = engine.scanSettle(NOW);
  assert.equal(next.published + rest.published, 2);
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).trustlogged, 2n);
  db.close();
});

test('a host bug in begin-apply traps at once, in the call that began the unit of work', async () => {
  const sqlite = SqliteDb.open(':memory:');
  let commits = 0;
  const db = new Proxy(sqlite, {
    get(target, name) {
      if (name === 'apply') {
        return (work) => {
          if (work.trustlogged.length > 0 && ++commits === 2) throw new Error('a host bug, not a db-error');
          return target.apply(work);
        };
      }
      const value = target[name];
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const engine = await Engine.create({ db, publisher: confirmAll, log: { log() {} } });
  engine.configure({ ...DEFAULT_CONFIG, batchSize: 2, pipelineDepth: 3 });
  engine.record([1, 2, 3, 4, 5, 6, 7, 8].map(op), undefined);
  // Depth 3: the third call reads the third batch while the second one commits, its
  // outcome collected only by the call after; the bug surfaces where it happened.
  engine.scanTick(NOW);
  engine.scanTick(NOW);
  assert.throws(() => engine.scanTick(NOW), /a host bug/);
  assert.equal(sqlite.stats(DEFAULT_CONFIG.cursorKey).trustlogged, 2n, 'the first batch committed before it');
  // The fresh instance reads on from the cursor and delivers the rest.
  let published = 0;
  for (let report = { more: true }; report.more;) {
    report = engine.scanTick(NOW);
    published += report.published;
  }
  published += engine.scanSettle(NOW).published;
  assert.equal(published, 6);
  assert.equal(sqlite.stats(DEFAULT_CONFIG.cursorKey).trustlogged, 8n);
  sqlite.close();
});

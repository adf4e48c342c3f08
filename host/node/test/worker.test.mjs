// The tick loop on a real database, with publishers that fail on purpose: it drains
// across passes, pauses through an outage and resumes, waits for a due retry, and stops
// on shutdown.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SqliteDb } from '../src/db.mjs';
import { DEFAULT_CONFIG, Engine } from '../src/engine.mjs';
import { nowMicros } from '../src/clock.mjs';
import { sampleOperation } from '../src/sample.mjs';
import { Worker } from '../src/worker.mjs';

// The outages below are on purpose; their warnings would only clutter the test report.
process.env.TRUSTLOG_LOG = 'error';

async function setUp(publisher, config = {}, ops = 50) {
  const db = SqliteDb.open(':memory:');
  const engine = await Engine.create({ db, publisher, log: { log() {} } });
  engine.configure({ ...DEFAULT_CONFIG, ...config });
  const base = nowMicros() - 1_000_000n;
  engine.record(Array.from({ length: ops }, (_, i) => sampleOperation('w', i, base)), undefined);
  return { db, engine, worker: new Worker({ engine, db, publisher }) };
}

function recorder(fail = () => undefined) {
  const confirmed = [];
  return {
    confirmed,
    publish: (envelopes) => envelopes.map(({ opId }) => {
      const kind = fail(opId);
      if (kind) return { tag: 'err', val: { tag: kind, val: `${kind} on purpose` } };
      confirmed.push(opId);
      return { tag: 'ok', val: undefined };
    }),
  };
}

test('until drained, every waiting row is delivered once across passes', async () => {
  const publisher = recorder();
  const { db, worker } = await setUp(publisher, { batchSize: 7 });
  const summary = await worker.run({ untilDrained: true });
  assert.equal(summary.exit, 'drained');
  assert.equal(summary.published, 50);
  assert.equal(new Set(publisher.confirmed).size, 50);
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).trustlogged, 50n);
  db.close();
});

test('an unreachable trust log pauses delivery, is probed, and delivery resumes without spending retries', async () => {
  let down = 3;
  const publisher = {
    ...recorder(() => (down > 0 ? 'unavailable' : undefined)),
    probe() {
      down -= 1;
      if (down > 0) throw new Error('still down');
    },
  };
  const { db, worker } = await setUp(publisher, { batchSize: 20 });
  const started = Date.now();
  const summary = await worker.run({ untilDrained: true });
  assert.equal(summary.exit, 'drained');
  assert.equal(summary.published, 50);
  assert.equal(summary.retryScheduled, 0);
  assert.ok(Date.now() - started >= 250 + 500, 'it waited through the probes');
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).retryPending, 0n);
  db.close();
});

test('a drain waits for a due retry and delivers it', async () => {
  let failures = 1;
  const publisher = recorder((opId) => (opId === 'w-0000003' && failures-- > 0 ? 'transient' : undefined));
  const backoff = { ...DEFAULT_CONFIG.backoff, baseMicros: 300_000n };
  const { db, worker } = await setUp(publisher, { backoff }, 10);
  const summary = await worker.run({ untilDrained: true });
  assert.equal(summary.exit, 'drained');
  assert.equal(summary.retryScheduled, 1);
  assert.equal(summary.published, 10);
  const stats = db.stats(DEFAULT_CONFIG.cursorKey);
  assert.deepEqual([stats.trustlogged, stats.retryPending, stats.deadLetter], [10n, 0n, 0n]);
  db.close();
});

test('serving stops on shutdown, between batches', async () => {
  const publisher = recorder();
  const { db, worker } = await setUp(publisher);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 300);
  const summary = await worker.run({ signal: controller.signal });
  assert.equal(summary.exit, 'shutdown');
  assert.equal(summary.published, 50);
  db.close();
});

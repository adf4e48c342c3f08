// The tick loop on a real database, with publishers that fail on purpose: it drains
// across passes, pauses through an outage and resumes, waits for a due retry, and stops
// on shutdown; with the scan pipelined, into a real ledger, every row is delivered once
// and a stop leaves no confirmed row unmarked.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { SqliteDb } from '../src/db.mjs';
import { DEFAULT_CONFIG, Engine } from '../src/engine.mjs';
import { nowMicros } from '../src/clock.mjs';
import { LedgerPublisher, verifyLedger } from '../src/ledger.mjs';
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

/** A ledger file in a fresh directory, removed after the test; `opIds()` reads its entries' op_ids back, in order. */
function ledgerFor(t) {
  const dir = mkdtempSync(join(tmpdir(), 'trustlog-worker-'));
  const path = join(dir, 'trustlog.ledger');
  const publisher = LedgerPublisher.open(path);
  t.after(() => {
    publisher.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const opIds = () => readFileSync(path, 'utf8').split('\n').slice(0, -1).map((line) => JSON.parse(line).payload.op_id);
  return { path, publisher, opIds };
}

/** The op_ids marked TRUSTLOGGED, in keyset order. */
function marked(db) {
  return db.connection.prepare("SELECT op_id FROM operation WHERE trustlog_status = 'TRUSTLOGGED' ORDER BY timestamp, op_id").pluck().all();
}

/** Counts the scan ticks that returned with batches out: nothing settled yet, `more` said. */
function countPipelinedTicks(engine) {
  const counts = { out: 0 };
  const scanTick = engine.scanTick.bind(engine);
  engine.scanTick = (now) => {
    const report = scanTick(now);
    if (report.more && report.fetched === 0) counts.out += 1;
    return report;
  };
  return counts;
}

test('a pipelined drain (depth 3, batches smaller than the backlog) puts every row into the ledger exactly once', async (t) => {
  const ledger = ledgerFor(t);
  const { db, engine, worker } = await setUp(ledger.publisher, { batchSize: 7, pipelineDepth: 3 }, 100);
  const pipelined = countPipelinedTicks(engine);
  const summary = await worker.run({ untilDrained: true });
  assert.equal(summary.exit, 'drained');
  assert.equal(summary.published, 100);
  assert.equal(summary.errors, 0);
  assert.ok(pipelined.out > 0, 'scan ticks returned with batches out');

  const ids = ledger.opIds();
  assert.equal(ids.length, 100);
  assert.equal(new Set(ids).size, 100, 'no row twice');
  assert.deepEqual(ids, marked(db), 'the ledger holds exactly the rows marked, in keyset order');
  assert.equal(verifyLedger(ledger.path).entries, 100);
  const stats = db.stats(DEFAULT_CONFIG.cursorKey);
  assert.deepEqual([stats.trustlogged, stats.notTrustlogged], [100n, 0n]);
  assert.equal(stats.cursor.opId, 'w-0000099', 'the cursor stands on the last row');
  db.close();
});

test('a serve stopped mid-drain settles the batches out: no row is confirmed and left unmarked', async (t) => {
  const ledger = ledgerFor(t);
  const controller = new AbortController();
  let db;
  let calls = 0;
  let atStop;
  // Stops the worker from inside the fifth batch's publish, with the pipeline full.
  const publisher = {
    publish(envelopes) {
      const results = ledger.publisher.publish(envelopes);
      if (++calls === 5) {
        atStop = { confirmed: ledger.publisher.ledger.length, marked: marked(db).length };
        controller.abort();
      }
      return results;
    },
    ready: () => ledger.publisher.ready(),
  };
  const setup = await setUp(publisher, { batchSize: 10, pipelineDepth: 3 }, 100);
  db = setup.db;
  const summary = await setup.worker.run({ signal: controller.signal });
  assert.equal(summary.exit, 'shutdown');
  assert.ok(atStop.confirmed > atStop.marked, `batches were out when it stopped (${atStop.confirmed} confirmed, ${atStop.marked} marked)`);

  const ids = ledger.opIds();
  assert.ok(ids.length >= 50 && ids.length < 100, `it stopped mid-drain (${ids.length} delivered)`);
  assert.deepEqual(ids, marked(db), 'every row in the ledger is marked, and only those');
  assert.equal(summary.published, ids.length);
  assert.equal(db.stats(DEFAULT_CONFIG.cursorKey).cursor.opId, ids.at(-1), 'the cursor stands on the last row delivered');

  // A later run delivers the rest, nothing twice.
  const rest = await new Worker({ engine: setup.engine, db, publisher }).run({ untilDrained: true });
  assert.equal(rest.exit, 'drained');
  assert.equal(rest.published, 100 - ids.length);
  const all = ledger.opIds();
  assert.equal(all.length, 100);
  assert.equal(new Set(all).size, 100);
  assert.deepEqual(all, marked(db));
  db.close();
});

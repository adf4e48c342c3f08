// Runs every scenario of tests/scenarios/engine.json as docs/scenarios.md describes it:
// a fresh SQLite database on sql/sqlite.sql per scenario, a scripted publisher that
// confirms every envelope unless a step said otherwise, and `now` given to every tick.
// A step or check this runner does not know fails the scenario: the file is the
// specification, so nothing in it may be skipped silently.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { SqliteDb } from '../src/db.mjs';
import { Engine } from '../src/engine.mjs';

const SCENARIOS = JSON.parse(readFileSync(new URL('../../../tests/scenarios/engine.json', import.meta.url), 'utf8'));
const DRAIN_LIMIT = 1_000;

for (const scenario of SCENARIOS.scenarios) {
  test(scenario.name, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trustlog-scenario-'));
    const db = SqliteDb.open(join(dir, 'trustlog.db'));
    try {
      await run(scenario, db);
    } finally {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

async function run(scenario, db) {
  const publisher = new ScriptedPublisher();
  const engine = await Engine.create({ db, publisher, log: { log() {} } });
  const config = configOf(scenario.config);
  engine.configure(config);
  // Every generated operation's timestamp, by op_id: what keyset order is checked against.
  const timestamps = new Map();
  let lastNow = 0n;
  for (const [index, step] of scenario.steps.entries()) {
    const where = `step ${index + 1} ${JSON.stringify(step)}`;
    const [kind] = Object.keys(step).filter((k) => ['record', 'publisher', 'tick', 'drain', 'check'].includes(k));
    switch (kind) {
      case 'record': {
        only(step, ['record', 'strategy', 'expect'], where);
        const ops = generate(step.record, where);
        for (const op of ops) timestamps.set(op.opId, op.timestamp);
        const outcomes = engine.record(ops, step.strategy).map((o) => o.tag);
        if (step.expect !== undefined) {
          const expected = Array.isArray(step.expect) ? step.expect : ops.map(() => step.expect);
          assert.deepEqual(outcomes, expected, `${where}: outcomes`);
        }
        break;
      }
      case 'publisher':
        only(step, ['publisher'], where);
        publisher.script(step.publisher, where);
        break;
      case 'tick':
      case 'drain': {
        only(step, [kind, 'now', 'expect'], where);
        const tick = tickOf(engine, step[kind], where);
        lastNow = BigInt(exact(step.now, `${where}: now`));
        let report = tick(lastNow);
        for (let calls = 1; kind === 'drain' && report.more; calls++) {
          assert.ok(calls < DRAIN_LIMIT, `${where}: still more after ${DRAIN_LIMIT} calls`);
          report = tick(lastNow);
        }
        for (const [field, value] of Object.entries(step.expect ?? {})) {
          assert.ok(field in snakeCase(report), `${where}: the tick report has no field ${field}`);
          assert.deepEqual(plain(snakeCase(report)[field]), value, `${where}: ${field}`);
        }
        break;
      }
      case 'check':
        only(step, ['check'], where);
        check(step.check, { db, engine, publisher, timestamps, config, now: lastNow, where });
        break;
      default:
        assert.fail(`${where}: a step with no known kind`);
    }
  }
}

/** The state checks of a `check` step. */
function check(checks, { db, engine, publisher, timestamps, config, now, where }) {
  const sql = db.connection;
  for (const [name, expected] of Object.entries(checks)) {
    const at = `${where}: ${name}`;
    switch (name) {
      case 'published': {
        only(expected, ['count', 'each_once', 'keyset_order'], at);
        const ids = publisher.confirmed;
        if (expected.count !== undefined) assert.equal(ids.length, expected.count, `${at}: count`);
        if (expected.each_once) assert.equal(new Set(ids).size, ids.length, `${at}: an op_id was published twice: ${ids}`);
        if (expected.keyset_order) {
          const keys = ids.map((id) => [timestamps.get(id), id]);
          const sorted = [...keys].sort(([ta, a], [tb, b]) => (ta !== tb ? (ta < tb ? -1 : 1) : Buffer.compare(Buffer.from(a), Buffer.from(b))));
          assert.deepEqual(keys.map(([, id]) => id), sorted.map(([, id]) => id), `${at}: keyset order`);
        }
        break;
      }
      case 'status_counts': {
        const counts = Object.fromEntries(sql.prepare('SELECT trustlog_status, COUNT(*) AS n FROM operation GROUP BY trustlog_status').all().map((r) => [r.trustlog_status, Number(r.n)]));
        for (const [status, n] of Object.entries(expected)) assert.equal(counts[status] ?? 0, n, `${at}: ${status}`);
        break;
      }
      case 'retry_rows':
        assert.equal(Number(sql.prepare('SELECT COUNT(*) FROM trustlog_retry').pluck().get()), expected, at);
        break;
      case 'retry':
        for (const [opId, columns] of Object.entries(expected)) {
          const row = sql.prepare('SELECT * FROM trustlog_retry WHERE op_id = ?').safeIntegers(true).get(opId);
          assert.ok(row, `${at}: no retry row for ${opId}`);
          for (const [column, value] of Object.entries(columns)) {
            assert.ok(column in row, `${at}: trustlog_retry has no column ${column}`);
            assert.deepEqual(plain(row[column]), value, `${at}: ${opId}.${column}`);
          }
        }
        break;
      case 'cursor':
        assert.deepEqual(plain(snakeCase(db.loadCursor(config.cursorKey))), expected, at);
        break;
      case 'stats': {
        const stats = snakeCase(engine.status(now).stats);
        for (const [field, value] of Object.entries(expected)) {
          assert.ok(field in stats, `${at}: db-stats has no field ${field}`);
          assert.deepEqual(plain(stats[field]), value, `${at}: ${field}`);
        }
        break;
      }
      default:
        assert.fail(`${at}: unknown check`);
    }
  }
}

/** Confirms every envelope unless scripted to fail all or some, as a `publish-error` case. */
class ScriptedPublisher {
  confirmed = [];
  #failAll;
  #fail = new Map();

  script(script, where) {
    only(script, ['fail_all', 'fail'], where);
    this.#failAll = script.fail_all;
    this.#fail = new Map(Object.entries(script.fail ?? {}));
    for (const kind of [this.#failAll, ...this.#fail.values()]) {
      if (kind !== undefined) assert.ok(['transient', 'permanent', 'unavailable'].includes(kind), `${where}: unknown failure ${kind}`);
    }
  }

  publish(envelopes) {
    return envelopes.map(({ opId }) => {
      const kind = this.#failAll ?? this.#fail.get(opId);
      if (kind !== undefined) return { tag: 'err', val: { tag: kind, val: `scripted ${kind} failure of ${opId}` } };
      this.confirmed.push(opId);
      return { tag: 'ok', val: undefined };
    });
  }
}

/** The operations a `record` step's generator describes, in the order given to `record`. */
function generate(spec, where) {
  only(spec, ['prefix', 'from', 'count', 'per_timestamp', 'start', 'order'], where);
  const { prefix, from, count, per_timestamp: perTimestamp } = spec;
  const start = BigInt(exact(spec.start, `${where}: start`));
  const ops = [];
  for (let i = from; i < from + count; i++) {
    ops.push({
      opId: `${prefix}${String(i).padStart(4, '0')}`,
      opActor: `actor-${i}`,
      doid: `10.1000/obj-${i}`,
      producerId: 'producer-1',
      requestBodyHash: `sha256:${i}`,
      responseBodyHash: undefined,
      opSource: 'api',
      opType: 'create',
      doPrefix: '10.1000',
      doRepository: 'repo',
      clientIp: '192.0.2.1',
      serverIp: undefined,
      timestamp: start + BigInt(Math.floor((i - from) / perTimestamp)),
    });
  }
  const order = spec.order ?? 'ascending';
  assert.ok(['ascending', 'descending'].includes(order), `${where}: unknown order ${order}`);
  return order === 'descending' ? ops.reverse() : ops;
}

function tickOf(engine, name, where) {
  const ticks = {
    scan: (now) => engine.scanTick(now),
    'scan-settle': (now) => engine.scanSettle(now),
    retry: (now) => engine.retryTick(now),
    sweep: (now) => engine.sweepTick(now),
    'catch-up': (now) => engine.catchUpTick(now),
  };
  assert.ok(name in ticks, `${where}: unknown tick ${name}`);
  return ticks[name];
}

/**
 * The engine's `config` record from the file's snake_case, every field given but
 * `pipeline_depth`, which is 1 when left out (each scan tick settles what it reads).
 */
function configOf(c) {
  only(c, ['cursor_key', 'batch_size', 'backoff', 'default_strategy', 'catch_up_window_micros', 'pipeline_depth'], 'config');
  only(c.backoff, ['base_micros', 'factor', 'cap_micros', 'max_retries'], 'config.backoff');
  return {
    cursorKey: c.cursor_key,
    batchSize: c.batch_size,
    backoff: {
      baseMicros: BigInt(exact(c.backoff.base_micros, 'backoff.base_micros')),
      factor: c.backoff.factor,
      capMicros: BigInt(exact(c.backoff.cap_micros, 'backoff.cap_micros')),
      maxRetries: c.backoff.max_retries,
    },
    defaultStrategy: c.default_strategy,
    catchUpWindowMicros: BigInt(exact(c.catch_up_window_micros, 'catch_up_window_micros')),
    pipelineDepth: c.pipeline_depth === undefined ? 1 : exact(c.pipeline_depth, 'pipeline_depth'),
  };
}

/** Refuses keys the format does not define, so a typo cannot pass as an unchecked field. */
function only(object, keys, where) {
  const unknown = Object.keys(object).filter((k) => !keys.includes(k));
  assert.deepEqual(unknown, [], `${where}: unknown keys`);
}

/** A JSON number that is an exact integer (JSON.parse rounds beyond 2^53). */
function exact(value, where) {
  assert.ok(Number.isSafeInteger(value), `${where}: ${value} is not an integer JSON can hold exactly`);
  return value;
}

/** jco's camelCase fields as the file's snake_case, recursively. */
function snakeCase(value) {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) return value.map(snakeCase);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeCase(v)]));
}

/** A value as JSON writes it: BigInt as a number, none as null. */
function plain(value) {
  if (value === undefined || value === null) return null;
  if (typeof value === 'bigint') {
    assert.ok(value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER), `${value} is beyond what the file can state exactly`);
    return Number(value);
  }
  if (typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  return value;
}

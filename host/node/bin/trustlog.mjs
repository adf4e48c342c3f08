#!/usr/bin/env node
// The Node host's command line: `demo` and `serve` over a SQLite database and a ledger
// file. Human-readable lines go to stdout as the Rust CLI prints them, logs to stderr,
// and the last stdout line is always one JSON summary, for scripts and tests.

import { parseArgs } from 'node:util';

import { nowMicros } from '../src/clock.mjs';
import { formatTimestamp } from '../src/cursor-value.mjs';
import { SqliteDb } from '../src/db.mjs';
import { componentInfo, DEFAULT_CONFIG, describePublishError, Engine, MAX_PIPELINE_DEPTH } from '../src/engine.mjs';
import { LedgerPublisher, verifyLedger } from '../src/ledger.mjs';
import { sampleOperation } from '../src/sample.mjs';
import { Worker } from '../src/worker.mjs';

const USAGE = `usage:
  trustlog.mjs demo  --db PATH --ledger PATH --ops N [--batch-size N] [--pipeline-depth N]
      migrate, record N sample operations, deliver them to the ledger, print the status
  trustlog.mjs serve --db PATH --ledger PATH [--until-drained] [--batch-size N] [--pipeline-depth N]
      deliver what waits; with --until-drained exit once nothing is left waiting,
      else keep polling every second until SIGINT or SIGTERM
  --pipeline-depth N: scan batches out at once, 1 to 8 (default 3); 1 is one at a time`;

/** Operations per `record` call into the engine. */
const RECORD_CHUNK = 1_000;

/** A failure the user can act on: its message is all that is printed. */
class UsageError extends Error {}

async function main(argv) {
  const [command, ...rest] = argv;
  const commands = { demo, serve };
  if (command === '--help' || command === '-h') {
    console.log(USAGE);
    return 0;
  }
  if (!(command in commands)) throw new UsageError(command ? `unknown command ${JSON.stringify(command)}` : 'a command is needed');
  const { values } = parseOptions(command, rest);
  return commands[command](values);
}

function parseOptions(command, args) {
  const options = {
    db: { type: 'string' },
    ledger: { type: 'string' },
    'batch-size': { type: 'string' },
    'pipeline-depth': { type: 'string' },
    ...(command === 'demo' ? { ops: { type: 'string' } } : { 'until-drained': { type: 'boolean' } }),
  };
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (e) {
    throw new UsageError(e.message);
  }
  const need = command === 'demo' ? ['db', 'ledger', 'ops'] : ['db', 'ledger'];
  for (const name of need) {
    if (parsed.values[name] === undefined || parsed.values[name] === '') throw new UsageError(`--${name} is required`);
  }
  return parsed;
}

/** A whole number option, within bounds, or a UsageError naming it. */
function count(values, name, { min, max, fallback }) {
  const text = values[name];
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function engineConfig(values) {
  return {
    ...DEFAULT_CONFIG,
    batchSize: count(values, 'batch-size', { min: 1, max: 0xffff_ffff, fallback: DEFAULT_CONFIG.batchSize }),
    pipelineDepth: count(values, 'pipeline-depth', { min: 1, max: MAX_PIPELINE_DEPTH, fallback: DEFAULT_CONFIG.pipelineDepth }),
  };
}

/** Opens the database (migrating it) and the ledger, and runs `work` with them; closes both. */
async function withAdapters(values, work) {
  const component = componentInfo();
  const db = SqliteDb.open(values.db);
  try {
    const publisher = LedgerPublisher.open(values.ledger);
    try {
      return await work({ db, publisher, component });
    } finally {
      publisher.close();
    }
  } finally {
    db.close();
  }
}

/**
 * Refuses to deliver while a Rust host holds the lease on the cursor key: this host
 * does not take part in the lease, so the two would publish the same rows.
 */
function refuseIfLeased(db, cursorKey) {
  const lease = db.readLease(cursorKey);
  if (lease && lease.holder !== '' && lease.expires_at >= nowMicros()) {
    throw new Error(
      `host ${lease.holder} delivers for cursor key ${JSON.stringify(cursorKey)} (its lease runs until ${formatTimestamp(lease.expires_at)}): stop it first`,
    );
  }
}

/** SIGINT and SIGTERM abort the returned signal; the batch in flight is finished. */
function shutdownSignal() {
  const controller = new AbortController();
  for (const name of ['SIGINT', 'SIGTERM']) {
    process.once(name, () => {
      process.stderr.write(`${name}: shutdown requested; finishing the batches in flight\n`);
      controller.abort();
    });
  }
  return controller.signal;
}

async function demo(values) {
  const started = performance.now();
  const ops = count(values, 'ops', { min: 0, max: 10_000_000 });
  const config = engineConfig(values);
  return withAdapters(values, async ({ db, publisher, component }) => {
    refuseIfLeased(db, config.cursorKey);
    const engine = await Engine.create({ db, publisher });
    engine.configure(config);

    const base = nowMicros();
    const run = `demo-${base.toString(16)}`;
    const recorded = { stored: 0, duplicate: 0, rejected: 0 };
    for (let from = 0; from < ops; from += RECORD_CHUNK) {
      const chunk = [];
      for (let i = from; i < Math.min(from + RECORD_CHUNK, ops); i++) chunk.push(sampleOperation(run, i, base));
      engine.record(chunk, undefined).forEach((outcome, i) => {
        if (outcome.tag === 'stored') recorded.stored += 1;
        else reportRecordFailure(chunk[i].opId, outcome, recorded);
      });
    }
    console.log(`recorded ${ops} sample operations into ${values.db} (${recorded.stored} stored)`);

    const delivery = await deliver({ engine, db, publisher, untilDrained: true, signal: shutdownSignal() });
    if (delivery.summary.exit !== 'drained') throw new Error(`delivery did not drain: ${exitReason(delivery.summary)}`);
    console.log(`delivered ${delivery.summary.published} operations to ${values.ledger}`);
    const verified = verifyLedger(values.ledger);
    console.log(`ledger ${values.ledger} verified: ${verified.entries} entries, head ${verified.headHash}`);
    const status = engine.status(nowMicros());
    printStatus(status);
    const summary = {
      command: 'demo',
      component_sha256: component.sha256,
      db: values.db,
      ledger: values.ledger,
      recorded: ops,
      ...recorded,
      ...deliveryJson(delivery),
      elapsed_seconds: seconds(performance.now() - started),
      ...statusJson(status),
      ledger_entries: verified.entries,
      ledger_head: verified.headHash,
    };
    console.log(`done in ${summary.elapsed_seconds.toFixed(2)} s`);
    console.log(JSON.stringify(summary));
    return 0;
  });
}

async function serve(values) {
  const started = performance.now();
  const config = engineConfig(values);
  const untilDrained = values['until-drained'] === true;
  return withAdapters(values, async ({ db, publisher, component }) => {
    refuseIfLeased(db, config.cursorKey);
    const engine = await Engine.create({ db, publisher });
    engine.configure(config);
    process.stderr.write(`serving ${values.db} to ${values.ledger}${untilDrained ? ' until drained' : '; SIGINT or SIGTERM stops'}\n`);
    const delivery = await deliver({ engine, db, publisher, untilDrained, signal: shutdownSignal() });
    const status = engine.status(nowMicros());
    console.log(JSON.stringify({
      command: 'serve',
      component_sha256: component.sha256,
      db: values.db,
      ledger: values.ledger,
      until_drained: untilDrained,
      ...deliveryJson(delivery),
      elapsed_seconds: seconds(performance.now() - started),
      ...statusJson(status),
      ledger_entries: publisher.ledger?.length ?? null,
      ledger_head: publisher.ledger?.headHash ?? null,
    }));
    // --until-drained promises everything delivered; a drain that gave up breaks it.
    if (delivery.summary.exit === 'failing') {
      process.stderr.write(`error: not drained: ${exitReason(delivery.summary)}\n`);
      return 1;
    }
    return 0;
  });
}

async function deliver({ engine, db, publisher, untilDrained, signal }) {
  const started = performance.now();
  const summary = await new Worker({ engine, db, publisher }).run({ untilDrained, signal });
  return { summary, seconds: seconds(performance.now() - started) };
}

function deliveryJson({ summary, seconds: deliverySeconds }) {
  return {
    exit: summary.exit,
    delivered: summary.published,
    retry_scheduled: summary.retryScheduled,
    dead_lettered: summary.deadLettered,
    tick_errors: summary.errors,
    delivery_seconds: deliverySeconds,
    ops_per_second: deliverySeconds > 0 ? Math.round(summary.published / deliverySeconds) : null,
  };
}

/** The db stats as `trustlog status --json` names them, times in RFC 3339. */
function statusJson({ stats, cursorLagSeconds }) {
  const time = (micros) => (micros === undefined ? null : formatTimestamp(micros));
  return {
    stats: {
      total: Number(stats.total),
      trustlogged: Number(stats.trustlogged),
      not_trustlogged: Number(stats.notTrustlogged),
      db_only: Number(stats.dbOnly),
      retry_pending: Number(stats.retryPending),
      dead_letter: Number(stats.deadLetter),
      cursor: stats.cursor === undefined ? null : { timestamp: time(stats.cursor.timestamp), op_id: stats.cursor.opId },
      oldest_waiting: time(stats.oldestWaiting),
      next_retry_at: time(stats.nextRetryAt),
    },
    cursor_lag_seconds: cursorLagSeconds,
  };
}

function printStatus({ stats, cursorLagSeconds }) {
  const line = (name, value) => console.log(`${name.padEnd(19)}${value}`);
  line('total', stats.total);
  line('trustlogged', stats.trustlogged);
  line('not_trustlogged', stats.notTrustlogged);
  line('db_only', stats.dbOnly);
  line('retry_pending', stats.retryPending);
  line('dead_letter', stats.deadLetter);
  line('cursor_lag_seconds', cursorLagSeconds.toFixed(3));
  line('cursor', stats.cursor ? `${formatTimestamp(stats.cursor.timestamp)} ${stats.cursor.opId}` : '(not moved yet)');
  if (stats.nextRetryAt !== undefined) line('next_retry_at', formatTimestamp(stats.nextRetryAt));
}

function reportRecordFailure(opId, outcome, recorded) {
  const id = JSON.stringify(opId);
  if (outcome.tag === 'duplicate') {
    recorded.duplicate += 1;
    process.stderr.write(`op_id ${id}: conflict: an operation with this op_id already exists; the stored one is unchanged\n`);
  } else if (outcome.tag === 'rejected') {
    recorded.rejected += 1;
    process.stderr.write(`op_id ${id}: ${outcome.val.field}: ${outcome.val.message}\n`);
  } else if (outcome.tag === 'publish-failed') {
    recorded.rejected += 1;
    process.stderr.write(`op_id ${id}: ${describePublishError(outcome.val)}\n`);
  }
}

function exitReason(summary) {
  return summary.exit === 'failing' ? `ticks kept failing: ${summary.error}` : summary.exit;
}

function seconds(ms) {
  return Math.round(ms) / 1000;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`error: ${e.message}\n`);
  if (e instanceof UsageError) process.stderr.write(`${USAGE}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
}

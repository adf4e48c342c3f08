#!/usr/bin/env node
// The Node host's SQLite drain beside the wasmtime host's, in one run: the same backlog
// (rows an application inserted with plain SQL), copied fresh for each drain, drained by
// `serve --until-drained` of each host in turns (the order swapped every other round,
// as `trustlog bench` does), start-up included. Prints a table and, as its last line,
// a JSON summary with every time and the Node/wasmtime rate ratios.
//
//   node host/node/scripts/compare-drain.mjs --trustlog target/release/trustlog --ops 100000 --rounds 3

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { SqliteDb } from '../src/db.mjs';
import { sampleOperation } from '../src/sample.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const nodeCli = join(here, '..', 'bin', 'trustlog.mjs');

const { values } = parseArgs({
  options: {
    trustlog: { type: 'string' },
    ops: { type: 'string', default: '100000' },
    rounds: { type: 'string', default: '3' },
    'batch-size': { type: 'string', default: '100' },
  },
  strict: true,
});
if (!values.trustlog) {
  console.error('--trustlog PATH (the Rust binary, a release build) is required');
  process.exit(2);
}
const ops = Number(values.ops);
const rounds = Number(values.rounds);
const batch = values['batch-size'];

const dir = mkdtempSync(join(tmpdir(), 'trustlog-compare-'));
try {
  const base = join(dir, 'base.db');
  makeBacklog(base, ops);
  const hosts = {
    wasmtime: (db, ledger) => [values.trustlog, ['serve', '--db', `sqlite://${db}`, '--publisher', `ledger://${ledger}`, '--until-drained', '--batch-size', batch]],
    node: (db, ledger) => [process.execPath, [nodeCli, 'serve', '--db', db, '--ledger', ledger, '--until-drained', '--batch-size', batch]],
  };
  const runs = [];
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? ['wasmtime', 'node'] : ['node', 'wasmtime'];
    const times = {};
    for (const host of order) {
      const db = join(dir, `${host}-${round}.db`);
      const ledger = join(dir, `${host}-${round}.ledger`);
      copyFileSync(base, db);
      const [program, args] = hosts[host](db, ledger);
      const started = process.hrtime.bigint();
      execFileSync(program, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, RUST_LOG: 'warn', TRUSTLOG_LOG: 'warn' } });
      times[host] = Number(process.hrtime.bigint() - started) / 1e9;
      checkDrained(db, ops, host);
      rmSync(db);
      rmSync(ledger);
    }
    const ratio = times.wasmtime / times.node;
    runs.push({ round, order, seconds: times, ratio_node_over_wasmtime: round3(ratio) });
    console.log(
      `round ${round}: wasmtime ${rate(times.wasmtime)} ops/s (${times.wasmtime.toFixed(2)} s), ` +
        `node ${rate(times.node)} ops/s (${times.node.toFixed(2)} s), node/wasmtime ${ratio.toFixed(2)}`,
    );
  }
  console.log(JSON.stringify({ ops, batch_size: Number(batch), rounds: runs }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** `ops` rows inserted with plain SQL, as an application would, on the schema of sql/sqlite.sql. */
function makeBacklog(path, count) {
  const db = SqliteDb.open(path);
  const raw = db.connection;
  const insert = raw.prepare(
    `INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash, response_body_hash,
       op_source, op_type, do_prefix, do_repository, client_ip, server_ip, timestamp)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const base = 1_764_000_000_000_000;
  raw.transaction(() => {
    for (let i = 0; i < count; i++) {
      const o = sampleOperation('cmp', i, base);
      insert.run(o.opId, o.opActor, o.doid, o.producerId, o.requestBodyHash, o.responseBodyHash ?? null,
        o.opSource, o.opType, o.doPrefix, o.doRepository, o.clientIp, o.serverIp ?? null, o.timestamp);
    }
  })();
  raw.pragma('wal_checkpoint(TRUNCATE)');
  raw.close();
}

function checkDrained(path, count, host) {
  const db = SqliteDb.open(path, { migrate: false });
  const delivered = db.connection.prepare(`SELECT COUNT(*) AS n FROM operation WHERE trustlog_status = 'TRUSTLOGGED'`).get().n;
  db.connection.close();
  if (delivered !== count) throw new Error(`${host} delivered ${delivered} of ${count}`);
}

function rate(seconds) {
  return Math.round(ops / seconds).toLocaleString('en');
}

function round3(x) {
  return Math.round(x * 1000) / 1000;
}

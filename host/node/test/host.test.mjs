// The command line end to end, on temporary files: what `demo` and `serve` leave in
// the database and the ledger, checked from outside (the ledger's chain is recomputed
// here, from the format in host/ledger/src/lib.rs, not with the host's own code).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';

import Database from 'better-sqlite3';

const CLI = new URL('../bin/trustlog.mjs', import.meta.url).pathname;
const SCHEMA = readFileSync(new URL('../../../sql/sqlite.sql', import.meta.url), 'utf8');
const COMPONENT = new URL('../build/trustlog.wasm', import.meta.url);

let dir;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'trustlog-host-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI; its exit status, stderr and stdout, the last stdout line parsed as JSON when it is. */
function cli(...args) {
  const run = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, TRUSTLOG_LOG: 'warn' },
    timeout: 120_000,
  });
  const lines = run.stdout.trimEnd().split('\n');
  let summary;
  try {
    summary = JSON.parse(lines.at(-1));
  } catch {
    summary = undefined;
  }
  return { status: run.status, stdout: run.stdout, stderr: run.stderr, summary };
}

function paths(name) {
  return { db: join(dir, `${name}.db`), ledger: join(dir, `${name}.ledger`) };
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest();

/**
 * Recomputes the whole chain of the ledger at `path` from its bytes and checks the head
 * anchor; returns the entries' op_ids in order and the head hash.
 */
function recomputeChain(path) {
  const bytes = readFileSync(path);
  assert.equal(bytes.at(-1), 0x0a, 'the ledger ends with a newline');
  let prev = Buffer.alloc(32);
  const opIds = [];
  const lines = bytes.subarray(0, -1).toString('utf8').split('\n');
  lines.forEach((line, i) => {
    const seq = i + 1;
    const m = /^\{"seq":(\d+),"prev":"([0-9a-f]{64})","sha256":"([0-9a-f]{64})","hash":"([0-9a-f]{64})","payload":(.*)\}$/.exec(line);
    assert.ok(m, `line ${seq} is in the canonical form: ${line}`);
    assert.equal(Number(m[1]), seq, `line ${seq}: seq`);
    assert.equal(m[2], prev.toString('hex'), `line ${seq}: prev is the previous entry's hash`);
    const payload = Buffer.from(m[5], 'utf8');
    const digest = sha256(payload);
    assert.equal(m[3], digest.toString('hex'), `line ${seq}: sha256 of the payload`);
    const seqBytes = Buffer.alloc(8);
    seqBytes.writeBigUInt64BE(BigInt(seq));
    const hash = sha256(Buffer.concat([prev, seqBytes, digest]));
    assert.equal(m[4], hash.toString('hex'), `line ${seq}: chain hash`);
    opIds.push(JSON.parse(m[5]).op_id);
    prev = hash;
  });
  assert.equal(readFileSync(`${path}.head`, 'utf8'), `{"seq":${lines.length},"hash":"${prev.toString('hex')}"}\n`, 'the head anchor names the last entry');
  return { opIds, head: prev.toString('hex') };
}

function openDb(path) {
  const db = new Database(path);
  db.exec(SCHEMA);
  return db;
}

test('demo records, delivers to a ledger whose chain recomputes, and prints a summary last', () => {
  const { db, ledger } = paths('demo');
  const run = cli('demo', '--db', db, '--ledger', ledger, '--ops', '250', '--batch-size', '40');
  assert.equal(run.status, 0, run.stderr);
  const s = run.summary;
  assert.ok(s, `the last stdout line is JSON: ${run.stdout}`);
  assert.equal(s.command, 'demo');
  assert.equal(s.component_sha256, sha256(readFileSync(COMPONENT)).toString('hex'));
  assert.equal(s.delivered, 250);
  assert.equal(s.exit, 'drained');
  assert.ok(s.elapsed_seconds > 0 && s.ops_per_second > 0);
  assert.deepEqual(
    { total: s.stats.total, trustlogged: s.stats.trustlogged, not_trustlogged: s.stats.not_trustlogged, retry_pending: s.stats.retry_pending, dead_letter: s.stats.dead_letter },
    { total: 250, trustlogged: 250, not_trustlogged: 0, retry_pending: 0, dead_letter: 0 },
  );
  assert.equal(s.ledger_entries, 250);

  const chain = recomputeChain(ledger);
  assert.equal(chain.head, s.ledger_head);
  const stored = new Database(db, { readonly: true });
  const ids = stored.prepare("SELECT op_id FROM operation WHERE trustlog_status = 'TRUSTLOGGED' ORDER BY timestamp, op_id").pluck().all();
  const cursor = stored.prepare("SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = 'operation_scan'").pluck().get();
  stored.close();
  assert.deepEqual(chain.opIds, ids, 'each stored row once, in keyset order');
  assert.match(cursor, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\|demo-[0-9a-f]+-0000249$/);
});

test('serve --until-drained delivers rows an application inserted with plain SQL', () => {
  const { db, ledger } = paths('plain');
  const app = openDb(db);
  const insert = app.prepare(`INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash,
    response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, server_ip, timestamp)
    VALUES (?, 'alice', ?, 'producer-1', 'sha256:ab12', NULL, 'api', 'create', '10.1000', 'repo', '192.0.2.10', NULL, ?)
    ON CONFLICT(op_id) DO NOTHING`);
  for (let i = 1; i <= 5; i++) insert.run(`op-0000${i}`, `10.1000/repo/obj-${i}`, 1795515834123456n + BigInt(i));
  insert.run('op-00001', 'a duplicate the application skips', 1n);
  // As Go's SQLite driver writes a time.Time into the INTEGER column.
  insert.run('op-go', '10.1000/repo/go', '2026-11-24 18:23:54.123459+08:00');
  // A value no host can read as a time: dead-lettered on its own, naming the column.
  insert.run('op-unreadable', '10.1000/repo/bad', 'yesterday');
  app.close();

  const run = cli('serve', '--db', db, '--ledger', ledger, '--until-drained');
  assert.equal(run.status, 0, run.stderr);
  const s = run.summary;
  assert.equal(s.command, 'serve');
  assert.equal(s.exit, 'drained');
  assert.equal(s.delivered, 6);
  assert.equal(s.dead_lettered, 1);
  assert.equal(s.stats.trustlogged, 6);
  assert.equal(s.stats.dead_letter, 1);
  // Keyset order is SQLite's: a TEXT timestamp sorts after every INTEGER, as in the Rust adapter.
  assert.deepEqual(recomputeChain(ledger).opIds, ['op-00001', 'op-00002', 'op-00003', 'op-00004', 'op-00005', 'op-go']);
  assert.equal(s.tick_errors, 0);

  const after = new Database(db, { readonly: true });
  const dead = after.prepare("SELECT retry_status, error_message FROM trustlog_retry WHERE op_id = 'op-unreadable'").get();
  after.close();
  assert.equal(dead.retry_status, 'DEAD_LETTER');
  assert.match(dead.error_message, /timestamp/);
});

test('serve --pipeline-depth delivers a backlog of many batches, each row once, every one marked', () => {
  const { db, ledger } = paths('pipelined');
  // Rows an application inserted, three to a timestamp: op-0000..op-(to - 1) from `from`.
  const insertRows = (from, to) => {
    const app = openDb(db);
    const insert = app.prepare(`INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash,
      response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, server_ip, timestamp)
      VALUES (?, 'alice', 'doid', 'producer-1', NULL, NULL, 'api', 'create', '10.1000', 'repo', NULL, NULL, ?)`);
    for (let i = from; i < to; i++) insert.run(`op-${String(i).padStart(4, '0')}`, 1795515834000000n + BigInt(Math.floor(i / 3)));
    app.close();
  };
  const serve = (depth) => cli('serve', '--db', db, '--ledger', ledger, '--until-drained', '--batch-size', '9', '--pipeline-depth', depth);

  insertRows(0, 200);
  let run = serve('1');
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual([run.summary.exit, run.summary.delivered], ['drained', 200]);
  // More, at the deepest pipeline.
  insertRows(200, 300);
  run = serve('8');
  assert.equal(run.status, 0, run.stderr);
  assert.deepEqual([run.summary.exit, run.summary.delivered], ['drained', 100]);
  assert.deepEqual([run.summary.stats.trustlogged, run.summary.stats.not_trustlogged], [300, 0]);

  const chain = recomputeChain(ledger);
  const stored = new Database(db, { readonly: true });
  const ids = stored.prepare("SELECT op_id FROM operation WHERE trustlog_status = 'TRUSTLOGGED' ORDER BY timestamp, op_id").pluck().all();
  stored.close();
  assert.equal(ids.length, 300);
  assert.deepEqual(chain.opIds, ids, 'each row once, in keyset order');

  run = serve('9');
  assert.equal(run.status, 2);
  assert.match(run.stderr, /--pipeline-depth must be a whole number from 1 to 8, not "9"/);
});

test('serve stopped by SIGTERM mid-drain leaves every row it put in the ledger marked, and only those', async () => {
  const { db, ledger } = paths('interrupted');
  const app = openDb(db);
  const insert = app.prepare(`INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash,
    response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, server_ip, timestamp)
    VALUES (?, 'alice', 'doid', 'producer-1', NULL, NULL, 'api', 'create', '10.1000', 'repo', NULL, NULL, ?)`);
  app.transaction(() => {
    for (let i = 0; i < 20_000; i++) insert.run(`op-${String(i).padStart(5, '0')}`, 1795515834000000n + BigInt(i));
  })();
  app.close();

  const child = spawn(process.execPath, [CLI, 'serve', '--db', db, '--ledger', ledger, '--batch-size', '5', '--pipeline-depth', '3'], {
    env: { ...process.env, TRUSTLOG_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  // Stopped as soon as the first batches reached the ledger, with more out.
  const deadline = Date.now() + 60_000;
  while (!(existsSync(ledger) && statSync(ledger).size > 0)) {
    assert.ok(Date.now() < deadline, `serve never wrote to the ledger: ${stderr}`);
    await sleep(5);
  }
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
  const summary = JSON.parse(stdout.trimEnd().split('\n').at(-1));
  assert.equal(summary.exit, 'shutdown');

  const chain = recomputeChain(ledger);
  const stored = new Database(db, { readonly: true });
  const ids = stored.prepare("SELECT op_id FROM operation WHERE trustlog_status = 'TRUSTLOGGED' ORDER BY timestamp, op_id").pluck().all();
  stored.close();
  assert.ok(ids.length > 0 && ids.length < 20_000, `stopped mid-drain (${ids.length} delivered)`);
  assert.deepEqual(chain.opIds, ids, 'no row confirmed and left unmarked, none marked unconfirmed');
  assert.equal(summary.delivered, ids.length);
  assert.equal(summary.ledger_entries, ids.length);
});

test('a second run continues the ledger, after cutting off a torn last line', () => {
  const { db, ledger } = paths('continued');
  assert.equal(cli('demo', '--db', db, '--ledger', ledger, '--ops', '30').status, 0);
  const first = recomputeChain(ledger);
  // A crash mid-write: a partial line with no newline, never confirmed.
  appendFileSync(ledger, '{"seq":31,"prev":"');
  const second = cli('demo', '--db', db, '--ledger', ledger, '--ops', '20');
  assert.equal(second.status, 0, second.stderr);
  assert.equal(second.summary.ledger_entries, 50);
  const chain = recomputeChain(ledger);
  assert.deepEqual(chain.opIds.slice(0, 30), first.opIds, 'the first run\'s entries are kept as they were');
  assert.equal(new Set(chain.opIds).size, 50);
  assert.equal(second.summary.stats.trustlogged, 50);
});

test('a tampered ledger is refused on open, and left as it was', () => {
  const { db, ledger } = paths('tampered');
  assert.equal(cli('demo', '--db', db, '--ledger', ledger, '--ops', '12').status, 0);
  const original = readFileSync(ledger);

  // The last line's payload edited: its digest no longer matches.
  const lines = original.toString('utf8').split('\n');
  lines[11] = lines[11].replace('"op_actor":"user-', '"op_actor":"mallory-');
  writeFileSync(ledger, lines.join('\n'));
  const edited = readFileSync(ledger);
  let run = cli('serve', '--db', db, '--ledger', ledger, '--until-drained');
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /corrupt tail in .*entry 12 .*payload sha256 mismatch/);
  assert.equal(run.summary, undefined, 'no summary for a run that never started');
  assert.deepEqual(readFileSync(ledger), edited);

  // A middle line edited with the anchor gone: the whole chain is checked, and fails.
  lines.splice(0, lines.length, ...original.toString('utf8').split('\n'));
  lines[4] = lines[4].replace('"op_type":"', '"op_type":"X');
  writeFileSync(ledger, lines.join('\n'));
  unlinkSync(`${ledger}.head`);
  run = cli('serve', '--db', db, '--ledger', ledger, '--until-drained');
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /has no head anchor and its chain does not verify: .*entry 5 \(line 5\)/);

  // The last line removed by hand: the anchor still names it.
  writeFileSync(ledger, original.subarray(0, original.lastIndexOf(0x0a, original.length - 2) + 1));
  writeFileSync(`${ledger}.head`, `{"seq":12,"hash":"${JSON.parse(original.toString('utf8').split('\n')[11]).hash}"}\n`);
  run = cli('serve', '--db', db, '--ledger', ledger, '--until-drained');
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /ends at entry 11 but the head anchor says 12/);
});

test('bad arguments and missing files are reported on stderr with a non-zero exit', () => {
  let run = cli('demo', '--db', join(dir, 'x.db'), '--ledger', join(dir, 'x.ledger'));
  assert.equal(run.status, 2);
  assert.match(run.stderr, /--ops is required/);
  run = cli('demo', '--db', join(dir, 'x.db'), '--ledger', join(dir, 'x.ledger'), '--ops', 'many');
  assert.equal(run.status, 2);
  assert.match(run.stderr, /--ops must be a whole number/);
  run = cli('serve', '--db', join(dir, 'no', 'such', 'dir', 'x.db'), '--ledger', join(dir, 'x.ledger'), '--until-drained');
  assert.equal(run.status, 1);
  assert.match(run.stderr, /database unavailable: cannot open .*directory does not exist/);
  run = cli('launch');
  assert.equal(run.status, 2);
  assert.match(run.stderr, /unknown command "launch"/);
});

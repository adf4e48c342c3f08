// The ledger publisher's guarantees, those host/ledger/src/tests.rs checks for the Rust
// one: the entries, their validation, the lock, and what open does after a crash or an
// edit by hand.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';

import { Ledger, verifyLedger } from '../src/ledger.mjs';

let dir;
let path;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'trustlog-ledger-'));
  path = join(dir, 'trustlog.ledger');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function envelope(opId, payloadText = `{"op_id":"${opId}","n":1}`) {
  const payload = Buffer.from(payloadText, 'utf8');
  return { opId, payload, sha256: createHash('sha256').update(payload).digest('hex') };
}
const envelopes = (from, count) => Array.from({ length: count }, (_, i) => envelope(`op-${from + i}`));

function ledgerWith(count, batch = 10) {
  const ledger = Ledger.open(path);
  for (let from = 1; from <= count; from += batch) ledger.append(envelopes(from, Math.min(batch, count - from + 1)));
  ledger.close();
}

const lines = () => readFileSync(path, 'utf8').split('\n').slice(0, -1);

function openFails(pattern) {
  assert.throws(() => Ledger.open(path), pattern);
}

test('entries have the documented format and chain from 64 zeros', () => {
  const ledger = Ledger.open(path);
  ledger.append([envelope('a', '{"x":1}')]);
  ledger.close();
  const digest = createHash('sha256').update('{"x":1}').digest();
  const seq = Buffer.alloc(8);
  seq.writeBigUInt64BE(1n);
  const hash = createHash('sha256').update(Buffer.concat([Buffer.alloc(32), seq, digest])).digest('hex');
  assert.equal(readFileSync(path, 'utf8'),
    `{"seq":1,"prev":"${'0'.repeat(64)}","sha256":"${digest.toString('hex')}","hash":"${hash}","payload":{"x":1}}\n`);
  assert.equal(readFileSync(`${path}.head`, 'utf8'), `{"seq":1,"hash":"${hash}"}\n`);
  assert.deepEqual(verifyLedger(path), { entries: 1, headHash: hash });
});

test('reopening continues the chain', () => {
  ledgerWith(25);
  const ledger = Ledger.open(path);
  assert.equal(ledger.length, 25);
  ledger.append(envelopes(26, 5));
  ledger.close();
  assert.equal(verifyLedger(path).entries, 30);
});

test('a second open while the first is alive is refused as locked', () => {
  const first = Ledger.open(path);
  try {
    openFails(/locked by another process/);
  } finally {
    first.close();
  }
  (Ledger.open(path)).close();
});

test('an envelope whose sha256 is not its payload\'s, or whose payload is not one JSON value on one line, is permanent; the rest is written', () => {
  const ledger = Ledger.open(path);
  const bad = [
    { ...envelope('wrong-sha'), sha256: '0'.repeat(64) },
    envelope('newline', '{"a":\n1}'),
    envelope('spaced', ' {"a":1}'),
    envelope('not-json', '{"a":'),
    envelope('two-values', '1 2'),
  ];
  const upper = { ...envelope('upper'), sha256: envelope('upper').sha256.toUpperCase() };
  const results = ledger.publish([envelope('ok-1'), ...bad, upper]);
  ledger.close();
  assert.deepEqual(results.map((r) => r.tag === 'ok' ? 'ok' : r.val.tag), ['ok', ...bad.map(() => 'permanent'), 'ok']);
  assert.match(results[1].val.val, /^envelope wrong-sha: sha256 0{64} does not match its payload/);
  assert.match(results[2].val.val, /newline/);
  assert.match(results[3].val.val, /whitespace/);
  assert.deepEqual(lines().map((l) => JSON.parse(l).payload.op_id), ['ok-1', 'upper']);
  assert.equal(verifyLedger(path).entries, 2);
});

test('a torn last line is cut off on open, and the next append verifies', () => {
  ledgerWith(5);
  appendFileSync(path, '{"seq":6,"prev":"00');
  assert.throws(() => verifyLedger(path), /incomplete last line/);
  const ledger = Ledger.open(path);
  ledger.append(envelopes(6, 1));
  ledger.close();
  assert.equal(verifyLedger(path).entries, 6);
});

test('entries beyond a lagging anchor are adopted on open when they chain from it', () => {
  ledgerWith(5);
  copyFileSync(`${path}.head`, join(dir, 'old.head'));
  const ledger = Ledger.open(path);
  ledger.append(envelopes(6, 3));
  ledger.close();
  copyFileSync(join(dir, 'old.head'), `${path}.head`);
  (Ledger.open(path)).close();
  assert.match(readFileSync(`${path}.head`, 'utf8'), /^\{"seq":8,/);
  assert.equal(verifyLedger(path).entries, 8);
});

test('a missing or blank anchor is rebuilt after the whole chain verifies; a broken chain refuses to open', () => {
  ledgerWith(4);
  const anchor = readFileSync(`${path}.head`, 'utf8');
  writeFileSync(`${path}.head`, Buffer.alloc(40));
  (Ledger.open(path)).close();
  assert.equal(readFileSync(`${path}.head`, 'utf8'), anchor);
  rmSync(`${path}.head`);
  const edited = lines();
  edited[1] = edited[1].replace('"n":1', '"n":2');
  writeFileSync(path, `${edited.join('\n')}\n`);
  openFails(/no head anchor and its chain does not verify: .*entry 2 \(line 2\): payload sha256 mismatch/);
});

test('a rewritten last entry, a removed one, or a corrupt anchor refuse to open', () => {
  ledgerWith(3);
  const original = readFileSync(path);
  writeFileSync(path, original.subarray(0, original.lastIndexOf(0x0a, original.length - 2) + 1));
  openFails(/ends at entry 2 but the head anchor says 3/);
  writeFileSync(path, original);
  writeFileSync(`${path}.head`, `{"seq":3,"hash":"${'ab'.repeat(32)}"}\n`);
  openFails(/entry 3 has hash .* but the head anchor says/);
  writeFileSync(`${path}.head`, '{"seq":3}');
  openFails(/head anchor .* is corrupt/);
});

test('verify finds a changed middle line that open does not read', () => {
  ledgerWith(6);
  const edited = lines();
  edited[2] = edited[2].replace('"op_id":"op-3"', '"op_id":"op-X"');
  writeFileSync(path, `${edited.join('\n')}\n`);
  assert.throws(() => verifyLedger(path), /entry 3 \(line 3\): payload sha256 mismatch/);
});

// The embedded trust log: an append-only, hash-chained ledger file, written byte for
// byte as host/ledger/src writes it, so that either host continues what the other
// wrote and `trustlog ledger verify` accepts both. The format (host/ledger/src/lib.rs):
//
//   {"seq":N,"prev":"<64 hex>","sha256":"<64 hex>","hash":"<64 hex>","payload":<payload bytes verbatim>}\n
//
// hash = SHA-256(prev as 32 raw bytes || seq as u64 big-endian || payload SHA-256 as 32
// raw bytes); prev of entry 1 is 64 zeros. Beside it, `PATH.head` holds
// {"seq":N,"hash":"<hex>"}\n of the last entry, rewritten through PATH.head.tmp and a
// rename after each confirmed batch: a pure hash chain cannot see its tail cut off or a
// line appended by hand; the anchor can.
//
// A batch is one write and one fdatasync, and counts as confirmed only after both. A
// crash can leave a partial last line; open truncates it, since no batch holding it
// was ever confirmed. Whole lines of a batch whose fsync never returned may survive and
// chain correctly; open keeps them, and the engine, which never saw them confirmed,
// publishes them again: delivery is at least once.

import { createHash } from 'node:crypto';
import {
  closeSync, fdatasyncSync, fstatSync, ftruncateSync, openSync, readFileSync, readSync, renameSync, writeFileSync, writeSync,
} from 'node:fs';

import { lockExclusive, LockedError } from './file-lock.mjs';
import { logger } from './log.mjs';

const ZERO_HASH = Buffer.alloc(32);
const NEWLINE = 0x0a;
const READ_CHUNK = 1 << 20;

/** Why a ledger could not be opened, appended to or verified; `kind` names the case. */
export class LedgerError extends Error {
  constructor(kind, message, details = {}) {
    super(message);
    this.name = 'LedgerError';
    this.kind = kind;
    Object.assign(this, details);
  }
}

/** An open ledger, locked for appending by this process. */
export class Ledger {
  #fd;
  #path;
  #head;
  #headTmp;
  #seq;
  #hash;
  // The length of the file as of the last confirmed batch: where a failed batch is cut back to.
  #size;
  // Set when a failed batch could not be cut back: the file then holds bytes the chain
  // in memory does not know, and appending after them would break it.
  #poisoned;

  constructor({ fd, path, seq, hash, size }) {
    this.#fd = fd;
    this.#path = path;
    this.#seq = seq;
    this.#hash = hash;
    this.#size = size;
    this.#head = `${this.#path}.head`;
    this.#headTmp = `${this.#path}.head.tmp`;
  }

  /** Opens (creating if missing) the ledger at `path` for appending, recovering its tail. */
  static open(path) {
    let fd;
    try {
      // O_APPEND: every write lands at the current end, also after a rollback cut it back.
      fd = openSync(path, 'a+');
    } catch (e) {
      throw ioError(path, 'open', e);
    }
    try {
      if (!lockExclusive(fd, path)) logger.warn(`flock(1) is missing: ${path} is opened without the lock that keeps a second publisher out`);
    } catch (e) {
      closeSync(fd);
      throw e instanceof LockedError ? new LedgerError('locked', e.message, { path }) : ioError(path, 'lock', e);
    }
    try {
      return recover(path, fd);
    } catch (e) {
      // Closing the descriptor gives the lock back with it.
      closeSync(fd);
      throw e instanceof LedgerError ? e : ioError(path, 'read', e);
    }
  }

  get path() {
    return this.#path;
  }

  /** Number of entries: the last seq. */
  get length() {
    return this.#seq;
  }

  /** Lower-case hex hash of the last entry; 64 zeros while empty. */
  get headHash() {
    return this.#hash.toString('hex');
  }

  /** Whether the ledger still appends. */
  health() {
    if (this.#poisoned) throw this.#poisonedError();
  }

  /**
   * The publisher: appends a batch of envelopes (`{ opId, payload: Uint8Array, sha256 }`)
   * and fsyncs it; one WIT `result<_, publish-error>` per envelope, in order. An
   * envelope that is not one JSON value on one line, or whose sha256 is not its
   * payload's, is refused as permanent and the rest are written; a write or fsync that
   * fails makes every other one unavailable: the ledger is at fault, not the envelope.
   */
  publish(envelopes) {
    const staged = this.#stage();
    const results = envelopes.map((envelope) => {
      const reason = staged.push(envelope);
      return reason === undefined ? OK : err('permanent', `envelope ${envelope.opId}: ${reason}`);
    });
    try {
      this.#commit(staged);
    } catch (e) {
      // The whole batch was cut back off the file (or the ledger stopped appending), so
      // each envelope about to be written may be published again as it is.
      return results.map((r) => (r.tag === 'ok' ? err('unavailable', e.message) : r));
    }
    return results;
  }

  /** Appends a batch whole, or nothing of it when an envelope is invalid; throws LedgerError. */
  append(envelopes) {
    const staged = this.#stage();
    for (const envelope of envelopes) {
      const reason = staged.push(envelope);
      if (reason !== undefined) {
        throw new LedgerError('invalid-envelope', `refusing envelope ${envelope.opId} for ${this.#path}: ${reason}`, { opId: envelope.opId });
      }
    }
    this.#commit(staged);
  }

  /** Closes the file, which gives its lock back at once. */
  close() {
    if (this.#fd === undefined) return;
    closeSync(this.#fd);
    this.#fd = undefined;
  }

  #stage() {
    return new Staged(this.#seq, this.#hash);
  }

  #commit(staged) {
    if (this.#poisoned) throw this.#poisonedError();
    if (staged.seq === this.#seq) return;
    const bytes = Buffer.concat(staged.lines);
    try {
      writeAll(this.#fd, bytes);
    } catch (e) {
      this.#rollBack();
      throw ioError(this.#path, 'write', e);
    }
    try {
      fdatasyncSync(this.#fd);
    } catch (e) {
      this.#rollBack();
      throw ioError(this.#path, 'fsync', e);
    }
    this.#seq = staged.seq;
    this.#hash = staged.hash;
    this.#size += bytes.length;
    // No fsync for the anchor: it is tamper evidence, not the record. A crash that
    // loses it leaves it lagging (or blank), and open repairs it from the fsynced
    // entries after checking they chain from it. For the same reason a failure here
    // does not unconfirm the batch: that would only make the engine publish it twice.
    try {
      this.#writeAnchor();
    } catch (e) {
      logger.warn(`could not rewrite the head anchor ${this.#head}: ${e.message}; the batch is durable and the next open repairs it`);
    }
  }

  #rollBack() {
    // The cut need not be fsynced: the next confirmed batch's fdatasync makes the length
    // durable with it; a crash first leaves a torn line (truncated on open) or whole
    // lines that chain (kept on open, and published again by the engine).
    try {
      ftruncateSync(this.#fd, this.#size);
    } catch (e) {
      this.#poisoned = `a failed batch could not be cut back to byte ${this.#size}: ${e.message}`;
      logger.error(`ledger ${this.#path} poisoned: ${this.#poisoned}`);
    }
  }

  #poisonedError() {
    return new LedgerError('poisoned', `ledger ${this.#path} refuses appends until reopened: ${this.#poisoned}`, { path: this.#path });
  }

  #writeAnchor() {
    writeAnchorFile(this.#head, this.#headTmp, this.#seq, this.#hash);
  }
}

/** Checks every entry, the chain and the head anchor of the ledger at `path`, at rest. */
export function verifyLedger(path) {
  let fd;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw ioError(path, 'open', e);
  }
  try {
    const { entries, hash } = walkChain(path, fd, fstatSync(fd).size);
    const head = `${path}.head`;
    const anchor = readAnchor(head);
    if (anchor === 'blank') {
      throw new LedgerError('corrupt-anchor', `head anchor ${head} is corrupt: empty (a crash before it reached disk; the next open rebuilds it)`);
    }
    if (anchor === undefined && entries > 0) {
      throw new LedgerError('anchor-missing', `${path}: ledger has ${entries} entries but no head anchor ${head}`);
    }
    if (anchor !== undefined && anchor.seq !== entries) {
      throw new LedgerError('anchor-seq', `${path}: ledger ends at entry ${entries} but the head anchor says ${anchor.seq}: entries removed or appended by hand`);
    }
    if (anchor !== undefined && !anchor.hash.equals(hash)) {
      throw new LedgerError('anchor-hash', `${path}: entry ${entries} has hash ${hash.toString('hex')} but the head anchor says ${anchor.hash.toString('hex')}: the ledger was rewritten`);
    }
    return { entries, headHash: hash.toString('hex') };
  } finally {
    closeSync(fd);
  }
}

/** The WIT `result<_, publish-error>` values the publisher answers with. */
const OK = Object.freeze({ tag: 'ok', val: undefined });
function err(tag, message) {
  return { tag: 'err', val: { tag, val: message } };
}

/**
 * A batch being rendered, aside from the ledger's own state, which adopts the chain only
 * after the fsync: a failed batch leaves the chain in memory at the file's durable end.
 */
class Staged {
  lines = [];

  constructor(seq, hash) {
    this.seq = seq;
    this.hash = hash;
  }

  /** Validates an envelope and renders its line; the reason it is refused, if it is. */
  push(envelope) {
    const checked = validate(envelope);
    if (typeof checked === 'string') return checked;
    const prev = this.hash;
    this.seq += 1;
    this.hash = chainHash(prev, this.seq, checked);
    this.lines.push(renderLine(this.seq, prev, checked, this.hash, envelope.payload));
    return undefined;
  }
}

/** The payload's digest, or why the envelope is refused (entry.rs `validate`). */
function validate({ payload, sha256 }) {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (bytes.includes(NEWLINE)) return 'payload contains a newline byte';
  const json = oneJsonValue(bytes);
  if (json !== undefined) return `payload ${json}`;
  const digest = createHash('sha256').update(bytes).digest();
  const computed = digest.toString('hex');
  if (!/^[0-9a-fA-F]{64}$/.test(sha256) || sha256.toLowerCase() !== computed) {
    return `sha256 ${sha256} does not match its payload (computed ${computed})`;
  }
  return digest;
}

/**
 * Why `bytes` is not exactly one JSON value (undefined when it is). Whitespace around
 * the value is refused: the ledger embeds the bytes verbatim, and a reader of the line
 * would not count it as part of the payload, so the digest would no longer match.
 */
function oneJsonValue(bytes) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
    JSON.parse(text);
  } catch (e) {
    return `is not a single JSON value: ${e.message}`;
  }
  if (/^[ \t\r\n]|[ \t\r\n]$/.test(text)) return 'has whitespace around its JSON value';
  return undefined;
}

function chainHash(prev, seq, digest) {
  const seqBytes = Buffer.alloc(8);
  seqBytes.writeBigUInt64BE(BigInt(seq));
  return createHash('sha256').update(prev).update(seqBytes).update(digest).digest();
}

function renderLine(seq, prev, digest, hash, payload) {
  const head = `{"seq":${seq},"prev":"${prev.toString('hex')}","sha256":"${digest.toString('hex')}","hash":"${hash.toString('hex')}","payload":`;
  return Buffer.concat([Buffer.from(head, 'latin1'), payload, Buffer.from('}\n', 'latin1')]);
}

// A canonical line: exactly what renderLine writes. Anything else (respaced, reordered,
// escaped, with extra fields) is refused, as entry.rs re-renders and compares.
const LINE = /^\{"seq":(0|[1-9][0-9]*),"prev":"([^"\\]*)","sha256":"([^"\\]*)","hash":"([^"\\]*)","payload":(.*)\}$/s;

/**
 * Checks one line (without its \n) on its own and, where known, against the seq and
 * prev it must have: `{ seq, prev, hash }`, or throws an EntryFault saying why not.
 */
function checkEntry(raw, expectedSeq, expectedPrev) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
  } catch (e) {
    throw new EntryFault(undefined, `not UTF-8: ${e.message}`);
  }
  const m = LINE.exec(text);
  if (!m) {
    try {
      JSON.parse(text);
    } catch (e) {
      throw new EntryFault(undefined, `not a ledger entry: ${e.message}`);
    }
    throw new EntryFault(undefined, 'not in the canonical form of an entry');
  }
  // The payload must be one JSON value, as parsing the whole line would find it.
  const payloadText = m[5];
  try {
    JSON.parse(payloadText);
  } catch (e) {
    throw new EntryFault(undefined, `not a ledger entry: ${e.message}`);
  }
  const seq = Number(m[1]);
  if (!Number.isSafeInteger(seq)) throw new EntryFault(undefined, `seq ${m[1]} is out of range`);
  const fault = (reason) => new EntryFault(seq, reason);
  if (expectedSeq !== undefined && seq !== expectedSeq) throw fault(`out of sequence: expected seq ${expectedSeq}`);
  if (expectedSeq === undefined && seq === 0) throw fault('seq 0: seqs start at 1');
  let prev;
  if (expectedPrev !== undefined) {
    if (m[2] !== expectedPrev.toString('hex')) {
      throw fault(`chain broken: prev ${m[2]} is not the previous entry's hash ${expectedPrev.toString('hex')}`);
    }
    prev = expectedPrev;
  } else {
    prev = decodeHash(m[2]);
    if (prev === undefined) throw fault(`prev ${JSON.stringify(m[2])} is not 64 lower-case hex digits`);
  }
  if (/^[ \t\r\n]|[ \t\r\n]$/.test(payloadText)) throw fault('not in the canonical form of an entry');
  const digest = createHash('sha256').update(payloadText, 'utf8').digest();
  if (m[3] !== digest.toString('hex')) {
    throw fault(`payload sha256 mismatch: stored ${m[3]}, computed ${digest.toString('hex')}`);
  }
  const hash = chainHash(prev, seq, digest);
  if (m[4] !== hash.toString('hex')) {
    throw fault(`hash mismatch: stored ${m[4]}, computed ${hash.toString('hex')}`);
  }
  return { seq, prev, hash };
}

class EntryFault extends Error {
  constructor(seq, reason) {
    super(reason);
    this.seq = seq;
    this.reason = reason;
  }
}

/** A `hash`-style field, only in its canonical spelling (64 lower-case hex digits). */
function decodeHash(text) {
  return /^[0-9a-f]{64}$/.test(text) ? Buffer.from(text, 'hex') : undefined;
}

/** Works out the ledger's last seq and hash after a crash, then opens it. */
function recover(path, fd) {
  const len = fstatSync(fd).size;
  const end = endOfLastLine(fd, len);
  const head = `${path}.head`;
  let anchor = readAnchor(head);
  if (anchor === 'blank') {
    // An anchor is renamed into place without an fsync, so a crash can leave it empty
    // or zero-filled; that is as good as missing.
    logger.warn(`head anchor ${head} is empty (a crash before it reached disk); rebuilding it`);
    anchor = undefined;
  }
  // Reconcile before truncating anything: if the ledger is bad, the torn bytes are
  // evidence, and they stay on disk for whoever investigates.
  const { seq, hash, rewriteAnchor } = reconcile(path, fd, end, anchor);
  if (end < len) {
    logger.warn(`truncating a partial last line of ${path} (${len - end} bytes) left by a crash; its batch was never confirmed`);
    try {
      ftruncateSync(fd, end);
    } catch (e) {
      throw ioError(path, 'truncate the torn tail of', e);
    }
  }
  const ledger = new Ledger({ fd, path, seq, hash, size: end });
  if (rewriteAnchor) {
    try {
      writeAnchorFile(head, `${path}.head.tmp`, seq, hash);
    } catch (e) {
      throw ioError(head, 'write the head anchor', e);
    }
  }
  logger.debug(`ledger ${path} open: ${seq} entries`);
  return ledger;
}

/** The ledger's last seq and hash from its complete lines (before `end`) and its anchor. */
function reconcile(path, fd, end, anchor) {
  const corrupt = (seq, offset, reason) => new LedgerError(
    'corrupt-tail',
    `corrupt tail in ${path}: ${seq === undefined ? 'the last line' : `entry ${seq}`} at byte ${offset}: ${reason}`,
    { path, seq, offset },
  );
  const shorter = (ledger, anchorSeq) => new LedgerError(
    'shorter-than-anchor',
    `ledger ${path} ends at entry ${ledger} but the head anchor says ${anchorSeq}: entries removed by hand, or an older copy restored`,
    { path },
  );
  if (end === 0) {
    if (anchor === undefined || (anchor.seq === 0 && anchor.hash.equals(ZERO_HASH))) {
      return { seq: 0, hash: ZERO_HASH, rewriteAnchor: false };
    }
    throw shorter(0, anchor.seq);
  }
  let { start, line } = lineBefore(fd, end);
  let last;
  try {
    last = checkEntry(line);
  } catch (f) {
    throw corrupt(f.seq, start, f.reason);
  }
  if (anchor === undefined) {
    logger.warn(`no head anchor for ${path}; verifying the whole chain before writing one`);
    try {
      const { entries, hash } = walkChain(path, fd, end);
      return { seq: entries, hash, rewriteAnchor: true };
    } catch (e) {
      throw new LedgerError('unanchored', `ledger ${path} has no head anchor and its chain does not verify: ${e.message}`, { path });
    }
  }
  if (last.seq < anchor.seq) throw shorter(last.seq, anchor.seq);
  if (last.seq === anchor.seq) {
    if (!last.hash.equals(anchor.hash)) {
      throw new LedgerError(
        'anchor-mismatch',
        `ledger ${path}: entry ${last.seq} has hash ${last.hash.toString('hex')} but the head anchor says ${anchor.hash.toString('hex')}: the ledger was rewritten`,
        { path },
      );
    }
    return { seq: last.seq, hash: last.hash, rewriteAnchor: false };
  }
  // Entries past the anchor: a crash between a batch's fsync and its anchor rewrite.
  // Adopt them only if they chain, back to the anchor's hash.
  logger.warn(`${path}: entries ${anchor.seq + 1}..${last.seq} beyond the head anchor; checking they chain from it`);
  let next = last;
  while (next.seq > anchor.seq + 1) {
    const want = next.seq - 1;
    if (start === 0) {
      throw corrupt(next.seq, 0, `the file starts at entry ${next.seq}, not after the anchor's entry ${anchor.seq}`);
    }
    const before = lineBefore(fd, start);
    let entry;
    try {
      entry = checkEntry(before.line, want);
    } catch (f) {
      throw corrupt(f.seq ?? want, before.start, f.reason);
    }
    if (!entry.hash.equals(next.prev)) {
      throw corrupt(next.seq, start, `chain broken: prev is not entry ${want}'s hash ${entry.hash.toString('hex')}`);
    }
    start = before.start;
    next = entry;
  }
  if (!next.prev.equals(anchor.hash)) {
    throw corrupt(next.seq, start, `does not chain from the head anchor (entry ${anchor.seq} with hash ${anchor.hash.toString('hex')})`);
  }
  return { seq: last.seq, hash: last.hash, rewriteAnchor: true };
}

/** Reads the entries of the first `end` bytes from the start, checking each and the chain. */
function walkChain(path, fd, end) {
  let entries = 0;
  let hash = ZERO_HASH;
  let carry = Buffer.alloc(0);
  const bad = (seq, reason) => {
    const line = entries + 1;
    const label = seq === undefined ? `line ${line}` : `entry ${seq} (line ${line})`;
    return new LedgerError('bad-entry', `${path}: ${label}: ${reason}`, { line, seq });
  };
  for (let at = 0; at < end;) {
    const chunk = Buffer.alloc(Math.min(READ_CHUNK, end - at));
    readExactly(fd, chunk, at);
    at += chunk.length;
    let data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    let from = 0;
    for (let nl = data.indexOf(NEWLINE, from); nl >= 0; nl = data.indexOf(NEWLINE, from)) {
      // The walk stops at the first bad line, so line numbers and seqs agree.
      try {
        hash = checkEntry(data.subarray(from, nl), entries + 1, hash).hash;
      } catch (f) {
        throw bad(f.seq, f.reason);
      }
      entries += 1;
      from = nl + 1;
    }
    carry = Buffer.from(data.subarray(from));
    data = undefined;
  }
  if (carry.length > 0) {
    throw bad(undefined, 'incomplete last line (no newline): a torn write, which the next open truncates');
  }
  return { entries, hash };
}

/** The offset just past the last \n of the first `len` bytes (0 if none). */
function endOfLastLine(fd, len) {
  let end = len;
  const chunk = Buffer.alloc(4096);
  while (end > 0) {
    const n = Math.min(chunk.length, end);
    const from = end - n;
    readExactly(fd, chunk.subarray(0, n), from);
    const i = chunk.subarray(0, n).lastIndexOf(NEWLINE);
    if (i >= 0) return from + i + 1;
    end = from;
  }
  return 0;
}

/** The line that ends (with its \n) at `end`: its start offset and bytes without the \n. */
function lineBefore(fd, end) {
  const stop = end - 1;
  let start = stop;
  let line = Buffer.alloc(0);
  let chunkLen = 4096;
  while (start > 0) {
    const n = Math.min(chunkLen, start);
    const from = start - n;
    const piece = Buffer.alloc(n);
    readExactly(fd, piece, from);
    const i = piece.lastIndexOf(NEWLINE);
    if (i >= 0) return { start: from + i + 1, line: Buffer.concat([piece.subarray(i + 1), line]) };
    line = Buffer.concat([piece, line]);
    start = from;
    chunkLen = Math.min(chunkLen * 2, 1 << 20);
  }
  return { start: 0, line };
}

/** The head anchor: `{ seq, hash }`, undefined when missing, 'blank' when zero-filled or empty. */
function readAnchor(head) {
  let bytes;
  try {
    bytes = readFileSync(head);
  } catch (e) {
    if (e.code === 'ENOENT') return undefined;
    throw ioError(head, 'read the head anchor', e);
  }
  if (bytes.every((b) => b === 0)) return 'blank';
  const corrupt = (reason) => new LedgerError('corrupt-anchor', `head anchor ${head} is corrupt: ${reason}`, { path: head });
  let anchor;
  try {
    anchor = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes));
  } catch (e) {
    throw corrupt(e.message);
  }
  const keys = anchor !== null && typeof anchor === 'object' && !Array.isArray(anchor) ? Object.keys(anchor).sort() : [];
  if (keys.join() !== 'hash,seq') throw corrupt('expected exactly the fields seq and hash');
  if (!Number.isSafeInteger(anchor.seq) || anchor.seq < 0) throw corrupt(`seq ${JSON.stringify(anchor.seq)} is not an entry number`);
  const hash = typeof anchor.hash === 'string' ? decodeHash(anchor.hash) : undefined;
  if (hash === undefined) throw corrupt(`hash ${JSON.stringify(anchor.hash)} is not 64 lower-case hex digits`);
  return { seq: anchor.seq, hash };
}

function writeAnchorFile(head, headTmp, seq, hash) {
  writeFileSync(headTmp, `{"seq":${seq},"hash":"${hash.toString('hex')}"}\n`);
  renameSync(headTmp, head);
}

function writeAll(fd, bytes) {
  for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at, bytes.length - at);
}

function readExactly(fd, buffer, position) {
  for (let at = 0; at < buffer.length;) {
    const n = readSync(fd, buffer, at, buffer.length - at, position + at);
    if (n === 0) throw new Error(`unexpected end of file at byte ${position + at}`);
    at += n;
  }
}

function ioError(path, action, e) {
  return new LedgerError('io', `cannot ${action} ${path}: ${e.message}`, { path, action, cause: e });
}

/**
 * The ledger as the engine's publisher: `publish(envelopes)` appends a batch, `ready()`
 * says whether it still appends, and `probe()`, which the worker calls while delivery
 * is paused for an outage, throws while the ledger cannot append and reopens a ledger that stopped appending (a failed batch it
 * could not cut back), recovering its tail from the file itself. Until it reopens,
 * every envelope is answered unavailable: the ledger is at fault, not the envelope.
 */
export class LedgerPublisher {
  #path;
  #ledger;
  #closedBecause;

  constructor(ledger) {
    this.#path = ledger.path;
    this.#ledger = ledger;
  }

  /** Opens (creating if missing) the ledger at `path`; refused when locked, corrupt or tampered with. */
  static open(path) {
    return new LedgerPublisher(Ledger.open(path));
  }

  /** The open ledger, if it is open. */
  get ledger() {
    return this.#ledger;
  }

  publish(envelopes) {
    if (this.#ledger === undefined) {
      return envelopes.map(() => err('unavailable', `ledger ${this.#path}: ${this.#closedBecause}`));
    }
    return this.#ledger.publish(envelopes);
  }

  ready() {
    if (this.#ledger === undefined) throw new Error(`ledger ${this.#path}: ${this.#closedBecause}`);
    this.#ledger.health();
  }

  probe() {
    try {
      this.ready();
      return;
    } catch (e) {
      this.#ledger?.close();
      this.#ledger = undefined;
      this.#closedBecause = e.message;
    }
    try {
      this.#ledger = Ledger.open(this.#path);
    } catch (e) {
      this.#closedBecause = e.message;
      throw e;
    }
  }

  close() {
    this.#ledger?.close();
    this.#ledger = undefined;
    this.#closedBecause = 'closed';
  }
}

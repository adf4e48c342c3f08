// The SQLite adapter: the WIT `db` interface as batched SQL over better-sqlite3, with
// the semantics of host/src/db/sqlite.rs, so that a database either host wrote is one
// the other continues. Every write runs in a transaction opened with BEGIN IMMEDIATE:
// it takes the write lock up front, so two writers queue on the busy timeout instead
// of deadlocking on a lock upgrade.
//
// Values cross in jco's shapes: records with camelCase fields, `undefined` for none,
// BigInt for s64/u64, enums as their kebab-case names. Failures are thrown as DbError,
// whose `payload` jco lowers as the `db-error` variant.

import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';

import { formatPosition, comparePositions, parseCursorOf } from './cursor-value.mjs';
import { DbError, mapSqliteError } from './db-error.mjs';
import { packOperations, RECORD_FIELDS, TEXT_FIELDS } from './pack.mjs';
import { parseTextTime } from './text-time.mjs';

/** The schema both hosts run on every start (idempotent). */
export const SCHEMA_PATH = new URL('../../../sql/sqlite.sql', import.meta.url);

/** How long a statement waits for another connection's write lock before failing busy. */
const BUSY_TIMEOUT_MS = 10_000;
/** Rows per multi-row INSERT into `operation`: 14 binds each, well under SQLite's 32,766. */
const INSERT_CHUNK = 1_000;
/** Rows per multi-row upsert into `trustlog_retry` (8 binds each). */
const RETRY_CHUNK = 1_000;
/** op_ids per `IN (...)` list. */
const ID_CHUNK = 5_000;
/** Prepared statements kept; variable-arity ones come in one shape per chunk length. */
const STATEMENT_CACHE = 256;

const STATUS_TEXT = new Map([
  ['not-trustlogged', 'NOT_TRUSTLOGGED'],
  ['trustlogged', 'TRUSTLOGGED'],
  ['db-only', 'DB_ONLY'],
]);
const RETRY_STATUS_TEXT = new Map([
  ['pending', 'PENDING'],
  ['retrying', 'RETRYING'],
  ['dead-letter', 'DEAD_LETTER'],
]);

// The columns of `operation`, in field order, then the rowid: a text that is not UTF-8
// is read again as bytes by it (better-sqlite3 would hand it over with U+FFFD in place).
const OPERATION_COLUMNS =
  'o.op_id, o.op_actor, o.doid, o.producer_id, o.request_body_hash, o.response_body_hash, ' +
  'o.op_source, o.op_type, o.do_prefix, o.do_repository, o.client_ip, o.server_ip, o.timestamp, o.rowid';
const TIMESTAMP_AT = 12;
const ROWID_AT = 13;
const OPTIONAL = new Set([4, 5, 10, 11]);

// The waiting-row queries name their index and use the status as a literal, as the
// Rust adapter's do: the same plans, index range scans in keyset order without a sort.
const SQL = {
  scanFromStart: `SELECT ${OPERATION_COLUMNS} FROM operation o INDEXED BY operation_waiting
    WHERE o.trustlog_status = 'NOT_TRUSTLOGGED'
    AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)
    ORDER BY o.timestamp, o.op_id LIMIT ?1`,
  scanAfter: `SELECT ${OPERATION_COLUMNS} FROM operation o INDEXED BY operation_waiting
    WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) > (?1, ?2)
    AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)
    ORDER BY o.timestamp, o.op_id LIMIT ?3`,
  sweep: `SELECT ${OPERATION_COLUMNS} FROM operation o INDEXED BY operation_waiting
    WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND (o.timestamp, o.op_id) < (?1, ?2)
    AND o.timestamp >= ?3
    AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)
    ORDER BY o.timestamp, o.op_id LIMIT ?4`,
  // One ordered, limited branch per status, merged; the unary + keeps the join driven
  // by the due retry rows, never by the status index of `operation`.
  dueRetries: ['PENDING', 'RETRYING'].map((status) =>
    `SELECT * FROM (SELECT ${OPERATION_COLUMNS}, r.retry_count, r.next_retry_at AS due
      FROM trustlog_retry r INDEXED BY trustlog_retry_due_order
      JOIN operation o ON o.op_id = r.op_id
      WHERE r.retry_status = '${status}' AND r.next_retry_at <= ?1
      AND +o.trustlog_status = 'NOT_TRUSTLOGGED'
      ORDER BY r.next_retry_at, r.op_id LIMIT ?2)`).join(' UNION ALL ') + ' ORDER BY due, op_id LIMIT ?2',
  nextRetryAt: `SELECT MIN(due) FROM (
    SELECT * FROM (SELECT next_retry_at AS due FROM trustlog_retry
      INDEXED BY trustlog_retry_due_order WHERE retry_status = 'PENDING'
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1) UNION ALL
    SELECT * FROM (SELECT next_retry_at AS due FROM trustlog_retry
      INDEXED BY trustlog_retry_due_order WHERE retry_status = 'RETRYING'
      AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1))`,
  backlog: `SELECT
    (SELECT COUNT(*) FROM operation o INDEXED BY operation_waiting
      WHERE o.trustlog_status = 'NOT_TRUSTLOGGED'
      AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)),
    (SELECT COUNT(*) FROM trustlog_retry INDEXED BY trustlog_retry_due_order
      WHERE retry_status IN ('PENDING', 'RETRYING'))`,
  // Walking the index in order stops at the first match, where MIN() over the NOT
  // EXISTS filter would visit every waiting row.
  oldestWaiting: `SELECT o.timestamp FROM operation o INDEXED BY operation_waiting
    WHERE o.trustlog_status = 'NOT_TRUSTLOGGED'
    AND NOT EXISTS (SELECT 1 FROM trustlog_retry r WHERE r.op_id = o.op_id)
    ORDER BY o.timestamp, o.op_id LIMIT 1`,
  countByStatus: 'SELECT trustlog_status, COUNT(*) FROM operation GROUP BY trustlog_status',
  countRetriesByStatus: 'SELECT retry_status, COUNT(*) FROM trustlog_retry GROUP BY retry_status',
  loadCursor: 'SELECT cursor_value FROM trustlog_cursor WHERE cursor_key = ?1',
  rewriteCursor: 'UPDATE trustlog_cursor SET cursor_value = ?1 WHERE cursor_key = ?2 AND cursor_value = ?3',
  moveCursor: `UPDATE trustlog_cursor SET cursor_value = ?1, last_updated_at = ?2
    WHERE cursor_key = ?3 AND cursor_value = ?4`,
  // A missing row is created; an existing one is taken only while empty (the DO
  // UPDATE's WHERE leaves a set cursor alone and reports no change).
  setCursor: `INSERT INTO trustlog_cursor (cursor_key, cursor_value, last_updated_at)
    VALUES (?1, ?2, ?3) ON CONFLICT(cursor_key) DO UPDATE SET
    cursor_value = excluded.cursor_value, last_updated_at = excluded.last_updated_at
    WHERE trustlog_cursor.cursor_value = ''`,
  // The unary + keeps the planner on the primary key, off the status index.
  markTrustlogged: "UPDATE operation SET trustlog_status = 'TRUSTLOGGED' WHERE +trustlog_status = 'NOT_TRUSTLOGGED' AND op_id IN ",
  deleteRetries: 'DELETE FROM trustlog_retry WHERE op_id IN ',
  insertOperations: `INSERT INTO operation (op_id, op_actor, doid, producer_id, request_body_hash,
    response_body_hash, op_source, op_type, do_prefix, do_repository, client_ip, server_ip,
    timestamp, trustlog_status) VALUES `,
  upsertRetries: `INSERT INTO trustlog_retry (op_id, retry_count, retry_status, last_retry_at,
    next_retry_at, error_message, created_at, updated_at) VALUES `,
  // created_at is absent from the update list: it keeps the first failure's time.
  upsertRetriesTail: ` ON CONFLICT(op_id) DO UPDATE SET retry_count = excluded.retry_count,
    retry_status = excluded.retry_status, last_retry_at = excluded.last_retry_at,
    next_retry_at = excluded.next_retry_at, error_message = excluded.error_message,
    updated_at = excluded.updated_at`,
  readLease: 'SELECT holder, acquired_at, renewed_at, expires_at, state FROM trustlog_lease WHERE lease_key = ?1',
  // Reads the schema page: `SELECT 1` alone would not touch the database file.
  ping: 'SELECT COUNT(*) FROM sqlite_master',
};

/** The SQLite database of one tenant, implementing the WIT `db` interface. */
export class SqliteDb {
  #db;
  #statements = new Map();

  /**
   * Takes a better-sqlite3 connection and sets it up as the Rust adapter sets up its
   * own: WAL, FULL sync (an acknowledged row survives a power cut), a 10 s busy
   * timeout, no foreign keys; then creates what is missing of the schema, unless
   * `migrate` is false.
   */
  constructor(database, { migrate = true } = {}) {
    this.#db = database;
    guard(() => {
      database.pragma('journal_mode = WAL');
      database.pragma('synchronous = FULL');
      database.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      database.pragma('foreign_keys = OFF');
    });
    if (migrate) this.migrate();
  }

  /** Opens (creating if missing) the database file at `path`; ':memory:' works too. */
  static open(path, options) {
    let database;
    try {
      database = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    } catch (e) {
      // better-sqlite3 refuses a missing directory itself, before SQLite would answer
      // SQLITE_CANTOPEN: either way the file cannot be opened, which is unavailable.
      const mapped = mapSqliteError(e);
      throw mapped.tag === 'other' ? DbError.unavailable(`cannot open ${path}: ${e.message}`) : mapped;
    }
    try {
      return new SqliteDb(database, options);
    } catch (e) {
      database.close();
      throw e;
    }
  }

  /** The better-sqlite3 connection, for tests and tools that read the tables. */
  get connection() {
    return this.#db;
  }

  /** Creates the tables and indexes that are missing; safe on every start. */
  migrate() {
    const schema = readFileSync(SCHEMA_PATH, 'utf8');
    guard(() => this.#db.exec(schema));
  }

  close() {
    this.#statements.clear();
    this.#db.close();
  }

  /** `insert`: one outcome per input, in order; a duplicate op_id leaves the stored row as it was. */
  insert(ops, status) {
    const statusText = STATUS_TEXT.get(status);
    if (statusText === undefined) throw DbError.invalid('trustlog_status', `unknown status ${JSON.stringify(status)}`);
    if (ops.length === 0) return [];
    return this.#immediate(() => {
      const outcomes = [];
      for (let from = 0; from < ops.length; from += INSERT_CHUNK) {
        const chunk = ops.slice(from, from + INSERT_CHUNK);
        const values = [];
        for (const op of chunk) {
          for (const field of RECORD_FIELDS) values.push(op[field] ?? null);
          values.push(op.timestamp, statusText);
        }
        const sql = SQL.insertOperations + rowsOf(14, chunk.length) + ' ON CONFLICT(op_id) DO NOTHING RETURNING op_id';
        const stored = new Map();
        for (const [id] of this.#statement(sql).raw().all(values)) stored.set(id, (stored.get(id) ?? 0) + 1);
        // SQLite inserts VALUES rows in order, so of two equal op_ids in one batch the
        // first is stored; taking an id once claimed makes the second a duplicate.
        for (const op of chunk) {
          const left = stored.get(op.opId) ?? 0;
          if (left > 0) stored.set(op.opId, left - 1);
          outcomes.push(left > 0 ? 'inserted' : 'duplicate');
        }
      }
      return outcomes;
    });
  }

  /** `load-cursor`: the position, or `undefined` when the row is missing or empty. */
  loadCursor(key) {
    return guard(() => {
      const value = this.#statement(SQL.loadCursor).pluck().get(numbered(key));
      const read = parseCursorOf(key, value);
      if (read !== undefined && !read.own) {
        // Written by another program (the seed's module writes a bare timestamp):
        // rewritten in trustlog's form, with compare-and-set on what was read, so the
        // compare-and-set of every move matches it.
        this.#statement(SQL.rewriteCursor).run(numbered(formatPosition(read.position), key, value));
      }
      return read?.position;
    });
  }

  /** `scan-after`: waiting rows strictly after `after` in (timestamp, op_id) order, with no retry row. */
  scanAfter(after, limit) {
    return guard(() => {
      const rows = after === undefined
        ? this.#statement(SQL.scanFromStart).raw().all(numbered(BigInt(limit)))
        : this.#statement(SQL.scanAfter).raw().all(numbered(after.timestamp, after.opId, BigInt(limit)));
      return this.#packRows(rows);
    });
  }

  /** `due-retries`: retry rows due at `now` (pending or retrying), oldest due first. */
  dueRetries(now, limit) {
    return guard(() => {
      const rows = this.#statement(SQL.dueRetries).raw().all(numbered(now, BigInt(limit)));
      const ops = [];
      const faults = [];
      const retryCounts = [];
      for (const row of rows) {
        const count = row[ROWID_AT + 1];
        if (typeof count !== 'bigint' || count < 0n || count > 0xffff_ffffn) {
          throw DbError.other(`retry_count ${count} is out of range`);
        }
        const read = this.#operationAt(row);
        if (read.fault) {
          faults.push({ ...read.fault, retryCount: Number(count) });
        } else {
          ops.push(read.op);
          retryCounts.push(Number(count));
        }
      }
      return { ops: packOperations(ops, faults), retryCounts: Uint32Array.from(retryCounts) };
    });
  }

  /** `sweep-candidates`: waiting rows before `before`, stamped at or after `since`, with no retry row. */
  sweepCandidates(before, since, limit) {
    return guard(() => {
      const rows = this.#statement(SQL.sweep).raw().all(numbered(before.timestamp, before.opId, since, BigInt(limit)));
      return this.#packRows(rows);
    });
  }

  /** `stats`: the monitoring counts and the position of `cursorKey`, read in one snapshot. */
  stats(cursorKey) {
    // A deferred transaction: in WAL mode every read below sees the same snapshot.
    return this.#deferred(() => {
      const stats = {
        total: 0n, trustlogged: 0n, notTrustlogged: 0n, dbOnly: 0n, retryPending: 0n, deadLetter: 0n,
        cursor: undefined, oldestWaiting: undefined, nextRetryAt: undefined,
      };
      for (const [status, count] of this.#statement(SQL.countByStatus).raw().all()) {
        const field = { NOT_TRUSTLOGGED: 'notTrustlogged', TRUSTLOGGED: 'trustlogged', DB_ONLY: 'dbOnly' }[status];
        if (field === undefined) throw DbError.other(`operation.trustlog_status holds unknown value ${JSON.stringify(status)}`);
        stats[field] = count;
        stats.total += count;
      }
      for (const [status, count] of this.#statement(SQL.countRetriesByStatus).raw().all()) {
        if (status === 'PENDING' || status === 'RETRYING') stats.retryPending += count;
        else if (status === 'DEAD_LETTER') stats.deadLetter += count;
        else throw DbError.other(`trustlog_retry.retry_status holds unknown value ${JSON.stringify(status)}`);
      }
      const value = this.#statement(SQL.loadCursor).pluck().get(numbered(cursorKey));
      stats.cursor = parseCursorOf(cursorKey, value)?.position;
      // Read as the scan reads it; one that cannot be read at all is about to be
      // dead-lettered, and shows no lag.
      const oldest = this.#statement(SQL.oldestWaiting).pluck().get();
      if (oldest !== undefined) stats.oldestWaiting = readTimestamp(oldest).value;
      stats.nextRetryAt = this.#nextRetryAt();
      return stats;
    });
  }

  /** `apply`: a unit of work in one transaction; on a cursor mismatch nothing is applied. */
  apply(work) {
    const { now, trustlogged, retries, deleteRetries, cursor } = work;
    if (cursor?.expected !== undefined && comparePositions(cursor.to, cursor.expected) <= 0) {
      throw DbError.other(
        `cursor ${JSON.stringify(cursor.key)} only moves forward: refusing to move it from ${formatPosition(cursor.expected)} to ${formatPosition(cursor.to)}`,
      );
    }
    if (cursor === undefined && trustlogged.length === 0 && retries.length === 0 && deleteRetries.length === 0) return;
    this.#immediate(() => {
      if (cursor !== undefined) {
        const to = formatPosition(cursor.to);
        const { changes } = cursor.expected === undefined
          ? this.#statement(SQL.setCursor).run(numbered(cursor.key, to, now))
          : this.#statement(SQL.moveCursor).run(numbered(to, now, cursor.key, formatPosition(cursor.expected)));
        // Thrown inside the transaction, so it rolls back whatever ran before.
        if (changes !== 1) throw DbError.cursorMoved(cursor.key);
      }
      for (const ids of chunks(trustlogged, ID_CHUNK)) {
        this.#statement(SQL.markTrustlogged + listOf(ids.length)).run(ids);
      }
      for (const chunk of chunks(retries, RETRY_CHUNK)) {
        const values = [];
        for (const r of chunk) {
          const status = RETRY_STATUS_TEXT.get(r.retryStatus);
          if (status === undefined) throw DbError.invalid('retry_status', `unknown retry status ${JSON.stringify(r.retryStatus)} of op_id ${JSON.stringify(r.opId)}`);
          values.push(r.opId, BigInt(r.retryCount), status, r.lastRetryAt ?? null, r.nextRetryAt ?? null, r.errorMessage, now, now);
        }
        this.#statement(SQL.upsertRetries + rowsOf(8, chunk.length) + SQL.upsertRetriesTail).run(values);
      }
      for (const ids of chunks(deleteRetries, ID_CHUNK)) {
        this.#statement(SQL.deleteRetries + listOf(ids.length)).run(ids);
      }
    });
  }

  /**
   * What is left to deliver, from the indexes: rows waiting for their first delivery,
   * retry rows pending, and when the first of those is due.
   */
  backlog() {
    return this.#deferred(() => {
      const [waiting, retrying] = this.#statement(SQL.backlog).raw().get();
      return { waiting, retrying, nextRetryAt: this.#nextRetryAt() };
    });
  }

  /** The lease row of `key` (which host delivers for it), if any host ever took it. */
  readLease(key) {
    return guard(() => {
      const row = this.#statement(SQL.readLease).get(numbered(key));
      return row && { key, ...row };
    });
  }

  /** Whether the database file can be read. */
  ping() {
    guard(() => this.#statement(SQL.ping).pluck().get());
  }

  #nextRetryAt() {
    const due = this.#statement(SQL.nextRetryAt).pluck().get();
    if (due === null || due === undefined) return undefined;
    if (typeof due !== 'bigint') throw DbError.other(`trustlog_retry.next_retry_at holds ${JSON.stringify(String(due))}, not integer microseconds`);
    return due;
  }

  #packRows(rows) {
    const ops = [];
    const faults = [];
    for (const row of rows) {
      const read = this.#operationAt(row);
      if (read.fault) faults.push(read.fault);
      else ops.push(read.op);
    }
    return packOperations(ops, faults);
  }

  // A row as an operation, or as a row-fault naming the column that cannot be read; an
  // op_id that cannot be read fails the whole call, since nothing could name the row.
  #operationAt(row) {
    const rowid = row[ROWID_AT];
    const opId = row[0];
    if (typeof opId !== 'string') throw DbError.other(`operation row ${rowid}: op_id is a ${sqlType(opId)}, not TEXT`);
    const badOpId = this.#notUtf8(rowid, 0, opId);
    if (badOpId) throw DbError.other(`operation row ${rowid}: op_id: ${badOpId}`);
    const fault = (column, message) => ({ fault: { opId, column, message, retryCount: 0 } });
    const op = { opId };
    for (let i = 1; i < TEXT_FIELDS.length; i++) {
      const value = row[i];
      if (value === null) {
        if (OPTIONAL.has(i)) continue;
        return fault(TEXT_FIELDS[i], 'database error: NULL where a value is needed');
      }
      if (typeof value !== 'string') {
        return fault(TEXT_FIELDS[i], `database error: a ${sqlType(value)} where TEXT is needed`);
      }
      const bad = this.#notUtf8(rowid, i, value);
      if (bad) return fault(TEXT_FIELDS[i], `database error: ${bad}`);
      op[RECORD_FIELDS[i]] = value;
    }
    const timestamp = readTimestamp(row[TIMESTAMP_AT]);
    if (timestamp.error) return fault('timestamp', timestamp.error);
    op.timestamp = timestamp.value;
    return { op };
  }

  // better-sqlite3 decodes text that is not UTF-8 with U+FFFD in place of the bad bytes;
  // only then are the stored bytes read again, to tell it from a U+FFFD really stored.
  #notUtf8(rowid, column, value) {
    if (!value.includes('\uFFFD')) return undefined;
    const bytes = this.#statement(`SELECT CAST(${TEXT_FIELDS[column]} AS BLOB) FROM operation WHERE rowid = ?1`).pluck().get(numbered(rowid));
    try {
      new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
      return undefined;
    } catch (e) {
      return `text that is not UTF-8 (${e.message})`;
    }
  }

  #statement(sql) {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      if (this.#statements.size >= STATEMENT_CACHE) this.#statements.clear();
      statement = this.#db.prepare(sql);
      if (statement.reader) statement.safeIntegers(true);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #immediate(work) {
    return guard(() => this.#db.transaction(work).immediate());
  }

  #deferred(work) {
    return guard(() => this.#db.transaction(work).deferred());
  }
}

/** A timestamp as the schema stores it (INTEGER microseconds), or as TEXT in the forms other programs write. */
function readTimestamp(value) {
  if (value === null) return { error: 'NULL where a timestamp is needed' };
  if (typeof value === 'bigint') return { value };
  if (typeof value === 'string') {
    try {
      return { value: parseTextTime(value) };
    } catch (e) {
      return { error: e.message };
    }
  }
  return { error: `a ${sqlType(value)} where INTEGER microseconds are needed` };
}

function sqlType(value) {
  if (value === null) return 'NULL';
  if (typeof value === 'bigint') return 'INTEGER';
  if (typeof value === 'number') return 'REAL';
  if (typeof value === 'string') return 'TEXT';
  return 'BLOB';
}

/** Runs `work`, mapping what SQLite threw onto `db-error`. */
function guard(work) {
  try {
    return work();
  } catch (e) {
    throw mapSqliteError(e);
  }
}

function* chunks(items, size) {
  for (let from = 0; from < items.length; from += size) yield items.slice(from, from + size);
}

/**
 * Binds for `?1, ?2, ...`: better-sqlite3 takes numbered parameters by name. The SQL
 * keeps the Rust adapter's numbering, where one value may be bound twice.
 */
function numbered(...values) {
  return Object.fromEntries(values.map((value, i) => [i + 1, value]));
}

/** `(?, ?, ...)` of `n` binds. */
function listOf(n) {
  return `(${new Array(n).fill('?').join(', ')})`;
}

/** `rows` tuples of `width` binds, for a multi-row VALUES. */
function rowsOf(width, rows) {
  const tuple = listOf(width);
  return new Array(rows).fill(tuple).join(', ');
}

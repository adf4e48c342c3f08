// The WIT `db-error` variant as a JS error. jco lowers what a `result`-returning import
// throws by reading the thrown value's own `payload` property, so the variant lives
// there ({ tag, val }), and the error keeps a message and a stack for the host's logs.

export class DbError extends Error {
  constructor(tag, val) {
    super(describe(tag, val));
    this.name = 'DbError';
    this.payload = { tag, val };
  }

  get tag() {
    return this.payload.tag;
  }

  get val() {
    return this.payload.val;
  }

  /** The named op_id (or the database's message naming it) already exists. */
  static conflict(message) {
    return new DbError('conflict', message);
  }

  /** A value the database refused, naming the field. */
  static invalid(field, message) {
    return new DbError('invalid', { field, message });
  }

  /** Another worker moved the named cursor first; nothing was applied. */
  static cursorMoved(key) {
    return new DbError('cursor-moved', key);
  }

  /** The database cannot be reached or timed out; worth retrying. */
  static unavailable(message) {
    return new DbError('unavailable', message);
  }

  static other(message) {
    return new DbError('other', message);
  }
}

/** A `db-error` value as the Rust host's Display writes it. */
export function describe(tag, val) {
  switch (tag) {
    case 'conflict':
      return `op_id ${JSON.stringify(val)} already exists`;
    case 'invalid':
      return `invalid value: ${val.field}: ${val.message}`;
    case 'cursor-moved':
      return `cursor ${JSON.stringify(val)} was moved by another worker`;
    case 'unavailable':
      return `database unavailable: ${val}`;
    default:
      return `database error: ${val}`;
  }
}

// SQLite's primary result codes that mean "not now" rather than "never".
const UNAVAILABLE_CODES = new Set(['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CANTOPEN']);

// The schema's named CHECK constraints and the field each guards.
const CHECKED_FIELDS = new Map([
  ['operation_op_id_length', 'op_id'],
  ['operation_trustlog_status_value', 'trustlog_status'],
  ['trustlog_retry_retry_status_value', 'retry_status'],
]);

/**
 * Maps what better-sqlite3 threw onto the `db-error` cases, as the Rust adapter maps
 * sqlx's errors: unique → conflict, a named CHECK or NOT NULL → invalid naming the
 * field, busy/locked/I/O/full/cannot-open → unavailable, anything else → other.
 */
export function mapSqliteError(error) {
  if (error instanceof DbError) return error;
  const code = typeof error?.code === 'string' ? error.code : '';
  const message = String(error?.message ?? error);
  if (!code.startsWith('SQLITE_')) return DbError.other(message);
  switch (code) {
    case 'SQLITE_CONSTRAINT_UNIQUE':
    case 'SQLITE_CONSTRAINT_PRIMARYKEY':
      // SQLite names the index, not the value: the message is all there is to report.
      return DbError.conflict(message);
    case 'SQLITE_CONSTRAINT_CHECK': {
      // "CHECK constraint failed: <constraint name>"
      const field = CHECKED_FIELDS.get(message.split(': ').at(-1));
      return field ? DbError.invalid(field, message) : DbError.other(message);
    }
    case 'SQLITE_CONSTRAINT_NOTNULL': {
      // "NOT NULL constraint failed: <table>.<column>"
      const dot = message.lastIndexOf('.');
      const field = dot < 0 ? '' : message.slice(dot + 1);
      return field ? DbError.invalid(field, message) : DbError.other(message);
    }
  }
  const primary = code.split('_', 2).join('_');
  const text = `${message} (code ${code})`;
  return UNAVAILABLE_CODES.has(primary) ? DbError.unavailable(text) : DbError.other(text);
}

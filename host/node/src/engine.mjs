// The trustlog component, transpiled by jco (`npm run build`), instantiated with this
// host's adapters as its imports: the same decisions as the Rust host's, the I/O ours.
//
// jco's shapes cross the boundary as they are: records with camelCase fields,
// `undefined` for none, BigInt for s64/u64, enums as kebab-case strings, variants and
// results as { tag, val }. An import that fails throws a value whose own `payload` is
// the error variant (DbError does); an export that fails throws jco's ComponentError,
// which this wrapper turns into an EngineError naming the case.
//
// The contract's handed-off work (`db.begin-apply` returning a `commit`, `publisher.send`
// returning a `delivery`) is done at once here: every import of this host is
// synchronous, so a unit of work has committed, and a batch has been written, by the time
// the guest holds its handle; the handle keeps the answer for the guest to collect.

import { readFileSync } from 'node:fs';
import { cli, clocks, io, random } from '@bytecodealliance/preview2-shim';

import { describe as describeDbError } from './db-error.mjs';
import { sha256 } from './digest.mjs';
import { envelopeCount, unpackEnvelopes } from './envelopes.mjs';
import { guestLog, logger } from './log.mjs';

export const BUILD_DIR = new URL('../build/', import.meta.url);
const ENGINE_DIR = new URL('engine/', BUILD_DIR);

/** The engine's defaults, as the Rust host's command line has them (jco's shape). */
export const DEFAULT_CONFIG = Object.freeze({
  cursorKey: 'operation_scan',
  batchSize: 100,
  backoff: Object.freeze({ baseMicros: 60_000_000n, factor: 2, capMicros: 960_000_000n, maxRetries: 5 }),
  defaultStrategy: 'db-and-trustlog',
  catchUpWindowMicros: 300_000_000n,
  pipelineDepth: 3,
});

/** The deepest scan pipeline a configuration may ask for (`config.pipeline-depth`). */
export const MAX_PIPELINE_DEPTH = 8;

/** Why an engine call failed as a whole: `payload` is the WIT `engine-error`. */
export class EngineError extends Error {
  constructor(payload) {
    super(describeEngineError(payload));
    this.name = 'EngineError';
    this.payload = payload;
  }

  /** Whether the database could not be reached: worth waiting for, not a failing tick. */
  get dbUnavailable() {
    return this.payload.tag === 'db' && this.payload.val.tag === 'unavailable';
  }
}

/** The component's identity: the SHA-256 of the exact file the build transpiled. */
export function componentInfo() {
  try {
    return JSON.parse(readFileSync(new URL('component.json', BUILD_DIR), 'utf8'));
  } catch (e) {
    throw new Error(`the transpiled component is missing (${e.message}): run \`npm run build\` in host/node first`);
  }
}

let bindings;
async function loadBindings() {
  if (bindings === undefined) {
    try {
      bindings = await import(new URL('trustlog.js', ENGINE_DIR));
    } catch (e) {
      throw new Error(`the transpiled component is missing (${e.message}): run \`npm run build\` in host/node first`);
    }
  }
  return bindings;
}

// Compiled once per process: instances (one per engine) share the code.
const coreModules = new Map();
function coreModule(path) {
  let module = coreModules.get(path);
  if (module === undefined) {
    module = new WebAssembly.Module(readFileSync(new URL(path, ENGINE_DIR)));
    coreModules.set(path, module);
  }
  return module;
}

/** One instance of the engine component over one database and one publisher. */
export class Engine {
  #instantiate;
  #exports;
  #config;

  constructor(instantiate) {
    this.#instantiate = instantiate;
    this.#exports = instantiate();
  }

  /**
   * An engine over `db` (the WIT `db` functions, e.g. SqliteDb) and `publisher`
   * (`publish(envelopes)` answering one WIT result per envelope, and optionally
   * `ready()`, which throws while the trust log as a whole cannot be reached).
   */
  static async create({ db, publisher, log = guestLog() }) {
    const { instantiate } = await loadBindings();
    const imports = hostImports({ db, publisher, log });
    return new Engine(() => instantiate(coreModule, imports).engine);
  }

  /** Sets the configuration (jco's shape); also forgets what the engine cached of the database. */
  configure(config) {
    this.#call('configure', config);
    this.#config = config;
  }

  /** Applies a strategy (or the configured default) to operations; one outcome per input. */
  record(ops, strategy) {
    return this.#call('record', ops, strategy);
  }

  /**
   * The next scan batch, pipelined: the report counts the batches whose commit this
   * call saw, and `more` is also true while batches are out (call `scanSettle` before
   * stopping).
   */
  scanTick(now) {
    return this.#call('scanTick', BigInt(now));
  }

  /** Settles every batch `scanTick` left out (confirmed rows marked); reads nothing. */
  scanSettle(now) {
    return this.#call('scanSettle', BigInt(now));
  }

  retryTick(now) {
    return this.#call('retryTick', BigInt(now));
  }

  sweepTick(now) {
    return this.#call('sweepTick', BigInt(now));
  }

  catchUpTick(now) {
    return this.#call('catchUpTick', BigInt(now));
  }

  status(now) {
    return this.#call('status', BigInt(now));
  }

  #call(name, ...args) {
    if (this.#exports === undefined) this.#restart();
    try {
      return this.#exports[name](...args);
    } catch (e) {
      if (e?.constructor?.name === 'ComponentError' && Object.hasOwn(e, 'payload')) throw new EngineError(e.payload);
      // A trap leaves the instance unusable (jco marks it so); the next call gets a
      // fresh one, configured as this one was, as the Rust host replaces a trapped guest.
      this.#exports = undefined;
      throw e;
    }
  }

  #restart() {
    this.#exports = this.#instantiate();
    if (this.#config !== undefined) this.#exports.configure(this.#config);
  }
}

/** The component's imports: our adapters, and WASI from preview2-shim. */
function hostImports({ db, publisher, log }) {
  return {
    'trustlog:engine/db': {
      insert: (ops, status) => db.insert(ops, status),
      loadCursor: (key) => db.loadCursor(key),
      scanAfter: (after, limit) => db.scanAfter(after, limit),
      dueRetries: (now, limit) => db.dueRetries(now, limit),
      sweepCandidates: (before, since, limit) => db.sweepCandidates(before, since, limit),
      stats: (cursorKey) => db.stats(cursorKey),
      apply: (work) => db.apply(work),
      beginApply: (work) => Commit.run(db, work),
      Commit,
    },
    'trustlog:engine/publisher': {
      publish: (batch) => publish(publisher, batch),
      send: (batch) => new Delivery(publish(publisher, batch)),
      Delivery,
    },
    'trustlog:engine/log': { log: (level, message) => log.log(level, message) },
    'trustlog:engine/digest': { sha256 },
    // No environment variables, no files, no sockets: the guest's only way out is the
    // imports above, as in the Rust host's sandbox. Its stdout goes to our stderr: our
    // stdout carries the command's summary.
    'wasi:cli/environment': { getEnvironment: () => [] },
    // The shim's exit would end this whole process; a guest that exits traps instead,
    // as under wasmtime, and the next call gets a fresh instance.
    'wasi:cli/exit': {
      exit: (status) => {
        throw new Error(`the engine component called exit (${status.tag === 'ok' ? 'success' : 'failure'})`);
      },
    },
    'wasi:cli/stdin': cli.stdin,
    'wasi:cli/stdout': { getStdout: cli.stderr.getStderr },
    'wasi:cli/stderr': cli.stderr,
    'wasi:cli/terminal-input': cli.terminalInput,
    'wasi:cli/terminal-output': cli.terminalOutput,
    'wasi:cli/terminal-stdin': cli.terminalStdin,
    'wasi:cli/terminal-stdout': cli.terminalStdout,
    'wasi:cli/terminal-stderr': cli.terminalStderr,
    // Linked in by Rust's WASI support (a sleep's timer); the engine itself never waits.
    'wasi:clocks/monotonic-clock': clocks.monotonicClock,
    'wasi:io/error': io.error,
    'wasi:io/poll': io.poll,
    'wasi:io/streams': io.streams,
    'wasi:random/insecure-seed': random.insecureSeed,
  };
}

/**
 * The `db.commit` resource: a unit of work `beginApply` ran at once, in its own
 * transaction, keeping what `apply` would have answered. `outcome()` answers it as
 * `apply` does: nothing, or the DbError thrown again (jco lowers its `payload`). jco
 * finds the class by its name in the import object and checks each handle against it.
 */
export class Commit {
  #failure;
  #failed;

  constructor(failed, failure) {
    this.#failed = failed;
    this.#failure = failure;
  }

  /**
   * Runs `work` on `db` now. A failure that is a `db-error` (a value with its own
   * `payload`) is kept for `outcome()`; any other exception is a host bug, thrown at
   * once, so the instance traps here as it would in `apply`, even if the guest never
   * collected the outcome.
   */
  static run(db, work) {
    try {
      db.apply(work);
    } catch (e) {
      if (e instanceof Error && !Object.hasOwn(e, 'payload')) throw e;
      return new Commit(true, e);
    }
    return new Commit(false, undefined);
  }

  outcome() {
    if (this.#failed) throw this.#failure;
  }
}

/**
 * The `publisher.delivery` resource: a batch `send` handed to the trust log at once,
 * keeping its confirmations; `confirmations()` answers them as `publish` would have.
 * Dropped uncollected, its rows stay unmarked and are delivered again (the contract).
 */
export class Delivery {
  #results;

  constructor(results) {
    this.#results = results;
  }

  confirmations() {
    return this.#results;
  }
}

/**
 * `publisher.publish` (and `send`): unpacks the guest's batch and hands the envelopes over. A batch
 * whose layout is broken (only a faulty guest sends one) is refused envelope by
 * envelope as permanent: the same guest would send it broken again.
 */
function publish(publisher, batch) {
  let envelopes;
  try {
    envelopes = unpackEnvelopes(batch);
  } catch (e) {
    logger.warn(`refusing a malformed envelope batch: ${e.message}`);
    const refusal = { tag: 'err', val: { tag: 'permanent', val: `malformed envelope batch: ${e.message}` } };
    return new Array(envelopeCount(batch)).fill(refusal);
  }
  return judgeOutage(publisher, publisher.publish(envelopes));
}

/**
 * Envelopes that failed transiently because the trust log as a whole is down become
 * `unavailable`: the rows then keep their retries and the worker waits for it. A trust
 * log that answers but refused these envelopes leaves them transient, so a bad envelope
 * still spends its retries and reaches the dead letters.
 */
function judgeOutage(publisher, results) {
  if (typeof publisher.ready !== 'function' || !results.some((r) => r.tag === 'err' && r.val.tag === 'transient')) {
    return results;
  }
  try {
    publisher.ready();
    return results;
  } catch (down) {
    return results.map((r) => (r.tag === 'err' && r.val.tag === 'transient'
      ? { tag: 'err', val: { tag: 'unavailable', val: `${r.val.val} (the trust log does not answer: ${down.message})` } }
      : r));
  }
}

/** An `engine-error` as the Rust host's Display writes it. */
export function describeEngineError(payload) {
  switch (payload.tag) {
    case 'not-configured':
      return 'engine not configured';
    case 'invalid-config':
      return `invalid configuration: ${payload.val.field}: ${payload.val.message}`;
    case 'db':
      return describeDbError(payload.val.tag, payload.val.val);
    default:
      return `engine error ${JSON.stringify(payload)}`;
  }
}

/** A `publish-error` as the Rust host's Display writes it. */
export function describePublishError({ tag, val }) {
  const kind = { transient: 'transient publish error', permanent: 'permanent publish error', unavailable: 'trust log unavailable' }[tag];
  return `${kind ?? tag}: ${val}`;
}

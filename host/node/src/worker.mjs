// The tick loop, as host/src/scheduling/worker.rs runs it (without the lease and the
// wake-ups of the Rust host's other surfaces): passes that give each kind of tick one
// batch in turn (scan and catch-up always; retry and sweep when their interval is due),
// going round again while any batch came back full; pauses after failed passes; and
// delivery paused while the trust log or the database cannot be reached, probing it
// until it answers.
//
// Engine calls are synchronous, so between batches the loop yields to the event loop:
// a shutdown (SIGINT, SIGTERM) is seen there, and the batch in flight is finished.
//
// The scan is pipelined: a scan tick may return (saying `more`) with batches sent to the
// trust log and not yet committed. A pass that ends with batches out (cut short by a
// shutdown or an outage) settles them with `scanSettle`, so the loop never pauses,
// stands by or exits (drained, shutdown, failing) leaving a confirmed row unmarked.

import { setImmediate as yieldNow, setTimeout as sleep } from 'node:timers/promises';

import { nowMicros } from './clock.mjs';
import { EngineError } from './engine.mjs';
import { logger } from './log.mjs';

/** How often each tick runs while nothing is to be drained, in milliseconds. */
export const DEFAULT_INTERVALS = Object.freeze({ poll: 1_000, retry: 10_000, sweep: 60_000 });

/** The pause after a failed pass; it doubles with each failed pass in a row, up to MAX_ERROR_PAUSE. */
const ERROR_PAUSE = 1_000;
const MAX_ERROR_PAUSE = 10_000;
/** The first wait before an outage's probe; it doubles up to MAX_PROBE_PAUSE. */
const PROBE_PAUSE = 250;
const MAX_PROBE_PAUSE = 2_000;
/** The longest a drain sleeps before looking again while it waits for a due retry. */
const DRAIN_RECHECK = 1_000;
/** How long ticks may fail in a row, delivering nothing, before a drain gives up. */
export const DEFAULT_GIVE_UP_AFTER = 60_000;

const TICKS = {
  scan: (engine, now) => engine.scanTick(now),
  // Not a lane of its own: what ends a pass that left scan batches out.
  'scan settle': (engine, now) => engine.scanSettle(now),
  'catch-up': (engine, now) => engine.catchUpTick(now),
  retry: (engine, now) => engine.retryTick(now),
  sweep: (engine, now) => engine.sweepTick(now),
};

export class Worker {
  #engine;
  #db;
  #publisher;
  #intervals;
  #clock;
  #giveUpAfter;

  /**
   * Drives `engine` over `db` (probed with `ping()` through a database outage) and
   * `publisher` (probed with `probe()` or `ready()` through a trust log outage).
   */
  constructor({ engine, db, publisher, intervals = DEFAULT_INTERVALS, clock = nowMicros, giveUpAfter = DEFAULT_GIVE_UP_AFTER }) {
    this.#engine = engine;
    this.#db = db;
    this.#publisher = publisher;
    this.#intervals = { ...DEFAULT_INTERVALS, ...intervals };
    this.#clock = clock;
    this.#giveUpAfter = giveUpAfter;
  }

  /**
   * Delivers until `signal` aborts or, with `untilDrained`, until nothing is left
   * waiting (every row delivered, db-only or a dead letter). Resolves to the totals:
   * `{ exit: 'drained' | 'shutdown' | 'failing', published, retryScheduled,
   * deadLettered, errors, error? }`.
   */
  async run({ untilDrained = false, signal = new AbortController().signal } = {}) {
    const start = this.#clock();
    const run = {
      summary: { exit: 'shutdown', published: 0, retryScheduled: 0, deadLettered: 0, errors: 0 },
      nextRetry: start,
      nextSweep: start,
      tickError: undefined,
      failing: undefined,
      // The last scan tick may have left batches out (it said `more`).
      scanOut: false,
    };
    run.summary.exit = await this.#drive(untilDrained, signal, run);
    // Every pass settles what it left out; this only guards the exit itself.
    if (run.scanOut) this.#settle({ fetched: 0, errored: false, error: undefined, outage: undefined }, run);
    return run.summary;
  }

  async #drive(untilDrained, signal, run) {
    let outage;
    let failedPasses = 0;
    let failingSince;
    for (;;) {
      if (signal.aborted) return 'shutdown';
      if (outage !== undefined) {
        await pause(outage.pause, signal);
        if (signal.aborted) continue;
        try {
          await this.#probe(outage.of);
        } catch (e) {
          logger.debug(`the ${outage.of} is still unreachable: ${e.message}`);
          outage.pause = Math.min(outage.pause * 2, MAX_PROBE_PAUSE);
          continue;
        }
        logger.info(`the ${outage.of} is reachable again after ${((Date.now() - outage.began) / 1000).toFixed(1)} s; delivery resumes`);
        outage = undefined;
        // What the outage left untouched is due at once.
        run.nextRetry = run.nextSweep = this.#clock();
      }

      const pass = await this.#pass(untilDrained, signal, run);
      if (signal.aborted) return 'shutdown';
      if (pass.outage !== undefined) {
        logger.warn(`delivery paused: the ${pass.outage.of} cannot be reached (${pass.outage.reason}); probing until it answers`);
        outage = { of: pass.outage.of, began: Date.now(), pause: PROBE_PAUSE };
        continue;
      }
      // A pass that delivered something is not a stuck one: the pause does not grow.
      failedPasses = !pass.errored ? 0 : pass.fetched === 0 ? failedPasses + 1 : 1;
      failingSince = pass.errored && pass.fetched === 0 ? (failingSince ?? Date.now()) : undefined;
      if (untilDrained && failingSince !== undefined && Date.now() - failingSince >= this.#giveUpAfter) {
        run.summary.error = pass.error;
        return 'failing';
      }
      let wait;
      if (pass.errored) {
        wait = Math.min(ERROR_PAUSE * 2 ** Math.min(failedPasses - 1, 8), MAX_ERROR_PAUSE);
      } else if (untilDrained && pass.fetched > 0) {
        wait = 0;
      } else if (untilDrained) {
        wait = this.#drainWait();
        if (wait === undefined) return 'drained';
      } else {
        const now = this.#clock();
        const until = (t) => Math.max(0, Number(t - now) / 1000);
        wait = Math.min(this.#intervals.poll, until(run.nextRetry), until(run.nextSweep));
      }
      if (wait > 0) await pause(wait, signal);
    }
  }

  /**
   * One pass: the lanes in turn, a batch each, while any comes back full. A pass cut
   * short (shutdown, outage) settles the scan batches out, so nothing confirmed waits
   * unmarked while this host does not deliver.
   */
  async #pass(untilDrained, signal, run) {
    const pass = { fetched: 0, errored: false, error: undefined, outage: undefined };
    await this.#lanes(untilDrained, signal, run, pass);
    if (run.scanOut) this.#settle(pass, run);
    return pass;
  }

  /** Settles the scan batches out, its report counted as a scan tick's. */
  #settle(pass, run) {
    const outage = pass.outage;
    this.#batch('scan settle', pass, run);
    // The pass's outage stands: the settle's own failure says no more than it did.
    pass.outage = outage ?? pass.outage;
  }

  /** The lanes in turn, a batch each, while any comes back full. */
  async #lanes(untilDrained, signal, run, pass) {
    const retryEvery = BigInt(this.#intervals.retry) * 1000n;
    const sweepEvery = BigInt(this.#intervals.sweep) * 1000n;
    let lanes = ['scan', 'catch-up'];
    let retryJoined = false;
    let sweepJoined = false;
    while (lanes.length > 0 && !signal.aborted) {
      const now = this.#clock();
      // Retry and sweep join when their interval is due, also during a long drain;
      // until drained, once per pass, so that a pass ends.
      const due = (joined, next) => (untilDrained ? !joined : now >= next);
      if (!lanes.includes('retry') && due(retryJoined, run.nextRetry)) {
        lanes.push('retry');
        retryJoined = true;
        run.nextRetry = now + retryEvery;
      }
      if (!lanes.includes('sweep') && due(sweepJoined, run.nextSweep)) {
        lanes.push('sweep');
        sweepJoined = true;
        run.nextSweep = now + sweepEvery;
      }
      const still = [];
      for (const lane of lanes) {
        if (signal.aborted) break;
        if (this.#batch(lane, pass, run)) still.push(lane);
        if (pass.outage !== undefined) return;
        await yieldNow();
      }
      lanes = still;
    }
  }

  /** Runs one batch of `lane`; true when it came back full (more to do). */
  #batch(lane, pass, run) {
    let report;
    try {
      report = TICKS[lane](this.#engine, this.#clock());
    } catch (e) {
      if (lane === 'scan' || lane === 'scan settle') run.scanOut = false;
      run.summary.errors += 1;
      pass.errored = true;
      pass.error = e.message;
      if (e instanceof EngineError && e.dbUnavailable) pass.outage = { of: 'database', reason: e.payload.val.val };
      if (run.tickError !== e.message) {
        logger.warn(`${lane} tick failed; will try again: ${e.message}`);
        run.tickError = e.message;
      } else {
        logger.debug(`${lane} tick failed again: ${e.message}`);
      }
      return false;
    }
    if (lane === 'scan' || lane === 'scan settle') run.scanOut = report.more && !report.cursorConflict;
    if (run.tickError !== undefined) {
      logger.info('ticks succeed again');
      run.tickError = undefined;
    }
    pass.fetched += report.fetched;
    run.summary.published += report.published;
    run.summary.retryScheduled += report.retryScheduled;
    run.summary.deadLettered += report.deadLettered;
    if (report.fetched > 0) {
      logger.debug(`${lane} tick: fetched ${report.fetched}, published ${report.published}, retry ${report.retryScheduled}, dead ${report.deadLettered}, more ${report.more}`);
    }
    this.#noteFailures(report, run);
    if (report.unavailable > 0) {
      pass.outage = { of: 'publisher', reason: report.error ?? 'the trust log did not answer' };
    }
    return report.more;
  }

  /** Logs delivery failures once when they start and once when they stop, not per row. */
  #noteFailures(report, run) {
    const failed = report.retryScheduled + report.deadLettered;
    if (failed > 0 && report.unavailable === 0) {
      if (run.failing === undefined) {
        run.failing = report.error ?? '';
        logger.warn(`deliveries failing (${report.retryScheduled} to retry, ${report.deadLettered} dead-lettered): ${run.failing}`);
      }
    } else if (report.published > 0 && run.failing !== undefined) {
      logger.info('deliveries succeed again');
      run.failing = undefined;
    }
  }

  /** Resolves once the outage's side answers again; throws while it does not. */
  async #probe(of) {
    if (of === 'database') {
      this.#db.ping();
    } else if (typeof this.#publisher.probe === 'function') {
      // May reopen the trust log (the ledger does): allowed to take its time.
      await this.#publisher.probe();
    } else {
      this.#publisher.ready?.();
    }
  }

  /**
   * Until drained: `undefined` once nothing is left to deliver, else how long to wait
   * before the next pass (until the next retry is due, at most DRAIN_RECHECK).
   */
  #drainWait() {
    let left;
    try {
      left = this.#db.backlog();
    } catch (e) {
      logger.warn(`could not read what is left to deliver (${e.message}); looking again`);
      return DRAIN_RECHECK;
    }
    if (left.waiting === 0n && left.retrying === 0n) return undefined;
    const now = this.#clock();
    if (left.waiting === 0n && left.nextRetryAt !== undefined) {
      const until = Math.max(0, Number(left.nextRetryAt - now) / 1000);
      logger.debug(`not drained yet: ${left.retrying} rows wait in the retry queue; the next is due in ${Math.ceil(until / 1000)} s`);
      return Math.max(Math.min(until, DRAIN_RECHECK), 10);
    }
    logger.debug(`not drained yet: ${left.waiting} rows wait for delivery and ${left.retrying} in the retry queue`);
    return 100;
  }
}

/** Sleeps `ms`, or less when `signal` aborts. */
async function pause(ms, signal) {
  try {
    await sleep(ms, undefined, { signal });
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
}

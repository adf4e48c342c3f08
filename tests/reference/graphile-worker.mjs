#!/usr/bin/env node
// Reference throughput run for graphile-worker: N no-op jobs through a fresh
// database, timed from starting the workers until the database holds no job.
//
//   node tests/reference/graphile-worker.mjs [--db URL] [--jobs 20000]
//        [--concurrency 24] [--processes 1] [--batching on|off] [--timeout 600]
//
// Settings, and why (source: graphile/worker's own throughput harness,
// perfTest/run.js + perfTest/graphile.config.js, and the "Performance" page of
// its docs, whose quoted figures were taken with the same preset):
//   - concurrentJobs 24 per worker process, a pool of concurrentJobs + 1
//     connections: the perfTest preset (CONCURRENT_JOBS = 24, maxPoolSize 25).
//   - localQueue { size: 500, refetchDelay 10 ms }, completeJobBatchDelay 0,
//     failJobBatchDelay 0: the perfTest / docs batching preset (jobs are
//     fetched and locked 500 at a time, completions are batched per tick).
//     --batching off drops these three, i.e. the library defaults (one
//     get_job and one complete_job statement per job), which is how earlier
//     versions of perfTest ran (CONCURRENCY = 10, PARALLELISM = 4, no local
//     queue); use --batching off --concurrency 10 for that configuration.
//   - 20,000 jobs by default (as the earlier perfTest); the current perfTest
//     uses 200,000. With batching on, 20,000 jobs take under half a second
//     here, so --jobs 200000 gives a steadier figure.
//   - pollInterval left at the default 2000 ms: the worker is woken by
//     LISTEN/NOTIFY and the local queue refetches as soon as it runs low, so
//     the poll interval only matters for jobs scheduled in the future; the
//     perfTest does not set it either.
//   - NO_LOG_SUCCESS=1 and a logger that only prints warnings/errors, as the
//     perfTest does (it sets NO_LOG_SUCCESS), so the run does not time logging.
//   - jobs enqueued before timing with WorkerUtils.addJobs, 5,000 a call (the
//     perfTest enqueues with one graphile_worker.add_jobs call as well).
//   - --processes: perfTest runs PARALLELISM = 4 worker processes (the docs'
//     figures come from a well-specced database server). This machine has 2
//     cores shared by PostgreSQL and Node, so the default is one worker
//     process, PostgreSQL getting the other core; 2 processes measured the
//     same here and 4 slower. --processes P forks P processes of
//     --concurrency each (the JSON's concurrency is then P * C).
// The time includes the runner's start-up (pool connect, schema check, first
// fetch), about 20 ms here (--jobs 1); perfTest subtracts a separately
// measured start-up time instead.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import {
  DEFAULT_DB, describeMachine, fail, installedVersion, log, makePool, parseArgs, printResult, runMain,
  waitForCompletion, withFreshDatabase
} from './lib.mjs'

// graphile-worker reads NO_LOG_SUCCESS when it is loaded, hence the dynamic import.
process.env.NO_LOG_SUCCESS = '1'
const { Logger, makeWorkerUtils, run, runMigrations } = await import('graphile-worker')

const REFERENCE = 'graphile-worker'
const TASK = 'noop'
const ENQUEUE_BATCH = 5000

const quietLogger = new Logger(scope => (level, message) => {
  if (level === 'error' || level === 'warning') {
    process.stderr.write(`[graphile-worker ${level}] ${message}\n`)
  }
})

function preset (concurrency, batching) {
  const worker = {
    concurrentJobs: concurrency,
    gracefulShutdownAbortTimeout: 2500
  }
  if (batching) {
    Object.assign(worker, {
      localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0
    })
  }
  return { worker }
}

/**
 * Start a runner with one no-op task that counts the jobs it handled. The
 * runner gets a pool of our own (concurrentJobs + 1 connections, as perfTest's
 * maxPoolSize), so stop() can end it before the database is dropped.
 */
async function startRunner (dbUrl, concurrency, batching, counter) {
  const pgPool = makePool(dbUrl, concurrency + 1)
  let runner
  try {
    runner = await run({
      pgPool,
      preset: preset(concurrency, batching),
      logger: quietLogger,
      noHandleSignals: true,
      taskList: { [TASK]: async () => { counter.n++ } }
    })
  } catch (err) {
    await pgPool.end()
    throw err
  }
  return {
    async stop () {
      try {
        await runner.stop()
        await runner.promise
      } finally {
        await pgPool.end()
      }
    }
  }
}

// ---- worker process (forked with --processes > 1) -------------------------
if (process.env.TRUSTLOG_REF_CHILD) {
  const { dbUrl, concurrency, batching } = JSON.parse(process.env.TRUSTLOG_REF_CHILD)
  const counter = { n: 0 }
  let runner = null
  let reported = -1
  const report = () => {
    if (counter.n !== reported && process.connected) {
      reported = counter.n
      process.send({ handled: counter.n })
    }
  }
  let ticker = null
  let starting = null
  let stopping = null
  const stop = () => {
    stopping ??= (async () => {
      if (starting) await starting
      clearInterval(ticker)
      if (runner) await runner.stop()
      report()
      if (process.connected) process.disconnect()
    })()
    return stopping
  }
  const die = (err) => {
    process.stderr.write(`worker process failed: ${err.stack || err}\n`)
    process.exit(1)
  }
  process.on('message', (msg) => {
    if (msg === 'go') {
      starting = startRunner(dbUrl, concurrency, batching, counter)
        .then(r => { runner = r; ticker = setInterval(report, 20) })
      starting.catch(die)
    } else if (msg === 'stop') {
      stop().catch(die)
    }
  })
  // The parent went away (or we disconnected after 'stop'): stop and let the process end.
  process.on('disconnect', () => { stop().catch(die) })
  process.send('ready')
} else {
  await runMain(REFERENCE, main)
}

async function main () {
  const args = parseArgs(process.argv.slice(2), {
    db: { kind: 'string', default: DEFAULT_DB, help: 'PostgreSQL server URL (a fresh database is created on it)' },
    jobs: { kind: 'int', default: 20000, help: 'number of no-op jobs' },
    concurrency: { kind: 'int', default: 24, help: 'concurrentJobs per worker process' },
    processes: { kind: 'int', default: 1, help: 'worker processes' },
    batching: { kind: 'string', default: 'on', help: "'on': perfTest's localQueue + batched completion; 'off': library defaults (one fetch and one completion per job)" },
    timeout: { kind: 'int', default: 600, help: 'seconds to wait for all jobs before failing' }
  }, `usage: node ${fileURLToPath(import.meta.url)} [options]\n` +
     'Times graphile-worker on N no-op jobs; prints one JSON line on stdout.')

  if (args.batching !== 'on' && args.batching !== 'off') fail(`--batching must be on or off, got ${args.batching}`)
  const batching = args.batching === 'on'
  const version = installedVersion('graphile-worker')
  log(`${REFERENCE} ${version}: ${args.jobs} jobs, concurrency ${args.concurrency} x ${args.processes} process(es), batching ${args.batching}; ${describeMachine()}`)

  const seconds = await withFreshDatabase(args.db, 'graphile_worker', async (dbUrl) => {
    // Schema install, enqueueing and counting go through a pool of ours
    // (graphile-worker does not wait for the pools it makes itself to close).
    const pool = makePool(dbUrl, 2)
    try {
      log('installing schema')
      await runMigrations({ pgPool: pool, logger: quietLogger })

      log(`enqueueing ${args.jobs} jobs`)
      const utils = await makeWorkerUtils({ pgPool: pool, logger: quietLogger })
      try {
        for (let from = 0; from < args.jobs; from += ENQUEUE_BATCH) {
          const specs = []
          for (let i = from; i < Math.min(from + ENQUEUE_BATCH, args.jobs); i++) {
            specs.push({ identifier: TASK, payload: { i } })
          }
          await utils.addJobs(specs)
        }
      } finally {
        await utils.release()
      }

      const countJobs = async () =>
        Number((await pool.query('select count(*) from graphile_worker._private_jobs')).rows[0].count)
      const queued = await countJobs()
      if (queued !== args.jobs) throw new Error(`expected ${args.jobs} queued jobs, found ${queued}`)
      log(`${queued} jobs queued; starting workers`)

      const workers = args.processes === 1
        ? await inProcessWorkers(dbUrl, args.concurrency, batching)
        : await forkedWorkers(dbUrl, args.concurrency, batching, args.processes)
      try {
        const started = performance.now()
        await workers.go()
        const finished = await waitForCompletion({
          jobs: args.jobs,
          handled: workers.handled,
          remaining: countJobs,
          started,
          timeoutSeconds: args.timeout
        })
        const seconds = (finished - started) / 1000
        log(`all ${args.jobs} jobs completed in ${seconds.toFixed(3)} s; stopping workers`)
        return seconds
      } finally {
        await workers.stop()
      }
    } finally {
      await pool.end()
    }
  })

  printResult({ reference: REFERENCE, version, jobs: args.jobs, concurrency: args.concurrency * args.processes, seconds })
}

async function inProcessWorkers (dbUrl, concurrency, batching) {
  const counter = { n: 0 }
  let runner = null
  return {
    go: async () => { runner = await startRunner(dbUrl, concurrency, batching, counter) },
    handled: () => counter.n,
    stop: async () => { if (runner) await runner.stop() }
  }
}

async function forkedWorkers (dbUrl, concurrency, batching, processes) {
  const children = []
  const counts = new Array(processes).fill(0)
  let failure = null
  let stopping = false
  for (let k = 0; k < processes; k++) {
    const child = fork(fileURLToPath(import.meta.url), [], {
      env: { ...process.env, TRUSTLOG_REF_CHILD: JSON.stringify({ dbUrl, concurrency, batching }) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc']
    })
    child.on('message', (msg) => { if (msg && typeof msg.handled === 'number') counts[k] = msg.handled })
    child.on('exit', (code, signal) => {
      if (!stopping || code) failure ??= new Error(`worker process ${k} exited (${signal ?? `code ${code}`})`)
    })
    children.push(child)
  }
  await Promise.all(children.map(child => new Promise((resolve, reject) => {
    child.once('message', (msg) => msg === 'ready' ? resolve() : reject(new Error(`unexpected message ${msg}`)))
    child.once('exit', (code) => reject(new Error(`worker process exited with code ${code} before it was ready`)))
  })))
  const alive = (child) => child.exitCode === null && child.signalCode === null
  return {
    go: async () => { for (const child of children) child.send('go') },
    handled: () => {
      if (failure) throw failure
      return counts.reduce((a, b) => a + b, 0)
    },
    stop: async () => {
      stopping = true
      await Promise.all(children.map(child => new Promise(resolve => {
        if (!alive(child)) return resolve()
        const timer = setTimeout(() => child.kill('SIGKILL'), 30000)
        child.once('exit', () => { clearTimeout(timer); resolve() })
        if (child.connected) child.send('stop'); else child.kill('SIGTERM')
      })))
    }
  }
}

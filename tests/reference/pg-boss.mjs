#!/usr/bin/env node
// Reference throughput run for pg-boss: N no-op jobs through a fresh
// database, timed from starting the workers until the database reports all N
// jobs in state 'completed'.
//
//   node tests/reference/pg-boss.mjs [--db URL] [--jobs 20000]
//        [--concurrency 10] [--batch-size 100] [--timeout 600]
//
// Settings, and why (sources: pg-boss docs for work()/fetch() and the
// constructor; maintainer answers in timgit/pg-boss issues #195, #225, #483,
// #542; its test/speedTest, which fetches and completes 5,000 jobs in one
// batch; and the v10 worker loop in node_modules/pg-boss/src/worker.js):
//   - pg-boss 10 has no teamSize/teamConcurrency any more (#483, #542): a
//     work() call is one polling worker that fetches up to `batchSize` jobs,
//     hands the whole array to the handler, completes them in one statement,
//     then waits out the rest of the polling interval before fetching again
//     (it only skips the wait when less than 100 ms of it is left). The
//     maintainer's advice for throughput is batchSize plus more work() calls
//     ("each call to work() adds a new polling worker").
//   - So --concurrency C is the number of work() calls on the queue and
//     --batch-size B the jobs each fetches; pollingIntervalSeconds is 0.5, the
//     minimum pg-boss accepts (default 2). Defaults C = 10, B = 100: ten
//     workers, one per connection of pg-boss's default pool (max 10), each
//     taking 100 jobs a poll. A pool of C + 2 connections is used, since
//     pg-boss does not await the completion statement before the next fetch.
//   - Read the result with the loop above in mind: for no-op jobs a poll of
//     B jobs takes far less than 0.4 s here, so every worker sleeps out the
//     interval and throughput is about C * B / 0.5 s (2,000 jobs/s with the
//     defaults), a figure of the configuration more than of the machine;
//     larger batches raise it (--concurrency 4 --batch-size 500 gives about
//     4,300/s, --concurrency 2 --batch-size 5000 finishes 20,000 jobs in two
//     polls).
//   - supervise and schedule off: maintenance/cron timers are not part of a
//     job's path (their first run would fall inside the timed window).
//   - jobs enqueued before timing with insert(), 5,000 a call.
import { fileURLToPath } from 'node:url'
import PgBoss from 'pg-boss'
import {
  DEFAULT_DB, describeMachine, installedVersion, log, makePool, parseArgs, printResult, runMain,
  waitForCompletion, withFreshDatabase
} from './lib.mjs'

const REFERENCE = 'pg-boss'
const QUEUE = 'noop'
const ENQUEUE_BATCH = 5000
const POLLING_INTERVAL_SECONDS = 0.5

const args = parseArgs(process.argv.slice(2), {
  db: { kind: 'string', default: DEFAULT_DB, help: 'PostgreSQL server URL (a fresh database is created on it)' },
  jobs: { kind: 'int', default: 20000, help: 'number of no-op jobs' },
  concurrency: { kind: 'int', default: 10, help: 'work() calls (polling workers) on the queue' },
  'batch-size': { kind: 'int', default: 100, help: 'jobs each worker fetches per poll' },
  timeout: { kind: 'int', default: 600, help: 'seconds to wait for all jobs before failing' }
}, `usage: node ${fileURLToPath(import.meta.url)} [options]\n` +
   'Times pg-boss on N no-op jobs; prints one JSON line on stdout.')

await runMain(REFERENCE, async () => {
  const version = installedVersion('pg-boss')
  log(`${REFERENCE} ${version}: ${args.jobs} jobs, ${args.concurrency} workers x batchSize ${args['batch-size']}, ` +
      `polling every ${POLLING_INTERVAL_SECONDS} s; ${describeMachine()}`)

  const seconds = await withFreshDatabase(args.db, 'pg_boss', async (dbUrl) => {
    // pg-boss runs on a pool of ours (its `db` option), so the pool is
    // closed, not just asked to close, before the database is dropped.
    const pool = makePool(dbUrl, args.concurrency + 2)
    const boss = new PgBoss({
      db: { executeSql: (text, values) => pool.query(text, values) },
      supervise: false,
      schedule: false,
      migrate: true
    })
    let bossError = null
    boss.on('error', (err) => {
      bossError ??= err
      process.stderr.write(`[pg-boss error] ${err.message}\n`)
    })

    log('installing schema')
    let bossStarted = false
    try {
      await boss.start()
      bossStarted = true
      await boss.createQueue(QUEUE)

      log(`enqueueing ${args.jobs} jobs`)
      for (let from = 0; from < args.jobs; from += ENQUEUE_BATCH) {
        const batch = []
        for (let i = from; i < Math.min(from + ENQUEUE_BATCH, args.jobs); i++) {
          batch.push({ name: QUEUE, data: { i } })
        }
        await boss.insert(batch)
      }

      const db = boss.getDb()
      const countState = async (state) => Number((await db.executeSql(
        'select count(*) from pgboss.job where name = $1 and state = $2', [QUEUE, state])).rows[0].count)
      const queued = await countState('created')
      if (queued !== args.jobs) throw new Error(`expected ${args.jobs} queued jobs, found ${queued}`)
      log(`${queued} jobs queued; starting workers`)

      let handled = 0
      const started = performance.now()
      for (let w = 0; w < args.concurrency; w++) {
        await boss.work(QUEUE, { batchSize: args['batch-size'], pollingIntervalSeconds: POLLING_INTERVAL_SECONDS },
          async (jobs) => { handled += jobs.length })
      }
      const finished = await waitForCompletion({
        jobs: args.jobs,
        handled: () => {
          if (bossError) throw bossError
          return handled
        },
        remaining: async () => args.jobs - await countState('completed'),
        started,
        timeoutSeconds: args.timeout
      })
      const seconds = (finished - started) / 1000
      log(`all ${args.jobs} jobs completed in ${seconds.toFixed(3)} s; stopping workers`)
      return seconds
    } finally {
      if (bossStarted) {
        await boss.offWork(QUEUE).catch(() => {})
        await boss.stop({ graceful: true, wait: true, timeout: 30000 })
      }
      await pool.end()
    }
  })

  printResult({ reference: REFERENCE, version, jobs: args.jobs, concurrency: args.concurrency, seconds })
})

// Shared plumbing for the reference job-queue runs (graphile-worker.mjs,
// pg-boss.mjs): argument parsing, a throwaway database per run, progress on
// stderr, the result line on stdout.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import pg from 'pg'

export const DEFAULT_DB = 'postgres://postgres@127.0.0.1:5432/postgres'

export function log (...parts) {
  process.stderr.write(`[${new Date().toISOString()}] ${parts.join(' ')}\n`)
}

/** Parse `--name value` / `--name=value` flags against `spec` ({ name: { default, kind: 'int'|'string', help } }). */
export function parseArgs (argv, spec, usage) {
  const out = {}
  for (const [name, s] of Object.entries(spec)) out[name] = s.default
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(usage + '\n\nOptions:\n' + Object.entries(spec)
        .map(([n, s]) => `  --${n} ${s.kind === 'int' ? 'N' : 'VALUE'}  ${s.help} (default: ${s.default})`).join('\n') + '\n')
      process.exit(0)
    }
    let value
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq) }
    const name = arg.replace(/^--/, '')
    if (!arg.startsWith('--') || !(name in spec)) fail(`unknown argument: ${argv[i]} (try --help)`)
    if (value === undefined) {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`)
      value = argv[++i]
    }
    if (spec[name].kind === 'int') {
      const n = Number(value)
      if (!Number.isInteger(n) || n < 1) fail(`${arg} must be a positive integer, got ${value}`)
      out[name] = n
    } else {
      out[name] = value
    }
  }
  return out
}

// Set by the first SIGINT/SIGTERM during withFreshDatabase: waitForCompletion
// then throws, so the workers are stopped before the database is dropped.
let interruptedBy = null

/** Run the script body; on an error print `error: ...` and exit non-zero (finally blocks have run by then). */
export async function runMain (reference, body) {
  try {
    await body()
  } catch (err) {
    process.stderr.write(`error: ${reference} reference run failed: ${err.message}\n`)
    if (process.env.TRUSTLOG_REF_DEBUG) process.stderr.write(`${err.stack}\n`)
    process.exit(interruptedBy === 'SIGINT' ? 130 : interruptedBy === 'SIGTERM' ? 143 : 1)
  }
}

export function fail (message) {
  process.stderr.write(`error: ${message}\n`)
  process.exit(2)
}

/** The version of an installed package, read from its own package.json next to this script. */
export function installedVersion (pkg) {
  const url = new URL(`./node_modules/${pkg}/package.json`, import.meta.url)
  return JSON.parse(readFileSync(url, 'utf8')).version
}

/**
 * A pg.Pool whose pool and clients always have error listeners, so a
 * connection that is still closing when the database is dropped (its backend
 * then reports 57P01 "terminating connection due to administrator command")
 * cannot crash the process with an unhandled 'error' event.
 */
export function makePool (connectionString, max) {
  const report = (err) => {
    if (err.code !== '57P01') process.stderr.write(`[pg pool error] ${err.message}\n`)
  }
  const pool = new pg.Pool({ connectionString, max })
  pool.on('error', report)
  pool.on('connect', (client) => client.on('error', report))
  return pool
}

function quoteIdent (name) {
  return '"' + name.replace(/"/g, '""') + '"'
}

/**
 * Create `trustlog_ref_<lib>_<random hex>` on the server of `adminUrl`, run
 * `fn(url of the new database)`, and drop the database afterwards, whether
 * `fn` succeeded, threw, or the process got SIGINT/SIGTERM (the first signal
 * makes waitForCompletion throw, so `fn`'s own cleanup runs first). The drop
 * uses WITH (FORCE) so connections a failed run left open do not keep it alive.
 */
export async function withFreshDatabase (adminUrl, lib, fn) {
  const name = `trustlog_ref_${lib}_${randomBytes(6).toString('hex')}`
  const url = new URL(adminUrl)
  url.pathname = '/' + name
  const dbUrl = url.toString()

  const admin = async (sql) => {
    const client = new pg.Client({ connectionString: adminUrl })
    await client.connect()
    try { await client.query(sql) } finally { await client.end() }
  }

  await admin(`CREATE DATABASE ${quoteIdent(name)}`)
  log(`created database ${name}`)

  let dropped = false
  const drop = async () => {
    if (dropped) return
    dropped = true
    try {
      await admin(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
      log(`dropped database ${name}`)
    } catch (err) {
      process.stderr.write(`error: could not drop database ${name}: ${err.message}\n`)
      process.exitCode = 1
    }
  }
  // First signal: let the run stop its workers, then drop (see waitForCompletion).
  // A second one: drop now and exit.
  const onSignal = (signal) => {
    if (!interruptedBy) {
      interruptedBy = signal
      log(`got ${signal}; stopping, then dropping ${name} (again to force)`)
      return
    }
    log(`got ${signal} again; dropping ${name} and exiting`)
    drop().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  try {
    return await fn(dbUrl, name)
  } finally {
    await drop()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

export function describeMachine () {
  return `load average ${loadavg().map(x => x.toFixed(2)).join(' ')}`
}

/**
 * Wait until `handled()` reaches `jobs` (cheap, in-process counter), printing
 * progress every second, then poll `remaining()` (a query against the
 * library's tables) every few milliseconds until it returns 0, so the time
 * ends when the database says every job is completed, not when the last
 * handler returned. Throws if that has not happened `timeoutSeconds` after
 * `started` (a performance.now() value).
 */
export async function waitForCompletion ({ jobs, handled, remaining, started, timeoutSeconds }) {
  const deadline = started + timeoutSeconds * 1000
  const late = () => performance.now() > deadline
  const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
  let lastReport = Date.now()
  while (handled() < jobs) {
    if (interruptedBy) throw new Error(`interrupted by ${interruptedBy}`)
    if (late()) {
      throw new Error(`not all jobs completed within ${timeoutSeconds} s: handlers ran for only ${handled()} of ${jobs} jobs`)
    }
    await sleep(5)
    if (Date.now() - lastReport >= 1000) {
      lastReport = Date.now()
      const s = (performance.now() - started) / 1000
      log(`  ${handled()} / ${jobs} jobs handled after ${s.toFixed(1)} s`)
    }
  }
  for (;;) {
    if (interruptedBy) throw new Error(`interrupted by ${interruptedBy}`)
    const left = await remaining()
    if (left === 0) return performance.now()
    if (late()) {
      throw new Error(`not all jobs completed within ${timeoutSeconds} s: ${left} of ${jobs} jobs not completed in the database`)
    }
    await sleep(2)
  }
}

export function printResult ({ reference, version, jobs, concurrency, seconds }) {
  const result = {
    reference,
    version,
    jobs,
    concurrency,
    seconds: Number(seconds.toFixed(3)),
    jobs_per_sec: Math.round(jobs / seconds)
  }
  process.stdout.write(JSON.stringify(result) + '\n')
}

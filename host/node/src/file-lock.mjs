// An exclusive flock(2) on an open file, as the Rust host takes on its ledger.
//
// Only one process may append to a ledger: the Rust host takes flock(LOCK_EX | LOCK_NB)
// on the ledger file when it opens it, and a Node host must take the very same lock, or
// the two could interleave lines and break the chain. Node has no flock of its own, so
// util-linux's flock(1) takes it on our descriptor, handed to it as its fd 3. A flock
// belongs to the open file description, which the child shares with us: the child
// exits at once and the lock stays, held by our descriptor, released when we close it
// or when this process ends, however it ends, exactly as the Rust host's is.

import { spawnSync } from 'node:child_process';

/** flock(1)'s exit code when the lock is held elsewhere (chosen by us, via -E). */
const CONFLICT = 75;

export class LockedError extends Error {
  constructor(path) {
    super(`${path} is locked by another process: only one publisher may append to a ledger`);
    this.name = 'LockedError';
    this.path = path;
  }
}

/**
 * Takes the exclusive lock on the open descriptor `fd` of `path`, or throws LockedError
 * when another open file holds it. Returns false where flock(1) is missing (nothing is
 * locked then), true once locked.
 */
export function lockExclusive(fd, path) {
  const run = spawnSync('flock', ['--nonblock', '--conflict-exit-code', String(CONFLICT), '3'], {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    encoding: 'utf8',
  });
  if (run.error?.code === 'ENOENT') return false;
  if (run.error) throw new Error(`cannot lock ${path}: ${run.error.message}`);
  if (run.status === CONFLICT) throw new LockedError(path);
  if (run.status !== 0) throw new Error(`cannot lock ${path}: flock exited with ${run.status ?? run.signal}: ${run.stderr.trim()}`);
  return true;
}

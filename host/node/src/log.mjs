// Logging to stderr (stdout is the CLI's: its last line is the JSON summary), at the
// level TRUSTLOG_LOG names (trace, debug, info, warn, error, off; info by default), and
// the guest's `log` import into it, rate-limited as the Rust host limits it: a guest
// that logs without end must not flood the host's log or its disk.

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function threshold() {
  const wanted = (process.env.TRUSTLOG_LOG ?? 'info').toLowerCase();
  if (wanted === 'off') return LEVELS.length;
  const at = LEVELS.indexOf(wanted);
  return at < 0 ? LEVELS.indexOf('info') : at;
}

function emit(level, message) {
  if (LEVELS.indexOf(level) < threshold()) return;
  process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${message}\n`);
}

/** The host's own log lines. */
export const logger = Object.fromEntries(LEVELS.map((level) => [level, (message) => emit(level, message)]));

/** Guest log lines let through a second, per engine instance, as the Rust host's default limit. */
export const GUEST_LINES_PER_SECOND = 100;

/**
 * The WIT `log` interface: `log(level, message)`, where level is one of the enum's
 * names. Lines beyond `perSecond` in one second are dropped and counted; the count is
 * logged once the next second starts.
 */
export function guestLog({ perSecond = GUEST_LINES_PER_SECOND, sink = emit } = {}) {
  let windowStart = Date.now();
  let passed = 0;
  let dropped = 0;
  return {
    log(level, message) {
      if (Date.now() - windowStart >= 1000) {
        if (dropped > 0) sink('warn', `guest: ${dropped} log lines dropped over the last second (limit ${perSecond} a second)`);
        windowStart = Date.now();
        passed = 0;
        dropped = 0;
      }
      if (passed >= perSecond) {
        dropped += 1;
        return;
      }
      passed += 1;
      sink(LEVELS.includes(level) ? level : 'info', `guest: ${message}`);
    },
  };
}

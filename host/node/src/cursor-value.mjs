// The text form of a cursor position, `<RFC 3339 UTC, 6 fractional digits, Z>|<op_id>`,
// as host/src/db/cursor_value.rs writes and reads it: both hosts must compare-and-set
// on the very same text, so formatting is exact and parsing accepts only that form
// (or a bare timestamp, as the seed's module writes it).

import { DbError } from './db-error.mjs';
import { civilFromDays, daysFromCivil } from './civil.mjs';
import { parseTextTime } from './text-time.mjs';

const MICROS_PER_DAY = 86_400_000_000n;

/** `2026-11-24T10:23:54.123456Z|op-00001` for `{ timestamp: 1795515834123456n, opId: 'op-00001' }`. */
export function formatPosition({ timestamp, opId }) {
  return `${formatTimestamp(timestamp)}|${opId}`;
}

/**
 * RFC 3339 UTC with exactly six fractional digits. Years outside 0000..=9999 carry a
 * sign and at least four digits, as chrono writes them, so every s64 is representable.
 */
export function formatTimestamp(micros) {
  const m = BigInt(micros);
  const days = floorDiv(m, MICROS_PER_DAY);
  const ofDay = m - days * MICROS_PER_DAY;
  const [year, month, day] = civilFromDays(Number(days));
  const secs = Number(ofDay / 1_000_000n);
  const frac = Number(ofDay % 1_000_000n);
  const y = year >= 0 && year <= 9999
    ? String(year).padStart(4, '0')
    : (year < 0 ? '-' : '+') + String(Math.abs(year)).padStart(4, '0');
  return `${y}-${pad2(month)}-${pad2(day)}T${pad2(Math.floor(secs / 3600))}:${pad2(Math.floor(secs / 60) % 60)}:${pad2(secs % 60)}.${String(frac).padStart(6, '0')}Z`;
}

/**
 * A cursor value in trustlog's own form; `undefined` for '' (no position yet). Any
 * other spelling is refused, so a compare-and-set on the text read back always matches.
 */
export function parsePosition(text) {
  if (text === '') return undefined;
  const bar = text.indexOf('|');
  const timestamp = bar < 0 ? undefined : parseCanonicalTimestamp(text.slice(0, bar));
  if (timestamp === undefined) {
    throw DbError.other(
      `malformed cursor value ${JSON.stringify(text)}: expected <RFC 3339 UTC with 6 fractional digits and Z>|<op_id>, or a bare timestamp`,
    );
  }
  return { timestamp, opId: text.slice(bar + 1) };
}

/**
 * A cursor value in any form trustlog reads: its own, or a bare timestamp (the seed's
 * module writes one), taken as the position before every row of that instant.
 * `own` says whether the text was in trustlog's form; one in another form is
 * rewritten before a compare-and-set relies on it.
 */
export function parseAnyPosition(text) {
  try {
    const position = parsePosition(text);
    return position === undefined ? undefined : { position, own: true };
  } catch (own) {
    if (text.includes('|')) throw own;
    try {
      return { position: { timestamp: parseTextTime(text), opId: '' }, own: false };
    } catch {
      throw own;
    }
  }
}

/** The stored value of cursor `key` (`undefined`: no row), naming the key when malformed. */
export function parseCursorOf(key, value) {
  if (value === undefined || value === null) return undefined;
  try {
    return parseAnyPosition(value);
  } catch (e) {
    if (e instanceof DbError && e.tag === 'other') {
      throw DbError.other(`cursor ${JSON.stringify(key)}: ${e.val}`);
    }
    throw e;
  }
}

/** Orders positions as SQLite's row values do: timestamp, then op_id bytewise (UTF-8). */
export function comparePositions(a, b) {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1;
  return Buffer.compare(Buffer.from(a.opId, 'utf8'), Buffer.from(b.opId, 'utf8'));
}

const CANONICAL = /^([+-]?\d+)-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z$/;

// Reads the fields, then insists the text is exactly what formatTimestamp writes: that
// rejects '+2026', '02026', '-0000', impossible dates, and anything out of s64 range.
function parseCanonicalTimestamp(stamp) {
  const m = CANONICAL.exec(stamp);
  if (!m) return undefined;
  // Seven digits cover every year an s64 of microseconds reaches.
  if (m[1].replace(/^[+-]/, '').length > 7) return undefined;
  const [year, month, day, h, min, sec] = m.slice(1, 7).map(Number);
  if (month < 1 || month > 12 || day < 1 || day > 31 || h > 23 || min > 59 || sec > 59) return undefined;
  const micros = BigInt(daysFromCivil(year, month, day)) * MICROS_PER_DAY
    + BigInt((h * 3600 + min * 60 + sec) * 1_000_000 + Number(m[7]));
  if (micros < -(2n ** 63n) || micros >= 2n ** 63n) return undefined;
  return formatTimestamp(micros) === stamp ? micros : undefined;
}

function floorDiv(a, b) {
  const q = a / b;
  return a % b !== 0n && (a < 0n) !== (b < 0n) ? q - 1n : q;
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

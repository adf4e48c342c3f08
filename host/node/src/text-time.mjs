// Timestamps written as TEXT by other programs into the INTEGER `timestamp` column,
// read as microseconds the way host/src/db/text_time.rs reads them: RFC 3339, Go's
// `2006-01-02 15:04:05.999999999-07:00` (mattn/go-sqlite3), Go's Time.String() with a
// zone name, and SQLite's CURRENT_TIMESTAMP (no offset: UTC). Precision beyond the
// microsecond is cut toward the past, the one way it is handled everywhere.

import { daysFromCivil, isCivilDate } from './civil.mjs';

const FORMS = 'RFC 3339, or YYYY-MM-DD HH:MM:SS[.fraction][±hh:mm | ±hhmm [zone]]';

// RFC 3339: an offset is required; 'T', 't' or a space between date and time.
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;
// Go's forms: a space, then an offset with or without a colon, after a space or not.
const WITH_OFFSET = /^(\d{4})-(\d{1,2})-(\d{1,2})\s+(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d+))?\s*()([+-])(\d{2}):?(\d{2})$/;
// No offset at all: UTC.
const NAIVE = /^(\d{4})-(\d{1,2})-(\d{1,2})(?:\s+|T)(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d+))?$/;

/** Microseconds since the epoch (BigInt) of `text`, or throws saying which forms are read. */
export function parseTextTime(text) {
  const t = text.trim();
  const unknown = () => new Error(`${JSON.stringify(text)} is in no known timestamp form (${FORMS})`);
  // Go's Time.String(): an offset without a colon, then the zone's name.
  const space = t.lastIndexOf(' ');
  const name = space < 0 ? '' : t.slice(space + 1);
  const withoutName = name !== '' && /^[A-Z]+$/.test(name) ? t.slice(0, space) : t;
  const m = RFC3339.exec(t) ?? WITH_OFFSET.exec(withoutName) ?? NAIVE.exec(t);
  const micros = m && toMicros(m);
  if (micros === undefined || micros === null) throw unknown();
  return micros;
}

function toMicros(m) {
  const [year, month, day, h, min, sec] = m.slice(1, 7).map(Number);
  if (!isCivilDate(year, month, day) || h > 23 || min > 59 || sec > 59) {
    return undefined;
  }
  const fraction = BigInt((m[7] ?? '').slice(0, 6).padEnd(6, '0'));
  let offsetSeconds = 0;
  if (m[9]) {
    const [oh, om] = [Number(m[10]), Number(m[11])];
    if (oh > 23 || om > 59) return undefined;
    offsetSeconds = (m[9] === '-' ? -1 : 1) * (oh * 3600 + om * 60);
  }
  const seconds = BigInt(daysFromCivil(year, month, day)) * 86_400n + BigInt(h * 3600 + min * 60 + sec - offsetSeconds);
  const micros = seconds * 1_000_000n + fraction;
  return micros >= -(2n ** 63n) && micros < 2n ** 63n ? micros : undefined;
}

//! The text form of a cursor position, shared by every database adapter:
//! `<RFC 3339 UTC, 6 fractional digits, Z>|<op_id>`.

use trustlog_guest::model::{DbError, Position};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Formats `p` as `2026-11-24T10:23:54.123456Z|op-00001`.
///
/// Years outside 0000..=9999 (which RFC 3339 cannot express) carry a sign and at least
/// four digits, as ISO 8601's expanded form and chrono do, so every `i64` is representable.
pub fn format_position(p: &Position) -> String {
    let mut s = format_timestamp(p.timestamp);
    s.push('|');
    s.push_str(&p.op_id);
    s
}

/// Parses a cursor value; the empty string means no position yet.
///
/// Only the exact form [`format_position`] writes is accepted, so the compare-and-set
/// on the stored text always matches a position read back from it.
pub fn parse_position(s: &str) -> Result<Option<Position>, DbError> {
    if s.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        DbError::Other(format!(
            "malformed cursor value {s:?}: expected \
             <RFC 3339 UTC with 6 fractional digits and Z>|<op_id>, or a bare timestamp"
        ))
    };
    let (stamp, op_id) = s.split_once('|').ok_or_else(malformed)?;
    let timestamp = parse_timestamp(stamp).ok_or_else(malformed)?;
    if format_timestamp(timestamp) != stamp {
        return Err(malformed());
    }
    Ok(Some(Position {
        timestamp,
        op_id: op_id.to_string(),
    }))
}

/// Parses a cursor value in any form trustlog reads: its own ([`parse_position`]), or a
/// bare timestamp, as the seed's module writes it (RFC 3339 with any fraction, and the
/// other forms of `text_time`), taken as the position before every row of that
/// instant. The flag says whether the text was in trustlog's own form; a value in
/// another form should be rewritten in it before a compare-and-set relies on it.
pub fn parse_any(s: &str) -> Result<Option<(Position, bool)>, DbError> {
    match parse_position(s) {
        Ok(p) => Ok(p.map(|p| (p, true))),
        Err(own) if !s.contains('|') => match super::text_time::parse(s) {
            Ok(timestamp) => Ok(Some((
                Position {
                    timestamp,
                    op_id: String::new(),
                },
                false,
            ))),
            Err(_) => Err(own),
        },
        Err(own) => Err(own),
    }
}

/// Parses the stored value of cursor `key` (`None`: no row), naming the key when it is
/// malformed.
pub fn parse_cursor_of(key: &str, value: Option<&str>) -> Result<Option<Position>, DbError> {
    Ok(parse_cursor_any(key, value)?.map(|(p, _)| p))
}

/// [`parse_cursor_of`], saying whether the stored text was in trustlog's own form.
pub fn parse_cursor_any(
    key: &str,
    value: Option<&str>,
) -> Result<Option<(Position, bool)>, DbError> {
    match value {
        None => Ok(None),
        Some(v) => parse_any(v).map_err(|e| match e {
            DbError::Other(m) => DbError::Other(format!("cursor {key:?}: {m}")),
            other => other,
        }),
    }
}

fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let secs = of_day / 1_000_000;
    let frac = of_day % 1_000_000;
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Reads the fields of a timestamp; the caller checks it is in canonical form.
fn parse_timestamp(s: &str) -> Option<i64> {
    let rest = s.strip_suffix('Z')?;
    let (date, time) = rest.split_once('T')?;
    // The year may carry a sign, so split the fixed "-MM-DD" off the end.
    let split = date.len().checked_sub(6)?;
    let (year, month_day) = (date.get(..split)?, date.get(split..)?);
    let month_day = month_day.strip_prefix('-')?;
    let (month, day) = month_day.split_once('-')?;
    // Seven digits cover every year an i64 of microseconds reaches and cannot overflow.
    if year.trim_start_matches(['+', '-']).len() > 7 {
        return None;
    }
    let year: i64 = year.parse().ok()?;
    let month: i64 = digits(month, 2)?;
    let day: i64 = digits(day, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.')?;
    let mut hms = hms.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let (h, m, sec, frac) = (
        digits(h, 2)?,
        digits(m, 2)?,
        digits(sec, 2)?,
        digits(frac, 6)?,
    );
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let days = i128::from(days_from_civil(year, month, day));
    let micros = days * i128::from(MICROS_PER_DAY)
        + i128::from((h * 3600 + m * 60 + sec) * 1_000_000 + frac);
    i64::try_from(micros).ok()
}

fn digits(s: &str, len: usize) -> Option<i64> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

// Howard Hinnant's proleptic Gregorian day algorithms
// (https://howardhinnant.github.io/date_algorithms.html), exact over all of i64 micros.

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

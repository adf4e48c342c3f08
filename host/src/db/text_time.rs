//! Timestamps written as text by applications and drivers, read as microseconds.
//!
//! SQLite stores what it is given, so a `timestamp` column that trustlog declares
//! INTEGER may hold TEXT written by another program: mattn/go-sqlite3 writes a Go
//! `time.Time` as `2006-01-02 15:04:05.999999999-07:00`, others RFC 3339, SQLite's own
//! `CURRENT_TIMESTAMP` `2006-01-02 15:04:05` (UTC), and Go's `Time.String()` adds a
//! zone name (`… -0700 MST`). Each is read here. A value without an offset is UTC.
//! Precision beyond the microsecond is cut toward the past (floor), the one way it is
//! handled everywhere: `…54.123456789` is `…54.123456`.

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use trustlog_guest::model::Micros;

/// The forms read, for error messages.
const FORMS: &str = "RFC 3339, or YYYY-MM-DD HH:MM:SS[.fraction][±hh:mm | ±hhmm [zone]]";

/// Microseconds since the epoch of `text`, in one of the forms above.
pub fn parse(text: &str) -> Result<Micros, String> {
    let t = text.trim();
    let unknown = || format!("{text:?} is in no known timestamp form ({FORMS})");
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return micros(at).ok_or_else(unknown);
    }
    // Go's Time.String(): an offset without a colon, then the zone's name.
    let without_name = match t.rsplit_once(' ') {
        Some((head, name)) if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase()) => {
            head
        }
        _ => t,
    };
    for form in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(at) = DateTime::parse_from_str(without_name, form) {
            return micros(at).ok_or_else(unknown);
        }
    }
    for form in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(t, form) {
            return micros(at.and_utc().fixed_offset()).ok_or_else(unknown);
        }
    }
    Err(unknown())
}

/// Whole microseconds, the nanoseconds beyond cut toward the past.
fn micros(at: DateTime<FixedOffset>) -> Option<Micros> {
    let seconds = at.timestamp();
    let sub = i64::from(at.timestamp_subsec_nanos()) / 1_000;
    seconds.checked_mul(1_000_000)?.checked_add(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T02:23:54.123456Z, the instant the examples below name.
    const AT: Micros = 1_795_487_034_123_456;

    #[test]
    fn the_forms_drivers_write_read_as_the_same_instant() {
        for text in [
            "2026-11-24 10:23:54.123456789+08:00",
            "2026-11-24T10:23:54.123456789+08:00",
            "2026-11-24T02:23:54.123456Z",
            "2026-11-24 02:23:54.1234569",
            "2026-11-24 10:23:54.123456 +0800 CST",
            "2026-11-24 10:23:54.123456+0800",
            " 2026-11-24T02:23:54.123456 ",
        ] {
            assert_eq!(parse(text), Ok(AT), "{text:?}");
        }
    }

    #[test]
    fn a_value_without_offset_is_utc_and_without_fraction_whole_seconds() {
        assert_eq!(parse("2026-11-24 02:23:54"), Ok(AT - 123_456));
    }

    #[test]
    fn nanoseconds_are_cut_toward_the_past() {
        assert_eq!(parse("2026-11-24T02:23:54.123456999Z"), Ok(AT));
        assert_eq!(parse("1969-12-31T23:59:59.9999999Z"), Ok(-1));
    }

    #[test]
    fn anything_else_is_refused_saying_what_is_read() {
        for text in ["", "yesterday", "2026-13-01 00:00:00", "1795919034123456"] {
            let e = parse(text).unwrap_err();
            assert!(e.contains("RFC 3339"), "{text:?}: {e}");
        }
    }
}

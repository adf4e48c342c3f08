//! Envelopes: the canonical bytes of an operation and their SHA-256.
//!
//! Canonical form: a JSON object with every column of the operation, keys in
//! byte order, no whitespace, `null` for absent optional fields, strings
//! escaped as RFC 8785 (JCS) does, and the timestamp as RFC 3339 UTC with
//! exactly six fractional digits. Only strings appear, so the bytes equal
//! the JCS serialisation and any language can recompute them.

use std::mem::MaybeUninit;

use sha2::{Digest, Sha256};

use crate::model::{Envelope, FieldError, Micros, Operation, OperationRef};

/// RFC 3339 UTC with exactly six fractional digits, or an error naming `timestamp`.
pub fn format_timestamp(micros: Micros) -> Result<String, FieldError> {
    let stamp = Stamp::of(micros)?;
    let mut out = Vec::with_capacity(stamp.len());
    Writer::append(&mut out, |w| w.stamp(&stamp));
    Ok(String::from_utf8(out).expect("RFC 3339 text is ASCII"))
}

/// The first and last microsecond of years 0000 to 9999, the years written with four
/// digits and no sign.
const FOUR_DIGIT_YEARS: std::ops::RangeInclusive<Micros> =
    -62_167_219_200_000_000..=253_402_300_799_999_999;

/// A timestamp ready to be written: checked first, so a payload is never left half
/// written by a timestamp it cannot hold.
enum Stamp {
    /// Years 0000–9999 (all that validation lets in), written digit pair by digit pair,
    /// since this runs once per envelope and chrono's formatter goes through `core::fmt`.
    FourDigitYear {
        year: u32,
        month: u32,
        day: u32,
        second_of_day: u32,
        fraction: u32,
    },
    /// Other years go through chrono, which signs them.
    Other(String),
}

impl Stamp {
    fn of(micros: Micros) -> Result<Stamp, FieldError> {
        if !FOUR_DIGIT_YEARS.contains(&micros) {
            return chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| Stamp::Other(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
                .ok_or_else(|| {
                    FieldError::new(
                        "timestamp",
                        format!("{micros} µs is outside the representable range"),
                    )
                });
        }
        let secs = micros.div_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        // In range: years 0–9999, the rest bounded by the calendar.
        Ok(Stamp::FourDigitYear {
            year: year as u32,
            month: month as u32,
            day: day as u32,
            second_of_day: secs.rem_euclid(86_400) as u32,
            fraction: micros.rem_euclid(1_000_000) as u32,
        })
    }

    /// Bytes the text takes.
    fn len(&self) -> usize {
        match self {
            Stamp::FourDigitYear { .. } => STAMP_TEMPLATE.len(),
            Stamp::Other(text) => text.len(),
        }
    }
}

const STAMP_TEMPLATE: &[u8; 27] = b"0000-00-00T00:00:00.000000Z";

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The keys with their quotes and colons, in the byte order of the keys; the
/// timestamp comes last.
const K_CLIENT_IP: &[u8; 13] = br#"{"client_ip":"#;
const K_DO_PREFIX: &[u8; 13] = br#","do_prefix":"#;
const K_DO_REPOSITORY: &[u8; 17] = br#","do_repository":"#;
const K_DOID: &[u8; 8] = br#","doid":"#;
const K_OP_ACTOR: &[u8; 12] = br#","op_actor":"#;
const K_OP_ID: &[u8; 9] = br#","op_id":"#;
const K_OP_SOURCE: &[u8; 13] = br#","op_source":"#;
const K_OP_TYPE: &[u8; 11] = br#","op_type":"#;
const K_PRODUCER_ID: &[u8; 15] = br#","producer_id":"#;
const K_REQUEST_BODY_HASH: &[u8; 21] = br#","request_body_hash":"#;
const K_RESPONSE_BODY_HASH: &[u8; 22] = br#","response_body_hash":"#;
const K_SERVER_IP: &[u8; 13] = br#","server_ip":"#;
const K_TIMESTAMP: &[u8; 14] = br#","timestamp":""#;
const CLOSE: &[u8; 2] = br#""}"#;

/// Bytes a payload takes besides its values' text: the keys, two quotes or a `null`
/// per field, and the closing.
const FRAME: usize = K_CLIENT_IP.len()
    + K_DO_PREFIX.len()
    + K_DO_REPOSITORY.len()
    + K_DOID.len()
    + K_OP_ACTOR.len()
    + K_OP_ID.len()
    + K_OP_SOURCE.len()
    + K_OP_TYPE.len()
    + K_PRODUCER_ID.len()
    + K_REQUEST_BODY_HASH.len()
    + K_RESPONSE_BODY_HASH.len()
    + K_SERVER_IP.len()
    + K_TIMESTAMP.len()
    + CLOSE.len()
    + 12 * 4;

/// The longest a character of text grows to once escaped (`\u00xx`).
const MAX_ESCAPE: usize = 6;

/// The canonical bytes of `op`.
pub fn canonical_bytes<'a>(op: impl Into<OperationRef<'a>>) -> Result<Vec<u8>, FieldError> {
    let mut out = Vec::new();
    append_canonical(&mut out, op)?;
    Ok(out)
}

/// Appends the canonical bytes of `op` to `out`; on an error `out` is as it was.
pub fn append_canonical<'a>(
    out: &mut Vec<u8>,
    op: impl Into<OperationRef<'a>>,
) -> Result<(), FieldError> {
    let op = op.into();
    let stamp = Stamp::of(op.timestamp)?;
    let optional = |v: Option<&str>| v.map_or(0, str::len);
    let values = op.op_id.len()
        + op.op_actor.len()
        + op.doid.len()
        + op.producer_id.len()
        + optional(op.request_body_hash)
        + optional(op.response_body_hash)
        + op.op_source.len()
        + op.op_type.len()
        + op.do_prefix.len()
        + op.do_repository.len()
        + optional(op.client_ip)
        + optional(op.server_ip);
    // Room for the worst case up front, so nothing below checks for room again.
    out.reserve(FRAME + stamp.len() + MAX_ESCAPE * values);
    Writer::append(out, |w| {
        w.put(K_CLIENT_IP);
        w.optional(op.client_ip);
        w.put(K_DO_PREFIX);
        w.string(op.do_prefix);
        w.put(K_DO_REPOSITORY);
        w.string(op.do_repository);
        w.put(K_DOID);
        w.string(op.doid);
        w.put(K_OP_ACTOR);
        w.string(op.op_actor);
        w.put(K_OP_ID);
        w.string(op.op_id);
        w.put(K_OP_SOURCE);
        w.string(op.op_source);
        w.put(K_OP_TYPE);
        w.string(op.op_type);
        w.put(K_PRODUCER_ID);
        w.string(op.producer_id);
        w.put(K_REQUEST_BODY_HASH);
        w.optional(op.request_body_hash);
        w.put(K_RESPONSE_BODY_HASH);
        w.optional(op.response_body_hash);
        w.put(K_SERVER_IP);
        w.optional(op.server_ip);
        w.put(K_TIMESTAMP);
        w.stamp(&stamp);
        w.put(CLOSE);
    });
    Ok(())
}

/// Writes into a `Vec`'s spare capacity, reserved up front, keeping its place in a
/// local. A `Vec` push reloads the length and capacity and checks them on every
/// byte, and in wasm each of those is a load or store of linear memory; a copy of a
/// length known only at run time is a `memory.copy`, which wasmtime runs as a call
/// out of the sandbox. So constants and eight-byte words are stored whole, and short
/// strings as two overlapping halves.
struct Writer<'b> {
    /// The spare capacity of the `Vec` being appended to.
    buf: &'b mut [MaybeUninit<u8>],
    /// Bytes written: all of `buf[..at]` is initialised.
    at: usize,
}

impl Writer<'_> {
    /// Runs `write` over `out`'s spare capacity, then makes what it wrote part of `out`.
    /// Panics, leaving `out` as it was, if `write` runs out of the capacity reserved.
    fn append(out: &mut Vec<u8>, write: impl FnOnce(&mut Writer<'_>)) {
        let mut w = Writer {
            buf: out.spare_capacity_mut(),
            at: 0,
        };
        write(&mut w);
        let written = w.at;
        let len = out.len() + written;
        // SAFETY: `len` is within the capacity (the writer never indexes past its
        // slice), and every byte between the old length and `len` was written: each
        // method below advances `at` only over bytes it stored.
        unsafe { out.set_len(len) };
    }

    /// Stores `bytes` at `at` without counting them.
    #[inline(always)]
    fn store<const N: usize>(&mut self, at: usize, bytes: [u8; N]) {
        let dst: &mut [MaybeUninit<u8>; N] =
            (&mut self.buf[at..at + N]).try_into().expect("N bytes");
        *dst = bytes.map(MaybeUninit::new);
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.at].write(b);
        self.at += 1;
    }

    /// Appends a constant, a word at a time (the last word overlapping the one before).
    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: &[u8; N]) {
        if N < 8 {
            for (i, &b) in bytes.iter().enumerate() {
                self.buf[self.at + i].write(b);
            }
        } else {
            let mut i = 0;
            while i + 8 <= N {
                self.store(self.at + i, word(bytes, i));
                i += 8;
            }
            if i < N {
                self.store(self.at + N - 8, word(bytes, N - 8));
            }
        }
        self.at += N;
    }

    /// Appends a value, `null` for none.
    fn optional(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.string(v),
            None => self.put(b"null"),
        }
    }

    /// Appends `s` as a JSON string escaped as RFC 8785 (JCS) does: `"` and `\`, the
    /// short escapes `\b \t \n \f \r`, `\u00xx` for the other control characters, and
    /// every other character as it is. Written by hand: serde_json's byte-at-a-time
    /// writer was most of the guest's time in wasm.
    fn string(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.byte(b'"');
        if !self.verbatim(bytes) {
            self.escaped(bytes);
        }
        self.byte(b'"');
    }

    /// Appends `b` as it is, if none of its bytes needs escaping; otherwise counts
    /// nothing and says so. Eight bytes are checked and stored at a time; the last
    /// word overlaps the one before it, and a string under eight bytes is two
    /// overlapping halves, so no byte is handled alone in a loop.
    #[inline(always)]
    fn verbatim(&mut self, b: &[u8]) -> bool {
        let n = b.len();
        let at = self.at;
        if n >= 8 {
            let mut i = 0;
            while i + 8 <= n {
                let w = word(b, i);
                if escape_flags(u64::from_le_bytes(w)) != 0 {
                    return false;
                }
                self.store(at + i, w);
                i += 8;
            }
            if i < n {
                let w = word(b, n - 8);
                if escape_flags(u64::from_le_bytes(w)) != 0 {
                    return false;
                }
                self.store(at + n - 8, w);
            }
        } else if n >= 4 {
            let (lo, hi) = (half(b, 0), half(b, n - 4));
            let both = u64::from(u32::from_le_bytes(lo)) | u64::from(u32::from_le_bytes(hi)) << 32;
            if escape_flags(both) != 0 {
                return false;
            }
            self.store(at, lo);
            self.store(at + n - 4, hi);
        } else if n > 0 {
            // One to three bytes: the first, the middle and the last cover them all.
            let (first, middle, last) = (b[0], b[n / 2], b[n - 1]);
            if needs_escape(first) || needs_escape(middle) || needs_escape(last) {
                return false;
            }
            self.store(at, [first]);
            self.store(at + n / 2, [middle]);
            self.store(at + n - 1, [last]);
        }
        self.at += n;
        true
    }

    /// Appends `b` escaped, a byte at a time: only for text that has something to escape.
    #[cold]
    fn escaped(&mut self, b: &[u8]) {
        for &c in b {
            if needs_escape(c) {
                self.escape(c);
            } else {
                self.byte(c);
            }
        }
    }

    /// Appends the JSON escape of `b`, one of the bytes [`needs_escape`] picks.
    fn escape(&mut self, b: u8) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match b {
            b'"' => self.put(br#"\""#),
            b'\\' => self.put(br"\\"),
            0x08 => self.put(br"\b"),
            0x09 => self.put(br"\t"),
            0x0a => self.put(br"\n"),
            0x0c => self.put(br"\f"),
            0x0d => self.put(br"\r"),
            b => self.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0x0f)],
            ]),
        }
    }

    /// Appends a timestamp checked by [`Stamp::of`].
    fn stamp(&mut self, stamp: &Stamp) {
        match stamp {
            Stamp::FourDigitYear {
                year,
                month,
                day,
                second_of_day,
                fraction,
            } => {
                let at = self.at;
                self.put(STAMP_TEMPLATE);
                let (h, m, s) = (
                    second_of_day / 3600,
                    second_of_day / 60 % 60,
                    second_of_day % 60,
                );
                self.store(at, digit_pair(year / 100));
                self.store(at + 2, digit_pair(year % 100));
                self.store(at + 5, digit_pair(*month));
                self.store(at + 8, digit_pair(*day));
                self.store(at + 11, digit_pair(h));
                self.store(at + 14, digit_pair(m));
                self.store(at + 17, digit_pair(s));
                self.store(at + 20, digit_pair(fraction / 10_000));
                self.store(at + 22, digit_pair(fraction / 100 % 100));
                self.store(at + 24, digit_pair(fraction % 100));
            }
            Stamp::Other(text) => {
                for &b in text.as_bytes() {
                    self.byte(b);
                }
            }
        }
    }
}

/// The eight bytes of `b` from `at`.
#[inline(always)]
fn word(b: &[u8], at: usize) -> [u8; 8] {
    b[at..at + 8].try_into().expect("eight bytes")
}

/// The four bytes of `b` from `at`.
#[inline(always)]
fn half(b: &[u8], at: usize) -> [u8; 4] {
    b[at..at + 4].try_into().expect("four bytes")
}

/// The two decimal digits of `n` (under 100).
#[inline(always)]
fn digit_pair(n: u32) -> [u8; 2] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let i = n as usize % 100 * 2;
    [PAIRS[i], PAIRS[i + 1]]
}

/// Whether JSON must escape byte `b`.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Flags (the high bit of each byte) the bytes of the little-endian word `w` that
/// JSON must escape.
///
/// SWAR: `x - 0x01…01 & !x & 0x80…80` flags the bytes of `x` that are zero, and with
/// `0x20…20` those below 0x20. A borrow can flag a byte above a true hit, never below
/// one, so the lowest flag is exact (and a word with no flag has nothing to escape).
fn escape_flags(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
}

/// The index of the first byte at or after `from` that JSON must escape, eight bytes
/// at a time.
#[cfg(test)]
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let flags = escape_flags(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| at + i)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes).into())
}

/// Lower-case hex of a digest.
pub fn hex_lower(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    append_hex(&mut out, digest);
    out
}

/// Appends the lower-case hex of a digest. Arithmetic on words, not a formatter or a
/// table: it runs once per envelope, and in wasm the generic encoder cost as much as
/// a third of the hashing.
pub fn append_hex(out: &mut String, digest: &[u8; 32]) {
    let mut text = [0u8; 64];
    for (digits, bytes) in text.chunks_exact_mut(8).zip(digest.chunks_exact(4)) {
        let bytes: [u8; 4] = bytes.try_into().expect("four bytes");
        digits.copy_from_slice(&hex_word(bytes).to_le_bytes());
    }
    out.push_str(std::str::from_utf8(&text).expect("hex digits are ASCII"));
}

/// The eight hex digits of four bytes, as a little-endian word: each byte spread to
/// two lanes (high nibble first), then `'0' + n`, plus 39 more for the nibbles of 10
/// and up to land on `'a'`.
#[inline(always)]
fn hex_word(bytes: [u8; 4]) -> u64 {
    const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    let [a, b, c, d] = bytes.map(u64::from);
    let spread = a | b << 16 | c << 32 | d << 48;
    let nibbles = (spread >> 4 | spread << 8) & LOW_NIBBLES;
    let letters = (nibbles + 0x0606_0606_0606_0606) >> 4 & 0x0101_0101_0101_0101;
    nibbles + 0x3030_3030_3030_3030 + letters * 39
}

/// The envelope of `op_id` with canonical `payload` whose SHA-256 is `digest`.
pub fn seal(op_id: String, payload: Vec<u8>, digest: &[u8; 32]) -> Envelope {
    Envelope {
        op_id,
        payload,
        sha256: hex_lower(digest),
    }
}

/// The envelope of `op`, hashed here (the engine has its host hash whole batches).
pub fn build(op: &Operation) -> Result<Envelope, FieldError> {
    let payload = canonical_bytes(op)?;
    let digest = Sha256::digest(&payload).into();
    Ok(seal(op.op_id.clone(), payload, &digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Operation {
        Operation {
            op_id: "op-1".into(),
            op_actor: "alice".into(),
            doid: "10.1000/182".into(),
            producer_id: "svc-a".into(),
            request_body_hash: Some("abc".into()),
            response_body_hash: None,
            op_source: "IRP".into(),
            op_type: "Create".into(),
            do_prefix: "10.1000".into(),
            do_repository: "repo".into(),
            client_ip: Some("192.0.2.1".into()),
            server_ip: None,
            timestamp: 1_764_000_000_123_456,
        }
    }

    #[test]
    fn canonical_bytes_are_pinned() {
        // A change here changes every envelope ever published: it must be deliberate.
        let expected = r#"{"client_ip":"192.0.2.1","do_prefix":"10.1000","do_repository":"repo","doid":"10.1000/182","op_actor":"alice","op_id":"op-1","op_source":"IRP","op_type":"Create","producer_id":"svc-a","request_body_hash":"abc","response_body_hash":null,"server_ip":null,"timestamp":"2025-11-24T16:00:00.123456Z"}"#;
        assert_eq!(
            String::from_utf8(canonical_bytes(&sample()).unwrap()).unwrap(),
            expected
        );
    }

    #[test]
    fn digest_is_sha256_of_payload() {
        let e = build(&sample()).unwrap();
        assert_eq!(e.sha256, sha256_hex(&e.payload));
        assert_eq!(e.sha256.len(), 64);
        assert_eq!(e.op_id, "op-1");
    }

    #[test]
    fn whole_seconds_still_carry_six_digits() {
        assert_eq!(format_timestamp(0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_timestamp(-1).unwrap(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn calendar_edges_match_chrono() {
        let day = 86_400_000_000i64;
        let edges = [
            *FOUR_DIGIT_YEARS.start(),
            *FOUR_DIGIT_YEARS.start() - 1,
            *FOUR_DIGIT_YEARS.end(),
            *FOUR_DIGIT_YEARS.end() + 1,
            951_782_400_000_000,       // 2000-02-29
            951_782_400_000_000 + day, // 2000-03-01
            -2_203_891_200_000_000,    // 1900-03-01
            -2_203_891_200_000_000 - day,
            4_107_542_400_000_000 - 1, // the last microsecond of 2099
        ];
        for micros in edges {
            let chrono = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(format_timestamp(micros).unwrap(), chrono, "{micros}");
        }
        assert_eq!(
            format_timestamp(*FOUR_DIGIT_YEARS.start()).unwrap(),
            "0000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_timestamp(*FOUR_DIGIT_YEARS.end()).unwrap(),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn unrepresentable_timestamp_names_the_field() {
        assert_eq!(format_timestamp(i64::MAX).unwrap_err().field, "timestamp");
    }

    /// The canonical form as serde_json writes it: its string escapes are JCS's.
    #[derive(serde::Serialize)]
    struct SerdeCanonical<'a> {
        client_ip: Option<&'a str>,
        do_prefix: &'a str,
        do_repository: &'a str,
        doid: &'a str,
        op_actor: &'a str,
        op_id: &'a str,
        op_source: &'a str,
        op_type: &'a str,
        producer_id: &'a str,
        request_body_hash: Option<&'a str>,
        response_body_hash: Option<&'a str>,
        server_ip: Option<&'a str>,
        timestamp: &'a str,
    }

    fn serde_bytes(op: &Operation) -> Vec<u8> {
        let timestamp = format_timestamp(op.timestamp).unwrap();
        serde_json::to_vec(&SerdeCanonical {
            client_ip: op.client_ip.as_deref(),
            do_prefix: &op.do_prefix,
            do_repository: &op.do_repository,
            doid: &op.doid,
            op_actor: &op.op_actor,
            op_id: &op.op_id,
            op_source: &op.op_source,
            op_type: &op.op_type,
            producer_id: &op.producer_id,
            request_body_hash: op.request_body_hash.as_deref(),
            response_body_hash: op.response_body_hash.as_deref(),
            server_ip: op.server_ip.as_deref(),
            timestamp: &timestamp,
        })
        .unwrap()
    }

    #[test]
    fn control_characters_quotes_and_backslashes_are_escaped_as_jcs_does() {
        let mut op = sample();
        op.op_actor = (0u8..0x20)
            .map(char::from)
            .chain("\"\\\u{7f}é\u{2028}😀/".chars())
            .collect();
        let text = String::from_utf8(canonical_bytes(&op).unwrap()).unwrap();
        let expected = concat!(
            r#""op_actor":""#,
            r#"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f"#,
            r#"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f"#,
            r#"\"\\"#,
            "\u{7f}é\u{2028}😀/\","
        );
        assert!(text.contains(expected), "{text}");
        assert_eq!(text.as_bytes(), serde_bytes(&op));
    }

    /// Text with the characters that need escaping mixed into any others.
    fn awkward_text() -> impl Strategy<Value = String> {
        "(\\PC|[\\x00-\\x1f\"\\\\])*"
    }

    proptest! {
        #[test]
        fn the_hand_written_encoder_writes_what_serde_json_writes(
            texts in proptest::collection::vec(awkward_text(), 9),
            optional in proptest::collection::vec(proptest::option::of(awkward_text()), 4),
            ts in -30_000_000_000_000_000i64..200_000_000_000_000_000,
        ) {
            let op = Operation {
                op_id: texts[0].clone(),
                op_actor: texts[1].clone(),
                doid: texts[2].clone(),
                producer_id: texts[3].clone(),
                op_source: texts[4].clone(),
                op_type: texts[5].clone(),
                do_prefix: texts[6].clone(),
                do_repository: texts[7].clone(),
                request_body_hash: optional[0].clone(),
                response_body_hash: optional[1].clone(),
                client_ip: optional[2].clone(),
                server_ip: optional[3].clone(),
                timestamp: ts,
            };
            prop_assert_eq!(canonical_bytes(&op).unwrap(), serde_bytes(&op));
        }

        #[test]
        fn hex_digits_are_the_formatters(digest in any::<[u8; 32]>()) {
            let formatted: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(hex_lower(&digest), formatted);
        }

        #[test]
        fn the_word_at_a_time_search_finds_the_first_byte_to_escape(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let naive = bytes[from..].iter().position(|&b| needs_escape(b)).map(|i| from + i);
            prop_assert_eq!(next_escape(&bytes, from), naive);
        }

        #[test]
        fn timestamps_are_written_as_chrono_writes_them(micros in any::<i64>()) {
            let ours = format_timestamp(micros);
            match chrono::DateTime::from_timestamp_micros(micros) {
                Some(t) => prop_assert_eq!(ours.unwrap(), t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                None => prop_assert_eq!(ours.unwrap_err().field, "timestamp"),
            }
        }

        #[test]
        fn four_digit_years_are_written_as_chrono_writes_them(
            micros in *FOUR_DIGIT_YEARS.start() - 5_000_000..=*FOUR_DIGIT_YEARS.end() + 5_000_000,
        ) {
            let t = chrono::DateTime::from_timestamp_micros(micros).unwrap();
            prop_assert_eq!(format_timestamp(micros).unwrap(), t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }

        #[test]
        fn same_operation_same_bytes_and_valid_json(actor in "\\PC*", ts in -30_000_000_000_000_000i64..200_000_000_000_000_000, ip in proptest::option::of("\\PC*")) {
            let mut op = sample();
            op.op_actor = actor.clone();
            op.timestamp = ts;
            op.server_ip = ip.clone();
            let a = build(&op).unwrap();
            let b = build(&op.clone()).unwrap();
            prop_assert_eq!(&a, &b);
            let v: serde_json::Value = serde_json::from_slice(&a.payload).unwrap();
            prop_assert_eq!(v["op_actor"].as_str().unwrap(), actor.as_str());
            prop_assert_eq!(v["server_ip"].as_str(), ip.as_deref());
            prop_assert!(!a.payload.contains(&b'\n'));
        }
    }
}

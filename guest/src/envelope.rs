//! Envelopes: the canonical bytes of an operation and their SHA-256.
//!
//! Canonical form: a JSON object with every column of the operation, keys in
//! byte order, no whitespace, `null` for absent optional fields, strings
//! escaped as RFC 8785 (JCS) does, and the timestamp as RFC 3339 UTC with
//! exactly six fractional digits. Only strings appear, so the bytes equal
//! the JCS serialisation and any language can recompute them.

use sha2::{Digest, Sha256};

use crate::model::{Envelope, FieldError, Micros, Operation, OperationRef};

/// RFC 3339 UTC with exactly six fractional digits, or an error naming `timestamp`.
pub fn format_timestamp(micros: Micros) -> Result<String, FieldError> {
    let mut out = Vec::with_capacity(27);
    push_timestamp(&mut out, micros)?;
    Ok(String::from_utf8(out).expect("RFC 3339 text is ASCII"))
}

/// The first and last microsecond of years 0000 to 9999, the years written with four
/// digits and no sign.
const FOUR_DIGIT_YEARS: std::ops::RangeInclusive<Micros> =
    -62_167_219_200_000_000..=253_402_300_799_999_999;

/// Appends [`format_timestamp`]'s text. Years 0000–9999 (all that validation lets in)
/// are written digit by digit, since this runs once per envelope and chrono's
/// formatter goes through `core::fmt`; other years go through chrono, which signs them.
fn push_timestamp(out: &mut Vec<u8>, micros: Micros) -> Result<(), FieldError> {
    if !FOUR_DIGIT_YEARS.contains(&micros) {
        let text = chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .ok_or_else(|| {
                FieldError::new(
                    "timestamp",
                    format!("{micros} µs is outside the representable range"),
                )
            })?;
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    let secs = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400);
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (at, width, value) in [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, second_of_day / 3600),
        (14, 2, second_of_day / 60 % 60),
        (17, 2, second_of_day % 60),
        (20, 6, fraction),
    ] {
        let mut rest = value;
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    out.extend_from_slice(&text);
    Ok(())
}

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

/// The canonical bytes of `op`.
pub fn canonical_bytes<'a>(op: impl Into<OperationRef<'a>>) -> Result<Vec<u8>, FieldError> {
    let op = op.into();
    // Each key with its quotes and colon, in the byte order of the keys; the timestamp
    // comes last.
    let fields: [(&[u8], Option<&str>); 12] = [
        (br#"{"client_ip":"#, op.client_ip),
        (br#","do_prefix":"#, Some(op.do_prefix)),
        (br#","do_repository":"#, Some(op.do_repository)),
        (br#","doid":"#, Some(op.doid)),
        (br#","op_actor":"#, Some(op.op_actor)),
        (br#","op_id":"#, Some(op.op_id)),
        (br#","op_source":"#, Some(op.op_source)),
        (br#","op_type":"#, Some(op.op_type)),
        (br#","producer_id":"#, Some(op.producer_id)),
        (br#","request_body_hash":"#, op.request_body_hash),
        (br#","response_body_hash":"#, op.response_body_hash),
        (br#","server_ip":"#, op.server_ip),
    ];
    // Sized for the usual case of no escapes, so the buffer is allocated once: keys,
    // quotes, punctuation and the timestamp take under 256 bytes.
    let values: usize = fields.iter().filter_map(|(_, v)| v.map(str::len)).sum();
    let mut out = Vec::with_capacity(256 + values);
    for (key, value) in fields {
        out.extend_from_slice(key);
        match value {
            Some(v) => push_json_string(&mut out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(br#","timestamp":""#);
    push_timestamp(&mut out, op.timestamp)?;
    out.extend_from_slice(br#""}"#);
    Ok(out)
}

/// Appends `s` as a JSON string escaped as RFC 8785 (JCS) does: `"` and `\`, the
/// short escapes `\b \t \n \f \r`, `\u00xx` for the other control characters, and
/// every other character as it is. Written by hand: serde_json's byte-at-a-time
/// writer was most of the guest's time in wasm. Eight bytes are checked at a time
/// and, without an escape, appended as one word: a copy of a length known only at
/// run time is a `memory.copy`, which wasmtime runs as a call out of the sandbox.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word: [u8; 8] = chunk.try_into().expect("eight bytes");
        match escape_flags(u64::from_le_bytes(word)) {
            0 => {
                out.extend_from_slice(&word);
                at += 8;
            }
            flags => {
                let first = (flags.trailing_zeros() / 8) as usize;
                for &b in &word[..first] {
                    out.push(b);
                }
                push_escaped(out, word[first]);
                at += first + 1;
            }
        }
    }
    for &b in &bytes[at..] {
        if needs_escape(b) {
            push_escaped(out, b);
        } else {
            out.push(b);
        }
    }
    out.push(b'"');
}

/// Appends the JSON escape of `b`, one of the bytes [`needs_escape`] picks.
fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(br#"\""#),
        b'\\' => out.extend_from_slice(br"\\"),
        0x08 => out.extend_from_slice(br"\b"),
        0x09 => out.extend_from_slice(br"\t"),
        0x0a => out.extend_from_slice(br"\n"),
        0x0c => out.extend_from_slice(br"\f"),
        0x0d => out.extend_from_slice(br"\r"),
        b => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0x0f)],
        ]),
    }
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
/// one, so the lowest flag is exact.
fn escape_flags(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
}

/// The index of the first byte at or after `from` that JSON must escape, eight bytes
/// at a time as [`push_json_string`] reads them.
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

/// Lower-case hex of a digest. A table, not a formatter: it runs once per
/// envelope, and in wasm the generic encoder cost as much as a third of the hashing.
pub fn hex_lower(digest: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(64);
    for b in digest {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
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

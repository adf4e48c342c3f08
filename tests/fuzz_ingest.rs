//! Fuzzing that reaches the logic, on both ways an operation comes in.
//!
//! The JSON ingest (what `record` and `POST /v1/operations` parse), its validation and
//! the envelope encoder, for `TRUSTLOG_FUZZ_SECONDS` (default 60) of generated input:
//!
//! - operations built valid by the rules of `ingest::from_value` and
//!   `validate::operation` (values up to and exactly at their limits, timestamps across
//!   the whole range in the RFC 3339 forms `parse_timestamp` reads, IPs or none), then
//!   often broken in exactly one field in one way (one character too long, NUL, a
//!   control character, blank, empty, null, missing, not a string, not an IP, a
//!   timestamp in no RFC 3339 form, finer than a microsecond or out of range, an unknown
//!   key). An unbroken operation must be accepted and read back exactly as sent; a
//!   broken one is refused naming exactly the broken field, unless the rules allow what
//!   the break made (an empty `doid`, a null `client_ip`), in which case it must be
//!   accepted as sent. The run counts accepted and refused cases per field and fails if
//!   any field was never refused or never accepted at its edge, so it cannot pass idle;
//! - arbitrary bytes, JSON and text: no panic, and a refusal names a field.
//!
//! Whatever is accepted encodes to canonical bytes that hold its columns, hash to its
//! sha256, carry its op_id, come out the same every time, and read back as the same
//! operation.
//!
//! Then rows written into SQLite's `operation` table by plain SQL, as an application
//! or another driver would, in batches where good rows surround odd ones: timestamps
//! as text in the forms drivers write (read, to the microsecond, as UTC), text in no
//! known form, REAL and BLOB timestamps, text that is not UTF-8, BLOBs and numbers in
//! text columns, values over and at a column's limit, NUL characters, NULL where the
//! schema allows it, addresses that are not IPs. One scan tick must deliver every
//! readable, deliverable row and dead-letter each other row alone, its error naming the
//! column at fault, with the tick's counts to match.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDateTime};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use support::{Scratch, ledger_payloads};
use trustlog_guest::model::{Config as TenantConfig, Operation};
use trustlog_guest::validate::{LIMITS, MAX_TIMESTAMP, MIN_TIMESTAMP};
use trustlog_guest::{envelope, validate};
use trustlog_host::db::Database;
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::tenant::Tenant;
use trustlog_host::surfaces::ingest;

use ingest::STRING_FIELDS as FIELDS;

// ---------------------------------------------------------------------------------
// The rules, as the code states them
// ---------------------------------------------------------------------------------

/// Fields that may be null or absent (`ingest`'s `OPTIONAL_FIELDS`).
const OPTIONAL: [&str; 4] = [
    "request_body_hash",
    "response_body_hash",
    "client_ip",
    "server_ip",
];

/// Fields that must parse as an IP address when present.
const IPS: [&str; 2] = ["client_ip", "server_ip"];

/// The longest value `field` takes, in characters; the timestamp has no such limit.
fn limit(field: &str) -> Option<usize> {
    LIMITS.iter().find(|(f, _)| *f == field).map(|(_, n)| *n)
}

/// The longest IP text there is (an IPv4-mapped IPv6 address with every group written
/// out), and exactly the IP columns' limit: a valid address at the limit.
const LONGEST_IP: &str = "0000:0000:0000:0000:0000:ffff:255.255.255.255";

// ---------------------------------------------------------------------------------
// Valid operations
// ---------------------------------------------------------------------------------

/// Any character a value may hold: mostly ASCII, but also characters several bytes
/// long (limits count characters), characters JSON escapes, and controls other than
/// NUL (only op_id refuses them).
fn text_char() -> BoxedStrategy<char> {
    prop_oneof![
        8 => prop::char::range('!', '~'),
        2 => Just(' '),
        2 => prop::sample::select(vec![
            '张', 'é', 'ß', '😀', '\u{2028}', '\u{feff}', '\u{85}', '\u{3000}', '\u{10ffff}',
        ]),
        1 => prop::sample::select(vec!['\t', '\n', '\r', '\u{1}', '\u{1b}', '\u{1f}', '\u{7f}']),
        1 => any::<char>().prop_filter("NUL is refused everywhere", |c| *c != '\0'),
    ]
    .boxed()
}

/// A length from `min` to `max`, often exactly one of the two.
fn length(min: usize, max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(max), 1 => Just(min), 5 => min..=max]
}

/// Text of `min..=max` characters of `chars`.
fn text_of(
    min: usize,
    max: usize,
    chars: impl Strategy<Value = char> + Clone,
) -> impl Strategy<Value = String> {
    length(min, max).prop_flat_map(move |n| {
        prop::collection::vec(chars.clone(), n).prop_map(|cs| cs.into_iter().collect())
    })
}

/// A value of a free text field: anything but NUL, empty up to the limit.
fn free_text(field: &str) -> impl Strategy<Value = String> + use<> {
    text_of(0, limit(field).unwrap(), text_char())
}

/// An op_id: not blank, no ASCII control character, no trailing space.
fn op_id() -> impl Strategy<Value = String> {
    let chars = text_char()
        .prop_filter("op_id refuses controls", |c| !c.is_ascii_control())
        .boxed();
    text_of(1, limit("op_id").unwrap(), chars).prop_map(|mut id| {
        if id.trim().is_empty() || id.ends_with(' ') {
            id.pop();
            id.push('z');
        }
        id
    })
}

/// An IP address as an application writes one.
fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        3 => any::<Ipv6Addr>().prop_map(|a| a.to_string()),
        1 => any::<Ipv4Addr>().prop_map(|a| format!("::ffff:{a}")),
        1 => any::<Ipv6Addr>().prop_map(|a| a.to_string().to_uppercase()),
        1 => Just(LONGEST_IP.to_string()),
    ]
}

/// How an optional field is left out: absent, or null.
#[derive(Debug, Clone, Copy)]
enum Left {
    Absent,
    Null,
}

fn optional(value: impl Strategy<Value = String>) -> impl Strategy<Value = Result<String, Left>> {
    prop_oneof![
        3 => value.prop_map(Ok),
        1 => Just(Err(Left::Absent)),
        1 => Just(Err(Left::Null)),
    ]
}

/// A timestamp `parse_timestamp` reads, and the microsecond it names: anywhere in the
/// range every database stores (its two ends included), 0 to 6 fractional digits, `Z`
/// or an offset, the separators RFC 3339 allows.
fn stamp() -> impl Strategy<Value = (String, i64)> {
    let micros = prop_oneof![
        1 => Just(MIN_TIMESTAMP),
        1 => Just(MAX_TIMESTAMP),
        6 => MIN_TIMESTAMP..=MAX_TIMESTAMP,
        2 => 1_700_000_000_000_000i64..1_900_000_000_000_000,
    ];
    (
        micros,
        0u32..=6,
        prop::option::of(-(23 * 60 + 59)..=23 * 60 + 59),
        prop::sample::select(vec!['T', 't', ' ']),
        prop::sample::select(vec!['Z', 'z']),
    )
        .prop_map(|(micros, digits, offset, separator, zulu)| {
            let unit = 10i64.pow(6 - digits);
            let micros = micros - micros.rem_euclid(unit);
            (
                rfc3339_text(micros, digits, offset, separator, zulu),
                micros,
            )
        })
}

/// `micros` as RFC 3339 with `digits` fractional digits, at `offset` minutes east of UTC
/// (when the local time still has a four-digit year).
fn rfc3339_text(
    micros: i64,
    digits: u32,
    offset: Option<i32>,
    separator: char,
    zulu: char,
) -> String {
    let utc = DateTime::from_timestamp_micros(micros).unwrap().naive_utc();
    let (local, zone) = match offset {
        Some(minutes) => {
            let local = utc + chrono::Duration::minutes(minutes.into());
            if (0..=9999).contains(&local.year()) {
                let sign = if minutes < 0 { '-' } else { '+' };
                let m = minutes.abs();
                (local, format!("{sign}{:02}:{:02}", m / 60, m % 60))
            } else {
                (utc, zulu.to_string())
            }
        }
        None => (utc, zulu.to_string()),
    };
    let fraction = if digits == 0 {
        String::new()
    } else {
        let unit = 10i64.pow(6 - digits);
        format!(
            ".{:0width$}",
            micros.rem_euclid(1_000_000) / unit,
            width = digits as usize
        )
    };
    format!(
        "{}{separator}{}{fraction}{zone}",
        local.format("%Y-%m-%d"),
        local.format("%H:%M:%S")
    )
}

/// A valid operation as JSON, with what it must read as.
#[derive(Debug, Clone)]
struct Valid {
    object: Map<String, Value>,
    /// The instant its timestamp names.
    micros: i64,
    /// Fields whose value sits at the edge of what is allowed: exactly at the length
    /// limit, the first or last microsecond of the range, a longest IP, an optional
    /// field left out.
    edges: BTreeSet<&'static str>,
}

fn valid() -> impl Strategy<Value = Valid> {
    let required = |f: &'static str| free_text(f).prop_map(move |v| (f, Ok(v)));
    let optional_text = |f: &'static str| optional(free_text(f)).prop_map(move |v| (f, v));
    let optional_ip = |f: &'static str| optional(ip()).prop_map(move |v| (f, v));
    (
        (
            op_id().prop_map(|v| ("op_id", Ok(v))),
            required("op_actor"),
            required("doid"),
            required("producer_id"),
            optional_text("request_body_hash"),
            optional_text("response_body_hash"),
            required("op_source"),
            required("op_type"),
        ),
        (
            required("do_prefix"),
            required("do_repository"),
            optional_ip("client_ip"),
            optional_ip("server_ip"),
            stamp(),
        ),
    )
        .prop_map(
            |((a, b, c, d, e, f, g, h), (i, j, k, l, (stamp, micros)))| {
                let mut object = Map::new();
                let mut edges = BTreeSet::new();
                for (field, value) in [a, b, c, d, e, f, g, h, i, j, k, l] {
                    match value {
                        Ok(text) => {
                            if Some(text.chars().count()) == limit(field) {
                                edges.insert(field);
                            }
                            object.insert(field.into(), Value::String(text));
                        }
                        Err(left) => {
                            edges.insert(field);
                            if let Left::Null = left {
                                object.insert(field.into(), Value::Null);
                            }
                        }
                    }
                }
                if micros == MIN_TIMESTAMP || micros == MAX_TIMESTAMP {
                    edges.insert("timestamp");
                }
                object.insert("timestamp".into(), Value::String(stamp));
                Valid {
                    object,
                    micros,
                    edges,
                }
            },
        )
}

// ---------------------------------------------------------------------------------
// Breaking exactly one field
// ---------------------------------------------------------------------------------

/// One way to break a field.
#[derive(Debug, Clone)]
enum Break {
    /// One character more than the limit, in `fill`.
    TooLong(char),
    /// A NUL character inside.
    Nul(Index),
    /// An ASCII control character (not NUL) inside.
    Control(char, Index),
    /// Nothing but whitespace.
    Blank(&'static str),
    Empty,
    /// A trailing space, within the limit.
    TrailingSpace,
    Null,
    Missing,
    /// A JSON value that is not a string.
    WrongType(Value),
    NotAnIp(&'static str),
    /// No RFC 3339 form `parse_timestamp` reads.
    StampForm(&'static str),
    /// RFC 3339 finer than the microsecond.
    FinerThanMicros(u32),
    /// RFC 3339, but outside 1000-01-01 to 9999-12-31 UTC.
    OutOfRange(&'static str),
    /// A key no operation has (the case's `field` is the key).
    Unknown,
}

impl Break {
    fn kind(&self) -> &'static str {
        match self {
            Break::TooLong(_) => "one character too long",
            Break::Nul(_) => "NUL inside",
            Break::Control(..) => "control character inside",
            Break::Blank(_) => "blank",
            Break::Empty => "empty",
            Break::TrailingSpace => "trailing space",
            Break::Null => "null",
            Break::Missing => "missing",
            Break::WrongType(_) => "not a string",
            Break::NotAnIp(_) => "not an IP",
            Break::StampForm(_) => "no RFC 3339 form",
            Break::FinerThanMicros(_) => "finer than a microsecond",
            Break::OutOfRange(_) => "out of range",
            Break::Unknown => "unknown key",
        }
    }
}

fn wrong_types() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(1.5),
        json!(true),
        json!(false),
        json!([]),
        json!(["x"]),
        json!({}),
        json!({"k": "v"}),
    ]
}

fn common_breaks() -> impl Strategy<Value = Break> {
    prop_oneof![
        any::<Index>().prop_map(Break::Nul),
        (
            prop::sample::select(vec!['\t', '\n', '\r', '\u{1}', '\u{1f}', '\u{7f}']),
            any::<Index>()
        )
            .prop_map(|(c, at)| Break::Control(c, at)),
        prop::sample::select(vec![" ", "   ", "\u{3000}", "\u{a0}", "\u{2003}"])
            .prop_map(Break::Blank),
        Just(Break::Empty),
        Just(Break::TrailingSpace),
        Just(Break::Null),
        Just(Break::Missing),
        prop::sample::select(wrong_types()).prop_map(Break::WrongType),
    ]
}

fn too_long() -> impl Strategy<Value = Break> {
    // Never a control or a space: the refusal must be for the length alone.
    prop::sample::select(vec!['x', '7', 'é', '张', '😀']).prop_map(Break::TooLong)
}

/// The ways `field` can be broken.
fn breaks_of(field: &'static str) -> BoxedStrategy<Break> {
    if field == "timestamp" {
        prop_oneof![
            4 => common_breaks(),
            2 => prop::sample::select(vec![
                "yesterday",
                "2026-11-24",
                "2026-11-24T10:23:54",
                "2026-11-24T10:23:54.123456",
                "2026-13-01T00:00:00Z",
                "2026-02-30T00:00:00Z",
                "2026-11-24T24:00:00Z",
                "2026-11-24T10:23:54+24:00",
                "2026-11-24T10:23:54.Z",
                "2026-11-24T10:23:54 Z",
                "20261124T102354Z",
                "+2026-11-24T10:23:54Z",
                "1764000000",
                "2026-11-24T10:23:54.123456ZZ",
            ])
            .prop_map(Break::StampForm),
            1 => (7u32..=12).prop_map(Break::FinerThanMicros),
            1 => prop::sample::select(vec![
                // One microsecond before the first.
                "0999-12-31T23:59:59.999999Z",
                // The first instant, one minute early by its offset.
                "1000-01-01T00:00:00+00:01",
                // The last instant, one minute late by its offset.
                "9999-12-31T23:59:59.999999-00:01",
                "0000-01-01T00:00:00Z",
            ])
            .prop_map(Break::OutOfRange),
        ]
        .boxed()
    } else if IPS.contains(&field) {
        prop_oneof![
            4 => common_breaks(),
            1 => too_long(),
            2 => prop::sample::select(vec![
                "999.1.1.1",
                "1.2.3",
                "localhost",
                "::g",
                "[::1]",
                "fe80::1%eth0",
                "192.0.2.1/24",
                "01.02.03.04",
                "0x7f.0.0.1",
            ])
            .prop_map(Break::NotAnIp),
        ]
        .boxed()
    } else {
        prop_oneof![4 => common_breaks(), 1 => too_long()].boxed()
    }
}

/// A key no operation has.
fn stranger() -> impl Strategy<Value = String> {
    // The backquote: serde quotes the key between backquotes in its message.
    "[a-zA-Z_ 张é$.:`-]{1,12}".prop_filter("an operation's own field", |k| {
        !FIELDS.contains(&k.as_str())
    })
}

/// A valid operation, maybe broken in one field: the JSON line and what must come of it.
#[derive(Debug, Clone)]
struct Case {
    valid: Valid,
    /// The field broken and how; `None` for an operation left valid.
    broken: Option<(String, Break)>,
}

fn case() -> impl Strategy<Value = Case> {
    let broken = prop_oneof![
        12 => prop::sample::select(FIELDS.to_vec())
            .prop_flat_map(|field| breaks_of(field).prop_map(move |b| (field.to_string(), b))),
        1 => stranger().prop_map(|key| (key, Break::Unknown)),
    ];
    (valid(), prop::option::weighted(0.75, broken))
        .prop_map(|(valid, broken)| Case { valid, broken })
}

/// `text` cut to `n` characters.
fn cut(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// `text` with `c` put in at `at`, one character shorter than `field`'s limit first so
/// the length stays allowed.
fn with_inside(field: &str, text: &str, c: char, at: Index) -> String {
    let mut chars: Vec<char> = match limit(field) {
        Some(max) => cut(text, max - 1).chars().collect(),
        None => text.chars().collect(),
    };
    chars.insert(at.index(chars.len() + 1), c);
    chars.into_iter().collect()
}

impl Case {
    /// The JSON object sent.
    fn object(&self) -> Map<String, Value> {
        let mut object = self.valid.object.clone();
        let Some((field, how)) = &self.broken else {
            return object;
        };
        let current = object
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let text = match how {
            Break::TooLong(fill) => {
                let max = limit(field).unwrap();
                let mut long = current;
                while long.chars().count() <= max {
                    long.push(*fill);
                }
                Value::String(long)
            }
            Break::Nul(at) => Value::String(with_inside(field, &current, '\0', *at)),
            Break::Control(c, at) => Value::String(with_inside(field, &current, *c, *at)),
            Break::Blank(blank) => Value::String((*blank).into()),
            Break::Empty => Value::String(String::new()),
            Break::TrailingSpace => {
                let kept = limit(field).map_or(current.clone(), |max| cut(&current, max - 1));
                Value::String(kept + " ")
            }
            Break::Null => Value::Null,
            Break::Missing => {
                object.remove(field);
                return object;
            }
            Break::WrongType(v) => v.clone(),
            Break::NotAnIp(s) | Break::StampForm(s) | Break::OutOfRange(s) => {
                Value::String((*s).into())
            }
            Break::FinerThanMicros(digits) => {
                let micros = self.valid.micros;
                let seconds =
                    DateTime::from_timestamp_micros(micros - micros.rem_euclid(1_000_000))
                        .unwrap()
                        .format("%Y-%m-%dT%H:%M:%S");
                let fraction = format!("{:06}", micros.rem_euclid(1_000_000));
                let extra = "7".repeat(*digits as usize - 6);
                Value::String(format!("{seconds}.{fraction}{extra}Z"))
            }
            Break::Unknown => Value::String("x".into()),
        };
        object.insert(field.clone(), text);
        object
    }

    /// The field a refusal must name; `None` where the rules accept what the break made.
    fn refusal(&self) -> Option<&str> {
        let (field, how) = self.broken.as_ref()?;
        let field = field.as_str();
        let optional = OPTIONAL.contains(&field);
        // op_id, the IPs and the timestamp have a form; the other text fields take
        // anything short enough without NUL, blank and empty included.
        let formed = field == "op_id" || IPS.contains(&field) || field == "timestamp";
        let refused = match how {
            Break::TooLong(_)
            | Break::Nul(_)
            | Break::WrongType(_)
            | Break::NotAnIp(_)
            | Break::StampForm(_)
            | Break::FinerThanMicros(_)
            | Break::OutOfRange(_)
            | Break::Unknown => true,
            Break::Null | Break::Missing => !optional,
            Break::Control(..) | Break::Blank(_) | Break::Empty | Break::TrailingSpace => formed,
        };
        refused.then_some(field)
    }
}

// ---------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------

/// Why an input was refused: the field named, and what was said of it.
#[derive(Debug)]
struct Refusal {
    field: String,
    message: String,
    /// The op_id the ingest reported, for refusals before validation.
    ingest_op_id: Option<Option<String>>,
}

/// The whole path `record` takes: parse, validate, build the envelope.
fn judge(line: &str) -> Result<Operation, Refusal> {
    let op = ingest::parse_line(line).map_err(|e| Refusal {
        field: e.error.field,
        message: e.error.message,
        ingest_op_id: Some(e.op_id),
    })?;
    validate::operation(&op)
        .and_then(|()| envelope::build(&op).map(drop))
        .map_err(|e| Refusal {
            field: e.field,
            message: e.message,
            ingest_op_id: None,
        })?;
    Ok(op)
}

/// What an accepted operation's envelope must be.
fn check_envelope(op: &Operation) -> Result<(), TestCaseError> {
    let env = envelope::build(op).expect("validated operations encode");
    prop_assert_eq!(&env.op_id, &op.op_id);
    prop_assert_eq!(envelope::sha256_hex(&env.payload), env.sha256.clone());
    let payload: Value = serde_json::from_slice(&env.payload).expect("canonical JSON parses");
    prop_assert_eq!(
        &payload,
        &ingest::to_json(op),
        "the payload holds every column, the timestamp as UTC µs"
    );
    prop_assert_eq!(
        envelope::build(op).unwrap(),
        env,
        "the encoding is deterministic"
    );
    let again = ingest::parse_line(&ingest::to_json(op).to_string()).expect("reads back");
    prop_assert_eq!(&again, op);
    Ok(())
}

/// Accepted and refused cases, by field and by kind of break.
#[derive(Default)]
struct Tally {
    unbroken: u64,
    /// Per field: refused, accepted broken (as the rules allow), accepted at an edge.
    fields: BTreeMap<String, [u64; 3]>,
    /// Per kind of break: refused, accepted.
    kinds: BTreeMap<&'static str, [u64; 2]>,
    arbitrary: u64,
}

const UNKNOWN_KEY: &str = "(unknown key)";

impl Tally {
    fn print(&self, rounds: u64) {
        println!(
            "generated operations: {} left valid (accepted), {} arbitrary inputs, {rounds} rounds",
            self.unbroken, self.arbitrary
        );
        println!(
            "{:<20} {:>9} {:>17} {:>17}",
            "field", "refused", "accepted broken", "accepted at edge"
        );
        for (field, [refused, broken, edge]) in &self.fields {
            println!("{field:<20} {refused:>9} {broken:>17} {edge:>17}");
        }
        println!("{:<26} {:>9} {:>9}", "break", "refused", "accepted");
        for (kind, [refused, accepted]) in &self.kinds {
            println!("{kind:<26} {refused:>9} {accepted:>9}");
        }
    }

    /// Fails unless every field was refused and accepted at its edge or broken, and every
    /// kind of break occurred, so a run that reached nothing does not pass.
    fn assert_reached_everything(&self) {
        assert!(self.unbroken > 0, "no valid operation was accepted");
        for field in FIELDS.iter().copied().chain([UNKNOWN_KEY]) {
            let [refused, broken, edge] = self.fields.get(field).copied().unwrap_or_default();
            assert!(refused > 0, "no refusal named {field}");
            if field != UNKNOWN_KEY {
                assert!(broken + edge > 0, "{field} was never accepted at its edge");
            }
        }
        for kind in [
            "one character too long",
            "NUL inside",
            "control character inside",
            "blank",
            "empty",
            "trailing space",
            "null",
            "missing",
            "not a string",
            "not an IP",
            "no RFC 3339 form",
            "finer than a microsecond",
            "out of range",
            "unknown key",
        ] {
            let [refused, _] = self.kinds.get(kind).copied().unwrap_or_default();
            assert!(refused > 0, "no case was refused for {kind}");
        }
        // Breaks the rules allow in some fields (empty doid, null client_ip...).
        for kind in [
            "control character inside",
            "blank",
            "empty",
            "trailing space",
            "null",
            "missing",
        ] {
            let [_, accepted] = self.kinds.get(kind).copied().unwrap_or_default();
            assert!(accepted > 0, "no case was accepted for {kind}");
        }
    }
}

/// One generated case: accepted exactly as sent, or refused naming exactly the field broken.
fn check_case(case: &Case, tally: &RefCell<Tally>) -> Result<(), TestCaseError> {
    let object = case.object();
    let line = Value::Object(object.clone()).to_string();
    let expected = case.refusal();
    let judged = judge(&line);
    let mut tally = tally.borrow_mut();
    match (expected, judged) {
        (None, Ok(op)) => {
            // Read as sent: every text field, null and absent both as none.
            let read = ingest::to_json(&op);
            for field in &FIELDS[..12] {
                prop_assert_eq!(
                    &read[*field],
                    object.get(*field).unwrap_or(&Value::Null),
                    "{} of {}",
                    field,
                    line
                );
            }
            prop_assert_eq!(op.timestamp, case.valid.micros, "timestamp of {}", line);
            check_envelope(&op)?;
            match &case.broken {
                None => tally.unbroken += 1,
                Some((field, how)) => {
                    tally.fields.entry(field.clone()).or_default()[1] += 1;
                    tally.kinds.entry(how.kind()).or_default()[1] += 1;
                }
            }
            for field in &case.valid.edges {
                let broken_here = case.broken.as_ref().is_some_and(|(f, _)| f == field);
                if !broken_here {
                    tally.fields.entry(field.to_string()).or_default()[2] += 1;
                }
            }
        }
        (
            Some(field),
            Err(Refusal {
                field: named,
                message,
                ingest_op_id,
            }),
        ) => {
            prop_assert_eq!(
                named.as_str(),
                field,
                "the refusal ({}) must name the broken field; input {}",
                message,
                line
            );
            let (_, how) = case.broken.as_ref().unwrap();
            if let Break::TooLong(_) = how {
                let long = format!("is {} characters long", limit(field).unwrap() + 1);
                prop_assert!(message.contains(&long), "{message}");
            }
            if let Some(reported) = ingest_op_id {
                prop_assert_eq!(
                    reported.as_deref(),
                    object.get("op_id").and_then(Value::as_str),
                    "the ingest reports the op_id it was given"
                );
            }
            let row = if let Break::Unknown = how {
                UNKNOWN_KEY.to_string()
            } else {
                field.to_string()
            };
            tally.fields.entry(row).or_default()[0] += 1;
            tally.kinds.entry(how.kind()).or_default()[0] += 1;
        }
        (None, Err(Refusal { field, message, .. })) => {
            return Err(TestCaseError::fail(format!(
                "refused naming {field:?} ({message}), but the rules accept it: {:?}\n{line}",
                case.broken
            )));
        }
        (Some(field), Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "accepted, but {field} is broken ({:?}): {line}",
                case.broken
            )));
        }
    }
    Ok(())
}

/// An arbitrary input line: no panic, a refusal names a field, anything accepted
/// encodes as it must.
fn check_arbitrary(line: &str) -> Result<(), TestCaseError> {
    match judge(line) {
        Err(Refusal { field, message, .. }) => {
            prop_assert!(!field.is_empty(), "unnamed refusal of {line:?}: {message}");
            Ok(())
        }
        Ok(op) => check_envelope(&op),
    }
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn budget() -> Duration {
    let secs = std::env::var("TRUSTLOG_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[test]
fn valid_operations_are_accepted_and_each_broken_field_is_refused_by_name_for_a_minute() {
    let deadline = Instant::now() + budget();
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let tally = RefCell::new(Tally::default());
    let arbitrary = |line: &str| {
        tally.borrow_mut().arbitrary += 1;
        check_arbitrary(line)
    };
    let mut rounds = 0u64;
    while rounds == 0 || Instant::now() < deadline {
        // A runner counts its cases once: each round takes a fresh one, with a fresh seed.
        let mut runner = TestRunner::new(Config {
            cases: 1024,
            ..config.clone()
        });
        runner.run(&case(), |c| check_case(&c, &tally)).unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&any_json(), |v| arbitrary(&v.to_string()))
            .unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
                // Bytes that are not UTF-8 never reach the parser: the handler answers 400.
                match std::str::from_utf8(&bytes) {
                    Ok(text) => arbitrary(text),
                    Err(_) => Ok(()),
                }
            })
            .unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner.run(&"\\PC{0,200}", |s| arbitrary(&s)).unwrap();
        rounds += 1;
    }
    let tally = tally.into_inner();
    tally.print(rounds);
    tally.assert_reached_everything();
}

#[test]
fn values_exactly_at_every_limit_are_accepted() {
    let mut object = Map::new();
    for (field, max) in LIMITS {
        let value = if IPS.contains(field) {
            LONGEST_IP.to_string()
        } else {
            "张".repeat(*max)
        };
        assert_eq!(value.chars().count(), *max);
        object.insert((*field).into(), Value::String(value));
    }
    for (stamp, micros) in [
        ("1000-01-01T00:00:00Z", MIN_TIMESTAMP),
        ("9999-12-31T23:59:59.999999Z", MAX_TIMESTAMP),
        ("0999-12-31T23:00:00-01:00", MIN_TIMESTAMP),
    ] {
        object.insert("timestamp".into(), Value::String(stamp.into()));
        match judge(&Value::Object(object.clone()).to_string()) {
            Ok(op) => assert_eq!(op.timestamp, micros, "{stamp}"),
            Err(e) => panic!("refused: {e:?} ({stamp})"),
        }
    }
}

/// serde quotes an unknown key between backquotes; a key holding one is still named
/// whole (the fuzzing found it named up to the backquote).
#[test]
fn an_unknown_key_with_a_backquote_is_named_whole() {
    let mut object = valid_object();
    object.insert("a`b".into(), Value::String("x".into()));
    let e = ingest::parse_line(&Value::Object(object).to_string()).unwrap_err();
    assert_eq!(e.error.field, "a`b", "{e}");
}

/// A plain valid operation, for the examples.
fn valid_object() -> Map<String, Value> {
    let Value::Object(object) =
        ingest::to_json(&ingest::parse_line(&support::op_line("op-1", T0)).unwrap())
    else {
        unreachable!()
    };
    object
}

// ---------------------------------------------------------------------------------
// Rows written by plain SQL
// ---------------------------------------------------------------------------------

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000_000;

/// The text columns after op_id, in the table's order.
const COLUMNS: [&str; 11] = [
    "op_actor",
    "doid",
    "producer_id",
    "request_body_hash",
    "response_body_hash",
    "op_source",
    "op_type",
    "do_prefix",
    "do_repository",
    "client_ip",
    "server_ip",
];

/// A SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A timestamp as a driver or application writes it into SQLite as TEXT.
#[derive(Debug, Clone)]
struct DriverTime {
    text: String,
    /// The instant it names, the nanoseconds beyond cut toward the past.
    micros: i64,
}

fn driver_time() -> impl Strategy<Value = DriverTime> {
    (
        // 2000-01-01 to 2030-01-01.
        946_684_800i64..1_893_456_000,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
        -12 * 60..=14 * 60i32,
        0usize..8,
        prop::sample::select(vec!["CST", "UTC", "JST", "EST", "MSK"]),
    )
        .prop_map(|(secs, nanos, offset, form, zone)| {
            let utc = DateTime::from_timestamp(secs, nanos).unwrap().naive_utc();
            let local = utc + chrono::Duration::minutes(offset.into());
            let sign = if offset < 0 { '-' } else { '+' };
            let (h, m) = (offset.abs() / 60, offset.abs() % 60);
            let colon = format!("{sign}{h:02}:{m:02}");
            let plain = format!("{sign}{h:02}{m:02}");
            // Go's .999999999: the nanoseconds without trailing zeros, none at all for 0.
            let go_fraction = match format!("{nanos:09}").trim_end_matches('0') {
                "" => String::new(),
                digits => format!(".{digits}"),
            };
            let at = |t: NaiveDateTime, f: &str| t.format(f).to_string();
            let exact = secs * 1_000_000 + i64::from(nanos / 1_000);
            let whole = secs * 1_000_000;
            let (text, micros) = match form {
                // mattn/go-sqlite3's time.Time.
                0 => (
                    format!("{}{go_fraction}{colon}", at(local, "%Y-%m-%d %H:%M:%S")),
                    exact,
                ),
                // RFC 3339, whole seconds, UTC.
                1 => (format!("{}Z", at(utc, "%Y-%m-%dT%H:%M:%S")), whole),
                // SQLite's CURRENT_TIMESTAMP (UTC).
                2 => (at(utc, "%Y-%m-%d %H:%M:%S"), whole),
                // Go's Time.String(): an offset without a colon, then the zone's name.
                3 => (
                    format!(
                        "{}{go_fraction} {plain} {zone}",
                        at(local, "%Y-%m-%d %H:%M:%S")
                    ),
                    exact,
                ),
                // ISO 8601 without an offset, microseconds: UTC.
                4 => (at(utc, "%Y-%m-%dT%H:%M:%S%.6f"), exact),
                // RFC 3339 with nanoseconds and an offset.
                5 => (
                    format!("{}{colon}", at(local, "%Y-%m-%dT%H:%M:%S%.9f")),
                    exact,
                ),
                // An offset without a colon, no space.
                6 => (
                    format!("{}{plain}", at(local, "%Y-%m-%d %H:%M:%S%.9f")),
                    exact,
                ),
                // Padded with spaces.
                _ => (format!("  {}  ", at(utc, "%Y-%m-%d %H:%M:%S%.6f")), exact),
            };
            DriverTime { text, micros }
        })
}

/// The one odd value of a row (or none).
#[derive(Debug, Clone)]
enum Odd {
    None,
    /// TEXT in the timestamp column in a form drivers write.
    DriverTime(DriverTime),
    /// Digits as TEXT: the column's INTEGER affinity stores them as a number.
    DigitsAsText,
    /// TEXT in no known timestamp form.
    NoTimeForm(&'static str),
    /// A REAL with a fraction: the INTEGER column keeps it REAL.
    RealTime,
    /// A BLOB in the timestamp column.
    BlobTime,
    /// TEXT that is not UTF-8 (hex of the bytes) in `column`.
    NotUtf8(&'static str, &'static str),
    /// A BLOB in a text column.
    Blob(&'static str),
    /// One character over the column's limit.
    OverLimit(&'static str, char),
    /// Exactly at the column's limit.
    AtLimit(&'static str, char),
    /// A NUL character inside.
    Nul(&'static str),
    /// An integer in a text column: TEXT affinity stores it as its decimal text.
    Integer(&'static str, i64),
    /// NULL where the schema allows it.
    Null(&'static str),
    /// Empty text in a NOT NULL column.
    Empty(&'static str),
    /// Text that is not an IP in an IP column.
    NotAnIp(&'static str, &'static str),
}

impl Odd {
    fn kind(&self) -> &'static str {
        match self {
            Odd::None => "good",
            Odd::DriverTime(_) => "driver text timestamp",
            Odd::DigitsAsText => "digits as text timestamp",
            Odd::NoTimeForm(_) => "timestamp in no form",
            Odd::RealTime => "REAL timestamp",
            Odd::BlobTime => "BLOB timestamp",
            Odd::NotUtf8(..) => "not UTF-8",
            Odd::Blob(_) => "BLOB in text column",
            Odd::OverLimit(..) => "over the limit",
            Odd::AtLimit(..) => "at the limit",
            Odd::Nul(_) => "NUL inside",
            Odd::Integer(..) => "integer in text column",
            Odd::Null(_) => "NULL in nullable column",
            Odd::Empty(_) => "empty text",
            Odd::NotAnIp(..) => "not an IP",
        }
    }
}

fn odd() -> impl Strategy<Value = Odd> {
    let any_column = || prop::sample::select(COLUMNS.to_vec());
    let fill = || prop::sample::select(vec!['x', '张', '😀']);
    prop_oneof![
        8 => Just(Odd::None),
        4 => driver_time().prop_map(Odd::DriverTime),
        1 => Just(Odd::DigitsAsText),
        2 => prop::sample::select(vec![
            "next tuesday",
            "",
            "2025-11-24",
            "10:23:54",
            "2025-13-01 00:00:00",
            "2025-02-30 10:23:54",
            "24/11/2025 10:23:54",
            "2025-11-24 10:23:54 +08:00:00",
        ])
        .prop_map(Odd::NoTimeForm),
        1 => Just(Odd::RealTime),
        1 => Just(Odd::BlobTime),
        2 => (
            prop::sample::select(COLUMNS.iter().copied().chain(["timestamp"]).collect::<Vec<_>>()),
            prop::sample::select(vec!["C328", "FF", "80", "EDA080", "F4908080", "C0AF"]),
        )
            .prop_map(|(c, hex)| Odd::NotUtf8(c, hex)),
        1 => any_column().prop_map(Odd::Blob),
        2 => (any_column(), fill()).prop_map(|(c, f)| Odd::OverLimit(c, f)),
        2 => (
            prop::sample::select(COLUMNS.iter().copied().chain(["op_id"]).collect::<Vec<_>>()),
            fill()
        )
            .prop_map(|(c, f)| Odd::AtLimit(c, f)),
        1 => any_column().prop_map(Odd::Nul),
        1 => (any_column(), any::<i64>()).prop_map(|(c, n)| Odd::Integer(c, n)),
        1 => prop::sample::select(OPTIONAL.to_vec()).prop_map(Odd::Null),
        1 => prop::sample::select(
            COLUMNS.iter().copied().filter(|c| !OPTIONAL.contains(c)).collect::<Vec<_>>()
        )
        .prop_map(Odd::Empty),
        1 => (
            prop::sample::select(IPS.to_vec()),
            prop::sample::select(vec!["localhost", "999.1.1.1", "", "not an address"]),
        )
            .prop_map(|(c, s)| Odd::NotAnIp(c, s)),
    ]
}

/// What a row must become after one scan tick.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Published, with exactly this payload.
    Delivered(Value),
    /// Dead-lettered because the host could not read `column`.
    Unreadable(&'static str),
    /// Dead-lettered because `column` breaks its limits (read, but never deliverable).
    Refused(&'static str),
}

/// A row inserted by plain SQL.
#[derive(Debug, Clone)]
struct SqlRow {
    op_id: String,
    /// The text columns' values when all is well (`None` is NULL), in [`COLUMNS`] order.
    values: Vec<Option<String>>,
    micros: i64,
    odd: Odd,
}

fn plain_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._:/'\"张é😀-]{0,16}"
}

fn sql_row() -> impl Strategy<Value = (Vec<Option<String>>, i64, Odd)> {
    let values = COLUMNS
        .iter()
        .map(|c| {
            let value: BoxedStrategy<String> = if IPS.contains(c) {
                ip().boxed()
            } else {
                plain_text().boxed()
            };
            if OPTIONAL.contains(c) {
                prop::option::of(value).boxed()
            } else {
                value.prop_map(Some).boxed()
            }
        })
        .collect::<Vec<_>>();
    (values, T0..T0 + 1_000_000_000_000, odd())
}

impl SqlRow {
    /// The INSERT statement, and what the row must become.
    fn insert(&self) -> (String, Fate) {
        let op_id = self.stored_op_id();
        let mut values = self.values.clone();
        let mut exprs: Vec<String> = values
            .iter()
            .map(|v| v.as_deref().map_or("NULL".into(), quoted))
            .collect();
        let mut stamp = self.micros.to_string();
        let mut micros = self.micros;
        let index = |column: &str| COLUMNS.iter().position(|c| *c == column);
        let mut set = |column: &str, expr: String, value: Option<String>| match index(column) {
            Some(i) => {
                exprs[i] = expr;
                values[i] = value;
            }
            None => unreachable!("{column} is set apart"),
        };
        let fate = match &self.odd {
            Odd::None => None,
            Odd::DriverTime(t) => {
                stamp = quoted(&t.text);
                micros = t.micros;
                None
            }
            Odd::DigitsAsText => {
                stamp = quoted(&self.micros.to_string());
                None
            }
            Odd::NoTimeForm(text) => {
                stamp = quoted(text);
                Some(Fate::Unreadable("timestamp"))
            }
            Odd::RealTime => {
                stamp = format!("{}.5", self.micros);
                Some(Fate::Unreadable("timestamp"))
            }
            Odd::BlobTime => {
                stamp = "X'0102'".into();
                Some(Fate::Unreadable("timestamp"))
            }
            Odd::NotUtf8("timestamp", hex) => {
                stamp = format!("CAST(X'{hex}' AS TEXT)");
                Some(Fate::Unreadable("timestamp"))
            }
            Odd::NotUtf8(column, hex) => {
                set(column, format!("'ok' || CAST(X'{hex}' AS TEXT)"), None);
                Some(Fate::Unreadable(column))
            }
            Odd::Blob(column) => {
                set(column, "X'6869'".into(), None);
                Some(Fate::Unreadable(column))
            }
            Odd::OverLimit(column, fill) => {
                let long = fill.to_string().repeat(limit(column).unwrap() + 1);
                set(column, quoted(&long), Some(long));
                Some(Fate::Refused(column))
            }
            Odd::AtLimit("op_id", _) => None,
            Odd::AtLimit(column, fill) => {
                let full = fill.to_string().repeat(limit(column).unwrap());
                set(column, quoted(&full), Some(full));
                None
            }
            Odd::Nul(column) => {
                set(column, "'ab' || char(0) || 'cd'".into(), None);
                Some(Fate::Refused(column))
            }
            Odd::Integer(column, n) => {
                set(column, n.to_string(), Some(n.to_string()));
                None
            }
            Odd::Null(column) => {
                set(column, "NULL".into(), None);
                None
            }
            Odd::Empty(column) => {
                set(column, "''".into(), Some(String::new()));
                None
            }
            Odd::NotAnIp(column, text) => {
                // Formats are `record`'s to refuse; delivery holds rows to limits only.
                set(column, quoted(text), Some((*text).into()));
                None
            }
        };
        let fate = fate.unwrap_or_else(|| {
            let mut payload = Map::new();
            payload.insert("op_id".into(), Value::String(op_id.clone()));
            for (column, value) in COLUMNS.iter().zip(&values) {
                payload.insert(
                    (*column).into(),
                    value.clone().map_or(Value::Null, Value::String),
                );
            }
            payload.insert(
                "timestamp".into(),
                Value::String(ingest::format_timestamp(micros)),
            );
            Fate::Delivered(Value::Object(payload))
        });
        let sql = format!(
            "INSERT INTO operation (op_id, {}, timestamp) VALUES ({}, {}, {stamp})",
            COLUMNS.join(", "),
            quoted(&op_id),
            exprs.join(", ")
        );
        (sql, fate)
    }

    /// The op_id as stored: at the limit, filled up to it.
    fn stored_op_id(&self) -> String {
        let mut op_id = self.op_id.clone();
        if let Odd::AtLimit("op_id", fill) = self.odd {
            while op_id.chars().count() < limit("op_id").unwrap() {
                op_id.push(fill);
            }
        }
        op_id
    }

    /// The timestamp a dead letter shows: none when the stored value cannot be read.
    fn dead_letter_timestamp(&self) -> Option<i64> {
        match &self.odd {
            Odd::NoTimeForm(_) | Odd::RealTime | Odd::BlobTime | Odd::NotUtf8("timestamp", _) => {
                None
            }
            Odd::DriverTime(t) => Some(t.micros),
            _ => Some(self.micros),
        }
    }
}

fn batch() -> impl Strategy<Value = Vec<SqlRow>> {
    prop::collection::vec(sql_row(), 1..=14).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (values, micros, odd))| SqlRow {
                op_id: format!("row-{i:02}"),
                values,
                micros,
                odd,
            })
            .collect()
    })
}

async fn tenant(runtime: &Runtime, s: &Scratch) -> Tenant {
    let db = Database::connect(&s.db_url()).await.unwrap();
    db.migrate().await.unwrap();
    let publisher = Publisher::connect(&s.ledger_url()).await.unwrap();
    Tenant::new(
        runtime.clone(),
        "test",
        db,
        publisher,
        TenantConfig::default(),
    )
    .await
    .unwrap()
}

/// Inserts `rows`, runs one scan tick and holds each row to its fate; returns each
/// row's kind of odd value and whether it was dead-lettered.
async fn check_batch(
    runtime: &Runtime,
    rows: &[SqlRow],
) -> Result<Vec<(&'static str, Fate)>, TestCaseError> {
    let s = Scratch::new();
    let mut t = tenant(runtime, &s).await;
    let pool = s.pool().await;
    let mut fates = BTreeMap::new();
    for row in rows {
        let (sql, fate) = row.insert();
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        fates.insert(row.stored_op_id(), (row, fate));
    }
    let now = 2_000_000_000_000_000; // 2033, after every row.
    let report = t.scan_tick(now).await.unwrap();

    let delivered: BTreeMap<&String, &Value> = fates
        .iter()
        .filter_map(|(id, (_, f))| match f {
            Fate::Delivered(p) => Some((id, p)),
            _ => None,
        })
        .collect();
    let unreadable = fates
        .values()
        .filter(|(_, f)| matches!(f, Fate::Unreadable(_)))
        .count();
    let dead = rows.len() - delivered.len();
    prop_assert_eq!(
        (
            report.fetched as usize,
            report.published as usize,
            report.dead_lettered as usize,
            report.unreadable as usize,
            report.retry_scheduled,
            report.unavailable,
        ),
        (rows.len(), delivered.len(), dead, unreadable, 0, 0),
        "{:?}",
        report
    );

    // Delivered in this one pass, each once, with exactly the columns stored.
    let payloads = ledger_payloads(&s.ledger_path());
    prop_assert_eq!(payloads.len(), delivered.len(), "{:?}", payloads);
    for payload in &payloads {
        let id = payload["op_id"].as_str().unwrap().to_string();
        let expected = delivered.get(&id);
        prop_assert!(expected.is_some(), "{} delivered but should not be", id);
        prop_assert_eq!(payload, *expected.unwrap(), "payload of {}", id);
    }
    let trustlogged: BTreeSet<String> =
        sqlx::query_scalar("SELECT op_id FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    prop_assert_eq!(
        trustlogged,
        delivered
            .keys()
            .map(|id| (*id).clone())
            .collect::<BTreeSet<_>>()
    );

    // Each other row dead-lettered alone, its error naming the column at fault.
    let db = Database::connect(&s.db_url()).await.unwrap();
    let parked = db.dead_letters(None, 100).await.unwrap();
    prop_assert_eq!(parked.len(), dead, "{:?}", parked);
    for letter in &parked {
        let Some((row, fate)) = fates.get(&letter.op_id) else {
            return Err(TestCaseError::fail(format!(
                "unknown dead letter {letter:?}"
            )));
        };
        let message = &letter.error_message;
        match fate {
            Fate::Delivered(_) => {
                return Err(TestCaseError::fail(format!(
                    "{} ({:?}) dead-lettered: {message}",
                    letter.op_id, row.odd
                )));
            }
            Fate::Unreadable(column) => prop_assert!(
                message.contains(&format!("unreadable column {column}: ")),
                "{} ({:?}): {}",
                letter.op_id,
                row.odd,
                message
            ),
            Fate::Refused(column) => prop_assert!(
                message.contains(&format!("cannot build envelope: {column}: ")),
                "{} ({:?}): {}",
                letter.op_id,
                row.odd,
                message
            ),
        }
        prop_assert_eq!(letter.retry_count, 0);
        prop_assert_eq!(
            letter.timestamp,
            row.dead_letter_timestamp(),
            "{:?}",
            row.odd
        );
    }
    prop_assert_eq!(
        t.scan_tick(now + 1).await.unwrap().fetched,
        0,
        "nothing is left behind"
    );
    Ok(fates
        .into_values()
        .map(|(row, fate)| (row.odd.kind(), fate))
        .collect())
}

#[test]
fn rows_written_by_plain_sql_with_odd_values_are_delivered_or_dead_lettered_naming_the_column() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    // Per kind of value: delivered, dead-lettered unreadable, dead-lettered over a limit.
    let seen = RefCell::new(BTreeMap::<&'static str, [u64; 3]>::new());
    runner
        .run(&batch(), |rows| {
            let fates = rt.block_on(check_batch(&runtime, &rows))?;
            let mut seen = seen.borrow_mut();
            for (kind, fate) in fates {
                let slot = match fate {
                    Fate::Delivered(_) => 0,
                    Fate::Unreadable(_) => 1,
                    Fate::Refused(_) => 2,
                };
                seen.entry(kind).or_default()[slot] += 1;
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    println!(
        "{:<26} {:>9} {:>11} {:>8}",
        "row", "delivered", "unreadable", "refused"
    );
    for (kind, [delivered, unreadable, refused]) in &seen {
        println!("{kind:<26} {delivered:>9} {unreadable:>11} {refused:>8}");
    }
    let total = |slot: usize| seen.values().map(|counts| counts[slot]).sum::<u64>();
    assert!(total(0) > 0 && total(1) > 0 && total(2) > 0, "{seen:?}");
    assert!(seen.get("good").is_some_and(|c| c[0] > 0), "{seen:?}");
    assert!(
        seen.get("driver text timestamp").is_some_and(|c| c[0] > 0),
        "{seen:?}"
    );
}

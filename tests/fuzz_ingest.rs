//! Fuzzing the JSON ingest (what `record` and `POST /v1/operations` parse) and the
//! envelope encoder, for `TRUSTLOG_FUZZ_SECONDS` (default 60) of generated input:
//! arbitrary bytes, arbitrary JSON, and operation-shaped objects with wrong types,
//! missing and unknown fields, odd Unicode, long and empty values.
//!
//! Whatever comes in: no panic; a refusal names a field; an accepted operation
//! encodes to canonical bytes that hash to its sha256, carry its op_id, come out the
//! same every time, and read back as the same operation.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use trustlog_guest::{envelope, validate};
use trustlog_host::ingest;

use ingest::STRING_FIELDS as FIELDS;

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

/// A value for one field: mostly plausible, sometimes hostile.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-zA-Z0-9._/-]{1,20}".prop_map(Value::String),
        1 => "\\PC{0,80}".prop_map(Value::String),
        1 => ".{60,70}".prop_map(Value::String),
        1 => Just(Value::String(String::new())),
        1 => Just(Value::String("x".repeat(600))),
        1 => Just(Value::String("a\u{0}b".into())),
        1 => prop_oneof![Just("192.0.2.1"), Just("2001:db8::1"), Just("999.1.1.1"), Just("::ffff:1.2.3.4")]
            .prop_map(|s| Value::String(s.into())),
        1 => prop_oneof![
            Just("2026-11-24T10:23:54.123456Z"),
            Just("2026-11-24T18:23:54+08:00"),
            Just("2026-11-24T10:23:54.1234567Z"),
            Just("0999-12-31T23:59:59Z"),
            Just("9999-12-31T23:59:59.999999Z"),
            Just("yesterday"),
        ]
        .prop_map(|s| Value::String(s.into())),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
        1 => any_json(),
    ]
}

/// An operation-shaped object: each known field present or not, and maybe a stranger.
fn operation_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(prop::option::weighted(0.9, field_value()), FIELDS.len()),
        prop::option::weighted(0.1, ("[a-z_]{1,12}", field_value())),
    )
        .prop_map(|(values, extra)| {
            let mut obj = Map::new();
            for (field, value) in FIELDS.iter().zip(values) {
                if let Some(v) = value {
                    obj.insert((*field).to_string(), v);
                }
            }
            if let Some((k, v)) = extra {
                obj.insert(k, v);
            }
            Value::Object(obj)
        })
}

/// One input line, as `record` reads it and the HTTP handler parses a body item.
fn check(line: &str) -> Result<(), TestCaseError> {
    let op = match ingest::parse_line(line) {
        Err(e) => {
            prop_assert!(
                !e.error.field.is_empty(),
                "unnamed refusal of {line:?}: {e}"
            );
            return Ok(());
        }
        Ok(op) => op,
    };
    if let Err(e) = validate::operation(&op) {
        prop_assert!(
            FIELDS.contains(&e.field.as_str()),
            "refusal names {:?}, not a field",
            e.field
        );
        return Ok(());
    }
    let env = match envelope::build(&op) {
        Ok(env) => env,
        Err(e) => {
            prop_assert!(FIELDS.contains(&e.field.as_str()), "{e}");
            return Ok(());
        }
    };
    prop_assert_eq!(&env.op_id, &op.op_id);
    prop_assert_eq!(envelope::sha256_hex(&env.payload), env.sha256.clone());
    let payload: Value = serde_json::from_slice(&env.payload).expect("canonical JSON parses");
    prop_assert_eq!(payload["op_id"].as_str(), Some(op.op_id.as_str()));
    prop_assert_eq!(
        envelope::build(&op).unwrap(),
        env,
        "the encoding is deterministic"
    );
    let again = ingest::parse_line(&ingest::to_json(&op).to_string()).expect("reads back");
    prop_assert_eq!(again, op);
    Ok(())
}

fn budget() -> Duration {
    let secs = std::env::var("TRUSTLOG_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[test]
fn the_ingest_and_the_envelope_encoder_survive_a_minute_of_generated_input() {
    let deadline = Instant::now() + budget();
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let cases = std::cell::Cell::new(0u64);
    let checked = |line: &str| {
        cases.set(cases.get() + 1);
        check(line)
    };
    let mut rounds = 0u64;
    while rounds == 0 || Instant::now() < deadline {
        // A runner counts its cases once: each round takes a fresh one, with a fresh seed.
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&operation_like(), |v| checked(&v.to_string()))
            .unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&any_json(), |v| checked(&v.to_string()))
            .unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
                // Bytes that are not UTF-8 never reach the parser: the handler answers 400.
                match std::str::from_utf8(&bytes) {
                    Ok(text) => checked(text),
                    Err(_) => Ok(()),
                }
            })
            .unwrap();
        let mut runner = TestRunner::new(config.clone());
        runner.run(&"\\PC{0,200}", |s| checked(&s)).unwrap();
        rounds += 1;
    }
    println!(
        "fuzzed {} inputs in {rounds} rounds of {:?}",
        cases.get(),
        budget()
    );
    assert!(cases.get() > 0);
}

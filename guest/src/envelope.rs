//! Envelopes: the canonical bytes of an operation and their SHA-256.
//!
//! Canonical form: a JSON object with every column of the operation, keys in
//! byte order, no whitespace, `null` for absent optional fields, strings
//! escaped as RFC 8785 (JCS) does, and the timestamp as RFC 3339 UTC with
//! exactly six fractional digits. Only strings appear, so the bytes equal
//! the JCS serialisation and any language can recompute them.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Envelope, FieldError, Micros, Operation};

/// Field order is the byte order of the keys; serde keeps declaration order.
#[derive(Serialize)]
struct Canonical<'a> {
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

/// RFC 3339 UTC with exactly six fractional digits, or an error naming `timestamp`.
pub fn format_timestamp(micros: Micros) -> Result<String, FieldError> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .ok_or_else(|| {
            FieldError::new(
                "timestamp",
                format!("{micros} µs is outside the representable range"),
            )
        })
}

/// The canonical bytes of `op`.
pub fn canonical_bytes(op: &Operation) -> Result<Vec<u8>, FieldError> {
    let timestamp = format_timestamp(op.timestamp)?;
    let canonical = Canonical {
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
    };
    // Sized for the usual case of no escapes, so the buffer is allocated once: keys and
    // punctuation take under 256 bytes.
    let fields = [
        op.client_ip.as_deref(),
        Some(op.do_prefix.as_str()),
        Some(op.do_repository.as_str()),
        Some(op.doid.as_str()),
        Some(op.op_actor.as_str()),
        Some(op.op_id.as_str()),
        Some(op.op_source.as_str()),
        Some(op.op_type.as_str()),
        Some(op.producer_id.as_str()),
        op.request_body_hash.as_deref(),
        op.response_body_hash.as_deref(),
        op.server_ip.as_deref(),
        Some(timestamp.as_str()),
    ];
    let mut out = Vec::with_capacity(256 + fields.iter().flatten().map(|f| f.len()).sum::<usize>());
    // Serialising borrowed strings into a Vec cannot fail.
    serde_json::to_writer(&mut out, &canonical).expect("canonical JSON of strings is infallible");
    Ok(out)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes).into())
}

/// SHA-256 of each payload, for a host that implements the `digest` import.
pub fn sha256_each(payloads: &[Vec<u8>]) -> Vec<[u8; 32]> {
    payloads.iter().map(|p| Sha256::digest(p).into()).collect()
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
    fn unrepresentable_timestamp_names_the_field() {
        assert_eq!(format_timestamp(i64::MAX).unwrap_err().field, "timestamp");
    }

    proptest! {
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

//! Parses operations from JSON: snake_case fields named like the table's
//! columns, `timestamp` as RFC 3339 with at most six fractional digits.

use serde::Deserialize;
use trustlog_guest::model::{FieldError, Micros, Operation, TEXT_FIELDS};

/// An operation as it arrives, before its timestamp is parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming {
    op_id: String,
    op_actor: String,
    doid: String,
    producer_id: String,
    #[serde(default)]
    request_body_hash: Option<String>,
    #[serde(default)]
    response_body_hash: Option<String>,
    op_source: String,
    op_type: String,
    do_prefix: String,
    do_repository: String,
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    server_ip: Option<String>,
    timestamp: String,
}

/// Why one input could not be turned into an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{error}", op_id.as_ref().map(|id| format!("op_id {id:?}: ")).unwrap_or_default())]
pub struct IngestError {
    /// The op_id, when the input got far enough to have one.
    pub op_id: Option<String>,
    /// The field that was missing or invalid, and what was wrong with it.
    pub error: FieldError,
}

/// Parses RFC 3339 with at most six fractional digits into microseconds.
pub fn parse_timestamp(s: &str) -> Result<Micros, FieldError> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        FieldError::new(
            "timestamp",
            format!("{s:?} is not an RFC 3339 timestamp: {e}"),
        )
    })?;
    if fraction_digits(s) > 6 {
        return Err(FieldError::new(
            "timestamp",
            format!("{s:?} has more than 6 fractional digits; microseconds are the finest unit"),
        ));
    }
    Ok(t.timestamp_micros())
}

fn fraction_digits(s: &str) -> usize {
    // RFC 3339's only '.' is the one before the fraction.
    s.split_once('.').map_or(0, |(_, rest)| {
        rest.bytes().take_while(u8::is_ascii_digit).count()
    })
}

/// Formats microseconds as RFC 3339 UTC with six fractional digits.
pub fn format_timestamp(micros: Micros) -> String {
    trustlog_guest::envelope::format_timestamp(micros).unwrap_or_else(|_| micros.to_string())
}

fn field_of(e: &serde_json::Error) -> String {
    // serde names the field for missing and unknown fields; for type errors only the position.
    let msg = e.to_string();
    for marker in ["missing field `", "unknown field `", "duplicate field `"] {
        // An unknown key is the sender's and may hold a backquote itself: it ends where
        // serde's list of the expected ones begins.
        if let Some(rest) = msg.split_once(marker).map(|(_, r)| r)
            && let Some((field, _)) = rest
                .split_once("`, expected")
                .or_else(|| rest.split_once('`'))
        {
            return field.to_string();
        }
    }
    String::new()
}

/// Turns one parsed JSON value into an operation, naming the field at fault.
pub fn from_value(value: serde_json::Value) -> Result<Operation, IngestError> {
    if !value.is_object() {
        return Err(IngestError {
            op_id: None,
            error: FieldError::new("operation", "expected a JSON object"),
        });
    }
    let op_id = value
        .get("op_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let incoming: Incoming = match serde_json::from_value(value.clone()) {
        Ok(i) => i,
        Err(e) => {
            let mut field = field_of(&e);
            if field.is_empty() {
                field = wrong_type_field(&value).unwrap_or_else(|| "operation".into());
            }
            return Err(IngestError {
                op_id,
                error: FieldError::new(field, e.to_string()),
            });
        }
    };
    let timestamp = parse_timestamp(&incoming.timestamp).map_err(|error| IngestError {
        op_id: op_id.clone(),
        error,
    })?;
    Ok(Operation {
        op_id: incoming.op_id,
        op_actor: incoming.op_actor,
        doid: incoming.doid,
        producer_id: incoming.producer_id,
        request_body_hash: incoming.request_body_hash,
        response_body_hash: incoming.response_body_hash,
        op_source: incoming.op_source,
        op_type: incoming.op_type,
        do_prefix: incoming.do_prefix,
        do_repository: incoming.do_repository,
        client_ip: incoming.client_ip,
        server_ip: incoming.server_ip,
        timestamp,
    })
}

/// Every field of an operation, as the JSON names it (all strings): the text
/// fields, then `timestamp`.
pub const STRING_FIELDS: [&str; 13] = {
    let mut all = ["timestamp"; 13];
    let mut i = 0;
    while i < TEXT_FIELDS.len() {
        all[i] = TEXT_FIELDS[i];
        i += 1;
    }
    all
};

const OPTIONAL_FIELDS: [&str; 4] = [
    "request_body_hash",
    "response_body_hash",
    "client_ip",
    "server_ip",
];

/// The first field whose JSON type is wrong (every field is a string; four may be null).
fn wrong_type_field(value: &serde_json::Value) -> Option<String> {
    let obj = value.as_object()?;
    STRING_FIELDS
        .iter()
        .find(|f| match obj.get(**f) {
            Some(serde_json::Value::String(_)) | None => false,
            Some(serde_json::Value::Null) => !OPTIONAL_FIELDS.contains(*f),
            Some(_) => true,
        })
        .map(|f| f.to_string())
}

/// Parses one JSON object into an operation.
pub fn parse_line(line: &str) -> Result<Operation, IngestError> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| IngestError {
        op_id: None,
        error: FieldError::new("operation", format!("not valid JSON: {e}")),
    })?;
    from_value(value)
}

/// Serialises an operation in the same shape `parse_line` reads.
pub fn to_json(op: &Operation) -> serde_json::Value {
    serde_json::json!({
        "op_id": op.op_id,
        "op_actor": op.op_actor,
        "doid": op.doid,
        "producer_id": op.producer_id,
        "request_body_hash": op.request_body_hash,
        "response_body_hash": op.response_body_hash,
        "op_source": op.op_source,
        "op_type": op.op_type,
        "do_prefix": op.do_prefix,
        "do_repository": op.do_repository,
        "client_ip": op.client_ip,
        "server_ip": op.server_ip,
        "timestamp": format_timestamp(op.timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str) -> String {
        format!(
            r#"{{"op_id":"a","op_actor":"u","doid":"d","producer_id":"p","op_source":"s","op_type":"t","do_prefix":"x","do_repository":"r","client_ip":null,"timestamp":"{ts}"}}"#
        )
    }

    #[test]
    fn microseconds_survive_parsing() {
        let op = parse_line(&line("2026-11-24T10:23:54.123456Z")).unwrap();
        assert_eq!(op.timestamp % 1_000_000, 123_456);
        assert_eq!(
            format_timestamp(op.timestamp),
            "2026-11-24T10:23:54.123456Z"
        );
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let a = parse_line(&line("2026-11-24T18:23:54.000001+08:00")).unwrap();
        let b = parse_line(&line("2026-11-24T10:23:54.000001Z")).unwrap();
        assert_eq!(a.timestamp, b.timestamp);
    }

    #[test]
    fn seven_fractional_digits_are_refused() {
        let e = parse_line(&line("2026-11-24T10:23:54.1234567Z")).unwrap_err();
        assert_eq!(e.error.field, "timestamp");
        assert_eq!(e.op_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = parse_line(r#"{"op_id":"a"}"#).unwrap_err();
        assert_eq!(e.error.field, "op_actor");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let bad = line("2026-11-24T10:23:54Z").replace(r#""doid":"d""#, r#""doid":5"#);
        assert_eq!(parse_line(&bad).unwrap_err().error.field, "doid");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let bad =
            line("2026-11-24T10:23:54Z").replace(r#""op_id":"a""#, r#""op_id":"a","opid":"b""#);
        assert_eq!(parse_line(&bad).unwrap_err().error.field, "opid");
    }

    #[test]
    fn null_and_empty_stay_distinct() {
        let op = parse_line(
            &line("2026-11-24T10:23:54Z")
                .replace(r#""client_ip":null"#, r#""client_ip":null,"server_ip":"""#),
        )
        .unwrap();
        assert_eq!((op.client_ip, op.server_ip), (None, Some(String::new())));
    }

    #[test]
    fn to_json_round_trips() {
        let op = parse_line(&line("2026-11-24T10:23:54.000042Z")).unwrap();
        assert_eq!(parse_line(&to_json(&op).to_string()).unwrap(), op);
    }
}

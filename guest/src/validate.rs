//! Input checks: every field of what `record` takes, and the bounds of what delivery
//! reads back from the database; each failure names its field.

use std::net::IpAddr;

use crate::model::{FieldError, Operation, OperationRef};

/// The longest value each column accepts, in characters (the schemas' VARCHAR sizes).
pub const LIMITS: &[(&str, usize)] = &[
    ("op_id", 64),
    ("op_actor", 128),
    ("doid", 512),
    ("producer_id", 128),
    ("request_body_hash", 128),
    ("response_body_hash", 128),
    ("op_source", 64),
    ("op_type", 64),
    ("do_prefix", 128),
    ("do_repository", 128),
    ("client_ip", 45),
    ("server_ip", 45),
];

/// Earliest timestamp every database stores: 1000-01-01T00:00:00Z (MySQL's DATETIME floor).
pub const MIN_TIMESTAMP: i64 = -30_610_224_000_000_000;
/// Latest timestamp every database stores: 9999-12-31T23:59:59.999999Z.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799_999_999;

fn limit(field: &str) -> usize {
    LIMITS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(usize::MAX, |(_, n)| *n)
}

fn check_len(field: &str, value: &str) -> Result<(), FieldError> {
    let max = limit(field);
    // No more bytes than the limit means no more characters: most values need no count.
    let len = if value.len() <= max {
        value.len()
    } else {
        value.chars().count()
    };
    if len > max {
        return Err(FieldError::new(
            field,
            format!("is {len} characters long; at most {max} are allowed"),
        ));
    }
    if value.contains('\0') {
        return Err(FieldError::new(field, "contains a NUL character"));
    }
    Ok(())
}

fn check_ip(field: &str, value: &Option<String>) -> Result<(), FieldError> {
    if let Some(ip) = value {
        check_len(field, ip)?;
        if ip.parse::<IpAddr>().is_err() {
            return Err(FieldError::new(
                field,
                format!("{ip:?} is not an IPv4 or IPv6 address"),
            ));
        }
    }
    Ok(())
}

/// Checks one operation; the first failing field wins.
pub fn operation(op: &Operation) -> Result<(), FieldError> {
    if op.op_id.trim().is_empty() {
        return Err(FieldError::new("op_id", "must not be empty"));
    }
    // MySQL's binary collations pad with spaces and sort control characters before the
    // end of a string; refusing both everywhere keeps one keyset order on every database.
    if op.op_id.ends_with(' ') || op.op_id.chars().any(|c| c.is_ascii_control()) {
        return Err(FieldError::new(
            "op_id",
            "must not end with a space or contain control characters",
        ));
    }
    for (field, value) in [
        ("op_id", &op.op_id),
        ("op_actor", &op.op_actor),
        ("doid", &op.doid),
        ("producer_id", &op.producer_id),
        ("op_source", &op.op_source),
        ("op_type", &op.op_type),
        ("do_prefix", &op.do_prefix),
        ("do_repository", &op.do_repository),
    ] {
        check_len(field, value)?;
    }
    for (field, value) in [
        ("request_body_hash", &op.request_body_hash),
        ("response_body_hash", &op.response_body_hash),
    ] {
        if let Some(v) = value {
            check_len(field, v)?;
        }
    }
    check_ip("client_ip", &op.client_ip)?;
    check_ip("server_ip", &op.server_ip)?;
    check_timestamp(op.timestamp)
}

fn check_timestamp(timestamp: i64) -> Result<(), FieldError> {
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&timestamp) {
        return Err(FieldError::new(
            "timestamp",
            "must lie between 1000-01-01 and 9999-12-31",
        ));
    }
    Ok(())
}

/// Checks a row read back for delivery against the columns' limits: plain SQL bypasses
/// `record`'s checks, and SQLite (or a table declared wider than `sql/`) stores what it
/// is given. Lengths, NUL characters and the timestamp's range; the first failing field
/// wins. Formats (an IP that does not parse) are `record`'s to refuse, not delivery's.
pub fn stored(op: OperationRef<'_>) -> Result<(), FieldError> {
    for (field, value) in [
        ("op_id", Some(op.op_id)),
        ("op_actor", Some(op.op_actor)),
        ("doid", Some(op.doid)),
        ("producer_id", Some(op.producer_id)),
        ("request_body_hash", op.request_body_hash),
        ("response_body_hash", op.response_body_hash),
        ("op_source", Some(op.op_source)),
        ("op_type", Some(op.op_type)),
        ("do_prefix", Some(op.do_prefix)),
        ("do_repository", Some(op.do_repository)),
        ("client_ip", op.client_ip),
        ("server_ip", op.server_ip),
    ] {
        if let Some(value) = value {
            check_len(field, value)?;
        }
    }
    check_timestamp(op.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_op() -> Operation {
        Operation {
            op_id: "a".repeat(64),
            op_actor: "张三".into(),
            doid: "10.1/x".into(),
            producer_id: "p".into(),
            request_body_hash: Some(String::new()),
            response_body_hash: None,
            op_source: "IRP".into(),
            op_type: "Create".into(),
            do_prefix: "10.1".into(),
            do_repository: "r".into(),
            client_ip: Some("2001:db8::1".into()),
            server_ip: Some("10.0.0.1".into()),
            timestamp: 0,
        }
    }

    #[test]
    fn a_64_character_op_id_is_accepted() {
        assert_eq!(operation(&ok_op()), Ok(()));
    }

    #[test]
    fn a_65_character_op_id_is_refused_naming_the_field() {
        let op = Operation {
            op_id: "a".repeat(65),
            ..ok_op()
        };
        let e = operation(&op).unwrap_err();
        assert_eq!(e.field, "op_id");
        assert!(e.message.contains("65"), "{e}");
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let op = Operation {
            op_id: "张".repeat(64),
            ..ok_op()
        };
        assert_eq!(operation(&op), Ok(()));
    }

    #[test]
    fn an_empty_op_id_is_refused() {
        assert_eq!(
            operation(&Operation {
                op_id: " ".into(),
                ..ok_op()
            })
            .unwrap_err()
            .field,
            "op_id"
        );
    }

    #[test]
    fn op_ids_with_a_trailing_space_or_control_characters_are_refused() {
        for bad in ["a ", "a\tb", "a\n"] {
            assert_eq!(
                operation(&Operation {
                    op_id: bad.into(),
                    ..ok_op()
                })
                .unwrap_err()
                .field,
                "op_id",
                "{bad:?}"
            );
        }
        assert_eq!(
            operation(&Operation {
                op_id: "a b".into(),
                ..ok_op()
            }),
            Ok(())
        );
    }

    #[test]
    fn a_stored_row_is_held_to_the_limits_but_not_to_the_formats() {
        let long = Operation {
            op_actor: "x".repeat(129),
            ..ok_op()
        };
        assert_eq!(stored(long.view()).unwrap_err().field, "op_actor");
        let nul = Operation {
            doid: "10.1/\0".into(),
            ..ok_op()
        };
        assert_eq!(stored(nul.view()).unwrap_err().field, "doid");
        let host_name = Operation {
            client_ip: Some("localhost".into()),
            ..ok_op()
        };
        assert_eq!(
            stored(host_name.view()),
            Ok(()),
            "formats are record's to refuse"
        );
        assert_eq!(stored(ok_op().view()), Ok(()));
    }

    #[test]
    fn an_invalid_ip_names_its_field() {
        let op = Operation {
            server_ip: Some("999.1.1.1".into()),
            ..ok_op()
        };
        assert_eq!(operation(&op).unwrap_err().field, "server_ip");
    }

    #[test]
    fn timestamps_outside_every_database_range_are_refused() {
        assert_eq!(
            operation(&Operation {
                timestamp: MAX_TIMESTAMP + 1,
                ..ok_op()
            })
            .unwrap_err()
            .field,
            "timestamp"
        );
        assert_eq!(
            operation(&Operation {
                timestamp: MIN_TIMESTAMP,
                ..ok_op()
            }),
            Ok(())
        );
    }
}

//! A tenant's `schema`: the `db` URL pointed at one schema (PostgreSQL) or database
//! (MariaDB) of a server tenants share.

use super::*;

/// `db` pointed at `schema`: see the module doc. `field` names the setting in errors.
pub fn with_schema(db: &str, schema: &str, field: String) -> Result<String, ConfigError> {
    check_schema(schema, field.clone())?;
    let scheme = db.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "postgres" | "postgresql" => postgres_search_path(db, schema, field),
        "mysql" | "mariadb" => Ok(mysql_database(db, schema)),
        "sqlite" => Err(ConfigError::SchemaNotApplicable {
            field,
            reason: "SQLite has no schemas; give the tenant its own database file instead".into(),
        }),
        _ => Err(ConfigError::SchemaNotApplicable {
            field,
            reason: format!(
                "a schema applies only to postgres:// and mysql:// (or mariadb://) URLs, not {}",
                redact(db)
            ),
        }),
    }
}

pub(super) fn check_schema(schema: &str, field: String) -> Result<(), ConfigError> {
    let ok = (1..=63).contains(&schema.len())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(ConfigError::BadSchema {
            field,
            schema: schema.to_string(),
        });
    }
    Ok(())
}

/// Appends `options=-c search_path=<schema>`, percent-encoded, to the query.
pub(super) fn postgres_search_path(
    db: &str,
    schema: &str,
    field: String,
) -> Result<String, ConfigError> {
    let (base, fragment) = match db.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (db, None),
    };
    let query = base.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|pair| pair.starts_with("options=")) {
        // Two `options` would leave which one wins to the driver.
        return Err(ConfigError::SchemaNotApplicable {
            field,
            reason:
                "the db URL already sets `options`; put search_path there instead of using schema"
                    .into(),
        });
    }
    let separator = match query {
        _ if !base.contains('?') => "?",
        "" => "",
        q if q.ends_with('&') => "",
        _ => "&",
    };
    let mut url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    Ok(url)
}

/// Replaces the URL's database (its path) with `database`, keeping the query.
pub(super) fn mysql_database(db: &str, database: &str) -> String {
    let (base, query) = match db.find(['?', '#']) {
        Some(i) => db.split_at(i),
        None => (db, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{authority}/{database}{query}")
}

//! Why a configuration was refused: every error names the field at fault.

use super::*;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The config file that could not be read.
        path: PathBuf,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// An error in the named file.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The config file the error is in.
        path: PathBuf,
        /// The error found in it; [`ConfigError::inner`] reaches it.
        error: Box<ConfigError>,
    },
    /// Not TOML, an unknown key or a value of the wrong type; toml's message gives the line and column.
    #[error("{0}")]
    Toml(String),
    /// A tenant given as JSON (the admin API) that is not valid, or has an unknown key.
    #[error("invalid tenant JSON: {0}")]
    Json(String),
    /// A tenant given as JSON whose `id` differs from the one in the URL.
    #[error("{field}: {id:?} differs from the tenant {expected:?} being defined")]
    IdMismatch {
        /// The key at fault: `id`.
        field: String,
        /// The `id` the JSON gives.
        id: String,
        /// The tenant id in the URL.
        expected: String,
    },
    /// An `env:NAME` value where the environment may not be read (the admin API).
    #[error("{field}: env: values are read only from the config file")]
    EnvNotAllowed {
        /// The key whose value is an `env:NAME`.
        field: String,
    },
    /// A required key is absent.
    #[error("{field} is required")]
    Missing {
        /// The absent key, e.g. `tenant[0].db`.
        field: String,
    },
    /// A value that must not be empty is.
    #[error("{field} must not be empty")]
    Empty {
        /// The key whose value is empty.
        field: String,
    },
    /// A tenant id outside 1-64 of `[a-z0-9_-]`.
    #[error("{field}: bad tenant id {id:?}; expected 1-64 characters of a-z, 0-9, _ and -")]
    BadId {
        /// The key at fault, e.g. `tenant[2].id`.
        field: String,
        /// The id as written.
        id: String,
    },
    /// Two tenants share an id.
    #[error("{field}: tenant {id:?} is already defined by tenant[{first}]")]
    DuplicateId {
        /// The key of the repeated id, e.g. `tenant[2].id`.
        field: String,
        /// The id defined twice.
        id: String,
        /// The index of the tenant that defined it first.
        first: usize,
    },
    /// A duration that humantime cannot parse, or a zero interval.
    #[error("{field}: bad duration {value:?}: {reason}")]
    BadDuration {
        /// The key at fault, e.g. `tenant[2].poll_interval`.
        field: String,
        /// The duration as written.
        value: String,
        /// Why it was refused: humantime's message, or that it is zero.
        reason: String,
    },
    /// A number outside its range.
    #[error("{field} = {value} is out of range; expected {min}..={max}")]
    OutOfRange {
        /// The key at fault, e.g. `tenant[2].batch_size`.
        field: String,
        /// The number given.
        value: i64,
        /// The smallest value accepted.
        min: i64,
        /// The largest value accepted.
        max: i64,
    },
    /// A memory size that cannot be parsed or is below the minimum.
    #[error("{field}: bad size {value}: {reason}")]
    BadSize {
        /// The key at fault, e.g. `defaults.limits.memory`.
        field: String,
        /// The size as written.
        value: String,
        /// Why it cannot be used: unparsable, or below the minimum.
        reason: String,
    },
    /// A strategy name that is not one of the three.
    #[error("{field}: {reason}")]
    BadStrategy {
        /// The key at fault, e.g. `tenant[2].strategy`.
        field: String,
        /// Why the name was refused.
        reason: String,
    },
    /// A schema name outside 1-63 of `[a-z0-9_]`.
    #[error("{field}: bad schema name {schema:?}; expected 1-63 characters of a-z, 0-9 and _")]
    BadSchema {
        /// The key at fault, e.g. `tenant[2].schema`.
        field: String,
        /// The schema name as written.
        schema: String,
    },
    /// A schema given for a database that cannot take one.
    #[error("{field}: {reason}")]
    SchemaNotApplicable {
        /// The `schema` key at fault, e.g. `tenant[2].schema`.
        field: String,
        /// Why that database cannot take a schema (SQLite has none).
        reason: String,
    },
    /// An `env:NAME` value whose variable is not set.
    #[error("{field}: environment variable {var:?} is not set")]
    MissingEnv {
        /// The key whose `env:NAME` value names the variable.
        field: String,
        /// The name of the unset environment variable.
        var: String,
    },
    /// The file defines no `[[tenant]]`.
    #[error("no tenants: the file needs at least one [[tenant]]")]
    NoTenants,
    /// More tenants than `max_tenants` allows.
    #[error("max_tenants = {max} is smaller than the {count} tenants defined")]
    TooManyTenants {
        /// The `max_tenants` setting.
        max: u32,
        /// How many tenants the file defines.
        count: usize,
    },
    /// A `[[credential]]` that cannot be used as written.
    #[error("{field}: {reason}")]
    BadCredential {
        /// The key at fault, e.g. `credential[1].secret`.
        field: String,
        /// Why the credential cannot be used as written.
        reason: String,
    },
}

impl ConfigError {
    /// The error itself, without the file it came from.
    pub fn inner(&self) -> &ConfigError {
        match self {
            ConfigError::InFile { error, .. } => error.inner(),
            other => other,
        }
    }

    /// The field at fault (`tenant[2].batch_size`), when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self.inner() {
            ConfigError::Missing { field }
            | ConfigError::Empty { field }
            | ConfigError::BadId { field, .. }
            | ConfigError::DuplicateId { field, .. }
            | ConfigError::BadDuration { field, .. }
            | ConfigError::OutOfRange { field, .. }
            | ConfigError::BadSize { field, .. }
            | ConfigError::BadStrategy { field, .. }
            | ConfigError::BadSchema { field, .. }
            | ConfigError::SchemaNotApplicable { field, .. }
            | ConfigError::MissingEnv { field, .. }
            | ConfigError::IdMismatch { field, .. }
            | ConfigError::BadCredential { field, .. }
            | ConfigError::EnvNotAllowed { field } => Some(field),
            _ => None,
        }
    }
}

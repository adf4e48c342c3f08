//! The host configuration file: `trustlog serve --config FILE`, a TOML file describing
//! many tenants.
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # optional; --listen overrides it
//! tls_cert = "tls/cert.pem"          # optional, with tls_key: serve HTTPS; relative to
//! tls_key = "tls/key.pem"            # this file's directory; re-read on SIGHUP
//! admin_token = "env:TRUSTLOG_ADMIN" # optional; the host-wide admin token
//! max_tenants = 1024                 # optional; what the instance pool is sized for
//! shared_pool_size = 10              # optional; connections per server tenants' schemas share
//!
//! [defaults]                         # optional; any per-tenant setting below
//! batch_size = 500
//! poll_interval = "5s"
//!
//! [[tenant]]
//! id = "acme"                        # required; 1-64 of [a-z0-9_-]
//! db = "postgres://127.0.0.1/app"    # required
//! schema = "acme"                    # optional; a schema of a shared database
//! publisher = "nats://127.0.0.1:4222?subject=trustlog.acme"  # required
//! admin_token = "acme-secret"        # optional; this tenant's admin API only
//! component = "guests/acme-v2.wasm"  # optional; relative to this file's directory
//! strategy = "db-and-trustlog"       # db-only | db-and-trustlog | trustlog-only
//! batch_size = 100                   # 1..=10000
//! cursor_key = "operation_scan"
//! poll_interval = "10s"              # durations are humantime strings
//! retry_interval = "10s"
//! sweep_interval = "60s"
//! watch_interval = "50ms"            # idle probe where the database cannot notify
//! catch_up_window = "5m"             # late commits looked for at each wake-up; "0s" off
//! lease_ttl = "5s"                   # another host takes over within this of a crash
//! backoff_base = "1m"
//! backoff_factor = 2
//! backoff_cap = "16m"
//! max_retries = 5
//! poll_only = false                  # true: no LISTEN/notify wake-ups, poll only
//! [tenant.limits]                    # also allowed as [defaults.limits]
//! memory = "64MiB"                   # B, KiB, MiB, GiB, or an integer of bytes; at least 1 MiB
//! cpu_per_call = "1s"               # CPU time one call may compute (epoch ticks of 1 ms)
//! table_elements = 10000
//! log_lines_per_sec = 100
//! restart_after = "1s"               # after a limit stopped it; doubles up to 5 min; "never"
//! request_body = "4MiB"              # the largest request body; 4 KiB to 1 GiB
//! request_operations = 10000         # the most operations in one POST
//!
//! [[credential]]                     # optional, any number; see http::access
//! name = "acme-app"                  # required, unique; shown in logs
//! role = "ingest"                    # ingest | read | admin
//! tenant = "acme"                    # optional; omitted: every tenant and the host's routes
//! secret = "env:ACME_INGEST"         # required; at least 16 characters
//! request_body = "1MiB"              # optional; the tighter of this and the tenant's applies
//! request_operations = 1000          # optional; likewise
//! ```
//!
//! A setting missing from a tenant comes from `[defaults]`, and one missing there from
//! the built-in defaults, which are the command line's. Unknown keys are errors, so a
//! typo cannot silently fall back to a default. Every error names the field at fault
//! (`tenant[2].batch_size`, `defaults.limits.memory`) and, from [`HostConfig::load`],
//! the file.
//!
//! # Secrets from the environment
//!
//! `admin_token`, `db` and `publisher` (which may carry passwords) can be written as
//! `"env:NAME"`: the value is then read from the environment variable `NAME` when the
//! file is loaded, so the file itself holds no secret and can be committed. An unset
//! variable is an error naming the field. [`HostConfig`]'s `Debug` never shows tokens
//! or URL passwords, since configurations get logged.
//!
//! # Schemas
//!
//! `schema` points a tenant at one schema of a database shared with other tenants. For
//! `postgres://` URLs it becomes the connection option `search_path`; for `mysql://`
//! and `mariadb://`, where a schema is a database, it replaces the URL's database. SQLite
//! has no schemas, so it is refused there. The host creates the schema when it is missing
//! (which needs the privilege to); an existing one is used as it is.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trustlog_guest::model::{Config, Strategy};

use crate::publisher::options::redact;
use crate::sandbox::limits::Limits;
use crate::scheduling::worker::Intervals;
use crate::surfaces::http::access::{Credential, Role, Scope};
use crate::surfaces::http::request_limits::{MAX_REQUEST_BYTES, MIN_REQUEST_BYTES, RequestLimits};

/// How many tenants the instance pool is sized for unless `max_tenants` says otherwise.
pub const DEFAULT_MAX_TENANTS: u32 = 1024;
/// The largest `batch_size` accepted.
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// The smallest `limits.memory` accepted: a component needs some room to start at all.
pub const MIN_MEMORY_BYTES: usize = 1 << 20;
/// The prefix of a value read from the environment (`"env:NAME"`).
pub const ENV_PREFIX: &str = "env:";

/// A host's configuration file.
#[derive(Clone, PartialEq)]
pub struct HostConfig {
    /// `listen = "127.0.0.1:8080"` (optional; the CLI's --listen overrides it).
    pub listen: Option<String>,
    /// `tls_cert` and `tls_key`: serve HTTPS with these PEM files.
    pub tls: Option<TlsFiles>,
    /// `admin_token`: the host-wide admin token (manages tenants; reaches every tenant's admin API).
    pub admin_token: Option<String>,
    /// `max_tenants` (default 1024): how many tenants the instance pool is sized for.
    pub max_tenants: u32,
    /// `shared_pool_size` (default 10): connections per database server that tenants
    /// with a `schema` there share; read at start.
    pub shared_pool_size: u32,
    /// The `[[tenant]]` entries, in file order.
    pub tenants: Vec<TenantSpec>,
    /// The `[[credential]]` entries, in file order, secrets hashed.
    pub credentials: Vec<Credential>,
}

/// The PEM files of the listener's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One `[[tenant]]`, with `[defaults]` and built-in defaults applied.
#[derive(Clone, PartialEq)]
pub struct TenantSpec {
    /// `id`: names the tenant in URLs and metric labels.
    pub id: String,
    /// The database URL, with `schema` applied.
    pub db: String,
    /// The publisher URL.
    pub publisher: String,
    /// Engine settings: cursor_key, batch_size, backoff, default_strategy.
    pub engine: Config,
    /// Poll, retry and sweep intervals.
    pub intervals: Intervals,
    /// What the tenant's sandbox may use.
    pub limits: Limits,
    /// The tenant's own admin token (reaches only this tenant's admin API).
    pub admin_token: Option<String>,
    /// Its own component file (absolute, or resolved relative to the config file's directory).
    pub component: Option<PathBuf>,
    /// true: no LISTEN/notify wake-ups, poll only.
    pub poll_only: bool,
    /// `schema`: the tenant's schema on a shared server, created at start when missing.
    pub schema: Option<SharedSchema>,
}

/// A tenant's schema of a database server shared with other tenants.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSchema {
    /// The `db` URL as given, before the schema was applied: where to create it.
    pub server: String,
    /// The schema (a database on MariaDB/MySQL).
    pub name: String,
}

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

impl HostConfig {
    /// Reads and validates the configuration file at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let in_file = |error| ConfigError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        };
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        // Absolute, so component paths stay right if the process changes directory.
        let absolute = std::path::absolute(path).map_err(read_error)?;
        let base_dir = absolute.parent().unwrap_or(Path::new("/"));
        HostConfig::parse(&text, base_dir).map_err(in_file)
    }

    /// Parses and validates a configuration; relative component paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<HostConfig, ConfigError> {
        parse_with_env(text, base_dir, &|name| std::env::var(name).ok())
    }
}

/// Looks up an environment variable; tests pass their own instead of mutating the process's.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A tenant given as the JSON object of a `[[tenant]]` entry (the admin API), with built-in defaults.
///
/// `id` may be left out of `value`; if present it must equal `id`. Relative component
/// paths resolve against `base_dir`. `env:` values are refused: the environment is the
/// host's, not the API caller's to read. Errors name fields without a `tenant[i]` prefix.
pub fn tenant_from_json(
    id: &str,
    value: serde_json::Value,
    base_dir: &Path,
) -> Result<TenantSpec, ConfigError> {
    let mut raw: RawTenant =
        serde_json::from_value(value).map_err(|e| ConfigError::Json(e.to_string()))?;
    match &raw.id {
        Some(given) if given != id => {
            return Err(ConfigError::IdMismatch {
                field: "id".into(),
                id: given.clone(),
                expected: id.to_string(),
            });
        }
        _ => raw.id = Some(id.to_string()),
    }
    tenant("", raw, &Settings::default(), base_dir, None)
}

fn parse_with_env(text: &str, base_dir: &Path, env: Env) -> Result<HostConfig, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
    let max_tenants = match raw.max_tenants {
        Some(v) => in_range(v, 1, i64::from(u32::MAX), "max_tenants".into())?,
        None => DEFAULT_MAX_TENANTS,
    };
    let shared_pool_size = match raw.shared_pool_size {
        Some(v) => in_range(v, 1, 10_000, "shared_pool_size".into())?,
        None => crate::db::shared_server::DEFAULT_POOL_SIZE,
    };
    let admin_token = optional_secret(raw.admin_token, "admin_token", Some(env))?;
    let defaults = apply(raw.defaults, &Settings::default(), "defaults")?;
    if raw.tenant.is_empty() {
        return Err(ConfigError::NoTenants);
    }
    let tenants = raw
        .tenant
        .into_iter()
        .enumerate()
        .map(|(index, t)| {
            tenant(
                &format!("tenant[{index}]"),
                t,
                &defaults,
                base_dir,
                Some(env),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_unique_ids(&tenants)?;
    if tenants.len() > max_tenants as usize {
        return Err(ConfigError::TooManyTenants {
            max: max_tenants,
            count: tenants.len(),
        });
    }
    let credentials = raw
        .credential
        .into_iter()
        .enumerate()
        .map(|(index, c)| credential(&format!("credential[{index}]"), c, &tenants, env))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique_credentials(&credentials)?;
    let tls = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: base_dir.join(non_empty(cert, "tls_cert".into())?),
            key: base_dir.join(non_empty(key, "tls_key".into())?),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                field: "tls_key".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                field: "tls_cert".into(),
            });
        }
    };
    Ok(HostConfig {
        listen: raw.listen,
        tls,
        admin_token,
        max_tenants,
        shared_pool_size,
        tenants,
        credentials,
    })
}

/// Shortest secret a `[[credential]]` may have: a guessable one would let anyone in.
pub const MIN_SECRET_CHARS: usize = 16;

fn credential(
    at: &str,
    raw: RawCredential,
    tenants: &[TenantSpec],
    env: Env,
) -> Result<Credential, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    let name = non_empty(
        raw.name.ok_or_else(|| ConfigError::Missing {
            field: field("name"),
        })?,
        field("name"),
    )?;
    let role_text = raw.role.ok_or_else(|| ConfigError::Missing {
        field: field("role"),
    })?;
    let role = Role::parse(&role_text).ok_or_else(|| ConfigError::BadCredential {
        field: field("role"),
        reason: format!("unknown role {role_text:?}; expected ingest, read or admin"),
    })?;
    let scope = match raw.tenant {
        None => Scope::Host,
        Some(id) if tenants.iter().any(|t| t.id == id) => Scope::Tenant(id),
        Some(id) => {
            return Err(ConfigError::BadCredential {
                field: field("tenant"),
                reason: format!("no [[tenant]] has the id {id:?}"),
            });
        }
    };
    let secret = secret(
        raw.secret.ok_or_else(|| ConfigError::Missing {
            field: field("secret"),
        })?,
        field("secret"),
        Some(env),
    )?;
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Err(ConfigError::BadCredential {
            field: field("secret"),
            reason: format!("shorter than {MIN_SECRET_CHARS} characters"),
        });
    }
    let mut limits = RequestLimits::default();
    apply_request_limits(
        raw.request_body.as_ref(),
        raw.request_operations,
        &mut limits,
        &field,
    )?;
    Ok(Credential::new(name, role, scope, &secret).with_limits(limits))
}

fn check_unique_credentials(credentials: &[Credential]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, c) in credentials.iter().enumerate() {
        if let Some(&first) = seen.get(c.name.as_str()) {
            return Err(ConfigError::BadCredential {
                field: format!("credential[{index}].name"),
                reason: format!("{:?} is already the name of credential[{first}]", c.name),
            });
        }
        seen.insert(&c.name, index);
    }
    Ok(())
}

fn check_unique_ids(tenants: &[TenantSpec]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, t) in tenants.iter().enumerate() {
        if let Some(&first) = seen.get(t.id.as_str()) {
            return Err(ConfigError::DuplicateId {
                field: format!("tenant[{index}].id"),
                id: t.id.clone(),
                first,
            });
        }
        seen.insert(&t.id, index);
    }
    Ok(())
}

/// A tenant; errors name fields under `scope` (`tenant[2]`, or "" for none).
fn tenant(
    scope: &str,
    raw: RawTenant,
    defaults: &Settings,
    base_dir: &Path,
    env: Option<Env>,
) -> Result<TenantSpec, ConfigError> {
    let field = |key: &str| join(scope, key);
    let (identity, settings) = raw.split();
    let id = required(identity.id, field("id"))?;
    check_id(&id, field("id"))?;
    let db = secret(required(identity.db, field("db"))?, field("db"), env)?;
    let (db, schema) = match identity.schema {
        Some(name) => (
            with_schema(&db, &name, field("schema"))?,
            Some(SharedSchema { server: db, name }),
        ),
        None => (db, None),
    };
    let publisher = required(identity.publisher, field("publisher"))?;
    let settings = apply(settings, defaults, scope)?;
    Ok(TenantSpec {
        id,
        db,
        publisher: secret(publisher, field("publisher"), env)?,
        engine: settings.engine,
        intervals: settings.intervals,
        limits: settings.limits,
        admin_token: optional_secret(identity.admin_token, &field("admin_token"), env)?,
        component: component_path(identity.component, base_dir, field("component"))?,
        poll_only: settings.poll_only,
        schema,
    })
}

/// `scope.key`, or `key` alone at the top.
fn join(scope: &str, key: &str) -> String {
    if scope.is_empty() {
        key.to_string()
    } else {
        format!("{scope}.{key}")
    }
}

fn required(value: Option<String>, field: String) -> Result<String, ConfigError> {
    value.ok_or(ConfigError::Missing { field })
}

fn non_empty(value: String, field: String) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::Empty { field });
    }
    Ok(value)
}

fn check_id(id: &str, field: String) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(ConfigError::BadId {
            field,
            id: id.to_string(),
        });
    }
    Ok(())
}

/// `value`, or the environment variable it names as `env:NAME` where `env` is given; never empty.
fn secret(value: String, field: String, env: Option<Env>) -> Result<String, ConfigError> {
    let value = match (value.strip_prefix(ENV_PREFIX), env) {
        (Some(var), Some(env)) => env(var).ok_or_else(|| ConfigError::MissingEnv {
            field: field.clone(),
            var: var.to_string(),
        })?,
        (Some(_), None) => return Err(ConfigError::EnvNotAllowed { field }),
        (None, _) => value,
    };
    // An empty token would let an empty bearer header in.
    non_empty(value, field)
}

fn optional_secret(
    value: Option<String>,
    field: &str,
    env: Option<Env>,
) -> Result<Option<String>, ConfigError> {
    value.map(|v| secret(v, field.to_string(), env)).transpose()
}

fn component_path(
    value: Option<String>,
    base_dir: &Path,
    field: String,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    // join keeps an absolute path as it is.
    Ok(Some(base_dir.join(non_empty(value, field)?)))
}

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

fn check_schema(schema: &str, field: String) -> Result<(), ConfigError> {
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
fn postgres_search_path(db: &str, schema: &str, field: String) -> Result<String, ConfigError> {
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
fn mysql_database(db: &str, database: &str) -> String {
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

/// The settings `[defaults]` and a `[[tenant]]` share, resolved.
#[derive(Debug, Clone)]
struct Settings {
    engine: Config,
    intervals: Intervals,
    limits: Limits,
    poll_only: bool,
}

impl Default for Settings {
    /// The command line's defaults, so a one-tenant file behaves like the flags.
    fn default() -> Self {
        Settings {
            engine: Config::default(),
            intervals: Intervals::default(),
            limits: Limits::default(),
            poll_only: false,
        }
    }
}

/// `base` with whatever `raw` sets; errors name fields under `scope`.
fn apply(raw: RawSettings, base: &Settings, scope: &str) -> Result<Settings, ConfigError> {
    let mut settings = base.clone();
    apply_engine(&raw, &mut settings.engine, scope)?;
    apply_intervals(&raw, &mut settings.intervals, scope)?;
    if let Some(limits) = &raw.limits {
        apply_limits(limits, &mut settings.limits, &join(scope, "limits"))?;
    }
    if let Some(poll_only) = raw.poll_only {
        settings.poll_only = poll_only;
    }
    Ok(settings)
}

fn apply_engine(raw: &RawSettings, engine: &mut Config, scope: &str) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    if let Some(v) = &raw.strategy {
        engine.default_strategy = parse_strategy(v, field("strategy"))?;
    }
    if let Some(v) = raw.batch_size {
        engine.batch_size = in_range(v, 1, i64::from(MAX_BATCH_SIZE), field("batch_size"))?;
    }
    if let Some(v) = &raw.cursor_key {
        engine.cursor_key = non_empty(v.clone(), field("cursor_key"))?;
    }
    if let Some(v) = &raw.catch_up_window {
        engine.catch_up_window_micros = micros(duration(v, field("catch_up_window"))?);
    }
    let backoff = &mut engine.backoff;
    if let Some(v) = &raw.backoff_base {
        backoff.base_micros = micros(duration(v, field("backoff_base"))?);
    }
    if let Some(v) = raw.backoff_factor {
        // A factor of 0 would make every retry after the first immediate.
        backoff.factor = in_range(v, 1, i64::from(u32::MAX), field("backoff_factor"))?;
    }
    if let Some(v) = &raw.backoff_cap {
        backoff.cap_micros = micros(duration(v, field("backoff_cap"))?);
    }
    if let Some(v) = raw.max_retries {
        backoff.max_retries = in_range(v, 0, i64::from(u32::MAX), field("max_retries"))?;
    }
    Ok(())
}

fn apply_intervals(
    raw: &RawSettings,
    intervals: &mut Intervals,
    scope: &str,
) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    if let Some(v) = &raw.poll_interval {
        intervals.poll = interval(v, field("poll_interval"))?;
    }
    if let Some(v) = &raw.retry_interval {
        intervals.retry = interval(v, field("retry_interval"))?;
    }
    if let Some(v) = &raw.sweep_interval {
        intervals.sweep = interval(v, field("sweep_interval"))?;
    }
    if let Some(v) = &raw.watch_interval {
        intervals.watch = interval(v, field("watch_interval"))?;
    }
    if let Some(v) = &raw.lease_ttl {
        intervals.lease_ttl = at_least(v, Duration::from_secs(1), field("lease_ttl"))?;
    }
    Ok(())
}

fn apply_limits(raw: &RawLimits, limits: &mut Limits, scope: &str) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    let max_usize = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
    if let Some(v) = &raw.memory {
        limits.memory_bytes = size(v, field("memory"), MIN_MEMORY_BYTES, usize::MAX)?;
    }
    if let Some(v) = &raw.cpu_per_call {
        // No time at all would trap every call at its first epoch check.
        limits.cpu_per_call = interval(v, field("cpu_per_call"))?;
    }
    if let Some(v) = raw.table_elements {
        limits.table_elements = in_range(v, 0, max_usize, field("table_elements"))?;
    }
    if let Some(v) = raw.log_lines_per_sec {
        limits.log_lines_per_sec = in_range(v, 0, i64::from(u32::MAX), field("log_lines_per_sec"))?;
    }
    if let Some(v) = &raw.restart_after {
        limits.restart_after = match v.as_str() {
            "never" => None,
            // A restart with no pause at all would spin a guest that fails at once.
            _ => Some(at_least(
                v,
                Duration::from_millis(10),
                field("restart_after"),
            )?),
        };
    }
    apply_request_limits(
        raw.request_body.as_ref(),
        raw.request_operations,
        &mut limits.requests,
        &field,
    )
}

/// `request_body` and `request_operations`, of a tenant's limits or a credential.
fn apply_request_limits(
    body: Option<&toml::Value>,
    operations: Option<i64>,
    limits: &mut RequestLimits,
    field: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if let Some(v) = body {
        limits.body_bytes = size(
            v,
            field("request_body"),
            MIN_REQUEST_BYTES,
            MAX_REQUEST_BYTES,
        )?;
    }
    if let Some(v) = operations {
        limits.operations = in_range(v, 1, 1_000_000, field("request_operations"))?;
    }
    Ok(())
}

fn parse_strategy(value: &str, field: String) -> Result<Strategy, ConfigError> {
    value.parse().map_err(
        |e: trustlog_guest::model::FieldError| ConfigError::BadStrategy {
            field,
            reason: e.message,
        },
    )
}

/// `value` as a `T`, if within `min..=max` (TOML integers are all i64).
fn in_range<T: TryFrom<i64>>(
    value: i64,
    min: i64,
    max: i64,
    field: String,
) -> Result<T, ConfigError> {
    let out_of_range = || ConfigError::OutOfRange {
        field: field.clone(),
        value,
        min,
        max,
    };
    if !(min..=max).contains(&value) {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

fn duration(value: &str, field: String) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::BadDuration {
        field,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// A duration a timer ticks at: zero would spin.
fn interval(value: &str, field: String) -> Result<Duration, ConfigError> {
    let d = duration(value, field.clone())?;
    if d.is_zero() {
        return Err(ConfigError::BadDuration {
            field,
            value: value.to_string(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

/// A duration of at least `min`.
fn at_least(value: &str, min: Duration, field: String) -> Result<Duration, ConfigError> {
    let d = duration(value, field.clone())?;
    if d < min {
        return Err(ConfigError::BadDuration {
            field,
            value: value.to_string(),
            reason: format!("must be at least {}", humantime::format_duration(min)),
        });
    }
    Ok(d)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A size: an integer of bytes or a string like `"64MiB"`, within `min..=max`.
fn size(value: &toml::Value, field: String, min: usize, max: usize) -> Result<usize, ConfigError> {
    let bad = |reason: String| ConfigError::BadSize {
        field: field.clone(),
        value: match value {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Integer(n) => n.to_string(),
            other => format!("(a {})", other.type_str()),
        },
        reason,
    };
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad("negative".into()))?,
        toml::Value::String(s) => parse_size(s).map_err(bad)?,
        _ => {
            return Err(bad(
                "expected a size like \"64MiB\" or a number of bytes".into()
            ));
        }
    };
    let bytes = usize::try_from(bytes).map_err(|_| bad("too large".into()))?;
    if bytes < min {
        return Err(bad(format!("below the minimum of {}", show_size(min))));
    }
    if bytes > max {
        return Err(bad(format!("above the maximum of {}", show_size(max))));
    }
    Ok(bytes)
}

/// `bytes` in the largest binary unit that divides it.
fn show_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// `"64MiB"`, `"512 KiB"`, `"1GiB"`, `"1048576B"` or `"1048576"`, in bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a number followed by B, KiB, MiB or GiB".to_string())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        // Decimal units are a common slip; say so rather than guess which was meant.
        "K" | "KB" | "kB" | "M" | "MB" | "G" | "GB" => {
            return Err(format!(
                "unit {:?} is ambiguous; use KiB, MiB or GiB",
                unit.trim()
            ));
        }
        other => return Err(format!("unknown unit {other:?}; use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "too large".to_string())
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    admin_token: Option<String>,
    max_tenants: Option<i64>,
    shared_pool_size: Option<i64>,
    #[serde(default)]
    defaults: RawSettings,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    credential: Vec<RawCredential>,
}

/// `[[credential]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: Option<String>,
    role: Option<String>,
    tenant: Option<String>,
    secret: Option<String>,
    request_body: Option<toml::Value>,
    request_operations: Option<i64>,
}

/// `[defaults]` as written; every key optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    strategy: Option<String>,
    batch_size: Option<i64>,
    cursor_key: Option<String>,
    poll_interval: Option<String>,
    retry_interval: Option<String>,
    sweep_interval: Option<String>,
    watch_interval: Option<String>,
    catch_up_window: Option<String>,
    lease_ttl: Option<String>,
    backoff_base: Option<String>,
    backoff_factor: Option<i64>,
    backoff_cap: Option<String>,
    max_retries: Option<i64>,
    poll_only: Option<bool>,
    limits: Option<RawLimits>,
}

/// `[*.limits]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<toml::Value>,
    cpu_per_call: Option<String>,
    table_elements: Option<i64>,
    log_lines_per_sec: Option<i64>,
    restart_after: Option<String>,
    request_body: Option<toml::Value>,
    request_operations: Option<i64>,
}

/// A `[[tenant]]` as written: its own keys, then `RawSettings`' keys repeated, because
/// serde cannot flatten a struct and still refuse unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: Option<String>,
    db: Option<String>,
    schema: Option<String>,
    publisher: Option<String>,
    admin_token: Option<String>,
    component: Option<String>,
    strategy: Option<String>,
    batch_size: Option<i64>,
    cursor_key: Option<String>,
    poll_interval: Option<String>,
    retry_interval: Option<String>,
    sweep_interval: Option<String>,
    watch_interval: Option<String>,
    catch_up_window: Option<String>,
    lease_ttl: Option<String>,
    backoff_base: Option<String>,
    backoff_factor: Option<i64>,
    backoff_cap: Option<String>,
    max_retries: Option<i64>,
    poll_only: Option<bool>,
    limits: Option<RawLimits>,
}

/// The keys only a tenant has.
struct RawIdentity {
    id: Option<String>,
    db: Option<String>,
    schema: Option<String>,
    publisher: Option<String>,
    admin_token: Option<String>,
    component: Option<String>,
}

impl RawTenant {
    fn split(self) -> (RawIdentity, RawSettings) {
        let identity = RawIdentity {
            id: self.id,
            db: self.db,
            schema: self.schema,
            publisher: self.publisher,
            admin_token: self.admin_token,
            component: self.component,
        };
        let settings = RawSettings {
            strategy: self.strategy,
            batch_size: self.batch_size,
            cursor_key: self.cursor_key,
            poll_interval: self.poll_interval,
            retry_interval: self.retry_interval,
            sweep_interval: self.sweep_interval,
            watch_interval: self.watch_interval,
            catch_up_window: self.catch_up_window,
            lease_ttl: self.lease_ttl,
            backoff_base: self.backoff_base,
            backoff_factor: self.backoff_factor,
            backoff_cap: self.backoff_cap,
            max_retries: self.max_retries,
            poll_only: self.poll_only,
            limits: self.limits,
        };
        (identity, settings)
    }
}

/// What `Debug` shows for a token: whether there is one, never its value.
fn hidden(token: &Option<String>) -> Option<&'static str> {
    token.as_ref().map(|_| "***")
}

impl fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("admin_token", &hidden(&self.admin_token))
            .field("max_tenants", &self.max_tenants)
            .field("shared_pool_size", &self.shared_pool_size)
            .field("tenants", &self.tenants)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Debug for TenantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSpec")
            .field("id", &self.id)
            .field("db", &redact(&self.db))
            .field("publisher", &redact(&self.publisher))
            .field("engine", &self.engine)
            .field("intervals", &self.intervals)
            .field("limits", &self.limits)
            .field("admin_token", &hidden(&self.admin_token))
            .field("component", &self.component)
            .field("poll_only", &self.poll_only)
            .field("schema", &self.schema.as_ref().map(|s| &s.name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustlog_guest::model::{Backoff, DEFAULT_CURSOR_KEY};

    const BASE_DIR: &str = "/etc/trustlog";

    /// A tenant with only the required keys.
    const ACME: &str = r#"
[[tenant]]
id = "acme"
db = "sqlite://acme.db"
publisher = "ledger://acme.ledger"
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST_TOKEN" => Some("host-from-env".into()),
            "ACME_TOKEN" => Some("acme-from-env".into()),
            "ACME_DB" => Some("postgres://u:pw@db/app".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        parse_with_env(text, Path::new(BASE_DIR), &env)
    }

    fn error(text: &str) -> ConfigError {
        match parse(text) {
            Ok(config) => panic!("accepted, expected an error: {config:?}"),
            Err(e) => e,
        }
    }

    fn only_tenant(text: &str) -> TenantSpec {
        let mut config = parse(text).unwrap();
        assert_eq!(config.tenants.len(), 1);
        config.tenants.remove(0)
    }

    /// A second tenant, to show errors name tenant[1].
    const BETA: &str = r#"
[[tenant]]
id = "beta"
db = "sqlite://beta.db"
publisher = "ledger://beta.ledger"
"#;

    /// ACME, then BETA with `extra` lines.
    fn beta_with(extra: &str) -> String {
        format!("{ACME}{BETA}{extra}\n")
    }

    fn builtin() -> Settings {
        Settings::default()
    }

    #[test]
    fn a_full_example_parses_to_the_expected_specs() {
        let config = parse(
            r#"
listen = "0.0.0.0:9000"
admin_token = "host-secret"
max_tenants = 10
shared_pool_size = 7

[defaults]
batch_size = 500
poll_interval = "5s"

[[tenant]]
id = "acme"
db = "postgres://127.0.0.1/app"
schema = "acme"
publisher = "nats://127.0.0.1:4222?subject=trustlog.acme"
strategy = "trustlog-only"
batch_size = 200
cursor_key = "acme_scan"
poll_interval = "2s"
retry_interval = "30s"
sweep_interval = "5m"
watch_interval = "20ms"
catch_up_window = "30s"
lease_ttl = "3s"
backoff_base = "10s"
backoff_factor = 3
backoff_cap = "1h"
max_retries = 7
poll_only = true
admin_token = "acme-secret"
component = "guests/acme-v2.wasm"
[tenant.limits]
memory = "32MiB"
cpu_per_call = "5ms"
table_elements = 2000
log_lines_per_sec = 10
restart_after = "250ms"

[[tenant]]
id = "beta_2"
db = "sqlite://beta.db"
publisher = "ledger://beta.ledger"
"#,
        )
        .unwrap();
        assert_eq!(config.listen.as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(config.admin_token.as_deref(), Some("host-secret"));
        assert_eq!(config.max_tenants, 10);
        assert_eq!(config.shared_pool_size, 7);
        let acme = TenantSpec {
            id: "acme".into(),
            db: "postgres://127.0.0.1/app?options=-c%20search_path%3Dacme".into(),
            publisher: "nats://127.0.0.1:4222?subject=trustlog.acme".into(),
            engine: Config {
                cursor_key: "acme_scan".into(),
                batch_size: 200,
                backoff: Backoff {
                    base_micros: 10_000_000,
                    factor: 3,
                    cap_micros: 3_600_000_000,
                    max_retries: 7,
                },
                default_strategy: Strategy::TrustlogOnly,
                catch_up_window_micros: 30_000_000,
            },
            intervals: Intervals {
                poll: Duration::from_secs(2),
                retry: Duration::from_secs(30),
                sweep: Duration::from_secs(300),
                watch: Duration::from_millis(20),
                lease_ttl: Duration::from_secs(3),
            },
            limits: Limits {
                memory_bytes: 32 << 20,
                cpu_per_call: Duration::from_millis(5),
                table_elements: 2000,
                log_lines_per_sec: 10,
                requests: RequestLimits::default(),
                restart_after: Some(Duration::from_millis(250)),
            },
            admin_token: Some("acme-secret".into()),
            component: Some(PathBuf::from("/etc/trustlog/guests/acme-v2.wasm")),
            poll_only: true,
            schema: Some(SharedSchema {
                server: "postgres://127.0.0.1/app".into(),
                name: "acme".into(),
            }),
        };
        let mut beta_engine = builtin().engine;
        beta_engine.batch_size = 500;
        let beta = TenantSpec {
            id: "beta_2".into(),
            db: "sqlite://beta.db".into(),
            publisher: "ledger://beta.ledger".into(),
            engine: beta_engine,
            intervals: Intervals {
                poll: Duration::from_secs(5),
                ..builtin().intervals
            },
            limits: Limits::default(),
            admin_token: None,
            component: None,
            poll_only: false,
            schema: None,
        };
        assert_eq!(config.tenants, vec![acme, beta]);
    }

    #[test]
    fn a_minimal_file_takes_the_command_lines_defaults() {
        let config = parse(ACME).unwrap();
        assert_eq!(config.listen, None);
        assert_eq!(config.admin_token, None);
        assert_eq!(config.max_tenants, DEFAULT_MAX_TENANTS);
        let acme = &config.tenants[0];
        assert_eq!(acme.engine.cursor_key, DEFAULT_CURSOR_KEY);
        assert_eq!(acme.engine.batch_size, 100);
        assert_eq!(acme.engine.default_strategy, Strategy::DbAndTrustlog);
        assert_eq!(
            acme.engine.backoff,
            Backoff {
                base_micros: 60_000_000,
                factor: 2,
                cap_micros: 16 * 60_000_000,
                max_retries: 5,
            }
        );
        assert_eq!(acme.intervals, Intervals::default());
        assert_eq!(acme.limits, Limits::default());
        assert!(!acme.poll_only);
    }

    #[test]
    fn defaults_apply_to_every_tenant_and_a_tenant_overrides_them_key_by_key() {
        let config = parse(&format!(
            r#"
[defaults]
strategy = "db-only"
batch_size = 500
retry_interval = "1m"
poll_only = true
[defaults.limits]
memory = "128MiB"
cpu_per_call = "42ms"
{}"#,
            beta_with(
                "batch_size = 7\npoll_only = false\n[tenant.limits]\ncpu_per_call = \"99ms\"\nrestart_after = \"never\""
            )
        ))
        .unwrap();
        let [acme, beta] = &config.tenants[..] else {
            panic!("two tenants expected: {config:?}")
        };
        // acme sets nothing: all from [defaults].
        assert_eq!(acme.engine.default_strategy, Strategy::DbOnly);
        assert_eq!(acme.engine.batch_size, 500);
        assert_eq!(acme.intervals.retry, Duration::from_secs(60));
        assert!(acme.poll_only);
        assert_eq!(acme.limits.memory_bytes, 128 << 20);
        assert_eq!(acme.limits.cpu_per_call, Duration::from_millis(42));
        // beta overrides some keys and inherits the rest, limits included.
        assert_eq!(beta.engine.default_strategy, Strategy::DbOnly);
        assert_eq!(beta.engine.batch_size, 7);
        assert!(!beta.poll_only);
        assert_eq!(beta.limits.memory_bytes, 128 << 20);
        assert_eq!(beta.limits.cpu_per_call, Duration::from_millis(99));
        assert_eq!(beta.limits.table_elements, Limits::default().table_elements);
        assert_eq!(acme.limits.restart_after, Limits::default().restart_after);
        assert_eq!(beta.limits.restart_after, None, "never: stays stopped");
    }

    #[test]
    fn each_invalid_value_is_refused_naming_its_field() {
        type Check = fn(&ConfigError) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            ("batch_size = 0", "tenant[1].batch_size", |e| {
                matches!(e, ConfigError::OutOfRange { value: 0, .. })
            }),
            ("batch_size = 10001", "tenant[1].batch_size", |e| {
                matches!(e, ConfigError::OutOfRange { max: 10_000, .. })
            }),
            ("batch_size = -1", "tenant[1].batch_size", |e| {
                matches!(e, ConfigError::OutOfRange { .. })
            }),
            ("backoff_factor = 0", "tenant[1].backoff_factor", |e| {
                matches!(e, ConfigError::OutOfRange { .. })
            }),
            ("max_retries = -3", "tenant[1].max_retries", |e| {
                matches!(e, ConfigError::OutOfRange { .. })
            }),
            (
                "poll_interval = \"10 parsecs\"",
                "tenant[1].poll_interval",
                |e| matches!(e, ConfigError::BadDuration { .. }),
            ),
            ("sweep_interval = \"0s\"", "tenant[1].sweep_interval", |e| {
                matches!(e, ConfigError::BadDuration { .. })
            }),
            ("backoff_cap = \"soon\"", "tenant[1].backoff_cap", |e| {
                matches!(e, ConfigError::BadDuration { .. })
            }),
            (
                "watch_interval = \"0ms\"",
                "tenant[1].watch_interval",
                |e| matches!(e, ConfigError::BadDuration { .. }),
            ),
            ("lease_ttl = \"500ms\"", "tenant[1].lease_ttl", |e| {
                matches!(e, ConfigError::BadDuration { .. })
            }),
            (
                "catch_up_window = \"a while\"",
                "tenant[1].catch_up_window",
                |e| matches!(e, ConfigError::BadDuration { .. }),
            ),
            ("strategy = \"db-or-not\"", "tenant[1].strategy", |e| {
                matches!(e, ConfigError::BadStrategy { .. })
            }),
            ("cursor_key = \"\"", "tenant[1].cursor_key", |e| {
                matches!(e, ConfigError::Empty { .. })
            }),
            ("admin_token = \"\"", "tenant[1].admin_token", |e| {
                matches!(e, ConfigError::Empty { .. })
            }),
            (
                "[tenant.limits]\nmemory = \"512KiB\"",
                "tenant[1].limits.memory",
                |e| matches!(e, ConfigError::BadSize { .. }),
            ),
            (
                "[tenant.limits]\nmemory = \"lots\"",
                "tenant[1].limits.memory",
                |e| matches!(e, ConfigError::BadSize { .. }),
            ),
            (
                "[tenant.limits]\nmemory = \"64MB\"",
                "tenant[1].limits.memory",
                |e| matches!(e, ConfigError::BadSize { .. }),
            ),
            (
                "[tenant.limits]\nmemory = true",
                "tenant[1].limits.memory",
                |e| matches!(e, ConfigError::BadSize { .. }),
            ),
            (
                "[tenant.limits]\ncpu_per_call = \"0s\"",
                "tenant[1].limits.cpu_per_call",
                |e| matches!(e, ConfigError::BadDuration { .. }),
            ),
            (
                "[tenant.limits]\nrestart_after = \"0s\"",
                "tenant[1].limits.restart_after",
                |e| matches!(e, ConfigError::BadDuration { .. }),
            ),
        ];
        for (line, field, is_expected_kind) in cases {
            let e = error(&beta_with(line));
            assert_eq!(e.field(), Some(*field), "{line}: {e}");
            assert!(is_expected_kind(&e), "{line}: wrong kind {e:?}");
            assert!(e.to_string().starts_with(field), "{line}: {e}");
        }
    }

    #[test]
    fn an_invalid_default_is_named_under_defaults() {
        let e = error(&format!("[defaults]\nbatch_size = 0\n{ACME}"));
        assert_eq!(e.field(), Some("defaults.batch_size"));
        let e = error(&format!(
            "[defaults]\n[defaults.limits]\nmemory = 1024\n{ACME}"
        ));
        assert_eq!(e.field(), Some("defaults.limits.memory"));
        assert!(e.to_string().contains("1MiB"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line_and_column() {
        let cases = [
            (beta_with("batchsize = 5"), "batchsize"),
            (beta_with("[tenant.limits]\nmemroy = \"2MiB\""), "memroy"),
            (format!("listne = \"x\"\n{ACME}"), "listne"),
            // Identity keys belong to a tenant, not to [defaults].
            (format!("[defaults]\nid = \"x\"\n{ACME}"), "id"),
        ];
        for (text, key) in cases {
            let line = 1 + text
                .lines()
                .position(|l| l.starts_with(&format!("{key} =")))
                .unwrap();
            let e = error(&text);
            let message = e.to_string();
            assert!(matches!(e, ConfigError::Toml(_)), "{key}: {e:?}");
            assert!(
                message.contains(&format!("unknown field `{key}`")),
                "{message}"
            );
            assert!(message.contains(&format!("line {line},")), "{message}");
        }
    }

    #[test]
    fn toml_syntax_and_type_errors_keep_tomls_line_and_column() {
        let e = error(&format!("{ACME}batch_size = = 3\n"));
        assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
        assert!(e.to_string().contains("line 6, column"), "{e}");
        let e = error(&format!("{ACME}batch_size = \"many\"\n"));
        assert!(e.to_string().contains("line 6, column"), "{e}");
    }

    #[test]
    fn a_missing_required_key_is_named() {
        for key in ["id", "db", "publisher"] {
            let text = format!("{ACME}{}", BETA.replace(&format!("\n{key} = "), "\n# "));
            let e = error(&text);
            assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
            assert_eq!(e.field(), Some(format!("tenant[1].{key}").as_str()));
        }
    }

    #[test]
    fn a_tenant_id_must_fit_urls_and_metric_labels() {
        for bad in ["", "Acme", "a.b", "a b", "ünï", &"x".repeat(65)] {
            let e = error(&ACME.replace("\"acme\"", &format!("{bad:?}")));
            assert!(matches!(e, ConfigError::BadId { .. }), "{bad:?}: {e:?}");
            assert_eq!(e.field(), Some("tenant[0].id"));
        }
        only_tenant(&ACME.replace("\"acme\"", &format!("{:?}", "a-b_9".repeat(12))));
    }

    #[test]
    fn duplicate_tenant_ids_are_refused_naming_both() {
        let e = error(&format!("{ACME}{ACME}"));
        assert!(
            matches!(&e, ConfigError::DuplicateId { id, first: 0, .. } if id == "acme"),
            "{e:?}"
        );
        assert_eq!(e.field(), Some("tenant[1].id"));
        assert!(e.to_string().contains("tenant[0]"), "{e}");
    }

    #[test]
    fn a_file_without_tenants_is_refused() {
        let e = error("listen = \"127.0.0.1:8080\"\n");
        assert!(matches!(e, ConfigError::NoTenants), "{e:?}");
    }

    #[test]
    fn max_tenants_must_cover_the_tenants_defined() {
        let e = error(&format!("max_tenants = 1\n{}", beta_with("")));
        assert!(
            matches!(e, ConfigError::TooManyTenants { max: 1, count: 2 }),
            "{e:?}"
        );
        let e = error(&format!("max_tenants = 0\n{ACME}"));
        assert_eq!(e.field(), Some("max_tenants"));
        assert_eq!(
            parse(&format!("max_tenants = 1\n{ACME}"))
                .unwrap()
                .max_tenants,
            1
        );
    }

    fn with_db_and_schema(db: &str, schema: &str) -> String {
        ACME.replace("sqlite://acme.db", db)
            .replace("\npublisher", &format!("\nschema = {schema:?}\npublisher"))
    }

    #[test]
    fn a_schema_becomes_the_postgres_search_path() {
        let cases = [
            (
                "postgres://u@h/app",
                "postgres://u@h/app?options=-c%20search_path%3Dacme",
            ),
            (
                "postgresql://u@h/app?sslmode=require",
                "postgresql://u@h/app?sslmode=require&options=-c%20search_path%3Dacme",
            ),
            (
                "postgres://u@h/app?",
                "postgres://u@h/app?options=-c%20search_path%3Dacme",
            ),
        ];
        for (db, expected) in cases {
            assert_eq!(only_tenant(&with_db_and_schema(db, "acme")).db, expected);
        }
        let e = error(&with_db_and_schema(
            "postgres://h/app?options=-c%20statement_timeout%3D5s",
            "acme",
        ));
        assert!(
            matches!(e, ConfigError::SchemaNotApplicable { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_schema_replaces_the_mysql_or_mariadb_database() {
        let cases = [
            ("mariadb://u:p@h:3306/app", "mariadb://u:p@h:3306/acme"),
            (
                "mysql://u@h/app?ssl-mode=DISABLED",
                "mysql://u@h/acme?ssl-mode=DISABLED",
            ),
            ("mysql://h:3306", "mysql://h:3306/acme"),
        ];
        for (db, expected) in cases {
            assert_eq!(only_tenant(&with_db_and_schema(db, "acme")).db, expected);
        }
    }

    #[test]
    fn a_schema_is_refused_for_sqlite_and_must_be_a_plain_name() {
        let e = error(&with_db_and_schema("sqlite://acme.db", "acme"));
        assert!(
            matches!(e, ConfigError::SchemaNotApplicable { .. }),
            "{e:?}"
        );
        assert_eq!(e.field(), Some("tenant[0].schema"));
        for bad in ["", "Acme", "acme;drop", "a-b", &"s".repeat(64)] {
            let e = error(&with_db_and_schema("postgres://h/app", bad));
            assert!(matches!(e, ConfigError::BadSchema { .. }), "{bad:?}: {e:?}");
            assert_eq!(e.field(), Some("tenant[0].schema"));
        }
    }

    #[test]
    fn a_relative_component_resolves_against_the_config_directory() {
        let with = |path: &str| {
            only_tenant(&format!("{ACME}component = {path:?}\n"))
                .component
                .unwrap()
        };
        assert_eq!(
            with("guests/acme.wasm"),
            Path::new("/etc/trustlog/guests/acme.wasm")
        );
        assert_eq!(with("/opt/acme.wasm"), Path::new("/opt/acme.wasm"));
        assert_eq!(only_tenant(ACME).component, None);
    }

    #[test]
    fn env_values_are_read_from_the_environment() {
        let config = parse(&format!(
            "admin_token = \"env:HOST_TOKEN\"\n{}admin_token = \"env:ACME_TOKEN\"\n",
            ACME.replace("sqlite://acme.db", "env:ACME_DB")
        ))
        .unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("host-from-env"));
        let acme = &config.tenants[0];
        assert_eq!(acme.admin_token.as_deref(), Some("acme-from-env"));
        assert_eq!(acme.db, "postgres://u:pw@db/app");
    }

    #[test]
    fn an_unset_env_variable_is_refused_naming_the_field() {
        let e = error(&format!("{ACME}admin_token = \"env:NOT_SET\"\n"));
        assert!(
            matches!(&e, ConfigError::MissingEnv { var, .. } if var == "NOT_SET"),
            "{e:?}"
        );
        assert_eq!(e.field(), Some("tenant[0].admin_token"));
        let e = error(&format!("admin_token = \"env:NOT_SET\"\n{ACME}"));
        assert_eq!(e.field(), Some("admin_token"));
    }

    #[test]
    fn debug_hides_tokens_and_url_passwords() {
        let config = parse(&format!(
            "admin_token = \"host-secret\"\n{}admin_token = \"acme-secret\"\n",
            ACME.replace("sqlite://acme.db", "postgres://u:db-secret@h/app")
        ))
        .unwrap();
        let shown = format!("{config:?}");
        for secret in ["host-secret", "acme-secret", "db-secret"] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert!(shown.contains(r#"admin_token: Some("***")"#), "{shown}");
        assert!(shown.contains("acme"), "{shown}");
    }

    #[test]
    fn memory_sizes_take_binary_units_or_bytes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1048576B"), Ok(1 << 20));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "64MB",
            "64mib",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        let acme = only_tenant(&format!("{ACME}[tenant.limits]\nmemory = 2097152\n"));
        assert_eq!(acme.limits.memory_bytes, 2 << 20);
    }

    #[test]
    fn a_tenant_from_json_takes_the_same_keys_with_built_in_defaults() {
        let value = serde_json::json!({
            "db": "postgres://h/app",
            "schema": "acme",
            "publisher": "ledger://acme.ledger",
            "batch_size": 50,
            "component": "acme.wasm",
            "limits": {"memory": "8MiB"},
        });
        let acme = tenant_from_json("acme", value, Path::new(BASE_DIR)).unwrap();
        assert_eq!(acme.id, "acme");
        assert_eq!(acme.db, "postgres://h/app?options=-c%20search_path%3Dacme");
        assert_eq!(acme.engine.batch_size, 50);
        assert_eq!(acme.intervals, builtin().intervals);
        assert_eq!(acme.limits.memory_bytes, 8 << 20);
        assert_eq!(
            acme.component.as_deref(),
            Some(Path::new("/etc/trustlog/acme.wasm"))
        );
    }

    #[test]
    fn a_tenant_from_json_is_validated_like_the_file() {
        let base = || serde_json::json!({"db": "sqlite://a.db", "publisher": "ledger://a.ledger"});
        let with = |key: &str, value: serde_json::Value| {
            let mut body = base();
            body[key] = value;
            tenant_from_json("acme", body, Path::new(BASE_DIR)).unwrap_err()
        };
        assert_eq!(with("batch_size", 0.into()).field(), Some("batch_size"));
        let e = with("id", "other".into());
        assert!(matches!(e, ConfigError::IdMismatch { .. }), "{e:?}");
        // The environment is the host's: an API caller may not read it.
        let e = with("admin_token", "env:HOME".into());
        assert!(matches!(e, ConfigError::EnvNotAllowed { .. }), "{e:?}");
        assert_eq!(e.field(), Some("admin_token"));
        let e = with("batchsize", 5.into());
        assert!(
            matches!(&e, ConfigError::Json(m) if m.contains("batchsize")),
            "{e:?}"
        );
        let e = tenant_from_json("Bad!", base(), Path::new(BASE_DIR)).unwrap_err();
        assert!(matches!(e, ConfigError::BadId { .. }), "{e:?}");
        let e = tenant_from_json(
            "acme",
            serde_json::json!({"db": "sqlite://a.db"}),
            Path::new(BASE_DIR),
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("publisher"));
    }

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.toml");
        std::fs::write(&path, format!("{ACME}component = \"acme.wasm\"\n")).unwrap();
        let config = HostConfig::load(&path).unwrap();
        assert_eq!(
            config.tenants[0].component.as_deref(),
            Some(dir.path().join("acme.wasm").as_path())
        );

        std::fs::write(&path, format!("{ACME}batch_size = 0\n")).unwrap();
        let e = HostConfig::load(&path).unwrap_err();
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("tenant[0].batch_size"), "{message}");
        assert_eq!(e.field(), Some("tenant[0].batch_size"));
        assert!(matches!(e.inner(), ConfigError::OutOfRange { .. }));

        let missing = dir.path().join("absent.toml");
        let e = HostConfig::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("absent.toml"), "{e}");
    }

    #[test]
    fn credentials_name_a_role_a_tenant_or_the_host_and_a_secret_kept_hashed() {
        let config = parse(&format!(
            "{ACME}[[credential]]\nname = \"acme-app\"\nrole = \"ingest\"\ntenant = \"acme\"\n\
             secret = \"0123456789abcdef\"\n\
             [[credential]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"env:ACME_DB\"\n"
        ))
        .unwrap();
        let [app, ops] = &config.credentials[..] else {
            panic!("{:?}", config.credentials)
        };
        assert_eq!(
            (app.role, &app.scope),
            (Role::Ingest, &Scope::Tenant("acme".into()))
        );
        assert_eq!((ops.role, &ops.scope), (Role::Admin, &Scope::Host));
        let shown = format!("{config:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn a_credential_with_a_bad_role_tenant_secret_or_name_is_refused_naming_the_field() {
        let with = |body: &str| error(&format!("{ACME}[[credential]]\n{body}\n"));
        let good_secret = "secret = \"0123456789abcdef\"";
        for (body, field) in [
            (
                format!("name = \"x\"\nrole = \"root\"\n{good_secret}"),
                "credential[0].role",
            ),
            (
                format!("name = \"x\"\nrole = \"read\"\ntenant = \"globex\"\n{good_secret}"),
                "credential[0].tenant",
            ),
            (
                "name = \"x\"\nrole = \"read\"\nsecret = \"short\"".to_string(),
                "credential[0].secret",
            ),
            (
                format!("role = \"read\"\n{good_secret}"),
                "credential[0].name",
            ),
            (
                "name = \"x\"\nrole = \"read\"\nsecret = \"env:NOT_SET\"".to_string(),
                "credential[0].secret",
            ),
        ] {
            assert_eq!(with(&body).field(), Some(field), "{body}");
        }
        let twice = error(&format!(
            "{ACME}[[credential]]\nname = \"x\"\nrole = \"read\"\n{good_secret}\n\
             [[credential]]\nname = \"x\"\nrole = \"admin\"\nsecret = \"fedcba9876543210\"\n"
        ));
        assert_eq!(twice.field(), Some("credential[1].name"));
    }

    #[test]
    fn request_limits_come_from_the_tenants_limits_and_the_credential_bounded_both_ways() {
        let config = parse(&format!(
            "[defaults.limits]\nrequest_operations = 500\n{ACME}[tenant.limits]\n\
             request_body = \"64KiB\"\n\
             [[credential]]\nname = \"app\"\nrole = \"ingest\"\nsecret = \"0123456789abcdef\"\n\
             request_operations = 20\nrequest_body = 8192\n"
        ))
        .unwrap();
        assert_eq!(
            config.tenants[0].limits.requests,
            RequestLimits {
                body_bytes: 64 << 10,
                operations: 500
            }
        );
        assert_eq!(
            config.credentials[0].limits,
            RequestLimits {
                body_bytes: 8192,
                operations: 20
            }
        );
        for (limits, field) in [
            ("request_body = \"1KiB\"", "tenant[0].limits.request_body"),
            ("request_body = \"2GiB\"", "tenant[0].limits.request_body"),
            (
                "request_operations = 0",
                "tenant[0].limits.request_operations",
            ),
        ] {
            let e = error(&format!("{ACME}[tenant.limits]\n{limits}\n"));
            assert_eq!(e.field(), Some(field), "{limits}: {e}");
        }
        let e = error(&format!(
            "{ACME}[[credential]]\nname = \"x\"\nrole = \"read\"\nsecret = \"0123456789abcdef\"\n\
             request_operations = -1\n"
        ));
        assert_eq!(e.field(), Some("credential[0].request_operations"));
    }

    #[test]
    fn tls_takes_a_certificate_and_a_key_together_relative_to_the_file() {
        let config = parse(&format!(
            "tls_cert = \"tls/cert.pem\"\ntls_key = \"/keys/key.pem\"\n{ACME}"
        ))
        .unwrap();
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                cert: Path::new(BASE_DIR).join("tls/cert.pem"),
                key: PathBuf::from("/keys/key.pem"),
            })
        );
        assert_eq!(
            error(&format!("tls_cert = \"c.pem\"\n{ACME}")).field(),
            Some("tls_key")
        );
        assert_eq!(
            error(&format!("tls_key = \"k.pem\"\n{ACME}")).field(),
            Some("tls_cert")
        );
        assert_eq!(parse(ACME).unwrap().tls, None);
    }
}

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
//! pipeline_depth = 3                 # scan batches out at once, 1..=8; 1 is one at a time
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
use trustlog_guest::model::{Config, MAX_PIPELINE_DEPTH, Strategy};

use crate::publisher::options::redact;
use crate::sandbox::limits::Limits;
use crate::scheduling::worker::Intervals;
use crate::surfaces::http::access::{Credential, Role, Scope};
use crate::surfaces::http::request_limits::{MAX_REQUEST_BYTES, MIN_REQUEST_BYTES, RequestLimits};

mod error;
mod raw;
mod schema;
mod settings;

pub use error::ConfigError;
use raw::*;
pub use schema::with_schema;
use settings::*;

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
mod tests;

//! The file as TOML gives it, before validation: unknown keys are refused here.

use super::*;

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) listen: Option<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) admin_token: Option<String>,
    pub(super) max_tenants: Option<i64>,
    pub(super) shared_pool_size: Option<i64>,
    #[serde(default)]
    pub(super) defaults: RawSettings,
    #[serde(default)]
    pub(super) tenant: Vec<RawTenant>,
    #[serde(default)]
    pub(super) credential: Vec<RawCredential>,
}

/// `[[credential]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) name: Option<String>,
    pub(super) role: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) request_body: Option<toml::Value>,
    pub(super) request_operations: Option<i64>,
}

/// `[defaults]` as written; every key optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) strategy: Option<String>,
    pub(super) batch_size: Option<i64>,
    pub(super) pipeline_depth: Option<i64>,
    pub(super) cursor_key: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) retry_interval: Option<String>,
    pub(super) sweep_interval: Option<String>,
    pub(super) watch_interval: Option<String>,
    pub(super) catch_up_window: Option<String>,
    pub(super) lease_ttl: Option<String>,
    pub(super) backoff_base: Option<String>,
    pub(super) backoff_factor: Option<i64>,
    pub(super) backoff_cap: Option<String>,
    pub(super) max_retries: Option<i64>,
    pub(super) poll_only: Option<bool>,
    pub(super) limits: Option<RawLimits>,
}

/// `[*.limits]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) memory: Option<toml::Value>,
    pub(super) cpu_per_call: Option<String>,
    pub(super) table_elements: Option<i64>,
    pub(super) log_lines_per_sec: Option<i64>,
    pub(super) restart_after: Option<String>,
    pub(super) request_body: Option<toml::Value>,
    pub(super) request_operations: Option<i64>,
}

/// A `[[tenant]]` as written: its own keys, then `RawSettings`' keys repeated, because
/// serde cannot flatten a struct and still refuse unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) id: Option<String>,
    pub(super) db: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) publisher: Option<String>,
    pub(super) admin_token: Option<String>,
    pub(super) component: Option<String>,
    pub(super) strategy: Option<String>,
    pub(super) batch_size: Option<i64>,
    pub(super) pipeline_depth: Option<i64>,
    pub(super) cursor_key: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) retry_interval: Option<String>,
    pub(super) sweep_interval: Option<String>,
    pub(super) watch_interval: Option<String>,
    pub(super) catch_up_window: Option<String>,
    pub(super) lease_ttl: Option<String>,
    pub(super) backoff_base: Option<String>,
    pub(super) backoff_factor: Option<i64>,
    pub(super) backoff_cap: Option<String>,
    pub(super) max_retries: Option<i64>,
    pub(super) poll_only: Option<bool>,
    pub(super) limits: Option<RawLimits>,
}

/// The keys only a tenant has.
pub(super) struct RawIdentity {
    pub(super) id: Option<String>,
    pub(super) db: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) publisher: Option<String>,
    pub(super) admin_token: Option<String>,
    pub(super) component: Option<String>,
}

impl RawTenant {
    pub(super) fn split(self) -> (RawIdentity, RawSettings) {
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
            pipeline_depth: self.pipeline_depth,
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

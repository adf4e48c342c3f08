//! The tenant admin API, for admin credentials of the whole host: list the tenants,
//! add or replace one, remove one, and reload the config file.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::Role;
use super::audit::Audit;
use super::{ApiError, AppState, Caller, ReloadError, json_body};
use crate::config::{self, TenantSpec};
use crate::publisher::options::redact;
use crate::scheduling::tenants::{Running, Starting};

fn describe(tenant: &Running) -> Value {
    let state = tenant.state();
    describe_spec(&tenant.spec, state.name(), state.reason())
}

/// A tenant still waiting for its database, with the attempts made so far.
fn describe_starting(tenant: &Starting) -> Value {
    let (error, attempts) = tenant.last_error();
    let mut one = describe_spec(&tenant.spec, "starting", Some(&error));
    one["attempts"] = json!(attempts);
    one
}

/// Its id, state, the reason for it, and its (redacted) endpoints.
fn describe_spec(spec: &TenantSpec, state: &str, reason: Option<&str>) -> Value {
    json!({
        "id": spec.id,
        "state": state,
        "reason": reason,
        "db": redact(&spec.db),
        "publisher": redact(&spec.publisher),
        "component": spec.component.as_ref().map(|p| p.display().to_string()),
    })
}

/// `GET /v1/admin/tenants`: every tenant, its state and (redacted) endpoints.
pub async fn list(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(refused) = caller.require(Role::Admin, None) {
        return refused.into_response();
    }
    let tenants: Vec<Value> = state
        .tenants
        .list()
        .await
        .iter()
        .map(|t| describe(t))
        .chain(
            state
                .tenants
                .all_starting()
                .iter()
                .map(|t| describe_starting(t)),
        )
        .collect();
    Json(json!({"tenants": tenants})).into_response()
}

/// `PUT /v1/admin/tenants/{tenant}` with the keys of a `[[tenant]]` entry as JSON:
/// adds the tenant, or replaces it (its worker stops between batches first).
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let mut audit = Audit::begin(&state, &caller, &id, "put_tenant");
    let mut status = StatusCode::OK;
    let result = async {
        audit.gate(caller.require(Role::Admin, None))?;
        let value = json_body(&body)?;
        let base_dir = state
            .config_path
            .as_deref()
            .and_then(std::path::Path::parent)
            .unwrap_or(std::path::Path::new("."));
        let spec = config::tenant_from_json(&id, value, base_dir).map_err(|e| {
            let field = e.field().unwrap_or("body").to_string();
            ApiError::field(StatusCode::BAD_REQUEST, &field, e.to_string())
        })?;
        // The URLs may hold passwords: the audit names them redacted, as the answer does.
        audit.args(json!({"db": redact(&spec.db), "publisher": redact(&spec.publisher)}));
        if state.tenants.get(&id).await.is_none() {
            status = StatusCode::CREATED;
        }
        let running = state
            .tenants
            .replace(spec)
            .await
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        state.refresh_credentials().await;
        Ok(describe(&running))
    }
    .await;
    audit.finish_as(status, result)
}

/// `DELETE /v1/admin/tenants/{tenant}`: stops the tenant between batches and removes it.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    let mut audit = Audit::begin(&state, &caller, &id, "delete_tenant");
    let result = async {
        audit.gate(caller.require(Role::Admin, None))?;
        if !state.tenants.remove(&id).await {
            return Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "tenant",
                format!("no tenant {id:?} on this host"),
            ));
        }
        state.refresh_credentials().await;
        Ok(json!({"removed": id}))
    }
    .await;
    audit.finish(result)
}

/// `POST /v1/admin/reload`: re-reads the config file, as SIGHUP does.
pub async fn reload(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    let mut audit = Audit::begin(&state, &caller, "", "reload");
    let result = async {
        audit.gate(caller.require(Role::Admin, None))?;
        match state.reload().await {
            Ok(report) => Ok(json!(report)),
            Err(e @ ReloadError::NoConfig) => {
                Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
            }
            Err(ReloadError::Config(e)) => {
                let field = e.field().unwrap_or("config").to_string();
                Err(ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &field,
                    e.to_string(),
                ))
            }
        }
    }
    .await;
    audit.finish(result)
}

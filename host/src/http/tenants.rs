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
use super::{ApiError, AppState, Caller, ReloadError, json_body};
use crate::config;
use crate::publisher::options::redact;
use crate::tenants::Running;

fn describe(tenant: &Running) -> Value {
    let state = tenant.state();
    json!({
        "id": tenant.id(),
        "state": state.name(),
        "reason": state.reason(),
        "db": redact(&tenant.spec.db),
        "publisher": redact(&tenant.spec.publisher),
        "component": tenant.spec.component.as_ref().map(|p| p.display().to_string()),
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
    if let Err(refused) = caller.require(Role::Admin, None) {
        return refused.into_response();
    }
    let value = match json_body(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let base_dir = state
        .config_path
        .as_deref()
        .and_then(std::path::Path::parent)
        .unwrap_or(std::path::Path::new("."));
    let spec = match config::tenant_from_json(&id, value, base_dir) {
        Ok(spec) => spec,
        Err(e) => {
            let field = e.field().unwrap_or("body").to_string();
            return ApiError::field(StatusCode::BAD_REQUEST, &field, e.to_string()).into_response();
        }
    };
    let existed = state.tenants.get(&id).await.is_some();
    match state.tenants.replace(spec).await {
        Ok(running) => {
            state.refresh_credentials().await;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(describe(&running))).into_response()
        }
        Err(e) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}

/// `DELETE /v1/admin/tenants/{tenant}`: stops the tenant between batches and removes it.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    caller: Caller,
) -> Response {
    if let Err(refused) = caller.require(Role::Admin, None) {
        return refused.into_response();
    }
    match state.tenants.remove(&id).await {
        true => {
            state.refresh_credentials().await;
            Json(json!({"removed": id})).into_response()
        }
        false => ApiError::field(
            StatusCode::NOT_FOUND,
            "tenant",
            format!("no tenant {id:?} on this host"),
        )
        .into_response(),
    }
}

/// `POST /v1/admin/reload`: re-reads the config file, as SIGHUP does.
pub async fn reload(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(refused) = caller.require(Role::Admin, None) {
        return refused.into_response();
    }
    match state.reload().await {
        Ok(report) => Json(json!(report)).into_response(),
        Err(e @ ReloadError::NoConfig) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(ReloadError::Config(e)) => {
            let field = e.field().unwrap_or("config").to_string();
            ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, &field, e.to_string()).into_response()
        }
    }
}

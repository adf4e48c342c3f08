//! What operators and orchestrators poll: status, metrics, liveness, readiness.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use trustlog_guest::model::StatusReport;

use super::access::Role;
use super::{ApiError, AppState, Caller, DEFAULT_TENANT, Scoped};
use crate::scheduling::tenants::{RunState, Running, Starting};
use crate::scheduling::worker::Delivery;
use crate::surfaces::report::status_json;

/// How long readiness waits for the database and the publisher.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn snapshot(state: &AppState, tenant: &Running) -> Result<StatusReport, ApiError> {
    let now = state.clock.now();
    let report = tenant
        .with_front(async |t| t.status(now).await)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tenant.metrics.status(&report);
    Ok(report)
}

/// One tenant's figures (those of `status --json`) with where its worker stands.
async fn tenant_status(state: &AppState, tenant: &Running) -> Result<Value, ApiError> {
    let report = snapshot(state, tenant).await?;
    let lease = tenant
        .db
        .read_lease(&tenant.spec.engine.cursor_key)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut body = status_json(&report, lease.as_ref());
    let (name, reason) = worker_state(tenant);
    body["state"] = json!(name);
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    Ok(body)
}

/// What this host's worker of `tenant` does: `running`, `paused` (by an operator),
/// `standby` (another host delivers), `outage` (paused until the publisher or the
/// database answers), `drained` or `stopped`; with the reason where there is one.
fn worker_state(tenant: &Running) -> (&'static str, Option<String>) {
    let run = tenant.state();
    if run != RunState::Running {
        return (run.name(), run.reason().map(str::to_string));
    }
    if let Some(pause) = tenant.worker.paused() {
        return (
            "paused",
            Some(format!(
                "paused by {} at {}",
                pause.by,
                crate::surfaces::ingest::format_timestamp(pause.since)
            )),
        );
    }
    match tenant.delivery() {
        Delivery::Active => ("running", None),
        d @ Delivery::Standby { .. } => ("standby", Some(d.describe())),
        d @ Delivery::Outage { .. } => ("outage", Some(d.describe())),
    }
}

/// A tenant waiting for its database, as status and readyz show it.
fn starting_json(starting: &Starting) -> Value {
    let (error, attempts) = starting.last_error();
    json!({"state": "starting", "reason": error, "attempts": attempts})
}

/// `GET /v1/tenants/{tenant}/status`: the tenant's figures and state.
pub async fn status(
    State(state): State<Arc<AppState>>,
    Scoped(tenant, caller): Scoped,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    Ok(Json(tenant_status(&state, &tenant).await?))
}

/// `GET /v1/status`: every tenant the caller may read under `tenants`; the `default`
/// tenant's figures also at the top level, as a single-tenant host has always answered.
pub async fn status_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    require_read(&caller)?;
    let mut body = json!({});
    let mut tenants = serde_json::Map::new();
    for tenant in state.tenants.list().await {
        if !caller.sees(tenant.id()) {
            continue;
        }
        let one = match tenant_status(&state, &tenant).await {
            Ok(v) => v,
            // One tenant's database being down must not hide the others.
            Err(e) => json!({"state": worker_state(&tenant).0, "error": e.message}),
        };
        if tenant.id() == DEFAULT_TENANT
            && let (Value::Object(top), Value::Object(fields)) = (&mut body, &one)
        {
            top.extend(fields.clone());
        }
        tenants.insert(tenant.id().to_string(), one);
    }
    for starting in state.tenants.all_starting() {
        if caller.sees(starting.id()) {
            tenants.insert(starting.id().to_string(), starting_json(&starting));
        }
    }
    body["tenants"] = Value::Object(tenants);
    Ok(Json(body))
}

/// A read credential of some tenant (what it sees is filtered by tenant).
fn require_read(caller: &Caller) -> Result<(), ApiError> {
    match &caller.0 {
        Some(c) if !c.role.allows(Role::Read) => caller.require(Role::Read, None),
        _ => Ok(()),
    }
}

/// `GET /metrics`: Prometheus text format, the gauges read from the databases now;
/// a credential of one tenant gets only that tenant's series.
pub async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Response {
    if let Err(refused) = require_read(&caller) {
        return refused.into_response();
    }
    // A database that does not answer leaves the gauges at their last value; the
    // counters are still worth scraping, and /readyz says what is wrong.
    for tenant in state.tenants.list().await {
        if !caller.sees(tenant.id()) {
            continue;
        }
        if let Err(e) = snapshot(&state, &tenant).await {
            tracing::warn!(tenant = tenant.id(), error = %e.message, "metrics: status snapshot failed");
        }
    }
    match state.tenants.metrics().render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            if caller.host_wide() {
                text
            } else {
                series_of(&text, |id| caller.sees(id))
            },
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 only when every running tenant's database and publisher
/// answer; else 503 with what failed, by tenant (the `default` tenant's also at the
/// top level). A tenant stopped by its limits is reported, not waited for.
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let show = |r: &Result<(), String>| r.clone().err().unwrap_or_else(|| "ok".into());
    let mut ready = true;
    let mut body = json!({});
    let mut tenants = serde_json::Map::new();
    let all = state.tenants.list().await;
    // All tenants at once: tenants that do not answer cost one probe timeout, not one each.
    let probes = futures_util::future::join_all(all.iter().map(|tenant| async move {
        tokio::join!(
            probe(async { tenant.db.ping().await.map_err(|e| e.to_string()) }),
            probe(tenant.publisher.ready()),
        )
    }))
    .await;
    for (tenant, (db, publisher)) in all.iter().zip(probes) {
        let run = tenant.state();
        let (state, reason) = worker_state(tenant);
        // A host standing by does not publish: the trust log's lock (a ledger's) is the
        // delivering host's to hold.
        let publisher = if state == "standby" {
            Ok(())
        } else {
            publisher
        };
        if run == RunState::Running {
            ready &= db.is_ok() && publisher.is_ok() && state != "outage";
        }
        let mut one = json!({"state": state, "database": show(&db), "publisher": show(&publisher)});
        if let Some(reason) = reason {
            one["reason"] = json!(reason);
        }
        if tenant.id() == DEFAULT_TENANT {
            body["database"] = one["database"].clone();
            body["publisher"] = one["publisher"].clone();
        }
        tenants.insert(tenant.id().to_string(), one);
    }
    for starting in state.tenants.all_starting() {
        ready = false;
        tenants.insert(starting.id().to_string(), starting_json(&starting));
    }
    body["ready"] = json!(ready);
    body["tenants"] = Value::Object(tenants);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn probe(check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The lines of a Prometheus text exposition a tenant-scoped caller may see: comments,
/// and samples whose `tenant` label names a tenant `sees` allows. Samples of the whole
/// host (no `tenant` label) are left out.
fn series_of(text: &str, sees: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let keep = line.starts_with('#')
            || line
                .split_once("tenant=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .is_some_and(|(id, _)| sees(id));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::series_of;

    #[test]
    fn a_tenant_sees_its_own_series_and_no_others() {
        let text = "# HELP x x\n# TYPE x counter\nx{tenant=\"acme\"} 1\nx{tenant=\"globex\"} 2\nhost_up 1\n";
        assert_eq!(
            series_of(text, |id| id == "acme"),
            "# HELP x x\n# TYPE x counter\nx{tenant=\"acme\"} 1\n"
        );
    }
}

//! The embedded ledger as a transparency log over HTTP: its latest signed checkpoint,
//! its tiles at their C2SP tlog-tiles paths (so `…/v1/ledger/` is a tlog-tiles base URL
//! for any client that sends the bearer), and an operation's inclusion proof. Who may:
//! a `read` credential of the tenant or of the host; nothing here writes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use trustlog_ledger::{InclusionProof, ProofError, TileError};

use super::access::Role;
use super::lookup::{blocking, ledger_path};
use super::{ApiError, Scoped};
use crate::scheduling::tenants::Running;

/// The ledger file of a reachable tenant whose publisher is the embedded ledger.
fn ledger_of(tenant: &Running) -> Result<std::path::PathBuf, ApiError> {
    ledger_path(tenant).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "tenant {:?} does not publish to the embedded ledger: its evidence is held by its broker",
                tenant.id()
            ),
        )
    })
}

fn proof_error(e: ProofError) -> ApiError {
    let status = match &e {
        ProofError::NotFound { .. } => {
            return ApiError::field(StatusCode::NOT_FOUND, "op_id", e.to_string());
        }
        ProofError::Unsigned { .. } => StatusCode::NOT_FOUND,
        ProofError::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // The ledger's files disagree with its signed checkpoint: an operator must look.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

/// `GET /v1/[tenants/{tenant}/]ledger/checkpoint`: the latest signed checkpoint, as the
/// C2SP signed note the ledger wrote. Never cached: it moves with every batch.
pub async fn checkpoint(Scoped(tenant, caller): Scoped) -> Result<Response, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let path = ledger_of(&tenant)?;
    let text = blocking(move || trustlog_ledger::latest_checkpoint(&path))
        .await?
        .map_err(proof_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}

/// `GET /v1/[tenants/{tenant}/]ledger/tile/{*tile}`: one tile, hash or entry bundle.
/// Its bytes are fixed by its path, so a client may keep it for good.
pub async fn tile(
    Scoped(tenant, caller): Scoped,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let path = ledger_of(&tenant)?;
    let tile = format!("tile/{}", params.get("tile").map_or("", String::as_str));
    let data = blocking(move || trustlog_ledger::read_tile(&path, &tile))
        .await?
        .map_err(|e| match e {
            TileError::NotATile { .. } => {
                ApiError::field(StatusCode::BAD_REQUEST, "tile", e.to_string())
            }
            TileError::Missing { .. } => {
                ApiError::field(StatusCode::NOT_FOUND, "tile", e.to_string())
            }
            TileError::Io { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            TileError::Damaged { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        })?;
    let mut response = data.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // `private`: the tile is behind a credential, so no shared cache may keep it.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(response)
}

/// `GET /v1/[tenants/{tenant}/]operations/{op_id}/proof`: the operation's inclusion
/// proof against the latest checkpoint, as `trustlog ledger prove` prints it; `trustlog
/// ledger check-proof` checks it with the verifier key alone.
pub async fn proof(
    Scoped(tenant, caller): Scoped,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<InclusionProof>, ApiError> {
    caller.require(Role::Read, Some(tenant.id()))?;
    let path = ledger_of(&tenant)?;
    let op_id = params.get("op_id").cloned().unwrap_or_default();
    let proof = blocking(move || trustlog_ledger::prove_inclusion(&path, &op_id))
        .await?
        .map_err(proof_error)?;
    Ok(Json(proof))
}

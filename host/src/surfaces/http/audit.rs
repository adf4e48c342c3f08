//! The audit trail of admin actions: every change asked of the admin API (replay,
//! purge, pause, resume, tenant changes, reload) is one structured log event, target
//! `trustlog::audit`, naming the credential, the tenant, the action, its arguments and
//! its outcome, and one count in `trustlog_admin_actions_total`. Refusals are audited
//! too, with the name of the credential that was refused; a request with no valid
//! credential names none and is counted in `trustlog_http_unauthenticated_total`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller};

/// How an admin action ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// The credential may not do it there (403, or 404 for a tenant it does not reach).
    Refused,
    /// The request was malformed or named something that is not there.
    Invalid,
    /// The host could not do it (the database did not answer…).
    Failed,
}

impl Outcome {
    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }

    fn of(error: &ApiError, refused: bool) -> Outcome {
        if refused {
            Outcome::Refused
        } else if error.status.is_server_error() {
            Outcome::Failed
        } else {
            Outcome::Invalid
        }
    }
}

/// One admin action being carried out; [`Audit::finish`] records it.
pub struct Audit<'a> {
    state: &'a AppState,
    credential: String,
    /// The tenant acted on; "" for the host's own actions (reload).
    tenant: String,
    action: &'static str,
    args: Value,
    /// The access check failed.
    refused: bool,
}

impl<'a> Audit<'a> {
    /// Starts the record of `action` on `tenant` by `caller`.
    pub fn begin(
        state: &'a AppState,
        caller: &Caller,
        tenant: &str,
        action: &'static str,
    ) -> Audit<'a> {
        Audit {
            state,
            credential: caller.name().to_string(),
            tenant: tenant.to_string(),
            action,
            args: json!({}),
            refused: false,
        }
    }

    /// Passes the access check's verdict through, noting a refusal.
    pub fn gate<T>(&mut self, check: Result<T, ApiError>) -> Result<T, ApiError> {
        self.refused |= check.is_err();
        check
    }

    /// Records the action's arguments once they are parsed (never a secret).
    pub fn args(&mut self, args: Value) {
        self.args = args;
    }

    /// Records how the action ended, and answers with it (200 when done).
    pub fn finish(self, result: Result<Value, ApiError>) -> Response {
        self.finish_as(StatusCode::OK, result)
    }

    /// Records how the action ended, and answers with it (`status` when done).
    pub fn finish_as(self, status: StatusCode, result: Result<Value, ApiError>) -> Response {
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of(e, self.refused),
        };
        let detail = match &result {
            Ok(body) => body.to_string(),
            Err(e) => e.message.clone(),
        };
        self.state
            .tenants
            .metrics()
            .admin_action(&self.tenant, self.action, outcome.name());
        let (credential, tenant, action, args) =
            (&self.credential, &self.tenant, self.action, &self.args);
        if outcome == Outcome::Ok {
            tracing::info!(
                target: "trustlog::audit", credential, tenant, action, %args,
                outcome = outcome.name(), result = %detail, "admin action"
            );
        } else {
            tracing::warn!(
                target: "trustlog::audit", credential, tenant, action, %args,
                outcome = outcome.name(), error = %detail, "admin action not done"
            );
        }
        match result {
            Ok(body) => (status, Json(body)).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_access_check_is_a_refusal_a_server_error_a_failure_the_rest_invalid() {
        let of = |status, refused| Outcome::of(&ApiError::new(status, "x"), refused);
        assert_eq!(of(StatusCode::FORBIDDEN, true), Outcome::Refused);
        assert_eq!(of(StatusCode::NOT_FOUND, true), Outcome::Refused);
        assert_eq!(of(StatusCode::NOT_FOUND, false), Outcome::Invalid);
        assert_eq!(of(StatusCode::BAD_REQUEST, false), Outcome::Invalid);
        assert_eq!(of(StatusCode::SERVICE_UNAVAILABLE, false), Outcome::Failed);
    }
}

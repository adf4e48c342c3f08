//! The operator console at `/ui/`: pages and assets embedded in the binary, a sign-in
//! with a credential's secret, and a session cookie; everything it shows comes from the
//! JSON API under the same credentials (`/v1/…`).
//!
//! Who may use it: anyone may load the sign-in page and the assets (they hold no data).
//! The app itself, `/ui/api/session` and every `/v1` call it makes need a session (or
//! a bearer credential); what a session may read or do is its credential's role and
//! scope, checked by the API as for any caller. Without any credential configured the
//! API is open (and `serve` listens on loopback only), so the console is too, read-only.

mod assets;
pub mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::http::access::Scope;
use super::http::{ApiError, AppState, Caller};
use sessions::Sessions;

/// The console's state in the host's [`AppState`].
#[derive(Debug, Default)]
pub struct ConsoleState {
    /// Signed-in browsers.
    pub sessions: Sessions,
    /// Whether the listener is HTTPS, so cookies get `Secure`.
    secure_cookies: AtomicBool,
}

impl ConsoleState {
    /// Marks the listener as HTTPS: session cookies are sent over it only.
    pub fn set_secure_cookies(&self, secure: bool) {
        self.secure_cookies.store(secure, Ordering::Relaxed);
    }

    fn secure(&self) -> bool {
        self.secure_cookies.load(Ordering::Relaxed)
    }
}

/// The console's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/sign-in", post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/api/session", get(session))
        .route("/ui/assets/{*path}", get(assets::serve))
}

/// What every console response carries: nothing but this origin may run, load or frame
/// anything, so an injected string cannot call out or be framed.
pub(crate) fn hardened(mut response: Response, cache: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // "same-origin", not "no-referrer": with no referrer at all a browser sends
    // `Origin: null` on form posts, and the origin check could not tell ours.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    hardened(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        "no-store",
    )
}

fn sign_in_page(status: StatusCode, error: &str) -> Response {
    html(
        status,
        assets::SIGN_IN_HTML.replace("{{error}}", &escape_html(error)),
    )
}

/// `GET /ui/`: the app for a signed-in browser (or any, with no credential configured),
/// else the sign-in page.
async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.credentials().is_empty() || state.session_credential(&headers).is_some() {
        html(StatusCode::OK, assets::INDEX_HTML.to_string())
    } else {
        sign_in_page(StatusCode::OK, "")
    }
}

/// The form fields of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `POST /ui/sign-in` with `credential=SECRET`: a session for that credential, or the
/// sign-in page again. A wrong secret costs one SHA-256 and is counted like any
/// refused bearer.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = super::http::same_origin(&headers, &uri) {
        return refused.into_response();
    }
    let credentials = state.credentials();
    if credentials.is_empty() {
        return Redirect::to("/ui/").into_response();
    }
    let secret = form_field(&body, "credential").unwrap_or_default();
    let Some(credential) = credentials.identify(&secret) else {
        state.tenants.metrics().unauthenticated();
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "That credential is not valid on this host.",
        );
    };
    match state.console.sessions.start(credential.digest()) {
        Ok(id) => {
            tracing::info!(target: "trustlog::audit", credential = %credential.name, action = "sign-in", "console sign-in");
            let mut response = Redirect::to("/ui/").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_str(&sessions::set_cookie(&id, state.console.secure()))
                    .expect("hex ids make a valid header"),
            );
            response
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /ui/sign-out` with the session's `csrf` as a form field: ends the session.
async fn sign_out(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = super::http::same_origin(&headers, &uri) {
        return refused.into_response();
    }
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(sessions::from_cookie_header);
    if let Some((id, session)) = id.and_then(|id| Some((id, state.console.sessions.get(id)?))) {
        let token = form_field(&body, "csrf").unwrap_or_default();
        if !session.csrf_matches(&token) {
            return super::http::csrf_refused().into_response();
        }
        state.console.sessions.end(id);
    }
    let mut response = Redirect::to("/ui/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&sessions::clear_cookie(state.console.secure()))
            .expect("a constant cookie"),
    );
    response
}

/// `GET /ui/api/session`: who is signed in, what they may do, on which tenants, and
/// the CSRF token their requests must carry.
async fn session(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Response {
    let csrf = state
        .session_of(&headers)
        .map(|s| s.csrf)
        .unwrap_or_default();
    let mut ids: Vec<String> = state
        .tenants
        .list()
        .await
        .iter()
        .map(|t| t.id().to_string())
        .collect();
    ids.sort();
    let tenants: Vec<&String> = ids.iter().filter(|id| caller.sees(id)).collect();
    let body = match &caller.0 {
        Some(c) => json!({
            "credential": c.name,
            "role": c.role.name(),
            "host_wide": c.scope == Scope::Host,
            "tenants": tenants,
            "csrf": csrf,
        }),
        // No credential configured: the API is open for reading, and admin is off.
        None => json!({
            "credential": "anonymous",
            "role": "read",
            "host_wide": true,
            "tenants": tenants,
            "csrf": csrf,
        }),
    };
    hardened(axum::Json(body).into_response(), "no-store")
}

/// `text` with the five characters HTML gives meaning to escaped.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<script>alert("x&'y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
    }

    #[test]
    fn the_sign_in_page_has_one_password_input_and_no_placeholder_left() {
        let page = assets::SIGN_IN_HTML.replace("{{error}}", "");
        assert_eq!(page.matches("type=\"password\"").count(), 1, "{page}");
        assert!(!page.contains("{{"));
    }
}

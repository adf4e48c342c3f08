//! Console sessions: a browser signs in once with a credential's secret and then
//! carries an opaque session id in an `HttpOnly`, `SameSite=Strict` cookie.
//!
//! The session holds the credential's digest, never its secret, and is resolved
//! against the credentials in force on every request: a credential removed by a
//! reload ends its sessions at once. Each session has its own CSRF token, which every
//! request that changes something must echo in `X-CSRF-Token`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const COOKIE: &str = "trustlog_session";
/// How long a session lasts after sign-in, used or not.
const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions kept at most; the oldest goes first, so a flood of sign-ins costs memory
/// bounded by this, not by the attacker.
const MAX_SESSIONS: usize = 10_000;

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed: {0}")]
pub struct RandomError(String);

/// What a signed-in browser holds.
#[derive(Debug, Clone)]
pub struct Session {
    /// The digest of the credential it signed in with.
    pub credential_digest: [u8; 32],
    /// The token requests that change something must carry.
    pub csrf: String,
    started: Instant,
}

/// Every live session of the host.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> Result<String, RandomError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(hex::encode(bytes))
}

impl Sessions {
    /// Starts a session for the credential of `credential_digest`; returns its id.
    pub fn start(&self, credential_digest: [u8; 32]) -> Result<String, RandomError> {
        let id = random_hex()?;
        let session = Session {
            credential_digest,
            csrf: random_hex()?,
            started: Instant::now(),
        };
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.started.elapsed() < LIFETIME);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(id.clone(), session);
        Ok(id)
    }

    /// The live session `id`, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(id) {
            Some(s) if s.started.elapsed() < LIFETIME => Some(s.clone()),
            Some(_) => {
                all.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub fn end(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

impl Session {
    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        self.csrf.as_bytes().ct_eq(token.as_bytes()).into()
    }
}

/// The session id in a `Cookie` header, if it carries ours.
pub fn from_cookie_header(value: &str) -> Option<&str> {
    value
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// The `Set-Cookie` value that hands a browser its session (`Secure` over HTTPS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that makes a browser forget its session.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_ends() {
        let sessions = Sessions::default();
        let id = sessions.start([7; 32]).unwrap();
        assert_eq!(id.len(), 64);
        let s = sessions.get(&id).unwrap();
        assert_eq!(s.credential_digest, [7; 32]);
        assert!(s.csrf_matches(&s.csrf));
        assert!(!s.csrf_matches("forged"));
        assert!(sessions.get("another").is_none());
        sessions.end(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn ids_and_tokens_are_unpredictable_and_distinct() {
        let sessions = Sessions::default();
        let a = sessions.start([1; 32]).unwrap();
        let b = sessions.start([1; 32]).unwrap();
        assert_ne!(a, b);
        assert_ne!(
            sessions.get(&a).unwrap().csrf,
            sessions.get(&b).unwrap().csrf
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_read_back_among_others() {
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        assert_eq!(
            from_cookie_header("theme=dark; trustlog_session=abc; x=y"),
            Some("abc")
        );
        assert_eq!(from_cookie_header("trustlog_session="), None);
        assert_eq!(from_cookie_header("other=1"), None);
    }

    #[test]
    fn the_number_of_sessions_is_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.start([2; 32]).unwrap();
        }
        assert_eq!(sessions.by_id.lock().unwrap().len(), MAX_SESSIONS);
    }
}

//! `http(s)://HOST/PATH#timeout=5s&concurrency=16`: an HTTP webhook.
//!
//! One `POST` per envelope, its body the envelope's canonical JSON bytes, with
//! `Idempotency-Key` = op_id and `Trustlog-Sha256` = the bytes' hash, so the receiver
//! can drop re-deliveries and check integrity. Up to `concurrency` requests are in
//! flight on kept-alive connections. The client options live in the URL fragment
//! because the query string belongs to the receiver's endpoint.
//!
//! A 2xx confirms. 408, 429, 5xx, timeouts and connection errors are transient; any
//! other status (redirects included: they are not followed) is a refusal that will not
//! change, so it is permanent and its response body is kept in the error.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use reqwest::StatusCode;
use trustlog_guest::model::{Envelope, PublishError};

use super::options::{UrlOptions, invalid, redact};
use super::{PublisherError, error_chain};

/// The request header that carries the op_id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The request header that carries the body's SHA-256.
pub const SHA256_HEADER: &str = "Trustlog-Sha256";
/// How much of an error response body is kept.
const BODY_EXCERPT: usize = 1024;

/// A webhook endpoint that receives the envelopes.
#[derive(Clone, Debug)]
pub struct WebhookPublisher {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    shown: String,
    concurrency: usize,
}

impl WebhookPublisher {
    /// Builds the client; nothing is sent until the first batch.
    pub fn connect(url: &str) -> Result<WebhookPublisher, PublisherError> {
        let mut endpoint = reqwest::Url::parse(url).map_err(|e| invalid(url, e.to_string()))?;
        let mut opts = UrlOptions::parse(url, endpoint.fragment())?;
        let timeout = opts.duration("timeout", Duration::from_secs(5))?;
        let concurrency = opts.parsed::<usize>("concurrency", 16)?;
        opts.finish()?;
        if concurrency == 0 {
            return Err(invalid(url, "option \"concurrency\" must be > 0".into()));
        }
        endpoint.set_fragment(None);
        // reqwest is built without a bundled crypto provider; ring is the one we ship.
        // An error here only means a provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(concurrency)
            .user_agent(concat!("trustlog/", env!("CARGO_PKG_VERSION")))
            // A 301/302/303 would be followed as a GET, whose 2xx says nothing about
            // our POST (think of a login page): a redirect is reported, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(url, e.to_string()))?;
        Ok(WebhookPublisher {
            client,
            shown: redact(endpoint.as_str()),
            endpoint,
            concurrency,
        })
    }

    /// Whether the receiver answers a `HEAD` of the endpoint, with any status: HEAD
    /// is safe, so it cannot count as a delivery, and a 405 still proves a live server.
    pub async fn ready(&self) -> Result<(), String> {
        self.client
            .head(self.endpoint.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("webhook {}: {}", self.shown, error_chain(&e)))
    }

    /// Posts each envelope; one result per envelope, in order.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        stream::iter(batch)
            .map(|env| self.post(env))
            .buffered(self.concurrency)
            .collect()
            .await
    }

    async fn post(&self, env: Envelope) -> Result<(), PublishError> {
        let sent = self
            .client
            .post(self.endpoint.clone())
            .header(IDEMPOTENCY_KEY, env.op_id.as_str())
            .header(SHA256_HEADER, env.sha256.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(env.payload)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                return Err(PublishError::Transient(format!(
                    "webhook {} op_id {}: {}",
                    self.shown,
                    env.op_id,
                    error_chain(&e)
                )));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = match response.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(BODY_EXCERPT)]).into_owned(),
            Err(e) => format!("(body unreadable: {e})"),
        };
        let message = format!(
            "webhook {} op_id {}: HTTP {status}: {body}",
            self.shown, env.op_id
        );
        if is_transient(status) {
            Err(PublishError::Transient(message))
        } else {
            Err(PublishError::Permanent(message))
        }
    }
}

/// 408, 429 and 5xx may pass on a later try; other non-2xx statuses will not.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_transient_and_permanent() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [301, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[tokio::test]
    async fn a_redirect_is_a_permanent_error_and_is_not_followed() {
        use axum::http::{StatusCode, header};
        use axum::routing::{get, post};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let landed = Arc::new(AtomicUsize::new(0));
        let counter = landed.clone();
        let app = axum::Router::new()
            .route(
                "/old",
                post(|| async { (StatusCode::FOUND, [(header::LOCATION, "/login")], "moved") }),
            )
            .route(
                "/login",
                get(move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    "please log in"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let p = WebhookPublisher::connect(&format!("http://{addr}/old")).unwrap();
        let env = Envelope {
            op_id: "r1".into(),
            payload: b"{}".to_vec(),
            sha256: "00".into(),
        };
        let results = p.publish(vec![env]).await;
        assert!(
            matches!(&results[..], [Err(PublishError::Permanent(m))] if m.contains("HTTP 302 Found: moved")),
            "{results:?}"
        );
        assert_eq!(
            landed.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
    }

    #[test]
    fn options_come_from_the_fragment_and_the_query_is_the_endpoints() {
        let p =
            WebhookPublisher::connect("https://h.example/hook?tenant=a#concurrency=4&timeout=1s")
                .unwrap();
        assert_eq!(p.endpoint.as_str(), "https://h.example/hook?tenant=a");
        assert_eq!(p.concurrency, 4);
        let e = WebhookPublisher::connect("http://h/#concurrency=0").unwrap_err();
        assert!(e.to_string().contains("concurrency"), "{e}");
    }
}

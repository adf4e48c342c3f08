//! `nats://HOST:PORT?stream=TRUSTLOG&subject=trustlog.operations`: NATS JetStream.
//!
//! Every envelope is published with `Nats-Msg-Id` = op_id, so the stream drops a
//! re-delivery inside its duplicate window, and counts as confirmed only once its
//! JetStream ack arrives. A batch is sent in one go and its acks are awaited
//! together, so a batch costs about one round trip, not one per envelope.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures_util::future::join_all;
use trustlog_guest::model::{Envelope, PublishError};

use super::options::{UrlOptions, invalid, redact, without_options};
use super::{PublisherError, error_chain};

/// The stream a URL without `stream=` publishes to.
pub const DEFAULT_STREAM: &str = "TRUSTLOG";
/// The subject a URL without `subject=` publishes on.
pub const DEFAULT_SUBJECT: &str = "trustlog.operations";

/// The header that carries the envelope's SHA-256, so consumers can check the bytes.
pub const SHA256_HEADER: &str = "Trustlog-Sha256";

/// A JetStream stream that receives the envelopes.
#[derive(Clone, Debug)]
pub struct NatsPublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    server: String,
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    stream: jetstream::stream::Config,
    create_stream: bool,
    timeout: Duration,
    /// Cleared when the stream vanishes, so the next batch re-creates it.
    stream_ready: AtomicBool,
}

impl NatsPublisher {
    /// Connects in the background: a broker that is down now is retried, not fatal.
    pub async fn connect(url: &str) -> Result<NatsPublisher, PublisherError> {
        let (parsed, mut opts) = UrlOptions::from_query(url)?;
        let stream_name = opts.non_empty("stream", DEFAULT_STREAM)?;
        let subject = opts.non_empty("subject", DEFAULT_SUBJECT)?;
        let timeout = opts.duration("timeout", Duration::from_secs(5))?;
        let duplicate_window = opts.duration("duplicate_window", Duration::from_secs(120))?;
        let create_stream = opts.parsed("create_stream", true)?;
        opts.finish()?;

        let server = without_options(&parsed);
        let client = async_nats::ConnectOptions::new()
            .name("trustlog")
            .retry_on_initial_connect()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            // The default backoff grows to several seconds; a trust log should be back
            // within a fraction of the publish timeout once the broker is.
            .reconnect_delay_callback(move |attempt| reconnect_delay(attempt, timeout))
            .connect(server.as_str())
            .await
            .map_err(|e| invalid(url, e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .max_ack_inflight(65_536)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(NatsPublisher {
            inner: Arc::new(Inner {
                server: redact(&server),
                client,
                js,
                stream: jetstream::stream::Config {
                    name: stream_name,
                    subjects: vec![subject.clone()],
                    duplicate_window,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                },
                subject,
                create_stream,
                timeout,
                stream_ready: AtomicBool::new(!create_stream),
            }),
        })
    }

    /// Whether the client holds a live connection (it pings the server and notices a
    /// broken socket by itself).
    pub async fn ready(&self) -> Result<(), String> {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("nats {}: {state}", self.inner.server)),
        }
    }

    /// Publishes the batch and awaits every ack; one result per envelope.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        if let Err(e) = self.ensure_stream().await {
            return vec![Err(e); n];
        }
        let inner = &self.inner;
        let mut pending = Vec::with_capacity(n);
        for env in batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, env.op_id.as_str());
            headers.insert(SHA256_HEADER, env.sha256.as_str());
            let sent = inner
                .js
                .publish_with_headers(inner.subject.clone(), headers, env.payload.into())
                .await;
            pending.push(sent);
        }
        let acks = join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            }
        }))
        .await;
        acks.into_iter()
            .map(|ack| ack.map_err(|e| self.classify(e)))
            .collect()
    }

    async fn ensure_stream(&self) -> Result<(), PublishError> {
        let inner = &self.inner;
        if inner.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let created = tokio::time::timeout(
            inner.timeout,
            inner.js.get_or_create_stream(inner.stream.clone()),
        )
        .await;
        match created {
            Ok(Ok(_)) => {
                inner.stream_ready.store(true, Ordering::Release);
                Ok(())
            }
            Ok(Err(e)) => Err(PublishError::Transient(format!(
                "nats {}: stream {:?} not available: {e}",
                inner.server, inner.stream.name
            ))),
            Err(_) => Err(PublishError::Transient(format!(
                "nats {}: stream {:?} not available within {:?}",
                inner.server, inner.stream.name, inner.timeout
            ))),
        }
    }

    fn classify(&self, e: jetstream::context::PublishError) -> PublishError {
        let inner = &self.inner;
        let message = format!(
            "nats {} subject {}: {}",
            inner.server,
            inner.subject,
            error_chain(&e)
        );
        match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => PublishError::Permanent(message),
            PublishErrorKind::StreamNotFound => {
                if inner.create_stream {
                    inner.stream_ready.store(false, Ordering::Release);
                }
                PublishError::Transient(message)
            }
            PublishErrorKind::Other if rejected_by_stream(&e) => PublishError::Permanent(message),
            _ => PublishError::Transient(message),
        }
    }
}

/// JetStream answered with a 4xx API error: the stream refuses this message as it is
/// (too large, wrong subject) and will refuse it again.
fn rejected_by_stream(e: &jetstream::context::PublishError) -> bool {
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| (400..500).contains(&api.code()) && api.code() != 408)
}

/// 0, 50 ms, 100 ms, 200 ms … up to half the publish timeout.
fn reconnect_delay(attempt: usize, timeout: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let exp = Duration::from_millis(50).saturating_mul(1 << (attempt - 2).min(16) as u32);
    exp.min(timeout / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_start_at_once_and_back_off_to_half_the_timeout() {
        let t = Duration::from_secs(5);
        let delays: Vec<_> = (1..=9).map(|a| reconnect_delay(a, t).as_millis()).collect();
        assert_eq!(delays, [0, 50, 100, 200, 400, 800, 1600, 2500, 2500]);
        assert_eq!(reconnect_delay(10_000, t), t / 2);
    }

    #[tokio::test]
    async fn unknown_options_are_refused_before_connecting() {
        let e = NatsPublisher::connect("nats://127.0.0.1:4222?streem=X")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown option \"streem\""), "{e}");
    }
}

//! Publisher adapters, chosen by URL; each speaks the WIT `publisher` interface.
//!
//! Every adapter reports one result per envelope: `Ok` only once the trust log confirmed
//! that envelope (broker ack, fsync, 2xx), a transient error for anything that may pass
//! on a later try (including a broker that is down), a permanent one for a refusal.
//! None of them needs its broker up to start: each connects (again) by itself.

pub mod adapter;
pub mod amqp;
pub mod ledger;
pub mod mqtt;
pub mod nats;
pub mod options;
pub mod redis_streams;
pub mod webhook;

use std::sync::Arc;

use trustlog_guest::model::{Envelope, PublishError};

pub use adapter::PublisherAdapter;

/// Why a publisher URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The URL's scheme names no adapter (the URL is kept with its password redacted).
    #[error(
        "unsupported publisher URL {0:?}; expected ledger://PATH, nats://, amqp://, redis://, http(s):// or mqtt://"
    )]
    UnsupportedUrl(String),
    /// A URL of a known scheme whose path or options its adapter cannot use.
    #[error("publisher URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A trust log endpoint behind one of the adapters.
#[derive(Clone, Debug)]
pub enum Publisher {
    /// `ledger://PATH`: the embedded, hash-chained, append-only file.
    Ledger(ledger::LedgerPublisher),
    /// `nats://` (or `tls://`): a NATS JetStream stream.
    Nats(nats::NatsPublisher),
    /// `amqp(s)://`: a RabbitMQ exchange, with publisher confirms.
    Amqp(Arc<amqp::AmqpPublisher>),
    /// `redis(s)://`: a Redis stream.
    Redis(redis_streams::RedisStreamsPublisher),
    /// `http(s)://`: an HTTP webhook.
    Webhook(webhook::WebhookPublisher),
    /// `mqtt://`: an MQTT 5 broker, at QoS 1.
    Mqtt(mqtt::MqttPublisher),
    /// An adapter implemented outside this crate.
    Custom(Arc<dyn PublisherAdapter>),
    /// For commands that never publish (status): every publish fails, transiently.
    Disabled,
}

/// The ledger file a `ledger://PATH[?OPTIONS]` URL names; `None` for another publisher.
pub fn ledger_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("ledger://")?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    Some(path.into())
}

/// `ledger://PATH[?signing_key=KEYFILE]`: the file, and the key that signs its
/// checkpoints (from the file named, else from `TRUSTLOG_LEDGER_SIGNING_KEY` naming one).
fn ledger_url(
    url: &str,
    rest: &str,
) -> Result<(std::path::PathBuf, Option<trustlog_ledger::SigningKey>), PublisherError> {
    let query = rest.split_once('?').map_or("", |(_, query)| query);
    let mut key_file = std::env::var("TRUSTLOG_LEDGER_SIGNING_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "signing_key" => key_file = Some(value.into_owned()),
            other => {
                return Err(options::invalid(
                    url,
                    format!("unknown ledger option {other:?}; expected signing_key"),
                ));
            }
        }
    }
    let key = match key_file {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                options::invalid(url, format!("reading the signing key {file}: {e}"))
            })?;
            Some(
                trustlog_ledger::SigningKey::parse(text.trim()).map_err(|e| {
                    options::invalid(url, format!("the signing key in {file}: {e}"))
                })?,
            )
        }
    };
    let path = ledger_path(url).expect("a ledger:// URL");
    Ok((path, key))
}

impl Publisher {
    /// Wraps an adapter of the user's own.
    pub fn custom(adapter: impl PublisherAdapter) -> Publisher {
        Publisher::Custom(Arc::new(adapter))
    }

    /// Connects by URL scheme: `ledger`, `nats`, `amqp(s)`, `redis(s)`, `http(s)`, `mqtt`.
    pub async fn connect(url: &str) -> Result<Publisher, PublisherError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(PublisherError::UnsupportedUrl(options::redact(url)));
        };
        match scheme {
            "ledger" if !rest.is_empty() => {
                let (path, key) = ledger_url(url, rest)?;
                Ok(Publisher::Ledger(ledger::LedgerPublisher::signed(
                    path, key,
                )))
            }
            "ledger" => Err(options::invalid(url, "the ledger path is empty".into())),
            "nats" | "tls" => Ok(Publisher::Nats(nats::NatsPublisher::connect(url).await?)),
            "amqp" | "amqps" => Ok(Publisher::Amqp(Arc::new(amqp::AmqpPublisher::connect(
                url,
            )?))),
            "redis" | "rediss" => Ok(Publisher::Redis(
                redis_streams::RedisStreamsPublisher::connect(url)?,
            )),
            "http" | "https" => Ok(Publisher::Webhook(webhook::WebhookPublisher::connect(url)?)),
            "mqtt" => Ok(Publisher::Mqtt(mqtt::MqttPublisher::connect(url)?)),
            _ => Err(PublisherError::UnsupportedUrl(options::redact(url))),
        }
    }

    /// Delivers a batch; one result per envelope, in order. Ok means confirmed.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        match self {
            Publisher::Ledger(p) => p.publish(batch).await,
            Publisher::Nats(p) => p.publish(batch).await,
            Publisher::Amqp(p) => p.publish(batch).await,
            Publisher::Redis(p) => p.publish(batch).await,
            Publisher::Webhook(p) => p.publish(batch).await,
            Publisher::Mqtt(p) => p.publish(batch).await,
            Publisher::Custom(p) => p.publish(batch).await,
            Publisher::Disabled => batch
                .iter()
                .map(|_| Err(PublishError::Transient("no publisher configured".into())))
                .collect(),
        }
    }
}

impl Publisher {
    /// Whether this host may keep what it holds of the trust log between batches: a host
    /// standing by for another (`false`) lets go of it, so the one delivering can have
    /// it. Of the built-in adapters only the ledger holds something, its lock.
    pub fn hold(&self, keep: bool) {
        match self {
            Publisher::Ledger(p) => p.hold(keep),
            Publisher::Custom(p) => p.hold(keep),
            _ => {}
        }
    }

    /// Whether the trust log answers now; the error says why not.
    pub async fn ready(&self) -> Result<(), String> {
        match self {
            Publisher::Ledger(p) => p.ready().await,
            Publisher::Nats(p) => p.ready().await,
            Publisher::Amqp(p) => p.ready().await,
            Publisher::Redis(p) => p.ready().await,
            Publisher::Webhook(p) => p.ready().await,
            Publisher::Mqtt(p) => p.ready().await,
            Publisher::Custom(p) => p.ready().await,
            Publisher::Disabled => Err("no publisher configured".into()),
        }
    }
}

/// An error and its causes, `outer: inner: …`: client libraries' own messages are
/// often terse ("publish failed") and the cause says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_pick_their_adapter_and_unknown_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = format!("ledger://{}", dir.path().join("l").display());
        assert!(matches!(
            Publisher::connect(&ledger).await,
            Ok(Publisher::Ledger(_))
        ));
        assert!(matches!(
            Publisher::connect("amqp://127.0.0.1:5672/%2f").await,
            Ok(Publisher::Amqp(_))
        ));
        assert!(matches!(
            Publisher::connect("redis://127.0.0.1:6379/0").await,
            Ok(Publisher::Redis(_))
        ));
        assert!(matches!(
            Publisher::connect("http://127.0.0.1:9/hook").await,
            Ok(Publisher::Webhook(_))
        ));
        assert!(matches!(
            Publisher::connect("mqtt://127.0.0.1:1883").await,
            Ok(Publisher::Mqtt(_))
        ));
        let e = Publisher::connect("kafka://x:9092").await.unwrap_err();
        assert!(matches!(e, PublisherError::UnsupportedUrl(_)), "{e}");
        let e = Publisher::connect("redis://:hunter2@127.0.0.1/0?nope=1")
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

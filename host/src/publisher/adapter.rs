//! The trait a publisher adapter implements: the WIT `publisher` interface the guest
//! calls, and what the host asks of a trust log besides (readiness, the hold).
//!
//! The built-in adapters implement it, and [`Publisher`](super::Publisher) dispatches
//! to them statically; an adapter of a user's own goes in as
//! [`Publisher::custom`](super::Publisher::custom) (or by URL scheme through
//! [`Adapters`](crate::adapters::Adapters)) and is called through `dyn`.

use trustlog_guest::model::{Envelope, PublishError};

/// A trust log endpoint: it confirms envelopes, one result per envelope.
///
/// `Ok` means the trust log confirmed that envelope durably (a broker's ack, an
/// fsync, a 2xx): only then does the engine mark the row delivered.
/// [`PublishError::Unavailable`] says the trust log as a whole cannot be reached: the
/// row stays where it is, no retry is spent, and the host probes
/// [`PublisherAdapter::ready`] until it answers. [`PublishError::Transient`] is for
/// this envelope not confirmed (the row is retried with backoff, costing one retry);
/// [`PublishError::Permanent`] for a refusal (the row becomes a dead letter at once).
/// An envelope may be delivered again after a crash between the confirmation and the
/// commit: consumers deduplicate by `op_id`.
#[async_trait::async_trait]
pub trait PublisherAdapter: std::fmt::Debug + Send + Sync + 'static {
    /// Delivers a non-empty batch; one result per envelope, in order.
    async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>>;

    /// Whether the trust log answers now (`/readyz`); the error says why not.
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether this host may keep what it holds of the trust log (a lock, a
    /// connection it alone may have) between batches: `false` while another host
    /// delivers, so that host can have it.
    fn hold(&self, _keep: bool) {}
}

/// Implements [`PublisherAdapter`] for a built-in adapter by its inherent methods.
macro_rules! builtin_publisher {
    ($adapter:ty) => {
        #[async_trait::async_trait]
        impl PublisherAdapter for $adapter {
            async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
                <$adapter>::publish(self, batch).await
            }
            async fn ready(&self) -> Result<(), String> {
                <$adapter>::ready(self).await
            }
        }
    };
}

builtin_publisher!(super::nats::NatsPublisher);
builtin_publisher!(super::amqp::AmqpPublisher);
builtin_publisher!(super::redis_streams::RedisStreamsPublisher);
builtin_publisher!(super::webhook::WebhookPublisher);
builtin_publisher!(super::mqtt::MqttPublisher);

#[async_trait::async_trait]
impl PublisherAdapter for super::ledger::LedgerPublisher {
    async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        super::ledger::LedgerPublisher::publish(self, batch).await
    }
    async fn ready(&self) -> Result<(), String> {
        super::ledger::LedgerPublisher::ready(self).await
    }
    fn hold(&self, keep: bool) {
        super::ledger::LedgerPublisher::hold(self, keep)
    }
}

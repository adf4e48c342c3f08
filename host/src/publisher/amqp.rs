//! `amqp://USER:PASS@HOST:PORT/VHOST?exchange=&routing_key=trustlog&queue=trustlog`: RabbitMQ.
//!
//! Publisher confirms on a dedicated channel, persistent messages, `message_id` = op_id,
//! `mandatory` set so an unroutable envelope comes back instead of vanishing. The whole
//! batch is written before any confirm is awaited. A broken connection is dropped and
//! opened again by the next batch.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use trustlog_guest::model::{Envelope, PublishError};

use super::PublisherError;
use super::options::{UrlOptions, redact, without_options};

/// The message header that carries the envelope's SHA-256.
pub const SHA256_HEADER: &str = "trustlog-sha256";

/// An exchange (with routing key) that receives the envelopes.
#[derive(Debug)]
pub struct AmqpPublisher {
    uri: String,
    shown: String,
    exchange: String,
    routing_key: String,
    queue: String,
    timeout: Duration,
    live: Mutex<Option<Live>>,
}

#[derive(Debug)]
struct Live {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

impl AmqpPublisher {
    /// Reads the options; the connection opens at the first batch (a broker that is
    /// down now is not fatal).
    pub fn connect(url: &str) -> Result<AmqpPublisher, PublisherError> {
        let (parsed, mut opts) = UrlOptions::from_query(url)?;
        let exchange = opts.string("exchange", "");
        let routing_key = opts.string("routing_key", "trustlog");
        let queue = opts.string(
            "queue",
            if exchange.is_empty() {
                &routing_key
            } else {
                ""
            },
        );
        let timeout = opts.duration("timeout", Duration::from_secs(5))?;
        opts.finish()?;
        let uri = without_options(&parsed);
        Ok(AmqpPublisher {
            shown: redact(&uri),
            uri,
            exchange,
            routing_key,
            queue,
            timeout,
            live: Mutex::new(None),
        })
    }

    /// Publishes the batch and awaits every confirm; one result per envelope.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        // One batch at a time per publisher: confirms are per channel.
        let mut live = self.live.lock().await;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let channel = match self.channel(&mut live, deadline).await {
            Ok(c) => c,
            Err(e) => return vec![Err(e); n],
        };
        // Each publish queues its frames (and takes its delivery tag) on its first poll,
        // then waits for the I/O loop to write them. Polling them together lets one
        // write carry the whole batch instead of one loop turn per message.
        let confirms = join_all(batch.iter().map(|env| {
            let mut headers = FieldTable::default();
            headers.insert(
                SHA256_HEADER.into(),
                AMQPValue::LongString(env.sha256.as_str().into()),
            );
            let properties = BasicProperties::default()
                .with_message_id(env.op_id.as_str().into())
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_headers(headers);
            channel.basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &env.payload,
                properties,
            )
        }))
        .await;
        let results = join_all(confirms.into_iter().map(|sent| async move {
            match sent {
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(c)) => self.judge(c),
                    Ok(Err(e)) => Err(self.transient(format!("confirm failed: {e}"))),
                    Err(_) => Err(self.transient(format!("no confirm within {:?}", self.timeout))),
                },
                Err(e) => Err(self.transient(format!("publish failed: {e}"))),
            }
        }))
        .await;
        let broken = results
            .iter()
            .any(|r| matches!(r, Err(PublishError::Transient(_))));
        if broken {
            // The channel may be closed, or confirms lost; start clean next batch.
            *live = None;
        }
        results
    }

    /// Whether the confirm channel is open, opening it now if it was not.
    pub async fn ready(&self) -> Result<(), String> {
        let mut live = self.live.lock().await;
        let deadline = tokio::time::Instant::now() + self.timeout;
        match self.channel(&mut live, deadline).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.message().to_string()),
        }
    }

    fn judge(&self, confirmation: Confirmation) -> Result<(), PublishError> {
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(PublishError::Permanent(format!(
                "amqp {} exchange {:?} routing key {:?}: returned by the broker: {} {}",
                self.shown,
                self.exchange,
                self.routing_key,
                returned.reply_code,
                returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(self.transient("nacked by the broker".into())),
            Confirmation::NotRequested => Err(self.transient("confirms are off".into())),
        }
    }

    fn transient(&self, detail: String) -> PublishError {
        PublishError::Transient(format!("amqp {}: {detail}", self.shown))
    }

    /// The open confirm channel, opening connection, channel and queue if needed.
    async fn channel(
        &self,
        live: &mut Option<Live>,
        deadline: tokio::time::Instant,
    ) -> Result<Channel, PublishError> {
        if let Some(l) = live.as_ref()
            && l.channel.status().connected()
        {
            return Ok(l.channel.clone());
        }
        *live = None;
        let opened = tokio::time::timeout_at(deadline, self.open()).await;
        match opened {
            Ok(Ok(l)) => {
                let channel = l.channel.clone();
                *live = Some(l);
                Ok(channel)
            }
            Ok(Err(e)) => Err(self.transient(format!("cannot connect: {e}"))),
            Err(_) => Err(self.transient(format!("cannot connect within {:?}", self.timeout))),
        }
    }

    async fn open(&self) -> Result<Live, lapin::Error> {
        let connection = Connection::connect(
            &self.uri,
            ConnectionProperties::default().with_connection_name("trustlog".into()),
        )
        .await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        if !self.queue.is_empty() {
            channel
                .queue_declare(
                    self.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            if !self.exchange.is_empty() {
                channel
                    .queue_bind(
                        self.queue.as_str().into(),
                        self.exchange.as_str().into(),
                        self.routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        tracing::info!(broker = %self.shown, exchange = %self.exchange, routing_key = %self.routing_key, "amqp publisher connected");
        Ok(Live {
            _connection: connection,
            channel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_queue_follows_the_routing_key_on_the_default_exchange() {
        let p = AmqpPublisher::connect("amqp://guest:guest@127.0.0.1:5672/%2f?routing_key=ops")
            .unwrap();
        assert_eq!((p.exchange.as_str(), p.queue.as_str()), ("", "ops"));
        assert_eq!(p.shown, "amqp://guest:***@127.0.0.1:5672/%2f");
        let p = AmqpPublisher::connect("amqp://127.0.0.1/%2f?exchange=amq.topic").unwrap();
        assert_eq!(
            p.queue, "",
            "with a named exchange nothing is declared unless asked"
        );
    }
}

//! `mqtt://[USER:PASS@]HOST:PORT?topic=trustlog/operations`: MQTT 5, QoS 1.
//!
//! rumqttc reports a PUBACK only by packet id, and packet ids are handed out inside its
//! event loop. So one driver task owns the event loop and feeds it each batch itself:
//! the k-th publish it feeds is the k-th `Outgoing::Publish(pkid)` event, which ties
//! every packet id back to its envelope. The session is clean (no broker-side state):
//! after a connection error or a missed deadline the driver reports everything in flight
//! transient and replaces the event loop with a new one. Cleaning the old one is not
//! enough: a write that fails leaves its `Outgoing::Publish` event buffered, and the next
//! batch would read it first and pair every envelope with its predecessor's packet id.
//! While idle and disconnected the driver does not poll, so a dead broker costs nothing
//! until the next batch tries it again.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, ClientError, Event, EventLoop, MqttOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use trustlog_guest::model::{Envelope, PublishError};

use super::PublisherError;
use super::options::{UrlOptions, invalid, redact};

/// Requests the driver may queue inside rumqttc before it must poll again.
const REQUEST_CHANNEL: usize = 256;

/// An MQTT topic that receives the envelopes.
#[derive(Clone, Debug)]
pub struct MqttPublisher {
    jobs: mpsc::Sender<Job>,
    shown: String,
    /// The publisher's options under a client id of its own, for readiness probes.
    probe: std::sync::Arc<MqttOptions>,
    timeout: Duration,
}

struct Job {
    batch: Vec<Envelope>,
    reply: oneshot::Sender<Vec<Result<(), PublishError>>>,
}

impl MqttPublisher {
    /// Starts the driver task; the broker is first contacted by the first batch.
    pub fn connect(url: &str) -> Result<MqttPublisher, PublisherError> {
        let (parsed, mut opts) = UrlOptions::from_query(url)?;
        let topic = opts.non_empty("topic", "trustlog/operations")?;
        let timeout = opts.duration("timeout", Duration::from_secs(5))?;
        let client_id = opts.non_empty("client_id", &default_client_id())?;
        opts.finish()?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid(url, "the broker host is missing".into()))?;
        let mut options = MqttOptions::new(client_id.clone(), host, parsed.port().unwrap_or(1883));
        options
            .set_clean_start(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_connection_timeout(timeout.as_secs().max(1));
        if !parsed.username().is_empty() {
            options.set_credentials(parsed.username(), parsed.password().unwrap_or(""));
        }
        let mut shown_url = parsed.clone();
        shown_url.set_query(None);
        let shown = redact(shown_url.as_str());
        // PUBLISH packets are small: with Nagle's algorithm each one waits for the
        // broker's delayed ACK, ~40 ms a batch.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let mut probe = options.clone();
        probe.set_client_id(format!("{client_id}-probe"));
        let (jobs, inbox) = mpsc::channel(1);
        let driver = Driver::new(options, topic, timeout, shown.clone());
        tokio::spawn(driver.run(inbox));
        Ok(MqttPublisher {
            jobs,
            shown,
            probe: std::sync::Arc::new(probe),
            timeout,
        })
    }

    /// Whether the broker accepts an MQTT session (CONNECT answered by a successful
    /// CONNACK) on a connection of its own. The driver does not poll while idle, so
    /// its own connection says nothing about a broker that went away since.
    pub async fn ready(&self) -> Result<(), String> {
        let (client, mut eventloop) = AsyncClient::new((*self.probe).clone(), 1);
        let handshake = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return match ack.code {
                            ConnectReturnCode::Success => Ok(()),
                            refused => Err(format!("connection refused: {refused:?}")),
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let answer = tokio::time::timeout(self.timeout, handshake)
            .await
            .unwrap_or_else(|_| Err(format!("no CONNACK within {:?}", self.timeout)));
        if answer.is_ok() {
            // Queue the DISCONNECT and let the event loop write it.
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        answer.map_err(|e| format!("mqtt {}: {e}", self.shown))
    }

    /// Publishes the batch and awaits every PUBACK; one result per envelope.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job { batch, reply }).await.is_ok()
            && let Ok(results) = answer.await
        {
            return results;
        }
        let gone = format!("mqtt {}: the publisher task has stopped", self.shown);
        vec![Err(PublishError::Transient(gone)); n]
    }
}

fn default_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("trustlog-{}-{nanos:08x}", std::process::id())
}

/// The task that owns rumqttc's event loop.
struct Driver {
    /// What a new event loop is made from after a connection is dropped.
    options: MqttOptions,
    client: AsyncClient,
    eventloop: EventLoop,
    topic: String,
    timeout: Duration,
    shown: String,
    connected: bool,
}

/// One batch in flight.
struct Flight {
    payloads: Vec<(Bytes, PublishProperties)>,
    results: Vec<Option<Result<(), PublishError>>>,
    next_to_feed: usize,
    /// Fed, in order, waiting for the event that names their packet id.
    awaiting_pkid: VecDeque<usize>,
    by_pkid: HashMap<u16, usize>,
    undecided: usize,
}

impl Driver {
    fn new(options: MqttOptions, topic: String, timeout: Duration, shown: String) -> Driver {
        let (client, eventloop) = AsyncClient::new(options.clone(), REQUEST_CHANNEL);
        Driver {
            options,
            client,
            eventloop,
            topic,
            timeout,
            shown,
            connected: false,
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Job>) {
        loop {
            let job = if self.connected {
                tokio::select! {
                    job = inbox.recv() => job,
                    event = self.eventloop.poll() => {
                        if let Err(e) = event {
                            tracing::warn!(broker = %self.shown, error = %e, "mqtt connection lost while idle");
                            self.reset();
                        }
                        continue;
                    }
                }
            } else {
                inbox.recv().await
            };
            let Some(job) = job else { return };
            let results = self.fly(job.batch).await;
            let _ = job.reply.send(results);
        }
    }

    async fn fly(&mut self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        let mut flight = Flight {
            payloads: batch.into_iter().map(properties).collect(),
            results: vec![None; n],
            next_to_feed: 0,
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            undecided: n,
        };
        let deadline = Instant::now() + self.timeout;
        while flight.undecided > 0 {
            self.feed(&mut flight);
            if flight.undecided == 0 {
                break;
            }
            let event = tokio::select! {
                event = self.eventloop.poll() => event,
                _ = tokio::time::sleep_until(deadline) => {
                    let why = format!("no PUBACK within {:?}", self.timeout);
                    self.abandon(&mut flight, why);
                    break;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => self.connected = true,
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    match flight.awaiting_pkid.pop_front() {
                        Some(i) => {
                            flight.by_pkid.insert(pkid, i);
                        }
                        // Every publish the event loop sends was fed by this flight; one
                        // that was not means the pairing is off, so trust none of it.
                        None => {
                            let why = format!("packet id {pkid} sent for no envelope");
                            self.abandon(&mut flight, why);
                            break;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(i) = flight.by_pkid.remove(&ack.pkid) {
                        flight.results[i] = Some(self.judge(&ack.reason));
                        flight.undecided -= 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.abandon(&mut flight, format!("connection: {e}"));
                    break;
                }
            }
        }
        flight
            .results
            .into_iter()
            .map(|r| r.expect("every envelope is decided before the flight ends"))
            .collect()
    }

    /// Hands rumqttc as many publishes as its request channel takes.
    fn feed(&mut self, flight: &mut Flight) {
        while flight.next_to_feed < flight.payloads.len() {
            let i = flight.next_to_feed;
            let (payload, props) = flight.payloads[i].clone();
            let sent = self.client.try_publish_with_properties(
                self.topic.clone(),
                QoS::AtLeastOnce,
                false,
                payload,
                props,
            );
            match sent {
                Ok(()) => flight.awaiting_pkid.push_back(i),
                Err(ClientError::TryRequest(_)) => return,
                // rumqttc refuses an invalid topic name before sending anything.
                Err(ClientError::Request(_)) => {
                    flight.results[i] = Some(Err(PublishError::Permanent(format!(
                        "mqtt {}: invalid topic {:?}",
                        self.shown, self.topic
                    ))));
                    flight.undecided -= 1;
                }
            }
            flight.next_to_feed += 1;
        }
    }

    /// Fails whatever is undecided and drops the session, so nothing of it comes back.
    fn abandon(&mut self, flight: &mut Flight, why: String) {
        let message = format!("mqtt {} topic {}: {why}", self.shown, self.topic);
        for r in flight.results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Err(PublishError::Transient(message.clone())));
        }
        flight.undecided = 0;
        tracing::warn!(broker = %self.shown, error = %why, "mqtt batch abandoned; reconnecting on the next batch");
        self.reset();
    }

    /// Drops the connection and every request, packet id and buffered event of it.
    fn reset(&mut self) {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), REQUEST_CHANNEL);
        self.client = client;
        self.eventloop = eventloop;
        self.connected = false;
    }

    fn judge(&self, reason: &PubAckReason) -> Result<(), PublishError> {
        let message = || {
            format!(
                "mqtt {} topic {}: PUBACK {reason:?}",
                self.shown, self.topic
            )
        };
        match reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
            PubAckReason::NotAuthorized
            | PubAckReason::TopicNameInvalid
            | PubAckReason::PayloadFormatInvalid => Err(PublishError::Permanent(message())),
            PubAckReason::UnspecifiedError
            | PubAckReason::ImplementationSpecificError
            | PubAckReason::PacketIdentifierInUse
            | PubAckReason::QuotaExceeded => Err(PublishError::Transient(message())),
        }
    }
}

/// The payload and MQTT 5 properties of one envelope.
fn properties(env: Envelope) -> (Bytes, PublishProperties) {
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        user_properties: vec![("op_id".into(), env.op_id), ("sha256".into(), env.sha256)],
        ..Default::default()
    };
    (Bytes::from(env.payload), props)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver for the local Mosquitto (`TRUSTLOG_TEST_MQTT_ADDR` overrides it).
    fn local_driver(name: &str) -> Driver {
        let addr = std::env::var("TRUSTLOG_TEST_MQTT_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:1883".to_owned());
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        let id = format!("{}-{name}", default_client_id());
        let mut options = MqttOptions::new(id, host, port.parse().expect("a port"));
        options.set_clean_start(true);
        let topic = format!("trustlog-test/{name}");
        Driver::new(options, topic, Duration::from_secs(3), addr)
    }

    fn envelopes(prefix: &str, n: usize) -> Vec<Envelope> {
        (0..n)
            .map(|i| Envelope {
                op_id: format!("{prefix}-{i}"),
                payload: format!("{{\"n\":{i}}}").into_bytes(),
                sha256: "0".repeat(64),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_publish_event_left_by_a_failed_write_does_not_shift_the_next_batch() {
        let mut driver = local_driver("reset");
        let first = driver.fly(envelopes("first", 5)).await;
        assert!(first.iter().all(Result::is_ok), "{first:?}");

        // A write that fails after rumqttc queued its `Outgoing::Publish` event leaves
        // the event behind; the connection error then makes the driver reset.
        let stale = Event::Outgoing(Outgoing::Publish(42));
        driver.eventloop.state.events.push_back(stale);
        driver.reset();

        let started = Instant::now();
        let next = driver.fly(envelopes("next", 300)).await;
        let failed: Vec<_> = next.iter().filter(|r| r.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            failed[0]
        );
        assert!(
            started.elapsed() < driver.timeout,
            "no envelope waited out the deadline"
        );
    }
}

//! Isolated destinations on the real brokers, and plain consumers that read back what
//! arrived: a stream per test on NATS, a queue on RabbitMQ, a stream key on Redis, a
//! topic on Mosquitto, an HTTP receiver started by the test, a file for the ledger.
//! An unreachable broker fails the test: nothing is ever skipped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use super::proxy::TcpProxy;

/// Every publisher adapter the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    Ledger,
    Nats,
    Amqp,
    Redis,
    Webhook,
    Mqtt,
}

/// One envelope as a plain consumer of the broker sees it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The broker's own id field: `Nats-Msg-Id`, AMQP `message_id`, the `op_id` stream
    /// field, `Idempotency-Key`, the MQTT user property.
    pub op_id: String,
    pub sha256: String,
    pub payload: Vec<u8>,
}

/// A publisher URL whose broker refuses every envelope, and words its refusal has.
pub struct Refusing {
    pub url: String,
    pub says: &'static str,
}

/// A fresh destination on one broker, with a consumer for it.
pub struct TestBroker {
    pub kind: Broker,
    name: String,
    upstream: Option<SocketAddr>,
    /// What the push-style consumers (AMQP, webhook, MQTT) collected.
    store: Arc<Mutex<Vec<Received>>>,
    /// Whether the webhook receiver's `/switch` confirms envelopes.
    accepting: Arc<std::sync::atomic::AtomicBool>,
    dir: Option<tempfile::TempDir>,
    consumer: Option<tokio::task::AbortHandle>,
}

const TIMEOUT: &str = "2s";

fn addr(var: &str, default: &str) -> SocketAddr {
    let text = std::env::var(var).unwrap_or_else(|_| default.into());
    std::net::ToSocketAddrs::to_socket_addrs(&text)
        .unwrap_or_else(|e| panic!("{var}={text}: {e}"))
        .next()
        .unwrap()
}

fn unreachable(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what} is unreachable ({e}); the suites need it running (CI never skips)")
}

impl TestBroker {
    /// A new, empty destination on `kind`'s real server.
    pub async fn create(kind: Broker) -> TestBroker {
        let mut broker = TestBroker {
            kind,
            name: super::unique_name("tl"),
            upstream: None,
            store: Arc::new(Mutex::new(Vec::new())),
            accepting: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            dir: None,
            consumer: None,
        };
        match kind {
            Broker::Ledger => broker.dir = Some(tempfile::tempdir().unwrap()),
            Broker::Nats => {
                let a = nats_addr();
                nats_client(a).await;
                broker.upstream = Some(a);
            }
            Broker::Amqp => {
                let a = addr("TRUSTLOG_TEST_AMQP_ADDR", "127.0.0.1:5672");
                let queue = broker.name.clone();
                broker.consumer = Some(subscribe_amqp(a, &queue, broker.store.clone()).await);
                broker.upstream = Some(a);
            }
            Broker::Redis => {
                let a = addr("TRUSTLOG_TEST_REDIS_ADDR", "127.0.0.1:6379");
                let _: String = redis::cmd("PING")
                    .query_async(&mut redis_connection(a).await)
                    .await
                    .unwrap_or_else(|e| unreachable("Redis", e));
                broker.upstream = Some(a);
            }
            Broker::Webhook => {
                let a = start_receiver(broker.store.clone(), broker.accepting.clone()).await;
                broker.upstream = Some(a);
            }
            Broker::Mqtt => {
                let a = addr("TRUSTLOG_TEST_MQTT_ADDR", "127.0.0.1:1883");
                let topic = broker.mqtt_topic();
                broker.consumer = Some(subscribe_mqtt(a, &topic, broker.store.clone()).await);
                broker.upstream = Some(a);
            }
        }
        broker
    }

    /// The publisher URL for this destination.
    pub fn url(&self) -> String {
        self.url_at(self.upstream)
    }

    /// The publisher URL for this destination, through `proxy`.
    pub fn url_via(&self, proxy: &TcpProxy) -> String {
        self.url_at(Some(proxy.addr()))
    }

    /// The real server's address (what a proxy forwards to).
    pub fn upstream(&self) -> SocketAddr {
        self.upstream.expect("the ledger has no server")
    }

    /// Whether the broker drops a second copy of an envelope by its id.
    pub fn deduplicates(&self) -> bool {
        self.kind == Broker::Nats
    }

    fn ledger_path(&self) -> std::path::PathBuf {
        let dir = self.dir.as_ref().expect("a ledger broker has a directory");
        dir.path().join("t.ledger")
    }

    fn stream_name(&self) -> String {
        self.name.to_uppercase()
    }

    fn mqtt_topic(&self) -> String {
        format!("trustlog-test/{}", self.name)
    }

    fn url_at(&self, at: Option<SocketAddr>) -> String {
        let n = &self.name;
        match self.kind {
            Broker::Ledger => format!("ledger://{}", self.ledger_path().display()),
            Broker::Nats => format!(
                "nats://{}?stream={}&subject={n}.ops&timeout={TIMEOUT}",
                at.unwrap(),
                self.stream_name()
            ),
            Broker::Amqp => format!(
                "amqp://guest:guest@{}/%2f?routing_key={n}&timeout={TIMEOUT}",
                at.unwrap()
            ),
            Broker::Redis => format!("redis://{}/0?stream={n}&timeout={TIMEOUT}", at.unwrap()),
            Broker::Webhook => format!("http://{}/hook#timeout={TIMEOUT}", at.unwrap()),
            Broker::Mqtt => format!(
                "mqtt://{}?topic={}&timeout={TIMEOUT}",
                at.unwrap(),
                self.mqtt_topic()
            ),
        }
    }

    /// A webhook URL on this receiver that answers, but fails every envelope with a
    /// 503: transient failures that spend retries, with no outage.
    pub fn busy_url(&self) -> String {
        assert_eq!(
            self.kind,
            Broker::Webhook,
            "only the webhook receiver has /busy"
        );
        format!("http://{}/busy#timeout={TIMEOUT}", self.upstream.unwrap())
    }

    /// A webhook URL on this receiver that fails every envelope with a 503, answering,
    /// until [`TestBroker::accept`] turns it into one that confirms them.
    pub fn switch_url(&self) -> String {
        assert_eq!(
            self.kind,
            Broker::Webhook,
            "only the webhook receiver has /switch"
        );
        format!("http://{}/switch#timeout={TIMEOUT}", self.upstream.unwrap())
    }

    /// A webhook URL on this receiver that fails each op_id's first delivery with a
    /// 503 and confirms the next.
    pub fn once_busy_url(&self) -> String {
        assert_eq!(
            self.kind,
            Broker::Webhook,
            "only the webhook receiver has /once"
        );
        format!("http://{}/once#timeout={TIMEOUT}", self.upstream.unwrap())
    }

    /// Makes `/switch` confirm envelopes from now on.
    pub fn accept(&self) {
        self.accepting
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A destination on the same server that refuses every envelope, for good.
    pub async fn refusing(&self) -> Option<Refusing> {
        let n = &self.name;
        let up = self.upstream;
        match self.kind {
            Broker::Ledger => None,
            Broker::Nats => {
                // A stream that takes no message larger than 64 bytes.
                let js = async_nats::jetstream::new(nats_client(up.unwrap()).await);
                let stream = format!("{}_SMALL", self.stream_name());
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![format!("{n}.small")],
                    max_message_size: 64,
                    ..Default::default()
                })
                .await
                .unwrap();
                Some(Refusing {
                    url: format!(
                        "nats://{}?stream={stream}&subject={n}.small&timeout={TIMEOUT}",
                        up.unwrap()
                    ),
                    says: "maximum",
                })
            }
            // Nothing is bound to this key on amq.direct: a mandatory publish comes back.
            Broker::Amqp => Some(Refusing {
                url: format!(
                    "amqp://guest:guest@{}/%2f?exchange=amq.direct&routing_key={n}.nowhere&timeout={TIMEOUT}",
                    up.unwrap()
                ),
                says: "312 NO_ROUTE",
            }),
            Broker::Redis => {
                // A key that holds a string, not a stream.
                let key = format!("{n}_string");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg("not a stream")
                    .query_async(&mut redis_connection(up.unwrap()).await)
                    .await
                    .unwrap();
                Some(Refusing {
                    url: format!("redis://{}/0?stream={key}&timeout={TIMEOUT}", up.unwrap()),
                    says: "WRONGTYPE",
                })
            }
            Broker::Webhook => Some(Refusing {
                url: format!("http://{}/reject#timeout={TIMEOUT}", up.unwrap()),
                says: "HTTP 422 Unprocessable Entity: schema v9 required",
            }),
            // Mosquitto refuses client publishes under $SYS.
            Broker::Mqtt => Some(Refusing {
                url: format!("mqtt://{}?topic=$SYS/{n}&timeout={TIMEOUT}", up.unwrap()),
                says: "PUBACK NotAuthorized",
            }),
        }
    }

    /// Everything the destination holds (or its consumer got) so far.
    pub async fn received(&self) -> Vec<Received> {
        match self.kind {
            Broker::Ledger => {
                let text = std::fs::read_to_string(self.ledger_path()).unwrap_or_default();
                text.lines()
                    .map(|line| {
                        let entry: LedgerLine = serde_json::from_str(line).unwrap();
                        let payload: serde_json::Value =
                            serde_json::from_str(entry.payload.get()).unwrap();
                        Received {
                            op_id: payload["op_id"].as_str().unwrap().into(),
                            sha256: entry.sha256,
                            payload: entry.payload.get().as_bytes().to_vec(),
                        }
                    })
                    .collect()
            }
            Broker::Nats => read_nats(self.upstream(), &self.stream_name()).await,
            Broker::Redis => read_redis(self.upstream(), &self.name).await,
            Broker::Amqp | Broker::Webhook | Broker::Mqtt => self.store.lock().unwrap().clone(),
        }
    }

    /// Waits (up to 20 s) until at least `n` envelopes arrived; returns them all.
    pub async fn wait_received(&self, n: usize) -> Vec<Received> {
        self.wait_until(|got| got.len() >= n).await
    }

    /// Waits (up to 20 s) until every id in `ids` arrived. Counting is not enough where
    /// a cut makes duplicates: `n` messages may hold fewer than `n` op_ids.
    pub async fn wait_for_ids(&self, ids: &BTreeSet<String>) -> Vec<Received> {
        self.wait_until(|got| {
            let arrived: BTreeSet<&str> = got.iter().map(|r| r.op_id.as_str()).collect();
            ids.iter().all(|id| arrived.contains(id.as_str()))
        })
        .await
    }

    /// Waits (up to 20 s) until what arrived satisfies `done`; returns it all.
    pub async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received().await;
            if done(&got) || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The fields of a ledger line the consumer needs; the payload as its exact bytes.
#[derive(serde::Deserialize)]
struct LedgerLine<'a> {
    sha256: String,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

impl Drop for TestBroker {
    /// Deletes what the test made on the shared servers (streams, queues, keys), so
    /// runs do not pile them up. Best effort: a server that went away keeps them.
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            consumer.abort();
        }
        let (kind, name, stream, upstream) = (
            self.kind,
            self.name.clone(),
            self.stream_name(),
            self.upstream,
        );
        let Some(a) = upstream else { return };
        let cleanup = async move {
            match kind {
                Broker::Nats => {
                    let js = async_nats::jetstream::new(nats_client(a).await);
                    let _ = js.delete_stream(&stream).await;
                    let _ = js.delete_stream(format!("{stream}_SMALL")).await;
                }
                Broker::Amqp => {
                    let (_conn, channel) = amqp_channel(a).await;
                    let _ = channel
                        .queue_delete(name.as_str().into(), Default::default())
                        .await;
                }
                Broker::Redis => {
                    let _: redis::RedisResult<()> = redis::cmd("DEL")
                        .arg(&name)
                        .arg(format!("{name}_string"))
                        .query_async(&mut redis_connection(a).await)
                        .await;
                }
                Broker::Ledger | Broker::Webhook | Broker::Mqtt => {}
            }
        };
        // Drop cannot await, and the test's runtime may be shutting down: use a thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(5), cleanup).await;
                })
        })
        .join();
    }
}

/// The NATS server the suites use (`TRUSTLOG_TEST_NATS_ADDR`).
pub fn nats_addr() -> SocketAddr {
    addr("TRUSTLOG_TEST_NATS_ADDR", "127.0.0.1:4222")
}

/// A client of the NATS server at `a`; an unreachable server fails the test.
pub async fn nats_client(a: SocketAddr) -> async_nats::Client {
    async_nats::connect(format!("nats://{a}"))
        .await
        .unwrap_or_else(|e| unreachable("NATS", e))
}

async fn read_nats(a: SocketAddr, stream: &str) -> Vec<Received> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let js = async_nats::jetstream::new(nats_client(a).await);
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let total = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let before = out.len();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let headers = m.headers.clone().unwrap_or_default();
            let header = |h: &str| {
                headers
                    .get(h)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            };
            out.push(Received {
                op_id: header("Nats-Msg-Id"),
                sha256: header("Trustlog-Sha256"),
                payload: m.payload.to_vec(),
            });
        }
        if out.len() == before {
            break;
        }
    }
    out
}

async fn amqp_channel(a: SocketAddr) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{a}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap_or_else(|e| unreachable("RabbitMQ", e));
    let channel = conn.create_channel().await.unwrap();
    (conn, channel)
}

/// Declares the queue the publisher will use and consumes it (auto-ack) into `store`
/// from now on, as an application reading the trust log would.
async fn subscribe_amqp(
    a: SocketAddr,
    queue: &str,
    store: Arc<Mutex<Vec<Received>>>,
) -> tokio::task::AbortHandle {
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let (conn, channel) = amqp_channel(a).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "".into(), no_ack, FieldTable::default())
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _keep = (conn, channel);
        while let Some(Ok(delivery)) = consumer.next().await {
            let props = &delivery.properties;
            let sha256 = props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("trustlog-sha256").cloned())
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => Some(s.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            store.lock().unwrap().push(Received {
                op_id: props
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                sha256,
                payload: delivery.data.clone(),
            });
        }
    });
    task.abort_handle()
}

async fn redis_connection(a: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{a}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| unreachable("Redis", e))
}

async fn read_redis(a: SocketAddr, key: &str) -> Vec<Received> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis_connection(a).await)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| Received {
            op_id: entry.get("op_id").unwrap_or_default(),
            sha256: entry.get("sha256").unwrap_or_default(),
            payload: entry.get("envelope").unwrap_or_default(),
        })
        .collect()
}

async fn subscribe_mqtt(
    a: SocketAddr,
    topic: &str,
    store: Arc<Mutex<Vec<Received>>>,
) -> tokio::task::AbortHandle {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(
        format!("reader-{}", super::unique_name("tl")),
        a.ip().to_string(),
        a.port(),
    );
    options.set_clean_start(true);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let task = tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let props = p.properties.unwrap_or_default();
                    let prop = |k: &str| {
                        props
                            .user_properties
                            .iter()
                            .find(|(name, _)| name == k)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    store.lock().unwrap().push(Received {
                        op_id: prop("op_id"),
                        sha256: prop("sha256"),
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    if subscribed_tx.is_some() {
                        unreachable("Mosquitto", e);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .unwrap_or_else(|e| unreachable("Mosquitto", e))
        .unwrap_or_else(|e| unreachable("Mosquitto", e));
    task.abort_handle()
}

/// The HTTP receiver: `/hook` takes everything, `/reject` refuses everything with 422,
/// `/busy` answers every envelope 503 (up, but never confirming), `/switch` answers 503
/// until switched to accept, and `/once` fails each op_id's first delivery with a 503.
async fn start_receiver(
    store: Arc<Mutex<Vec<Received>>>,
    accepting: Arc<std::sync::atomic::AtomicBool>,
) -> SocketAddr {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::collections::HashSet;
    use std::sync::atomic::Ordering;

    #[derive(Clone)]
    struct Receiver {
        store: Arc<Mutex<Vec<Received>>>,
        accepting: Arc<std::sync::atomic::AtomicBool>,
        seen: Arc<Mutex<HashSet<String>>>,
    }

    fn keep(store: &Mutex<Vec<Received>>, headers: &HeaderMap, body: Bytes) -> StatusCode {
        let header = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        store.lock().unwrap().push(Received {
            op_id: header("idempotency-key"),
            sha256: header("trustlog-sha256"),
            payload: body.to_vec(),
        });
        StatusCode::OK
    }
    async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        keep(&r.store, &headers, body)
    }
    async fn reject() -> (StatusCode, &'static str) {
        (StatusCode::UNPROCESSABLE_ENTITY, "schema v9 required")
    }
    async fn busy() -> (StatusCode, &'static str) {
        (StatusCode::SERVICE_UNAVAILABLE, "busy, try later")
    }
    async fn switch(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        if !r.accepting.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        keep(&r.store, &headers, body)
    }
    async fn once(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let id = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if r.seen.lock().unwrap().insert(id) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        keep(&r.store, &headers, body)
    }

    let app = axum::Router::new()
        .route("/hook", post(hook))
        .route("/reject", post(reject))
        .route("/busy", post(busy))
        .route("/switch", post(switch))
        .route("/once", post(once))
        .with_state(Receiver {
            store,
            accepting,
            seen: Arc::new(Mutex::new(HashSet::new())),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    a
}

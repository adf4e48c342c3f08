//! `redis://HOST:PORT/DB?stream=trustlog`: Redis Streams.
//!
//! One `XADD` per envelope with the fields `op_id`, `sha256` and `envelope`, the whole
//! batch in one pipeline (one round trip). Redis answers each command, so each envelope
//! is judged on its own reply; a lost connection fails the batch transiently, and the
//! connection manager reconnects on the next one. Redis cannot drop duplicates, so a
//! re-delivery after a lost reply appears twice in the stream (at-least-once).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Value};
use trustlog_guest::model::{Envelope, PublishError};

use super::PublisherError;
use super::options::{UrlOptions, invalid, redact, without_options};

/// A Redis stream key that receives the envelopes.
#[derive(Clone)]
pub struct RedisStreamsPublisher {
    connection: ConnectionManager,
    shown: String,
    stream: String,
    maxlen: Option<u64>,
}

impl std::fmt::Debug for RedisStreamsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsPublisher")
            .field("server", &self.shown)
            .field("stream", &self.stream)
            .finish()
    }
}

/// Server replies that say "not now" rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "BUSY",
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "OOM",
    "NOREPLICAS",
    "MOVED",
    "ASK",
];

impl RedisStreamsPublisher {
    /// Sets up a lazy, self-reconnecting connection; a server that is down now is not fatal.
    pub fn connect(url: &str) -> Result<RedisStreamsPublisher, PublisherError> {
        let (parsed, mut opts) = UrlOptions::from_query(url)?;
        let stream = opts.non_empty("stream", "trustlog")?;
        let timeout = opts.duration("timeout", Duration::from_secs(5))?;
        let maxlen = match opts.parsed::<u64>("maxlen", 0)? {
            0 => None,
            n => Some(n),
        };
        opts.finish()?;
        let server = without_options(&parsed);
        let info = redis::IntoConnectionInfo::into_connection_info(server.as_str())
            .map_err(|e| invalid(url, e.to_string()))?;
        // Without TCP_NODELAY the tail of each pipeline can wait for a delayed ACK.
        let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| invalid(url, e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(timeout / 2);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| invalid(url, e.to_string()))?;
        Ok(RedisStreamsPublisher {
            connection,
            shown: redact(&server),
            stream,
            maxlen,
        })
    }

    /// Whether the server answers a PING.
    pub async fn ready(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| format!("redis {}: {e}", self.shown))
    }

    /// Appends the batch in one pipeline; one result per envelope.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let n = batch.len();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for env in &batch {
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(maxlen) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(maxlen);
            }
            cmd.arg("*")
                .arg("op_id")
                .arg(&env.op_id)
                .arg("sha256")
                .arg(&env.sha256)
                .arg("envelope")
                .arg(&env.payload);
        }
        let mut connection = self.connection.clone();
        let replies: RedisResult<Vec<RedisResult<Value>>> = pipe.query_async(&mut connection).await;
        match replies {
            Ok(replies) if replies.len() == n => replies
                .into_iter()
                .map(|r| r.map(|_| ()).map_err(|e| self.classify(e)))
                .collect(),
            Ok(replies) => vec![
                Err(PublishError::Transient(format!(
                    "redis {}: {} replies for {n} commands",
                    self.shown,
                    replies.len()
                )));
                n
            ],
            Err(e) => vec![Err(self.classify(e)); n],
        }
    }

    fn classify(&self, e: RedisError) -> PublishError {
        let message = format!("redis {} stream {:?}: {e}", self.shown, self.stream);
        let refused_by_server = match e.code() {
            Some(code) => !TRANSIENT_CODES.contains(&code),
            None => false,
        };
        if refused_by_server && !e.is_io_error() && !e.is_timeout() && !e.is_connection_dropped() {
            PublishError::Permanent(message)
        } else {
            PublishError::Transient(message)
        }
    }
}

//! The registry of adapters by URL scheme: the built-in ones, and those a user
//! registers without touching this crate.
//!
//! ```no_run
//! # use trustlog_host::adapters::Adapters;
//! # use trustlog_host::publisher::{PublisherAdapter, PublisherError};
//! # use trustlog_guest::model::{Envelope, PublishError};
//! #[derive(Debug)]
//! struct Kafka;
//!
//! #[async_trait::async_trait]
//! impl PublisherAdapter for Kafka {
//!     async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
//!         batch.iter().map(|_| Ok(())).collect()
//!     }
//! }
//!
//! # async fn run() -> Result<(), PublisherError> {
//! let adapters = Adapters::new().with_publisher("kafka", |_url| async { Ok(Kafka) });
//! let publisher = adapters.connect_publisher("kafka://broker:9092/ops").await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use trustlog_guest::model::DbError;

use crate::db::{Database, DatabaseAdapter};
use crate::publisher::{Publisher, PublisherAdapter, PublisherError};

/// Connects a database adapter to a URL of its scheme.
type ConnectDatabase =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Database, DbError>> + Send + Sync>;

/// Connects a publisher adapter to a URL of its scheme.
type ConnectPublisher =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Publisher, PublisherError>> + Send + Sync>;

/// Which adapter serves which URL scheme.
///
/// A registered scheme is looked up before the built-in ones, so registering
/// `ledger` (say) replaces the built-in ledger for URLs that use this registry.
#[derive(Clone, Default)]
pub struct Adapters {
    databases: BTreeMap<String, ConnectDatabase>,
    publishers: BTreeMap<String, ConnectPublisher>,
}

impl fmt::Debug for Adapters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapters")
            .field("databases", &self.databases.keys().collect::<Vec<_>>())
            .field("publishers", &self.publishers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Adapters {
    /// The built-in adapters only: `sqlite`, `postgres`, `mysql`/`mariadb`; `ledger`,
    /// `nats`, `amqp`, `redis`, `http(s)`, `mqtt`.
    pub fn new() -> Adapters {
        Adapters::default()
    }

    /// The same registry, with `connect` serving database URLs of `scheme`
    /// (`scheme:…`). `connect` is given the whole URL.
    ///
    /// # Panics
    /// When `scheme` is not a URL scheme (a letter, then letters, digits, `+`, `-`, `.`).
    pub fn with_database<F, Fut, D>(mut self, scheme: &str, connect: F) -> Adapters
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, DbError>> + Send + 'static,
        D: DatabaseAdapter,
    {
        let connect: ConnectDatabase = Arc::new(move |url| {
            let connecting = connect(url);
            Box::pin(async move { connecting.await.map(Database::custom) })
        });
        self.databases.insert(checked(scheme), connect);
        self
    }

    /// The same registry, with `connect` serving publisher URLs of `scheme`
    /// (`scheme://…`). `connect` is given the whole URL.
    ///
    /// # Panics
    /// When `scheme` is not a URL scheme (a letter, then letters, digits, `+`, `-`, `.`).
    pub fn with_publisher<F, Fut, P>(mut self, scheme: &str, connect: F) -> Adapters
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P, PublisherError>> + Send + 'static,
        P: PublisherAdapter,
    {
        let connect: ConnectPublisher = Arc::new(move |url| {
            let connecting = connect(url);
            Box::pin(async move { connecting.await.map(Publisher::custom) })
        });
        self.publishers.insert(checked(scheme), connect);
        self
    }

    /// Connects to the database at `url` with the adapter of its scheme.
    pub async fn connect_database(&self, url: &str) -> Result<Database, DbError> {
        match scheme_of(url).and_then(|s| self.databases.get(&s)) {
            Some(connect) => connect(url.to_string()).await,
            None => Database::connect(url).await,
        }
    }

    /// Connects to the trust log at `url` with the adapter of its scheme.
    pub async fn connect_publisher(&self, url: &str) -> Result<Publisher, PublisherError> {
        match scheme_of(url).and_then(|s| self.publishers.get(&s)) {
            Some(connect) => connect(url.to_string()).await,
            None => Publisher::connect(url).await,
        }
    }

    /// Whether a database adapter of this registry (not a built-in one) serves `url`.
    pub fn registers_database(&self, url: &str) -> bool {
        scheme_of(url).is_some_and(|s| self.databases.contains_key(&s))
    }
}

/// The scheme of `url`, lower-cased as RFC 3986 compares it.
fn scheme_of(url: &str) -> Option<String> {
    url.split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
}

/// `scheme`, lower-cased, if it is one (RFC 3986: a letter, then letters, digits,
/// `+`, `-` or `.`).
fn checked(scheme: &str) -> String {
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    assert!(valid, "{scheme:?} is not a URL scheme");
    scheme.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustlog_guest::model::{Envelope, PublishError};

    #[derive(Debug)]
    struct Refusing(String);

    #[async_trait::async_trait]
    impl PublisherAdapter for Refusing {
        async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
            batch
                .iter()
                .map(|_| Err(PublishError::Permanent(self.0.clone())))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_registered_scheme_is_served_by_its_adapter_and_the_rest_by_the_built_ins() {
        let adapters = Adapters::new().with_publisher("Refuse", |url| async move {
            Ok(Refusing(format!("refused by {url}")))
        });
        let custom = adapters.connect_publisher("refuse://x/y").await.unwrap();
        assert!(matches!(custom, Publisher::Custom(_)), "{custom:?}");
        let envelope = Envelope {
            op_id: "op-1".into(),
            payload: b"{}".to_vec(),
            sha256: String::new(),
        };
        let results = custom.publish(vec![envelope]).await;
        assert_eq!(
            results,
            vec![Err(PublishError::Permanent(
                "refused by refuse://x/y".into()
            ))]
        );
        let dir = tempfile::tempdir().unwrap();
        let ledger = format!("ledger://{}", dir.path().join("l").display());
        assert!(matches!(
            adapters.connect_publisher(&ledger).await,
            Ok(Publisher::Ledger(_))
        ));
        let e = adapters
            .connect_publisher("kafka://k:9092")
            .await
            .unwrap_err();
        assert!(matches!(e, PublisherError::UnsupportedUrl(_)), "{e}");
        let e = Adapters::new()
            .connect_publisher("refuse://x")
            .await
            .unwrap_err();
        assert!(matches!(e, PublisherError::UnsupportedUrl(_)), "{e}");
    }

    #[tokio::test]
    async fn a_factory_error_is_the_connect_error() {
        let adapters = Adapters::new().with_database("nowhere", |url| async move {
            Err::<crate::db::sqlite::SqliteDb, _>(DbError::Unavailable(format!("{url} is down")))
        });
        assert!(adapters.registers_database("nowhere://a"));
        assert!(!adapters.registers_database("sqlite://a"));
        let e = adapters.connect_database("nowhere://a").await.unwrap_err();
        assert_eq!(e, DbError::Unavailable("nowhere://a is down".into()));
    }

    #[test]
    #[should_panic(expected = "is not a URL scheme")]
    fn a_scheme_must_be_one() {
        let _ = Adapters::new().with_database("no scheme", |_| async {
            Err::<crate::db::sqlite::SqliteDb, _>(DbError::Other("never".into()))
        });
    }
}

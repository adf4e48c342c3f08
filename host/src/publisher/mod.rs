//! Publisher adapters, chosen by URL; each speaks the WIT `publisher` interface.

pub mod ledger;

use trustlog_guest::model::{Envelope, PublishError};

/// Why a publisher URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("unsupported publisher URL {0:?}; expected ledger://PATH")]
    UnsupportedUrl(String),
    #[error("publisher URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
}

/// A trust log endpoint behind one of the adapters.
#[derive(Clone, Debug)]
pub enum Publisher {
    Ledger(ledger::LedgerPublisher),
    /// For commands that never publish (status): every publish fails, transiently.
    Disabled,
}

impl Publisher {
    /// Connects by URL: `ledger://PATH`.
    pub async fn connect(url: &str) -> Result<Publisher, PublisherError> {
        match url.split_once("://") {
            Some(("ledger", path)) if !path.is_empty() => Ok(Publisher::Ledger(
                ledger::LedgerPublisher::open(path.into()).await,
            )),
            Some(("ledger", _)) => Err(PublisherError::InvalidUrl {
                url: url.into(),
                message: "the ledger path is empty".into(),
            }),
            _ => Err(PublisherError::UnsupportedUrl(url.into())),
        }
    }

    /// Delivers a batch; one result per envelope, in order. Ok means confirmed.
    pub async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        match self {
            Publisher::Ledger(p) => p.publish(batch).await,
            Publisher::Disabled => batch
                .iter()
                .map(|_| Err(PublishError::Transient("no publisher configured".into())))
                .collect(),
        }
    }
}

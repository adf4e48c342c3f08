//! What people and programs reach: the command line, the HTTP API, the Prometheus
//! metrics, the JSON lines operations come in as, and the JSON reports go out as.

pub mod cli;
pub mod console;
pub mod history;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod report;

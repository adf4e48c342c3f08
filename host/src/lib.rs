//! trustlog host: runs the trustlog component (decisions) against real
//! databases and publishers (I/O), one sandbox per tenant.

#![warn(missing_docs)]

pub mod adapters;
pub mod bench;
pub mod bindings;
pub mod cli;
pub mod clock;
pub mod component_cache;
pub mod config;
pub mod db;
pub mod embed;
pub mod epoch;
pub mod guest_output;
pub mod http;
pub mod imports;
pub mod ingest;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod native;
pub mod publisher;
pub mod report;
pub mod runtime;
pub mod sample;
pub mod tenant;
pub mod tenants;
pub mod worker;

//! trustlog host: runs the trustlog component (decisions) against real
//! databases and publishers (I/O), one sandbox per tenant.
//!
//! The modules follow the architecture of DESIGN.md:
//! - [`sandbox`]: the wasm engine, the component's bindings and imports, and the
//!   limits each tenant's guest runs under;
//! - [`scheduling`]: the worker that drives a tenant's ticks, the tenants of a host,
//!   and the lease that lets several hosts share a database;
//! - the adapters: [`db`] and [`publisher`] (each with its trait and one file per
//!   adapter), the [`ledger`] file format (the `trustlog-ledger` crate, which an auditor
//!   uses without the engine), and the [`adapters`] registry by URL scheme;
//! - [`surfaces`]: what people and programs reach: the CLI, the HTTP API, the metrics,
//!   ingestion of JSON lines; [`embed`] is the surface for a program of the user's own,
//!   and [`config`] the `serve --config` file;
//! - [`bench`](mod@bench) and [`sample`]: `trustlog bench` and its sample operations.

#![warn(missing_docs)]

pub mod adapters;
pub mod bench;
pub mod config;
pub mod db;
pub mod embed;
pub mod publisher;
pub mod sample;
pub mod sandbox;
pub mod scheduling;
pub mod surfaces;

pub use trustlog_ledger as ledger;

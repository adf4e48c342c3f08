//! The `trustlog` command line, as a library: the `trustlog` binary is
//! `cli::main(Adapters::new())`, and a program of the user's own is the same command
//! line with adapters of its own registered (docs/writing-an-adapter.md).

mod args;
mod commands;
mod ledger;
mod operations;

use std::process::ExitCode;

use clap::Parser;

use crate::adapters::Adapters;

/// Directives added to every filter: the NATS client logs each failed reconnect at ERROR,
/// once a second for as long as a broker is down; the worker says so once per outage.
const QUIET: &str = "async_nats::connector=off";

fn init_tracing(format: args::LogFormat) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{QUIET}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        args::LogFormat::Text => builder.init(),
        args::LogFormat::Json => builder.json().init(),
    }
}

/// Parses the process's arguments, sets up logging to stderr, and runs the command,
/// connecting every database and publisher URL through `adapters`; the process's exit
/// code. Call it from within a tokio runtime.
pub async fn main(adapters: Adapters) -> ExitCode {
    let cli = args::Cli::parse();
    init_tracing(cli.log_format);
    match commands::run(cli.command, &adapters).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

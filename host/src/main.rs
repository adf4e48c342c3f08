//! The `trustlog` binary: parses the command line and runs one command.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

// Delivery allocates per row (decoded columns, envelopes); mimalloc keeps that cheap.
// Built without transparent huge pages (`no_thp`): each batch's large buffers (a
// packed batch is hundreds of KiB) otherwise landed on fresh 2 MiB pages that the
// kernel zeroed whole, 2% of a SQLite drain in `perf`, and RSS was 60% higher.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Directives added to every filter: the NATS client logs each failed reconnect at ERROR,
/// once a second for as long as a broker is down; the worker says so once per outage.
const QUIET: &str = "async_nats::connector=off";

fn init_tracing(format: cli::LogFormat) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{QUIET}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("info,{QUIET}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.log_format);
    match commands::run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

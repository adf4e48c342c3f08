//! The `trustlog` binary: the command line with the built-in adapters.

use std::process::ExitCode;

use trustlog_host::adapters::Adapters;

// Delivery allocates per row (decoded columns, envelopes); mimalloc keeps that cheap.
// Built without transparent huge pages (`no_thp`): each batch's large buffers (a
// packed batch is hundreds of KiB) otherwise landed on fresh 2 MiB pages that the
// kernel zeroed whole, 2% of a SQLite drain in `perf`, and RSS was 60% higher.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    trustlog_host::surfaces::cli::main(Adapters::new()).await
}

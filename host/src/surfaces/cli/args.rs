//! The `trustlog` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use trustlog_guest::model::{
    Backoff, Config, DEFAULT_CURSOR_KEY, DEFAULT_PIPELINE_DEPTH, MAX_PIPELINE_DEPTH, Strategy,
};

use crate::scheduling::worker::Intervals;

/// The embedded default database.
pub const DEFAULT_DB: &str = "sqlite://trustlog.db";
/// The embedded default publisher.
pub const DEFAULT_PUBLISHER: &str = "ledger://trustlog.ledger";
/// Where `serve` answers HTTP unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Delivers every operation your application records in SQL to a trust log: asynchronously, with retries and dead letters, nothing lost.
#[derive(Debug, Parser)]
#[command(name = "trustlog", version, propagate_version = true)]
pub struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TRUSTLOG_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (filter with RUST_LOG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the workers: deliver stored operations, retry failures, sweep late rows.
    Serve(Box<ServeArgs>),
    /// Create the missing tables, and report how existing ones measure up: what serves as
    /// is, and the SQL of what must change (run with --apply).
    Migrate(MigrateArgs),
    /// Record operations from JSON lines on stdin, applying the strategy.
    Record(RecordArgs),
    /// Print the monitoring figures.
    Status(StatusArgs),
    /// List, replay or purge dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Inspect the embedded ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Find operations: one by op_id, or every one matching filters.
    #[command(subcommand)]
    Operations(OperationsCommand),
    /// The component this binary embeds, for another wasm runtime to host.
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Record 1,000 sample operations, deliver them and print the status.
    Demo(DemoArgs),
    /// Measure delivery throughput and latency in a fresh schema (see BENCHMARKS.md).
    Bench(BenchArgs),
}

/// `--db`.
#[derive(Debug, Args)]
pub struct DbArg {
    /// Database URL: sqlite://PATH, postgres://USER@HOST/DB, mysql://USER@HOST/DB.
    #[arg(long, env = "TRUSTLOG_DB", default_value = DEFAULT_DB)]
    pub db: String,
}

/// `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Also make the changes the report lists (ALTER TABLE on existing tables).
    #[arg(long)]
    pub apply: bool,
}

/// `--publisher`.
#[derive(Debug, Args)]
pub struct PublisherArg {
    /// Publisher URL: ledger://PATH, nats://HOST:PORT, amqp://HOST/VHOST, redis://HOST/DB,
    /// http(s)://HOST/PATH or mqtt://HOST:PORT (options in the query; see docs/adapters.md).
    #[arg(long, env = "TRUSTLOG_PUBLISHER", default_value = DEFAULT_PUBLISHER)]
    pub publisher: String,
}

/// Engine settings shared by every command that runs the engine.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Rows per scan, retry and sweep batch.
    #[arg(long, env = "TRUSTLOG_BATCH_SIZE", default_value_t = 100)]
    pub batch_size: u32,
    /// Scan batches out at once (1 to 8): 3 reads a batch while the one before it is at
    /// the trust log and the one before that commits; 1 delivers one batch at a time.
    #[arg(long, env = "TRUSTLOG_PIPELINE_DEPTH", default_value_t = DEFAULT_PIPELINE_DEPTH,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PIPELINE_DEPTH)))]
    pub pipeline_depth: u32,
    /// The trustlog_cursor key this worker advances.
    #[arg(long, env = "TRUSTLOG_CURSOR_KEY", default_value = DEFAULT_CURSOR_KEY)]
    pub cursor_key: String,
    /// Delay before the first retry.
    #[arg(long, env = "TRUSTLOG_BACKOFF_BASE", default_value = "1m", value_parser = humantime::parse_duration)]
    pub backoff_base: Duration,
    /// Each further retry waits this many times longer.
    #[arg(long, env = "TRUSTLOG_BACKOFF_FACTOR", default_value_t = 2)]
    pub backoff_factor: u32,
    /// The longest wait between retries.
    #[arg(long, env = "TRUSTLOG_BACKOFF_CAP", default_value = "16m", value_parser = humantime::parse_duration)]
    pub backoff_cap: Duration,
    /// Failed retries before an operation is dead-lettered.
    #[arg(long, env = "TRUSTLOG_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,
    /// The strategy for operations recorded without one.
    #[arg(long, env = "TRUSTLOG_STRATEGY", default_value = "db-and-trustlog", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// How far behind the cursor each wake-up looks for rows that committed late; 0s
    /// leaves them to the sweep.
    #[arg(long, env = "TRUSTLOG_CATCH_UP_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub catch_up_window: Duration,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
        .map_err(|e: trustlog_guest::model::FieldError| e.message)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl EngineArgs {
    /// The guest configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            cursor_key: self.cursor_key.clone(),
            batch_size: self.batch_size,
            backoff: Backoff {
                base_micros: micros(self.backoff_base),
                factor: self.backoff_factor,
                cap_micros: micros(self.backoff_cap),
                max_retries: self.max_retries,
            },
            default_strategy: self.strategy,
            catch_up_window_micros: micros(self.catch_up_window),
            pipeline_depth: self.pipeline_depth,
        }
    }
}

/// Scheduler intervals.
#[derive(Debug, Args)]
pub struct IntervalArgs {
    /// Idle poll of the scan; a row recorded through this host wakes it sooner.
    #[arg(long, env = "TRUSTLOG_POLL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// How often due retries are looked for.
    #[arg(long, env = "TRUSTLOG_RETRY_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub retry_interval: Duration,
    /// How often rows left behind the cursor, however far (late commits beyond the
    /// catch-up window), are looked for.
    #[arg(long, env = "TRUSTLOG_SWEEP_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// How often an idle worker asks the database for rows other programs wrote, where it
    /// cannot be notified (MariaDB, SQLite, PostgreSQL with --poll-only).
    #[arg(long, env = "TRUSTLOG_WATCH_INTERVAL", default_value = "50ms", value_parser = parse_watch_interval)]
    pub watch_interval: Duration,
    /// How long this host's lease on a tenant lasts unless renewed; another host on the
    /// same database takes over within about this after this one dies.
    #[arg(long, env = "TRUSTLOG_LEASE_TTL", default_value = "5s", value_parser = parse_lease_ttl)]
    pub lease_ttl: Duration,
}

fn parse_watch_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

impl IntervalArgs {
    /// The worker's intervals.
    pub fn intervals(&self) -> Intervals {
        Intervals {
            poll: self.poll_interval,
            retry: self.retry_interval,
            sweep: self.sweep_interval,
            watch: self.watch_interval,
            lease_ttl: self.lease_ttl,
        }
    }
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of `[[tenant]]` entries: one host, many tenants (see
    /// docs/configuration.md, "Many tenants"). Re-read on SIGHUP. Replaces --db, --publisher and the engine flags.
    #[arg(long, env = "TRUSTLOG_CONFIG", conflicts_with_all = ["db", "publisher", "component"])]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub publisher: PublisherArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub intervals: IntervalArgs,
    /// Deliver what can be delivered, waiting for due retries, and exit 0 once every row
    /// is TRUSTLOGGED, db-only or a dead letter.
    #[arg(long)]
    pub until_drained: bool,
    /// With --until-drained: give up after this long and exit 1, printing what is left.
    #[arg(long, env = "TRUSTLOG_MAX_WAIT", requires = "until_drained", value_parser = humantime::parse_duration)]
    pub max_wait: Option<Duration>,
    /// With --until-drained: when every tick fails, delivering nothing, for this long
    /// (a table it cannot read, a guest that traps), exit 1 with the last error and what
    /// is left. An outage of the database or the trust log is waited out instead.
    #[arg(long, env = "TRUSTLOG_GIVE_UP_AFTER", requires = "until_drained", default_value = "60s", value_parser = humantime::parse_duration)]
    pub give_up_after: Duration,
    /// Never LISTEN for new rows; rely on the idle poll (for PgBouncer in transaction mode).
    #[arg(long, env = "TRUSTLOG_POLL_ONLY")]
    pub poll_only: bool,
    /// HTTP address for the API, /metrics and the probes [default: 127.0.0.1:8080;
    /// with --until-drained, no HTTP unless given]; port 0 picks a free port, `none` turns HTTP off.
    #[arg(long, env = "TRUSTLOG_LISTEN")]
    pub listen: Option<String>,
    /// Bearer secret of an admin of the whole host (every route). Once any credential
    /// is configured, every route but /healthz and /readyz needs one.
    #[arg(long, env = "TRUSTLOG_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve HTTP on a non-loopback address with no credential configured: anyone who
    /// reaches the port may write operations.
    #[arg(long, env = "TRUSTLOG_INSECURE_ALLOW_UNAUTHENTICATED")]
    pub insecure_allow_unauthenticated: bool,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2) with this PEM certificate chain; needs
    /// --tls-key. Overrides the config file's tls_cert. Re-read on SIGHUP.
    #[arg(long, env = "TRUSTLOG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TRUSTLOG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Run this component file instead of the built-in one (a newer or a custom engine).
    #[arg(long, env = "TRUSTLOG_COMPONENT")]
    pub component: Option<PathBuf>,
}

impl ServeArgs {
    /// The address to serve HTTP on, if any.
    /// The address to serve HTTP on, if any: --listen, else the config file's `listen`.
    pub fn listen_addr(&self, from_config: Option<&str>) -> Option<String> {
        match self.listen.as_deref().or(from_config) {
            Some("none" | "off" | "") => None,
            Some(addr) => Some(addr.to_string()),
            None if self.until_drained => None,
            None => Some(DEFAULT_LISTEN.to_string()),
        }
    }
}

/// `dead-letters ...`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters in op_id order, with their last error.
    List(DeadLetterListArgs),
    /// Put dead letters back in the retry queue, due now, with a fresh retry count.
    Replay(DeadLetterReplayArgs),
    /// Drop dead letters older than a duration from the queue; their operations stay, as DB_ONLY.
    Purge(DeadLetterPurgeArgs),
}

/// `dead-letters list`.
#[derive(Debug, Args)]
pub struct DeadLetterListArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// At most this many (all when absent).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start after this op_id (for paging).
    #[arg(long)]
    pub after: Option<String>,
}

/// `dead-letters replay`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["op_id", "all"]))]
pub struct DeadLetterReplayArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The dead letter to replay.
    #[arg(long)]
    pub op_id: Option<String>,
    /// Replay every dead letter.
    #[arg(long)]
    pub all: bool,
}

/// `dead-letters purge`.
#[derive(Debug, Args)]
pub struct DeadLetterPurgeArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Purge dead letters dead-lettered longer ago than this (e.g. 30d, 12h, 0s for all).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Duration,
}

/// `record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub publisher: PublisherArg,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The cursor whose lag is reported.
    #[arg(long, env = "TRUSTLOG_CURSOR_KEY", default_value = DEFAULT_CURSOR_KEY)]
    pub cursor_key: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `ledger ...`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check every entry, the hash chain and the head anchor; exit non-zero naming the
    /// first bad entry. With --key, a signed ledger's tree, tiles and checkpoint too.
    Verify {
        /// The ledger file.
        path: PathBuf,
        /// The verifier key (`NAME+HASH+BASE64`, or @FILE holding it) of a signed ledger.
        #[arg(long)]
        key: Option<String>,
    },
    /// Make an Ed25519 key for signing a ledger's checkpoints: the signer key goes to
    /// --out (mode 0600), the verifier key is printed.
    Keygen {
        /// Where to write the signer key; refused if it exists.
        #[arg(long)]
        out: PathBuf,
        /// The key's name, which is also the checkpoints' origin.
        #[arg(long, default_value = "trustlog.ledger")]
        name: String,
    },
    /// Print the inclusion proof of an operation against the latest signed checkpoint (JSON).
    Prove {
        /// The ledger file.
        path: PathBuf,
        /// The operation's id.
        op_id: String,
    },
    /// Check an inclusion proof (a file `ledger prove` wrote) with nothing but the verifier key.
    CheckProof {
        /// The proof file.
        file: PathBuf,
        /// The verifier key, or @FILE holding it.
        #[arg(long)]
        key: String,
    },
    /// Prove that the ledger extends an older checkpoint, and check the proof with the key.
    Consistency {
        /// The ledger file.
        path: PathBuf,
        /// The older checkpoint, as a file.
        #[arg(long)]
        old: PathBuf,
        /// The verifier key, or @FILE holding it.
        #[arg(long)]
        key: String,
    },
}

/// `operations`.
#[derive(Debug, Subcommand)]
pub enum OperationsCommand {
    /// One operation: stored fields, status, retry row, and the envelope with its SHA-256.
    Show {
        /// The operation's id.
        op_id: String,
        #[command(flatten)]
        db: DbArg,
        /// Print JSON (as GET /v1/operations/{op_id}) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Operations matching every filter given, in (timestamp, op_id) order, a page at a time.
    Search(OperationsSearchArgs),
}

/// `operations search`.
#[derive(Debug, Args)]
pub struct OperationsSearchArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Exactly this op_id.
    #[arg(long)]
    pub op_id: Option<String>,
    /// Exactly this op_actor.
    #[arg(long)]
    pub actor: Option<String>,
    /// Exactly this doid.
    #[arg(long)]
    pub doid: Option<String>,
    /// Exactly this producer_id.
    #[arg(long)]
    pub producer: Option<String>,
    /// NOT_TRUSTLOGGED, TRUSTLOGGED, DB_ONLY (the row), or PENDING, RETRYING, DEAD_LETTER (its retry row).
    #[arg(long)]
    pub status: Option<String>,
    /// Timestamps from this instant (RFC 3339), inclusive.
    #[arg(long)]
    pub from: Option<String>,
    /// Timestamps before this instant (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// The page after this token (the `next_after` of the page before).
    #[arg(long)]
    pub after: Option<String>,
    /// Rows per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,
    /// Also count every matching row.
    #[arg(long)]
    pub count: bool,
    /// Print JSON (as GET /v1/operations) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `component`.
#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Write the exact component this binary runs to FILE and print its SHA-256.
    Export {
        /// Where to write the component.
        file: PathBuf,
        /// Also print the component's WIT world (what it imports and exports) before the digest.
        #[arg(long)]
        wit: bool,
    },
}

/// `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub publisher: PublisherArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// How many sample operations to record.
    #[arg(long, default_value_t = 1000)]
    pub ops: u32,
}

/// Which engine `bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEngine {
    /// The component in its sandbox, as `serve` runs it.
    Wasm,
    /// The same logic compiled into the host: the cost of the boundary, measured.
    Native,
    /// Wasm and native, each on a fresh database, in turns (order swapped every other round); reports their ratio.
    Both,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Database URL; the bench works in a fresh schema (PostgreSQL, MariaDB) or a fresh
    /// file beside PATH (SQLite), and removes it afterwards.
    #[arg(
        long,
        env = "TRUSTLOG_DB",
        default_value = "sqlite://trustlog-bench.db"
    )]
    pub db: String,
    /// Publisher URL; a ledger gets a fresh file beside PATH, removed afterwards.
    #[arg(
        long,
        env = "TRUSTLOG_PUBLISHER",
        default_value = "ledger://trustlog-bench.ledger"
    )]
    pub publisher: String,
    /// Operations stored, then delivered, in the throughput phase.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ops: u32,
    /// Rows per scan batch (one transaction each).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Scan batches out at once (1 to 8; 1 delivers one batch at a time).
    #[arg(long, default_value_t = DEFAULT_PIPELINE_DEPTH,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PIPELINE_DEPTH)))]
    pub pipeline_depth: u32,
    /// Where the engine runs.
    #[arg(long, value_enum, default_value = "wasm")]
    pub engine: BenchEngine,
    /// Operations recorded at --rate in the paced latency phase; 0 skips it.
    #[arg(long, default_value_t = 2_000)]
    pub latency_ops: u32,
    /// Operations per second in the paced latency phase.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Also run DESIGN.md §7's reference, a hand-written minimal relay loop, over the
    /// same backlog in a fresh database, and report trustlog's rate over its rate.
    #[arg(long)]
    pub reference: bool,
    /// With a ledger publisher: run each engine on an unsigned (v1) and a signed (v2)
    /// ledger in turns, the signed one with a key made for the run, and report the
    /// signed drain's rate over the unsigned one's.
    #[arg(long)]
    pub signed_ledger: bool,
    /// Run every engine (and --reference) this many times, taking turns, and report
    /// the median of each: on a noisy machine one run of each is not a ratio.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Also time one scan batch with 10,000 and with 1,000,000 rows waiting.
    #[arg(long)]
    pub scaling: bool,
    /// The backlog sizes of --scaling, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub scaling_rows: Vec<u32>,
    /// Instead of the other phases: start this many idle tenants (SQLite and ledger files
    /// beside --db) in one host and report resident memory per tenant and instantiation times.
    #[arg(long, default_value_t = 0)]
    pub idle_tenants: u32,
    /// How long idle tenants are left before they are weighed.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub idle_settle: Duration,
    /// Instead of the other phases: this many application writers commit rows out of
    /// timestamp order (each transaction held 0–300 ms) while hosts run as `serve`
    /// does; reports the latency from each COMMIT to TRUSTLOGGED.
    #[arg(long, default_value_t = 0)]
    pub writers: u32,
    /// Rows each writer commits (--writers).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub writer_rows: u32,
    /// Hosts on the database: with --writers, how many run; alone (2 or more), the
    /// --ops backlog is drained by one host and by this many, in turns (--rounds).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub hosts: u32,
    /// Instead of the other phases: start this many tenants on the one server --db names
    /// (PostgreSQL or MariaDB), a schema each, sharing the server's pool, with a ledger
    /// each beside --publisher; report the start time, memory per idle tenant, the most
    /// sessions held on the server, and the delivery of --tenant-rows rows per tenant.
    #[arg(long, default_value_t = 0)]
    pub shared_tenants: u32,
    /// Rows each of --shared-tenants delivers, written by another client.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub tenant_rows: u32,
    /// Connections of the pool --shared-tenants share (the config's shared_pool_size).
    #[arg(long, default_value_t = crate::db::shared_server::DEFAULT_POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shared_pool_size: u32,
    /// The idle probe of --shared-tenants where the server cannot notify (MariaDB): the
    /// tenants' watch_interval.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,
    /// The lease each of --shared-tenants renews every third of (the tenants' lease_ttl).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Print the report as one JSON object (on the last line).
    #[arg(long)]
    pub json: bool,
}

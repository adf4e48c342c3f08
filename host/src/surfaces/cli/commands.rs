//! What each subcommand does; errors become `anyhow` here, at the edge.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::adapters::Adapters;
use crate::bench::{BenchOptions, BenchReport, EngineKind};
use crate::config::{HostConfig, TenantSpec, TlsFiles};
use crate::db::{Database, Lease, Replay};
use crate::ledger;
use crate::publisher::Publisher;
use crate::sample;
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::Runtime;
use crate::sandbox::runtime::{self, Allocation};
use crate::scheduling::clock::{SystemClock, now_micros};
use crate::scheduling::tenant::Tenant;
use crate::scheduling::tenants::{RunState, Tenants};
use crate::scheduling::worker::{DrainBounds, Exit, Intervals, LeaseSettings, Worker};
use crate::surfaces::http::access::{Credential, Role, Scope};
use crate::surfaces::http::tls::Tls;
use crate::surfaces::http::{self, AppState, DEFAULT_TENANT};
use crate::surfaces::ingest;
use crate::surfaces::metrics::Metrics;
use crate::surfaces::report::{dead_letter_json, delivery_json, status_json};
use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use trustlog_guest::model::{Config, Operation, RecordOutcome, StatusReport, Strategy};

use super::args::{
    BenchArgs, BenchEngine, Command, ComponentCommand, DeadLetterCommand, DeadLetterListArgs,
    DemoArgs, MigrateArgs, RecordArgs, ServeArgs, StatusArgs,
};

/// Operations per `record` call into the engine.
const RECORD_CHUNK: usize = 1000;
/// How long in-flight HTTP requests get to finish once the worker has stopped.
const HTTP_GRACE: Duration = Duration::from_secs(3);
/// Dead letters read per query when listing.
const LIST_PAGE: u64 = 1000;

/// Runs one subcommand.
pub async fn run(command: Command, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(*args, adapters).await,
        Command::Migrate(args) => migrate(args, adapters).await,
        Command::Record(args) => record(args, adapters).await,
        Command::Status(args) => status(args, adapters).await,
        Command::DeadLetters(cmd) => dead_letters(cmd, adapters).await,
        Command::Ledger(cmd) => super::ledger::run(cmd),
        Command::Component(ComponentCommand::Export { file, wit }) => component_export(&file, wit),
        Command::Operations(cmd) => super::operations::run(cmd, adapters).await,
        Command::Demo(args) => demo(args, adapters).await,
        Command::Bench(args) => bench(args).await,
    }
}

/// `component export`: the embedded component, byte for byte, so that another runtime
/// (the Node host) runs exactly what this binary runs; the digest line is
/// `sha256sum`'s format, so either can check the other.
fn component_export(file: &std::path::Path, wit: bool) -> anyhow::Result<ExitCode> {
    let bytes = runtime::GUEST_WASM;
    std::fs::write(file, bytes)
        .with_context(|| format!("writing the component to {}", file.display()))?;
    if wit {
        print!("{}", crate::sandbox::component_info::wit(bytes)?);
    }
    println!(
        "{}  {}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Connects and applies the schema (every command that writes does this on start).
async fn connect_db(url: &str, adapters: &Adapters) -> anyhow::Result<Database> {
    let db = adapters
        .connect_database(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    db.migrate()
        .await
        .with_context(|| format!("migrating {url}"))?;
    Ok(db)
}

/// `migrate`: the report on existing tables, then the missing ones created and, with
/// `--apply`, the changes made.
async fn migrate(args: MigrateArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let url = &args.db.db;
    let db = adapters
        .connect_database(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let report = db
        .inspect()
        .await
        .with_context(|| format!("reading the tables of {url}"))?;
    print!("{report}");
    if report.needs_change() {
        if !args.apply {
            eprintln!(
                "the tables cannot be served as they are; `trustlog migrate --apply` makes the \
                 changes above"
            );
            return Ok(ExitCode::FAILURE);
        }
        db.apply_changes(&report)
            .await
            .with_context(|| format!("changing the tables of {url}"))?;
        println!("changes applied: {}", report.fixes().len());
    } else {
        db.migrate()
            .await
            .with_context(|| format!("migrating {url}"))?;
    }
    println!("schema up to date: {url}");
    Ok(ExitCode::SUCCESS)
}

async fn tenant(db: Database, publisher: Publisher, config: Config) -> anyhow::Result<Tenant> {
    let runtime = Runtime::new().context("loading the trustlog component")?;
    Ok(Tenant::new(runtime, DEFAULT_TENANT, db, publisher, config).await?)
}

async fn connect_publisher(url: &str, adapters: &Adapters) -> anyhow::Result<Publisher> {
    adapters.connect_publisher(url).await.with_context(|| {
        let shown = crate::publisher::options::redact(url);
        format!("connecting to publisher {shown}")
    })
}

/// Resolves to true once SIGINT or SIGTERM arrives.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested; finishing the batch in flight");
        let _ = tx.send(true);
    });
    rx
}

/// What `serve` runs: the tenants of the config file, or the one the flags describe.
struct ServePlan {
    tenants: Vec<TenantSpec>,
    /// `--admin-token`: an admin of the whole host, kept across reloads.
    flag_credentials: Vec<Credential>,
    /// The config file's `admin_token` and `[[credential]]`s.
    file_credentials: Vec<Credential>,
    listen: Option<String>,
    /// --tls-cert/--tls-key, else the config file's tls_cert/tls_key.
    tls: Option<TlsFiles>,
    max_tenants: u32,
    shared_pool_size: u32,
}

fn serve_plan(args: &ServeArgs) -> anyhow::Result<ServePlan> {
    let flag_credentials: Vec<Credential> = args
        .admin_token
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| Credential::new("--admin-token", Role::Admin, Scope::Host, t))
        .collect();
    let tls_flags = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    if let Some(path) = &args.config {
        let config = HostConfig::load(path)?;
        return Ok(ServePlan {
            tls: tls_flags.or(config.tls.clone()),
            file_credentials: http::file_credentials(&config),
            tenants: config.tenants,
            flag_credentials,
            listen: args.listen_addr(config.listen.as_deref()),
            max_tenants: config.max_tenants,
            shared_pool_size: config.shared_pool_size,
        });
    }
    let spec = TenantSpec {
        id: DEFAULT_TENANT.to_string(),
        db: args.db.db.clone(),
        publisher: args.publisher.publisher.clone(),
        engine: args.engine.config(),
        intervals: args.intervals.intervals(),
        limits: Limits::default(),
        admin_token: None,
        component: args.component.clone(),
        poll_only: args.poll_only,
        schema: None,
    };
    Ok(ServePlan {
        tenants: vec![spec],
        flag_credentials,
        file_credentials: Vec::new(),
        listen: args.listen_addr(None),
        tls: tls_flags,
        max_tenants: 1,
        shared_pool_size: crate::db::shared_server::DEFAULT_POOL_SIZE,
    })
}

/// Instances the pool holds per tenant: the worker's, the request instance, and
/// one being replaced while its successor starts.
const INSTANCES_PER_TENANT: u32 = 3;

async fn serve(args: ServeArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let plan = serve_plan(&args)?;
    let engine = runtime::engine(Allocation::Pooling {
        instances: plan
            .max_tenants
            .saturating_mul(INSTANCES_PER_TENANT)
            .saturating_add(8),
    })?;
    let tenants = Tenants::with_adapters(
        engine,
        Metrics::new()?,
        args.until_drained,
        DrainBounds {
            max_wait: args.max_wait,
            give_up_after: args.give_up_after,
        },
        plan.shared_pool_size,
        adapters.clone(),
    );
    // A tenant whose database does not answer is retried in the background (a
    // publisher connects lazily); only what needs the operator stops the host.
    for spec in plan.tenants {
        tenants.start(spec).await?;
    }
    let state = Arc::new(AppState::new(
        tenants.clone(),
        Arc::new(SystemClock),
        args.config.clone(),
        plan.flag_credentials,
        plan.file_credentials,
    ));
    state.refresh_credentials().await;
    // Read before listening: a certificate that cannot be used stops the start.
    let tls = match (plan.tls, &plan.listen) {
        (Some(files), Some(_)) => Some(Tls::load(files).await?),
        (Some(files), None) => {
            tracing::warn!(cert = %files.cert.display(), "TLS files given but no --listen: nothing is served over HTTP");
            None
        }
        (None, _) => None,
    };
    let reloader = (args.config.is_some() || tls.is_some())
        .then(|| spawn_reload_on_sighup(state.clone(), tls.clone()));

    let (stop_http, http_stopped) = watch::channel(false);
    let http = match plan.listen {
        Some(addr) => {
            let (listener, bound) = http::bind(&addr).await?;
            let open = state.credentials().is_empty();
            if open && !bound.ip().is_loopback() && !args.insecure_allow_unauthenticated {
                bail!(
                    "refusing to serve HTTP on {bound} with no credential: anyone who reaches it \
                     could write operations into the trust log. Configure credentials \
                     (--admin-token, [[credential]] in --config), listen on a loopback address, \
                     or pass --insecure-allow-unauthenticated"
                );
            }
            // Tests and scripts that asked for port 0 read the address from here.
            let scheme = if tls.is_some() { "https" } else { "http" };
            println!("listening on {scheme}://{bound}");
            tracing::info!(%bound, authenticated = !open, tls = tls.is_some(), "http listening");
            let mut stopped = http_stopped.clone();
            Some(tokio::spawn(http::serve(
                listener,
                state.clone(),
                tls,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };

    tracing::info!(
        tenants = tenants.list().await.len(),
        until_drained = args.until_drained,
        "serving"
    );
    let started = Instant::now();
    let mut shutdown = shutdown_signal();
    if args.until_drained {
        tokio::select! {
            _ = tenants.wait_all_ended() => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    } else {
        let _ = shutdown.wait_for(|s| *s).await;
    }
    let states: Vec<(String, RunState)> = tenants
        .list()
        .await
        .iter()
        .map(|t| (t.id().to_string(), t.state()))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    for (id, summary) in tenants.shutdown().await {
        tracing::info!(
            tenant = %id, exit = ?summary.exit, published = summary.published, retry_scheduled = summary.retry_scheduled,
            dead_lettered = summary.dead_lettered, errors = summary.errors, seconds = secs,
            ops_per_sec = summary.published as f64 / secs.max(1e-9), "stopped"
        );
    }
    if let Some(r) = reloader {
        r.abort();
    }
    let _ = stop_http.send(true);
    if let Some(server) = http {
        match tokio::time::timeout(HTTP_GRACE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
            Err(_) => tracing::warn!("http requests still running after {HTTP_GRACE:?}; dropped"),
        }
    }
    // --until-drained promises everything delivered: a tenant stopped by its limits breaks it.
    let stopped: Vec<String> = states
        .iter()
        .filter_map(|(id, s)| s.reason().map(|r| format!("{id}: {r}")))
        .collect();
    if args.until_drained && !stopped.is_empty() && !*shutdown.borrow() {
        eprintln!("not drained; tenants stopped: {}", stopped.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the config file (when there is one) and the TLS files (when serving
/// HTTPS) at every SIGHUP.
fn spawn_reload_on_sighup(state: Arc<AppState>, tls: Option<Tls>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("could not install the SIGHUP handler; reload through the admin API");
            return;
        };
        while hup.recv().await.is_some() {
            if state.config_path.is_some() {
                match state.reload().await {
                    Ok(report) => tracing::info!(?report, "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: config not reloaded; the tenants run on"
                    ),
                }
            }
            if let Some(tls) = &tls {
                match tls.reload().await {
                    Ok(()) => tracing::info!(
                        cert = %tls.files().cert.display(),
                        "SIGHUP: TLS certificate reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS certificate not reloaded; the one in force stays"
                    ),
                }
            }
        }
    })
}

#[derive(Default, serde::Serialize)]
struct RecordSummary {
    stored: u64,
    published: u64,
    duplicate: u64,
    rejected: u64,
    publish_failed: u64,
}

impl RecordSummary {
    fn failed(&self) -> bool {
        self.duplicate + self.rejected + self.publish_failed > 0
    }
}

/// Records a chunk, reporting each failure on stderr with its input line.
async fn record_chunk(
    worker: &Worker,
    lines: Vec<usize>,
    ops: Vec<Operation>,
    summary: &mut RecordSummary,
) -> anyhow::Result<()> {
    let ids: Vec<String> = ops.iter().map(|o| o.op_id.clone()).collect();
    let outcomes = worker.record(ops, None).await?;
    for ((line, id), outcome) in lines.iter().zip(&ids).zip(outcomes) {
        match outcome {
            RecordOutcome::Stored => summary.stored += 1,
            RecordOutcome::Published => summary.published += 1,
            RecordOutcome::Duplicate => {
                summary.duplicate += 1;
                eprintln!(
                    "line {line}: op_id {id:?}: conflict: an operation with this op_id already exists; the stored one is unchanged"
                );
            }
            RecordOutcome::Rejected(e) => {
                summary.rejected += 1;
                eprintln!("line {line}: op_id {id:?}: {e}");
            }
            RecordOutcome::PublishFailed(e) => {
                summary.publish_failed += 1;
                eprintln!("line {line}: op_id {id:?}: {e}");
            }
        }
    }
    Ok(())
}

async fn record(args: RecordArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let db = connect_db(&args.db.db, adapters).await?;
    let publisher = record_publisher(&args, adapters).await?;
    let worker = Worker::new(
        tenant(db.clone(), publisher, args.engine.config()).await?,
        Intervals::default(),
    );
    let mut summary = RecordSummary::default();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let (mut at, mut ops) = (Vec::new(), Vec::new());
    let mut n = 0usize;
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        if stdin
            .read_until(b'\n', &mut bytes)
            .await
            .context("reading stdin")?
            == 0
        {
            break;
        }
        n += 1;
        // A line that is not UTF-8 is refused on its own; the lines around it go on.
        let line = match std::str::from_utf8(&bytes) {
            Ok(line) => line.trim_end_matches(['\n', '\r']),
            Err(e) => {
                summary.rejected += 1;
                eprintln!("line {n}: operation: the line is not UTF-8 ({e})");
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match ingest::parse_line(line) {
            Ok(op) => {
                at.push(n);
                ops.push(op);
            }
            Err(e) => {
                summary.rejected += 1;
                eprintln!("line {n}: {e}");
            }
        }
        if ops.len() >= RECORD_CHUNK {
            record_chunk(
                &worker,
                std::mem::take(&mut at),
                std::mem::take(&mut ops),
                &mut summary,
            )
            .await?;
        }
    }
    if !ops.is_empty() {
        record_chunk(&worker, at, ops, &mut summary).await?;
    }
    println!("{}", serde_json::to_string(&summary)?);
    db.close().await;
    Ok(if summary.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The publisher `record` needs: none unless it publishes itself (trustlog-only), so
/// that storing rows never touches the trust log a running `serve` delivers to.
async fn record_publisher(args: &RecordArgs, adapters: &Adapters) -> anyhow::Result<Publisher> {
    if args.engine.strategy != Strategy::TrustlogOnly {
        return Ok(Publisher::Disabled);
    }
    let publisher = connect_publisher(&args.publisher.publisher, adapters).await?;
    if let Publisher::Ledger(ledger) = &publisher {
        match ledger.open_now().await {
            Ok(()) => {}
            Err(e @ ledger::LedgerError::Locked { .. }) => bail!(
                "{e}. A `trustlog serve` is most likely delivering to it. Record with \
                 --strategy db-and-trustlog and let serve deliver the rows, or stop serve \
                 before publishing with --strategy trustlog-only."
            ),
            Err(e) => return Err(e).context("opening the ledger to publish"),
        }
    }
    Ok(publisher)
}

fn print_status(r: &StatusReport, lease: Option<&Lease>, json: bool) {
    if json {
        println!("{}", status_json(r, lease));
        return;
    }
    let s = &r.stats;
    println!("total              {}", s.total);
    println!("trustlogged        {}", s.trustlogged);
    println!("not_trustlogged    {}", s.not_trustlogged);
    println!("db_only            {}", s.db_only);
    println!("retry_pending      {}", s.retry_pending);
    println!("dead_letter        {}", s.dead_letter);
    println!("cursor_lag_seconds {:.3}", r.cursor_lag_seconds);
    match &s.cursor {
        Some(p) => println!(
            "cursor             {} {}",
            ingest::format_timestamp(p.timestamp),
            p.op_id
        ),
        None => println!("cursor             (not moved yet)"),
    }
    if let Some(due) = r.stats.next_retry_at {
        println!("next_retry_at      {}", ingest::format_timestamp(due));
    }
    let delivery = delivery_json(lease);
    match (delivery["host"].as_str(), delivery["state"].as_str()) {
        (Some(host), Some(state)) => println!("delivery           {host}: {state}"),
        (None, Some(state)) => println!("delivery           {state}"),
        _ => println!("delivery           (no host has delivered yet)"),
    }
}

async fn status(args: StatusArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let db = adapters
        .connect_database(&args.db.db)
        .await
        .with_context(|| format!("connecting to {}", args.db.db))?;
    let config = Config {
        cursor_key: args.cursor_key.clone(),
        ..Config::default()
    };
    let report = tenant(db.clone(), Publisher::Disabled, config)
        .await?
        .status(now_micros())
        .await?;
    let lease = db
        .read_lease(&args.cursor_key)
        .await
        .with_context(|| format!("reading the lease of {}", args.cursor_key))?;
    print_status(&report, lease.as_ref(), args.json);
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn dead_letters(cmd: DeadLetterCommand, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLetterCommand::List(args) => list_dead_letters(args, adapters).await,
        DeadLetterCommand::Replay(args) => {
            let db = connect_db(&args.db.db, adapters).await?;
            let which = match args.op_id {
                Some(id) => Replay::One(id),
                None => Replay::All,
            };
            let n = db
                .replay_dead_letters(which.clone(), now_micros())
                .await
                .context("replaying dead letters")?;
            db.close().await;
            if let (0, Replay::One(id)) = (n, &which) {
                eprintln!("error: op_id {id:?} is not a dead letter; nothing changed");
                return Ok(ExitCode::FAILURE);
            }
            println!("replayed {n} dead letter(s): due now, the next retry tick delivers them");
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterCommand::Purge(args) => {
            let db = connect_db(&args.db.db, adapters).await?;
            let n = db
                .purge_dead_letters_older_than(args.older_than, now_micros())
                .await
                .context("purging dead letters")?;
            db.close().await;
            println!(
                "purged {n} dead letter(s) older than {}; their operations stay, as DB_ONLY",
                humantime::format_duration(args.older_than)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list_dead_letters(
    args: DeadLetterListArgs,
    adapters: &Adapters,
) -> anyhow::Result<ExitCode> {
    let db = adapters
        .connect_database(&args.db.db)
        .await
        .with_context(|| format!("connecting to {}", args.db.db))?;
    let mut after = args.after.clone();
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut shown = 0u64;
    if !args.json {
        println!(
            "{:<40} {:>7}  {:<27}  error",
            "op_id", "retries", "dead_lettered_at"
        );
    }
    while left > 0 {
        let asked = left.min(LIST_PAGE);
        let page = db
            .dead_letters(after.as_deref(), asked as u32)
            .await
            .context("listing dead letters")?;
        for d in &page {
            if args.json {
                println!("{}", dead_letter_json(d));
            } else {
                println!(
                    "{:<40} {:>7}  {:<27}  {}",
                    d.op_id,
                    d.retry_count,
                    ingest::format_timestamp(d.updated_at),
                    d.error_message.replace('\n', " ")
                );
            }
        }
        shown += page.len() as u64;
        left -= page.len() as u64;
        match page.last() {
            Some(last) if page.len() as u64 == asked => after = Some(last.op_id.clone()),
            _ => break,
        }
    }
    if !args.json {
        println!("{shown} dead letter(s)");
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs, adapters: &Adapters) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let db = connect_db(&args.db.db, adapters).await?;
    let (publisher_url, key_said) = super::ledger::demo_publisher(&args.publisher.publisher)?;
    let publisher = connect_publisher(&publisher_url, adapters).await?;
    if let Some(said) = key_said {
        println!("{said}");
    }
    let verifier = match &publisher {
        Publisher::Ledger(ledger) => ledger.verifier_key(),
        _ => None,
    };
    // A `serve` already delivering from this database keeps doing so; the demo then
    // waits for it instead of publishing the same rows beside it.
    let worker = Worker::new(
        tenant(db.clone(), publisher, args.engine.config()).await?,
        Intervals::default(),
    )
    .with_lease(LeaseSettings {
        holder: crate::scheduling::lease::holder_id(),
        ttl: crate::scheduling::lease::DEFAULT_TTL,
    });
    let base = now_micros();
    let run = format!("demo-{base:x}");
    let ops: Vec<Operation> = (0..args.ops)
        .map(|i| sample::operation(&run, i, base))
        .collect();
    let mut summary = RecordSummary::default();
    for (n, chunk) in ops.chunks(RECORD_CHUNK).enumerate() {
        let lines = (n * RECORD_CHUNK + 1..).take(chunk.len()).collect();
        record_chunk(&worker, lines, chunk.to_vec(), &mut summary).await?;
    }
    println!(
        "recorded {} sample operations into {} ({} stored)",
        args.ops, args.db.db, summary.stored
    );
    let (_tx, rx) = watch::channel(false);
    let run_summary = worker.run(true, rx).await;
    if run_summary.exit != Exit::Drained {
        bail!("delivery did not drain");
    }
    println!(
        "delivered {} operations to {}",
        run_summary.published, args.publisher.publisher
    );
    if let Some(path) = crate::publisher::ledger_path(&args.publisher.publisher) {
        let shown = path.display();
        match &verifier {
            Some(key) => {
                let report = ledger::verify_v2(&path, key.as_str())
                    .with_context(|| format!("verifying {shown}"))?;
                println!(
                    "ledger {shown} verified: {} entries, head {}, checkpoint signed by {} at size {}, root {}",
                    report.entries,
                    report.head_hash,
                    report.origin,
                    report.entries,
                    report.root_hash
                );
            }
            None => {
                let report = ledger::verify(&path).with_context(|| format!("verifying {shown}"))?;
                println!(
                    "ledger {shown} verified: {} entries, head {}",
                    report.entries, report.head_hash
                );
            }
        }
    }
    let report = worker.tenant().lock().await.status(now_micros()).await?;
    let lease = db.read_lease(&args.engine.cursor_key).await?;
    print_status(&report, lease.as_ref(), false);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let engines = match args.engine {
        BenchEngine::Wasm => vec![EngineKind::Wasm],
        BenchEngine::Native => vec![EngineKind::Native],
        BenchEngine::Both => vec![EngineKind::Wasm, EngineKind::Native],
    };
    let opts = BenchOptions {
        db: args.db,
        publisher: args.publisher,
        ops: args.ops,
        config: Config {
            batch_size: args.batch,
            pipeline_depth: args.pipeline_depth,
            ..Config::default()
        },
        engines,
        latency_ops: args.latency_ops,
        rate: args.rate,
        reference: args.reference,
        signed_ledger: args.signed_ledger,
        rounds: args.rounds,
        scaling_rows: if args.scaling {
            args.scaling_rows
        } else {
            Vec::new()
        },
        idle_tenants: args.idle_tenants,
        idle_settle: args.idle_settle,
        writers: args.writers,
        writer_rows: args.writer_rows,
        hosts: args.hosts,
        shared_tenants: args.shared_tenants,
        tenant_rows: args.tenant_rows,
        shared_pool_size: args.shared_pool_size,
        shared_watch: args.watch_interval,
        shared_lease_ttl: args.lease_ttl,
    };
    let report = crate::bench::run(&opts).await?;
    print_bench(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_bench(r: &BenchReport) {
    let opt = |x: Option<f64>, unit: &str| x.map_or("n/a".to_string(), |v| format!("{v} {unit}"));
    println!("bench: db {} publisher {}", r.db, r.publisher);
    for run in &r.runs {
        println!(
            "{:>6}{}: stored {} ops at {} ops/s; delivered in {} s: {} ops/s (batch {}), guest time {:.1}%; \
             paced {} ops at {}/s: p50 {}, p99 {}, max {}",
            format!("{:?}", run.engine).to_lowercase(),
            if run.signed_ledger { " signed" } else { "" },
            run.ops,
            run.store_ops_per_sec,
            run.delivery_seconds,
            run.ops_per_sec,
            run.batch,
            run.guest_time_share * 100.0,
            run.latency_ops,
            run.latency_rate,
            opt(run.p50_latency_ms, "ms"),
            opt(run.p99_latency_ms, "ms"),
            opt(run.max_latency_ms, "ms"),
        );
    }
    if r.rounds > 1 {
        println!("medians of {} rounds below", r.rounds);
    }
    if let Some(ratio) = r.wasm_over_native {
        println!("wasm/native throughput: {ratio}");
    }
    if let Some(ratio) = r.signed_over_unsigned {
        println!(
            "signed/unsigned ledger throughput: {ratio} (by round: {:?})",
            r.signed_over_unsigned_by_round
        );
    }
    if let Some(ratio) = r.wasm_over_native_at_equal_io {
        println!("wasm/native at equal host I/O (from the guest time shares): {ratio}");
    }
    if let Some(reference) = &r.reference {
        println!(
            "reference ({}): {} rows in {} s: {} rows/s (batch {}); trustlog over it: {}",
            reference.reference,
            reference.rows,
            reference.seconds,
            reference.rows_per_sec,
            reference.batch,
            r.over_reference.map_or("n/a".into(), |x| x.to_string()),
        );
    }
    if let Some(s) = &r.scaling {
        for p in &s.points {
            println!(
                "scaling: {} rows waiting: one scan batch of {} in {} ms, rss {} after {} batches alone",
                p.rows,
                s.batch,
                p.scan_batch_ms,
                opt(p.rss_mib, "MiB"),
                s.memory_batches
            );
        }
        println!(
            "scaling: batch time ratio {} (median of {} batches per size, in turns), rss ratio {}",
            s.scan_batch_ratio,
            s.timed_batches,
            s.rss_ratio.map_or("n/a".into(), |x| x.to_string())
        );
    }
    if let Some(w) = &r.writers {
        println!(
            "writers: {} writers, {} rows, transactions held 0-{} ms, {} host(s): \
             COMMIT to TRUSTLOGGED p50 {}, p99 {}, max {}; {} within 100 ms, {} within 1 s",
            w.writers,
            w.rows,
            w.hold_max_ms,
            w.hosts,
            opt(w.p50_ms, "ms"),
            opt(w.p99_ms, "ms"),
            opt(w.max_ms, "ms"),
            w.within_100ms,
            w.within_1s,
        );
        println!(
            "writers: delivered through the cursor {}, caught up behind it {}, swept {}, retried {}; \
             ledger duplicates {}",
            w.through_scan,
            w.through_catch_up,
            w.through_sweep,
            w.through_retry,
            w.ledger_duplicates.map_or("n/a".into(), |d| d.to_string()),
        );
    }
    if let Some(h) = &r.hosts {
        for run in &h.runs {
            println!(
                "hosts: round {}: {} host(s) drained {} ops at {} ops/s ({} of them published)",
                run.round, run.hosts, h.ops, run.ops_per_sec, run.hosts_that_published
            );
        }
        println!(
            "hosts: median {} ops/s with one host, {} with {}: {} hosts over one {}",
            h.one_host_ops_per_sec, h.hosts_ops_per_sec, h.hosts, h.hosts, h.hosts_over_one
        );
    }
    if let Some(s) = &r.shared {
        println!(
            "shared: {} tenants on one server (max_connections {}): started in {} s \
             (one: p50 {}, p99 {}, max {}); the host held at most {} sessions (pool {})",
            s.tenants,
            s.server_max_connections
                .map_or("n/a".into(), |m| m.to_string()),
            s.start_seconds,
            opt(s.start_p50_ms, "ms"),
            opt(s.start_p99_ms, "ms"),
            opt(s.start_max_ms, "ms"),
            s.max_host_sessions,
            s.pool_size,
        );
        println!(
            "shared: rss {} with one tenant, {} with all idle: {} per idle tenant; \
             {} rows each delivered in {} s ({} ops/s), {} crossed",
            opt(s.rss_one_tenant_mib, "MiB"),
            opt(s.rss_all_tenants_mib, "MiB"),
            opt(s.rss_per_idle_tenant_mib, "MiB"),
            s.rows_per_tenant,
            s.delivery_seconds,
            s.ops_per_sec,
            s.crossed,
        );
    }
    if let Some(i) = &r.idle {
        println!(
            "idle: {} tenants: rss {} with one, {} with all: {} per idle tenant; {} threads",
            i.tenants,
            opt(i.rss_one_tenant_mib, "MiB"),
            opt(i.rss_all_tenants_mib, "MiB"),
            opt(i.rss_per_idle_tenant_mib, "MiB"),
            i.threads.map_or("n/a".into(), |t| t.to_string()),
        );
        println!(
            "idle: instantiate+configure p50 {}, p99 {}, max {}",
            opt(i.instantiate_p50_us, "us"),
            opt(i.instantiate_p99_us, "us"),
            opt(i.instantiate_max_us, "us"),
        );
    }
    println!("peak rss {}", opt(r.peak_rss_mib, "MiB"));
}

//! What each subcommand does; errors become `anyhow` here, at the edge.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use trustlog_guest::model::{Config, Operation, RecordOutcome, StatusReport};
use trustlog_host::clock::now_micros;
use trustlog_host::db::Database;
use trustlog_host::ingest;
use trustlog_host::ledger;
use trustlog_host::publisher::Publisher;
use trustlog_host::runtime::Runtime;
use trustlog_host::tenant::Tenant;
use trustlog_host::worker::{Exit, Intervals, Worker};

use crate::cli::{Command, DemoArgs, LedgerCommand, RecordArgs, ServeArgs, StatusArgs};

/// Operations per `record` call into the engine.
const RECORD_CHUNK: usize = 1000;

/// Runs one subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            connect_db(&args.db).await?;
            println!("schema up to date: {}", args.db);
            Ok(ExitCode::SUCCESS)
        }
        Command::Record(args) => record(args).await,
        Command::Status(args) => status(args).await,
        Command::Ledger(LedgerCommand::Verify { path }) => match ledger::verify(&path) {
            Ok(report) => {
                println!(
                    "ledger ok: {} entries, head {}",
                    report.entries, report.head_hash
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("ledger {} FAILED verification: {e}", path.display());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Demo(args) => demo(args).await,
    }
}

/// Connects and applies the schema (every command that writes does this on start).
async fn connect_db(url: &str) -> anyhow::Result<Database> {
    let db = Database::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    db.migrate()
        .await
        .with_context(|| format!("migrating {url}"))?;
    Ok(db)
}

async fn tenant(db: Database, publisher: Publisher, config: Config) -> anyhow::Result<Tenant> {
    let runtime = Runtime::new().context("loading the trustlog component")?;
    Ok(Tenant::new(runtime, "default", db, publisher, config).await?)
}

async fn connect_publisher(url: &str) -> anyhow::Result<Publisher> {
    Publisher::connect(url).await.with_context(|| {
        let shown = trustlog_host::publisher::options::redact(url);
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

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let db = connect_db(&args.db.db).await?;
    let publisher = connect_publisher(&args.publisher.publisher).await?;
    let worker = Worker::new(
        tenant(db.clone(), publisher, args.engine.config()).await?,
        args.intervals.intervals(),
    );
    let listener = if args.poll_only {
        None
    } else {
        db.spawn_listener(worker.wake_handle())
    };
    tracing::info!(db = %args.db.db, publisher = %args.publisher.publisher, until_drained = args.until_drained, listening = listener.is_some(), "serving");
    let started = Instant::now();
    let summary = worker.run(args.until_drained, shutdown_signal()).await;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        exit = ?summary.exit, published = summary.published, retry_scheduled = summary.retry_scheduled,
        dead_lettered = summary.dead_lettered, errors = summary.errors, seconds = secs,
        ops_per_sec = summary.published as f64 / secs.max(1e-9), "stopped"
    );
    if let Some(l) = listener {
        l.abort();
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
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

async fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let db = connect_db(&args.db.db).await?;
    let publisher = connect_publisher(&args.publisher.publisher).await?;
    let worker = Worker::new(
        tenant(db.clone(), publisher, args.engine.config()).await?,
        Intervals::default(),
    );
    let mut summary = RecordSummary::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let (mut at, mut ops) = (Vec::new(), Vec::new());
    let mut n = 0usize;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        match ingest::parse_line(&line) {
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

fn status_json(r: &StatusReport) -> serde_json::Value {
    let s = &r.stats;
    serde_json::json!({
        "total": s.total,
        "trustlogged": s.trustlogged,
        "not_trustlogged": s.not_trustlogged,
        "db_only": s.db_only,
        "retry_pending": s.retry_pending,
        "dead_letter": s.dead_letter,
        "cursor_lag_seconds": r.cursor_lag_seconds,
        "cursor": s.cursor.as_ref().map(|p| serde_json::json!({"timestamp": ingest::format_timestamp(p.timestamp), "op_id": p.op_id})),
    })
}

fn print_status(r: &StatusReport, json: bool) {
    if json {
        println!("{}", status_json(r));
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
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let db = Database::connect(&args.db.db)
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
    print_status(&report, args.json);
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

fn sample_operation(run: &str, i: u32, base: i64) -> Operation {
    let kinds = ["Create", "Update", "Delete", "Retrieve"];
    Operation {
        op_id: format!("demo-{run}-{i:05}"),
        op_actor: format!("user-{}", i % 7),
        doid: format!("10.1000/demo.{i}"),
        producer_id: "demo-producer".into(),
        request_body_hash: Some(trustlog_guest::envelope::sha256_hex(
            format!("request {i}").as_bytes(),
        )),
        response_body_hash: (!i.is_multiple_of(3))
            .then(|| trustlog_guest::envelope::sha256_hex(format!("response {i}").as_bytes())),
        op_source: if i.is_multiple_of(2) {
            "IRP".into()
        } else {
            "DOIP".into()
        },
        op_type: kinds[(i % 4) as usize].into(),
        do_prefix: "10.1000".into(),
        do_repository: "demo-repository".into(),
        client_ip: Some(format!("192.0.2.{}", i % 250 + 1)),
        server_ip: (!i.is_multiple_of(5)).then(|| "198.51.100.7".into()),
        // Ten operations share each timestamp: the cursor must not lose or repeat them.
        timestamp: base + i64::from(i / 10),
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let db = connect_db(&args.db.db).await?;
    let publisher = connect_publisher(&args.publisher.publisher).await?;
    let worker = Worker::new(
        tenant(db.clone(), publisher, args.engine.config()).await?,
        Intervals::default(),
    );
    let base = now_micros();
    let run = format!("{base:x}");
    let ops: Vec<Operation> = (0..args.ops)
        .map(|i| sample_operation(&run, i, base))
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
    if let Some(path) = args.publisher.publisher.strip_prefix("ledger://") {
        let report = ledger::verify(std::path::Path::new(path))
            .with_context(|| format!("verifying {path}"))?;
        println!(
            "ledger {path} verified: {} entries, head {}",
            report.entries, report.head_hash
        );
    }
    let report = worker.tenant().lock().await.status(now_micros()).await?;
    print_status(&report, false);
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

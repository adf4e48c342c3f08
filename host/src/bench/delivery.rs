//! One engine's run: store N operations, time their delivery by the real worker,
//! then record at a steady pace and take each operation's latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use trustlog_guest::model::{Micros, Operation, TrustlogStatus};

use crate::db::Database;
use crate::publisher::Publisher;
use crate::sample;
use crate::sandbox::imports::Probe;
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::Runtime;
use crate::scheduling::clock::now_micros;
use crate::scheduling::tenant::{Backend, Tenant};
use crate::scheduling::worker::{Exit, Intervals, Worker};

use super::fresh::Fresh;
use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, EngineKind, RunReport, run_tag};

/// Operations per bulk insert while storing the backlog.
pub(super) const STORE_CHUNK: usize = 5_000;
/// The paced phase sends a slice of its operations this often.
const PACE: Duration = Duration::from_millis(10);
/// How long the paced phase may take beyond its schedule before it is a failure.
const LATENCY_GRACE: Duration = Duration::from_secs(60);

/// The operations a target holds: sample operations `0..next` of `run`, from `base`.
pub(super) struct Backlog {
    run: String,
    base: Micros,
    next: u32,
}

/// A fresh database and publisher, connected and migrated.
pub(super) struct Target {
    pub db: Database,
    pub publisher: Publisher,
    fresh_db: Fresh,
    fresh_publisher: Fresh,
}

impl Target {
    /// Creates the fresh database and publisher for run `label`.
    pub async fn create(opts: &BenchOptions, label: &str) -> Result<Target, BenchError> {
        Self::create_with(opts, label, true, false).await
    }

    /// Creates them for hosts started on their own (`Host::start`), which connect the
    /// publisher themselves: a ledger opened here would be locked against them.
    pub async fn for_hosts(opts: &BenchOptions, label: &str) -> Result<Target, BenchError> {
        Self::create_with(opts, label, false, false).await
    }

    async fn create_with(
        opts: &BenchOptions,
        label: &str,
        connect_publisher: bool,
        signed_ledger: bool,
    ) -> Result<Target, BenchError> {
        let tag = run_tag(label);
        let fresh_db = Fresh::database(&opts.db, &tag).await?;
        let db_failed = |e: trustlog_guest::model::DbError| BenchError::Database {
            url: crate::publisher::options::redact(&fresh_db.url),
            message: e.to_string(),
        };
        let db = Database::connect(&fresh_db.url).await.map_err(db_failed)?;
        db.migrate().await.map_err(db_failed)?;
        let fresh_publisher = Fresh::publisher(&opts.publisher, &tag, signed_ledger)?;
        let publisher = if connect_publisher {
            Publisher::connect(&fresh_publisher.url)
                .await
                .map_err(|e| BenchError::Publisher {
                    url: crate::publisher::options::redact(&fresh_publisher.url),
                    message: e.to_string(),
                })?
        } else {
            Publisher::Disabled
        };
        Ok(Target {
            db,
            publisher,
            fresh_db,
            fresh_publisher,
        })
    }

    /// A tenant on this target, on `engine`.
    pub async fn tenant(
        &self,
        opts: &BenchOptions,
        engine: EngineKind,
    ) -> Result<Tenant, BenchError> {
        let backend = match engine {
            EngineKind::Wasm => Backend::Wasm(Runtime::new().map_err(|e| {
                BenchError::Engine(crate::scheduling::tenant::TenantError::Runtime(e))
            })?),
            EngineKind::Native => Backend::Native,
        };
        Ok(Tenant::on_backend(
            backend,
            "bench",
            self.db.clone(),
            self.publisher.clone(),
            opts.config.clone(),
            Limits::default(),
        )
        .await?)
    }

    /// A failure of the fresh database, naming it (password redacted).
    pub fn db_failed(&self, e: impl std::fmt::Display) -> BenchError {
        BenchError::Database {
            url: crate::publisher::options::redact(&self.fresh_db.url),
            message: e.to_string(),
        }
    }

    /// The fresh database's URL.
    pub fn db_url(&self) -> &str {
        &self.fresh_db.url
    }

    /// The fresh publisher's URL.
    pub fn publisher_url(&self) -> &str {
        &self.fresh_publisher.url
    }

    /// Bulk-inserts `n` operations (as an application would), ten per timestamp, then
    /// settles the database; returns the insert rate, ops/s.
    pub async fn store(&self, n: u32) -> Result<f64, BenchError> {
        Ok(self.store_backlog(n).await?.0)
    }

    /// [`Target::store`], also returning the backlog so more can be stored behind it.
    pub async fn store_backlog(&self, n: u32) -> Result<(f64, Backlog), BenchError> {
        let mut backlog = Backlog {
            run: format!("b{:x}", now_micros()),
            base: now_micros() - i64::from(n),
            next: 0,
        };
        let started = Instant::now();
        self.top_up(&mut backlog, n).await?;
        let rate = f64::from(n) / started.elapsed().as_secs_f64();
        // The vacuum, statistics and checkpoint a bulk load calls for would otherwise come
        // at a moment of the server's choosing, inside one run's timed phase and not the
        // other's. A server that refuses (a CHECKPOINT needs a privileged role) leaves
        // that noise in; the figures stay valid.
        if let Err(e) = self.db.settle().await {
            tracing::warn!(db = %crate::publisher::options::redact(&self.fresh_db.url), error = %e,
                "settling the database after storing the backlog failed; timing it unsettled");
        }
        Ok((rate, backlog))
    }

    /// Stores `n` more operations of `backlog`, later in the scan's order than those
    /// already stored.
    pub async fn top_up(&self, backlog: &mut Backlog, n: u32) -> Result<(), BenchError> {
        let end = backlog.next + n;
        while backlog.next < end {
            let chunk_end = end.min(backlog.next + STORE_CHUNK as u32);
            let ops: Vec<Operation> = (backlog.next..chunk_end)
                .map(|k| sample::operation(&backlog.run, k, backlog.base))
                .collect();
            self.db
                .insert(ops, TrustlogStatus::NotTrustlogged)
                .await
                .map_err(|e| self.db_failed(e))?;
            backlog.next = chunk_end;
        }
        Ok(())
    }

    /// Closes the pool and removes the fresh database and files.
    pub async fn remove(self) -> Result<(), BenchError> {
        self.db.close().await;
        self.fresh_db.remove().await?;
        self.fresh_publisher.remove().await
    }
}

/// Runs the throughput and the paced phase on `engine`, on a signed ledger when
/// `signed_ledger`.
pub(super) async fn run(
    opts: &BenchOptions,
    engine: EngineKind,
    in_round: u32,
    signed_ledger: bool,
) -> Result<RunReport, BenchError> {
    let label = match (engine, signed_ledger) {
        (EngineKind::Wasm, false) => "wasm",
        (EngineKind::Native, false) => "native",
        (EngineKind::Wasm, true) => "wasm_signed",
        (EngineKind::Native, true) => "native_signed",
    };
    let target = Target::create_with(opts, label, true, signed_ledger).await?;
    let result = phases(opts, engine, in_round, &target).await;
    target.remove().await?;
    result
}

async fn phases(
    opts: &BenchOptions,
    engine: EngineKind,
    in_round: u32,
    target: &Target,
) -> Result<RunReport, BenchError> {
    tracing::info!(?engine, ops = opts.ops, "storing the backlog");
    let store_ops_per_sec = target.store(opts.ops).await?;

    let probe = Arc::new(Probe::default());
    let mut tenant = target.tenant(opts, engine).await?;
    tenant.set_probe(probe.clone());
    // The paced phase wakes the worker itself; the polls only matter as a fallback.
    let worker = Worker::new(tenant, Intervals::default());

    tracing::info!(?engine, "delivering the backlog");
    let (_stop, never) = watch::channel(false);
    let started = Instant::now();
    let summary = worker.run(true, never).await;
    // A signed ledger publishes its tiles and checkpoint beside the appends: the drain
    // ends when the checkpoint covers it, so that work is timed too.
    let signed_size = match &target.publisher {
        Publisher::Ledger(ledger) => {
            ledger
                .signed_size()
                .await
                .map_err(|e| BenchError::Publisher {
                    url: crate::publisher::options::redact(&target.fresh_publisher.url),
                    message: e.to_string(),
                })?
        }
        _ => None,
    };
    let took = started.elapsed();
    if signed_size.is_some_and(|size| size != u64::from(opts.ops)) {
        return Err(BenchError::Incomplete {
            phase: "delivery",
            message: format!(
                "the ledger's checkpoint covers {signed_size:?} of {} operations",
                opts.ops
            ),
        });
    }
    if summary.exit != Exit::Drained || summary.published != u64::from(opts.ops) {
        return Err(BenchError::Incomplete {
            phase: "delivery",
            message: format!(
                "published {} of {} operations ({:?}, {} failed ticks)",
                summary.published, opts.ops, summary.exit, summary.errors
            ),
        });
    }
    let guest_time_share = probe.guest_time().as_secs_f64() / took.as_secs_f64();
    probe.take_latencies();

    let latencies = if opts.latency_ops > 0 {
        paced(opts, engine, target, &worker, &probe).await?
    } else {
        Vec::new()
    };
    let (trustlogged_rows, ledger_entries) = delivered_as_stored(opts, target).await?;
    let ms = |p| percentile(&latencies, p).map(|us| round(us / 1000.0, 2));
    Ok(RunReport {
        engine,
        round: in_round,
        signed_ledger: signed_size.is_some(),
        fresh_db: crate::publisher::options::redact(&target.fresh_db.url),
        ops: opts.ops,
        batch: opts.config.batch_size,
        store_ops_per_sec: round(store_ops_per_sec, 0),
        ops_per_sec: round(f64::from(opts.ops) / took.as_secs_f64(), 0),
        delivery_seconds: round(took.as_secs_f64(), 3),
        guest_time_share: round(guest_time_share, 3),
        p50_latency_ms: ms(50.0),
        p99_latency_ms: ms(99.0),
        max_latency_ms: ms(100.0),
        latency_ops: opts.latency_ops,
        latency_rate: opts.rate,
        trustlogged_rows,
        ledger_entries,
    })
}

/// What the run left behind, counted in the database and the ledger rather than by the
/// worker that did it: every operation stored is `TRUSTLOGGED`, none waits, and a ledger
/// holds one verified entry for each.
async fn delivered_as_stored(
    opts: &BenchOptions,
    target: &Target,
) -> Result<(u64, Option<u64>), BenchError> {
    let stored = u64::from(opts.ops) + u64::from(opts.latency_ops);
    let stats = target
        .db
        .stats(&opts.config.cursor_key)
        .await
        .map_err(|e| target.db_failed(e))?;
    let incomplete = |message: String| BenchError::Incomplete {
        phase: "check",
        message,
    };
    if stats.trustlogged != stored || stats.not_trustlogged != 0 {
        return Err(incomplete(format!(
            "{} of {stored} stored operations TRUSTLOGGED, {} not",
            stats.trustlogged, stats.not_trustlogged
        )));
    }
    let Some(path) = super::fresh::file_path(&target.fresh_publisher.url, "ledger") else {
        return Ok((stats.trustlogged, None));
    };
    let verifier = match &target.publisher {
        Publisher::Ledger(ledger) => ledger.verifier_key(),
        _ => None,
    };
    let verified = match verifier {
        Some(key) => crate::ledger::verify_v2(&path, key.as_str()).map(|r| r.entries),
        None => crate::ledger::verify(&path).map(|r| r.entries),
    };
    let entries = verified.map_err(|e| {
        incomplete(format!(
            "the ledger {} does not verify: {e}",
            path.display()
        ))
    })?;
    if entries != stored {
        return Err(incomplete(format!(
            "the ledger holds {entries} entries for {stored} operations"
        )));
    }
    Ok((stats.trustlogged, Some(entries)))
}

/// Records `latency_ops` operations at `rate` through a request instance, as
/// `POST /v1/operations` does, while the worker runs; their latencies, sorted, in µs.
async fn paced(
    opts: &BenchOptions,
    engine: EngineKind,
    target: &Target,
    worker: &Worker,
    probe: &Probe,
) -> Result<Vec<f64>, BenchError> {
    tracing::info!(
        ?engine,
        ops = opts.latency_ops,
        rate = opts.rate,
        "paced phase"
    );
    let mut front = target.tenant(opts, engine).await?;
    let (stop, stopped) = watch::channel(false);
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run(false, stopped).await })
    };
    let per_slice = (opts.rate as f64 * PACE.as_secs_f64()).ceil().max(1.0) as u32;
    let run = format!("p{:x}", now_micros());
    let mut ticker = tokio::time::interval(PACE);
    let mut sent = 0u32;
    while sent < opts.latency_ops {
        ticker.tick().await;
        let end = opts.latency_ops.min(sent + per_slice);
        let ops: Vec<Operation> = (sent..end)
            .map(|i| Operation {
                timestamp: now_micros(),
                ..sample::operation(&run, i, 0)
            })
            .collect();
        front.record(ops, None).await?;
        worker.wake();
        sent = end;
    }
    let schedule = Duration::from_secs_f64(f64::from(opts.latency_ops) / f64::from(opts.rate));
    let deadline = Instant::now() + schedule + LATENCY_GRACE;
    let mut latencies = Vec::with_capacity(opts.latency_ops as usize);
    while latencies.len() < opts.latency_ops as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        latencies.extend(probe.take_latencies().into_iter().map(|us| us as f64));
    }
    let _ = stop.send(true);
    let _ = running.await;
    if latencies.len() < opts.latency_ops as usize {
        return Err(BenchError::Incomplete {
            phase: "paced",
            message: format!(
                "{} of {} operations delivered within {:?}",
                latencies.len(),
                opts.latency_ops,
                schedule + LATENCY_GRACE
            ),
        });
    }
    Ok(sorted(latencies))
}

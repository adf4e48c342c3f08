//! `trustlog bench`: every performance figure the project quotes, from one
//! command anyone can rerun against their own database and broker.
//!
//! A run works in a fresh schema (or database file) and ledger file, removed
//! afterwards: a throughput phase stores N operations and times their delivery
//! by the real worker; a paced phase records operations at a steady rate while
//! the worker runs and takes each one's insert→`TRUSTLOGGED` latency. Further
//! modes time one scan batch against a small and a large backlog (`--scaling`),
//! weigh idle tenants (`--idle-tenants`), take delivery latency under concurrent
//! writers that commit out of timestamp order (`--writers`), compare one host
//! with several on one database (`--hosts`), and start many tenants sharing one
//! database server (`--shared-tenants`).

mod delivery;
mod fresh;
mod hosts;
mod idle;
mod reference;
pub mod rss;
mod scaling;
mod shared;
pub mod stats;
mod writers;

use std::time::Duration;

use serde::Serialize;
use trustlog_guest::model::Config;

use crate::scheduling::tenant::TenantError;

pub use hosts::{HostsReport, HostsRun};
pub use idle::IdleReport;
pub use reference::ReferenceReport;
pub use scaling::ScalingReport;
pub use shared::SharedReport;
pub use writers::WritersReport;

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Creating or removing the run's fresh database, schema or files.
    #[error("bench setup: {what}: {message}")]
    Setup {
        /// What was being created or removed (`db`, a schema, a file, the publisher).
        what: String,
        /// Why it failed.
        message: String,
    },
    /// The database refused a call.
    #[error("bench database {url}: {message}")]
    Database {
        /// The database URL, password redacted.
        url: String,
        /// The database's error.
        message: String,
    },
    /// The publisher could not be reached.
    #[error("bench publisher {url}: {message}")]
    Publisher {
        /// The publisher URL, password redacted.
        url: String,
        /// The publisher's error.
        message: String,
    },
    /// The engine failed a call.
    #[error("bench engine: {0}")]
    Engine(#[from] TenantError),
    /// The run did not deliver what it stored.
    #[error("bench {phase}: {message}")]
    Incomplete {
        /// The bench phase that came up short (`delivery`, `paced`, `scaling`, …).
        phase: &'static str,
        /// What was missing, e.g. how many of the operations were published.
        message: String,
    },
    /// The multi-tenant host refused a tenant.
    #[error("bench tenant: {0}")]
    Tenant(String),
}

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The component, in its wasm sandbox: how trustlog runs.
    Wasm,
    /// The same logic compiled into the host: the baseline for the boundary's cost.
    Native,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Database URL; the run works in a fresh schema or file derived from it.
    pub db: String,
    /// Publisher URL; a ledger gets a fresh file.
    pub publisher: String,
    /// Operations stored and delivered in the throughput phase.
    pub ops: u32,
    /// Engine settings (batch size among them).
    pub config: Config,
    /// Engines to run, each on its own fresh database, in this order.
    pub engines: Vec<EngineKind>,
    /// Operations recorded in the paced latency phase (0 skips it).
    pub latency_ops: u32,
    /// Their rate, per second.
    pub rate: u32,
    /// Also run the minimal keyset loop of DESIGN.md §7 over the same backlog.
    pub reference: bool,
    /// Run each engine on an unsigned and a signed ledger in turns (ledger publishers only).
    pub signed_ledger: bool,
    /// How many times each engine (and the reference) runs, taking turns.
    pub rounds: u32,
    /// Backlog sizes for the scaling mode; empty skips it.
    pub scaling_rows: Vec<u32>,
    /// Idle tenants to start instead of the other phases; 0 runs the other phases.
    pub idle_tenants: u32,
    /// How long idle tenants are left alone before they are weighed.
    pub idle_settle: Duration,
    /// Concurrent writers committing out of timestamp order, instead of the other
    /// phases; 0 runs the other phases.
    pub writers: u32,
    /// Rows each writer commits.
    pub writer_rows: u32,
    /// Hosts on the database: with `writers`, how many deliver their rows; alone (more
    /// than 1), the backlog is drained by one host and by this many, in turns.
    pub hosts: u32,
    /// Tenants to start on one database server, a schema each, instead of the other
    /// phases; 0 runs the other phases.
    pub shared_tenants: u32,
    /// Rows each of them delivers.
    pub tenant_rows: u32,
    /// Connections of the pool they share.
    pub shared_pool_size: u32,
    /// Their idle probe, where the server cannot notify (MariaDB).
    pub shared_watch: Duration,
    /// Their lease's time to live, renewed every third of it.
    pub shared_lease_ttl: Duration,
}

/// The figures of one engine's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Whether the component ran in its wasm sandbox or compiled into the host.
    pub engine: EngineKind,
    /// Which round this run belongs to, from 0.
    pub round: u32,
    /// Whether the run's ledger signed a checkpoint after each batch (v2).
    pub signed_ledger: bool,
    /// The fresh database this run worked in, since removed (password redacted).
    pub fresh_db: String,
    /// Operations stored, then delivered.
    pub ops: u32,
    /// Operations per scan batch (the engine's `batch_size`).
    pub batch: u32,
    /// Bulk insert rate of the setup (the application's side), ops/s.
    pub store_ops_per_sec: f64,
    /// Delivery rate: operations marked `TRUSTLOGGED` per second of the drain.
    pub ops_per_sec: f64,
    /// Wall time of the drain, until the worker found the backlog empty, s.
    pub delivery_seconds: f64,
    /// Share of the drain spent in engine code and its boundary (not in host I/O).
    pub guest_time_share: f64,
    /// Paced phase: insert→`TRUSTLOGGED` latency percentiles, in ms.
    pub p50_latency_ms: Option<f64>,
    /// 99th percentile of the paced phase's insert→`TRUSTLOGGED` latency, ms.
    pub p99_latency_ms: Option<f64>,
    /// Slowest insert→`TRUSTLOGGED` latency of the paced phase, ms.
    pub max_latency_ms: Option<f64>,
    /// Operations recorded in the paced phase (0 when it was skipped).
    pub latency_ops: u32,
    /// Rate the paced phase recorded them at, operations per second.
    pub latency_rate: u32,
    /// Rows `TRUSTLOGGED` in the database after the run, counted there: every operation
    /// stored (`ops` + `latency_ops`), or the run fails.
    pub trustlogged_rows: u64,
    /// Entries of a ledger publisher after the run, its chain verified: one per row.
    pub ledger_entries: Option<u64>,
}

/// Everything one `trustlog bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The database and publisher the runs derived their fresh targets from (passwords redacted).
    pub db: String,
    /// The publisher URL the runs derived their fresh targets from (password redacted).
    pub publisher: String,
    /// Rounds run: every engine (and the reference) once per round, taking turns.
    pub rounds: u32,
    /// The first engine's median run (by ops/s), at the top so scripts find it in one place.
    #[serde(flatten)]
    pub first: Option<RunReport>,
    /// Every run's figures, in run order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunReport>,
    /// Median wasm throughput over median native throughput, when both ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_over_native: Option<f64>,
    /// Each round's wasm throughput over its native throughput, the two run back to
    /// back: how far the machine's noise moves the ratio between rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wasm_over_native_by_round: Vec<f64>,
    /// The ratio the median guest time shares imply had host I/O taken the same time
    /// in both engines' runs: the boundary's cost without the I/O noise of the rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_over_native_at_equal_io: Option<f64>,
    /// The first engine's median rate on a signed ledger over its median rate on an
    /// unsigned one, when `--signed-ledger` ran both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_over_unsigned: Option<f64>,
    /// Each round's signed rate over its unsigned rate, the two run back to back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signed_over_unsigned_by_round: Vec<f64>,
    /// The minimal keyset loop's median run, when `--reference` ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceReport>,
    /// The first engine's median ops/s over the reference loop's median rows/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_reference: Option<f64>,
    /// Scan batch time and memory against small and large backlogs, when `--scaling` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingReport>,
    /// Memory and instantiation figures of idle tenants, when `--idle-tenants` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    /// Latency under concurrent out-of-order writers, when `--writers` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<WritersReport>,
    /// Throughput of one host against several on one database, when `--hosts` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostsReport>,
    /// Start, memory and delivery figures of tenants on one server, when `--shared-tenants` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedReport>,
    /// Peak resident memory of the whole process, MiB.
    pub peak_rss_mib: Option<f64>,
}

/// A tag no earlier run used: names the fresh schema and files.
fn run_tag(label: &str) -> String {
    format!(
        "bench_{label}_{}_{:x}",
        std::process::id(),
        crate::scheduling::clock::now_micros()
    )
}

/// The engines' order in round `round`: as given in even rounds, reversed in odd ones.
/// Whatever the second run of a round gains or loses from the first (a warm page cache,
/// a checkpoint the first one triggered) then falls on each engine equally often.
fn round_order(engines: &[EngineKind], round: u32) -> Vec<EngineKind> {
    let mut order = engines.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// The ledgers each engine runs on in round `round`: unsigned only, or (with
/// `--signed-ledger`) unsigned and signed, the signed one first in every other round.
fn ledger_order(signed_ledger: bool, round: u32) -> Vec<bool> {
    match (signed_ledger, round % 2) {
        (false, _) => vec![false],
        (true, 0) => vec![false, true],
        (true, _) => vec![true, false],
    }
}

/// Per round that ran `engine` on both ledgers, the signed run's ops/s over the
/// unsigned run's, in round order.
fn signed_ratios_by_round(runs: &[RunReport], engine: EngineKind) -> Vec<f64> {
    let of = |signed| {
        runs.iter()
            .filter(move |r| r.engine == engine && r.signed_ledger == signed)
    };
    of(true)
        .filter_map(|signed| {
            let unsigned = of(false).find(|u| u.round == signed.round)?;
            Some(stats::round(signed.ops_per_sec / unsigned.ops_per_sec, 3))
        })
        .collect()
}

/// Per round that ran both engines, wasm ops/s over native ops/s, in round order.
fn ratios_by_round(runs: &[RunReport]) -> Vec<f64> {
    let of = |kind| {
        runs.iter()
            .filter(move |r| r.engine == kind && !r.signed_ledger)
    };
    of(EngineKind::Wasm)
        .filter_map(|wasm| {
            let native = of(EngineKind::Native).find(|n| n.round == wasm.round)?;
            Some(stats::round(wasm.ops_per_sec / native.ops_per_sec, 3))
        })
        .collect()
}

/// Runs what `opts` asks for; progress goes to the log, figures to the report.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let redact = crate::publisher::options::redact;
    let mut report = BenchReport {
        db: redact(&opts.db),
        publisher: redact(&opts.publisher),
        rounds: opts.rounds.max(1),
        first: None,
        runs: Vec::new(),
        wasm_over_native: None,
        wasm_over_native_by_round: Vec::new(),
        wasm_over_native_at_equal_io: None,
        signed_over_unsigned: None,
        signed_over_unsigned_by_round: Vec::new(),
        reference: None,
        over_reference: None,
        scaling: None,
        idle: None,
        writers: None,
        hosts: None,
        shared: None,
        peak_rss_mib: None,
    };
    if opts.idle_tenants > 0 {
        report.idle = Some(idle::run(opts).await?);
    } else if opts.shared_tenants > 0 {
        report.shared = Some(shared::run(opts).await?);
    } else if opts.writers > 0 {
        report.writers = Some(writers::run(opts).await?);
    } else if opts.hosts > 1 {
        report.hosts = Some(hosts::run(opts).await?);
    } else {
        if opts.signed_ledger && !opts.publisher.starts_with("ledger://") {
            return Err(BenchError::Setup {
                what: "publisher".into(),
                message: "--signed-ledger compares ledgers: give a ledger:// publisher".into(),
            });
        }
        // Engines (and the reference) take turns, round after round, so a slow spell of
        // a noisy machine falls on all of them; each figure is the median of its rounds.
        let mut references = Vec::new();
        for round in 0..opts.rounds.max(1) {
            for engine in round_order(&opts.engines, round) {
                for signed in ledger_order(opts.signed_ledger, round) {
                    report
                        .runs
                        .push(delivery::run(opts, engine, round, signed).await?);
                }
            }
            if opts.reference {
                references.push(reference::run(opts).await?);
            }
        }
        let median_of = |kind, signed| {
            let runs = report
                .runs
                .iter()
                .filter(|r| r.engine == kind && r.signed_ledger == signed);
            stats::median_by(runs, |r| r.ops_per_sec).cloned()
        };
        let median_run = |kind| median_of(kind, false);
        if let Some(&first) = opts.engines.first()
            && let (Some(s), Some(u)) = (median_of(first, true), median_of(first, false))
        {
            report.signed_over_unsigned = Some(stats::round(s.ops_per_sec / u.ops_per_sec, 3));
            report.signed_over_unsigned_by_round = signed_ratios_by_round(&report.runs, first);
        }
        if let (Some(w), Some(n)) = (median_run(EngineKind::Wasm), median_run(EngineKind::Native)) {
            report.wasm_over_native = Some(stats::round(w.ops_per_sec / n.ops_per_sec, 3));
        }
        report.wasm_over_native_by_round = ratios_by_round(&report.runs);
        let median_share = |kind| {
            let shares = report
                .runs
                .iter()
                .filter(|r| r.engine == kind && !r.signed_ledger);
            stats::median_by(shares.map(|r| r.guest_time_share), |s| *s)
        };
        if let (Some(w), Some(n)) = (
            median_share(EngineKind::Wasm),
            median_share(EngineKind::Native),
        ) {
            report.wasm_over_native_at_equal_io =
                stats::ratio_at_equal_io(w, n).map(|r| stats::round(r, 3));
        }
        report.first = opts.engines.first().and_then(|&kind| median_run(kind));
        report.reference = stats::median_by(references, |r| r.rows_per_sec);
        if let (Some(first), Some(reference)) = (&report.first, &report.reference) {
            report.over_reference =
                Some(stats::round(first.ops_per_sec / reference.rows_per_sec, 2));
        }
        if !opts.scaling_rows.is_empty() {
            let engine = opts.engines.first().copied().unwrap_or(EngineKind::Wasm);
            report.scaling = Some(scaling::run(opts, engine).await?);
        }
    }
    report.peak_rss_mib = rss::peak_mib().map(|m| stats::round(m, 1));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_goes_first_in_every_other_round() {
        let both = [EngineKind::Wasm, EngineKind::Native];
        let firsts: Vec<EngineKind> = (0..4).map(|r| round_order(&both, r)[0]).collect();
        assert_eq!(
            firsts,
            [
                EngineKind::Wasm,
                EngineKind::Native,
                EngineKind::Wasm,
                EngineKind::Native
            ]
        );
        assert_eq!(
            round_order(&both, 1),
            [EngineKind::Native, EngineKind::Wasm]
        );
        assert_eq!(round_order(&[EngineKind::Native], 1), [EngineKind::Native]);
    }

    fn run(engine: EngineKind, round: u32, ops_per_sec: f64) -> RunReport {
        RunReport {
            engine,
            round,
            signed_ledger: false,
            fresh_db: String::new(),
            ops: 1,
            batch: 1,
            store_ops_per_sec: 1.0,
            ops_per_sec,
            delivery_seconds: 1.0,
            guest_time_share: 0.1,
            p50_latency_ms: None,
            p99_latency_ms: None,
            max_latency_ms: None,
            latency_ops: 0,
            latency_rate: 1,
            trustlogged_rows: 1,
            ledger_entries: None,
        }
    }

    #[test]
    fn each_round_pairs_its_own_two_runs_whatever_their_order() {
        let runs = [
            run(EngineKind::Wasm, 0, 90.0),
            run(EngineKind::Native, 0, 100.0),
            run(EngineKind::Native, 1, 50.0),
            run(EngineKind::Wasm, 1, 55.0),
            run(EngineKind::Wasm, 2, 70.0),
        ];
        assert_eq!(ratios_by_round(&runs), [0.9, 1.1]);
        assert_eq!(ratios_by_round(&runs[..1]), Vec::<f64>::new());
    }

    #[test]
    fn signed_and_unsigned_ledgers_take_turns_and_pair_by_round() {
        assert_eq!(ledger_order(false, 1), [false]);
        assert_eq!(ledger_order(true, 0), [false, true]);
        assert_eq!(ledger_order(true, 1), [true, false]);
        let signed = |round, ops_per_sec| RunReport {
            signed_ledger: true,
            ..run(EngineKind::Wasm, round, ops_per_sec)
        };
        let runs = [
            run(EngineKind::Wasm, 0, 100.0),
            signed(0, 95.0),
            signed(1, 40.0),
            run(EngineKind::Wasm, 1, 50.0),
            run(EngineKind::Native, 1, 10.0),
        ];
        assert_eq!(signed_ratios_by_round(&runs, EngineKind::Wasm), [0.95, 0.8]);
        assert_eq!(
            signed_ratios_by_round(&runs, EngineKind::Native),
            Vec::<f64>::new()
        );
        // A signed run is never taken for the other engine's pair.
        assert_eq!(ratios_by_round(&runs), [5.0]);
    }
}

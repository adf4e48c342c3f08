//! Hosts started the way `serve` starts them (a LISTEN or the watch probe, the lease,
//! outage handling), each in a multi-tenant host of its own as separate processes
//! would be, on one bench target; and the several-hosts mode: the same backlog
//! drained by one host and by several, in turns.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::TenantSpec;
use crate::sandbox::imports::Probe;
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::{self, Allocation};
use crate::scheduling::tenants::Tenants;
use crate::scheduling::worker::{DrainBounds, Intervals};
use crate::surfaces::metrics::Metrics;

use super::delivery::Target;
use super::stats::{median_by, round};
use super::{BenchError, BenchOptions};

/// The longest a several-hosts drain may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);
/// The holder the bench names itself in the lease while the hosts start.
const GATE: &str = "bench/0/-/starting";

/// One `serve`, in this process.
pub(super) struct Host {
    tenants: Arc<Tenants>,
}

impl Host {
    /// Starts a host of its own on `target`, reporting into `probe`.
    pub async fn start(
        opts: &BenchOptions,
        target: &Target,
        until_drained: bool,
        probe: &Arc<Probe>,
    ) -> Result<Host, BenchError> {
        let failed = |e: String| BenchError::Tenant(e);
        let engine = runtime::engine(Allocation::OnDemand).map_err(|e| failed(e.to_string()))?;
        let metrics = Metrics::new().map_err(|e| failed(e.to_string()))?;
        let tenants = Tenants::draining(engine, metrics, until_drained, DrainBounds::default());
        let spec = TenantSpec {
            id: "bench".into(),
            db: target.db_url().to_string(),
            publisher: target.publisher_url().to_string(),
            engine: opts.config.clone(),
            intervals: Intervals::default(),
            limits: Limits::default(),
            admin_token: None,
            component: None,
            poll_only: false,
            schema: None,
        };
        let running = tenants.add(spec).await.map_err(|e| failed(e.to_string()))?;
        running
            .worker
            .tenant()
            .lock()
            .await
            .set_probe(probe.clone());
        Ok(Host { tenants })
    }

    /// Operations this host marked `TRUSTLOGGED`, by tick kind.
    pub fn published_by_tick(&self) -> BTreeMap<String, f64> {
        let text = self.tenants.metrics().render().unwrap_or_default();
        let mut by_tick = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("trustlog_published_total{") else {
                continue;
            };
            let tick = rest
                .split("tick=\"")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .unwrap_or("");
            let value: f64 = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0);
            *by_tick.entry(tick.to_string()).or_insert(0.0) += value;
        }
        by_tick
    }

    /// Waits until this host's drain ended.
    pub async fn drained(&self) {
        self.tenants.wait_all_ended().await;
    }

    /// Stops the host between batches.
    pub async fn stop(self) {
        self.tenants.shutdown().await;
    }
}

/// One drain of the several-hosts mode.
#[derive(Debug, Clone, Serialize)]
pub struct HostsRun {
    /// Hosts that drained the backlog together in this run (1, or `--hosts`).
    pub hosts: u32,
    /// Which round this drain belongs to, from 0.
    pub round: u32,
    /// Operations marked per second, from the first to the last mark.
    pub ops_per_sec: f64,
    /// How many of the hosts published anything.
    pub hosts_that_published: u32,
}

/// The several-hosts mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct HostsReport {
    /// Hosts in the several-hosts drains (`--hosts`), compared against one.
    pub hosts: u32,
    /// Operations stored, then drained, in each run.
    pub ops: u32,
    /// Operations per scan batch (the engine's `batch_size`).
    pub batch: u32,
    /// Every drain's figures, in run order.
    pub runs: Vec<HostsRun>,
    /// Median ops/s with one host, and with `hosts`.
    pub one_host_ops_per_sec: f64,
    /// Median ops/s with `hosts` hosts draining together.
    pub hosts_ops_per_sec: f64,
    /// The second over the first, from medians of the same run.
    pub hosts_over_one: f64,
}

/// Drains `opts.ops` stored operations with one host and with `opts.hosts`, in turns
/// for `opts.rounds` rounds, each drain on a fresh target.
pub(super) async fn run(opts: &BenchOptions) -> Result<HostsReport, BenchError> {
    let mut runs = Vec::new();
    for round_no in 0..opts.rounds.max(1) {
        let mut order = vec![1, opts.hosts];
        if round_no % 2 == 1 {
            order.reverse();
        }
        for hosts in order {
            let target = Target::for_hosts(opts, &format!("hosts{hosts}")).await?;
            let result = drain(opts, &target, hosts, round_no).await;
            target.remove().await?;
            runs.push(result?);
        }
    }
    let median = |hosts: u32| {
        median_by(runs.iter().filter(|r| r.hosts == hosts), |r| r.ops_per_sec)
            .map_or(0.0, |r| r.ops_per_sec)
    };
    let (one, many) = (median(1), median(opts.hosts));
    Ok(HostsReport {
        hosts: opts.hosts,
        ops: opts.ops,
        batch: opts.config.batch_size,
        one_host_ops_per_sec: one,
        hosts_ops_per_sec: many,
        hosts_over_one: if one > 0.0 { round(many / one, 3) } else { 0.0 },
        runs,
    })
}

async fn drain(
    opts: &BenchOptions,
    target: &Target,
    hosts: u32,
    round_no: u32,
) -> Result<HostsRun, BenchError> {
    tracing::info!(ops = opts.ops, hosts, "storing the backlog");
    target.store(opts.ops).await?;
    let probe = Arc::new(Probe::default());
    probe.record_marks();
    // The bench holds the lease while the hosts start, so each host's start-up (its
    // connections, its component) lands before the drain, not inside one run's and
    // not the other's; released, it goes to one of them within a second.
    let key = opts.config.cursor_key.as_str();
    let failed = |e: trustlog_guest::model::DbError| target.db_failed(e);
    target
        .db
        .claim_lease(key, GATE, DRAIN_LIMIT, "bench: hosts starting")
        .await
        .map_err(failed)?;
    let mut started = Vec::new();
    for _ in 0..hosts {
        started.push(Host::start(opts, target, true, &probe).await?);
    }
    tracing::info!(hosts, "draining");
    target.db.release_lease(key, GATE).await.map_err(failed)?;
    let all = futures_util::future::join_all(started.iter().map(Host::drained));
    if tokio::time::timeout(DRAIN_LIMIT, all).await.is_err() {
        return Err(BenchError::Incomplete {
            phase: "hosts",
            message: format!("{hosts} hosts did not drain within {DRAIN_LIMIT:?}"),
        });
    }
    let published: Vec<f64> = started
        .iter()
        .map(|h| h.published_by_tick().values().sum())
        .collect();
    for host in started {
        host.stop().await;
    }
    let marks = probe.take_marks();
    if marks.len() != opts.ops as usize {
        return Err(BenchError::Incomplete {
            phase: "hosts",
            message: format!("{} of {} operations marked", marks.len(), opts.ops),
        });
    }
    // From the first mark to the last: what the drain took, whichever host did it.
    let first = marks.values().min().copied().unwrap_or_else(Instant::now);
    let last = marks.values().max().copied().unwrap_or(first);
    let seconds = last.duration_since(first).as_secs_f64().max(1e-6);
    Ok(HostsRun {
        hosts,
        round: round_no,
        ops_per_sec: round(f64::from(opts.ops) / seconds, 0),
        hosts_that_published: published.iter().filter(|&&p| p > 0.0).count() as u32,
    })
}

//! What an idle tenant costs: N tenants started in one multi-tenant host (each
//! on its own SQLite file and ledger, as `serve --config` would run them), left
//! alone until their workers have polled, then weighed by resident memory; and
//! how long each took to instantiate and configure its guest.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::TenantSpec;
use crate::sandbox::limits::Limits;
use crate::sandbox::runtime::{self, Allocation};
use crate::scheduling::tenants::Tenants;
use crate::scheduling::worker::Intervals;
use crate::surfaces::metrics::Metrics;

use super::stats::{percentile, round, sorted};
use super::{BenchError, BenchOptions, rss, run_tag};

/// The idle mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Idle tenants started in the one multi-tenant host.
    pub tenants: u32,
    /// Resident memory with one tenant, then with all of them, MiB.
    pub rss_one_tenant_mib: Option<f64>,
    /// Resident memory with every idle tenant up, MiB.
    pub rss_all_tenants_mib: Option<f64>,
    /// What each tenant beyond the first added, MiB (target ≤ 2).
    pub rss_per_idle_tenant_mib: Option<f64>,
    /// OS threads of the process with all tenants up.
    pub threads: Option<u64>,
    /// Instantiating and configuring one guest, µs (target ≤ 1,000).
    pub instantiate_p50_us: Option<f64>,
    /// 99th percentile of instantiating and configuring one guest, µs.
    pub instantiate_p99_us: Option<f64>,
    /// Slowest instantiation and configuration of one guest, µs.
    pub instantiate_max_us: Option<f64>,
}

/// The directory the tenants' files go in, beside the `--db` file.
fn tenants_dir(db: &str, tag: &str) -> Result<PathBuf, BenchError> {
    let path = super::fresh::file_path(db, "sqlite").ok_or_else(|| BenchError::Setup {
        what: "db".into(),
        message: "--idle-tenants gives each tenant a SQLite file of its own: pass --db sqlite://PATH (the files go beside PATH)".into(),
    })?;
    Ok(path
        .parent()
        .map(|p| p.join(tag))
        .unwrap_or_else(|| PathBuf::from(tag)))
}

fn spec(dir: &std::path::Path, i: u32, opts: &BenchOptions) -> TenantSpec {
    TenantSpec {
        id: format!("t{i:05}"),
        db: format!("sqlite://{}", dir.join(format!("t{i:05}.db")).display()),
        publisher: format!("ledger://{}", dir.join(format!("t{i:05}.ledger")).display()),
        engine: opts.config.clone(),
        intervals: Intervals::default(),
        limits: Limits::default(),
        admin_token: None,
        component: None,
        poll_only: true,
        schema: None,
    }
}

/// Starts `opts.idle_tenants` tenants, lets them idle, weighs them, stops them.
pub(super) async fn run(opts: &BenchOptions) -> Result<IdleReport, BenchError> {
    let n = opts.idle_tenants;
    let dir = tenants_dir(&opts.db, &run_tag("idle"))?;
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Setup {
        what: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let result = weigh(opts, n, &dir).await;
    let removed = std::fs::remove_dir_all(&dir).map_err(|e| BenchError::Setup {
        what: format!("removing {}", dir.display()),
        message: e.to_string(),
    });
    let report = result?;
    removed?;
    Ok(report)
}

async fn weigh(
    opts: &BenchOptions,
    n: u32,
    dir: &std::path::Path,
) -> Result<IdleReport, BenchError> {
    // Sized as `serve --config` sizes its pool.
    let engine = runtime::engine(Allocation::Pooling {
        instances: n.saturating_mul(3).saturating_add(8),
    })
    .map_err(|e| BenchError::Tenant(e.to_string()))?;
    let metrics = Metrics::new().map_err(|e| BenchError::Tenant(e.to_string()))?;
    let tenants = Tenants::new(engine, metrics, false);
    let settle = |d: Duration| tokio::time::sleep(d);

    let mut instantiate = Vec::with_capacity(n as usize);
    let first = tenants
        .add(spec(dir, 0, opts))
        .await
        .map_err(|e| BenchError::Tenant(e.to_string()))?;
    instantiate.push(first.instantiate.as_secs_f64() * 1e6);
    settle(opts.idle_settle).await;
    let rss_one = rss::current_mib();

    for i in 1..n {
        let running = tenants
            .add(spec(dir, i, opts))
            .await
            .map_err(|e| BenchError::Tenant(e.to_string()))?;
        instantiate.push(running.instantiate.as_secs_f64() * 1e6);
        if i % 100 == 0 {
            tracing::info!(started = i, "idle tenants");
        }
    }
    settle(opts.idle_settle).await;
    let rss_all = rss::current_mib();
    let threads = rss::threads();
    tenants.shutdown().await;

    // The first instantiation compiles nothing (the runtime is cached) but warms
    // the pool; every one of them counts.
    let instantiate = sorted(instantiate);
    let us = |p| percentile(&instantiate, p).map(|x| round(x, 0));
    let per_tenant = match (rss_one, rss_all) {
        (Some(one), Some(all)) if n > 1 => Some(round((all - one) / f64::from(n - 1), 3)),
        _ => None,
    };
    Ok(IdleReport {
        tenants: n,
        rss_one_tenant_mib: rss_one.map(|m| round(m, 1)),
        rss_all_tenants_mib: rss_all.map(|m| round(m, 1)),
        rss_per_idle_tenant_mib: per_tenant,
        threads,
        instantiate_p50_us: us(50.0),
        instantiate_p99_us: us(99.0),
        instantiate_max_us: us(100.0),
    })
}

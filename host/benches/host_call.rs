//! Criterion benchmarks of one call across the wasm component boundary.
//!
//! Every tick the host drives is a host→guest export call, and every database or
//! publisher step inside it is a guest→host import call; this measures what one such
//! crossing costs, on the embedded component with SQLite and the ledger publisher:
//!
//! - `export_call_configure`: `Instance::configure`, an export call with no imports;
//! - `export_call_with_one_import_status`: `Instance::status`, an export call that
//!   makes one `stats` import (one SQLite snapshot read) and returns its result;
//! - `db_stats_direct`: the same `Database::stats` called natively, so
//!   `status − db_stats_direct` is the cost of the round trip through the boundary.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use trustlog_guest::envelope::sha256_hex;
use trustlog_guest::model::{Config, Micros, Operation};
use trustlog_host::db::Database;
use trustlog_host::publisher::Publisher;
use trustlog_host::sandbox::imports::LogAllowance;
use trustlog_host::sandbox::limits::Limits;
use trustlog_host::sandbox::runtime::Runtime;

/// Rows seeded before measuring, so `stats` counts a realistic backlog rather than an empty table.
const ROWS: u32 = 1_000;

/// 2025-11-24T16:00:00Z in microseconds.
const BASE: Micros = 1_764_000_000_000_000;

/// A realistic waiting row, shaped like the host's demo data.
fn operation(i: u32) -> Operation {
    Operation {
        op_id: format!("bench-{i:05}"),
        op_actor: format!("user-{}", i % 7),
        doid: format!("10.1000/bench.{i}"),
        producer_id: "bench-producer".into(),
        request_body_hash: Some(sha256_hex(format!("request {i}").as_bytes())),
        response_body_hash: Some(sha256_hex(format!("response {i}").as_bytes())),
        op_source: "IRP".into(),
        op_type: "Create".into(),
        do_prefix: "10.1000".into(),
        do_repository: "bench-repository".into(),
        client_ip: Some(format!("192.0.2.{}", i % 250 + 1)),
        server_ip: Some("198.51.100.7".into()),
        timestamp: BASE + i64::from(i / 10),
    }
}

/// Runs `iters` calls inside one `block_on`, so the runtime's entry cost is not
/// counted per call and the three benches are timed the same way.
fn timed(rt: &tokio::runtime::Runtime, iters: u64, mut call: impl AsyncFnMut()) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            call().await;
        }
        start.elapsed()
    })
}

fn host_call(c: &mut Criterion) {
    // One thread, as a tenant's task sees it: no cross-thread hand-off is measured.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = Config::default();
    let runtime = Runtime::new().expect("embedded component compiles");
    let (db, mut instance) = rt.block_on(async {
        let db_url = format!("sqlite://{}", dir.path().join("b.db").display());
        let ledger_url = format!("ledger://{}", dir.path().join("b.ledger").display());
        let db = Database::connect(&db_url).await.expect("sqlite connects");
        db.migrate().await.expect("schema migrates");
        let publisher = Publisher::connect(&ledger_url).await.expect("ledger opens");
        let mut instance = runtime
            .instantiate(
                "bench",
                db.clone(),
                publisher,
                Limits::default(),
                LogAllowance::new(Limits::default().log_lines_per_sec),
            )
            .await
            .expect("component instantiates");
        instance.configure(cfg.clone()).await.expect("configures");
        let ops = (0..ROWS).map(operation).collect();
        instance.record(ops, None).await.expect("rows recorded");
        (db, instance)
    });
    let now = BASE + 60_000_000;

    let mut group = c.benchmark_group("host_call");
    group.bench_function("export_call_configure", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, async || {
                instance.configure(cfg.clone()).await.expect("configure");
            })
        })
    });
    group.bench_function("export_call_with_one_import_status", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, async || {
                black_box(instance.status(black_box(now)).await.expect("status"));
            })
        })
    });
    group.bench_function("db_stats_direct", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, async || {
                black_box(db.stats(&cfg.cursor_key).await.expect("stats"));
            })
        })
    });
    group.finish();
}

criterion_group!(benches, host_call);
criterion_main!(benches);

//! Criterion benchmarks of the guest's pure decision logic, built natively.
//!
//! Measures the backoff schedule (`Backoff::delay`, `Backoff::after_failure`), the
//! cursor's move planning over a 1,000-row scan batch, and envelope encoding
//! (canonical JSON and its SHA-256) for one operation and for a batch of 1,000.
//! These run inside every scan and retry tick, so they bound what the guest can
//! deliver per second before any I/O; a native figure is also the baseline the
//! same code in wasm is compared against.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use trustlog_guest::cursor::Cursor;
use trustlog_guest::envelope;
use trustlog_guest::model::{Backoff, DEFAULT_CURSOR_KEY, Micros, Operation, Position};

/// Rows per batch: the largest batch size the host's `trustlog bench` drives.
const BATCH: usize = 1_000;

/// 2025-11-24T16:00:00Z in microseconds: a plausible "now".
const BASE: Micros = 1_764_000_000_000_000;

/// A realistic row, shaped like the host's demo data: hex SHA-256 hashes, some
/// optional fields absent, and ten rows sharing each timestamp.
fn operation(i: u32) -> Operation {
    let kinds = ["Create", "Update", "Delete", "Retrieve"];
    Operation {
        op_id: format!("bench-{i:05}"),
        op_actor: format!("user-{}", i % 7),
        doid: format!("10.1000/bench.{i}"),
        producer_id: "bench-producer".into(),
        request_body_hash: Some(envelope::sha256_hex(format!("request {i}").as_bytes())),
        response_body_hash: (!i.is_multiple_of(3))
            .then(|| envelope::sha256_hex(format!("response {i}").as_bytes())),
        op_source: if i.is_multiple_of(2) { "IRP" } else { "DOIP" }.into(),
        op_type: kinds[(i % 4) as usize].into(),
        do_prefix: "10.1000".into(),
        do_repository: "bench-repository".into(),
        client_ip: Some(format!("192.0.2.{}", i % 250 + 1)),
        server_ip: (!i.is_multiple_of(5)).then(|| "198.51.100.7".into()),
        timestamp: BASE + i64::from(i / 10),
    }
}

/// A scan batch as the database returns it: in (timestamp, op_id) order.
fn batch() -> Vec<Operation> {
    (0..BATCH as u32).map(operation).collect()
}

/// The seed's schedule (1m … 16m, 5 retries) at the retry counts a row passes through.
fn backoff(c: &mut Criterion) {
    let b = Backoff::default();
    let mut group = c.benchmark_group("backoff");
    // 1 is uncapped, 5 is the last step, 40 hits the cap early and stops looping.
    for n in [1u32, 3, 5, 40] {
        group.bench_with_input(BenchmarkId::new("delay", n), &n, |bench, &n| {
            bench.iter(|| black_box(&b).delay(black_box(n)))
        });
    }
    // (0, first) is the first failed delivery; 4 is the last retry before the dead letter.
    for (retries_done, first_attempt) in [(0u32, true), (2, false), (4, false)] {
        let id = format!("{retries_done}_first={first_attempt}");
        group.bench_function(BenchmarkId::new("after_failure", id), |bench| {
            bench.iter(|| {
                black_box(&b).after_failure(
                    black_box(BASE),
                    black_box(retries_done),
                    black_box(first_attempt),
                )
            })
        });
    }
    group.finish();
}

/// Planning the cursor move after a full 1,000-row scan: one pass to find the maximum position.
fn cursor(c: &mut Criterion) {
    let owned = batch();
    let ops: Vec<_> = owned.iter().map(Operation::view).collect();
    let from = Some(Position {
        timestamp: BASE - 1,
        op_id: "bench-previous".into(),
    });
    let mut group = c.benchmark_group("cursor");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("plan_move_1000", |bench| {
        bench.iter(|| Cursor::plan_move(DEFAULT_CURSOR_KEY, black_box(&from), black_box(&ops)))
    });
    group.finish();
}

/// The canonical bytes and SHA-256 every published envelope costs.
fn envelope_encoding(c: &mut Criterion) {
    let one = operation(1);
    let ops = batch();
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("canonical_bytes", |bench| {
        bench.iter(|| envelope::canonical_bytes(black_box(&one)))
    });
    group.bench_function("build", |bench| {
        bench.iter(|| envelope::build(black_box(&one)))
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("build_1000", |bench| {
        bench.iter(|| {
            black_box(&ops)
                .iter()
                .map(envelope::build)
                .collect::<Result<Vec<_>, _>>()
        })
    });
    group.finish();
}

criterion_group!(benches, backoff, cursor, envelope_encoding);
criterion_main!(benches);

//! `trustlog bench`, the real binary on every database: it reports every figure
//! it promises, delivers everything it stored (or fails), and leaves nothing behind.

mod support;

use std::path::Path;

use support::backends::{Backend, admin_url, mysql_admin_url, postgres_admin_url, scalar_at};
use support::brokers::{nats_addr, nats_client};
use support::*;

on_every_database!(
    both_engines_and_the_reference_take_turns_report_medians_and_leave_nothing_behind,
    writers_committing_out_of_order_are_measured_from_their_commit_and_leave_nothing_behind,
);

/// The JSON object on the last line of a `--json` run.
fn last_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let last = stdout.lines().last().expect("bench printed nothing");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

/// Files left in `dir` other than the ledger the test itself named.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether the fresh schema named in `fresh_db` still exists on the server.
async fn schema_exists(b: Backend, fresh_db: &str) -> bool {
    let at = fresh_db
        .find("trustlog_bench_")
        .unwrap_or_else(|| panic!("no fresh schema named in {fresh_db}"));
    let name: String = fresh_db[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // The name is only [a-z0-9_], so it can stand in the SQL as a literal.
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}'");
    scalar_at(b, &admin_url(b), &sql).await > 0
}

/// The lower median of `values`, as the bench takes it.
fn lower_median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

async fn both_engines_and_the_reference_take_turns_report_medians_and_leave_nothing_behind(
    b: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("b.db").display()),
        Backend::Postgres => postgres_admin_url(),
        Backend::MySql => mysql_admin_url(),
    };
    let ledger = format!("ledger://{}", dir.path().join("b.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--ops",
            "3000",
            "--batch",
            "200",
            "--latency-ops",
            "200",
            "--rate",
            "500",
            "--engine",
            "both",
            "--reference",
            "--rounds",
            "2",
            "--json",
        ],
        "",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wasm/native throughput"), "{text}");
    assert!(text.contains("reference (minimal keyset loop)"), "{text}");
    let r = last_json(&out);

    // The first engine's median run is at the top, as scripts expect it.
    assert_eq!(r["rounds"], 2, "{r}");
    assert_eq!(r["engine"], "wasm", "{r}");
    assert!(number(&r, "ops_per_sec") > 0.0, "{r}");
    let (p50, p99) = (number(&r, "p50_latency_ms"), number(&r, "p99_latency_ms"));
    assert!(p50 > 0.0 && p50 <= p99, "{r}");
    // 200 at 500/s: a latency is at least a database round trip and not seconds.
    assert!(p99 < 5_000.0, "{r}");
    let share = number(&r, "guest_time_share");
    assert!(share > 0.0 && share < 1.0, "{r}");
    assert!(number(&r, "peak_rss_mib") > 1.0, "{r}");

    let runs = r["runs"].as_array().unwrap();
    let engines: Vec<&str> = runs.iter().map(|x| x["engine"].as_str().unwrap()).collect();
    // The engines swap order every other round, so neither always runs second.
    assert_eq!(engines, ["wasm", "native", "native", "wasm"], "{r}");
    let rounds: Vec<u64> = runs.iter().map(|x| x["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds, [0, 0, 1, 1], "{r}");
    // Each round's own ratio: its wasm run over its native run.
    let by_round = r["wasm_over_native_by_round"].as_array().unwrap();
    assert_eq!(by_round.len(), 2, "{r}");
    for (round, ratio) in by_round.iter().enumerate() {
        let rate = |engine: &str| {
            runs.iter()
                .find(|x| x["round"] == round && x["engine"] == engine)
                .map(|x| number(x, "ops_per_sec"))
                .unwrap()
        };
        let expected = rate("wasm") / rate("native");
        assert!((ratio.as_f64().unwrap() - expected).abs() < 0.001, "{r}");
    }
    for run in runs {
        assert_eq!(run["ops"], 3000, "{run}");
        assert_eq!(run["batch"], 200, "{run}");
        // Delivered as stored, counted in the run's database and its verified ledger:
        // the backlog and the paced operations, each once.
        assert_eq!(run["trustlogged_rows"], 3200, "{run}");
        assert_eq!(run["ledger_entries"], 3200, "{run}");
        assert!(number(run, "ops_per_sec") > 0.0, "{run}");
        assert!(number(run, "store_ops_per_sec") > 0.0, "{run}");
        assert!(
            number(run, "p50_latency_ms") <= number(run, "p99_latency_ms"),
            "{run}"
        );
    }
    // The lower median of one figure over one engine's runs.
    let median = |engine: &str, figure: &str| -> f64 {
        let runs = runs.iter().filter(|x| x["engine"] == engine);
        lower_median(runs.map(|x| number(x, figure)).collect())
    };
    let (wasm, native) = (
        median("wasm", "ops_per_sec"),
        median("native", "ops_per_sec"),
    );
    assert_eq!(number(&r, "ops_per_sec"), wasm, "{r}");
    let ratio = number(&r, "wasm_over_native");
    assert!(
        (ratio - wasm / native).abs() < 0.01,
        "{ratio} vs {wasm} / {native}"
    );
    let at_equal_io = number(&r, "wasm_over_native_at_equal_io");
    let implied =
        (1.0 - median("wasm", "guest_time_share")) / (1.0 - median("native", "guest_time_share"));
    assert!(
        (at_equal_io - implied).abs() < 0.002,
        "{at_equal_io} vs {implied}"
    );

    // The reference loop marked the same backlog, and the ratio is taken from this run.
    let reference = &r["reference"];
    assert_eq!(reference["rows"], 3000, "{r}");
    assert_eq!(reference["batch"], 200, "{r}");
    let reference_rate = number(reference, "rows_per_sec");
    assert!(reference_rate > 0.0, "{r}");
    let over = number(&r, "over_reference");
    assert!(
        (over - wasm / reference_rate).abs() < 0.02,
        "{over} vs {wasm} / {reference_rate}"
    );

    // Nothing left behind: the fresh files, schemas or databases are gone.
    match b {
        Backend::Sqlite => assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        ),
        _ => {
            assert!(
                leftovers(dir.path()).is_empty(),
                "{:?}",
                leftovers(dir.path())
            );
            for run in runs.iter().chain([reference]) {
                let fresh = run["fresh_db"].as_str().unwrap();
                assert!(!schema_exists(b, fresh).await, "{fresh} was not dropped");
            }
        }
    }
}

#[test]
fn scaling_times_one_scan_batch_per_backlog_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let ledger = format!("ledger://{}", dir.path().join("s.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--ops",
            "500",
            "--latency-ops",
            "0",
            "--batch",
            "100",
            "--scaling",
            "--scaling-rows",
            "20000,3000",
            "--json",
        ],
        "",
    );
    let r = last_json(&out);
    assert!(
        r["p50_latency_ms"].is_null(),
        "no paced phase was asked for: {r}"
    );
    let s = &r["scaling"];
    let points = s["points"].as_array().unwrap();
    let rows: Vec<u64> = points.iter().map(|p| p["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, [3000, 20000], "smallest first: {s}");
    for p in points {
        assert!(number(p, "scan_batch_ms") > 0.0, "{p}");
        assert!(number(p, "rss_mib") > 1.0, "{p}");
    }
    let ratio = number(s, "scan_batch_ratio");
    let expected = number(&points[1], "scan_batch_ms") / number(&points[0], "scan_batch_ms");
    assert!((ratio - expected).abs() < 0.01, "{s}");
    assert_eq!(s["timed_batches"], 40, "{s}");
    assert_eq!(s["memory_batches"], 10, "{s}");
    assert_eq!(s["untimed_batches"], 1 + 3000 / 100, "{s}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn a_signed_ledger_takes_turns_with_an_unsigned_one_and_their_ratio_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let ledger = format!("ledger://{}", dir.path().join("s.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--ops",
            "700",
            "--latency-ops",
            "0",
            "--rounds",
            "2",
            "--signed-ledger",
            "--json",
        ],
        "",
    );
    let r = last_json(&out);
    let runs = r["runs"].as_array().unwrap();
    let signed: Vec<bool> = runs
        .iter()
        .map(|run| run["signed_ledger"].as_bool().unwrap())
        .collect();
    assert_eq!(signed, [false, true, true, false], "in turns: {r}");
    for run in runs {
        // Each run's ledger was verified (with its key when signed) to hold every row.
        assert_eq!(run["ledger_entries"], 700, "{run}");
    }
    let by_round: Vec<f64> = r["signed_over_unsigned_by_round"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let rate = |i: usize| number(&runs[i], "ops_per_sec");
    assert_eq!(by_round.len(), 2, "{r}");
    assert!((by_round[0] - rate(1) / rate(0)).abs() < 0.001, "{r}");
    assert!((by_round[1] - rate(2) / rate(3)).abs() < 0.001, "{r}");
    assert!(number(&r, "signed_over_unsigned") > 0.0, "{r}");
    // The headline figure stays the unsigned ledger's, as without --signed-ledger.
    assert_eq!(
        number(&r, "ops_per_sec"),
        lower_median(vec![rate(0), rate(3)]),
        "{r}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    let refused = run(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            "http://127.0.0.1:1/x",
            "--ops",
            "10",
            "--signed-ledger",
        ],
        "",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ledger://"));
}

/// The names of the JetStream streams on the test server that start with `prefix`.
async fn streams_named(prefix: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let client = nats_client(nats_addr()).await;
    let names: Vec<String> = async_nats::jetstream::new(client)
        .stream_names()
        .try_collect()
        .await
        .unwrap();
    names
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn a_nats_publisher_gets_a_stream_of_its_own_per_run_deleted_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("n.db").display());
    let stream = unique_name("BENCH");
    let publisher = format!(
        "nats://{}?stream={stream}&subject=bench.{stream}",
        nats_addr()
    );
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &publisher,
            "--ops",
            "2000",
            "--batch",
            "500",
            "--latency-ops",
            "0",
            "--engine",
            "both",
            "--json",
        ],
        "",
    );
    let report = last_json(&out);
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(2), "{report}");
    for run in report["runs"].as_array().unwrap() {
        assert!(number(run, "ops_per_sec") > 0.0, "{run}");
    }
    assert_eq!(
        block_on(streams_named(&stream)),
        Vec::<String>::new(),
        "neither the named stream nor a run's own is left on the server"
    );
}

#[test]
fn a_backlog_smaller_than_one_batch_is_refused_naming_the_phase() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let ledger = format!("ledger://{}", dir.path().join("s.ledger").display());
    let out = run(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--ops",
            "100",
            "--latency-ops",
            "0",
            "--batch",
            "300",
            "--scaling",
            "--scaling-rows",
            "200,5000",
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scaling") && err.contains("(200 rows) holds less than one batch of 300"),
        "{err}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn idle_tenants_are_weighed_and_timed_in_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("idle.db").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--idle-tenants",
            "20",
            "--idle-settle",
            "500ms",
            "--json",
        ],
        "",
    );
    let r = last_json(&out);
    let idle = &r["idle"];
    assert_eq!(idle["tenants"], 20, "{r}");
    assert!(
        number(idle, "rss_all_tenants_mib") >= number(idle, "rss_one_tenant_mib") * 0.9,
        "{idle}"
    );
    assert!(idle["rss_per_idle_tenant_mib"].as_f64().is_some(), "{idle}");
    let (p50, p99) = (
        number(idle, "instantiate_p50_us"),
        number(idle, "instantiate_p99_us"),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{idle}");
    assert!(number(idle, "threads") >= 2.0, "{idle}");
    assert!(
        r["ops_per_sec"].is_null(),
        "idle mode runs no delivery: {r}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

async fn writers_committing_out_of_order_are_measured_from_their_commit_and_leave_nothing_behind(
    b: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = match b {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("w.db").display()),
        Backend::Postgres => postgres_admin_url(),
        Backend::MySql => mysql_admin_url(),
    };
    let ledger = format!("ledger://{}", dir.path().join("w.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--writers",
            "4",
            "--writer-rows",
            "15",
            "--hosts",
            "2",
            "--json",
        ],
        "",
    );
    let report = last_json(&out);
    let w = &report["writers"];
    assert_eq!(
        (
            w["writers"].as_u64(),
            w["rows"].as_u64(),
            w["hosts"].as_u64()
        ),
        (Some(4), Some(60), Some(2)),
        "{b:?}: {w}"
    );
    let (p50, p99, max) = (
        number(w, "p50_ms"),
        number(w, "p99_ms"),
        number(w, "max_ms"),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{b:?}: {w}");
    let through: u64 = [
        "through_scan",
        "through_catch_up",
        "through_sweep",
        "through_retry",
    ]
    .iter()
    .map(|k| w[*k].as_u64().unwrap())
    .sum();
    assert_eq!(
        through, 60,
        "{b:?}: each row marked once, by one of the two hosts: {w}"
    );
    assert_eq!(w["ledger_duplicates"].as_u64(), Some(0), "{b:?}: {w}");
    assert!(w["within_1s"].as_u64().unwrap() <= 60, "{b:?}: {w}");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "{b:?}");
}

#[test]
fn several_hosts_drain_a_backlog_in_turns_with_one_and_report_their_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let ledger = format!("ledger://{}", dir.path().join("h.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--ops",
            "3000",
            "--hosts",
            "2",
            "--rounds",
            "2",
            "--json",
        ],
        "",
    );
    let report = last_json(&out);
    let h = &report["hosts"];
    let runs = h["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{h}");
    for run in runs {
        assert!(number(run, "ops_per_sec") > 0.0, "{run}");
        // One host delivers; the other stands by.
        assert_eq!(run["hosts_that_published"].as_u64(), Some(1), "{run}");
    }
    let ratio = number(h, "hosts_over_one");
    let (one, two) = (
        number(h, "one_host_ops_per_sec"),
        number(h, "hosts_ops_per_sec"),
    );
    assert!((ratio - two / one).abs() < 0.01, "{h}");
    assert_eq!(leftovers(dir.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_sharing_a_postgres_server_start_deliver_their_own_rows_and_leave_nothing_behind() {
    tenants_share_a_server(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_sharing_a_mariadb_server_start_deliver_their_own_rows_and_leave_nothing_behind() {
    tenants_share_a_server(Backend::MySql).await;
}

/// `--shared-tenants`, scaled down: 30 tenants on one server and a pool of 4 report
/// every figure, held no more than the pool (and PostgreSQL's one listener), delivered
/// every row into its own tenant's ledger, and left no schema or file behind.
async fn tenants_share_a_server(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let publisher = format!("ledger://{}", dir.path().join("shared.ledger").display());
    let out = run_ok(
        &[
            "bench",
            "--db",
            &admin_url(b),
            "--publisher",
            &publisher,
            "--shared-tenants",
            "30",
            "--tenant-rows",
            "20",
            "--shared-pool-size",
            "4",
            "--idle-settle",
            "500ms",
            "--json",
        ],
        "",
    );
    let r = last_json(&out);
    let s = &r["shared"];
    assert_eq!(s["tenants"], 30, "{r}");
    assert_eq!(s["rows_per_tenant"], 20, "{s}");
    assert_eq!(s["crossed"], 0, "{s}");
    let listener = if b == Backend::Postgres { 1.0 } else { 0.0 };
    let held = number(s, "max_host_sessions");
    assert!(
        (1.0..=4.0 + listener).contains(&held),
        "30 tenants held {held} sessions on a pool of 4: {s}"
    );
    assert!(number(s, "server_max_connections") > held, "{s}");
    assert!(number(s, "start_seconds") > 0.0, "{s}");
    assert!(
        number(s, "start_p50_ms") <= number(s, "start_max_ms"),
        "{s}"
    );
    assert!(s["rss_per_idle_tenant_mib"].as_f64().is_some(), "{s}");
    assert!(number(s, "ops_per_sec") > 0.0, "{s}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    let tag = s["tag"].as_str().unwrap_or_default().to_string();
    assert!(tag.starts_with("bench_shared_"), "{s}");
    let sql =
        format!("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE '{tag}%'");
    assert_eq!(
        scalar_at(b, &admin_url(b), &sql).await,
        0,
        "schemas of {tag} left behind"
    );
}

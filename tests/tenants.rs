//! Many tenants in one host, each in its own sandbox: a config file runs them, a
//! hostile guest is stopped by its limits while its neighbour delivers at full
//! speed, tenants come and go without a restart, and no tenant reaches another's
//! rows, publisher or token.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::backends::{Backend, TestDb};
use support::guests::{Hostile, hostile};
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

/// A `[[tenant]]` entry.
fn tenant_toml(id: &str, db: &str, publisher: &str, extra: &str) -> String {
    format!("[[tenant]]\nid = \"{id}\"\ndb = \"{db}\"\npublisher = \"{publisher}\"\n{extra}\n")
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("trustlog.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn ledger(dir: &Path, name: &str) -> (String, std::path::PathBuf) {
    let path = dir.join(format!("{name}.ledger"));
    (format!("ledger://{}", path.display()), path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_runs_tenants_on_all_three_databases_each_into_its_own_ledger_until_drained()
{
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("# three tenants, three databases\n");
    let mut tenants = Vec::new();
    for (id, backend) in [
        ("lite", Backend::Sqlite),
        ("pg", Backend::Postgres),
        ("maria", Backend::MySql),
    ] {
        let db = TestDb::create(backend).await;
        let (publisher, path) = ledger(dir.path(), id);
        run_ok(
            &["record", "--db", &db.url, "--publisher", &publisher],
            &op_lines(id, 300, |i| T0 + i as i64),
        );
        config += &tenant_toml(id, &db.url, &publisher, "batch_size = 50");
        tenants.push((id, db, path));
    }
    let path = write_config(dir.path(), &config);
    let out = run_ok(&["serve", "--config", &path, "--until-drained"], "");
    assert!(out.status.success());
    for (id, db, ledger_path) in &tenants {
        let ids: BTreeSet<String> = ledger_op_ids(ledger_path).into_iter().collect();
        assert_eq!(ids.len(), 300, "{id}: its own 300 rows");
        assert!(
            ids.iter().all(|op| op.starts_with(id)),
            "{id}: only its own rows in its ledger"
        );
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'")
                .await,
            300,
            "{id}"
        );
    }
}

/// Posts `n` operations of `prefix` to `tenant` and waits until all are delivered;
/// the throughput, from the first POST to the last row marked.
async fn deliver(server: &Server, tenant: &str, prefix: &str, n: usize) -> f64 {
    let started = Instant::now();
    for chunk in 0..n / 1000 {
        let body: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                let k = chunk * 1000 + i;
                serde_json::from_str(&op_line(&format!("{prefix}-{k}"), T0 + k as i64)).unwrap()
            })
            .collect();
        let (code, answer) = server
            .post(
                None,
                &format!("/v1/tenants/{tenant}/operations"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(code, 200, "{answer}");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, st) = server.get(&format!("/v1/tenants/{tenant}/status")).await;
        if st["trustlogged"] == n as u64 {
            return n as f64 / started.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "{tenant} never drained: {st}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Tenant B's throughput alone, then beside a hostile tenant A; A's fate.
async fn beside(kind: Hostile) {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (b_pub, b_ledger) = ledger(dir.path(), "b");
    let b_db = format!("sqlite://{}", dir.path().join("b.db").display());
    let b = tenant_toml("b", &b_db, &b_pub, "admin_token = \"b-secret\"");

    let alone = Server::start(&["--config", &write_config(dir.path(), &b)]);
    let solo = deliver(&alone, "b", "solo", N).await;
    drop(alone);

    let (a_pub, a_ledger) = ledger(dir.path(), "a");
    let a_db = format!("sqlite://{}", dir.path().join("a.db").display());
    let component = hostile(kind);
    let a = tenant_toml(
        "a",
        &a_db,
        &a_pub,
        &format!(
            "admin_token = \"a-secret\"\ncomponent = \"{}\"\npoll_interval = \"100ms\"\n[tenant.limits]\nmemory = \"32MiB\"",
            component.display()
        ),
    );
    let server = Server::start(&["--config", &write_config(dir.path(), &(a + &b))]);
    // A has rows of its own to chew on.
    let (code, _) = server
        .post(None, "/v1/tenants/a/operations", op_line("a-own", T0))
        .await;
    assert_eq!(code, 200);
    let shared = deliver(&server, "b", "shared", N).await;
    let ratio = shared / solo;
    eprintln!("{kind:?}: B alone {solo:.0} ops/s, beside A {shared:.0} ops/s, ratio {ratio:.2}");
    assert!(
        ratio >= 0.8,
        "{kind:?}: B kept {ratio:.2} of its throughput ({shared:.0} vs {solo:.0} ops/s)"
    );

    // A never reaches B: not its rows, not its publisher, not its token.
    let a_ids = ledger_op_ids(&a_ledger);
    assert!(a_ids.iter().all(|id| id.starts_with("a-")), "{a_ids:?}");
    let b_ids: BTreeSet<String> = ledger_op_ids(&b_ledger).into_iter().collect();
    assert!(b_ids.iter().all(|id| !id.starts_with("a-")));
    let (code, _) = server
        .get_as("a-secret", "/v1/tenants/b/admin/dead-letters")
        .await;
    assert_eq!(code, 401, "A's token does not open B's admin API");
    let (code, _) = server
        .get_as("b-secret", "/v1/tenants/b/admin/dead-letters")
        .await;
    assert_eq!(code, 200, "B's own token does");

    let (_, st) = server.get("/v1/status").await;
    let a_state = &st["tenants"]["a"];
    let m = server.metrics().await;
    let traps = m[r#"trustlog_guest_traps_total{tenant="a"}"#];
    assert!(traps >= 1.0, "{kind:?}: A's traps are counted");
    match kind {
        Hostile::TrapEveryTick => {
            assert_eq!(a_state["state"], "running", "retried, not stopped: {st}");
            assert_eq!(a_state["trustlogged"], 0, "{st}");
        }
        _ => {
            assert_eq!(a_state["state"], "stopped", "{kind:?}: {st}");
            let reason = a_state["reason"].as_str().unwrap();
            let limit = if kind == Hostile::MemoryBomb {
                "memory"
            } else {
                "fuel"
            };
            assert!(reason.contains(limit), "{kind:?}: {reason}");
            assert_eq!(m[r#"trustlog_tenant_up{tenant="a"}"#], 0.0);
            assert!(
                m[&format!(r#"trustlog_limit_exceeded_total{{limit="{limit}",tenant="a"}}"#)]
                    >= 1.0,
                "{kind:?}: {m:?}"
            );
        }
    }
    assert_eq!(m[r#"trustlog_tenant_up{tenant="b"}"#], 1.0);
    if kind == Hostile::LogFlood {
        let log = server.stderr.lock().unwrap().clone();
        let lines = log.matches("hostile guest: log line").count();
        assert!(
            lines <= 200,
            "the flood was held to log_lines_per_sec: {lines} lines"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_an_infinite_loop_b_keeps_80_percent_and_a_is_stopped_by_its_fuel() {
    beside(Hostile::InfiniteLoop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_memory_bomb_b_keeps_80_percent_and_a_is_stopped_by_its_memory_cap() {
    beside(Hostile::MemoryBomb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_trap_in_every_tick_b_keeps_80_percent_and_a_is_retried_quietly() {
    beside(Hostile::TrapEveryTick).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_log_flood_b_keeps_80_percent_and_a_is_muted_then_stopped() {
    beside(Hostile::LogFlood).await;
}

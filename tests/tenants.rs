//! Many tenants in one host, each in its own sandbox: a config file runs them, a
//! hostile guest is stopped by its limits while its neighbour delivers at full
//! speed, tenants come and go without a restart, and no tenant reaches another's
//! rows, publisher or token.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::backends::{Backend, TestDb, execute_at, scalar_at};
use support::guests::{Hostile, hostile};
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

/// The throughput comparisons hold it exclusively, every other test of this file
/// shared: on two cores, a test starting servers beside a timed delivery moved B's
/// ratio by more than the hostile tenant did (0.72 once in a full run).
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

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
    let _beside_no_timing = TIMING.read().await;
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
    let status = format!("/v1/tenants/{tenant}/status");
    let before = server.get(&status).await.1["trustlogged"].as_u64().unwrap();
    let started = Instant::now();
    // Stamped now, so every run's rows come after the cursor.
    let t0 = trustlog_host::scheduling::clock::now_micros();
    for chunk in 0..n / 1000 {
        let body: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                let k = chunk * 1000 + i;
                serde_json::from_str(&op_line(&format!("{prefix}-{k}"), t0 + k as i64)).unwrap()
            })
            .collect();
        let (code, answer) = server
            .post(
                server.reader.as_deref(),
                &format!("/v1/tenants/{tenant}/operations"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(code, 200, "{answer}");
    }
    server
        .wait_json(&status, WAIT, |st| st["trustlogged"] == before + n as u64)
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// How often A misbehaved (limits hit, or traps for a trap storm) and how many rows
/// it delivered, by the metrics of its present time in the host.
async fn hostile_counts(server: &Server, kind: Hostile) -> (f64, f64) {
    let m = server.metrics().await;
    let series = match kind {
        Hostile::TrapStorm => r#"trustlog_guest_traps_total{tenant="a"}"#,
        Hostile::MemoryBomb => r#"trustlog_limit_exceeded_total{limit="memory",tenant="a"}"#,
        _ => r#"trustlog_limit_exceeded_total{limit="cpu",tenant="a"}"#,
    };
    // Absent while A is out of the host, or before its first misbehaviour.
    let misbehaved = m.get(series).copied().unwrap_or(0.0);
    let delivered = m
        .iter()
        .filter(|(k, _)| k.starts_with("trustlog_published_total{") && k.contains(r#"tenant="a""#))
        .map(|(_, v)| v)
        .sum();
    (misbehaved, delivered)
}

/// Where the hostile tenant A and its neighbour B keep their rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// A SQLite file each: B's throughput is steady enough here to be timed.
    OwnFiles,
    /// A schema each on one PostgreSQL server, sharing its pool. B's rate there swings
    /// by a factor of two between runs on this machine, hostile neighbour or not, so it
    /// is reported but not asserted; everything else is.
    SharedPostgres,
}

/// Tenant B's throughput alone and beside a hostile tenant A in the same host, in
/// turns: A is taken out of the host by SIGHUP, B is timed, A is put back, B is timed
/// again, three times, and the best of each is compared. Timing the two apart (all
/// solo runs, then all shared) let the machine's slow spells fall on one side only:
/// in CI B's best fell to 0.77 of its solo best with A costing it nothing measurable
/// here (0.86-1.13 in six runs). A misbehaves every few ticks of each instance and
/// delivers its own rows between, and the host starts it again after each stop, so A is
/// hostile, and publishing, for as long as B is timed beside it.
async fn beside(kind: Hostile, store: Store) {
    // B's timed window must outlast A's cadence: after a failed pass A's worker pauses
    // for at least a second, so a window of 10,000 rows (0.9 s at B's best here) could
    // fall inside that pause in every turn, with A hostile but idle.
    const N: usize = 30_000;
    const TURNS: usize = 3;
    let _alone_on_the_machine = TIMING.write().await;
    let dir = tempfile::tempdir().unwrap();
    let pg = match store {
        Store::SharedPostgres => Some(SharedServer::new(Backend::Postgres).await),
        Store::OwnFiles => None,
    };
    let schemas = [unique_name("tl_host_a"), unique_name("tl_host_b")];
    let db_of = |id: &str, schema: &str| match &pg {
        Some(pg) => (pg.url.clone(), format!("schema = \"{schema}\"\n")),
        None => (
            format!("sqlite://{}", dir.path().join(format!("{id}.db")).display()),
            String::new(),
        ),
    };
    let (b_pub, b_ledger) = ledger(dir.path(), "b");
    let (b_db, b_schema) = db_of("b", &schemas[1]);
    let b = tenant_toml(
        "b",
        &b_db,
        &b_pub,
        &format!("{b_schema}admin_token = \"b-secret\""),
    );
    let (a_pub, a_ledger) = ledger(dir.path(), "a");
    let (a_db, a_schema) = db_of("a", &schemas[0]);
    // Filling 32 MiB page by page takes 10-20 ms of faults here, more on a loaded
    // machine: the memory bomb gets a CPU allowance it cannot reach, so only its memory
    // cap can be what stops it.
    let cpu_per_call = if kind == Hostile::MemoryBomb {
        "2s"
    } else {
        "20ms"
    };
    // A commits each batch in the tick that reads it (pipeline depth 1): it dies every
    // few ticks, and a deeper pipeline would die with its batches still out, so it
    // would be hostile without ever delivering.
    let a = tenant_toml(
        "a",
        &a_db,
        &a_pub,
        &format!(
            "{}admin_token = \"a-secret\"\ncomponent = \"{}\"\npoll_interval = \"100ms\"\nbatch_size = 10\npipeline_depth = 1\n\
             [tenant.limits]\nmemory = \"32MiB\"\ncpu_per_call = \"{}\"\nrestart_after = \"100ms\"\nlog_lines_per_sec = 20",
            a_schema,
            hostile(kind).display(),
            cpu_per_call
        ),
    );
    // The test reads every tenant's figures as an admin of the whole host.
    let head = "admin_token = \"host-secret\"\n";
    let without_a = format!("{head}{b}");
    let with_a = format!("{head}{b}{a}");
    let path = write_config(dir.path(), &without_a);
    let server = Server::start(&["--config", &path]).reading_as("host-secret");
    deliver(&server, "b", "warm", 1000).await;

    let (mut solo, mut shared) = (0.0_f64, 0.0_f64);
    let (mut misbehaved, mut delivered) = (0.0, 0.0);
    let first_joined = Instant::now();
    for turn in 1..=TURNS {
        if turn > 1 {
            write_config(dir.path(), &without_a);
            sighup(&server);
            wait_code(&server, "/v1/tenants/a/status", 404).await;
        }
        solo = solo.max(deliver(&server, "b", &format!("solo{turn}"), N).await);

        let absent = hostile_counts(&server, kind).await;
        write_config(dir.path(), &with_a);
        sighup(&server);
        wait_code(&server, "/v1/tenants/a/status", 200).await;
        if turn == 1 {
            // A backlog to chew on between its misbehaviours; it stays in A's database
            // while A is out of the host.
            let backlog: Vec<serde_json::Value> = (0..5000)
                .map(|i| serde_json::from_str(&op_line(&format!("a-own-{i}"), T0 + i)).unwrap())
                .collect();
            let (code, answer) = server
                .post(
                    Some("a-secret"),
                    "/v1/tenants/a/operations",
                    serde_json::to_vec(&backlog).unwrap(),
                )
                .await;
            assert_eq!(code, 200, "{answer}");
        }
        let deadline = Instant::now() + WAIT;
        while hostile_counts(&server, kind).await.0 <= absent.0 {
            assert!(Instant::now() < deadline, "{kind:?}: A never misbehaved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = hostile_counts(&server, kind).await;
        shared = shared.max(deliver(&server, "b", &format!("shared{turn}"), N).await);
        let after = hostile_counts(&server, kind).await;
        misbehaved += after.0 - before.0;
        delivered += after.1 - before.1;
    }
    let ratio = shared / solo;
    eprintln!(
        "{kind:?} ({store:?}): B alone {solo:.0} ops/s, beside A {shared:.0} ops/s, ratio {ratio:.2}; \
         meanwhile A misbehaved {misbehaved} times and delivered {delivered} rows"
    );
    assert!(
        misbehaved >= 2.0,
        "{kind:?}: A stayed hostile while B was timed: {misbehaved} misbehaviours"
    );
    assert!(delivered > 0.0, "{kind:?}: A delivered while B was timed");
    if store == Store::OwnFiles {
        assert!(
            ratio >= 0.8,
            "{kind:?}: B kept {ratio:.2} of its throughput ({shared:.0} vs {solo:.0} ops/s)"
        );
    }

    // A never reaches B: not its rows, not its publisher, not its token.
    let a_ids = ledger_op_ids(&a_ledger);
    assert!(!a_ids.is_empty(), "{kind:?}: A published");
    assert!(a_ids.iter().all(|id| id.starts_with("a-")), "{a_ids:?}");
    let b_ids: BTreeSet<String> = ledger_op_ids(&b_ledger).into_iter().collect();
    assert!(b_ids.iter().all(|id| !id.starts_with("a-")));
    let (code, _) = server
        .get_as("a-secret", "/v1/tenants/b/admin/dead-letters")
        .await;
    assert_eq!(
        code, 404,
        "A's token does not reach B, which is hidden from it"
    );
    let (code, _) = server
        .get_as("b-secret", "/v1/tenants/b/admin/dead-letters")
        .await;
    assert_eq!(code, 200, "B's own token does");

    // A's fate: a trap costs a tick; a limit stops A, and it starts again after its pause.
    let m = server.metrics().await;
    assert_eq!(m[r#"trustlog_tenant_up{tenant="b"}"#], 1.0);
    match kind {
        Hostile::TrapStorm => {
            let (_, st) = server.get("/v1/status").await;
            assert_eq!(
                st["tenants"]["a"]["state"], "running",
                "retried, not stopped: {st}"
            );
            assert_eq!(m[r#"trustlog_tenant_restarts_total{tenant="a"}"#], 0.0);
        }
        _ => {
            let limit = if kind == Hostile::MemoryBomb {
                "memory"
            } else {
                "cpu"
            };
            let st = server
                .wait_status(WAIT, |st| st["tenants"]["a"]["state"] == "stopped")
                .await;
            let reason = st["tenants"]["a"]["reason"].as_str().unwrap();
            assert!(reason.contains(limit), "{kind:?}: {reason}");
            assert!(reason.contains("starting again in"), "{kind:?}: {reason}");
            assert!(
                m[r#"trustlog_tenant_restarts_total{tenant="a"}"#] >= 2.0,
                "{kind:?}: {m:?}"
            );
        }
    }
    if kind == Hostile::LogFlood {
        let log = server.stderr.lock().unwrap().clone();
        let lines = log.matches("hostile guest: log line").count() as f64;
        // Each time A is put back it is a new tenant with a fresh second of allowance.
        let allowed = 20.0 * (first_joined.elapsed().as_secs_f64() + TURNS as f64);
        assert!(
            lines <= allowed,
            "the flood was held to log_lines_per_sec: {lines} lines, {allowed} allowed"
        );
        assert!(m[r#"trustlog_guest_log_dropped_total{tenant="a"}"#] > 0.0);
    }
    drop(server);
    if let Some(pg) = pg {
        pg.drop(&schemas).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_an_infinite_loop_b_keeps_80_percent_and_a_is_stopped_by_its_cpu_limit_each_time() {
    beside(Hostile::InfiniteLoop, Store::OwnFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_memory_bomb_b_keeps_80_percent_and_a_is_stopped_by_its_memory_cap_each_time() {
    beside(Hostile::MemoryBomb, Store::OwnFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_trap_storm_b_keeps_80_percent_and_a_is_retried_quietly() {
    beside(Hostile::TrapStorm, Store::OwnFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_a_log_flood_b_keeps_80_percent_and_a_is_muted_then_stopped_each_time() {
    beside(Hostile::LogFlood, Store::OwnFiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_pool_beside_an_infinite_loop_b_delivers_and_a_is_stopped_each_time() {
    beside(Hostile::InfiniteLoop, Store::SharedPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_pool_beside_a_memory_bomb_b_delivers_and_a_is_stopped_each_time() {
    beside(Hostile::MemoryBomb, Store::SharedPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_pool_beside_a_trap_storm_b_delivers_and_a_is_retried_quietly() {
    beside(Hostile::TrapStorm, Store::SharedPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_pool_beside_a_log_flood_b_delivers_and_a_is_muted_then_stopped() {
    beside(Hostile::LogFlood, Store::SharedPostgres).await;
}

fn sighup(server: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

/// Waits until `path` answers `code`.
async fn wait_code(server: &Server, path: &str, code: u16) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, body) = server.get(path).await;
        if got == code {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: still {got} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts `ids` to `tenant`, one request, stamped now (so ahead of the cursor).
async fn post_ids(server: &Server, tenant: &str, ids: impl Iterator<Item = String>) {
    let now = trustlog_host::scheduling::clock::now_micros();
    let body: Vec<serde_json::Value> = ids
        .enumerate()
        .map(|(i, id)| serde_json::from_str(&op_line(&id, now + i as i64)).unwrap())
        .collect();
    let (code, answer) = server
        .post(
            server.reader.as_deref(),
            &format!("/v1/tenants/{tenant}/operations"),
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
}

async fn wait_delivered(server: &Server, tenant: &str, n: u64) {
    let status = format!("/v1/tenants/{tenant}/status");
    server
        .wait_json(&status, WAIT, |st| st["trustlogged"] == n)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_api_add_replace_switch_and_remove_tenants_without_a_restart() {
    let _beside_no_timing = TIMING.read().await;
    let dir = tempfile::tempdir().unwrap();
    let entry = |id: &str, extra: &str| {
        let (publisher, _) = ledger(dir.path(), id);
        let db = format!("sqlite://{}", dir.path().join(format!("{id}.db")).display());
        tenant_toml(id, &db, &publisher, extra)
    };
    let head = "admin_token = \"host-secret\"\n";
    let path = write_config(dir.path(), &format!("{head}{}", entry("one", "")));
    let server = Server::start(&["--config", &path]).reading_as("host-secret");
    post_ids(&server, "one", (0..100).map(|i| format!("one-{i}"))).await;
    wait_delivered(&server, "one", 100).await;

    // Add "two", change "one": one SIGHUP.
    write_config(
        dir.path(),
        &format!(
            "{head}{}{}",
            entry("one", "batch_size = 7"),
            entry("two", "")
        ),
    );
    sighup(&server);
    wait_code(&server, "/v1/tenants/two/status", 200).await;
    post_ids(&server, "one", (100..200).map(|i| format!("one-{i}"))).await;
    post_ids(&server, "two", (0..50).map(|i| format!("two-{i}"))).await;
    wait_delivered(&server, "one", 200).await;
    wait_delivered(&server, "two", 50).await;
    let one_ids = ledger_op_ids(&dir.path().join("one.ledger"));
    let distinct: BTreeSet<&String> = one_ids.iter().collect();
    assert_eq!(
        (one_ids.len(), distinct.len()),
        (200, 200),
        "replaced without a row lost or sent twice"
    );

    // Switch "two" to another component version: it runs at once (this one traps).
    let trapping = hostile(Hostile::TrapEveryTick);
    write_config(
        dir.path(),
        &format!(
            "{head}{}{}",
            entry("one", "batch_size = 7"),
            entry("two", &format!("component = \"{}\"", trapping.display()))
        ),
    );
    sighup(&server);
    let deadline = Instant::now() + WAIT;
    while server
        .metrics()
        .await
        .get(r#"trustlog_guest_traps_total{tenant="two"}"#)
        < Some(&1.0)
    {
        assert!(Instant::now() < deadline, "the new component never ran");
        post_ids(&server, "two", std::iter::once(unique_name("two-"))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and back to the built-in engine, which delivers what waited.
    write_config(
        dir.path(),
        &format!(
            "{head}{}{}",
            entry("one", "batch_size = 7"),
            entry("two", "")
        ),
    );
    sighup(&server);
    server
        .wait_json("/v1/tenants/two/status", WAIT, |st| {
            st["not_trustlogged"] == 0 && st["state"] == "running"
        })
        .await;

    // A file that does not parse changes nothing.
    std::fs::write(&path, "[[tenant]\nid = ").unwrap();
    sighup(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.get("/v1/tenants/one/status").await.0, 200);
    assert!(
        server
            .stderr
            .lock()
            .unwrap()
            .contains("config not reloaded")
    );

    // Remove "one".
    write_config(dir.path(), &format!("{head}{}", entry("two", "")));
    sighup(&server);
    wait_code(&server, "/v1/tenants/one/status", 404).await;
    assert_eq!(server.get("/v1/tenants/two/status").await.0, 200);

    // The admin API: only the host's token manages tenants.
    let three_db = format!("sqlite://{}", dir.path().join("three.db").display());
    let (three_pub, three_ledger) = ledger(dir.path(), "three");
    let spec = serde_json::json!({"db": three_db, "publisher": three_pub, "batch_size": 10});
    let put = |token: Option<&'static str>| {
        let mut req = server
            .http
            .put(server.url("/v1/admin/tenants/three"))
            .header("content-type", "application/json")
            .body(spec.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(put(None).await.unwrap().status(), 401);
    assert_eq!(put(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(put(Some("host-secret")).await.unwrap().status(), 201);
    post_ids(&server, "three", (0..30).map(|i| format!("three-{i}"))).await;
    wait_delivered(&server, "three", 30).await;
    assert_eq!(ledger_op_ids(&three_ledger).len(), 30);
    let (code, list) = server.get_as("host-secret", "/v1/admin/tenants").await;
    assert_eq!(code, 200);
    let ids: Vec<&str> = list["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["three", "two"]);
    let delete = server
        .http
        .delete(server.url("/v1/admin/tenants/three"))
        .bearer_auth("host-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    assert_eq!(server.get("/v1/tenants/three/status").await.0, 404);
}

/// Drops a schema (PostgreSQL) or database (MariaDB) a test had the host create.
async fn drop_schema(backend: Backend, name: &str) {
    let ddl = match backend {
        Backend::Postgres => format!("DROP SCHEMA {name} CASCADE"),
        _ => format!("DROP DATABASE {name}"),
    };
    support::backends::execute_at(backend, &support::backends::admin_url(backend), &ddl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_schema_that_does_not_exist_yet_is_created_on_its_shared_server() {
    let _beside_no_timing = TIMING.read().await;
    let dir = tempfile::tempdir().unwrap();
    let pg_schema = unique_name("trustlog_new");
    let maria_schema = unique_name("trustlog_new");
    let (pg_ledger, pg_path) = ledger(dir.path(), "pg");
    let (maria_ledger, maria_path) = ledger(dir.path(), "maria");
    let config = tenant_toml(
        "pg",
        &support::backends::postgres_admin_url(),
        &pg_ledger,
        &format!("schema = \"{pg_schema}\""),
    ) + &tenant_toml(
        "maria",
        &support::backends::mysql_admin_url(),
        &maria_ledger,
        &format!("schema = \"{maria_schema}\""),
    );
    let path = write_config(dir.path(), &config);
    let server = Server::start(&["--config", &path]);
    for tenant in ["pg", "maria"] {
        post_ids(&server, tenant, (0..40).map(|i| format!("{tenant}-{i}"))).await;
        wait_delivered(&server, tenant, 40).await;
    }
    drop(server);
    assert_eq!(ledger_op_ids(&pg_path).len(), 40);
    assert_eq!(ledger_op_ids(&maria_path).len(), 40);
    drop_schema(Backend::Postgres, &pg_schema).await;
    drop_schema(Backend::MySql, &maria_schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_database_is_not_there_at_start_waits_while_the_others_run() {
    let _shared = TIMING.read().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good_ledger, _) = ledger(d, "good");
    let (late_ledger, late_ledger_path) = ledger(d, "late");
    // A directory that does not exist yet: SQLite cannot open the database until the
    // test creates it, as a server that is down cannot be reached until it is up.
    let not_yet = d.join("not-yet");
    let config = [
        "admin_token = \"host-admin-secret-00\"\n".to_string(),
        tenant_toml(
            "good",
            &format!("sqlite://{}", d.join("good.db").display()),
            &good_ledger,
            "",
        ),
        tenant_toml(
            "late",
            &format!("sqlite://{}", not_yet.join("late.db").display()),
            &late_ledger,
            "admin_token = \"late-admin-secret-00\"",
        ),
    ]
    .concat();
    // Two more that wait: one the next config drops, one it points elsewhere.
    let never = |id: &str| {
        tenant_toml(
            id,
            &format!(
                "sqlite://{}",
                d.join("never").join(format!("{id}.db")).display()
            ),
            &ledger(d, id).0,
            "",
        )
    };
    let first = format!("{config}{}{}", never("gone"), never("moved"));
    let server =
        Server::start(&["--config", &write_config(d, &first)]).reading_as("host-admin-secret-00");

    post_ids(&server, "good", (0..20).map(|i| format!("g-{i}"))).await;
    wait_delivered(&server, "good", 20).await;

    let (_, status) = server.get("/v1/status").await;
    let late = &status["tenants"]["late"];
    assert_eq!(late["state"], "starting", "{status}");
    assert!(
        late["reason"].as_str().unwrap().contains("late.db"),
        "the reason names what is missing: {late}"
    );
    assert_eq!(status["tenants"]["good"]["state"], "running", "{status}");
    let (code, body) = server
        .post(
            server.reader.as_deref(),
            "/v1/tenants/late/operations",
            op_line("early", T0),
        )
        .await;
    assert_eq!((code, &body["field"]), (503, &"tenant".into()), "{body}");
    // Its own admin sees why it waits.
    let (code, body) = server
        .get_as("late-admin-secret-00", "/v1/tenants/late/status")
        .await;
    assert_eq!(code, 503, "{body}");
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(
        (code, &ready["tenants"]["late"]["state"]),
        (503, &"starting".into()),
        "{ready}"
    );
    let metrics = server.metrics().await;
    assert_eq!(metrics[r#"trustlog_tenant_up{tenant="late"}"#], 0.0);
    assert_eq!(metrics[r#"trustlog_tenant_up{tenant="good"}"#], 1.0);
    assert!(
        server
            .stderr
            .lock()
            .unwrap()
            .contains("tenant not started: trying again"),
        "the log says so"
    );

    // The database comes: the tenant starts on its next attempt, and delivers.
    std::fs::create_dir(&not_yet).unwrap();
    wait_code(&server, "/v1/tenants/late/status", 200).await;
    post_ids(&server, "late", (0..5).map(|i| format!("late-{i}"))).await;
    wait_delivered(&server, "late", 5).await;
    let metrics = server.metrics().await;
    assert_eq!(metrics[r#"trustlog_tenant_up{tenant="late"}"#], 1.0);
    let delivered: BTreeSet<String> = ledger_payloads(&late_ledger_path)
        .iter()
        .map(|p| p["op_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered, (0..5).map(|i| format!("late-{i}")).collect());

    // A reload drops the tenant that waits and restarts the one whose entry changed.
    let (_, status) = server.get("/v1/status").await;
    assert_eq!(
        (
            &status["tenants"]["gone"]["state"],
            &status["tenants"]["moved"]["state"]
        ),
        (&"starting".into(), &"starting".into()),
        "{status}"
    );
    let moved = tenant_toml(
        "moved",
        &format!("sqlite://{}", d.join("moved.db").display()),
        &ledger(d, "moved").0,
        "",
    );
    write_config(d, &format!("{config}{moved}"));
    sighup(&server);
    wait_code(&server, "/v1/tenants/moved/status", 200).await;
    wait_code(&server, "/v1/tenants/gone/status", 404).await;
    // Nothing waits any more: the host is ready.
    wait_code(&server, "/readyz", 200).await;
    let metrics = server.metrics().await;
    assert!(
        !metrics.keys().any(|k| k.contains(r#"tenant="gone""#)),
        "the dropped tenant's series are gone"
    );
}

#[test]
fn a_tenant_that_needs_the_operator_stops_the_host_naming_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (good_ledger, _) = ledger(d, "good");
    let config = tenant_toml(
        "broken",
        &format!("sqlite://{}", d.join("b.db").display()),
        &good_ledger,
        "component = \"no-such-component.wasm\"",
    );
    let out = run(&["serve", "--config", &write_config(d, &config)], "");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(
        why.contains("tenant broken") && why.contains("no-such-component.wasm"),
        "{why}"
    );
}

/// How the shared-server test reaches one kind of server: the URL its tenants share,
/// a schema's URL for another client, and a count of the sessions the host holds.
struct SharedServer {
    backend: Backend,
    /// The `db` every tenant gives.
    url: String,
    /// What tells the host's sessions apart from every other test's: an application_name
    /// on PostgreSQL, the pool's own database on MariaDB.
    tag: String,
    /// Sessions beyond the pool: PostgreSQL's one listener.
    beyond_pool: i64,
    /// Rows reach the tenants by a wake-up (PostgreSQL) or a poll (MariaDB has no LISTEN).
    poll: &'static str,
}

impl SharedServer {
    async fn new(backend: Backend) -> SharedServer {
        let tag = unique_name("tl_shared");
        match backend {
            Backend::Postgres => SharedServer {
                backend,
                url: format!(
                    "{}?application_name={tag}",
                    support::backends::postgres_admin_url()
                ),
                tag,
                beyond_pool: 1,
                poll: "1h",
            },
            _ => {
                let admin = support::backends::mysql_admin_url();
                execute_at(backend, &admin, &format!("CREATE DATABASE {tag}")).await;
                SharedServer {
                    backend,
                    url: format!("{}/{tag}", admin.rsplit_once('/').unwrap().0),
                    tag,
                    beyond_pool: 0,
                    poll: "200ms",
                }
            }
        }
    }

    /// The `[[tenant]]` entry of tenant `id` with schema `schema` on this server, its
    /// ledger in `dir`.
    fn entry(&self, dir: &Path, id: &str, schema: &str) -> String {
        let (publisher, _) = ledger(dir, id);
        tenant_toml(
            id,
            &self.url,
            &publisher,
            &format!("schema = \"{schema}\"\npoll_interval = \"{}\"", self.poll),
        )
    }

    /// A URL another client uses to write into `schema`.
    fn schema_url(&self, schema: &str) -> String {
        match self.backend {
            Backend::Postgres => format!(
                "{}?options=-c%20search_path%3D{schema}",
                support::backends::postgres_admin_url()
            ),
            _ => format!("{}/{schema}", self.url.rsplit_once('/').unwrap().0),
        }
    }

    /// Sessions the host holds on the server.
    async fn sessions(&self) -> i64 {
        match self.backend {
            Backend::Postgres => support::backends::postgres_sessions(&self.tag, false).await,
            _ => {
                let sql = format!(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE db = '{}'",
                    self.tag
                );
                scalar_at(self.backend, &support::backends::mysql_admin_url(), &sql).await
            }
        }
    }

    /// Five rows for tenant `i`, written into `schema` by another client.
    async fn insert_five(&self, i: usize, schema: &str) {
        let now = match self.backend {
            Backend::Postgres => "now()",
            _ => "UTC_TIMESTAMP(6)",
        };
        let rows: Vec<String> = (0..5)
            .map(|k| format!("('t{i}-{k}', 'a', 'd', 'p', 's', 't', 'x', 'r', {now})"))
            .collect();
        execute_at(
            self.backend,
            &self.schema_url(schema),
            &format!(
                "INSERT INTO operation (op_id, op_actor, doid, producer_id, op_source, op_type, \
                 do_prefix, do_repository, timestamp) VALUES {}",
                rows.join(", ")
            ),
        )
        .await;
    }

    async fn drop(self, schemas: &[String]) {
        for schema in schemas {
            drop_schema(self.backend, schema).await;
        }
        if self.backend == Backend::MySql {
            drop_schema(self.backend, &self.tag).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_schemas_on_one_postgres_server_share_its_pool_and_one_listener() {
    tenants_share_one_server(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_with_databases_on_one_mariadb_server_share_its_pool() {
    tenants_share_one_server(Backend::MySql).await;
}

/// 24 tenants with a schema each on one server hold at most the shared pool (and, on
/// PostgreSQL, one listener), cross nothing, and survive a reload that removes one and
/// adds another.
async fn tenants_share_one_server(backend: Backend) {
    let _beside_no_timing = TIMING.read().await;
    const TENANTS: usize = 24;
    const POOL: i64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedServer::new(backend).await;
    let schemas: Vec<String> = (0..TENANTS)
        .map(|i| unique_name(&format!("tl_sh{i}_")))
        .collect();
    let entry = |i: usize| shared.entry(dir.path(), &format!("t{i}"), &schemas[i]);
    let head = format!("admin_token = \"host-secret-shared-0\"\nshared_pool_size = {POOL}\n");
    let all: String = (0..TENANTS).map(entry).collect();
    let path = write_config(dir.path(), &format!("{head}{all}"));
    let server = Server::start(&["--config", &path]).reading_as("host-secret-shared-0");

    // Rows inserted by another client, into each schema. On PostgreSQL, with an hour's
    // poll, only the one listener can deliver them promptly, waking the tenant whose
    // schema the notification names.
    for (i, schema) in schemas.iter().enumerate() {
        shared.insert_five(i, schema).await;
    }
    let started = Instant::now();
    for i in 0..TENANTS {
        wait_delivered(&server, &format!("t{i}"), 5).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "delivered promptly: {:?}",
        started.elapsed()
    );
    let most = POOL + shared.beyond_pool;
    let held = shared.sessions().await;
    assert!(
        (1..=most).contains(&held),
        "{TENANTS} tenants hold {held} sessions: at most the pool of {POOL} (+{})",
        shared.beyond_pool
    );
    // Nothing crossed: each ledger holds its own tenant's rows only.
    for i in 0..TENANTS {
        let ids = ledger_op_ids(&dir.path().join(format!("t{i}.ledger")));
        let want: Vec<String> = (0..5).map(|k| format!("t{i}-{k}")).collect();
        let mut got = ids.clone();
        got.sort();
        assert_eq!(got, want, "t{i}'s ledger");
    }

    // A reload removes one tenant and adds another on the same pool; the rest deliver on.
    let extra = unique_name("tl_shx_");
    let (_, extra_ledger) = ledger(dir.path(), "extra");
    let kept: String = (1..TENANTS).map(entry).collect();
    let added = shared.entry(dir.path(), "extra", &extra);
    write_config(dir.path(), &format!("{head}{kept}{added}"));
    sighup(&server);
    wait_code(&server, "/v1/tenants/t0/status", 404).await;
    wait_code(&server, "/v1/tenants/extra/status", 200).await;
    post_ids(&server, "extra", (0..7).map(|k| format!("extra-{k}"))).await;
    post_ids(&server, "t1", (5..12).map(|k| format!("t1-{k}"))).await;
    wait_delivered(&server, "extra", 7).await;
    wait_delivered(&server, "t1", 12).await;
    assert_eq!(ledger_op_ids(&extra_ledger).len(), 7);
    let held = shared.sessions().await;
    assert!(held <= most, "after the reload: {held} sessions");
    drop(server);
    let all_schemas: Vec<String> = schemas.into_iter().chain([extra]).collect();
    shared.drop(&all_schemas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_postgres_pool_a_tenant_stuck_on_a_lock_holds_only_its_share() {
    stuck_on_a_lock(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_mariadb_pool_a_tenant_stuck_on_a_lock_holds_only_its_share() {
    stuck_on_a_lock(Backend::MySql).await;
}

/// An application locks tenant A's table while eight reads of A wait on it: A holds at
/// most its share (half) of the pool, so B, on the same pool, delivers at once; A's
/// waits end by the lock timeout or the share's wait, each saying which; and A delivers
/// again once the lock is gone.
async fn stuck_on_a_lock(backend: Backend) {
    let _beside_no_timing = TIMING.read().await;
    const POOL: i64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedServer::new(backend).await;
    let schemas = [unique_name("tl_lock_a"), unique_name("tl_lock_b")];
    let entry = |id: &str, schema: &str| shared.entry(dir.path(), id, schema);
    let head = format!("admin_token = \"host-secret-lock\"\nshared_pool_size = {POOL}\n");
    let config = format!(
        "{head}{}{}",
        entry("a", &schemas[0]),
        entry("b", &schemas[1])
    );
    let server = Server::start(&["--config", &write_config(dir.path(), &config)])
        .reading_as("host-secret-lock");
    post_ids(&server, "a", (0..3).map(|k| format!("a-{k}"))).await;
    wait_delivered(&server, "a", 3).await;

    // The application's lock, held on a connection of its own until released.
    let lock = Lock::take(&shared, &schemas[0]).await;
    // Reads of A's dead letters, each on a connection of its own, all waiting on the lock.
    let stuck: Vec<_> = (0..8)
        .map(|_| server.get_as("host-secret-lock", "/v1/tenants/a/admin/dead-letters"))
        .collect();
    let b_delivers = async {
        // Let A's reads take what they can first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = Instant::now();
        post_ids(&server, "b", (0..50).map(|k| format!("b-{k}"))).await;
        wait_delivered(&server, "b", 50).await;
        began.elapsed()
    };
    let (answers, b_took) = tokio::join!(futures_util::future::join_all(stuck), b_delivers);
    assert!(
        b_took < Duration::from_secs(4),
        "B delivered while A's reads waited on the lock, before any timeout: {b_took:?}"
    );
    let refused: Vec<&(u16, serde_json::Value)> =
        answers.iter().filter(|(code, _)| *code != 200).collect();
    assert!(
        !refused.is_empty(),
        "A's writes waited on the lock: {answers:?}"
    );
    for (code, body) in &refused {
        let text = body.to_string().to_lowercase();
        assert!(*code == 503, "{code} {body}");
        assert!(
            text.contains("lock") || text.contains("share of the shared pool"),
            "the refusal says why: {body}"
        );
    }

    lock.release().await;
    post_ids(&server, "a", (3..6).map(|k| format!("a-{k}"))).await;
    wait_delivered(&server, "a", 6).await;
    drop(server);
    shared.drop(&schemas).await;
}

/// A lock on a tenant's `operation` table that blocks its reads and writes, held by
/// another client.
enum Lock {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

impl Lock {
    async fn take(shared: &SharedServer, schema: &str) -> Lock {
        use sqlx::{Connection, Executor};
        match shared.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&support::backends::postgres_admin_url())
                    .await
                    .unwrap();
                c.execute(sqlx::AssertSqlSafe(format!(
                    "BEGIN; LOCK TABLE {schema}.operation IN ACCESS EXCLUSIVE MODE"
                )))
                .await
                .unwrap();
                Lock::Postgres(c)
            }
            _ => {
                let mut c = sqlx::MySqlConnection::connect(&shared.schema_url(schema))
                    .await
                    .unwrap();
                c.execute("LOCK TABLES operation WRITE").await.unwrap();
                Lock::MySql(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::{Connection, Executor};
        match self {
            Lock::Postgres(mut c) => {
                c.execute("ROLLBACK").await.unwrap();
                c.close().await.unwrap();
            }
            Lock::MySql(mut c) => {
                c.execute("UNLOCK TABLES").await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

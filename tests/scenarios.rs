//! The engine scenarios of `tests/scenarios/engine.json` (format: docs/scenarios.md),
//! run by this host: the component in its sandbox, and the same logic compiled in, on
//! real SQLite with a scripted publisher and an injected clock. The Node host runs the
//! same file (`npm test --prefix host/node`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sqlx::Row;
use support::*;
use trustlog_guest::model::{
    Backoff, Config, Envelope, Operation, Position, PublishError, RecordOutcome, Strategy,
    TickReport,
};
use trustlog_host::db::Database;
use trustlog_host::publisher::{Publisher, PublisherAdapter};
use trustlog_host::sandbox::limits::Limits;
use trustlog_host::sandbox::runtime::Runtime;
use trustlog_host::scheduling::tenant::{Backend, Tenant};
use trustlog_host::surfaces::report::status_json;

const SPEC: &str = include_str!("scenarios/engine.json");
/// Ticks one `drain` step may take before the scenario counts as failed.
const DRAIN_LIMIT: usize = 1000;

/// What the scripted publisher does with an envelope.
#[derive(Debug, Default)]
struct Script {
    fail_all: Option<String>,
    fail: HashMap<String, String>,
}

/// A trust log that confirms everything but what the scenario's script says, and
/// remembers what it confirmed, in order.
#[derive(Debug, Default, Clone)]
struct ScriptedPublisher {
    script: Arc<Mutex<Script>>,
    confirmed: Arc<Mutex<Vec<(i64, String)>>>,
}

fn publish_error(kind: &str, op_id: &str) -> PublishError {
    let message = format!("scripted {kind} failure of {op_id}");
    match kind {
        "transient" => PublishError::Transient(message),
        "permanent" => PublishError::Permanent(message),
        "unavailable" => PublishError::Unavailable(message),
        other => panic!("unknown publish-error kind {other:?} in the scenarios"),
    }
}

#[async_trait::async_trait]
impl PublisherAdapter for ScriptedPublisher {
    async fn publish(&self, batch: Vec<Envelope>) -> Vec<Result<(), PublishError>> {
        let script = self.script.lock().unwrap();
        let mut confirmed = self.confirmed.lock().unwrap();
        batch
            .iter()
            .map(
                |e| match script.fail_all.as_ref().or(script.fail.get(&e.op_id)) {
                    Some(kind) => Err(publish_error(kind, &e.op_id)),
                    None => {
                        let payload: Value = serde_json::from_slice(&e.payload).unwrap();
                        let ts = payload["timestamp"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.timestamp_micros())
                            .unwrap_or_else(|| panic!("no timestamp in {payload}"));
                        confirmed.push((ts, e.op_id.clone()));
                        Ok(())
                    }
                },
            )
            .collect()
    }
}

/// The operations of a `record` step's generator.
fn generate(g: &Value) -> Vec<Operation> {
    let n = |k: &str| {
        g[k].as_i64()
            .unwrap_or_else(|| panic!("generator {k} in {g}"))
    };
    let (from, count, per, start) = (n("from"), n("count"), n("per_timestamp"), n("start"));
    let prefix = g["prefix"].as_str().unwrap();
    let mut ops: Vec<Operation> = (from..from + count)
        .map(|i| Operation {
            op_id: format!("{prefix}{i:04}"),
            op_actor: format!("actor-{i}"),
            doid: format!("10.1000/obj-{i}"),
            producer_id: "producer-1".into(),
            request_body_hash: Some(format!("sha256:{i}")),
            response_body_hash: None,
            op_source: "api".into(),
            op_type: "create".into(),
            do_prefix: "10.1000".into(),
            do_repository: "repo".into(),
            client_ip: Some("192.0.2.1".into()),
            server_ip: None,
            timestamp: start + (i - from) / per,
        })
        .collect();
    match g["order"].as_str().unwrap_or("ascending") {
        "ascending" => {}
        "descending" => ops.reverse(),
        other => panic!("unknown order {other:?}"),
    }
    ops
}

fn strategy(name: &str) -> Strategy {
    match name {
        "db-only" => Strategy::DbOnly,
        "db-and-trustlog" => Strategy::DbAndTrustlog,
        "trustlog-only" => Strategy::TrustlogOnly,
        other => panic!("unknown strategy {other:?}"),
    }
}

fn config(c: &Value) -> Config {
    let u = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("a number in {c}"));
    Config {
        cursor_key: c["cursor_key"].as_str().unwrap().into(),
        batch_size: u(&c["batch_size"]) as u32,
        backoff: Backoff {
            base_micros: u(&c["backoff"]["base_micros"]),
            factor: u(&c["backoff"]["factor"]) as u32,
            cap_micros: u(&c["backoff"]["cap_micros"]),
            max_retries: u(&c["backoff"]["max_retries"]) as u32,
        },
        default_strategy: strategy(c["default_strategy"].as_str().unwrap()),
        catch_up_window_micros: u(&c["catch_up_window_micros"]),
        // Absent, one batch at a time: each scan tick settles what it reads.
        pipeline_depth: c.get("pipeline_depth").map_or(1, u) as u32,
    }
}

fn outcome_name(o: &RecordOutcome) -> &'static str {
    match o {
        RecordOutcome::Stored => "stored",
        RecordOutcome::Published => "published",
        RecordOutcome::Rejected(_) => "rejected",
        RecordOutcome::Duplicate => "duplicate",
        RecordOutcome::PublishFailed(_) => "publish-failed",
    }
}

fn report_json(r: &TickReport) -> Value {
    json!({
        "fetched": r.fetched, "published": r.published, "retry_scheduled": r.retry_scheduled,
        "dead_lettered": r.dead_lettered, "more": r.more, "cursor_conflict": r.cursor_conflict,
        "unavailable": r.unavailable, "unreadable": r.unreadable,
    })
}

/// Fails naming the scenario, the step and each field that differs from `expected`.
fn expect_fields(at: &str, expected: &Value, actual: &Value) {
    for (field, want) in expected.as_object().unwrap() {
        assert_eq!(&actual[field], want, "{at}: {field} (all: {actual})");
    }
}

struct Run {
    scratch: Scratch,
    tenant: Tenant,
    publisher: ScriptedPublisher,
}

impl Run {
    async fn new(backend: Backend, cfg: Config) -> Run {
        let scratch = Scratch::new();
        let db = Database::connect(&scratch.db_url()).await.unwrap();
        db.migrate().await.unwrap();
        let publisher = ScriptedPublisher::default();
        let tenant = Tenant::on_backend(
            backend,
            "scenario",
            db,
            Publisher::custom(publisher.clone()),
            cfg,
            Limits::default(),
        )
        .await
        .unwrap();
        Run {
            scratch,
            tenant,
            publisher,
        }
    }

    async fn tick(&mut self, kind: &str, now: i64) -> TickReport {
        let r = match kind {
            "scan" => self.tenant.scan_tick(now).await,
            "scan-settle" => self.tenant.scan_settle(now).await,
            "retry" => self.tenant.retry_tick(now).await,
            "sweep" => self.tenant.sweep_tick(now).await,
            "catch-up" => self.tenant.catch_up_tick(now).await,
            other => panic!("unknown tick {other:?}"),
        };
        r.unwrap_or_else(|e| panic!("{kind} tick at {now}: {e}"))
    }

    async fn step(&mut self, at: &str, step: &Value) {
        if let Some(g) = step.get("record") {
            let ops = generate(g);
            let strategy = step.get("strategy").and_then(Value::as_str).map(strategy);
            let outcomes = self.tenant.record(ops.clone(), strategy).await.unwrap();
            let names: Vec<&str> = outcomes.iter().map(outcome_name).collect();
            let wanted: Vec<String> = match &step["expect"] {
                Value::String(one) => vec![one.clone(); ops.len()],
                Value::Array(each) => each.iter().map(|v| v.as_str().unwrap().into()).collect(),
                other => panic!("{at}: record expects {other}"),
            };
            assert_eq!(names, wanted, "{at}: outcomes {outcomes:?}");
        } else if let Some(p) = step.get("publisher") {
            let mut script = self.publisher.script.lock().unwrap();
            script.fail_all = p.get("fail_all").and_then(Value::as_str).map(String::from);
            script.fail = p
                .get("fail")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().into()))
                        .collect()
                })
                .unwrap_or_default();
        } else if let Some(kind) = step.get("tick").and_then(Value::as_str) {
            let report = self.tick(kind, step["now"].as_i64().unwrap()).await;
            expect_fields(at, &step["expect"], &report_json(&report));
        } else if let Some(kind) = step.get("drain").and_then(Value::as_str) {
            let now = step["now"].as_i64().unwrap();
            let drained = async {
                for _ in 0..DRAIN_LIMIT {
                    if !self.tick(kind, now).await.more {
                        return true;
                    }
                }
                false
            };
            assert!(drained.await, "{at}: still more after {DRAIN_LIMIT} ticks");
        } else if let Some(check) = step.get("check") {
            self.check(at, check).await;
        } else {
            panic!("{at}: a step of no known kind: {step}");
        }
    }

    async fn check(&mut self, at: &str, check: &Value) {
        if let Some(p) = check.get("published") {
            let confirmed = self.publisher.confirmed.lock().unwrap().clone();
            if let Some(n) = p.get("count") {
                assert_eq!(
                    confirmed.len() as u64,
                    n.as_u64().unwrap(),
                    "{at}: published {confirmed:?}"
                );
            }
            if p.get("each_once") == Some(&Value::Bool(true)) {
                let distinct: HashSet<_> = confirmed.iter().map(|(_, id)| id).collect();
                assert_eq!(
                    distinct.len(),
                    confirmed.len(),
                    "{at}: an op_id twice in {confirmed:?}"
                );
            }
            if p.get("keyset_order") == Some(&Value::Bool(true)) {
                let mut sorted = confirmed.clone();
                sorted.sort();
                assert_eq!(confirmed, sorted, "{at}: not in keyset order");
            }
        }
        let pool = self.scratch.pool().await;
        if let Some(counts) = check.get("status_counts") {
            for (status, n) in counts.as_object().unwrap() {
                let got: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = ?")
                        .bind(status)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(got, n.as_i64().unwrap(), "{at}: rows {status}");
            }
        }
        if let Some(n) = check.get("retry_rows") {
            let got: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trustlog_retry")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(got, n.as_i64().unwrap(), "{at}: retry rows");
        }
        if let Some(rows) = check.get("retry") {
            for (op_id, want) in rows.as_object().unwrap() {
                let r = sqlx::query(
                    "SELECT retry_count, retry_status, next_retry_at, last_retry_at FROM trustlog_retry WHERE op_id = ?",
                )
                .bind(op_id)
                .fetch_optional(&pool)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{at}: no retry row for {op_id}"));
                let actual = json!({
                    "retry_count": r.get::<i64, _>(0),
                    "retry_status": r.get::<String, _>(1),
                    "next_retry_at": r.get::<Option<i64>, _>(2),
                    "last_retry_at": r.get::<Option<i64>, _>(3),
                });
                expect_fields(&format!("{at}: retry row {op_id}"), want, &actual);
            }
        }
        pool.close().await;
        if check.get("cursor").is_some() || check.get("stats").is_some() {
            let report = self.tenant.status(0).await.unwrap();
            if let Some(want) = check.get("cursor") {
                let want: Option<Position> = (!want.is_null()).then(|| Position {
                    timestamp: want["timestamp"].as_i64().unwrap(),
                    op_id: want["op_id"].as_str().unwrap().into(),
                });
                assert_eq!(report.stats.cursor, want, "{at}: cursor");
            }
            if let Some(want) = check.get("stats") {
                expect_fields(at, want, &status_json(&report, None));
            }
        }
    }
}

async fn run_all(backend: impl Fn() -> Backend) {
    let spec: Value = serde_json::from_str(SPEC).unwrap();
    let scenarios = spec["scenarios"].as_array().unwrap();
    assert!(!scenarios.is_empty());
    for scenario in scenarios {
        let name = scenario["name"].as_str().unwrap();
        let mut run = Run::new(backend(), config(&scenario["config"])).await;
        for (i, step) in scenario["steps"].as_array().unwrap().iter().enumerate() {
            run.step(&format!("{name}, step {}", i + 1), step).await;
        }
    }
}

#[tokio::test]
async fn every_scenario_holds_for_the_component_in_its_sandbox() {
    let runtime = Runtime::new().unwrap();
    run_all(|| Backend::Wasm(runtime.clone())).await;
}

#[tokio::test]
async fn every_scenario_holds_for_the_same_logic_compiled_in() {
    run_all(|| Backend::Native).await;
}

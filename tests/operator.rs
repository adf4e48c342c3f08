//! The operator's view, through the real binary on every database: the HTTP API
//! of `serve` (ingest, status, Prometheus metrics, probes, the dead-letter admin
//! API behind its token) and the `dead-letters` commands.

mod support;

use std::time::Duration;

use serde_json::json;
use support::backends::{Backend, TestDb};
use support::brokers::{Broker, TestBroker};
use support::server::{Server, parse_prometheus};
use support::*;
use trustlog_guest::model::{RetryStatus, RetryUpdate, TrustlogStatus, UnitOfWork};
use trustlog_host::db::Database;
use trustlog_host::scheduling::clock::now_micros;
use trustlog_host::surfaces::ingest;

const TOKEN: &str = "s3cret-admin-token";
const DAY: i64 = 86_400_000_000;
const WAIT: Duration = Duration::from_secs(30);

on_every_database!(
    operations_posted_over_http_are_delivered_and_every_metric_matches_the_database,
    the_admin_api_lists_replays_and_purges_dead_letters_and_refuses_a_wrong_token,
    the_dead_letter_commands_list_replay_and_purge,
);

/// Dead letters `dl-old-1`, `dl-old-2` (dead-lettered 40 days ago) and `dl-fresh`
/// (just now), and retries `pending-1`, `pending-2` due in an hour.
async fn seed_retry_queue(t: &TestDb) {
    let db = Database::connect(&t.url).await.unwrap();
    db.migrate().await.unwrap();
    let now = now_micros();
    let ids = ["dl-old-1", "dl-old-2", "dl-fresh", "pending-1", "pending-2"];
    let ops = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ingest::parse_line(&op_line(id, now - DAY + i as i64)).unwrap())
        .collect();
    db.insert(ops, TrustlogStatus::NotTrustlogged)
        .await
        .unwrap();
    let retry = |id: &str, status, next| RetryUpdate {
        op_id: id.into(),
        retry_count: if status == RetryStatus::DeadLetter {
            5
        } else {
            1
        },
        retry_status: status,
        last_retry_at: Some(now - 41 * DAY),
        next_retry_at: next,
        error_message: format!("broker said no to {id}"),
    };
    db.apply(UnitOfWork {
        now: now - 40 * DAY,
        retries: vec![
            retry("dl-old-1", RetryStatus::DeadLetter, None),
            retry("dl-old-2", RetryStatus::DeadLetter, None),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    db.apply(UnitOfWork {
        now,
        retries: vec![
            retry("dl-fresh", RetryStatus::DeadLetter, None),
            retry(
                "pending-1",
                RetryStatus::Pending,
                Some(now + 3600 * 1_000_000),
            ),
            retry(
                "pending-2",
                RetryStatus::Pending,
                Some(now + 3600 * 1_000_000),
            ),
        ],
        ..UnitOfWork::default()
    })
    .await
    .unwrap();
    db.close().await;
}

fn ops_json(prefix: &str, n: usize) -> String {
    let now = now_micros();
    let items: Vec<String> = (0..n)
        .map(|i| op_line(&format!("{prefix}-{i:04}"), now + i as i64))
        .collect();
    format!("[{}]", items.join(","))
}

async fn operations_posted_over_http_are_delivered_and_every_metric_matches_the_database(
    b: Backend,
) {
    let t = TestDb::create(b).await;
    seed_retry_queue(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = format!("ledger://{}", dir.path().join("l").display());
    // An hour between polls and between watch probes: only a wake-up delivers in seconds.
    let server = Server::start(&[
        "--db",
        &t.url,
        "--publisher",
        &ledger,
        "--poll-interval",
        "1h",
        "--watch-interval",
        "1h",
    ]);
    // The worker's first scan, which reads whatever is there at start, is behind it.
    let deadline = std::time::Instant::now() + WAIT;
    while !server.metrics().await.iter().any(|(k, v)| {
        k.starts_with("trustlog_tick_duration_seconds_count{")
            && k.contains(r#"tick="scan""#)
            && *v >= 1.0
    }) {
        assert!(std::time::Instant::now() < deadline, "{b:?}: no first scan");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (code, body) = server
        .post(None, "/v1/operations", ops_json("http", 100))
        .await;
    assert_eq!((code, &body["stored"]), (200, &100.into()), "{b:?}: {body}");
    let single = op_line("http-single", now_micros());
    let (code, body) = server.post(None, "/v1/operations", single).await;
    assert_eq!(code, 200, "{b:?}: {body}");
    assert_eq!(body["results"][0]["outcome"], "stored");

    // A POST wakes the worker: delivered in seconds, not after the hour's poll.
    server
        .wait_status(Duration::from_secs(5), |s| s["trustlogged"] == 101)
        .await;
    let (code, mut st) = server.get("/v1/tenants/default/status").await;
    assert_eq!((code, st["state"].take()), (200, "running".into()), "{st}");
    st.as_object_mut().unwrap().remove("state");
    assert_eq!(
        st,
        status(&t.url),
        "{b:?}: the API and `status --json` agree"
    );

    let (code, text) = server.text("/metrics").await;
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    let metric = |series: &str| {
        *m.get(series)
            .unwrap_or_else(|| panic!("{b:?}: no {series} in\n{text}"))
    };
    let sql = |q: &str| {
        let t = &t;
        let q = q.to_string();
        async move { t.scalar(&q).await as f64 }
    };
    assert_eq!(
        metric("trustlog_untrustlogged_rows{tenant=\"default\"}"),
        sql("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'NOT_TRUSTLOGGED'").await,
        "{b:?}"
    );
    assert_eq!(
        metric("trustlog_retry_queue_length{tenant=\"default\"}"),
        sql("SELECT COUNT(*) FROM trustlog_retry WHERE retry_status IN ('PENDING', 'RETRYING')")
            .await,
        "{b:?}"
    );
    assert_eq!(
        metric("trustlog_dead_letters{tenant=\"default\"}"),
        sql("SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER'").await,
        "{b:?}"
    );
    assert_eq!(
        (
            metric("trustlog_untrustlogged_rows{tenant=\"default\"}"),
            metric("trustlog_retry_queue_length{tenant=\"default\"}"),
            metric("trustlog_dead_letters{tenant=\"default\"}"),
        ),
        (5.0, 2.0, 3.0),
        "{b:?}"
    );
    // Nothing waits outside the retry queue, so nothing lags.
    assert_eq!(
        metric("trustlog_cursor_lag_seconds{tenant=\"default\"}"),
        0.0,
        "{b:?}"
    );
    let trustlogged =
        sql("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'TRUSTLOGGED'").await;
    assert_eq!(trustlogged, 101.0, "{b:?}");
    assert_eq!(
        metric("trustlog_published_total{tenant=\"default\",tick=\"scan\"}")
            + metric("trustlog_published_total{tenant=\"default\",tick=\"sweep\"}"),
        trustlogged,
        "{b:?}: every TRUSTLOGGED row was counted once"
    );
    assert_eq!(
        metric("trustlog_delivery_latency_seconds_count{tenant=\"default\"}"),
        trustlogged,
        "{b:?}"
    );
    assert_eq!(
        metric("trustlog_publish_failed_total{tenant=\"default\",tick=\"scan\"}"),
        0.0
    );
    assert_eq!(
        metric("trustlog_dead_lettered_total{tenant=\"default\",tick=\"scan\"}"),
        0.0
    );
    assert!(metric("trustlog_publish_latency_seconds_count{tenant=\"default\"}") >= 1.0);
    assert!(
        metric("trustlog_tick_duration_seconds_count{tenant=\"default\",tick=\"scan\"}") >= 1.0
    );
    assert!(
        metric("trustlog_delivery_latency_seconds_bucket{tenant=\"default\",le=\"+Inf\"}")
            == trustlogged
    );

    assert_eq!(server.get("/healthz").await.0, 200);
    let (code, ready) = server.get("/readyz").await;
    assert_eq!(
        (code, &ready["database"], &ready["publisher"]),
        (200, &"ok".into(), &"ok".into()),
        "{b:?}: {ready}"
    );
}

async fn the_admin_api_lists_replays_and_purges_dead_letters_and_refuses_a_wrong_token(b: Backend) {
    let t = TestDb::create(b).await;
    seed_retry_queue(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l");
    let ledger = format!("ledger://{}", path.display());
    let server = Server::start(&[
        "--db",
        &t.url,
        "--publisher",
        &ledger,
        "--admin-token",
        TOKEN,
    ]);
    let dead = "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER'";

    // No token, a wrong token, a token without "Bearer ": 401, and nothing changes.
    assert_eq!(
        server.get_anonymous("/v1/admin/dead-letters").await.0,
        401,
        "{b:?}"
    );
    assert_eq!(
        server.get_as("wrong", "/v1/admin/dead-letters").await.0,
        401
    );
    let all = r#"{"all": true}"#;
    for token in [None, Some("wrong"), Some("s3cret-admin-toke")] {
        let (code, body) = server
            .post(token, "/v1/admin/dead-letters/replay", all)
            .await;
        assert_eq!(code, 401, "{b:?}: {body}");
        assert_eq!(body["field"], "authorization");
        let purge = r#"{"older_than": "0s"}"#;
        let (code, _) = server
            .post(token, "/v1/admin/dead-letters/purge", purge)
            .await;
        assert_eq!(code, 401, "{b:?}");
    }
    assert_eq!(
        t.scalar(dead).await,
        3,
        "{b:?}: a refused request changed nothing"
    );

    let (code, page) = server.get_as(TOKEN, "/v1/admin/dead-letters").await;
    assert_eq!(code, 200, "{b:?}: {page}");
    let ids: Vec<&str> = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["op_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dl-fresh", "dl-old-1", "dl-old-2"], "{b:?}");
    let first = &page["dead_letters"][0];
    assert_eq!(first["retry_count"], 5);
    assert_eq!(first["error_message"], "broker said no to dl-fresh");
    assert!(first["dead_lettered_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(page["next_after"], serde_json::Value::Null);

    let (_, page) = server.get_as(TOKEN, "/v1/admin/dead-letters?limit=2").await;
    assert_eq!(page["next_after"], "dl-old-1", "{b:?}: {page}");
    let (_, rest) = server
        .get_as(TOKEN, "/v1/admin/dead-letters?limit=2&after=dl-old-1")
        .await;
    assert_eq!(rest["dead_letters"][0]["op_id"], "dl-old-2", "{b:?}");
    assert_eq!(
        server
            .get_as(TOKEN, "/v1/admin/dead-letters?limit=0")
            .await
            .1["field"],
        "limit"
    );

    // Replay: due now, and the worker is nudged, so it goes out long before the
    // 10 s retry interval.
    let (code, body) = server
        .post(
            Some(TOKEN),
            "/v1/admin/dead-letters/replay",
            r#"{"op_id": "dl-fresh"}"#,
        )
        .await;
    assert_eq!((code, &body["replayed"]), (200, &1.into()), "{b:?}: {body}");
    server
        .wait_status(Duration::from_secs(8), |s| s["trustlogged"] == 1)
        .await;
    assert_eq!(ledger_op_ids(&path), ["dl-fresh"], "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry WHERE op_id = 'dl-fresh'")
            .await,
        0,
        "{b:?}: the delivered row left the retry queue"
    );
    let (code, body) = server
        .post(
            Some(TOKEN),
            "/v1/admin/dead-letters/replay",
            r#"{"op_id": "dl-fresh"}"#,
        )
        .await;
    assert_eq!((code, &body["field"]), (404, &"op_id".into()), "{b:?}");
    for bad in [
        r#"{}"#,
        r#"{"op_id": 5}"#,
        r#"{"all": false}"#,
        r#"{"every": true}"#,
        "[1]",
    ] {
        let (code, body) = server
            .post(Some(TOKEN), "/v1/admin/dead-letters/replay", bad)
            .await;
        assert_eq!(code, 400, "{b:?}: {bad} → {body}");
        assert!(body["field"].is_string(), "{bad} → {body}");
    }

    // Purge: only what was dead-lettered more than 30 days ago; the operations stay.
    let (code, body) = server
        .post(
            Some(TOKEN),
            "/v1/admin/dead-letters/purge",
            r#"{"older_than": "soon"}"#,
        )
        .await;
    assert_eq!((code, &body["field"]), (400, &"older_than".into()), "{b:?}");
    let (code, body) = server
        .post(
            Some(TOKEN),
            "/v1/admin/dead-letters/purge",
            r#"{"older_than": "30days"}"#,
        )
        .await;
    assert_eq!((code, &body["purged"]), (200, &2.into()), "{b:?}: {body}");
    assert_eq!(t.scalar(dead).await, 0, "{b:?}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM operation WHERE op_id LIKE 'dl-old-%' AND trustlog_status = 'DB_ONLY'")
            .await,
        2,
        "{b:?}"
    );
    let st = server.get("/v1/status").await.1;
    assert_eq!(
        (&st["dead_letter"], &st["retry_pending"], &st["db_only"]),
        (&0.into(), &2.into(), &2.into()),
        "{b:?}: {st}"
    );
}

async fn the_dead_letter_commands_list_replay_and_purge(b: Backend) {
    let t = TestDb::create(b).await;
    seed_retry_queue(&t).await;
    let db = t.url.as_str();

    let out = run_ok(&["dead-letters", "list", "--db", db, "--json"], "");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["op_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["dl-fresh", "dl-old-1", "dl-old-2"], "{b:?}");
    assert_eq!(lines[1]["error_message"], "broker said no to dl-old-1");

    let out = run_ok(
        &[
            "dead-letters",
            "list",
            "--db",
            db,
            "--limit",
            "1",
            "--after",
            "dl-fresh",
        ],
        "",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("dl-old-1") && !text.contains("dl-old-2"),
        "{b:?}: {text}"
    );
    assert!(text.contains("1 dead letter(s)"), "{text}");

    let out = run_ok(
        &["dead-letters", "purge", "--db", db, "--older-than", "30d"],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("purged 2 "),
        "{b:?}"
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM operation WHERE trustlog_status = 'DB_ONLY'")
            .await,
        2
    );

    run_ok(
        &["dead-letters", "replay", "--db", db, "--op-id", "dl-fresh"],
        "",
    );
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM trustlog_retry WHERE op_id = 'dl-fresh' AND retry_status = 'PENDING' AND retry_count = 0")
            .await,
        1,
        "{b:?}: back in the queue with a fresh count"
    );
    let again = run(
        &["dead-letters", "replay", "--db", db, "--op-id", "dl-fresh"],
        "",
    );
    assert!(!again.status.success(), "{b:?}: no longer a dead letter");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not a dead letter"));
    let none = run(&["dead-letters", "replay", "--db", db], "");
    assert!(!none.status.success(), "--op-id or --all is required");
    let out = run_ok(&["dead-letters", "replay", "--db", db, "--all"], "");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("replayed 0 "));
    let out = run_ok(&["dead-letters", "list", "--db", db], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 dead letter(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_and_refusals_are_counted_as_the_retry_table_holds_them() {
    let receiver = TestBroker::create(Broker::Webhook).await;
    let refusing = receiver.refusing().await.unwrap();
    // A receiver that answers but fails every envelope: transient failures.
    for (publisher, failed, dead_lettered) in [
        (receiver.busy_url(), 30.0, 0.0),
        (refusing.url.clone(), 0.0, 30.0),
    ] {
        let s = Scratch::new();
        let server = Server::start(&["--db", &s.db_url(), "--publisher", &publisher]);
        let (code, _) = server.post(None, "/v1/operations", ops_json("f", 30)).await;
        assert_eq!(code, 200);
        server
            .wait_status(WAIT, |st| {
                st["retry_pending"].as_u64().unwrap() + st["dead_letter"].as_u64().unwrap() == 30
            })
            .await;
        let text = server.text("/metrics").await.1;
        let m = parse_prometheus(&text);
        let pool = s.pool().await;
        let retry_rows = |status: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = ?",
                )
                .bind(status)
                .fetch_one(&pool)
                .await
                .unwrap() as f64
            }
        };
        let (pending, dead) = (retry_rows("PENDING").await, retry_rows("DEAD_LETTER").await);
        assert_eq!((pending, dead), (failed, dead_lettered), "{publisher}");
        let series = |name: &str| m[&format!("{name}{{tenant=\"default\",tick=\"scan\"}}")];
        assert_eq!(
            series("trustlog_publish_failed_total"),
            pending,
            "{publisher}"
        );
        assert_eq!(series("trustlog_dead_lettered_total"), dead, "{publisher}");
        assert_eq!(series("trustlog_published_total"), 0.0);
        assert_eq!(
            m["trustlog_retry_queue_length{tenant=\"default\"}"],
            pending
        );
        assert_eq!(m["trustlog_dead_letters{tenant=\"default\"}"], dead);
        assert_eq!(m["trustlog_untrustlogged_rows{tenant=\"default\"}"], 30.0);
        assert_eq!(
            m["trustlog_delivery_latency_seconds_count{tenant=\"default\"}"], 0.0,
            "nothing was delivered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_is_off() {
    let s = Scratch::new();
    let server = Server::start(&["--db", &s.db_url(), "--publisher", &s.ledger_url()]);
    let (code, body) = server
        .post(
            Some(TOKEN),
            "/v1/admin/dead-letters/replay",
            r#"{"all": true}"#,
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("TRUSTLOG_ADMIN_TOKEN")
    );
    assert_eq!(server.get_as(TOKEN, "/v1/admin/dead-letters").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_and_names_the_publisher_that_does_not_answer() {
    let s = Scratch::new();
    let port = closed_port();
    let hook = format!("http://127.0.0.1:{port}/hook#timeout=1s");
    let server = Server::start(&["--db", &s.db_url(), "--publisher", &hook]);
    let (code, body) = server.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    let why = body["publisher"].as_str().unwrap();
    assert!(why.contains(&port.to_string()), "{why}");
    assert_eq!(server.get("/healthz").await.0, 200, "alive, just not ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_operations_get_a_4xx_naming_the_field_and_the_valid_ones_of_a_batch_are_stored() {
    let s = Scratch::new();
    let server = Server::start(&["--db", &s.db_url(), "--publisher", &s.ledger_url()]);
    let now = now_micros();

    let (code, body) = server
        .post(None, "/v1/operations", vec![0xff_u8, 0xfe, b'{'])
        .await;
    assert_eq!((code, &body["field"]), (400, &"body".into()), "{body}");
    let (code, body) = server.post(None, "/v1/operations", "{\"op_id\": ").await;
    assert_eq!((code, &body["field"]), (400, &"body".into()), "{body}");
    let (code, body) = server.post(None, "/v1/operations", "42").await;
    assert_eq!((code, &body["field"]), (400, &"body".into()), "{body}");
    let (code, body) = server
        .post(None, "/v1/operations?strategy=sometimes", op_line("x", now))
        .await;
    assert_eq!((code, &body["field"]), (400, &"strategy".into()), "{body}");

    let mut bad_ip: serde_json::Value = serde_json::from_str(&op_line("bad-ip", now)).unwrap();
    bad_ip["client_ip"] = "999.1.1.1".into();
    let mut no_actor: serde_json::Value = serde_json::from_str(&op_line("no-actor", now)).unwrap();
    no_actor.as_object_mut().unwrap().remove("op_actor");
    let batch = format!(
        "[{}, {bad_ip}, {no_actor}, {}]",
        op_line("good-1", now),
        op_line(&"x".repeat(65), now)
    );
    let (code, body) = server.post(None, "/v1/operations", batch).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!((&body["stored"], &body["rejected"]), (&1.into(), &3.into()));
    let fields: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(fields, ["", "client_ip", "op_actor", "op_id"], "{body}");

    // The same op_id again: 409, and the stored row is untouched.
    let mut impostor: serde_json::Value = serde_json::from_str(&op_line("good-1", now)).unwrap();
    impostor["op_actor"] = "mallory".into();
    let (code, body) = server
        .post(None, "/v1/operations", impostor.to_string())
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["results"][0]["outcome"], "duplicate");
    let pool = s.pool().await;
    let actor: String = sqlx::query_scalar("SELECT op_actor FROM operation WHERE op_id = 'good-1'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(actor, "张三");

    // One op_id twice in one batch: the first is stored, the second is the duplicate.
    let twice = format!("[{}, {}]", op_line("twice", now), op_line("twice", now + 1));
    let (code, body) = server.post(None, "/v1/operations", twice).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["results"][0]["outcome"], "stored");
    assert_eq!(body["results"][1]["outcome"], "duplicate");
    assert_eq!(body["results"][1]["field"], "op_id");

    // A 10 MB body is refused whole once the first 4 MiB are read. The server then
    // answers and closes, so this client sends on one half and listens on the other.
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = server.base.trim_start_matches("http://").to_string();
        let (mut rx, mut tx) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        let sending = tokio::spawn(async move {
            tx.write_all(
                b"POST /v1/operations HTTP/1.1\r\nHost: trustlog\r\n\
                  Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
            )
            .await?;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..10_000_000 / chunk.len() {
                tx.write_all(&chunk).await?;
            }
            std::io::Result::Ok(())
        });
        let mut head = vec![0u8; 64];
        let n = rx.read(&mut head).await.unwrap();
        sending.abort();
        String::from_utf8_lossy(&head[..n]).to_string()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operation")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 2, "good-1 and twice, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_delivery_while_operations_are_still_stored_and_resume_delivers_them() {
    let s = Scratch::new();
    let server = Server::start(&[
        "--db",
        &s.db_url(),
        "--publisher",
        &s.ledger_url(),
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        TOKEN,
    ]);
    let (code, body) = server.post(Some(TOKEN), "/v1/admin/pause", "").await;
    assert_eq!(
        (code, &body["paused"], &body["changed"]),
        (200, &json!(true), &json!(true)),
        "{body}"
    );
    let (code, body) = server.post(Some(TOKEN), "/v1/admin/pause", "{}").await;
    assert_eq!((code, &body["changed"]), (200, &json!(false)), "{body}");
    let (code, body) = server
        .post(Some(TOKEN), "/v1/admin/pause", r#"{"for": "1h"}"#)
        .await;
    assert_eq!((code, &body["field"]), (400, &json!("body")), "{body}");

    let (code, body) = server
        .post(None, "/v1/operations", ops_json("held", 3))
        .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = server
        .post(Some(TOKEN), "/v1/operations", ops_json("held", 3))
        .await;
    assert_eq!((code, &body["stored"]), (200, &json!(3)), "{body}");
    let (_, status) = server.get("/v1/status").await;
    assert_eq!(status["state"], "paused", "{status}");
    assert!(
        status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--admin-token")),
        "names who paused it: {status}"
    );
    // Long enough for many scans had it not been paused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, status) = server.get("/v1/status").await;
    assert_eq!(
        (&status["trustlogged"], &status["not_trustlogged"]),
        (&json!(0), &json!(3)),
        "{status}"
    );
    assert!(ledger_payloads(&s.ledger_path()).is_empty());

    let (code, body) = server.post(Some(TOKEN), "/v1/admin/resume", "").await;
    assert_eq!((code, &body["changed"]), (200, &json!(true)), "{body}");
    server
        .wait_status(Duration::from_secs(10), |st| {
            st["state"] == "running" && st["trustlogged"] == 3
        })
        .await;
    assert_eq!(ledger_payloads(&s.ledger_path()).len(), 3);
}

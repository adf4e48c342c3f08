//! Finding operations, as the real binary answers it: `trustlog operations show|search`
//! and `GET /v1/operations…`, each under the roles that may use it and refused to
//! everyone else.

mod support;

use serde_json::Value;
use support::server::Server;
use support::*;

const T0: i64 = 1_764_000_000_000_000;

fn json_out(args: &[&str]) -> Value {
    let out = run_ok(args, "");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 30 operations on 3 actors, delivered to a ledger.
fn delivered(s: &Scratch) {
    let lines: String = (0..30)
        .map(|i| {
            let mut v: Value =
                serde_json::from_str(&op_line(&format!("op-{i:03}"), T0 + i / 2)).unwrap();
            v["op_actor"] = format!("actor-{}", i % 3).into();
            v.to_string() + "\n"
        })
        .collect();
    run_ok(&["record", "--db", &s.db_url()], &lines);
    run_ok(
        &[
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            &s.ledger_url(),
            "--until-drained",
        ],
        "",
    );
}

#[test]
fn operations_show_prints_the_row_its_status_and_the_envelope_digest_the_ledger_holds() {
    let s = Scratch::new();
    delivered(&s);
    let shown = json_out(&[
        "operations",
        "show",
        "op-007",
        "--db",
        &s.db_url(),
        "--json",
    ]);
    assert_eq!(shown["status"], "TRUSTLOGGED");
    assert_eq!(shown["operation"]["op_actor"], "actor-1");
    let entry = std::fs::read_to_string(s.ledger_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["payload"]["op_id"] == "op-007")
        .unwrap();
    assert_eq!(shown["envelope"]["sha256"], entry["sha256"]);
    let text = run_ok(&["operations", "show", "op-007", "--db", &s.db_url()], "");
    assert!(String::from_utf8_lossy(&text.stdout).contains("TRUSTLOGGED"));
    let missing = run(&["operations", "show", "nope", "--db", &s.db_url()], "");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no operation \"nope\""));
}

#[test]
fn operations_search_pages_every_match_once_in_keyset_order_and_counts_them() {
    let s = Scratch::new();
    delivered(&s);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec![
            "operations",
            "search",
            "--db",
            &s.db_url(),
            "--actor",
            "actor-2",
            "--limit",
            "3",
            "--count",
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(a) = &after {
            args.extend(["--after".to_string(), a.clone()]);
        }
        let page = json_out(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(page["count"], 10);
        seen.extend(
            page["operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["op_id"].as_str().unwrap().to_string()),
        );
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30)
        .filter(|i| i % 3 == 2)
        .map(|i| format!("op-{i:03}"))
        .collect();
    assert_eq!(seen, expected);
    let bad = run(
        &[
            "operations",
            "search",
            "--db",
            &s.db_url(),
            "--status",
            "LOST",
        ],
        "",
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("status"));
}

#[tokio::test]
async fn the_search_and_lookup_routes_answer_readers_and_refuse_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let ledger = format!("ledger://{}", dir.path().join("a.ledger").display());
    run_ok(&["record", "--db", &db], &(op_line("op-1", T0) + "\n"));
    let config = format!(
        "[[tenant]]\nid = \"acme\"\ndb = \"{db}\"\npublisher = \"{ledger}\"\n\
         [[tenant]]\nid = \"globex\"\ndb = \"sqlite://{}\"\npublisher = \"ledger://{}\"\n\
         [[credential]]\nname = \"acme-read\"\nrole = \"read\"\ntenant = \"acme\"\nsecret = \"acme-read-secret-000\"\n\
         [[credential]]\nname = \"acme-ingest\"\nrole = \"ingest\"\ntenant = \"acme\"\nsecret = \"acme-ingest-secret-0\"\n\
         [[credential]]\nname = \"globex-read\"\nrole = \"read\"\ntenant = \"globex\"\nsecret = \"globex-read-secret-0\"\n",
        dir.path().join("g.db").display(),
        dir.path().join("g.ledger").display()
    );
    let path = dir.path().join("trustlog.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let get = |route: &str, secret: Option<&str>| {
        let req = server.http.get(format!("{}{route}", server.base));
        let req = match secret {
            Some(s) => req.bearer_auth(s),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for route in [
        "/v1/tenants/acme/operations?actor=%E5%BC%A0%E4%B8%89",
        "/v1/tenants/acme/operations/op-1",
        "/v1/tenants/acme/operations/op-1/verify",
        "/v1/tenants/acme/history",
    ] {
        assert_eq!(
            get(route, Some("acme-read-secret-000")).await,
            200,
            "{route}"
        );
        assert_eq!(get(route, None).await, 401, "{route}");
        assert_eq!(
            get(route, Some("wrong-secret-0000000")).await,
            401,
            "{route}"
        );
        assert_eq!(
            get(route, Some("acme-ingest-secret-0")).await,
            403,
            "{route}"
        );
        assert_eq!(
            get(route, Some("globex-read-secret-0")).await,
            404,
            "{route}"
        );
    }
    assert_eq!(
        get(
            "/v1/tenants/acme/operations/absent",
            Some("acme-read-secret-000")
        )
        .await,
        404
    );
    assert_eq!(
        get(
            "/v1/tenants/acme/operations?colour=red",
            Some("acme-read-secret-000")
        )
        .await,
        400,
        "an unknown filter is refused, not ignored"
    );
}

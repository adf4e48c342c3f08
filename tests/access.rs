//! Access control over HTTP, as a user meets it: every route answers each kind of
//! caller as its role and tenant allow, and a refusal changes nothing; admin actions
//! are audited; a request over its tenant's or its credential's limits is refused;
//! `serve` will not listen openly on a network; and HTTPS serves HTTP/1.1 and HTTP/2
//! with the operator's certificate, taking a renewed one on SIGHUP.

mod support;

use std::time::Duration;

use support::backends::Backend;
use support::server::Server;
use support::*;
use trustlog_host::scheduling::clock::now_micros;

/// Who asks, in the access matrix: a name and the secret sent (`None`: no header).
const CALLERS: [(&str, Option<&str>); 8] = [
    ("nobody", None),
    ("wrong secret", Some("not-a-configured-secret")),
    ("globex ingest", Some("globex-ingest-secret-0")),
    ("acme ingest", Some("acme-ingest-secret-00")),
    ("acme read", Some("acme-read-secret-000")),
    ("acme admin", Some("acme-admin-secret-00")),
    ("host read", Some("host-read-secret-000")),
    ("host admin", Some("host-admin-secret-00")),
];

/// What each caller must get from a route: the code when allowed, else the refusal.
fn expected(caller: &str, needed: &str, scope: &str, allowed: u16) -> u16 {
    let (role, reach) = match caller {
        "nobody" | "wrong secret" => return 401,
        "globex ingest" => ("ingest", "globex"),
        "acme ingest" => ("ingest", "acme"),
        "acme read" => ("read", "acme"),
        "acme admin" => ("admin", "acme"),
        "host read" => ("read", "host"),
        _ => ("admin", "host"),
    };
    let reaches = reach == "host" || scope == "any" || reach == scope;
    if !reaches {
        // Another tenant's routes are hidden; the host's routes are forbidden.
        return if scope == "host" { 403 } else { 404 };
    }
    if role == "admin" || role == needed {
        allowed
    } else {
        403
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_credential_as_its_role_and_tenant_allow_and_a_refusal_changes_nothing()
 {
    let dir = tempfile::tempdir().unwrap();
    let tenant = |id: &str| {
        format!(
            "[[tenant]]\nid = \"{id}\"\ndb = \"sqlite://{}\"\npublisher = \"ledger://{}\"\n",
            dir.path().join(format!("{id}.db")).display(),
            dir.path().join(format!("{id}.ledger")).display()
        )
    };
    let credential = |name: &str, role: &str, tenant: Option<&str>, secret: &str| {
        let tenant = tenant
            .map(|t| format!("tenant = \"{t}\"\n"))
            .unwrap_or_default();
        format!(
            "[[credential]]\nname = \"{name}\"\nrole = \"{role}\"\n{tenant}secret = \"{secret}\"\n"
        )
    };
    let config = [
        "admin_token = \"host-admin-secret-00\"\n".to_string(),
        tenant("acme"),
        tenant("globex"),
        credential(
            "acme-ingest",
            "ingest",
            Some("acme"),
            "acme-ingest-secret-00",
        ),
        credential("acme-read", "read", Some("acme"), "acme-read-secret-000"),
        credential("acme-admin", "admin", Some("acme"), "acme-admin-secret-00"),
        credential(
            "globex-ingest",
            "ingest",
            Some("globex"),
            "globex-ingest-secret-0",
        ),
        credential("host-read", "read", None, "host-read-secret-000"),
    ]
    .concat();
    let path = dir.path().join("trustlog.toml");
    std::fs::write(&path, config).unwrap();
    // Dead letters for the admin routes to act on (or, refused, to leave alone): two
    // dead-lettered long ago, which the purge takes, and two recent ones to replay.
    let acme = format!("sqlite://{}", dir.path().join("acme.db").display());
    let acme_ledger = format!("ledger://{}", dir.path().join("acme.ledger").display());
    let dead = ["dl-old-1", "dl-old-2", "dl-new-1", "dl-new-2"];
    let lines: String = dead
        .iter()
        .map(|id| op_line(id, now_micros()) + "\n")
        .collect();
    run_ok(
        &["record", "--db", &acme, "--publisher", &acme_ledger],
        &lines,
    );
    for id in dead {
        let at = if id.starts_with("dl-old") {
            946_684_800_000_000
        } else {
            now_micros()
        };
        support::backends::execute_at(
            Backend::Sqlite,
            &acme,
            &format!(
                "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, error_message, \
                 created_at, updated_at) VALUES ('{id}', 5, 'DEAD_LETTER', 'broker down', {at}, {at})"
            ),
        )
        .await;
    }
    let server =
        Server::start(&["--config", path.to_str().unwrap()]).reading_as("host-admin-secret-00");
    // What a refused request must leave as it was.
    let snapshot = || async {
        let count = |sql: &'static str| support::backends::scalar_at(Backend::Sqlite, &acme, sql);
        let operations = count("SELECT COUNT(*) FROM operation").await;
        let dead_letters =
            count("SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER'").await;
        let (_, status) = server.get("/v1/tenants/acme/status").await;
        let (_, tenants) = server.get("/v1/admin/tenants").await;
        (operations, dead_letters, status["state"].clone(), tenants)
    };

    // (method, path, body, role needed, tenant touched or "host"/"any", code when allowed)
    let routes: [(&str, &str, &str, &str, &str, u16); 15] = [
        (
            "POST",
            "/v1/tenants/acme/operations",
            "OP",
            "ingest",
            "acme",
            200,
        ),
        ("GET", "/v1/tenants/acme/status", "", "read", "acme", 200),
        ("GET", "/v1/status", "", "read", "any", 200),
        ("GET", "/metrics", "", "read", "any", 200),
        (
            "GET",
            "/v1/tenants/acme/admin/dead-letters",
            "",
            "admin",
            "acme",
            200,
        ),
        (
            "POST",
            "/v1/tenants/acme/admin/dead-letters/purge",
            r#"{"older_than": "1000d"}"#,
            "admin",
            "acme",
            200,
        ),
        (
            "POST",
            "/v1/tenants/acme/admin/dead-letters/replay",
            r#"{"all": true}"#,
            "admin",
            "acme",
            200,
        ),
        (
            "POST",
            "/v1/tenants/acme/admin/pause",
            "",
            "admin",
            "acme",
            200,
        ),
        (
            "POST",
            "/v1/tenants/acme/admin/resume",
            "",
            "admin",
            "acme",
            200,
        ),
        ("GET", "/v1/admin/tenants", "", "admin", "host", 200),
        (
            "PUT",
            "/v1/admin/tenants/newcomer",
            "{}",
            "admin",
            "host",
            400,
        ),
        (
            "DELETE",
            "/v1/admin/tenants/nobody-here",
            "",
            "admin",
            "host",
            404,
        ),
        ("POST", "/v1/admin/reload", "", "admin", "host", 200),
        ("GET", "/healthz", "", "none", "any", 200),
        ("GET", "/readyz", "", "none", "any", 200),
    ];
    let mut stored = Vec::new();
    let mut n = 0;
    for (method, route, body, needed, scope, allowed) in routes {
        for (caller, secret) in CALLERS {
            n += 1;
            let op_id = format!("m-{n}");
            let body = if body == "OP" {
                op_line(&op_id, now_micros())
            } else {
                body.to_string()
            };
            let before = if method == "GET" {
                None
            } else {
                Some(snapshot().await)
            };
            let mut req = server
                .http
                .request(method.parse().unwrap(), server.url(route))
                .header("content-type", "application/json")
                .body(body);
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            let res = req.send().await.unwrap();
            let code = res.status().as_u16();
            let text = res.text().await.unwrap();
            let want = if needed == "none" {
                allowed
            } else {
                expected(caller, needed, scope, allowed)
            };
            assert_eq!(code, want, "{caller} {method} {route}: {text}");
            if let Some(before) = before
                && want != allowed
            {
                assert_eq!(
                    snapshot().await,
                    before,
                    "{caller} {method} {route} was refused ({code}) yet changed something"
                );
            }
            if code == 401 {
                assert!(text.contains("authorization"), "{text}");
            }
            if route.ends_with("/operations") && code == 200 {
                stored.push(op_id);
            }
            // What a tenant's reader sees is only its own.
            if code == 200
                && caller == "acme read"
                && (route == "/metrics" || route == "/v1/status")
            {
                assert!(text.contains("acme"), "{route}: {text}");
                assert!(
                    !text.contains("globex"),
                    "{route} shows another tenant: {text}"
                );
            }
        }
    }
    // The allowed admin calls did act: the old dead letters were purged, the new ones
    // replayed, and acme delivers again after its pause.
    let left = support::backends::scalar_at(
        Backend::Sqlite,
        &acme,
        "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER'",
    )
    .await;
    assert_eq!(left, 0, "purged and replayed");
    server
        .wait_json("/v1/tenants/acme/status", Duration::from_secs(20), |s| {
            s["state"] == "running" && s["not_trustlogged"] == 0
        })
        .await;
    // Each admin action on acme: done by its two admins, refused to the four
    // authenticated callers that are not (audited by name), never seen by the two
    // without a credential (counted apart).
    let metrics = server.metrics().await;
    for action in ["purge", "replay", "pause", "resume"] {
        let count = |outcome: &str| {
            metrics
                .get(&format!(
                    "trustlog_admin_actions_total{{action=\"{action}\",outcome=\"{outcome}\",tenant=\"acme\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        assert_eq!((count("ok"), count("refused")), (2.0, 4.0), "{action}");
    }
    let authenticated_routes = routes.iter().filter(|r| r.3 != "none").count();
    assert_eq!(
        metrics["trustlog_http_unauthenticated_total"],
        (2 * authenticated_routes) as f64,
        "nobody and the wrong secret, on every route that needs a credential"
    );
    let log = server.stderr.lock().unwrap().clone();
    assert!(
        log.lines().any(|l| l.contains("trustlog::audit")
            && l.contains("acme-read")
            && l.contains("purge")
            && l.contains("refused")),
        "the refusal is in the audit log, with the credential's name:\n{log}"
    );

    // Only the allowed posts stored anything.
    let listed = stored
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let total =
        support::backends::scalar_at(Backend::Sqlite, &acme, "SELECT COUNT(*) FROM operation")
            .await;
    let matching = support::backends::scalar_at(
        Backend::Sqlite,
        &acme,
        &format!("SELECT COUNT(*) FROM operation WHERE op_id IN ({listed})"),
    )
    .await;
    assert_eq!(
        (total, matching),
        ((stored.len() + dead.len()) as i64, stored.len() as i64),
        "refused posts stored nothing"
    );
    assert_eq!(
        stored.len(),
        3,
        "acme ingest, acme admin and host admin: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_non_loopback_address_without_credentials_unless_told_it_is_insecure() {
    let s = Scratch::new();
    let args = [
        "serve",
        "--db",
        &s.db_url(),
        "--publisher",
        &s.ledger_url(),
        "--listen",
        "0.0.0.0:0",
    ];
    let out = run(&args, "");
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(why.contains("--insecure-allow-unauthenticated"), "{why}");
    assert!(
        !std::path::Path::new(&s.ledger_path()).exists()
            || std::fs::metadata(s.ledger_path()).unwrap().len() == 0
    );
    let common = [
        "--db",
        &s.db_url(),
        "--publisher",
        &s.ledger_url(),
        "--listen",
        "0.0.0.0:0",
    ];
    let open = Server::start(&[&common[..], &["--insecure-allow-unauthenticated"]].concat());
    assert_eq!(open.get("/healthz").await.0, 200);
    drop(open);
    let guarded = Server::start(&[&common[..], &["--admin-token", "an-admin-secret-0"]].concat());
    assert_eq!(guarded.get_anonymous("/v1/status").await.0, 401);
    assert_eq!(guarded.get("/v1/status").await.0, 200);
}

/// `n` operations as a JSON array.
fn batch(prefix: &str, n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| op_line(&format!("{prefix}-{i}"), now_micros()))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_tenants_or_its_credentials_limits_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("acme.db").display());
    let config = format!(
        "[[tenant]]\nid = \"acme\"\ndb = \"{db}\"\npublisher = \"ledger://{}\"\n\
         [tenant.limits]\nrequest_operations = 5\nrequest_body = \"8KiB\"\n\
         [[credential]]\nname = \"app\"\nrole = \"ingest\"\nsecret = \"app-secret-0123456\"\n\
         [[credential]]\nname = \"scanner\"\nrole = \"ingest\"\nsecret = \"scanner-secret-0123\"\n\
         request_operations = 2\n",
        dir.path().join("acme.ledger").display()
    );
    let path = dir.path().join("trustlog.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]);
    let route = "/v1/tenants/acme/operations";
    let post = |secret: &'static str, body: String| server.post(Some(secret), route, body);

    let (code, body) = post("app-secret-0123456", batch("app-ok", 5)).await;
    assert_eq!(code, 200, "the tenant's limit is 5: {body}");
    let (code, body) = post("app-secret-0123456", batch("app-over", 6)).await;
    assert_eq!((code, &body["field"]), (413, &"body".into()), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("5 is the most"),
        "{body}"
    );

    let (code, body) = post("scanner-secret-0123", batch("scan-over", 3)).await;
    assert_eq!(code, 413, "the credential's own limit is 2: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"scanner\""),
        "{body}"
    );
    let (code, body) = post("scanner-secret-0123", batch("scan-ok", 2)).await;
    assert_eq!(code, 200, "{body}");

    // Over the tenant's 8 KiB, though a valid batch of few operations.
    let padded = format!("{}{}", batch("big", 1), " ".repeat(9 << 10));
    let (code, body) = post("app-secret-0123456", padded).await;
    assert_eq!((code, &body["field"]), (413, &"body".into()), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("8192 bytes"),
        "{body}"
    );

    let stored =
        support::backends::scalar_at(Backend::Sqlite, &db, "SELECT COUNT(*) FROM operation").await;
    assert_eq!(
        stored, 7,
        "the two batches within their limits, nothing of the others"
    );
}

/// A self-signed certificate for `localhost` and its key, in PEM.
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// A client that trusts only `cert`, reaching `localhost` at the server's address.
fn client_trusting(cert: &str, addr: std::net::SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_with_the_operators_certificate_and_takes_a_renewed_one_on_sighup()
 {
    let s = Scratch::new();
    let (cert_path, key_path) = (s.dir.path().join("cert.pem"), s.dir.path().join("key.pem"));
    let (first_cert, first_key) = certificate();
    std::fs::write(&cert_path, &first_cert).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let secret = "tls-admin-secret-000";
    let server = Server::start(&[
        "--db",
        &s.db_url(),
        "--publisher",
        &s.ledger_url(),
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        secret,
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let addr: std::net::SocketAddr = server
        .base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("serve says it listens on {}", server.base))
        .parse()
        .unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());

    for (http1_only, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let client = client_trusting(&first_cert, addr, http1_only);
        let res = client
            .post(url("/v1/operations"))
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(op_line(&format!("tls-{http1_only}"), now_micros()))
            .send()
            .await
            .unwrap();
        assert_eq!((res.status().as_u16(), res.version()), (200, version));
        let res = client.get(url("/v1/status")).send().await.unwrap();
        assert_eq!(
            res.status().as_u16(),
            401,
            "credentials still needed over TLS"
        );
    }
    // Nothing in clear on the TLS port.
    let clear = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(clear.map_or(true, |r| !r.status().is_success()));

    // A renewed certificate, then SIGHUP: new connections get it.
    let (second_cert, second_key) = certificate();
    std::fs::write(&cert_path, &second_cert).unwrap();
    std::fs::write(&key_path, &second_key).unwrap();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    hup();
    let healthz = |cert: &str| {
        let client = client_trusting(cert, addr, false);
        let url = url("/healthz");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while healthz(&second_cert).await.ok() != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        healthz(&first_cert).await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file on the next SIGHUP keeps the certificate in force.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server
        .stderr
        .lock()
        .unwrap()
        .contains("TLS certificate not reloaded")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no word of the failed reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healthz(&second_cert).await.ok(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_with_a_certificate_it_cannot_read_naming_the_files() {
    let s = Scratch::new();
    let cert = s.dir.path().join("missing-cert.pem");
    let key = s.dir.path().join("missing-key.pem");
    let out = run(
        &[
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            &s.ledger_url(),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "",
    );
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(
        why.contains("missing-cert.pem") && why.contains("missing-key.pem"),
        "{why}"
    );
    let out = run(
        &[
            "serve",
            "--db",
            &s.db_url(),
            "--publisher",
            &s.ledger_url(),
            "--tls-cert",
            cert.to_str().unwrap(),
        ],
        "",
    );
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && why.contains("--tls-key"), "{why}");
}

//! The operator console in a real browser: Debian's chromium driven through
//! chromedriver (WebDriver), against `trustlog serve` on real SQLite and a ledger.
//! Each page is saved as a screenshot under docs/console/ (README shows them).
//!
//! Needs `chromium` and `chromedriver` (`.ci/run` installs Debian's packages).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::backends::{Backend, execute_at};
use support::server::Server;
use support::*;

const ADMIN: &str = "console-admin-secret-0";
const READER: &str = "console-reader-secret0";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is needed (Debian: apt-get install chromium chromium-driver)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let profile = tempfile::tempdir().unwrap().keep();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn snap(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the element `css` exists and its text satisfies `ok`; returns the text.
async fn text_when(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed what was awaited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Client, base: &str, secret: &str) {
    c.goto(&format!("{base}/ui/")).await.unwrap();
    let field = c
        .wait()
        .for_element(Locator::Id("credential"))
        .await
        .unwrap();
    assert_eq!(
        field.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    field.send_keys(secret).await.unwrap();
    c.find(Locator::Id("sign-in-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    if c.wait()
        .for_element(Locator::Id("nav-overview"))
        .await
        .is_err()
    {
        panic!(
            "signing in did not reach the console: {}\n{}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        );
    }
}

async fn sign_out(c: &Client) {
    c.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("credential"))
        .await
        .unwrap();
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Every resource the page loaded came from `base`.
async fn assert_same_origin(c: &Client, base: &str) {
    let names = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    let names: Vec<String> = serde_json::from_value(names).unwrap();
    assert!(!names.is_empty());
    for n in names {
        assert!(n.starts_with(base), "a request to another origin: {n}");
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    db: String,
    ledger: PathBuf,
    server: Server,
}

/// A host with one tenant (`default`), 120 delivered operations, and two dead letters.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("console.db").display());
    let ledger = dir.path().join("console.ledger");
    let ops: String = (0..120)
        .map(|i| {
            let mut v: Value =
                serde_json::from_str(&op_line(&format!("op-{i:04}"), 1_764_000_000_000_000 + i))
                    .unwrap();
            v["op_actor"] = json!(format!("actor-{}", i % 6));
            v.to_string() + "\n"
        })
        .collect();
    run_ok(&["record", "--db", &db], &ops);
    run_ok(
        &["record", "--db", &db],
        &(op_line("dead-1", 1_700_000_000_000_000)
            + "\n"
            + &op_line("dead-2", 1_700_000_000_000_001)
            + "\n"),
    );
    for id in ["dead-1", "dead-2"] {
        execute_at(
            Backend::Sqlite,
            &db,
            &format!(
                "INSERT INTO trustlog_retry (op_id, retry_count, retry_status, error_message, \
                 created_at, updated_at) VALUES ('{id}', 5, 'DEAD_LETTER', 'broker said no', 1, 1)"
            ),
        )
        .await;
    }
    let config = format!(
        "[[tenant]]\nid = \"default\"\ndb = \"{db}\"\npublisher = \"ledger://{}\"\n\
         [[credential]]\nname = \"ops-admin\"\nrole = \"admin\"\nsecret = \"{ADMIN}\"\n\
         [[credential]]\nname = \"ops-reader\"\nrole = \"read\"\nsecret = \"{READER}\"\n",
        ledger.display()
    );
    let path = dir.path().join("trustlog.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(&["--config", path.to_str().unwrap()]).reading_as(ADMIN);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger_entries_so_far(&ledger) < 120 {
        assert!(Instant::now() < deadline, "the backlog was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Setup {
        _dir: dir,
        db,
        ledger,
        server,
    }
}

async fn api_status(s: &Setup) -> Value {
    s.server
        .http
        .get(format!("{}/v1/tenants/default/status", s.server.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_signs_in_sees_the_figures_finds_a_row_checks_its_evidence_and_replays_a_dead_letter()
 {
    let s = setup().await;
    let driver = chromedriver();
    let c = browser(&driver, 1280, 800).await;
    let base = &s.server.base;

    sign_in(&c, base, ADMIN).await;
    let status = api_status(&s).await;
    for (testid, field) in [
        ("count-total", "total"),
        ("count-delivered", "trustlogged"),
        ("count-dead", "dead_letter"),
    ] {
        let want = status[field].to_string();
        text_when(&c, &format!("[data-testid={testid}]"), |t| {
            digits(t) == want
        })
        .await;
    }
    snap(&c, "overview").await;

    // Search by actor: actor-3 has 20 rows; the first page lists them.
    c.goto(&format!("{base}/ui/#/operations")).await.unwrap();
    let actor = c
        .wait()
        .for_element(Locator::Id("search-actor"))
        .await
        .unwrap();
    actor.send_keys("actor-3").await.unwrap();
    c.find(Locator::Id("search-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_when(&c, "[data-testid=result-count]", |t| digits(t) == "20").await;
    let rows = c
        .find_all(Locator::Css("[data-testid=op-row]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows[0].text().await.unwrap().contains("op-0003"));
    snap(&c, "operations").await;

    // The detail page shows the SHA-256 the ledger holds for that row.
    rows[0]
        .find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = text_when(&c, "[data-testid=envelope-sha256]", |t| t.len() == 64).await;
    let ledger_line = std::fs::read_to_string(&s.ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["payload"]["op_id"] == "op-0003")
        .unwrap();
    assert_eq!(shown, ledger_line["sha256"].as_str().unwrap());
    text_when(&c, "[data-testid=ledger-sha256]", |t| {
        t == ledger_line["sha256"].as_str().unwrap()
    })
    .await;
    c.find(Locator::Id("verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_when(&c, "[data-testid=verify-result]", |t| {
        t.starts_with("verified")
    })
    .await;
    snap(&c, "detail").await;

    // Replaying a dead letter puts it back in the queue; the worker delivers it.
    c.goto(&format!("{base}/ui/#/dead-letters")).await.unwrap();
    text_when(&c, "[data-testid=dl-row]", |t| t.contains("dead-1")).await;
    snap(&c, "dead-letters").await;
    let row = c
        .find(Locator::XPath(
            "//*[@data-testid='dl-row'][contains(., 'dead-1')]",
        ))
        .await
        .unwrap();
    row.find(Locator::Css("[data-testid=replay-one]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_when(&c, "[data-testid=action-result]", |t| t.contains('1')).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let pool = sqlx::SqlitePool::connect(&s.db).await.unwrap();
    while count_status(&pool, "TRUSTLOGGED").await < 121 {
        assert!(
            Instant::now() < deadline,
            "the replayed row was not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ledger_op_ids(&s.ledger).contains(&"dead-1".to_string()));
    assert!(!ledger_op_ids(&s.ledger).contains(&"dead-2".to_string()));

    assert_same_origin(&c, base).await;
    sign_out(&c).await;
    snap(&c, "sign-in").await;
    // After sign-out the old session is gone: the API refuses the browser.
    let gone = c
        .execute(
            "return fetch('/ui/api/session').then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(gone, json!(401));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_sees_everything_and_can_act_on_nothing_and_a_phone_width_works() {
    let s = setup().await;
    let driver = chromedriver();
    let c = browser(&driver, 390, 844).await;
    let base = &s.server.base;

    sign_in(&c, base, READER).await;
    let status = api_status(&s).await;
    let want = status["total"].to_string();
    text_when(&c, "[data-testid=count-total]", |t| digits(t) == want).await;
    snap(&c, "overview-phone").await;

    c.goto(&format!("{base}/ui/#/dead-letters")).await.unwrap();
    text_when(&c, "[data-testid=dl-row]", |t| t.contains("dead-1")).await;
    for control in ["replay-one", "replay-selected", "purge-matching"] {
        let shown = c
            .execute(
                &format!(
                    "return [...document.querySelectorAll('[data-testid={control}],#{control}')]\
                     .some(e => e.offsetParent !== null && !e.disabled)"
                ),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(shown, json!(false), "a reader is offered {control}");
    }
    // The server refuses the reader's session too, with its CSRF token and all.
    let refused = c
        .execute(
            "return fetch('/ui/api/session').then(r => r.json()).then(s =>
               fetch('/v1/tenants/default/admin/dead-letters/replay', {method: 'POST',
                 headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
                 body: JSON.stringify({all: true})}).then(r => r.status))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));
    // And a POST without the CSRF token is refused before the role is even looked at.
    let no_csrf = c
        .execute(
            "return fetch('/v1/tenants/default/admin/pause', {method: 'POST',
               headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(no_csrf, json!(403));
    let dead: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM trustlog_retry WHERE retry_status = 'DEAD_LETTER'",
    )
    .fetch_one(&sqlx::SqlitePool::connect(&s.db).await.unwrap())
    .await
    .unwrap();
    assert_eq!(dead, 2, "nothing changed");
    assert_same_origin(&c, base).await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_session_the_console_shows_only_the_sign_in_form_and_a_wrong_secret_is_refused() {
    let s = setup().await;
    let http = &s.server.http;
    let page = http
        .get(format!("{}/ui/", s.server.base))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("type=\"password\"").count(), 1);
    assert!(!html.contains("count-total"));
    let wrong = http
        .post(format!("{}/ui/sign-in", s.server.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("credential=not-a-credential-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let no_session = http
        .get(format!("{}/v1/tenants/default/operations", s.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), 401);
    // A sign-in posted from another site's page is refused.
    let cross = http
        .post(format!("{}/ui/sign-in", s.server.base))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("credential={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(cross.headers().get("set-cookie").is_none());
}

//! `trustlog serve` running in the background with its HTTP API on a free port.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bin;

/// A running `serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// Everything the server wrote to stderr so far (read by a thread, so the
    /// server never blocks on a full pipe).
    pub stderr: Arc<Mutex<String>>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub http: reqwest::Client,
    /// The secret `get`, `text` and the waits send: the `--admin-token` the server was
    /// started with, if any, or one set with [`Server::reading_as`].
    pub reader: Option<String>,
}

impl Server {
    /// Starts `trustlog serve ARGS` and waits until it says where it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut child = bin()
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning trustlog serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "serve {args:?} did not start: stdout {line:?}, stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        // reqwest is built without a crypto provider of its own (see the webhook publisher).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reader = args
            .iter()
            .position(|a| *a == "--admin-token")
            .and_then(|i| args.get(i + 1))
            .map(|t| t.to_string());
        Server {
            base: base.to_string(),
            child,
            stderr,
            reader,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// The same server, read with `secret` by `get`, `text` and the waits.
    pub fn reading_as(mut self, secret: &str) -> Server {
        self.reader = Some(secret.to_string());
        self
    }

    /// A GET of `path`, with the reader's secret.
    fn read(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(self.url(path));
        match &self.reader {
            Some(secret) => req.bearer_auth(secret),
            None => req,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name: utime and stime are 14th and 15th.
        let after = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(100);
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path`: the status and the body as JSON (or `Null` when it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        answer(self.read(path).send().await.unwrap()).await
    }

    /// GETs `path` with no credential at all.
    pub async fn get_anonymous(&self, path: &str) -> (u16, serde_json::Value) {
        answer(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    /// GETs `path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let req = self.http.get(self.url(path)).bearer_auth(token);
        answer(req.send().await.unwrap()).await
    }

    /// POSTs `body` to `path`, with a bearer token when given.
    pub async fn post(
        &self,
        token: Option<&str>,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap()).await
    }

    /// GETs `path` as text.
    pub async fn text(&self, path: &str) -> (u16, String) {
        let r = self.read(path).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Scrapes `/metrics` and parses every sample.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let (code, text) = self.text("/metrics").await;
        assert_eq!(code, 200, "{text}");
        parse_prometheus(&text)
    }

    /// Polls `/v1/status` until `done` holds, for at most `within`.
    pub async fn wait_status(
        &self,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_json("/v1/status", within, done).await
    }

    /// Polls `path` until it answers 200 with a body for which `done` holds, for at
    /// most `within`.
    pub async fn wait_json(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (code, body) = self.get(path).await;
            if code == 200 && done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} never got there within {within:?}; last: {code} {body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn answer(r: reqwest::Response) -> (u16, serde_json::Value) {
    let code = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples of a Prometheus text exposition, keyed `name{labels}`; panics on any
/// line that is not a comment, a blank or a `series value` sample of a declared metric.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut declared = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            declared.iter().any(|d| name == d
                || name
                    .strip_prefix(d.as_str())
                    .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
            "sample of an undeclared metric: {line:?}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

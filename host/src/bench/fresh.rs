//! A fresh, empty place for each bench run to write to, removed afterwards: a
//! new database file for SQLite, a new schema on a PostgreSQL or MariaDB server,
//! a new ledger file, a new NATS JetStream stream. Other publishers are used as
//! they are.

use std::path::{Path, PathBuf};

use crate::db::schemas;
use crate::publisher::nats;

use super::BenchError;

/// What a run created, so it can be removed.
#[derive(Debug)]
enum Created {
    Files(Vec<PathBuf>),
    Schema { server: String, name: String },
    Stream { server: String, name: String },
    Nothing,
}

/// A URL made fresh for one run.
#[derive(Debug)]
pub struct Fresh {
    /// The URL the run uses.
    pub url: String,
    created: Created,
}

/// `url` without its `scheme://` and query: the file path of a sqlite:// or ledger:// URL.
pub(super) fn file_path(url: &str, scheme: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix(&format!("{scheme}://"))
        .or_else(|| url.strip_prefix(&format!("{scheme}:")))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| PathBuf::from(path))
}

/// `dir/stem-tag.ext` beside `path`.
fn beside(path: &Path, tag: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or("trustlog".into(), |s| s.to_string_lossy());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{tag}{ext}"))
}

impl Fresh {
    /// A fresh database like `url`, tagged `tag` (lowercase letters, digits, `_`).
    pub async fn database(url: &str, tag: &str) -> Result<Fresh, BenchError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "sqlite" => {
                let path = file_path(url, "sqlite").ok_or_else(|| BenchError::Setup {
                    what: "db".into(),
                    message: "a bench needs a database file, not an in-memory database".into(),
                })?;
                let fresh = beside(&path, tag);
                let files = ["", "-wal", "-shm"]
                    .iter()
                    .map(|s| PathBuf::from(format!("{}{s}", fresh.display())))
                    .collect();
                Ok(Fresh {
                    url: format!("sqlite://{}", fresh.display()),
                    created: Created::Files(files),
                })
            }
            "postgres" | "postgresql" | "mysql" | "mariadb" => {
                let name = format!("trustlog_{tag}");
                schemas::ensure(url, &name)
                    .await
                    .map_err(|e| BenchError::Setup {
                        what: format!("schema {name}"),
                        message: e.to_string(),
                    })?;
                let fresh = crate::config::with_schema(url, &name, "db".into()).map_err(|e| {
                    BenchError::Setup {
                        what: "db".into(),
                        message: e.to_string(),
                    }
                })?;
                Ok(Fresh {
                    url: fresh,
                    created: Created::Schema {
                        server: url.to_string(),
                        name,
                    },
                })
            }
            _ => Err(BenchError::Setup {
                what: "db".into(),
                message: format!(
                    "unsupported database URL {}",
                    crate::publisher::options::redact(url)
                ),
            }),
        }
    }

    /// A fresh publisher like `url`: a new file for the ledger (its options kept, and
    /// with `signed` a new key to sign it), a new stream on the same subject tree for
    /// NATS, `url` itself otherwise.
    pub fn publisher(url: &str, tag: &str, signed: bool) -> Result<Fresh, BenchError> {
        if let Some(rest) = url.strip_prefix("ledger://").filter(|p| !p.is_empty()) {
            return fresh_ledger(rest, tag, signed);
        }
        if url.starts_with("nats://") {
            return fresh_stream(url, tag);
        }
        Ok(Fresh {
            url: url.to_string(),
            created: Created::Nothing,
        })
    }

    /// Removes what was created; the run's figures are taken by now.
    pub async fn remove(self) -> Result<(), BenchError> {
        match self.created {
            Created::Files(files) => {
                for f in files {
                    let removed = match std::fs::symlink_metadata(&f) {
                        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&f),
                        _ => std::fs::remove_file(&f),
                    };
                    match removed {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(BenchError::Setup {
                                what: format!("removing {}", f.display()),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                Ok(())
            }
            Created::Schema { server, name } => {
                schemas::drop(&server, &name)
                    .await
                    .map_err(|e| BenchError::Setup {
                        what: format!("dropping schema {name}"),
                        message: e.to_string(),
                    })
            }
            Created::Stream { server, name } => delete_stream(&server, &name).await,
            Created::Nothing => Ok(()),
        }
    }
}

/// A new ledger beside the one `rest` (`PATH[?OPTIONS]`) names, with its options and,
/// when `signed`, a key made for the run.
fn fresh_ledger(rest: &str, tag: &str, signed: bool) -> Result<Fresh, BenchError> {
    let (path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(p, q)| (p, Some(q)));
    let fresh = beside(Path::new(path), tag);
    let at = |suffix: &str| PathBuf::from(format!("{}{suffix}", fresh.display()));
    // The ledger, its head anchor (and the anchor's temporary, after a crash), and a
    // signed ledger's log directory and key.
    let files = ["", ".head", ".head.tmp", ".tlog", ".key"]
        .iter()
        .map(|s| at(s))
        .collect();
    let mut options: Vec<String> = query.map(str::to_string).into_iter().collect();
    if signed {
        let key_file = at(".key");
        let failed = |message: String| BenchError::Setup {
            what: format!("signing key {}", key_file.display()),
            message,
        };
        let pair =
            crate::ledger::generate_key("trustlog-bench").map_err(|e| failed(e.to_string()))?;
        std::fs::write(&key_file, format!("{}\n", pair.signer_key))
            .map_err(|e| failed(e.to_string()))?;
        let encoded: String =
            url::form_urlencoded::byte_serialize(key_file.to_string_lossy().as_bytes()).collect();
        options.push(format!("signing_key={encoded}"));
    }
    let url = match options.is_empty() {
        true => format!("ledger://{}", fresh.display()),
        false => format!("ledger://{}?{}", fresh.display(), options.join("&")),
    };
    Ok(Fresh {
        url,
        created: Created::Files(files),
    })
}

/// `url` with its stream and subject (the adapter's defaults when absent) tagged.
/// A stream kept across runs would carry every earlier run's messages and, for its
/// duplicate window, their ids: later runs would write into a larger stream than
/// earlier ones.
fn fresh_stream(url: &str, tag: &str) -> Result<Fresh, BenchError> {
    let invalid = |message: String| BenchError::Setup {
        what: format!("publisher {}", crate::publisher::options::redact(url)),
        message,
    };
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let mut pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let mut tagged = |key: &str, default: &str, join: &str| {
        let at = pairs.iter().position(|(k, _)| k == key).unwrap_or_else(|| {
            pairs.push((key.to_string(), default.to_string()));
            pairs.len() - 1
        });
        pairs[at].1 = format!("{}{join}{tag}", pairs[at].1);
        pairs[at].1.clone()
    };
    let name = tagged("stream", nats::DEFAULT_STREAM, "_");
    tagged("subject", nats::DEFAULT_SUBJECT, ".");
    let server = crate::publisher::options::without_options(&parsed);
    parsed.query_pairs_mut().clear().extend_pairs(&pairs);
    Ok(Fresh {
        url: parsed.to_string(),
        created: Created::Stream { server, name },
    })
}

/// Deletes the JetStream stream `name` on `server`; one never created is no error.
async fn delete_stream(server: &str, name: &str) -> Result<(), BenchError> {
    let failed = |message: String| BenchError::Setup {
        what: format!("deleting stream {name}"),
        message,
    };
    let client = async_nats::connect(server)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let deleted = async_nats::jetstream::new(client).delete_stream(name).await;
    match deleted {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            async_nats::jetstream::context::DeleteStreamErrorKind::JetStream(j)
                if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(())
            }
            _ => Err(failed(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_get_a_tagged_sibling_and_other_publishers_stay() {
        assert_eq!(
            file_path("sqlite://data/b.db?mode=rwc", "sqlite"),
            Some(PathBuf::from("data/b.db"))
        );
        assert_eq!(file_path("sqlite::memory:", "sqlite"), None);
        assert_eq!(
            beside(Path::new("/tmp/x/bench.db"), "bench_1"),
            PathBuf::from("/tmp/x/bench-bench_1.db")
        );
        let p = Fresh::publisher("ledger:///tmp/l/t.ledger", "b2", false).unwrap();
        assert_eq!(p.url, "ledger:///tmp/l/t-b2.ledger");
        let r = Fresh::publisher("redis://127.0.0.1:6379?stream=s", "b2", false).unwrap();
        assert_eq!(r.url, "redis://127.0.0.1:6379?stream=s");
    }

    #[tokio::test]
    async fn a_signed_fresh_ledger_gets_a_key_of_its_own_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ledger://{}", dir.path().join("b.ledger").display());
        let fresh = Fresh::publisher(&url, "s1", true).unwrap();
        let ledger = dir.path().join("b-s1.ledger");
        let key = dir.path().join("b-s1.ledger.key");
        let encoded: String =
            url::form_urlencoded::byte_serialize(key.to_string_lossy().as_bytes()).collect();
        assert_eq!(
            fresh.url,
            format!("ledger://{}?signing_key={encoded}", ledger.display())
        );
        let signed = crate::ledger::Ledger::open_with(
            &ledger,
            crate::ledger::LedgerOptions {
                signing_key: Some(
                    crate::ledger::SigningKey::parse(std::fs::read_to_string(&key).unwrap().trim())
                        .unwrap(),
                ),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(signed.signed_size(), Some(0));
        drop(signed);
        assert!(dir.path().join("b-s1.ledger.tlog").is_dir());
        fresh.remove().await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_nats_url_gets_a_tagged_stream_and_subject_and_keeps_its_other_options() {
        let n = Fresh::publisher(
            "nats://127.0.0.1:4222?stream=BENCH&timeout=2s&subject=t.bench",
            "b2",
            false,
        )
        .unwrap();
        assert_eq!(
            n.url,
            "nats://127.0.0.1:4222?stream=BENCH_b2&timeout=2s&subject=t.bench.b2"
        );
        let bare = Fresh::publisher("nats://127.0.0.1:4222", "b2", false).unwrap();
        assert_eq!(
            bare.url,
            "nats://127.0.0.1:4222?stream=TRUSTLOG_b2&subject=trustlog.operations.b2"
        );
        match bare.created {
            Created::Stream { server, name } => {
                assert_eq!(
                    (server.as_str(), name.as_str()),
                    ("nats://127.0.0.1:4222", "TRUSTLOG_b2")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

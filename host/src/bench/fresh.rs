//! A fresh, empty place for each bench run to write to, removed afterwards: a
//! new database file for SQLite, a new schema on a PostgreSQL or MariaDB server,
//! a new ledger file. Other publishers are used as they are.

use std::path::{Path, PathBuf};

use crate::db::schemas;

use super::BenchError;

/// What a run created, so it can be removed.
#[derive(Debug)]
enum Created {
    Files(Vec<PathBuf>),
    Schema { server: String, name: String },
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

    /// A fresh publisher like `url`: a new file for the ledger, `url` itself otherwise.
    pub fn publisher(url: &str, tag: &str) -> Fresh {
        // The ledger takes everything after its scheme as the path.
        match url.strip_prefix("ledger://").filter(|p| !p.is_empty()) {
            Some(path) => {
                let fresh = beside(Path::new(path), tag);
                // The ledger and its head anchor (and the anchor's temporary, after a crash).
                let files = ["", ".head", ".head.tmp"]
                    .iter()
                    .map(|s| PathBuf::from(format!("{}{s}", fresh.display())))
                    .collect();
                Fresh {
                    url: format!("ledger://{}", fresh.display()),
                    created: Created::Files(files),
                }
            }
            None => Fresh {
                url: url.to_string(),
                created: Created::Nothing,
            },
        }
    }

    /// Removes what was created; the run's figures are taken by now.
    pub async fn remove(self) -> Result<(), BenchError> {
        match self.created {
            Created::Files(files) => {
                for f in files {
                    match std::fs::remove_file(&f) {
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
            Created::Nothing => Ok(()),
        }
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
        let p = Fresh::publisher("ledger:///tmp/l/t.ledger", "b2");
        assert_eq!(p.url, "ledger:///tmp/l/t-b2.ledger");
        let n = Fresh::publisher("nats://127.0.0.1:4222", "b2");
        assert_eq!(n.url, "nats://127.0.0.1:4222");
    }
}

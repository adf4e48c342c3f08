//! `trustlog ledger …`: verify a ledger, make its signing key, and prove and check what
//! it holds. Offline: each reads files only, and whoever may read them may run it;
//! `keygen` writes one new file, readable by its owner only, and never overwrites.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::args::LedgerCommand;
use crate::ledger;

/// Runs one `ledger` subcommand.
pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCommand::Verify { path, key: None } => verdict(
            &path,
            ledger::verify(&path)
                .map(|r| format!("ledger ok: {} entries, head {}", r.entries, r.head_hash)),
        ),
        LedgerCommand::Verify {
            path,
            key: Some(key),
        } => {
            let key = key_text(&key)?;
            verdict(
                &path,
                ledger::verify_v2(&path, &key).map(|r| {
                    format!(
                        "ledger ok: {} entries, head {}, signed by {} at size {}, root {}, {} tiles",
                        r.entries, r.head_hash, r.origin, r.entries, r.root_hash, r.tiles
                    )
                }),
            )
        }
        LedgerCommand::Keygen { out, name } => keygen(&out, &name),
        LedgerCommand::Prove { path, op_id } => {
            let proof = ledger::prove_inclusion(&path, &op_id)
                .with_context(|| format!("proving {op_id:?} in {}", path.display()))?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        LedgerCommand::CheckProof { file, key } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let proof: ledger::InclusionProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an inclusion proof", file.display()))?;
            match ledger::check_inclusion(&proof, &key_text(&key)?) {
                Ok(r) => {
                    println!(
                        "proof ok: {} is entry {} of the {} entries {} signed",
                        r.op_id, r.index, r.size, r.origin
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("proof {} FAILED: {e}", file.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        LedgerCommand::Consistency { path, old, key } => {
            let old_text = std::fs::read_to_string(&old)
                .with_context(|| format!("reading the checkpoint {}", old.display()))?;
            let checked = ledger::prove_consistency(&path, &old_text)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    ledger::check_consistency(&p, &key_text(&key).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok(r) => {
                    println!(
                        "consistent: {} at size {} extends the checkpoint at size {}",
                        r.origin, r.new_size, r.old_size
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!(
                        "ledger {} does NOT extend {}: {e}",
                        path.display(),
                        old.display()
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn verdict(path: &Path, result: Result<String, ledger::VerifyError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("ledger {} FAILED verification: {e}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A key given as itself or as `@FILE`.
fn key_text(given: &str) -> anyhow::Result<String> {
    match given.strip_prefix('@') {
        Some(file) => Ok(std::fs::read_to_string(file)
            .with_context(|| format!("reading the key file {file}"))?
            .trim()
            .to_string()),
        None => Ok(given.trim().to_string()),
    }
}

fn keygen(out: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let pair = write_new_key(out, name)?;
    println!("{}", pair.verifier_key);
    Ok(ExitCode::SUCCESS)
}

/// Makes a signing key named `name` and writes it to `out`, a new file readable by its
/// owner only; an existing file is never overwritten.
pub fn write_new_key(out: &Path, name: &str) -> anyhow::Result<ledger::KeyPair> {
    let pair =
        ledger::generate_key(name).with_context(|| format!("making a key named {name:?}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} exists: a signing key is never overwritten",
                out.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", out.display())),
    };
    file.write_all(format!("{}\n", pair.signer_key).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(pair)
}

/// The name of the key the demo makes, and so its ledger's origin.
const DEMO_KEY_NAME: &str = "trustlog-demo";

/// The publisher URL the demo uses, and what it says about its key. A ledger named
/// without a key is signed with `PATH.key` beside it, made now for a new ledger; an
/// existing unsigned ledger stays unsigned (becoming v2 is the operator's choice), and
/// a key named by the URL or `TRUSTLOG_LEDGER_SIGNING_KEY` is used as it is.
pub fn demo_publisher(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let Some(path) = url.strip_prefix("ledger://") else {
        return Ok((url.to_string(), None));
    };
    let key_named = std::env::var("TRUSTLOG_LEDGER_SIGNING_KEY").is_ok_and(|k| !k.is_empty());
    if path.contains('?') || key_named {
        return Ok((url.to_string(), None));
    }
    let key_file = std::path::PathBuf::from(format!("{path}.key"));
    let said = if key_file.exists() {
        format!("signing with the key in {}", key_file.display())
    } else if Path::new(path).exists() {
        return Ok((
            url.to_string(),
            Some(format!(
                "{path} is an unsigned (v1) ledger and stays so; to continue it signed, \
                 `trustlog ledger keygen --out {path}.key` and run the demo again"
            )),
        ));
    } else {
        let pair = write_new_key(&key_file, DEMO_KEY_NAME)?;
        format!(
            "made a signing key in {} (owner-only); its verifier key is {}\n  \
             a real deployment keeps the signing key away from the ledger, and the verifier \
             key and old checkpoints with its auditors (README: \"A ledger that proves things\")",
            key_file.display(),
            pair.verifier_key
        )
    };
    let encoded: String =
        url::form_urlencoded::byte_serialize(key_file.to_string_lossy().as_bytes()).collect();
    Ok((format!("{url}?signing_key={encoded}"), Some(said)))
}

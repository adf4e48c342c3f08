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
    println!("{}", pair.verifier_key);
    Ok(ExitCode::SUCCESS)
}

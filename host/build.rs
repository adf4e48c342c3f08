//! Builds the guest component for `wasm32-wasip2` so a plain `cargo build`
//! yields a host with its component embedded: no manual step.
//!
//! The nested cargo gets its own target directory: the outer build holds the
//! lock on the main one, so sharing it would deadlock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

include!("guest_build.rs");

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    println!("cargo:rerun-if-changed=guest_build.rs");
    // Relative to host/, not absolute: two checkouts sharing a target directory (a CI
    // clone and a work tree) share this script's output, and absolute paths would make
    // one checkout's build watch the other's sources and embed a stale guest.
    for watched in ["guest/src", "guest/Cargo.toml", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed=../{watched}");
    }
    println!("cargo:rerun-if-env-changed=TRUSTLOG_GUEST_TARGET_DIR");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = env::var_os("TRUSTLOG_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| guest_target_dir(&out_dir));

    ensure_wasm_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            "trustlog-guest",
            "--lib",
            "--release",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    guest_build_settings(&mut cmd);
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest component");
    if !status.success() {
        panic!(
            "building the guest component failed; is the {TARGET} target installed? (`rustup target add {TARGET}`)"
        );
    }

    let built = target_dir
        .join(TARGET)
        .join("release")
        .join("trustlog_guest.wasm");
    let embedded = out_dir.join("trustlog_guest.wasm");
    std::fs::copy(&built, &embedded)
        .unwrap_or_else(|e| panic!("copying {} failed: {e}", built.display()));
    println!("cargo:rustc-env=TRUSTLOG_GUEST_WASM={}", embedded.display());
}

/// Installs the wasm target when rustup manages this toolchain and lacks it, so the
/// README's first command works on a fresh machine (rust-toolchain.toml names the
/// target, but rustup only installs it with the toolchain, not on a plain `cargo build`).
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.is_dir());
    if installed {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed to build the guest component)"
    );
    match Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
    {
        Ok(s) if s.success() => {}
        other => println!(
            "cargo:warning=`rustup target add {TARGET}` failed ({other:?}); install the target by hand"
        ),
    }
}

/// `<target>/guest-wasm`, found from OUT_DIR = `<target>[/<triple>]/<profile>/build/<pkg>/out`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(out_dir)
        .join("guest-wasm")
}

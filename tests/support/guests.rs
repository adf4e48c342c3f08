//! Hostile guest components (tests/guests/hostile), built on demand for the tests
//! that need a misbehaving tenant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

include!(concat!(env!("CARGO_MANIFEST_DIR"), "/guest_build.rs"));

/// One way a hostile guest misbehaves: a feature of tests/guests/hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    TrapAfterPublish,
    TrapEveryTick,
    TrapStorm,
    InfiniteLoop,
    MemoryBomb,
    LogFlood,
    MalformedEnvelopes,
}

impl Hostile {
    fn feature(self) -> &'static str {
        match self {
            Hostile::TrapAfterPublish => "trap-after-publish",
            Hostile::TrapEveryTick => "trap-every-tick",
            Hostile::TrapStorm => "trap-storm",
            Hostile::InfiniteLoop => "infinite-loop",
            Hostile::MemoryBomb => "memory-bomb",
            Hostile::LogFlood => "log-flood",
            Hostile::MalformedEnvelopes => "malformed-envelopes",
        }
    }
}

/// The workspace's target directory (the one `cargo test` builds into).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_path_buf()
}

/// The component file of `kind`, built for wasm32-wasip2 if it is not there yet.
pub fn hostile(kind: Hostile) -> PathBuf {
    // Tests of one binary ask concurrently; test binaries run one after another, and a
    // file lock covers runners that start them side by side.
    static BUILDING: Mutex<()> = Mutex::new(());
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    // The same directory and settings as host/build.rs (guest_build.rs), so the
    // engine's dependencies built for the real guest are reused.
    let dir = target_dir().join("guest-wasm");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("hostile.lock")).unwrap();
    lock.lock().unwrap();
    let out = dir.join(format!("hostile-{}.wasm", kind.feature()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "--package",
            "trustlog-hostile-guest",
            "--lib",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--features",
            kind.feature(),
            "--target-dir",
        ])
        .arg(&dir);
    guest_build_settings(&mut cmd);
    let status = cmd.status().expect("running cargo for the hostile guest");
    assert!(status.success(), "building the {kind:?} guest failed");
    let built = dir.join("wasm32-wasip2/release/trustlog_hostile_guest.wasm");
    std::fs::copy(&built, &out).unwrap();
    out
}

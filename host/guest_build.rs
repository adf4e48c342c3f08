// How a guest component is built: shared, through `include!`, by host/build.rs
// (the engine) and tests/support/guests.rs (the hostile test guests), so both build
// with the same settings into the same target directory and share dependencies.

/// Sets up `cmd`, a `cargo build` of a guest crate for wasm32-wasip2, in release.
fn guest_build_settings(cmd: &mut std::process::Command) {
    // A small, fast guest: the host compiles it once and caches the machine code.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3");
    // The outer build's flags and wrappers target the host, not wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
}

# trustlog tasks (https://github.com/casey/just); each is a plain cargo command too.

# Build the host and its embedded component (release).
build:
    cargo build --release

# Run every test: guest logic, adapters, engine and end to end.
test:
    cargo test --workspace

# What CI runs on a fresh clone.
ci:
    bash .ci/run

# Record 1,000 sample operations, deliver them, print the status.
demo:
    cargo run --release -- demo

# Lints, warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings
    cargo fmt --all -- --check

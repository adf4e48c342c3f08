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

# DESIGN.md §7's references beside trustlog, in one run on this machine: trustlog
# (ledger, then NATS JetStream) with its minimal keyset loop, graphile-worker and
# pg-boss, all on PostgreSQL and the same number of operations or jobs. Needs Node.
bench-references ops="100000" db="postgres://postgres@127.0.0.1:5432/postgres":
    cargo build --release
    npm ci --prefix tests/reference --no-audit --no-fund --silent
    mkdir -p target/bench
    target/release/trustlog bench --db '{{db}}' --publisher ledger://target/bench/references.ledger --ops {{ops}} --batch 1000 --latency-ops 0 --reference --rounds 3 --json | tail -1 > target/bench/trustlog-ledger.json
    target/release/trustlog bench --db '{{db}}' --publisher 'nats://127.0.0.1:4222?stream=TRUSTLOG_BENCH&subject=trustlog.bench' --ops {{ops}} --batch 1000 --latency-ops 0 --rounds 3 --json | tail -1 > target/bench/trustlog-nats.json
    node tests/reference/graphile-worker.mjs --db '{{db}}' --jobs {{ops}} | tail -1 > target/bench/graphile-worker.json
    node tests/reference/graphile-worker.mjs --db '{{db}}' --jobs {{ops}} --batching off --concurrency 10 | tail -1 > target/bench/graphile-worker-unbatched.json
    node tests/reference/pg-boss.mjs --db '{{db}}' --jobs {{ops}} | tail -1 > target/bench/pg-boss.json
    jq -rs -f tests/reference/ratios.jq target/bench/trustlog-ledger.json target/bench/trustlog-nats.json target/bench/graphile-worker.json target/bench/graphile-worker-unbatched.json target/bench/pg-boss.json

# BENCHMARKS.md's wasm-against-native table in one run: SQLite, PostgreSQL and MariaDB,
# each with the ledger and with NATS JetStream, then PostgreSQL + ledger at batch 100;
# both engines, `rounds` rounds each. Prints the table; the JSON lines stay in target/bench.
bench-engines ops="100000" rounds="3" pg="postgres://postgres@127.0.0.1:5432/postgres" mariadb="mysql://root@127.0.0.1:3306/test" nats="nats://127.0.0.1:4222?stream=TRUSTLOG_BENCH&subject=trustlog.bench":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release --quiet
    mkdir -p target/bench
    out=target/bench/engines.jsonl
    : > "$out"
    run() { cargo run --release --quiet -- bench --ops {{ops}} --latency-ops 0 --engine both --rounds {{rounds}} --json "$@" | tail -1 >> "$out"; }
    for db in "sqlite://$PWD/target/bench/engines.db" '{{pg}}' '{{mariadb}}'; do
        run --db "$db" --publisher "ledger://$PWD/target/bench/engines.ledger" --batch 1000
        run --db "$db" --publisher '{{nats}}' --batch 1000
    done
    run --db '{{pg}}' --publisher "ledger://$PWD/target/bench/engines.ledger" --batch 100
    jq -rs -f tests/reference/engines.jq "$out"

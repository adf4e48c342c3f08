# The table `just bench-engines` prints, one row per `trustlog bench --engine both --json`
# line: each engine's rounds in run order, the ratio of their medians, the lowest and
# highest ratio of one round's two runs, the guest time of the median runs, and the ratio
# those shares imply had host I/O taken the same time.
def kind: if startswith("sqlite") then "SQLite" elif startswith("postgres") then "PostgreSQL"
  elif startswith("mysql") or startswith("mariadb") then "MariaDB" else . end;
def publisher: if startswith("ledger") then "ledger" elif startswith("nats") then "NATS JetStream" else . end;
def rates($engine): [.runs[] | select(.engine == $engine) | .ops_per_sec | round | tostring] | join(" / ");
def share($engine): [.runs[] | select(.engine == $engine)] | sort_by(.ops_per_sec)
  | .[(length / 2 | floor)].guest_time_share * 1000 | round / 10 | tostring + "%";
def spread: (.wasm_over_native_by_round // []) | if length > 0 then "\(min)–\(max)" else "" end;
"database, publisher, batch | wasm ops/s | native ops/s | wasm / native | one round's, lowest–highest | guest time, wasm / native | wasm / native at equal I/O",
"---|---|---|---|---|---|---",
(.[] | "\(.db | kind), \(.publisher | publisher), \(.batch) | \(rates("wasm")) | \(rates("native")) | \(.wasm_over_native) | \(spread) | \(share("wasm")) / \(share("native")) | \(.wasm_over_native_at_equal_io)"),
"configurations at or above 0.9: \([.[] | select(.wasm_over_native >= 0.9)] | length) of \(length)"

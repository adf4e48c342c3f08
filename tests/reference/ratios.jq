# The table `just bench-references` prints: each reference's rate, and trustlog's
# (with the ledger, then with NATS JetStream) over it. Input: the five JSON lines
# in the recipe's order.
. as [$ledger, $nats, $graphile, $graphile_unbatched, $pgboss]
| [
    ["minimal keyset loop (same run as the ledger figure)", $ledger.reference.rows_per_sec],
    ["graphile-worker \($graphile.version), perfTest settings", $graphile.jobs_per_sec],
    ["graphile-worker \($graphile_unbatched.version), unbatched, concurrency 10", $graphile_unbatched.jobs_per_sec],
    ["pg-boss \($pgboss.version)", $pgboss.jobs_per_sec]
  ] as $references
| "trustlog + ledger: \($ledger.ops_per_sec) ops/s; trustlog + NATS JetStream: \($nats.ops_per_sec) ops/s (medians of \($ledger.rounds) rounds)",
  "reference | its rate | trustlog + ledger over it | trustlog + NATS over it",
  ($references[] | "\(.[0]) | \(.[1]) | \((($ledger.ops_per_sec / .[1]) * 100 | round) / 100) | \((($nats.ops_per_sec / .[1]) * 100 | round) / 100)")

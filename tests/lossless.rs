//! DESIGN.md §4 as tests that would catch a regression: nothing is lost when the
//! host is stopped in the middle of a drain.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

const T0: i64 = 1_764_000_000_000_000;

#[test]
fn sigterm_during_a_large_drain_returns_within_5_s_and_loses_nothing() {
    const N: usize = 50_000;
    let s = Scratch::new();
    let (db, ledger) = (s.db_url(), s.ledger_url());
    run_ok(
        &["record", "--db", &db, "--publisher", &ledger],
        &op_lines("drain", N, |i| T0 + i as i64),
    );
    let child = bin()
        .args(["serve", "--db", &db, "--publisher", &ledger])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marked_before = block_on(async {
        let pool = s.pool().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let marked = count_status(&pool, "TRUSTLOGGED").await;
            if marked >= 2_000 {
                return marked;
            }
            assert!(Instant::now() < deadline, "the drain never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let asked = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    assert!(
        out.status.success(),
        "serve exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let marked = block_on(async { count_status(&s.pool().await, "TRUSTLOGGED").await });
    assert!(
        (marked_before..N as i64).contains(&marked),
        "stopped part way: {marked} of {N} marked"
    );
    // Whatever was marked was confirmed: every TRUSTLOGGED op_id is in the ledger.
    let in_ledger: std::collections::BTreeSet<String> =
        ledger_op_ids(&s.ledger_path()).into_iter().collect();
    assert!(in_ledger.len() as i64 >= marked);

    run_ok(
        &[
            "serve",
            "--db",
            &db,
            "--publisher",
            &ledger,
            "--until-drained",
        ],
        "",
    );
    let st = status(&db);
    assert_eq!(
        (st["trustlogged"].as_u64(), st["not_trustlogged"].as_u64()),
        (Some(N as u64), Some(0))
    );
    run_ok(&["ledger", "verify", s.ledger_path().to_str().unwrap()], "");
    let ids = ledger_op_ids(&s.ledger_path());
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "every op_id is in the ledger");
    println!(
        "SIGTERM after {marked_before} marked: exited in {took:?}; {} duplicates in the ledger",
        ids.len() - N
    );
}

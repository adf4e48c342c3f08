//! Pure decisions: what a batch of publish results does to the database.

use crate::backoff::Next;
use crate::model::{Backoff, Micros, PublishError, RetryStatus, RetryUpdate, UnitOfWork};

/// One delivery attempt of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The op_id of the row delivered.
    pub op_id: String,
    /// Failed retries the row had before this attempt.
    pub retries_done: u32,
    /// True for the first attempt (scan or sweep), false for a retry.
    pub first: bool,
}

/// Counts of a planned unit of work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Rows the trust log confirmed.
    pub published: u32,
    /// Rows whose delivery failed and that wait for a retry.
    pub retry_scheduled: u32,
    /// Rows dead-lettered: refused for good, out of retries, or unreadable.
    pub dead_lettered: u32,
    /// The rows left as they were because the trust log could not be reached, in the
    /// order they were attempted.
    pub unavailable: Vec<String>,
    /// The first failure, or the first unavailable one when there was one.
    pub error: Option<String>,
    /// Rows dead-lettered because the host could not read them.
    pub unreadable: u32,
}

/// Turns publish results into a unit of work: confirmed rows become
/// `TRUSTLOGGED` (and lose any retry row), transient failures are scheduled
/// on the backoff, permanent ones and exhausted ones dead-letter. A row the
/// trust log could not even be reached for is left as it was: it is not its
/// fault, so it spends no retry and is due again as soon as the trust log is back.
pub fn deliveries(
    now: Micros,
    backoff: &Backoff,
    attempts: Vec<Attempt>,
    results: Vec<Result<(), PublishError>>,
) -> (UnitOfWork, Outcome) {
    let mut work = UnitOfWork {
        now,
        ..UnitOfWork::default()
    };
    let mut outcome = Outcome::default();
    let mut results = results.into_iter();
    for attempt in attempts {
        // A publisher that answers short has not confirmed the rest.
        let result = results.next().unwrap_or_else(|| {
            Err(PublishError::Transient(
                "publisher returned no result for this envelope".into(),
            ))
        });
        if let Err(e) = &result {
            let unavailable = matches!(e, PublishError::Unavailable(_));
            if outcome.error.is_none() || (unavailable && outcome.unavailable.is_empty()) {
                outcome.error = Some(format!("op_id {:?}: {e}", attempt.op_id));
            }
        }
        match result {
            Err(PublishError::Unavailable(_)) => outcome.unavailable.push(attempt.op_id),
            Ok(()) => {
                outcome.published += 1;
                if !attempt.first {
                    work.delete_retries.push(attempt.op_id.clone());
                }
                work.trustlogged.push(attempt.op_id);
            }
            Err(PublishError::Permanent(message)) => {
                outcome.dead_lettered += 1;
                let retry_count = if attempt.first {
                    attempt.retries_done
                } else {
                    attempt.retries_done + 1
                };
                work.retries.push(dead_letter(
                    now,
                    attempt,
                    retry_count,
                    format!("permanent: {message}"),
                ));
            }
            Err(PublishError::Transient(message)) => {
                match backoff.after_failure(now, attempt.retries_done, attempt.first) {
                    Next::RetryAt { at, retry_count } => {
                        outcome.retry_scheduled += 1;
                        work.retries.push(RetryUpdate {
                            op_id: attempt.op_id,
                            retry_count,
                            retry_status: if attempt.first {
                                RetryStatus::Pending
                            } else {
                                RetryStatus::Retrying
                            },
                            last_retry_at: (!attempt.first).then_some(now),
                            next_retry_at: Some(at),
                            error_message: message,
                        });
                    }
                    Next::DeadLetter { retry_count } => {
                        outcome.dead_lettered += 1;
                        work.retries
                            .push(dead_letter(now, attempt, retry_count, message));
                    }
                }
            }
        }
    }
    (work, outcome)
}

fn dead_letter(now: Micros, attempt: Attempt, retry_count: u32, message: String) -> RetryUpdate {
    RetryUpdate {
        op_id: attempt.op_id,
        retry_count,
        retry_status: RetryStatus::DeadLetter,
        last_retry_at: (!attempt.first).then_some(now),
        next_retry_at: None,
        error_message: message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000_000;

    fn first(id: &str) -> Attempt {
        Attempt {
            op_id: id.into(),
            retries_done: 0,
            first: true,
        }
    }

    #[test]
    fn confirmed_first_attempts_are_marked_and_touch_no_retry_row() {
        let (work, out) = deliveries(5, &Backoff::default(), vec![first("a")], vec![Ok(())]);
        assert_eq!(work.trustlogged, ["a"]);
        assert!(work.delete_retries.is_empty() && work.retries.is_empty());
        assert_eq!(out.published, 1);
    }

    #[test]
    fn a_first_transient_failure_is_pending_one_minute_later() {
        let (work, out) = deliveries(
            0,
            &Backoff::default(),
            vec![first("a")],
            vec![Err(PublishError::Transient("down".into()))],
        );
        assert_eq!(out.retry_scheduled, 1);
        let r = &work.retries[0];
        assert_eq!(
            (
                r.retry_status,
                r.retry_count,
                r.next_retry_at,
                r.last_retry_at
            ),
            (RetryStatus::Pending, 0, Some(MIN), None)
        );
        assert_eq!(r.error_message, "down");
    }

    #[test]
    fn a_permanent_failure_dead_letters_at_once_keeping_the_message() {
        let (work, out) = deliveries(
            0,
            &Backoff::default(),
            vec![first("a")],
            vec![Err(PublishError::Permanent("422 bad doid".into()))],
        );
        assert_eq!(out.dead_lettered, 1);
        assert_eq!(work.retries[0].retry_status, RetryStatus::DeadLetter);
        assert!(work.retries[0].error_message.contains("422 bad doid"));
    }

    #[test]
    fn a_successful_retry_deletes_its_retry_row() {
        let a = Attempt {
            op_id: "a".into(),
            retries_done: 3,
            first: false,
        };
        let (work, _) = deliveries(0, &Backoff::default(), vec![a], vec![Ok(())]);
        assert_eq!(work.trustlogged, ["a"]);
        assert_eq!(work.delete_retries, ["a"]);
    }

    #[test]
    fn the_fifth_failed_retry_dead_letters() {
        let a = Attempt {
            op_id: "a".into(),
            retries_done: 4,
            first: false,
        };
        let (work, out) = deliveries(
            9,
            &Backoff::default(),
            vec![a],
            vec![Err(PublishError::Transient("x".into()))],
        );
        assert_eq!(out.dead_lettered, 1);
        assert_eq!(
            (
                work.retries[0].retry_status,
                work.retries[0].retry_count,
                work.retries[0].last_retry_at
            ),
            (RetryStatus::DeadLetter, 5, Some(9))
        );
    }

    #[test]
    fn missing_results_count_as_transient_failures() {
        let (work, out) = deliveries(
            0,
            &Backoff::default(),
            vec![first("a"), first("b")],
            vec![Ok(())],
        );
        assert_eq!((out.published, out.retry_scheduled), (1, 1));
        assert_eq!(work.retries[0].op_id, "b");
    }

    #[test]
    fn an_unreachable_trust_log_leaves_the_row_and_its_retry_budget_untouched() {
        let retry = Attempt {
            op_id: "r".into(),
            retries_done: 4,
            first: false,
        };
        let (work, out) = deliveries(
            9,
            &Backoff::default(),
            vec![first("a"), retry],
            vec![
                Err(PublishError::Unavailable("connection refused".into())),
                Err(PublishError::Unavailable("connection refused".into())),
            ],
        );
        assert_eq!(out.unavailable, ["a", "r"]);
        assert!(out.error.unwrap().contains("connection refused"));
        assert_eq!(
            (out.published, out.retry_scheduled, out.dead_lettered),
            (0, 0, 0)
        );
        assert_eq!(
            work,
            UnitOfWork {
                now: 9,
                ..UnitOfWork::default()
            }
        );
    }

    proptest! {
        // Every attempted row ends in exactly one place: marked, in the retry table, or
        // left untouched because the trust log could not be reached.
        #[test]
        fn every_attempt_lands_exactly_once(kinds in proptest::collection::vec(0u8..4, 0..200), done in 0u32..8) {
            let attempts: Vec<Attempt> = (0..kinds.len()).map(|i| Attempt { op_id: format!("op{i}"), retries_done: done, first: i % 2 == 0 }).collect();
            let results = kinds.iter().map(|k| match k {
                0 => Ok(()),
                1 => Err(PublishError::Transient("t".into())),
                2 => Err(PublishError::Permanent("p".into())),
                _ => Err(PublishError::Unavailable("u".into())),
            }).collect();
            let (work, out) = deliveries(0, &Backoff::default(), attempts, results);
            prop_assert_eq!(work.trustlogged.len() + work.retries.len() + out.unavailable.len(), kinds.len());
            prop_assert_eq!((out.published + out.retry_scheduled + out.dead_lettered) as usize + out.unavailable.len(), kinds.len());
            for r in &work.retries { prop_assert!(!work.trustlogged.contains(&r.op_id)); }
            for id in &out.unavailable {
                prop_assert!(!work.trustlogged.contains(id));
                prop_assert!(work.retries.iter().all(|r| &r.op_id != id));
                prop_assert!(!work.delete_retries.contains(id));
            }
        }
    }
}

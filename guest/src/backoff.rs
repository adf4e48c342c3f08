//! The retry schedule: exponential backoff, capped, then dead letter.
//!
//! Failure `n` (1 = the first delivery attempt failed) schedules retry `n`
//! after `min(base * factor^(n-1), cap)`. With the seed's defaults that is
//! 1m, 2m, 4m, 8m, 16m; the 5th failed retry dead-letters.

use crate::model::{Backoff, FieldError, Micros};

const MINUTE: u64 = 60_000_000;

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_micros: MINUTE,
            factor: 2,
            cap_micros: 16 * MINUTE,
            max_retries: 5,
        }
    }
}

/// What to do after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time; the row then holds this many failed retries.
    RetryAt {
        /// When the retry is due.
        at: Micros,
        /// Failed retries the row holds meanwhile (0 after a failed first delivery).
        retry_count: u32,
    },
    /// Give up: the row has used up its retries.
    DeadLetter {
        /// Failed retries the row holds as it is dead-lettered.
        retry_count: u32,
    },
}

impl Backoff {
    /// Checks the settings, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.base_micros == 0 {
            return Err(FieldError::new("backoff.base", "must be greater than zero"));
        }
        if self.factor == 0 {
            return Err(FieldError::new("backoff.factor", "must be at least 1"));
        }
        if self.cap_micros < self.base_micros {
            return Err(FieldError::new(
                "backoff.cap",
                "must not be smaller than backoff.base",
            ));
        }
        Ok(())
    }

    /// The delay before retry `n` (1-based), capped; saturates instead of overflowing.
    pub fn delay(&self, n: u32) -> u64 {
        let exp = n.saturating_sub(1);
        let mut delay = self.base_micros;
        for _ in 0..exp {
            delay = delay.saturating_mul(u64::from(self.factor));
            if delay >= self.cap_micros {
                return self.cap_micros;
            }
        }
        delay.min(self.cap_micros)
    }

    /// The decision after a transient failure at `now` of a row that had
    /// `retries_done` failed retries before (0 for the first delivery attempt).
    pub fn after_failure(&self, now: Micros, retries_done: u32, first_attempt: bool) -> Next {
        // The first attempt is not a retry: it schedules retry 1 and leaves the count at 0.
        let retry_count = if first_attempt {
            retries_done
        } else {
            retries_done.saturating_add(1)
        };
        if retry_count >= self.max_retries {
            return Next::DeadLetter { retry_count };
        }
        let delay = i64::try_from(self.delay(retry_count + 1)).unwrap_or(i64::MAX);
        Next::RetryAt {
            at: now.saturating_add(delay),
            retry_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_the_seeds_schedule() {
        let b = Backoff::default();
        let minutes: Vec<u64> = (1..=5).map(|n| b.delay(n) / MINUTE).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16]);
        assert_eq!(b.max_retries, 5);
    }

    #[test]
    fn default_walk_retries_five_times_then_dead_letters() {
        let b = Backoff::default();
        let mut now = 0;
        let mut next = b.after_failure(now, 0, true);
        let mut waits = vec![];
        while let Next::RetryAt { at, retry_count } = next {
            waits.push((at - now) as u64 / MINUTE);
            now = at;
            next = b.after_failure(now, retry_count, false);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(next, Next::DeadLetter { retry_count: 5 });
    }

    #[test]
    fn zero_max_retries_dead_letters_the_first_failure() {
        let b = Backoff {
            max_retries: 0,
            ..Backoff::default()
        };
        assert_eq!(
            b.after_failure(7, 0, true),
            Next::DeadLetter { retry_count: 0 }
        );
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let bad = Backoff {
            factor: 0,
            ..Backoff::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "backoff.factor");
        let bad = Backoff {
            cap_micros: 1,
            ..Backoff::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "backoff.cap");
    }

    fn backoffs() -> impl Strategy<Value = Backoff> {
        (1u64..10_000_000_000, 1u32..10, 0u64..u64::MAX / 2, 0u32..20).prop_map(
            |(base, factor, extra, max)| Backoff {
                base_micros: base,
                factor,
                cap_micros: base.saturating_add(extra),
                max_retries: max,
            },
        )
    }

    proptest! {
        #[test]
        fn delay_is_monotone_and_capped(b in backoffs(), n in 1u32..200) {
            prop_assert!(b.delay(n) <= b.delay(n + 1));
            prop_assert!(b.delay(n) <= b.cap_micros);
            prop_assert!(b.delay(n) >= b.base_micros.min(b.cap_micros));
        }

        #[test]
        fn every_failure_either_moves_later_or_dead_letters(b in backoffs(), now in -1_000_000_000_000i64..1_000_000_000_000_000, done in 0u32..30) {
            match b.after_failure(now, done, false) {
                Next::RetryAt { at, retry_count } => {
                    prop_assert!(at > now);
                    prop_assert_eq!(retry_count, done + 1);
                    prop_assert!(retry_count < b.max_retries);
                }
                Next::DeadLetter { retry_count } => prop_assert!(retry_count >= b.max_retries),
            }
        }
    }
}

//! Order statistics of measured samples.

/// The `p`-th percentile (0–100) by nearest rank; `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `samples` sorted ascending (NaN-free input assumed: they are measured durations).
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    samples
}

/// The item whose `key` is the median (the lower one of an even count); `None` for none.
pub fn median_by<T>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> f64) -> Option<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len().checked_sub(1)? / 2;
    items.into_iter().nth(middle)
}

/// Rounds to `digits` decimals, so reports do not print measurement noise.
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The throughput ratio two runs' guest time shares imply if their host I/O took the
/// same time: each run spent `1 - share` of its drain in the host, so the rates
/// compare as `(1 - a) / (1 - b)`. It isolates the engine's cost from I/O noise.
pub fn ratio_at_equal_io(share_a: f64, share_b: f64) -> Option<f64> {
    let valid = |x: f64| (0.0..1.0).contains(&x);
    (valid(share_a) && valid(share_b)).then(|| (1.0 - share_a) / (1.0 - share_b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_median_item_is_the_middle_one_by_key_and_the_lower_of_two() {
        assert_eq!(median_by([3.0, 1.0, 2.0], |x| *x), Some(2.0));
        assert_eq!(median_by([4.0, 1.0, 3.0, 2.0], |x| *x), Some(2.0));
        assert_eq!(
            median_by(["bb", "a", "ccc"], |s| s.len() as f64),
            Some("bb")
        );
        assert_eq!(median_by(Vec::<f64>::new(), |x| *x), None);
    }

    #[test]
    fn equal_io_ratios_follow_the_host_share_of_each_run() {
        // wasm spent 20% of its drain in the guest, native 10%: with the same 0.8 s
        // of host I/O, wasm takes 1.0 s and native 0.889 s.
        let r = ratio_at_equal_io(0.2, 0.1).unwrap();
        assert!((r - 0.8 / 0.9).abs() < 1e-12, "{r}");
        assert_eq!(ratio_at_equal_io(0.1, 0.1), Some(1.0));
        assert_eq!(ratio_at_equal_io(1.0, 0.1), None, "no host time at all");
        assert_eq!(ratio_at_equal_io(0.1, -0.5), None);
        assert_eq!(ratio_at_equal_io(f64::NAN, 0.1), None);
    }

    #[test]
    fn nearest_rank_on_a_known_list() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), Some(50.0));
        assert_eq!(percentile(&xs, 99.0), Some(99.0));
        assert_eq!(percentile(&xs, 100.0), Some(100.0));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    proptest! {
        #[test]
        fn a_percentile_is_a_sample_and_grows_with_p(xs in prop::collection::vec(0.0f64..1e6, 1..200), p in 0.0f64..100.0, q in 0.0f64..100.0) {
            let xs = sorted(xs);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let a = percentile(&xs, lo).unwrap();
            let b = percentile(&xs, hi).unwrap();
            prop_assert!(xs.contains(&a));
            prop_assert!(a <= b);
        }
    }
}

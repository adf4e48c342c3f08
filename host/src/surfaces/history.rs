//! The last hour of one tenant's deliveries, kept in memory for the console's charts:
//! how many rows were delivered and how long each waited, in 10-second buckets.
//!
//! Prometheus keeps the long history; this keeps a short one that needs no scraper, in
//! bounded memory: 360 buckets of a count and a latency histogram of fixed size.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Seconds per bucket.
pub const INTERVAL_SECONDS: i64 = 10;
/// Buckets kept: one hour.
const BUCKETS: usize = 360;
/// Latency classes: class `k` holds latencies below `LOWEST_MICROS * 2^(k/4)`, so a
/// percentile is known within a factor of 2^(1/4) (19%), from 1 ms to about 12 days.
const CLASSES: usize = 80;
const LOWEST_MICROS: f64 = 1_000.0;

#[derive(Debug, Clone)]
struct Bucket {
    start: i64,
    delivered: u64,
    latency: [u32; CLASSES],
}

/// One tenant's recent deliveries.
#[derive(Debug, Default)]
pub struct DeliveryHistory {
    buckets: Mutex<VecDeque<Bucket>>,
}

fn class_of(micros: i64) -> usize {
    let m = micros.max(0) as f64;
    if m < LOWEST_MICROS {
        return 0;
    }
    ((4.0 * (m / LOWEST_MICROS).log2()).floor() as usize + 1).min(CLASSES - 1)
}

/// The upper bound of a class, in seconds: what a percentile falling in it is shown as.
fn class_upper_seconds(class: usize) -> f64 {
    LOWEST_MICROS * 2f64.powf(class as f64 / 4.0) / 1e6
}

impl DeliveryHistory {
    /// Counts rows delivered at `now_micros`, each with how long it waited since its
    /// timestamp.
    pub fn record(&self, now_micros: i64, latencies_micros: &[i64]) {
        if latencies_micros.is_empty() {
            return;
        }
        let start = now_micros.div_euclid(1_000_000 * INTERVAL_SECONDS) * INTERVAL_SECONDS;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.back().is_none_or(|b| b.start < start) {
            buckets.push_back(Bucket {
                start,
                delivered: 0,
                latency: [0; CLASSES],
            });
            while buckets.len() > BUCKETS {
                buckets.pop_front();
            }
        }
        // A clock stepped back lands in the newest bucket rather than reordering them.
        let bucket = buckets.back_mut().expect("a bucket was just ensured");
        bucket.delivered += latencies_micros.len() as u64;
        for &l in latencies_micros {
            bucket.latency[class_of(l)] = bucket.latency[class_of(l)].saturating_add(1);
        }
    }

    /// The hour before `now_micros`, oldest first, one point per interval (empty ones
    /// included, so a chart shows the gaps): `at`, `delivered`, `per_second` and the
    /// latency's p50 and p99 in seconds (`null` where nothing was delivered).
    pub fn points(&self, now_micros: i64) -> Value {
        let newest = now_micros.div_euclid(1_000_000 * INTERVAL_SECONDS) * INTERVAL_SECONDS;
        let oldest = newest - (BUCKETS as i64 - 1) * INTERVAL_SECONDS;
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = buckets.iter().filter(|b| b.start >= oldest).peekable();
        let mut points = Vec::with_capacity(BUCKETS);
        let mut start = oldest;
        while start <= newest {
            let bucket = kept.next_if(|b| b.start <= start);
            let at = crate::surfaces::ingest::format_timestamp(start * 1_000_000);
            points.push(match bucket {
                Some(b) => json!({
                    "at": at,
                    "delivered": b.delivered,
                    "per_second": b.delivered as f64 / INTERVAL_SECONDS as f64,
                    "latency_p50_seconds": percentile(&b.latency, b.delivered, 0.50),
                    "latency_p99_seconds": percentile(&b.latency, b.delivered, 0.99),
                }),
                None => json!({
                    "at": at, "delivered": 0, "per_second": 0.0,
                    "latency_p50_seconds": null, "latency_p99_seconds": null,
                }),
            });
            start += INTERVAL_SECONDS;
        }
        json!({"interval_seconds": INTERVAL_SECONDS, "points": points})
    }
}

fn percentile(classes: &[u32; CLASSES], total: u64, q: f64) -> Option<f64> {
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0u64;
    classes.iter().enumerate().find_map(|(k, &n)| {
        seen += u64::from(n);
        (seen >= rank).then(|| class_upper_seconds(k))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_000_000_000_000;

    fn point(v: &Value, i: usize) -> &Value {
        &v["points"][i]
    }

    #[test]
    fn an_hour_of_ten_second_points_ends_at_now_with_the_deliveries_in_their_bucket() {
        let h = DeliveryHistory::default();
        h.record(T - 25_000_000, &[2_000; 30]);
        h.record(T, &[5_000, 5_000, 1_000_000]);
        let v = h.points(T);
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 360);
        assert_eq!(point(&v, 359)["delivered"], 3);
        // 25 s before a bucket boundary is three buckets back (its bucket starts 30 s before).
        assert_eq!(point(&v, 356)["delivered"], 30);
        assert_eq!(point(&v, 356)["per_second"], 3.0);
        assert_eq!(point(&v, 357)["delivered"], 0);
        assert_eq!(point(&v, 358)["delivered"], 0);
        assert!(point(&v, 358)["latency_p50_seconds"].is_null());
    }

    #[test]
    fn percentiles_are_within_a_fifth_above_the_true_value() {
        let h = DeliveryHistory::default();
        let mut latencies: Vec<i64> = (1..=1000).map(|i| i * 1_000).collect();
        latencies.reverse();
        h.record(T, &latencies);
        let v = h.points(T);
        let p50 = point(&v, 359)["latency_p50_seconds"].as_f64().unwrap();
        let p99 = point(&v, 359)["latency_p99_seconds"].as_f64().unwrap();
        assert!((0.5..=0.5 * 1.19).contains(&p50), "p50 {p50}");
        assert!((0.99..=0.99 * 1.19).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn buckets_older_than_an_hour_are_dropped_and_memory_stays_bounded() {
        let h = DeliveryHistory::default();
        for i in 0..2_000 {
            h.record(T + i * 10_000_000, &[1_000]);
        }
        assert_eq!(h.buckets.lock().unwrap().len(), BUCKETS);
        let v = h.points(T + 1_999 * 10_000_000);
        assert!(
            v["points"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["delivered"] == 1)
        );
    }
}

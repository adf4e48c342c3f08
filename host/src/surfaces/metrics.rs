//! Prometheus metrics: one registry per host, every series labelled by tenant.
//!
//! The four monitoring gauges are set from a status snapshot when `/metrics` is
//! scraped, so they always match the database; the counters and histograms are fed
//! by the worker and by the guest's imports as deliveries happen.

use std::sync::Arc;
use std::time::Duration;

use crate::surfaces::history::DeliveryHistory;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use trustlog_guest::model::{StatusReport, TickReport};

/// Why the registry could not be built or rendered.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric of one host.
pub struct Metrics {
    registry: Registry,
    untrustlogged: IntGaugeVec,
    cursor_lag: GaugeVec,
    retry_queue: IntGaugeVec,
    dead_letters: IntGaugeVec,
    published: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounterVec,
    unreadable: IntCounterVec,
    tick_errors: IntCounterVec,
    publish_latency: HistogramVec,
    tick_duration: HistogramVec,
    delivery_latency: HistogramVec,
    tenant_up: IntGaugeVec,
    guest_traps: IntCounterVec,
    limit_exceeded: IntCounterVec,
    tenant_restarts: IntCounterVec,
    guest_log_dropped: IntCounterVec,
    late_row_depth: HistogramVec,
    outage: IntGaugeVec,
    outages: IntCounterVec,
    lease_held: IntGaugeVec,
    takeovers: IntCounterVec,
    redelivered: IntCounterVec,
    admin_actions: IntCounterVec,
    unauthenticated: IntCounter,
    /// Each tenant's last hour of deliveries, for the console; kept across restarts of
    /// the tenant within this process.
    histories: std::sync::Mutex<std::collections::HashMap<String, Arc<DeliveryHistory>>>,
}

/// Batch-sized operations: from half a millisecond to half a minute.
fn batch_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 17).expect("constant, valid buckets")
}

/// Insert to `TRUSTLOGGED`: milliseconds when the scan keeps up, up to hours
/// for rows that went through the retry schedule.
fn delivery_buckets() -> Vec<f64> {
    vec![
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        3600.0, 14400.0,
    ]
}

impl Metrics {
    /// A fresh registry holding every trustlog metric.
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        let registry = Registry::new();
        let tenant = &["tenant"];
        let tick = &["tenant", "tick"];
        let m = Metrics {
            untrustlogged: IntGaugeVec::new(
                Opts::new(
                    "trustlog_untrustlogged_rows",
                    "Operations stored as NOT_TRUSTLOGGED (waiting, retrying or dead-lettered).",
                ),
                tenant,
            )?,
            cursor_lag: GaugeVec::new(
                Opts::new(
                    "trustlog_cursor_lag_seconds",
                    "Age of the oldest operation waiting for the scan or the sweep.",
                ),
                tenant,
            )?,
            retry_queue: IntGaugeVec::new(
                Opts::new(
                    "trustlog_retry_queue_length",
                    "Retry rows that are PENDING or RETRYING.",
                ),
                tenant,
            )?,
            dead_letters: IntGaugeVec::new(
                Opts::new("trustlog_dead_letters", "Retry rows in DEAD_LETTER."),
                tenant,
            )?,
            published: IntCounterVec::new(
                Opts::new(
                    "trustlog_published_total",
                    "Operations the publisher confirmed and the database marked TRUSTLOGGED.",
                ),
                tick,
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "trustlog_publish_failed_total",
                    "Deliveries that failed transiently and were scheduled for a retry.",
                ),
                tick,
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new("trustlog_dead_lettered_total", "Operations dead-lettered."),
                tick,
            )?,
            unreadable: IntCounterVec::new(
                Opts::new(
                    "trustlog_unreadable_rows_total",
                    "Rows dead-lettered because the host could not read them (a value of the \
                     wrong type or in no known form, text that is not UTF-8); also counted in \
                     trustlog_dead_lettered_total.",
                ),
                tick,
            )?,
            tick_errors: IntCounterVec::new(
                Opts::new(
                    "trustlog_tick_errors_total",
                    "Ticks that failed as a whole (database unavailable, guest trap).",
                ),
                tick,
            )?,
            publish_latency: HistogramVec::new(
                HistogramOpts::new(
                    "trustlog_publish_latency_seconds",
                    "Time to publish one batch and receive every confirmation.",
                )
                .buckets(batch_buckets()),
                tenant,
            )?,
            tick_duration: HistogramVec::new(
                HistogramOpts::new(
                    "trustlog_tick_duration_seconds",
                    "Time of one tick: read, publish and apply one batch.",
                )
                .buckets(batch_buckets()),
                tick,
            )?,
            delivery_latency: HistogramVec::new(
                HistogramOpts::new(
                    "trustlog_delivery_latency_seconds",
                    "From the operation's timestamp to the commit that marked it TRUSTLOGGED.",
                )
                .buckets(delivery_buckets()),
                tenant,
            )?,
            tenant_up: IntGaugeVec::new(
                Opts::new(
                    "trustlog_tenant_up",
                    "1 while the tenant's worker runs, 0 once it was stopped (a limit exceeded).",
                ),
                tenant,
            )?,
            guest_traps: IntCounterVec::new(
                Opts::new(
                    "trustlog_guest_traps_total",
                    "Calls into the guest that trapped; each cost its instance.",
                ),
                tenant,
            )?,
            limit_exceeded: IntCounterVec::new(
                Opts::new(
                    "trustlog_limit_exceeded_total",
                    "Calls into the guest stopped by a limit (memory, table, cpu).",
                ),
                &["tenant", "limit"],
            )?,
            tenant_restarts: IntCounterVec::new(
                Opts::new(
                    "trustlog_tenant_restarts_total",
                    "Times a tenant stopped by a limit was started again after its pause.",
                ),
                tenant,
            )?,
            guest_log_dropped: IntCounterVec::new(
                Opts::new(
                    "trustlog_guest_log_dropped_total",
                    "Guest log lines dropped over the tenant's log_lines_per_sec.",
                ),
                tenant,
            )?,
            late_row_depth: HistogramVec::new(
                HistogramOpts::new(
                    "trustlog_late_row_depth_seconds",
                    "How far behind the cursor the catch-up or the sweep found a row that \
                     committed late (the cursor's timestamp minus the row's): what the \
                     longest transactions of the writers take.",
                )
                .buckets(delivery_buckets()),
                tick,
            )?,
            outage: IntGaugeVec::new(
                Opts::new(
                    "trustlog_outage",
                    "1 while delivery is paused because the publisher or the database \
                     cannot be reached (label `of`).",
                ),
                &["tenant", "of"],
            )?,
            outages: IntCounterVec::new(
                Opts::new(
                    "trustlog_outages_total",
                    "Outages of the publisher or the database that paused delivery.",
                ),
                &["tenant", "of"],
            )?,
            lease_held: IntGaugeVec::new(
                Opts::new(
                    "trustlog_lease_held",
                    "1 while this host holds the tenant's lease and delivers, 0 while it \
                     stands by for another host.",
                ),
                tenant,
            )?,
            takeovers: IntCounterVec::new(
                Opts::new(
                    "trustlog_lease_takeovers_total",
                    "Leases taken over from a host that stopped renewing without releasing.",
                ),
                tenant,
            )?,
            redelivered: IntCounterVec::new(
                Opts::new(
                    "trustlog_redelivered_total",
                    "Envelopes published again that an earlier attempt may already have \
                     delivered: after a takeover from a host that died, a cursor conflict, \
                     or a commit that failed after its publish.",
                ),
                tenant,
            )?,
            admin_actions: IntCounterVec::new(
                Opts::new(
                    "trustlog_admin_actions_total",
                    "Admin actions asked of the HTTP API, by tenant, action and outcome \
                     (ok, refused, failed).",
                ),
                &["tenant", "action", "outcome"],
            )?,
            unauthenticated: IntCounter::new(
                "trustlog_http_unauthenticated_total",
                "HTTP requests refused for want of a valid credential (401).",
            )?,
            registry,
            histories: Default::default(),
        };
        m.registry.register(Box::new(m.untrustlogged.clone()))?;
        m.registry.register(Box::new(m.cursor_lag.clone()))?;
        m.registry.register(Box::new(m.retry_queue.clone()))?;
        m.registry.register(Box::new(m.dead_letters.clone()))?;
        m.registry.register(Box::new(m.published.clone()))?;
        m.registry.register(Box::new(m.failed.clone()))?;
        m.registry.register(Box::new(m.dead_lettered.clone()))?;
        m.registry.register(Box::new(m.unreadable.clone()))?;
        m.registry.register(Box::new(m.tick_errors.clone()))?;
        m.registry.register(Box::new(m.publish_latency.clone()))?;
        m.registry.register(Box::new(m.tick_duration.clone()))?;
        m.registry.register(Box::new(m.delivery_latency.clone()))?;
        m.registry.register(Box::new(m.tenant_up.clone()))?;
        m.registry.register(Box::new(m.guest_traps.clone()))?;
        m.registry.register(Box::new(m.limit_exceeded.clone()))?;
        m.registry.register(Box::new(m.tenant_restarts.clone()))?;
        m.registry.register(Box::new(m.guest_log_dropped.clone()))?;
        m.registry.register(Box::new(m.late_row_depth.clone()))?;
        m.registry.register(Box::new(m.outage.clone()))?;
        m.registry.register(Box::new(m.outages.clone()))?;
        m.registry.register(Box::new(m.lease_held.clone()))?;
        m.registry.register(Box::new(m.takeovers.clone()))?;
        m.registry.register(Box::new(m.redelivered.clone()))?;
        m.registry.register(Box::new(m.admin_actions.clone()))?;
        m.registry.register(Box::new(m.unauthenticated.clone()))?;
        Ok(Arc::new(m))
    }

    /// The handles of one tenant.
    pub fn tenant(self: &Arc<Self>, id: &str) -> TenantMetrics {
        // Touch every series so a scrape lists them at 0 before the first event.
        let t = &[id];
        self.untrustlogged.with_label_values(t);
        self.cursor_lag.with_label_values(t);
        self.retry_queue.with_label_values(t);
        self.dead_letters.with_label_values(t);
        self.publish_latency.with_label_values(t);
        self.delivery_latency.with_label_values(t);
        self.tenant_up.with_label_values(t).set(1);
        self.guest_traps.with_label_values(t);
        self.tenant_restarts.with_label_values(t);
        self.guest_log_dropped.with_label_values(t);
        self.lease_held.with_label_values(t);
        self.takeovers.with_label_values(t);
        self.redelivered.with_label_values(t);
        for of in OUTAGE_KINDS {
            self.outage.with_label_values(&[id, of]);
            self.outages.with_label_values(&[id, of]);
        }
        for limit in LIMIT_KINDS {
            self.limit_exceeded.with_label_values(&[id, limit]);
        }
        for kind in TICK_KINDS {
            let labels = &[id, kind];
            self.published.with_label_values(labels);
            self.failed.with_label_values(labels);
            self.dead_lettered.with_label_values(labels);
            self.unreadable.with_label_values(labels);
            self.tick_errors.with_label_values(labels);
        }
        TenantMetrics {
            metrics: self.clone(),
            tenant: Arc::from(id),
            history: self.history(id),
        }
    }

    /// The last hour of `tenant`'s deliveries (empty for a tenant not seen yet).
    pub fn history(&self, tenant: &str) -> Arc<DeliveryHistory> {
        self.histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    /// Marks a tenant that is not running (waiting to start): `trustlog_tenant_up` 0.
    pub fn tenant_down(&self, id: &str) {
        self.tenant_up.with_label_values(&[id]).set(0);
    }

    /// Drops every series of a tenant that was removed from the host.
    pub fn remove_tenant(&self, id: &str) {
        let t = &[id];
        let _ = self.untrustlogged.remove_label_values(t);
        let _ = self.cursor_lag.remove_label_values(t);
        let _ = self.retry_queue.remove_label_values(t);
        let _ = self.dead_letters.remove_label_values(t);
        let _ = self.publish_latency.remove_label_values(t);
        let _ = self.delivery_latency.remove_label_values(t);
        let _ = self.tenant_up.remove_label_values(t);
        let _ = self.guest_traps.remove_label_values(t);
        let _ = self.tenant_restarts.remove_label_values(t);
        let _ = self.guest_log_dropped.remove_label_values(t);
        let _ = self.lease_held.remove_label_values(t);
        let _ = self.takeovers.remove_label_values(t);
        let _ = self.redelivered.remove_label_values(t);
        for of in OUTAGE_KINDS {
            let _ = self.outage.remove_label_values(&[id, of]);
            let _ = self.outages.remove_label_values(&[id, of]);
        }
        for limit in LIMIT_KINDS {
            let _ = self.limit_exceeded.remove_label_values(&[id, limit]);
        }
        for kind in TICK_KINDS {
            let labels = &[id, kind];
            let _ = self.published.remove_label_values(labels);
            let _ = self.failed.remove_label_values(labels);
            let _ = self.dead_lettered.remove_label_values(labels);
            let _ = self.unreadable.remove_label_values(labels);
            let _ = self.tick_errors.remove_label_values(labels);
            let _ = self.tick_duration.remove_label_values(labels);
            let _ = self.late_row_depth.remove_label_values(labels);
        }
    }

    /// Counts one admin action asked of the API (`tenant` is "" for the host's own).
    pub fn admin_action(&self, tenant: &str, action: &str, outcome: &str) {
        self.admin_actions
            .with_label_values(&[tenant, action, outcome])
            .inc();
    }

    /// Counts one request refused for want of a valid credential.
    pub fn unauthenticated(&self) {
        self.unauthenticated.inc();
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, MetricsError> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

/// The tick kinds that label the per-tick series.
const TICK_KINDS: [&str; 4] = ["scan", "catch_up", "retry", "sweep"];

/// What an outage can be of, the `of` label.
const OUTAGE_KINDS: [&str; 2] = ["publisher", "database"];

/// The limits that label `trustlog_limit_exceeded_total`.
const LIMIT_KINDS: [&str; 3] = ["memory", "table", "cpu"];

/// One tenant's view of the metrics; cheap to clone.
#[derive(Clone)]
pub struct TenantMetrics {
    metrics: Arc<Metrics>,
    tenant: Arc<str>,
    history: Arc<DeliveryHistory>,
}

impl std::fmt::Debug for TenantMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantMetrics")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl TenantMetrics {
    /// Sets the monitoring gauges from a status snapshot.
    pub fn status(&self, report: &StatusReport) {
        let m = &self.metrics;
        let t = &[&*self.tenant];
        let s = &report.stats;
        m.untrustlogged
            .with_label_values(t)
            .set(gauge(s.not_trustlogged));
        m.cursor_lag
            .with_label_values(t)
            .set(report.cursor_lag_seconds);
        m.retry_queue
            .with_label_values(t)
            .set(gauge(s.retry_pending));
        m.dead_letters
            .with_label_values(t)
            .set(gauge(s.dead_letter));
    }

    /// Counts one tick's outcome and its duration.
    pub fn tick(&self, kind: &str, report: &TickReport, took: Duration) {
        let m = &self.metrics;
        let l = &[&*self.tenant, kind];
        m.published
            .with_label_values(l)
            .inc_by(u64::from(report.published));
        m.failed
            .with_label_values(l)
            .inc_by(u64::from(report.retry_scheduled));
        m.dead_lettered
            .with_label_values(l)
            .inc_by(u64::from(report.dead_lettered));
        m.unreadable
            .with_label_values(l)
            .inc_by(u64::from(report.unreadable));
        m.tick_duration
            .with_label_values(l)
            .observe(took.as_secs_f64());
    }

    /// Counts a tick that failed as a whole.
    pub fn tick_failed(&self, kind: &str, took: Duration) {
        let m = &self.metrics;
        let l = &[&*self.tenant, kind];
        m.tick_errors.with_label_values(l).inc();
        m.tick_duration
            .with_label_values(l)
            .observe(took.as_secs_f64());
    }

    /// Marks the tenant running (1) or stopped (0).
    pub fn up(&self, running: bool) {
        self.metrics
            .tenant_up
            .with_label_values(&[&*self.tenant])
            .set(i64::from(running));
    }

    /// Counts a restart of a tenant that a limit had stopped.
    pub fn restarted(&self) {
        self.metrics
            .tenant_restarts
            .with_label_values(&[&*self.tenant])
            .inc();
    }

    /// Counts a trap of the tenant's guest.
    pub fn trapped(&self) {
        self.metrics
            .guest_traps
            .with_label_values(&[&*self.tenant])
            .inc();
    }

    /// Counts a call stopped by the named limit.
    pub fn limit_exceeded(&self, limit: &str) {
        self.metrics
            .limit_exceeded
            .with_label_values(&[&*self.tenant, limit])
            .inc();
    }

    /// Counts guest log lines dropped by the rate limit.
    pub fn guest_log_dropped(&self, lines: u64) {
        self.metrics
            .guest_log_dropped
            .with_label_values(&[&*self.tenant])
            .inc_by(lines);
    }

    /// Observes one publish call.
    pub fn publish(&self, took: Duration) {
        self.metrics
            .publish_latency
            .with_label_values(&[&*self.tenant])
            .observe(took.as_secs_f64());
    }

    /// Observes how far behind the cursor the `tick` (catch_up or sweep) found rows.
    pub fn late_rows(&self, tick: &str, depths_micros: impl IntoIterator<Item = i64>) {
        let h = self
            .metrics
            .late_row_depth
            .with_label_values(&[&*self.tenant, tick]);
        for micros in depths_micros {
            h.observe(micros.max(0) as f64 / 1e6);
        }
    }

    /// Marks an outage of `of` as begun (true) or over (false).
    pub fn outage(&self, of: crate::scheduling::worker::OutageOf, on: bool) {
        let l = &[&*self.tenant, of.name()];
        self.metrics.outage.with_label_values(l).set(i64::from(on));
        if on {
            self.metrics.outages.with_label_values(l).inc();
        }
    }

    /// Marks this host as holding the tenant's lease (1) or standing by (0).
    pub fn lease_held(&self, held: bool) {
        self.metrics
            .lease_held
            .with_label_values(&[&*self.tenant])
            .set(i64::from(held));
    }

    /// Counts a lease taken over from a host that did not release it.
    pub fn takeover(&self) {
        self.metrics
            .takeovers
            .with_label_values(&[&*self.tenant])
            .inc();
    }

    /// Counts envelopes that may have been published before.
    pub fn redelivered(&self, envelopes: u64) {
        self.metrics
            .redelivered
            .with_label_values(&[&*self.tenant])
            .inc_by(envelopes);
    }

    /// Observes insert→`TRUSTLOGGED` latencies, in microseconds.
    pub fn delivered(&self, latencies_micros: impl IntoIterator<Item = i64>) {
        let h = self
            .metrics
            .delivery_latency
            .with_label_values(&[&*self.tenant]);
        let latencies: Vec<i64> = latencies_micros.into_iter().collect();
        for &micros in &latencies {
            h.observe(micros.max(0) as f64 / 1e6);
        }
        self.history
            .record(crate::scheduling::clock::now_micros(), &latencies);
    }
}

fn gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustlog_guest::model::DbStats;

    #[test]
    fn a_fresh_tenant_lists_every_series_and_ticks_add_up() {
        let metrics = Metrics::new().unwrap();
        let t = metrics.tenant("a");
        t.status(&StatusReport {
            stats: DbStats {
                not_trustlogged: 7,
                retry_pending: 2,
                dead_letter: 1,
                ..DbStats::default()
            },
            cursor_lag_seconds: 1.5,
        });
        let report = TickReport {
            fetched: 4,
            published: 3,
            retry_scheduled: 1,
            ..TickReport::default()
        };
        t.tick("scan", &report, Duration::from_millis(2));
        t.tick("scan", &report, Duration::from_millis(2));
        t.delivered([1_000, 2_000_000]);
        let text = metrics.render().unwrap();
        for line in [
            "trustlog_untrustlogged_rows{tenant=\"a\"} 7",
            "trustlog_cursor_lag_seconds{tenant=\"a\"} 1.5",
            "trustlog_retry_queue_length{tenant=\"a\"} 2",
            "trustlog_dead_letters{tenant=\"a\"} 1",
            "trustlog_published_total{tenant=\"a\",tick=\"scan\"} 6",
            "trustlog_publish_failed_total{tenant=\"a\",tick=\"scan\"} 2",
            "trustlog_published_total{tenant=\"a\",tick=\"retry\"} 0",
            "trustlog_tick_errors_total{tenant=\"a\",tick=\"sweep\"} 0",
            "trustlog_tick_duration_seconds_count{tenant=\"a\",tick=\"scan\"} 2",
            "trustlog_delivery_latency_seconds_count{tenant=\"a\"} 2",
            "trustlog_publish_latency_seconds_count{tenant=\"a\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn two_registries_do_not_share_series() {
        let (a, b) = (Metrics::new().unwrap(), Metrics::new().unwrap());
        a.tenant("x").tick_failed("scan", Duration::ZERO);
        assert!(
            a.render()
                .unwrap()
                .contains("trustlog_tick_errors_total{tenant=\"x\",tick=\"scan\"} 1")
        );
        assert!(!b.render().unwrap().contains("tenant=\"x\""));
    }
}

//! Counters the broker keeps for Prometheus, and the text exposition.
//! Gauges (capacity, allocation, fragmentation, leases by state) are read
//! from the broker's state when scraped; counters and the placement latency
//! histogram are kept here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the placement latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.1,
];

#[derive(Debug, Default)]
pub struct Metrics {
    pub heartbeats: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub registrations: AtomicU64,
    pub placements_granted: AtomicU64,
    pub placements_queued: AtomicU64,
    pub placements_refused: AtomicU64,
    pub preemptions: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    pub fn observe_placement(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns
            .fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Placements timed so far and their mean, for logs and reports.
    pub fn placement_latency(&self) -> (u64, Duration) {
        let n = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_ns.load(Ordering::Relaxed);
        (n, Duration::from_nanos(sum.checked_div(n).unwrap_or(0)))
    }

    /// Appends the counters and the histogram in Prometheus text format.
    pub fn render_counters(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            out,
            "gpupool_heartbeats_total",
            "Heartbeats received from GPU servers.",
            &self.heartbeats,
        );
        counter(
            out,
            "gpupool_heartbeat_timeouts_total",
            "Times a GPU server was marked down for missing heartbeats.",
            &self.heartbeat_timeouts,
        );
        counter(
            out,
            "gpupool_registrations_total",
            "GPU server registrations.",
            &self.registrations,
        );
        let _ = writeln!(
            out,
            "# HELP gpupool_placements_total Lease requests by outcome.\n# TYPE gpupool_placements_total counter"
        );
        for (outcome, v) in [
            ("granted", &self.placements_granted),
            ("queued", &self.placements_queued),
            ("refused", &self.placements_refused),
        ] {
            let _ = writeln!(
                out,
                "gpupool_placements_total{{outcome=\"{outcome}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "gpupool_preemptions_total",
            "Leases preempted for higher-priority requests.",
            &self.preemptions,
        );
        let _ = writeln!(
            out,
            "# HELP gpupool_placement_seconds Time the placement engine took per decision.\n# TYPE gpupool_placement_seconds histogram"
        );
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "gpupool_placement_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "gpupool_placement_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "gpupool_placement_seconds_sum {}",
            self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "gpupool_placement_seconds_count {count}");
    }
}

/// Appends one gauge with optional labels.
pub fn gauge(out: &mut String, name: &str, help: &str, values: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_placement(Duration::from_micros(20));
        m.observe_placement(Duration::from_millis(5));
        let mut out = String::new();
        m.render_counters(&mut out);
        assert!(out.contains("gpupool_placement_seconds_bucket{le=\"0.00001\"} 0"));
        assert!(out.contains("gpupool_placement_seconds_bucket{le=\"0.000025\"} 1"));
        assert!(out.contains("gpupool_placement_seconds_bucket{le=\"0.01\"} 2"));
        assert!(out.contains("gpupool_placement_seconds_count 2"));
    }
}

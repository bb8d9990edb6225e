//! Latency histograms in the Prometheus convention: fixed buckets in
//! seconds, counted with relaxed atomics (one `fetch_add` per observation
//! and one for the sum), rendered cumulatively with `_sum` and `_count`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (the last bucket, `+Inf`,
/// is implicit): from 250 us, where a durable write starts, to 10 s.
pub const BOUNDS_US: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

const SLOTS: usize = BOUNDS_US.len() + 1;

/// A histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Observations per bucket (not cumulative), the last one `+Inf`.
    pub counts: [u64; SLOTS],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        // Rounded up, so that a bucket never holds more than its bound.
        let us = u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
        let slot = BOUNDS_US.partition_point(|&b| b < us);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl Snapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Appends the series of metric `name` with `labels` (`key="value"`
    /// pairs, already escaped, or empty): one `_bucket` line per bound,
    /// then `_sum` (seconds) and `_count`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS_US.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        cumulative += self.counts[SLOTS - 1];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// Appends the `# HELP` and `# TYPE` lines of histogram `name`.
pub fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_render_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(250));
        h.observe(Duration::from_micros(251));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1, "a bound is inclusive (le)");
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[7], 1, "30 ms is in the 50 ms bucket");
        assert_eq!(s.counts[SLOTS - 1], 1, "beyond 10 s: +Inf");
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 250 + 251 + 30_000 + 60_000_000);

        let mut out = String::new();
        s.render(&mut out, "x_seconds", "route=\"/a\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), SLOTS + 2);
        assert_eq!(lines[0], "x_seconds_bucket{route=\"/a\",le=\"0.00025\"} 1");
        assert_eq!(lines[1], "x_seconds_bucket{route=\"/a\",le=\"0.0005\"} 2");
        assert_eq!(lines[7], "x_seconds_bucket{route=\"/a\",le=\"0.05\"} 3");
        assert_eq!(
            lines[SLOTS - 2],
            "x_seconds_bucket{route=\"/a\",le=\"10\"} 3"
        );
        assert_eq!(
            lines[SLOTS - 1],
            "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4"
        );
        assert_eq!(lines[SLOTS], "x_seconds_sum{route=\"/a\"} 60.030501");
        assert_eq!(lines[SLOTS + 1], "x_seconds_count{route=\"/a\"} 4");

        let mut bare = String::new();
        Snapshot::default().render(&mut bare, "y_seconds", "");
        assert!(bare.starts_with("y_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(bare.ends_with("y_seconds_sum 0\ny_seconds_count 0\n"));
    }
}

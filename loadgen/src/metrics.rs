//! Latency histograms and per-second samples.
//!
//! Each loadgen thread records into its own HDR histograms (no sharing on the hot path). Once
//! a second it hands a copy of its interval histogram to the main thread over a bounded
//! channel for the live progress line and the timeline; the run's totals are merged from every
//! thread at the end.

use std::sync::mpsc::SyncSender;

use hdrhistogram::Histogram;

/// Highest latency recorded exactly (60 s, in ns); larger values are clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Interval reports a thread may have queued for the main thread before newer ones are dropped.
pub const INTERVAL_QUEUE_MAX: usize = 64;

/// A latency histogram in nanoseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds are valid: {error}"),
    }
}

/// Which latency the histograms hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyKind {
    /// Publish to delivery, from the payload timestamp.
    EndToEnd,
    /// Publish to PUBACK/PUBCOMP (publishers without subscribers).
    PublishAck,
    /// TCP connect start to CONNACK.
    Connack,
}

impl LatencyKind {
    /// Label for tables.
    pub fn label(self) -> &'static str {
        match self {
            LatencyKind::EndToEnd => "end-to-end",
            LatencyKind::PublishAck => "publish→ack",
            LatencyKind::Connack => "connect→CONNACK",
        }
    }
}

/// One thread's latency recorders.
#[derive(Debug)]
pub struct ThreadMetrics {
    /// Samples of the current second (all phases), for progress.
    pub interval: Histogram<u64>,
    /// Samples inside the measurement window, for the final report.
    pub total: Histogram<u64>,
}

impl ThreadMetrics {
    /// Empty recorders.
    pub fn new() -> ThreadMetrics {
        ThreadMetrics {
            interval: new_histogram(),
            total: new_histogram(),
        }
    }

    /// Records one sample; `measured` says whether it falls in the measurement window.
    pub fn record(&mut self, latency_ns: u64, measured: bool) {
        let value = latency_ns.clamp(1, LATENCY_NS_MAX);
        self.interval.saturating_record(value);
        if measured {
            self.total.saturating_record(value);
        }
    }

    /// Sends the interval histogram to the main thread (dropped if its queue is full) and resets it.
    pub fn flush_interval(&mut self, sender: &SyncSender<Histogram<u64>>) {
        if self.interval.is_empty() {
            return;
        }
        let _ = sender.try_send(self.interval.clone());
        self.interval.reset();
    }
}

impl Default for ThreadMetrics {
    fn default() -> Self {
        ThreadMetrics::new()
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// Summarises a nanosecond histogram.
pub fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    LatencySummary {
        count: histogram.len(),
        mean_us: histogram.mean() / 1000.0,
        p50_us: us(histogram.value_at_quantile(0.50)),
        p90_us: us(histogram.value_at_quantile(0.90)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        p999_us: us(histogram.value_at_quantile(0.999)),
        max_us: us(histogram.max()),
    }
}

/// The percentile curve for the HTML chart: (percentile, microseconds) from 0 to 99.999.
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    // Evenly spaced on the "nines" axis: 0, 90, 99, 99.9 ... each decade in ten steps.
    for step in 0..=50 {
        let nines = step as f64 / 10.0;
        let quantile = 1.0 - 10f64.powf(-nines);
        points.push((
            quantile * 100.0,
            histogram.value_at_quantile(quantile) as f64 / 1000.0,
        ));
    }
    points.push((100.0, histogram.max() as f64 / 1000.0));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_measured_samples_reach_the_total() {
        let mut metrics = ThreadMetrics::new();
        metrics.record(1_000, false);
        metrics.record(2_000, true);
        metrics.record(LATENCY_NS_MAX * 2, true);
        assert_eq!(metrics.interval.len(), 3);
        assert_eq!(metrics.total.len(), 2);
        let summary = summarize(&metrics.total);
        assert_eq!(summary.count, 2);
        assert!((summary.p50_us - 2.0).abs() < 0.01);
    }

    #[test]
    fn curve_is_monotonic() {
        let mut histogram = new_histogram();
        for value in 1..10_000u64 {
            histogram.record(value * 100).unwrap();
        }
        let curve = percentile_curve(&histogram);
        assert!(curve.windows(2).all(|pair| pair[0].1 <= pair[1].1));
        assert_eq!(curve.last().map(|point| point.0), Some(100.0));
    }
}

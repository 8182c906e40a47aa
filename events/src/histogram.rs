//! A histogram of fixed buckets kept in atomics, for the writer's own
//! measurements (commit time, fsync time, batch sizes): observing costs a
//! few relaxed atomic additions and never a lock, so the writer thread
//! pays nothing it would notice. This crate exports no metrics format; the
//! application reads [`Histogram::snapshot`] and encodes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts of observations at or below each upper bound, their sum and
/// count.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending; an implicit `+Inf` bucket follows.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds`.
    buckets: Box<[AtomicU64]>,
    /// The sum, in units of `unit` (nanoseconds for times, one for counts):
    /// an integer, so it adds atomically.
    sum: AtomicU64,
    unit: f64,
}

/// What a histogram held when read: the observations of each bucket (not
/// cumulative: encoders add them up).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// `(upper bound, observations above the bound before it and at or
    /// below this one)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

/// Seconds, from 100 µs to about 6.5 s (doubling).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768, 6.5536,
];

/// Counts, from 1 to 1,024 (doubling).
pub const COUNT_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

impl Histogram {
    fn new(bounds: &'static [f64], unit: f64) -> Histogram {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, buckets, sum: AtomicU64::new(0), unit }
    }

    /// A histogram of durations, in seconds.
    pub fn seconds() -> Histogram {
        Histogram::new(SECONDS_BUCKETS, 1e-9)
    }

    /// A histogram of counts.
    pub fn counts() -> Histogram {
        Histogram::new(COUNT_BUCKETS, 1.0)
    }

    fn observe_units(&self, value: f64, units: u64) {
        let index =
            self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.observe_units(took.as_secs_f64(), nanos);
    }

    pub fn observe_count(&self, count: u64) {
        self.observe_units(count as f64, count);
    }

    /// The buckets, `+Inf` last, and their total.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (index, bucket) in self.buckets.iter().enumerate() {
            let observed = bucket.load(Ordering::Relaxed);
            total += observed;
            let bound = self.bounds.get(index).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, observed));
        }
        HistogramSnapshot {
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.unit,
            count: total,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::counts();
        for count in [1, 1, 3, 64, 5000] {
            histogram.observe_count(count);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert_eq!(snapshot.sum, 5069.0);
        let at = |bound: f64| snapshot.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(1.0), 2);
        assert_eq!(at(2.0), 0);
        assert_eq!(at(4.0), 1);
        assert_eq!(at(64.0), 1);
        assert_eq!(at(1024.0), 0);
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));

        let times = Histogram::seconds();
        times.observe_duration(Duration::from_micros(150));
        times.observe_duration(Duration::from_secs(10));
        let snapshot = times.snapshot();
        assert!((snapshot.sum - 10.00015).abs() < 1e-9, "{}", snapshot.sum);
        assert_eq!(snapshot.buckets[0], (0.0001, 0));
        assert_eq!(snapshot.buckets[1], (0.0002, 1));
        assert_eq!(snapshot.buckets.last(), Some(&(f64::INFINITY, 1)));
    }
}

//! A plugin's counters: calls, verdicts and errors per RPC, and a lock-free latency
//! histogram. `$SYS` and `/metrics` read them; the call path only adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::plugins::rpc::{ErrorKind, Verdict};

/// Counters of one RPC of one plugin.
#[derive(Debug, Default)]
pub struct RpcStats {
    /// Calls attempted (including those answered by `on_error` without a call).
    pub calls: AtomicU64,
    /// Verdicts by kind: allow, deny, abstain (after `on_error`).
    pub verdicts: [AtomicU64; 3],
    /// Errors by [`ErrorKind`].
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    /// How long calls took, sent to a replica (shed and circuit-open answers, which
    /// make no call, are not in it).
    pub latency: Latency,
}

impl RpcStats {
    /// Counts a call's outcome, and its duration if a call was made (shed and
    /// circuit-open answers made none).
    pub fn record(&self, verdict: Verdict, error: Option<ErrorKind>, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !matches!(error, Some(ErrorKind::Shed | ErrorKind::CircuitOpen)) {
            self.latency.observe(took);
        }
        self.verdicts[verdict as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Upper bounds of the [`Latency`] buckets, in microseconds: 250µs to 5s, roughly
/// doubling, covering a fast local plugin and the largest sensible deadline.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// A fixed-bucket histogram of call durations: one relaxed atomic add per bucket and
/// sum, no lock, so recording costs the call path almost nothing; `/metrics` reads it.
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Latency {
    /// Records one call's duration.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and the observations per bucket (not cumulative)
    /// by upper bound in seconds, the last one `+Inf`.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = LATENCY_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let l = Latency::default();
        l.observe(Duration::from_micros(250)); // on a bound: that bucket (le is inclusive)
        l.observe(Duration::from_micros(251));
        l.observe(Duration::from_millis(200));
        l.observe(Duration::from_secs(60)); // above every bound: +Inf only
        let (sum, count, buckets) = l.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.200501).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(buckets[0], (0.00025, 1));
        assert_eq!(buckets[1], (0.0005, 1));
        assert_eq!(buckets[9], (0.25, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);
    }
}

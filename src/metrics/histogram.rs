//! A histogram that never locks, for the hit path: prometheus-client's `Histogram` takes a
//! mutex on every observation, which every UDP worker would contend for on every answer.
//! Here each bucket, and the sum (in whole units: nanoseconds for durations, octets for
//! sizes), is an atomic counter; a scrape reads them one by one, so a scrape racing with
//! answers may see an observation in the count but not yet in the sum, never a torn value.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, the last one +Inf.
    bounds: Box<[f64]>,
    counts: Box<[AtomicU64]>,
    /// The sum of the values observed, in units of `1 / units` of a value.
    sum: AtomicU64,
    units: f64,
}

impl AtomicHistogram {
    /// Buckets with these upper bounds (in seconds), plus +Inf; the sum is kept in nanoseconds.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        Self::with_units(bounds, 1e9)
    }

    /// Buckets with these upper bounds, plus +Inf; the sum is kept in whole `1 / units` of a
    /// value (1: values are whole numbers, as sizes in octets).
    pub fn with_units(bounds: impl IntoIterator<Item = f64>, units: f64) -> Self {
        let bounds: Box<[f64]> = bounds.into_iter().chain(std::iter::once(f64::INFINITY)).collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram { inner: Arc::new(Inner { bounds, counts, sum: AtomicU64::new(0), units }) }
    }

    #[inline]
    pub fn observe(&self, seconds: f64) {
        self.observe_times(seconds, 1);
    }

    /// `times` observations of the same value.
    #[inline]
    pub fn observe_times(&self, seconds: f64, times: u64) {
        let i = self.inner.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.inner.bounds.len() - 1);
        self.add(i, times, (seconds * self.inner.units) as u64 * times);
    }

    /// `times` observations into bucket `index` (as counted by the caller, against the same
    /// bounds), whose values add up to `sum` units.
    #[inline]
    pub fn add(&self, index: usize, times: u64, sum: u64) {
        self.inner.counts[index].fetch_add(times, Ordering::Relaxed);
        self.inner.sum.fetch_add(sum, Ordering::Relaxed);
    }

    /// The counts as they are now.
    pub fn read(&self) -> Reading {
        let buckets = self.inner.bounds.iter().zip(self.inner.counts.iter()).map(|(&b, c)| (b, c.load(Ordering::Relaxed))).collect();
        Reading { buckets, sum: self.inner.sum.load(Ordering::Relaxed), units: self.inner.units }
    }
}

/// A histogram's counts read at one time, ready to be added to another's and encoded.
pub struct Reading {
    buckets: Vec<(f64, u64)>,
    sum: u64,
    units: f64,
}

impl Reading {
    /// Both readings' observations; the histograms must have the same bounds.
    pub fn merge(mut self, other: Reading) -> Reading {
        debug_assert!(self.buckets.iter().map(|b| b.0).eq(other.buckets.iter().map(|b| b.0)), "merging histograms with different bounds");
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            mine.1 += theirs.1;
        }
        self.sum += other.sum;
        self
    }

    pub fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum as f64 / self.units, count, &self.buckets, None)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.read().encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::Histogram;

    use super::*;
    use crate::metrics::exposition;

    #[test]
    fn encodes_exactly_like_the_library_histogram() {
        let bounds = [0.001, 0.01, 0.1];
        let (ours, theirs) = (AtomicHistogram::new(bounds), Histogram::new(bounds));
        for v in [0.0005, 0.002, 0.002, 0.05, 3.0] {
            ours.observe(v);
            theirs.observe(v);
        }
        assert_eq!(exposition(|r| r.register("h", "x", ours)), exposition(|r| r.register("h", "x", theirs)));
    }

    #[test]
    fn whole_units_sum_exactly_and_counts_added_by_bucket_land_in_it() {
        let bounds = [0.0, 100.0, 511.0];
        let (ours, theirs) = (AtomicHistogram::with_units(bounds, 1.0), Histogram::new(bounds));
        for v in [0.0, 40.0, 100.0, 101.0, 512.0] {
            ours.observe(v);
            theirs.observe(v);
        }
        // Two of 300 octets, counted by the caller into the bucket of 511.
        ours.add(2, 2, 600);
        theirs.observe(300.0);
        theirs.observe(300.0);
        assert_eq!(exposition(|r| r.register("h", "x", ours)), exposition(|r| r.register("h", "x", theirs)));
    }
}

//! A histogram that never locks, for the hit path: prometheus-client's `Histogram` takes a
//! mutex on every observation, which every UDP worker would contend for on every answer.
//! Here each bucket, and the sum (in nanoseconds), is an atomic counter; a scrape reads them
//! one by one, so a scrape racing with answers may see an observation in the count but not
//! yet in the sum, never a torn value.

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
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Buckets with these upper bounds (in seconds), plus +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Box<[f64]> = bounds.into_iter().chain(std::iter::once(f64::INFINITY)).collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram { inner: Arc::new(Inner { bounds, counts, sum_nanos: AtomicU64::new(0) }) }
    }

    #[inline]
    pub fn observe(&self, seconds: f64) {
        self.observe_times(seconds, 1);
    }

    /// `times` observations of the same value.
    #[inline]
    pub fn observe_times(&self, seconds: f64, times: u64) {
        let i = self.inner.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.inner.bounds.len() - 1);
        self.inner.counts[i].fetch_add(times, Ordering::Relaxed);
        self.inner.sum_nanos.fetch_add((seconds * 1e9) as u64 * times, Ordering::Relaxed);
    }

    /// The counts as they are now.
    pub fn read(&self) -> Reading {
        let buckets = self.inner.bounds.iter().zip(self.inner.counts.iter()).map(|(&b, c)| (b, c.load(Ordering::Relaxed))).collect();
        Reading { buckets, sum_nanos: self.inner.sum_nanos.load(Ordering::Relaxed) }
    }
}

/// A histogram's counts read at one time, ready to be added to another's and encoded.
pub struct Reading {
    buckets: Vec<(f64, u64)>,
    sum_nanos: u64,
}

impl Reading {
    /// Both readings' observations; the histograms must have the same bounds.
    pub fn merge(mut self, other: Reading) -> Reading {
        debug_assert!(self.buckets.iter().map(|b| b.0).eq(other.buckets.iter().map(|b| b.0)), "merging histograms with different bounds");
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            mine.1 += theirs.1;
        }
        self.sum_nanos += other.sum_nanos;
        self
    }

    pub fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_nanos as f64 / 1e9, count, &self.buckets, None)
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
}

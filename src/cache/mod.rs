//! The response cache: bounded, scan-resistant, keyed by the exact question.
//!
//! Owns what is stored and for how long (RFC 2308 negative caching, TTL caps, separate bounds
//! for positive and negative entries). It never does I/O and never decides where a miss
//! goes; that is `forward`'s job. Eviction is `quick_cache`'s S3-FIFO, so a flood of
//! one-off names passes through the small probationary queue without pushing out names that
//! are asked again.

mod entry;
mod key;

use std::sync::Arc;
use std::time::Instant;

use quick_cache::Weighter;
use quick_cache::sync::Cache as QuickCache;

pub use entry::{Entry, Kind};
pub use key::{CacheKey, KeyRef};

/// How long entries live. All values are seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub positive_min_ttl: u32,
    pub positive_max_ttl: u32,
    pub negative_min_ttl: u32,
    pub negative_max_ttl: u32,
    pub servfail_ttl: u32,
}

/// Bounds of one half of the cache (positive or negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// Every entry weighs its real footprint but at least `max_bytes / max_entries`, so that
/// one weight bound enforces both limits: the byte total stays under `max_bytes`, and the
/// entry count cannot exceed `max_entries`.
#[derive(Clone)]
struct FootprintWeighter {
    floor: u64,
}

impl Weighter<CacheKey, Arc<Entry>> for FootprintWeighter {
    fn weight(&self, key: &CacheKey, val: &Arc<Entry>) -> u64 {
        ((key.footprint() + val.footprint()) as u64).max(self.floor)
    }
}

type Store = QuickCache<CacheKey, Arc<Entry>, FootprintWeighter>;

fn store(cap: Capacity) -> Store {
    let floor = (cap.max_bytes / cap.max_entries.max(1)).max(1);
    let estimated = cap.max_entries.min(cap.max_bytes / 128).max(16) as usize;
    QuickCache::with_weighter(estimated, cap.max_bytes, FootprintWeighter { floor })
}

/// The positive and negative stores and the TTL policy.
pub struct Cache {
    positive: Store,
    negative: Store,
    policy: TtlPolicy,
}

impl Cache {
    pub fn new(positive: Capacity, negative: Capacity, policy: TtlPolicy) -> Self {
        Cache { positive: store(positive), negative: store(negative), policy }
    }

    pub fn policy(&self) -> &TtlPolicy {
        &self.policy
    }

    /// A fresh entry for `key` and its age in seconds. Expired entries are misses.
    #[inline]
    pub fn lookup(&self, key: &KeyRef<'_>, now: Instant) -> Option<(Arc<Entry>, u32)> {
        for store in [&self.positive, &self.negative] {
            if let Some(entry) = store.get(key)
                && let Some(age) = entry.age_if_fresh(now)
            {
                return Some((entry, age));
            }
        }
        None
    }

    /// Stores `entry` under `key` in the half its kind belongs to; uncacheable entries are
    /// ignored. Whatever the other half held for the key is stale by now and is dropped.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        let (into, other) = match entry.kind() {
            Kind::Positive => (&self.positive, &self.negative),
            Kind::Negative | Kind::ServFail => (&self.negative, &self.positive),
            Kind::Uncacheable => return,
        };
        other.remove(&key.as_ref());
        into.insert(key, entry);
    }

    /// Entry counts: (positive, negative).
    pub fn len(&self) -> (usize, usize) {
        (self.positive.len(), self.negative.len())
    }

    /// Total weight (octets, with the per-entry floor) held: (positive, negative).
    pub fn weight(&self) -> (u64, u64) {
        (self.positive.weight(), self.negative.weight())
    }
}

#[cfg(test)]
mod tests;

//! The response cache: bounded, scan-resistant, keyed by the exact question.
//!
//! Owns what is stored and for how long (RFC 2308 negative caching, TTL caps, separate bounds
//! for positive and negative entries). It never does I/O and never decides where a miss
//! goes; that is `forward`'s job. Entries live in [`store`], whose S3-FIFO eviction lets a
//! flood of one-off names pass through a small probation FIFO without pushing out names that
//! are asked again. Expired entries stay until evicted, so that when the upstream fails they
//! can still be served (RFC 8767, "serve stale") for a bounded time. A zone may have TTL
//! bounds of its own ([`ZoneTtl`]); the longest zone ending an entry's name decides its life.

mod entry;
mod key;
pub mod snapshot;
mod store;

use std::hash::BuildHasher;
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::wire::name::{LowerName, LowerNameBuf};

pub use entry::{Entry, Kind};
pub use key::{CacheKey, KeyRef};
use store::Store;

/// How long entries live. All values are seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub positive_min_ttl: u32,
    pub positive_max_ttl: u32,
    pub negative_min_ttl: u32,
    pub negative_max_ttl: u32,
    pub servfail_ttl: u32,
    /// How long after expiry an entry may still be served when the upstream fails; 0: never.
    pub stale_max_age: u32,
    /// The TTL of a stale answer, and how long one stands in before the upstream is asked
    /// again (RFC 8767's 30 s).
    pub stale_ttl: u32,
    /// Hits in the last this-percent of an entry's life count towards refreshing it; 0: no
    /// refreshing ahead of expiry.
    pub prefetch_percent: u32,
    /// Hits in that window that start the refresh (once per entry).
    pub prefetch_min_hits: u32,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            positive_min_ttl: 0,
            positive_max_ttl: 3600,
            negative_min_ttl: 0,
            negative_max_ttl: 1800,
            servfail_ttl: 5,
            stale_max_age: 0,
            stale_ttl: 30,
            prefetch_percent: 0,
            prefetch_min_hits: 2,
        }
    }
}

/// The TTL bounds the names at and under `zone` have instead of the global ones; a `None`
/// keeps the global value. Serving stale and prefetch are the cache's, never a zone's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneTtl {
    pub zone: LowerNameBuf,
    pub positive_min_ttl: Option<u32>,
    pub positive_max_ttl: Option<u32>,
    pub negative_min_ttl: Option<u32>,
    pub negative_max_ttl: Option<u32>,
    pub servfail_ttl: Option<u32>,
}

impl ZoneTtl {
    /// A zone with no bounds of its own yet.
    pub fn new(zone: LowerNameBuf) -> ZoneTtl {
        ZoneTtl { zone, positive_min_ttl: None, positive_max_ttl: None, negative_min_ttl: None, negative_max_ttl: None, servfail_ttl: None }
    }

    /// The whole policy of this zone's names: `global` with this zone's bounds in place.
    pub fn over(&self, global: &TtlPolicy) -> TtlPolicy {
        TtlPolicy {
            positive_min_ttl: self.positive_min_ttl.unwrap_or(global.positive_min_ttl),
            positive_max_ttl: self.positive_max_ttl.unwrap_or(global.positive_max_ttl),
            negative_min_ttl: self.negative_min_ttl.unwrap_or(global.negative_min_ttl),
            negative_max_ttl: self.negative_max_ttl.unwrap_or(global.negative_max_ttl),
            servfail_ttl: self.servfail_ttl.unwrap_or(global.servfail_ttl),
            ..global.clone()
        }
    }
}

/// Bounds of one half of the cache (positive or negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// The positive and negative stores and the TTL policy. Entries are stored by the keyed hash
/// of their key; an entry is a hit only if it [answers](Entry::answers) the key. Two keys with
/// the same hash (2^-61 for any pair, and the hash is seeded at random, so not something a
/// client can arrange) take turns in one slot: a miss, never a wrong answer. The store thus
/// holds no copy of the name: it is in the entry's question.
pub struct Cache {
    positive: Store,
    negative: Store,
    policy: TtlPolicy,
    /// Each [`ZoneTtl`]'s apex and whole policy, the longest apex first, so the first that
    /// ends a name is its zone. Read only where an entry is built, never on a hit.
    zones: Vec<(LowerNameBuf, TtlPolicy)>,
    hasher: RandomState,
}

/// A key's hash, computed once per query and kept through a batch's prefetch steps and
/// lookup. Given with another key than its own, it finds nothing: the entry found must
/// answer the key.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(u64);

impl Cache {
    pub fn new(positive: Capacity, negative: Capacity, policy: TtlPolicy) -> Self {
        Cache { positive: Store::new(positive), negative: Store::new(negative), policy, zones: Vec::new(), hasher: RandomState::default() }
    }

    /// This cache with TTL bounds of their own for the names under `zones`; a zone given
    /// twice keeps its last bounds.
    pub fn with_zones(mut self, zones: impl IntoIterator<Item = ZoneTtl>) -> Self {
        for zone in zones {
            self.zones.retain(|(apex, _)| *apex != zone.zone);
            self.zones.push((zone.zone.clone(), zone.over(&self.policy)));
        }
        // Labels end names, so of two apexes ending one name the longer is the deeper.
        self.zones.sort_by_key(|(apex, _)| std::cmp::Reverse(apex.len()));
        self
    }

    /// The global policy: what every zone shares (serving stale, prefetch), and the bounds
    /// of names in no zone of their own. An entry's life comes from [`Cache::policy_for`].
    pub fn policy(&self) -> &TtlPolicy {
        &self.policy
    }

    /// The policy for entries about `name`: that of the longest zone ending it, else the
    /// global one.
    pub fn policy_for(&self, name: LowerName<'_>) -> &TtlPolicy {
        self.zones.iter().find(|(apex, _)| name.ends_with(apex.as_name())).map_or(&self.policy, |(_, policy)| policy)
    }

    #[inline]
    pub fn hash(&self, key: &KeyRef<'_>) -> KeyHash {
        KeyHash(self.hasher.hash_one(key))
    }

    /// What `store` holds for `key`, fresh or not.
    #[inline]
    fn find(store: &Store, key: &KeyRef<'_>, hash: u64) -> Option<Entry> {
        store.with(hash, Entry::clone).filter(|entry| entry.answers(key))
    }

    /// Has the CPU start loading the slots `key` would be in, without waiting: the first of
    /// the two steps that let a batch of lookups wait for memory once rather than once per
    /// lookup (in a server, a hit's slot and entry are usually not in the CPU's caches:
    /// perf put nine-tenths of the lookup's samples on loading those two). The second step is
    /// [`Cache::prefetch_entry`].
    #[inline]
    pub fn prefetch_slots(&self, KeyHash(hash): KeyHash) {
        self.positive.prefetch_slot(hash);
        self.negative.prefetch_slot(hash);
    }

    /// Has the CPU start loading the entry stored under `hash`.
    #[inline]
    pub fn prefetch_entry(&self, KeyHash(hash): KeyHash) {
        if !self.positive.prefetch_entry(hash) {
            self.negative.prefetch_entry(hash);
        }
    }

    /// A fresh entry for `key` and its age in seconds. Expired entries are misses.
    pub fn lookup(&self, key: &KeyRef<'_>, now: Instant) -> Option<(Entry, u32)> {
        self.read_fresh(key, self.hash(key), now, |entry, age| (entry.clone(), age))
    }

    /// Reads the fresh entry for `key` (whose hash is `hash`) in place with its age in
    /// seconds, as a hit does: without taking a reference to it, under its shard's read lock.
    #[inline]
    pub fn read_fresh<R>(&self, key: &KeyRef<'_>, KeyHash(hash): KeyHash, now: Instant, read: impl FnOnce(&Entry, u32) -> R) -> Option<R> {
        let mut read = Some(read);
        for store in [&self.positive, &self.negative] {
            let found = store.with(hash, |entry| {
                let age = entry.age_if_fresh(now).filter(|_| entry.answers(key))?;
                read.take().map(|read| read(entry, age))
            });
            if let Some(Some(result)) = found {
                return Some(result);
            }
        }
        None
    }

    /// An expired answer for `key` that may still be served because the upstream failed or
    /// is slow: expired no longer than `stale_max_age` ago. Never a SERVFAIL.
    pub fn stale(&self, key: &KeyRef<'_>, now: Instant) -> Option<Entry> {
        let max_age = self.policy.stale_max_age;
        if max_age == 0 {
            return None;
        }
        let KeyHash(hash) = self.hash(key);
        [&self.positive, &self.negative].into_iter().find_map(|store| Self::find(store, key, hash)).filter(|entry| {
            matches!(entry.kind(), Kind::Positive | Kind::Negative)
                && entry.expired_for(now).is_some_and(|d| d.as_secs() <= u64::from(max_age))
        })
    }

    /// What to answer for `key` when the upstream failed to: the entry still fresh (a failed
    /// refresh must not replace a good answer), or a stale one, stored again as a stale copy
    /// so that for `stale_ttl` seconds it is answered at once without asking the upstream
    /// (RFC 8767's failure recheck timer). `None`: nothing to fall back on.
    pub fn keep_on_failure(&self, key: &KeyRef<'_>, now: Instant) -> Option<Entry> {
        let KeyHash(hash) = self.hash(key);
        for store in [&self.positive, &self.negative] {
            if let Some(entry) = Self::find(store, key, hash)
                && matches!(entry.kind(), Kind::Positive | Kind::Negative)
                && entry.age_if_fresh(now).is_some()
            {
                return Some(entry);
            }
        }
        let stale = self.stale(key, now)?.stale_copy(self.policy_for(key.name()), now);
        self.insert(key, stale.clone());
        Some(stale)
    }

    /// Stores `entry` under `key` in the half its kind belongs to; uncacheable entries, and
    /// entries whose question is not the key's, are ignored. Whatever the other half held
    /// for the key is stale by now and is dropped.
    pub fn insert(&self, key: &KeyRef<'_>, entry: Entry) {
        let (into, other) = match entry.kind() {
            Kind::Positive => (&self.positive, &self.negative),
            Kind::Negative | Kind::Failure => (&self.negative, &self.positive),
            Kind::Uncacheable => return,
        };
        if !entry.answers(key) {
            debug_assert!(false, "an entry stored under another question's key");
            return;
        }
        let KeyHash(hash) = self.hash(key);
        other.remove(hash);
        into.insert(hash, entry);
    }

    /// Entry counts: (positive, negative).
    pub fn len(&self) -> (usize, usize) {
        (self.positive.len(), self.negative.len())
    }

    /// Entries evicted so far to make room: (positive, negative).
    pub fn evictions(&self) -> (u64, u64) {
        (self.positive.evictions(), self.negative.evictions())
    }

    /// Total weight (octets, with the per-entry floor) held: (positive, negative).
    pub fn weight(&self) -> (u64, u64) {
        (self.positive.weight(), self.negative.weight())
    }

    /// Octets the stores themselves hold beside the entries (slots, FIFOs, ghosts).
    pub fn bookkeeping(&self) -> u64 {
        self.positive.bookkeeping() + self.negative.bookkeeping()
    }
}

#[cfg(test)]
mod tests;

//! Where entries live: a sharded open-addressing table whose slots hold the key's hash and
//! the entry's pointer side by side, so a hit reads one slot and then its entry. (Through
//! `quick_cache` a hit read a hash table's control bytes, a slot index, a slot and then the
//! entry, each depending on the one before: with a million entries, each a miss to RAM;
//! `benches/hot_path.rs` times both.) Owns the bounds and eviction; knows nothing of TTLs
//! or DNS, and never does I/O.
//!
//! Eviction is S3-FIFO (Yang et al., SOSP 2023) over weights: once the main set has its 90%
//! share, a new entry is on probation in a small FIFO; when the shard is over its weight, the
//! oldest probationer leaves, unless it was asked for since it came, in which case it joins
//! the main set. The main set is swept by a CLOCK hand over the table itself: an entry asked
//! for since the hand last passed is spared (up to three passes). So a flood of one-off names
//! churns the probation FIFO and never reaches the names being asked again. A name evicted
//! from probation and asked again soon (remembered by a fingerprint, the "ghost") joins the
//! main set directly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Capacity, Entry};

/// The low bits of a slot's tag are flags; the rest are the key's hash.
const FLAG_BITS: u32 = 3;
const FLAGS: u64 = (1 << FLAG_BITS) - 1;
/// Hits since the entry came or the CLOCK hand last passed it, saturating at 3.
const REFS: u64 = 0b011;
/// On probation (in the small FIFO), not in the main set.
const PROBATION: u64 = 0b100;
/// The probation FIFO's share of a shard's weight (S3-FIFO's 10%).
const PROBATION_PERCENT: u64 = 10;
const MAX_SHARDS: usize = 256;
/// Fewer shards for a small cache, so that a shard's bound is not a handful of entries.
const MIN_ENTRIES_PER_SHARD: u64 = 32;

/// The entries of one half of the cache (positive or negative), bounded by weight.
pub(super) struct Store {
    shards: Box<[Locked]>,
    /// `log2(shards.len())`.
    shard_bits: u32,
}

impl Store {
    /// A store holding at most `max_bytes` of weight, every entry weighing its footprint
    /// plus its slot but at least `max_bytes / max_entries`: the one bound keeps both.
    pub(super) fn new(Capacity { max_entries, max_bytes }: Capacity) -> Store {
        let floor = (max_bytes / max_entries.max(1)).max(1);
        // Four shards per CPU keep workers from meeting on one lock; no more, as every
        // shard is bounded alone, and the more shards, the more a full cache is uneven.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let wanted = (max_entries / MIN_ENTRIES_PER_SHARD).min(cpus * 4).clamp(1, MAX_SHARDS as u64);
        let shard_bits = 63 - wanted.leading_zeros();
        let count = 1usize << shard_bits;
        let shards = (0..count).map(|_| Locked::new(Shard::new(max_bytes / count as u64, floor))).collect();
        Store { shards, shard_bits }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Locked {
        // The top bits pick the shard; the slot index starts at bit FLAG_BITS.
        let index = if self.shard_bits == 0 { 0 } else { (hash >> (64 - self.shard_bits)) as usize };
        &self.shards[index]
    }

    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard> {
        self.shard(hash).read()
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shard(hash).write()
    }

    /// Has the CPU start loading the slot where `hash` would be, without locking or waiting
    /// for it: for a batch of queries, all their slots are then on the way at once, where
    /// looking them up one by one waits for each in turn.
    #[inline]
    pub(super) fn prefetch_slot(&self, hash: u64) {
        let shard = self.shard(hash);
        let (table, slots) = (shard.table.load(Ordering::Relaxed), shard.slots.load(Ordering::Relaxed));
        prefetch(table.wrapping_add(home(hash, slots - 1)).cast());
    }

    /// Has the CPU start loading the entry stored under `hash`, if there is one (its slot
    /// should be loaded or on the way). True if there is.
    #[inline]
    pub(super) fn prefetch_entry(&self, hash: u64) -> bool {
        let shard = self.read(hash);
        let Some(at) = shard.find(hash) else { return false };
        if let Some(entry) = &shard.slots[at].entry {
            // Its first two lines, which hold a single answer (96 octets). Not up to its
            // end: the length is in the entry, and reading it would wait for the very line
            // being prefetched.
            let start = entry.start();
            prefetch(start);
            prefetch(start.wrapping_add(64));
        }
        true
    }

    /// The entry stored under `hash`, counted as asked for.
    #[cfg(test)]
    pub(super) fn get(&self, hash: u64) -> Option<Entry> {
        self.with(hash, Entry::clone)
    }

    /// Reads the entry stored under `hash` in place, under the shard's read lock, and
    /// counts it as asked for. A hit so takes no reference to the entry: an atomic add and
    /// subtract on its first line, which every core answering it would pass between them.
    #[inline]
    pub(super) fn with<R>(&self, hash: u64, read: impl FnOnce(&Entry) -> R) -> Option<R> {
        let shard = self.read(hash);
        let slot = &shard.slots[shard.find(hash)?];
        let tag = slot.tag();
        if tag & REFS != REFS {
            // Two readers may both add one: the count is a hint, like S3-FIFO's.
            slot.tag.store(tag + 1, Ordering::Relaxed);
        }
        slot.entry.as_ref().map(read)
    }

    /// Stores `entry` under `hash`, replacing what was there, then evicts down to the bound.
    /// An entry heavier than a whole shard's bound is not stored.
    pub(super) fn insert(&self, hash: u64, entry: Entry) {
        let locked = self.shard(hash);
        let mut shard = locked.write();
        shard.insert(hash, entry);
        // Inserting is what grows a table.
        locked.publish(&shard);
    }

    pub(super) fn remove(&self, hash: u64) {
        self.write(hash).remove(hash);
    }

    /// Every entry, shard by shard (each shard read-locked only while it is copied).
    pub(super) fn entries(&self) -> Vec<Entry> {
        let mut all = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = shard.read();
            all.extend(shard.slots.iter().filter_map(|slot| slot.entry.clone()));
        }
        all
    }

    pub(super) fn len(&self) -> usize {
        self.sum(|s| s.len as u64) as usize
    }

    /// Entries taken out so far to make room for others (not removals, not replacements).
    pub(super) fn evictions(&self) -> u64 {
        self.sum(|s| s.evictions)
    }

    pub(super) fn weight(&self) -> u64 {
        self.sum(|s| s.weight)
    }

    /// Octets held besides the entries: slots, the probation FIFOs and the ghosts.
    pub(super) fn bookkeeping(&self) -> u64 {
        self.sum(Shard::bookkeeping)
    }

    fn sum(&self, of: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(|s| of(&s.read())).sum()
    }
}

/// A shard behind its lock, and where its table is for [`Store::prefetch_slot`], which
/// reads that without the lock. The pair is published after every insert (what grows the
/// table); a reader may see the address and length of different tables, or
/// of a table since freed: a prefetch names memory without touching it, harmlessly.
/// Aligned to a cache line: every reader writes the lock word, and a line shared with a
/// neighbouring shard would pass between cores reading different shards.
#[repr(align(64))]
struct Locked {
    lock: RwLock<Shard>,
    table: AtomicPtr<Slot>,
    slots: AtomicUsize,
}

impl Locked {
    fn new(shard: Shard) -> Locked {
        let locked = Locked { lock: RwLock::new(shard), table: AtomicPtr::default(), slots: AtomicUsize::new(0) };
        locked.publish(&locked.read());
        locked
    }

    fn read(&self) -> RwLockReadGuard<'_, Shard> {
        self.lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Shard> {
        self.lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, shard: &Shard) {
        let table = shard.slots.as_ptr().cast_mut();
        // Stored only when changed: readers keep this line in their caches.
        if self.table.load(Ordering::Relaxed) != table {
            self.table.store(table, Ordering::Relaxed);
            self.slots.store(shard.slots.len(), Ordering::Relaxed);
        }
    }
}

/// Has the CPU start loading the cache line holding `at`. Never faults, whatever `at` is.
#[inline]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and faults on no address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A hash and an entry; empty when `entry` is `None`. 16 octets.
#[derive(Default)]
struct Slot {
    /// The key's hash with the low [`FLAG_BITS`] replaced by the flags. Atomic so that
    /// readers under the shared lock can count hits.
    tag: AtomicU64,
    entry: Option<Entry>,
}

const _: () = assert!(size_of::<Slot>() == 16);

impl Slot {
    #[inline]
    fn tag(&self) -> u64 {
        self.tag.load(Ordering::Relaxed)
    }

    fn on_probation(&self) -> bool {
        self.entry.is_some() && self.tag() & PROBATION != 0
    }
}

/// The slot where `hash`'s probe starts in a table of `mask + 1` slots.
#[inline]
fn home(hash: u64, mask: usize) -> usize {
    (hash >> FLAG_BITS) as usize & mask
}

#[inline]
fn same_key(tag: u64, hash: u64) -> bool {
    (tag ^ hash) & !FLAGS == 0
}

struct Shard {
    /// Linear probing, a power of two long, at most 7/8 full (as hashbrown's tables): the
    /// slots are most of what the store adds to an entry, and a hit's probe stays within a
    /// cache line or two even then.
    slots: Box<[Slot]>,
    len: usize,
    weight: u64,
    capacity: u64,
    /// The least an entry weighs.
    floor: u64,
    /// Hashes in the order they came on probation. An entry removed while on probation
    /// leaves its hash behind, skipped when it comes out; a replaced one keeps its place.
    probation: VecDeque<u64>,
    probation_weight: u64,
    /// Entries on probation (the FIFO may hold more hashes: left behind by removals).
    probation_len: usize,
    /// Fingerprints of hashes recently evicted from probation, one per two slots.
    ghost: Box<[u32]>,
    /// The main set's CLOCK hand: a slot index.
    hand: usize,
    /// Entries evicted to keep the bound, ever.
    evictions: u64,
}

const FIRST_SLOTS: usize = 16;

impl Shard {
    fn new(capacity: u64, floor: u64) -> Shard {
        Shard {
            slots: empty_slots(FIRST_SLOTS),
            len: 0,
            weight: 0,
            capacity,
            floor,
            probation: VecDeque::new(),
            probation_weight: 0,
            probation_len: 0,
            ghost: vec![0; FIRST_SLOTS / 2].into_boxed_slice(),
            hand: 0,
            evictions: 0,
        }
    }

    fn weight_of(&self, entry: &Entry) -> u64 {
        ((size_of::<Slot>() + entry.footprint()) as u64).max(self.floor)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        home(hash, self.mask())
    }

    /// The index of the slot holding `hash`.
    #[inline]
    fn find(&self, hash: u64) -> Option<usize> {
        let mut at = self.home(hash);
        loop {
            let slot = &self.slots[at];
            slot.entry.as_ref()?;
            if same_key(slot.tag(), hash) {
                return Some(at);
            }
            at = (at + 1) & self.mask();
        }
    }

    fn insert(&mut self, hash: u64, entry: Entry) {
        let weight = self.weight_of(&entry);
        if weight > self.capacity {
            self.remove(hash);
            return;
        }
        if let Some(at) = self.find(hash) {
            // A refreshed answer keeps its place and its hits.
            self.take_weight(at);
            self.slots[at].entry = Some(entry);
            self.add_weight(at, weight);
        } else {
            if (self.len + 1) * 8 > self.slots.len() * 7 {
                self.grow();
            }
            // While the shard fills, entries go straight to the main set up to its share (as
            // in quick_cache): probation is for entries competing for room.
            let main = self.main_has_room(weight) || self.ghost_forgets(hash);
            let at = self.place(hash & !FLAGS | if main { 0 } else { PROBATION }, entry);
            self.len += 1;
            self.add_weight(at, weight);
            if !main {
                self.push_probation(hash);
            }
        }
        self.evict_to_bound();
    }

    /// Subtracts the weight of the entry in slot `at` from the totals; returns it.
    fn take_weight(&mut self, at: usize) -> u64 {
        let slot = &self.slots[at];
        let weight = slot.entry.as_ref().map_or(0, |e| self.weight_of(e));
        self.weight -= weight;
        if slot.on_probation() {
            self.probation_weight -= weight;
            self.probation_len -= 1;
        }
        weight
    }

    fn add_weight(&mut self, at: usize, weight: u64) {
        self.weight += weight;
        if self.slots[at].on_probation() {
            self.probation_weight += weight;
            self.probation_len += 1;
        }
    }

    /// Queues a new probationer. Hashes left behind by removals are dropped once they are
    /// as many as the probationers, so a name removed and stored again and again (one that
    /// flips between an answer and a denial) cannot grow the FIFO without bound.
    fn push_probation(&mut self, hash: u64) {
        self.probation.push_back(hash);
        if self.probation.len() > 2 * self.probation_len + 16 {
            let mut seen = std::collections::HashSet::with_capacity(self.probation_len);
            let mut queue = std::mem::take(&mut self.probation);
            queue.retain(|&h| self.find(h).is_some_and(|at| self.slots[at].on_probation()) && seen.insert(h));
            self.probation = queue;
        }
    }

    /// Puts a new tag and entry in the first free slot from the tag's home; its index.
    fn place(&mut self, tag: u64, entry: Entry) -> usize {
        let mut at = self.home(tag);
        while self.slots[at].entry.is_some() {
            at = (at + 1) & self.mask();
        }
        self.slots[at] = Slot { tag: AtomicU64::new(tag), entry: Some(entry) };
        at
    }

    fn remove(&mut self, hash: u64) {
        if let Some(at) = self.find(hash) {
            self.drop_entry(at);
        }
    }

    /// Takes the entry in slot `at` out of the totals and the table.
    fn drop_entry(&mut self, at: usize) {
        self.take_weight(at);
        self.vacate(at);
    }

    /// Empties slot `at` and moves later slots of the probe run back into the gap, so that
    /// every entry stays reachable from its home without tombstones.
    fn vacate(&mut self, mut gap: usize) {
        self.slots[gap] = Slot::default();
        self.len -= 1;
        let mut at = gap;
        loop {
            at = (at + 1) & self.mask();
            if self.slots[at].entry.is_none() {
                return;
            }
            let tag = self.slots[at].tag();
            // The entry at `at` may fill the gap only if its home is not between the gap
            // and it (cyclically): then it would no longer be found from its home.
            let home = self.home(tag);
            if (at.wrapping_sub(home) & self.mask()) >= (at.wrapping_sub(gap) & self.mask()) {
                self.slots.swap(gap, at);
                gap = at;
            }
        }
    }

    fn grow(&mut self) {
        let bigger = empty_slots(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        self.ghost = vec![0; self.slots.len() / 2].into_boxed_slice();
        self.hand = 0;
        for slot in old.into_vec() {
            if let Some(entry) = slot.entry {
                self.place(slot.tag.into_inner(), entry);
            }
        }
    }

    fn main_has_room(&self, weight: u64) -> bool {
        (self.weight - self.probation_weight + weight) * 100 <= self.capacity * (100 - PROBATION_PERCENT)
    }

    #[inline]
    fn ghost_index(&self, hash: u64) -> (usize, u32) {
        ((hash >> FLAG_BITS) as usize & (self.ghost.len() - 1), (hash >> 32) as u32 | 1)
    }

    /// Whether `hash` was evicted from probation lately; forgets it if so.
    fn ghost_forgets(&mut self, hash: u64) -> bool {
        let (at, print) = self.ghost_index(hash);
        let known = self.ghost[at] == print;
        if known {
            self.ghost[at] = 0;
        }
        known
    }

    fn evict_to_bound(&mut self) {
        while self.weight > self.capacity {
            let probation_over = self.probation_weight * 100 > self.capacity * PROBATION_PERCENT;
            if !(probation_over && self.evict_from_probation()) {
                self.evict_from_main();
            }
        }
    }

    /// Takes the oldest probationer out: into the main set if it was asked for, otherwise
    /// out of the shard (remembered by the ghost). False when no probationer is left.
    fn evict_from_probation(&mut self) -> bool {
        while let Some(hash) = self.probation.pop_front() {
            let Some(at) = self.find(hash) else { continue };
            let tag = self.slots[at].tag();
            if tag & PROBATION == 0 {
                continue;
            }
            if tag & REFS != 0 {
                let weight = self.take_weight(at);
                // It keeps its count: asked for, it must not be the hand's next victim.
                self.slots[at].tag.store(tag & !PROBATION, Ordering::Relaxed);
                self.add_weight(at, weight);
            } else {
                self.drop_entry(at);
                self.evictions += 1;
                let (slot, print) = self.ghost_index(hash);
                self.ghost[slot] = print;
            }
            return true;
        }
        false
    }

    /// The CLOCK hand takes out the first main entry not asked for since it last passed;
    /// those asked for lose one count each as it passes.
    fn evict_from_main(&mut self) {
        // Every pass lowers each count, so within four turns some entry is taken.
        for _ in 0..self.slots.len() * 4 + 1 {
            let at = self.hand;
            self.hand = (self.hand + 1) & self.mask();
            let slot = &self.slots[at];
            if slot.entry.is_none() {
                continue;
            }
            let tag = slot.tag();
            if tag & PROBATION != 0 {
                continue;
            }
            if tag & REFS != 0 {
                slot.tag.store(tag - 1, Ordering::Relaxed);
                continue;
            }
            self.drop_entry(at);
            self.evictions += 1;
            // The gap may now hold an entry the hand has not looked at.
            self.hand = at;
            return;
        }
        // Only probationers are left (the probation FIFO was not over its share).
        if !self.evict_from_probation() {
            debug_assert_eq!(self.len, 0, "weight without entries");
            self.weight = 0;
        }
    }

    fn bookkeeping(&self) -> u64 {
        (self.slots.len() * size_of::<Slot>() + self.probation.capacity() * size_of::<u64>() + self.ghost.len() * size_of::<u32>()) as u64
    }
}

fn empty_slots(count: usize) -> Box<[Slot]> {
    (0..count).map(|_| Slot::default()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cache::{KeyRef, TtlPolicy};
    use crate::harness::a_response;
    use crate::wire::{RecordType, UpstreamResponse, name};

    fn key_name(i: usize) -> crate::wire::name::LowerNameBuf {
        name::from_text(&format!("n{i}.example.")).expect("valid name")
    }

    /// The answer to `n{i}.example. A`.
    fn entry(i: usize) -> Entry {
        let wire = key_name(i);
        let msg = a_response(0, &wire, [10, 0, 0, i as u8]);
        let resp = UpstreamResponse::parse(&msg, wire.as_name(), RecordType::A, 1).expect("a valid response");
        Entry::from_response(
            &KeyRef::new(wire.as_name(), RecordType::A, 1, false, false),
            &msg,
            &resp,
            &TtlPolicy::default(),
            Instant::now(),
        )
    }

    fn answers(found: Option<Entry>, i: usize) -> bool {
        found.is_some_and(|e| e.answers(&KeyRef::new(key_name(i).as_name(), RecordType::A, 1, false, false)))
    }

    /// Hashes spread over all 64 bits, as the keyed hash's are.
    fn spread(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn one_shard(max_entries: u64) -> Store {
        let store = Store::new(Capacity { max_entries, max_bytes: max_entries * 1024 });
        assert_eq!(store.shards.len(), 1);
        store
    }

    /// Hashes that all start probing at the same slot: they differ only above the bits
    /// a 16-slot table's index uses.
    fn colliding(n: usize) -> Vec<u64> {
        (0..n).map(|k| ((k as u64 + 1) << 40) | (15 << FLAG_BITS)).collect()
    }

    #[test]
    fn an_entry_is_found_under_its_hash_until_removed_and_a_replacement_keeps_one_slot() {
        let store = one_shard(16);
        store.insert(42 << FLAG_BITS, entry(1));
        assert!(answers(store.get(42 << FLAG_BITS), 1));
        assert!(store.get(43 << FLAG_BITS).is_none());
        let weight = store.weight();
        store.insert(42 << FLAG_BITS, entry(2));
        assert!(answers(store.get(42 << FLAG_BITS), 2));
        assert_eq!((store.len(), store.weight()), (1, weight));
        store.remove(42 << FLAG_BITS);
        assert!(store.get(42 << FLAG_BITS).is_none());
        assert_eq!((store.len(), store.weight()), (0, 0));
    }

    #[test]
    fn the_table_published_for_prefetching_follows_every_growth() {
        let store = one_shard(60);
        let published = |store: &Store| {
            let shard = &store.shards[0];
            let live = shard.read();
            (shard.table.load(Ordering::Relaxed) == live.slots.as_ptr().cast_mut(), shard.slots.load(Ordering::Relaxed) == live.slots.len())
        };
        assert_eq!(published(&store), (true, true));
        for i in 0..50 {
            store.insert(spread(i), entry(i as usize));
            assert_eq!(published(&store), (true, true), "after {} entries", i + 1);
            store.prefetch_slot(spread(i + 1));
        }
        assert!(store.shards[0].read().slots.len() > FIRST_SLOTS, "the table grew");
        assert!(store.prefetch_entry(spread(7)), "a stored entry is there to prefetch");
        assert!(!store.prefetch_entry(spread(50)), "an absent one is not");
    }

    #[test]
    fn entries_probing_past_the_tables_end_stay_reachable_when_others_leave() {
        let store = one_shard(16);
        let hashes = colliding(8);
        for (i, &hash) in hashes.iter().enumerate() {
            store.insert(hash, entry(i));
        }
        // The run starts in the last slot and wraps round; take out its first, a middle
        // and its last entry.
        for gone in [0, 4, 7] {
            store.remove(hashes[gone]);
        }
        for (i, &hash) in hashes.iter().enumerate() {
            assert_eq!(answers(store.get(hash), i), ![0, 4, 7].contains(&i), "entry {i}");
        }
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn weight_and_count_stay_within_the_bound_and_match_what_is_held() {
        let store = Store::new(Capacity { max_entries: 1000, max_bytes: 1 << 30 });
        for i in 0..20_000usize {
            let hash = spread(i as u64);
            store.insert(hash, entry(i));
            if i % 7 == 0 {
                store.remove(hash);
            }
        }
        let held = store.entries();
        assert!(held.len() <= 1000, "{} entries", held.len());
        assert_eq!(held.len(), store.len());
        let floor = (1u64 << 30) / 1000;
        assert_eq!(store.weight(), held.len() as u64 * floor);
        for shard in store.shards.iter() {
            let shard = shard.read();
            let probation: u64 = shard.slots.iter().filter(|s| s.on_probation()).count() as u64;
            assert_eq!(shard.probation_weight, probation * floor);
        }
    }

    /// A 40-entry shard filled with names 1 to 40: 1 to 36 in the main set (its 90%), 37 to
    /// 40 on probation.
    fn full_shard() -> Store {
        let store = one_shard(40);
        for i in 1..=40 {
            store.insert(spread(i), entry(i as usize));
        }
        assert_eq!(store.shards[0].read().probation_weight, 4 * 1024);
        store
    }

    #[test]
    fn a_name_asked_for_on_probation_joins_the_main_set_and_outlives_a_flood() {
        let store = full_shard();
        store.get(spread(38));
        for i in 1_000..3_000 {
            store.insert(spread(i), entry(i as usize));
        }
        assert!(answers(store.get(spread(38)), 38));
        assert!(store.get(spread(37)).is_none(), "a probationer never asked for");
        let main = (1..=36).filter(|&i| answers(store.get(spread(i)), i as usize)).count();
        assert_eq!(main, 35, "one of the main set made room for the name promoted, no more");
    }

    #[test]
    fn a_probationer_evicted_unasked_is_remembered_by_the_ghost_once() {
        let store = full_shard();
        store.insert(spread(41), entry(41));
        assert!(store.get(spread(37)).is_none(), "the oldest probationer left");
        let mut shard = store.shards[0].write();
        assert!(shard.ghost_forgets(spread(37)));
        assert!(!shard.ghost_forgets(spread(37)));
        assert!(!shard.ghost_forgets(spread(38)));
    }

    #[test]
    fn a_name_removed_and_stored_again_and_again_does_not_grow_the_probation_fifo() {
        let store = full_shard();
        for _ in 0..10_000 {
            store.remove(spread(99));
            store.insert(spread(99), entry(99));
        }
        let shard = store.shards[0].read();
        assert!(shard.probation.len() <= 2 * shard.probation_len + 17, "{} hashes queued", shard.probation.len());
        assert_eq!(shard.probation_len, 4, "38 to 40 and 99 (37 made room for it)");
    }

    #[test]
    fn evictions_count_entries_taken_out_for_room_and_nothing_else() {
        let store = full_shard();
        assert_eq!(store.evictions(), 0, "filling up to the bound evicts nothing");
        store.remove(spread(1));
        store.insert(spread(2), entry(2));
        assert_eq!(store.evictions(), 0, "a removal and a replacement are not evictions");
        store.insert(spread(1), entry(1));
        for i in 41..=60 {
            store.insert(spread(i), entry(i as usize));
        }
        assert_eq!(store.evictions(), 20, "one out for each of 20 new names past the bound");
        assert_eq!(store.len(), 40);
    }

    #[test]
    fn an_entry_heavier_than_the_bound_is_not_stored() {
        let store = Store::new(Capacity { max_entries: 1, max_bytes: 64 });
        store.insert(8, entry(1));
        assert_eq!(store.len(), 0);
        assert_eq!(store.weight(), 0);
    }
}

//! A stored response and the one thing done with it on a hit: writing it out for a client
//! with that client's ID, flags, question case and EDNS, and TTLs aged by the time spent in
//! the cache. Writing copies the stored octets once and patches fixed offsets; no parsing.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use triomphe::ThinArc;

use crate::wire::compose::{self, OPT_LEN};
use crate::wire::header::{Flags, HEADER_LEN, Header};
use crate::wire::name::{self, MAX_NAME};
use crate::wire::{Query, Rcode, RecordType, UpstreamResponse, read_u16};

use super::{CacheKey, KeyRef, TtlPolicy};

/// Which bound and which metric label an entry counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Records were returned (CoreDNS's cache `type="success"`).
    Positive = 0,
    /// NXDOMAIN or NODATA with an SOA (`type="denial"`, RFC 2308).
    Negative = 1,
    /// The upstream said SERVFAIL, REFUSED, NOTIMP or FORMERR: kept `servfail_ttl`, so that
    /// neither a broken zone nor a client asking in a loop hammers the upstream.
    Failure = 2,
    /// Passed to the waiting clients but never stored (truncated, zero TTL, no SOA...).
    Uncacheable = 3,
}

/// A response in wire form without its OPT record, ready to be written for any client that
/// asked the same question. A cheap handle: clones share one allocation, which holds the
/// fixed fields, the TTL offsets and the message together (one allocation per cached answer
/// is what keeps an entry near 100 octets; see docs/ARCHITECTURE.md, "Memory").
#[derive(Clone)]
pub struct Entry(ThinArc<Meta, u8>);

/// The fixed part of an entry, in front of its octets: `ttl_count` native-endian `u16`
/// offsets of the TTLs in the message, then the message. 24 octets: with the reference
/// count and the slice length, a single-A answer's allocation is 96 octets, one of the
/// allocator's size classes.
struct Meta {
    /// See [`clock`].
    stored_at: u64,
    lifetime: u32,
    /// Seconds from `stored_at` to when the upstream's answer expired (or will); negative
    /// for a stale copy, whose bound on serving stale counts from its original's expiry.
    first_expiry: i32,
    /// Age (seconds) from which hits count towards a refresh; `u32::MAX`: never refreshed.
    refresh_from_age: u32,
    ttl_count: u16,
    /// Saturates at 255: `prefetch.min_hits` is at most that.
    near_expiry_hits: AtomicU8,
    /// The question's DO and CD bits (the message cannot show them), [`STALE`] and the
    /// [`Kind`] from bit [`KIND_SHIFT`] on.
    flags: u8,
}

const _: () = assert!(size_of::<Meta>() == 24);

/// Served because the upstream failed, past its original expiry.
const STALE: u8 = 1 << 2;
const KIND_SHIFT: u8 = 3;
const KEY_BITS: u8 = 0b11;

/// Nanoseconds from a fixed point long before this process started to `at`: eight octets
/// where an `Instant` takes sixteen.
#[inline]
fn clock(at: Instant) -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(1 << 32)).unwrap_or(now)
    });
    at.saturating_duration_since(*EPOCH).as_nanos() as u64
}

const NANOS: u64 = 1_000_000_000;

/// What an entry is built from besides the message.
struct Build<'a> {
    key_bits: u8,
    kind: Kind,
    lifetime: u32,
    first_expiry: i64,
    stale: bool,
    /// Every TTL is written as this, if set; otherwise as the policy and the age allow.
    ttl: Option<u32>,
    age: u32,
    policy: &'a TtlPolicy,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meta = self.meta();
        f.debug_struct("Entry")
            .field("kind", &self.kind())
            .field("lifetime", &meta.lifetime)
            .field("stale", &self.is_stale())
            .field("len", &self.wire().len())
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Builds the entry answering `key` from a validated upstream response, applying the TTL
    /// policy: record TTLs are clamped into the policy's range and an entry lives as long as
    /// its shortest.
    pub fn from_response(key: &KeyRef<'_>, msg: &[u8], resp: &UpstreamResponse, policy: &TtlPolicy, now: Instant) -> Entry {
        let (kind, lifetime) = classify(resp, policy);
        let build = Build { key_bits: key.bits(), kind, lifetime, first_expiry: lifetime.into(), stale: false, ttl: None, age: 0, policy };
        Entry::build(&build, &msg[..resp.kept_len], resp.kept_arcount, &resp.ttl_offsets, now)
    }

    /// This entry as a stale answer (RFC 8767): every TTL `stale_ttl`, fresh for that long
    /// from `now`, still remembering when the upstream's answer first expired.
    pub fn stale_copy(&self, policy: &TtlPolicy, now: Instant) -> Entry {
        let meta = self.meta();
        let lifetime = policy.stale_ttl.max(1);
        let first_expiry = i64::from(meta.first_expiry) - i64::from(self.age(now));
        let build = Build {
            key_bits: meta.flags & KEY_BITS,
            kind: self.kind(),
            lifetime,
            first_expiry,
            stale: true,
            ttl: Some(lifetime),
            age: 0,
            policy,
        };
        let wire = self.wire();
        let offsets: Vec<u16> = self.ttl_offsets().map(|at| at as u16).collect();
        Entry::build(&build, wire, u16::from_be_bytes([wire[10], wire[11]]), &offsets, now)
    }

    /// The entry answering `key` read back from a snapshot: `msg` as it was stored, now
    /// `age` seconds old, its upstream answer expiring (or expired) `first_expiry` seconds
    /// from `now`. Past its life it is kept as a candidate for serving stale only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn restored(
        key: &KeyRef<'_>,
        msg: &[u8],
        resp: &UpstreamResponse,
        policy: &TtlPolicy,
        now: Instant,
        age: u32,
        first_expiry: i64,
        stale: bool,
    ) -> Entry {
        let (kind, lifetime) = classify(resp, policy);
        let build =
            Build { key_bits: key.bits(), kind, lifetime: lifetime.saturating_sub(age), first_expiry, stale, ttl: None, age, policy };
        Entry::build(&build, &msg[..resp.kept_len], resp.kept_arcount, &resp.ttl_offsets, now)
    }

    fn build(b: &Build<'_>, wire: &[u8], arcount: u16, ttl_offsets: &[u16], now: Instant) -> Entry {
        let mut octets = Vec::with_capacity(ttl_offsets.len() * 2 + wire.len());
        for at in ttl_offsets {
            octets.extend_from_slice(&at.to_ne_bytes());
        }
        let wire_at = octets.len();
        octets.extend_from_slice(wire);
        let wire = &mut octets[wire_at..];
        wire[10..12].copy_from_slice(&arcount.to_be_bytes());
        for &at in ttl_offsets {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes([wire[at], wire[at + 1], wire[at + 2], wire[at + 3]]);
            let ttl = match (b.ttl, b.kind) {
                (Some(ttl), _) => ttl,
                (None, Kind::Positive) => ttl.clamp(b.policy.positive_min_ttl, b.policy.positive_max_ttl).saturating_sub(b.age),
                // RFC 2308 section 5: the negative answer's records all carry the negative TTL.
                (None, Kind::Negative | Kind::Failure) => b.lifetime,
                (None, Kind::Uncacheable) => ttl,
            };
            wire[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        let meta = Meta {
            stored_at: clock(now),
            lifetime: b.lifetime,
            first_expiry: b.first_expiry.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
            refresh_from_age: refresh_from_age(b.kind, b.lifetime, b.policy),
            ttl_count: ttl_offsets.len() as u16,
            near_expiry_hits: AtomicU8::new(0),
            flags: b.key_bits | if b.stale { STALE } else { 0 } | (b.kind as u8) << KIND_SHIFT,
        };
        Entry(ThinArc::from_header_and_slice(meta, &octets))
    }

    #[inline]
    fn meta(&self) -> &Meta {
        &self.0.header.header
    }

    /// Offsets of the record TTLs in [`Entry::wire`].
    #[inline]
    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let count = usize::from(self.meta().ttl_count);
        self.0.slice[..count * 2].chunks_exact(2).map(|at| usize::from(u16::from_ne_bytes([at[0], at[1]])))
    }

    /// Whether this entry answers `key`: its question and bits are the key's. The store is
    /// indexed by a hash of the key, so this is what makes a hit exact.
    #[inline]
    pub(super) fn answers(&self, key: &KeyRef<'_>) -> bool {
        let name = key.name().as_bytes();
        let Some(question) = self.wire().get(HEADER_LEN..HEADER_LEN + name.len() + 4) else { return false };
        let (qname, rest) = question.split_at(name.len());
        self.meta().flags & KEY_BITS == key.bits()
            && rest[..2] == key.qtype().to_be_bytes()
            && rest[2..] == key.qclass().to_be_bytes()
            && qname.eq_ignore_ascii_case(name)
    }

    /// The key this entry answers (for snapshots, which store it beside the message).
    pub(super) fn key(&self) -> Option<CacheKey> {
        let wire = self.wire();
        let mut lower = [0u8; MAX_NAME];
        let (end, lowered) = name::read_lowercased(wire, HEADER_LEN, &mut lower).ok()?;
        let (qtype, qclass) = (RecordType(read_u16(wire, end)?), read_u16(wire, end + 2)?);
        Some(KeyRef::with_bits(lowered, qtype, qclass, self.meta().flags & KEY_BITS).to_owned())
    }

    /// Whole seconds since the entry was stored (its TTLs as stored are this much too high).
    pub(super) fn age(&self, now: Instant) -> u32 {
        (clock(now).saturating_sub(self.meta().stored_at) / NANOS).min(u64::from(u32::MAX)) as u32
    }

    /// Seconds from `now` to when the upstream's answer expired (negative) or will.
    pub(super) fn expires_in(&self, now: Instant) -> i64 {
        i64::from(self.meta().first_expiry) - i64::from(self.age(now))
    }

    /// Whether this is a stale copy, served past the upstream's TTL.
    pub fn is_stale(&self) -> bool {
        self.meta().flags & STALE != 0
    }

    /// How long ago the upstream's answer expired, if this entry is no longer fresh.
    pub fn expired_for(&self, now: Instant) -> Option<Duration> {
        let meta = self.meta();
        let expiry = i128::from(meta.stored_at) + i128::from(meta.first_expiry) * i128::from(NANOS);
        match self.age_if_fresh(now) {
            Some(_) => None,
            None => Some(Duration::from_nanos((i128::from(clock(now)) - expiry).clamp(0, u64::MAX.into()) as u64)),
        }
    }

    /// Counts a hit at `age` seconds; true for exactly one hit per entry: the
    /// `min_hits`-th in the refresh window (1 to 255), which should start the refresh.
    #[inline]
    pub fn hit_starts_refresh(&self, age: u32, min_hits: u32) -> bool {
        let meta = self.meta();
        if age < meta.refresh_from_age {
            return false;
        }
        let min_hits = min_hits.clamp(1, u32::from(u8::MAX));
        let counted = meta.near_expiry_hits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |hits| hits.checked_add(1));
        counted.is_ok_and(|before| u32::from(before) + 1 == min_hits)
    }

    /// The stored message: header, question and records, without OPT, TTLs as stored.
    #[inline]
    pub fn wire(&self) -> &[u8] {
        &self.0.slice[usize::from(self.meta().ttl_count) * 2..]
    }

    pub fn kind(&self) -> Kind {
        match self.meta().flags >> KIND_SHIFT {
            0 => Kind::Positive,
            1 => Kind::Negative,
            2 => Kind::Failure,
            _ => Kind::Uncacheable,
        }
    }

    pub fn rcode(&self) -> Rcode {
        Rcode(self.wire()[3] & 0xf)
    }

    /// Whole seconds since the entry was stored, if it is still fresh at `now`.
    #[inline]
    pub fn age_if_fresh(&self, now: Instant) -> Option<u32> {
        let meta = self.meta();
        let age = clock(now).saturating_sub(meta.stored_at) / NANOS;
        (age < u64::from(meta.lifetime)).then_some(age as u32)
    }

    /// Seconds of freshness left at `now`, if any.
    pub fn ttl_left(&self, now: Instant) -> Option<u32> {
        self.age_if_fresh(now).map(|age| self.meta().lifetime - age)
    }

    /// The most octets [`Entry::write_for`] can write for any client.
    pub fn max_response_len(&self) -> usize {
        (self.wire().len() + OPT_LEN).max(compose::MAX_COMPOSED)
    }

    /// Octets this entry's allocation occupies (reference count, fixed part, slice length,
    /// octets), for the cache's byte bound.
    pub fn footprint(&self) -> usize {
        size_of::<usize>() * 2 + size_of::<Meta>() + self.0.slice.len()
    }

    /// Where the entry's one allocation starts: what to prefetch.
    pub(super) fn start(&self) -> *const u8 {
        self.0.ptr().cast()
    }

    /// Writes the response for `client` into `out`, TTLs reduced by `age` seconds. If it
    /// would exceed `limit` octets, writes an empty truncated response instead so the client
    /// retries over TCP (RFC 7766). Returns the length written.
    #[inline]
    pub fn write_for(&self, client: &Query<'_>, age: u32, our_payload: u16, limit: usize, out: &mut [u8]) -> usize {
        let opt_len = if client.edns.is_some() { OPT_LEN } else { 0 };
        let flags = self.flags_for(client);
        let wire = self.wire();
        if wire.len() + opt_len > limit {
            return self.write_truncated(client, flags, our_payload, out);
        }
        let len = wire.len();
        out[..len].copy_from_slice(wire);
        out[0..2].copy_from_slice(&client.header.id.to_be_bytes());
        out[2..4].copy_from_slice(&flags.0.to_be_bytes());
        // Same question, so the same length: restore the client's letter case (0x20 users
        // such as some resolvers check it, and it is what a plain server would echo).
        out[HEADER_LEN..HEADER_LEN + client.qname.len()].copy_from_slice(client.qname);
        if age > 0 {
            for at in self.ttl_offsets() {
                let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
                out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
        }
        match client.edns {
            Some(edns) => {
                let arcount = u16::from_be_bytes([out[10], out[11]]) + 1;
                out[10..12].copy_from_slice(&arcount.to_be_bytes());
                len + compose::opt(&mut out[len..], our_payload, edns.dnssec_ok, 0)
            }
            None => len,
        }
    }

    fn write_truncated(&self, client: &Query<'_>, flags: Flags, our_payload: u16, out: &mut [u8]) -> usize {
        let header = Header {
            id: client.header.id,
            flags: flags.with(Flags::TC, true),
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: u16::from(client.edns.is_some()),
        };
        header.compose(out);
        let mut pos = HEADER_LEN;
        out[pos..pos + client.question.len()].copy_from_slice(client.question);
        pos += client.question.len();
        if let Some(edns) = client.edns {
            pos += compose::opt(&mut out[pos..], our_payload, edns.dnssec_ok, 0);
        }
        pos
    }

    /// The client's RD and CD, our RA, the upstream's rcode and TC; AD only when the client
    /// showed it understands it (RFC 6840 section 5.8). AA is dropped: a cache is not the
    /// authority.
    #[inline]
    fn flags_for(&self, client: &Query<'_>) -> Flags {
        let wire = self.wire();
        let stored = Flags(u16::from_be_bytes([wire[2], wire[3]]));
        let asked = client.header.flags;
        let ad_ok = asked.has(Flags::AD) || client.edns.is_some_and(|e| e.dnssec_ok);
        let kept = stored.0 & (Flags::TC | 0xf | if ad_ok { Flags::AD } else { 0 });
        Flags(kept | Flags::QR | Flags::RA | (asked.0 & (Flags::RD | Flags::CD)))
    }
}

/// The age from which hits count towards refreshing an entry: the last
/// `prefetch_percent` of its life, at least its last second. Entries living under two
/// seconds, SERVFAILs and uncacheable answers are never refreshed ahead.
fn refresh_from_age(kind: Kind, lifetime: u32, policy: &TtlPolicy) -> u32 {
    if policy.prefetch_percent == 0 || lifetime < 2 || !matches!(kind, Kind::Positive | Kind::Negative) {
        return u32::MAX;
    }
    let window = (u64::from(lifetime) * u64::from(policy.prefetch_percent.min(100)) / 100).max(1) as u32;
    lifetime - window.min(lifetime - 1)
}

/// Decides how an upstream response is kept, and for how long.
/// The answers that say "not from this server" rather than anything about the name.
fn is_failure(rcode: Rcode) -> bool {
    matches!(rcode, Rcode::SERVFAIL | Rcode::REFUSED | Rcode::NOTIMP | Rcode::FORMERR)
}

fn classify(resp: &UpstreamResponse, policy: &TtlPolicy) -> (Kind, u32) {
    if resp.is_truncated() {
        return (Kind::Uncacheable, 0);
    }
    let rcode = resp.rcode();
    let (kind, lifetime) = if is_failure(rcode) {
        (Kind::Failure, policy.servfail_ttl)
    } else if rcode == Rcode::NXDOMAIN || (rcode == Rcode::NOERROR && resp.header.ancount == 0) {
        match resp.soa_negative_ttl {
            Some(ttl) => (Kind::Negative, ttl.clamp(policy.negative_min_ttl, policy.negative_max_ttl)),
            // No SOA: RFC 2308 section 5 says such answers should not be cached (a referral
            // also lands here).
            None => (Kind::Uncacheable, 0),
        }
    } else if rcode == Rcode::NOERROR && resp.rcode == 0 {
        let ttl = resp.min_ttl.unwrap_or(0);
        (Kind::Positive, ttl.clamp(policy.positive_min_ttl, policy.positive_max_ttl))
    } else {
        (Kind::Uncacheable, 0)
    };
    if lifetime == 0 { (Kind::Uncacheable, 0) } else { (kind, lifetime) }
}

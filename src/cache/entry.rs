//! A stored response and the one thing done with it on a hit: writing it out for a client
//! with that client's ID, flags, question case and EDNS, and TTLs aged by the time spent in
//! the cache. Writing copies the stored octets once and patches fixed offsets; no parsing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::wire::compose::{self, OPT_LEN};
use crate::wire::header::{Flags, HEADER_LEN, Header};
use crate::wire::{Query, Rcode, UpstreamResponse};

use super::TtlPolicy;

/// Which bound and which metric label an entry counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Records were returned (CoreDNS's cache `type="success"`).
    Positive,
    /// NXDOMAIN or NODATA with an SOA (`type="denial"`, RFC 2308).
    Negative,
    /// The upstream said SERVFAIL; kept briefly so a broken zone is not hammered.
    ServFail,
    /// Passed to the waiting clients but never stored (truncated, zero TTL, no SOA...).
    Uncacheable,
}

/// A response in wire form without its OPT record, ready to be written for any client that
/// asked the same question.
#[derive(Debug)]
pub struct Entry {
    wire: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    stored_at: Instant,
    lifetime: u32,
    /// When the upstream's answer expired (or will): a stale copy keeps its original's, so
    /// the bound on serving stale counts from there.
    first_expiry: Instant,
    /// Age (seconds) from which hits count towards a refresh; `u32::MAX`: never refreshed.
    refresh_from_age: u32,
    near_expiry_hits: AtomicU32,
    kind: Kind,
    /// Served because the upstream failed, past its original expiry.
    stale: bool,
}

impl Entry {
    /// Builds an entry from a validated upstream response, applying the TTL policy: record
    /// TTLs are clamped into the policy's range and an entry lives as long as its shortest.
    pub fn from_response(msg: &[u8], resp: &UpstreamResponse, policy: &TtlPolicy, now: Instant) -> Entry {
        let mut wire: Box<[u8]> = msg[..resp.kept_len].into();
        wire[10..12].copy_from_slice(&resp.kept_arcount.to_be_bytes());
        let (kind, lifetime) = classify(resp, policy);
        for &at in &resp.ttl_offsets {
            let at = usize::from(at);
            let ttl = u32::from_be_bytes([wire[at], wire[at + 1], wire[at + 2], wire[at + 3]]);
            let ttl = match kind {
                Kind::Positive => ttl.clamp(policy.positive_min_ttl, policy.positive_max_ttl),
                // RFC 2308 section 5: the negative answer's records all carry the negative TTL.
                Kind::Negative | Kind::ServFail => lifetime,
                Kind::Uncacheable => ttl,
            };
            wire[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
        }
        Entry {
            wire,
            ttl_offsets: resp.ttl_offsets.clone().into(),
            stored_at: now,
            lifetime,
            first_expiry: now + Duration::from_secs(lifetime.into()),
            refresh_from_age: refresh_from_age(kind, lifetime, policy),
            near_expiry_hits: AtomicU32::new(0),
            kind,
            stale: false,
        }
    }

    /// This entry as a stale answer (RFC 8767): every TTL `stale_ttl`, fresh for that long
    /// from `now`, still remembering when the upstream's answer first expired.
    pub fn stale_copy(&self, policy: &TtlPolicy, now: Instant) -> Entry {
        let lifetime = policy.stale_ttl.max(1);
        let mut wire = self.wire.clone();
        for &at in self.ttl_offsets.iter() {
            let at = usize::from(at);
            wire[at..at + 4].copy_from_slice(&lifetime.to_be_bytes());
        }
        Entry {
            wire,
            ttl_offsets: self.ttl_offsets.clone(),
            stored_at: now,
            lifetime,
            first_expiry: self.first_expiry,
            refresh_from_age: refresh_from_age(self.kind, lifetime, policy),
            near_expiry_hits: AtomicU32::new(0),
            kind: self.kind,
            stale: true,
        }
    }

    /// An entry read back from a snapshot: `msg` as it was stored, now `age` seconds old,
    /// its upstream answer expiring (or expired) at `first_expiry`. Past its life it is kept
    /// as a candidate for serving stale only.
    pub(super) fn restored(msg: &[u8], resp: &UpstreamResponse, policy: &TtlPolicy, now: Instant, age: u32, first_expiry: Instant, stale: bool) -> Entry {
        let mut entry = Entry::from_response(msg, resp, policy, now);
        if age < entry.lifetime {
            for &at in entry.ttl_offsets.iter() {
                let at = usize::from(at);
                let ttl = u32::from_be_bytes([entry.wire[at], entry.wire[at + 1], entry.wire[at + 2], entry.wire[at + 3]]);
                entry.wire[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
            entry.lifetime -= age;
        } else {
            entry.lifetime = 0;
        }
        entry.refresh_from_age = refresh_from_age(entry.kind, entry.lifetime, policy);
        entry.first_expiry = first_expiry;
        entry.stale = stale;
        entry
    }

    /// Whole seconds since the entry was stored (its TTLs as stored are this much too high).
    pub(super) fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored_at).as_secs().min(u64::from(u32::MAX)) as u32
    }

    pub(super) fn first_expiry(&self) -> Instant {
        self.first_expiry
    }

    /// Whether this is a stale copy, served past the upstream's TTL.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// How long ago the upstream's answer expired, if this entry is no longer fresh.
    pub fn expired_for(&self, now: Instant) -> Option<Duration> {
        match self.age_if_fresh(now) {
            Some(_) => None,
            None => Some(now.saturating_duration_since(self.first_expiry)),
        }
    }

    /// Counts a hit at `age` seconds; true for exactly one hit per entry: the
    /// `min_hits`-th in the refresh window, which should start the refresh.
    #[inline]
    pub fn hit_starts_refresh(&self, age: u32, min_hits: u32) -> bool {
        age >= self.refresh_from_age && self.near_expiry_hits.fetch_add(1, Ordering::Relaxed).wrapping_add(1) == min_hits.max(1)
    }

    /// The stored message: header, question and records, without OPT, TTLs as stored.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn rcode(&self) -> Rcode {
        Rcode(self.wire[3] & 0xf)
    }

    /// Whole seconds since the entry was stored, if it is still fresh at `now`.
    #[inline]
    pub fn age_if_fresh(&self, now: Instant) -> Option<u32> {
        let age = now.saturating_duration_since(self.stored_at).as_secs();
        (age < u64::from(self.lifetime)).then_some(age as u32)
    }

    /// Seconds of freshness left at `now`, if any.
    pub fn ttl_left(&self, now: Instant) -> Option<u32> {
        self.age_if_fresh(now).map(|age| self.lifetime - age)
    }

    /// The most octets [`Entry::write_for`] can write for any client.
    pub fn max_response_len(&self) -> usize {
        (self.wire.len() + OPT_LEN).max(compose::MAX_COMPOSED)
    }

    /// Octets this entry occupies, for the cache's byte bound.
    pub fn footprint(&self) -> usize {
        self.wire.len() + self.ttl_offsets.len() * 2 + size_of::<Self>()
    }

    /// Writes the response for `client` into `out`, TTLs reduced by `age` seconds. If it
    /// would exceed `limit` octets, writes an empty truncated response instead so the client
    /// retries over TCP (RFC 7766). Returns the length written.
    #[inline]
    pub fn write_for(&self, client: &Query<'_>, age: u32, our_payload: u16, limit: usize, out: &mut [u8]) -> usize {
        let opt_len = if client.edns.is_some() { OPT_LEN } else { 0 };
        let flags = self.flags_for(client);
        if self.wire.len() + opt_len > limit {
            return self.write_truncated(client, flags, our_payload, out);
        }
        let len = self.wire.len();
        out[..len].copy_from_slice(&self.wire);
        out[0..2].copy_from_slice(&client.header.id.to_be_bytes());
        out[2..4].copy_from_slice(&flags.0.to_be_bytes());
        // Same question, so the same length: restore the client's letter case (0x20 users
        // such as some resolvers check it, and it is what a plain server would echo).
        out[HEADER_LEN..HEADER_LEN + client.qname.len()].copy_from_slice(client.qname);
        if age > 0 {
            for &at in self.ttl_offsets.iter() {
                let at = usize::from(at);
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
        let stored = Flags(u16::from_be_bytes([self.wire[2], self.wire[3]]));
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
fn classify(resp: &UpstreamResponse, policy: &TtlPolicy) -> (Kind, u32) {
    if resp.is_truncated() {
        return (Kind::Uncacheable, 0);
    }
    let rcode = resp.rcode();
    let (kind, lifetime) = if rcode == Rcode::SERVFAIL {
        (Kind::ServFail, policy.servfail_ttl)
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

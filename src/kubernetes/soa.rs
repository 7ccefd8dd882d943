//! The SOA records local denials carry, learned from the upstreams.
//!
//! A denial must look like the one the upstream would have sent: same zone apex, same SOA,
//! so the client caches it for the same negative TTL (RFC 2308). Rather than guess, nodedns
//! asks the upstream for the SOA of each configured zone (the answer, or the authority SOA
//! of the enclosing zone when the suffix is not an apex) and refreshes it when its TTL runs
//! out. Until a zone's SOA is known its queries are simply forwarded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::{Entry, KeyRef, TtlPolicy};
use crate::forward::Forwarder;
use crate::wire::header::{Flags, HEADER_LEN, Header, Rcode};
use crate::wire::name::{self, MAX_NAME};
use crate::wire::{RecordType, UpstreamResponse, record};
use crate::zones::Zone;

/// One SOA record, uncompressed wire form, and whether its source answered authoritatively.
#[derive(Debug, PartialEq, Eq)]
pub struct Soa {
    record: Box<[u8]>,
    authoritative: bool,
    ttl: u32,
}

/// How long a failed SOA lookup waits before the next try.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Slot {
    soa: Option<Arc<Soa>>,
    /// When to ask again: at the SOA's TTL, or [`RETRY`] after a failure.
    refresh_at: Option<Instant>,
    fetching: bool,
}

/// The learned SOA of every zone of [`super::Naming::zones`], by index.
pub struct SoaBook {
    zones: Vec<Zone>,
    slots: Vec<Mutex<Slot>>,
}

impl SoaBook {
    pub fn new(zones: &[Zone]) -> Arc<SoaBook> {
        Arc::new(SoaBook { zones: zones.to_vec(), slots: zones.iter().map(|_| Mutex::default()).collect() })
    }

    /// Asks for every zone's SOA now, so the first junk query is already answered locally.
    pub fn learn_all(self: &Arc<Self>, forwarder: &Arc<Forwarder>) {
        for zone in 0..self.zones.len() {
            self.get(zone, Instant::now(), forwarder);
        }
    }

    /// Whether zone `zone`'s SOA is known, without asking for it.
    pub fn knows(&self, zone: usize) -> bool {
        self.slots[zone].lock().unwrap_or_else(PoisonError::into_inner).soa.is_some()
    }

    /// The SOA of zone `zone` if known (even past its TTL: SOAs rarely change, and a
    /// refresh is started then).
    pub fn get(self: &Arc<Self>, zone: usize, now: Instant, forwarder: &Arc<Forwarder>) -> Option<Arc<Soa>> {
        let mut slot = self.slots[zone].lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.fetching && slot.refresh_at.is_none_or(|at| now >= at) {
            slot.fetching = self.start_fetch(zone, forwarder);
        }
        slot.soa.clone()
    }

    /// Spawns the lookup of zone `zone`'s SOA; false when there is no runtime to run it on.
    /// This is called from the synchronous hot path, which harnesses and benchmarks drive off
    /// any runtime, where `tokio::spawn` would panic. The slot then stays unfetched, so the
    /// first call made on a runtime starts the lookup.
    fn start_fetch(self: &Arc<Self>, zone: usize, forwarder: &Arc<Forwarder>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        let (book, forwarder) = (self.clone(), forwarder.clone());
        runtime.spawn(async move { book.fetch(zone, &forwarder).await });
        true
    }

    async fn fetch(&self, zone: usize, forwarder: &Arc<Forwarder>) {
        let key = KeyRef::new(self.zones[zone].wire(), RecordType::SOA, 1, false, false).to_owned();
        let learned = match forwarder.resolve(key).await {
            Ok(answer) => Soa::from_message(answer.entry.wire()),
            Err(_) => None,
        };
        if learned.is_none() {
            tracing::warn!(zone = %self.zones[zone], "no SOA learned from the upstream; queries under it are forwarded");
        }
        let mut slot = self.slots[zone].lock().unwrap_or_else(PoisonError::into_inner);
        slot.fetching = false;
        let wait = learned.as_ref().map_or(RETRY, |soa| Duration::from_secs(u64::from(soa.ttl.max(5))));
        slot.refresh_at = Some(Instant::now() + wait);
        if let Some(soa) = learned {
            slot.soa = Some(Arc::new(soa));
        }
    }
}

impl Soa {
    /// The first SOA record in the answer or authority section of `msg`, expanded.
    pub fn from_message(msg: &[u8]) -> Option<Soa> {
        let header = Header::parse(msg)?;
        let mut pos = name::skip(msg, HEADER_LEN).ok()? + 4;
        for _ in 0..u32::from(header.ancount) + u32::from(header.nscount) {
            let rec = record::read(msg, pos)?;
            if rec.rtype == RecordType::SOA {
                return Soa::expand(msg, rec.owner, rec.ttl, rec.rdata_start, rec.end, header.flags.has(Flags::AA));
            }
            pos = rec.end;
        }
        None
    }

    fn expand(msg: &[u8], owner_at: usize, ttl: u32, rdata: usize, end: usize, authoritative: bool) -> Option<Soa> {
        let mut buf = [0u8; MAX_NAME];
        let mut record = Vec::with_capacity(2 * MAX_NAME + 40);
        let (_, owner) = name::expand_lowercased(msg, owner_at, &mut buf).ok()?;
        record.extend_from_slice(owner.as_bytes());
        record.extend_from_slice(&RecordType::SOA.to_be_bytes());
        record.extend_from_slice(&1u16.to_be_bytes());
        record.extend_from_slice(&ttl.to_be_bytes());
        let rdlen_at = record.len();
        record.extend_from_slice(&[0, 0]);
        let (after_mname, mname) = name::expand_lowercased(msg, rdata, &mut buf).ok()?;
        record.extend_from_slice(mname.as_bytes());
        let (after_rname, rname) = name::expand_lowercased(msg, after_mname, &mut buf).ok()?;
        record.extend_from_slice(rname.as_bytes());
        // Serial, refresh, retry, expire, minimum.
        if end != after_rname + 20 {
            return None;
        }
        record.extend_from_slice(&msg[after_rname..end]);
        let rdlen = (record.len() - rdlen_at - 2) as u16;
        record[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        Some(Soa { record: record.into(), authoritative, ttl })
    }

    /// A cache entry answering `key` with `rcode` and this SOA in the authority section, as
    /// the upstream would have.
    pub fn denial(&self, key: &KeyRef<'_>, rcode: Rcode, policy: &TtlPolicy, now: Instant) -> Option<Entry> {
        let (qname, qtype, qclass) = (key.name(), key.qtype(), key.qclass());
        let flags = Flags(Flags::QR | Flags::RD | Flags::RA).with(Flags::AA, self.authoritative).with_rcode(rcode);
        let mut msg = vec![0u8; HEADER_LEN + qname.as_bytes().len() + 4 + self.record.len()];
        Header { id: 0, flags, qdcount: 1, ancount: 0, nscount: 1, arcount: 0 }.compose(&mut msg);
        let mut pos = HEADER_LEN;
        for part in [qname.as_bytes(), &qtype.to_be_bytes(), &qclass.to_be_bytes(), &self.record] {
            msg[pos..pos + part.len()].copy_from_slice(part);
            pos += part.len();
        }
        let response = UpstreamResponse::parse(&msg, qname, qtype, qclass).ok()?;
        Some(Entry::from_response(key, &msg, &response, policy, now))
    }
}

/// `cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5`
/// as CoreDNS sends it, the SOA names compressed against the question. For tests and fuzzing.
#[doc(hidden)]
pub fn example_soa_answer() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
    m.extend_from_slice(b"\x07cluster\x05local\x00\x00\x06\x00\x01");
    m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 30]);
    let mut rdata = b"\x02ns\x03dns\xc0\x0c\x0ahostmaster\xc0\x0c".to_vec();
    for v in [1u32, 7200, 1800, 86400, 5] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_soa_answer_is_expanded_and_denials_carry_it_with_the_negative_ttl() {
        let soa = Soa::from_message(&example_soa_answer()).expect("SOA found");
        assert!(soa.authoritative);
        let qname = name::from_text("api.example.com.default.svc.cluster.local.").unwrap();
        let policy = TtlPolicy { negative_max_ttl: 3600, ..TtlPolicy::default() };
        let entry = soa
            .denial(&KeyRef::new(qname.as_name(), crate::wire::RecordType(1), 1, false, false), Rcode::NXDOMAIN, &policy, Instant::now())
            .expect("valid message");
        assert_eq!(entry.kind(), crate::cache::Kind::Negative);
        assert_eq!(entry.rcode(), Rcode::NXDOMAIN);
        let parsed = hickory_proto::op::Message::from_vec(entry.wire()).expect("hickory reads it");
        let auth = &parsed.authorities[0];
        assert_eq!(auth.name.to_string(), "cluster.local.");
        assert_eq!(auth.ttl, 5, "min(SOA TTL, MINIMUM)");
        let text = auth.data.to_string();
        assert!(text.contains("ns.dns.cluster.local.") && text.contains("hostmaster.cluster.local."), "{text}");
    }

    fn forwarder_to_nowhere() -> Arc<Forwarder> {
        use crate::forward::{ForwardSettings, Policy};
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let settings = ForwardSettings {
            deadline: Duration::from_secs(1),
            policy: Policy::Sequential,
            max_attempts: 1,
            loop_probe_interval: Duration::ZERO,
        };
        Forwarder::new(crate::zones::Router::new([]), crate::harness::cache_for(16), settings, metrics)
    }

    #[test]
    fn asking_for_an_soa_off_a_runtime_does_not_panic_and_a_runtime_fetches_it_later() {
        let book = SoaBook::new(&["cluster.local".parse().unwrap()]);
        let forwarder = forwarder_to_nowhere();
        assert_eq!(book.get(0, Instant::now(), &forwarder), None, "nothing learned, no panic");
        assert!(!book.slots[0].lock().unwrap().fetching, "no fetch was started, so none is pending forever");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _on = runtime.enter();
        book.get(0, Instant::now(), &forwarder);
        assert!(book.slots[0].lock().unwrap().fetching, "on a runtime the lookup starts");
    }

    #[test]
    fn a_truncated_soa_is_not_learned() {
        let mut m = example_soa_answer();
        m.truncate(m.len() - 3);
        assert_eq!(Soa::from_message(&m), None);
    }
}

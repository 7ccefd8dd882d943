//! The query path, transport-independent. [`Handler::answer_local`] is the hot path: parse
//! the header and question in place, build the key on the stack, look up the cache, and
//! write the stored response patched for this client; no allocation, no await. A UDP
//! worker runs its two halves apart ([`Handler::parse`] for the whole batch, then
//! [`Handler::answer_parsed`]) to prefetch between them. Anything it cannot answer is a
//! miss, finished by [`Handler::answer_miss`] on the async side.
//!
//! A miss is first offered to the `hosts` entries, then to the Kubernetes naming rules,
//! both answering synchronously. Hosts answers are not cached (a changed hosts file shows
//! at once), but hits come first: a name cached from upstream before it was added to the
//! hosts entries is served from the cache until it expires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admission::{Action, Admission, DenyReason, Verdict};
use super::querylog::{CacheUse, QueryLog, Record};
use crate::cache::{Cache, Entry, KeyHash, KeyRef, Kind};
use crate::forward::{ForwardError, Forwarder};
use crate::hosts::Hosts;
use crate::kubernetes::search::SearchPrefetch;
use crate::kubernetes::{self, Naming, SoaBook};
use crate::loops::{self, Loops};
use crate::metrics::{HeldLatencies, ListenerMetrics, NamingMetrics, Source};
use crate::wire::compose::{self, MAX_COMPOSED};
use crate::wire::name::{self, MAX_NAME};
use crate::wire::{Flags, MAX_MESSAGE, Query, QueryError, Rcode, RecordType, Transport};

/// What the hot path decided.
#[derive(Debug)]
pub enum Local {
    /// A response of this length is in the output buffer.
    Reply(usize),
    /// Nothing to send.
    Drop,
    /// The cache cannot answer; call [`Handler::answer_miss`], holding the slot (one of
    /// `max_inflight_misses`) until it returns.
    Miss(OwnedSemaphorePermit),
}

/// A query read by [`Handler::parse`]: its message, its cache key (over the lower-cased
/// name) and the key's hash; or why it gets no normal answer.
pub struct Parsed<'a>(Result<Keyed<'a>, QueryError<'a>>);

struct Keyed<'a> {
    query: Query<'a>,
    key: KeyRef<'a>,
    hash: KeyHash,
}

/// Settings the query path reads on every query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandlerSettings {
    /// Misses resolved at once, across all listeners.
    pub max_inflight_misses: usize,
    /// Our EDNS UDP payload size: the most we send over UDP, and what we advertise.
    pub udp_payload: u16,
    /// Overall time a client waits for a miss before getting SERVFAIL.
    pub deadline: Duration,
    /// How long a miss with a stale answer in the cache waits for the upstream before the
    /// stale answer is sent (RFC 8767's client response timer).
    pub stale_after: Duration,
}

/// Who asked, how, and when: what every response needs besides the query itself.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub transport: Transport,
    pub client: SocketAddr,
    /// The listener's address, which the query was sent to (unspecified for a wildcard).
    pub local: std::net::IpAddr,
    pub started: Instant,
    pub metrics: &'a ListenerMetrics,
    /// Where a UDP worker holds its batch's latencies until the batch is sent; `None`:
    /// each answer's latency is observed when it is written.
    pub held: Option<&'a HeldLatencies>,
}

impl Request<'_> {
    /// Counts the answer in the metrics. Returns its latency if it was measured now,
    /// `None` if it is held for the batch.
    #[inline]
    fn count_answer(&self, qtype: RecordType, rcode: Rcode, source: Source) -> Option<Duration> {
        self.metrics.answered(qtype, rcode, source);
        if let Some(held) = self.held {
            held.hold(qtype);
            return None;
        }
        let latency = self.started.elapsed();
        self.metrics.latency(qtype, latency.as_secs_f64());
        Some(latency)
    }
}

/// The Kubernetes naming rules, and what answering by them needs.
pub struct LocalNaming {
    pub naming: Arc<Naming>,
    pub soa: Arc<SoaBook>,
    pub search: Option<SearchPrefetch>,
    pub metrics: NamingMetrics,
}

impl LocalNaming {
    /// The rules switched off: every query goes to the cache or upstream.
    pub fn off(metrics: &crate::metrics::Metrics) -> LocalNaming {
        let naming = Arc::new(Naming::new(crate::kubernetes::NamingSettings::default()));
        LocalNaming { soa: SoaBook::new(naming.zones()), naming, search: None, metrics: kubernetes::Reason::metrics(metrics) }
    }
}

pub struct Handler {
    cache: Arc<Cache>,
    forwarder: Arc<Forwarder>,
    /// Swapped by a configuration reload, like `settings`.
    admission: ArcSwap<Admission>,
    naming: LocalNaming,
    /// Consulted before a miss is forwarded, never on a hit.
    loops: Arc<Loops>,
    /// The `hosts` blocks, swapped by a configuration reload; `hosts_on` says whether there
    /// are any, so that without them a miss pays one branch.
    hosts: ArcSwapOption<Hosts>,
    hosts_on: AtomicBool,
    /// Bounds the misses being resolved at once; past it, misses fail fast with SERVFAIL
    /// while hits keep flowing.
    misses: Arc<Semaphore>,
    settings: ArcSwap<HandlerSettings>,
    /// `settings.udp_payload`, which every answer reads: without an `ArcSwap` load.
    udp_payload: AtomicU16,
    log: Arc<QueryLog>,
}

/// What a hit wrote, and what the rest of its path needs to know of the entry.
struct Hit {
    len: usize,
    negative: bool,
    starts_refresh: bool,
    stale: bool,
    rcode: Rcode,
}

/// How a response came about, for metrics and the query log.
struct How<'a> {
    source: Source,
    cache: CacheUse,
    upstream: Option<&'a str>,
    /// Why nodedns answered itself.
    reason: Option<&'static str>,
}

impl How<'static> {
    fn local(cache: CacheUse, reason: &'static str) -> Self {
        How { source: Source::Local, cache, upstream: None, reason: Some(reason) }
    }
}

impl Handler {
    pub fn new(
        cache: Arc<Cache>,
        forwarder: Arc<Forwarder>,
        admission: Admission,
        naming: LocalNaming,
        loops: Arc<Loops>,
        settings: HandlerSettings,
        log: Arc<QueryLog>,
    ) -> Self {
        let misses = Arc::new(Semaphore::new(settings.max_inflight_misses));
        Handler {
            cache,
            forwarder,
            admission: ArcSwap::from_pointee(admission),
            naming,
            loops,
            hosts: ArcSwapOption::empty(),
            hosts_on: AtomicBool::new(false),
            misses,
            udp_payload: AtomicU16::new(settings.udp_payload),
            settings: ArcSwap::from_pointee(settings),
            log,
        }
    }

    pub fn query_log(&self) -> &QueryLog {
        &self.log
    }

    /// What this instance would do with `name` (presentation form) and `qtype` now.
    pub fn explain(&self, name: &str, qtype: RecordType) -> Option<super::explain::Decision> {
        let wire = name::from_text(name)?;
        let soa_known = |zone| self.naming.soa.knows(zone);
        Some(super::explain::Decision::live(
            wire.as_name(),
            qtype,
            &self.cache,
            &self.naming.naming,
            soa_known,
            self.forwarder.route_of(wire.as_name()),
        ))
    }

    #[inline]
    fn settings(&self) -> HandlerSettings {
        **self.settings.load()
    }

    #[inline]
    fn udp_payload(&self) -> u16 {
        self.udp_payload.load(Ordering::Relaxed)
    }

    /// New limits for queries from now on, and a new admission policy when given (which
    /// starts every client's rate bucket afresh).
    pub fn reconfigure(&self, settings: HandlerSettings, admission: Option<Admission>) {
        let old = self.settings();
        if settings.max_inflight_misses > old.max_inflight_misses {
            self.misses.add_permits(settings.max_inflight_misses - old.max_inflight_misses);
        } else {
            // Slots in use are given up as their misses finish.
            let mut excess = old.max_inflight_misses - settings.max_inflight_misses;
            excess -= self.misses.forget_permits(excess);
            if excess > 0 {
                let misses = self.misses.clone();
                tokio::spawn(async move {
                    if let Ok(slots) = misses.acquire_many(excess as u32).await {
                        slots.forget();
                    }
                });
            }
        }
        self.settings.store(Arc::new(settings));
        self.udp_payload.store(settings.udp_payload, Ordering::Relaxed);
        if let Some(admission) = admission {
            self.admission.store(Arc::new(admission));
        }
    }

    /// The `hosts` blocks answering misses from now on; `None`: none.
    pub fn set_hosts(&self, hosts: Option<Arc<Hosts>>) {
        self.hosts_on.store(hosts.is_some(), Ordering::Relaxed);
        self.hosts.store(hosts);
    }

    /// Reads a query for answering: parses it, lower-cases its name into `lower` and hashes
    /// its cache key. A batch does this once per query, then the prefetch steps, then
    /// [`Handler::answer_parsed`]; nothing is parsed or hashed twice.
    #[inline]
    pub fn parse<'a>(&self, packet: &'a [u8], lower: &'a mut [u8; MAX_NAME]) -> Parsed<'a> {
        Parsed(Query::parse(packet, lower).map(|(query, lower_name)| {
            let key = KeyRef::for_query(&query, lower_name);
            let hash = self.cache.hash(&key);
            Keyed { query, key, hash }
        }))
    }

    /// The first step of answering a batch of queries: has the CPU start loading the
    /// cache slots this query's answer would be in ([`Cache::prefetch_slots`]).
    #[inline]
    pub fn prefetch_slots(&self, parsed: &Parsed<'_>) {
        if let Ok(keyed) = &parsed.0 {
            self.cache.prefetch_slots(keyed.hash);
        }
    }

    /// The second step: has the CPU start loading the cached entry itself.
    #[inline]
    pub fn prefetch_entry(&self, parsed: &Parsed<'_>) {
        if let Ok(keyed) = &parsed.0 {
            self.cache.prefetch_entry(keyed.hash);
        }
    }

    /// Answers from the cache or with a locally composed error. `out` must hold the most
    /// the transport may carry: [`MAX_MESSAGE`] octets over TCP, `server.udp_payload` over UDP.
    #[inline]
    pub fn answer_local(&self, packet: &[u8], out: &mut [u8], req: &Request<'_>) -> Local {
        let mut lower = [0u8; MAX_NAME];
        self.answer_parsed(&self.parse(packet, &mut lower), out, req)
    }

    /// [`Handler::answer_local`] for a query read by [`Handler::parse`].
    #[inline]
    pub fn answer_parsed(&self, parsed: &Parsed<'_>, out: &mut [u8], req: &Request<'_>) -> Local {
        let verdict = self.admission.load().check(req.client.ip(), req.local, req.started);
        let Keyed { query, key, hash } = match &parsed.0 {
            Ok(keyed) => keyed,
            Err(e) if verdict == Verdict::Serve => return self.reject(*e, out, req),
            // Clients we do not serve get no error messages either.
            Err(_) => return Local::Drop,
        };
        if let Verdict::Deny(action, reason) = verdict {
            return self.deny(query, action, reason, out, req);
        }
        if query.qtype == RecordType::AXFR || query.qtype == RecordType::IXFR {
            // A cache has no zones to transfer.
            let len = compose::error_response(out, &query.header, Some(query.question), Rcode::REFUSED, query.edns, self.udp_payload());
            self.finish(query, Rcode::REFUSED, How::local(CacheUse::NotConsulted, "zone_transfer"), req);
            return Local::Reply(len);
        }
        let payload = self.udp_payload();
        let limit = limit(query, req.transport, payload);
        let min_hits = self.cache.policy().prefetch_min_hits;
        let hit = self.cache.read_fresh(key, *hash, req.started, |entry, age| Hit {
            len: entry.write_for(query, age, payload, limit, out),
            negative: entry.kind() != Kind::Positive,
            starts_refresh: entry.hit_starts_refresh(age, min_hits),
            stale: entry.is_stale(),
            rcode: entry.rcode(),
        });
        match hit {
            Some(hit) => {
                req.metrics.cache_hit(hit.negative);
                if hit.starts_refresh {
                    self.refresh(key, req);
                }
                let cache = if hit.stale {
                    req.metrics.served_stale();
                    CacheUse::Stale
                } else {
                    CacheUse::Hit
                };
                self.finish(query, hit.rcode, How { source: Source::Cache, cache, upstream: None, reason: None }, req);
                Local::Reply(hit.len)
            }
            None => {
                req.metrics.cache_lookup_missed();
                if self.hosts_on.load(Ordering::Relaxed)
                    && let Some(len) = self.answer_by_hosts(query, key, out, req)
                {
                    return Local::Reply(len);
                }
                if let Some(len) = self.answer_by_naming(query, key, out, req) {
                    return Local::Reply(len);
                }
                req.metrics.cache_miss();
                match self.misses.clone().try_acquire_owned() {
                    Ok(slot) => Local::Miss(slot),
                    Err(_) => self.overloaded(query, out, req),
                }
            }
        }
    }

    /// Answers from the `hosts` entries, or `None` when they leave the query to the rest.
    fn answer_by_hosts(&self, query: &Query<'_>, key: &KeyRef<'_>, out: &mut [u8], req: &Request<'_>) -> Option<usize> {
        let hosts = self.hosts.load();
        let payload = self.udp_payload();
        let answered = hosts.as_ref()?.answer(query, key.name(), out, limit(query, req.transport, payload), payload)?;
        self.finish(query, answered.rcode, How::local(CacheUse::Miss, answered.reason), req);
        Some(answered.len)
    }

    /// Denies a name the Kubernetes naming rules prove absent, with the SOA the upstream
    /// would have sent. The denial is cached like an upstream's, so repeats are plain hits.
    fn answer_by_naming(&self, query: &Query<'_>, key: &KeyRef<'_>, out: &mut [u8], req: &Request<'_>) -> Option<usize> {
        let n = &self.naming;
        let answer = n.naming.classify(key.name(), query.qtype, query.qclass)?;
        // A loop through a cluster domain must bring another server's probe back to it.
        if loops::is_probe(key.name()) {
            return None;
        }
        let soa = n.soa.get(answer.zone, req.started, &self.forwarder)?;
        let entry = soa.denial(key, answer.rcode, self.cache.policy_for(key.name()), req.started)?;
        self.cache.insert(key, entry.clone());
        n.metrics.answered(answer.reason as usize);
        if let Some(search) = &n.search
            && matches!(answer.reason, kubernetes::Reason::NotInSpecification | kubernetes::Reason::UnknownNamespace)
        {
            search.after_denial(key);
        }
        let payload = self.udp_payload();
        let len = entry.write_for(query, 0, payload, limit(query, req.transport, payload), out);
        self.finish(query, entry.rcode(), How::local(CacheUse::Miss, answer.reason.as_str()), req);
        Some(len)
    }

    /// Starts refreshing a popular entry before it expires, in the background: the clients
    /// asking for it keep getting hits and never meet the expiry (no herd at the TTL).
    fn refresh(&self, key: &KeyRef<'_>, req: &Request<'_>) {
        // Only off a runtime in harnesses that drive the hot path by hand.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        req.metrics.prefetch();
        let (forwarder, key) = (self.forwarder.clone(), key.to_owned());
        runtime.spawn(async move { forwarder.refresh(key).await });
    }

    /// Resolves a query the cache could not answer and returns the response to send. When
    /// the cache holds an expired answer that may be served stale, the client waits at most
    /// `stale_after` for the upstream and then gets the stale answer; the fetch goes on and
    /// refreshes the cache. When every upstream of the name's zone is known down, the
    /// stale answer goes out at once: a pod's lookup walks several names, and a second's
    /// wait on each for an upstream that will not answer adds up.
    pub async fn answer_miss(&self, packet: &[u8], req: &Request<'_>) -> Option<Vec<u8>> {
        let mut lower = [0u8; MAX_NAME];
        // The hot path already parsed this packet successfully.
        let (query, lower_name) = Query::parse(packet, &mut lower).ok()?;
        let key = KeyRef::for_query(&query, lower_name);
        let stale = self.cache.stale(&key, req.started);
        let limit = limit(&query, req.transport, self.udp_payload());
        let policy = self.cache.policy_for(key.name());
        let serve_stale = |stale: &Entry| Some(self.write_entry(&stale.stale_copy(policy, Instant::now()), None, &query, limit, req));
        let _forwarding = match self.loops.check(key.name(), req.client) {
            loops::Verdict::Forward => None,
            loops::Verdict::ForwardProbe => Some(self.loops.forwarding(key.name())),
            loops::Verdict::Fail => {
                return match &stale {
                    Some(stale) => serve_stale(stale),
                    None => Some(self.write_error(&query, Rcode::SERVFAIL, "loop", req)),
                };
            }
        };
        if let Some(stale) = &stale
            && self.forwarder.route_is_down(key.name())
        {
            let (forwarder, key) = (self.forwarder.clone(), key.to_owned());
            tokio::spawn(async move { forwarder.resolve(key).await });
            return serve_stale(stale);
        }
        let settings = self.settings();
        let resolving = self.forwarder.resolve(key.to_owned());
        let outcome = match &stale {
            // From the query's arrival, as the stale timer: a query that waited for its task
            // gets no longer than the deadline either.
            None => tokio::time::timeout_at((req.started + settings.deadline).into(), resolving).await,
            // At the deadline at the latest: a stale answer beats SERVFAIL.
            Some(stale) => {
                match tokio::time::timeout_at((req.started + settings.stale_after.min(settings.deadline)).into(), resolving).await {
                    Ok(outcome) => Ok(outcome),
                    Err(_slow) => return serve_stale(stale),
                }
            }
        };
        match outcome {
            Ok(Ok(answer)) => Some(self.write_entry(&answer.entry, answer.upstream.as_ref().map(|u| u.label()), &query, limit, req)),
            Ok(Err(e)) => {
                let (rcode, reason) = match e {
                    ForwardError::NoRoute => (Rcode::REFUSED, "no_route"),
                    ForwardError::Upstream(_) | ForwardError::Aborted => (Rcode::SERVFAIL, "upstream_failed"),
                };
                tracing::debug!(name = %name::to_text(query.qname), error = %e, "miss failed");
                Some(self.write_error(&query, rcode, reason, req))
            }
            Err(_elapsed) => {
                self.forwarder.metrics().deadline_exceeded.inc();
                Some(self.write_error(&query, Rcode::SERVFAIL, "deadline", req))
            }
        }
    }

    fn write_entry(&self, entry: &Entry, upstream: Option<&str>, query: &Query<'_>, limit: usize, req: &Request<'_>) -> Vec<u8> {
        let mut out = vec![0u8; entry.max_response_len()];
        let age = entry.age_if_fresh(Instant::now()).unwrap_or(0);
        let len = entry.write_for(query, age, self.udp_payload(), limit, &mut out);
        out.truncate(len);
        let cache = if entry.is_stale() {
            req.metrics.served_stale();
            CacheUse::Stale
        } else {
            CacheUse::Miss
        };
        self.finish(query, entry.rcode(), How { source: Source::Forward, cache, upstream, reason: None }, req);
        out
    }

    fn write_error(&self, query: &Query<'_>, rcode: Rcode, reason: &'static str, req: &Request<'_>) -> Vec<u8> {
        let mut out = vec![0u8; MAX_COMPOSED];
        let len = compose::error_response(&mut out, &query.header, Some(query.question), rcode, query.edns, self.udp_payload());
        out.truncate(len);
        self.finish(query, rcode, How::local(CacheUse::Miss, reason), req);
        out
    }

    /// SERVFAIL at once for a miss past `max_inflight_misses`: misses cannot pile up
    /// behind hits.
    fn overloaded(&self, query: &Query<'_>, out: &mut [u8], req: &Request<'_>) -> Local {
        req.metrics.overloaded();
        let len = compose::error_response(out, &query.header, Some(query.question), Rcode::SERVFAIL, query.edns, self.udp_payload());
        self.finish(query, Rcode::SERVFAIL, How::local(CacheUse::Miss, "overload"), req);
        Local::Reply(len)
    }

    fn deny(&self, query: &Query<'_>, action: Action, reason: DenyReason, out: &mut [u8], req: &Request<'_>) -> Local {
        req.metrics.denied(reason.metric_index(), action.metric_index());
        let (rcode, truncate) = match action {
            Action::Drop => return Local::Drop,
            Action::Refuse => (Rcode::REFUSED, false),
            Action::Truncate => (Rcode::NOERROR, true),
        };
        let len = compose::error_response(out, &query.header, Some(query.question), rcode, query.edns, self.udp_payload());
        if truncate {
            out[2] |= (Flags::TC >> 8) as u8;
        }
        self.finish(query, rcode, How::local(CacheUse::NotConsulted, reason.as_str()), req);
        Local::Reply(len)
    }

    fn reject(&self, error: QueryError<'_>, out: &mut [u8], req: &Request<'_>) -> Local {
        let payload = self.udp_payload();
        let (len, rcode) = match &error {
            QueryError::Drop => {
                req.metrics.dropped_not_a_query();
                return Local::Drop;
            }
            QueryError::Malformed(h) => (compose::error_response(out, h, None, Rcode::FORMERR, None, payload), Rcode::FORMERR),
            QueryError::NotImplemented(h) => (compose::not_implemented(out, h), Rcode::NOTIMP),
            QueryError::BadVersion { header, question, edns } => {
                (compose::error_response(out, header, Some(question), Rcode::BADVERS, Some(*edns), payload), Rcode::BADVERS)
            }
        };
        // Counted under the whole code: BADVERS's low four bits alone would read NOERROR. The
        // type is `other`: of these only BADVERS even has a question.
        let latency = req.count_answer(RecordType(0), rcode, Source::Local);
        if self.log.is_on() {
            let latency = latency.unwrap_or_else(|| req.started.elapsed());
            let record = Record {
                client: req.client,
                transport: req.transport,
                qname: &[0],
                qtype: RecordType(0),
                rcode,
                latency,
                cache: CacheUse::NotConsulted,
                upstream: None,
                reason: Some(error.as_str()),
            };
            self.log.offer(&record);
        }
        Local::Reply(len)
    }

    #[inline]
    fn finish(&self, query: &Query<'_>, rcode: Rcode, how: How<'_>, req: &Request<'_>) {
        let latency = req.count_answer(query.qtype, rcode, how.source);
        if !self.log.is_on() {
            return;
        }
        // A held latency is not known yet: the log reads the clock for itself.
        let latency = latency.unwrap_or_else(|| req.started.elapsed());
        let record = Record {
            client: req.client,
            transport: req.transport,
            qname: query.qname,
            qtype: query.qtype,
            rcode,
            latency,
            cache: how.cache,
            upstream: how.upstream,
            reason: how.reason,
        };
        self.log.offer(&record);
    }
}

/// The most an answer to `query` may take on `transport`.
fn limit(query: &Query<'_>, transport: Transport, our_payload: u16) -> usize {
    match transport {
        Transport::Udp => query.udp_limit(our_payload),
        Transport::Tcp | Transport::Tls => MAX_MESSAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Hits, bench_name};

    /// The UDP payload size the answer's OPT record advertises (its CLASS field).
    fn advertised_payload(answer: &[u8]) -> u16 {
        let opt = &answer[answer.len() - 11..];
        assert_eq!(&opt[..3], &[0, 0, 41], "an OPT record closes the answer");
        u16::from_be_bytes([opt[3], opt[4]])
    }

    #[tokio::test]
    async fn a_miss_ends_at_the_deadline_counted_from_its_arrival_not_from_its_task() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let handler = crate::harness::forwarding_handler(silent.local_addr().unwrap(), &metrics);
        let listener = metrics.listener("dns://127.0.0.1:53", "tcp", false);
        let query = crate::harness::client_query(7, "slow.example.");
        // The query arrived 800 ms before its task got to run (a busy runtime, a TCP
        // connection at its in-flight cap): 200 ms of its 1 s deadline are left.
        let arrived = Instant::now() - Duration::from_millis(800);
        let req = Request {
            transport: Transport::Tcp,
            client: "127.0.0.1:5353".parse().unwrap(),
            local: std::net::Ipv4Addr::LOCALHOST.into(),
            started: arrived,
            metrics: &listener,
            held: None,
        };
        let answer = handler.answer_miss(&query, &req).await.expect("an answer");
        assert_eq!(answer[3] & 0xf, Rcode::SERVFAIL.0);
        let waited = arrived.elapsed();
        assert!(waited < Duration::from_millis(1300), "SERVFAIL {waited:?} after arrival, deadline 1 s");
    }

    #[test]
    fn a_reload_changes_the_payload_every_answer_advertises() {
        let hits = Hits::new(1);
        let mut query = [0u8; 64];
        let len = compose::query(
            &mut query,
            7,
            &name::from_text(&bench_name(0)).unwrap(),
            crate::wire::RecordType::A,
            1,
            false,
            Some((4096, false)),
        );
        let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let answer = |out: &mut [u8]| {
            let req = Request {
                transport: Transport::Udp,
                client,
                local: std::net::Ipv4Addr::LOCALHOST.into(),
                started: Instant::now(),
                metrics: &hits.listener,
                held: None,
            };
            match hits.handler.answer_local(&query[..len], out, &req) {
                Local::Reply(len) => len,
                other => panic!("expected a hit, got {other:?}"),
            }
        };
        let mut out = [0u8; 4096];
        let n = answer(&mut out);
        assert_eq!(advertised_payload(&out[..n]), 1232);

        let settings = HandlerSettings { udp_payload: 1400, ..hits.handler.settings() };
        hits.handler.reconfigure(settings, None);
        let n = answer(&mut out);
        assert_eq!(advertised_payload(&out[..n]), 1400);
    }
}

//! Fixtures shared by the fuzz harness, the benchmarks (`benches/`) and the allocation
//! test: a handler with no upstreams (or one), and a cache filled with single-A answers as the
//! forwarder would have stored them. Not part of the product.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, Capacity, Entry, KeyRef, TtlPolicy};
use crate::forward::{ForwardSettings, Forwarder, Policy};
use crate::loops::Loops;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::query::admission::{Action, Admission};
use crate::query::handler::{Handler, HandlerSettings, LocalNaming};
use crate::query::querylog::QueryLog;
use crate::upstream::{PoolSettings, QueryOptions, Upstream, UpstreamSettings, UpstreamSpec};
use crate::wire::{RecordType, UpstreamResponse, compose, name};
use crate::zones::Router;
use crate::zones::UpstreamGroup;

/// A handler over `cache` that serves loopback clients and forwards nowhere; naming rules
/// and the query log off.
pub fn handler(cache: Arc<Cache>, metrics: &Arc<Metrics>, max_inflight_misses: usize) -> Handler {
    let settings = ForwardSettings {
        deadline: Duration::from_secs(1),
        policy: Policy::Sequential,
        max_attempts: 1,
        loop_probe_interval: Duration::ZERO,
    };
    let forwarder = Forwarder::new(Router::new([]), cache.clone(), settings, metrics.clone());
    let admission = Admission::new(vec!["127.0.0.0/8".parse().expect("literal")], Vec::new(), Action::Refuse, None);
    let handler_settings = HandlerSettings {
        max_inflight_misses,
        udp_payload: 1232,
        deadline: Duration::from_secs(1),
        stale_after: Duration::from_millis(500),
    };
    let loops = Arc::new(Loops::new(metrics.clone()));
    Handler::new(cache, forwarder, admission, LocalNaming::off(metrics), loops, handler_settings, QueryLog::off())
}

/// A handler like [`handler`] that forwards every name to `upstream` over UDP, with the
/// default timeouts and a deadline of one second.
pub fn forwarding_handler(upstream: std::net::SocketAddr, metrics: &Arc<Metrics>) -> Handler {
    let spec: UpstreamSpec = format!("udp://{upstream}").parse().expect("an upstream");
    let settings = UpstreamSettings {
        min_timeout: Duration::from_millis(20),
        max_timeout: Duration::from_millis(500),
        max_fails: 3,
        probe_interval: Duration::from_millis(500),
        max_qps: 0,
        pool: PoolSettings {
            max_connections: 1,
            max_inflight_per_connection: 1,
            queue_length: 1,
            queue_wait: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(1),
            max_queries_per_connection: 0,
            connect_timeout: Duration::from_secs(1),
        },
        query: QueryOptions { udp_payload: 1232, randomize_case: false },
        tls: None,
    };
    let upstream = Upstream::new(&spec, &settings, metrics).expect("an upstream");
    let router = Router::new([UpstreamGroup { zone: ".".parse().expect("the root"), servers: vec![upstream] }]);
    let cache = cache_for(16);
    let forward = ForwardSettings {
        deadline: Duration::from_secs(1),
        policy: Policy::Sequential,
        max_attempts: 8,
        loop_probe_interval: Duration::ZERO,
    };
    let forwarder = Forwarder::new(router, cache.clone(), forward, metrics.clone());
    let admission = Admission::new(vec!["127.0.0.0/8".parse().expect("literal")], Vec::new(), Action::Refuse, None);
    let handler_settings = HandlerSettings {
        max_inflight_misses: 16,
        udp_payload: 1232,
        deadline: Duration::from_secs(1),
        stale_after: Duration::from_millis(500),
    };
    let loops = Arc::new(Loops::new(metrics.clone()));
    Handler::new(cache, forwarder, admission, LocalNaming::off(metrics), loops, handler_settings, QueryLog::off())
}

/// `h<i>.bench.example.`, the names of [`Hits`].
pub fn bench_name(i: usize) -> String {
    format!("h{i}.bench.example.")
}

/// An upstream's answer to `name IN A`: one A record, TTL 3600, the name compressed.
pub fn a_response(id: u16, name_wire: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let mut msg = vec![0u8; 12 + name_wire.len() + 4 + 16];
    let len = compose::query(&mut msg, id, name_wire, RecordType::A, 1, false, None);
    msg.truncate(len);
    msg[2] |= 0x80; // QR
    msg[3] |= 0x80; // RA
    msg[7] = 1; // ANCOUNT
    msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    msg.extend_from_slice(&3600u32.to_be_bytes());
    msg.extend_from_slice(&[0, 4]);
    msg.extend_from_slice(&ip);
    msg
}

/// Stores the answer for name `i` in `cache`, as the forwarder does after a miss.
pub fn store_a(cache: &Cache, i: usize, now: Instant) {
    let wire = name::from_text(&bench_name(i)).expect("valid name");
    let response = a_response(i as u16, &wire, [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let parsed = UpstreamResponse::parse(&response, wire.as_name(), RecordType::A, 1).expect("a valid response");
    let key = KeyRef::new(wire.as_name(), RecordType::A, 1, false, false);
    cache.insert(&key, Entry::from_response(&key, &response, &parsed, cache.policy(), now));
}

/// A cache with room for `names` positive entries and a few negative ones, sized as an
/// operator would size it for that many names.
pub fn cache_for(names: usize) -> Arc<Cache> {
    let room = names.max(16) as u64 * 9 / 8;
    let positive = Capacity { max_entries: room, max_bytes: room * 512 };
    let negative = Capacity { max_entries: 1024, max_bytes: 1024 * 512 };
    Arc::new(Cache::new(positive, negative, TtlPolicy::default()))
}

/// A handler whose cache holds `names` single-A answers, and a client query for each.
pub struct Hits {
    pub handler: Handler,
    /// The first worker's counters; [`Hits::worker`] makes more.
    pub listener: ListenerMetrics,
    pub queries: Vec<Vec<u8>>,
    metrics: Arc<Metrics>,
}

impl Hits {
    pub fn new(names: usize) -> Hits {
        let metrics = Arc::new(Metrics::new());
        let cache = cache_for(names);
        let now = Instant::now();
        let queries = (0..names)
            .map(|i| {
                store_a(&cache, i, now);
                client_query(i as u16, &bench_name(i))
            })
            .collect();
        let listener = metrics.listener(LISTENER, "udp", false);
        Hits { handler: handler(cache, &metrics, 100), listener, queries, metrics }
    }

    /// Counters for one more worker of the same listener, as the server gives each.
    pub fn worker(&self) -> ListenerMetrics {
        self.metrics.listener(LISTENER, "udp", false)
    }
}

const LISTENER: &str = "dns://127.0.0.1:53";

/// A client's query for `name IN A` with RD and an EDNS OPT (payload 1232), as dig sends it.
pub fn client_query(id: u16, name_text: &str) -> Vec<u8> {
    let wire = name::from_text(name_text).expect("valid name");
    let mut msg = vec![0u8; 12 + wire.len() + 4 + 11];
    let len = compose::query(&mut msg, id, &wire, RecordType::A, 1, false, Some((1232, false)));
    msg.truncate(len);
    msg
}

//! Prometheus metrics, named and labelled like CoreDNS's where CoreDNS has the same concept
//! (so NodeLocal DNSCache dashboards keep working), plus `nodedns_*` for what it lacks.
//!
//! Owns the registry and the HTTP endpoint ([`http`]). Counters used on the hot path are
//! resolved once per listener worker into [`ListenerMetrics`] so that counting a query is an
//! atomic add, never a label lookup; those counted on every answer are each worker's own,
//! summed at scrape ([`summed`]). A UDP worker holds its batch's latencies and sizes and
//! observes them once the batch is sent ([`HeldLatencies`], [`HeldSizes`]). The `process_*`
//! metrics are read from `/proc` at each scrape ([`process`]). Nothing here decides anything
//! about DNS.

mod histogram;
pub mod http;
mod process;
mod summed;

use histogram::AtomicHistogram;
use summed::Summed;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::wire::Rcode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: String,
    zone: String,
    view: String,
    proto: String,
    family: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: String,
    zone: String,
    view: String,
    rcode: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: String,
    zone: String,
    view: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheTypeLabels {
    server: String,
    r#type: String,
    zones: String,
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    server: String,
    zones: String,
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SizeLabels {
    server: String,
    zone: String,
    view: String,
    proto: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabels {
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyToLabels {
    proxy_name: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    revision: String,
    goversion: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToRcodeLabels {
    to: String,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    proxy_name: String,
    to: String,
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyProtoLabels {
    proxy_name: String,
    to: String,
    proto: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeniedLabels {
    server: String,
    reason: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorTypeLabels {
    errortype: String,
}

/// node-cache's kinds of setup error, each exported from the start (at 0) as node-cache does.
pub const SETUP_ERROR_TYPES: [&str; 5] = ["iptables", "iptables_lock", "interface_add", "interface_check", "configmap"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToReasonLabels {
    to: String,
    reason: String,
}

/// CoreDNS's request-duration buckets: 0.25 ms doubling to about 8 s.
#[derive(Clone)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.00025, 2.0, 16))
    }
}

/// The same buckets, lock-free: the request duration is observed on every answer.
impl MetricConstructor<AtomicHistogram> for DurationBuckets {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(exponential_buckets(0.00025, 2.0, 16))
    }
}

/// The series each worker's histogram is attached to.
impl MetricConstructor<Summed<AtomicHistogram>> for DurationBuckets {
    fn new_metric(&self) -> Summed<AtomicHistogram> {
        Summed::default()
    }
}

/// CoreDNS's request and response size buckets, in octets.
const SIZE_BOUNDS: [u32; 14] = [0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16_000, 32_000, 48_000, 64_000];
/// The size buckets with +Inf.
const SIZE_BUCKETS: usize = SIZE_BOUNDS.len() + 1;

/// The bucket of a message of `len` octets. Most queries are under 100 octets and most
/// answers under 512, so the scan ends within a few comparisons.
#[inline]
fn size_bucket(len: usize) -> usize {
    SIZE_BOUNDS.iter().position(|&bound| len <= bound as usize).unwrap_or(SIZE_BOUNDS.len())
}

#[derive(Clone)]
struct SizeBuckets;

impl MetricConstructor<Summed<AtomicHistogram>> for SizeBuckets {
    fn new_metric(&self) -> Summed<AtomicHistogram> {
        Summed::default()
    }
}

impl SizeBuckets {
    /// One worker's part: sums in whole octets.
    fn part() -> AtomicHistogram {
        AtomicHistogram::with_units(SIZE_BOUNDS.map(f64::from), 1.0)
    }
}

/// The Rust compiler that built nodedns, for `coredns_build_info`'s `goversion` label (see
/// build.rs), as "rust1.88.0" where CoreDNS has "go1.21.5".
const RUST_VERSION: &str = env!("NODEDNS_RUST_VERSION");

/// Query types CoreDNS names in its `type` label (by their mnemonic); everything else is
/// `other`, the last slot.
const TYPES: [u16; 16] = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 48, 64, 65, 255, 0];
const OTHER_TYPE: usize = TYPES.len() - 1;

/// The `type` label of slot `index` of [`TYPES`].
fn type_label(index: usize) -> String {
    if index == OTHER_TYPE { "other".into() } else { crate::wire::RecordType(TYPES[index]).to_string() }
}
/// Response codes with their own label: 0 to 10 by value, then BADVERS (16, the one
/// extended code nodedns sends itself); the last slot is every other code.
const RCODES: usize = 13;
const BADVERS_INDEX: usize = 11;

/// Which part of nodedns wrote a response (CoreDNS's `plugin` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache = 0,
    Forward = 1,
    /// Errors and refusals composed without consulting cache or upstream.
    Local = 2,
}

const SOURCES: [&str; 3] = ["cache", "forward", ""];

#[inline]
fn type_index(qtype: crate::wire::RecordType) -> usize {
    TYPES.iter().position(|&t| t == qtype.0 && t != 0).unwrap_or(OTHER_TYPE)
}

#[inline]
fn rcode_index(rcode: Rcode) -> usize {
    match rcode.0 as usize {
        code @ 0..BADVERS_INDEX => code,
        16 => BADVERS_INDEX,
        _ => RCODES - 1,
    }
}

fn rcode_label(index: usize) -> &'static str {
    match index {
        code @ 0..BADVERS_INDEX => Rcode(code as u8).as_str(),
        BADVERS_INDEX => Rcode::BADVERS.as_str(),
        _ => "OTHER",
    }
}

/// Why a datagram or connection got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Too short to be a DNS message, or a response sent to us.
    NotAQuery,
    /// The TCP client cap was reached.
    TcpClientLimit,
    /// A TCP connection sent a frame we cannot use.
    TcpFraming,
    /// One source address already had `max_tcp_per_client` connections.
    TcpPerClientLimit,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::NotAQuery => "not_a_query",
            DropReason::TcpClientLimit => "tcp_client_limit",
            DropReason::TcpFraming => "tcp_framing",
            DropReason::TcpPerClientLimit => "tcp_per_client_limit",
        }
    }
}

/// Counters of the Kubernetes naming rules. The rules' reasons are the naming layer's: it
/// names them when it resolves these ([`Metrics::naming`]) and counts by their index.
#[derive(Clone, Debug)]
pub struct NamingMetrics {
    local: Box<[Counter]>,
    pub search_walks: Counter,
    pub speculative: Counter,
    pub speculative_skipped: Counter,
}

impl NamingMetrics {
    /// A query answered locally by the rule whose reason is `reasons[reason]` of
    /// [`Metrics::naming`].
    pub fn answered(&self, reason: usize) {
        self.local[reason].inc();
    }
}

/// The `reason` labels of `nodedns_denied_queries`, in the order of admission's reasons.
pub const DENIED_REASONS: [&str; 2] = ["acl", "rate_limit"];
/// Its `action` labels, in the order of admission's actions.
pub const DENIED_ACTIONS: [&str; 3] = ["refuse", "drop", "truncate"];

/// The process-wide metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Summed<Counter>>,
    responses: Family<ResponseLabels, Summed<Counter>>,
    duration: Family<DurationLabels, Summed<AtomicHistogram>, DurationBuckets>,
    request_size: Family<SizeLabels, Summed<AtomicHistogram>, SizeBuckets>,
    response_size: Family<SizeLabels, Summed<AtomicHistogram>, SizeBuckets>,
    cache_entries: Family<CacheTypeLabels, Gauge>,
    cache_hits: Family<CacheTypeLabels, Summed<Counter>>,
    cache_requests: Family<CacheLabels, Summed<Counter>>,
    cache_evictions: Family<CacheTypeLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_prefetch: Family<CacheLabels, Counter>,
    cache_served_stale: Family<CacheLabels, Counter>,
    forward_requests: Family<ToLabels, Counter>,
    forward_responses: Family<ToRcodeLabels, Counter>,
    forward_duration: Family<ToRcodeLabels, Histogram, DurationBuckets>,
    proxy_duration: Family<ProxyLabels, Histogram, DurationBuckets>,
    upstream_errors: Family<ToReasonLabels, Counter>,
    healthcheck_failures: Family<ToLabels, Counter>,
    proxy_healthcheck_failures: Family<ProxyToLabels, Counter>,
    upstream_ignored: Family<ToLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    up_connections: Family<ToLabels, Gauge>,
    up_in_use: Family<ToLabels, Gauge>,
    up_inflight: Family<ToLabels, Gauge>,
    up_queue_depth: Family<ToLabels, Gauge>,
    up_queue_wait: Family<ToLabels, Histogram, DurationBuckets>,
    up_queue_rejected: Family<ToLabels, Counter>,
    up_connects: Family<ToLabels, Counter>,
    up_connect_failures: Family<ToLabels, Counter>,
    up_healthy: Family<ToLabels, Gauge>,
    up_rtt: Family<ToLabels, Histogram, DurationBuckets>,
    up_retransmits: Family<ToLabels, Counter>,
    up_rate_limited: Family<ToLabels, Counter>,
    conn_cache_hits: Family<ProxyProtoLabels, Counter>,
    conn_cache_misses: Family<ProxyProtoLabels, Counter>,
    denied: Family<DeniedLabels, Counter>,
    overloaded: Family<CacheLabels, Counter>,
    local_answers: Family<ReasonLabels, Counter>,
    node_repairs: Family<ReasonLabels, Counter>,
    leftovers: Family<ReasonLabels, Counter>,
    setup_errors: Family<ErrorTypeLabels, Counter>,
    node_errors: Counter,
    reloads: Family<ResultLabels, Counter>,
    reload_ok: Gauge,
    search_walks: Counter,
    speculative: Counter,
    speculative_skipped: Counter,
    forward_loop: Family<ZoneLabels, Gauge>,
    forward_loop_detections: Family<ZoneLabels, Counter>,
    forward_loop_answers: Family<ZoneLabels, Counter>,
    pub coalesced: Counter,
    /// Fetches that found every upstream of their group marked down (and asked them anyway).
    pub healthcheck_broken: Counter,
    pub inflight_misses: Gauge,
    pub deadline_exceeded: Counter,
    pub tcp_clients: Gauge,
    pub query_log_lines: Counter,
    pub query_log_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(DurationBuckets),
            request_size: Family::new_with_constructor(SizeBuckets),
            response_size: Family::new_with_constructor(SizeBuckets),
            cache_entries: Family::default(),
            cache_hits: Family::default(),
            cache_requests: Family::default(),
            cache_evictions: Family::default(),
            cache_misses: Family::default(),
            cache_prefetch: Family::default(),
            cache_served_stale: Family::default(),
            forward_requests: Family::default(),
            forward_responses: Family::default(),
            forward_duration: Family::new_with_constructor(DurationBuckets),
            proxy_duration: Family::new_with_constructor(DurationBuckets),
            upstream_errors: Family::default(),
            healthcheck_failures: Family::default(),
            proxy_healthcheck_failures: Family::default(),
            upstream_ignored: Family::default(),
            dropped: Family::default(),
            up_connections: Family::default(),
            up_in_use: Family::default(),
            up_inflight: Family::default(),
            up_queue_depth: Family::default(),
            up_queue_wait: Family::new_with_constructor(DurationBuckets),
            up_queue_rejected: Family::default(),
            up_connects: Family::default(),
            up_connect_failures: Family::default(),
            up_healthy: Family::default(),
            up_rtt: Family::new_with_constructor(DurationBuckets),
            up_retransmits: Family::default(),
            up_rate_limited: Family::default(),
            conn_cache_hits: Family::default(),
            conn_cache_misses: Family::default(),
            denied: Family::default(),
            overloaded: Family::default(),
            local_answers: Family::default(),
            node_repairs: Family::default(),
            leftovers: Family::default(),
            setup_errors: Family::default(),
            node_errors: Counter::default(),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            search_walks: Counter::default(),
            speculative: Counter::default(),
            speculative_skipped: Counter::default(),
            forward_loop: Family::default(),
            forward_loop_detections: Family::default(),
            forward_loop_answers: Family::default(),
            coalesced: Counter::default(),
            healthcheck_broken: Counter::default(),
            inflight_misses: Gauge::default(),
            deadline_exceeded: Counter::default(),
            tcp_clients: Gauge::default(),
            query_log_lines: Counter::default(),
            query_log_dropped: Counter::default(),
        };
        let r = &mut m.registry;
        r.register("coredns_dns_requests", "Counter of DNS requests made per zone, protocol and family.", m.requests.clone());
        r.register("coredns_dns_responses", "Counter of response status codes.", m.responses.clone());
        r.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            m.duration.clone(),
        );
        r.register("coredns_dns_request_size_bytes", "Size of the request in bytes.", m.request_size.clone());
        r.register("coredns_dns_response_size_bytes", "Size of the returned response in bytes.", m.response_size.clone());
        r.register("coredns_cache_entries", "The number of elements in the cache.", m.cache_entries.clone());
        r.register("coredns_cache_requests", "The count of cache requests.", m.cache_requests.clone());
        r.register("coredns_cache_hits", "The count of cache hits.", m.cache_hits.clone());
        r.register("coredns_cache_evictions", "The count of cache evictions.", m.cache_evictions.clone());
        r.register("coredns_cache_misses", "The count of cache misses.", m.cache_misses.clone());
        r.register("coredns_cache_prefetch", "The number of times the cache has prefetched a cached item.", m.cache_prefetch.clone());
        r.register("coredns_cache_served_stale", "The number of requests served from stale cache entries.", m.cache_served_stale.clone());
        r.register("coredns_forward_requests", "Counter of requests made per upstream.", m.forward_requests.clone());
        r.register("coredns_forward_responses", "Counter of responses received per upstream.", m.forward_responses.clone());
        r.register("coredns_forward_request_duration_seconds", "Histogram of the time each request took.", m.forward_duration.clone());
        r.register("coredns_proxy_request_duration_seconds", "Histogram of the time each request took.", m.proxy_duration.clone());
        r.register("coredns_forward_healthcheck_failures", "Counter of the number of failed healthchecks.", m.healthcheck_failures.clone());
        // CoreDNS 1.11 counts them under `proxy`, with the plugin's name; later versions under
        // `forward` again: both, as for the request duration.
        r.register(
            "coredns_proxy_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            m.proxy_healthcheck_failures.clone(),
        );
        r.register(
            "coredns_forward_healthcheck_broken",
            "Counter of the number of complete failures of the healthchecks.",
            m.healthcheck_broken.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                revision: option_env!("NODEDNS_REVISION").unwrap_or("unknown").into(),
                goversion: RUST_VERSION.into(),
            })
            .set(1);
        r.register(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion from which nodedns was built (goversion: the Rust compiler's).",
            build_info,
        );
        r.register_collector(Box::new(process::ProcessCollector));
        r.register("nodedns_upstream_errors", "Upstream exchanges that failed, by reason.", m.upstream_errors.clone());
        r.register(
            "nodedns_upstream_ignored_responses",
            "Datagrams on an upstream socket that were not the awaited answer (wrong ID or question).",
            m.upstream_ignored.clone(),
        );
        r.register("nodedns_upstream_connections", "Open TCP/TLS connections to the upstream.", m.up_connections.clone());
        r.register(
            "nodedns_upstream_connections_in_use",
            "Connections to the upstream with at least one query in flight.",
            m.up_in_use.clone(),
        );
        r.register("nodedns_upstream_inflight_queries", "Queries in flight on the upstream's connection pool.", m.up_inflight.clone());
        r.register(
            "nodedns_upstream_queue_depth",
            "Queries waiting for a slot in the upstream's connection pool.",
            m.up_queue_depth.clone(),
        );
        r.register("nodedns_upstream_queue_wait_seconds", "Time queries waited for a pool slot.", m.up_queue_wait.clone());
        r.register(
            "nodedns_upstream_queue_rejected",
            "Queries refused by a full pool queue or after the maximum wait.",
            m.up_queue_rejected.clone(),
        );
        r.register("nodedns_upstream_connects", "Connection attempts to the upstream.", m.up_connects.clone());
        r.register("nodedns_upstream_connect_failures", "Failed connection attempts to the upstream.", m.up_connect_failures.clone());
        r.register(
            "nodedns_upstream_healthy",
            "1 while the upstream is considered healthy, 0 while it is marked down.",
            m.up_healthy.clone(),
        );
        r.register("nodedns_upstream_rtt_seconds", "Round-trip time of answered upstream queries.", m.up_rtt.clone());
        r.register(
            "nodedns_upstream_retransmits",
            "Queries sent again because the previous attempt was not answered within the adaptive timeout.",
            m.up_retransmits.clone(),
        );
        r.register(
            "nodedns_upstream_rate_limited",
            "Queries not sent to the upstream because of its queries-per-second cap.",
            m.up_rate_limited.clone(),
        );
        r.register(
            "coredns_proxy_conn_cache_hits",
            "Counter of connection cache hits per upstream and protocol.",
            m.conn_cache_hits.clone(),
        );
        r.register(
            "coredns_proxy_conn_cache_misses",
            "Counter of connection cache misses per upstream and protocol.",
            m.conn_cache_misses.clone(),
        );
        r.register(
            "nodedns_denied_queries",
            "Queries not served because of the client allow list or its rate limit, by reason and by what the client got.",
            m.denied.clone(),
        );
        r.register(
            "nodedns_overloaded_queries",
            "Misses answered SERVFAIL at once because max_inflight_misses were already being resolved.",
            m.overloaded.clone(),
        );
        r.register("nodedns_dropped_queries", "Queries dropped without any answer, by reason.", m.dropped.clone());
        r.register(
            "nodedns_coalesced_queries",
            "Cache misses that waited for an identical query already in flight instead of asking upstream.",
            m.coalesced.clone(),
        );
        r.register("nodedns_inflight_misses", "Distinct questions currently being asked upstream.", m.inflight_misses.clone());
        r.register(
            "nodedns_deadline_exceeded",
            "Client queries answered SERVFAIL because the overall deadline passed.",
            m.deadline_exceeded.clone(),
        );
        r.register("nodedns_tcp_clients", "Open client TCP connections.", m.tcp_clients.clone());
        r.register("nodedns_query_log_lines", "Query log lines written.", m.query_log_lines.clone());
        r.register(
            "nodedns_query_log_dropped",
            "Query log lines dropped because the writer fell behind (or the output could not be opened).",
            m.query_log_dropped.clone(),
        );
        r.register("nodedns_local_answers", "Queries answered locally instead of upstream, by rule: the Kubernetes naming rules (repeats within the negative TTL are cache hits) and hosts entries (hosts, hosts_unlisted).", m.local_answers.clone());
        r.register(
            "nodedns_node_leftovers_found",
            "Node setup found at start, left by a process that ended without removing it (killed, crashed, OOM-killed, or told to keep it: keep_on_exit, -skipteardown), by what: addresses, rules.",
            m.leftovers.clone(),
        );
        r.register(
            "nodedns_node_repairs",
            "Node addresses or packet-filter rules found missing (removed by someone else) and put back, by what.",
            m.node_repairs.clone(),
        );
        r.register(
            "nodedns_node_setup_errors",
            "Failed attempts to install or check node addresses and packet-filter rules.",
            m.node_errors.clone(),
        );
        for errortype in SETUP_ERROR_TYPES {
            drop(m.setup_errors.get_or_create(&ErrorTypeLabels { errortype: errortype.into() }));
        }
        r.register(
            "coredns_nodecache_setup_errors",
            "The number of errors during periodic network setup for node-cache (nodedns: its node setup, and Corefile generation as node-cache).",
            m.setup_errors.clone(),
        );
        m.reload_ok.set(1);
        r.register(
            "nodedns_config_reloads",
            "Configuration reloads, by result (failure: rejected, the running configuration stayed).",
            m.reloads.clone(),
        );
        r.register(
            "nodedns_config_last_reload_successful",
            "1 if the last configuration reload was applied (or none was tried), 0 if it was rejected.",
            m.reload_ok.clone(),
        );
        r.register("nodedns_search_walks", "Denied queries recognised as the first step of a pod's search walk.", m.search_walks.clone());
        r.register(
            "nodedns_speculative_queries",
            "Later steps of search walks resolved upstream before the pod asked for them.",
            m.speculative.clone(),
        );
        r.register(
            "nodedns_speculative_skipped",
            "Later steps of search walks not resolved ahead because the speculation limit was reached.",
            m.speculative_skipped.clone(),
        );
        r.register(
            "nodedns_forward_loop",
            "1 while the zone's queries are seen coming back to this server (a forwarding loop), 0 otherwise.",
            m.forward_loop.clone(),
        );
        r.register(
            "nodedns_forward_loop_detections",
            "Forwarding loops detected for the zone, one per episode.",
            m.forward_loop_detections.clone(),
        );
        r.register(
            "nodedns_forward_loop_answers",
            "Misses answered SERVFAIL at once instead of being forwarded round a loop, by zone.",
            m.forward_loop_answers.clone(),
        );
        m
    }

    /// The loop-detection metrics of one forwarded zone (`zone` as displayed, `loop.test.`).
    pub fn forward_loop(&self, zone: &str) -> LoopMetrics {
        let labels = ZoneLabels { zone: zone.into() };
        LoopMetrics {
            looped: self.forward_loop.get_or_create_owned(&labels),
            detections: self.forward_loop_detections.get_or_create_owned(&labels),
            answers: self.forward_loop_answers.get_or_create_owned(&labels),
        }
    }

    /// Drops a zone no longer forwarded from the loop-detection metrics.
    pub fn forget_forward_loop(&self, zone: &str) {
        let labels = ZoneLabels { zone: zone.into() };
        self.forward_loop.remove(&labels);
        self.forward_loop_detections.remove(&labels);
        self.forward_loop_answers.remove(&labels);
    }

    /// The Kubernetes naming counters, resolved once, with one local-answer counter per
    /// label of `reasons`.
    pub fn naming(&self, reasons: &[&str]) -> NamingMetrics {
        NamingMetrics {
            local: reasons.iter().map(|&r| self.local_answers.get_or_create_owned(&ReasonLabels { reason: r.into() })).collect(),
            search_walks: self.search_walks.clone(),
            speculative: self.speculative.clone(),
            speculative_skipped: self.speculative_skipped.clone(),
        }
    }

    /// The counter of local answers for one `reason`, for a part other than the naming
    /// rules that answers itself.
    pub fn local_answer_counter(&self, reason: &str) -> Counter {
        self.local_answers.get_or_create_owned(&ReasonLabels { reason: reason.into() })
    }

    /// Resolves the hot-path counters for one listener worker, e.g. `server =
    /// "dns://127.0.0.1:53"`: the per-answer ones are new parts of the listener's series,
    /// for this worker alone. Called once per worker, at start-up: each call adds parts.
    pub fn listener(&self, server: &str, proto: &str, ipv6: bool) -> ListenerMetrics {
        let zone = ".".to_string();
        let view = String::new();
        let requests = std::array::from_fn(|slot| {
            self.requests
                .get_or_create(&RequestLabels {
                    server: server.into(),
                    zone: zone.clone(),
                    view: view.clone(),
                    proto: proto.into(),
                    family: if ipv6 { "2" } else { "1" }.into(),
                    r#type: type_label(slot),
                })
                .attach(Counter::default())
        });
        let duration = std::array::from_fn(|slot| {
            self.duration
                .get_or_create(&DurationLabels { server: server.into(), zone: zone.clone(), view: view.clone(), r#type: type_label(slot) })
                .attach(DurationBuckets.new_metric())
        });
        let responses = SOURCES.map(|plugin| {
            std::array::from_fn(|code| {
                let rcode = rcode_label(code);
                self.responses
                    .get_or_create(&ResponseLabels {
                        server: server.into(),
                        zone: zone.clone(),
                        view: view.clone(),
                        rcode: rcode.into(),
                        plugin: plugin.into(),
                    })
                    .attach(Counter::default())
            })
        });
        let hits = ["success", "denial"].map(|t| {
            self.cache_hits
                .get_or_create(&CacheTypeLabels { server: server.into(), r#type: t.into(), zones: zone.clone(), view: view.clone() })
                .attach(Counter::default())
        });
        let cache_labels = CacheLabels { server: server.into(), zones: zone.clone(), view: view.clone() };
        // A request through the cache is a hit or a lookup that found nothing: the hits'
        // counters are parts of the requests' sum too, so a hit counts once for both.
        let cache_requests = self.cache_requests.get_or_create(&cache_labels);
        for hit in &hits {
            cache_requests.attach(hit.clone());
        }
        let cache_lookup_missed = cache_requests.attach(Counter::default());
        drop(cache_requests);
        let size_labels = SizeLabels { server: server.into(), zone: zone.clone(), view: view.clone(), proto: proto.into() };
        let request_size = self.request_size.get_or_create(&size_labels).attach(SizeBuckets::part());
        let response_size = self.response_size.get_or_create(&size_labels).attach(SizeBuckets::part());
        let cache_miss = self.cache_misses.get_or_create_owned(&cache_labels);
        let prefetch = self.cache_prefetch.get_or_create_owned(&cache_labels);
        let served_stale = self.cache_served_stale.get_or_create_owned(&cache_labels);
        let dropped = self.dropped.get_or_create_owned(&ReasonLabels { reason: DropReason::NotAQuery.as_str().into() });
        let denied = DENIED_REASONS.map(|reason| {
            DENIED_ACTIONS.map(|action| {
                self.denied.get_or_create_owned(&DeniedLabels { server: server.into(), reason: reason.into(), action: action.into() })
            })
        });
        let overloaded =
            self.overloaded.get_or_create_owned(&CacheLabels { server: server.into(), zones: zone.clone(), view: view.clone() });
        ListenerMetrics {
            requests,
            duration,
            request_size,
            response_size,
            responses,
            hits,
            cache_lookup_missed,
            cache_miss,
            prefetch,
            served_stale,
            dropped,
            denied,
            overloaded,
        }
    }

    /// Node setup a previous process left (a kill, a crash, an OOM kill, or `keep_on_exit`),
    /// found at this process's start.
    pub fn leftover_found(&self, what: &str) {
        self.leftovers.get_or_create(&ReasonLabels { reason: what.into() }).inc();
    }

    pub fn node_repaired(&self, what: &str) {
        self.node_repairs.get_or_create(&ReasonLabels { reason: what.into() }).inc();
    }

    pub fn config_reloaded(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "success" } else { "failure" }.into() }).inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// A failed node setup step, of one of [`SETUP_ERROR_TYPES`].
    pub fn node_setup_failed(&self, errortype: &'static str) {
        if errortype != "configmap" {
            self.node_errors.inc();
        }
        self.setup_errors.get_or_create(&ErrorTypeLabels { errortype: errortype.into() }).inc();
    }

    /// Counts a drop for reasons off the per-datagram path.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&ReasonLabels { reason: reason.as_str().into() }).inc();
    }

    /// Resolves the metrics of one upstream, labelled `to` (its address as configured).
    pub fn upstream(&self, to: &str, proto: &str) -> UpstreamMetrics {
        let l = ToLabels { to: to.into() };
        let p = ProxyProtoLabels { proxy_name: "forward".into(), to: to.into(), proto: proto.into() };
        let m = UpstreamMetrics {
            to: to.into(),
            requests: self.forward_requests.get_or_create_owned(&l),
            by_rcode: Arc::new(std::array::from_fn(|code| {
                let rcode = rcode_label(code).to_string();
                let labels = ToRcodeLabels { to: to.into(), rcode: rcode.clone() };
                (
                    self.forward_responses.get_or_create_owned(&labels),
                    self.forward_duration.get_or_create_owned(&labels),
                    self.proxy_duration.get_or_create_owned(&ProxyLabels { proxy_name: "forward".into(), to: to.into(), rcode }),
                )
            })),
            errors: self.upstream_errors.clone(),
            ignored: self.upstream_ignored.get_or_create_owned(&l),
            connections: self.up_connections.get_or_create_owned(&l),
            in_use: self.up_in_use.get_or_create_owned(&l),
            inflight: self.up_inflight.get_or_create_owned(&l),
            queue_depth: self.up_queue_depth.get_or_create_owned(&l),
            queue_wait: self.up_queue_wait.get_or_create_owned(&l),
            queue_rejected: self.up_queue_rejected.get_or_create_owned(&l),
            connects: self.up_connects.get_or_create_owned(&l),
            connect_failures: self.up_connect_failures.get_or_create_owned(&l),
            healthy: self.up_healthy.get_or_create_owned(&l),
            rtt: self.up_rtt.get_or_create_owned(&l),
            retransmits: self.up_retransmits.get_or_create_owned(&l),
            rate_limited: self.up_rate_limited.get_or_create_owned(&l),
            conn_reused: self.conn_cache_hits.get_or_create_owned(&p),
            conn_opened: self.conn_cache_misses.get_or_create_owned(&p),
            healthcheck_failures: [
                self.healthcheck_failures.get_or_create_owned(&l),
                self.proxy_healthcheck_failures.get_or_create_owned(&ProxyToLabels { proxy_name: "forward".into(), to: to.into() }),
            ],
        };
        m.healthy.set(1);
        m
    }

    /// Sets the cache-size gauges; called just before each scrape.
    pub fn set_cache_entries(&self, server: &str, positive: usize, negative: usize) {
        for (t, n) in [("success", positive), ("denial", negative)] {
            self.cache_entries
                .get_or_create(&CacheTypeLabels { server: server.into(), r#type: t.into(), zones: ".".into(), view: String::new() })
                .set(n as i64);
        }
    }

    /// Sets the cache's eviction counters from the stores' totals (which only grow); called
    /// just before each scrape.
    pub fn set_cache_evictions(&self, server: &str, positive: u64, negative: u64) {
        for (t, n) in [("success", positive), ("denial", negative)] {
            let counter = self.cache_evictions.get_or_create(&CacheTypeLabels {
                server: server.into(),
                r#type: t.into(),
                zones: ".".into(),
                view: String::new(),
            });
            // The larger: two scrapes at once cannot take the counter back.
            counter.inner().fetch_max(n, Relaxed);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The text exposition of a fresh registry holding what `register` puts in it: how the
/// metric types' tests compare their output.
#[cfg(test)]
fn exposition(register: impl FnOnce(&mut Registry)) -> String {
    let mut registry = Registry::default();
    register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing into a String");
    out
}

/// One zone's loop-detection metrics, resolved once when the zone is first probed.
#[derive(Clone, Debug)]
pub struct LoopMetrics {
    pub looped: Gauge,
    pub detections: Counter,
    pub answers: Counter,
}

/// One upstream's metrics, resolved once when the upstream is created.
#[derive(Clone)]
pub struct UpstreamMetrics {
    to: String,
    pub requests: Counter,
    /// Per response code: responses, forward duration, proxy duration.
    by_rcode: Arc<[(Counter, Histogram, Histogram); RCODES]>,
    errors: Family<ToReasonLabels, Counter>,
    pub ignored: Counter,
    pub connections: Gauge,
    pub in_use: Gauge,
    pub inflight: Gauge,
    pub queue_depth: Gauge,
    pub queue_wait: Histogram,
    pub queue_rejected: Counter,
    pub connects: Counter,
    pub connect_failures: Counter,
    pub healthy: Gauge,
    pub rtt: Histogram,
    pub retransmits: Counter,
    pub rate_limited: Counter,
    pub conn_reused: Counter,
    pub conn_opened: Counter,
    /// `coredns_forward_healthcheck_failures` and `coredns_proxy_healthcheck_failures`.
    healthcheck_failures: [Counter; 2],
}

impl UpstreamMetrics {
    /// Records one exchange that produced a response.
    pub fn response(&self, rcode: Rcode, seconds: f64, ignored: u32) {
        let by_rcode = &self.by_rcode[rcode_index(rcode)];
        by_rcode.0.inc();
        by_rcode.1.observe(seconds);
        by_rcode.2.observe(seconds);
        self.rtt.observe(seconds);
        if ignored > 0 {
            self.ignored.inc_by(u64::from(ignored));
        }
    }

    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&ToReasonLabels { to: self.to.clone(), reason: reason.into() }).inc();
    }

    /// A probe of the upstream while it is marked down got no response.
    pub fn healthcheck_failed(&self) {
        for counter in &self.healthcheck_failures {
            counter.inc();
        }
    }
}

/// The latencies of one batch's answers, held until the batch is sent: its answers leave
/// together in one system call, so one clock reading after it times them all (a reading
/// per answer cost ~1% of a hit's CPU), and the time counted is when the client's answer
/// left, not when it was written.
///
/// One worker's own: atomic only so that requests (which may point here) can cross to the
/// async side; each count is a plain load and store.
#[derive(Default)]
pub struct HeldLatencies {
    by_type: [AtomicU32; TYPES.len()],
    any: AtomicBool,
}

impl HeldLatencies {
    #[inline]
    pub fn hold(&self, qtype: crate::wire::RecordType) {
        let count = &self.by_type[type_index(qtype)];
        count.store(count.load(Relaxed) + 1, Relaxed);
        self.any.store(true, Relaxed);
    }

    /// Whether any latency is held.
    #[inline]
    pub fn any(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// Observes every held latency as `seconds` into `metrics`, and holds none after.
    pub fn release(&self, metrics: &ListenerMetrics, seconds: f64) {
        for (count, histogram) in self.by_type.iter().zip(&metrics.duration) {
            let times = count.load(Relaxed);
            if times > 0 {
                count.store(0, Relaxed);
                histogram.observe_times(seconds, u64::from(times));
            }
        }
        self.any.store(false, Relaxed);
    }
}

/// The request and response sizes of one batch's answers, held until the batch is sent and
/// then added to the histograms bucket by bucket: a UDP worker's answer so costs two short
/// scans and four plain adds to its own memory, not four atomic adds.
///
/// One worker's own ([`Cell`]s: it never leaves the worker's thread).
#[derive(Default)]
pub struct HeldSizes {
    requests: [Cell<u32>; SIZE_BUCKETS],
    responses: [Cell<u32>; SIZE_BUCKETS],
    request_octets: Cell<u64>,
    response_octets: Cell<u64>,
    any: Cell<bool>,
}

impl HeldSizes {
    /// Holds one answered query of `request` octets and its answer of `response` octets.
    #[inline]
    pub fn hold(&self, request: usize, response: usize) {
        let (q, r) = (&self.requests[size_bucket(request)], &self.responses[size_bucket(response)]);
        q.set(q.get() + 1);
        r.set(r.get() + 1);
        self.request_octets.set(self.request_octets.get() + request as u64);
        self.response_octets.set(self.response_octets.get() + response as u64);
        self.any.set(true);
    }

    /// Observes every held size into `metrics`, and holds none after.
    pub fn release(&self, metrics: &ListenerMetrics) {
        if !self.any.replace(false) {
            return;
        }
        for (held, histogram, octets) in [
            (&self.requests, &metrics.request_size, &self.request_octets),
            (&self.responses, &metrics.response_size, &self.response_octets),
        ] {
            let mut sum = octets.replace(0);
            for (bucket, count) in held.iter().enumerate() {
                let times = count.replace(0);
                if times > 0 {
                    // The whole sum goes with the first bucket: the histogram adds it up anyway.
                    histogram.add(bucket, u64::from(times), std::mem::take(&mut sum));
                }
            }
        }
    }
}

/// One listener's hot-path counters, each resolved to its label set once.
#[derive(Clone)]
pub struct ListenerMetrics {
    requests: [Counter; TYPES.len()],
    duration: [AtomicHistogram; TYPES.len()],
    request_size: AtomicHistogram,
    response_size: AtomicHistogram,
    responses: [[Counter; RCODES]; SOURCES.len()],
    hits: [Counter; 2],
    /// Lookups in the cache that found no fresh entry (requests through the cache, less hits).
    cache_lookup_missed: Counter,
    cache_miss: Counter,
    prefetch: Counter,
    served_stale: Counter,
    dropped: Counter,
    /// By reason (acl, rate_limit), then action (refuse, drop, truncate).
    denied: [[Counter; 3]; 2],
    overloaded: Counter,
}

impl ListenerMetrics {
    /// Counts an answered query: its request and response code. Its latency is
    /// [`ListenerMetrics::latency`], or held ([`HeldLatencies`]).
    #[inline]
    pub fn answered(&self, qtype: crate::wire::RecordType, rcode: Rcode, source: Source) {
        self.requests[type_index(qtype)].inc();
        self.responses[source as usize][rcode_index(rcode)].inc();
    }

    #[inline]
    pub fn latency(&self, qtype: crate::wire::RecordType, seconds: f64) {
        self.duration[type_index(qtype)].observe(seconds);
    }

    #[inline]
    pub fn cache_hit(&self, negative: bool) {
        self.hits[usize::from(negative)].inc();
    }

    /// A query of `request` octets answered with `response` octets, observed now (TCP, and
    /// misses); a UDP worker holds its batch's instead ([`HeldSizes`]).
    #[inline]
    pub fn sizes(&self, request: usize, response: usize) {
        self.request_size.add(size_bucket(request), 1, request as u64);
        self.response_size.add(size_bucket(response), 1, response as u64);
    }

    /// The cache was consulted and had no fresh entry: a request through the cache that is
    /// not a hit.
    #[inline]
    pub fn cache_lookup_missed(&self) {
        self.cache_lookup_missed.inc();
    }

    #[inline]
    pub fn cache_miss(&self) {
        self.cache_miss.inc();
    }

    pub fn prefetch(&self) {
        self.prefetch.inc();
    }

    pub fn served_stale(&self) {
        self.served_stale.inc();
    }

    #[inline]
    pub fn dropped_not_a_query(&self) {
        self.dropped.inc();
    }

    /// A query denied for reason `DENIED_REASONS[reason]`, the client getting
    /// `DENIED_ACTIONS[action]`.
    #[inline]
    pub fn denied(&self, reason: usize, action: usize) {
        self.denied[reason][action].inc();
    }

    #[inline]
    pub fn overloaded(&self) {
        self.overloaded.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_labelled_type_is_named_by_its_mnemonic() {
        let labels: Vec<String> = (0..TYPES.len()).map(type_label).collect();
        assert!(labels.iter().all(|l| !l.starts_with("TYPE")), "{labels:?}");
        assert_eq!((labels[0].as_str(), labels[7].as_str(), labels[OTHER_TYPE].as_str()), ("A", "AAAA", "other"));
    }

    /// The lines of the request duration histogram's series for `qtype`.
    fn duration_lines(metrics: &Metrics, qtype: &str) -> Vec<String> {
        let series = format!("type=\"{qtype}\"");
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("coredns_dns_request_duration_seconds") && l.contains(&series))
            .map(|l| l.to_string())
            .collect()
    }

    fn value(lines: &[String], prefix: &str) -> String {
        lines.iter().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).unwrap_or_default().to_string()
    }

    #[test]
    fn every_rcode_is_counted_under_its_own_mnemonic() {
        for code in 0..=u8::MAX {
            assert_eq!(rcode_label(rcode_index(Rcode(code))), Rcode(code).as_str(), "rcode {code}");
        }
        assert_eq!(rcode_label(rcode_index(Rcode::BADVERS)), "BADVERS", "not OTHER, and not NOERROR");
    }

    /// The sample lines of `name` (a whole metric name, `_bucket`/`_sum`/`_count` included).
    fn samples(text: &str, name: &str) -> Vec<String> {
        text.lines().filter(|l| l.split(['{', ' ']).next() == Some(name)).map(str::to_string).collect()
    }

    #[test]
    fn sizes_fall_in_coredns_buckets_at_their_bounds() {
        let at = |len| size_bucket(len);
        assert_eq!((at(0), at(1), at(100), at(101), at(511), at(512)), (0, 1, 1, 2, 5, 6));
        assert_eq!((at(8291), at(8292), at(64_000), at(65_535)), (9, 10, 13, SIZE_BUCKETS - 1));
    }

    #[test]
    fn sizes_are_histograms_by_server_zone_view_and_proto_in_octets() {
        let metrics = Metrics::new();
        let udp = metrics.listener("dns://:53", "udp", false);
        let tcp = metrics.listener("dns://:53", "tcp", false);
        udp.sizes(40, 56);
        udp.sizes(40, 600);
        tcp.sizes(300, 2000);
        let text = metrics.encode();
        assert!(text.contains("# TYPE coredns_dns_request_size_bytes histogram\n"), "{text}");
        let series = r#"server="dns://:53",zone=".",view="",proto="udp""#;
        let request = samples(&text, "coredns_dns_request_size_bytes_bucket");
        assert!(request.contains(&format!("coredns_dns_request_size_bytes_bucket{{le=\"0.0\",{series}}} 0")), "{request:?}");
        assert!(request.contains(&format!("coredns_dns_request_size_bytes_bucket{{le=\"100.0\",{series}}} 2")), "{request:?}");
        assert!(
            samples(&text, "coredns_dns_request_size_bytes_sum").contains(&format!("coredns_dns_request_size_bytes_sum{{{series}}} 80.0"))
        );
        let response = samples(&text, "coredns_dns_response_size_bytes_bucket");
        assert!(response.contains(&format!("coredns_dns_response_size_bytes_bucket{{le=\"511.0\",{series}}} 1")), "{response:?}");
        assert!(response.contains(&format!("coredns_dns_response_size_bytes_bucket{{le=\"1023.0\",{series}}} 2")), "{response:?}");
        let les: Vec<&str> =
            response.iter().filter(|l| l.contains(series)).filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()).collect();
        assert_eq!(
            les,
            [
                "0.0", "100.0", "200.0", "300.0", "400.0", "511.0", "1023.0", "2047.0", "4095.0", "8291.0", "16000.0", "32000.0",
                "48000.0", "64000.0", "+Inf"
            ]
        );
        let tcp_sum = samples(&text, "coredns_dns_response_size_bytes_sum");
        assert!(
            tcp_sum.contains(&r#"coredns_dns_response_size_bytes_sum{server="dns://:53",zone=".",view="",proto="tcp"} 2000.0"#.to_string()),
            "{tcp_sum:?}"
        );
    }

    #[test]
    fn held_sizes_read_as_the_same_sizes_observed_one_by_one() {
        let (held_in, direct_in) = (Metrics::new(), Metrics::new());
        let (held_worker, direct) = (held_in.listener("dns://:53", "udp", false), direct_in.listener("dns://:53", "udp", false));
        let held = HeldSizes::default();
        for (request, response) in [(40, 56), (45, 56), (40, 700), (1300, 64_001), (0, 0)] {
            held.hold(request, response);
            direct.sizes(request, response);
        }
        let sizes = |m: &Metrics| m.encode().lines().filter(|l| l.contains("_size_bytes")).map(str::to_string).collect::<Vec<_>>();
        assert_ne!(sizes(&held_in), sizes(&direct_in), "held, not yet observed");
        held.release(&held_worker);
        held.release(&held_worker);
        assert_eq!(sizes(&held_in), sizes(&direct_in));
    }

    #[test]
    fn cache_requests_are_hits_and_lookups_that_missed_across_workers() {
        let metrics = Metrics::new();
        let (a, b) = (metrics.listener("dns://:53", "udp", false), metrics.listener("dns://:53", "udp", false));
        a.cache_hit(false);
        a.cache_hit(true);
        b.cache_hit(false);
        a.cache_lookup_missed();
        b.cache_lookup_missed();
        let text = metrics.encode();
        assert_eq!(
            samples(&text, "coredns_cache_requests_total"),
            [r#"coredns_cache_requests_total{server="dns://:53",zones=".",view=""} 5"#]
        );
        let hits = samples(&text, "coredns_cache_hits_total");
        assert!(
            hits.contains(&r#"coredns_cache_hits_total{server="dns://:53",type="success",zones=".",view=""} 2"#.to_string()),
            "{hits:?}"
        );
    }

    #[test]
    fn cache_evictions_follow_the_stores_totals_by_type_and_never_go_back() {
        let metrics = Metrics::new();
        metrics.set_cache_evictions("dns://:53", 7, 2);
        metrics.set_cache_evictions("dns://:53", 5, 3);
        let text = metrics.encode();
        assert!(text.contains("# TYPE coredns_cache_evictions counter\n"), "{text}");
        let mut evictions = samples(&text, "coredns_cache_evictions_total");
        evictions.sort();
        assert_eq!(
            evictions,
            [
                r#"coredns_cache_evictions_total{server="dns://:53",type="denial",zones=".",view=""} 3"#,
                r#"coredns_cache_evictions_total{server="dns://:53",type="success",zones=".",view=""} 7"#,
            ]
        );
    }

    #[test]
    fn health_check_failures_are_counted_per_upstream_under_both_coredns_names() {
        let metrics = Metrics::new();
        let upstream = metrics.upstream("10.0.0.10:53", "udp");
        upstream.healthcheck_failed();
        upstream.healthcheck_failed();
        metrics.healthcheck_broken.inc();
        let text = metrics.encode();
        assert_eq!(
            samples(&text, "coredns_forward_healthcheck_failures_total"),
            [r#"coredns_forward_healthcheck_failures_total{to="10.0.0.10:53"} 2"#]
        );
        assert_eq!(
            samples(&text, "coredns_proxy_healthcheck_failures_total"),
            [r#"coredns_proxy_healthcheck_failures_total{proxy_name="forward",to="10.0.0.10:53"} 2"#]
        );
        assert_eq!(samples(&text, "coredns_forward_healthcheck_broken_total"), ["coredns_forward_healthcheck_broken_total 1"]);
    }

    #[test]
    fn build_info_is_one_labelled_by_version_revision_and_the_rust_version() {
        let text = Metrics::new().encode();
        let info = samples(&text, "coredns_build_info");
        assert_eq!(info.len(), 1, "{info:?}");
        let prefix = format!(r#"coredns_build_info{{version="{}",revision=""#, env!("CARGO_PKG_VERSION"));
        assert!(info[0].starts_with(&prefix) && info[0].ends_with(" 1"), "{info:?}");
        assert!(info[0].contains(r#"goversion="rust1."#), "{info:?}");
        assert!(text.contains("# TYPE coredns_build_info gauge\n"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge\n"), "the process collector is registered");
    }

    #[test]
    fn held_latencies_are_observed_once_each_when_released() {
        let metrics = Metrics::new();
        let listener = metrics.listener("dns://:53", "udp", false);
        let held = HeldLatencies::default();
        assert!(!held.any());
        held.hold(crate::wire::RecordType(1));
        held.hold(crate::wire::RecordType(1));
        held.hold(crate::wire::RecordType(28));
        assert!(held.any());
        assert_eq!(value(&duration_lines(&metrics, "A"), "coredns_dns_request_duration_seconds_count"), "0", "held, not yet observed");

        held.release(&listener, 0.0003);
        held.release(&listener, 1.0);
        assert!(!held.any());
        let a = duration_lines(&metrics, "A");
        assert_eq!(value(&a, "coredns_dns_request_duration_seconds_count"), "2");
        let buckets: Vec<&String> = a.iter().filter(|l| l.contains("_bucket")).collect();
        let count_at =
            |le: &str| buckets.iter().find(|l| l.contains(&format!("le=\"{le}\""))).and_then(|l| l.rsplit(' ').next()).unwrap().to_string();
        assert_eq!((count_at("0.00025"), count_at("0.0005")), ("0".to_string(), "2".to_string()), "both in the bucket of 0.3 ms");
        assert_eq!(value(&duration_lines(&metrics, "AAAA"), "coredns_dns_request_duration_seconds_count"), "1");
    }
}

//! Entry points for the fuzz targets in `fuzz/` and for replaying their corpus in tests
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary octets, drives one path the way real input
//! does, and panics only when an invariant is broken; every other outcome is fine.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::codec::Decoder;

use crate::cache::{Cache, Capacity, Entry, KeyRef, TtlPolicy};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::query::handler::{Handler, Local, Request};
use crate::wire::Transport;
use crate::wire::frame_codec;
use crate::wire::name::{self, MAX_NAME};
use crate::wire::{MAX_MESSAGE, Query, UpstreamResponse};

fn policy() -> TtlPolicy {
    TtlPolicy::default()
}

/// A client query through the whole local path: admission, parsing, cache lookup, and
/// every error response. Whatever is written must itself parse as a response.
pub fn client_query(data: &[u8]) {
    let (handler, metrics) = handler();
    answer(handler, metrics, data, Transport::Udp);
}

fn answer(handler: &Handler, metrics: &ListenerMetrics, data: &[u8], transport: Transport) {
    let mut out = vec![0u8; MAX_MESSAGE];
    let req = Request {
        transport,
        client: SocketAddr::from(([127, 0, 0, 1], 5353)),
        local: std::net::Ipv4Addr::LOCALHOST.into(),
        started: Instant::now(),
        metrics,
        held: None,
    };
    if let Local::Reply(len) = handler.answer_local(data, &mut out, &req) {
        assert!((12..=MAX_MESSAGE).contains(&len), "reply of {len} octets");
        assert!(out[2] & 0x80 != 0, "a reply must be a response");
    }
}

/// An upstream response through validation, storage and serving: anything accepted must be
/// written back, for a client asking the same question, as a well-formed response to it.
pub fn upstream_response(data: &[u8]) {
    let mut lower = [0u8; MAX_NAME];
    let Ok((end, qname)) = name::read_lowercased(data, 12, &mut lower) else { return };
    let (Some(qtype), Some(qclass)) = (crate::wire::read_u16(data, end), crate::wire::read_u16(data, end + 2)) else { return };
    let qtype = crate::wire::RecordType(qtype);
    let Ok(parsed) = UpstreamResponse::parse(data, qname, qtype, qclass) else { return };
    let key = KeyRef::new(qname, qtype, qclass, false, false);
    let entry = Entry::from_response(&key, data, &parsed, &policy(), Instant::now());
    let cache = Cache::new(Capacity { max_entries: 16, max_bytes: 1 << 20 }, Capacity { max_entries: 16, max_bytes: 1 << 20 }, policy());
    cache.insert(&key, entry);
    let Some((entry, _)) = cache.lookup(&key, Instant::now()) else { return };

    // A client asking that question, with and without EDNS, over UDP and TCP limits.
    for edns in [None, Some((1232u16, false)), Some((4096, true))] {
        let mut query = vec![0u8; crate::wire::compose::MAX_COMPOSED];
        let n = crate::wire::compose::query(&mut query, 0x4242, &data[12..end], qtype, qclass, false, edns);
        let mut client_lower = [0u8; MAX_NAME];
        let Ok((client, _)) = Query::parse(&query[..n], &mut client_lower) else { continue };
        for limit in [512, 1232, MAX_MESSAGE] {
            let mut out = vec![0u8; MAX_MESSAGE];
            let written = entry.write_for(&client, 7, 1232, limit, &mut out);
            assert!(written <= limit.max(crate::wire::compose::MAX_COMPOSED), "wrote {written} past the limit {limit}");
            let again = UpstreamResponse::parse(&out[..written], qname, qtype, qclass);
            assert!(again.is_ok(), "what we serve must parse: {again:?}");
        }
    }
}

/// A client's question through the Kubernetes naming rules and the search-walk expansion,
/// and any denial through the response parser: the rules read arbitrary names without
/// panicking, later steps are valid names, and a denial is a well-formed upstream-shaped
/// answer to exactly that question.
pub fn naming(data: &[u8]) {
    use crate::kubernetes::{NamespaceSource, Naming, NamingSettings, search::later_steps, soa::Soa};
    static RULES: OnceLock<(Naming, Soa)> = OnceLock::new();
    let (rules, soa) = RULES.get_or_init(|| {
        let zone = |z: &str| z.parse().expect("literal");
        let naming = Naming::new(NamingSettings {
            enabled: true,
            cluster_domains: vec![zone("cluster.local")],
            namespaces: NamespaceSource::Fixed(vec!["default".into(), "kube-system".into()]),
            search_suffixes: vec![zone("c.proj.internal"), zone("google.internal")],
            filter_aaaa: vec![zone("ipv4.example")],
            search_prefetch: true,
        });
        (naming, Soa::from_message(&crate::kubernetes::soa::example_soa_answer()).expect("literal"))
    });
    let mut lower = [0u8; MAX_NAME];
    let Ok((query, qname)) = Query::parse(data, &mut lower) else { return };
    if let Some(answer) = rules.classify(qname, query.qtype, query.qclass) {
        let zone = &rules.zones()[answer.zone];
        assert!(zone.contains(qname), "{:?} denied under {zone}, which does not contain it", answer.reason);
        // `denial` parses what it built as the answer to this question.
        let key = KeyRef::new(qname, query.qtype, query.qclass, false, false);
        let entry = soa.denial(&key, answer.rcode, &policy(), Instant::now());
        assert!(entry.is_some(), "no well-formed denial for {qname:?}");
    }
    for step in later_steps(rules, qname).unwrap_or_default() {
        let mut buf = [0u8; MAX_NAME];
        let parsed = name::read_lowercased(&step, 0, &mut buf);
        assert!(matches!(parsed, Ok((end, _)) if end == step.len()), "later step {step:?} is not one wire name");
        let _ = rules.classify(step.as_name(), query.qtype, query.qclass);
    }
}

/// Snapshot octets through the reader, with a valid header and checksum wrapped around
/// them so the fuzzer reaches the entry parser: any input loads or is rejected whole, and
/// whatever loads is served like any cached answer.
pub fn snapshot(data: &[u8]) {
    use crate::cache::snapshot::decode_into;
    let mut bytes = b"NDNSSNAP\0\0\0\x01".to_vec();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    let stale = TtlPolicy { stale_max_age: 3600, ..policy() };
    let cache = Cache::new(Capacity { max_entries: 64, max_bytes: 1 << 20 }, Capacity { max_entries: 64, max_bytes: 1 << 20 }, stale);
    let now = Instant::now();
    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if decode_into(&cache, &bytes, now, wall).is_err() {
        assert_eq!(cache.len(), (0, 0), "a rejected snapshot loaded entries");
    }
}

/// Configuration text through the loader: any input either loads or is an error message
/// naming a line.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = crate::config::parse_file("fuzz.yaml", text) {
        assert!(e.to_string().starts_with("fuzz.yaml"), "error without the file: {e}");
    }
}

/// A TCP byte stream through the server's framing, each frame through the query path.
pub fn tcp_stream(data: &[u8]) {
    let (handler, metrics) = handler();
    let mut codec = frame_codec();
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        answer(handler, metrics, &frame, Transport::Tcp);
    }
}

/// One handler for the whole run: building it per input would dominate the fuzzer's time.
fn handler() -> (&'static Handler, &'static ListenerMetrics) {
    static HANDLER: OnceLock<(Handler, ListenerMetrics)> = OnceLock::new();
    let (h, m) = HANDLER.get_or_init(|| {
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::new(
            Capacity { max_entries: 64, max_bytes: 1 << 20 },
            Capacity { max_entries: 64, max_bytes: 1 << 20 },
            policy(),
        ));
        // Naming rules off: their answers need SOAs learned by tasks, and there is no runtime
        // here. The rules themselves are pure functions with unit tests.
        (crate::harness::handler(cache, &metrics, 1), metrics.listener("dns://fuzz", "udp", false))
    });
    (h, m)
}

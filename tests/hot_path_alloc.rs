//! A cache hit allocates nothing: parse, key, lookup, copy and patch all work on the stack
//! and on buffers the listener owns. Proven with an allocator that counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nodedns::cache::{Cache, Capacity, Entry, KeyRef, TtlPolicy};
use nodedns::forward::{ForwardSettings, Forwarder, Policy};
use nodedns::metrics::Metrics;
use nodedns::server::admission::{Action, Admission, ClientLimit};
use nodedns::server::handler::{Handler, HandlerSettings, Local, LocalNaming, Request, Transport};
use nodedns::wire::{MAX_MESSAGE, UpstreamResponse, name};
use nodedns::zones::Router;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn cache_hit_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let policy = TtlPolicy::default();
    let cap = Capacity { max_entries: 1000, max_bytes: 1 << 20 };
    let cache = Arc::new(Cache::new(cap, cap, policy.clone()));
    let metrics = Arc::new(Metrics::new());
    let settings = ForwardSettings { deadline: Duration::from_secs(2), policy: Policy::Sequential, max_attempts: 8 };
    let forwarder = Forwarder::new(Router::new([]), cache.clone(), settings, metrics.clone());
    let admission = Admission::new(vec!["127.0.0.0/8".parse().unwrap()], Action::Refuse, Some(ClientLimit { qps: 1_000_000, burst: 1_000_000, action: Action::Drop, table_size: 1024 }));
    let settings = HandlerSettings { max_inflight_misses: 100, udp_payload: 1232, deadline: Duration::from_secs(2), stale_after: Duration::from_secs(1) };
    let handler = Handler::new(cache.clone(), forwarder, admission, LocalNaming::off(&metrics), settings, nodedns::server::querylog::QueryLog::off());
    let listener = metrics.listener("dns://127.0.0.1:53", "udp", false);

    // Store an answer as the forwarder would.
    let mut resp = Message::new(7, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(Name::from_ascii("www.example.com.").unwrap(), RecordType::A));
    resp.add_answer(Record::from_rdata(Name::from_ascii("www.example.com.").unwrap(), 300, RData::A(A::new(192, 0, 2, 1))));
    let wire = resp.to_vec().unwrap();
    let qname = name::from_text("www.example.com").unwrap();
    let parsed = UpstreamResponse::parse(&wire, &qname, 1, 1).unwrap();
    cache.insert(KeyRef::new(&qname, 1, 1, true, false).to_owned(), Arc::new(Entry::from_response(&wire, &parsed, &policy, Instant::now())));

    // A client query in mixed case with EDNS (DO set), as a listener would hand it over.
    let mut query = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    query.extend_from_slice(b"\x03WwW\x07example\x03COM\x00\x00\x01\x00\x01");
    query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]);
    let mut out = vec![0u8; MAX_MESSAGE];
    let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();

    let answer = |out: &mut [u8]| {
        let req = Request { transport: Transport::Udp, client, started: Instant::now(), metrics: &listener };
        handler.answer_local(&query, out, &req)
    };
    let Local::Reply(len) = answer(&mut out) else { panic!("expected a cache hit") };
    let reply = Message::from_vec(&out[..len]).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.answers.len(), 1);

    let before = allocations();
    for _ in 0..10_000 {
        assert!(matches!(answer(&mut out), Local::Reply(_)));
    }
    assert_eq!(allocations() - before, 0, "allocations on 10,000 cache hits");
}

//! A cache hit allocates nothing: prefetch, parse, key, lookup, copy and patch all work on
//! the stack and on buffers the listener owns. Proven with an allocator that counts per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::Message;
use nodedns::harness::Hits;
use nodedns::metrics::{HeldLatencies, HeldSizes};
use nodedns::query::handler::{Local, Request};
use nodedns::wire::MAX_MESSAGE;
use nodedns::wire::Transport;
use nodedns::wire::name::MAX_NAME;

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
    let hits = Hits::new(1);
    // The client's query in mixed case, so the hit also restores the case.
    let mut query = hits.queries[0].clone();
    query[13..15].copy_from_slice(b"H0");
    let mut out = vec![0u8; MAX_MESSAGE];
    let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();

    let held = HeldLatencies::default();
    let sizes = HeldSizes::default();
    // As a UDP worker answers: the prefetch steps, then the answer, its sizes held with the
    // batch's, then what was held observed.
    let answer = |out: &mut [u8]| {
        let mut lower = [0u8; MAX_NAME];
        let parsed = hits.handler.parse(&query, &mut lower);
        hits.handler.prefetch_slots(&parsed);
        hits.handler.prefetch_entry(&parsed);
        let started = Instant::now();
        let req = Request {
            transport: Transport::Udp,
            client,
            local: std::net::Ipv4Addr::LOCALHOST.into(),
            started,
            metrics: &hits.listener,
            held: Some(&held),
        };
        let local = hits.handler.answer_parsed(&parsed, out, &req);
        if let Local::Reply(len) = local {
            sizes.hold(query.len(), len);
        }
        held.release(&hits.listener, started.elapsed().as_secs_f64());
        sizes.release(&hits.listener);
        local
    };
    let Local::Reply(len) = answer(&mut out) else { panic!("expected a cache hit") };
    let reply = Message::from_vec(&out[..len]).unwrap();
    assert_eq!(reply.metadata.id, 0);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].name.to_string(), "H0.bench.example.", "the client's case");

    let before = allocations();
    for _ in 0..10_000 {
        assert!(matches!(answer(&mut out), Local::Reply(_)));
    }
    assert_eq!(allocations() - before, 0, "allocations on 10,000 cache hits");
}

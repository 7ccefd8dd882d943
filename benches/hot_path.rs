//! Micro-benchmarks of the cache-hit path, piece by piece and whole: parsing the client's
//! query, building its key, the cache lookup, writing the stored answer patched for the
//! client, and `Handler::answer_local` end to end. `cargo bench --bench hot_path`.
//! The system-level figures (CPU per query against Unbound, dnsdist and a bare responder)
//! come from `bench/hits.sh`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nodedns::cache::KeyRef;
use nodedns::harness::{Hits, cache_for, client_query, store_a};
use nodedns::server::handler::{Request, Transport};
use nodedns::wire::name::MAX_NAME;
use nodedns::wire::{MAX_MESSAGE, Query};

const NAMES: usize = 10_000;

fn pieces(c: &mut Criterion) {
    let query = client_query(0x1234, "h4242.bench.example.");
    let cache = cache_for(NAMES);
    let now = Instant::now();
    for i in 0..NAMES {
        store_a(&cache, i, now);
    }
    let mut lower = [0u8; MAX_NAME];

    c.bench_function("parse", |b| b.iter(|| Query::parse(black_box(&query), &mut lower).is_ok()));

    c.bench_function("parse_and_key", |b| {
        b.iter(|| {
            let mut lower = [0u8; MAX_NAME];
            let (q, n) = Query::parse(black_box(&query), &mut lower).expect("valid");
            black_box(KeyRef::for_query(&q, &lower[..n]).qtype())
        })
    });

    let (parsed, n) = Query::parse(&query, &mut lower).expect("valid");
    let key = KeyRef::for_query(&parsed, &lower[..n]);
    c.bench_function("lookup", |b| b.iter(|| cache.lookup(black_box(&key), now).is_some()));

    let (entry, age) = cache.lookup(&key, now).expect("stored");
    let mut out = vec![0u8; MAX_MESSAGE];
    c.bench_function("patch", |b| b.iter(|| entry.write_for(black_box(&parsed), age, 1232, 1232, &mut out)));
}

fn whole_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let hits = Hits::new(NAMES);
    let client: SocketAddr = "127.0.0.1:5353".parse().expect("literal");
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut i = 0;
    c.bench_function("answer_local_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % NAMES;
            let req = Request { transport: Transport::Udp, client, started: Instant::now(), metrics: &hits.listener };
            black_box(hits.handler.answer_local(&hits.queries[i], &mut out, &req));
        })
    });
}

criterion_group!(benches, pieces, whole_hit);
criterion_main!(benches);

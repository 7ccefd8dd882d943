//! Micro-benchmarks of the cache-hit path, piece by piece and whole: parsing the client's
//! query, building its key, the cache lookup, writing the stored answer patched for the
//! client, and `Handler::answer_local` end to end. `cargo bench --bench hot_path`.
//! The system-level figures (CPU per query against Unbound, dnsdist and a bare responder)
//! come from `bench/hits.sh`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nodedns::cache::{Cache, KeyHash, KeyRef};
use nodedns::harness::{Hits, bench_name, cache_for, client_query, store_a};
use nodedns::query::handler::Request;
use nodedns::wire::Transport;
use nodedns::wire::name::{self, LowerName, MAX_NAME};
use nodedns::wire::{MAX_MESSAGE, Query, RecordType};

/// The allocator the nodedns binary uses (`src/main.rs`): where entries land in memory is
/// part of what a lookup costs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMES: usize = 10_000;
/// The default `cache.positive.max_entries` is 200,000; this is five times that.
const BIG: usize = 1_000_000;

/// What a hit reads of the cache: the entry found fresh in place, its stored message's
/// length and its age.
fn hit(cache: &Cache, key: &KeyRef<'_>, hash: KeyHash, now: Instant) -> Option<(usize, u32)> {
    cache.read_fresh(key, hash, now, |entry, age| (entry.wire().len(), age))
}

/// Looks up `names` stored names in a stride order that defeats the hardware prefetcher.
/// Each name is written on the stack first, as a query's name is in the receive buffer: a
/// table of a million prepared names would add a memory miss of its own.
fn lookup_spread(c: &mut Criterion, cache: &Cache, names: usize, now: Instant) {
    let mut wire = [0u8; MAX_NAME];
    for i in [0, 7, 4242, names - 1] {
        let len = bench_name_wire(i, &mut wire);
        assert_eq!(Some(&wire[..len]), name::from_text(&bench_name(i)).as_deref(), "the names stored");
    }
    let mut i = 0;
    c.bench_function(&format!("lookup_spread_{names}_names"), |b| {
        b.iter(|| {
            i = (i + 7919) % names;
            let len = bench_name_wire(i, &mut wire);
            let key = KeyRef::new(LowerName::written_lower(&wire[..len]), RecordType::A, 1, false, false);
            hit(cache, black_box(&key), cache.hash(&key), now)
        })
    });
}

/// The same lookups four at a time, as a UDP worker does a batch: every key's slots are
/// prefetched, then every entry, then each is looked up. Time per lookup, so it reads
/// against `lookup_spread_*`: the difference is the memory waits the prefetches overlap.
fn lookup_spread_prefetched(c: &mut Criterion, cache: &Cache, names: usize, now: Instant) {
    const BATCH: usize = 4;
    let mut wire = [[0u8; MAX_NAME]; BATCH];
    let mut len = [0; BATCH];
    let mut i = 0;
    c.bench_function(&format!("lookup_spread_{names}_names_prefetched_by_4"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters.div_ceil(BATCH as u64) {
                let mut hash = [None; BATCH];
                for k in 0..BATCH {
                    i = (i + 7919) % names;
                    len[k] = bench_name_wire(i, &mut wire[k]);
                    let h = cache.hash(&KeyRef::new(LowerName::written_lower(&wire[k][..len[k]]), RecordType::A, 1, false, false));
                    cache.prefetch_slots(h);
                    hash[k] = Some(h);
                }
                for &h in hash.iter().flatten() {
                    cache.prefetch_entry(h);
                }
                for (k, h) in hash.into_iter().flatten().enumerate() {
                    let key = KeyRef::new(LowerName::written_lower(&wire[k][..len[k]]), RecordType::A, 1, false, false);
                    black_box(hit(cache, black_box(&key), h, now));
                }
            }
            start.elapsed()
        })
    });
}

/// [`bench_name`]`(i)` in wire form, written into `out` without allocating; its length.
fn bench_name_wire(i: usize, out: &mut [u8; MAX_NAME]) -> usize {
    let mut digits = [0u8; 20];
    let (mut n, mut at) = (i, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let label = &digits[at..];
    out[0] = 1 + label.len() as u8;
    out[1] = b'h';
    out[2..2 + label.len()].copy_from_slice(label);
    let rest = b"\x05bench\x07example\x00";
    let start = 2 + label.len();
    out[start..start + rest.len()].copy_from_slice(rest);
    start + rest.len()
}

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
            black_box(KeyRef::for_query(&q, n).qtype())
        })
    });

    let (parsed, n) = Query::parse(&query, &mut lower).expect("valid");
    let key = KeyRef::for_query(&parsed, n);
    // One name asked again and again: everything it touches stays in the L1 cache.
    c.bench_function("lookup_one_name", |b| b.iter(|| hit(&cache, black_box(&key), cache.hash(&key), now)));
    // Names asked in a scattered order, as a node's pods ask them: a hit's cost is then
    // the memory it touches (the store's table and the entry), which is what a server pays.
    lookup_spread(c, &cache, NAMES, now);
    lookup_spread_prefetched(c, &cache, NAMES, now);
    let big = cache_for(BIG);
    for i in 0..BIG {
        store_a(&big, i, now);
    }
    lookup_spread(c, &big, BIG, now);
    lookup_spread_prefetched(c, &big, BIG, now);

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
            let req = Request {
                transport: Transport::Udp,
                client,
                local: std::net::Ipv4Addr::LOCALHOST.into(),
                started: Instant::now(),
                metrics: &hits.listener,
                held: None,
            };
            black_box(hits.handler.answer_local(&hits.queries[i], &mut out, &req));
        })
    });
}

/// Two threads answering hits at once from one handler, each with its own counters, as two
/// UDP workers do: what they share (cache shards, entries) costs cache-line transfers
/// between cores that one thread never pays. Reports wall time per hit per thread: equal
/// to `answer_local_hit` when nothing is contended.
fn whole_hit_two_threads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let hits = Hits::new(NAMES);
    let client: SocketAddr = "127.0.0.1:5353".parse().expect("literal");
    c.bench_function("answer_local_hit_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (hits, runtime) = (&hits, &runtime);
                    s.spawn(move || {
                        let _guard = runtime.enter();
                        let metrics = hits.worker();
                        let mut out = vec![0u8; MAX_MESSAGE];
                        let mut i = t * NAMES / 2;
                        for _ in 0..iters {
                            i = (i + 7919) % NAMES;
                            let req = Request {
                                transport: Transport::Udp,
                                client,
                                local: std::net::Ipv4Addr::LOCALHOST.into(),
                                started: Instant::now(),
                                metrics: &metrics,
                                held: None,
                            };
                            black_box(hits.handler.answer_local(&hits.queries[i], &mut out, &req));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

criterion_group!(benches, pieces, whole_hit, whole_hit_two_threads);
criterion_main!(benches);

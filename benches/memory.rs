//! Memory per cached entry: RSS growth of a process that fills a cache with single-A
//! answers (as the forwarder stores them), at 100,000 and 1,000,000 entries, each size in a
//! fresh process so the allocator's leftovers from one size do not hide the next one's
//! growth. `cargo bench --bench memory`. `bench/memory.sh` measures the same for whole
//! nodedns and Unbound processes filled over DNS.

use std::time::Instant;

use nodedns::harness::{cache_for, store_a};

/// The allocator the nodedns binary uses (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 2] = [100_000, 1_000_000];
const SIZE_VAR: &str = "NODEDNS_MEMORY_BENCH_SIZE";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).expect("VmRSS");
    kib * 1024
}

fn measure(names: usize) {
    let before = rss_bytes();
    let cache = cache_for(names);
    let now = Instant::now();
    for i in 0..names {
        store_a(&cache, i, now);
    }
    let after = rss_bytes();
    let (entries, _) = cache.len();
    let per_entry = |bytes: u64| bytes as f64 / entries as f64;
    println!(
        "{names:>9} single-A answers: {entries} cached, {:.0} bytes of RSS per entry (the store's slots and tables: {:.0})",
        per_entry(after - before),
        per_entry(cache.bookkeeping())
    );
}

fn main() {
    if let Ok(size) = std::env::var(SIZE_VAR) {
        measure(size.parse().expect("a size"));
        return;
    }
    // `cargo bench` passes `--bench`; any filter argument is ignored.
    let me = std::env::current_exe().expect("own path");
    for size in SIZES {
        let status = std::process::Command::new(&me).env(SIZE_VAR, size.to_string()).status().expect("re-run");
        assert!(status.success());
    }
}

//! A random-name flood (one client asking unique names as fast as nodedns answers it, 500
//! queries outstanding, for 30 s) cannot grow nodedns's memory past its cache bounds plus a
//! stated margin, and cannot evict the hot set that another client keeps asking for.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const CACHE_BYTES: u64 = 12 << 20; // 8 MiB positive + 4 MiB negative, below
/// What nodedns may hold beyond its cache: the runtime, buffers, metrics, and up to
/// `max_inflight_misses` (here 2,000) misses in flight with their packets and tasks.
const MARGIN: u64 = 48 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap();
    kb * 1024
}

/// Asks every hot name once; returns the latencies.
fn hot_round(nd: &Nodedns, hot: &[String], id: &mut u16) -> Vec<Duration> {
    hot.iter()
        .map(|name| {
            *id = id.wrapping_add(1);
            let asked = Instant::now();
            let r = query_udp(nd.dns, name, RecordType::A, *id, Duration::from_secs(2)).expect("hot name answered");
            assert_eq!(r.answers.len(), 1);
            asked.elapsed()
        })
        .collect()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn random_name_flood_stays_within_the_cache_bounds_and_keeps_the_hot_set() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = "cache:\n  positive: {max_entries: 1000000, max_bytes: 8Mi, min_ttl: 0s, max_ttl: 1h}\n  \
                  negative: {max_entries: 1000000, max_bytes: 4Mi, min_ttl: 0s, max_ttl: 30m}\n\
                  server:\n  max_inflight_misses: 2000\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), named.addr.to_string()]);
    let pid = nd.proc.child.id();
    let hot: Vec<String> = (0..100).map(|i| format!("host{i}.test.example.")).collect();
    let mut id = 0u16;
    hot_round(&nd, &hot, &mut id); // warm
    let mut quiet = Vec::new();
    for _ in 0..10 {
        quiet.extend(hot_round(&nd, &hot, &mut id));
    }
    let quiet_p99 = p99(quiet);
    let rss_before = rss_bytes(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent, dns) = (stop.clone(), sent.clone(), nd.dns);
        std::thread::spawn(move || {
            // Closed loop, like dnsperf: keep WINDOW queries outstanding, a reply (or 50 ms of
            // silence) frees room for more. Open-loop sending past what the server can read
            // only measures the kernel dropping datagrams.
            const WINDOW: u64 = 500;
            let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 1500];
            let (mut i, mut answered) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                while i - answered < WINDOW {
                    let q = build_query(&format!("r{i:x}.load.test.example."), RecordType::A, i as u16, false);
                    let _ = sock.send_to(&q, dns);
                    i += 1;
                }
                match sock.recv(&mut buf) {
                    Ok(_) => answered += 1,
                    Err(_) => answered = i, // the rest are lost or late: refill the window
                }
            }
            sent.store(i, Ordering::SeqCst);
        })
    };
    let flood_started = Instant::now();
    let mut during = Vec::new();
    let mut rss_max = rss_before;
    while flood_started.elapsed() < Duration::from_secs(30) {
        during.extend(hot_round(&nd, &hot, &mut id));
        rss_max = rss_max.max(rss_bytes(pid));
    }
    stop.store(true, Ordering::SeqCst);
    flooder.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = rss_bytes(pid);
    let hot_asked = during.len();
    let flood_p99 = p99(during);
    let hot_upstream: usize = (0..100).map(|i| named.queries_for(&format!("host{i}.test.example"), "A")).sum();
    let entries = nd.metric("coredns_cache_entries{");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "flood: {} unique names in 30 s; nodedns RSS {:.1} MiB before, {:.1} MiB max during, {:.1} MiB after (cache bound {:.0} MiB + margin {:.0} MiB); \
         {entries} entries cached; hot set: {hot_asked} queries, {} went upstream, p99 {quiet_p99:?} quiet vs {flood_p99:?} flooded",
        sent.load(Ordering::SeqCst),
        mib(rss_before),
        mib(rss_max),
        mib(rss_after),
        mib(CACHE_BYTES),
        mib(MARGIN),
        hot_upstream - 100,
    );
    assert!(sent.load(Ordering::SeqCst) > 50_000, "the flood was too weak to prove anything");
    assert!(rss_max <= rss_before + CACHE_BYTES + MARGIN, "RSS grew {:.1} MiB", mib(rss_max - rss_before));
    assert_eq!(hot_upstream, 100, "hot names were evicted and asked upstream again");
    // About starvation (a client retrying after 1-5 s), not speed: generous for a noisy
    // 2-core machine that also runs the flooder.
    assert!(flood_p99 < Duration::from_millis(250), "hot-set p99 under flood {flood_p99:?}");
}

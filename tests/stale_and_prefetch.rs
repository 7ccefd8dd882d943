//! Serving stale answers when the upstream fails or is slow (RFC 8767), and refreshing
//! popular names before they expire so that clients never meet the expiry (no herd at the
//! TTL, and short-TTL cloud endpoints stay warm).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn ask(nd: &Nodedns, name: &str, id: u16) -> (Message, Duration) {
    let started = Instant::now();
    let resp = query_udp(nd.dns, name, RecordType::A, id, Duration::from_secs(4)).unwrap_or_else(|| panic!("no answer for {name}"));
    (resp, started.elapsed())
}

fn ttl(resp: &Message) -> u32 {
    resp.answers.first().map(|r| r.ttl).expect("an answer record")
}

#[test]
fn cached_names_keep_answering_after_the_upstream_stops_and_uncached_ones_fail_within_the_deadline() {
    let mut named = Named::start(&[("test.example", test_zone("test.example"))]);
    // Entries expire after 1 s, so the test need not wait for real TTLs.
    let config = "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 1s }\n  prefetch: { min_hits: 0 }\n";
    let nd = Nodedns::start_with_config(Some(config), &[format!("--upstream={}", named.addr)]);
    let names: Vec<String> = (0..10).map(|i| format!("host{i}.test.example.")).collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(rcode(&ask(&nd, name, i as u16).0), ResponseCode::NoError);
    }

    named.stop();
    std::thread::sleep(Duration::from_millis(1500));
    for (i, name) in names.iter().enumerate() {
        let (resp, took) = ask(&nd, name, 100 + i as u16);
        assert_eq!(rcode(&resp), ResponseCode::NoError, "{name} served stale");
        assert_eq!(ttl(&resp), 30, "stale answers carry a 30 s TTL");
        assert!(took < Duration::from_millis(1900), "{name} answered in {took:?}, within the client timeout");
    }
    // Within the failure-recheck window the stale answer is a plain hit: no waiting.
    let (_, took) = ask(&nd, &names[0], 200);
    assert!(took < Duration::from_millis(100), "repeat took {took:?}");

    let (resp, took) = ask(&nd, "never-asked.test.example.", 300);
    assert_eq!(rcode(&resp), ResponseCode::ServFail);
    assert!(took < Duration::from_millis(2500), "uncached name failed in {took:?}, within the 2 s deadline");
    assert!(nd.metric("coredns_cache_served_stale_total") >= 11.0, "{}", nd.metrics_text());
}

#[test]
fn a_slow_upstream_gets_the_stale_answer_after_the_client_timeout_and_the_fresh_one_later() {
    let upstream = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let config = "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 1s }\n  prefetch: { min_hits: 0 }\n  serve_stale: { client_timeout: 300ms }\n";
    let nd = Nodedns::start_with_config(Some(config), &[format!("--upstream={}", upstream.addr)]);
    assert_eq!(ttl(&ask(&nd, "slow.example.", 1).0), 1);

    upstream.set(Behaviour::AnswerAfter(Duration::from_millis(900)));
    std::thread::sleep(Duration::from_millis(1200));
    let (resp, took) = ask(&nd, "slow.example.", 2);
    assert_eq!(ttl(&resp), 30, "stale answer");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(800),
        "stale answer after the 300 ms client timeout, took {took:?}"
    );

    // The fetch went on and stored the upstream's fresh answer.
    std::thread::sleep(Duration::from_millis(900));
    let (resp, took) = ask(&nd, "slow.example.", 3);
    assert_eq!(ttl(&resp), 1, "fresh answer from the fetch that outlived the client");
    assert!(took < Duration::from_millis(100), "a hit, took {took:?}");
    assert_eq!(nd.metric("coredns_cache_served_stale_total"), 1.0);
}

/// Asks `name` every 100 ms for `duration`; returns how many answers came back.
fn steady_client(nd: &Nodedns, name: &str, duration: Duration) -> usize {
    let until = Instant::now() + duration;
    let mut answered = 0;
    let mut id = 0u16;
    while Instant::now() < until {
        id = id.wrapping_add(1);
        answered += usize::from(query_udp(nd.dns, name, RecordType::A, id, Duration::from_secs(2)).is_some());
        std::thread::sleep(Duration::from_millis(100));
    }
    answered
}

#[test]
fn popular_names_are_refreshed_before_they_expire_so_clients_meet_no_miss_after_the_first() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let upstream = format!("--upstream={}", named.addr);
    // Every answer lives 3 s: refreshed from its last second on, after two hits there.
    let short = "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 3s }\n";
    let with = Nodedns::start_with_config(Some(short), std::slice::from_ref(&upstream));
    let without = Nodedns::start_with_config(Some(&format!("{short}  prefetch: {{ min_hits: 0 }}\n")), &[upstream]);

    let run = Duration::from_millis(7500);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| steady_client(&with, "www.test.example.", run));
        let b = s.spawn(|| steady_client(&without, "www.test.example.", run));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a > 50 && b > 50, "the clients were answered ({a}, {b})");
    let misses = |nd: &Nodedns| nd.metric("coredns_cache_misses_total");
    eprintln!(
        "prefetch on: {} misses, {} prefetches; off: {} misses",
        misses(&with),
        with.metric("coredns_cache_prefetch_total"),
        misses(&without)
    );
    assert_eq!(misses(&with), 1.0, "only the first query missed");
    assert!(with.metric("coredns_cache_prefetch_total") >= 2.0);
    assert!(misses(&without) >= 3.0, "without prefetch every expiry is a miss");
}

#[test]
fn a_slow_refresh_is_started_once_however_many_hits_arrive_while_it_runs() {
    let upstream = FakeUpstream::start(Behaviour::AnswerAfter(Duration::from_millis(600)));
    // One attempt per fetch, so every datagram the upstream counts is a fetch.
    let config = "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 2s }\nupstream:\n  max_attempts: 1\n";
    let nd = Nodedns::start_with_config(Some(config), &[format!("--upstream={}", upstream.addr)]);
    // Twenty clients asking every 100 ms: 200 queries a second, for 5 s.
    let answered: usize = std::thread::scope(|s| {
        let clients: Vec<_> = (0..20).map(|_| s.spawn(|| steady_client(&nd, "busy.example.", Duration::from_secs(5)))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert!(answered > 800, "{answered} answered");
    // One fetch per 2 s life at most (the first miss, then one refresh per life), plus a
    // margin for a refresh still running at an expiry.
    let asked = upstream.count();
    eprintln!("{answered} answered, upstream asked {asked} times, {} prefetches", nd.metric("coredns_cache_prefetch_total"));
    assert!((2..=5).contains(&asked), "upstream asked {asked} times");
}

#[test]
fn once_the_upstream_is_known_down_stale_answers_go_out_at_once() {
    let upstream = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let config = "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 1s }\n  prefetch: { min_hits: 0 }\n";
    let nd = Nodedns::start_with_config(Some(config), &[format!("--upstream={}", upstream.addr)]);
    let names: Vec<String> = (0..10).map(|i| format!("warm{i}.example.")).collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(ttl(&ask(&nd, name, i as u16).0), 1);
    }

    upstream.set(Behaviour::Silent);
    std::thread::sleep(Duration::from_millis(1200));
    // The first waits the client timeout (1 s), while its fetch finds the upstream silent.
    let (resp, _) = ask(&nd, &names[0], 100);
    assert_eq!(ttl(&resp), 30, "stale answer");
    wait_until(Duration::from_secs(5), "the upstream is marked down", || nd.metric("nodedns_upstream_healthy") == 0.0);
    for (i, name) in names.iter().enumerate().skip(1) {
        let (resp, took) = ask(&nd, name, 200 + i as u16);
        assert_eq!(ttl(&resp), 30, "{name} served stale");
        assert!(took < Duration::from_millis(200), "{name}: stale answer took {took:?} with the upstream known down");
    }
}

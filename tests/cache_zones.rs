//! Per-zone TTL bounds (`cache.zones`) against a real BIND `named`: NodeLocal DNSCache's
//! `cluster.local` block, answers at most 30 s and denials at most 5 s, beside a zone that
//! keeps the global bounds. Both zones are `test_zone`s, so the same TTL-300 records and the
//! same 60 s negative TTL come back from each.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(3);

const CONFIG: &str =
    "cache:\n  zones:\n    - zone: cluster.local\n      positive: { min_ttl: 0s, max_ttl: 30s }\n      negative: { max_ttl: 5s }\n";

fn setup() -> (Named, Nodedns) {
    let named = Named::start(&[("cluster.local", test_zone("cluster.local")), ("test.example", test_zone("test.example"))]);
    let config = format!("upstreams: [\"{}\"]\n{CONFIG}", named.addr);
    let nd = Nodedns::start_with_config(Some(&config), &[]);
    (named, nd)
}

#[test]
fn answers_under_the_zone_are_capped_and_others_keep_their_ttl() {
    let (named, nd) = setup();
    let first = query_udp(nd.dns, "www.cluster.local.", RecordType::A, 1, T).expect("answer");
    assert_eq!(first.answers[0].ttl, 30, "named says 300; cluster.local answers live at most 30 s");
    let other = query_udp(nd.dns, "www.test.example.", RecordType::A, 2, T).expect("answer");
    assert_eq!(other.answers[0].ttl, 300, "outside cache.zones the global max_ttl (1h) holds");

    std::thread::sleep(Duration::from_millis(2100));
    let hit = query_udp(nd.dns, "WWW.Cluster.Local.", RecordType::A, 3, T).expect("answer");
    assert!((27..=28).contains(&hit.answers[0].ttl), "a hit is capped and aged: {}", hit.answers[0].ttl);
    let other = query_udp(nd.dns, "www.test.example.", RecordType::A, 4, T).expect("answer");
    assert!((297..=298).contains(&other.answers[0].ttl), "aged from 300: {}", other.answers[0].ttl);

    wait_until(T, "named logs the queries", || named.queries_for("www.cluster.local", "A") >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("www.cluster.local", "A"), 1, "the second answer was a cache hit");
    assert_eq!(named.queries_for("www.test.example", "A"), 1);
}

#[test]
fn denials_under_the_zone_live_five_seconds_and_others_their_soa_minimum() {
    let (named, nd) = setup();
    for id in 0..3 {
        let r = query_udp(nd.dns, "missing.cluster.local.", RecordType::A, id, T).expect("answer");
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
        assert!(r.authorities[0].ttl <= 5, "the SOA minimum is 60; the zone caps denials at 5 s: {}", r.authorities[0].ttl);
        let r = query_udp(nd.dns, "missing.test.example.", RecordType::A, id, T).expect("answer");
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
        assert!((59..=60).contains(&r.authorities[0].ttl), "elsewhere the SOA minimum: {}", r.authorities[0].ttl);
    }
    wait_until(T, "named logs the denied query", || named.queries_for("missing.cluster.local", "A") >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("missing.cluster.local", "A"), 1, "repeats within 5 s are hits");

    std::thread::sleep(Duration::from_millis(5800));
    let r = query_udp(nd.dns, "missing.cluster.local.", RecordType::A, 10, T).expect("answer");
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    let r = query_udp(nd.dns, "missing.test.example.", RecordType::A, 11, T).expect("answer");
    assert!((52..=54).contains(&r.authorities[0].ttl), "still cached, aged: {}", r.authorities[0].ttl);
    wait_until(T, "the expired denial is asked again", || named.queries_for("missing.cluster.local", "A") == 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("missing.test.example", "A"), 1, "the 60 s denial outlived the 6 s");
}

#[test]
fn local_denials_under_the_zone_carry_its_negative_bound() {
    let named = Named::start(&[("cluster.local", test_zone("cluster.local"))]);
    let config = format!("upstreams: [\"{}\"]\n{CONFIG}kubernetes:\n  search_suffixes: []\n", named.addr);
    let nd = Nodedns::start_with_config(Some(&config), &[]);
    // The first junk names go upstream while nodedns learns the zone's SOA from it.
    let mut i = 0;
    wait_until(Duration::from_secs(5), "names outside the specification are denied locally", || {
        i += 1;
        query_udp(nd.dns, &format!("learn{i}.example.com.cluster.local."), RecordType::A, i, T);
        nd.metric("nodedns_local_answers") > 0.0
    });
    let r = query_udp(nd.dns, "api.example.com.cluster.local.", RecordType::A, 0x77, T).expect("answer");
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].ttl, 5, "the SOA says 60; the zone caps denials at 5 s, local ones too");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("api.example.com.cluster.local", "A"), 0, "answered on the node");
}

//! End-to-end behaviour of the cache and forwarder against a real BIND `named`, driven with
//! `dig` and with a `hickory-proto` client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const T: Duration = Duration::from_secs(3);

fn setup() -> (Named, Nodedns) {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    (named, nd)
}

#[test]
fn answers_a_aaaa_and_cname_chains_with_the_clients_id_and_case() {
    let (_named, nd) = setup();
    let r = query_udp(nd.dns, "WwW.Test.Example.", RecordType::A, 0x1111, T).expect("answer");
    assert_matches_query(&r, 0x1111, "WwW.Test.Example.");
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data, RData::A("192.0.2.1".parse().unwrap()));

    let r = query_udp(nd.dns, "www.test.example.", RecordType::AAAA, 0x2222, T).expect("answer");
    assert_eq!(r.answers[0].data, RData::AAAA("2001:db8::1".parse().unwrap()));

    let out = dig(nd.dns, &["chain1.test.example", "A", "+noall", "+answer"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "chain1 -> chain2 -> alias -> www -> A:\n{out}");
    assert!(lines[3].contains("192.0.2.1"), "{out}");
    assert!(r.edns.is_some_and(|e| e.max_payload() == 1232), "our OPT advertises 1232");
}

#[test]
fn nxdomain_and_nodata_are_cached_so_upstream_sees_each_once() {
    let (named, nd) = setup();
    for id in 0..5 {
        let r = query_udp(nd.dns, "missing.test.example.", RecordType::A, id, T).expect("answer");
        assert_eq!(rcode(&r), ResponseCode::NXDomain);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert!(r.authorities[0].ttl <= 60, "negative TTL is the SOA minimum");
        let r = query_udp(nd.dns, "www.test.example.", RecordType::MX, id, T).expect("answer");
        assert_eq!(rcode(&r), ResponseCode::NoError);
        assert!(r.answers.is_empty(), "NODATA");
    }
    wait_until(T, "named logs the queries", || named.queries_for("missing.test.example", "A") >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("missing.test.example", "A"), 1);
    assert_eq!(named.queries_for("www.test.example", "MX"), 1);
    assert_eq!(nd.metric("coredns_cache_hits_total{server=\"dns://") as u64, 8);
}

#[test]
fn ttl_decreases_with_time_spent_in_cache() {
    let (_named, nd) = setup();
    let first = query_udp(nd.dns, "www.test.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(first.answers[0].ttl, 300);
    std::thread::sleep(Duration::from_millis(2100));
    let later = query_udp(nd.dns, "www.test.example.", RecordType::A, 2, T).unwrap();
    assert!((297..=298).contains(&later.answers[0].ttl), "ttl {}", later.answers[0].ttl);
}

#[test]
fn expired_entry_is_fetched_again() {
    let (named, nd) = setup();
    query_udp(nd.dns, "short.test.example.", RecordType::A, 1, T).unwrap();
    query_udp(nd.dns, "short.test.example.", RecordType::A, 2, T).unwrap();
    std::thread::sleep(Duration::from_millis(5200));
    let r = query_udp(nd.dns, "short.test.example.", RecordType::A, 3, T).unwrap();
    assert_eq!(r.answers[0].ttl, 5);
    wait_until(T, "second upstream query logged", || named.queries_for("short.test.example", "A") == 2);
}

#[test]
fn large_answer_is_truncated_over_udp_and_complete_over_tcp() {
    let (_named, nd) = setup();
    let udp = dig(nd.dns, &["big.test.example", "A", "+ignore", "+notcp"]);
    assert!(udp.contains("flags: qr tc rd ra"), "expected TC over UDP:\n{udp}");
    let tcp = dig(nd.dns, &["big.test.example", "A", "+tcp", "+noall", "+answer"]);
    assert_eq!(tcp.lines().filter(|l| l.contains("IN\tA")).count(), 90, "{tcp}");
    // A plain dig falls back to TCP by itself on TC.
    let auto = dig(nd.dns, &["big.test.example", "A", "+noall", "+answer"]);
    assert_eq!(auto.lines().filter(|l| l.contains("IN\tA")).count(), 90);
}

#[test]
fn tcp_connection_carries_many_queries() {
    use std::io::{Read, Write};
    let (_named, nd) = setup();
    let mut s = std::net::TcpStream::connect(nd.dns).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let names = ["host1.test.example.", "host2.test.example.", "www.test.example."];
    let mut wire = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let q = build_query(name, RecordType::A, 100 + i as u16, false);
        wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
        wire.extend_from_slice(&q);
    }
    s.write_all(&wire).unwrap();
    let mut ids = Vec::new();
    for _ in 0..names.len() {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).unwrap();
        let m = hickory_proto::op::Message::from_vec(&msg).unwrap();
        assert_eq!(m.answers.len(), 1);
        ids.push(m.metadata.id);
    }
    ids.sort();
    assert_eq!(ids, vec![100, 101, 102]);
}

#[test]
fn malformed_queries_get_formerr_or_notimp_and_garbage_is_survived() {
    let (_named, nd) = setup();
    let good = build_query("www.test.example.", RecordType::A, 7, false);

    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let r = exchange_udp(nd.dns, &two_questions, T).expect("FORMERR answer");
    assert_eq!((r[0], r[1], r[3] & 0xf), (0, 7, 1), "FORMERR with our ID");

    let mut truncated_question = good.clone();
    truncated_question.truncate(good.len() - 3);
    let r = exchange_udp(nd.dns, &truncated_question, T).expect("FORMERR answer");
    assert_eq!(r[3] & 0xf, 1);

    let mut notify = good.clone();
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let r = exchange_udp(nd.dns, &notify, T).expect("NOTIMP answer");
    assert_eq!(r[3] & 0xf, 4);

    assert!(exchange_udp(nd.dns, &good[..7], Duration::from_millis(300)).is_none(), "too short: dropped");

    // Garbage of every length, including bytes that look like headers with huge counts.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 600) as usize;
        let mut pkt: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8 ^ j as u8).collect();
        if i % 3 == 0 && pkt.len() > 12 {
            pkt[..12].copy_from_slice(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff]);
        }
        let _ = sock.send_to(&pkt, nd.dns);
    }
    let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 9, T).expect("still answering after garbage");
    assert_eq!(r.answers.len(), 1);
    assert!(nd.metric("nodedns_dropped_queries_total{reason=\"not_a_query\"}") > 0.0);
}

#[test]
fn zone_transfers_are_refused() {
    let (_named, nd) = setup();
    let r = query_udp(nd.dns, "test.example.", RecordType::AXFR, 5, T).expect("answer");
    assert_eq!(rcode(&r), ResponseCode::Refused);
}

#[test]
fn zone_rules_send_each_zone_to_its_own_upstream() {
    let a = Named::start(&[("test.example", test_zone("test.example"))]);
    let b = Named::start(&[("other.example", test_zone("other.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), a.addr.to_string(), "--forward".into(), format!("other.example={}", b.addr)]);
    let r = query_udp(nd.dns, "www.other.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(rcode(&r), ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 2, T).unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(a.queries_for("www.other.example", "A"), 0);
}

#[test]
fn upstream_down_gives_servfail_within_the_deadline() {
    let silent = FakeUpstream::start(Behaviour::Silent);
    let nd = Nodedns::start(&["--upstream".into(), silent.addr.to_string()]);
    let started = Instant::now();
    let r = query_udp(nd.dns, "anything.example.", RecordType::A, 3, Duration::from_secs(5)).expect("SERVFAIL, not silence");
    let took = started.elapsed();
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_millis(2600), "took {took:?}");
    assert!(silent.count() >= 3, "retransmitted within the deadline: {} queries", silent.count());

    // Nothing listening at all: ICMP refusals end the search quickly, still SERVFAIL.
    let closed = loopback(free_port());
    let nd = Nodedns::start(&["--upstream".into(), closed.to_string()]);
    let r = query_udp(nd.dns, "anything.example.", RecordType::A, 4, Duration::from_secs(5)).expect("SERVFAIL");
    assert_eq!(rcode(&r), ResponseCode::ServFail);
}

#[test]
fn metrics_use_coredns_names_and_health_endpoints_answer() {
    let (_named, nd) = setup();
    query_udp(nd.dns, "www.test.example.", RecordType::A, 1, T).unwrap();
    query_udp(nd.dns, "www.test.example.", RecordType::A, 2, T).unwrap();
    let text = nd.metrics_text();
    for name in [
        "coredns_dns_requests_total{",
        "coredns_dns_responses_total{",
        "coredns_dns_request_duration_seconds_bucket{",
        "coredns_cache_entries{",
        "coredns_cache_hits_total{",
        "coredns_cache_misses_total{",
        "coredns_forward_requests_total{",
        "coredns_forward_responses_total{",
        "coredns_forward_request_duration_seconds_bucket{",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
    let label =
        format!("coredns_dns_requests_total{{server=\"dns://{}\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"}}", nd.dns);
    assert_eq!(nd.metric(&label), 2.0);
    assert_eq!(nd.metric("coredns_cache_misses_total{"), 1.0);
    assert_eq!(http_get(nd.metrics, "/health").unwrap().0, 200);
    assert_eq!(http_get(nd.metrics, "/ready").unwrap().0, 200);
}

#[test]
fn upstream_servfail_is_cached_briefly() {
    let failing = FakeUpstream::start(Behaviour::ServFail);
    let nd = Nodedns::start(&["--upstream".into(), failing.addr.to_string()]);
    for id in 0..5 {
        let r = query_udp(nd.dns, "broken.example.", RecordType::A, id, T).unwrap();
        assert_eq!(rcode(&r), ResponseCode::ServFail);
    }
    assert_eq!(failing.count(), 1, "SERVFAIL served from cache within servfail_ttl");
    std::thread::sleep(Duration::from_millis(5100));
    query_udp(nd.dns, "broken.example.", RecordType::A, 9, T).unwrap();
    assert_eq!(failing.count(), 2, "asked again once servfail_ttl (5 s) passed");
}

#[test]
fn serves_on_ipv6_loopback_too() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, free_port()));
    let nd = Nodedns::start(&["--listen".into(), v6.to_string(), "--upstream".into(), named.addr.to_string()]);
    let out = dig(v6, &["www.test.example", "AAAA", "+short"]);
    assert_eq!(out.trim(), "2001:db8::1");
    let out = dig(v6, &["www.test.example", "A", "+short", "+tcp"]);
    assert_eq!(out.trim(), "192.0.2.1");
    drop(nd);
}

#[test]
fn tcp_answers_out_of_order_and_idle_connections_are_closed() {
    use std::io::{Read, Write};
    let slow = FakeUpstream::start(Behaviour::AnswerAfter(Duration::from_millis(300)));
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = "server:\n  tcp_idle_timeout: 1s\n";
    let nd = Nodedns::start_with_config(
        Some(config),
        &["--upstream".into(), slow.addr.to_string(), "--forward".into(), format!("test.example={}", named.addr)],
    );
    let mut s = std::net::TcpStream::connect(nd.dns).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut wire = Vec::new();
    for (id, name) in [(1u16, "slow.example."), (2, "www.test.example.")] {
        let q = build_query(name, RecordType::A, id, false);
        wire.extend_from_slice(&(q.len() as u16).to_be_bytes());
        wire.extend_from_slice(&q);
    }
    s.write_all(&wire).unwrap();
    let mut order = Vec::new();
    for _ in 0..2 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).unwrap();
        order.push(u16::from_be_bytes([msg[0], msg[1]]));
    }
    assert_eq!(order, vec![2, 1], "the fast answer is not held behind the slow one");

    // Now idle: the server closes the connection after tcp_idle_timeout (1 s).
    let idle_since = Instant::now();
    let mut byte = [0u8; 1];
    let n = s.read(&mut byte).expect("clean close, not a read timeout");
    assert_eq!(n, 0);
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_millis(1600), "closed after {idle:?}");
}

/// Queries `named` logged for `name` in any class and type (`query: NAME CLASS TYPE`).
fn named_saw(named: &Named, name: &str) -> usize {
    let needle = format!("query: {name} ");
    named.log().lines().filter(|l| l.contains(&needle)).count()
}

/// A dig query through nodedns whose status line must be `status`.
fn assert_status(nd: &Nodedns, args: &[&str], status: &str) {
    let out = dig(nd.dns, &[args, &["+time=3", "+tries=1"]].concat());
    assert!(out.contains(&format!("status: {status}")), "{args:?}: expected {status}:\n{out}");
}

#[test]
fn an_upstream_that_refuses_is_asked_once_and_its_refusal_kept_briefly() {
    // `named` is authoritative for test.example only, with recursion off: it REFUSES other
    // names and other classes, and answers NOTIMP for meta-types such as MAILB.
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    let cases: [(&[&str], &str, &str); 3] = [
        (&["x1.invalid", "A"], "x1.invalid", "REFUSED"),
        (&["-c", "CH", "x2.invalid", "A"], "x2.invalid", "REFUSED"),
        (&["x3.test.example", "MAILB"], "x3.test.example", "NOTIMP"),
    ];
    for (args, name, status) in cases {
        for _ in 0..3 {
            assert_status(&nd, args, status);
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(named_saw(&named, name), 1, "{name}: one upstream query for three client queries:\n{}", named.log());
    }
}

#[test]
fn a_refusal_moves_on_to_the_next_upstream_once_and_only_once() {
    let refusing = Named::start(&[("other.example", test_zone("other.example"))]);
    let answering = Named::start(&[("test.example", test_zone("test.example"))]);
    let both = ["--upstream".into(), refusing.addr.to_string(), "--upstream".into(), answering.addr.to_string()];
    let nd = Nodedns::start_with_config(Some("upstream:\n  policy: sequential\n"), &both);
    assert_status(&nd, &["www.test.example", "A"], "NOERROR");
    // Neither knows this one: each is asked once, and the client gets the refusal.
    for _ in 0..3 {
        assert_status(&nd, &["x1.invalid", "A"], "REFUSED");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(named_saw(&refusing, "www.test.example"), 1, "{}", refusing.log());
    assert_eq!(named_saw(&answering, "www.test.example"), 1, "{}", answering.log());
    assert_eq!(named_saw(&refusing, "x1.invalid"), 1, "{}", refusing.log());
    assert_eq!(named_saw(&answering, "x1.invalid"), 1, "{}", answering.log());
}

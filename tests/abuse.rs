//! Hostile and careless clients: nodedns is not an open resolver, one noisy client cannot
//! starve the others, TCP connections per client are capped, misses beyond capacity fail
//! fast while hits keep flowing, and forged upstream responses are never accepted.

mod common;

use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(3);

fn ask_from(source: &str, nd: &Nodedns, name: &str, id: u16, timeout: Duration) -> Option<Message> {
    exchange_udp_from(source, nd.dns, &build_query(name, RecordType::A, id, false), timeout).map(|b| Message::from_vec(&b).unwrap())
}

#[test]
fn queries_from_outside_the_allowed_networks_are_refused_or_dropped() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let upstream = ["--upstream".to_string(), named.addr.to_string()];
    let nd = Nodedns::start_with_config(Some("server:\n  allow: [127.0.0.2]\n"), &upstream);
    let r = ask_from("127.0.0.1", &nd, "www.test.example.", 1, T).expect("REFUSED answer");
    assert_eq!(rcode(&r), ResponseCode::Refused);
    assert!(r.answers.is_empty());
    let r = ask_from("127.0.0.2", &nd, "www.test.example.", 2, T).expect("answer");
    assert_eq!(r.answers.len(), 1, "an allowed client is served");
    assert_eq!(named.queries_for("www.test.example", "A"), 1, "the refused query never reached the upstream");
    assert!(nd.metric("nodedns_denied_queries_total{server=\"dns://") >= 1.0);

    // Over TCP too.
    let mut s = TcpStream::connect(nd.dns).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let q = build_query("www.test.example.", RecordType::A, 3, false);
    std::io::Write::write_all(&mut s, &[&(q.len() as u16).to_be_bytes()[..], &q].concat()).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).unwrap();
    assert_eq!(rcode(&Message::from_vec(&msg).unwrap()), ResponseCode::Refused);

    // With `deny_action: drop` an outsider gets nothing at all, not even for garbage.
    let nd = Nodedns::start_with_config(Some("server:\n  allow: [127.0.0.2]\n  deny_action: drop\n"), &upstream);
    assert!(ask_from("127.0.0.1", &nd, "www.test.example.", 4, Duration::from_millis(500)).is_none());
    assert!(exchange_udp(nd.dns, b"\x00\x01garbage-that-would-get-FORMERR", Duration::from_millis(300)).is_none());
    assert!(ask_from("127.0.0.2", &nd, "www.test.example.", 5, T).is_some());
}

#[test]
fn a_noisy_client_is_rate_limited_and_the_others_are_not() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = "server:\n  client_qps: 100\n  rate_limit_action: drop\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), named.addr.to_string()]);
    ask_from("127.0.0.4", &nd, "www.test.example.", 0, T).expect("warm the cache");

    // The noisy client fires 3,000 queries as fast as it can from one socket.
    let noisy = UdpSocket::bind("127.0.0.3:0").unwrap();
    noisy.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    for i in 0..3000u16 {
        let _ = noisy.send_to(&build_query("www.test.example.", RecordType::A, i, false), nd.dns);
    }
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while noisy.recv(&mut buf).is_ok() {
        answered += 1;
    }
    let allowed = 100 + (started.elapsed().as_secs_f64() * 100.0) as usize + 5;
    assert!(answered <= allowed, "noisy client got {answered} answers, allowance {allowed}");
    assert!(answered >= 90, "the noisy client still gets its share: {answered}");

    // Meanwhile a quiet client is served every time.
    for i in 0..50u16 {
        let r = ask_from("127.0.0.4", &nd, "www.test.example.", i, T).expect("quiet client answered");
        assert_eq!(r.answers.len(), 1);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(nd.metric("nodedns_denied_queries_total{server=\"dns://") >= 2000.0);
}

#[test]
fn rate_limited_queries_can_be_answered_truncated() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = "server:\n  client_qps: 1\n  client_burst: 1\n  rate_limit_action: truncate\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), named.addr.to_string()]);
    let first = ask_from("127.0.0.5", &nd, "www.test.example.", 1, T).unwrap();
    assert!(!first.metadata.truncation && first.answers.len() == 1);
    let second = ask_from("127.0.0.5", &nd, "www.test.example.", 2, T).unwrap();
    assert!(second.metadata.truncation && second.answers.is_empty(), "over the limit: TC, so a real client retries over TCP");
}

#[test]
fn tcp_connections_per_client_are_capped() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start_with_config(Some("server:\n  max_tcp_per_client: 2\n"), &["--upstream".into(), named.addr.to_string()]);
    let _a = TcpStream::connect(nd.dns).unwrap();
    let _b = TcpStream::connect(nd.dns).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(nd.dns).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(c.read(&mut byte).unwrap_or(0), 0, "the third connection is closed");
    assert_eq!(nd.metric("nodedns_dropped_queries_total{reason=\"tcp_per_client_limit\"}"), 1.0);
}

#[test]
fn misses_beyond_capacity_fail_fast_while_hits_keep_flowing() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let slow = FakeUpstream::start(Behaviour::AnswerAfter(Duration::from_millis(1500)));
    let config = "server:\n  max_inflight_misses: 10\n  query_deadline: 3s\n";
    let nd = Nodedns::start_with_config(
        Some(config),
        &["--upstream".into(), slow.addr.to_string(), "--forward".into(), format!("test.example={}", named.addr)],
    );
    query_udp(nd.dns, "www.test.example.", RecordType::A, 1, T).expect("warm the hot name");

    // 100 distinct misses toward the slow upstream, from one socket, at once.
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..100u16 {
        flood.send_to(&build_query(&format!("slow{i}.example."), RecordType::A, i, false), nd.dns).unwrap();
    }
    // Hits are answered at once meanwhile.
    for i in 0..20u16 {
        let asked = Instant::now();
        let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 100 + i, T).expect("hit");
        assert_eq!(r.answers.len(), 1);
        assert!(asked.elapsed() < Duration::from_millis(100), "hit took {:?}", asked.elapsed());
    }
    flood.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut fast_servfails = 0;
    let mut buf = [0u8; 512];
    while let Ok(n) = flood.recv(&mut buf) {
        if Message::from_vec(&buf[..n]).unwrap().metadata.response_code == ResponseCode::ServFail {
            fast_servfails += 1;
        }
    }
    assert!(fast_servfails >= 85, "misses past the 10 in flight fail fast: {fast_servfails}");
    assert!(slow.count() <= 12, "the upstream saw {} queries", slow.count());
    assert!(nd.metric("nodedns_overloaded_queries_total") >= 85.0);
}

#[test]
fn forged_upstream_responses_are_never_accepted() {
    // The upstream answers after 400 ms; meanwhile an off-path sender finds nodedns's
    // upstream socket with `ss` and sprays it with forged answers for every ID, from another
    // port, and the upstream itself first sends a wrong-ID and a wrong-question answer.
    let slow = FakeUpstream::start(Behaviour::DecoysThenAnswer(Duration::from_millis(400)));
    let nd = Nodedns::start(&["--upstream".into(), slow.addr.to_string()]);
    let dns = nd.dns;
    let client = std::thread::spawn(move || query_udp(dns, "victim.example.", RecordType::A, 7, T));
    wait_until(T, "query reached the upstream", || slow.count() == 1);
    let out = std::process::Command::new("ss")
        .args(["-Hun", "state", "established", &format!("( dport = :{} )", slow.addr.port())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let local = text.split_whitespace().nth(2).expect("nodedns's upstream socket").to_string();
    let target: std::net::SocketAddr = local.parse().unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..=u16::MAX {
        let mut forged = build_query("victim.example.", RecordType::A, id, false);
        forged[2] |= 0x80; // QR
        forged[7] = 1; // one answer...
        forged.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 6, 6, 6, 6]); // ...6.6.6.6
        let _ = forger.send_to(&forged, target);
    }
    let answer = client.join().unwrap().expect("the real answer");
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].data.to_string(), "192.0.2.99", "the forged 6.6.6.6 was not accepted");
    // And it is what the cache holds.
    let again = query_udp(nd.dns, "victim.example.", RecordType::A, 8, T).unwrap();
    assert_eq!(again.answers[0].data.to_string(), "192.0.2.99");
    assert_eq!(
        nd.metric("nodedns_upstream_ignored_responses_total"),
        2.0,
        "the two decoys from the upstream's own address were counted and ignored"
    );
}

#[test]
fn records_for_other_names_in_a_response_are_never_served_as_their_answers() {
    let poisoner = FakeUpstream::start(Behaviour::Poison);
    let nd = Nodedns::start(&["--upstream".into(), poisoner.addr.to_string()]);
    let r = query_udp(nd.dns, "bait.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(r.answers.len(), 1);
    // The planted record is not an answer for victim.example: that question goes upstream.
    let r = query_udp(nd.dns, "victim.example.", RecordType::A, 2, T).unwrap();
    assert_eq!(poisoner.count(), 2, "victim.example was asked upstream, not answered from the bait's extra record");
    assert_eq!(r.answers[0].data.to_string(), "192.0.2.99");
}

#[test]
fn a_malformed_upstream_answer_is_never_passed_on_or_cached() {
    let broken = FakeUpstream::start(Behaviour::Garbage);
    let good = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let nd = Nodedns::start(&["--forward".into(), format!(".={},{}", broken.addr, good.addr)]);
    let r = query_udp(nd.dns, "x.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(r.answers.len(), 1, "the next upstream answered");
    assert!(broken.count() >= 1 && good.count() == 1);
    assert!(nd.metric("nodedns_upstream_errors_total{to=") >= 1.0);

    let only_broken = Nodedns::start(&["--upstream".into(), broken.addr.to_string()]);
    let before = broken.count();
    let r = query_udp(only_broken.dns, "y.example.", RecordType::A, 2, T).unwrap();
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    query_udp(only_broken.dns, "y.example.", RecordType::A, 3, T).unwrap();
    assert!(broken.count() >= before + 2, "nothing from the broken answer was cached");
}

#[test]
fn a_tcp_client_that_stalls_mid_frame_is_disconnected() {
    use std::io::Write;
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start_with_config(Some("server:\n  tcp_idle_timeout: 1s\n"), &["--upstream".into(), named.addr.to_string()]);
    let mut s = TcpStream::connect(nd.dns).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&[0, 40, 0x12]).unwrap(); // a length, then one octet of the 40 promised
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(s.read(&mut byte).unwrap_or(0), 0, "closed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(1600), "closed after {waited:?}");
}

#[test]
fn case_randomised_queries_accept_only_answers_that_echo_the_case() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = Some("upstream:\n  randomize_case: true\n");
    let nd = Nodedns::start_with_config(config, &["--upstream".into(), named.addr.to_string()]);
    for i in 0..20u16 {
        let r = query_udp(nd.dns, &format!("host{i}.test.example."), RecordType::A, i, T).expect("answer");
        assert_eq!(r.answers.len(), 1, "named echoes the case it was asked in");
        assert_eq!(r.queries[0].name().to_string(), format!("host{i}.test.example."), "the client gets its own case back");
    }
    let log = named.log();
    let asked: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("query: ").nth(1)?.split_whitespace().next())
        .filter(|n| n.to_ascii_lowercase().starts_with("host"))
        .collect();
    assert_eq!(asked.len(), 20);
    assert!(asked.iter().filter(|n| n.chars().any(|c| c.is_ascii_uppercase())).count() >= 15, "named saw names in random case: {asked:?}");

    // An upstream that does not echo the case is not believed.
    let lowercaser = FakeUpstream::start(Behaviour::Lowercased);
    let nd = Nodedns::start_with_config(config, &["--upstream".into(), lowercaser.addr.to_string()]);
    let r = query_udp(nd.dns, "mixedcase.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert!(lowercaser.count() >= 2, "retried, then gave up");
}

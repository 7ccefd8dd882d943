//! The thundering herd (a gang-scheduled job's pods all asking the same names at once): identical concurrent misses cost one upstream query,
//! and every client gets its answer with its own ID and letter case.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const CLIENTS: usize = 500;

/// Sends one query per client socket at once, then collects every answer.
fn herd(server: std::net::SocketAddr, name_for: impl Fn(usize) -> String) -> Vec<Option<Message>> {
    let sockets: Vec<UdpSocket> = (0..CLIENTS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, s) in sockets.iter().enumerate() {
        s.send_to(&build_query(&name_for(i), RecordType::A, i as u16, false), server).unwrap();
    }
    sockets
        .iter()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            s.recv(&mut buf).ok().map(|n| Message::from_vec(&buf[..n]).unwrap())
        })
        .collect()
}

/// Alternates letter case per client so each must get its own question back.
fn mixed_case(base: &str, i: usize) -> String {
    base.chars().enumerate().map(|(j, c)| if (i >> (j % 8)) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect()
}

#[test]
fn five_hundred_concurrent_identical_misses_send_one_upstream_query_and_all_are_answered() {
    // The upstream holds its answer for 400 ms so every client's query arrives while the
    // first is still in flight: this measures coalescing, not caching.
    let slow = FakeUpstream::start(Behaviour::AnswerAfter(Duration::from_millis(400)));
    let nd = Nodedns::start(&["--upstream".into(), slow.addr.to_string()]);
    let answers = herd(nd.dns, |i| mixed_case("herd.example.", i));
    for (i, a) in answers.iter().enumerate() {
        let a = a.as_ref().unwrap_or_else(|| panic!("client {i} got no answer"));
        assert_matches_query(a, i as u16, &mixed_case("herd.example.", i));
        assert_eq!(a.answers.len(), 1);
    }
    assert_eq!(slow.count(), 1, "upstream queries for {CLIENTS} identical misses");
    assert!(nd.metric("nodedns_coalesced_queries_total") >= (CLIENTS - 1) as f64 * 0.9);
}

#[test]
fn herd_against_real_named_costs_one_upstream_query() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--upstream".into(), named.addr.to_string()]);
    let answers = herd(nd.dns, |i| mixed_case("www.test.example.", i));
    assert!(answers.iter().all(|a| a.as_ref().is_some_and(|m| m.answers.len() == 1)), "every client answered");
    wait_until(Duration::from_secs(3), "query logged", || named.queries_for("www.test.example", "A") >= 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(named.queries_for("www.test.example", "A"), 1);
}

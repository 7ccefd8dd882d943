//! Forwarding loops found at run time (`src/loops.rs`): nodedns servers forwarding a zone
//! round a loop each report it, answer the zone's misses SERVFAIL at once, keep the traffic
//! between them bounded, resolve their other zones as before, and recover when the loop is
//! gone; a server forwarding to a real one never reports a loop.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const LOOPED: &str = "nodedns_forward_loop{zone=\"loop.test.\"}";
const DETECTED: &str = "forwarding loop: this server's probe for the zone came back";
const GONE: &str = "forwarding loop gone";
const INTERVAL: Duration = Duration::from_secs(1);

/// `.` to `named`, `loop.test` to `loop_test`, probing every second.
fn config(named: SocketAddr, loop_test: SocketAddr) -> String {
    format!(
        "upstreams: [\"{named}\"]\nforward:\n  - zone: loop.test\n    upstreams: [\"{loop_test}\"]\nupstream:\n  loop_probe_interval: {}s\n",
        INTERVAL.as_secs()
    )
}

fn named() -> Named {
    Named::start(&[("outside.test", test_zone("outside.test")), ("loop.test", test_zone("loop.test"))])
}

/// The rcode of `name IN A` asked of `server`, and how long the answer took.
fn ask(server: SocketAddr, name: &str) -> (ResponseCode, Duration) {
    let started = Instant::now();
    let resp = query_udp(server, name, RecordType::A, 0x4242, Duration::from_secs(3)).unwrap_or_else(|| panic!("{name}: no answer"));
    (rcode(&resp), started.elapsed())
}

/// Servers on chosen ports, each forwarding `loop.test` to the next (the last to the first).
fn ring(named: &Named, n: usize) -> Vec<Nodedns> {
    let dns: Vec<SocketAddr> = (0..n).map(|_| loopback(free_port())).collect();
    (0..n).map(|i| Nodedns::start_at(dns[i], loopback(free_port()), Some(&config(named.addr, dns[(i + 1) % n])), &[], &[])).collect()
}

fn wait_for_loop(servers: &[Nodedns]) {
    for (i, nd) in servers.iter().enumerate() {
        wait_until(Duration::from_secs(8), &format!("server {i} reports the loop"), || {
            nd.metric(LOOPED) == 1.0 && nd.log().contains(DETECTED)
        });
    }
}

#[test]
fn two_servers_forwarding_a_zone_to_each_other_both_see_the_loop_fail_it_fast_and_recover_once_it_is_gone() {
    let named = named();
    let mut servers = ring(&named, 2);
    wait_for_loop(&servers);
    for nd in &servers {
        let (code, took) = ask(nd.dns, "x.loop.test.");
        assert_eq!(code, ResponseCode::ServFail);
        assert!(took < Duration::from_millis(100), "SERVFAIL after {took:?}");
        let (code, _) = ask(nd.dns, "www.outside.test.");
        assert_eq!(code, ResponseCode::NoError, "other zones go to named as before");
    }

    // Each sees per interval its own probe come back and the other's pass: a handful.
    let requests = |nd: &Nodedns| nd.metric("coredns_dns_requests_total");
    let before: Vec<f64> = servers.iter().map(requests).collect();
    std::thread::sleep(Duration::from_secs(5));
    for (nd, before) in servers.iter().zip(before) {
        let passed = requests(nd) - before;
        assert!(passed <= 25.0, "{passed} queries in 5 s: the loop is not damped");
        assert_eq!(nd.log().matches(DETECTED).count(), 1, "logged once per episode");
        assert_eq!(nd.metric("nodedns_forward_loop_detections_total{zone=\"loop.test.\"}"), 1.0);
    }

    // The second forwards loop.test to named now: the first finds its probes answered.
    let b = servers.pop().unwrap();
    let (b_dns, b_metrics) = (b.dns, b.metrics);
    drop(b);
    let b = Nodedns::start_at(b_dns, b_metrics, Some(&config(named.addr, named.addr)), &[], &[]);
    let a = &servers[0];
    wait_until(INTERVAL * 4, "the loop state clears", || a.metric(LOOPED) == 0.0 && a.log().contains(GONE));
    assert_eq!(ask(a.dns, "x.loop.test.").0, ResponseCode::NXDomain, "from named, through the restarted server");
    assert_eq!(ask(a.dns, "www.loop.test.").0, ResponseCode::NoError);
    assert!(!b.log().contains(DETECTED), "{}", b.log());
}

#[test]
fn every_server_of_a_ring_of_three_sees_the_loop() {
    let named = named();
    let servers = ring(&named, 3);
    wait_for_loop(&servers);
    for nd in &servers {
        assert_eq!(ask(nd.dns, "x.loop.test.").0, ResponseCode::ServFail);
    }
}

#[test]
fn a_server_forwarding_to_a_real_server_probes_and_never_reports_a_loop() {
    let named = named();
    let nd = Nodedns::start_with_config(Some(&config(named.addr, named.addr)), &[]);
    std::thread::sleep(INTERVAL * 5);
    let probes = named.log().matches("._nodedns-loop-probe.loop.test IN HINFO").count();
    assert!(probes >= 4, "{probes} probes reached named in 5 intervals");
    assert!(nd.metrics_text().contains(&format!("{LOOPED} 0")), "{}", nd.metrics_text());
    assert!(!nd.log().contains(DETECTED), "{}", nd.log());
    assert_eq!(ask(nd.dns, "x.loop.test.").0, ResponseCode::NXDomain);
}

#[test]
fn a_server_whose_zone_enters_someone_elses_loop_reports_none_and_its_probes_circle_a_bounded_time() {
    let named = named();
    let pair = ring(&named, 2);
    let outside = Nodedns::start_with_config(Some(&config(named.addr, pair[0].dns)), &[]);
    wait_for_loop(&pair);
    let requests = |nd: &Nodedns| nd.metric("coredns_dns_requests_total");
    let before: Vec<f64> = pair.iter().map(requests).collect();
    std::thread::sleep(Duration::from_secs(5));
    for (nd, before) in pair.iter().zip(before) {
        // Per probe of the outsider, each of the pair makes one fetch, whose retransmissions
        // the other's in-flight fetch absorbs: tens of queries, not a storm.
        let passed = requests(nd) - before;
        assert!(passed <= 80.0, "{passed} queries in 5 s");
    }
    assert!(outside.metrics_text().contains(&format!("{LOOPED} 0")), "not its loop: {}", outside.log());
    assert!(!outside.log().contains(DETECTED));
    assert_eq!(ask(outside.dns, "x.loop.test.").0, ResponseCode::ServFail, "what the loop's entry answers");
}

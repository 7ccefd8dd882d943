//! Upstreams that never melt down (UDP loss, TCP connection explosions, resolver limits): a bounded, pipelined TCP pool in
//! front of a real dnsmasq, idle connections closed on time, DNS over TLS against a real
//! Unbound, failover, rate caps and selection policies.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const T: Duration = Duration::from_secs(3);

/// dnsmasq as kube-dns runs it for TCP: no cache, forwarding to `upstream`.
fn dnsmasq(upstream: std::net::SocketAddr) -> (Proc, u16) {
    require("dnsmasq");
    let port = free_port();
    let child = Command::new("dnsmasq")
        .args(["-k", "--conf-file=/dev/null", "--bind-interfaces", "--listen-address=127.0.0.1", "--cache-size=0"])
        .args(["--no-resolv", "--no-hosts", "--pid-file=", "--user=root"])
        .arg(format!("--port={port}"))
        .arg(format!("--server=127.0.0.1#{}", upstream.port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    let proc = Proc { child, name: "dnsmasq" };
    wait_until(Duration::from_secs(10), "dnsmasq answers over TCP", || {
        dig(loopback(port), &["+tcp", "+short", "www.test.example"]).contains("192.0.2.1")
    });
    (proc, port)
}

#[test]
fn tcp_pool_toward_dnsmasq_never_exceeds_its_size_and_loses_nothing() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let (_dnsmasq, port) = dnsmasq(named.addr);
    let config = "upstream:\n  pool:\n    max_connections: 4\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), format!("tcp://127.0.0.1:{port}")]);

    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, most) = (stop.clone(), most.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                most.fetch_max(established_to(port), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let names = load_names("pool", 4000, "test.example");
    let result = dnsperf(nd.dns, &names, &["-m", "tcp", "-c", "80", "-n", "1", "-l", "60"]);
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    assert_eq!((result.completed, result.lost), (4000, 0), "{result:?}");
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 4, "dnsmasq saw {most} connections from a pool of 4");
    assert!(most >= 2, "load was spread over the pool ({most} connections)");
    // dnsmasq closes each TCP connection after 100 queries, cutting off what was pipelined
    // behind them; those queries were retried on another connection (none was lost above).
    let text = nd.metrics_text();
    let errors: Vec<&str> =
        text.lines().filter(|l| l.starts_with("nodedns_upstream_errors_total") && !l.contains("reason=\"closed\"")).collect();
    assert!(errors.is_empty(), "only closed connections may fail an attempt: {errors:?}");
    eprintln!("80 client connections through a pool of 4: {:.0} q/s, at most {most} upstream connections", result.qps);
}

#[test]
fn idle_pool_connections_close_at_the_idle_timeout() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let config = "upstream:\n  pool:\n    idle_timeout: 1s\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), format!("tcp://{}", named.addr)]);
    let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 1, T).unwrap();
    let answered = Instant::now();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(established_from(named.addr.port()), 1, "one pooled connection after the query");
    wait_until(Duration::from_secs(3), "pooled connection closed", || established_from(named.addr.port()) == 0);
    let closed_after = answered.elapsed();
    assert!(closed_after >= Duration::from_millis(850) && closed_after <= Duration::from_millis(1100), "closed after {closed_after:?}");
    // The next query opens a fresh connection and still works.
    assert_eq!(query_udp(nd.dns, "alias.test.example.", RecordType::A, 2, T).unwrap().answers.len(), 2);
}

/// A CA, a certificate it signs for `dns.test`, and an unrelated self-signed CA.
fn certificates(dir: &std::path::Path) {
    require("openssl");
    let run = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && openssl {args}", dir.display()))
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args}");
    };
    run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=nodedns-test-ca");
    run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=dns.test");
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:dns.test\n").unwrap();
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext");
    run("req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=someone-else");
}

#[test]
fn dns_over_tls_to_unbound_works_and_a_bad_certificate_is_rejected() {
    require("unbound");
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("unbound.conf"),
        format!(
            "server:\n  interface: 127.0.0.1@{port}\n  tls-port: {port}\n  tls-service-key: \"{d}/server.key\"\n  tls-service-pem: \"{d}/server.pem\"\n  \
             do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  \
             logfile: \"\"\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n  do-ip6: no\n\
             forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1@{}\n",
            named.addr.port()
        ),
    )
    .unwrap();
    let _unbound = Proc {
        child: Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        name: "unbound",
    };
    let tls = format!("tls://127.0.0.1:{port}#dns.test");
    let trusting = format!("upstream:\n  tls:\n    ca_file: {d}/ca.pem\n");
    let nd = Nodedns::start_with_config(Some(&trusting), &["--upstream".into(), tls.clone()]);
    wait_until(Duration::from_secs(10), "answer over DoT", || {
        query_udp(nd.dns, "www.test.example.", RecordType::A, 1, T).is_some_and(|r| r.answers.len() == 1)
    });
    assert!(nd.metric(&format!("coredns_proxy_conn_cache_misses_total{{proxy_name=\"forward\",to=\"{tls}\",proto=\"tls\"}}")) >= 1.0);

    // The same server, but nodedns trusts another CA: the handshake fails, the client gets SERVFAIL.
    let wrong_ca = format!("upstream:\n  tls:\n    ca_file: {d}/other.pem\n");
    let nd = Nodedns::start_with_config(Some(&wrong_ca), &["--upstream".into(), tls.clone()]);
    let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 2, T).expect("SERVFAIL, not silence");
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert!(nd.metric("nodedns_upstream_connect_failures_total") >= 1.0);

    // Trusted CA, but the certificate is not for the name we expect.
    let nd = Nodedns::start_with_config(Some(&trusting), &["--upstream".into(), format!("tls://127.0.0.1:{port}#not-dns.test")]);
    let r = query_udp(nd.dns, "www.test.example.", RecordType::A, 3, T).expect("SERVFAIL, not silence");
    assert_eq!(rcode(&r), ResponseCode::ServFail);
}

#[test]
fn killing_one_of_two_upstreams_mid_run_fails_no_client_query() {
    let a = Named::start(&[("test.example", test_zone("test.example"))]);
    let b = Named::start(&[("test.example", test_zone("test.example"))]);
    let nd = Nodedns::start(&["--forward".into(), format!(".={},{}", a.addr, b.addr)]);
    let healthy = format!("nodedns_upstream_healthy{{to=\"{}\"}}", a.addr);
    let mut a = Some(a);
    let mut failures = Vec::new();
    for i in 0..300 {
        if i == 100 {
            drop(a.take()); // kills named A
        }
        match query_udp(nd.dns, &format!("f{i}.load.test.example."), RecordType::A, i as u16, T) {
            Some(r) if rcode(&r) == ResponseCode::NoError && r.answers.len() == 1 => {}
            other => failures.push((i, other.map(|r| rcode(&r)))),
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    assert!(failures.is_empty(), "failed queries: {failures:?}");
    assert!(b.queries_for("f250.load.test.example", "A") == 1, "the survivor answered after the kill");
    wait_until(T, "dead upstream marked down", || nd.metric(&healthy) == 0.0);
}

#[test]
fn rate_cap_spills_to_the_next_upstream_then_fails_fast() {
    let first = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let second = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let config = "upstream:\n  max_qps: 100\n";
    let nd = Nodedns::start_with_config(Some(config), &["--forward".into(), format!(".={},{}", first.addr, second.addr)]);
    let started = Instant::now();
    for i in 0..150u16 {
        let r = query_udp(nd.dns, &format!("cap{i}.example."), RecordType::A, i, T).expect("answer");
        assert_eq!(r.answers.len(), 1, "query {i}: {r:?}");
    }
    // One second of burst at 100 q/s, plus what refilled while the loop ran.
    let refill = (started.elapsed().as_secs_f64() * 100.0).ceil() as usize;
    assert!(first.count() <= 100 + refill, "first upstream got {} queries past its cap", first.count());
    assert!(second.count() >= 50 - refill.min(50), "second upstream took the spill: {}", second.count());

    // Both capped: queries fail fast with SERVFAIL instead of piling up.
    let mut servfails = 0;
    for i in 150..600u16 {
        let asked = Instant::now();
        let r = query_udp(nd.dns, &format!("cap{i}.example."), RecordType::A, i, T).expect("answer");
        if rcode(&r) == ResponseCode::ServFail {
            servfails += 1;
            assert!(asked.elapsed() < Duration::from_millis(100), "rate-limited query took {:?}", asked.elapsed());
        }
    }
    assert!(servfails > 0, "over both caps some queries must fail fast");
    assert!(nd.metric("nodedns_upstream_rate_limited_total") >= servfails as f64);
}

#[test]
fn round_robin_spreads_queries_over_the_group() {
    let first = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let second = FakeUpstream::start(Behaviour::AnswerAfter(Duration::ZERO));
    let nd = Nodedns::start_with_config(
        Some("upstream:\n  policy: round_robin\n"),
        &["--forward".into(), format!(".={},{}", first.addr, second.addr)],
    );
    for i in 0..100u16 {
        query_udp(nd.dns, &format!("rr{i}.example."), RecordType::A, i, T).expect("answer");
    }
    assert_eq!(first.count() + second.count(), 100);
    assert!((40..=60).contains(&first.count()), "first got {}", first.count());
}

#[test]
fn answers_written_in_two_pieces_never_wait_for_a_delayed_ack() {
    // dnsmasq writes with Nagle's algorithm on. A server that sends an answer's length and
    // message in two writes holds the message back until its first segment is acknowledged,
    // and Linux delays that ACK by at least 40 ms on a connection that looks interactive.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).is_ok() {
                    let mut query = vec![0; u16::from_be_bytes(len) as usize];
                    let Ok(Ok(query)) = s.read_exact(&mut query).map(|()| hickory_proto::op::Message::from_vec(&query)) else { break };
                    let answer = fake_answer(&query);
                    let _ = s.write_all(&(answer.len() as u16).to_be_bytes());
                    let _ = s.write_all(&answer);
                }
            });
        }
    });
    let nd = Nodedns::start(&["--upstream".into(), format!("tcp://{addr}")]);
    let mut took: Vec<Duration> = (0..40u16)
        .map(|i| {
            let started = Instant::now();
            let r = query_udp(nd.dns, &format!("piece{i}.example."), RecordType::A, i, T).unwrap();
            assert_eq!(r.answers.len(), 1);
            started.elapsed()
        })
        .collect();
    took.sort();
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(20), "median {median:?}, each: {took:?}");
}

#[test]
fn a_server_that_accepts_and_hangs_up_gets_backoff_not_a_reconnect_storm() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream); // hang up at once
        }
    });
    let nd = Nodedns::start(&["--upstream".into(), format!("tcp://{addr}")]);
    let started = Instant::now();
    for i in 0..200u16 {
        let r = query_udp(nd.dns, &format!("hangup{i}.example."), RecordType::A, i, T).expect("SERVFAIL, not silence");
        assert_eq!(rcode(&r), ResponseCode::ServFail);
    }
    let elapsed = started.elapsed();
    // Backoff doubles from 50 ms: a few connections per second at most, not one per attempt.
    let allowed = 10 + (elapsed.as_secs_f64() * 4.0) as usize;
    assert!(accepted.load(Ordering::SeqCst) <= allowed, "{} connections in {elapsed:?}", accepted.load(Ordering::SeqCst));
}

#[test]
fn queries_abandoned_while_queued_leave_the_queue() {
    // A server that accepts and never answers; a pool with room for one query in flight.
    // Every 100 ms the forwarder sends the question again, and each retransmission waits in
    // the pool's queue behind the first, until the deadline abandons them all mid-wait.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream); // keep it open, say nothing
        }
    });
    let config = "server:\n  query_deadline: 1s\nupstream:\n  timeout: 100ms\n  pool:\n    max_connections: 1\n    max_inflight_per_connection: 1\n    queue_length: 8\n    queue_wait: 5s\n";
    let nd = Nodedns::start_with_config(Some(config), &["--upstream".into(), format!("tcp://{addr}")]);
    let r = query_udp(nd.dns, "stuck.example.", RecordType::A, 1, T).unwrap();
    assert_eq!(rcode(&r), ResponseCode::ServFail);
    assert!(nd.metric("nodedns_upstream_retransmits_total") >= 2.0, "retransmissions queued behind the first");
    wait_until(T, "the wait queue is empty again", || nd.metric("nodedns_upstream_queue_depth{") == 0.0);
}

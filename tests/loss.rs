//! UDP loss between nodedns and its upstream (as between availability zones): 1% of the datagrams in each
//! direction are dropped, and no client may notice more than a few milliseconds. The
//! upstream runs in a network namespace the test creates, reached over a veth pair; the
//! loss is iptables' `statistic` match inside that namespace (this kernel has no netem).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// A namespace joined to the host by a veth pair, torn down on drop.
struct Link {
    ns: String,
    host_ip: String,
    ns_ip: String,
}

impl Link {
    fn create() -> Link {
        require("ip");
        require("iptables");
        let id = std::process::id() % 200 + 20;
        let ns = format!("nodedns-loss-{id}");
        let (a, b) = (format!("ndl{id}a"), format!("ndl{id}b"));
        let (host_ip, ns_ip) = (format!("10.253.{id}.1"), format!("10.253.{id}.2"));
        let sh = |cmd: String| {
            let ok = Command::new("sh").arg("-c").arg(&cmd).status().unwrap().success();
            assert!(ok, "`{cmd}` failed (the test needs root, as CI has)");
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip").args(["link", "del", &a]).status();
        sh(format!("ip netns add {ns}"));
        let link = Link { ns: ns.clone(), host_ip: host_ip.clone(), ns_ip: ns_ip.clone() };
        sh(format!("ip link add {a} type veth peer name {b}"));
        sh(format!("ip link set {b} netns {ns}"));
        sh(format!("ip addr add {host_ip}/30 dev {a} && ip link set {a} up"));
        sh(format!("ip -n {ns} addr add {ns_ip}/30 dev {b} && ip -n {ns} link set {b} up && ip -n {ns} link set lo up"));
        for rule in ["INPUT -p udp --dport 53", "OUTPUT -p udp --sport 53"] {
            sh(format!("ip netns exec {ns} iptables -A {rule} -m statistic --mode random --probability 0.01 -j DROP"));
        }
        link
    }

    fn dropped_packets(&self) -> u64 {
        let out = Command::new("ip").args(["netns", "exec", &self.ns, "iptables", "-L", "-v", "-n", "-x"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP") && l.contains("statistic"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn one_percent_udp_loss_to_the_upstream_costs_clients_milliseconds_not_seconds() {
    let link = Link::create();
    let dir = tempfile::tempdir().unwrap();
    let _named = Named::spawn_on(dir.path(), &link.ns_ip, 53, &[("test.example", test_zone("test.example"))], Some(&link.ns));
    let nd = Nodedns::start(&["--upstream".into(), format!("{}:53", link.ns_ip)]);
    wait_until(Duration::from_secs(15), "answers through the lossy link", || {
        query_udp(nd.dns, "www.test.example.", RecordType::A, 1, Duration::from_millis(500)).is_some_and(|r| r.answers.len() == 1)
    });
    let _ = &link.host_ip;

    const CLIENTS: usize = 10;
    const PER_CLIENT: usize = 300;
    let failures = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (failures, dns) = (failures.clone(), nd.dns);
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(PER_CLIENT);
                for i in 0..PER_CLIENT {
                    let started = Instant::now();
                    // The client itself never retries: any loss nodedns does not hide shows here.
                    let r = query_udp(dns, &format!("c{c}-{i}.load.test.example."), RecordType::A, i as u16, Duration::from_secs(3));
                    latencies.push(started.elapsed());
                    if !r.is_some_and(|r| r.metadata.response_code == ResponseCode::NoError && r.answers.len() == 1) {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), *latencies.last().unwrap());
    let dropped = link.dropped_packets();
    let retransmits = nd.metric("nodedns_upstream_retransmits_total");
    eprintln!(
        "{} uncached lookups over 1% loss each way: {} failed, p50 {p50:?}, p99 {p99:?}, max {max:?}; {dropped} datagrams dropped, {retransmits} retransmissions",
        latencies.len(),
        failures.load(Ordering::SeqCst)
    );
    assert!(dropped > 20, "the loss rules dropped only {dropped} datagrams");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "client queries failed");
    assert!(p99 < Duration::from_millis(30), "p99 {p99:?}");
}

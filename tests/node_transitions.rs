//! The node's rules and addresses through the switches of a running node, sampled all the
//! while in a node namespace: a handover with node setup, its predecessor stopped at the
//! worst moment (right after it passed its sockets, before the successor said it serves),
//! and a graceful stop, which fails open first (rules gone, so new queries take kube-proxy's
//! path) and only then closes its sockets and removes the addresses.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const LINK_LOCAL: &str = "169.254.20.10";
const SERVICE_IP: &str = "10.96.0.10";

fn start(node: &Netns, config: &Path, log: &Path) -> Proc {
    let child = in_netns(Some(&node.name), env!("CARGO_BIN_EXE_nodedns"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, name: "nodedns" }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// What pods depend on: both addresses, and NOTRACK for both: with iptables, our chain
/// filled and entered; with nftables, at least one owned table (the predecessor's or the
/// successor's) with the rules.
fn in_place(node: &Netns, rules: &str) -> Result<(), String> {
    let addresses = node.run("ip", &["-o", "addr", "show"]).1;
    let missing: Vec<&str> = [LINK_LOCAL, SERVICE_IP].into_iter().filter(|a| !addresses.contains(&format!(" {a}/32"))).collect();
    let notrack = match rules {
        "nftables" => {
            let set = node.run("nft", &["list", "ruleset"]).1;
            let both = [LINK_LOCAL, SERVICE_IP].iter().all(|a| set.contains(&format!("ip daddr {a} udp dport 53 notrack")));
            if set.contains("table inet nodedns_") && both { Ok(()) } else { Err("no owned table with the rules".to_string()) }
        }
        _ => {
            let set = node.run("iptables-save", &[]).1;
            let notrack = set.lines().filter(|l| l.starts_with("-A NODEDNS-NOTRACK ")).count();
            let jumps = set.lines().filter(|l| l.ends_with("-j NODEDNS-NOTRACK")).count();
            if notrack == 8 && jumps == 2 { Ok(()) } else { Err(format!("{notrack} NOTRACK rules, {jumps} jumps")) }
        }
    };
    match (notrack, missing.is_empty()) {
        (Ok(()), true) => Ok(()),
        (notrack, _) => Err(format!("{notrack:?}, addresses missing: {missing:?}")),
    }
}

/// Samples `in_place` on a thread until `stop`; returns the samples taken and the faults.
fn sample(node: &Netns, rules: &str, stop: &AtomicBool) -> (usize, Vec<String>) {
    let (mut taken, mut faults) = (0, Vec::new());
    let limit = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
        taken += 1;
        if let Err(fault) = in_place(node, rules) {
            faults.push(fault);
        }
    }
    (taken, faults)
}

fn config(dir: &Path, rules: &str) -> PathBuf {
    let path = dir.join("nodedns.yaml");
    let text = format!(
        "listen: [\"{LINK_LOCAL}:53\", \"{SERVICE_IP}:53\"]\nupstreams: [\"127.0.0.1:5300\"]\nmetrics: \"off\"\n\
         kubernetes:\n  local_answers: false\nupstream:\n  loop_probe_interval: 0s\n\
         server:\n  handover_socket: {}\nnode:\n  setup: true\n  rules: {rules}\n  check_interval: 10s\n",
        dir.join("handover.sock").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_predecessor_stopped_right_after_passing_its_sockets_leaves_the_successor_its_rules_and_addresses() {
    handover_at_the_worst_moment("iptables");
}

/// With owned tables each process has its own: the successor's is in place before the
/// predecessor's goes with it.
#[test]
fn with_owned_tables_the_successors_table_is_in_place_before_the_predecessors_goes() {
    handover_at_the_worst_moment("nftables");
}

/// Queries `169.254.20.10` every 5 ms from inside the node until `stop`: (sent, unanswered
/// within 300 ms).
fn probe(node: &Netns, stop: &AtomicBool) -> (usize, usize) {
    let server: std::net::SocketAddr = format!("{LINK_LOCAL}:53").parse().unwrap();
    node.within(|| {
        let (mut sent, mut lost) = (0, 0);
        let limit = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
            sent += 1;
            if query_udp(server, "www.test.example.", hickory_proto::rr::RecordType::A, sent as u16, Duration::from_millis(300)).is_none() {
                lost += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (sent, lost)
    })
}

fn handover_at_the_worst_moment(rules: &str) {
    require("iptables-save");
    require("nft");
    let node = Netns::create(&format!("transit{}", &rules[..3]), "nameserver 127.0.0.1\n");
    let dir = tempfile::tempdir().unwrap();
    let _upstream = Named::spawn(dir.path(), 5300, &[("test.example", test_zone("test.example"))], Some(&node.name));
    let config = config(dir.path(), rules);
    let (old_log, new_log) = (dir.path().join("old.log"), dir.path().join("new.log"));
    let mut old = start(&node, &config, &old_log);
    wait_until(Duration::from_secs(15), "the first process's rules", || read(&old_log).contains("node packet-filter rules installed"));
    in_place(&node, rules).unwrap();

    let stop = AtomicBool::new(false);
    let ((taken, faults), (sent, lost)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(&node, rules, &stop));
        let prober = scope.spawn(|| probe(&node, &stop));
        let mut new = start(&node, &config, &new_log);
        // The worst moment: the sockets are passed, the successor has not yet said it serves.
        wait_until(Duration::from_secs(15), "the sockets passed", || read(&old_log).contains("sockets and cache handed to a successor"));
        assert!(old.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", read(&old_log));
        wait_until(Duration::from_secs(15), "the successor serving", || read(&new_log).contains("node packet-filter rules installed"));
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let sampled = (sampler.join().unwrap(), prober.join().unwrap());
        // The successor owns what it took over: its own stop leaves the node clean.
        assert!(new.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", read(&new_log));
        sampled
    });
    eprintln!("handover ({rules}): {taken} samples of the rules and addresses, {sent} queries, {lost} unanswered");
    assert!(sent > 20 && lost == 0, "{lost} of {sent} queries unanswered through the handover\nnew:\n{}", read(&new_log));
    assert!(taken > 20, "only {taken} samples");
    assert!(
        faults.is_empty(),
        "{} of {taken} samples without what pods rely on: {:?}\nold:\n{}",
        faults.len(),
        &faults[..faults.len().min(5)],
        read(&old_log)
    );
    assert!(read(&old_log).contains("leaving node addresses and rules in place"), "{}", read(&old_log));
    let left = node.run("iptables-save", &[]).1 + &node.run("nft", &["list", "ruleset"]).1;
    assert!(!left.contains("NODEDNS") && !left.contains("nodedns_"), "left behind by the successor's stop:\n{left}");
    let addresses = node.run("ip", &["-o", "addr", "show"]).1;
    assert!(!addresses.contains(LINK_LOCAL) && !addresses.contains(SERVICE_IP), "{addresses}");
}

#[test]
fn a_graceful_stop_fails_open_before_it_closes_its_sockets() {
    require("iptables-save");
    let node = Netns::create("failfirst", "nameserver 127.0.0.1\n");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "iptables");
    let log = dir.path().join("nodedns.log");
    let mut nodedns = start(&node, &config, &log);
    wait_until(Duration::from_secs(15), "rules installed", || read(&log).contains("node packet-filter rules installed"));
    assert!(nodedns.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", read(&log));
    let text = read(&log);
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no `{needle}` in\n{text}"));
    assert!(at("packet-filter rules removed") < at("stopped: all in-flight queries answered"), "rules removed after the drain:\n{text}");
    assert!(at("stopped: all in-flight queries answered") < at("node addresses and rules removed"), "{text}");
    let rules = node.run("iptables-save", &[]).1;
    assert!(!rules.contains("NODEDNS"), "{rules}");
}

/// With the iptables backend (no fail-open: its rules outlive the process) a SIGKILL leaves
/// the rules and addresses; the next start finds them, says so, and counts them.
#[test]
fn what_a_killed_process_leaves_is_found_and_counted_by_the_next_one() {
    require("iptables-save");
    let node = Netns::create("leftover", "nameserver 127.0.0.1\n");
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "iptables");
    let metrics: std::net::SocketAddr = "127.0.0.1:9253".parse().unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace("metrics: \"off\"", &format!("metrics: \"{metrics}\""));
    std::fs::write(&config, text).unwrap();
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let first = start(&node, &config, &first_log);
    wait_until(Duration::from_secs(15), "rules installed", || read(&first_log).contains("node packet-filter rules installed"));
    drop(first); // SIGKILL
    in_place(&node, "iptables").expect("the iptables backend leaves its rules and addresses after a kill");
    let mut second = start(&node, &config, &second_log);
    wait_until(Duration::from_secs(15), "rules installed again", || read(&second_log).contains("node packet-filter rules installed"));
    assert!(read(&second_log).contains("a previous process left its node setup"), "{}", read(&second_log));
    let (_, text) = node.within(|| http_get(metrics, "/metrics")).expect("metrics");
    for what in ["addresses", "rules"] {
        assert!(text.contains(&format!("nodedns_node_leftovers_found_total{{reason=\"{what}\"}} 1")), "{what}:\n{text}");
    }
    assert!(second.terminate(Duration::from_secs(15)).is_some_and(|s| s.success()));
    assert!(!node.run("iptables-save", &[]).1.contains("NODEDNS"), "the second process's stop leaves nothing");
}

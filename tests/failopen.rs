//! Fail open, in network namespaces the test creates: a node where kube-proxy-style rules
//! DNAT the kube-dns Service IP to a kube-dns pod (real `named`), and nodedns, with
//! `node.setup` and the nftables backend, serving that Service IP itself. Its NOTRACK rules
//! live in a table owned by its netlink socket, so however nodedns ends the kernel removes
//! them, and the pods (and the node's own clients) are back on kube-proxy's DNAT to
//! kube-dns within a second: after `kill -9` (several times, timed), after SIGTERM, and an
//! `nft flush ruleset` by someone else leaves the owned table in place.
//!
//! The Service IP stays on the node after a crash (nothing removes it); it does not capture
//! the traffic, because DNAT happens before the routing decision that would deliver it
//! locally.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const KUBE_DNS: &str = "10.96.0.10";
const KUBE_DNS_POD: &str = "10.244.1.2";
const POD: &str = "10.244.0.2";
const NAME: &str = "kubernetes.default.svc.cluster.local";

/// A node and a pod, with kube-proxy-style DNAT of the kube-dns Service IP to a kube-dns
/// pod (`named`, serving the cluster zone and `extra` records), which the pod reaches.
struct KubeDnsNode {
    node: Netns,
    pod: Netns,
    _kube_dns: (tempfile::TempDir, Proc),
}

fn kube_dns_node(tag: &str, extra: &str) -> KubeDnsNode {
    let (node, pod) = node_and_pod(tag, &pod_resolv_conf(KUBE_DNS));
    node.service(KUBE_DNS, &[KUBE_DNS_POD], 53);
    let dir = tempfile::tempdir().unwrap();
    let zone = format!("{}{extra}", cluster_zone());
    let proc = Named::spawn_on(dir.path(), KUBE_DNS_POD, 53, &[("cluster.local", zone)], Some(&node.name));
    wait_until(Duration::from_secs(15), "kube-dns answers through its Service IP", || pod_resolves(&pod));
    KubeDnsNode { node, pod, _kube_dns: (dir, proc) }
}

/// The node's `nodedns_*` tables as `nft list tables` names them.
fn owned_tables(node: &Netns) -> Vec<String> {
    let (ok, out) = node.run("nft", &["list", "tables"]);
    assert!(ok, "nft list tables");
    out.lines().filter_map(|l| l.strip_prefix("table inet ")).filter(|t| t.starts_with("nodedns_")).map(str::to_string).collect()
}

/// Conntrack's entries for the pod's DNS to the Service IP: with nodedns serving there are
/// none; through kube-proxy each is DNAT-ed to the kube-dns pod.
fn pod_dns_flows(node: &Netns) -> Vec<String> {
    let (_, out) = node.run("conntrack", &["-L"]);
    out.lines().filter(|l| l.contains(&format!("src={POD} dst={KUBE_DNS} ")) && l.contains("dport=53 ")).map(str::to_string).collect()
}

fn pod_resolves(pod: &Netns) -> bool {
    let (ok, out) = pod.run("getent", &["ahostsv4", NAME]);
    ok && out.contains("10.96.0.1 ")
}

/// A host-network client (the node itself) asking the Service IP.
fn node_resolves(node: &Netns) -> bool {
    let out = node.run("dig", &[&format!("@{KUBE_DNS}"), "+short", "+time=1", "+tries=1", NAME]).1;
    out.contains("10.96.0.1")
}

fn start(node: &Netns, dir: &Path) -> Proc {
    start_with(node, dir, None, false)
}

/// nodedns on the Service IP with the owned-table backend; `metrics` on that address, and
/// `shared` with another instance on the same address.
fn start_with(node: &Netns, dir: &Path, metrics: Option<std::net::SocketAddr>, shared: bool) -> Proc {
    let metrics = metrics.map_or("off".to_string(), |m| m.to_string());
    let config = format!(
        "listen: [\"{KUBE_DNS}:53\"]\nupstreams: [\"{KUBE_DNS_POD}:53\"]\nmetrics: \"{metrics}\"\n\
         server:\n  allow: [10.244.0.0/16, 127.0.0.0/8]\nkubernetes:\n  local_answers: false\n\
         upstream:\n  loop_probe_interval: 0s\nnode:\n  setup: true\n  check_interval: 200ms\n  rules: nftables\n  shared: {shared}\n"
    );
    let proc = node.spawn_nodedns(dir, &config);
    let log = dir.join("nodedns.log");
    wait_until(Duration::from_secs(15), "nodedns installs its rules", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("node packet-filter rules installed")
    });
    proc
}

/// Until `ok` holds, polling every 10 ms for up to `limit`; how long it took.
fn time_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// nodedns serves the pod: an answer, and no conntrack entry for the pod's DNS.
fn assert_served_by_nodedns(node: &Netns, pod: &Netns) {
    node.run("conntrack", &["-F"]);
    for _ in 0..3 {
        assert!(pod_resolves(pod), "the pod resolves through nodedns");
    }
    let flows = pod_dns_flows(node);
    assert!(flows.is_empty(), "the pod's DNS was tracked (so not NOTRACK'ed to nodedns):\n{}", flows.join("\n"));
}

/// The pod and the node resolve through kube-proxy's DNAT to kube-dns.
fn assert_served_by_kube_dns(node: &Netns, pod: &Netns) {
    assert!(pod_resolves(pod) && node_resolves(node), "the pod and the node resolve through kube-dns");
    let flows = pod_dns_flows(node);
    assert!(
        !flows.is_empty() && flows.iter().all(|f| f.contains(&format!("src={KUBE_DNS_POD} dst={POD} "))),
        "the pod's DNS goes through the DNAT to kube-dns:\n{}",
        flows.join("\n")
    );
}

#[test]
fn whatever_way_nodedns_ends_the_kernel_removes_its_rules_and_pods_are_back_on_kube_dns_within_a_second() {
    for tool in ["nft", "iptables", "conntrack", "getent", "dig", "named"] {
        require(tool);
    }
    let KubeDnsNode { node, pod, _kube_dns } = kube_dns_node("fo", "");

    // kill -9, three times: the table is gone within a second, and so is the outage.
    for run in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let mut nodedns = start(&node, dir.path());
        let tables = owned_tables(&node);
        assert_eq!(tables, [format!("nodedns_{}", nodedns.child.id())], "one table, named after the process");
        assert!(node.run("nft", &["list", "table", "inet", &tables[0]]).1.contains("flags owner"));
        assert_served_by_nodedns(&node, &pod);

        nodedns.child.kill().unwrap();
        let killed = Instant::now();
        nodedns.child.wait().unwrap();
        let gone = time_until(Duration::from_secs(1), "the table is gone after kill -9", || owned_tables(&node).is_empty());
        node.run("conntrack", &["-F"]);
        let mut lookups = 0;
        while !pod_resolves(&pod) {
            lookups += 1;
            assert!(lookups < 100, "the pod never resolved again after kill -9");
        }
        let resolved = killed.elapsed();
        eprintln!(
            "kill -9 run {run}: table gone {gone:?} after nodedns was reaped; the pod's first successful lookup answered {resolved:?} \
             after the kill, {lookups} failed before it"
        );
        assert!(resolved < Duration::from_secs(1), "fall-back took {resolved:?}");
        // The Service IP stays on the node; it captures nothing.
        assert!(node.run("ip", &["-o", "addr", "show"]).1.contains(&format!(" {KUBE_DNS}/32")), "the address stays after a crash");
        assert_served_by_kube_dns(&node, &pod);
    }

    // A graceful stop removes the table itself.
    let dir = tempfile::tempdir().unwrap();
    let mut nodedns = start(&node, dir.path());
    assert_served_by_nodedns(&node, &pod);
    let status = nodedns.terminate(Duration::from_secs(10)).expect("nodedns exits on SIGTERM");
    assert!(status.success());
    assert!(owned_tables(&node).is_empty(), "the table outlived a graceful stop");
    node.run("conntrack", &["-F"]);
    assert_served_by_kube_dns(&node, &pod);

    // Someone else's `nft flush ruleset` skips a table owned by another socket (it takes
    // kube-proxy's iptables-nft rules with it, so it comes last).
    let dir = tempfile::tempdir().unwrap();
    let _nodedns = start(&node, dir.path());
    let before = owned_tables(&node);
    let listed = node.run("nft", &["list", "table", "inet", &before[0]]).1;
    assert!(node.run("nft", &["flush", "ruleset"]).0, "nft flush ruleset");
    assert!(node.run("nft", &["list", "table", "ip", "nat"]).1.is_empty(), "the flush took kube-proxy's rules");
    assert_eq!(owned_tables(&node), before, "the owned table is still there");
    assert_eq!(node.run("nft", &["list", "table", "inet", &before[0]]).1, listed, "and unchanged");
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(dir.path().join("nodedns.log")).unwrap();
    assert!(!log.contains("put back"), "nothing needed repair:\n{log}");
    assert_served_by_nodedns(&node, &pod);
}

/// The queries an instance has answered, read from its metrics endpoint in the node.
fn answered(node: &Netns, metrics: std::net::SocketAddr) -> f64 {
    let (_, text) = node.within(|| http_get(metrics, "/metrics")).expect("metrics");
    text.lines().filter(|l| l.starts_with("coredns_dns_requests_total{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Two instances on one node (`node.shared`), both bound to the same address with
/// `SO_REUSEPORT`, each holding its own owned table: the kernel spreads the pods' queries over
/// both; one killed, the other serves everything; both killed, kube-proxy's path is back.
#[test]
fn two_instances_serve_one_address_and_each_one_killed_costs_pods_nothing() {
    for tool in ["nft", "iptables", "conntrack", "getent", "named"] {
        require(tool);
    }
    let KubeDnsNode { node, pod, _kube_dns } = kube_dns_node("pair", "");
    let metrics: Vec<std::net::SocketAddr> = ["127.0.0.1:9253", "127.0.0.1:9254"].iter().map(|a| a.parse().unwrap()).collect();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut a = start_with(&node, dirs[0].path(), Some(metrics[0]), true);
    let mut b = start_with(&node, dirs[1].path(), Some(metrics[1]), true);
    assert_eq!(owned_tables(&node).len(), 2, "a table each");
    let lookups = |n: usize| (0..n).filter(|_| !pod_resolves(&pod)).count();
    assert_eq!(lookups(40), 0, "both serving");
    let (a_before, b_before) = (answered(&node, metrics[0]), answered(&node, metrics[1]));
    assert!(a_before > 0.0 && b_before > 0.0, "the kernel spread the queries over both: {a_before} and {b_before}");

    // One killed: the other takes every query, and no lookup fails.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    time_until(Duration::from_secs(1), "the killed one's table is gone", || owned_tables(&node).len() == 1);
    assert_eq!(lookups(40), 0, "lookups after one instance's kill -9");
    let b_after = answered(&node, metrics[1]);
    assert!(b_after - b_before >= 80.0, "the survivor answered the whole load (A and AAAA of 40 lookups): {b_before} -> {b_after}");
    node.run("conntrack", &["-F"]);
    assert_served_by_nodedns(&node, &pod);

    // A graceful stop of one leaves the address to the other.
    let mut a = start_with(&node, dirs[0].path(), Some(metrics[0]), true);
    assert!(a.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()));
    assert!(node.run("ip", &["-o", "addr", "show"]).1.contains(&format!(" {KUBE_DNS}/32")), "the address stays for the other instance");
    assert_eq!(lookups(20), 0, "the other still serves");

    // Both gone: kube-proxy's path within a second.
    b.child.kill().unwrap();
    let killed = Instant::now();
    b.child.wait().unwrap();
    time_until(Duration::from_secs(1), "no table left", || owned_tables(&node).is_empty());
    node.run("conntrack", &["-F"]);
    while !pod_resolves(&pod) {
        assert!(killed.elapsed() < Duration::from_secs(1), "no fall-back to kube-dns within a second");
    }
    assert_served_by_kube_dns(&node, &pod);
}

/// A memory cgroup of the test's own (cgroup v1's memory controller, as this machine and
/// its CI have), under the one this process is in; removed on drop.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn create(limit: u64) -> MemoryCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())).expect("a cgroup v1 memory controller");
        let dir = std::path::Path::new("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join(format!("nodedns-oom-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e} (the test needs root and cgroup v1 memory)", dir.display()));
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        // No swap to escape into: past the limit the kernel's OOM killer acts.
        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        MemoryCgroup(dir)
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// An OOM kill is a kill like any other: a nodedns in a small memory cgroup, driven past
/// it by a flood of new names (a cache allowed far more than the limit), is killed by the
/// kernel, and its rules go with it: the pods are back on kube-dns, not in an outage.
#[test]
fn an_oom_kill_is_followed_by_fail_open_not_by_an_outage() {
    for tool in ["nft", "iptables", "getent", "named", "dnsperf"] {
        require(tool);
    }
    let KubeDnsNode { node, pod, _kube_dns } = kube_dns_node("oom", "*.load 60 IN A 10.9.9.9\n");
    let cgroup = MemoryCgroup::create(36 << 20);
    let dir = tempfile::tempdir().unwrap();
    let extra = "cache:\n  positive: {max_entries: 5000000, max_bytes: 2Gi}\n";
    let config = format!(
        "listen: [\"{KUBE_DNS}:53\"]\nupstreams: [\"{KUBE_DNS_POD}:53\"]\nmetrics: \"off\"\n{extra}\
         server:\n  allow: [10.244.0.0/16, 127.0.0.0/8]\nkubernetes:\n  local_answers: false\n\
         upstream:\n  loop_probe_interval: 0s\nnode:\n  setup: true\n  rules: nftables\n"
    );
    let mut nodedns = node.spawn_nodedns(dir.path(), &config);
    cgroup.enter(nodedns.child.id());
    let log = dir.path().join("nodedns.log");
    wait_until(Duration::from_secs(15), "rules installed", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("rules installed")
    });
    assert!(pod_resolves(&pod));
    assert_eq!(owned_tables(&node).len(), 1);

    // The flood: new names only, each cached, until the limit is crossed (bounded: 50 s).
    let names = load_names("oom-", 400_000, "cluster.local");
    let started = Instant::now();
    let flood = std::thread::spawn({
        let netns = pod.name.clone();
        move || {
            dnsperf_in(
                Some(&netns),
                (KUBE_DNS.parse::<std::net::IpAddr>().unwrap(), 53).into(),
                &names,
                &["-l", "50", "-Q", "20000", "-c", "4"],
            )
        }
    });
    let killed = loop {
        if let Some(status) = nodedns.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(53), "nodedns was not OOM-killed within the flood (50 s)");
        std::thread::sleep(Duration::from_millis(5));
    };
    let at = Instant::now();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.signal(), Some(9), "killed by the kernel (SIGKILL), not exited: {killed}");
    let oom = std::fs::read_to_string(cgroup.0.join("memory.oom_control")).unwrap_or_default();
    assert!(oom.contains("oom_kill 1") || oom.contains("under_oom"), "the cgroup's OOM killer acted:\n{oom}");
    let gone = time_until(Duration::from_secs(1), "the table is gone after the OOM kill", || owned_tables(&node).is_empty());
    node.run("conntrack", &["-F"]);
    while !pod_resolves(&pod) {
        assert!(at.elapsed() < Duration::from_secs(1), "no fall-back to kube-dns within a second of the OOM kill");
    }
    eprintln!(
        "OOM kill {:?} into the flood; table gone {gone:?} after; the pod resolved through kube-dns {:?} after",
        started.elapsed(),
        at.elapsed()
    );
    let _ = flood.join();
}

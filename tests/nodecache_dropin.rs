//! nodedns run exactly as the node-local-dns DaemonSet runs node-cache: invoked as
//! `node-cache` with the DaemonSet's arguments, its ConfigMap's Corefile (the operator's sed
//! done) mounted at /etc/coredns/Corefile.base and the kube-dns ConfigMap at /etc/kube-dns
//! (bind mounts in a mount namespace, as the kubelet's volumes are), the
//! KUBE_DNS_UPSTREAM_SERVICE_HOST variable the kubelet sets for the kube-dns-upstream
//! Service, on a node made of network namespaces: kube-proxy-style DNAT of the kube-dns and
//! kube-dns-upstream Service IPs to a kube-dns pod (real `named`), the node's own resolver
//! for external names (another `named`), and a pod namespace resolving with glibc.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LOCAL_DNS: &str = "169.254.20.10";
const KUBE_DNS: &str = "10.96.0.10";
const KUBE_DNS_UPSTREAM: &str = "10.96.0.11";
const KUBE_DNS_POD: &str = "10.244.1.2";
const NODE_RESOLVER: &str = "10.0.0.53";

/// The DaemonSet's container args, as the addon ships them after the operator's sed.
fn daemonset_args() -> Vec<String> {
    [
        "-localip",
        &format!("{LOCAL_DNS},{KUBE_DNS}"),
        "-conf",
        "/etc/Corefile",
        "-upstreamsvc",
        "kube-dns-upstream",
        "-pidfile",
        "/tmp/node-cache.pid",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Starts the binary under the name `node-cache` in `node`, with a private /etc holding
/// the two ConfigMap volumes.
fn start_as_node_cache(node: &Netns, dir: &Path) -> Proc {
    let link = dir.join("node-cache");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodedns"), &link).unwrap();
    let configmap = dir.join("node-local-dns");
    std::fs::create_dir(&configmap).unwrap();
    std::fs::write(configmap.join("Corefile.base"), node_local_dns_corefile(LOCAL_DNS, KUBE_DNS)).unwrap();
    let kube_dns = dir.join("kube-dns");
    std::fs::create_dir(&kube_dns).unwrap();
    std::fs::write(kube_dns.join("stubDomains"), r#"{"corp.example": ["10.0.0.53"]}"#).unwrap();
    let d = dir.display();
    // A copy of /etc made private, so that -conf /etc/Corefile and the mount points stay in
    // this mount namespace; the volumes are bind-mounted as the kubelet mounts them.
    let script = format!(
        "set -e; mkdir {d}/etc; cp -a /etc/. {d}/etc/; mount --bind {d}/etc /etc; mkdir -p /etc/coredns /etc/kube-dns; \
         mount --bind {d}/node-local-dns /etc/coredns; mount --bind {d}/kube-dns /etc/kube-dns; exec {d}/node-cache \"$@\""
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &node.name, "unshare", "-m", "--propagation", "private", "sh", "-c", &script, "node-cache"])
        .args(daemonset_args())
        .env("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS_UPSTREAM)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nodedns.log")).unwrap())
        .spawn()
        .expect("start nodedns as node-cache");
    Proc { child, name: "node-cache" }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("nodedns.log")).unwrap_or_default()
}

fn getent(pod: &Netns, name: &str, dir: &Path) -> String {
    let (ok, out) = pod.run("getent", &["ahostsv4", name]);
    if !ok {
        let (_, dig) = pod.run("dig", &[&format!("@{KUBE_DNS}"), "+search", "+tries=1", name]);
        panic!("getent ahostsv4 {name} failed in the pod; dig says:\n{dig}\nnodedns:\n{}", log(dir));
    }
    out
}

#[test]
fn runs_as_the_node_local_dns_daemonset_runs_node_cache_and_leaves_nothing() {
    require("named");
    require("conntrack");
    require("unshare");
    let (node, pod) = node_and_pod("dropin", &pod_resolv_conf(KUBE_DNS));
    std::fs::write(format!("/etc/netns/{}/resolv.conf", node.name), format!("nameserver {NODE_RESOLVER}\n")).unwrap();
    node.service(KUBE_DNS, &[KUBE_DNS_POD], 53);
    node.service(KUBE_DNS_UPSTREAM, &[KUBE_DNS_POD], 53);
    node.sh(&format!("ip addr add {NODE_RESOLVER}/32 dev lo"));
    let kube_dns_dir = tempfile::tempdir().unwrap();
    let cluster = format!("{}long.prod.svc 300 IN A 10.96.7.7\n", cluster_zone());
    let _kube_dns = Named::spawn_on(kube_dns_dir.path(), KUBE_DNS_POD, 53, &[("cluster.local", cluster)], Some(&node.name));
    let resolver_dir = tempfile::tempdir().unwrap();
    let _resolver = Named::spawn_on(
        resolver_dir.path(),
        NODE_RESOLVER,
        53,
        &[("example.org", test_zone("example.org")), ("corp.example", test_zone("corp.example"))],
        Some(&node.name),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut nodedns = start_as_node_cache(&node, dir.path());
    let health: std::net::SocketAddr = format!("{LOCAL_DNS}:8080").parse().unwrap();
    node.within(|| {
        wait_until(Duration::from_secs(20), "/health on 169.254.20.10:8080", || {
            http_get(health, "/health").is_some_and(|(code, body)| code == 200 && body.trim() == "OK")
        })
    });
    let generated = std::fs::read_to_string(dir.path().join("etc/Corefile")).expect("the Corefile written to -conf");
    assert!(generated.contains(&format!("forward . {KUBE_DNS_UPSTREAM} {{")), "{generated}");
    assert!(generated.contains("forward . /etc/resolv.conf") && generated.contains("corp.example:53 {"), "{generated}");
    assert_eq!(std::fs::read_to_string("/tmp/node-cache.pid").unwrap().trim(), nodedns.child.id().to_string());
    wait_until(Duration::from_secs(10), "node-cache's rules installed", || {
        node.run("iptables-save", &[]).1.matches("NodeLocal DNS Cache").count() == 24
    });

    // Cluster names through the search list, a reverse-less external name through the
    // node's resolv.conf, a stub domain from the kube-dns ConfigMap.
    assert!(getent(&pod, "kubernetes.default", dir.path()).contains("10.96.0.1"));
    assert!(getent(&pod, "api.prod", dir.path()).contains("10.96.5.5"));
    assert!(getent(&pod, "www.example.org", dir.path()).contains("192.0.2.1"));
    assert!(getent(&pod, "www.corp.example", dir.path()).contains("192.0.2.1"));
    // The cluster domain's cache cap: 300 s from kube-dns, at most 30 s to the pod.
    let (_, answer) = pod.run("dig", &[&format!("@{KUBE_DNS}"), "+noall", "+answer", "long.prod.svc.cluster.local", "A"]);
    let ttl: u32 = answer.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    assert!(ttl <= 30, "cluster.local answers are capped at 30 s: {answer}");

    // The pod's DNS bypassed conntrack; nodedns, not kube-proxy's DNAT, answered it.
    let (ok, tracked) = node.run("conntrack", &["-L", "-s", "10.244.0.2"]);
    assert!(ok || tracked.is_empty(), "conntrack -L");
    assert!(!tracked.contains("dport=53"), "pod DNS tracked:\n{tracked}");
    let metrics = node.within(|| http_get((LOCAL_DNS.parse::<std::net::IpAddr>().unwrap(), 9253).into(), "/metrics"));
    let (_, metrics) = metrics.expect("/metrics on :9253");
    assert!(metrics.lines().any(|l| l.starts_with("coredns_dns_requests_total") && !l.ends_with(" 0")), "{metrics}");
    assert!(metrics.contains("coredns_cache_hits_total") || metrics.contains("coredns_cache_"), "{metrics}");
    let setup = node.within(|| http_get(("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), 9353).into(), "/metrics"));
    let (_, setup) = setup.expect("/metrics on -metrics-listen-address :9353");
    assert!(setup.contains("coredns_nodecache_setup_errors_total{errortype=\"iptables\"} 0"), "{setup}");

    // SIGTERM: node-cache's rules, the addresses and the pidfile go.
    assert!(nodedns.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()), "clean exit:\n{}", log(dir.path()));
    let rules = node.run("iptables-save", &[]).1;
    assert!(!rules.contains("NodeLocal DNS Cache") && !rules.contains("NODEDNS"), "rules left behind:\n{rules}");
    let addresses = node.run("ip", &["-o", "addr", "show"]).1;
    assert!(!addresses.contains(&format!(" {LOCAL_DNS}/")) && !addresses.contains(&format!(" {KUBE_DNS}/")), "{addresses}");
    assert!(!Path::new("/tmp/node-cache.pid").exists(), "pidfile left behind");
}

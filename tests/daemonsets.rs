//! The DaemonSets we ship, run as a cluster runs them, on a node made of network
//! namespaces: kube-proxy-style DNAT of the kube-dns and kube-dns-upstream Service IPs to a
//! kube-dns pod (real `named`), the node's own resolver for external names (another
//! `named`), and a pod namespace resolving with glibc. The container's arguments and its
//! ConfigMap volumes come from the manifests; the volumes are bind-mounted where the
//! kubelet mounts them, in a mount namespace with a private /etc; the environment is what
//! the kubelet sets (the `KUBE_DNS_UPSTREAM_SERVICE_HOST` variable of the kube-dns-upstream
//! Service).
//!
//! - node-local-dns (deploy/node-local-dns, the addon's manifest with nodedns's image): the
//!   image's entry point given node-cache's arguments, the Corefile at
//!   /etc/coredns/Corefile.base, the kube-dns ConfigMap at /etc/kube-dns.
//! - ours (deploy/kubernetes): `run --config /etc/nodedns/nodedns.yaml`, the namespace
//!   watch against the fake API server (through KUBECONFIG, standing in for the service
//!   account).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_yaml_ng::Value;

const LOCAL_DNS: &str = "169.254.20.10";
const KUBE_DNS: &str = "10.96.0.10";
const KUBE_DNS_UPSTREAM: &str = "10.96.0.11";
const KUBE_DNS_POD: &str = "10.244.1.2";
const NODE_RESOLVER: &str = "10.0.0.53";

/// The node and its pod, with kube-dns and the node's resolver running.
struct MiniNode {
    node: Netns,
    pod: Netns,
    _servers: Vec<(tempfile::TempDir, Proc)>,
}

fn mini_node(tag: &str) -> MiniNode {
    require("named");
    require("conntrack");
    require("unshare");
    let (node, pod) = node_and_pod(tag, &pod_resolv_conf(KUBE_DNS));
    std::fs::write(format!("/etc/netns/{}/resolv.conf", node.name), format!("nameserver {NODE_RESOLVER}\n")).unwrap();
    node.service(KUBE_DNS, &[KUBE_DNS_POD], 53);
    node.service(KUBE_DNS_UPSTREAM, &[KUBE_DNS_POD], 53);
    node.sh(&format!("ip addr add {NODE_RESOLVER}/32 dev lo"));
    let kube_dns = tempfile::tempdir().unwrap();
    let cluster = format!("{}long.prod.svc 300 IN A 10.96.7.7\n", cluster_zone());
    let kube_dns_proc = Named::spawn_on(kube_dns.path(), KUBE_DNS_POD, 53, &[("cluster.local", cluster)], Some(&node.name));
    let resolver = tempfile::tempdir().unwrap();
    let zones = [("example.org", test_zone("example.org")), ("corp.example", test_zone("corp.example"))];
    let resolver_proc = Named::spawn_on(resolver.path(), NODE_RESOLVER, 53, &zones, Some(&node.name));
    MiniNode { node, pod, _servers: vec![(kube_dns, kube_dns_proc), (resolver, resolver_proc)] }
}

/// The first container of a manifest's DaemonSet.
fn container(daemonset: &Value) -> &Value {
    &daemonset["spec"]["template"]["spec"]["containers"][0]
}

fn strings(list: &Value) -> Vec<String> {
    list.as_sequence().map(|l| l.iter().map(|a| a.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// Starts the binary as the image's `/nodedns` would be with `args`, in `node`, with each
/// (mount path, directory) of `volumes` bind-mounted over a private copy of /etc.
fn start_in_pod(node: &Netns, dir: &Path, args: &[String], volumes: &[(&str, PathBuf)], env: &[(&str, String)]) -> Proc {
    let entry = dir.join("nodedns");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodedns"), &entry).unwrap();
    let d = dir.display();
    let mut script = format!("set -e; mkdir {d}/etc; cp -a /etc/. {d}/etc/; mount --bind {d}/etc /etc; ");
    for (at, from) in volumes {
        script.push_str(&format!("mkdir -p {at}; mount --bind {} {at}; ", from.display()));
    }
    script.push_str(&format!("exec {d}/nodedns \"$@\""));
    let child = Command::new("ip")
        .args(["netns", "exec", &node.name, "unshare", "-m", "--propagation", "private", "sh", "-c", &script, "nodedns"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nodedns.log")).unwrap())
        .spawn()
        .expect("start nodedns");
    Proc { child, name: "nodedns" }
}

/// A ConfigMap volume: a directory with each key (or each `items` path) as a file.
fn volume(dir: &Path, name: &str, files: &[(&str, String)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    for (file, text) in files {
        std::fs::write(path.join(file), text).unwrap();
    }
    path
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

fn get(node: &Netns, ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), port);
    node.within(|| http_get(addr, path))
}

/// What every node cache on this node must do for its pods, checked from the pod.
fn pods_resolve_through_the_node_cache(mini: &MiniNode, dir: &Path) {
    let pod = &mini.pod;
    // Cluster names through the search list, an external name through the node's resolver.
    assert!(getent(pod, "kubernetes.default", dir).contains("10.96.0.1"));
    assert!(getent(pod, "api.prod", dir).contains("10.96.5.5"));
    assert!(getent(pod, "www.example.org", dir).contains("192.0.2.1"));
    // The pod's DNS bypassed conntrack: answered by the node cache, not DNAT-ed by kube-proxy.
    let (_, tracked) = mini.node.run("conntrack", &["-L", "-s", "10.244.0.2"]);
    assert!(!tracked.contains("dport=53"), "pod DNS tracked:\n{tracked}");
    let (_, metrics) = get(&mini.node, LOCAL_DNS, 9253, "/metrics").expect("/metrics on :9253");
    assert!(metrics.lines().any(|l| l.starts_with("coredns_dns_requests_total") && !l.ends_with(" 0")), "{metrics}");
}

/// SIGTERM: a clean exit that leaves no rule and no address.
fn stops_leaving_nothing(mini: &MiniNode, nodedns: &mut Proc, dir: &Path) {
    assert!(nodedns.terminate(Duration::from_secs(10)).is_some_and(|s| s.success()), "clean exit:\n{}", log(dir));
    let rules = mini.node.run("iptables-save", &[]).1;
    assert!(!rules.contains("NodeLocal DNS Cache") && !rules.contains("NODEDNS"), "rules left behind:\n{rules}");
    let addresses = mini.node.run("ip", &["-o", "addr", "show"]).1;
    assert!(!addresses.contains(&format!(" {LOCAL_DNS}/")) && !addresses.contains(&format!(" {KUBE_DNS}/")), "{addresses}");
}

#[test]
fn the_node_local_dns_daemonset_with_nodedns_as_its_image_serves_pods_and_leaves_nothing() {
    let mini = mini_node("dropin");
    let dir = tempfile::tempdir().unwrap();
    let sed = |text: &str| operator_sed(text, LOCAL_DNS, "cluster.local", KUBE_DNS);
    let ds = node_local_dns("DaemonSet");
    assert_eq!(container(&ds)["name"].as_str(), Some("node-cache"));
    let args: Vec<String> = strings(&container(&ds)["args"]).iter().map(|a| sed(a)).collect();
    let corefile = sed(node_local_dns("ConfigMap")["data"]["Corefile"].as_str().unwrap());
    let volumes = [
        ("/etc/coredns", volume(dir.path(), "node-local-dns", &[("Corefile.base", corefile)])),
        ("/etc/kube-dns", volume(dir.path(), "kube-dns", &[("stubDomains", r#"{"corp.example": ["10.0.0.53"]}"#.into())])),
    ];
    let env = [("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS_UPSTREAM.to_string())];
    let mut nodedns = start_in_pod(&mini.node, dir.path(), &args, &volumes, &env);
    wait_until(Duration::from_secs(20), "/health on 169.254.20.10:8080 (the liveness probe's)", || {
        get(&mini.node, LOCAL_DNS, 8080, "/health").is_some_and(|(code, body)| code == 200 && body.trim() == "OK")
    });
    let generated = std::fs::read_to_string(dir.path().join("etc/Corefile")).expect("the Corefile written to -conf");
    assert!(generated.contains(&format!("forward . {KUBE_DNS_UPSTREAM} {{")), "{generated}");
    assert!(generated.contains("forward . /etc/resolv.conf") && generated.contains("corp.example:53 {"), "{generated}");
    assert_eq!(std::fs::read_to_string("/tmp/node-cache.pid").unwrap().trim(), nodedns.child.id().to_string());
    wait_until(Duration::from_secs(10), "node-cache's rules installed", || {
        mini.node.run("iptables-save", &[]).1.matches("NodeLocal DNS Cache").count() == 24
    });

    pods_resolve_through_the_node_cache(&mini, dir.path());
    assert!(getent(&mini.pod, "www.corp.example", dir.path()).contains("192.0.2.1"), "the kube-dns ConfigMap's stub domain");
    // The Corefile's cache cap for the cluster domain: 300 s from kube-dns, at most 30 s.
    let (_, answer) = mini.pod.run("dig", &[&format!("@{KUBE_DNS}"), "+noall", "+answer", "long.prod.svc.cluster.local", "A"]);
    let ttl: u32 = answer.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{answer}"));
    assert!(ttl <= 30, "cluster.local answers are capped at 30 s: {answer}");
    let (_, setup) = get(&mini.node, "127.0.0.1", 9353, "/metrics").expect("/metrics on -metrics-listen-address :9353");
    assert!(setup.contains("coredns_nodecache_setup_errors_total{errortype=\"iptables\"} 0"), "{setup}");

    stops_leaving_nothing(&mini, &mut nodedns, dir.path());
    assert!(!Path::new("/tmp/node-cache.pid").exists(), "pidfile left behind");
}

#[test]
fn our_daemonset_serves_pods_of_any_address_and_leaves_nothing() {
    let mini = mini_node("ours");
    let dir = tempfile::tempdir().unwrap();
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let load = |file: &str| -> Value { serde_yaml_ng::from_str(&std::fs::read_to_string(manifests.join(file)).unwrap()).unwrap() };
    let ds = load("daemonset.yaml");
    let args = strings(&container(&ds)["args"]);
    let config = load("configmap.yaml")["data"]["nodedns.yaml"].as_str().unwrap().to_string();
    // Each volume where the container mounts it: the ConfigMap's keys as files, a hostPath
    // as an empty directory of the test's (the xtables lock is the node's own file anyway).
    let mut volumes = Vec::new();
    for m in container(&ds)["volumeMounts"].as_sequence().unwrap() {
        let (name, at) = (m["name"].as_str().unwrap(), m["mountPath"].as_str().unwrap().to_string());
        match name {
            "config" => volumes.push((at, volume(dir.path(), name, &[("nodedns.yaml", config.clone())]))),
            "xtables-lock" => {}
            _ => volumes.push((at, volume(dir.path(), name, &[]))),
        }
    }
    let volumes: Vec<(&str, PathBuf)> = volumes.iter().map(|(at, from)| (at.as_str(), from.clone())).collect();
    let api = mini.node.within(|| FakeApiServer::start(&["default", "kube-system", "prod"]));
    let env = [
        ("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS_UPSTREAM.to_string()),
        ("KUBECONFIG", api.kubeconfig(dir.path())),
        ("RUST_LOG", "info".to_string()),
    ];
    let mut nodedns = start_in_pod(&mini.node, dir.path(), &args, &volumes, &env);
    let probe = container(&ds)["readinessProbe"]["httpGet"].clone();
    let (path, port) = (probe["path"].as_str().unwrap().to_string(), probe["port"].as_u64().unwrap() as u16);
    // The kubelet probes the pod IP: for a host-network pod, an address of the node.
    wait_until(Duration::from_secs(20), "the readiness probe at the node's address", || {
        get(&mini.node, "10.244.0.1", port, &path).is_some_and(|(code, _)| code == 200)
    });
    wait_until(Duration::from_secs(10), "namespaces listed", || log(dir.path()).contains("namespaces listed"));
    // Until its NOTRACK rules are in, pods reach kube-dns through kube-proxy, as without a cache.
    wait_until(Duration::from_secs(10), "the packet-filter rules installed", || {
        log(dir.path()).contains("node packet-filter rules installed")
    });
    pods_resolve_through_the_node_cache(&mini, dir.path());
    stops_leaving_nothing(&mini, &mut nodedns, dir.path());
    assert!(dir.path().join("state/cache.snapshot").exists(), "the cache snapshot on the state volume:\n{}", log(dir.path()));
}

//! Node setup in network namespaces the test creates (conntrack off the DNS path): nodedns owns the
//! link-local address and a service-style address in a "node" namespace, installs its
//! NOTRACK rules, and a "pod" namespace connected by a veth pair resolves through it with
//! glibc, with each rules backend (iptables, nftables). DNS to nodedns leaves no conntrack entry while conntrack is demonstrably active;
//! rules removed by someone else come back (nftables: cannot be removed by anyone else, the
//! table being owned by nodedns's socket); a clean exit leaves nothing behind.

mod common;

use std::time::Duration;

use common::*;

const LINK_LOCAL: &str = "169.254.20.10";
const SERVICE_IP: &str = "10.96.0.10";

fn rules(node: &Netns) -> String {
    let (ok, out) = node.run("iptables-save", &[]);
    assert!(ok, "iptables-save");
    out
}

fn addresses(node: &Netns) -> String {
    node.run("ip", &["-o", "addr", "show"]).1
}

/// How the test inspects and disturbs one rules backend.
struct Backend {
    name: &'static str,
    /// Present in the ruleset listing while nodedns's rules are installed.
    installed: &'static [&'static str],
    /// Tries to remove part of nodedns's rules, as another agent might; whether it could.
    disturb: fn(&Netns) -> bool,
    /// Whether another agent can.
    disturbable: bool,
}

const IPTABLES: Backend = Backend {
    name: "iptables",
    installed: &[
        "-A PREROUTING -j NODEDNS-NOTRACK",
        "-A OUTPUT -j NODEDNS-NOTRACK",
        "-A INPUT -j NODEDNS-ACCEPT",
        "-A OUTPUT -j NODEDNS-ACCEPT",
    ],
    disturb: |node| node.run("iptables", &["-t", "raw", "-D", "PREROUTING", "-j", "NODEDNS-NOTRACK"]).0,
    disturbable: true,
};

const NFTABLES: Backend = Backend {
    name: "nftables",
    installed: &[
        "table inet nodedns_",
        "flags owner",
        "ip daddr 169.254.20.10 udp dport 53 notrack",
        "ip saddr 10.96.0.10 tcp sport 53 notrack",
    ],
    disturb: |node| {
        let tables = node.run("nft", &["list", "tables"]).1;
        let ours = tables.lines().find_map(|l| l.strip_prefix("table inet ").filter(|t| t.starts_with("nodedns_"))).expect("our table");
        node.run("nft", &["delete", "table", "inet", ours]).0
    },
    disturbable: false,
};

/// Everything nodedns added, as listed by both tools.
fn ruleset(node: &Netns) -> String {
    rules(node) + &node.run("nft", &["list", "ruleset"]).1
}

#[test]
fn with_iptables_nodedns_owns_its_addresses_takes_dns_out_of_conntrack_repairs_and_leaves_nothing() {
    scenario(IPTABLES);
}

#[test]
fn with_nftables_nodedns_owns_its_addresses_takes_dns_out_of_conntrack_repairs_and_leaves_nothing() {
    scenario(NFTABLES);
}

fn scenario(backend: Backend) {
    for tool in ["iptables", "iptables-save", "nft", "conntrack", "getent", "dig"] {
        require(tool);
    }
    let (node, pod) = node_and_pod(&backend.name[..3], &pod_resolv_conf(LINK_LOCAL));
    let dir = tempfile::tempdir().unwrap();
    let _named = Named::spawn(dir.path(), 5300, &[("test.example", test_zone("test.example"))], Some(&node.name));
    wait_until(Duration::from_secs(15), "named answers in the node namespace", || {
        node.run("dig", &["@127.0.0.1", "-p", "5300", "+short", "+time=1", "+tries=1", "www.test.example"]).1.contains("192.0.2.1")
    });
    let config = format!(
        "listen: [\"{LINK_LOCAL}:53\", \"{SERVICE_IP}:53\"]\nupstreams: [\"127.0.0.1:5300\"]\nmetrics: \"off\"\n\
         server:\n  allow: [10.244.0.0/16, 127.0.0.0/8]\nkubernetes:\n  local_answers: false\nnode:\n  setup: true\n  check_interval: 500ms\n  rules: {}\n",
        backend.name
    );
    let mut nodedns = node.spawn_nodedns(dir.path(), &config);
    let log = dir.path().join("nodedns.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(15), "node rules installed", || read_log().contains("node packet-filter rules installed"));

    // This kernel has no dummy interfaces: the addresses went on the fallback, and it says so.
    let owned = addresses(&node);
    assert!(owned.contains(&format!(" {LINK_LOCAL}/32")) && owned.contains(&format!(" {SERVICE_IP}/32")), "{owned}");
    assert!(read_log().contains("cannot create dummy interfaces"), "{}", read_log());
    let installed = ruleset(&node);
    for rule in backend.installed {
        assert!(installed.contains(rule), "missing `{rule}`:\n{installed}");
    }

    // The pod resolves through both addresses, over UDP (glibc) and TCP (dig +tcp).
    let (ok, out) = pod.run("getent", &["ahosts", "www.test.example"]);
    assert!(ok && out.contains("192.0.2.1"), "glibc in the pod: {out}");
    for server in [LINK_LOCAL, SERVICE_IP] {
        for transport in ["+notcp", "+tcp"] {
            let out = pod.run("dig", &[&format!("@{server}"), transport, "+short", "+time=2", "+tries=1", "alias.test.example"]).1;
            assert!(out.contains("192.0.2.1"), "dig @{server} {transport}: {out}");
        }
    }
    let (_, tracked) = node.run("conntrack", &["-L"]);
    let dns_flows: Vec<&str> = tracked.lines().filter(|l| l.contains("dport=53 ")).collect();
    assert!(dns_flows.is_empty(), "DNS to nodedns was tracked:\n{}", dns_flows.join("\n"));
    assert!(tracked.contains("dport=5300 "), "conntrack is active here (nodedns's upstream queries are tracked):\n{tracked}");

    // kube-proxy-style interference: our jump and an address disappear; both come back.
    assert_eq!((backend.disturb)(&node), backend.disturbable, "another agent removing our rules");
    ip(&["-n", &node.name, "addr", "del", &format!("{SERVICE_IP}/32"), "dev", "lo"]);
    wait_until(Duration::from_secs(5), "the rules and the address are put back", || {
        let now = ruleset(&node);
        backend.installed.iter().all(|r| now.contains(r)) && addresses(&node).contains(&format!(" {SERVICE_IP}/32"))
    });
    assert!(read_log().contains("put back"), "{}", read_log());

    let status = nodedns.terminate(Duration::from_secs(10)).expect("nodedns exits on SIGTERM");
    assert!(status.success(), "{}", read_log());
    let left = ruleset(&node);
    assert!(!left.contains("NODEDNS") && !left.contains("nodedns"), "rules left behind:\n{left}");
    let owned = addresses(&node);
    assert!(!owned.contains(LINK_LOCAL) && !owned.contains(SERVICE_IP), "addresses left behind:\n{owned}");
    assert!(left.contains("--ctstate RELATED,ESTABLISHED -j ACCEPT"), "the node's own rules are untouched:\n{left}");
}

//! Kubernetes naming (search-path fan-out under `ndots:5`, and the herd it makes): a pod's search walk through nodedns, with
//! glibc as the client inside a network namespace the test creates, a `named` playing the
//! cluster DNS for `cluster.local` and another playing the cloud resolver for everything
//! else. Measures upstream queries per lookup with the naming rules on and off.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const POD_RESOLV_CONF: &str = "nameserver 127.0.0.1\n\
    search default.svc.cluster.local svc.cluster.local cluster.local us-central1-a.c.proj.internal c.proj.internal google.internal\n\
    options ndots:5 timeout:2 attempts:2\n";

/// The cloud's internal zone (metadata server, VM names).
fn internal_zone() -> String {
    "$TTL 300\n@ IN SOA ns.internal. cloud-dns-hostmaster.google.com. 2 21600 3600 259200 300\n@ IN NS ns\nns IN A 169.254.169.254\n\
     metadata.google IN A 169.254.169.254\nvm1.us-central1-a.c.proj IN A 10.128.0.2\n"
        .into()
}

fn external_zone() -> String {
    "$TTL 300\n@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 60\n@ IN NS ns\nns IN A 192.0.2.53\n\
     *.site IN A 192.0.2.80\n*.site IN AAAA 2001:db8::80\n"
        .into()
}

struct Cluster {
    ns: Netns,
    dir: tempfile::TempDir,
    _servers: Vec<Proc>,
}

impl Cluster {
    fn start(purpose: &str) -> Cluster {
        require("getent");
        require("dig");
        let ns = Netns::create(purpose, POD_RESOLV_CONF);
        let dir = tempfile::tempdir().unwrap();
        let (cluster_dir, cloud_dir) = (dir.path().join("cluster"), dir.path().join("cloud"));
        std::fs::create_dir_all(&cluster_dir).unwrap();
        std::fs::create_dir_all(&cloud_dir).unwrap();
        let servers = vec![
            Named::spawn(&cluster_dir, 5301, &[("cluster.local", cluster_zone())], Some(&ns.name)),
            Named::spawn(&cloud_dir, 5302, &[("internal", internal_zone()), ("example.com", external_zone())], Some(&ns.name)),
        ];
        let cluster = Cluster { ns, dir, _servers: servers };
        for (port, zone) in [("5301", "cluster.local"), ("5302", "internal")] {
            wait_until(Duration::from_secs(15), "named answers in the namespace", || {
                cluster.ns.run("dig", &["@127.0.0.1", "-p", port, "+short", "+time=1", "+tries=1", zone, "SOA"]).1.contains("hostmaster")
            });
        }
        cluster
    }

    /// Starts nodedns on 127.0.0.1:53 in the namespace with `kubernetes` as its config section.
    fn nodedns(&self, kubernetes: &str) -> Proc {
        let d = self.dir.path();
        // The node's own resolv.conf: where the host search suffixes come from.
        std::fs::write(
            d.join("node-resolv.conf"),
            "nameserver 127.0.0.1\nsearch us-central1-a.c.proj.internal c.proj.internal google.internal\n",
        )
        .unwrap();
        let config = format!(
            "resolv_conf: {}\nupstreams: [\"127.0.0.1:5302\"]\nforward:\n  - zone: cluster.local\n    upstreams: [\"127.0.0.1:5301\"]\nkubernetes:\n{kubernetes}",
            d.join("node-resolv.conf").display()
        );
        std::fs::write(d.join("nodedns.yaml"), config).unwrap();
        let proc = Proc {
            child: in_netns(Some(&self.ns.name), env!("CARGO_BIN_EXE_nodedns"))
                .args(["run", "--listen", "127.0.0.1:53", "--metrics", "127.0.0.1:9253", "--config"])
                .arg(d.join("nodedns.yaml"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("nodedns.log")).unwrap())
                .spawn()
                .unwrap(),
            name: "nodedns",
        };
        wait_until(Duration::from_secs(15), "nodedns answers in the namespace", || {
            self.dig(&["+short", "kubernetes.default.svc.cluster.local"]).contains("10.96.0.1")
        });
        // The SOAs are learned from the upstreams right after start.
        std::thread::sleep(Duration::from_millis(300));
        proc
    }

    fn dig(&self, args: &[&str]) -> String {
        self.ns.run("dig", &[&["@127.0.0.1", "+time=2", "+tries=1"], args].concat()).1
    }

    /// Queries both upstreams logged for names containing `needle`.
    fn upstream_queries(&self, needle: &str) -> usize {
        ["cluster", "cloud"].iter().map(|d| count_queries(&self.dir.path().join(d), needle)).sum()
    }

    /// Looks up each name with `getent ahosts` in the namespace; returns each lookup's time
    /// in microseconds (one shell in the namespace, so `ip netns exec` is not measured).
    fn lookups(&self, names: &[String]) -> Vec<u64> {
        let script = format!(
            "for n in {}; do s=$(date +%s%N); getent ahosts $n >/dev/null || echo FAIL $n; e=$(date +%s%N); echo $(( (e - s) / 1000 )); done",
            names.join(" ")
        );
        let (_, out) = self.ns.run("sh", &["-c", &script]);
        assert!(!out.contains("FAIL"), "lookups failed:\n{out}");
        out.lines().map(|l| l.trim().parse().unwrap()).collect()
    }
}

fn count_queries(dir: &Path, needle: &str) -> usize {
    named_log(dir).lines().filter(|l| l.contains("query: ") && l.contains(needle)).count()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// 100 distinct external names, each looked up once by glibc; returns upstream queries per
/// lookup and the lookups' p50/p99 in microseconds.
fn walk_external_names(cluster: &Cluster, label: &str) -> (f64, u64, u64) {
    let names: Vec<String> = (0..100).map(|i| format!("{label}{i}.site.example.com")).collect();
    let mut took = cluster.lookups(&names);
    took.sort_unstable();
    let per_lookup = cluster.upstream_queries(&format!("query: {label}")) as f64 / names.len() as f64;
    (per_lookup, percentile(&took, 0.5), percentile(&took, 0.99))
}

const RULES_ON: &str = "  namespaces: [default, kube-system, prod]\n";

#[test]
fn a_pod_search_walk_costs_one_upstream_query_per_name_and_type() {
    let cluster = Cluster::start("k8s-walk");
    let off = {
        let _nd = cluster.nodedns("  local_answers: false\n");
        walk_external_names(&cluster, "off")
    };
    let _nd = cluster.nodedns(RULES_ON);
    let on = walk_external_names(&cluster, "on");
    eprintln!("100 external names through glibc with ndots:5 and six search suffixes:");
    eprintln!("  naming rules on:  {:.2} upstream queries per lookup, p50 {} us, p99 {} us", on.0, on.1, on.2);
    eprintln!("  naming rules off: {:.2} upstream queries per lookup, p50 {} us, p99 {} us", off.0, off.1, off.2);
    assert_eq!(off.0, 14.0, "without the rules every step of the walk goes upstream, A and AAAA");
    assert_eq!(on.0, 2.0, "with the rules only the real name goes upstream, A and AAAA");
}

#[test]
fn every_specified_record_form_still_resolves_and_denials_match_the_upstream() {
    let cluster = Cluster::start("k8s-spec");
    let _nd = cluster.nodedns(RULES_ON);
    for (name, qtype, expect) in [
        ("kubernetes.default.svc.cluster.local", "A", "10.96.0.1"),
        ("api.prod.svc.cluster.local", "A", "10.96.5.5"),
        ("nginx.prod.svc.cluster.local", "A", "10.244.1.7"),
        ("web-0.nginx.prod.svc.cluster.local", "A", "10.244.1.7"),
        ("10-244-1-8.nginx.prod.svc.cluster.local", "A", "10.244.1.8"),
        ("_https._tcp.api.prod.svc.cluster.local", "SRV", "443 api.prod.svc.cluster.local."),
        ("_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV", "53 kube-dns.kube-system.svc.cluster.local."),
        ("10-244-1-7.prod.pod.cluster.local", "A", "10.244.1.7"),
        ("dns-version.cluster.local", "TXT", "1.1.0"),
        ("metadata.google.internal", "A", "169.254.169.254"),
        ("vm1.us-central1-a.c.proj.internal", "A", "10.128.0.2"),
    ] {
        let out = cluster.dig(&["+short", name, qtype]);
        assert!(out.contains(expect), "{name} {qtype}: {out}");
    }
    // Through glibc's search list: short service names, and a VM name under a host suffix.
    for (name, expect) in [("kubernetes.default", "10.96.0.1"), ("api.prod", "10.96.5.5"), ("vm1", "10.128.0.2")] {
        let (ok, out) = cluster.ns.run("getent", &["ahostsv4", name]);
        assert!(ok && out.contains(expect), "{name}: {out}");
    }
    // A local denial carries the SOA the cluster DNS itself gives.
    let soa_of = |out: &str| out.lines().find(|l| l.contains("SOA")).map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "));
    let local = cluster.dig(&["+noall", "+authority", "+comments", "www.example.com.default.svc.cluster.local"]);
    let upstream = cluster.ns.run("dig", &["@127.0.0.1", "-p", "5301", "+noall", "+authority", "+comments", "nothing.cluster.local"]).1;
    assert!(local.contains("NXDOMAIN"), "{local}");
    assert_eq!(soa_of(&local), soa_of(&upstream), "local:\n{local}\nupstream:\n{upstream}");
    assert!(count_queries(&cluster.dir.path().join("cluster"), "www.example.com.default") == 0, "denied locally");
}

#[test]
fn watched_namespaces_deny_unknown_ones_and_follow_changes_and_failures() {
    let api = FakeApiServer::start(&["default", "kube-system", "prod"]);
    let named = Named::start(&[("cluster.local", cluster_zone())]);
    let dir = tempfile::tempdir().unwrap();
    let nd = Nodedns::start_with_env(
        Some("kubernetes:\n  namespaces: watch\n"),
        &["--upstream".into(), named.addr.to_string()],
        &[("KUBECONFIG", api.kubeconfig(dir.path()))],
    );
    wait_until(Duration::from_secs(10), "namespaces listed", || nd.log().contains("namespaces listed"));
    let rcode_of =
        |name: &str| rcode(&query_udp(nd.dns, name, hickory_proto::rr::RecordType::A, 7, Duration::from_secs(3)).expect("an answer"));
    use hickory_proto::op::ResponseCode;
    wait_until(Duration::from_secs(5), "the cluster SOA learned", || {
        rcode_of("soa-probe.staging.svc.cluster.local.") == ResponseCode::NXDomain
            && named.queries_for("soa-probe.staging.svc.cluster.local", "A") == 0
    });
    assert_eq!(rcode_of("api.prod.svc.cluster.local."), ResponseCode::NoError, "a service in a listed namespace");

    // A namespace created after the listing arrives through the watch.
    api.push("ADDED", "staging", 11);
    let mut i = 0;
    wait_until(Duration::from_secs(5), "names in the new namespace go upstream", || {
        i += 1;
        let name = format!("web{i}.staging.svc.cluster.local");
        rcode_of(&format!("{name}.")) == ResponseCode::NXDomain && named.queries_for(&name, "A") == 1
    });

    // Deleted again: denied locally again.
    api.push("DELETED", "staging", 12);
    wait_until(Duration::from_secs(5), "names in the deleted namespace are denied again", || {
        i += 1;
        let name = format!("web{i}.staging.svc.cluster.local");
        rcode_of(&format!("{name}.")) == ResponseCode::NXDomain && named.queries_for(&name, "A") == 0
    });

    // The API fails: the list is no longer known to be complete, so nothing is denied for
    // its namespace any more.
    api.fail();
    wait_until(Duration::from_secs(10), "with the watch broken, every namespace may exist", || {
        i += 1;
        let name = format!("web{i}.other.svc.cluster.local");
        rcode_of(&format!("{name}.")) == ResponseCode::NXDomain && named.queries_for(&name, "A") == 1
    });
}

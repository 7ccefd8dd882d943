//! Switching a running node between NodeLocal DNSCache's node-cache and nodedns run as
//! node-cache, both ways, in network namespaces the test creates.
//!
//! Each test builds a node: a kube-dns `named` behind the kube-dns-upstream ClusterIP
//! (kube-proxy-style DNAT), a pod joined to the node by a veth pair, and nodedns started
//! with node-cache's flags, binding the link-local address and the kube-dns ClusterIP.
//! What node-cache itself leaves on a node (its interface, addresses and rules) is made
//! here with node-cache's own commands, from node-cache's rule table written out below
//! independently of the product's, so that a drift in nodedns's rules fails these tests.
//!
//! The handover relies on both programs writing the same rules and checking them before
//! inserting: a switch must never leave a moment without the rules (DNS would go through
//! conntrack) nor leave a second copy of one (which a later teardown would miss).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const LOCAL_DNS: &str = "169.254.20.10";
const DNS_SERVER: &str = "10.96.0.10";
/// The kube-dns-upstream Service's ClusterIP, and the kube-dns pod behind it.
const UPSTREAM_SVC: &str = "10.96.0.11";
const KUBE_DNS_POD: &str = "10.244.1.2";
const INTERFACE: &str = "nodelocaldns";
const LOCAL_IPS: [&str; 2] = [LOCAL_DNS, DNS_SERVER];
const PROBE_NAME: &str = "kubernetes.default.svc.cluster.local.";

const SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
const ALLOW_TRAFFIC: &str = "NodeLocal DNS Cache: allow DNS traffic";

/// One of node-cache's rules.
struct Rule {
    table: &'static str,
    chain: &'static str,
    proto: &'static str,
    /// `-d` (with `--dport`) or `-s` (with `--sport`).
    dir: &'static str,
    ip: &'static str,
    port: u16,
    target: &'static str,
    comment: &'static str,
}

/// node-cache's twelve rules for `ip` (DNS port 53, health port 8080), in its order.
fn node_cache_rules(ip: &'static str) -> Vec<Rule> {
    let r = |table, chain, proto, dir, port, target, comment| Rule { table, chain, proto, dir, ip, port, target, comment };
    vec![
        r("raw", "PREROUTING", "tcp", "-d", 53, "NOTRACK", SKIP_CONNTRACK),
        r("raw", "PREROUTING", "udp", "-d", 53, "NOTRACK", SKIP_CONNTRACK),
        r("filter", "INPUT", "tcp", "-d", 53, "ACCEPT", ALLOW_TRAFFIC),
        r("filter", "INPUT", "udp", "-d", 53, "ACCEPT", ALLOW_TRAFFIC),
        r("raw", "OUTPUT", "tcp", "-s", 53, "NOTRACK", SKIP_CONNTRACK),
        r("raw", "OUTPUT", "udp", "-s", 53, "NOTRACK", SKIP_CONNTRACK),
        r("filter", "OUTPUT", "tcp", "-s", 53, "ACCEPT", ALLOW_TRAFFIC),
        r("filter", "OUTPUT", "udp", "-s", 53, "ACCEPT", ALLOW_TRAFFIC),
        r("raw", "OUTPUT", "tcp", "-d", 53, "NOTRACK", SKIP_CONNTRACK),
        r("raw", "OUTPUT", "udp", "-d", 53, "NOTRACK", SKIP_CONNTRACK),
        r("raw", "OUTPUT", "tcp", "-d", 8080, "NOTRACK", SKIP_CONNTRACK),
        r("raw", "OUTPUT", "tcp", "-s", 8080, "NOTRACK", SKIP_CONNTRACK),
    ]
}

fn all_rules() -> Vec<Rule> {
    LOCAL_IPS.into_iter().flat_map(node_cache_rules).collect()
}

impl Rule {
    /// node-cache's command for `op` (`-C`, `-I`, `-D`): wait flag, op, chain, table, then
    /// the rule's arguments exactly as it passes them (the comment one argument).
    fn command(&self, op: &str) -> Vec<String> {
        let port_flag = if self.dir == "-d" { "--dport" } else { "--sport" };
        let port = self.port.to_string();
        ["-w", "5", op, self.chain, "-t", self.table, "-p", self.proto, self.dir, self.ip, port_flag, &port, "-j", self.target]
            .into_iter()
            .chain(["-m", "comment", "--comment", self.comment])
            .map(str::to_string)
            .collect()
    }

    /// The rule as `iptables-save` lists it.
    fn saved(&self) -> String {
        let port_flag = if self.dir == "-d" { "--dport" } else { "--sport" };
        format!(
            "-A {} {} {}/32 -p {proto} -m {proto} {port_flag} {} -m comment --comment \"{}\" -j {}",
            self.chain,
            self.dir,
            self.ip,
            self.port,
            self.comment,
            self.target,
            proto = self.proto
        )
    }

    fn run(&self, node: &Netns, op: &str) -> bool {
        let args = self.command(op);
        node.run("iptables", &args.iter().map(String::as_str).collect::<Vec<_>>()).0
    }

    /// node-cache's EnsureRule: check, and insert at the top if missing.
    fn ensure(&self, node: &Netns) {
        if !self.run(node, "-C") {
            assert!(self.run(node, "-I"), "iptables {}", self.command("-I").join(" "));
        }
    }
}

/// Every rule `iptables-save` lists, with its table.
fn saved_rules(node: &Netns) -> Vec<(String, String)> {
    let (ok, out) = node.run("iptables-save", &[]);
    assert!(ok, "iptables-save in the node namespace");
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in out.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if line.starts_with("-A ") {
            rules.push((table.clone(), line.to_string()));
        }
    }
    rules
}

fn copies(saved: &[(String, String)], rule: &Rule) -> usize {
    let line = rule.saved();
    saved.iter().filter(|(table, l)| table == rule.table && *l == line).count()
}

/// The rules that are not exactly once in `saved`, with their count; also anything of
/// nodedns's own chains, which a node handed over to node-cache must not have.
fn not_once(saved: &[(String, String)]) -> Vec<String> {
    let mut wrong: Vec<String> =
        all_rules().iter().map(|r| (copies(saved, r), r)).filter(|(n, _)| *n != 1).map(|(n, r)| format!("{n}x {}", r.saved())).collect();
    wrong.extend(saved.iter().filter(|(_, l)| l.contains("NODEDNS")).map(|(t, l)| format!("{t}: {l}")));
    let extra = saved.iter().filter(|(_, l)| l.contains("NodeLocal DNS Cache")).count();
    if extra != all_rules().len() {
        wrong.push(format!("{extra} rules with node-cache's comments, not {}", all_rules().len()));
    }
    wrong
}

fn listing(saved: &[(String, String)]) -> String {
    saved.iter().map(|(t, l)| format!("{t}: {l}\n")).collect()
}

/// How many interfaces hold `ip`, per `ip -o addr`.
fn address_count(node: &Netns, ip: &str) -> usize {
    let needle = format!(" {ip}/");
    node.run("ip", &["-o", "addr", "show"]).1.lines().filter(|l| l.contains(&needle)).count()
}

fn link_exists(node: &Netns, name: &str) -> bool {
    node.run("ip", &["link", "show", "dev", name]).0
}

/// How nodedns is told to be node-cache.
#[derive(Clone, Copy)]
enum Invocation {
    /// Through a link named `node-cache`, as the node-local-dns image's entry point is.
    ArgvZero,
    /// `nodedns node-cache FLAGS...`.
    Subcommand,
}

/// nodedns running as node-cache in the node namespace.
struct NodeCache {
    proc: Proc,
    log: PathBuf,
}

impl NodeCache {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; it must exit cleanly.
    fn stop(&mut self) {
        let status = self.proc.terminate(Duration::from_secs(15)).expect("nodedns exits on SIGTERM");
        assert!(status.success(), "nodedns exited with {status}: {}", self.log());
    }
}

/// Fields drop in order: the servers stop before their namespaces and directory go.
struct Node {
    _kube_dns: Proc,
    node: Netns,
    pod: Netns,
    dir: tempfile::TempDir,
    /// node-cache's `-metrics-listen-address`, in the node namespace.
    metrics: SocketAddr,
}

impl Node {
    fn start(tag: &str) -> Node {
        for tool in ["iptables", "iptables-save", "conntrack", "named"] {
            require(tool);
        }
        let (node, pod) = node_and_pod(tag, &pod_resolv_conf(LOCAL_DNS));
        let dir = tempfile::tempdir().unwrap();
        node.service(UPSTREAM_SVC, &[KUBE_DNS_POD], 53);
        let kube_dns_dir = dir.path().join("kube-dns");
        std::fs::create_dir(&kube_dns_dir).unwrap();
        let kube_dns = Named::spawn_on(&kube_dns_dir, KUBE_DNS_POD, 53, &[("cluster.local", cluster_zone())], Some(&node.name));
        let pod_addr = SocketAddr::new(KUBE_DNS_POD.parse().unwrap(), 53);
        node.within(|| {
            wait_until(Duration::from_secs(15), "kube-dns answers in the node namespace, over UDP and TCP", || {
                query_udp(pod_addr, PROBE_NAME, RecordType::A, 1, Duration::from_millis(200)).is_some()
                    && std::net::TcpStream::connect_timeout(&pod_addr, Duration::from_millis(200)).is_ok()
            })
        });
        // The ConfigMap as the operator's sed leaves it (kube-proxy in iptables mode).
        let base = operator_sed(node_local_dns("ConfigMap")["data"]["Corefile"].as_str().unwrap(), LOCAL_DNS, "cluster.local", DNS_SERVER);
        std::fs::write(dir.path().join("Corefile.base"), base).unwrap();
        Node { _kube_dns: kube_dns, node, pod, dir, metrics: loopback(free_port()) }
    }

    /// Makes the interface node-cache would have made. node-cache's is a dummy device; this
    /// kernel has no dummy module, so a veth pair named like it (its peer up) stands in:
    /// node-cache and nodedns both take any link of that name as the interface.
    fn add_interface(&self) {
        if !self.node.run("ip", &["link", "add", INTERFACE, "type", "dummy"]).0 {
            ip(&["-n", &self.node.name, "link", "add", INTERFACE, "type", "veth", "peer", "name", "nodelocaldns-p"]);
            ip(&["-n", &self.node.name, "link", "set", "nodelocaldns-p", "up"]);
        }
        ip(&["-n", &self.node.name, "link", "set", INTERFACE, "up"]);
    }

    /// node-cache starting on this node, as its EnsureDummyDevice and EnsureRule do: the
    /// interface exists, so each address is added, an existing one being no error; each
    /// rule is checked, and inserted only if missing.
    fn node_cache_setup(&self) {
        assert!(link_exists(&self.node, INTERFACE), "node-cache's interface");
        for ip in LOCAL_IPS {
            // EEXIST is ignored, as node-cache ignores it.
            let _ = self.node.run("ip", &["addr", "add", &format!("{ip}/32"), "dev", INTERFACE]);
        }
        for rule in all_rules() {
            rule.ensure(&self.node);
        }
    }

    /// Starts nodedns with node-cache's flags plus `extra`, and waits until it serves and
    /// has set up its rules.
    fn node_cache(&self, how: Invocation, extra: &[&str]) -> NodeCache {
        let d = self.dir.path();
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = d.join(format!("node-cache-{}.log", STARTS.fetch_add(1, Ordering::Relaxed)));
        let program: PathBuf = match how {
            Invocation::ArgvZero => {
                let link = d.join("node-cache");
                if !link.exists() {
                    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nodedns"), &link).unwrap();
                }
                link
            }
            Invocation::Subcommand => env!("CARGO_BIN_EXE_nodedns").into(),
        };
        let mut cmd = in_netns(Some(&self.node.name), program.to_str().unwrap());
        if let Invocation::Subcommand = how {
            cmd.arg("node-cache");
        }
        let path = |name: &str| d.join(name).display().to_string();
        cmd.args(["-localip", &LOCAL_IPS.join(","), "-conf", &path("Corefile"), "-basecorefile", &path("Corefile.base")])
            .args(["-upstreamsvc", "kube-dns-upstream", "-health-port", "8080", "-pidfile", &path("node-cache.pid")])
            .args(["-syncinterval=1s", "-metrics-listen-address", &self.metrics.to_string()])
            .args(extra)
            .env("KUBE_DNS_UPSTREAM_SERVICE_HOST", UPSTREAM_SVC)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut nc = NodeCache { proc: Proc { child: cmd.spawn().expect("start nodedns as node-cache"), name: "nodedns" }, log };
        let until = Instant::now() + Duration::from_secs(20);
        while !nc.log().contains("node packet-filter rules installed") {
            if let Ok(Some(status)) = nc.proc.child.try_wait() {
                panic!("nodedns as node-cache exited during start-up ({status}): {}", nc.log());
            }
            assert!(Instant::now() < until, "nodedns as node-cache did not set up the node in 20 s: {}", nc.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        nc
    }

    fn assert_each_rule_once(&self, when: &str) {
        let saved = saved_rules(&self.node);
        let wrong = not_once(&saved);
        assert!(wrong.is_empty(), "{when}: {wrong:#?}\n{}", listing(&saved));
    }

    fn assert_each_address_once(&self, when: &str) {
        for ip in LOCAL_IPS {
            let n = address_count(&self.node, ip);
            assert_eq!(n, 1, "{when}: {ip} on {n} interfaces:\n{}", self.node.run("ip", &["-o", "addr", "show"]).1);
        }
    }
}

/// What the pod's probe saw.
#[derive(Debug, Default)]
struct ProbeReport {
    sent: usize,
    answered: usize,
    /// When, after `start`, each unanswered query was sent, and the response code of the
    /// wrong answer, if one came.
    lost_at: Vec<(Duration, Option<ResponseCode>)>,
}

/// Asks `PROBE_NAME` of `server` every 50 ms, each from a new socket (so that queries
/// spread over every socket sharing the port), until `stop` or `limit` queries; a query
/// unanswered within a second, or not answered with the name's address, is lost.
fn probe(server: SocketAddr, start: Instant, stop: &AtomicBool, limit: usize) -> ProbeReport {
    let mut report = ProbeReport::default();
    for i in 0..limit {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let sent_at = Instant::now();
        let id = i as u16;
        report.sent += 1;
        let answer = exchange_udp_from("0.0.0.0", server, &build_query(PROBE_NAME, RecordType::A, id, true), Duration::from_secs(1))
            .and_then(|b| Message::from_vec(&b).ok());
        match answer {
            Some(m) if m.metadata.id == id && m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() => {
                report.answered += 1
            }
            other => report.lost_at.push((sent_at - start, other.map(|m| m.metadata.response_code))),
        }
        std::thread::sleep(Duration::from_millis(50).saturating_sub(sent_at.elapsed()));
    }
    report
}

/// node-cache -> nodedns: node-cache was stopped with `-skipteardown`, leaving its
/// interface, addresses and rules, and its CoreDNS still answers while nodedns starts with
/// the same flags. A `named` stands in for that CoreDNS: like CoreDNS (and nodedns) BIND
/// 9.18 binds with SO_REUSEPORT, so both processes share 169.254.20.10:53 and
/// 10.96.0.10:53 until the stand-in is killed.
#[test]
fn nodedns_adopts_what_node_cache_left_with_skipteardown_without_a_gap_or_a_duplicate() {
    let n = Node::start("ncs1");
    n.add_interface();
    for addr in LOCAL_IPS {
        ip(&["-n", &n.node.name, "addr", "add", &format!("{addr}/32"), "dev", INTERFACE]);
    }
    for rule in all_rules() {
        rule.ensure(&n.node);
    }
    n.assert_each_rule_once("node-cache's rules as it leaves them");

    let stand_in_dir = n.dir.path().join("stand-in");
    std::fs::create_dir(&stand_in_dir).unwrap();
    // `listen-on { A; B; }`: the helper writes the address list as given.
    let both = LOCAL_IPS.join("; ");
    let mut stand_in = Named::spawn_on(&stand_in_dir, &both, 53, &[("cluster.local", cluster_zone())], Some(&n.node.name));
    let local = SocketAddr::new(LOCAL_DNS.parse().unwrap(), 53);
    n.pod.within(|| {
        wait_until(Duration::from_secs(15), "the stand-in answers the pod", || {
            exchange_udp_from("0.0.0.0", local, &build_query(PROBE_NAME, RecordType::A, 7, true), Duration::from_millis(300)).is_some()
        })
    });
    let stand_in_queries = || named_queries_for(&stand_in_dir, PROBE_NAME.trim_end_matches('.'), "A");
    let before = stand_in_queries();

    let stop = AtomicBool::new(false);
    let (report, samples, (killed_at, reaped_at), stand_in_during_overlap) = std::thread::scope(|scope| {
        let started = Instant::now();
        let (pod, stop) = (&n.pod, &stop);
        let prober = scope.spawn(move || pod.within(|| probe(local, started, stop, 400)));
        std::thread::sleep(Duration::from_millis(300));

        // Sample the rules from before nodedns starts until it has run two of its 1 s checks.
        let mut samples = 0;
        let mut sample = |when: &str| {
            samples += 1;
            n.assert_each_rule_once(when);
        };
        sample("before nodedns starts");
        let nodedns = std::thread::scope(|inner| {
            let starting = inner.spawn(|| n.node_cache(Invocation::ArgvZero, &["-skipteardown"]));
            while !starting.is_finished() {
                sample("while nodedns starts");
            }
            starting.join().unwrap()
        });
        let checks_until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < checks_until {
            sample("while nodedns checks its rules");
        }
        n.assert_each_address_once("after nodedns started");
        let overlap = stand_in_queries() - before;

        let killed_at = started.elapsed();
        stand_in.child.kill().unwrap();
        stand_in.child.wait().unwrap();
        let reaped_at = started.elapsed();
        let after_kill = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < after_kill {
            sample("after the stand-in died");
        }
        stop.store(true, Ordering::SeqCst);
        let report = prober.join().unwrap();
        assert!(!nodedns.log().contains("ERROR"), "{}", nodedns.log());
        drop(nodedns);
        (report, samples, (killed_at, reaped_at), overlap)
    });
    eprintln!(
        "iptables-save samples: {samples}; probe: {} sent, {} answered, lost at {:?}; stand-in answered {stand_in_during_overlap} \
         while sharing the port; killed at {killed_at:?}, reaped at {reaped_at:?}",
        report.sent, report.answered, report.lost_at
    );
    assert!(samples >= 20, "only {samples} samples of the rules");
    assert!(report.sent >= 40, "{report:?}");
    assert!(stand_in_during_overlap > 0, "the stand-in answered nothing while both served: SO_REUSEPORT was not shared");
    // SIGKILL loses what the killed process holds: a query it had read and not answered,
    // or one the kernel gave its socket before the exit took the socket out of the
    // SO_REUSEPORT group (a few milliseconds). At most one probe falls in that window; any
    // other loss is a gap.
    let at_the_kill = |sent: &Duration| *sent + Duration::from_millis(100) > killed_at && *sent <= reaped_at;
    let gaps: Vec<_> = report.lost_at.iter().filter(|(sent, _)| !at_the_kill(sent)).collect();
    assert!(
        gaps.is_empty() && report.lost_at.len() <= 1,
        "the pod lost queries across the switch: {report:?} (stand-in killed at {killed_at:?}, reaped at {reaped_at:?})"
    );

    let (_, tracked) = n.node.run("conntrack", &["-L"]);
    let dns: Vec<&str> = tracked.lines().filter(|l| l.contains(&format!("dst={LOCAL_DNS} ")) && l.contains("dport=53 ")).collect();
    assert!(dns.is_empty(), "the pod's DNS to {LOCAL_DNS} was tracked:\n{}", dns.join("\n"));
    assert!(
        tracked.contains(&format!("dst={UPSTREAM_SVC} ")),
        "conntrack is active here (nodedns's queries to kube-dns are tracked):\n{tracked}"
    );
}

/// nodedns -> node-cache, with `-skipteardown`: exactly node-cache's rules and addresses
/// stay, and node-cache starting on the node adds nothing twice.
#[test]
fn with_skipteardown_nodedns_leaves_exactly_node_caches_setup_for_node_cache_to_adopt() {
    let n = Node::start("ncs2a");
    // On a kernel with dummy interfaces nodedns would create this itself.
    n.add_interface();
    let mut nodedns = n.node_cache(Invocation::Subcommand, &["-skipteardown"]);
    // Past its first check (every second here), which must find everything in place.
    std::thread::sleep(Duration::from_millis(1500));
    n.assert_each_rule_once("while nodedns runs");
    nodedns.stop();

    for rule in all_rules() {
        assert!(rule.run(&n.node, "-C"), "missing after SIGTERM: iptables {}", rule.command("-C").join(" "));
    }
    n.assert_each_rule_once("after nodedns stopped with -skipteardown");
    // Not even an empty chain of nodedns's own.
    let (_, everything) = n.node.run("iptables-save", &[]);
    assert!(!everything.contains("NODEDNS-NOTRACK") && !everything.contains("NODEDNS-ACCEPT"), "{everything}");
    n.assert_each_address_once("after nodedns stopped with -skipteardown");
    assert!(link_exists(&n.node, INTERFACE));

    n.node_cache_setup();
    n.assert_each_rule_once("after node-cache's setup");
    n.assert_each_address_once("after node-cache's setup");
}

/// nodedns -> node-cache, without `-skipteardown`: the node is left as node-cache expects
/// to find a clean one, every copy of a rule removed, the interface gone.
#[test]
fn without_skipteardown_nodedns_removes_every_copy_of_node_caches_rules_and_its_interface() {
    let n = Node::start("ncs2b");
    n.add_interface();
    let mut nodedns = n.node_cache(Invocation::ArgvZero, &[]);
    n.assert_each_rule_once("while nodedns runs");
    // Another program added a second copy of one rule.
    let doubled = &all_rules()[1];
    assert!(doubled.run(&n.node, "-I"));
    assert_eq!(copies(&saved_rules(&n.node), doubled), 2);
    nodedns.stop();

    let saved = saved_rules(&n.node);
    let left: Vec<_> = saved.iter().filter(|(_, l)| l.contains("NodeLocal DNS Cache") || l.contains("NODEDNS")).collect();
    assert!(left.is_empty(), "rules left after SIGTERM:\n{left:#?}");
    assert!(!link_exists(&n.node, INTERFACE), "{INTERFACE} left after SIGTERM");
    for ip in LOCAL_IPS {
        assert_eq!(address_count(&n.node, ip), 0, "{ip} left after SIGTERM");
    }
    assert!(
        listing(&saved).contains("--ctstate RELATED,ESTABLISHED -j ACCEPT"),
        "the node's own rules are untouched:\n{}",
        listing(&saved)
    );
}

/// A rule removed by someone else comes back at the next check, once, and the setup error
/// counter node-cache exports is there; the addresses, which went on `lo` (no dummy
/// interfaces here, and none of that name found), are removed at exit.
#[test]
fn a_removed_rule_is_back_within_two_sync_intervals_and_setup_errors_are_exported() {
    let n = Node::start("ncs3");
    let mut nodedns = n.node_cache(Invocation::Subcommand, &[]);
    n.assert_each_address_once("while nodedns runs");
    n.assert_each_rule_once("while nodedns runs");

    let removed = &all_rules()[7];
    assert!(removed.run(&n.node, "-D"), "iptables {}", removed.command("-D").join(" "));
    assert_eq!(copies(&saved_rules(&n.node), removed), 0);
    let deleted_at = Instant::now();
    wait_until(Duration::from_millis(2500), "the deleted rule is put back", || copies(&saved_rules(&n.node), removed) > 0);
    let back_after = deleted_at.elapsed();
    eprintln!("rule back after {back_after:?}");
    std::thread::sleep(Duration::from_millis(1200));
    n.assert_each_rule_once("after the repair and one more check");
    assert!(nodedns.log().contains("put back"), "{}", nodedns.log());

    let metrics = n.node.within(|| http_get(n.metrics, "/metrics")).expect("node-cache's metrics address");
    assert_eq!(metrics.0, 200);
    assert!(
        metrics.1.lines().any(|l| l == "coredns_nodecache_setup_errors_total{errortype=\"iptables\"} 0"),
        "{}",
        metrics.1.lines().filter(|l| l.contains("nodecache")).collect::<Vec<_>>().join("\n")
    );

    nodedns.stop();
    for ip in LOCAL_IPS {
        assert_eq!(address_count(&n.node, ip), 0, "{ip} left on lo after SIGTERM");
    }
    assert!(saved_rules(&n.node).iter().all(|(_, l)| !l.contains("NodeLocal DNS Cache")));
}

//! Fail open under load, measured: a node made of
//! network namespaces the test creates, where kube-proxy-style rules DNAT the kube-dns
//! Service IP to two kube-dns pods (real `dnsmasq` in front of a real `named` serving
//! cluster.local, as kube-dns's pods are), nodedns with `node.setup` serving that Service
//! IP itself, and a pod resolving it with glibc at a steady 300 lookups/s for 8 s
//! (tests/fixtures/lookup_load.c, built here with `cc`). nodedns is killed with `kill -9`
//! 3 s in, and every lookup is timed.
//!
//! The pod's resolv.conf is what `pod_resolv_conf` writes: `options ndots:5 timeout:1
//! attempts:1`, so a query that meets silence costs its lookup 1 s (glibc's own defaults
//! would be timeout:5 attempts:2); `kubernetes.default.svc.cluster.local` has four dots,
//! so each lookup walks the three search suffixes first: four A queries per lookup.
//!
//! With `node.rules: nftables` the NOTRACK rules are in a table owned by nodedns's netlink
//! socket, which the kernel deletes with the process: only the lookups in flight at the
//! kill (or sent in the instant before the table goes) are lost, and the pod is back on
//! kube-proxy's DNAT to the two kube-dns pods within a second. With `node.rules: iptables`
//! (documented as no fail-open) the rules and the address outlive the process, and every
//! lookup from the kill to the end of the run fails: the figures show the outage, and the
//! test asserts that they do, so that the comparison cannot silently become meaningless.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const KUBE_DNS: &str = "10.96.0.10";
/// The two kube-dns pods, each a dnsmasq forwarding to `NAMED`.
const KUBE_DNS_PODS: [&str; 2] = ["10.244.1.2", "10.244.1.3"];
const NAMED: &str = "10.244.2.2";
const POD: &str = "10.244.0.2";
const NAME: &str = "kubernetes.default.svc.cluster.local";

const RATE: u32 = 300;
const SECONDS: u32 = 8;
const KILL_AFTER_MS: f64 = 3000.0;
/// Enough threads to keep the rate while every lookup waits its 1 s timeout.
const THREADS: u32 = 600;

/// CLOCK_MONOTONIC in ns, the clock the load program reports on.
fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Builds the load program into `dir`.
fn build_load(dir: &Path) -> PathBuf {
    let bin = dir.join("lookup_load");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lookup_load.c");
    let built = Command::new("cc").args(["-O2", "-pthread", "-o"]).arg(&bin).arg(&source).status().unwrap();
    assert!(built.success(), "cc could not build {}", source.display());
    bin
}

/// A dnsmasq as kube-dns runs it in front of its DNS server: on `ip`:53 only, forwarding
/// everything to `NAMED`, reading neither /etc/resolv.conf nor /etc/hosts.
fn dnsmasq(node: &Netns, dir: &Path, ip: &str) -> Proc {
    let child = in_netns(Some(&node.name), "dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={ip}"),
            "--port=53",
            &format!("--server={NAMED}#53"),
            "--user=root",
        ])
        .arg(format!("--pid-file={}", dir.join(format!("dnsmasq-{ip}.pid")).display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("dnsmasq-{ip}.log"))).unwrap())
        .spawn()
        .expect("start dnsmasq");
    Proc { child, name: "dnsmasq" }
}

fn answers(ns: &Netns, server: &str) -> bool {
    ns.run("dig", &[&format!("@{server}"), "+short", "+time=1", "+tries=1", NAME]).1.contains("10.96.0.1")
}

fn pod_resolves(pod: &Netns) -> bool {
    let (ok, out) = pod.run("getent", &["ahostsv4", NAME]);
    ok && out.contains("10.96.0.1 ")
}

/// Conntrack's entries for the pod's DNS to the Service IP, per kube-dns pod it was DNAT-ed to.
fn dnat_flows(node: &Netns) -> [usize; 2] {
    let (_, out) = node.run("conntrack", &["-L"]);
    let flows: Vec<&str> = out.lines().filter(|l| l.contains(&format!("src={POD} dst={KUBE_DNS} ")) && l.contains("dport=53 ")).collect();
    KUBE_DNS_PODS.map(|p| flows.iter().filter(|f| f.contains(&format!("src={p} dst={POD} "))).count())
}

/// One lookup as the load program reports it, times in ms since its origin.
struct Lookup {
    due: f64,
    start: f64,
    duration: f64,
    ok: bool,
}

fn parse(out: &str) -> Vec<Lookup> {
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            assert_eq!(f.len(), 5, "a lookup line: {l:?}");
            let ms = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("{l:?}"));
            Lookup { due: ms(f[1]), start: ms(f[2]), duration: ms(f[3]), ok: f[4] == "ok" }
        })
        .collect()
}

/// What one run showed.
struct Figures {
    lookups: usize,
    failed: usize,
    over_1s: usize,
    slowest_ms: f64,
    /// How late the slowest-to-start lookup began after it was due (the load kept its rate).
    latest_start_ms: f64,
    before_kill_failed: usize,
    after_kill: usize,
    after_kill_failed: usize,
    after_kill_over_1s: usize,
    /// Lookups started more than 1 s after the kill that failed or took over 1 s.
    late_bad: usize,
    /// From the kill to the end of the first successful lookup started after it.
    recovered_ms: Option<f64>,
    /// The pod's DNS flows DNAT-ed to each kube-dns pod, after the run.
    flows: [usize; 2],
}

fn figures(lookups: &[Lookup], kill: f64, flows: [usize; 2]) -> Figures {
    let slow = |l: &Lookup| l.duration >= 1000.0;
    let after: Vec<&Lookup> = lookups.iter().filter(|l| l.start >= kill).collect();
    Figures {
        lookups: lookups.len(),
        failed: lookups.iter().filter(|l| !l.ok).count(),
        over_1s: lookups.iter().filter(|l| slow(l)).count(),
        slowest_ms: lookups.iter().map(|l| l.duration).fold(0.0, f64::max),
        latest_start_ms: lookups.iter().map(|l| l.start - l.due).fold(0.0, f64::max),
        before_kill_failed: lookups.iter().filter(|l| l.start < kill && !l.ok).count(),
        after_kill: after.len(),
        after_kill_failed: after.iter().filter(|l| !l.ok).count(),
        after_kill_over_1s: after.iter().filter(|l| slow(l)).count(),
        late_bad: after.iter().filter(|l| l.start > kill + 1000.0 && (!l.ok || slow(l))).count(),
        recovered_ms: after.iter().filter(|l| l.ok).map(|l| l.start + l.duration - kill).reduce(f64::min),
        flows,
    }
}

/// Runs the scenario with `backend` in a node of its own and returns its figures.
fn run(tag: &str, backend: &str, load: &Path) -> Figures {
    let (node, pod) = node_and_pod(tag, &pod_resolv_conf(KUBE_DNS));
    node.service(KUBE_DNS, &KUBE_DNS_PODS, 53);
    node.sh(&format!("ip addr replace {NAMED}/32 dev lo"));
    let dir = tempfile::tempdir().unwrap();
    let _named = Named::spawn_on(dir.path(), NAMED, 53, &[("cluster.local", cluster_zone())], Some(&node.name));
    wait_until(Duration::from_secs(15), "named answers", || answers(&node, NAMED));
    let _dnsmasq = KUBE_DNS_PODS.map(|ip| dnsmasq(&node, dir.path(), ip));
    for ip in KUBE_DNS_PODS {
        wait_until(Duration::from_secs(15), "dnsmasq answers", || answers(&node, ip));
    }
    wait_until(Duration::from_secs(15), "kube-dns answers the pod through its Service IP", || pod_resolves(&pod));

    let config = format!(
        "listen: [\"{KUBE_DNS}:53\"]\nupstreams: [\"{}:53\", \"{}:53\"]\nmetrics: \"off\"\n\
         server:\n  allow: [10.244.0.0/16, 127.0.0.0/8]\nkubernetes:\n  local_answers: false\n\
         upstream:\n  loop_probe_interval: 0s\nnode:\n  setup: true\n  check_interval: 200ms\n  rules: {backend}\n",
        KUBE_DNS_PODS[0], KUBE_DNS_PODS[1]
    );
    let mut nodedns = node.spawn_nodedns(dir.path(), &config);
    let log = dir.path().join("nodedns.log");
    wait_until(Duration::from_secs(15), "nodedns installs its rules", || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("node packet-filter rules installed")
    });
    // nodedns serves the pod: answers, and no conntrack entry for the pod's DNS.
    node.run("conntrack", &["-F"]);
    for _ in 0..3 {
        assert!(pod_resolves(&pod), "the pod resolves through nodedns ({backend})");
    }
    assert_eq!(dnat_flows(&node), [0, 0], "the pod's DNS was DNAT-ed, not NOTRACK'ed to nodedns ({backend})");

    let mut client = in_netns(Some(&pod.name), load.to_str().unwrap())
        .args([NAME, &RATE.to_string(), &SECONDS.to_string(), &THREADS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the load");
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let t0: i128 = first.strip_prefix("t0 ").and_then(|t| t.trim().parse().ok()).unwrap_or_else(|| panic!("no origin: {first:?}"));
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        rest
    });

    let kill_at = t0 + (KILL_AFTER_MS * 1e6) as i128;
    let waiting = Instant::now();
    while monotonic_ns() < kill_at {
        assert!(waiting.elapsed() < Duration::from_secs(10), "the kill time never came");
        std::thread::sleep(Duration::from_micros(200));
    }
    let killed = monotonic_ns();
    nodedns.child.kill().unwrap();
    nodedns.child.wait().unwrap();
    let kill = (killed - t0) as f64 / 1e6;

    let limit = Duration::from_secs(u64::from(SECONDS) + 30);
    let started = Instant::now();
    while client.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = client.kill();
            let _ = client.wait();
            panic!("the load did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = client.wait().unwrap();
    assert!(status.success(), "the load program: {status}");
    let lookups = parse(&reader.join().unwrap());
    assert_eq!(lookups.len(), (RATE * SECONDS) as usize, "one line per lookup");
    figures(&lookups, kill, dnat_flows(&node))
}

fn report(backend: &str, f: &Figures) {
    let recovered = f.recovered_ms.map_or("never within the run".to_string(), |ms| format!("{ms:.0} ms"));
    eprintln!(
        "{backend}: {} lookups ({RATE}/s for {SECONDS} s, kill -9 at {KILL_AFTER_MS:.0} ms): {} failed, {} over 1 s, slowest {:.0} ms; \
         before the kill {} failed; of the {} started after it {} failed and {} took over 1 s, {} of those started more than 1 s \
         after it failed or took over 1 s; first success after the kill {recovered}; the pod's DNS flows DNAT-ed to the two \
         kube-dns pods after the run: {} and {}; the load started at most {:.1} ms late",
        f.lookups,
        f.failed,
        f.over_1s,
        f.slowest_ms,
        f.before_kill_failed,
        f.after_kill,
        f.after_kill_failed,
        f.after_kill_over_1s,
        f.late_bad,
        f.flows[0],
        f.flows[1],
        f.latest_start_ms,
    );
}

#[test]
fn under_steady_glibc_load_a_kill_9_costs_pods_only_the_lookups_in_flight_with_nftables_and_an_outage_with_iptables() {
    for tool in ["nft", "iptables", "conntrack", "getent", "dig", "named", "dnsmasq", "cc"] {
        require(tool);
    }
    let build = tempfile::tempdir().unwrap();
    let load = build_load(build.path());

    let nft = run("ldn", "nftables", &load);
    report("nftables", &nft);
    assert_eq!(nft.late_bad, 0, "nftables: lookups started more than 1 s after the kill failed or took over 1 s");
    let recovered = nft.recovered_ms.expect("nftables: no lookup started after the kill succeeded");
    assert!(recovered < 1000.0, "nftables: fall-back to kube-dns took {recovered:.0} ms");
    assert!(nft.flows.iter().all(|&n| n > 0), "nftables: after the kill the pod's DNS goes through the DNAT to both kube-dns pods");

    let ipt = run("ldi", "iptables", &load);
    report("iptables", &ipt);
    assert!(
        ipt.after_kill_failed > 0 || ipt.after_kill_over_1s > 0,
        "iptables (no fail-open) showed no outage after kill -9: the comparison measures nothing"
    );
}

//! Shared fixtures for the integration tests: real servers (BIND `named`, the nodedns
//! binary) started on loopback with ports chosen per test, a DNS client built on
//! `hickory-proto`, and a programmable fake upstream for faults real servers cannot produce.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

/// Fails loudly when a tool the tests need is missing (CI installs them; no silent skips).
pub fn require(tool: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(found, "`{tool}` is required by this test: run `bash .ci/run` or install it (see README)");
}

/// A loopback port free for both UDP and TCP at the time of the call.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        // Spread tests over the range so parallel tests rarely race for one port.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + ((std::process::id() as usize * 7919 + n * 104_729) % 30000) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        unsafe_kill(self.child.id(), "TERM");
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// A BIND `named` authoritative for zones written by the test, on 127.0.0.1.
pub struct Named {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

/// The standard test zone: addresses, CNAME chains, a large RRset (90 A records, over
/// 1232 octets; BIND refuses RRsets over 100), a wildcard `*.load` so load tests can ask
/// endless distinct (uncached) names, SOA minimum 60 s.
pub fn test_zone(origin: &str) -> String {
    let mut z = format!(
        "$TTL 300\n@ IN SOA ns.{origin}. admin.{origin}. 1 3600 600 86400 60\n@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n\
         www IN A 192.0.2.1\nwww IN AAAA 2001:db8::1\nalias IN CNAME www\nchain1 IN CNAME chain2\nchain2 IN CNAME alias\n\
         short 5 IN A 192.0.2.5\n*.load IN A 10.9.9.9\n"
    );
    for i in 0..90 {
        z.push_str(&format!("big IN A 10.0.{}.{}\n", i / 250, i % 250 + 1));
    }
    for i in 0..200 {
        z.push_str(&format!("host{i} IN A 10.1.{}.{}\n", i / 250, i % 250 + 1));
    }
    z
}

/// What CoreDNS's kubernetes plugin serves, as zone data: every record form of the
/// specification for a few services, and CoreDNS's SOA.
pub fn cluster_zone() -> String {
    "$TTL 5\n@ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1700000000 7200 1800 86400 5\n@ IN NS ns.dns\n\
     ns.dns IN A 10.96.0.10\n\
     dns-version IN TXT \"1.1.0\"\n\
     kubernetes.default.svc IN A 10.96.0.1\n\
     kube-dns.kube-system.svc IN A 10.96.0.10\n\
     _dns._udp.kube-dns.kube-system.svc IN SRV 0 100 53 kube-dns.kube-system.svc\n\
     api.prod.svc IN A 10.96.5.5\n\
     _https._tcp.api.prod.svc IN SRV 0 100 443 api.prod.svc\n\
     nginx.prod.svc IN A 10.244.1.7\n\
     web-0.nginx.prod.svc IN A 10.244.1.7\n\
     10-244-1-8.nginx.prod.svc IN A 10.244.1.8\n\
     10-244-1-7.prod.pod IN A 10.244.1.7\n"
        .into()
}

impl Named {
    /// Starts `named` serving each (origin, zone text) pair; waits until it answers.
    pub fn start(zones: &[(&str, String)]) -> Named {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(dir.path(), port, zones, None);
        let named = Named { addr: loopback(port), dir, _proc: child };
        let probe = format!("{}.", zones[0].0);
        wait_until(Duration::from_secs(15), "named answers", || {
            query_udp(named.addr, &probe, RecordType::SOA, 0x20, Duration::from_millis(200))
                .is_some_and(|r| r.metadata.response_code == ResponseCode::NoError)
        });
        named
    }

    /// Writes the configuration and zone files into `dir` and starts `named` on
    /// 127.0.0.1:`port`, inside network namespace `netns` when given.
    pub fn spawn(dir: &Path, port: u16, zones: &[(&str, String)], netns: Option<&str>) -> Proc {
        Self::spawn_on(dir, "127.0.0.1", port, zones, netns)
    }

    /// Like [`Named::spawn`], listening on `ip` (or on each of a `; `-separated list).
    pub fn spawn_on(dir: &Path, ip: &str, port: u16, zones: &[(&str, String)], netns: Option<&str>) -> Proc {
        require("named");
        let d = dir.display();
        let mut conf = format!(
            "options {{ directory \"{d}\"; listen-on port {port} {{ {ip}; }}; listen-on-v6 {{ none; }}; recursion no;\n\
             pid-file \"{d}/named.pid\"; session-keyfile \"{d}/session.key\"; dnssec-validation no; querylog yes; }};\n\
             controls {{ }};\n"
        );
        for (origin, text) in zones {
            std::fs::write(dir.join(format!("{origin}.zone")), text).unwrap();
            conf.push_str(&format!("zone \"{origin}\" {{ type primary; file \"{d}/{origin}.zone\"; }};\n"));
        }
        std::fs::write(dir.join("named.conf"), conf).unwrap();
        let mut cmd = in_netns(netns, "named");
        let child = cmd
            .args(["-g", "-n", "1", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("named.stderr")).unwrap())
            .spawn()
            .expect("start named");
        Proc { child, name: "named" }
    }

    /// Stops the server, as an upstream that goes away.
    pub fn stop(&mut self) {
        self._proc.terminate(Duration::from_secs(5));
    }

    /// How many queries for `name` (lower-case, no trailing dot) and `qtype` named has logged.
    pub fn queries_for(&self, name: &str, qtype: &str) -> usize {
        named_queries_for(self.dir.path(), name, qtype)
    }

    /// Everything named has logged, queries included.
    pub fn log(&self) -> String {
        named_log(self.dir.path())
    }
}

/// The log of a `named` spawned in `dir`: with -g every category, queries included, goes
/// to stderr, which is not buffered.
pub fn named_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("named.stderr")).unwrap_or_default()
}

/// Counts the queries for `name`/`qtype` in the log of a `named` spawned in `dir`.
pub fn named_queries_for(dir: &Path, name: &str, qtype: &str) -> usize {
    let needle = format!("query: {name} IN {qtype} ").to_ascii_lowercase();
    named_log(dir).lines().filter(|l| l.to_ascii_lowercase().contains(&needle)).count()
}

/// A network namespace with `lo` up and a resolv.conf, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(purpose: &str, resolv_conf: &str) -> Netns {
        require("ip");
        let name = format!("nodedns-{purpose}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap().success();
        assert!(ok, "cannot create network namespace (run as root, as CI does)");
        assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success());
        // getaddrinfo's AI_ADDRCONFIG skips a family unless a non-loopback address of it is
        // configured; give the namespace one of each (documentation ranges, reachable only here).
        for addr in ["198.51.100.1/32", "2001:db8:ffff::1/128"] {
            assert!(Command::new("ip").args(["-n", &name, "addr", "add", addr, "dev", "lo"]).status().unwrap().success());
        }
        // `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc.
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(format!("{etc}/resolv.conf"), resolv_conf).unwrap();
        Netns { name }
    }

    pub fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = in_netns(Some(&self.name), program).args(args).stderr(Stdio::null()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has entered this namespace, so that the test's own
    /// sockets (clients, HTTP probes) live there.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
                    f()
                })
                .join()
                .unwrap()
        })
    }

    /// Runs a shell command in this namespace, which must succeed.
    pub fn sh(&self, cmd: &str) {
        let ok = Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", cmd]).status().unwrap().success();
        assert!(ok, "`{cmd}` failed in {} (the test needs root, as CI has)", self.name);
    }

    /// Starts nodedns in this namespace on 127.0.0.1:53 (metrics on 127.0.0.1:9253) with
    /// `config`, logging into `dir`, and waits until it is ready.
    pub fn nodedns(&self, dir: &Path, config: &str) -> Proc {
        let proc = self.run_nodedns(dir, &without_loop_probes(config), &["--listen", "127.0.0.1:53", "--metrics", "127.0.0.1:9253"]);
        let metrics = loopback(9253);
        self.within(|| {
            wait_until(Duration::from_secs(15), "nodedns ready in the namespace", || {
                http_get(metrics, "/ready").is_some_and(|(code, _)| code == 200)
            })
        });
        proc
    }

    /// Starts nodedns in this namespace with `config` as written (no flags, so node setup
    /// sees only the config's listen addresses), logging at info into `dir/nodedns.log`;
    /// does not wait for it.
    pub fn spawn_nodedns(&self, dir: &Path, config: &str) -> Proc {
        self.run_nodedns(dir, config, &[])
    }

    /// `nodedns run FLAGS --config dir/nodedns.yaml` in this namespace, logging into
    /// `dir/nodedns.log`.
    fn run_nodedns(&self, dir: &Path, config: &str, flags: &[&str]) -> Proc {
        let path = dir.join("nodedns.yaml");
        std::fs::write(&path, config).unwrap();
        let child = in_netns(Some(&self.name), env!("CARGO_BIN_EXE_nodedns"))
            .arg("run")
            .args(flags)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nodedns.log")).unwrap())
            .spawn()
            .expect("start nodedns");
        Proc { child, name: "nodedns" }
    }

    /// A Service as kube-proxy (iptables mode) builds it on a node: a ClusterIP `ip` that no
    /// interface holds, DNAT-ed for each new flow (a TCP connection, a UDP socket's first
    /// datagram) to one of `backends` at random, each equally likely. The backends are
    /// addresses on this namespace's `lo`: one with no server on it is a dead pod
    /// (connections refused), and [`Netns::silence`] makes one drop every packet.
    pub fn service(&self, ip: &str, backends: &[&str], port: u16) {
        require("iptables");
        for b in backends {
            self.sh(&format!("ip addr replace {b}/32 dev lo"));
        }
        self.sh(&format!("ip route add {ip}/32 dev lo"));
        // OUTPUT for the node's own clients, PREROUTING for pods' packets arriving on their
        // veth: kube-proxy enters its service chain from both.
        for chain in ["OUTPUT", "PREROUTING"] {
            for proto in ["udp", "tcp"] {
                for (i, b) in backends.iter().enumerate() {
                    // kube-proxy's chain: rule i catches 1/(n-i) of what the earlier ones left.
                    let left = backends.len() - i;
                    let pick =
                        if left > 1 { format!("-m statistic --mode random --probability {:.5}", 1.0 / left as f64) } else { String::new() };
                    self.sh(&format!(
                        "iptables -t nat -A {chain} -d {ip} -p {proto} --dport {port} {pick} -j DNAT --to-destination {b}:{port}"
                    ));
                }
            }
        }
    }

    /// Makes `backend` drop everything sent to it: no reset, no ICMP, SYNs unanswered (a
    /// pod whose node went away).
    pub fn silence(&self, backend: &str) {
        self.sh(&format!("iptables -A INPUT -d {backend} -j DROP"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {}", args.join(" "));
}

/// A pod's resolv.conf as the kubelet writes it for namespace `default`, with `nameserver`.
pub fn pod_resolv_conf(nameserver: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n"
    )
}

/// A node and a pod namespace joined by a veth pair: pod 10.244.0.2 <-> node 10.244.0.1,
/// the pod resolving with `pod_resolv_conf`. The node accepts replies by conntrack state,
/// as every real node's firewall does: that is what turns connection tracking on there.
pub fn node_and_pod(tag: &str, pod_resolv_conf: &str) -> (Netns, Netns) {
    let node = Netns::create(&format!("node-{tag}"), "nameserver 127.0.0.1\n");
    let pod = Netns::create(&format!("pod-{tag}"), pod_resolv_conf);
    let (vnode, vpod) = (format!("vn{tag}{}", std::process::id()), format!("vp{tag}{}", std::process::id()));
    ip(&["link", "add", &vnode, "netns", &node.name, "type", "veth", "peer", "name", &vpod, "netns", &pod.name]);
    ip(&["-n", &node.name, "addr", "add", "10.244.0.1/24", "dev", &vnode]);
    ip(&["-n", &pod.name, "addr", "add", "10.244.0.2/24", "dev", &vpod]);
    ip(&["-n", &node.name, "link", "set", &vnode, "up"]);
    ip(&["-n", &pod.name, "link", "set", &vpod, "up"]);
    ip(&["-n", &pod.name, "route", "add", "default", "via", "10.244.0.1"]);
    let (ok, _) = node.run("iptables", &["-A", "INPUT", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]);
    assert!(ok, "iptables in the node namespace");
    (node, pod)
}

/// A command, run inside network namespace `netns` when given.
pub fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// `config` with loop probing off unless it sets `upstream.loop_probe_interval` itself:
/// probes are upstream queries, which tests counting upstream queries must not see.
pub fn without_loop_probes(config: &str) -> String {
    if config.contains("loop_probe_interval") {
        return config.to_string();
    }
    let mut out = String::new();
    let mut placed = false;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line == "upstream:" {
            out.push_str("  loop_probe_interval: 0s\n");
            placed = true;
        }
    }
    if !placed {
        out.push_str("upstream:\n  loop_probe_interval: 0s\n");
    }
    out
}

/// A running nodedns binary.
pub struct Nodedns {
    pub dns: SocketAddr,
    pub metrics: SocketAddr,
    /// The configuration file it was started with.
    pub config: PathBuf,
    pub proc: Proc,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nodedns {
    /// Starts nodedns on fresh ports with the given extra arguments (e.g. `--upstream`).
    pub fn start(args: &[String]) -> Nodedns {
        Self::start_with_config(None, args)
    }

    /// Starts nodedns with `config` as its file. Unless the config has a `kubernetes:`
    /// section, the Kubernetes naming rules are off: they ask the upstreams for SOAs at
    /// start, which tests counting upstream queries must not see; for the same reason loop
    /// probing is off unless it sets `upstream.loop_probe_interval` ([`without_loop_probes`]).
    pub fn start_with_config(config: Option<&str>, args: &[String]) -> Nodedns {
        Self::start_with_env(config, args, &[])
    }

    /// Like [`Nodedns::start_with_config`], with extra environment variables.
    pub fn start_with_env(config: Option<&str>, args: &[String], env: &[(&str, String)]) -> Nodedns {
        Self::start_at(loopback(free_port()), loopback(free_port()), config, args, env)
    }

    /// Starts nodedns on the given DNS and metrics addresses (a successor taking over from
    /// a running one uses the same) and waits until `/ready` answers 200 there.
    pub fn start_at(dns: SocketAddr, metrics: SocketAddr, config: Option<&str>, args: &[String], env: &[(&str, String)]) -> Nodedns {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodedns"));
        cmd.arg("run").arg("--listen").arg(dns.to_string()).arg("--metrics").arg(metrics.to_string());
        let text = config.unwrap_or("");
        let text = if text.contains("kubernetes:") { text.to_string() } else { format!("{text}\nkubernetes:\n  local_answers: false\n") };
        let text = without_loop_probes(&text);
        let path = dir.path().join("nodedns.yaml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
        let stderr = dir.path().join("stderr.log");
        let child = cmd
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start nodedns");
        let mut nd = Nodedns { dns, metrics, config: path, proc: Proc { child, name: "nodedns" }, stderr, _dir: dir };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if http_get(nd.metrics, "/ready").is_some_and(|(code, _)| code == 200) {
                return nd;
            }
            if let Ok(Some(status)) = nd.proc.child.try_wait() {
                panic!("nodedns exited during start-up ({status}): {}", nd.log());
            }
            assert!(Instant::now() < until, "nodedns not ready in 10 s: {}", nd.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The value of the metric sample whose line starts with `prefix` (name plus labels).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http_get(self.metrics, "/metrics").expect("metrics endpoint");
        body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.metrics, "/metrics").expect("metrics endpoint").1
    }
}

/// Minimal HTTP/1.0 GET; returns status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

pub fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Builds a query octet by octet: hickory's encoder lower-cases names, and these tests
/// check that the client's case comes back.
pub fn build_query(name: &str, qtype: RecordType, id: u16, edns: bool) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&u16::from(qtype).to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

/// One UDP query with EDNS; `None` on timeout.
pub fn query_udp(server: SocketAddr, name: &str, qtype: RecordType, id: u16, timeout: Duration) -> Option<Message> {
    exchange_udp(server, &build_query(name, qtype, id, true), timeout).map(|b| Message::from_vec(&b).expect("parseable response"))
}

/// Sends raw octets over UDP and returns the raw response, `None` on timeout.
pub fn exchange_udp(server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    exchange_udp_from("127.0.0.1", server, packet, timeout)
}

/// Like [`exchange_udp`], from a socket bound to `source` (another loopback address).
pub fn exchange_udp_from(source: &str, server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((source, 0)).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sends raw octets as one query over a new TCP connection and returns the raw response,
/// `None` on timeout or a closed connection.
pub fn exchange_tcp(server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(packet);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Asserts the response answers our query: same ID, same question (case included).
pub fn assert_matches_query(resp: &Message, id: u16, name: &str) {
    assert_eq!(resp.metadata.id, id);
    assert_eq!(resp.metadata.message_type, MessageType::Response);
    assert_eq!(resp.queries[0].name().to_string(), name, "question case must be preserved");
}

pub fn rcode(resp: &Message) -> ResponseCode {
    resp.metadata.response_code
}

/// Runs `dig` and returns its output.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    require("dig");
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a [`FakeUpstream`] does with each query.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answer `name IN A 192.0.2.99` (TTL 300) after the delay.
    AnswerAfter(Duration),
    /// Never answer.
    Silent,
    /// Answer SERVFAIL at once.
    ServFail,
    /// Answer at once, with the question's name lower-cased (as some forwarders do).
    Lowercased,
    /// Octets that are not a DNS message, at once.
    Garbage,
    /// At once, the right answer plus an additional-section A record for `victim.example.`
    /// (an attempt to plant an answer for a name that was not asked).
    Poison,
    /// At once, two decoys from the right address (a wrong ID, then the right ID for another
    /// question, both answering 6.6.6.6); the real answer after the delay.
    DecoysThenAnswer(Duration),
}

/// An in-process UDP upstream for fault injection, counting the queries it receives.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub received: Arc<AtomicUsize>,
    behaviour: Arc<std::sync::Mutex<Behaviour>>,
}

impl FakeUpstream {
    pub fn start(behaviour: Behaviour) -> FakeUpstream {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        let behaviour = Arc::new(std::sync::Mutex::new(behaviour));
        let current = behaviour.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let behaviour = *current.lock().unwrap();
                match behaviour {
                    Behaviour::Silent => {}
                    Behaviour::ServFail => {
                        let _ = sock.send_to(&fake_servfail(&query), peer);
                    }
                    Behaviour::Lowercased => {
                        let mut lowered = query.clone();
                        let name = lowered.queries[0].name().to_lowercase();
                        lowered.queries[0].set_name(name);
                        let _ = sock.send_to(&fake_answer(&lowered), peer);
                    }
                    Behaviour::Garbage => {
                        let mut junk = fake_answer(&query);
                        junk.truncate(junk.len() - 3); // the answer's RDATA runs past the end
                        let _ = sock.send_to(&junk, peer);
                    }
                    Behaviour::Poison => {
                        use hickory_proto::rr::rdata::A;
                        use hickory_proto::rr::{Name, RData, Record};
                        let mut resp = Message::from_vec(&fake_answer(&query)).unwrap();
                        resp.additionals.push(Record::from_rdata(
                            Name::from_ascii("victim.example.").unwrap(),
                            86400,
                            RData::A(A::new(6, 6, 6, 6)),
                        ));
                        let _ = sock.send_to(&resp.to_vec().unwrap(), peer);
                    }
                    Behaviour::AnswerAfter(delay) => {
                        let sock = sock.try_clone().unwrap();
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            let _ = sock.send_to(&fake_answer(&query), peer);
                        });
                    }
                    Behaviour::DecoysThenAnswer(delay) => {
                        let mut wrong_id = query.clone();
                        wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
                        let _ = sock.send_to(&fake_answer_with(&wrong_id, [6, 6, 6, 6]), peer);
                        let mut wrong_question = query.clone();
                        wrong_question.queries[0].set_name(hickory_proto::rr::Name::from_ascii("other.example.").unwrap());
                        let _ = sock.send_to(&fake_answer_with(&wrong_question, [6, 6, 6, 6]), peer);
                        let sock = sock.try_clone().unwrap();
                        std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            let _ = sock.send_to(&fake_answer(&query), peer);
                        });
                    }
                }
            }
        });
        FakeUpstream { addr, received, behaviour }
    }

    /// Changes what the upstream does with the queries it receives from now on.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

fn fake_servfail(query: &Message) -> Vec<u8> {
    let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.response_code = ResponseCode::ServFail;
    resp.add_query(query.queries[0].clone());
    resp.to_vec().unwrap()
}

pub fn fake_answer(query: &Message) -> Vec<u8> {
    fake_answer_with(query, [192, 0, 2, 99])
}

fn fake_answer_with(query: &Message, addr: [u8; 4]) -> Vec<u8> {
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.recursion_desired = true;
    resp.metadata.recursion_available = true;
    let q = query.queries[0].clone();
    let name = q.name().clone();
    resp.add_query(q);
    resp.add_answer(Record::from_rdata(name, 300, RData::A(A::new(addr[0], addr[1], addr[2], addr[3]))));
    resp.to_vec().unwrap()
}

/// Lines of a file, for log assertions.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::File::open(path).map(|f| BufReader::new(f).lines().map_while(Result::ok).collect()).unwrap_or_default()
}

/// What dnsperf reported.
#[derive(Debug, Clone, Copy)]
pub struct PerfResult {
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    /// Responses with rcode NOERROR.
    pub noerror: u64,
    /// The slowest response's latency.
    pub max_latency: Duration,
}

/// Runs dnsperf against `server` with `names` (one `NAME TYPE` per line), extra flags added.
pub fn dnsperf(server: SocketAddr, names: &[String], args: &[&str]) -> PerfResult {
    dnsperf_in(None, server, names, args)
}

/// [`dnsperf`] inside network namespace `netns` when given.
pub fn dnsperf_in(netns: Option<&str>, server: SocketAddr, names: &[String], args: &[&str]) -> PerfResult {
    require("dnsperf");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries");
    std::fs::write(&file, names.iter().map(|n| format!("{n} A\n")).collect::<String>()).unwrap();
    let out = in_netns(netns, "dnsperf")
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string(), "-d"])
        .arg(&file)
        .args(args)
        .output()
        .expect("run dnsperf");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no `{label}` in dnsperf output:\n{text}"))
    };
    // `Response codes: NOERROR 290 (96.67%), SERVFAIL 10 (3.33%)`
    let noerror = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))
        .and_then(|l| l.split("NOERROR ").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // `Average Latency (s):  0.000543 (min 0.000102, max 0.003212)`
    let max_latency = text
        .lines()
        .find(|l| l.trim_start().starts_with("Average Latency"))
        .and_then(|l| l.split("max ").nth(1)?.trim_end_matches(')').trim().parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    PerfResult {
        completed: field("Queries completed") as u64,
        lost: field("Queries lost") as u64,
        qps: field("Queries per second"),
        noerror,
        max_latency,
    }
}

/// TCP connections a server on `port` holds open. `ss` reads sockets one by one, not as an
/// atomic snapshot, so a connection closing while it reads can show its server end still
/// established and its client end already in TIME-WAIT; such a connection is closed and is
/// not counted, and a count is confirmed by a second reading (the smaller one is kept): a
/// real excess persists, a torn read does not.
pub fn established_to(port: u16) -> usize {
    established_to_once(port).min(established_to_once(port))
}

fn established_to_once(port: u16) -> usize {
    require("ss");
    let out = Command::new("ss").args(["-Htna", &format!("( sport = :{port} or dport = :{port} )")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).filter(|r: &Vec<&str>| r.len() >= 5).collect();
    let server = format!("127.0.0.1:{port}");
    let closing_clients: Vec<&str> = rows.iter().filter(|r| r[0] != "ESTAB" && r[4] == server).map(|r| r[3]).collect();
    rows.iter().filter(|r| r[0] == "ESTAB" && r[3] == server && !closing_clients.contains(&r[4])).count()
}

/// Established TCP connections toward remote port `port` (i.e. opened by a client).
pub fn established_from(port: u16) -> usize {
    require("ss");
    let out = Command::new("ss").args(["-Htn", "state", "established", &format!("( dport = :{port} )")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

/// Distinct names under the test zone's wildcard: each is a cache miss.
pub fn load_names(prefix: &str, n: usize, origin: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.load.{origin}")).collect()
}

/// The objects of the node-local-dns manifest we ship (the addon's, with nodedns's image).
pub fn node_local_dns_manifest() -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/node-local-dns/nodelocaldns.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap()).collect()
}

/// The object of `kind` in the node-local-dns manifest.
pub fn node_local_dns(kind: &str) -> serde_yaml_ng::Value {
    node_local_dns_manifest().into_iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

/// The manifest's text with the operator's placeholders replaced as the addon's
/// documentation does with sed (kube-proxy in iptables mode).
pub fn operator_sed(text: &str, local_dns: &str, domain: &str, kube_dns: &str) -> String {
    text.replace("__PILLAR__LOCAL__DNS__", local_dns)
        .replace("__PILLAR__DNS__DOMAIN__", domain)
        .replace("__PILLAR__DNS__SERVER__", kube_dns)
}

/// A Kubernetes API server that knows namespaces only: lists them, streams watch events
/// the test pushes, and can be switched to failing every request.
pub struct FakeApiServer {
    pub addr: std::net::SocketAddr,
    watchers: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn namespace_json(name: &str, version: u32) -> String {
    format!(
        r#"{{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":{{"name":"{name}","resourceVersion":"{version}"}}}}"#
    )
}

impl FakeApiServer {
    pub fn start(namespaces: &[&str]) -> FakeApiServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let items: Vec<String> = namespaces.iter().map(|n| namespace_json(n, 1)).collect();
        let list = format!(
            r#"{{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadataList","metadata":{{"resourceVersion":"10"}},"items":[{}]}}"#,
            items.join(",")
        );
        let server = FakeApiServer { addr, watchers: Default::default(), failing: Default::default() };
        let (watchers, failing) = (server.watchers.clone(), server.failing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (list, watchers, failing) = (list.clone(), watchers.clone(), failing.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut out = stream;
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut header = String::new();
                        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                            header.clear();
                        }
                        if failing.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ = out.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            return;
                        }
                        if request_line.contains("watch=true") {
                            let _ =
                                out.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
                            watchers.lock().unwrap().push(out);
                            return;
                        }
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{list}",
                            list.len()
                        );
                    }
                });
            }
        });
        server
    }

    pub fn push(&self, kind: &str, name: &str, version: u32) {
        use std::io::Write;
        let event = format!("{{\"type\":\"{kind}\",\"object\":{}}}\n", namespace_json(name, version));
        for w in self.watchers.lock().unwrap().iter_mut() {
            let _ = write!(w, "{:x}\r\n{event}\r\n", event.len());
        }
    }

    /// Fails every request from now on and cuts the open watches.
    pub fn fail(&self) {
        self.failing.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.watchers.lock().unwrap().drain(..) {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn kubeconfig(&self, dir: &Path) -> String {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: test\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

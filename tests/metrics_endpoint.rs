//! The metrics endpoint: the CoreDNS series node-local-dns dashboards read, counted from
//! real traffic through a running nodedns to BIND `named` (sizes, cache requests and
//! evictions, health checks, build and process information); and the endpoint under
//! descriptor exhaustion: a process at its RLIMIT_NOFILE cannot accept, and the listening
//! socket stays readable, so an accept loop that retries at once spins a core and writes a
//! warning per try. It must back off, and serve again once descriptors are free.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const ZONE: &str = "metrics.test";
/// Room for eight answers at most: each weighs at least `max_bytes / max_entries`.
const TINY_CACHE: &str = "cache:\n  positive: { max_entries: 8, max_bytes: 64Ki }\n";

/// The one sample of metric `name` (`_bucket`, `_sum`, `_count` included) with all of
/// `labels` among its labels.
fn sample(nd: &Nodedns, name: &str, labels: &[&str]) -> f64 {
    let text = nd.metrics_text();
    let found: Vec<f64> = text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(found.len(), 1, "one {name} sample with {labels:?} in:\n{text}");
    found[0]
}

/// `labels` and one more.
fn with<'a>(labels: &[&'a str], more: &'a str) -> Vec<&'a str> {
    labels.iter().copied().chain([more]).collect()
}

#[test]
fn sizes_cache_requests_and_evictions_are_counted_as_coredns_counts_them() {
    require("named");
    let named = Named::start(&[(ZONE, test_zone(ZONE))]);
    let nd = Nodedns::start_with_config(Some(&format!("upstreams: [\"{}\"]\n{TINY_CACHE}", named.addr)), &[]);
    let server = format!("server=\"dns://{}\"", nd.dns);

    // Twenty names, each asked twice in a row over UDP, into a cache with room for eight.
    let (mut request_octets, mut response_octets, mut answered) = (0usize, 0usize, 0usize);
    for i in 0..20u16 {
        let query = build_query(&format!("host{i}.{ZONE}."), RecordType::A, i, true);
        for _ in 0..2 {
            let answer = exchange_udp(nd.dns, &query, Duration::from_secs(2)).expect("an answer");
            assert_eq!(answer[3] & 0xf, 0, "NOERROR for host{i}");
            request_octets += query.len();
            response_octets += answer.len();
            answered += 1;
        }
    }
    // And one over TCP: an answer of 90 records, over 1232 octets.
    let big = build_query(&format!("big.{ZONE}."), RecordType::A, 99, true);
    let big_answer = exchange_tcp(nd.dns, &big, Duration::from_secs(2)).expect("an answer over TCP");
    assert!(big_answer.len() > 1232, "{} octets", big_answer.len());

    let udp = [server.as_str(), r#"zone=".""#, r#"view="""#, r#"proto="udp""#];
    assert_eq!(sample(&nd, "coredns_dns_request_size_bytes_count", &udp), answered as f64);
    assert_eq!(sample(&nd, "coredns_dns_request_size_bytes_sum", &udp), request_octets as f64);
    assert_eq!(sample(&nd, "coredns_dns_response_size_bytes_count", &udp), answered as f64);
    assert_eq!(sample(&nd, "coredns_dns_response_size_bytes_sum", &udp), response_octets as f64);
    assert_eq!(
        sample(&nd, "coredns_dns_request_size_bytes_bucket", &with(&udp, r#"le="100.0""#)),
        answered as f64,
        "queries of ~40 octets"
    );
    assert_eq!(sample(&nd, "coredns_dns_request_size_bytes_bucket", &with(&udp, r#"le="0.0""#)), 0.0);
    let tcp = [server.as_str(), r#"proto="tcp""#];
    assert_eq!(sample(&nd, "coredns_dns_request_size_bytes_sum", &tcp), big.len() as f64);
    assert_eq!(sample(&nd, "coredns_dns_response_size_bytes_sum", &tcp), big_answer.len() as f64);
    assert_eq!(sample(&nd, "coredns_dns_response_size_bytes_bucket", &with(&tcp, r#"le="1023.0""#)), 0.0);
    assert_eq!(sample(&nd, "coredns_dns_response_size_bytes_bucket", &with(&tcp, r#"le="2047.0""#)), 1.0);

    let cache = [server.as_str(), r#"zones=".""#, r#"view="""#];
    // Every query went through the cache: a hit, or a miss asked upstream.
    let requests = sample(&nd, "coredns_cache_requests_total", &cache);
    assert_eq!(requests, (answered + 1) as f64);
    let success = with(&cache, r#"type="success""#);
    let hits = sample(&nd, "coredns_cache_hits_total", &success);
    let misses = sample(&nd, "coredns_cache_misses_total", &cache);
    assert_eq!(hits + misses, requests);
    assert!(hits >= 8.0, "{hits} hits: at least the names that found room");
    // Each miss stored a new answer; what the full cache does not hold was evicted for room.
    let entries = sample(&nd, "coredns_cache_entries", &success);
    assert_eq!(entries, 8.0);
    assert_eq!(sample(&nd, "coredns_cache_evictions_total", &success), misses - entries);
    assert_eq!(sample(&nd, "coredns_cache_evictions_total", &with(&cache, r#"type="denial""#)), 0.0);
}

#[test]
fn a_dead_upstream_counts_failed_health_checks_and_a_group_all_down_counts_broken() {
    require("named");
    let named = Named::start(&[(ZONE, test_zone(ZONE))]);
    // Nothing listens on the port once the socket is gone: each datagram sent there is
    // refused at once.
    let dead: SocketAddr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = format!(
        "upstreams: [\"{}\"]\nforward:\n  - zone: dead.test\n    upstreams: [\"udp://{dead}\"]\nupstream:\n  max_fails: 1\n  probe_interval: 100ms\n",
        named.addr
    );
    let nd = Nodedns::start_with_config(Some(&config), &[]);
    let to = format!("to=\"udp://{dead}\"");
    assert_eq!(sample(&nd, "coredns_forward_healthcheck_broken_total", &[]), 0.0);

    let failed = query_udp(nd.dns, "www.dead.test.", RecordType::A, 1, Duration::from_secs(3)).expect("an answer");
    assert_eq!(rcode(&failed), ResponseCode::ServFail);
    wait_until(Duration::from_secs(5), "failed health checks of the dead upstream", || {
        sample(&nd, "coredns_forward_healthcheck_failures_total", &[to.as_str()]) >= 2.0
    });
    let proxy = sample(&nd, "coredns_proxy_healthcheck_failures_total", &[r#"proxy_name="forward""#, to.as_str()]);
    assert!(proxy >= 2.0, "{proxy} under the proxy name");
    // The only upstream of its group is down: asked anyway, and counted.
    query_udp(nd.dns, "other.dead.test.", RecordType::A, 2, Duration::from_secs(3)).expect("an answer");
    assert_eq!(sample(&nd, "coredns_forward_healthcheck_broken_total", &[]), 1.0);

    // The live upstream is never probed, and its group never broken.
    let live = query_udp(nd.dns, &format!("www.{ZONE}."), RecordType::A, 3, Duration::from_secs(3)).expect("an answer");
    assert_eq!(rcode(&live), ResponseCode::NoError);
    assert_eq!(sample(&nd, "coredns_forward_healthcheck_failures_total", &[&format!("to=\"{}\"", named.addr)]), 0.0);
    assert_eq!(sample(&nd, "coredns_forward_healthcheck_broken_total", &[]), 1.0);
}

#[test]
fn build_info_is_one_and_process_metrics_describe_the_running_process() {
    let nd = Nodedns::start(&["--upstream".into(), "127.0.0.1:9".into()]);
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&nd, "coredns_build_info", &[version.as_str(), r#"goversion="rust1."#]), 1.0);
    let pid = nd.proc.child.id();
    let resident = sample(&nd, "process_resident_memory_bytes", &[]);
    assert!(resident > 1_000_000.0, "{resident} octets resident");
    assert!(sample(&nd, "process_virtual_memory_bytes", &[]) >= resident);
    let open = sample(&nd, "process_open_fds", &[]);
    // Read by nodedns itself while it serves the scrape: within a few of what is seen here.
    assert!((open - open_fds(pid) as f64).abs() < 8.0, "{open} open, {} seen from outside", open_fds(pid));
    assert!(sample(&nd, "process_max_fds", &[]) >= open);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = sample(&nd, "process_start_time_seconds", &[]);
    assert!(started <= now + 1.0 && started > now - 60.0, "started at {started}, now {now}");
    assert!(sample(&nd, "process_cpu_seconds_total", &[]) > 0.0, "start-up took some CPU");
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count() as u64).unwrap_or(0)
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields.get(11..13).map_or(0, |t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// Lowers the soft descriptor limit of running process `pid` to `soft`.
fn limit_fds(pid: u32, soft: u64) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on values owned here; a null new limit only reads.
    let read = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(read, 0, "read the descriptor limit of nodedns: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(set, 0, "lower the descriptor limit of nodedns: {}", std::io::Error::last_os_error());
}

#[test]
fn out_of_descriptors_the_metrics_endpoint_backs_off_and_then_serves_again() {
    // Nothing is asked over DNS, so the upstream is never used.
    let nd = Nodedns::start(&["--upstream".into(), "127.0.0.1:9".into()]);
    let pid = nd.proc.child.id();
    limit_fds(pid, open_fds(pid) + 8);

    // Held open (no request sent), each accepted one keeps a descriptor of nodedns; the
    // rest wait in the listen queue, accepted as soon as a descriptor is free.
    let held: Vec<TcpStream> = (0..40).filter_map(|_| TcpStream::connect_timeout(&nd.metrics, Duration::from_secs(1)).ok()).collect();
    assert_eq!(held.len(), 40, "the listen queue takes every connection");
    wait_until(Duration::from_secs(5), "an accept failure logged", || nd.log().contains("accept failed"));

    let (ticks, lines) = (cpu_ticks(pid), nd.log().lines().count());
    std::thread::sleep(Duration::from_secs(1));
    let (spent, logged) = (cpu_ticks(pid) - ticks, nd.log().lines().count() - lines);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    assert!(spent < hz / 5, "{spent} CPU ticks in one second of failing accepts (a spinning loop takes ~{hz})");
    assert!(logged < 20, "{logged} log lines in one second of failing accepts");

    drop(held);
    wait_until(Duration::from_secs(10), "metrics served again", || http_get(nd.metrics, "/metrics").is_some_and(|(code, _)| code == 200));
}

//! Restarts that do not start cold (a node cache must not become a single point of failure): the cache is written at shutdown and
//! read back at start, so the first queries after a restart are hits, not a herd upstream.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn hosts() -> Vec<String> {
    (0..50).map(|i| format!("host{i}.test.example.")).collect()
}

#[test]
fn a_restarted_cache_answers_the_hot_names_from_its_snapshot_without_asking_upstream() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    let config = format!("cache:\n  snapshot: {}\n", snapshot.display());
    let upstream = [format!("--upstream={}", named.addr)];

    let mut first = Nodedns::start_with_config(Some(&config), &upstream);
    let asked_before_restart = warm(&first, &named, &hosts());
    let status = first.proc.terminate(Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success(), "{}", first.log());
    assert!(first.log().contains("cache snapshot written"), "{}", first.log());

    let second = Nodedns::start_with_config(Some(&config), &upstream);
    assert!(second.log().contains("cache restored from snapshot"), "{}", second.log());
    for (i, name) in hosts().iter().enumerate() {
        let resp = query_udp(second.dns, name, RecordType::A, i as u16, Duration::from_secs(3));
        let resp = resp.unwrap_or_else(|| panic!("{name} not answered after the restart: {}", second.log()));
        assert_eq!(rcode(&resp), ResponseCode::NoError, "{name}");
        let ttl = resp.answers[0].ttl;
        assert!((1..=300).contains(&ttl), "{name}: TTL {ttl}, aged from 300");
    }
    assert_eq!(second.metric("coredns_cache_misses_total"), 0.0, "every first query after the restart was a hit");
    assert_eq!(upstream_queries(&named, &hosts()), asked_before_restart, "the upstream was not asked after the restart");
}

/// Fills `nd`'s cache with `names` and returns how many queries for them reached `named`
/// (one per name, more if nodedns retransmitted). Filling is not what the tests here prove:
/// a name is asked again, as a stub resolver would, if a loaded CI machine kept the
/// upstream's answer past nodedns's deadline.
fn warm(nd: &Nodedns, named: &Named, names: &[String]) -> usize {
    for (i, name) in names.iter().enumerate() {
        let answered = (0..3).any(|_| {
            query_udp(nd.dns, name, RecordType::A, i as u16, Duration::from_secs(3)).is_some_and(|r| rcode(&r) == ResponseCode::NoError)
        });
        assert!(answered, "{name} not answered while warming: {}\n{}", nd.log(), named.log());
    }
    let asked = upstream_queries(named, names);
    assert!(asked >= names.len(), "every name was fetched: {asked}");
    asked
}

fn upstream_queries(named: &Named, names: &[String]) -> usize {
    names.iter().map(|name| named.queries_for(name.trim_end_matches('.'), "A")).sum()
}

#[test]
fn a_damaged_snapshot_means_a_cold_start_with_a_warning_never_a_crash() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snapshot");
    std::fs::write(&snapshot, b"NDNSSNAP\0\0\0\x01 this is not what nodedns wrote").unwrap();
    let config = format!("cache:\n  snapshot: {}\n", snapshot.display());
    let nd = Nodedns::start_with_config(Some(&config), &[format!("--upstream={}", named.addr)]);
    assert!(nd.log().contains("cache snapshot unusable: cold start"), "{}", nd.log());
    let resp = query_udp(nd.dns, "www.test.example.", RecordType::A, 1, Duration::from_secs(3)).unwrap();
    assert_eq!(rcode(&resp), ResponseCode::NoError);
}

/// A rolling update (`maxSurge: 1`): the successor starts on the same addresses while the
/// first serves a steady load, takes over its sockets and cache, and the first exits.
#[test]
fn a_successor_takes_over_under_load_without_losing_a_query_and_starts_warm() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!("server:\n  handover_socket: {}\n", dir.path().join("handover.sock").display());
    let upstream = [format!("--upstream={}", named.addr)];
    let mut first = Nodedns::start_with_config(Some(&config), &upstream);
    let names: Vec<String> = (0..200).map(|i| format!("host{i}.test.example.")).collect();
    let asked_before_handover = warm(&first, &named, &names);

    let dns = first.dns;
    let hosts = names.clone();
    let load = std::thread::spawn(move || dnsperf(dns, &names, &["-Q", "3000", "-l", "20", "-t", "2"]));
    std::thread::sleep(Duration::from_secs(6));
    let second = Nodedns::start_at(first.dns, first.metrics, Some(&config), &upstream, &[]);
    wait_until(Duration::from_secs(10), "the successor took over", || {
        second.log().contains("took over from the running nodedns, with its cache")
    });
    wait_until(Duration::from_secs(10), "the first stopped reading", || first.log().contains("successor is serving"));
    std::thread::sleep(Duration::from_secs(2));
    let status = first.proc.terminate(Duration::from_secs(10)).expect("the first exits on SIGTERM");
    assert!(status.success(), "{}", first.log());

    let result = load.join().unwrap();
    eprintln!("handover under load: {result:?}; successor answered {} queries", second.metric("coredns_dns_requests_total"));
    assert!(result.completed > 50_000, "the load was too light to prove anything: {result:?}");
    assert_eq!(result.lost, 0, "queries lost in the handover: {result:?}");
    assert!(second.metric("coredns_dns_requests_total") > 10_000.0, "the successor served the load after the first exited");
    assert_eq!(second.metric("coredns_cache_misses_total"), 0.0, "the successor answered every name from the inherited cache");
    assert_eq!(upstream_queries(&named, &hosts), asked_before_handover, "nothing went upstream after the warm-up");
}

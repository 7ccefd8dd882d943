//! Hot reload: upstreams change when the configuration file changes (as a ConfigMap
//! update does, by a symlink swap) or on SIGHUP, without dropping the cache; a bad file is
//! rejected and the running configuration stays.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

fn answer(nd: &Nodedns, name: &str) -> String {
    let resp = query_udp(nd.dns, name, RecordType::A, 7, Duration::from_secs(3)).unwrap_or_else(|| panic!("no answer for {name}"));
    resp.answers.first().map(|r| r.data.to_string()).unwrap_or_default()
}

/// Publishes `text` as the configuration the way the kubelet updates a ConfigMap volume:
/// a new directory, then one atomic rename of the `..data` symlink.
fn publish(dir: &Path, version: u32, text: &str) {
    let data = dir.join(format!("v{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("nodedns.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

fn config(upstream: std::net::SocketAddr, extra: &str) -> String {
    format!("upstreams: [\"{upstream}\"]\nkubernetes:\n  local_answers: false\n{extra}")
}

#[test]
fn upstreams_follow_the_file_and_sighup_keeping_the_cache_and_a_bad_file_changes_nothing() {
    let zone = test_zone("test.example");
    let first = Named::start(&[("test.example", zone.clone())]);
    // The second upstream answers the same names with other addresses (10.1.x -> 10.2.x).
    let second = Named::start(&[("test.example", zone.replace(" 10.1.", " 10.2."))]);
    let volume = tempfile::tempdir().unwrap();
    publish(volume.path(), 1, &config(first.addr, ""));

    let nd = Nodedns::start_with_config(Some(&config(first.addr, "")), &[]);
    // Point the running process's file at the ConfigMap-style volume.
    std::fs::remove_file(&nd.config).unwrap();
    std::os::unix::fs::symlink(volume.path().join("..data/nodedns.yaml"), &nd.config).unwrap();
    assert_eq!(answer(&nd, "host5.test.example."), "10.1.0.6");

    let restart_only =
        "cache:\n  positive: { max_entries: 1000, max_bytes: 1Mi, min_ttl: 0s, max_ttl: 1h }\nserver:\n  max_tcp_clients: 100\n";
    publish(volume.path(), 2, &config(second.addr, restart_only));
    wait_until(Duration::from_secs(6), "the symlink swap is noticed", || nd.log().contains("configuration reloaded"));
    assert_eq!(answer(&nd, "host6.test.example."), "10.2.0.7", "new names go to the new upstream");
    assert_eq!(answer(&nd, "host5.test.example."), "10.1.0.6", "the cache was kept");
    let log = nd.log();
    // Each warning names its key as the `setting` field (coloured, so not matched as one string).
    let restarts: Vec<&str> = log.lines().filter(|l| l.contains("only after a restart") && l.contains("setting")).collect();
    for key in ["cache", "server.max_tcp_clients"] {
        assert!(restarts.iter().any(|l| l.contains(&format!("\"{key}\""))), "{key} needs a restart, and it says so by name:\n{log}");
    }
    assert_eq!(restarts.len(), 2, "the new upstream needs no restart:\n{log}");
    assert_eq!(nd.metric("nodedns_config_reloads_total{result=\"success\"}"), 1.0);

    publish(volume.path(), 3, "upstreams: [\"127.0.0.1:1\"]\nserver:\n  udp_paylaod: 1232\n");
    wait_until(Duration::from_secs(6), "the bad file is rejected", || nd.log().contains("configuration rejected"));
    assert!(nd.log().contains("server.udp_paylaod"), "the error names the key:\n{}", nd.log());
    assert_eq!(nd.metric("nodedns_config_last_reload_successful"), 0.0);
    assert_eq!(answer(&nd, "host7.test.example."), "10.2.0.8", "the running configuration stayed");

    // SIGHUP reloads at once, well within the file poll's two seconds.
    publish(volume.path(), 4, &config(first.addr, ""));
    let reloads = nd.log().matches("configuration reloaded").count();
    let sent = Instant::now();
    assert!(std::process::Command::new("kill").args(["-HUP", &nd.proc.child.id().to_string()]).status().unwrap().success());
    wait_until(Duration::from_secs(1), "SIGHUP reloads", || nd.log().matches("configuration reloaded").count() > reloads);
    eprintln!("SIGHUP reload took {:?}", sent.elapsed());
    assert_eq!(answer(&nd, "host8.test.example."), "10.1.0.9", "back on the first upstream");
    assert_eq!(nd.metric("nodedns_config_last_reload_successful"), 1.0);
}

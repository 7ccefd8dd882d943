//! The `hosts` blocks end to end: nodedns in front of a real `named`, answering listed names
//! from inline entries and a hosts file itself (authoritative, with the block's TTL), and
//! passing on what the blocks leave to the upstream.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const T: Duration = Duration::from_secs(3);

/// What the upstream has under the hosts blocks' zones: names the blocks do not list.
fn internal_zone() -> String {
    "$TTL 300\n@ IN SOA ns.example.internal. admin.example.internal. 1 3600 600 86400 60\n@ IN NS ns\nns IN A 127.0.0.1\n\
     up IN A 192.0.2.50\nup.open IN A 192.0.2.51\n"
        .into()
}

/// Two blocks: `example.internal` without fallthrough, inline entries and a file re-read
/// every second; `open.example.internal` passing what it does not list on.
fn config(upstream: std::net::SocketAddr, hosts_file: &Path) -> String {
    format!(
        "upstreams: [\"{upstream}\"]\n\
         hosts:\n\
         \x20 - zones: [example.internal]\n\
         \x20   entries:\n\
         \x20     - \"10.0.0.5 db.example.internal db  # db is outside the zone: left out\"\n\
         \x20     - \"fd00::5 DB.Example.Internal\"\n\
         \x20   file: {}\n\
         \x20   reload: 1s\n\
         \x20   ttl: 600s\n\
         \x20 - zones: [open.example.internal]\n\
         \x20   entries: [\"10.0.1.1 listed.open.example.internal\"]\n\
         \x20   fallthrough: [\".\"]\n",
        hosts_file.display()
    )
}

struct Setup {
    named: Named,
    nd: Nodedns,
    hosts_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let named = Named::start(&[("example.internal", internal_zone()), ("test.example", test_zone("test.example"))]);
    let dir = tempfile::tempdir().unwrap();
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, "# from the file\n10.0.0.7 filed.example.internal\t# a comment\nfd00::7 filed.example.internal\n").unwrap();
    let nd = Nodedns::start_with_config(Some(&config(named.addr, &hosts_file)), &[]);
    Setup { named, nd, hosts_file, _dir: dir }
}

fn ask(nd: &Nodedns, name: &str, qtype: RecordType) -> Message {
    query_udp(nd.dns, name, qtype, 0x4242, T).unwrap_or_else(|| panic!("no answer for {name} {qtype}: {}", nd.log()))
}

/// The answer records' data and TTLs.
fn records(r: &Message) -> Vec<(RData, u32)> {
    r.answers.iter().map(|rr| (rr.data.clone(), rr.ttl)).collect()
}

fn a(text: &str) -> RData {
    RData::A(text.parse().unwrap())
}

fn aaaa(text: &str) -> RData {
    RData::AAAA(text.parse().unwrap())
}

#[test]
fn inline_and_file_entries_answer_a_aaaa_and_ptr_authoritatively_with_the_ttl() {
    let s = setup();
    for (name, v4, v6) in [("db.example.internal.", "10.0.0.5", "fd00::5"), ("filed.example.internal.", "10.0.0.7", "fd00::7")] {
        let r = ask(&s.nd, name, RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative, "{name} A is authoritative");
        assert_eq!(records(&r), vec![(a(v4), 600)], "{name}");
        let r = ask(&s.nd, &name.to_uppercase(), RecordType::AAAA);
        assert!(r.metadata.authoritative);
        assert_eq!(records(&r), vec![(aaaa(v6), 600)], "{name} in capitals");
    }

    // dig's columns, blanks made single spaces.
    let reverse =
        |address: &str| dig(s.nd.dns, &["-x", address, "+noall", "+comments", "+answer"]).split_whitespace().collect::<Vec<_>>().join(" ");
    let out = reverse("10.0.0.5");
    assert!(out.contains("flags: qr aa rd ra"), "{out}");
    assert!(out.contains("5.0.0.10.in-addr.arpa. 600 IN PTR db.example.internal."), "{out}");
    let out = reverse("fd00::7");
    assert!(out.contains("flags: qr aa rd ra"), "{out}");
    assert!(
        out.contains("7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 600 IN PTR filed.example.internal."),
        "{out}"
    );
    assert_eq!(s.named.queries_for("db.example.internal", "A"), 0, "answered without the upstream");
    assert!(s.nd.metric("nodedns_local_answers_total{reason=\"hosts\"}") >= 6.0, "{}", s.nd.metrics_text());
}

#[test]
fn another_type_for_a_listed_name_is_nodata_and_unlisted_names_follow_fallthrough() {
    let s = setup();
    let r = ask(&s.nd, "db.example.internal.", RecordType::MX);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative && r.answers.is_empty(), "NODATA: {r:?}");

    // Without fallthrough, CoreDNS's answer: SERVFAIL, the upstream not asked.
    let r = ask(&s.nd, "up.example.internal.", RecordType::A);
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(s.named.queries_for("up.example.internal", "A"), 0);
    assert_eq!(s.nd.metric("nodedns_local_answers_total{reason=\"hosts_unlisted\"}"), 1.0);

    // With it, the upstream's answer.
    let r = ask(&s.nd, "listed.open.example.internal.", RecordType::A);
    assert_eq!(records(&r), vec![(a("10.0.1.1"), 3600)], "the default TTL");
    let r = ask(&s.nd, "up.open.example.internal.", RecordType::A);
    assert_eq!(records(&r), vec![(a("192.0.2.51"), 300)]);
    assert!(!r.metadata.authoritative, "a forwarded answer");
    assert_eq!(s.named.queries_for("up.open.example.internal", "A"), 1);

    // Outside every block's zones: forwarded.
    let r = ask(&s.nd, "www.test.example.", RecordType::A);
    assert_eq!(records(&r), vec![(a("192.0.2.1"), 300)]);
    assert_eq!(s.named.queries_for("www.test.example", "A"), 1);
}

#[test]
fn a_rewritten_file_answers_within_a_reload_interval_and_a_removed_one_keeps_its_entries() {
    let s = setup();
    assert_eq!(records(&ask(&s.nd, "filed.example.internal.", RecordType::A)), vec![(a("10.0.0.7"), 600)]);
    std::fs::write(&s.hosts_file, "10.0.0.77 filed.example.internal\n10.0.0.8 new.example.internal\n").unwrap();
    let written = Instant::now();
    wait_until(Duration::from_secs(2), "the rewritten file answers (reload 1s, plus 1s)", || {
        records(&ask(&s.nd, "filed.example.internal.", RecordType::A)) == vec![(a("10.0.0.77"), 600)]
    });
    assert!(written.elapsed() < Duration::from_secs(2));
    assert_eq!(records(&ask(&s.nd, "new.example.internal.", RecordType::A)), vec![(a("10.0.0.8"), 600)]);
    assert_eq!(ask(&s.nd, "filed.example.internal.", RecordType::AAAA).answers.len(), 0, "fd00::7 left the file");

    std::fs::remove_file(&s.hosts_file).unwrap();
    wait_until(Duration::from_secs(3), "the warning about the file", || s.nd.log().contains("hosts file cannot be read"));
    assert_eq!(records(&ask(&s.nd, "new.example.internal.", RecordType::A)), vec![(a("10.0.0.8"), 600)], "the entries last read stay");
    assert_eq!(records(&ask(&s.nd, "db.example.internal.", RecordType::A)), vec![(a("10.0.0.5"), 600)]);
}

#[test]
fn a_configuration_reload_replaces_the_blocks() {
    let s = setup();
    assert_eq!(records(&ask(&s.nd, "db.example.internal.", RecordType::A)), vec![(a("10.0.0.5"), 600)]);
    let changed = config(s.named.addr, &s.hosts_file).replace("10.0.0.5 db", "10.0.0.55 db");
    std::fs::write(&s.nd.config, format!("{changed}\nkubernetes:\n  local_answers: false\n")).unwrap();
    wait_until(Duration::from_secs(8), "the reloaded entries answer", || {
        records(&ask(&s.nd, "db.example.internal.", RecordType::A)) == vec![(a("10.0.0.55"), 600)]
    });
    assert_eq!(records(&ask(&s.nd, "filed.example.internal.", RecordType::A)), vec![(a("10.0.0.7"), 600)], "the file read again");

    let without = format!("upstreams: [\"{}\"]\nkubernetes:\n  local_answers: false\n", s.named.addr);
    std::fs::write(&s.nd.config, without).unwrap();
    wait_until(Duration::from_secs(8), "without hosts blocks the upstream answers", || {
        ask(&s.nd, "up.example.internal.", RecordType::A).answers.len() == 1
    });
}

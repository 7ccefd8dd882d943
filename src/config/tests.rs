use super::*;

fn error_of(text: &str) -> String {
    parse_file("nodedns.yaml", text).unwrap_err().to_string()
}

#[test]
fn empty_file_means_defaults() {
    let c = parse_file("f", "").unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:1053".parse().unwrap()]);
    assert_eq!(c.server.udp_payload, 1232);
    assert_eq!(c.server.query_deadline, Duration::from_secs(2));
}

#[test]
fn full_file_parses() {
    let c = parse_file(
        "f",
        "listen: [\"127.0.0.1:53\", \"[::1]:53\", 169.254.20.10]\nupstreams: [10.96.0.10:53]\nforward:\n  - zone: cluster.local\n    upstreams: [10.96.0.10:53, 10.96.0.11]\ncache:\n  positive: {max_entries: 1000, max_bytes: 8Mi, min_ttl: 5s, max_ttl: 1h}\n  servfail_ttl: 2s\nserver:\n  query_deadline: 1500ms\nlog:\n  queries: {enabled: true, sample: 0.25, slow: 100ms}\n  format: json\n",
    )
    .unwrap();
    assert_eq!(c.listen.len(), 3);
    assert_eq!(c.listen[2], "169.254.20.10:53".parse().unwrap());
    assert_eq!(c.forward[0].zone.to_string(), "cluster.local.");
    assert_eq!(c.forward[0].upstreams[1].to_string(), "10.96.0.11:53");
    assert_eq!(c.cache.positive.max_bytes, 8 << 20);
    assert_eq!(c.cache.positive.min_ttl, Duration::from_secs(5));
    assert_eq!(c.cache.negative.max_ttl, Duration::from_secs(1800), "untouched half keeps defaults");
    assert_eq!(c.server.query_deadline, Duration::from_millis(1500));
    assert!(c.log.queries.enabled && c.log.queries.sample == 0.25 && c.log.queries.slow == Duration::from_millis(100));
}

#[test]
fn a_cache_half_given_in_part_keeps_its_own_defaults_for_the_rest() {
    let c = parse_file("f", "cache:\n  positive: {max_entries: 500000}\n  negative: {max_ttl: 30s}\n").unwrap();
    assert_eq!((c.cache.positive.max_entries, c.cache.positive.max_bytes), (500_000, 128 << 20));
    assert_eq!(c.cache.positive.max_ttl, Duration::from_secs(3600));
    assert_eq!((c.cache.negative.max_entries, c.cache.negative.max_bytes), (100_000, 32 << 20));
    assert_eq!(c.cache.negative.max_ttl, Duration::from_secs(30));
}

/// The documented example is the reference users copy from: it must parse as shown.
#[test]
fn the_example_in_config_md_parses() {
    let doc = include_str!("../../docs/CONFIG.md");
    let yaml = doc.split("```yaml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("docs/CONFIG.md has a yaml example");
    let c = parse_file("docs/CONFIG.md", yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.forward.len(), 2);
    assert_eq!(c.kubernetes.namespaces, crate::kubernetes::NamespaceSource::Unknown);
    assert!(c.kubernetes.search_suffixes.is_none());
    assert_eq!(c.cache.zones[0].negative.max_ttl, Some(Duration::from_secs(5)));
}

#[test]
fn unknown_key_is_named_with_file_and_line() {
    let e = error_of("listen: [127.0.0.1:53]\ncache:\n  positive:\n    max_entrys: 5\n");
    assert!(e.starts_with("nodedns.yaml:4: cache.positive"), "{e}");
    assert!(e.contains("unknown field `max_entrys`"), "{e}");
}

#[test]
fn bad_address_is_named_with_line_and_key() {
    let e = error_of("listen: [127.0.0.1:53]\nupstreams:\n  - 10.0.0.1:53\n  - not-an-address\n");
    assert!(e.starts_with("nodedns.yaml:4: upstreams[1]"), "{e}");
    assert!(e.contains("not-an-address"), "{e}");
}

#[test]
fn bad_duration_and_size_are_named() {
    let e = error_of("server:\n  query_deadline: soon\n");
    assert!(e.starts_with("nodedns.yaml:2: server.query_deadline"), "{e}");
    let e = error_of("cache:\n  negative: {max_entries: 1, max_bytes: 12Qb, min_ttl: 0s, max_ttl: 1s}\n");
    assert!(e.contains("cache.negative"), "{e}");
    assert!(e.contains("unknown size unit"), "{e}");
}

#[test]
fn impossible_values_are_rejected_at_their_key() {
    let e = error_of("listen: [127.0.0.1:53]\ncache:\n  positive: {max_entries: 10, max_bytes: 1Mi, min_ttl: 1h, max_ttl: 1m}\n");
    assert_eq!(e, "nodedns.yaml:3: cache.positive.min_ttl: is larger than max_ttl");
    let e = error_of("server:\n  udp_payload: 100\n");
    assert_eq!(e, "nodedns.yaml:2: server.udp_payload: must be between 512 (RFC 6891) and 4096");
    let e = error_of("server:\n  udp_payload: 4097\n");
    assert_eq!(e, "nodedns.yaml:2: server.udp_payload: must be between 512 (RFC 6891) and 4096");
    let e = error_of("cache:\n  prefetch: {min_hits: 300, window_percent: 10}\n");
    assert_eq!(e, "nodedns.yaml:2: cache.prefetch.min_hits: must be at most 255");
    let e = error_of("forward:\n  - zone: a..example\n    upstreams: [10.0.0.1]\n");
    assert!(e.starts_with("nodedns.yaml:2: forward[0].zone"), "{e}");
    let e = error_of("upstream:\n  loop_probe_interval: 100ms\n");
    assert_eq!(e, "nodedns.yaml:2: upstream.loop_probe_interval: must be 0 (off) or at least 1s");
}

#[test]
fn loop_probing_is_on_every_30s_by_default_and_0_turns_it_off() {
    let build = |text: &str| Settings::build(parse_file("f", text).unwrap(), Overrides::default()).unwrap().reloadable.forward;
    assert_eq!(build("upstreams: [10.0.0.1]\n").loop_probe_interval, Duration::from_secs(30));
    assert_eq!(build("upstreams: [10.0.0.1]\nupstream:\n  loop_probe_interval: 0s\n").loop_probe_interval, Duration::ZERO);
}

#[test]
fn forwarding_to_our_own_listen_address_is_refused() {
    let file = parse_file("f", "listen: [\"0.0.0.0:53\"]\nupstreams: [127.0.0.1:53]\n").unwrap();
    let e = Settings::build(file, Overrides::default()).unwrap_err().to_string();
    assert!(e.contains("would loop"), "{e}");
    let file = parse_file("f", "listen: [\"127.0.0.1:1053\"]\nupstreams: [127.0.0.1:53]\n").unwrap();
    assert!(Settings::build(file, Overrides::default()).is_ok());
}

#[test]
fn command_line_overrides_the_file() {
    let file = parse_file("f", "listen: [127.0.0.1:53]\nupstreams: [10.0.0.1]\n").unwrap();
    let o = Overrides {
        listen: vec!["127.0.0.2:53".parse().unwrap()],
        upstreams: vec!["10.0.0.2:53".parse().unwrap()],
        forward: vec![("cluster.local".parse().unwrap(), vec!["tcp://10.0.0.3:53".parse().unwrap()])],
        metrics: None,
    };
    let s = Settings::build(file, o).unwrap();
    assert_eq!(s.restart_only.listen, vec!["127.0.0.2:53".parse().unwrap()]);
    let root = s.reloadable.router.route(crate::wire::name::LowerName::ROOT).unwrap();
    assert_eq!(root.servers, vec!["10.0.0.2:53".parse().unwrap()]);
    assert_eq!(s.reloadable.router.groups().len(), 2);
}

fn built(yaml: &str) -> Settings {
    Settings::build(parse_file("f", yaml).unwrap_or_else(|e| panic!("{e}")), Overrides::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cache_zones_take_what_they_leave_out_from_the_global_bounds() {
    let s = built(
        "upstreams: [10.0.0.1]\ncache:\n  positive: {min_ttl: 2s}\n  servfail_ttl: 3s\n  zones:\n    - zone: Cluster.Local.\n      positive: { min_ttl: 0s, max_ttl: 30s }\n      negative: { max_ttl: 5s }\n    - zone: example.org\n      servfail_ttl: 1s\n",
    );
    let c = &s.restart_only.cache;
    assert!(built("upstreams: [10.0.0.1]\n").restart_only.cache.zones.is_empty(), "no zones unless configured");
    let cluster = ZoneTtl {
        positive_min_ttl: Some(0),
        positive_max_ttl: Some(30),
        negative_max_ttl: Some(5),
        ..ZoneTtl::new(crate::wire::name::from_text("cluster.local").unwrap())
    };
    let example = ZoneTtl { servfail_ttl: Some(1), ..ZoneTtl::new(crate::wire::name::from_text("example.org").unwrap()) };
    assert_eq!(c.zones, vec![cluster.clone(), example]);
    let global = &c.ttl;
    assert_eq!(
        cluster.over(global),
        TtlPolicy { positive_min_ttl: 0, positive_max_ttl: 30, negative_max_ttl: 5, ..global.clone() },
        "negative.min_ttl and servfail_ttl stay global"
    );
    assert_eq!((global.positive_min_ttl, global.servfail_ttl), (2, 3));
}

#[test]
fn cache_zone_errors_name_the_zone_entry_and_line() {
    let head = "cache:\n  zones:\n    - zone: cluster.local\n      positive: {max_ttl: 30s}\n";
    let e = error_of(&format!("{head}    - zone: example.org\n      negative:\n        min_ttl: 1m\n        max_ttl: 5s\n"));
    assert_eq!(e, "nodedns.yaml:7: cache.zones[1].negative.min_ttl: is larger than max_ttl");
    let e = error_of("cache:\n  positive: {min_ttl: 1m}\n  zones:\n    - zone: cluster.local\n      positive: {max_ttl: 30s}\n");
    assert_eq!(
        e,
        "nodedns.yaml:5: cache.zones[0].positive.max_ttl: is smaller than min_ttl (cache.positive.min_ttl, not set for the zone)"
    );
    let e = error_of(&format!("{head}    - zone: example.org\n    - zone: Cluster.Local.\n      negative: {{max_ttl: 5s}}\n"));
    assert_eq!(e, "nodedns.yaml:6: cache.zones[2].zone: `cluster.local.` is already given at cache.zones[0]");
    let e = error_of(&format!("{head}      denial: {{max_ttl: 5s}}\n"));
    assert!(e.starts_with("nodedns.yaml:") && e.contains("cache.zones[0]") && e.contains("unknown field `denial`"), "{e}");
    let e = error_of(&format!("{head}    - zone: example.org\n      positive: {{max_ttl: soon}}\n"));
    assert!(e.starts_with("nodedns.yaml:6: cache.zones[1].positive.max_ttl: `soon` is not a duration"), "{e}");
    let e = error_of("cache:\n  zones:\n    - zone: a..example\n");
    assert!(e.starts_with("nodedns.yaml:3: cache.zones[0].zone"), "{e}");
    let e = error_of("cache:\n  zones:\n    - positive: {max_ttl: 30s}\n");
    assert!(e.contains("cache.zones[0]") && e.contains("missing field `zone`"), "{e}");
}

#[test]
fn a_hosts_block_takes_coredns_defaults_and_a_bad_entry_is_named_by_its_line() {
    let c = parse_file("f", "hosts:\n  - entries: [\"10.0.0.5 db.example.internal db  # primary\", \"# a comment\"]\n").unwrap();
    let b = &c.hosts[0];
    assert_eq!((b.zones.clone(), b.entries.len(), b.file.as_str()), (vec![Zone::root()], 1, ""));
    assert_eq!((b.reload, b.ttl, b.reverse, b.fallthrough.len()), (Duration::from_secs(5), Duration::from_secs(3600), true, 0));
    assert_eq!(b.entries[0].names.len(), 2);

    let e = error_of(
        "upstreams: [10.0.0.1]\nhosts:\n  - zones: [example.internal]\n    entries:\n      - \"10.0.0.5 db.example.internal\"\n      - \"10.0.0.300 web.example.internal\"\n",
    );
    assert!(e.starts_with("nodedns.yaml:6: hosts[0].entries[1]: "), "{e}");
    assert!(e.contains("`10.0.0.300` is not an IPv4 or IPv6 address"), "{e}");
    let e = error_of("hosts:\n  - file: /etc/hosts\n  - file: /etc/hosts\n    ttl: 0s\n");
    assert!(e.starts_with("nodedns.yaml:4: hosts[1].ttl: must be between 1s and 65535s"), "{e}");
    let e = error_of("hosts:\n  - zones: []\n    file: /etc/hosts\n");
    assert!(e.starts_with("nodedns.yaml:2: hosts[0].zones: needs at least one zone"), "{e}");
    let e = error_of("hosts:\n  - reverse: false\n");
    assert!(e.contains("hosts[0]: needs entries or a file"), "{e}");
}

#[test]
fn environment_variables_are_expanded_and_an_unset_one_is_named_with_its_line() {
    let env = |name: &str| (name == "KUBE_DNS_UPSTREAM_SERVICE_HOST").then(|| "10.96.0.11".to_string());
    let text =
        "listen: [127.0.0.1:1053]\nforward:\n  - zone: cluster.local\n    upstreams: [\"tcp://${KUBE_DNS_UPSTREAM_SERVICE_HOST}:53\"]\n";
    let expanded = expand_env("f", text, &env).unwrap();
    assert!(expanded.contains("tcp://10.96.0.11:53"), "{expanded}");
    assert_eq!(parse_file("f", &expanded).unwrap().forward[0].upstreams[0].to_string(), "tcp://10.96.0.11:53");
    assert_eq!(expand_env("f", "a: ${lower} $HOME ${}\n", &env).unwrap(), "a: ${lower} $HOME ${}\n", "only ${{NAME}} in capitals");
    let e = expand_env("f", "listen: [127.0.0.1:1053]\nupstreams: [\"${NOPE}\"]\n", &env).unwrap_err();
    assert_eq!(e.to_string(), "f:2: ${NOPE}: environment variable not set");
}

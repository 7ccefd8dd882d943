use super::*;
use serde::Deserialize;

/// The Corefile of the node-local-dns ConfigMap we ship (the addon's), as a template.
pub fn node_local_dns_template() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/node-local-dns/nodelocaldns.yaml")).expect("manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| serde_yaml_ng::Value::deserialize(doc).ok())
        .find(|doc| doc["kind"] == "ConfigMap")
        .and_then(|cm| cm["data"]["Corefile"].as_str().map(str::to_string))
        .expect("the ConfigMap's Corefile")
}

/// The node-local-dns Corefile after the operator's sed and node-cache's substitution.
fn official() -> String {
    node_local_dns_template()
        .replace("__PILLAR__DNS__DOMAIN__", "cluster.local")
        .replace("__PILLAR__LOCAL__DNS__", "169.254.20.10")
        .replace("__PILLAR__DNS__SERVER__", "10.96.0.10")
        .replace("__PILLAR__CLUSTER__DNS__", "10.96.0.11")
        .replace("__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf")
}

fn imported(text: &str) -> String {
    let cx = Context { env: &|_| None, default_port: 53, read_file: &|_| Ok("nameserver 192.0.2.53\n".into()) };
    import("Corefile", text, &cx).unwrap_or_else(|e| panic!("{e}")).yaml
}

/// The YAML an import prints is a valid configuration.
fn loads(yaml: &str) -> crate::config::FileConfig {
    crate::config::parse_file("imported", yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn refused(text: &str) -> String {
    let cx = Context { env: &|_| None, default_port: 53, read_file: &|_| Ok(String::new()) };
    import("Corefile", text, &cx).unwrap_err().to_string()
}

fn line_with<'a>(yaml: &'a str, needle: &str) -> &'a str {
    yaml.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with `{needle}` in\n{yaml}"))
}

#[test]
fn the_official_corefile_maps_onto_listen_routes_cache_bounds_and_http() {
    let yaml = imported(&official());
    assert!(line_with(&yaml, "listen:").starts_with(r#"listen: ["10.96.0.10:53", "169.254.20.10:53"]"#), "{yaml}");
    assert!(line_with(&yaml, "metrics:").starts_with(r#"metrics: "0.0.0.0:9253""#));
    assert!(line_with(&yaml, "169.254.20.10:8080").contains("health"));
    assert!(line_with(&yaml, "resolv_conf:").starts_with(r#"resolv_conf: "/etc/resolv.conf""#));
    for zone in ["cluster.local.", "in-addr.arpa.", "ip6.arpa."] {
        let at = yaml.find(&format!("  - zone: \"{zone}\"")).unwrap_or_else(|| panic!("{zone} routed in\n{yaml}"));
        assert!(yaml[at..].lines().nth(1).unwrap().contains(r#"upstreams: ["tcp://10.96.0.11:53"]"#), "{zone} force_tcp");
    }
    let cluster = yaml.find("    - zone: \"cluster.local.\"").expect("cluster.local has cache bounds");
    let mut bounds = yaml[cluster..].lines().skip(1);
    assert!(bounds.next().unwrap().contains("positive: {min_ttl: 5s, max_ttl: 30s}"));
    assert!(bounds.next().unwrap().contains("negative: {min_ttl: 5s, max_ttl: 5s}"));
    assert!(line_with(&yaml, "  positive: {max_entries: 39936, min_ttl: 5s, max_ttl: 30s}").contains("summed"));
    assert!(line_with(&yaml, "serve_stale").contains("max_age: 0s"));
    assert!(line_with(&yaml, "prefetch").contains("min_hits: 0"));
    assert!(line_with(&yaml, "max_fails:").starts_with("  max_fails: 2"));
    assert!(line_with(&yaml, "policy:").starts_with("  policy: random"));
    assert!(line_with(&yaml, "idle_timeout").contains("10s"));
    assert!(line_with(&yaml, "# loop (line 8, 20, 31, 42)").contains("probes"));
    assert!(line_with(&yaml, "# Clients:").contains("server.allow"));
    let config = loads(&yaml);
    assert_eq!(config.cache.zones.len(), 3);
    assert_eq!(config.http_listen, ["169.254.20.10:8080".parse().unwrap()]);
}

#[test]
fn forward_options_become_upstream_forms_and_global_settings_with_their_conflicts_named() {
    let yaml = imported(
        ".:53 {\n forward . dns://192.0.2.1 tls://192.0.2.2 [2001:db8::1]:5353 {\n  tls_servername dns.example\n  prefer_udp\n  max_fails 4\n  policy sequential\n  health_check 2s\n  expire 30s\n  except corp.example\n  max_concurrent 500\n }\n}\nexample.org {\n forward . 192.0.2.9 {\n  max_fails 1\n }\n}\n",
    );
    assert!(line_with(&yaml, "upstreams:").contains(r#"["192.0.2.1:53", "tls://192.0.2.2#dns.example", "[2001:db8::1]:5353"]"#), "{yaml}");
    let max_fails = line_with(&yaml, "max_fails:");
    assert!(max_fails.starts_with("  max_fails: 4") && max_fails.contains("line 15 asks for 1"), "{max_fails}");
    assert!(line_with(&yaml, "upstreams:").contains("prefer_udp: nodedns always asks over UDP first"));
    assert!(line_with(&yaml, "probe_interval").contains("2s"));
    assert!(line_with(&yaml, "policy").contains("sequential"));
    assert!(line_with(&yaml, "max_inflight_misses: 500").contains("REFUSED"));
    let corp = yaml.find("zone: \"corp.example.\"").expect("except becomes a route");
    assert!(yaml[corp..].lines().nth(1).unwrap().contains("upstreams: []"));
    loads(&yaml);
}

#[test]
fn cache_forms_map_to_bounds_prefetch_and_serve_stale() {
    let yaml = imported(
        ".:53 {\n cache 60 {\n  prefetch 3 1m 20%\n  serve_stale 2h verify\n  servfail 2s\n }\n forward . 192.0.2.1\n}\nslow.example {\n forward . 192.0.2.2\n}\n",
    );
    assert!(line_with(&yaml, "  positive: {").contains("min_ttl: 5s, max_ttl: 60s"), "{yaml}");
    assert!(line_with(&yaml, "  negative: {").contains("max_ttl: 60s"));
    assert!(line_with(&yaml, "prefetch:").contains("{min_hits: 3, window_percent: 20}"));
    assert!(line_with(&yaml, "serve_stale:").contains("max_age: 2h"));
    assert!(line_with(&yaml, "servfail_ttl: 2s").contains("servfail"));
    let slow = yaml.find("    - zone: \"slow.example.\"").expect("an uncached zone keeps nothing");
    assert!(yaml[slow..].lines().nth(1).unwrap().contains("max_ttl: 0s"));
    loads(&yaml);
}

#[test]
fn hosts_keeps_entries_file_ttl_reverse_and_fallthrough() {
    let yaml = imported(
        "example.internal {\n hosts /etc/extra-hosts {\n  10.0.0.5 db.example.internal db\n  ttl 60\n  no_reverse\n  reload 10s\n  fallthrough\n }\n forward . 192.0.2.1\n}\n",
    );
    assert!(line_with(&yaml, "- zones:").contains(r#"["example.internal."]"#), "{yaml}");
    assert!(line_with(&yaml, "10.0.0.5").contains("\"10.0.0.5 db.example.internal db\""));
    assert!(line_with(&yaml, "file:").contains("/etc/extra-hosts"));
    assert!(line_with(&yaml, "ttl: 60s").starts_with("    ttl"));
    assert!(line_with(&yaml, "reverse:").contains("false"));
    assert!(line_with(&yaml, "reload:").contains("10s"));
    assert!(line_with(&yaml, "fallthrough:").contains(r#"["."]"#));
    let hosts = &loads(&yaml).hosts[0];
    assert_eq!((hosts.ttl, hosts.reverse), (Duration::from_secs(60), false));
}

#[test]
fn log_debug_ready_and_a_resolv_conf_for_another_zone() {
    let yaml = imported("example.org:1053 {\n log\n debug\n ready :8181\n bind 127.0.0.1\n forward . /etc/resolv.conf\n}\n");
    assert!(line_with(&yaml, "listen:").contains(r#"["127.0.0.1:1053"]"#), "{yaml}");
    assert!(line_with(&yaml, "queries: {enabled: true}").contains("log"));
    assert!(line_with(&yaml, "level: debug").contains("debug"));
    assert!(line_with(&yaml, "0.0.0.0:8181").contains("ready"));
    assert!(line_with(&yaml, "upstreams: [\"192.0.2.53:53\"]").contains("read at load"));
    assert!(line_with(&yaml, "metrics: off").contains("no prometheus"));
    loads(&yaml);
}

#[test]
fn what_cannot_be_honoured_is_refused_with_file_line_and_plugin() {
    assert_eq!(
        refused(".:53 {\n errors\n rewrite name a.example b.example\n}\n"),
        "Corefile:3: plugin rewrite: not supported by nodedns; remove it, or keep this zone on CoreDNS"
    );
    assert!(refused("cluster.local {\n kubernetes cluster.local\n}\n").starts_with("Corefile:2: plugin kubernetes: nodedns is a cache"));
    assert!(refused(".:53 {\n forward . 192.0.2.1 {\n  next NXDOMAIN\n }\n}\n").starts_with("Corefile:3: plugin next:"));
    assert!(refused(".:53 {\n cache {\n  keepttl\n }\n}\n").starts_with("Corefile:3: plugin keepttl:"));
    assert!(refused(".:53 {\n bind eth0\n}\n").contains("interface names are not supported"));
    assert!(refused(".:53 {\n frobnicate\n}\n").ends_with("plugin frobnicate: not a plugin nodedns knows"));
    assert!(refused("a.example {\n bind 127.0.0.1\n}\nb.example {\n bind 127.0.0.2\n}\n").starts_with("Corefile:4: this block listens"));
    assert!(refused("tls://.:853 {\n forward . 192.0.2.1\n}\n").contains("only plain DNS"));
    assert!(refused(".:53 {\n forward . __PILLAR__CLUSTER__DNS__\n}\n").contains("__PILLAR__CLUSTER__DNS__"));
}

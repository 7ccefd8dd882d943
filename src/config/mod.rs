//! Configuration: the YAML file ([`file`](mod@file)), the node's resolv.conf ([`resolv_conf`]), and
//! command-line overrides, merged and validated once into [`Settings`]. Nothing downstream
//! re-parses a string from the configuration. A running process holds the settings as two
//! parts: what a reload may change ([`Reloadable`]) and what needs a restart ([`RestartOnly`]).
//!
//! Errors name the file, the line and the key, and the process refuses to start on any.

pub mod corefile;
pub mod file;
pub mod nodecache;
pub mod resolv_conf;
mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::cache::{Capacity, TtlPolicy, ZoneTtl};
use crate::forward::ForwardSettings;
use crate::kubernetes::NamingSettings;
use crate::query::admission::ClientLimit;
use crate::query::handler::HandlerSettings;
use crate::upstream::{PoolSettings, Protocol, QueryOptions, UpstreamSettings, UpstreamSpec};
use crate::zones::{Router, UpstreamGroup, Zone};
pub use file::{FileConfig, KubernetesSection, LogFormat};
pub use settings::{AdmissionSettings, CacheSettings, Compared, Reloadable, RestartOnly, Settings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Corefile(#[from] corefile::CorefileError),
}

/// Values given on the command line; each replaces the file's value when present.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    pub upstreams: Vec<UpstreamSpec>,
    pub forward: Vec<(Zone, Vec<UpstreamSpec>)>,
    pub metrics: Option<SocketAddr>,
}

/// Reads and parses a configuration file, with `${NAME}` replaced by the environment's value.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: name.clone(), source })?;
    parse_file(&name, &expand_env(&name, &text, &|var| std::env::var(var).ok())?)
}

/// Replaces each `${NAME}` (NAME: capitals, digits and `_`) by the variable's value: how a
/// Service's IP reaches the file, from the `NAME_SERVICE_HOST` variable the kubelet sets.
/// An unset variable is an error naming it and its line.
pub fn expand_env(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let name_len = rest[start + 2..].find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
            let Some(len) = name_len.filter(|&len| len > 0 && rest[start + 2 + len..].starts_with('}')) else {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                continue;
            };
            let var = &rest[start + 2..start + 2 + len];
            let value = env(var).ok_or_else(|| ConfigError::Invalid {
                file: file.into(),
                line: index + 1,
                key: format!("${{{var}}}"),
                message: "environment variable not set".into(),
            })?;
            out.push_str(&rest[..start]);
            out.push_str(&value);
            rest = &rest[start + 3 + len..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Where the configuration is read from, at start and again on every reload.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// No file: every default.
    Defaults,
    Yaml(std::path::PathBuf),
    Corefile(std::path::PathBuf),
    /// Run as node-cache: its flags and the Corefile it generates.
    NodeCache(Box<nodecache::NodeCacheArgs>),
}

impl Origin {
    pub fn load(&self) -> Result<FileConfig, ConfigError> {
        match self {
            Origin::Defaults => Ok(FileConfig::default()),
            Origin::Yaml(path) => load_file(path),
            Origin::Corefile(path) => load_corefile(path, &corefile::Context::system(53)),
            Origin::NodeCache(args) => args.load(),
        }
    }

    /// The files whose content a reload compares.
    pub fn watched(&self) -> Vec<std::path::PathBuf> {
        match self {
            Origin::Defaults => Vec::new(),
            Origin::Yaml(path) | Origin::Corefile(path) => vec![path.clone()],
            Origin::NodeCache(args) => args.watched(),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Defaults => f.write_str("the defaults"),
            Origin::Yaml(path) | Origin::Corefile(path) => write!(f, "{}", path.display()),
            Origin::NodeCache(args) => write!(f, "{} (as node-cache)", args.base_corefile.display()),
        }
    }
}

/// Reads a Corefile and maps it onto the configuration (see [`corefile`]).
pub fn load_corefile(path: &Path, cx: &corefile::Context<'_>) -> Result<FileConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: name.clone(), source })?;
    let imported = corefile::import(&name, &text, cx)?;
    parse_file(&format!("{name} (as imported)"), &imported.yaml)
}

/// Parses configuration text; `name` is used in error messages.
pub fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let config: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // The key path is exact; the parser's own mark is used only when the path cannot be
        // found in the text (it points at the enclosing node for list elements).
        let line = locate(text, &key).or_else(|| inner.location().map(|l| l.line())).unwrap_or(1);
        let message = strip_parser_decorations(&inner.to_string());
        ConfigError::Invalid { file: name.into(), line, key, message }
    })?;
    validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        file: name.into(),
        line: locate(text, &key).unwrap_or(1),
        key,
        message,
    })?;
    Ok(config)
}

/// Checks that need more than one field, or a range serde cannot express.
fn validate(c: &FileConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    for (name, b) in [("positive", &c.cache.positive), ("negative", &c.cache.negative)] {
        if b.max_entries == 0 {
            return err(&format!("cache.{name}.max_entries"), "must be at least 1");
        }
        if b.max_bytes < 4096 {
            return err(&format!("cache.{name}.max_bytes"), "must be at least 4Ki");
        }
        if b.min_ttl > b.max_ttl {
            return err(&format!("cache.{name}.min_ttl"), "is larger than max_ttl");
        }
        if b.max_ttl.as_secs() > u64::from(i32::MAX as u32) {
            return err(&format!("cache.{name}.max_ttl"), "exceeds the largest DNS TTL (68 years)");
        }
    }
    validate_cache_zones(&c.cache)?;
    let stale = &c.cache.serve_stale;
    if !stale.max_age.is_zero() && stale.answer_ttl.as_secs() == 0 {
        return err("cache.serve_stale.answer_ttl", "must be at least 1s");
    }
    if c.cache.prefetch.min_hits > 0 && !(1..=100).contains(&c.cache.prefetch.window_percent) {
        return err("cache.prefetch.window_percent", "must be between 1 and 100");
    }
    if c.cache.prefetch.min_hits > u32::from(u8::MAX) {
        return err("cache.prefetch.min_hits", "must be at most 255");
    }
    if !(512..=crate::wire::MAX_UDP_PAYLOAD).contains(&c.server.udp_payload) {
        return err("server.udp_payload", "must be between 512 (RFC 6891) and 4096");
    }
    if c.server.query_deadline.is_zero() {
        return err("server.query_deadline", "must be positive");
    }
    if c.upstream.timeout.is_zero() {
        return err("upstream.timeout", "must be positive");
    }
    if c.upstream.min_timeout.is_zero() || c.upstream.min_timeout > c.upstream.timeout {
        return err("upstream.min_timeout", "must be positive and at most upstream.timeout");
    }
    if !c.upstream.loop_probe_interval.is_zero() && c.upstream.loop_probe_interval < Duration::from_secs(1) {
        return err("upstream.loop_probe_interval", "must be 0 (off) or at least 1s");
    }
    if c.upstream.max_attempts == 0 {
        return err("upstream.max_attempts", "must be at least 1");
    }
    let p = &c.upstream.pool;
    if p.max_connections == 0 {
        return err("upstream.pool.max_connections", "must be at least 1");
    }
    if p.max_inflight_per_connection == 0 || p.max_inflight_per_connection > 4096 {
        return err("upstream.pool.max_inflight_per_connection", "must be between 1 and 4096");
    }
    if p.idle_timeout.is_zero() || p.connect_timeout.is_zero() {
        return err("upstream.pool.idle_timeout", "pool timeouts must be positive");
    }
    if c.server.max_tcp_clients == 0 || c.server.max_tcp_inflight == 0 {
        return err("server.max_tcp_clients", "TCP limits must be at least 1");
    }
    if c.server.max_tcp_per_client == 0 || c.server.max_inflight_misses == 0 || c.server.client_table_size == 0 {
        return err("server.max_inflight_misses", "limits must be at least 1");
    }
    if c.listen.is_empty() {
        return err("listen", "needs at least one address");
    }
    if c.server.udp_workers > MAX_UDP_WORKERS {
        return err("server.udp_workers", &format!("at most {MAX_UDP_WORKERS}"));
    }
    // Every socket must fit in one handover message (Linux passes at most 253 at once).
    if c.listen.len() * (udp_workers(c.server.udp_workers) + 1) + 1 > 253 {
        return err("server.udp_workers", "too many sockets for a handover: fewer listen addresses or workers");
    }
    if c.node.setup && c.listen.iter().all(|a| a.ip().is_loopback() || a.ip().is_unspecified()) {
        return err("node.setup", "needs a listen address to own (not loopback, not a wildcard), such as 169.254.20.10:53");
    }
    if c.node.shared && !matches!(c.node.rules, crate::node::Backend::Nftables | crate::node::Backend::None) {
        return err(
            "node.shared",
            "needs rules: nftables, whose table each instance owns (iptables chains would be removed by the first to stop)",
        );
    }
    if c.node.setup && c.node.check_interval.is_zero() {
        return err("node.check_interval", "must be positive");
    }
    for (i, block) in c.hosts.iter().enumerate() {
        if block.zones.is_empty() {
            return err(&format!("hosts[{i}].zones"), "needs at least one zone (`.` for every name)");
        }
        if block.entries.is_empty() && block.file.is_empty() {
            return err(&format!("hosts[{i}]"), "needs entries or a file");
        }
        if !(1..=65535).contains(&block.ttl.as_secs()) {
            return err(&format!("hosts[{i}].ttl"), "must be between 1s and 65535s");
        }
    }
    Ok(())
}

/// Each `cache.zones` entry: a zone given once, and bounds that hold together with the
/// global values they leave in place.
fn validate_cache_zones(c: &file::CacheSection) -> Result<(), (String, String)> {
    for (i, z) in c.zones.iter().enumerate() {
        if let Some(first) = c.zones[..i].iter().position(|earlier| earlier.zone == z.zone) {
            return Err((format!("cache.zones[{i}].zone"), format!("`{}` is already given at cache.zones[{first}]", z.zone)));
        }
        for (name, own, global) in [("positive", &z.positive, &c.positive), ("negative", &z.negative, &c.negative)] {
            let key = |field: &str| format!("cache.zones[{i}].{name}.{field}");
            let (min, max) = (own.min_ttl.unwrap_or(global.min_ttl), own.max_ttl.unwrap_or(global.max_ttl));
            if min > max {
                return Err(match own.min_ttl {
                    Some(_) if own.max_ttl.is_some() => (key("min_ttl"), "is larger than max_ttl".into()),
                    Some(_) => (key("min_ttl"), format!("is larger than max_ttl (cache.{name}.max_ttl, not set for the zone)")),
                    None => (key("max_ttl"), format!("is smaller than min_ttl (cache.{name}.min_ttl, not set for the zone)")),
                });
            }
            if max.as_secs() > u64::from(i32::MAX as u32) {
                return Err((key("max_ttl"), "exceeds the largest DNS TTL (68 years)".into()));
            }
        }
    }
    Ok(())
}

/// serde_yaml_ng wraps messages as "PATH: MESSAGE at line L column C"; we print the key
/// and line ourselves.
fn strip_parser_decorations(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or(message);
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Line of a dotted key path (`cache.positive.max_ttl`, `forward[1].zone`) in block-style
/// YAML: each segment is searched for after the previous one's line. `None` when the first
/// segment is not found.
fn locate(text: &str, path: &str) -> Option<usize> {
    let mut from = 0;
    let mut found = None;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let lines: Vec<(usize, &str)> = text.lines().enumerate().skip(from).collect();
        let Some(&(at, _)) = lines.iter().find(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ");
            l.starts_with(&format!("{key}:"))
        }) else {
            break;
        };
        found = Some(at + 1);
        from = at + 1;
        if let Some(n) = index {
            // The n-th list item after the key.
            if let Some(&(item, _)) = text.lines().enumerate().skip(from).filter(|(_, l)| l.trim_start().starts_with("- ")).nth(n).as_ref()
            {
                found = Some(item + 1);
                from = item;
            }
        }
    }
    found
}

impl Settings {
    /// Merges file, command line and (when no upstream is configured) resolv.conf, then
    /// checks the result as a whole.
    pub fn build(file: FileConfig, overrides: Overrides) -> Result<Settings, ConfigError> {
        let listen = if overrides.listen.is_empty() { file.listen } else { overrides.listen };
        let mut upstreams = if overrides.upstreams.is_empty() { file.upstreams } else { overrides.upstreams };
        let mut groups: Vec<UpstreamGroup> =
            file.forward.into_iter().map(|r| UpstreamGroup { zone: r.zone, servers: r.upstreams }).collect();
        groups.extend(overrides.forward.into_iter().map(|(zone, servers)| UpstreamGroup { zone, servers }));
        let has_root = groups.iter().any(|g| g.zone == Zone::root());
        if upstreams.is_empty() && !has_root {
            let servers = resolv_conf::nameservers_from(Path::new(&file.resolv_conf)).map_err(ConfigError::Settings)?;
            upstreams = servers.into_iter().map(UpstreamSpec::prefer_udp).collect();
        }
        if !upstreams.is_empty() {
            // Explicit `.` rules (from --forward) take precedence: they come later.
            groups.insert(0, UpstreamGroup { zone: Zone::root(), servers: upstreams });
        }
        if groups.is_empty() {
            return Err(ConfigError::Settings("no upstream configured".into()));
        }
        let router = Router::new(groups);
        refuse_loops(&listen, &router)?;
        let u = &file.upstream;
        let tls = if router.groups().iter().any(|g| g.servers.iter().any(|s| matches!(s.protocol, Protocol::Tls { .. }))) {
            let ca = (!u.tls.ca_file.is_empty()).then(|| Path::new(&u.tls.ca_file));
            Some(crate::upstream::tls::client_config(ca).map_err(|e| ConfigError::Settings(format!("upstream.tls.ca_file: {e}")))?)
        } else {
            None
        };
        let upstream = UpstreamSettings {
            min_timeout: u.min_timeout,
            max_timeout: u.timeout,
            max_fails: u.max_fails,
            probe_interval: u.probe_interval,
            max_qps: u.max_qps,
            pool: PoolSettings {
                max_connections: u.pool.max_connections,
                max_inflight_per_connection: u.pool.max_inflight_per_connection,
                queue_length: u.pool.queue_length,
                queue_wait: u.pool.queue_wait,
                idle_timeout: u.pool.idle_timeout,
                max_queries_per_connection: u.pool.max_queries_per_connection,
                connect_timeout: u.pool.connect_timeout,
            },
            query: QueryOptions { udp_payload: file.server.udp_payload, randomize_case: u.randomize_case },
            tls,
        };
        let forward = ForwardSettings {
            deadline: file.server.query_deadline,
            policy: u.policy,
            max_attempts: u.max_attempts,
            loop_probe_interval: u.loop_probe_interval,
        };
        let c = file.cache;
        let secs = |d: Duration| d.as_secs().min(u64::from(u32::MAX)) as u32;
        let node = node_settings(&file.node, &listen);
        let reloadable = Reloadable {
            router,
            upstream: Compared(upstream),
            forward,
            handler: HandlerSettings {
                max_inflight_misses: file.server.max_inflight_misses,
                udp_payload: file.server.udp_payload,
                deadline: file.server.query_deadline,
                stale_after: c.serve_stale.client_timeout,
            },
            admission: AdmissionSettings {
                allow: file.server.allow.clone(),
                open: if node.enabled { node.addresses.iter().map(|(ip, _)| *ip).collect() } else { Vec::new() },
                deny_action: file.server.deny_action,
                client_limit: (file.server.client_qps > 0).then_some(ClientLimit {
                    qps: file.server.client_qps,
                    burst: if file.server.client_burst == 0 { file.server.client_qps } else { file.server.client_burst },
                    action: file.server.rate_limit_action,
                    table_size: file.server.client_table_size,
                }),
            },
            query_log: query_log_policy(&file.log.queries)?,
            hosts: file.hosts.iter().map(hosts_block).collect(),
        };
        let restart_only = RestartOnly {
            listen,
            metrics: overrides.metrics.or(file.metrics),
            http_listen: file.http_listen,
            cache: CacheSettings {
                positive: Capacity { max_entries: c.positive.max_entries, max_bytes: c.positive.max_bytes },
                negative: Capacity { max_entries: c.negative.max_entries, max_bytes: c.negative.max_bytes },
                ttl: TtlPolicy {
                    positive_min_ttl: secs(c.positive.min_ttl),
                    positive_max_ttl: secs(c.positive.max_ttl),
                    negative_min_ttl: secs(c.negative.min_ttl),
                    negative_max_ttl: secs(c.negative.max_ttl),
                    servfail_ttl: secs(c.servfail_ttl),
                    stale_max_age: secs(c.serve_stale.max_age),
                    stale_ttl: secs(c.serve_stale.answer_ttl),
                    prefetch_percent: if c.prefetch.min_hits == 0 { 0 } else { c.prefetch.window_percent },
                    prefetch_min_hits: c.prefetch.min_hits,
                },
                snapshot: (!c.snapshot.is_empty()).then(|| c.snapshot.clone().into()),
                zones: c.zones.iter().map(|z| zone_ttl(z, secs)).collect(),
            },
            node,
            naming: naming_settings(file.kubernetes, Path::new(&file.resolv_conf)),
            handover_socket: (!file.server.handover_socket.is_empty()).then(|| file.server.handover_socket.clone().into()),
            shutdown_grace: file.server.shutdown_grace,
            udp_workers: udp_workers(file.server.udp_workers),
            pin_udp_workers: file.server.pin_udp_workers,
            tcp_idle_timeout: file.server.tcp_idle_timeout,
            max_tcp_clients: file.server.max_tcp_clients,
            max_tcp_inflight: file.server.max_tcp_inflight,
            max_tcp_per_client: file.server.max_tcp_per_client,
            log_level: file.log.level,
            log_format: file.log.format,
            query_log_output: file.log.queries.output.parse().unwrap_or_default(),
        };
        Ok(Settings { reloadable, restart_only })
    }
}

const MAX_UDP_WORKERS: usize = 64;

/// A `cache.zones` entry as the cache takes it: seconds, `None` where the zone keeps the
/// global value.
fn zone_ttl(z: &file::CacheZone, secs: impl Fn(Duration) -> u32) -> ZoneTtl {
    ZoneTtl {
        zone: z.zone.wire().to_owned(),
        positive_min_ttl: z.positive.min_ttl.map(&secs),
        positive_max_ttl: z.positive.max_ttl.map(&secs),
        negative_min_ttl: z.negative.min_ttl.map(&secs),
        negative_max_ttl: z.negative.max_ttl.map(&secs),
        servfail_ttl: z.servfail_ttl.map(&secs),
    }
}

/// `server.udp_workers`, 0 meaning one per CPU this process may use.
fn udp_workers(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_UDP_WORKERS),
        n => n,
    }
}

fn query_log_policy(q: &file::QueryLogSection) -> Result<crate::query::querylog::Selection, ConfigError> {
    if !(0.0..=1.0).contains(&q.sample) {
        return Err(ConfigError::Settings(format!("log.queries.sample: {} is not a fraction between 0 and 1", q.sample)));
    }
    Ok(crate::query::querylog::Selection { enabled: q.enabled, sample: q.sample, slow: q.slow })
}

/// The addresses node setup owns: every listen address that is neither loopback nor a
/// wildcard, with its port.
fn node_settings(n: &file::NodeSection, listen: &[SocketAddr]) -> crate::node::NodeSettings {
    let mut addresses: Vec<_> = match &n.addresses {
        Some(ips) => ips.iter().map(|ip| (*ip, n.dns_port)).collect(),
        None => listen.iter().filter(|a| !a.ip().is_loopback() && !a.ip().is_unspecified()).map(|a| (a.ip(), a.port())).collect(),
    };
    addresses.dedup();
    crate::node::NodeSettings {
        enabled: n.setup,
        interface: n.interface.clone(),
        fallback_interface: n.fallback_interface.clone(),
        addresses,
        backend: n.rules,
        health_port: n.health_port,
        assign_addresses: n.assign_addresses,
        shared: n.shared,
        remove_found_interface: n.rules == crate::node::Backend::NodeCache,
        check_interval: n.check_interval,
        keep_on_exit: n.keep_on_exit,
    }
}

/// The Kubernetes naming rules. Search suffixes not configured are the node's: its
/// resolv.conf search line without the cluster domains and what lies under them (a node
/// running in the cluster may list `svc.cluster.local` itself).
fn naming_settings(k: KubernetesSection, resolv_conf: &Path) -> NamingSettings {
    let search_suffixes = k.search_suffixes.unwrap_or_else(|| {
        let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
        resolv_conf::search_list(&text)
            .iter()
            .filter_map(|s| s.parse::<Zone>().ok())
            .filter(|s| *s != Zone::root() && !k.cluster_domains.iter().any(|c| c.contains(s.wire())))
            .collect()
    });
    NamingSettings {
        enabled: k.local_answers,
        cluster_domains: k.cluster_domains,
        namespaces: k.namespaces,
        search_suffixes,
        filter_aaaa: k.filter_aaaa,
        search_prefetch: k.search_prefetch,
    }
}

/// A `hosts` block, its inline entries scoped to its zones.
fn hosts_block(b: &file::HostsBlock) -> crate::hosts::BlockSettings {
    let mut entries = crate::hosts::Table::default();
    for line in &b.entries {
        entries.add(line, &b.zones, b.reverse);
    }
    crate::hosts::BlockSettings {
        zones: b.zones.clone(),
        entries,
        file: (!b.file.is_empty()).then(|| b.file.clone().into()),
        reload: b.reload,
        ttl: b.ttl.as_secs() as u32,
        reverse: b.reverse,
        fallthrough: b.fallthrough.clone(),
    }
}

/// Refuses an upstream that is one of our own listen addresses: the classic case is a node
/// whose resolv.conf points back at the node cache, which would forward every miss to itself.
fn refuse_loops(listen: &[SocketAddr], router: &Router) -> Result<(), ConfigError> {
    for group in router.groups() {
        for up in group.servers.iter().map(|s| s.addr) {
            for l in listen {
                let same_ip = l.ip() == up.ip() || (l.ip().is_unspecified() && (up.ip().is_loopback() || up.ip().is_unspecified()));
                if l.port() == up.port() && same_ip {
                    return Err(ConfigError::Settings(format!(
                        "upstream {up} for zone {} is this server's own listen address {l}: forwarding there would loop",
                        group.zone
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

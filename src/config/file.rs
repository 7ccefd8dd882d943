//! The YAML configuration file: its schema, defaults, and errors that point at file, line
//! and key. Every field is optional; what is absent takes the default documented in
//! `docs/CONFIG.md`. Unknown keys are errors, so a typo cannot silently mean "default".

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use ipnet::IpNet;

use crate::forward::Policy;
use crate::kubernetes::NamespaceSource;
use crate::query::admission::Action;
use crate::upstream::UpstreamSpec;
use crate::zones::Zone;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    #[serde(deserialize_with = "addrs")]
    pub listen: Vec<SocketAddr>,
    #[serde(deserialize_with = "opt_addr")]
    pub metrics: Option<SocketAddr>,
    /// More addresses serving the same HTTP endpoint (where CoreDNS's `health` and `ready`
    /// plugins and node-cache's metrics listener answered).
    #[serde(deserialize_with = "addrs")]
    pub http_listen: Vec<SocketAddr>,
    #[serde(deserialize_with = "upstreams")]
    pub upstreams: Vec<UpstreamSpec>,
    pub forward: Vec<ForwardRule>,
    pub resolv_conf: String,
    pub cache: CacheSection,
    pub server: ServerSection,
    pub upstream: UpstreamSection,
    pub log: LogSection,
    pub kubernetes: KubernetesSection,
    pub node: NodeSection,
    pub hosts: Vec<HostsBlock>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1053))],
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], 9253))),
            http_listen: Vec::new(),
            upstreams: Vec::new(),
            forward: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            cache: CacheSection::default(),
            server: ServerSection::default(),
            upstream: UpstreamSection::default(),
            log: LogSection::default(),
            kubernetes: KubernetesSection::default(),
            node: NodeSection::default(),
            hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    #[serde(deserialize_with = "zone")]
    pub zone: Zone,
    #[serde(deserialize_with = "upstreams")]
    pub upstreams: Vec<UpstreamSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    #[serde(deserialize_with = "positive_bounds")]
    pub positive: CacheBounds,
    #[serde(deserialize_with = "negative_bounds")]
    pub negative: CacheBounds,
    #[serde(deserialize_with = "duration")]
    pub servfail_ttl: Duration,
    pub serve_stale: ServeStaleSection,
    pub prefetch: PrefetchSection,
    /// Where the cache is written at shutdown and read at start; empty: nowhere.
    pub snapshot: String,
    /// TTL bounds of their own for the names under some zones.
    pub zones: Vec<CacheZone>,
}

/// One zone's TTL bounds (`cache.zones`): the longest zone ending a name decides how long
/// its answers live; what a zone leaves out is the global value (`cache.positive` ...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheZone {
    #[serde(deserialize_with = "zone")]
    pub zone: Zone,
    #[serde(default)]
    pub positive: TtlBounds,
    #[serde(default)]
    pub negative: TtlBounds,
    #[serde(default, deserialize_with = "some_duration")]
    pub servfail_ttl: Option<Duration>,
}

/// A zone's bounds on one half of the cache; `None`: the global value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlBounds {
    #[serde(default, deserialize_with = "some_duration")]
    pub min_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub max_ttl: Option<Duration>,
}

/// RFC 8767: expired answers served while the upstream fails or is slow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeStaleSection {
    /// How long past expiry an answer may be served; 0: never.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub answer_ttl: Duration,
    /// How long a client waits for the upstream before a stale answer is sent instead.
    #[serde(deserialize_with = "duration")]
    pub client_timeout: Duration,
}

impl Default for ServeStaleSection {
    fn default() -> Self {
        ServeStaleSection {
            max_age: Duration::from_secs(3600),
            answer_ttl: Duration::from_secs(30),
            client_timeout: Duration::from_secs(1),
        }
    }
}

/// Refreshing popular entries before they expire.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefetchSection {
    /// Hits within the window that start a refresh; 0: no prefetch.
    pub min_hits: u32,
    /// The window: the last this-percent of an entry's life.
    pub window_percent: u32,
}

impl Default for PrefetchSection {
    fn default() -> Self {
        PrefetchSection { min_hits: 2, window_percent: 10 }
    }
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            positive: CacheBounds {
                max_entries: 200_000,
                max_bytes: 128 << 20,
                min_ttl: Duration::ZERO,
                max_ttl: Duration::from_secs(3600),
            },
            negative: CacheBounds {
                max_entries: 100_000,
                max_bytes: 32 << 20,
                min_ttl: Duration::ZERO,
                max_ttl: Duration::from_secs(1800),
            },
            servfail_ttl: Duration::from_secs(5),
            serve_stale: ServeStaleSection::default(),
            prefetch: PrefetchSection::default(),
            snapshot: String::new(),
            zones: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CacheBounds {
    pub max_entries: u64,
    pub max_bytes: u64,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

/// A half of the cache as written: a field left out keeps that half's default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundsInFile {
    #[serde(default)]
    max_entries: Option<u64>,
    #[serde(default, deserialize_with = "some_bytes")]
    max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "some_duration")]
    min_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    max_ttl: Option<Duration>,
}

impl BoundsInFile {
    fn over(self, default: CacheBounds) -> CacheBounds {
        CacheBounds {
            max_entries: self.max_entries.unwrap_or(default.max_entries),
            max_bytes: self.max_bytes.unwrap_or(default.max_bytes),
            min_ttl: self.min_ttl.unwrap_or(default.min_ttl),
            max_ttl: self.max_ttl.unwrap_or(default.max_ttl),
        }
    }
}

fn positive_bounds<'de, D: Deserializer<'de>>(d: D) -> Result<CacheBounds, D::Error> {
    Ok(BoundsInFile::deserialize(d)?.over(CacheSection::default().positive))
}

fn negative_bounds<'de, D: Deserializer<'de>>(d: D) -> Result<CacheBounds, D::Error> {
    Ok(BoundsInFile::deserialize(d)?.over(CacheSection::default().negative))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub udp_payload: u16,
    #[serde(deserialize_with = "duration")]
    pub query_deadline: Duration,
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    pub max_tcp_clients: usize,
    pub max_tcp_inflight: usize,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Unix socket where a running nodedns hands its sockets and cache to its successor.
    pub handover_socket: String,
    #[serde(deserialize_with = "networks")]
    pub allow: Vec<IpNet>,
    pub deny_action: Action,
    pub client_qps: u32,
    pub client_burst: u32,
    pub rate_limit_action: Action,
    pub client_table_size: usize,
    pub max_tcp_per_client: usize,
    pub max_inflight_misses: usize,
    /// Threads (and sockets per listen address) serving UDP; 0: one per CPU.
    pub udp_workers: usize,
    /// Pin UDP worker `i` to CPU `i` (modulo the CPUs this process may use).
    pub pin_udp_workers: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            allow: vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")],
            deny_action: Action::Refuse,
            client_qps: 0,
            client_burst: 0,
            rate_limit_action: Action::Drop,
            client_table_size: 65536,
            max_tcp_per_client: 256,
            max_inflight_misses: 10_000,
            udp_payload: 1232,
            query_deadline: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_clients: 1024,
            max_tcp_inflight: 64,
            shutdown_grace: Duration::from_secs(5),
            handover_socket: String::new(),
            udp_workers: 0,
            pin_udp_workers: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub min_timeout: Duration,
    pub policy: Policy,
    pub max_attempts: usize,
    pub max_fails: u32,
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
    pub max_qps: u32,
    pub randomize_case: bool,
    /// How often each forwarded zone is probed for a forwarding loop; 0: never.
    #[serde(deserialize_with = "duration")]
    pub loop_probe_interval: Duration,
    pub pool: PoolSection,
    pub tls: TlsSection,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            timeout: Duration::from_millis(500),
            min_timeout: Duration::from_millis(20),
            policy: Policy::Sequential,
            max_attempts: 8,
            max_fails: 3,
            probe_interval: Duration::from_millis(500),
            max_qps: 0,
            randomize_case: false,
            loop_probe_interval: Duration::from_secs(30),
            pool: PoolSection::default(),
            tls: TlsSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub queue_length: usize,
    #[serde(deserialize_with = "duration")]
    pub queue_wait: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    pub max_queries_per_connection: u64,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            max_connections: 4,
            max_inflight_per_connection: 64,
            queue_length: 1024,
            queue_wait: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(2),
            max_queries_per_connection: 0,
            connect_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM bundle of trusted roots for `tls://` upstreams; empty means the system's.
    pub ca_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    pub local_answers: bool,
    #[serde(deserialize_with = "zones")]
    pub cluster_domains: Vec<Zone>,
    #[serde(deserialize_with = "namespaces")]
    pub namespaces: NamespaceSource,
    /// `None`: the search line of `resolv_conf`, less the cluster domains.
    #[serde(deserialize_with = "opt_zones")]
    pub search_suffixes: Option<Vec<Zone>>,
    #[serde(deserialize_with = "zones")]
    pub filter_aaaa: Vec<Zone>,
    pub search_prefetch: bool,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        KubernetesSection {
            local_answers: true,
            cluster_domains: vec!["cluster.local".parse().expect("literal")],
            namespaces: NamespaceSource::Unknown,
            search_suffixes: None,
            filter_aaaa: Vec::new(),
            search_prefetch: true,
        }
    }
}

/// Owning the listen addresses on the node and taking them out of conntrack.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    pub setup: bool,
    pub interface: String,
    pub fallback_interface: String,
    pub rules: crate::node::Backend,
    #[serde(deserialize_with = "duration")]
    pub check_interval: Duration,
    pub keep_on_exit: bool,
    /// The addresses to own; absent: the listen addresses that are neither loopback nor a
    /// wildcard. Given (node-cache's `-localip`), they are served on `dns_port`.
    pub addresses: Option<Vec<std::net::IpAddr>>,
    pub dns_port: u16,
    /// Also take this HTTP port out of conntrack (node-cache's rules do, for its health port).
    pub health_port: Option<u16>,
    /// Assign the addresses (node-cache's `-setupinterface`); false: someone else does.
    pub assign_addresses: bool,
    /// Another nodedns serves the same addresses on this node (two DaemonSets): each keeps
    /// its own rules, and the addresses stay at exit for the other.
    pub shared: bool,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            setup: false,
            interface: "nodedns0".into(),
            fallback_interface: "lo".into(),
            rules: crate::node::Backend::Nftables,
            check_interval: Duration::from_secs(10),
            keep_on_exit: false,
            addresses: None,
            dns_port: 53,
            health_port: None,
            assign_addresses: true,
            shared: false,
        }
    }
}

/// One `hosts` block: names answered from hosts(5) lines, as CoreDNS's `hosts` plugin does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostsBlock {
    #[serde(deserialize_with = "zones")]
    pub zones: Vec<Zone>,
    #[serde(deserialize_with = "hosts_entries")]
    pub entries: Vec<crate::hosts::Line>,
    /// A hosts(5) file; empty: none.
    pub file: String,
    /// How often the file is checked for a change; 0: never.
    #[serde(deserialize_with = "duration")]
    pub reload: Duration,
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    pub reverse: bool,
    #[serde(deserialize_with = "zones")]
    pub fallthrough: Vec<Zone>,
}

impl Default for HostsBlock {
    fn default() -> Self {
        HostsBlock {
            zones: vec![Zone::root()],
            entries: Vec::new(),
            file: String::new(),
            reload: Duration::from_secs(5),
            ttl: Duration::from_secs(3600),
            reverse: true,
            fallthrough: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub level: String,
    pub format: LogFormat,
    pub queries: QueryLogSection,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into(), format: LogFormat::Text, queries: QueryLogSection::default() }
    }
}

/// The query log: one JSON line per sampled or slow query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLogSection {
    pub enabled: bool,
    pub sample: f64,
    #[serde(deserialize_with = "duration")]
    pub slow: Duration,
    /// `stdout`, `stderr`, or a file path (appended to).
    pub output: String,
}

impl Default for QueryLogSection {
    fn default() -> Self {
        QueryLogSection { enabled: false, sample: 1.0, slow: Duration::ZERO, output: "stdout".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `ADDR:PORT`, `[V6]:PORT`, or a bare address meaning port 53.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = t.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not an address (expected ADDR:PORT, [IPv6]:PORT or a bare IP for port 53)"))
}

/// Parses an octet count: a number with an optional `Ki`, `Mi`, `Gi` (or `K`, `M`, `G`, `B`) suffix.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (e.g. 64Mi)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

/// A YAML scalar read as text, whether it was written as a string or a number.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        N(u64),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::N(n) => n.to_string(),
    })
}

/// One address of a list, parsed as its own element so an error points at its line.
struct Addr(SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_addr(&String::deserialize(d)?).map(Addr).map_err(serde::de::Error::custom)
    }
}

fn addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Ok(Vec::<Addr>::deserialize(d)?.into_iter().map(|a| a.0).collect())
}

/// One network of a list (`10.244.0.0/16`, or a bare address meaning just that address).
struct Network(IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let net = text.parse::<IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        net.map(Network).map_err(|_| serde::de::Error::custom(format!("`{text}` is not a network (e.g. 10.244.0.0/16)")))
    }
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Network>::deserialize(d)?.into_iter().map(|n| n.0).collect())
}

/// One upstream of a list, parsed as its own element so an error points at its line.
struct Upstream(UpstreamSpec);

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map(Upstream).map_err(serde::de::Error::custom)
    }
}

fn upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<UpstreamSpec>, D::Error> {
    Ok(Vec::<Upstream>::deserialize(d)?.into_iter().map(|u| u.0).collect())
}

fn opt_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s == "off" => Ok(None),
        Some(s) => parse_addr(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn zone<'de, D: Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
    String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
}

/// One zone of a list, parsed as its own element so an error points at its line.
struct ZoneItem(Zone);

impl<'de> Deserialize<'de> for ZoneItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        zone(d).map(ZoneItem)
    }
}

fn zones<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Zone>, D::Error> {
    Ok(Vec::<ZoneItem>::deserialize(d)?.into_iter().map(|z| z.0).collect())
}

fn opt_zones<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Zone>>, D::Error> {
    Ok(Option::<Vec<ZoneItem>>::deserialize(d)?.map(|list| list.into_iter().map(|z| z.0).collect()))
}

/// One inline hosts(5) line, parsed as its own element so an error points at its line; a
/// line of blanks and comments is `None`.
struct HostsEntry(Option<crate::hosts::Line>);

impl<'de> Deserialize<'de> for HostsEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hosts::parse_line(&String::deserialize(d)?).map(HostsEntry).map_err(serde::de::Error::custom)
    }
}

fn hosts_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::hosts::Line>, D::Error> {
    Ok(Vec::<HostsEntry>::deserialize(d)?.into_iter().filter_map(|e| e.0).collect())
}

/// A namespace name: an RFC 1123 label, as Kubernetes requires.
struct Namespace(String);

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let valid = (1..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if valid {
            Ok(Namespace(name))
        } else {
            Err(serde::de::Error::custom(format!("`{name}` is not a namespace name (lower-case letters, digits and `-`, at most 63)")))
        }
    }
}

/// `watch`, or a list of namespace names.
fn namespaces<'de, D: Deserializer<'de>>(d: D) -> Result<NamespaceSource, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Source {
        Word(String),
        List(Vec<Namespace>),
    }
    match Source::deserialize(d)? {
        Source::Word(w) if w == "watch" => Ok(NamespaceSource::Watch),
        Source::Word(w) if w == "unknown" => Ok(NamespaceSource::Unknown),
        Source::Word(w) => Err(serde::de::Error::custom(format!("`{w}`: expected `watch`, `unknown` or a list of namespaces"))),
        Source::List(list) => Ok(NamespaceSource::Fixed(list.into_iter().map(|n| n.0).collect())),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = scalar(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration (e.g. 500ms, 5s, 1h): {e}")))
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_bytes(&scalar(d)?).map_err(serde::de::Error::custom)
}

fn some_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    bytes(d).map(Some)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

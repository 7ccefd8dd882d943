//! What each Corefile plugin becomes in nodedns's YAML. The result is YAML text, with a
//! comment on each line whose meaning differs from CoreDNS's, so that the operator reads
//! exactly what will run (`nodedns import-corefile`).
//!
//! CoreDNS configures the forwarder and the cache per server block; nodedns has one cache
//! and one set of upstream settings with per-zone routes and per-zone TTL bounds. So a
//! block's zones become routes (`forward`) and TTL bounds (`cache.zones`), while settings
//! that nodedns holds once (`max_fails`, `policy`, capacities, ...) take the first block's
//! value, and a block that disagrees is named in a comment.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::CorefileError;
use super::parse::{Directive, ServerBlock, parse};
use crate::config::file::parse_addr;
use crate::config::resolv_conf;
use crate::upstream::UpstreamSpec;
use crate::zones::Zone;

/// A Corefile read into nodedns's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The configuration, as YAML with comments.
    pub yaml: String,
}

/// What the mapping needs from outside the Corefile: the environment (`{$NAME}`), the
/// default port (CoreDNS's `-dns.port`) and how to read a `forward . /etc/resolv.conf`.
pub struct Context<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub default_port: u16,
    pub read_file: &'a dyn Fn(&str) -> std::io::Result<String>,
}

impl Context<'_> {
    /// The process's environment and files.
    pub fn system(default_port: u16) -> Context<'static> {
        Context { env: &|name| std::env::var(name).ok(), default_port, read_file: &|path| std::fs::read_to_string(path) }
    }
}

/// CoreDNS's defaults where they differ from nodedns's, written out so that an imported
/// Corefile behaves as it did under CoreDNS.
const COREDNS_MAX_FAILS: u32 = 2;
const COREDNS_HEALTH_CHECK: &str = "500ms";
const COREDNS_EXPIRE: &str = "10s";
const COREDNS_CACHE_CAPACITY: u64 = 9984;
const COREDNS_SUCCESS_MAX_TTL: u64 = 3600;
const COREDNS_DENIAL_MAX_TTL: u64 = 1800;
const COREDNS_MIN_TTL: u64 = 5;
const COREDNS_HOSTS_TTL: u64 = 3600;

/// Reads the Corefile `text` (named `file` in errors) into nodedns's YAML.
pub fn import(file: &str, text: &str, cx: &Context<'_>) -> Result<Import, CorefileError> {
    if let Some((index, line)) = text.lines().enumerate().find(|(_, l)| l.split('#').next().unwrap_or("").contains("__PILLAR__")) {
        let pillar = line.split_whitespace().find(|w| w.contains("__PILLAR__")).unwrap_or("__PILLAR__");
        return Err(CorefileError::Syntax {
            file: file.to_string(),
            line: index + 1,
            message: format!("`{pillar}` is a placeholder node-cache fills in: run as node-cache, or write the value"),
        });
    }
    let blocks = parse(file, text, cx.env)?;
    let mut mapper = Mapper { file, cx, out: Mapped::default() };
    for block in &blocks {
        mapper.block(block)?;
    }
    Ok(Import { yaml: mapper.out.render(file) })
}

/// A value nodedns holds once, with the Corefile line it came from.
#[derive(Debug, Clone)]
struct Once<T> {
    value: T,
    line: usize,
    /// Other blocks that asked for another value.
    overruled: Vec<String>,
}

fn set_once<T: PartialEq + std::fmt::Display + Clone>(slot: &mut Option<Once<T>>, value: T, line: usize) {
    match slot {
        None => *slot = Some(Once { value, line, overruled: Vec::new() }),
        Some(existing) if existing.value != value => existing.overruled.push(format!("line {line} asks for {value}")),
        Some(_) => {}
    }
}

/// Per-zone TTL bounds of a `cache` directive, in seconds.
#[derive(Debug, Clone, PartialEq)]
struct ZoneCache {
    zone: Zone,
    line: usize,
    positive: (u64, u64),
    negative: (u64, u64),
    note: Option<String>,
}

#[derive(Debug, Clone)]
struct Route {
    zone: Zone,
    upstreams: Vec<String>,
    line: usize,
    note: Option<String>,
}

#[derive(Debug, Clone)]
struct Hosts {
    zones: Vec<Zone>,
    entries: Vec<String>,
    file: String,
    reload: String,
    ttl: u64,
    reverse: bool,
    fallthrough: Vec<Zone>,
    line: usize,
}

#[derive(Default)]
struct Mapped {
    /// The listen addresses and the line of the block that set them: the same for every block.
    listen: Option<(Vec<SocketAddr>, usize)>,
    metrics: Option<Once<SocketAddr>>,
    http: Vec<(SocketAddr, usize, &'static str)>,
    routes: Vec<Route>,
    root_resolv_conf: Option<(String, usize)>,
    cache_zones: Vec<ZoneCache>,
    positive_entries: u64,
    negative_entries: u64,
    cached_zones: usize,
    uncached_zones: Vec<(Zone, usize)>,
    serve_stale: Option<Once<String>>,
    prefetch: Option<Once<String>>,
    servfail: Option<Once<String>>,
    max_fails: Option<Once<u32>>,
    probe_interval: Option<Once<String>>,
    policy: Option<Once<String>>,
    expire: Option<Once<String>>,
    max_concurrent: Option<Once<u64>>,
    forwards: usize,
    log_queries: Option<usize>,
    debug: Option<usize>,
    hosts: Vec<Hosts>,
    /// Accepted plugins whose effect is nodedns's own: what, the lines, and how it differs.
    notes: Vec<(String, Vec<usize>, String)>,
}

struct Mapper<'a> {
    file: &'a str,
    cx: &'a Context<'a>,
    out: Mapped,
}

/// A server block's key: `dns://cluster.local:53` is the zone `cluster.local` on port 53.
fn block_key(key: &str, default_port: u16) -> Result<(Zone, u16), String> {
    let rest = match key.split_once("://") {
        Some(("dns", rest)) => rest,
        Some((scheme, _)) => return Err(format!("`{key}`: only plain DNS server blocks (dns://) can be served, not {scheme}://")),
        None => key,
    };
    if rest.contains('/') {
        return Err(format!("`{key}`: write reverse zones by name (e.g. 10.in-addr.arpa), not as a network"));
    }
    let (zone, port) = match rest.rsplit_once(':') {
        Some((zone, port)) => (zone, port.parse::<u16>().map_err(|_| format!("`{key}`: `{port}` is not a port"))?),
        None => (rest, default_port),
    };
    let zone = if zone.is_empty() { "." } else { zone };
    Ok((zone.parse::<Zone>().map_err(|e| e.to_string())?, port))
}

fn seconds(text: &str) -> Option<u64> {
    text.parse::<u64>().ok()
}

fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

/// A Corefile address `[HOST]:PORT` where an empty host means every address.
fn listen_addr(text: &str, default_port: u16) -> Option<SocketAddr> {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, p.parse::<u16>().ok()?),
        _ => (text, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host {
        "" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

impl Mapper<'_> {
    fn refuse(&self, d: &Directive, message: impl Into<String>) -> CorefileError {
        CorefileError::Plugin { file: self.file.to_string(), line: d.line, plugin: d.name.clone(), message: message.into() }
    }

    fn block(&mut self, block: &ServerBlock) -> Result<(), CorefileError> {
        let mut zones = Vec::new();
        let mut port = None;
        for key in &block.keys {
            let (zone, key_port) = block_key(key, self.cx.default_port).map_err(|message| CorefileError::Syntax {
                file: self.file.to_string(),
                line: block.line,
                message,
            })?;
            if port.is_some_and(|p| p != key_port) {
                return Err(CorefileError::Syntax {
                    file: self.file.to_string(),
                    line: block.line,
                    message: "the zones of one block must share a port".into(),
                });
            }
            port = Some(key_port);
            zones.push(zone);
        }
        let port = port.unwrap_or(self.cx.default_port);
        let mut binds = Vec::new();
        let mut cached = false;
        let mut forwarded = false;
        for d in &block.directives {
            match d.name.as_str() {
                "bind" => binds.extend(self.bind(d, port)?),
                "forward" => {
                    self.forward(d, &zones)?;
                    forwarded = true;
                }
                "cache" => {
                    self.cache(d, &zones)?;
                    cached = true;
                }
                "hosts" => self.hosts(d, &zones)?,
                "prometheus" => {
                    let addr = self.address_arg(d, "localhost:9153")?;
                    set_once(&mut self.out.metrics, addr, d.line);
                }
                "health" => {
                    let addr = self.address_arg(d, ":8080")?;
                    for option in &d.block {
                        match option.name.as_str() {
                            "lameduck" => self.out.note(
                                "health lameduck",
                                option.line,
                                "nodedns drains for server.shutdown_grace after SIGTERM instead",
                            ),
                            _ => return Err(self.refuse(option, format!("`{}` is not an option of health", option.name))),
                        }
                    }
                    self.http(addr, d.line, "health");
                }
                "ready" => {
                    let addr = self.address_arg(d, ":8181")?;
                    self.http(addr, d.line, "ready");
                }
                "errors" => {
                    if !d.block.is_empty() {
                        self.out.note("errors { consolidate }", d.line, "nodedns logs upstream errors itself");
                    }
                }
                "log" => self.out.log_queries = Some(d.line),
                "debug" => self.out.debug = Some(d.line),
                "reload" => self.out.note(
                    "reload",
                    d.line,
                    "nodedns compares the Corefile every 2 s and on SIGHUP, and reloads what a reload can change",
                ),
                "loop" => self.out.note("loop", d.line, "nodedns probes every forwarded zone for loops while it runs, not only at start"),
                other => {
                    return Err(self.refuse(
                        d,
                        match other {
                            "kubernetes" | "file" | "auto" | "etcd" | "secondary" | "route53" | "clouddns" | "azure" => {
                                "nodedns is a cache and forwarder: serve this zone from CoreDNS and forward it there".to_string()
                            }
                            "rewrite" | "template" | "autopath" | "dnssec" | "sign" | "acl" | "view" | "whoami" | "any" | "chaos"
                            | "dns64" | "local" | "minimal" | "nsid" | "trace" | "transfer" | "tls" | "import" | "k8s_external"
                            | "erratic" | "header" | "metadata" | "pprof" | "root" | "timeouts" | "bufsize" => {
                                "not supported by nodedns; remove it, or keep this zone on CoreDNS".to_string()
                            }
                            _ => "not a plugin nodedns knows".to_string(),
                        },
                    ));
                }
            }
        }
        if binds.is_empty() {
            binds = vec![SocketAddr::from(([0, 0, 0, 0], port))];
        }
        binds.sort();
        binds.dedup();
        match &self.out.listen {
            None => self.out.listen = Some((binds, block.line)),
            Some((first, first_line)) if *first != binds => {
                return Err(CorefileError::Syntax {
                    file: self.file.to_string(),
                    line: block.line,
                    message: format!(
                        "this block listens on other addresses than the block on line {first_line}: nodedns serves every zone on every listen address"
                    ),
                });
            }
            Some(_) => {}
        }
        if !forwarded {
            for zone in &zones {
                if !self.out.routes.iter().any(|r| r.zone == *zone) && !self.out.hosts.iter().any(|h| h.zones.contains(zone)) {
                    self.out.routes.push(Route {
                        zone: zone.clone(),
                        upstreams: Vec::new(),
                        line: block.line,
                        note: Some("a block without forward: its other names are answered REFUSED".into()),
                    });
                }
            }
        }
        if cached {
            self.out.cached_zones += zones.len();
        } else {
            self.out.uncached_zones.extend(zones.iter().map(|z| (z.clone(), block.line)));
        }
        Ok(())
    }

    fn http(&mut self, addr: SocketAddr, line: usize, what: &'static str) {
        if !self.out.http.iter().any(|(a, _, _)| *a == addr) {
            self.out.http.push((addr, line, what));
        }
    }

    fn address_arg(&self, d: &Directive, default: &str) -> Result<SocketAddr, CorefileError> {
        if d.args.len() > 1 {
            return Err(self.refuse(d, "takes at most one address"));
        }
        let text = d.args.first().map_or(default, String::as_str);
        listen_addr(text, 0).filter(|a| a.port() != 0).ok_or_else(|| self.refuse(d, format!("`{text}` is not an address with a port")))
    }

    fn bind(&self, d: &Directive, port: u16) -> Result<Vec<SocketAddr>, CorefileError> {
        if !d.block.is_empty() {
            return Err(self.refuse(d, "bind { except } is not supported: list the addresses to serve"));
        }
        if d.args.is_empty() {
            return Err(self.refuse(d, "needs at least one address"));
        }
        d.args
            .iter()
            .map(|a| {
                a.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, port))
                    .map_err(|_| self.refuse(d, format!("`{a}` is not an IP address (interface names are not supported)")))
            })
            .collect()
    }

    fn forward(&mut self, d: &Directive, block_zones: &[Zone]) -> Result<(), CorefileError> {
        let [from, to @ ..] = d.args.as_slice() else {
            return Err(self.refuse(d, "needs FROM and at least one TO"));
        };
        if to.is_empty() {
            return Err(self.refuse(d, "needs at least one upstream after FROM"));
        }
        if to.len() > 15 {
            return Err(self.refuse(d, "more than 15 upstreams"));
        }
        let zones: Vec<Zone> = if from == "." {
            block_zones.to_vec()
        } else {
            let zone: Zone = from.parse().map_err(|e: crate::zones::BadZone| self.refuse(d, e.to_string()))?;
            if !block_zones.iter().any(|b| b.contains(zone.wire())) {
                return Err(self.refuse(d, format!("`{from}` is outside this block's zones: it would never be asked")));
            }
            vec![zone]
        };
        let mut force_tcp = false;
        let mut server_name = None;
        let mut except = Vec::new();
        let mut notes = Vec::new();
        for option in &d.block {
            let arg = |i: usize| option.args.get(i).map(String::as_str);
            let one = |what: &str| -> Result<&str, CorefileError> {
                match option.args.as_slice() {
                    [only] => Ok(only.as_str()),
                    _ => Err(self.refuse(option, format!("{} takes one {what}", option.name))),
                }
            };
            match option.name.as_str() {
                "force_tcp" => force_tcp = true,
                "prefer_udp" => notes.push("prefer_udp: nodedns always asks over UDP first (TCP on truncation)".to_string()),
                "except" => {
                    for name in &option.args {
                        except.push(name.parse::<Zone>().map_err(|e| self.refuse(option, e.to_string()))?);
                    }
                }
                "expire" => {
                    let text = one("duration")?;
                    duration(text).ok_or_else(|| self.refuse(option, format!("`{text}` is not a duration")))?;
                    set_once(&mut self.out.expire, text.to_string(), option.line);
                }
                "max_fails" => {
                    let text = one("count")?;
                    let n = text.parse::<u32>().map_err(|_| self.refuse(option, format!("`{text}` is not a count")))?;
                    set_once(&mut self.out.max_fails, n, option.line);
                }
                "health_check" => {
                    let text = arg(0).ok_or_else(|| self.refuse(option, "health_check takes a duration"))?;
                    duration(text).ok_or_else(|| self.refuse(option, format!("`{text}` is not a duration")))?;
                    set_once(&mut self.out.probe_interval, text.to_string(), option.line);
                    if option.args.len() > 1 {
                        notes.push(format!(
                            "health_check {}: nodedns's probe asks `. NS` without recursion wanted",
                            option.args[1..].join(" ")
                        ));
                    }
                }
                "policy" => {
                    let text = one("policy")?;
                    let policy = match text {
                        "random" | "round_robin" | "sequential" => text,
                        _ => return Err(self.refuse(option, format!("`{text}`: policy is random, round_robin or sequential"))),
                    };
                    set_once(&mut self.out.policy, policy.to_string(), option.line);
                }
                "max_concurrent" => {
                    let text = one("count")?;
                    let n = text.parse::<u64>().map_err(|_| self.refuse(option, format!("`{text}` is not a count")))?;
                    set_once(&mut self.out.max_concurrent, n, option.line);
                }
                "tls_servername" => server_name = Some(one("name")?.to_string()),
                "tls" if option.args.is_empty() => {}
                "tls" => {
                    return Err(
                        self.refuse(option, "client certificates are not supported; `tls` without arguments uses the system's roots")
                    );
                }
                "max_connect_attempts" => notes.push(format!(
                    "max_connect_attempts {}: nodedns races up to 6 connection attempts per pool connect",
                    option.args.join(" ")
                )),
                "next" | "failover" | "failfast_all_unhealthy_upstreams" => {
                    return Err(self.refuse(option, format!("forward option {} is not supported", option.name)));
                }
                _ => return Err(self.refuse(option, format!("`{}` is not an option of forward", option.name))),
            }
        }
        self.out.forwards += 1;
        let mut upstreams = Vec::new();
        for target in to {
            if target.starts_with('/') {
                if zones.len() == 1 && zones[0] == Zone::root() && to.len() == 1 && !force_tcp {
                    self.out.root_resolv_conf = Some((target.clone(), d.line));
                    continue;
                }
                let text = (self.cx.read_file)(target).map_err(|e| self.refuse(d, format!("cannot read {target}: {e}")))?;
                let servers = resolv_conf::ResolvConf::parse(&text).nameservers;
                if servers.is_empty() {
                    return Err(self.refuse(d, format!("{target} lists no nameserver")));
                }
                upstreams.extend(servers.iter().map(|s| upstream_text(&s.to_string(), force_tcp, None)));
                notes.push(format!("{target} read at load: its nameservers"));
                continue;
            }
            let spec = upstream_text(target, force_tcp, server_name.as_deref());
            spec.parse::<UpstreamSpec>().map_err(|e| self.refuse(d, e))?;
            upstreams.push(spec);
        }
        if force_tcp {
            notes.push("force_tcp: tcp://, over nodedns's pipelined connection pool".into());
        }
        for zone in zones {
            if self.out.routes.iter().any(|r| r.zone == zone) {
                return Err(self.refuse(d, format!("a second forward for zone {zone}")));
            }
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            self.out.routes.push(Route { zone, upstreams: upstreams.clone(), line: d.line, note });
        }
        for zone in except {
            self.out.routes.push(Route {
                zone,
                upstreams: Vec::new(),
                line: d.line,
                note: Some("except: not forwarded, answered REFUSED (CoreDNS: SERVFAIL when no later plugin answers)".into()),
            });
        }
        Ok(())
    }

    fn cache(&mut self, d: &Directive, block_zones: &[Zone]) -> Result<(), CorefileError> {
        let mut args = d.args.iter().peekable();
        let mut max = None;
        if let Some(first) = args.peek()
            && let Some(ttl) = seconds(first)
        {
            if ttl == 0 {
                return Err(self.refuse(d, "the TTL must be positive"));
            }
            max = Some(ttl);
            args.next();
        }
        let zones: Vec<Zone> = match args.map(|z| z.parse::<Zone>()).collect::<Result<Vec<_>, _>>() {
            Ok(z) if z.is_empty() => block_zones.to_vec(),
            Ok(z) => z,
            Err(e) => return Err(self.refuse(d, e.to_string())),
        };
        let mut positive = (COREDNS_MIN_TTL, max.unwrap_or(COREDNS_SUCCESS_MAX_TTL));
        let mut negative = (COREDNS_MIN_TTL, max.unwrap_or(COREDNS_DENIAL_MAX_TTL));
        let (mut positive_cap, mut negative_cap) = (COREDNS_CACHE_CAPACITY, COREDNS_CACHE_CAPACITY);
        let mut notes = Vec::new();
        for option in &d.block {
            let number = |i: usize| -> Result<Option<u64>, CorefileError> {
                option.args.get(i).map(|t| seconds(t).ok_or_else(|| self.refuse(option, format!("`{t}` is not a number")))).transpose()
            };
            match option.name.as_str() {
                "success" | "denial" => {
                    let capacity = number(0)?.ok_or_else(|| self.refuse(option, format!("{} needs a capacity", option.name)))?;
                    let (bounds, cap) =
                        if option.name == "success" { (&mut positive, &mut positive_cap) } else { (&mut negative, &mut negative_cap) };
                    *cap = capacity;
                    if let Some(ttl) = number(1)? {
                        bounds.1 = ttl;
                    }
                    if let Some(min) = number(2)? {
                        bounds.0 = min;
                    }
                }
                "prefetch" => {
                    let amount = number(0)?.ok_or_else(|| self.refuse(option, "prefetch needs an amount"))?;
                    let percent = option
                        .args
                        .iter()
                        .find_map(|a| a.strip_suffix('%'))
                        .map(|p| p.parse::<u32>().map_err(|_| self.refuse(option, format!("`{p}%` is not a percentage"))))
                        .transpose()?
                        .unwrap_or(10);
                    if amount == 0 || amount > 255 {
                        return Err(self.refuse(option, "nodedns's prefetch amount is between 1 and 255"));
                    }
                    if option.args.get(1).is_some_and(|a| !a.ends_with('%')) {
                        notes.push(format!("prefetch {}: nodedns counts hits in the last {percent}% of a lifetime", option.args.join(" ")));
                    }
                    set_once(&mut self.out.prefetch, format!("{{min_hits: {amount}, window_percent: {percent}}}"), option.line);
                }
                "serve_stale" => {
                    let age = option.args.first().map_or("1h", String::as_str);
                    duration(age).ok_or_else(|| self.refuse(option, format!("`{age}` is not a duration")))?;
                    if option.args.get(1).is_some_and(|m| m == "verify") {
                        notes.push("serve_stale verify: nodedns serves stale only when the upstream fails or is slow".into());
                    }
                    set_once(&mut self.out.serve_stale, age.to_string(), option.line);
                }
                "servfail" => {
                    let text = option.args.first().map(String::as_str).unwrap_or("");
                    duration(text).ok_or_else(|| self.refuse(option, format!("`{text}` is not a duration")))?;
                    set_once(&mut self.out.servfail, text.to_string(), option.line);
                }
                "disable" | "keepttl" => return Err(self.refuse(option, format!("cache option {} is not supported", option.name))),
                _ => return Err(self.refuse(option, format!("`{}` is not an option of cache", option.name))),
            }
        }
        // CoreDNS rounds a capacity down to its 256 shards.
        self.out.positive_entries += (positive_cap / 256 * 256).max(256);
        self.out.negative_entries += (negative_cap / 256 * 256).max(256);
        for zone in zones {
            if self.out.cache_zones.iter().any(|c| c.zone == zone) {
                return Err(self.refuse(d, format!("a second cache for zone {zone}")));
            }
            let note = (!notes.is_empty()).then(|| notes.join("; "));
            self.out.cache_zones.push(ZoneCache { zone, line: d.line, positive, negative, note });
        }
        Ok(())
    }

    fn hosts(&mut self, d: &Directive, block_zones: &[Zone]) -> Result<(), CorefileError> {
        let file = d.args.first().cloned().unwrap_or_else(|| "/etc/hosts".into());
        let zones = match d.args.get(1..).unwrap_or_default() {
            [] => block_zones.to_vec(),
            names => names.iter().map(|z| z.parse::<Zone>()).collect::<Result<_, _>>().map_err(|e| self.refuse(d, e.to_string()))?,
        };
        let mut hosts = Hosts {
            zones,
            entries: Vec::new(),
            file,
            reload: "5s".into(),
            ttl: COREDNS_HOSTS_TTL,
            reverse: true,
            fallthrough: Vec::new(),
            line: d.line,
        };
        for option in &d.block {
            match option.name.as_str() {
                "ttl" => {
                    let text = option.args.first().map(String::as_str).unwrap_or("");
                    hosts.ttl = seconds(text)
                        .filter(|t| (1..=65535).contains(t))
                        .ok_or_else(|| self.refuse(option, format!("`{text}`: ttl is seconds between 1 and 65535")))?;
                }
                "no_reverse" => hosts.reverse = false,
                "reload" => {
                    let text = option.args.first().map(String::as_str).unwrap_or("");
                    duration(text).ok_or_else(|| self.refuse(option, format!("`{text}` is not a duration")))?;
                    hosts.reload = text.to_string();
                }
                "fallthrough" => {
                    hosts.fallthrough = if option.args.is_empty() {
                        vec![Zone::root()]
                    } else {
                        option
                            .args
                            .iter()
                            .map(|z| z.parse::<Zone>())
                            .collect::<Result<_, _>>()
                            .map_err(|e| self.refuse(option, e.to_string()))?
                    };
                }
                first if first.parse::<IpAddr>().is_ok() => {
                    let line = std::iter::once(option.name.as_str()).chain(option.args.iter().map(String::as_str)).collect::<Vec<_>>();
                    if line.len() < 2 {
                        return Err(self.refuse(option, "an inline entry needs an address and at least one name"));
                    }
                    hosts.entries.push(line.join(" "));
                }
                other => return Err(self.refuse(option, format!("`{other}` is neither an option of hosts nor an address"))),
            }
        }
        self.out.hosts.push(hosts);
        Ok(())
    }
}

/// A CoreDNS upstream (`1.2.3.4`, `dns://1.2.3.4:53`, `tls://1.2.3.4`, `[fd00::1]:53`) in
/// nodedns's form.
fn upstream_text(target: &str, force_tcp: bool, server_name: Option<&str>) -> String {
    if let Some(rest) = target.strip_prefix("tls://") {
        let (addr, name) = match rest.split_once('%') {
            Some((a, n)) => (a, Some(n)),
            None => (rest, server_name),
        };
        return format!("tls://{addr}#{}", name.unwrap_or(""));
    }
    let addr = target.strip_prefix("dns://").unwrap_or(target);
    let addr = parse_addr(addr).map_or_else(|_| addr.to_string(), |a| a.to_string());
    if force_tcp { format!("tcp://{addr}") } else { addr }
}

/// One line of YAML, with its comment.
struct Lines(String);

impl Lines {
    fn line(&mut self, text: &str, comment: Option<&str>) {
        match comment {
            Some(c) => {
                let _ = writeln!(self.0, "{text}  # {c}");
            }
            None => {
                let _ = writeln!(self.0, "{text}");
            }
        }
    }
}

fn quoted(items: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// The comment of a setting nodedns holds once: where it came from, and who disagreed.
fn overruled<T>(once: &Once<T>, what: &str) -> Option<String> {
    Some(match once.overruled.is_empty() {
        true => what.to_string(),
        false => format!("{what}: one value for every zone in nodedns; {}", once.overruled.join(", ")),
    })
}

impl Mapped {
    fn note(&mut self, what: &str, line: usize, how: &str) {
        match self.notes.iter_mut().find(|(w, _, _)| w == what) {
            Some((_, lines, _)) => lines.push(line),
            None => self.notes.push((what.to_string(), vec![line], how.to_string())),
        }
    }

    fn render(&self, file: &str) -> String {
        let mut y = Lines(String::new());
        y.line(&format!("# nodedns configuration imported from the Corefile {file}."), None);
        for (what, lines, how) in &self.notes {
            let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
            y.line(&format!("# {what} (line {}): {how}", lines.join(", ")), None);
        }
        y.line(
            "# Clients: CoreDNS serves every client; nodedns serves loopback (server.allow) and, with node setup, any client on the addresses it owns.",
            None,
        );
        match &self.listen {
            Some((listen, line)) => y.line(&format!("listen: {}", quoted(listen)), Some(&format!("bind, line {line}"))),
            None => y.line("listen: []", Some("no server block")),
        }
        match &self.metrics {
            Some(m) => y.line(&format!("metrics: \"{}\"", m.value), overruled(m, &format!("prometheus, line {}", m.line)).as_deref()),
            None => y.line("metrics: off", Some("no prometheus plugin")),
        }
        if !self.http.is_empty() {
            y.line("http_listen:", Some("health and ready: /health, /ready and /metrics on each"));
            for (addr, line, what) in &self.http {
                y.line(&format!("  - \"{addr}\""), Some(&format!("{what}, line {line}")));
            }
        }
        let root = self.routes.iter().find(|r| r.zone == Zone::root());
        match (&self.root_resolv_conf, root) {
            (Some((path, line)), _) => {
                y.line(
                    &format!("resolv_conf: \"{path}\""),
                    Some(&format!("forward . {path}, line {line}: its nameservers, read again on reload")),
                );
                y.line("upstreams: []", None);
            }
            (None, Some(route)) if !route.upstreams.is_empty() => {
                y.line(&format!("upstreams: {}", quoted(&route.upstreams)), route.note.as_deref());
            }
            _ => {}
        }
        // `.` is written above as `upstreams` or `resolv_conf`; only a `.` with neither (no
        // forward at all: answered REFUSED) is a route here.
        let routes: Vec<&Route> =
            self.routes.iter().filter(|r| r.zone != Zone::root() || (r.upstreams.is_empty() && self.root_resolv_conf.is_none())).collect();
        if !routes.is_empty() {
            y.line("forward:", None);
            for route in routes {
                y.line(&format!("  - zone: \"{}\"", route.zone), Some(&format!("line {}", route.line)));
                y.line(&format!("    upstreams: {}", quoted(&route.upstreams)), route.note.as_deref());
            }
        }
        self.render_cache(&mut y);
        if !self.hosts.is_empty() {
            y.line("hosts:", None);
            for h in &self.hosts {
                y.line(&format!("  - zones: {}", quoted(&h.zones)), Some(&format!("line {}", h.line)));
                if !h.entries.is_empty() {
                    y.line("    entries:", None);
                    for e in &h.entries {
                        y.line(&format!("      - \"{e}\""), None);
                    }
                }
                y.line(&format!("    file: \"{}\"", h.file), None);
                y.line(&format!("    reload: {}", h.reload), None);
                y.line(&format!("    ttl: {}s", h.ttl), None);
                y.line(&format!("    reverse: {}", h.reverse), None);
                y.line(&format!("    fallthrough: {}", quoted(&h.fallthrough)), None);
            }
        }
        self.render_upstream(&mut y);
        if self.log_queries.is_some() || self.debug.is_some() {
            y.line("log:", None);
            if let Some(line) = self.debug {
                y.line("  level: debug", Some(&format!("debug, line {line}")));
            }
            if let Some(line) = self.log_queries {
                y.line("  queries: {enabled: true}", Some(&format!("log, line {line}: one JSON line per query")));
            }
        }
        y.0
    }

    fn render_cache(&self, y: &mut Lines) {
        y.line("cache:", None);
        let mut positive = Vec::new();
        let mut negative = Vec::new();
        let mut comment = None;
        if self.cached_zones > 0 {
            positive.push(format!("max_entries: {}", self.positive_entries));
            negative.push(format!("max_entries: {}", self.negative_entries));
            comment = Some("capacities of every block summed (nodedns has one cache)".to_string());
        }
        let root = self.cache_zones.iter().find(|c| c.zone == Zone::root());
        if let Some(c) = root {
            positive.push(format!("min_ttl: {}s, max_ttl: {}s", c.positive.0, c.positive.1));
            negative.push(format!("min_ttl: {}s, max_ttl: {}s", c.negative.0, c.negative.1));
            let bounds = format!("TTL bounds of cache, line {}, for every zone without its own", c.line);
            comment = Some(match (comment, &c.note) {
                (Some(cap), Some(note)) => format!("{cap}; {bounds}; {note}"),
                (Some(cap), None) => format!("{cap}; {bounds}"),
                (None, Some(note)) => format!("{bounds}; {note}"),
                (None, None) => bounds,
            });
        } else if self.uncached_zones.iter().any(|(z, _)| *z == Zone::root()) {
            positive.push("min_ttl: 0s, max_ttl: 0s".into());
            negative.push("min_ttl: 0s, max_ttl: 0s".into());
            comment = Some("the `.` block has no cache plugin: nothing is kept".into());
        }
        if !positive.is_empty() {
            y.line(&format!("  positive: {{{}}}", positive.join(", ")), comment.as_deref());
            y.line(&format!("  negative: {{{}}}", negative.join(", ")), None);
        }
        let zones: Vec<&ZoneCache> = self.cache_zones.iter().filter(|c| c.zone != Zone::root()).collect();
        let uncached: Vec<&(Zone, usize)> = self.uncached_zones.iter().filter(|(z, _)| *z != Zone::root()).collect();
        if !zones.is_empty() || !uncached.is_empty() {
            y.line("  zones:", None);
            for c in zones {
                y.line(&format!("    - zone: \"{}\"", c.zone), Some(&format!("cache, line {}", c.line)));
                y.line(&format!("      positive: {{min_ttl: {}s, max_ttl: {}s}}", c.positive.0, c.positive.1), c.note.as_deref());
                y.line(&format!("      negative: {{min_ttl: {}s, max_ttl: {}s}}", c.negative.0, c.negative.1), None);
            }
            for (zone, line) in uncached {
                y.line(&format!("    - zone: \"{zone}\""), Some(&format!("the block on line {line} has no cache plugin: nothing is kept")));
                y.line("      positive: {min_ttl: 0s, max_ttl: 0s}", None);
                y.line("      negative: {min_ttl: 0s, max_ttl: 0s}", None);
            }
        }
        match &self.serve_stale {
            Some(s) => y.line(
                &format!("  serve_stale: {{max_age: {}}}", s.value),
                overruled(s, &format!("serve_stale, line {}", s.line)).as_deref(),
            ),
            None => y.line("  serve_stale: {max_age: 0s}", Some("no serve_stale: CoreDNS serves no expired answer")),
        }
        match &self.prefetch {
            Some(p) => y.line(&format!("  prefetch: {}", p.value), overruled(p, &format!("prefetch, line {}", p.line)).as_deref()),
            None => y.line("  prefetch: {min_hits: 0}", Some("no prefetch: CoreDNS refreshes nothing ahead of expiry")),
        }
        if let Some(s) = &self.servfail {
            y.line(&format!("  servfail_ttl: {}", s.value), overruled(s, &format!("servfail, line {}", s.line)).as_deref());
        }
    }

    fn render_upstream(&self, y: &mut Lines) {
        if self.forwards == 0 {
            return;
        }
        y.line("upstream:", Some("forward's settings; CoreDNS's defaults where the Corefile sets none"));
        let once = |v: &Option<Once<String>>, default: &str, what: &str| -> (String, Option<String>) {
            match v {
                Some(o) => (o.value.clone(), overruled(o, &format!("{what}, line {}", o.line))),
                None => (default.to_string(), None),
            }
        };
        let (max_fails, note) = match &self.max_fails {
            Some(o) => (o.value, overruled(o, &format!("max_fails, line {}", o.line))),
            None => (COREDNS_MAX_FAILS, None),
        };
        y.line(&format!("  max_fails: {max_fails}"), note.as_deref());
        let (interval, note) = once(&self.probe_interval, COREDNS_HEALTH_CHECK, "health_check");
        y.line(&format!("  probe_interval: {interval}"), note.as_deref());
        let (policy, note) = once(&self.policy, "random", "policy");
        y.line(&format!("  policy: {policy}"), note.as_deref());
        let (expire, note) = once(&self.expire, COREDNS_EXPIRE, "expire");
        y.line(&format!("  pool: {{idle_timeout: {expire}}}"), note.as_deref());
        if let Some(m) = &self.max_concurrent {
            let mut note = format!("max_concurrent, line {}: beyond it nodedns answers SERVFAIL, CoreDNS REFUSED", m.line);
            if let Some(o) = overruled(m, "max_concurrent") {
                note = format!("{note}; {o}");
            }
            y.line(&format!("server: {{max_inflight_misses: {}}}", m.value), Some(&note));
        }
    }
}

#[cfg(test)]
mod tests;

//! resolv.conf: the node's, read for its `nameserver` lines when no upstream is configured
//! and for its search list; and a pod's, read whole (options included) by the diagnostics
//! that model what a pod's libc sends.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Nameservers listed in `path`, on port 53, in order.
pub fn nameservers_from(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e} (configure upstreams or pass --upstream)", path.display()))?;
    let servers = nameservers(&text);
    if servers.is_empty() {
        return Err(format!("{}: no nameserver line (configure upstreams or pass --upstream)", path.display()));
    }
    Ok(servers)
}

/// Parses the `nameserver` lines of resolv.conf text; IPv6 scope suffixes are not supported
/// and such lines are skipped.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?.trim();
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The suffixes of the last `search` (or `domain`) line of resolv.conf text, as glibc reads it.
pub fn search_list(text: &str) -> Vec<String> {
    let mut list = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            list = words.map(str::to_string).collect();
        }
    }
    list
}

/// A whole resolv.conf as glibc reads it: later `search`/`domain` lines replace earlier
/// ones, options are clamped to glibc's limits, unknown options are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    /// Dots a name needs to be tried as-is before the search list (glibc: at most 15).
    pub ndots: usize,
    /// Seconds to wait for an answer before trying again (glibc: at most 30).
    pub timeout: u32,
    /// Rounds over the nameservers (glibc: at most 5).
    pub attempts: u32,
    /// A and AAAA one after the other instead of at once.
    pub single_request: bool,
    /// As `single_request`, with a new socket for the second query.
    pub single_request_reopen: bool,
    /// TCP for every query.
    pub use_vc: bool,
    /// Only A, never AAAA, for address lookups (glibc 2.36+).
    pub no_aaaa: bool,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: 5,
            attempts: 2,
            single_request: false,
            single_request_reopen: false,
            use_vc: false,
            no_aaaa: false,
        }
    }
}

impl ResolvConf {
    /// What the kubelet writes for a pod with `dnsPolicy: ClusterFirst` in `namespace`.
    pub fn kubernetes_pod(namespace: &str, cluster_domain: &str, nameserver: IpAddr) -> ResolvConf {
        ResolvConf {
            nameservers: vec![SocketAddr::new(nameserver, 53)],
            search: vec![format!("{namespace}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_string()],
            ndots: 5,
            ..ResolvConf::default()
        }
    }

    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf { nameservers: nameservers(text), search: search_list(text), ..ResolvConf::default() };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("options") {
                continue;
            }
            for option in words {
                let (key, value) = option.split_once(':').unwrap_or((option, ""));
                let number = value.parse::<u32>().ok();
                match (key, number) {
                    ("ndots", Some(n)) => conf.ndots = n.min(15) as usize,
                    ("timeout", Some(n)) => conf.timeout = n.clamp(1, 30),
                    ("attempts", Some(n)) => conf.attempts = n.clamp(1, 5),
                    ("single-request", _) => conf.single_request = true,
                    ("single-request-reopen", _) => conf.single_request_reopen = true,
                    ("use-vc", _) => conf.use_vc = true,
                    ("no-aaaa", _) => conf.no_aaaa = true,
                    _ => {}
                }
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameserver_lines_in_order_and_skips_the_rest() {
        let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver ::1 # v6\nnameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(nameservers(text), vec!["10.96.0.10:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(search_list(text), ["default.svc.cluster.local"]);
    }

    #[test]
    fn reads_options_clamped_to_glibc_limits() {
        let conf = ResolvConf::parse(
            "search a.example b.example\nnameserver 10.0.0.1\noptions ndots:20 timeout:0 attempts:9 single-request use-vc rotate edns0\n",
        );
        assert_eq!(conf.search, ["a.example", "b.example"]);
        assert_eq!((conf.ndots, conf.timeout, conf.attempts), (15, 1, 5));
        assert!(conf.single_request && conf.use_vc && !conf.single_request_reopen && !conf.no_aaaa);
        let defaults = ResolvConf::parse("nameserver 10.0.0.1\n");
        assert_eq!((defaults.ndots, defaults.timeout, defaults.attempts), (1, 5, 2));
    }

    #[test]
    fn the_kubernetes_default_matches_what_the_kubelet_writes() {
        let written = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        assert_eq!(ResolvConf::kubernetes_pod("default", "cluster.local", "10.96.0.10".parse().unwrap()), ResolvConf::parse(written));
    }
}

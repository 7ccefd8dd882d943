//! The node's resolv.conf, read for its `nameserver` lines when no upstream is configured.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Nameservers listed in `path`, on port 53, in order.
pub fn nameservers_from(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e} (configure upstreams or pass --upstream)", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameserver_lines_in_order_and_skips_the_rest() {
        let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver ::1 # v6\nnameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(nameservers(text), vec!["10.96.0.10:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(search_list(text), ["default.svc.cluster.local"]);
    }
}

//! Zone routing: which upstream group answers a name. The longest configured zone that
//! ends the name wins; `.` is the default. Owns the [`Zone`] value type; knows nothing of
//! sockets or caching.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::upstream::UpstreamSpec;
use crate::wire::name::{self, LowerName, LowerNameBuf};

/// A zone apex, stored lower-cased in wire form and shown with a trailing dot.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Zone(LowerNameBuf);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a domain name (empty or over-long label, or over 255 octets)")]
pub struct BadZone(String);

impl FromStr for Zone {
    type Err = BadZone;
    fn from_str(s: &str) -> Result<Self, BadZone> {
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.contains(char::is_whitespace) {
            return Err(BadZone(s.to_string()));
        }
        name::from_text(trimmed).map(Zone).ok_or_else(|| BadZone(s.to_string()))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&name::to_text(self.0.as_name().as_bytes()))
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({self})")
    }
}

impl Zone {
    pub fn root() -> Zone {
        Zone(LowerName::ROOT.to_owned())
    }
    /// The apex.
    pub fn wire(&self) -> LowerName<'_> {
        self.0.as_name()
    }
    /// Whether `qname` is this zone or below it.
    #[inline]
    pub fn contains(&self, qname: LowerName<'_>) -> bool {
        qname.ends_with(self.0.as_name())
    }
    fn depth(&self) -> usize {
        self.0.as_name().as_bytes().len()
    }
}

/// The upstream servers that answer for one zone. `T` is how a server is described: its
/// configured [`UpstreamSpec`] here, the running upstream in `forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamGroup<T = UpstreamSpec> {
    pub zone: Zone,
    pub servers: Vec<T>,
}

/// Every configured group, most specific zone first.
#[derive(Debug, Clone, PartialEq)]
pub struct Router<T = UpstreamSpec> {
    groups: Vec<Arc<UpstreamGroup<T>>>,
}

impl<T> Router<T> {
    /// Builds the table; a later group for the same zone replaces an earlier one.
    pub fn new(groups: impl IntoIterator<Item = UpstreamGroup<T>>) -> Router<T> {
        let mut list: Vec<Arc<UpstreamGroup<T>>> = Vec::new();
        for g in groups {
            list.retain(|old| old.zone != g.zone);
            list.push(Arc::new(g));
        }
        list.sort_by_key(|g| std::cmp::Reverse(g.zone.depth()));
        Router { groups: list }
    }

    /// The group for `qname`, or `None` when no zone covers it.
    #[inline]
    pub fn route(&self, qname: LowerName<'_>) -> Option<&Arc<UpstreamGroup<T>>> {
        // Sorted by wire length, so the first match is the longest suffix.
        self.groups.iter().find(|g| g.zone.contains(qname))
    }

    pub fn groups(&self) -> &[Arc<UpstreamGroup<T>>] {
        &self.groups
    }

    /// The same table with every server described by `f(server)` instead.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Router<U> {
        let groups =
            self.groups.iter().map(|g| Arc::new(UpstreamGroup { zone: g.zone.clone(), servers: g.servers.iter().map(&mut f).collect() }));
        Router { groups: groups.collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(zone: &str, port: u16) -> UpstreamGroup {
        UpstreamGroup { zone: zone.parse().unwrap(), servers: vec![UpstreamSpec::prefer_udp(([127, 0, 0, 1], port).into())] }
    }

    fn port_for(router: &Router, qname: &str) -> Option<u16> {
        router.route(name::from_text(qname).unwrap().as_name()).map(|g| g.servers[0].addr.port())
    }

    #[test]
    fn longest_suffix_wins_and_root_is_the_default() {
        let r = Router::new([group(".", 1), group("cluster.local", 2), group("svc.cluster.local.", 3)]);
        assert_eq!(port_for(&r, "example.com"), Some(1));
        assert_eq!(port_for(&r, "cluster.local"), Some(2));
        assert_eq!(port_for(&r, "kube-dns.kube-system.svc.Cluster.Local"), Some(3));
        assert_eq!(port_for(&r, "notcluster.local"), Some(1));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = Router::new([group("cluster.local", 2)]);
        assert_eq!(port_for(&r, "example.com"), None);
    }

    #[test]
    fn later_group_for_same_zone_replaces_earlier() {
        let r = Router::new([group("a.example", 1), group("A.example.", 2)]);
        assert_eq!(r.groups().len(), 1);
        assert_eq!(port_for(&r, "x.a.example"), Some(2));
    }

    #[test]
    fn zone_parses_and_displays_canonically() {
        assert_eq!("Cluster.Local".parse::<Zone>().unwrap().to_string(), "cluster.local.");
        assert_eq!(".".parse::<Zone>().unwrap(), Zone::root());
        assert!("a..b".parse::<Zone>().is_err());
        assert!("".parse::<Zone>().is_err());
    }
}

//! Who gets served: the allowed client networks (nodedns must never become an open
//! resolver) and a per-client token bucket (one noisy pod must not starve the others).
//! Decides only; the handler writes whatever answer the verdict calls for.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use quick_cache::sync::Cache as QuickCache;

use crate::ratelimit::TokenBucket;

/// What a client that may not be served gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// An answer with REFUSED.
    Refuse,
    /// Nothing: the cheapest reply to a flood, and no reflection.
    Drop,
    /// An empty answer with TC set: a real client retries over TCP, a spoofed source cannot
    /// (response-rate-limiting's "slip").
    Truncate,
}

/// The decision for one query, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Serve,
    Deny(Action, Reason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The source is outside every allowed network.
    NotAllowed,
    /// The source is over its queries-per-second allowance.
    RateLimited,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowed => "acl",
            Reason::RateLimited => "rate_limit",
        }
    }
}

/// Per-client limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientLimit {
    pub qps: u32,
    pub burst: u32,
    pub action: Action,
    /// Clients tracked at once; the least recently seen are forgotten first.
    pub table_size: usize,
}

pub struct Admission {
    allow: Vec<IpNet>,
    deny_action: Action,
    limit: Option<(ClientLimit, QuickCache<IpAddr, Arc<TokenBucket>>)>,
}

impl Admission {
    pub fn new(allow: Vec<IpNet>, deny_action: Action, limit: Option<ClientLimit>) -> Self {
        let limit = limit.filter(|l| l.qps > 0).map(|l| (l, QuickCache::new(l.table_size.max(16))));
        Admission { allow, deny_action, limit }
    }

    #[inline]
    pub fn check(&self, client: IpAddr, now: Instant) -> Verdict {
        let client = canonical(client);
        if !self.allow.iter().any(|net| net.contains(&client)) {
            return Verdict::Deny(self.deny_action, Reason::NotAllowed);
        }
        match &self.limit {
            Some((limit, table)) if !take_token(table, limit, client, now) => Verdict::Deny(limit.action, Reason::RateLimited),
            _ => Verdict::Serve,
        }
    }
}

/// IPv4 clients of a dual-stack socket arrive as `::ffff:a.b.c.d`; match them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn take_token(table: &QuickCache<IpAddr, Arc<TokenBucket>>, limit: &ClientLimit, client: IpAddr, now: Instant) -> bool {
    let bucket = match table.get(&client) {
        Some(b) => b,
        None => {
            let b = Arc::new(TokenBucket::new(limit.qps, limit.burst, now));
            table.insert(client, b.clone());
            b
        }
    };
    bucket.try_take(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn only_allowed_networks_are_served() {
        let a = Admission::new(nets(&["127.0.0.0/8", "10.244.0.0/16"]), Action::Drop, None);
        let now = Instant::now();
        assert_eq!(a.check("127.0.0.1".parse().unwrap(), now), Verdict::Serve);
        assert_eq!(a.check("10.244.3.7".parse().unwrap(), now), Verdict::Serve);
        assert_eq!(a.check("::ffff:10.244.3.7".parse().unwrap(), now), Verdict::Serve);
        assert_eq!(a.check("10.245.0.1".parse().unwrap(), now), Verdict::Deny(Action::Drop, Reason::NotAllowed));
        assert_eq!(a.check("::1".parse().unwrap(), now), Verdict::Deny(Action::Drop, Reason::NotAllowed));
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let limit = ClientLimit { qps: 10, burst: 5, action: Action::Truncate, table_size: 100 };
        let a = Admission::new(nets(&["127.0.0.0/8"]), Action::Refuse, Some(limit));
        let now = Instant::now();
        let noisy: IpAddr = "127.0.0.2".parse().unwrap();
        let quiet: IpAddr = "127.0.0.3".parse().unwrap();
        let served = (0..20).filter(|_| a.check(noisy, now) == Verdict::Serve).count();
        assert_eq!(served, 5, "burst, then limited");
        assert_eq!(a.check(noisy, now), Verdict::Deny(Action::Truncate, Reason::RateLimited));
        assert_eq!(a.check(quiet, now), Verdict::Serve, "another client is unaffected");
        assert_eq!(a.check(noisy, now + Duration::from_millis(200)), Verdict::Serve, "refilled at 10/s");
    }
}

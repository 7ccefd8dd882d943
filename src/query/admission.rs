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
    Deny(Action, DenyReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The source is outside every allowed network.
    NotAllowed,
    /// The source is over its queries-per-second allowance.
    RateLimited,
}

impl Action {
    /// Its place in `metrics::DENIED_ACTIONS`.
    pub fn metric_index(self) -> usize {
        match self {
            Action::Refuse => 0,
            Action::Drop => 1,
            Action::Truncate => 2,
        }
    }
}

impl DenyReason {
    /// Its place in `metrics::DENIED_REASONS`.
    pub fn metric_index(self) -> usize {
        match self {
            DenyReason::NotAllowed => 0,
            DenyReason::RateLimited => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAllowed => "acl",
            DenyReason::RateLimited => "rate_limit",
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
    /// Addresses whose queries are served whatever their source: the node's own link-local
    /// and service addresses, which only the node's pods and host can reach.
    open: Vec<IpAddr>,
    deny_action: Action,
    limit: Option<(ClientLimit, QuickCache<IpAddr, Arc<TokenBucket>>)>,
}

impl Admission {
    pub fn new(allow: Vec<IpNet>, open: Vec<IpAddr>, deny_action: Action, limit: Option<ClientLimit>) -> Self {
        let limit = limit.filter(|l| l.qps > 0).map(|l| (l, QuickCache::new(l.table_size.max(16))));
        Admission { allow, open, deny_action, limit }
    }

    /// Whether the query of `client`, sent to `local`, is served.
    #[inline]
    pub fn check(&self, client: IpAddr, local: IpAddr, now: Instant) -> Verdict {
        let client = canonical(client);
        if !self.open.contains(&canonical(local)) && !self.allow.iter().any(|net| net.contains(&client)) {
            return Verdict::Deny(self.deny_action, DenyReason::NotAllowed);
        }
        match &self.limit {
            Some((limit, table)) if !take_token(table, limit, client, now) => Verdict::Deny(limit.action, DenyReason::RateLimited),
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
    // Found or created in one step: with a lookup then an insert, two first packets of a
    // client on two workers could each make a full bucket, and the client get two bursts.
    // The cache holds the other callers for this key until the bucket is in.
    let Ok(bucket) =
        table.get_or_insert_with(&client, || Ok::<_, std::convert::Infallible>(Arc::new(TokenBucket::new(limit.qps, limit.burst, now))));
    bucket.try_take(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_and_action_counts_under_its_own_label() {
        for reason in [DenyReason::NotAllowed, DenyReason::RateLimited] {
            assert_eq!(crate::metrics::DENIED_REASONS[reason.metric_index()], reason.as_str());
        }
        let actions = [(Action::Refuse, "refuse"), (Action::Drop, "drop"), (Action::Truncate, "truncate")];
        for (action, label) in actions {
            assert_eq!(crate::metrics::DENIED_ACTIONS[action.metric_index()], label);
        }
    }
    use std::time::Duration;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// A wildcard listener's address: never open.
    const ANY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

    #[test]
    fn queries_to_an_open_address_are_served_from_any_source() {
        let link_local: IpAddr = "169.254.20.10".parse().unwrap();
        let a = Admission::new(nets(&["127.0.0.0/8"]), vec![link_local, "fd00::10".parse().unwrap()], Action::Refuse, None);
        let now = Instant::now();
        for pod in ["100.96.3.4", "fd00:10:244::5", "10.244.1.9"] {
            assert_eq!(a.check(pod.parse().unwrap(), link_local, now), Verdict::Serve, "{pod} on the node-local address");
            assert_eq!(a.check(pod.parse().unwrap(), ANY, now), Verdict::Deny(Action::Refuse, DenyReason::NotAllowed), "{pod} elsewhere");
        }
        assert_eq!(a.check("fd00:10:244::5".parse().unwrap(), "fd00::10".parse().unwrap(), now), Verdict::Serve);
        assert_eq!(a.check("100.96.3.4".parse().unwrap(), "::ffff:169.254.20.10".parse().unwrap(), now), Verdict::Serve);
    }

    #[test]
    fn only_allowed_networks_are_served() {
        let a = Admission::new(nets(&["127.0.0.0/8", "10.244.0.0/16"]), Vec::new(), Action::Drop, None);
        let now = Instant::now();
        assert_eq!(a.check("127.0.0.1".parse().unwrap(), ANY, now), Verdict::Serve);
        assert_eq!(a.check("10.244.3.7".parse().unwrap(), ANY, now), Verdict::Serve);
        assert_eq!(a.check("::ffff:10.244.3.7".parse().unwrap(), ANY, now), Verdict::Serve);
        assert_eq!(a.check("10.245.0.1".parse().unwrap(), ANY, now), Verdict::Deny(Action::Drop, DenyReason::NotAllowed));
        assert_eq!(a.check("::1".parse().unwrap(), ANY, now), Verdict::Deny(Action::Drop, DenyReason::NotAllowed));
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let limit = ClientLimit { qps: 10, burst: 5, action: Action::Truncate, table_size: 100 };
        let a = Admission::new(nets(&["127.0.0.0/8"]), Vec::new(), Action::Refuse, Some(limit));
        let now = Instant::now();
        let noisy: IpAddr = "127.0.0.2".parse().unwrap();
        let quiet: IpAddr = "127.0.0.3".parse().unwrap();
        let served = (0..20).filter(|_| a.check(noisy, ANY, now) == Verdict::Serve).count();
        assert_eq!(served, 5, "burst, then limited");
        assert_eq!(a.check(noisy, ANY, now), Verdict::Deny(Action::Truncate, DenyReason::RateLimited));
        assert_eq!(a.check(quiet, ANY, now), Verdict::Serve, "another client is unaffected");
        assert_eq!(a.check(noisy, ANY, now + Duration::from_millis(200)), Verdict::Serve, "refilled at 10/s");
    }

    #[test]
    fn racing_first_packets_of_a_client_share_one_burst() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Barrier, Mutex};
        const THREADS: usize = 4;
        const ROUNDS: usize = 2000;
        let limit = ClientLimit { qps: 1, burst: 1, action: Action::Drop, table_size: 2 * ROUNDS };
        let a = Admission::new(nets(&["10.0.0.0/8"]), Vec::new(), Action::Drop, Some(limit));
        let now = Instant::now();
        let served: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
        let barrier = Barrier::new(THREADS);
        let worst = Mutex::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for (round, count) in served.iter().enumerate() {
                        // A client never seen before each round, its first packets at once.
                        let client = IpAddr::from([10, 0, (round >> 8) as u8, round as u8]);
                        barrier.wait();
                        if a.check(client, ANY, now) == Verdict::Serve {
                            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                            let mut worst = worst.lock().unwrap();
                            *worst = (*worst).max(n);
                        }
                    }
                });
            }
        });
        assert_eq!(*worst.lock().unwrap(), 1, "one burst (1) per client, however its first packets race");
    }
}

//! The validated settings, and their two parts a reload treats differently: what a running
//! process changes in place ([`Reloadable`]) and what only a restart changes
//! ([`RestartOnly`]). Each setting is a field of exactly one part; both parts are
//! destructured without `..` where they are applied or compared, so a new field does not
//! compile until it is handled.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use crate::cache::{Capacity, TtlPolicy, ZoneTtl};
use crate::forward::ForwardSettings;
use crate::kubernetes::NamingSettings;
use crate::node::NodeSettings;
use crate::query::admission::{Action, ClientLimit};
use crate::query::handler::HandlerSettings;
use crate::query::querylog;
use crate::upstream::UpstreamSettings;
use crate::zones::Router;

use super::LogFormat;

/// The validated settings, in the two parts a reload treats differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub reloadable: Reloadable,
    pub restart_only: RestartOnly,
}

/// What a reload swaps into the running process: each field is what one running part is
/// given, so applying it is one call per field.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloadable {
    pub router: Router,
    pub upstream: Compared<UpstreamSettings>,
    pub forward: ForwardSettings,
    pub handler: HandlerSettings,
    pub admission: AdmissionSettings,
    pub query_log: querylog::Selection,
    pub hosts: Vec<crate::hosts::BlockSettings>,
}

/// What a running process keeps from its start: a reload that changes one of these warns by
/// name ([`RestartOnly::differing`]) and goes on with the running value. They need new
/// sockets, threads, a new cache, or were used once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartOnly {
    pub listen: Vec<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// More addresses of the HTTP endpoint.
    pub http_listen: Vec<SocketAddr>,
    pub cache: CacheSettings,
    pub node: NodeSettings,
    pub naming: NamingSettings,
    pub handover_socket: Option<PathBuf>,
    pub shutdown_grace: Duration,
    pub udp_workers: usize,
    pub pin_udp_workers: bool,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_clients: usize,
    pub max_tcp_inflight: usize,
    pub max_tcp_per_client: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub query_log_output: querylog::Output,
}

/// Cache bounds and TTL policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub positive: Capacity,
    pub negative: Capacity,
    pub ttl: TtlPolicy,
    /// The snapshot file for warm restarts.
    pub snapshot: Option<PathBuf>,
    /// Zones whose names have TTL bounds of their own.
    pub zones: Vec<ZoneTtl>,
}

/// Who is served: allowed networks, what the others get, and the per-client rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionSettings {
    pub allow: Vec<ipnet::IpNet>,
    /// Served whatever the client: the addresses node setup owns.
    pub open: Vec<std::net::IpAddr>,
    pub deny_action: Action,
    pub client_limit: Option<ClientLimit>,
}

/// A setting whose type has no equality of its own, compared here by what a reload must
/// notice. Reads as the value it wraps.
#[derive(Debug, Clone)]
pub struct Compared<T>(pub T);

impl<T> Deref for Compared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl Compared<UpstreamSettings> {
    /// The TLS roots count by their presence only: a `rustls::ClientConfig` cannot be
    /// compared, and running upstreams keep the roots they started with.
    fn compared(&self) -> impl PartialEq + '_ {
        let UpstreamSettings { min_timeout, max_timeout, max_fails, probe_interval, max_qps, pool, query, tls } = &self.0;
        (min_timeout, max_timeout, max_fails, probe_interval, max_qps, pool, query, tls.is_some())
    }
}

impl PartialEq for Compared<UpstreamSettings> {
    fn eq(&self, other: &Self) -> bool {
        self.compared() == other.compared()
    }
}

impl RestartOnly {
    /// The configuration keys whose values differ between `self` and `other`.
    pub fn differing(&self, other: &RestartOnly) -> Vec<&'static str> {
        // No `..`: a new field does not compile until it is compared here under its key.
        let RestartOnly {
            listen,
            metrics,
            http_listen,
            cache,
            node,
            naming,
            handover_socket,
            shutdown_grace,
            udp_workers,
            pin_udp_workers,
            tcp_idle_timeout,
            max_tcp_clients,
            max_tcp_inflight,
            max_tcp_per_client,
            log_level,
            log_format,
            query_log_output,
        } = self;
        let changed = [
            ("listen", *listen != other.listen),
            ("metrics", *metrics != other.metrics),
            ("http_listen", *http_listen != other.http_listen),
            ("cache", *cache != other.cache),
            ("node", *node != other.node),
            ("kubernetes", *naming != other.naming),
            ("server.handover_socket", *handover_socket != other.handover_socket),
            ("server.shutdown_grace", *shutdown_grace != other.shutdown_grace),
            ("server.udp_workers", *udp_workers != other.udp_workers),
            ("server.pin_udp_workers", *pin_udp_workers != other.pin_udp_workers),
            ("server.tcp_idle_timeout", *tcp_idle_timeout != other.tcp_idle_timeout),
            ("server.max_tcp_clients", *max_tcp_clients != other.max_tcp_clients),
            ("server.max_tcp_inflight", *max_tcp_inflight != other.max_tcp_inflight),
            ("server.max_tcp_per_client", *max_tcp_per_client != other.max_tcp_per_client),
            ("log.level", *log_level != other.log_level),
            ("log.format", *log_format != other.log_format),
            ("log.queries.output", *query_log_output != other.query_log_output),
        ];
        changed.into_iter().filter(|&(_, differs)| differs).map(|(key, _)| key).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, parse_file};

    fn built(yaml: &str) -> (Reloadable, RestartOnly) {
        let settings = Settings::build(parse_file("f", yaml).unwrap_or_else(|e| panic!("{e}")), Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        (settings.reloadable, settings.restart_only)
    }

    const BASE: &str = "upstreams: [10.0.0.1]\n";

    /// Every restart-only setting changed at once. A struct literal without `..`: a new
    /// field does not compile until it has a changed value here.
    fn all_changed(base: &RestartOnly) -> RestartOnly {
        RestartOnly {
            listen: vec!["127.0.0.2:53".parse().unwrap()],
            metrics: None,
            http_listen: vec!["127.0.0.1:8080".parse().unwrap()],
            cache: CacheSettings { snapshot: Some("/var/lib/nodedns/cache".into()), ..base.cache.clone() },
            node: NodeSettings { enabled: !base.node.enabled, ..base.node.clone() },
            naming: NamingSettings { enabled: !base.naming.enabled, ..base.naming.clone() },
            handover_socket: Some("/run/nodedns.sock".into()),
            shutdown_grace: base.shutdown_grace + Duration::from_secs(1),
            udp_workers: base.udp_workers + 1,
            pin_udp_workers: !base.pin_udp_workers,
            tcp_idle_timeout: base.tcp_idle_timeout + Duration::from_secs(1),
            max_tcp_clients: base.max_tcp_clients + 1,
            max_tcp_inflight: base.max_tcp_inflight + 1,
            max_tcp_per_client: base.max_tcp_per_client + 1,
            log_level: "debug".into(),
            log_format: LogFormat::Json,
            query_log_output: querylog::Output::Stderr,
        }
    }

    /// `base` with one setting of [`all_changed`] at a time, and the key it must be reported by.
    fn one_at_a_time(base: &RestartOnly) -> Vec<(&'static str, RestartOnly)> {
        let other = all_changed(base);
        let with = |take: fn(&mut RestartOnly, &RestartOnly)| {
            let mut changed = base.clone();
            take(&mut changed, &other);
            changed
        };
        vec![
            ("listen", with(|r, o| r.listen = o.listen.clone())),
            ("metrics", with(|r, o| r.metrics = o.metrics)),
            ("http_listen", with(|r, o| r.http_listen = o.http_listen.clone())),
            ("cache", with(|r, o| r.cache = o.cache.clone())),
            ("node", with(|r, o| r.node = o.node.clone())),
            ("kubernetes", with(|r, o| r.naming = o.naming.clone())),
            ("server.handover_socket", with(|r, o| r.handover_socket = o.handover_socket.clone())),
            ("server.shutdown_grace", with(|r, o| r.shutdown_grace = o.shutdown_grace)),
            ("server.udp_workers", with(|r, o| r.udp_workers = o.udp_workers)),
            ("server.pin_udp_workers", with(|r, o| r.pin_udp_workers = o.pin_udp_workers)),
            ("server.tcp_idle_timeout", with(|r, o| r.tcp_idle_timeout = o.tcp_idle_timeout)),
            ("server.max_tcp_clients", with(|r, o| r.max_tcp_clients = o.max_tcp_clients)),
            ("server.max_tcp_inflight", with(|r, o| r.max_tcp_inflight = o.max_tcp_inflight)),
            ("server.max_tcp_per_client", with(|r, o| r.max_tcp_per_client = o.max_tcp_per_client)),
            ("log.level", with(|r, o| r.log_level = o.log_level.clone())),
            ("log.format", with(|r, o| r.log_format = o.log_format)),
            ("log.queries.output", with(|r, o| r.query_log_output = o.query_log_output.clone())),
        ]
    }

    #[test]
    fn each_restart_only_setting_is_reported_alone_by_its_key() {
        let (_, base) = built(BASE);
        for (key, changed) in one_at_a_time(&base) {
            assert_eq!(base.differing(&changed), vec![key], "{key} changed alone");
        }
    }

    #[test]
    fn every_restart_only_setting_has_a_case_of_its_own() {
        let (_, base) = built(BASE);
        let mut reported = base.differing(&all_changed(&base));
        let mut cased: Vec<&str> = one_at_a_time(&base).into_iter().map(|(key, _)| key).collect();
        reported.sort_unstable();
        cased.sort_unstable();
        assert_eq!(reported, cased, "each key reported when everything changes has one case in one_at_a_time");
        assert!(reported.windows(2).all(|w| w[0] != w[1]), "no two settings share a key: {reported:?}");
    }

    #[test]
    fn reloadable_keys_change_the_reloadable_part_and_are_reported_by_no_key() {
        let (live, fixed) = built(BASE);
        let changes = [
            "upstreams: [10.0.0.2]\n",
            "forward:\n  - zone: example.org\n    upstreams: [10.0.0.3]\n",
            "upstream:\n  timeout: 1s\n",
            "upstream:\n  policy: random\n",
            "upstream:\n  max_attempts: 3\n",
            "upstream:\n  pool: {max_connections: 2}\n",
            "server:\n  allow: [10.0.0.0/8]\n",
            "server:\n  deny_action: drop\n",
            "server:\n  client_qps: 100\n",
            "server:\n  max_inflight_misses: 5\n",
            "server:\n  udp_payload: 1400\n",
            "server:\n  query_deadline: 3s\n",
            "cache:\n  serve_stale: {client_timeout: 2s}\n",
            "log:\n  queries: {enabled: true}\n",
            "hosts:\n  - entries: [\"10.0.0.9 db.example\"]\n",
        ];
        for change in changes {
            let yaml = if change.starts_with("upstreams:") { change.to_string() } else { format!("{BASE}{change}") };
            let (new_live, new_fixed) = built(&yaml);
            assert_eq!(fixed.differing(&new_fixed), Vec::<&str>::new(), "{change}");
            assert_ne!(live, new_live, "{change} changes what a reload swaps in");
        }
    }

    #[test]
    fn restart_only_keys_leave_the_reloadable_part_alone() {
        let (live, fixed) = built(BASE);
        let changes = [
            ("listen: [127.0.0.2:53]\n", "listen"),
            ("metrics: off\n", "metrics"),
            ("cache:\n  positive: {max_entries: 5}\n", "cache"),
            ("cache:\n  serve_stale: {max_age: 1m}\n", "cache"),
            ("cache:\n  zones:\n    - zone: cluster.local\n      positive: {max_ttl: 30s}\n", "cache"),
            ("kubernetes:\n  local_answers: false\n", "kubernetes"),
            ("server:\n  max_tcp_clients: 5\n", "server.max_tcp_clients"),
            ("server:\n  shutdown_grace: 1s\n", "server.shutdown_grace"),
            ("log:\n  level: debug\n", "log.level"),
            ("log:\n  queries: {output: stderr}\n", "log.queries.output"),
        ];
        for (change, key) in changes {
            let (new_live, new_fixed) = built(&format!("{BASE}{change}"));
            assert_eq!(fixed.differing(&new_fixed), vec![key], "{change}");
            assert_eq!(live, new_live, "{change} leaves what a reload swaps in");
        }
    }

    #[test]
    fn upstream_settings_compare_tls_roots_by_presence() {
        let (live, _) = built(BASE);
        let mut with_roots = live.upstream.clone();
        with_roots.0.tls = Some(crate::upstream::tls::client_config(None).unwrap());
        assert_ne!(live.upstream, with_roots);
        let mut other_roots = with_roots.clone();
        other_roots.0.tls = Some(crate::upstream::tls::client_config(None).unwrap());
        assert_eq!(with_roots, other_roots, "running upstreams keep the roots they started with");
    }
}

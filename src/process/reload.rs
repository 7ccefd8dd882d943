//! Hot reload: the configuration file is re-read when it changes (a ConfigMap update
//! arrives as a symlink swap, so the file's content is compared, not inotify events on
//! one inode) or on SIGHUP, and what can change in a running process changes in place:
//! zones and upstreams, upstream and retry settings, client admission and query limits.
//! Nothing is dropped: the cache stays, unchanged upstreams keep their connections and
//! health, queries in flight finish with the settings they started with.
//!
//! An invalid file is rejected whole, logged with its file, line and key, and counted
//! (`nodedns_config_reloads_total{result="failure"}`); the running configuration stays.
//! Settings that need new sockets or a new cache (listen and metrics addresses, cache
//! sizes and TTLs, node setup, Kubernetes naming, logging, TCP client limits) are reported
//! as needing a restart and keep their running values.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::query::admission::Admission;
use crate::query::handler::{Handler, HandlerSettings};
use crate::config::{self, Overrides, Settings};
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamSettings};
use crate::zones::Router;

/// How often the file is compared with what was last loaded.
const POLL: Duration = Duration::from_secs(2);

/// Where the configuration came from, to read it again.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub overrides: Overrides,
}

/// What a reload can change.
pub struct Reloader {
    pub source: Source,
    pub running: Settings,
    pub handler: Arc<Handler>,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Watches the file and SIGHUP until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut last = std::fs::read(&self.source.path).ok();
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            let now = std::fs::read(&self.source.path).ok();
            if !forced && (now.is_none() || now == last) {
                continue;
            }
            if forced {
                tracing::info!("SIGHUP: reloading the configuration");
            }
            last = now;
            self.reload();
        }
    }

    fn reload(&mut self) {
        let loaded = config::load_file(&self.source.path).and_then(|file| Settings::build(file, self.source.overrides.clone()));
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                self.metrics.config_reloaded(false);
                tracing::error!(error = %e, "configuration rejected; the running one stays");
                return;
            }
        };
        let router = match self.upstreams_for(&new) {
            Ok(router) => router,
            Err(e) => {
                self.metrics.config_reloaded(false);
                tracing::error!(error = %e, "configuration rejected; the running one stays");
                return;
            }
        };
        for key in needs_restart(&self.running, &new) {
            tracing::warn!(key, "changed in the file, but takes effect only after a restart");
        }
        self.forwarder.reconfigure(router, new.forward);
        let admission_changed = (&new.allow, new.deny_action, new.client_limit) != (&self.running.allow, self.running.deny_action, self.running.client_limit);
        let admission = admission_changed.then(|| Admission::new(new.allow.clone(), new.deny_action, new.client_limit));
        self.handler.reconfigure(handler_settings(&new), admission);
        // A switch made at runtime (`nodedns querylog`) holds until the file's own changes.
        if new.query_log != self.running.query_log {
            self.handler.query_log().set_policy(new.query_log);
        }
        // Restart-only settings keep their running values, so the next comparison is with
        // what actually runs.
        self.running = Settings { router: new.router, upstream: new.upstream, forward: new.forward, allow: new.allow, deny_action: new.deny_action, client_limit: new.client_limit, max_inflight_misses: new.max_inflight_misses, udp_payload: new.udp_payload, query_deadline: new.query_deadline, query_log: new.query_log, ..self.running.clone() };
        self.running.cache.stale_client_timeout = new.cache.stale_client_timeout;
        self.metrics.config_reloaded(true);
        tracing::info!(path = %self.source.path.display(), "configuration reloaded");
    }

    /// The new routing table, keeping every running upstream whose address and settings
    /// are unchanged (with its connections, RTT and health), starting the new ones.
    fn upstreams_for(&self, new: &Settings) -> anyhow::Result<Router<Arc<Upstream>>> {
        let keep = same_upstream_settings(&self.running.upstream, &new.upstream);
        let mut running: Vec<Arc<Upstream>> = if keep { self.forwarder.upstreams() } else { Vec::new() };
        for spec in new.router.groups().iter().flat_map(|g| g.servers.iter()) {
            if !running.iter().any(|u| u.spec() == spec) {
                running.push(Upstream::new(spec, &new.upstream, &self.metrics).map_err(anyhow::Error::msg)?);
            }
        }
        Ok(new.router.map(|spec| running.iter().find(|u| u.spec() == spec).cloned().expect("started above")))
    }
}

/// The handler's part of the settings.
pub fn handler_settings(s: &Settings) -> HandlerSettings {
    HandlerSettings {
        max_inflight_misses: s.max_inflight_misses,
        udp_payload: s.udp_payload,
        deadline: s.query_deadline,
        stale_after: s.cache.stale_client_timeout,
    }
}

/// Whether running upstreams can be kept: everything but the TLS roots (which are read
/// once, at start) compared.
fn same_upstream_settings(a: &UpstreamSettings, b: &UpstreamSettings) -> bool {
    (a.min_timeout, a.max_timeout, a.max_fails, a.probe_interval, a.max_qps, a.pool, a.query, a.tls.is_some())
        == (b.min_timeout, b.max_timeout, b.max_fails, b.probe_interval, b.max_qps, b.pool, b.query, b.tls.is_some())
}

/// The configuration keys that changed but cannot change in a running process.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let debug = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let mut keys = Vec::new();
    let mut check = |key, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    check("listen", old.listen != new.listen);
    check("metrics", old.metrics != new.metrics);
    check("cache", debug(&(&old.cache.positive, &old.cache.negative, &old.cache.ttl, &old.cache.snapshot)) != debug(&(&new.cache.positive, &new.cache.negative, &new.cache.ttl, &new.cache.snapshot)));
    check("node", old.node != new.node);
    check("kubernetes", old.naming != new.naming);
    check("server.handover_socket", old.handover_socket != new.handover_socket);
    check("server.shutdown_grace", old.shutdown_grace != new.shutdown_grace);
    check("server.udp_workers", (old.udp_workers, old.pin_udp_workers) != (new.udp_workers, new.pin_udp_workers));
    check("server TCP client limits", (old.tcp_idle_timeout, old.max_tcp_clients, old.max_tcp_inflight, old.max_tcp_per_client) != (new.tcp_idle_timeout, new.max_tcp_clients, new.max_tcp_inflight, new.max_tcp_per_client));
    check("log", debug(&(&old.log_level, &old.log_format, &old.query_log_output)) != debug(&(&new.log_level, &new.log_format, &new.query_log_output)));
    keys
}

//! Hot reload: the configuration file is re-read when it changes (a ConfigMap update
//! arrives as a symlink swap, so the file's content is compared, not inotify events on
//! one inode) or on SIGHUP, and what can change in a running process changes in place:
//! zones and upstreams, upstream and retry settings, client admission and query limits,
//! the `hosts` blocks.
//! Nothing is dropped: the cache stays, unchanged upstreams keep their connections and
//! health, queries in flight finish with the settings they started with.
//!
//! An invalid file is rejected whole, logged with its file, line and key, and counted
//! (`nodedns_config_reloads_total{result="failure"}`); the running configuration stays.
//! Each restart-only setting that changed is logged by its key (`setting="server.udp_workers"`)
//! as needing a restart and keeps its running value: listen and metrics addresses, cache
//! sizes and TTLs, node setup, Kubernetes naming, handover, TCP client limits, logging.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{AdmissionSettings, ConfigError, Origin, Overrides, Reloadable, RestartOnly, Settings};
use crate::forward::Forwarder;
use crate::hosts::Hosts;
use crate::metrics::Metrics;
use crate::query::admission::Admission;
use crate::query::handler::Handler;
use crate::upstream::{Upstream, UpstreamSettings};
use crate::zones::Router;

/// How often the file is compared with what was last loaded.
const POLL: Duration = Duration::from_secs(2);

/// Where the configuration came from, to read it again.
#[derive(Clone, Debug)]
pub struct Source {
    pub origin: Origin,
    pub overrides: Overrides,
}

impl Source {
    /// The watched files' contents, to notice a change.
    fn contents(&self) -> Option<Vec<u8>> {
        let mut all = Vec::new();
        for path in self.origin.watched() {
            match std::fs::read(&path) {
                Ok(bytes) => all.extend(bytes),
                // An optional file (node-cache's kube-dns ConfigMap) may be absent.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !all.is_empty() => {}
                Err(_) => return None,
            }
            all.push(0);
        }
        Some(all)
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Upstream(#[from] UpstreamStartError),
}

/// An upstream of the configuration could not be started.
#[derive(Debug, thiserror::Error)]
#[error("upstream {spec}: {reason}")]
pub struct UpstreamStartError {
    spec: String,
    reason: String,
}

/// The running parts a reload changes, and the settings they run with.
pub struct Reloader {
    pub source: Source,
    pub reloadable: Reloadable,
    /// As at start: a reload compares with what actually runs.
    pub restart_only: RestartOnly,
    pub handler: Arc<Handler>,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Watches the file and SIGHUP until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut last = self.source.contents();
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            let now = self.source.contents();
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
        match self.try_reload() {
            Ok(()) => {
                self.metrics.config_reloaded(true);
                tracing::info!(from = %self.source.origin, "configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_reloaded(false);
                if matches!(self.source.origin, Origin::NodeCache(_)) {
                    self.metrics.node_setup_failed("configmap");
                }
                tracing::error!(error = %e, "configuration rejected; the running one stays");
            }
        }
    }

    fn try_reload(&mut self) -> Result<(), ReloadError> {
        let file = self.source.origin.load()?;
        let Settings { reloadable, restart_only } = Settings::build(file, self.source.overrides.clone())?;
        self.apply(reloadable)?;
        for setting in self.restart_only.differing(&restart_only) {
            tracing::warn!(setting, "changed in the file, but takes effect only after a restart");
        }
        Ok(())
    }

    /// Swaps `new` into the running parts: nothing changes unless every new upstream
    /// starts. Unchanged upstreams keep their connections and health, and each client's
    /// rate bucket and a query log switched at runtime stay unless their settings changed.
    fn apply(&mut self, new: Reloadable) -> Result<(), UpstreamStartError> {
        let reusable = if new.upstream == self.reloadable.upstream { self.forwarder.upstreams() } else { Vec::new() };
        let upstreams = upstreams(&new.router, &new.upstream, reusable, &self.metrics)?;
        // No `..`: a new reloadable setting does not compile until it is applied here.
        let Reloadable { router: _, upstream: _, forward, handler, admission, query_log, hosts } = &new;
        let running = &self.reloadable;
        self.forwarder.reconfigure(upstreams, *forward);
        self.handler.reconfigure(*handler, (*admission != running.admission).then(|| admission_for(admission)));
        if *query_log != running.query_log {
            self.handler.query_log().set_policy(*query_log);
        }
        // Unchanged, the blocks keep their tables and file watches; any change reads all afresh.
        if *hosts != running.hosts {
            self.handler.set_hosts(Hosts::start(hosts, &self.metrics));
        }
        self.reloadable = new;
        Ok(())
    }
}

/// The running upstreams for `router`, one per distinct spec: those of `running` with the
/// same spec are kept (with their connections, RTT and health), the others started.
pub fn upstreams(
    router: &Router,
    settings: &UpstreamSettings,
    mut running: Vec<Arc<Upstream>>,
    metrics: &Metrics,
) -> Result<Router<Arc<Upstream>>, UpstreamStartError> {
    for spec in router.groups().iter().flat_map(|g| g.servers.iter()) {
        if !running.iter().any(|u| u.spec() == spec) {
            let upstream =
                Upstream::new(spec, settings, metrics).map_err(|reason| UpstreamStartError { spec: spec.to_string(), reason })?;
            running.push(upstream);
        }
    }
    Ok(router.map(|spec| running.iter().find(|u| u.spec() == spec).cloned().expect("started above")))
}

/// A fresh admission policy: every client's rate bucket starts full.
pub fn admission_for(settings: &AdmissionSettings) -> Admission {
    Admission::new(settings.allow.clone(), settings.open.clone(), settings.deny_action, settings.client_limit)
}

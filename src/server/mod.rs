//! Listeners and the running process: binds every listen address for UDP and TCP, wires
//! cache, forwarder and metrics together, and drains on shutdown.
//!
//! - [`handler`]: the query path shared by both transports (the hot path lives there).
//! - [`udp`], [`tcp`]: the transports. They own sockets and framing, never DNS policy.

pub mod admission;
pub mod handler;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::config::Settings;
use crate::forward::Forwarder;
use crate::kubernetes::search::SearchPrefetch;
use crate::kubernetes::{NamespaceSource, Naming, SoaBook};
use crate::upstream::{Upstream, UpstreamSettings, UpstreamSpec};
use crate::zones::Router;
use crate::metrics::Metrics;
use crate::metrics::http::{self, Readiness};
use admission::Admission;
use handler::{Handler, HandlerSettings, LocalNaming};
use tcp::{TcpLimits, TcpServer};

/// `dns://ADDR:PORT`, CoreDNS's `server` label.
fn server_label(addr: SocketAddr) -> String {
    format!("dns://{addr}")
}

/// One running upstream per distinct spec, shared by every zone that names it.
fn start_upstreams(router: &Router<UpstreamSpec>, settings: &UpstreamSettings, metrics: &Metrics) -> anyhow::Result<Router<Arc<Upstream>>> {
    let mut running: Vec<Arc<Upstream>> = Vec::new();
    for spec in router.groups().iter().flat_map(|g| g.servers.iter()) {
        if !running.iter().any(|u| u.spec() == spec) {
            running.push(Upstream::new(spec, settings, metrics).map_err(anyhow::Error::msg)?);
        }
    }
    Ok(router.map(|spec| running.iter().find(|u| u.spec() == spec).cloned().expect("started above")))
}

/// The Kubernetes naming rules, with their zones' SOAs and the namespaces being learned
/// from now on.
async fn local_naming(settings: &Settings, forwarder: &Arc<Forwarder>, metrics: &Metrics) -> anyhow::Result<LocalNaming> {
    let naming = Arc::new(Naming::new(settings.naming.clone()));
    let soa = SoaBook::new(naming.zones());
    if naming.settings().enabled {
        soa.learn_all(forwarder);
        if naming.settings().namespaces == NamespaceSource::Watch {
            let client = kube::Client::try_default()
                .await
                .context("kubernetes.namespaces is `watch`, but there is no Kubernetes API to watch (no in-cluster service account, no KUBECONFIG)")?;
            tokio::spawn(naming.namespaces().clone().follow(client));
        }
    }
    let search = naming.settings().search_prefetch.then(|| SearchPrefetch::new(naming.clone(), forwarder.clone(), metrics.naming()));
    Ok(LocalNaming { naming, soa, search, metrics: metrics.naming() })
}

/// Runs until `stop` is cancelled, then stops accepting, lets in-flight queries finish for
/// at most the configured grace period, and returns.
pub async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let cache = Arc::new(Cache::new(settings.cache.positive, settings.cache.negative, settings.cache.ttl.clone()));
    let router = start_upstreams(&settings.router, &settings.upstream, &metrics)?;
    let forwarder = Forwarder::new(router, cache.clone(), settings.forward, metrics.clone());
    let handler_settings = HandlerSettings {
        max_inflight_misses: settings.max_inflight_misses,
        udp_payload: settings.udp_payload,
        deadline: settings.query_deadline,
        query_log: settings.query_log,
        stale_after: settings.cache.stale_client_timeout,
    };
    let admission = Admission::new(settings.allow.clone(), settings.deny_action, settings.client_limit);
    let naming = local_naming(&settings, &forwarder, &metrics).await?;
    let handler = Arc::new(Handler::new(cache.clone(), forwarder, admission, naming, handler_settings));
    let tasks = TaskTracker::new();
    let listeners = TaskTracker::new();

    // Bind everything before serving anything, so a bad address fails start-up whole.
    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for &addr in &settings.listen {
        udp_sockets.push((addr, udp::bind(addr).with_context(|| format!("cannot listen on udp {addr}"))?));
        tcp_listeners.push((addr, tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on tcp {addr}"))?));
    }
    let metrics_listener = match settings.metrics {
        Some(addr) => Some(http::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?),
        None => None,
    };

    for (addr, socket) in udp_sockets {
        let m = metrics.listener(&server_label(addr), "udp", addr.is_ipv6());
        listeners.spawn(udp::serve(socket, handler.clone(), m, tasks.clone(), stop.clone()));
        tracing::info!(%addr, "serving DNS over UDP");
    }
    let limits = TcpLimits {
        idle_timeout: settings.tcp_idle_timeout,
        max_clients: settings.max_tcp_clients,
        max_per_client: settings.max_tcp_per_client,
        max_inflight_per_connection: settings.max_tcp_inflight,
    };
    for (addr, listener) in tcp_listeners {
        let server = Arc::new(TcpServer {
            handler: handler.clone(),
            metrics: metrics.clone(),
            listener_metrics: metrics.listener(&server_label(addr), "tcp", addr.is_ipv6()),
            limits,
            tasks: tasks.clone(),
            stop: stop.clone(),
            per_client: Default::default(),
        });
        listeners.spawn(server.serve(listener));
        tracing::info!(%addr, "serving DNS over TCP");
    }

    let ready = Arc::new(Readiness::default());
    let metrics_stop = CancellationToken::new();
    if let Some(listener) = metrics_listener {
        let label = settings.listen.first().map(|a| server_label(*a)).unwrap_or_default();
        let (c, m) = (cache.clone(), metrics.clone());
        let before_scrape: http::BeforeScrape = Arc::new(move || {
            let (positive, negative) = c.len();
            m.set_cache_entries(&label, positive, negative);
        });
        tokio::spawn(http::serve(listener, metrics.clone(), ready.clone(), before_scrape, metrics_stop.clone()));
    }
    for group in settings.router.groups() {
        let servers: Vec<String> = group.servers.iter().map(ToString::to_string).collect();
        tracing::info!(zone = %group.zone, upstreams = %servers.join(","), "forwarding");
    }
    ready.set(true);

    stop.cancelled().await;
    ready.set(false);
    listeners.close();
    listeners.wait().await;
    tasks.close();
    let drained = tokio::time::timeout(settings.shutdown_grace, tasks.wait()).await.is_ok();
    if drained {
        tracing::info!("stopped: all in-flight queries answered");
    } else {
        tracing::warn!(grace = ?settings.shutdown_grace, unfinished = tasks.len(), "stopped with queries still in flight");
    }
    metrics_stop.cancel();
    // Let the runtime flush the last responses' sends.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

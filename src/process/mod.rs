//! The running process: builds the cache, forwarder, query handler and metrics from the
//! settings, binds every listen address for UDP and TCP, serves, and drains on shutdown.
//! The top of the stack: it wires the layers below together and owns no DNS policy.
//!
//! - [`reload`]: re-reads the configuration and swaps what may change in place.
//! - [`handover`]: takes the listening sockets and cache over from a running predecessor.
//! - [`admin`]: the diagnostic routes of the metrics endpoint (`/explain`, `/querylog`).

pub mod admin;
pub mod handover;
pub mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::{Cache, snapshot};
use crate::config::{Reloadable, RestartOnly, Settings};
use crate::forward::Forwarder;
use crate::gate::Gate;
use crate::hosts::Hosts;
use crate::kubernetes::search::SearchPrefetch;
use crate::kubernetes::{self, NamespaceSource, Naming, NamingSettings, SoaBook};
use crate::listen::tcp::{self, TcpLimits, TcpServer};
use crate::listen::udp;
use crate::loops::Loops;
use crate::metrics::Metrics;
use crate::metrics::http::{self, Readiness};
use crate::node;
use crate::query::handler::{Handler, LocalNaming};
use crate::query::querylog;
use handover::Role;

/// `dns://ADDR:PORT`, CoreDNS's `server` label.
fn server_label(addr: SocketAddr) -> String {
    format!("dns://{addr}")
}

/// The Kubernetes naming rules, with their zones' SOAs and the namespaces being learned
/// from now on.
async fn local_naming(settings: &NamingSettings, forwarder: &Arc<Forwarder>, metrics: &Metrics) -> anyhow::Result<LocalNaming> {
    let naming = Arc::new(Naming::new(settings.clone()));
    let soa = SoaBook::new(naming.zones());
    if naming.settings().enabled {
        soa.learn_all(forwarder);
        if naming.settings().namespaces == NamespaceSource::Watch {
            let client = kube::Client::try_default().await.context(
                "kubernetes.namespaces is `watch`, but there is no Kubernetes API to watch (no in-cluster service account, no KUBECONFIG)",
            )?;
            tokio::spawn(naming.namespaces().clone().follow(client));
        }
    }
    let search = naming
        .settings()
        .search_prefetch
        .then(|| SearchPrefetch::new(naming.clone(), forwarder.clone(), kubernetes::Reason::metrics(metrics)));
    Ok(LocalNaming { naming, soa, search, metrics: kubernetes::Reason::metrics(metrics) })
}

/// Installs the node's rules, logging and counting a failure (DNS still works through
/// conntrack without them).
fn install_rules(node: &node::NodeSetup, metrics: &Metrics) {
    match node.install_rules() {
        Ok(()) => tracing::info!("node packet-filter rules installed"),
        Err(e) => {
            metrics.node_setup_failed(e.setup_error_type());
            tracing::error!(error = %e, "node packet-filter rules not installed; DNS to this node goes through conntrack");
        }
    }
}

/// Installs the node's packet-filter rules now that the server serves, then checks them and
/// the addresses every `check_interval` and puts back what something else removed. A
/// failure is logged and counted, never fatal: DNS still works through conntrack.
async fn keep_node_setup(node: Arc<node::NodeSetup>, metrics: Arc<Metrics>, installed: bool, stop: CancellationToken) {
    for what in node.leftovers() {
        metrics.leftover_found(what);
    }
    if !installed {
        let (n, m) = (node.clone(), metrics.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || install_rules(&n, &m)).await {
            tracing::error!(error = %e, "node setup task failed");
        }
    }
    let mut every = tokio::time::interval(node.check_interval());
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.repair()).await {
            Ok(Ok(repaired)) => {
                for what in repaired {
                    metrics.node_repaired(what);
                    tracing::warn!(what, "node setup had been removed by someone else; put back");
                }
            }
            Ok(Err(e)) => {
                metrics.node_setup_failed(e.setup_error_type());
                tracing::error!(error = %e, "node setup check failed");
            }
            Err(e) => tracing::error!(error = %e, "node setup task failed"),
        }
    }
}

/// Every listening socket, bound here or taken over from a predecessor.
struct Sockets {
    /// `settings.udp_workers` sockets per address (more if a predecessor had more: each
    /// inherited socket may hold queued queries and must be read).
    udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    tcp: Vec<(SocketAddr, tokio::net::TcpListener)>,
    /// The HTTP endpoint: `metrics`, then each of `http_listen`.
    http: Vec<(SocketAddr, tokio::net::TcpListener)>,
}

impl Sockets {
    fn open(settings: &RestartOnly, mut inherited: Option<&mut handover::Inheritance>) -> anyhow::Result<Sockets> {
        let mut take = |role, addr| inherited.as_mut().and_then(|i| i.take(role, addr));
        let mut sockets = Sockets { udp: Vec::new(), tcp: Vec::new(), http: Vec::new() };
        for &addr in &settings.listen {
            let mut on_addr = 0;
            while let Some(fd) = take(Role::Udp, addr) {
                sockets.udp.push((addr, udp::adopt(fd).with_context(|| format!("cannot take over udp {addr}"))?));
                on_addr += 1;
            }
            for _ in on_addr..settings.udp_workers {
                sockets.udp.push((addr, udp::bind(addr).with_context(|| format!("cannot listen on udp {addr}"))?));
            }
            let tcp = match take(Role::Tcp, addr) {
                Some(fd) => tcp::adopt(fd),
                None => tcp::bind(addr),
            };
            sockets.tcp.push((addr, tcp.with_context(|| format!("cannot listen on tcp {addr}"))?));
        }
        for &addr in settings.metrics.iter().chain(&settings.http_listen) {
            if sockets.http.iter().any(|(bound, _)| *bound == addr) {
                continue;
            }
            let http = match take(Role::Http, addr) {
                Some(fd) => tcp::adopt(fd),
                None => tcp::bind(addr),
            };
            sockets.http.push((addr, http.with_context(|| format!("cannot serve metrics on {addr}"))?));
        }
        Ok(sockets)
    }

    /// A copy of every socket, for handing over to a successor later.
    fn duplicates(&self) -> std::io::Result<Vec<(Role, SocketAddr, std::os::fd::OwnedFd)>> {
        use std::os::fd::AsFd;
        let udp = self.udp.iter().map(|(a, s)| (Role::Udp, *a, s.as_fd().try_clone_to_owned()));
        let tcp = self.tcp.iter().map(|(a, s)| (Role::Tcp, *a, s.as_fd().try_clone_to_owned()));
        let http = self.http.iter().map(|(a, s)| (Role::Http, *a, s.as_fd().try_clone_to_owned()));
        udp.chain(tcp).chain(http).map(|(role, addr, fd)| Ok((role, addr, fd?))).collect()
    }
}

/// The cache handed over by the predecessor: warm from its first query.
fn restore_inherited(cache: &Cache, bytes: &[u8]) {
    match snapshot::decode_into(cache, bytes, std::time::Instant::now(), std::time::SystemTime::now()) {
        Ok(r) => tracing::info!(loaded = r.loaded, too_old = r.expired, "took over from the running nodedns, with its cache"),
        Err(e) => tracing::warn!(error = %e, "took over from the running nodedns; its cache was unusable: cold start"),
    }
}

/// A warm start: the cache as the previous process left it. Any problem means a cold start
/// and a warning, never a failed start.
fn restore_snapshot(cache: &Cache, path: &std::path::Path) {
    let started = std::time::Instant::now();
    match snapshot::load(cache, path) {
        Ok(r) => {
            tracing::info!(path = %path.display(), loaded = r.loaded, too_old = r.expired, took = ?started.elapsed(), "cache restored from snapshot")
        }
        Err(snapshot::SnapshotError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no cache snapshot: cold start");
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cache snapshot unusable: cold start"),
    }
}

fn save_snapshot(cache: &Cache, path: &std::path::Path) {
    let started = std::time::Instant::now();
    let (positive, negative) = cache.len();
    match snapshot::save(cache, path) {
        Ok(bytes) => {
            tracing::info!(path = %path.display(), entries = positive + negative, bytes, took = ?started.elapsed(), "cache snapshot written")
        }
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cache snapshot not written: the next start is cold"),
    }
}

/// Runs until `stop` is cancelled, then stops accepting, lets in-flight queries finish for
/// at most the configured grace period, and returns.
pub async fn run(settings: Settings, source: Option<reload::Source>, stop: CancellationToken) -> anyhow::Result<()> {
    // First, because the predecessor's cache is what ours starts from.
    let inheritance = take_over(&settings.restart_only).await?;
    let built = build(&settings, inheritance.as_ref()).await?;
    let bound = bind(&settings.restart_only, inheritance)?;
    let running = spawn(built, bound, settings, source, stop.clone())?;
    stop.cancelled().await;
    running.drain().await;
    Ok(())
}

/// With `server.handover_socket` set, the listening sockets and cache of the nodedns running
/// there, if one is.
async fn take_over(settings: &RestartOnly) -> anyhow::Result<Option<handover::Inheritance>> {
    let Some(path) = settings.handover_socket.clone() else { return Ok(None) };
    tokio::task::spawn_blocking(move || handover::inherit(&path)).await?.context("taking over from the running nodedns")
}

/// What the settings build before any socket exists: the parts every listener shares.
struct Built {
    metrics: Arc<Metrics>,
    cache: Arc<Cache>,
    forwarder: Arc<Forwarder>,
    handler: Arc<Handler>,
    loops: Arc<Loops>,
}

async fn build(settings: &Settings, inherited: Option<&handover::Inheritance>) -> anyhow::Result<Built> {
    let Settings { reloadable, restart_only } = settings;
    let metrics = Arc::new(Metrics::new());
    let cache = Arc::new(
        Cache::new(restart_only.cache.positive, restart_only.cache.negative, restart_only.cache.ttl.clone())
            .with_zones(restart_only.cache.zones.clone()),
    );
    match (inherited, &restart_only.cache.snapshot) {
        (Some(inherited), _) => restore_inherited(&cache, &inherited.snapshot),
        (None, Some(path)) => restore_snapshot(&cache, path),
        (None, None) => {}
    }
    // No `..`: each reloadable setting is given to its running part here, as a reload does
    // in `Reloader::apply`.
    let Reloadable { router, upstream, forward, handler, admission, query_log, hosts } = reloadable;
    let upstreams = reload::upstreams(router, upstream, Vec::new(), &metrics)?;
    let forwarder = Forwarder::new(upstreams, cache.clone(), *forward, metrics.clone());
    let naming = local_naming(&restart_only.naming, &forwarder, &metrics).await?;
    let (query_log, query_log_writer) = querylog::QueryLog::new(
        *query_log,
        restart_only.query_log_output.clone(),
        metrics.query_log_lines.clone(),
        metrics.query_log_dropped.clone(),
    );
    tokio::spawn(query_log_writer);
    let loops = Arc::new(Loops::new(metrics.clone()));
    let admission = reload::admission_for(admission);
    let handler = Arc::new(Handler::new(cache.clone(), forwarder.clone(), admission, naming, loops.clone(), *handler, query_log));
    handler.set_hosts(Hosts::start(hosts, &metrics));
    Ok(Built { metrics, cache, forwarder, handler, loops })
}

/// Every socket, bound or taken over, before anything serves on any of them.
struct Bound {
    sockets: Sockets,
    /// Copies of `sockets` for a successor; empty without `server.handover_socket`.
    for_successor: Vec<(Role, SocketAddr, std::os::fd::OwnedFd)>,
    /// Told once this process serves, so the predecessor stops reading.
    inheritance: Option<handover::Inheritance>,
    node: Option<Arc<node::NodeSetup>>,
}

/// Binding everything before serving anything makes a bad address fail start-up whole.
fn bind(settings: &RestartOnly, mut inheritance: Option<handover::Inheritance>) -> anyhow::Result<Bound> {
    // The addresses must exist before anything binds to them.
    let node = match settings.node.enabled {
        true => Some(Arc::new(
            node::NodeSetup::prepare(settings.node.clone(), inheritance.is_some()).context("node setup: the listen addresses")?,
        )),
        false => None,
    };
    let sockets = Sockets::open(settings, inheritance.as_mut())?;
    let for_successor = match settings.handover_socket {
        Some(_) => sockets.duplicates().context("duplicating the listening sockets for a successor")?,
        None => Vec::new(),
    };
    Ok(Bound { sockets, for_successor, inheritance, node })
}

/// What serves until the stop, and what the drain winds down.
struct Running {
    built: Built,
    restart_only: RestartOnly,
    listening: Listening,
    ready: Arc<Readiness>,
    metrics_stop: CancellationToken,
    node: Option<(Arc<node::NodeSetup>, tokio::task::JoinHandle<()>)>,
    offered: Option<handover::OfferedAt>,
    /// Kept open while this process runs: its closing tells the predecessor to serve again.
    _predecessor: Option<std::os::unix::net::UnixStream>,
}

/// Serves on the bound sockets: the listeners, the metrics endpoint, then the handover both
/// ways, the reload watcher and the node's upkeep.
fn spawn(
    built: Built,
    bound: Bound,
    settings: Settings,
    source: Option<reload::Source>,
    stop: CancellationToken,
) -> anyhow::Result<Running> {
    let Settings { reloadable, restart_only } = settings;
    let Bound { sockets, for_successor, inheritance, node } = bound;
    let (gate_switch, gate) = Gate::new();
    let listening = Listening { tasks: TaskTracker::new(), listeners: TaskTracker::new(), stop: stop.clone(), gate };
    listening.spawn_udp_workers(&built, sockets.udp, &restart_only)?;
    listening.spawn_tcp_servers(&built, sockets.tcp, &restart_only);
    let ready = Arc::new(Readiness::default());
    let metrics_stop = CancellationToken::new();
    if !sockets.http.is_empty() {
        let endpoints = metrics_endpoints(&built, &restart_only, ready.clone());
        for (_, listener) in sockets.http {
            tokio::spawn(http::serve(listener, endpoints.clone(), metrics_stop.clone(), listening.gate.clone()));
        }
    }
    log_forwarding(&reloadable);
    ready.set(true);
    // Once serving: a probe that comes back must find our listeners.
    tokio::spawn(built.loops.clone().run(built.forwarder.clone(), stop.clone()));
    // Taken over: this process serves already, on the predecessor's sockets. Its own rules
    // (an owned table is each process's) go in before the predecessor hears it may stop.
    let installed = inheritance.is_some() && node.is_some();
    if let (true, Some(node)) = (installed, &node) {
        install_rules(node, &built.metrics);
    }
    let predecessor = inheritance.map(handover::Inheritance::serving).transpose().context("telling the predecessor to stop reading")?;
    let offered = match &restart_only.handover_socket {
        Some(path) => Some(offer_to_successors(path, for_successor, &built, gate_switch, ready.clone())?),
        None => None,
    };
    if let Some(source) = source {
        let reloader = reload::Reloader {
            source,
            reloadable,
            restart_only: restart_only.clone(),
            handler: built.handler.clone(),
            forwarder: built.forwarder.clone(),
            metrics: built.metrics.clone(),
        };
        tokio::spawn(reloader.run(stop.clone()));
    }
    let node = node.map(|node| {
        let keeper = tokio::spawn(keep_node_setup(node.clone(), built.metrics.clone(), installed, stop.clone()));
        (node, keeper)
    });
    Ok(Running { built, restart_only, listening, ready, metrics_stop, node, offered, _predecessor: predecessor })
}

/// What the listeners run under.
struct Listening {
    /// Connections and misses: the drain waits for them, within the grace period.
    tasks: TaskTracker,
    /// The listeners themselves (UDP worker threads, TCP accept loops): the drain waits for
    /// every one to stop.
    listeners: TaskTracker,
    stop: CancellationToken,
    gate: Gate,
}

impl Listening {
    fn spawn_udp_workers(
        &self,
        built: &Built,
        sockets: Vec<(SocketAddr, std::net::UdpSocket)>,
        settings: &RestartOnly,
    ) -> anyhow::Result<()> {
        let mut threads = Vec::new();
        for (i, (addr, socket)) in sockets.into_iter().enumerate() {
            let worker = udp::Worker {
                handler: built.handler.clone(),
                local: addr.ip(),
                metrics: built.metrics.listener(&server_label(addr), "udp", addr.is_ipv6()),
                runtime: tokio::runtime::Handle::current(),
                tasks: self.tasks.clone(),
                stop: self.stop.clone(),
                gate: self.gate.clone(),
                cpu: settings.pin_udp_workers.then(|| i % settings.udp_workers.max(1)),
            };
            threads.push(
                udp::spawn(format!("nodedns-udp-{i}"), socket, worker).with_context(|| format!("cannot start a UDP worker for {addr}"))?,
            );
        }
        for addr in &settings.listen {
            tracing::info!(%addr, workers = settings.udp_workers, "serving DNS over UDP");
        }
        // The listeners' tracker waits for the worker threads too.
        for thread in threads {
            self.listeners.spawn(async move {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            });
        }
        Ok(())
    }

    fn spawn_tcp_servers(&self, built: &Built, sockets: Vec<(SocketAddr, tokio::net::TcpListener)>, settings: &RestartOnly) {
        let limits = TcpLimits {
            idle_timeout: settings.tcp_idle_timeout,
            max_clients: settings.max_tcp_clients,
            max_per_client: settings.max_tcp_per_client,
            max_inflight_per_connection: settings.max_tcp_inflight,
        };
        for (addr, listener) in sockets {
            let server = Arc::new(TcpServer {
                handler: built.handler.clone(),
                local: addr.ip(),
                metrics: built.metrics.clone(),
                listener_metrics: built.metrics.listener(&server_label(addr), "tcp", addr.is_ipv6()),
                limits,
                tasks: self.tasks.clone(),
                stop: self.stop.clone(),
                per_client: Default::default(),
                gate: self.gate.clone(),
            });
            self.listeners.spawn(server.serve(listener));
            tracing::info!(%addr, "serving DNS over TCP");
        }
    }
}

/// `/metrics` (with the cache's size and evictions read at each scrape), `/health`, `/ready` and the admin
/// routes.
fn metrics_endpoints(built: &Built, settings: &RestartOnly, ready: Arc<Readiness>) -> http::Endpoints {
    let label = settings.listen.first().map(|a| server_label(*a)).unwrap_or_default();
    let (cache, metrics) = (built.cache.clone(), built.metrics.clone());
    let encode = Arc::new(move || {
        let (positive, negative) = cache.len();
        metrics.set_cache_entries(&label, positive, negative);
        let (positive, negative) = cache.evictions();
        metrics.set_cache_evictions(&label, positive, negative);
        metrics.encode()
    });
    http::Endpoints { encode, ready, extra: Some(admin::routes(built.handler.clone())) }
}

fn log_forwarding(reloadable: &Reloadable) {
    for group in reloadable.router.groups() {
        let servers: Vec<String> = group.servers.iter().map(ToString::to_string).collect();
        tracing::info!(zone = %group.zone, upstreams = %servers.join(","), "forwarding");
    }
}

/// Listens at `path` for a successor, to hand it these sockets and the cache; while one
/// serves, the gate is closed and this process reports itself not ready.
fn offer_to_successors(
    path: &std::path::Path,
    sockets: Vec<(Role, SocketAddr, std::os::fd::OwnedFd)>,
    built: &Built,
    gate: tokio::sync::watch::Sender<bool>,
    ready: Arc<Readiness>,
) -> anyhow::Result<handover::OfferedAt> {
    let offer = handover::Offer {
        sockets,
        cache: built.cache.clone(),
        gate,
        passed: Default::default(),
        on_pause: Box::new(move |paused| ready.set(!paused)),
    };
    Ok(handover::offer(path, offer)?)
}

/// How long a stopping process that passed its sockets waits for the successor to say it
/// serves.
const SUCCESSOR_CONFIRMS: Duration = Duration::from_secs(5);

impl Running {
    /// Readiness off, the listeners stopped, in-flight queries given the grace period, the
    /// cache saved, the node's setup removed.
    async fn drain(mut self) {
        if let Some(offered) = &self.offered {
            offered.withdraw();
        }
        // Handed over once the sockets have gone to a successor, even before it says it
        // serves: from then on it relies on the node's addresses and rules.
        let passed = self.offered.as_ref().is_some_and(handover::OfferedAt::passed);
        // A successor that has the sockets is starting: its rules go in before it confirms,
        // so wait (bounded) for the confirmation, and with it for its rules, before this
        // process's own (an owned table) go with it.
        let waiting = std::time::Instant::now();
        while passed && self.listening.gate.is_open() && waiting.elapsed() < SUCCESSOR_CONFIRMS {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handed_over = !self.listening.gate.is_open() || passed;
        let mut node = None;
        if let Some((setup, keeper)) = self.node.take() {
            // The keeper returns at the stop; after it, nothing puts back what is removed.
            let _ = keeper.await;
            if setup.removes_at_stop(handed_over) {
                // Fail open first: pods' new queries leave for kube-dns before the sockets close.
                setup.fail_open();
                node = Some(setup);
            }
        }
        self.ready.set(false);
        self.listening.listeners.close();
        self.listening.listeners.wait().await;
        self.wait_for_in_flight().await;
        if let Some(path) = &self.restart_only.cache.snapshot {
            save_snapshot(&self.built.cache, path);
        }
        if let Some(setup) = node {
            setup.release_addresses();
        }
        self.metrics_stop.cancel();
        // Let the runtime flush the last responses' sends.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    async fn wait_for_in_flight(&self) {
        let (tasks, grace) = (&self.listening.tasks, self.restart_only.shutdown_grace);
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_ok() {
            tracing::info!("stopped: all in-flight queries answered");
        } else {
            tracing::warn!(?grace, unfinished = tasks.len(), "stopped with queries still in flight");
        }
    }
}

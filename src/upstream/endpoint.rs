//! One upstream at run time: its transports (UDP socket per query, the TCP/TLS pool), its
//! measured RTT, its health, its rate cap and, while it is down, the probe that brings it
//! back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::health::{Health, Rtt};
use super::pool::{Connector, Pool, PoolSettings};
use super::spec::{Protocol, UpstreamSpec};
use super::{Exchange, FRESH_FLOWS, QueryOptions, UpstreamError, udp};
use crate::cache::{CacheKey, KeyRef};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::ratelimit::TokenBucket;
use crate::wire::name::LowerName;

/// Settings shared by every upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Floor of the adaptive retransmission timeout.
    pub min_timeout: Duration,
    /// Ceiling of the adaptive retransmission timeout, and its value before any RTT sample.
    pub max_timeout: Duration,
    /// Consecutive failures that mark an upstream down; 0 never marks it down.
    pub max_fails: u32,
    pub probe_interval: Duration,
    /// Queries per second sent to each upstream; 0 means no cap.
    pub max_qps: u32,
    pub pool: PoolSettings,
    pub query: QueryOptions,
    /// Trusted roots for `tls://` upstreams.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub struct Upstream {
    spec: UpstreamSpec,
    label: String,
    rtt: Rtt,
    health: Health,
    limit: Option<TokenBucket>,
    /// The stream transport: the only one for `tcp://`/`tls://`, the truncation fallback for
    /// the bare form; absent for `udp://`.
    pool: Option<Pool>,
    query: QueryOptions,
    probe_interval: Duration,
    probing: AtomicBool,
    metrics: UpstreamMetrics,
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec, settings: &UpstreamSettings, metrics: &Metrics) -> Result<Arc<Upstream>, String> {
        let label = spec.to_string();
        let proto = match spec.protocol {
            Protocol::PreferUdp | Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Tls { .. } => "tls",
        };
        let m = metrics.upstream(&label, proto);
        let connector = match &spec.protocol {
            Protocol::Udp => None,
            Protocol::PreferUdp | Protocol::Tcp => Some(Connector::Tcp(spec.addr)),
            Protocol::Tls { server_name } => {
                let name = ServerName::try_from(server_name.clone()).map_err(|e| format!("{label}: bad TLS server name: {e}"))?;
                let config = settings.tls.clone().ok_or_else(|| format!("{label}: no TLS configuration"))?;
                Some(Connector::Tls { addr: spec.addr, server_name: name, config })
            }
        };
        Ok(Arc::new(Upstream {
            spec: spec.clone(),
            rtt: Rtt::new(settings.min_timeout, settings.max_timeout),
            health: Health::new(settings.max_fails),
            limit: (settings.max_qps > 0).then(|| TokenBucket::new(settings.max_qps, settings.max_qps, Instant::now())),
            pool: connector.map(|c| Pool::new(c, settings.pool, m.clone())),
            query: settings.query,
            probe_interval: settings.probe_interval,
            probing: AtomicBool::new(false),
            metrics: m,
            label,
        }))
    }

    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.rtt.smoothed()
    }

    /// How long to wait for this upstream before sending the query again (to it or to the
    /// next one). Over TCP or TLS the kernel already retransmits lost segments, so a second
    /// copy only helps when the server is slow: wait the full timeout.
    pub fn retransmit_timeout(&self) -> Duration {
        if self.spec.is_stream() { self.rtt.max() } else { self.rtt.timeout() }
    }

    pub fn metrics(&self) -> &UpstreamMetrics {
        &self.metrics
    }

    /// Takes a token from the rate cap; `false` (counted) when over it.
    pub fn admit(&self) -> bool {
        let ok = self.limit.as_ref().is_none_or(|l| l.try_take(Instant::now()));
        if !ok {
            self.metrics.rate_limited.inc();
        }
        ok
    }

    /// One exchange within `timeout`, recorded in RTT, health and metrics.
    pub async fn exchange(self: &Arc<Self>, key: &CacheKey, timeout: Duration) -> Result<Exchange, UpstreamError> {
        self.metrics.requests.inc();
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.exchange_once(key)).await.unwrap_or(Err(UpstreamError::Timeout));
        match &result {
            Ok(ex) => {
                let rtt = started.elapsed();
                self.rtt.observe(rtt);
                self.metrics.response(ex.response.rcode(), rtt.as_secs_f64(), ex.ignored);
                if self.health.success() {
                    tracing::info!(upstream = %self.label, "upstream is back up");
                    self.metrics.healthy.set(1);
                }
            }
            Err(e) => {
                self.metrics.error(e.reason());
                if e.counts_against_health() && self.health.failure() {
                    tracing::warn!(upstream = %self.label, error = %e, "upstream marked down");
                    self.metrics.healthy.set(0);
                    self.start_probe();
                }
            }
        }
        result
    }

    async fn exchange_once(&self, key: &CacheKey) -> Result<Exchange, UpstreamError> {
        // A refused flow may be one dead server of many behind the address; once the
        // address is known down, one flow per attempt is enough to find out.
        let flows = if self.health.is_up() { FRESH_FLOWS } else { 1 };
        match (&self.spec.protocol, &self.pool) {
            (Protocol::Tcp | Protocol::Tls { .. }, Some(pool)) => pool.exchange(key, self.query).await,
            (Protocol::PreferUdp, Some(pool)) => {
                let udp = udp::exchange(self.spec.addr, key, self.query, flows).await?;
                if !udp.response.is_truncated() {
                    return Ok(udp);
                }
                let mut tcp = pool.exchange(key, self.query).await?;
                tcp.ignored += udp.ignored;
                Ok(tcp)
            }
            _ => udp::exchange(self.spec.addr, key, self.query, flows).await,
        }
    }

    /// While down, asks `. IN NS` every probe interval until any answer comes back (the
    /// answer's rcode does not matter: a response means the server is there).
    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        // Weak: an upstream removed by a configuration reload stops being probed.
        let weak = Arc::downgrade(self);
        let interval = self.probe_interval;
        tokio::spawn(async move {
            let probe = KeyRef::new(LowerName::ROOT, crate::wire::RecordType::NS, 1, false, false).to_owned();
            loop {
                tokio::time::sleep(interval).await;
                let Some(this) = weak.upgrade() else { return };
                if this.health.is_up() && probe_ends(&this.probing, || this.health.is_up()) {
                    return;
                }
                if tokio::time::timeout(this.rtt.timeout().max(Duration::from_millis(500)), this.exchange_once(&probe))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    this.health.success();
                    this.metrics.healthy.set(1);
                    tracing::info!(upstream = %this.label, "upstream answered its probe: back up");
                } else {
                    this.metrics.healthcheck_failed();
                }
            }
        });
    }
}

/// Clears `probing` for an upstream seen up; returns false when the probe must go on
/// after all: marked down again between that check and the clearing, its failure found
/// `probing` still set and started no probe of its own.
fn probe_ends(probing: &AtomicBool, is_up: impl Fn() -> bool) -> bool {
    probing.store(false, Ordering::SeqCst);
    is_up() || probing.swap(true, Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_goes_on_when_the_upstream_is_marked_down_as_it_ends() {
        // Marked down after the probe saw it up: the failure saw `probing` set and left it.
        let probing = AtomicBool::new(true);
        assert!(!probe_ends(&probing, || false), "the probe must go on");
        assert!(probing.load(Ordering::SeqCst), "and it holds the probe flag again");
    }

    #[test]
    fn a_probe_ends_when_the_upstream_stays_up_or_another_probe_took_over() {
        let probing = AtomicBool::new(true);
        assert!(probe_ends(&probing, || true));
        assert!(!probing.load(Ordering::SeqCst), "a later failure may start a probe");
        // Down again, and a new probe already took the flag: this one ends.
        let taken = AtomicBool::new(true);
        assert!(probe_ends(&taken, || {
            taken.store(true, Ordering::SeqCst);
            false
        }));
    }
}

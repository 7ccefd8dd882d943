//! The miss path: one upstream query per distinct question, however many clients ask it.
//!
//! Owns request coalescing (the in-flight table), the choice of upstream within a zone's
//! group, retries, and storing what comes back in the cache. The first client to miss on a
//! question spawns the upstream work as its own task, so that it completes and fills the
//! cache even if that client gives up; every later client for the same question waits on the
//! same result and gets it written with its own ID and case (brief, story 2: the thundering
//! herd). Does not parse client queries or touch client sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::cache::{Cache, CacheKey, Entry};
use crate::metrics::Metrics;
use crate::upstream::{self, QueryOptions, UpstreamError};
use crate::wire::Rcode;
use crate::zones::Router;

/// Timing and size settings of the miss path.
#[derive(Clone, Copy, Debug)]
pub struct ForwardSettings {
    /// How long one attempt at one upstream may take before the next is tried.
    pub attempt_timeout: Duration,
    /// How long the whole resolution may take, across attempts.
    pub deadline: Duration,
    /// The UDP payload size advertised upstream.
    pub udp_payload: u16,
}

/// Why a miss produced no response to pass on. The client gets SERVFAIL (or REFUSED for
/// [`ForwardError::NoRoute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no zone covers this name")]
    NoRoute,
    #[error("every attempt failed; last: {0}")]
    Upstream(UpstreamError),
    #[error("the upstream task ended abnormally")]
    Aborted,
}

type Outcome = Result<Arc<Entry>, ForwardError>;
type Pending = Shared<BoxFuture<'static, Outcome>>;

/// Upstream answers that mean "ask someone else" rather than "this is the answer".
fn try_next_on(rcode: Rcode) -> bool {
    matches!(rcode, Rcode::REFUSED | Rcode::NOTIMP | Rcode::FORMERR)
}

pub struct Forwarder {
    router: Router,
    cache: Arc<Cache>,
    settings: ForwardSettings,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<CacheKey, Pending>>,
}

impl Forwarder {
    pub fn new(router: Router, cache: Arc<Cache>, settings: ForwardSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Forwarder { router, cache, settings, metrics, inflight: Mutex::new(HashMap::new()) })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The response for `key`, from one upstream exchange shared by every concurrent caller.
    pub async fn resolve(self: &Arc<Self>, key: CacheKey) -> Outcome {
        let pending = {
            let mut table = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match table.get(&key) {
                Some(pending) => {
                    self.metrics.coalesced.inc();
                    pending.clone()
                }
                None => {
                    // Spawned while the table is locked, so the task's own removal of the key
                    // cannot run before the key is inserted.
                    let task = tokio::spawn(self.clone().fetch(key.clone()));
                    let pending = async move { task.await.unwrap_or(Err(ForwardError::Aborted)) }.boxed().shared();
                    table.insert(key, pending.clone());
                    pending
                }
            }
        };
        pending.await
    }

    /// Asks the group for `key`'s zone, cycling through its servers until one answers or the
    /// deadline passes, and stores the answer.
    async fn fetch(self: Arc<Self>, key: CacheKey) -> Outcome {
        let _inflight = InflightGuard::new(&self, &key);
        let group = self.router.route(key.name()).ok_or(ForwardError::NoRoute)?.clone();
        let deadline = Instant::now() + self.settings.deadline;
        let opts = QueryOptions { udp_payload: self.settings.udp_payload };
        // Timeouts keep cycling until the deadline (loss is hidden by retransmission); hard
        // errors such as "connection refused" end the search after three rounds.
        let max_attempts = group.servers.len() * 3;
        let mut last_error = UpstreamError::Timeout;
        let mut refused: Option<Arc<Entry>> = None;
        for attempt in 0..usize::MAX {
            let now = Instant::now();
            if now >= deadline || (attempt >= max_attempts && last_error != UpstreamError::Timeout) {
                break;
            }
            let server = group.servers[attempt % group.servers.len()];
            let to = server.to_string();
            self.metrics.upstream_request(&to);
            let timeout = self.settings.attempt_timeout.min(deadline - now);
            match upstream::exchange(server, &key, opts, timeout).await {
                Ok(ex) => {
                    let rcode = ex.response.rcode();
                    self.metrics.upstream_response(&to, rcode, now.elapsed().as_secs_f64(), ex.ignored);
                    let entry = Arc::new(Entry::from_response(&ex.msg, &ex.response, self.cache.policy(), Instant::now()));
                    if try_next_on(rcode) && attempt + 1 < group.servers.len() {
                        refused = Some(entry);
                        continue;
                    }
                    self.cache.insert(key.clone(), entry.clone());
                    return Ok(entry);
                }
                Err(e) => {
                    tracing::debug!(upstream = %to, error = %e, "upstream attempt failed");
                    self.metrics.upstream_error(&to, error_reason(&e));
                    last_error = e;
                }
            }
        }
        refused.ok_or(ForwardError::Upstream(last_error))
    }
}

fn error_reason(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Timeout => "timeout",
        UpstreamError::Io(_) => "network",
        UpstreamError::Closed => "closed",
        UpstreamError::Invalid(_) => "invalid_response",
    }
}

/// Keeps the in-flight gauge and table honest however the fetch ends (answer, error, panic).
struct InflightGuard<'a> {
    forwarder: &'a Forwarder,
    key: &'a CacheKey,
}

impl<'a> InflightGuard<'a> {
    fn new(forwarder: &'a Forwarder, key: &'a CacheKey) -> Self {
        forwarder.metrics.inflight_misses.inc();
        InflightGuard { forwarder, key }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.forwarder.metrics.inflight_misses.dec();
        self.forwarder.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(self.key);
    }
}

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

use std::net::SocketAddr;

use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

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
/// One exchange: the server asked, when, and what came of it.
type Attempt = (SocketAddr, Instant, Result<upstream::Exchange, UpstreamError>);
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
                // A fetch stores its answer before leaving the table, so a caller that missed
                // the cache just before that fetch finished finds the answer here instead of
                // asking again.
                None if let Some((entry, _)) = self.cache.lookup(&key.as_ref(), Instant::now()) => {
                    self.metrics.coalesced.inc();
                    return Ok(entry);
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

    /// Asks the group for `key`'s zone and stores the answer. A new attempt (to the next
    /// server, round the group) starts whenever `attempt_timeout` passes without an answer,
    /// while earlier attempts keep listening: a late answer to any of them still wins. So a
    /// lost datagram costs one attempt timeout, not a client's five-second retry.
    async fn fetch(self: Arc<Self>, key: CacheKey) -> Outcome {
        let key = Arc::new(key);
        let _inflight = InflightGuard::new(&self, key.clone());
        let group = self.router.route(key.name()).ok_or(ForwardError::NoRoute)?.clone();
        let deadline = Instant::now() + self.settings.deadline;
        let opts = QueryOptions { udp_payload: self.settings.udp_payload };
        let rounds = self.settings.deadline.as_millis().div_ceil(self.settings.attempt_timeout.as_millis().max(1)) as usize;
        let max_attempts = rounds.max(group.servers.len() * 2);
        let mut attempts: FuturesUnordered<BoxFuture<'static, Attempt>> = FuturesUnordered::new();
        let mut started = 0;
        let mut last_error = UpstreamError::Timeout;
        let mut refused: Option<Arc<Entry>> = None;
        loop {
            let now = Instant::now();
            let may_start = started < max_attempts && now < deadline;
            if attempts.is_empty() && !may_start {
                break;
            }
            let start_next = if attempts.is_empty() {
                true
            } else {
                tokio::select! {
                    Some((server, t0, result)) = attempts.next() => {
                        let to = server.to_string();
                        match result {
                            Ok(ex) => {
                                let rcode = ex.response.rcode();
                                self.metrics.upstream_response(&to, rcode, t0.elapsed().as_secs_f64(), ex.ignored);
                                let entry = Arc::new(Entry::from_response(&ex.msg, &ex.response, self.cache.policy(), Instant::now()));
                                if !(try_next_on(rcode) && may_start) {
                                    self.cache.insert((*key).clone(), entry.clone());
                                    return Ok(entry);
                                }
                                refused = Some(entry);
                            }
                            Err(e) => {
                                tracing::debug!(upstream = %to, error = %e, "upstream attempt failed");
                                self.metrics.upstream_error(&to, error_reason(&e));
                                last_error = e;
                            }
                        }
                        may_start
                    }
                    _ = tokio::time::sleep(self.settings.attempt_timeout), if may_start => true,
                }
            };
            if start_next && may_start {
                let server = group.servers[started % group.servers.len()];
                started += 1;
                self.metrics.upstream_request(&server.to_string());
                let (key, timeout) = (key.clone(), deadline.saturating_duration_since(now));
                attempts.push(
                    async move {
                        let t0 = Instant::now();
                        (server, t0, upstream::exchange(server, &key, opts, timeout).await)
                    }
                    .boxed(),
                );
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
    key: Arc<CacheKey>,
}

impl<'a> InflightGuard<'a> {
    fn new(forwarder: &'a Forwarder, key: Arc<CacheKey>) -> Self {
        forwarder.metrics.inflight_misses.inc();
        InflightGuard { forwarder, key }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.forwarder.metrics.inflight_misses.dec();
        self.forwarder.inflight.lock().unwrap_or_else(PoisonError::into_inner).remove(&*self.key);
    }
}

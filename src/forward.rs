//! The miss path: one upstream query per distinct question, however many clients ask it.
//!
//! Owns request coalescing (the in-flight table), the choice of upstream within a zone's
//! group, retries, and storing what comes back in the cache. The first client to miss on a
//! question spawns the upstream work as its own task, so that it completes and fills the
//! cache even if that client gives up; every later client for the same question waits on the
//! same result and gets it written with its own ID and case (brief, story 2: the thundering
//! herd). Does not parse client queries or touch client sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::seq::SliceRandom;

use crate::cache::{Cache, CacheKey, Entry, Kind};
use crate::metrics::Metrics;
use crate::upstream::{self, Upstream, UpstreamError};
use crate::wire::Rcode;
use crate::zones::Router;

/// How the miss path chooses among a group's upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In the configured order: the first healthy upstream gets everything.
    Sequential,
    /// Each query starts at the next upstream.
    RoundRobin,
    /// A random order per query.
    Random,
    /// Lowest smoothed RTT first.
    Fastest,
}

/// Settings of the miss path.
#[derive(Clone, Copy, Debug)]
pub struct ForwardSettings {
    /// How long the whole resolution may take, across attempts.
    pub deadline: Duration,
    pub policy: Policy,
    /// Attempts (first sends and retransmissions) per question, at least one per upstream.
    pub max_attempts: usize,
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

/// What a miss produced, and the upstream that answered it (none when the answer came
/// from the cache after all: another fetch's, or a stale one kept on failure).
#[derive(Clone)]
pub struct Answer {
    pub entry: Entry,
    pub upstream: Option<Arc<Upstream>>,
}

type Outcome = Result<Answer, ForwardError>;
/// One exchange: the upstream asked (its place in the fetch's order) and what came of it.
type Attempt = (usize, Arc<Upstream>, Result<upstream::Exchange, UpstreamError>);
type Pending = Shared<BoxFuture<'static, Outcome>>;

/// Upstream answers that mean "ask someone else" rather than "this is the answer".
fn try_next_on(rcode: Rcode) -> bool {
    matches!(rcode, Rcode::REFUSED | Rcode::NOTIMP | Rcode::FORMERR)
}

pub struct Forwarder {
    /// Swapped whole by a configuration reload; a fetch keeps the one it started with.
    router: ArcSwap<Router<Arc<Upstream>>>,
    round_robin: AtomicUsize,
    cache: Arc<Cache>,
    settings: ArcSwap<ForwardSettings>,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<CacheKey, Pending>>,
}

impl Forwarder {
    pub fn new(router: Router<Arc<Upstream>>, cache: Arc<Cache>, settings: ForwardSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Forwarder {
            router: ArcSwap::from_pointee(router),
            round_robin: AtomicUsize::new(0),
            cache,
            settings: ArcSwap::from_pointee(settings),
            metrics,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// New zones, upstreams and retry settings for fetches started from now on.
    pub fn reconfigure(&self, router: Router<Arc<Upstream>>, settings: ForwardSettings) {
        self.router.store(Arc::new(router));
        self.settings.store(Arc::new(settings));
    }

    /// Every upstream in use, once each.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<Arc<Upstream>> = Vec::new();
        for upstream in self.router.load().groups().iter().flat_map(|g| g.servers.iter()) {
            if !all.iter().any(|u| Arc::ptr_eq(u, upstream)) {
                all.push(upstream.clone());
            }
        }
        all
    }

    /// The zone and upstreams a miss for `qname` (lower-cased wire form) goes to.
    pub fn route_of(&self, qname: &[u8]) -> Option<(String, Vec<String>)> {
        let router = self.router.load();
        let group = router.route(qname)?;
        Some((group.zone.to_string(), group.servers.iter().map(|u| u.label().to_string()).collect()))
    }

    /// Whether every upstream a miss for `qname` would ask is known down.
    pub fn route_is_down(&self, qname: &[u8]) -> bool {
        self.router.load().route(qname).is_some_and(|g| !g.servers.is_empty() && g.servers.iter().all(|u| !u.is_up()))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The response for `key`, from one upstream exchange shared by every concurrent caller.
    pub async fn resolve(self: &Arc<Self>, key: CacheKey) -> Outcome {
        self.join_or_fetch(key, true).await
    }

    /// Asks the upstream for `key` again although the cache still holds an answer (prefetch
    /// ahead of expiry), unless a fetch for it is already running: one refresh at a time.
    pub async fn refresh(self: &Arc<Self>, key: CacheKey) -> Outcome {
        self.join_or_fetch(key, false).await
    }

    async fn join_or_fetch(self: &Arc<Self>, key: CacheKey, cached_will_do: bool) -> Outcome {
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
                None if cached_will_do && let Some((entry, _)) = self.cache.lookup(&key.borrowed(), Instant::now()) => {
                    self.metrics.coalesced.inc();
                    return Ok(Answer { entry, upstream: None });
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

    /// Asks the group for `key`'s zone and stores the answer.
    ///
    /// Upstreams are tried in the order the policy gives (healthy ones first). A new attempt
    /// starts whenever the current upstream's adaptive timeout passes without an answer
    /// (doubling with each round of the group), while earlier attempts keep listening: a
    /// late answer to any of them still wins. A lost datagram therefore costs a few
    /// round-trip times, not a client's five-second retry (brief, story 3). Upstreams over
    /// their rate cap are skipped; an attempt that fails outright moves on at once.
    ///
    /// An upstream that answers REFUSED, NOTIMP or FORMERR has answered: it is not asked
    /// again for this question (asking again only multiplies the load on a server that
    /// already said no), the next upstream is, and when none is left the last such answer
    /// goes to the clients and is kept briefly like a SERVFAIL.
    async fn fetch(self: Arc<Self>, key: CacheKey) -> Outcome {
        let key = Arc::new(key);
        let _inflight = InflightGuard::new(&self, key.clone());
        let settings = **self.settings.load();
        let group = self.router.load().route(key.name()).ok_or(ForwardError::NoRoute)?.clone();
        let order = self.order(&group.servers, settings.policy);
        let deadline = Instant::now() + settings.deadline;
        let mut plan = Plan::new(order.len(), settings.max_attempts);
        let mut attempts: FuturesUnordered<BoxFuture<'static, Attempt>> = FuturesUnordered::new();
        let mut current: Option<Arc<Upstream>> = None;
        let mut timer = Duration::ZERO;
        let mut last_error = UpstreamError::Timeout;
        let mut refused: Option<Answer> = None;
        loop {
            let now = Instant::now();
            if attempts.is_empty() && !plan.may_start(now, deadline) {
                break;
            }
            let start_next = if attempts.is_empty() {
                true
            } else {
                tokio::select! {
                    Some((i, upstream, result)) = attempts.next() => {
                        match result {
                            Ok(ex) => {
                                let rcode = ex.response.rcode();
                                let entry = Entry::from_response(&key.borrowed(), &ex.msg, &ex.response, self.cache.policy(), Instant::now());
                                if try_next_on(rcode) {
                                    plan.answered(i);
                                }
                                if !(try_next_on(rcode) && plan.may_start(Instant::now(), deadline)) {
                                    return Ok(Answer { entry: self.store(&key, entry), upstream: Some(upstream) });
                                }
                                tracing::debug!(upstream = %upstream.label(), rcode = rcode.as_str(), "trying the next upstream");
                                refused = Some(Answer { entry, upstream: Some(upstream) });
                            }
                            Err(e) => {
                                tracing::debug!(upstream = %upstream.label(), error = %e, "upstream attempt failed");
                                last_error = e;
                            }
                        }
                        true
                    }
                    _ = tokio::time::sleep(timer), if plan.may_start(now, deadline) => {
                        if let Some(previous) = &current {
                            previous.metrics().retransmits.inc();
                        }
                        true
                    }
                }
            };
            if !(start_next && plan.may_start(Instant::now(), deadline)) {
                continue;
            }
            let Some(i) = plan.next(|i| order[i].admit()) else {
                last_error = UpstreamError::RateLimited;
                if attempts.is_empty() {
                    break;
                }
                continue;
            };
            let upstream = order[i].clone();
            timer = upstream.retransmit_timeout() * 2u32.pow(plan.round());
            current = Some(upstream.clone());
            let (key, timeout) = (key.clone(), deadline.saturating_duration_since(Instant::now()));
            attempts.push(
                async move {
                    let result = upstream.exchange(&key, timeout).await;
                    (i, upstream, result)
                }
                .boxed(),
            );
        }
        match self.cache.keep_on_failure(&key.borrowed(), Instant::now()) {
            Some(kept) => Ok(Answer { entry: kept, upstream: None }),
            None => match refused {
                Some(answer) => Ok(Answer { entry: self.store(&key, answer.entry), upstream: answer.upstream }),
                None => Err(ForwardError::Upstream(last_error)),
            },
        }
    }

    /// Stores the upstream's answer and returns what the clients get: a SERVFAIL neither
    /// replaces an answer still fresh (a failed refresh) nor hides one that may be served
    /// stale.
    fn store(&self, key: &CacheKey, entry: Entry) -> Entry {
        if entry.kind() == Kind::Failure
            && let Some(kept) = self.cache.keep_on_failure(&key.borrowed(), Instant::now())
        {
            return kept;
        }
        self.cache.insert(&key.borrowed(), entry.clone());
        entry
    }

    /// The group's upstreams in the order the policy gives, healthy ones first (all of them
    /// when none is healthy, as CoreDNS does: health checking may be what is broken).
    fn order(&self, servers: &[Arc<Upstream>], policy: Policy) -> Vec<Arc<Upstream>> {
        let mut order: Vec<Arc<Upstream>> = servers.to_vec();
        match policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                let n = self.round_robin.fetch_add(1, Ordering::Relaxed) % order.len().max(1);
                order.rotate_left(n);
            }
            Policy::Random => order.shuffle(&mut rand::rng()),
            Policy::Fastest => order.sort_by_key(|u| u.smoothed_rtt().unwrap_or(Duration::ZERO)),
        }
        // Stable: keeps the policy's order within each half.
        order.sort_by_key(|u| !u.is_up());
        order
    }
}

/// Which upstream of a fetch's order gets the next attempt, and whether one may start.
struct Plan {
    /// Upstreams that answered "ask someone else": never asked again by this fetch.
    answered: Vec<bool>,
    next: usize,
    started: usize,
    max_attempts: usize,
}

impl Plan {
    fn new(upstreams: usize, max_attempts: usize) -> Plan {
        Plan { answered: vec![false; upstreams], next: 0, started: 0, max_attempts: max_attempts.max(upstreams) }
    }

    fn answered(&mut self, i: usize) {
        self.answered[i] = true;
    }

    /// Attempts are left, time is left, and some upstream has not said no.
    fn may_start(&self, now: Instant, deadline: Instant) -> bool {
        self.started < self.max_attempts && now < deadline && self.answered.iter().any(|a| !a)
    }

    /// The next upstream in order that has not said no and that `admit`s the attempt (its
    /// rate cap); counts the attempt either way, so a capped group cannot spin.
    fn next(&mut self, mut admit: impl FnMut(usize) -> bool) -> Option<usize> {
        let n = self.answered.len();
        self.started += 1;
        let i = (0..n).map(|k| (self.next + k) % n).filter(|&i| !self.answered[i]).find(|&i| admit(i))?;
        self.next = i + 1;
        Some(i)
    }

    /// How many times round the group the attempts have been (the retransmission
    /// timer doubles with each).
    fn round(&self) -> u32 {
        ((self.started - 1) / self.answered.len()).min(6) as u32
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

//! The miss path: one upstream query per distinct question, however many clients ask it.
//!
//! Owns request coalescing (the in-flight table), the choice of upstream within a zone's
//! group, retries, and storing what comes back in the cache. The first client to miss on a
//! question spawns the upstream work as its own task, so that it completes and fills the
//! cache even if that client gives up; every later client for the same question waits on the
//! same result and gets it written with its own ID and case, so a herd of clients asking one
//! name costs the upstream one query. Does not parse client queries or touch client sockets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::seq::SliceRandom;
// A fetch times its attempts on the runtime's clock, which tests can pause.
use tokio::time;

use crate::cache::{Cache, CacheKey, Entry, Kind};
use crate::metrics::Metrics;
use crate::upstream::{Exchange, Upstream, UpstreamError};
use crate::wire::Rcode;
use crate::wire::name::LowerName;
use crate::zones::{Router, Zone};

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
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardSettings {
    /// How long the whole resolution may take, across attempts.
    pub deadline: Duration,
    pub policy: Policy,
    /// Attempts (first sends and retransmissions) per question, at least one per upstream.
    pub max_attempts: usize,
    /// How often each zone is probed for a forwarding loop (by the `loops` layer); zero: never.
    pub loop_probe_interval: Duration,
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
pub struct Answer<U = Arc<Upstream>> {
    pub entry: Entry,
    pub upstream: Option<U>,
}

type Outcome<U = Arc<Upstream>> = Result<Answer<U>, ForwardError>;
/// One exchange: the upstream asked (its place in the fetch's order) and what came of it.
type Attempt<U> = (usize, U, Result<Exchange, UpstreamError>);
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

    /// The zone and upstreams a miss for `qname` goes to.
    pub fn route_of(&self, qname: LowerName<'_>) -> Option<(String, Vec<String>)> {
        let router = self.router.load();
        let group = router.route(qname)?;
        Some((group.zone.to_string(), group.servers.iter().map(|u| u.label().to_string()).collect()))
    }

    /// Every zone routed, with the labels of its upstreams.
    pub fn zones(&self) -> Vec<(Zone, Vec<String>)> {
        let router = self.router.load();
        router.groups().iter().map(|g| (g.zone.clone(), g.servers.iter().map(|u| u.label().to_string()).collect())).collect()
    }

    /// The settings fetches started now run with.
    pub fn settings(&self) -> ForwardSettings {
        **self.settings.load()
    }

    /// Whether every upstream a miss for `qname` would ask is known down.
    pub fn route_is_down(&self, qname: LowerName<'_>) -> bool {
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
    /// starts whenever the current upstream's adaptive timeout (doubling with each round of
    /// the group) passes without an answer, while earlier attempts keep listening: a late
    /// answer to any of them still wins. A lost datagram therefore costs a few round-trip
    /// times, not a client's five-second retry. Upstreams over their rate cap are skipped;
    /// an attempt that fails outright moves on at once. An upstream that answers REFUSED,
    /// NOTIMP or FORMERR is not asked again for this question, and when no one is left the
    /// last such answer goes to the clients. Those decisions are [`Plan`]'s; [`Fetch`] runs
    /// the attempts it asks for and tells it what came of them.
    async fn fetch(self: Arc<Self>, key: CacheKey) -> Outcome {
        let key = Arc::new(key);
        let _inflight = InflightGuard::new(&self, key.clone());
        let settings = **self.settings.load();
        // A zone configured without upstreams is not forwarded (an imported Corefile's `except`).
        let group = self.router.load().route(key.name()).filter(|g| !g.servers.is_empty()).ok_or(ForwardError::NoRoute)?.clone();
        let order = self.order(&group.servers, settings.policy);
        Fetch { cache: &self.cache, key: &key }.run(order, settings).await
    }

    /// The group's upstreams in the order the policy gives, healthy ones first (all of them
    /// when none is healthy, as CoreDNS does: health checking may be what is broken).
    /// None healthy is counted in `coredns_forward_healthcheck_broken_total`, as CoreDNS does.
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
        if order.first().is_some_and(|u| !u.is_up()) {
            self.metrics.healthcheck_broken.inc();
        }
        order
    }
}

/// One fetch for `key` carried out: the attempts and timers its [`Plan`] asks for, and what
/// the cache keeps of the result. Generic over the upstream so that tests can drive it with
/// upstreams that answer in virtual time; the miss path runs it with `Arc<Upstream>`.
struct Fetch<'a> {
    cache: &'a Cache,
    key: &'a CacheKey,
}

impl Fetch<'_> {
    async fn run<U: Exchanger>(&self, order: Vec<U>, settings: ForwardSettings) -> Outcome<U> {
        let mut plan: Plan<U, Answer<U>> = Plan::new(order, settings.max_attempts, time::Instant::now() + settings.deadline);
        let mut attempts = FuturesUnordered::new();
        let mut step = plan.start(time::Instant::now());
        loop {
            let retransmit_at = match step {
                Step::Ask { upstream, timeout, retransmit_at } => {
                    attempts.push(ask(plan.upstream(upstream).clone(), upstream, self.key, timeout));
                    retransmit_at
                }
                Step::Wait { retransmit_at } => retransmit_at,
                Step::Return(answer) => return Ok(Answer { entry: self.store(answer.entry), upstream: answer.upstream }),
                Step::GiveUp { refusal, error } => return self.give_up(refusal, error),
            };
            // The plan waits only while an attempt is in flight, so one branch is enabled.
            step = tokio::select! {
                Some(attempt) = attempts.next() => self.settle(&mut plan, attempt),
                () = time::sleep_until(retransmit_at.unwrap_or_else(time::Instant::now)), if retransmit_at.is_some() => {
                    retransmit(&mut plan)
                }
            };
        }
    }

    /// Tells the plan what one attempt brought back.
    fn settle<U: Exchanger>(&self, plan: &mut Plan<U, Answer<U>>, (i, upstream, result): Attempt<U>) -> Step<Answer<U>> {
        match result {
            Ok(ex) => {
                let rcode = ex.response.rcode();
                let policy = self.cache.policy_for(self.key.name());
                let entry = Entry::from_response(&self.key.borrowed(), &ex.msg, &ex.response, policy, Instant::now());
                let answer = Answer { entry, upstream: Some(upstream.clone()) };
                let step = plan.on(Event::Answered { upstream: i, rcode, answer }, time::Instant::now());
                if !matches!(step, Step::Return(_)) {
                    tracing::debug!(upstream = %upstream.label(), rcode = rcode.as_str(), "trying the next upstream");
                }
                step
            }
            Err(error) => {
                tracing::debug!(upstream = %upstream.label(), error = %error, "upstream attempt failed");
                plan.on(Event::Failed(error), time::Instant::now())
            }
        }
    }

    /// What the clients get when no attempt brought a usable answer: an entry the cache may
    /// keep (fresh, or servable stale) before the last refusal, and that before the error.
    fn give_up<U>(&self, refusal: Option<Answer<U>>, error: UpstreamError) -> Outcome<U> {
        match self.cache.keep_on_failure(&self.key.borrowed(), Instant::now()) {
            Some(kept) => Ok(Answer { entry: kept, upstream: None }),
            None => match refusal {
                Some(answer) => Ok(Answer { entry: self.store(answer.entry), upstream: answer.upstream }),
                None => Err(ForwardError::Upstream(error)),
            },
        }
    }

    /// Stores the upstream's answer and returns what the clients get: a SERVFAIL neither
    /// replaces an answer still fresh (a failed refresh) nor hides one that may be served
    /// stale.
    fn store(&self, entry: Entry) -> Entry {
        let key = self.key.borrowed();
        if entry.kind() == Kind::Failure
            && let Some(kept) = self.cache.keep_on_failure(&key, Instant::now())
        {
            return kept;
        }
        self.cache.insert(&key, entry.clone());
        entry
    }
}

/// The retransmission timer ran out: counted against the upstream that did not answer in
/// time, whichever the plan asks next.
fn retransmit<U: Exchanger>(plan: &mut Plan<U, Answer<U>>) -> Step<Answer<U>> {
    if let Some(previous) = plan.last_asked() {
        previous.count_retransmit();
    }
    plan.on(Event::TimerFired, time::Instant::now())
}

/// One exchange with `upstream`, reporting its place in the fetch's order with the result.
async fn ask<U: Exchanger>(upstream: U, i: usize, key: &CacheKey, timeout: Duration) -> Attempt<U> {
    let result = upstream.exchange(key, timeout).await;
    (i, upstream, result)
}

/// What a [`Plan`] needs to know of an upstream.
trait Candidate {
    /// Takes a token from its rate cap; `false` when over it.
    fn admit(&self) -> bool;
    /// How long an attempt waits for it before the next one starts, in the first round.
    fn retransmit_timeout(&self) -> Duration;
}

impl Candidate for Arc<Upstream> {
    fn admit(&self) -> bool {
        Upstream::admit(self)
    }

    fn retransmit_timeout(&self) -> Duration {
        Upstream::retransmit_timeout(self)
    }
}

/// What a [`Fetch`] needs of an upstream besides what its [`Plan`] does. A trait rather than
/// `Upstream` itself so that tests can stand in upstreams that answer in virtual time; the
/// miss path is compiled for `Arc<Upstream>` alone, with no dynamic dispatch.
trait Exchanger: Candidate + Clone {
    /// How logs name it.
    fn label(&self) -> &str;
    /// Counts a query sent again because this upstream did not answer within its timeout.
    fn count_retransmit(&self);
    /// One exchange, ending in [`UpstreamError::Timeout`] if `timeout` passes first.
    fn exchange(&self, key: &CacheKey, timeout: Duration) -> impl Future<Output = Result<Exchange, UpstreamError>> + Send;
}

impl Exchanger for Arc<Upstream> {
    fn label(&self) -> &str {
        Upstream::label(self)
    }

    fn count_retransmit(&self) {
        self.metrics().retransmits.inc();
    }

    fn exchange(&self, key: &CacheKey, timeout: Duration) -> impl Future<Output = Result<Exchange, UpstreamError>> + Send {
        Upstream::exchange(self, key, timeout)
    }
}

/// What happened to a fetch, as its [`Plan`] is told.
#[derive(Debug)]
enum Event<A> {
    /// The upstream at this place in the order answered, with this rcode.
    Answered { upstream: usize, rcode: Rcode, answer: A },
    /// An attempt failed (which one does not matter: an upstream that failed may be asked
    /// again in a later round).
    Failed(UpstreamError),
    /// The last attempt's retransmission timer passed without an answer.
    TimerFired,
}

/// What a fetch does next.
#[derive(Debug, PartialEq)]
enum Step<A> {
    /// Start an attempt at the upstream at this place in the order, given `timeout` (the
    /// time left), then wait as [`Step::Wait`] says.
    Ask { upstream: usize, timeout: Duration, retransmit_at: Option<time::Instant> },
    /// Wait for an attempt in flight to end, or for `retransmit_at` (none: no attempt may
    /// start any more, only those in flight can still answer).
    Wait { retransmit_at: Option<time::Instant> },
    /// This answer goes to the clients.
    Return(A),
    /// No attempt is in flight and none may start: the last refusal, if any, else the last
    /// error.
    GiveUp { refusal: Option<A>, error: UpstreamError },
}

/// The retry and hedging decisions of one fetch, apart from the futures that carry them out:
/// which upstream of the order gets the next attempt, when its timer runs out, when to stop,
/// and what to return. `A` is what an answer carries (the fetch's [`Answer`]).
struct Plan<C, A> {
    order: Vec<C>,
    /// Upstreams that answered "ask someone else": never asked again by this fetch (asking
    /// again only multiplies the load on a server that already said no).
    answered: Vec<bool>,
    next: usize,
    /// Attempts counted, including those the rate caps turned away.
    started: usize,
    max_attempts: usize,
    deadline: time::Instant,
    in_flight: usize,
    last_asked: Option<usize>,
    /// The last attempt's retransmission timer.
    timer: Duration,
    refusal: Option<A>,
    last_error: UpstreamError,
}

impl<C: Candidate, A> Plan<C, A> {
    /// `max_attempts` is raised to the number of upstreams: each may be asked once.
    fn new(order: Vec<C>, max_attempts: usize, deadline: time::Instant) -> Self {
        let n = order.len();
        Plan {
            order,
            answered: vec![false; n],
            next: 0,
            started: 0,
            max_attempts: max_attempts.max(n),
            deadline,
            in_flight: 0,
            last_asked: None,
            timer: Duration::ZERO,
            refusal: None,
            last_error: UpstreamError::Timeout,
        }
    }

    fn upstream(&self, i: usize) -> &C {
        &self.order[i]
    }

    /// The upstream whose retransmission timer runs.
    fn last_asked(&self) -> Option<&C> {
        self.last_asked.map(|i| &self.order[i])
    }

    /// The first step of the fetch.
    fn start(&mut self, now: time::Instant) -> Step<A> {
        self.ask_next(now)
    }

    fn on(&mut self, event: Event<A>, now: time::Instant) -> Step<A> {
        match event {
            Event::Answered { upstream, rcode, answer } => {
                self.in_flight -= 1;
                if !try_next_on(rcode) {
                    return Step::Return(answer);
                }
                self.answered[upstream] = true;
                // No one left to ask: this refusal is the answer, though attempts at
                // upstreams that have not said no may still be in flight.
                if !self.may_start(now) {
                    return Step::Return(answer);
                }
                self.refusal = Some(answer);
            }
            Event::Failed(error) => {
                self.in_flight -= 1;
                self.last_error = error;
            }
            Event::TimerFired => {}
        }
        self.ask_next(now)
    }

    fn ask_next(&mut self, now: time::Instant) -> Step<A> {
        if self.may_start(now) {
            match self.pick() {
                Some(i) => return self.ask(i, now),
                None => {
                    self.last_error = UpstreamError::RateLimited;
                    if self.in_flight == 0 {
                        return self.give_up();
                    }
                }
            }
        }
        self.wait(now)
    }

    fn ask(&mut self, i: usize, now: time::Instant) -> Step<A> {
        self.timer = self.order[i].retransmit_timeout() * 2u32.pow(self.round());
        self.last_asked = Some(i);
        self.in_flight += 1;
        Step::Ask { upstream: i, timeout: self.deadline.saturating_duration_since(now), retransmit_at: self.retransmit_at(now) }
    }

    /// Waits for the attempts in flight; with none, the fetch is over.
    fn wait(&mut self, now: time::Instant) -> Step<A> {
        if self.in_flight == 0 {
            return self.give_up();
        }
        Step::Wait { retransmit_at: self.retransmit_at(now) }
    }

    /// When the next attempt starts if nothing answers first.
    fn retransmit_at(&self, now: time::Instant) -> Option<time::Instant> {
        self.may_start(now).then(|| now + self.timer)
    }

    fn give_up(&mut self) -> Step<A> {
        Step::GiveUp { refusal: self.refusal.take(), error: self.last_error }
    }

    /// Attempts are left, time is left, and some upstream has not said no.
    fn may_start(&self, now: time::Instant) -> bool {
        self.started < self.max_attempts && now < self.deadline && self.answered.iter().any(|a| !a)
    }

    /// The next upstream in order that has not said no and that admits the attempt (its
    /// rate cap); counts the attempt either way, so a capped group cannot spin.
    fn pick(&mut self) -> Option<usize> {
        let n = self.order.len();
        self.started += 1;
        let i = (0..n).map(|k| (self.next + k) % n).filter(|&i| !self.answered[i]).find(|&i| self.order[i].admit())?;
        self.next = i + 1;
        Some(i)
    }

    /// How many times round the group the attempts have been (the retransmission
    /// timer doubles with each).
    fn round(&self) -> u32 {
        ((self.started - 1) / self.order.len()).min(6) as u32
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

#[cfg(test)]
mod tests {
    //! The plan is driven with synthetic events at synthetic instants: each test is the
    //! timeline of one fetch, with no sockets and no sleeping.

    use std::cell::Cell;

    use super::*;

    const RETRANSMIT: Duration = Duration::from_millis(100);
    const DEADLINE: Duration = Duration::from_secs(2);

    type TestPlan = Plan<Fake, &'static str>;
    type TestStep = Step<&'static str>;

    /// An upstream as the plan sees it: its timer, and tokens left under its rate cap.
    struct Fake {
        timeout: Duration,
        tokens: Cell<usize>,
        asked_to_admit: Cell<usize>,
    }

    impl Candidate for Fake {
        fn admit(&self) -> bool {
            self.asked_to_admit.set(self.asked_to_admit.get() + 1);
            let left = self.tokens.get();
            self.tokens.set(left.saturating_sub(1));
            left > 0
        }

        fn retransmit_timeout(&self) -> Duration {
            self.timeout
        }
    }

    fn upstream(timeout: Duration) -> Fake {
        Fake { timeout, tokens: Cell::new(usize::MAX), asked_to_admit: Cell::new(0) }
    }

    fn capped_after(tokens: usize) -> Fake {
        Fake { tokens: Cell::new(tokens), ..upstream(RETRANSMIT) }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A plan over `order` whose deadline is [`DEADLINE`] after the instant returned.
    fn plan(order: Vec<Fake>, max_attempts: usize) -> (TestPlan, time::Instant) {
        let t0 = time::Instant::now();
        (Plan::new(order, max_attempts, t0 + DEADLINE), t0)
    }

    fn answered(upstream: usize, rcode: Rcode, answer: &'static str) -> Event<&'static str> {
        Event::Answered { upstream, rcode, answer }
    }

    fn failed(error: UpstreamError) -> Event<&'static str> {
        Event::Failed(error)
    }

    fn ask(upstream: usize, timeout: Duration, retransmit_at: Option<time::Instant>) -> TestStep {
        Step::Ask { upstream, timeout, retransmit_at }
    }

    fn give_up(refusal: Option<&'static str>, error: UpstreamError) -> TestStep {
        Step::GiveUp { refusal, error }
    }

    /// Lets the step's timer run out, as the fetch's `sleep_until` would: the plan is told at
    /// the instant the timer was set for, which is returned with its next step.
    fn fire(plan: &mut TestPlan, step: &TestStep) -> (TestStep, time::Instant) {
        let (Step::Ask { retransmit_at: Some(at), .. } | Step::Wait { retransmit_at: Some(at) }) = *step else {
            panic!("no timer running: {step:?}");
        };
        (plan.on(Event::TimerFired, at), at)
    }

    #[test]
    fn a_lost_query_is_sent_again_when_the_retransmit_timeout_passes_and_its_answer_returned() {
        let (mut plan, t0) = plan(vec![upstream(ms(300))], 3);
        let first = plan.start(t0);
        assert_eq!(first, ask(0, DEADLINE, Some(t0 + ms(300))), "the timer is the upstream's timeout");
        let (second, t1) = fire(&mut plan, &first);
        assert_eq!(second, ask(0, DEADLINE - ms(300), Some(t1 + ms(600))), "asked again; second round, the timer doubles");
        assert_eq!(plan.on(answered(0, Rcode::NOERROR, "second"), t1 + ms(2)), Step::Return("second"));
    }

    #[test]
    fn a_slow_first_upstream_is_raced_by_the_second_and_the_first_answer_from_either_wins() {
        for (answering, answer) in [(0, "from the slow first"), (1, "from the second")] {
            let (mut plan, t0) = plan(vec![upstream(ms(100)), upstream(ms(300))], 4);
            let first = plan.start(t0);
            let (second, t1) = fire(&mut plan, &first);
            assert_eq!(second, ask(1, DEADLINE - ms(100), Some(t1 + ms(300))), "the second upstream, on its own timer");
            assert_eq!(plan.in_flight, 2, "the first attempt keeps listening");
            assert_eq!(plan.on(answered(answering, Rcode::NOERROR, answer), t1 + ms(20)), Step::Return(answer));
        }
    }

    #[test]
    fn the_timer_doubles_with_each_round_of_the_group_up_to_sixty_four_times() {
        let (mut plan, t0) = plan(vec![upstream(ms(1)), upstream(ms(1))], 20);
        let (mut step, mut now) = (plan.start(t0), t0);
        let mut timers = Vec::new();
        for _ in 0..16 {
            let before = now;
            (step, now) = fire(&mut plan, &step);
            timers.push((now - before).as_millis());
        }
        assert_eq!(timers, [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 64, 64, 64, 64]);
    }

    #[test]
    fn a_refusal_sends_the_search_on_at_once_and_the_next_answer_wins() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT), upstream(RETRANSMIT)], 4);
        plan.start(t0);
        let t1 = t0 + ms(5);
        assert_eq!(
            plan.on(answered(0, Rcode::REFUSED, "no"), t1),
            ask(1, DEADLINE - ms(5), Some(t1 + RETRANSMIT)),
            "no waiting for the timer"
        );
        assert_eq!(plan.on(answered(1, Rcode::NOERROR, "yes"), t1 + ms(5)), Step::Return("yes"));
    }

    #[test]
    fn when_every_upstream_refuses_each_is_asked_once_and_the_last_refusal_is_returned() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT), upstream(RETRANSMIT), upstream(RETRANSMIT)], 8);
        assert_eq!(plan.start(t0), ask(0, DEADLINE, Some(t0 + RETRANSMIT)));
        assert_eq!(plan.on(answered(0, Rcode::REFUSED, "refused"), t0), ask(1, DEADLINE, Some(t0 + RETRANSMIT)));
        assert_eq!(plan.on(answered(1, Rcode::NOTIMP, "notimp"), t0), ask(2, DEADLINE, Some(t0 + RETRANSMIT)));
        assert_eq!(plan.on(answered(2, Rcode::FORMERR, "formerr"), t0), Step::Return("formerr"));
        assert!(plan.order.iter().all(|u| u.asked_to_admit.get() == 1), "each asked once");
    }

    #[test]
    fn an_upstream_that_refused_is_not_asked_again_when_timers_fire() {
        // Timers short enough for every attempt to start before the deadline.
        let (mut plan, t0) = plan(vec![upstream(ms(10)), upstream(ms(10))], 8);
        plan.start(t0);
        let mut step = plan.on(answered(0, Rcode::REFUSED, "no"), t0);
        let mut asked = Vec::new();
        while let Step::Ask { upstream, retransmit_at, .. } = step {
            asked.push(upstream);
            if retransmit_at.is_none() {
                break;
            }
            (step, _) = fire(&mut plan, &step);
        }
        assert_eq!(asked, [1; 7], "every attempt left, and only the other upstream");
        assert_eq!(plan.order[0].asked_to_admit.get(), 1, "the refusing upstream was passed over");
    }

    #[test]
    fn a_kept_refusal_is_returned_when_the_remaining_attempts_fail() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT), upstream(RETRANSMIT)], 2);
        plan.start(t0);
        plan.on(answered(0, Rcode::REFUSED, "no"), t0);
        assert_eq!(plan.on(failed(UpstreamError::Timeout), t0), give_up(Some("no"), UpstreamError::Timeout));
    }

    #[test]
    fn a_refusal_with_no_attempt_left_is_returned_although_others_are_in_flight() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT), upstream(RETRANSMIT)], 2);
        let first = plan.start(t0);
        let (_, t1) = fire(&mut plan, &first);
        assert_eq!(plan.on(answered(1, Rcode::REFUSED, "no"), t1), Step::Return("no"));
    }

    #[test]
    fn errors_move_on_at_once_and_after_max_attempts_the_last_error_ends_the_fetch() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT), upstream(RETRANSMIT)], 3);
        assert_eq!(plan.start(t0), ask(0, DEADLINE, Some(t0 + RETRANSMIT)));
        assert_eq!(plan.on(failed(UpstreamError::Connect), t0), ask(1, DEADLINE, Some(t0 + RETRANSMIT)));
        assert_eq!(plan.on(failed(UpstreamError::Closed), t0), ask(0, DEADLINE, None), "the third and last attempt");
        let refused = UpstreamError::Io(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(plan.on(failed(refused), t0), give_up(None, refused));
    }

    #[test]
    fn after_the_last_attempt_starts_the_fetch_waits_only_for_those_in_flight() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT)], 2);
        let first = plan.start(t0);
        let (second, t1) = fire(&mut plan, &first);
        assert_eq!(second, ask(0, DEADLINE - RETRANSMIT, None));
        assert_eq!(plan.on(failed(UpstreamError::Closed), t1), Step::Wait { retransmit_at: None });
        assert_eq!(plan.on(failed(UpstreamError::Timeout), t1), give_up(None, UpstreamError::Timeout));
    }

    #[test]
    fn no_attempt_starts_at_or_after_the_deadline_and_the_error_is_the_result() {
        let (mut plan, t0) = plan(vec![upstream(ms(1500))], 8);
        let first = plan.start(t0);
        let (second, t1) = fire(&mut plan, &first);
        assert_eq!(second, ask(0, DEADLINE - ms(1500), Some(t1 + ms(3000))), "given only the time left");
        let deadline = t0 + DEADLINE;
        assert_eq!(plan.on(failed(UpstreamError::Timeout), deadline), Step::Wait { retransmit_at: None });
        let (late, _) = fire(&mut plan, &second);
        assert_eq!(late, Step::Wait { retransmit_at: None }, "a timer past the deadline starts nothing");
        assert_eq!(plan.on(failed(UpstreamError::Timeout), deadline + ms(1)), give_up(None, UpstreamError::Timeout));
    }

    #[test]
    fn a_fetch_started_at_its_deadline_gives_up_without_asking() {
        let (mut plan, t0) = plan(vec![upstream(RETRANSMIT)], 8);
        assert_eq!(plan.start(t0 + DEADLINE), give_up(None, UpstreamError::Timeout));
        assert_eq!(plan.order[0].asked_to_admit.get(), 0);
    }

    #[test]
    fn rate_capped_upstreams_are_skipped() {
        let (mut plan, t0) = plan(vec![capped_after(0), upstream(RETRANSMIT)], 4);
        assert_eq!(plan.start(t0), ask(1, DEADLINE, Some(t0 + RETRANSMIT)));
    }

    #[test]
    fn a_fully_capped_group_gives_up_at_once_with_rate_limited() {
        let (mut plan, t0) = plan(vec![capped_after(0), capped_after(0)], 8);
        assert_eq!(plan.start(t0), give_up(None, UpstreamError::RateLimited));
        assert!(plan.order.iter().all(|u| u.asked_to_admit.get() == 1), "each asked once");
    }

    #[test]
    fn a_group_capped_while_attempts_are_in_flight_counts_each_turned_away_attempt_and_stops() {
        let (mut plan, t0) = plan(vec![capped_after(1), capped_after(1)], 4);
        let first = plan.start(t0);
        let (second, _) = fire(&mut plan, &first);
        assert!(matches!(second, Step::Ask { upstream: 1, .. }), "{second:?}");
        let (third, t2) = fire(&mut plan, &second);
        assert_eq!(third, Step::Wait { retransmit_at: Some(t2 + RETRANSMIT) }, "turned away, waits on");
        let (fourth, t3) = fire(&mut plan, &third);
        assert_eq!(fourth, Step::Wait { retransmit_at: None }, "attempts used up: no timer to spin on");
        assert_eq!(plan.on(failed(UpstreamError::Timeout), t3), Step::Wait { retransmit_at: None });
        assert_eq!(plan.on(failed(UpstreamError::Timeout), t3), give_up(None, UpstreamError::Timeout));
    }

    #[test]
    fn an_empty_group_gives_up_at_once() {
        let (mut plan, t0) = plan(Vec::new(), 8);
        assert_eq!(plan.start(t0), give_up(None, UpstreamError::Timeout));
    }
}

#[cfg(test)]
mod fetch_tests {
    //! [`Fetch`] driven under paused time by in-memory upstreams that follow a script: each
    //! test's virtual clock shows when every query went out and when the fetch ended.

    use std::sync::atomic::AtomicUsize;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::cache::{Capacity, KeyRef, TtlPolicy};
    use crate::testutil::{self, a};
    use crate::wire::name::MAX_NAME;
    use crate::wire::{Query, Transport, UpstreamResponse};

    const TIMEOUT: Duration = Duration::from_millis(100);
    const DEADLINE: Duration = Duration::from_secs(2);
    const NAME: &str = "a.example.";
    /// A client's `a.example. IN A`, written out so that the key is built as the hot path
    /// builds it.
    const CLIENT_QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x07example\x00\x00\x01\x00\x01";

    /// What a scripted upstream does with one query.
    #[derive(Clone, Copy, Debug)]
    enum Reply {
        /// Answers with this rcode (NOERROR with an address) after this long.
        After(Duration, ResponseCode),
        /// Never answers: the query or its answer was lost.
        Never,
        /// Fails at once.
        Fails(UpstreamError),
    }

    /// An upstream that gives its replies in turn (the last one for every later query) and
    /// remembers when it was asked.
    struct Scripted {
        label: &'static str,
        replies: Vec<Reply>,
        created: time::Instant,
        asked_at: Mutex<Vec<Duration>>,
        retransmits: AtomicUsize,
    }

    type Fake = Arc<Scripted>;

    fn scripted(label: &'static str, replies: &[Reply]) -> Fake {
        Arc::new(Scripted {
            label,
            replies: replies.to_vec(),
            created: time::Instant::now(),
            asked_at: Mutex::new(Vec::new()),
            retransmits: AtomicUsize::new(0),
        })
    }

    impl Scripted {
        /// The virtual time of each query, from the fake's making (the test's start).
        fn asked_at(&self) -> Vec<Duration> {
            self.asked_at.lock().unwrap().clone()
        }

        fn retransmits(&self) -> usize {
            self.retransmits.load(Ordering::Relaxed)
        }

        fn next_reply(&self) -> Reply {
            let mut asked = self.asked_at.lock().unwrap();
            asked.push(self.created.elapsed());
            self.replies[(asked.len() - 1).min(self.replies.len() - 1)]
        }
    }

    impl Candidate for Fake {
        fn admit(&self) -> bool {
            true
        }

        fn retransmit_timeout(&self) -> Duration {
            TIMEOUT
        }
    }

    impl Exchanger for Fake {
        fn label(&self) -> &str {
            self.label
        }

        fn count_retransmit(&self) {
            self.retransmits.fetch_add(1, Ordering::Relaxed);
        }

        async fn exchange(&self, key: &CacheKey, timeout: Duration) -> Result<Exchange, UpstreamError> {
            let reply = self.next_reply();
            time::timeout(timeout, play(reply, key)).await.unwrap_or(Err(UpstreamError::Timeout))
        }
    }

    async fn play(reply: Reply, key: &CacheKey) -> Result<Exchange, UpstreamError> {
        match reply {
            Reply::After(delay, rcode) => {
                time::sleep(delay).await;
                Ok(exchange_for(key, rcode))
            }
            Reply::Never => std::future::pending().await,
            Reply::Fails(error) => Err(error),
        }
    }

    fn exchange_for(key: &CacheKey, rcode: ResponseCode) -> Exchange {
        let answers = if rcode == ResponseCode::NoError { vec![a(NAME, 300, [192, 0, 2, 1])] } else { Vec::new() };
        let msg = testutil::response(NAME, RecordType::A, rcode, answers, Vec::new(), false);
        let response = UpstreamResponse::parse(&msg, key.name(), key.qtype(), key.qclass()).unwrap();
        Exchange { msg, response, transport: Transport::Udp, ignored: 0 }
    }

    fn key() -> CacheKey {
        let mut lower = [0u8; MAX_NAME];
        let (query, name) = Query::parse(CLIENT_QUERY, &mut lower).unwrap();
        KeyRef::for_query(&query, name).to_owned()
    }

    /// Serves stale answers up to an hour past expiry.
    fn cache() -> Cache {
        let capacity = Capacity { max_entries: 100, max_bytes: 1 << 20 };
        Cache::new(capacity, capacity, TtlPolicy { stale_max_age: 3600, ..TtlPolicy::default() })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn noerror_after(delay: Duration) -> Reply {
        Reply::After(delay, ResponseCode::NoError)
    }

    /// Runs one fetch over `order` (sequential, [`DEADLINE`]) and returns its outcome and the
    /// virtual time it took.
    async fn fetch(cache: &Cache, order: &[Fake], max_attempts: usize) -> (Outcome<Fake>, Duration) {
        let settings =
            ForwardSettings { deadline: DEADLINE, policy: Policy::Sequential, max_attempts, loop_probe_interval: Duration::ZERO };
        let started = time::Instant::now();
        let outcome = Fetch { cache, key: &key() }.run(order.to_vec(), settings).await;
        (outcome, started.elapsed())
    }

    /// Puts an answer for the test's key into `cache` as if stored `ago` before now, with
    /// `ttl` on its record.
    fn cached(cache: &Cache, ttl: u32, ago: Duration) {
        let key = key();
        let msg = testutil::response(NAME, RecordType::A, ResponseCode::NoError, vec![a(NAME, ttl, [192, 0, 2, 9])], Vec::new(), false);
        let response = UpstreamResponse::parse(&msg, key.name(), key.qtype(), key.qclass()).unwrap();
        let stored = Instant::now().checked_sub(ago).expect("the clock reaches back that far");
        cache.insert(&key.borrowed(), Entry::from_response(&key.borrowed(), &msg, &response, cache.policy(), stored));
    }

    fn cached_rcode(cache: &Cache) -> Option<Rcode> {
        cache.lookup(&key().borrowed(), Instant::now()).map(|(entry, _)| entry.rcode())
    }

    fn answered_by(outcome: &Outcome<Fake>) -> Option<&'static str> {
        outcome.as_ref().ok()?.upstream.as_ref().map(|u| u.label)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_asked_for_again_after_the_retransmit_timeout_and_the_second_answer_returned() {
        let upstream = scripted("only", &[Reply::Never, noerror_after(ms(10))]);
        let (outcome, took) = fetch(&cache(), std::slice::from_ref(&upstream), 3).await;
        assert_eq!(answered_by(&outcome), Some("only"));
        assert_eq!(upstream.asked_at(), [ms(0), TIMEOUT], "sent again when the timeout passed");
        assert_eq!(upstream.retransmits(), 1);
        assert_eq!(took, TIMEOUT + ms(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_upstream_is_raced_by_the_second_whose_earlier_answer_wins() {
        let (slow, second) = (scripted("slow", &[noerror_after(ms(500))]), scripted("second", &[noerror_after(ms(20))]));
        let (outcome, took) = fetch(&cache(), &[slow.clone(), second.clone()], 4).await;
        assert_eq!(answered_by(&outcome), Some("second"));
        assert_eq!((slow.asked_at(), second.asked_at()), (vec![ms(0)], vec![TIMEOUT]));
        assert_eq!(slow.retransmits(), 1, "the retransmission is the slow one's");
        assert_eq!(took, TIMEOUT + ms(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_from_the_first_upstream_still_wins_over_the_second_asked() {
        let (late, second) = (scripted("late", &[noerror_after(ms(150))]), scripted("second", &[noerror_after(ms(200))]));
        let (outcome, took) = fetch(&cache(), &[late, second.clone()], 4).await;
        assert_eq!(answered_by(&outcome), Some("late"));
        assert_eq!(second.asked_at(), [TIMEOUT]);
        assert_eq!(took, ms(150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_sends_the_question_to_the_next_upstream_at_once_and_its_answer_is_returned() {
        let refusing = scripted("refusing", &[Reply::After(ms(5), ResponseCode::Refused)]);
        let next = scripted("next", &[noerror_after(ms(5))]);
        let cache = cache();
        let (outcome, took) = fetch(&cache, &[refusing.clone(), next.clone()], 4).await;
        assert_eq!(answered_by(&outcome), Some("next"));
        assert_eq!(outcome.unwrap().entry.rcode(), Rcode::NOERROR);
        assert_eq!(next.asked_at(), [ms(5)], "no waiting for the timer");
        assert_eq!(refusing.asked_at().len(), 1);
        assert_eq!(took, ms(10));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_attempt_fails_the_fetch_ends_with_the_last_error_after_max_attempts() {
        let refused = UpstreamError::Io(std::io::ErrorKind::ConnectionRefused);
        let first = scripted("first", &[Reply::Fails(UpstreamError::Connect), Reply::Fails(refused)]);
        let second = scripted("second", &[Reply::Fails(UpstreamError::Closed)]);
        let (outcome, took) = fetch(&cache(), &[first.clone(), second.clone()], 3).await;
        assert_eq!(outcome.err(), Some(ForwardError::Upstream(refused)));
        assert_eq!((first.asked_at().len(), second.asked_at().len()), (2, 1), "three attempts in all");
        assert_eq!(took, Duration::ZERO, "failures move on at once");
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_upstream_is_silent_the_fetch_times_out_exactly_at_the_deadline() {
        let silent = [scripted("first", &[Reply::Never]), scripted("second", &[Reply::Never])];
        let (outcome, took) = fetch(&cache(), &silent, 100).await;
        assert_eq!(outcome.err(), Some(ForwardError::Upstream(UpstreamError::Timeout)));
        assert_eq!(took, DEADLINE);
        let asked: Vec<Duration> = silent.iter().flat_map(|u| u.asked_at()).collect();
        assert!(asked.len() > 2 && asked.iter().all(|&at| at < DEADLINE), "retransmitted, never at the deadline: {asked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_stored_so_that_the_next_lookup_hits() {
        let cache = cache();
        let (outcome, _) = fetch(&cache, &[scripted("only", &[noerror_after(ms(10))])], 3).await;
        let (hit, _) = cache.lookup(&key().borrowed(), Instant::now()).expect("a hit");
        assert_eq!(hit.wire(), outcome.unwrap().entry.wire());
    }

    #[tokio::test(start_paused = true)]
    async fn a_servfail_does_not_replace_a_fresh_entry_and_the_clients_get_the_fresh_one() {
        let cache = cache();
        cached(&cache, 300, Duration::ZERO);
        let (outcome, _) = fetch(&cache, &[scripted("failing", &[Reply::After(ms(10), ResponseCode::ServFail)])], 3).await;
        assert_eq!(outcome.unwrap().entry.rcode(), Rcode::NOERROR);
        assert_eq!(cached_rcode(&cache), Some(Rcode::NOERROR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_entry_is_kept_and_served_when_every_attempt_fails() {
        let cache = cache();
        cached(&cache, 1, Duration::from_secs(3));
        assert_eq!(cached_rcode(&cache), None, "expired");
        let (outcome, _) = fetch(&cache, &[scripted("down", &[Reply::Fails(UpstreamError::Connect)])], 3).await;
        let answer = outcome.unwrap();
        assert!(answer.entry.is_stale() && answer.upstream.is_none(), "the cache's stale copy");
        assert_eq!(cached_rcode(&cache), Some(Rcode::NOERROR), "stored again, a hit for a while");
    }
}

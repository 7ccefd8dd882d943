//! Forwarding-loop detection at run time: whether a zone's queries come back to this server.
//!
//! Owns the probes and the loop state of every forwarded zone. Start-up refuses an upstream
//! that is one of our own listen addresses, but a real loop goes through someone else: a node
//! cache forwarding `.` to a resolver that forwards back to the node cache, two caches
//! forwarding a zone to each other. Such a loop turns every miss of the zone into traffic that
//! circles until deadlines run out.
//!
//! **Probes.** For each forwarded zone, [`Loops::run`] sends `<random>.<random>._nodedns-loop-probe.<zone>
//! IN HINFO` through the forwarder, the path a miss takes (the zone's group, its policy,
//! retries and deadline), at start and then every `upstream.loop_probe_interval`. A probe that
//! got no response at all during the zone's first 30 s is sent again after 2 s instead: the
//! servers of a loop start one after another. The names of our last two probes per zone are
//! kept (the one in flight, and the one before, whose copy may still be on its way).
//!
//! **Detection.** [`Loops::check`] runs where a miss is about to be forwarded, never on a
//! cache hit. When one of our own probe names arrives at our listener, the zone is looped:
//! an error is logged once per episode (zone, upstreams, and the client that brought it
//! back, the loop's last hop), `nodedns_forward_loop{zone}` is 1, and from then on the
//! arriving probe and every miss of the zone are answered SERVFAIL at once (a stale answer
//! when the cache has one), never forwarded round the loop. Cache hits are served as before.
//! Probing goes on while looped; a probe that gets any response without having come back
//! to us ends the episode (logged), while one that gets no response at all (an upstream down)
//! changes nothing.
//!
//! **Other servers' probes.** CoreDNS stops the process on a loop; here each server of the
//! loop keeps serving its other zones and must see the loop for itself. If a looped server
//! answered every query of the zone SERVFAIL, the probe of the other server would die there
//! and never come back to its sender. So a name with the probe label that is not ours is
//! forwarded even while the zone is looped: in a ring of any length each server's probe goes
//! round once and comes back to it. To keep that bounded when the sender is outside the loop
//! (a third server whose probe enters a loop of two), a foreign probe is forwarded at most once:
//! while its fetch is in flight a copy that comes round again joins it (request coalescing,
//! which also absorbs the previous hop's retransmissions), and after that fetch ends the name
//! is remembered (the last 256, for a minute) and a copy that comes round again is answered
//! SERVFAIL. Each probe therefore costs every server on its path one fetch. The Kubernetes
//! naming rules let probe names through, so that a loop through a cluster domain is seen.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cache::KeyRef;
use crate::forward::Forwarder;
use crate::metrics::{LoopMetrics, Metrics};
use crate::wire::RecordType;
use crate::wire::name::{self, LowerName, LowerNameBuf};
use crate::zones::Zone;

/// The label that marks a probe, third from the left, with its length octet.
const MARK: &[u8] = b"\x13_nodedns-loop-probe";
/// The probe's type, as CoreDNS's: no client asks for it, so no cache holds it.
const HINFO: RecordType = RecordType(13);
/// Foreign probes remembered once forwarded, and for how long: a loop brings a copy back
/// within a query deadline.
const REMEMBERED: usize = 256;
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// How long after a zone is first probed an unanswered probe is repeated after
/// [`STARTUP_RETRY`] rather than the interval.
const STARTUP: Duration = Duration::from_secs(30);
const STARTUP_RETRY: Duration = Duration::from_secs(2);
/// The prober's longest sleep: how soon it sees a reload.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Our probe names kept per zone.
const OWN_KEPT: usize = 2;

/// Whether `name` is a loop probe, ours or another nodedns's:
/// `<label>.<label>._nodedns-loop-probe.<zone>`.
pub fn is_probe(name: LowerName<'_>) -> bool {
    let octets = name.as_bytes();
    let mut at = 0;
    for _ in 0..2 {
        match octets.get(at) {
            Some(&len) if len > 0 => at += 1 + usize::from(len),
            _ => return false,
        }
    }
    octets.get(at..at + MARK.len()) == Some(MARK)
}

/// A fresh probe name for `zone`; `None` when the zone is too long to hold one.
fn probe_name(zone: &Zone) -> Option<LowerNameBuf> {
    let mut wire = Vec::with_capacity(name::MAX_NAME);
    for _ in 0..2 {
        wire.push(16);
        wire.extend_from_slice(format!("{:016x}", rand::random::<u64>()).as_bytes());
    }
    wire.extend_from_slice(MARK);
    wire.extend_from_slice(zone.wire().as_bytes());
    name::lower(&wire).map(LowerName::to_owned)
}

/// What the miss path does with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward as usual.
    Forward,
    /// Another server's probe, new to us: forward it, holding [`Loops::forwarding`]'s guard
    /// until the answer is known.
    ForwardProbe,
    /// Answer SERVFAIL at once: our own probe came back, a foreign probe we forwarded came
    /// back, or the name's zone is looped.
    Fail,
}

/// The loop state of every forwarded zone, and our probes.
pub struct Loops {
    /// Whether any zone is looped: while none is, a miss for an ordinary name reads only this
    /// and its first labels.
    any_looped: AtomicBool,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    zones: Vec<ZoneLoop>,
    /// Foreign probes forwarded, oldest first, with when their fetch ended.
    forwarded: VecDeque<(LowerNameBuf, Instant)>,
}

struct ZoneLoop {
    zone: Zone,
    upstreams: Vec<String>,
    looped: bool,
    /// Our latest probes, newest last.
    own: VecDeque<OwnProbe>,
    in_flight: bool,
    due: Instant,
    first_probed: Instant,
    metrics: LoopMetrics,
}

struct OwnProbe {
    name: LowerNameBuf,
    came_back: bool,
}

impl State {
    /// The zone that routes `name`: the longest one containing it.
    fn zone_of(&mut self, name: LowerName<'_>) -> Option<&mut ZoneLoop> {
        self.zones.iter_mut().filter(|z| z.zone.contains(name)).max_by_key(|z| z.zone.wire().as_bytes().len())
    }

    fn forget_old(&mut self, now: Instant) {
        while self.forwarded.front().is_some_and(|(_, at)| now.duration_since(*at) > REMEMBER_FOR) {
            self.forwarded.pop_front();
        }
    }
}

/// Records, when dropped, that a foreign probe's fetch is over: a copy arriving after it is
/// answered SERVFAIL.
pub struct Forwarding<'a> {
    loops: &'a Loops,
    name: LowerNameBuf,
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut state = self.loops.lock();
        state.forget_old(now);
        if !state.forwarded.iter().any(|(n, _)| *n == self.name) {
            if state.forwarded.len() == REMEMBERED {
                state.forwarded.pop_front();
            }
            state.forwarded.push_back((self.name.clone(), now));
        }
    }
}

impl Loops {
    pub fn new(metrics: Arc<Metrics>) -> Loops {
        Loops { any_looped: AtomicBool::new(false), state: Mutex::new(State::default()), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_any(&self, state: &State) {
        self.any_looped.store(state.zones.iter().any(|z| z.looped), Ordering::Relaxed);
    }

    /// What to do with a miss for `name`, which `client` sent us.
    pub fn check(&self, name: LowerName<'_>, client: SocketAddr) -> Verdict {
        let probe = is_probe(name);
        if !probe && !self.any_looped.load(Ordering::Relaxed) {
            return Verdict::Forward;
        }
        let mut state = self.lock();
        if probe {
            let ours = state.zones.iter_mut().find(|z| z.own.iter().any(|p| *p.name == *name));
            if let Some(zone) = ours {
                if let Some(p) = zone.own.iter_mut().find(|p| *p.name == *name) {
                    p.came_back = true;
                }
                zone.metrics.answers.inc();
                if !zone.looped {
                    zone.looped = true;
                    zone.metrics.looped.set(1);
                    zone.metrics.detections.inc();
                    tracing::error!(
                        zone = %zone.zone,
                        upstreams = %zone.upstreams.join(","),
                        came_back_from = %client,
                        "forwarding loop: this server's probe for the zone came back to it; misses of the zone are answered \
                         SERVFAIL until a probe is answered without coming back"
                    );
                    self.any_looped.store(true, Ordering::Relaxed);
                }
                return Verdict::Fail;
            }
            state.forget_old(Instant::now());
            if state.forwarded.iter().any(|(n, _)| **n == *name) {
                if let Some(zone) = state.zone_of(name) {
                    zone.metrics.answers.inc();
                }
                return Verdict::Fail;
            }
            return Verdict::ForwardProbe;
        }
        match state.zone_of(name) {
            Some(zone) if zone.looped => {
                zone.metrics.answers.inc();
                Verdict::Fail
            }
            _ => Verdict::Forward,
        }
    }

    /// For a [`Verdict::ForwardProbe`]: hold this while the probe is forwarded.
    pub fn forwarding(&self, name: LowerName<'_>) -> Forwarding<'_> {
        Forwarding { loops: self, name: name.to_owned() }
    }

    /// Whether `zone` is looped now.
    pub fn is_looped(&self, zone: &Zone) -> bool {
        self.lock().zones.iter().any(|z| z.zone == *zone && z.looped)
    }

    /// Brings the zone list up to `zones` (each with its upstreams' labels; empty when probing
    /// is off) and starts the probes due at `now`. Returns them, and when to look again.
    fn schedule(&self, zones: &[(Zone, Vec<String>)], now: Instant) -> (Vec<(Zone, LowerNameBuf)>, Instant) {
        let mut state = self.lock();
        state.zones.retain(|z| {
            let kept = zones.iter().any(|(zone, _)| *zone == z.zone);
            if !kept {
                if z.looped {
                    tracing::info!(zone = %z.zone, "zone no longer probed for a loop (not forwarded, or probing off): its loop state is dropped");
                }
                self.metrics.forget_forward_loop(&z.zone.to_string());
            }
            kept
        });
        for (zone, upstreams) in zones {
            match state.zones.iter_mut().find(|z| z.zone == *zone) {
                Some(z) if z.upstreams != *upstreams => {
                    // New upstreams may have ended the loop: ask now rather than at the interval.
                    z.upstreams = upstreams.clone();
                    z.due = now;
                }
                Some(_) => {}
                None => {
                    let metrics = self.metrics.forward_loop(&zone.to_string());
                    metrics.looped.set(0);
                    state.zones.push(ZoneLoop {
                        zone: zone.clone(),
                        upstreams: upstreams.clone(),
                        looped: false,
                        own: VecDeque::new(),
                        in_flight: false,
                        due: now,
                        first_probed: now,
                        metrics,
                    });
                }
            }
        }
        let mut begun = Vec::new();
        for z in state.zones.iter_mut().filter(|z| !z.in_flight && z.due <= now) {
            let Some(name) = probe_name(&z.zone) else {
                // No room under the zone for the probe's labels: never probed.
                z.due = now + Duration::from_secs(3600);
                continue;
            };
            if z.own.len() == OWN_KEPT {
                z.own.pop_front();
            }
            z.own.push_back(OwnProbe { name: name.clone(), came_back: false });
            z.in_flight = true;
            begun.push((z.zone.clone(), name));
        }
        self.update_any(&state);
        let wake = state.zones.iter().filter(|z| !z.in_flight).map(|z| z.due).fold(now + MAX_SLEEP, Instant::min);
        (begun, wake)
    }

    /// Our probe `name` for `zone` ended, with a response or without (`answered`); the next
    /// is due after `interval`.
    fn finished(&self, zone: &Zone, name: &LowerNameBuf, answered: bool, interval: Duration, now: Instant) {
        let mut state = self.lock();
        let Some(z) = state.zones.iter_mut().find(|z| z.zone == *zone) else { return };
        let came_back = z.own.iter().any(|p| p.name == *name && p.came_back);
        if answered && !came_back && z.looped {
            z.looped = false;
            z.metrics.looped.set(0);
            tracing::info!(zone = %z.zone, upstreams = %z.upstreams.join(","), "forwarding loop gone: a probe was answered without coming back");
        }
        z.in_flight = false;
        let starting = now.duration_since(z.first_probed) < STARTUP;
        z.due = now + if !answered && starting { interval.min(STARTUP_RETRY) } else { interval };
        self.update_any(&state);
    }

    /// Probes every zone `forwarder` routes, as `upstream.loop_probe_interval` says, until `stop`.
    pub async fn run(self: Arc<Self>, forwarder: Arc<Forwarder>, stop: CancellationToken) {
        loop {
            let interval = forwarder.settings().loop_probe_interval;
            let zones = if interval.is_zero() { Vec::new() } else { forwarder.zones() };
            let (begun, wake) = self.schedule(&zones, Instant::now());
            for (zone, name) in begun {
                let (loops, forwarder) = (self.clone(), forwarder.clone());
                tokio::spawn(async move {
                    let key = KeyRef::new(name.as_name(), HINFO, 1, false, false).to_owned();
                    let answered = forwarder.resolve(key).await.is_ok();
                    loops.finished(&zone, &name, answered, interval, Instant::now());
                });
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wake.saturating_duration_since(Instant::now())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    fn client() -> SocketAddr {
        "127.0.0.1:5353".parse().unwrap()
    }

    fn zone(text: &str) -> Zone {
        text.parse().unwrap()
    }

    fn wire(text: &str) -> LowerNameBuf {
        name::from_text(text).unwrap()
    }

    fn zones(names: &[&str]) -> Vec<(Zone, Vec<String>)> {
        names.iter().map(|z| (zone(z), vec!["127.0.0.1:53".to_string()])).collect()
    }

    fn loops() -> (Loops, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Loops::new(metrics.clone()), metrics)
    }

    /// The sample of `metric` for `zone`, from the exposition.
    fn sample(metrics: &Metrics, metric: &str, zone: &str) -> Option<f64> {
        let prefix = format!("{metric}{{zone=\"{zone}\"}} ");
        metrics.encode().lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
    }

    /// Starts the probes of `names` at `now` and returns each zone's probe name.
    fn probe_all(loops: &Loops, names: &[&str], now: Instant) -> Vec<LowerNameBuf> {
        let (begun, _) = loops.schedule(&zones(names), now);
        assert_eq!(begun.len(), names.len(), "one probe per zone");
        begun.into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn probe_names_carry_the_mark_third_and_nothing_else_is_taken_for_one() {
        let name = probe_name(&zone("loop.test")).unwrap();
        assert!(is_probe(name.as_name()));
        assert!(zone("loop.test").contains(name.as_name()));
        assert!(is_probe(probe_name(&Zone::root()).unwrap().as_name()));
        assert_ne!(probe_name(&Zone::root()), probe_name(&Zone::root()), "random");
        for ordinary in ["www.example.com", "_nodedns-loop-probe.example", "a._nodedns-loop-probe", "a.b.c._nodedns-loop-probe.x", "."] {
            assert!(!is_probe(wire(ordinary).as_name()), "{ordinary}");
        }
        assert!(is_probe(wire("A.B._NODEDNS-LOOP-PROBE.example").as_name()), "read lower-cased, like every name");
        assert_eq!(probe_name(&zone(&format!("{}.example.com", vec!["x".repeat(63); 3].join(".")))), None, "no room for the labels");
    }

    #[test]
    fn our_probe_coming_back_loops_its_zone_once_and_every_miss_of_it_fails_while_foreign_probes_pass() {
        let (loops, metrics) = loops();
        let now = Instant::now();
        let ours = probe_all(&loops, &["loop.test", "."], now);
        assert_eq!(sample(&metrics, "nodedns_forward_loop", "loop.test."), Some(0.0));
        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Forward, "no loop yet");

        assert_eq!(loops.check(ours[0].as_name(), client()), Verdict::Fail, "our probe is never forwarded again");
        assert_eq!(loops.check(ours[0].as_name(), client()), Verdict::Fail);
        assert!(loops.is_looped(&zone("loop.test")));
        assert_eq!(sample(&metrics, "nodedns_forward_loop", "loop.test."), Some(1.0));
        assert_eq!(sample(&metrics, "nodedns_forward_loop_detections_total", "loop.test."), Some(1.0), "one episode");

        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Fail);
        assert_eq!(loops.check(wire("www.example.com").as_name(), client()), Verdict::Forward, "other zones as before");
        let foreign = probe_name(&zone("loop.test")).unwrap();
        assert_eq!(loops.check(foreign.as_name(), client()), Verdict::ForwardProbe, "so that its sender sees the loop too");
        assert_eq!(sample(&metrics, "nodedns_forward_loop_answers_total", "loop.test."), Some(3.0));
        assert_eq!(sample(&metrics, "nodedns_forward_loop", "."), Some(0.0));
    }

    #[test]
    fn a_more_specific_zone_is_not_failed_for_its_parents_loop() {
        let (loops, _) = loops();
        let ours = probe_all(&loops, &["loop.test", "sub.loop.test"], Instant::now());
        let parent = if zone("sub.loop.test").contains(ours[0].as_name()) { &ours[1] } else { &ours[0] };
        assert_eq!(loops.check(parent.as_name(), client()), Verdict::Fail);
        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Fail);
        assert_eq!(loops.check(wire("x.sub.loop.test").as_name(), client()), Verdict::Forward);
    }

    #[test]
    fn an_answer_that_did_not_come_back_ends_the_episode_and_one_that_came_back_or_no_answer_does_not() {
        let (loops, metrics) = loops();
        let t0 = Instant::now();
        let z = zone("loop.test");
        let first = probe_all(&loops, &["loop.test"], t0).remove(0);
        loops.check(first.as_name(), client());
        loops.finished(&z, &first, true, INTERVAL, t0);
        assert!(loops.is_looped(&z), "it came back: the SERVFAIL it brought is the loop's");

        let (none_due, _) = loops.schedule(&zones(&["loop.test"]), t0 + INTERVAL / 2);
        assert!(none_due.is_empty(), "the next probe waits for the interval");
        let second = probe_all(&loops, &["loop.test"], t0 + INTERVAL).remove(0);
        loops.finished(&z, &second, false, INTERVAL, t0 + INTERVAL);
        assert!(loops.is_looped(&z), "no response at all says nothing");

        let third = probe_all(&loops, &["loop.test"], t0 + 2 * INTERVAL).remove(0);
        loops.finished(&z, &third, true, INTERVAL, t0 + 2 * INTERVAL);
        assert!(!loops.is_looped(&z));
        assert_eq!(sample(&metrics, "nodedns_forward_loop", "loop.test."), Some(0.0));
        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Forward);
        assert_eq!(loops.check(second.as_name(), client()), Verdict::Fail, "a late copy of a kept probe is still ours");
        assert!(loops.is_looped(&z), "and shows the loop again");
        assert_eq!(sample(&metrics, "nodedns_forward_loop_detections_total", "loop.test."), Some(2.0));
        assert_eq!(loops.check(first.as_name(), client()), Verdict::ForwardProbe, "only the last two are kept");
    }

    #[test]
    fn unanswered_probes_are_repeated_sooner_at_start_only_and_one_zone_has_one_probe_in_flight() {
        let (loops, _) = loops();
        let t0 = Instant::now();
        let z = zone("loop.test");
        let due = |at: Instant| !loops.schedule(&zones(&["loop.test"]), at).0.is_empty();
        let first = probe_all(&loops, &["loop.test"], t0).remove(0);
        assert!(!due(t0 + INTERVAL * 2), "one in flight at a time");
        loops.finished(&z, &first, false, INTERVAL, t0);
        assert!(!due(t0 + STARTUP_RETRY - Duration::from_millis(1)));
        let second = probe_all(&loops, &["loop.test"], t0 + STARTUP_RETRY).remove(0);
        let later = t0 + STARTUP;
        loops.finished(&z, &second, false, INTERVAL, later);
        assert!(!due(later + STARTUP_RETRY), "past the start-up, the interval");
        assert!(due(later + INTERVAL));
    }

    #[test]
    fn a_foreign_probe_is_forwarded_once_and_a_copy_after_its_fetch_fails() {
        let (loops, _) = loops();
        probe_all(&loops, &["loop.test"], Instant::now());
        let foreign = probe_name(&zone("loop.test")).unwrap();
        assert_eq!(loops.check(foreign.as_name(), client()), Verdict::ForwardProbe);
        let forwarding = loops.forwarding(foreign.as_name());
        assert_eq!(loops.check(foreign.as_name(), client()), Verdict::ForwardProbe, "in flight: joins the fetch");
        drop(forwarding);
        assert_eq!(loops.check(foreign.as_name(), client()), Verdict::Fail, "came round again");
        assert!(!loops.is_looped(&zone("loop.test")), "someone else's loop, not ours to report");
    }

    #[test]
    fn remembered_foreign_probes_are_bounded() {
        let (loops, _) = loops();
        let names: Vec<LowerNameBuf> = (0..=REMEMBERED).map(|_| probe_name(&Zone::root()).unwrap()).collect();
        for n in &names {
            drop(loops.forwarding(n.as_name()));
        }
        assert_eq!(loops.lock().forwarded.len(), REMEMBERED);
        assert_eq!(loops.check(names[0].as_name(), client()), Verdict::ForwardProbe, "the oldest made room");
        assert_eq!(loops.check(names[REMEMBERED].as_name(), client()), Verdict::Fail);
    }

    #[test]
    fn a_zone_no_longer_probed_drops_its_loop_state_and_metrics() {
        let (loops, metrics) = loops();
        let ours = probe_all(&loops, &["loop.test"], Instant::now());
        loops.check(ours[0].as_name(), client());
        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Fail);
        loops.schedule(&[], Instant::now());
        assert_eq!(loops.check(wire("x.loop.test").as_name(), client()), Verdict::Forward);
        assert_eq!(sample(&metrics, "nodedns_forward_loop", "loop.test."), None);
    }
}

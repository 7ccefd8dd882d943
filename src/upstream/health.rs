//! What nodedns believes about an upstream's state: smoothed RTT (for the adaptive
//! retransmission timer and the `fastest` policy) and health (passive: consecutive
//! failures mark it down; an active probe marks it up again).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// RFC 6298-style smoothed RTT and variance, in seconds.
#[derive(Debug)]
pub struct Rtt {
    state: Mutex<Option<(f64, f64)>>,
    min: Duration,
    max: Duration,
}

impl Rtt {
    pub fn new(min: Duration, max: Duration) -> Self {
        Rtt { state: Mutex::new(None), min, max: max.max(min) }
    }

    pub fn observe(&self, sample: Duration) {
        let s = sample.as_secs_f64();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = Some(match *state {
            None => (s, s / 2.0),
            Some((srtt, var)) => (0.875 * srtt + 0.125 * s, 0.75 * var + 0.25 * (srtt - s).abs()),
        });
    }

    /// The ceiling of [`Rtt::timeout`].
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Smoothed RTT, `None` before the first sample.
    pub fn smoothed(&self) -> Option<Duration> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).map(|(srtt, _)| Duration::from_secs_f64(srtt))
    }

    /// How long to wait before retransmitting: SRTT + 4 x RTTVAR, clamped to [min, max]; the
    /// maximum until the first sample.
    pub fn timeout(&self) -> Duration {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            None => self.max,
            Some((srtt, var)) => Duration::from_secs_f64(srtt + 4.0 * var).clamp(self.min, self.max),
        }
    }
}

/// Passive health: `max_fails` consecutive failures mark an upstream down.
#[derive(Debug)]
pub struct Health {
    fails: AtomicU32,
    down: AtomicBool,
    max_fails: u32,
}

impl Health {
    pub fn new(max_fails: u32) -> Self {
        Health { fails: AtomicU32::new(0), down: AtomicBool::new(false), max_fails }
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Records a success; returns true when this brings the upstream back up.
    pub fn success(&self) -> bool {
        self.fails.store(0, Ordering::Relaxed);
        self.down.swap(false, Ordering::Relaxed)
    }

    /// Records a failure; returns true when this marks the upstream down.
    pub fn failure(&self) -> bool {
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_fails > 0 && fails >= self.max_fails && !self.down.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_starts_at_max_and_follows_the_measured_rtt() {
        let rtt = Rtt::new(Duration::from_millis(10), Duration::from_millis(500));
        assert_eq!(rtt.timeout(), Duration::from_millis(500));
        for _ in 0..50 {
            rtt.observe(Duration::from_millis(2));
        }
        assert_eq!(rtt.timeout(), Duration::from_millis(10), "clamped to the minimum");
        for _ in 0..50 {
            rtt.observe(Duration::from_millis(80));
        }
        let t = rtt.timeout();
        assert!(t > Duration::from_millis(80) && t < Duration::from_millis(200), "{t:?}");
    }

    #[test]
    fn consecutive_failures_mark_down_and_a_success_brings_back_up() {
        let h = Health::new(3);
        assert!(!h.failure() && !h.failure());
        h.success();
        assert!(!h.failure() && !h.failure());
        assert!(h.failure(), "third consecutive failure marks it down");
        assert!(!h.is_up());
        assert!(!h.failure(), "already down");
        assert!(h.success());
        assert!(h.is_up());
    }
}

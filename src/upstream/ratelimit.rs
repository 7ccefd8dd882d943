//! A token bucket capping the queries per second sent to one upstream (cloud resolvers drop
//! past about 1,024 packets/s per interface: brief, story 5). One second of burst.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        RateLimit { per_second: f64::from(per_second), state: Mutex::new((f64::from(per_second), Instant::now())) }
    }

    /// Takes a token if one is available.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.per_second).min(self.per_second);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_one_second_of_burst_then_refills() {
        let limit = RateLimit::new(100);
        let granted = (0..150).filter(|_| limit.try_acquire()).count();
        assert_eq!(granted, 100);
        std::thread::sleep(std::time::Duration::from_millis(110));
        let refilled = (0..50).filter(|_| limit.try_acquire()).count();
        assert!((10..=13).contains(&refilled), "{refilled}");
    }
}

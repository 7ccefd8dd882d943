//! A token bucket: `rate` tokens a second, holding at most `burst`. Used to cap the queries
//! sent to one upstream (cloud resolvers drop past a fixed rate: the AWS VPC resolver
//! at 1,024 packets/s per network interface) and the queries served to one client (one noisy pod must not starve the
//! others).

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens, and when they were last counted.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate), burst, state: Mutex::new((burst, now)) }
    }

    /// Takes a token if one is available at `now`.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        let granted = tokens >= 1.0;
        *state = (if granted { tokens - 1.0 } else { tokens }, now);
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let bucket = TokenBucket::new(100, 100, start);
        let granted = (0..150).filter(|_| bucket.try_take(start)).count();
        assert_eq!(granted, 100);
        let later = start + Duration::from_millis(110);
        let refilled = (0..50).filter(|_| bucket.try_take(later)).count();
        assert_eq!(refilled, 11);
    }
}

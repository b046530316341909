//! A token bucket: a steady rate with room for a burst.

use std::time::Instant;

/// Allows `rate` events per second on average and `burst` at once.
///
/// Used per connection so that one flooding page is told `rate_limited` while every other
/// page keeps its full share.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 means unlimited.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one, as of `now`.
    pub fn try_take_at(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token if there is one, now.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        let taken = (0..20).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(taken, 5);
        // 10 per second: one more token after 100 ms, not two.
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take_at(later));
        assert!(!bucket.try_take_at(later));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut bucket = TokenBucket::new(0, 1);
        assert!((0..10_000).all(|_| bucket.try_take()));
    }
}

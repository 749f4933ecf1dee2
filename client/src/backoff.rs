//! Reconnect delays: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

use crate::error::ClientError;

/// Reconnect policy of publishers and followers.
///
/// The delay before retry `n` (from 0) is drawn uniformly from the upper half
/// of `min(initial * 2^n, max)`. The jitter spreads out clients that lost
/// their connection at the same moment, such as every follower of a relay
/// that restarted. When the relay responds with `Retry-After`, the delay is
/// at least that long and spread over twice that time, see
/// [`Backoff::delay_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry, before jitter.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Consecutive failed attempts after which to give up, or `None` to retry forever.
    /// The count restarts after every successful connection.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 250 ms doubling up to 30 s, giving up after 20 failures in a row
    /// (about eight minutes without a connection).
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            max_attempts: Some(20),
        }
    }
}

impl Backoff {
    /// Returns the delay before retry number `attempt`, counting from 0.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .checked_mul(1u32 << attempt.min(30))
            .unwrap_or(self.max)
            .min(self.max);
        let half = ceiling / 2;
        let jitter_range = ceiling.saturating_sub(half);
        half + jitter_range.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// Returns the delay before retry number `attempt` when the relay asked to
    /// wait `retry_after` (an HTTP `Retry-After`): the larger of
    /// [`Backoff::delay`] and a time drawn uniformly from `[retry_after, 2 ×
    /// retry_after)`, with `retry_after` first capped at `max`. Every client
    /// that a busy relay turns away gets the same `Retry-After`, so the
    /// spread keeps them from all returning in the same instant.
    pub fn delay_after(&self, attempt: u32, retry_after: Duration) -> Duration {
        let floor = retry_after.min(self.max);
        let requested = floor + floor.mul_f64(rand::thread_rng().gen::<f64>());
        self.delay(attempt).max(requested)
    }

    /// Returns whether another attempt is allowed after `failures` failures in a row.
    pub fn allows(&self, failures: u32) -> bool {
        self.max_attempts.is_none_or(|max| failures < max)
    }

    /// Counts one more failure in a row and returns the delay before the next
    /// attempt, honouring the relay's `retry_after` when it sent one, or
    /// [`ClientError::RetriesExhausted`] naming `last` once the policy allows
    /// no more attempts.
    pub fn next_retry(
        &self,
        failures: &mut u32,
        last: &str,
        retry_after: Option<Duration>,
    ) -> Result<Duration, ClientError> {
        *failures += 1;
        if !self.allows(*failures) {
            return Err(ClientError::RetriesExhausted {
                attempts: *failures,
                last: last.to_string(),
            });
        }
        let attempt = *failures - 1;
        Ok(match retry_after {
            Some(wait) => self.delay_after(attempt, wait),
            None => self.delay(attempt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let backoff = Backoff::default();
        for attempt in 0..40 {
            let ceiling = (Duration::from_millis(250) * 2u32.pow(attempt.min(20)))
                .min(Duration::from_secs(30));
            let delay = backoff.delay(attempt);
            assert!(delay >= ceiling / 2, "attempt {attempt}: {delay:?}");
            assert!(delay <= ceiling, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn delays_are_jittered() {
        let backoff = Backoff::default();
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.delay(5)).collect();
        assert!(delays.len() > 1);
    }

    /// Counts `delays` in `buckets` equal parts of `[low, high)` and checks
    /// that each contains between 80 % and 120 % of an even share.
    fn assert_spread_evenly(delays: &[Duration], low: Duration, high: Duration, buckets: usize) {
        let width = (high - low) / buckets as u32;
        let mut counts = vec![0usize; buckets];
        for delay in delays {
            assert!(*delay >= low, "{delay:?} is below {low:?}");
            assert!(*delay <= high, "{delay:?} is above {high:?}");
            let index = ((*delay - low).as_nanos() / width.as_nanos()) as usize;
            counts[index.min(buckets - 1)] += 1;
        }
        let share = delays.len() / buckets;
        for (index, count) in counts.iter().enumerate() {
            assert!(
                *count * 10 >= share * 8 && *count * 10 <= share * 12,
                "bucket {index} of {buckets} holds {count} delays, expected about {share}: {counts:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_over_upper_half() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10_000).map(|_| backoff.delay(5)).collect();
        assert_spread_evenly(&delays, Duration::from_secs(4), Duration::from_secs(8), 10);
    }

    #[test]
    fn retry_after_sets_floor_and_spread() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (0..10_000)
            .map(|_| backoff.delay_after(0, Duration::from_secs(1)))
            .collect();
        // 10,000 clients turned away together return at no more than about
        // 1,200 per 100 ms, instead of all at once after 1 s.
        assert_spread_evenly(&delays, Duration::from_secs(1), Duration::from_secs(2), 10);
    }

    #[test]
    fn retry_after_never_shortens_backoff() {
        let backoff = Backoff::default();
        for _ in 0..100 {
            let delay = backoff.delay_after(7, Duration::from_millis(100));
            assert!(delay >= Duration::from_secs(15), "{delay:?}");
        }
        let delay = backoff.delay_after(0, Duration::from_secs(3600));
        assert!(delay >= backoff.max, "{delay:?}");
        assert!(delay <= backoff.max * 2, "{delay:?}");
    }

    #[test]
    fn next_retry_honours_retry_after() {
        let backoff = Backoff::default();
        let mut failures = 0;
        let delay = backoff
            .next_retry(&mut failures, "HTTP 503", Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(failures, 1);
        assert!(delay >= Duration::from_secs(2), "{delay:?}");
        let delay = backoff.next_retry(&mut failures, "reset", None).unwrap();
        assert!(delay <= Duration::from_millis(500), "{delay:?}");
    }

    #[test]
    fn attempt_limit() {
        let backoff = Backoff {
            max_attempts: Some(3),
            ..Backoff::default()
        };
        assert!(backoff.allows(2));
        assert!(!backoff.allows(3));
        let forever = Backoff {
            max_attempts: None,
            ..Backoff::default()
        };
        assert!(forever.allows(u32::MAX));
    }
}

//! Reconnect delays: exponential backoff with jitter.

use std::time::Duration;

use rand::Rng;

use crate::error::ClientError;

/// Reconnect policy of publishers and followers.
///
/// The delay before retry `n` (from 0) is drawn uniformly from the upper half
/// of `min(initial * 2^n, max)`. The jitter spreads out clients that lost
/// their connection at the same moment, such as every follower of a relay
/// that restarted.
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

    /// Returns whether another attempt is allowed after `failures` failures in a row.
    pub fn allows(&self, failures: u32) -> bool {
        self.max_attempts.is_none_or(|max| failures < max)
    }

    /// Counts one more failure in a row and returns the delay before the next
    /// attempt, or [`ClientError::RetriesExhausted`] naming `last` once the
    /// policy allows no more attempts.
    pub fn next_retry(&self, failures: &mut u32, last: &str) -> Result<Duration, ClientError> {
        *failures += 1;
        if !self.allows(*failures) {
            return Err(ClientError::RetriesExhausted {
                attempts: *failures,
                last: last.to_string(),
            });
        }
        Ok(self.delay(*failures - 1))
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

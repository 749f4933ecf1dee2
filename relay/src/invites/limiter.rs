//! Per-client rate limit of the invite routes, with `governor`'s keyed GCRA
//! limiter.
//!
//! Clients are keyed by IPv4 address, or by the /64 prefix of an IPv6
//! address, because one IPv6 host commonly has a whole /64.
//!
//! NOTE: behind a reverse proxy every client has the proxy's address, so
//! they share one budget. The relay does not trust `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Requests a client may send at once before the rate applies.
pub(crate) const BURST: u32 = 30;

/// Requests per second a client may send once its burst is used.
pub(crate) const PER_SECOND: u32 = 1;

/// Clients tracked at once. Past it, idle entries are dropped, and while
/// that leaves it full, new requests are refused.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Shortest time between two sweeps of idle entries forced by a full table.
const FORCED_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Wait suggested to clients while the table of tracked clients is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The invite routes' rate limit, shared by all their requests.
pub(crate) struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    last_forced_sweep: Mutex<Option<Instant>>,
}

impl Default for ClientLimiter {
    fn default() -> Self {
        let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
        let rate = NonZeroU32::new(PER_SECOND).unwrap_or(NonZeroU32::MIN);
        ClientLimiter::with_quota(Quota::per_second(rate).allow_burst(burst))
    }
}

impl ClientLimiter {
    pub(crate) fn with_quota(quota: Quota) -> Self {
        ClientLimiter {
            limiter: DefaultKeyedRateLimiter::dashmap(quota),
            clock: DefaultClock::default(),
            last_forced_sweep: Mutex::new(None),
        }
    }

    /// Counts one request from `client`. Returns how long it should wait
    /// when it is over its rate.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() >= MAX_TRACKED_CLIENTS && !self.sweep_when_full() {
            return Err(FULL_RETRY_AFTER);
        }
        self.limiter
            .check_key(&client_key(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops the entries of clients whose budget is full again, and returns
    /// how many remain.
    pub(crate) fn sweep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    /// Sweeps at most once per [`FORCED_SWEEP_INTERVAL`]. Returns whether the
    /// table has room afterwards.
    fn sweep_when_full(&self) -> bool {
        let mut last = self
            .last_forced_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= FORCED_SWEEP_INTERVAL);
        if due {
            *last = Some(Instant::now());
            self.sweep();
        }
        self.limiter.len() < MAX_TRACKED_CLIENTS
    }
}

/// Returns the key of a client: its IPv4 address, or its IPv6 /64 prefix.
fn client_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn client_over_burst_is_limited() {
        let limiter = ClientLimiter::default();
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for request in 0..BURST {
            assert!(limiter.check(client).is_ok(), "request {request} limited");
        }
        let wait = limiter.check(client).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "wait {wait:?}");

        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert!(limiter.check(other).is_ok());
    }

    #[test]
    fn ipv6_clients_share_their_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));

        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn sweep_forgets_idle_clients() {
        let limiter = ClientLimiter::with_quota(
            Quota::with_period(Duration::from_millis(1))
                .unwrap()
                .allow_burst(NonZeroU32::new(2).unwrap()),
        );
        limiter.check(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(limiter.sweep(), 0);
    }
}

//! Rate limit of failed credentials on every route.
//!
//! Every response `401 Unauthorized` costs the client address one unit of a
//! small budget. A client that spends it, for example by guessing access
//! tokens, invite tokens or follow cookies, gets `429 Too Many Requests`
//! with `Retry-After` on every route until the budget refills, whatever
//! credential it sends next. Successful requests cost nothing, so devices
//! that refresh an expired token are not slowed down.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::Quota;

use super::{ApiError, AppState};
use crate::invites::limiter::ClientLimiter;
use crate::listener::PeerAddr;
use crate::metrics::RATE_LIMITED;

/// Blocked addresses kept at once; past it, expired blocks are dropped.
const MAX_BLOCKED: usize = 100_000;

/// Client addresses that spent their failure budget, and until when.
pub(crate) struct FailureLimiter {
    budget: ClientLimiter,
    blocked: DashMap<IpAddr, Instant>,
}

impl FailureLimiter {
    /// Allows `per_minute` failures per minute, all of them at once.
    pub(crate) fn new(per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        FailureLimiter {
            budget: ClientLimiter::with_quota(Quota::per_minute(rate).allow_burst(rate)),
            blocked: DashMap::new(),
        }
    }

    /// Returns how long `client` must still wait, if it is blocked.
    fn blocked_for(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let until = *self.blocked.get(&client)?;
        if until > now {
            return Some(until - now);
        }
        self.blocked.remove(&client);
        None
    }

    /// Charges one failure to `client`, blocking it once its budget is spent.
    fn record_failure(&self, client: IpAddr, now: Instant) {
        if let Err(wait) = self.budget.check(client) {
            if self.blocked.len() >= MAX_BLOCKED {
                self.blocked.retain(|_, until| *until > now);
            }
            self.blocked.insert(client, now + wait);
            tracing::warn!(
                client = %client,
                retry_after_s = wait.as_secs(),
                "client blocked after too many failed credentials"
            );
        }
    }
}

/// Rejects requests from blocked addresses with 429, and charges every 401
/// to the address it was sent to.
pub(crate) async fn limit_failures(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(client) = request
        .extensions()
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
    else {
        return next.run(request).await;
    };
    if let Some(wait) = state.failures.blocked_for(client, Instant::now()) {
        metrics::counter!(RATE_LIMITED, "endpoint" => "any", "scope" => "failed_credentials")
            .increment(1);
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return ApiError::TooManyRequests(seconds.max(1)).into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.failures.record_failure(client, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const PER_MINUTE: u32 = 20;

    #[test]
    fn burst_of_failures_blocks_the_address() {
        let limiter = FailureLimiter::new(PER_MINUTE);
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8));
        let now = Instant::now();
        for _ in 0..PER_MINUTE {
            limiter.record_failure(client, now);
        }
        assert_eq!(limiter.blocked_for(client, now), None);

        limiter.record_failure(client, now);
        let wait = limiter.blocked_for(client, now).unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
        assert_eq!(limiter.blocked_for(other, now), None);
    }

    #[test]
    fn block_ends_after_its_wait() {
        let limiter = FailureLimiter::new(PER_MINUTE);
        let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let now = Instant::now();
        for _ in 0..=PER_MINUTE {
            limiter.record_failure(client, now);
        }
        let wait = limiter.blocked_for(client, now).unwrap();
        assert_eq!(limiter.blocked_for(client, now + wait), None);
    }
}

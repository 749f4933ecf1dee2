//! Invite redemption: the rules of challenges, the per-client rate limit and
//! the follow cookie. The HTTP handlers live in `http::invites`, and the
//! challenges themselves in the store.
//!
//! A browser redeems an invite in two requests. It requests a challenge with
//! the invite token, then sends
//! `HMAC(invite auth key, "sealcast v1 invite proof" || challenge)`, which the
//! relay checks against the session's stored verifier. A valid proof gets the
//! browser a follow credential in an HttpOnly cookie, counted against the
//! session's `max_browsers`.
//!
//! | module | job |
//! | --- | --- |
//! | [`challenges`] | limits and hashing of single-use, expiring challenges bound to a token |
//! | [`limiter`] | per-client rate limit of the invite routes |
//! | [`cookie`] | building and reading the follow cookie |

pub(crate) mod challenges;
pub(crate) mod cookie;
pub(crate) mod limiter;

use std::sync::Arc;
use std::time::Duration;

use limiter::ClientLimiter;

use crate::shutdown::Shutdown;

/// Interval between sweeps of idle rate-limit entries.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The in-memory state of the invite routes, which each relay node keeps
/// for itself.
#[derive(Default)]
pub(crate) struct InviteState {
    pub(crate) limiter: ClientLimiter,
}

/// Sweeps idle rate-limit entries until shutdown, so memory shrinks back
/// after a burst of requests. Expired challenges are deleted from the store
/// when the next challenge is issued.
pub(crate) async fn run_upkeep(state: Arc<InviteState>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = interval.tick() => {
                let clients = state.limiter.sweep();
                tracing::trace!(clients, "invite rate limit swept");
            }
        }
    }
}

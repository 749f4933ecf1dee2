//! Invite redemption state: the challenges handed out, the per-client rate
//! limit and the follow cookie. The HTTP handlers live in `http::invites`.
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
//! | [`challenges`] | single-use, expiring challenges bound to a token |
//! | [`limiter`] | per-client rate limit of the invite routes |
//! | [`cookie`] | building and reading the follow cookie |

pub(crate) mod challenges;
pub(crate) mod cookie;
pub(crate) mod limiter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use challenges::ChallengeBook;
use limiter::ClientLimiter;

use crate::shutdown::Shutdown;

/// Interval between sweeps of expired challenges and idle rate-limit entries.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The in-memory state of the invite routes.
#[derive(Default)]
pub(crate) struct InviteState {
    pub(crate) challenges: ChallengeBook,
    pub(crate) limiter: ClientLimiter,
}

/// Sweeps expired challenges and idle rate-limit entries until shutdown, so
/// memory shrinks back after a burst of requests.
pub(crate) async fn run_upkeep(state: Arc<InviteState>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = interval.tick() => {
                let challenges = state.challenges.purge_expired(Instant::now());
                let clients = state.limiter.sweep();
                tracing::trace!(challenges, clients, "invite state swept");
            }
        }
    }
}

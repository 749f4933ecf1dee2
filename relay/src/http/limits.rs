//! Rate limits of the account routes: `429` with `Retry-After`, counted in
//! [`crate::metrics::RATE_LIMITED`].

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::Extension;

use super::{ApiError, AppState};
use crate::accounts::limits::LimitScope;
use crate::listener::PeerAddr;
use crate::metrics::RATE_LIMITED;

/// Counts a request against its client address's budget.
pub(crate) fn admit_ip(
    state: &AppState,
    peer: Option<&Extension<PeerAddr>>,
    endpoint: &'static str,
) -> Result<(), ApiError> {
    let client = client_address(peer);
    state
        .accounts
        .limits
        .check_ip(client)
        .map_err(|wait| limited(endpoint, LimitScope::Ip, wait))
}

/// Returns the client address of a request. Every request from the listener
/// has one, and any other shares the unspecified address's budget.
pub(crate) fn client_address(peer: Option<&Extension<PeerAddr>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(peer)| {
        peer.0.ip()
    })
}

/// Counts a request against an account's budget. `account` is a normalized
/// email address or a user id.
pub(crate) fn admit_account(
    state: &AppState,
    account: &str,
    endpoint: &'static str,
) -> Result<(), ApiError> {
    state
        .accounts
        .limits
        .check_account(account)
        .map_err(|wait| limited(endpoint, LimitScope::Account, wait))
}

fn limited(endpoint: &'static str, scope: LimitScope, wait: Duration) -> ApiError {
    metrics::counter!(RATE_LIMITED, "endpoint" => endpoint, "scope" => scope.label()).increment(1);
    tracing::debug!(endpoint, scope = scope.label(), "request rate limited");
    // Whole seconds, rounded up, so a client that waits is admitted.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests(seconds.max(1))
}

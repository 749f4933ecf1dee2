//! Recording audit events from request handlers.

use std::net::IpAddr;

use axum::Extension;

use super::staff::Principal;
use super::AppState;
use crate::audit::event::staff_actor;
use crate::audit::{Action, Event};
use crate::listener::PeerAddr;

/// Returns the IP address of the request's peer, when the listener recorded it.
pub(crate) fn peer_ip(peer: Option<&Extension<PeerAddr>>) -> Option<IpAddr> {
    peer.map(|peer| peer.0 .0.ip())
}

/// Starts an event by the staff member of `principal`, from `source`.
pub(crate) fn staff_event(action: Action, principal: &Principal, source: Option<IpAddr>) -> Event {
    Event::new(
        action,
        staff_actor(&principal.user_id, principal.device_id.as_deref()),
    )
    .source(source)
    .detail("user_id", &principal.user_id)
    .detail("organization_id", &principal.organization_id)
}

/// Records `event` and waits for its commit, so that the response follows
/// the entry. A failure is already logged and counted by the audit log, and
/// the action it describes has happened, so the response goes out anyway.
pub(crate) async fn record(state: &AppState, event: Event) {
    let _ = state.audit.record_committed(event).await;
}

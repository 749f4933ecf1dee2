//! Audit events of follow sockets: who joined a session and when they left.

use std::net::IpAddr;

use sealcast_protocol::SessionId;

use crate::audit::event::{staff_actor, ACTOR_PATIENT};
use crate::audit::{Action, Event};
use crate::http::staff::Principal;

/// The identity of a follower, as recorded in the audit log.
#[derive(Debug, Clone)]
pub(crate) struct FollowerAudit {
    actor: String,
    source: Option<IpAddr>,
    /// `invite_token`, `follow_cookie` or `staff`.
    credential: &'static str,
}

impl FollowerAudit {
    /// Returns the identity of a patient following with the invite token or a
    /// browser's follow cookie.
    pub(crate) fn patient(source: Option<IpAddr>, credential: &'static str) -> Self {
        FollowerAudit {
            actor: ACTOR_PATIENT.to_owned(),
            source,
            credential,
        }
    }

    /// Returns the identity of a clinician following from a staff device or browser.
    pub(crate) fn staff(principal: &Principal, source: Option<IpAddr>) -> Self {
        FollowerAudit {
            actor: staff_actor(&principal.user_id, principal.device_id.as_deref()),
            source,
            credential: "staff",
        }
    }

    /// Returns the event of the follower joining `session_id` at `from`.
    pub(crate) fn joined(&self, session_id: SessionId, from: u64) -> Event {
        self.event(Action::FollowerJoined, session_id)
            .detail("from_offset", from)
    }

    /// Returns the event of the follower leaving, closed with `reason`.
    pub(crate) fn left(&self, session_id: SessionId, reason: &str) -> Event {
        self.event(Action::FollowerLeft, session_id)
            .detail("reason", reason)
    }

    fn event(&self, action: Action, session_id: SessionId) -> Event {
        Event::new(action, &self.actor)
            .source(self.source)
            .session(session_id)
            .detail("credential", self.credential)
    }
}

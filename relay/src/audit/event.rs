//! Audit events as the relay records them, before they get a place in a chain.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::entry::Stream;

/// Actor of events that the relay itself starts, such as retention runs.
pub(crate) const ACTOR_RELAY: &str = "relay";

/// Actor of events that `sealcast-relay` commands on the relay host start.
pub(crate) const ACTOR_ADMIN_CLI: &str = "admin-cli";

/// Actor of a patient's follower, which has no account.
pub(crate) const ACTOR_PATIENT: &str = "patient";

/// Kind of event. Each action belongs to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A staff device or browser finished signing in.
    SignedIn,
    /// A staff member signed out, ending that sign-in's tokens.
    SignedOut,
    /// A new device key was registered at sign-in.
    DeviceAdded,
    /// A staff member activated TOTP.
    TotpActivated,
    /// A clinician created a session.
    SessionStarted,
    /// The session's invite was created with it.
    InviteCreated,
    /// A browser redeemed an invite and got a follow credential.
    InviteRedeemed,
    /// The clinician device sent a paired device its wrapped key, and the
    /// device got a follow credential.
    DevicePaired,
    /// The clinician device stored a wrapped key of a later epoch for a paired device.
    PairedKeyPosted,
    /// The clinician device removed a paired device, revoking its follow credential.
    DeviceUnpaired,
    /// A follow socket opened.
    FollowerJoined,
    /// A follow socket closed.
    FollowerLeft,
    /// A clinician ended a session.
    SessionEnded,
    /// The ending device reported that it destroyed its copy of the session key.
    SessionKeyDestroyed,
    /// An organization was created.
    OrganizationCreated,
    /// A user was created.
    UserCreated,
    /// A user was disabled.
    UserDisabled,
    /// An administrator revoked a device.
    DeviceRevoked,
    /// A relay started, with its audit and retention settings.
    RelayStarted,
    /// Audit entries were exported.
    AuditExported,
    /// A retention run deleted expired content and audit entries.
    RetentionRun,
}

impl Action {
    /// Returns the name stored in entries.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::SignedIn => "auth.signed_in",
            Action::SignedOut => "auth.signed_out",
            Action::DeviceAdded => "device.added",
            Action::TotpActivated => "auth.totp_activated",
            Action::SessionStarted => "session.started",
            Action::InviteCreated => "invite.created",
            Action::InviteRedeemed => "invite.redeemed",
            Action::DevicePaired => "device.paired",
            Action::PairedKeyPosted => "device.key_posted",
            Action::DeviceUnpaired => "device.unpaired",
            Action::FollowerJoined => "follower.joined",
            Action::FollowerLeft => "follower.left",
            Action::SessionEnded => "session.ended",
            Action::SessionKeyDestroyed => "session.key_destroyed",
            Action::OrganizationCreated => "organization.created",
            Action::UserCreated => "user.created",
            Action::UserDisabled => "user.disabled",
            Action::DeviceRevoked => "device.revoked",
            Action::RelayStarted => "relay.started",
            Action::AuditExported => "audit.exported",
            Action::RetentionRun => "retention.run",
        }
    }

    /// Returns the stream the action is recorded in.
    pub(crate) fn stream(self) -> Stream {
        match self {
            Action::SignedIn
            | Action::SignedOut
            | Action::DeviceAdded
            | Action::TotpActivated
            | Action::SessionStarted
            | Action::InviteCreated
            | Action::InviteRedeemed
            | Action::DevicePaired
            | Action::PairedKeyPosted
            | Action::DeviceUnpaired
            | Action::FollowerJoined
            | Action::FollowerLeft
            | Action::SessionEnded
            | Action::SessionKeyDestroyed => Stream::Application,
            Action::OrganizationCreated
            | Action::UserCreated
            | Action::UserDisabled
            | Action::DeviceRevoked
            | Action::RelayStarted
            | Action::AuditExported
            | Action::RetentionRun => Stream::Admin,
        }
    }
}

/// An event to record. Its fields hold ids, addresses, counts and digests
/// only: callers never put content, emails, tokens or keys in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) action: Action,
    pub(crate) actor: String,
    pub(crate) source: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) digest: Option<String>,
    pub(crate) details: BTreeMap<String, String>,
}

impl Event {
    /// Starts an event of `action` by `actor`.
    pub(crate) fn new(action: Action, actor: impl Into<String>) -> Event {
        Event {
            action,
            actor: actor.into(),
            source: None,
            session_id: None,
            subject: None,
            digest: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the network address the request came from.
    pub(crate) fn source(mut self, source: Option<IpAddr>) -> Event {
        self.source = source.map(|address| address.to_string());
        self
    }

    /// Sets the session concerned.
    pub(crate) fn session(mut self, session_id: impl ToString) -> Event {
        self.session_id = Some(session_id.to_string());
        self
    }

    /// Sets the id of what was acted on.
    pub(crate) fn subject(mut self, subject: impl Into<String>) -> Event {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the digest to the hex SHA-256 of `value`, which refers to the
    /// value without revealing it.
    pub(crate) fn digest_of(mut self, value: &[u8]) -> Event {
        self.digest = Some(hex::encode(Sha256::digest(value)));
        self
    }

    /// Adds a detail: an id, count or setting.
    pub(crate) fn detail(mut self, key: &str, value: impl ToString) -> Event {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }
}

/// Returns the actor name of a staff member: the device id when the
/// request came from a device, else the user id.
pub(crate) fn staff_actor(user_id: &str, device_id: Option<&str>) -> String {
    device_id.unwrap_or(user_id).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique() {
        let actions = [
            Action::SignedIn,
            Action::SignedOut,
            Action::DeviceAdded,
            Action::TotpActivated,
            Action::SessionStarted,
            Action::InviteCreated,
            Action::InviteRedeemed,
            Action::DevicePaired,
            Action::PairedKeyPosted,
            Action::DeviceUnpaired,
            Action::FollowerJoined,
            Action::FollowerLeft,
            Action::SessionEnded,
            Action::SessionKeyDestroyed,
            Action::OrganizationCreated,
            Action::UserCreated,
            Action::UserDisabled,
            Action::DeviceRevoked,
            Action::RelayStarted,
            Action::AuditExported,
            Action::RetentionRun,
        ];
        let names: std::collections::HashSet<_> =
            actions.iter().map(|action| action.as_str()).collect();
        assert_eq!(names.len(), actions.len());
    }

    #[test]
    fn digest_hides_the_value() {
        let event = Event::new(Action::InviteRedeemed, ACTOR_PATIENT).digest_of(b"credential");
        let digest = event.digest.unwrap();
        assert_eq!(digest.len(), 64);
        assert!(!digest.contains("credential"));
    }
}

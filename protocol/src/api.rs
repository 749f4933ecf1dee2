//! The relay's HTTP and WebSocket API: request and response bodies, the JSON
//! text messages the relay sends on WebSockets, and close codes.
//!
//! | method and path | credential | purpose |
//! | --- | --- | --- |
//! | `POST /v1/sessions` | clinician access credential | create a session: 201 |
//! | `GET /v1/sessions/{id}/publish` (WebSocket) | clinician of the session's organization | publish sealed frames |
//! | `POST /v1/sessions/{id}/end` | clinician of the session's organization | end the session, body [`EndSessionRequest`] or empty: 204, 410 if ended |
//! | `GET /v1/sessions/{id}/follow?epoch=E&from=N` (WebSocket) | clinician of the session's organization | follow from a staff device |
//! | `GET /v1/follow?epoch=E&from=N` (WebSocket) | invite token or a paired device's follow token (bearer), or [`FOLLOW_COOKIE`] | follow, resuming at offset N |
//! | `POST /v1/invites/challenge` | none | get a challenge for an invite token |
//! | `POST /v1/invites/redeem` | proof over the challenge | redeem an invite: sets [`FOLLOW_COOKIE`] |
//! | `/v1/sessions/{id}/pairings/...`, `/v1/pairings/...` | clinician, or the joiner token | the pairing mailbox, see [`crate::pairing_api`] |
//! | `GET /join`, `GET /join/{file}` | none | the patient page, read-only |
//! | `GET /healthz` | none | liveness |
//! | `GET /readyz` | none | readiness: 503 while shutting down or when a store query fails |
//! | `GET /metrics` | none | Prometheus metrics |
//!
//! With the relay's `ops_listen` set, the last three are served only on that
//! plain-HTTP address.
//!
//! Staff credentials are described in [`crate::auth`]: a device-bound access
//! token with a DPoP proof, or a browser's access cookie. Invite tokens
//! travel as `Authorization: Bearer …`. Browsers cannot set
//! that header on a WebSocket upgrade, so the patient page redeems the invite
//! with the two invite routes, proving that it has the session key, and the
//! relay sets the HttpOnly cookie [`FOLLOW_COOKIE`], which the follow socket
//! accepts in place of the bearer token when the upgrade's `Origin` is the
//! relay's own.
//!
//! | status | invite routes | follow upgrade |
//! | --- | --- | --- |
//! | 400 | malformed body, token, challenge or proof | malformed query |
//! | 401 | proof does not verify, or challenge unknown, used or expired | missing or invalid credential |
//! | 403 | | follow cookie with another `Origin`, or none |
//! | 404 | unknown invite, or a session created without `invite_verifier` | |
//! | 409 | every one of the session's `max_browsers` places is taken | |
//! | 410 | session ended | invite token of an ended session |
//! | 415 | body without `Content-Type: application/json` | |
//! | 429 | too many requests from this client, see `Retry-After` | |
//!
//! Ending a session deletes its browsers' follow credentials, so their
//! cookies then get 401. After the upgrade, each follow socket sends
//! [`FollowerEvent::Committed`] with an offset that never exceeds the last
//! offset that socket delivered.
//!
//! On a publish socket the device sends each frame as one binary message and
//! the relay answers with [`PublisherEvent`] text messages. On a follow socket
//! the relay sends [`FollowerEvent`] text messages and each frame as a binary
//! message: the frame's 8-byte big-endian session offset, then the frame.

use serde::{Deserialize, Serialize};

use crate::ids::{SessionId, StreamId};

/// Body of `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionRequest {
    /// Key fingerprint, unpadded base64url of 16 bytes.
    pub fingerprint: String,
    /// Invite authentication key the relay keeps as the verifier for browser
    /// redemption, unpadded base64url of 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_verifier: Option<String>,
    /// How many browsers may redeem the invite, each getting its own follow
    /// cookie. `None` means [`DEFAULT_MAX_BROWSERS`]. Native followers that
    /// present the invite token as a bearer credential are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_browsers: Option<u32>,
}

/// Body of `POST /v1/sessions/{id}/end`. An empty body means the same as
/// `{}`, so devices built before this body existed still end sessions, and
/// relays built before it ignore it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndSessionRequest {
    /// Whether the ending device deleted its copy of the session key before
    /// sending the request. The relay records the claim in its audit log; it
    /// cannot check it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key_destroyed: bool,
}

/// Browsers that may redeem an invite when the session request names no number.
pub const DEFAULT_MAX_BROWSERS: u32 = 1;

/// Name of the cookie that carries a redeemed browser's follow credential.
/// The relay sets it with `HttpOnly; Secure; SameSite=Strict; Path=/v1`.
pub const FOLLOW_COOKIE: &str = "sealcast_follow";

/// Length in bytes of an invite challenge.
pub const CHALLENGE_LEN: usize = 32;

/// Response to `POST /v1/sessions`. The invite token is shown only here: the relay keeps its hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionResponse {
    /// The new session's id.
    pub session_id: SessionId,
    /// History epoch of the session.
    pub epoch: u64,
    /// Token that goes into the invite link.
    pub invite_token: String,
}

impl std::fmt::Debug for CreateSessionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSessionResponse")
            .field("session_id", &self.session_id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/invites/challenge`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteChallengeRequest {
    /// The invite token from the link, unpadded base64url.
    pub token: String,
}

impl std::fmt::Debug for InviteChallengeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteChallengeRequest")
            .finish_non_exhaustive()
    }
}

/// Response to `POST /v1/invites/challenge`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteChallengeResponse {
    /// [`CHALLENGE_LEN`] random bytes as unpadded base64url. Valid for one
    /// redemption of this invite token, for two minutes at most.
    pub challenge: String,
    /// The session the invite belongs to.
    pub session_id: SessionId,
    /// Key fingerprint, unpadded base64url: a browser whose key has another
    /// fingerprint has the wrong key and stops before sending a proof.
    pub fingerprint: String,
}

impl std::fmt::Debug for InviteChallengeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteChallengeResponse")
            .field("session_id", &self.session_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/invites/redeem`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteRedeemRequest {
    /// The invite token from the link, unpadded base64url.
    pub token: String,
    /// The challenge exactly as the relay sent it.
    pub challenge: String,
    /// The invite proof over the challenge, unpadded base64url of 32 bytes:
    /// see [`crate::InviteAuthKey::prove`].
    pub proof: String,
}

impl std::fmt::Debug for InviteRedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteRedeemRequest")
            .finish_non_exhaustive()
    }
}

/// Response to `POST /v1/invites/redeem`. The follow credential travels only
/// in the [`FOLLOW_COOKIE`] cookie, never in the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InviteRedeemResponse {
    /// The session the invite belongs to.
    pub session_id: SessionId,
    /// History epoch of the session.
    pub epoch: u64,
}

/// Body of every HTTP error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable error kind, for example `unauthorized`.
    pub error: String,
    /// Human-readable explanation with what to do next.
    pub message: String,
}

/// Text messages the relay sends on a publish socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PublisherEvent {
    /// Sent once after the upgrade.
    Welcome {
        /// Session being published.
        session_id: SessionId,
        /// History epoch.
        epoch: u64,
    },
    /// Every frame of `stream_id` up to and including `seq` is committed to
    /// the store; the device may forget them.
    Ack {
        /// Stream acknowledged.
        stream_id: StreamId,
        /// Highest committed sequence number.
        seq: u64,
        /// Session offset of that frame.
        offset: u64,
    },
}

/// Text messages the relay sends on a follow socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FollowerEvent {
    /// Sent once after the upgrade, before any frame.
    Welcome {
        /// Session being followed.
        session_id: SessionId,
        /// History epoch: a follower resuming with another epoch is refused.
        epoch: u64,
        /// Key fingerprint, unpadded base64url: a device whose key has another
        /// fingerprint holds the wrong key.
        fingerprint: String,
        /// First offset this socket delivers.
        from_offset: u64,
        /// Whether the session has already ended.
        ended: bool,
    },
    /// Every frame up to and including `offset` is committed. A follower that
    /// reconnects resumes at or before the offset after its last committed
    /// one, because frames after it could be sent again after a relay crash.
    Committed {
        /// Highest committed offset.
        offset: u64,
    },
    /// The session ended and every frame has been delivered; the relay closes
    /// the socket next with [`close::SESSION_ENDED`].
    Ended,
}

/// WebSocket close codes the relay uses, with the standard ones it relies on.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The relay is shutting down: reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// A text message arrived where binary frames are expected.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A rule of the API was broken.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The message exceeds the relay's maximum message size.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The relay failed internally, for example to commit: reconnect and resend.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The frame could not be decoded.
    pub const MALFORMED_FRAME: u16 = 4000;
    /// The frame's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4001;
    /// The frame names another session.
    pub const WRONG_SESSION: u16 = 4002;
    /// The frame's sequence number skips ahead of the next expected one.
    pub const SEQUENCE_GAP: u16 = 4003;
    /// The session has ended.
    pub const SESSION_ENDED: u16 = 4004;
    /// The follower fell too far behind: reconnect and resume.
    pub const LAGGED: u16 = 4005;
    /// The requested history cannot be delivered (another epoch, or an offset
    /// beyond the end): start over from offset 0.
    pub const CANNOT_RECOVER: u16 = 4006;
    /// Another publisher connection for the session replaced this one.
    pub const REPLACED: u16 = 4007;
    /// The peer sent no message or pong within the idle timeout.
    pub const TIMEOUT: u16 = 4008;
    /// The credential of the connection was revoked: its device or user was
    /// revoked or disabled, or the sign-in ended. Sign in again.
    pub const REVOKED: u16 = 4009;
}

/// Encodes a frame for a follow socket: the offset, then the frame.
pub fn encode_delivery(offset: u64, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + frame.len());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(frame);
    out
}

/// Splits a binary follow-socket message into its offset and frame.
pub fn decode_delivery(message: &[u8]) -> Option<(u64, &[u8])> {
    if message.len() < 8 {
        return None;
    }
    let (offset, frame) = message.split_at(8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(offset);
    Some((u64::from_be_bytes(bytes), frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_request_without_claim_is_empty_object() {
        let body = serde_json::to_string(&EndSessionRequest::default()).unwrap();
        assert_eq!(body, "{}");
        let parsed: EndSessionRequest = serde_json::from_str("{}").unwrap();
        assert!(!parsed.key_destroyed);
    }

    #[test]
    fn end_request_carries_key_destroyed() {
        let request = EndSessionRequest {
            key_destroyed: true,
        };
        let body = serde_json::to_string(&request).unwrap();
        assert_eq!(body, r#"{"key_destroyed":true}"#);
        assert_eq!(
            serde_json::from_str::<EndSessionRequest>(&body).unwrap(),
            request
        );
    }
}

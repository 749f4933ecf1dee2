//! JSON bodies of the relay's pairing mailbox, which carries the five
//! messages of [`crate::pairing`] between a joining device and the clinician
//! device of a session.
//!
//! | method and path | credential | step |
//! | --- | --- | --- |
//! | `POST /v1/sessions/{id}/pairings` | clinician of the session | open a slot, optionally with [`OpenPairingRequest`]: [`PairingOpened`] |
//! | `GET /v1/sessions/{id}/pairings/{pairing}?wait=S` | clinician of the session | [`PairingStatus`] with the commitment and the joiner's key |
//! | `POST /v1/sessions/{id}/pairings/{pairing}/clinician-key` | clinician of the session | step 2: [`PublicKeyBody`] |
//! | `POST /v1/sessions/{id}/pairings/{pairing}/wrapped-key` | clinician of the session | step 5: [`WrappedKeyBody`] |
//! | `DELETE /v1/sessions/{id}/pairings/{pairing}` | clinician of the session | cancel |
//! | `POST /v1/pairings/{pairing}/commitment` | none, or for a [`PairingPurpose::ClinicianDevice`] slot a device of the user who opened it | step 1: [`CommitmentBody`], returns [`PairingJoined`] |
//! | `GET /v1/pairings/{pairing}?wait=S` | joiner token | [`PairingStatus`] with the clinician's key, then the wrapped key |
//! | `POST /v1/pairings/{pairing}/joiner-key` | joiner token | step 3: [`PublicKeyBody`] |
//! | `DELETE /v1/pairings/{pairing}` | joiner token | cancel |
//!
//! Keys, commitments and wrapped keys travel as unpadded base64url.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// Decimal digits of a pairing id.
pub const PAIRING_ID_DIGITS: usize = 12;

/// Upper bound of a pairing id's value: ids are `0..PAIRING_ID_RANGE`.
pub const PAIRING_ID_RANGE: u64 = 1_000_000_000_000;

/// Longest `wait` a status request may ask for, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 30;

/// The short id of a pairing slot, which the clinician device shows and the
/// joining person types: twelve digits, written in groups of four such as
/// `0421-8810-3377`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairingId(u64);

impl PairingId {
    /// Wraps a value below [`PAIRING_ID_RANGE`], or returns `None`.
    pub fn new(value: u64) -> Option<Self> {
        (value < PAIRING_ID_RANGE).then_some(PairingId(value))
    }

    /// Returns the numeric value.
    pub fn value(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for PairingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = format!("{:012}", self.0);
        write!(f, "{}-{}-{}", &digits[..4], &digits[4..8], &digits[8..])
    }
}

/// A text that is not a pairing id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pairing id must be {PAIRING_ID_DIGITS} digits, optionally grouped with '-' or spaces, as the clinician device shows it")]
pub struct InvalidPairingId;

impl FromStr for PairingId {
    type Err = InvalidPairingId;

    /// Parses twelve digits, ignoring `-` and spaces between them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: String = text.chars().filter(|c| *c != '-' && *c != ' ').collect();
        if digits.len() != PAIRING_ID_DIGITS || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(InvalidPairingId);
        }
        digits
            .parse()
            .ok()
            .and_then(PairingId::new)
            .ok_or(InvalidPairingId)
    }
}

/// The state of a pairing slot, named after what the slot waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PairingState {
    /// Waiting for a joining device's commitment (step 1).
    Open,
    /// Waiting for the clinician device's public key (step 2).
    Committed,
    /// Waiting for the joining device's public key (step 3).
    Responded,
    /// Both keys are exchanged; waiting for the wrapped key (step 5), which
    /// the clinician device sends once its user confirmed the code.
    Revealed,
    /// The wrapped key waits for the joining device to fetch it.
    Completed,
    /// One device cancelled the pairing, for example because the codes differ.
    Cancelled,
}

/// The kind of device a pairing slot hands the session key to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PairingPurpose {
    /// A patient's device, which only follows the session.
    #[default]
    Patient,
    /// Another signed-in device of the clinician who opened the slot, which
    /// takes over the session: it gets everything the first device stores.
    ClinicianDevice,
}

/// Optional body of the request that opens a pairing slot. Without a body
/// the slot is for a patient's device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenPairingRequest {
    /// The kind of device the slot hands the session key to.
    #[serde(default)]
    pub purpose: PairingPurpose,
}

/// Response to opening a pairing slot, 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingOpened {
    /// The pairing id in its grouped text form.
    pub pairing_id: String,
    /// Seconds until the slot expires.
    pub expires_in: u64,
    /// The kind of device the slot hands the session key to.
    #[serde(default)]
    pub purpose: PairingPurpose,
}

/// Step 1, from the joining device: `SHA256("sealcast v1 pairing commit" || A)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitmentBody {
    /// 32 bytes, unpadded base64url.
    pub commitment: String,
    /// The joining device's Ed25519 identity key, 32 bytes as unpadded
    /// base64url. Required for a [`PairingPurpose::ClinicianDevice`] slot,
    /// whose commitment binds it, and rejected otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

/// Response to step 1, 201: the token that authenticates the joining
/// device's later requests to this slot, as `Authorization: Bearer`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingJoined {
    /// 32 random bytes, unpadded base64url. The relay keeps only its hash.
    pub joiner_token: String,
    /// Seconds until the slot expires.
    pub expires_in: u64,
}

impl fmt::Debug for PairingJoined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingJoined")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Steps 2 and 3: an X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicKeyBody {
    /// 32 bytes, unpadded base64url.
    pub public_key: String,
}

/// Step 5, from the clinician device: the wrapped key of section 12.3, or
/// for a second device of the clinician the wrapped grant of section 12.5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WrappedKeyBody {
    /// 112 bytes for a patient's device, 222 to 2,013 bytes for a second
    /// device of the clinician, unpadded base64url.
    pub wrapped_key: String,
}

/// A slot's status for one device, with only the fields that device needs.
/// The clinician device gets the commitment and the joiner's key. The joining
/// device gets the clinician's key, then the wrapped key and its follow credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PairingStatus {
    /// The slot's state.
    pub state: PairingState,
    /// Seconds until the slot expires.
    pub expires_in: u64,
    /// The kind of device the slot hands the session key to.
    #[serde(default)]
    pub purpose: PairingPurpose,
    /// Step 1, for the clinician device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    /// Step 1 of a second device of the clinician: its identity key, for
    /// the clinician device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
    /// Step 2, for the joining device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinician_public: Option<String>,
    /// Step 3, for the clinician device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joiner_public: Option<String>,
    /// Step 5, for the joining device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_key: Option<String>,
    /// With the wrapped key: the session the joined device follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// With the wrapped key: the joined device's follow credential, 32 random
    /// bytes as unpadded base64url, sent as `Authorization: Bearer` to
    /// `GET /v1/follow`. The relay keeps only its hash and sends it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_token: Option<String>,
}

impl fmt::Debug for PairingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingStatus")
            .field("state", &self.state)
            .field("expires_in", &self.expires_in)
            .field("purpose", &self.purpose)
            .field("commitment", &self.commitment)
            .field("device_key", &self.device_key)
            .field("clinician_public", &self.clinician_public)
            .field("joiner_public", &self.joiner_public)
            .field("wrapped_key", &self.wrapped_key)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_id_round_trips_in_groups() {
        let id = PairingId::new(42_188_103_377).unwrap();
        assert_eq!(id.to_string(), "0421-8810-3377");
        assert_eq!("0421-8810-3377".parse::<PairingId>().unwrap(), id);
        assert_eq!("0421 8810 3377".parse::<PairingId>().unwrap(), id);
        assert_eq!("042188103377".parse::<PairingId>().unwrap(), id);
    }

    #[test]
    fn pairing_id_rejects_other_text() {
        for text in [
            "",
            "1234-5678",
            "1234-5678-901a",
            "1234-5678-90123",
            "+12345678901",
        ] {
            assert_eq!(text.parse::<PairingId>(), Err(InvalidPairingId), "{text}");
        }
        assert!(PairingId::new(PAIRING_ID_RANGE).is_none());
    }

    #[test]
    fn status_debug_hides_follow_token() {
        let status = PairingStatus {
            state: PairingState::Completed,
            expires_in: 10,
            purpose: PairingPurpose::Patient,
            commitment: None,
            device_key: None,
            clinician_public: None,
            joiner_public: None,
            wrapped_key: None,
            session_id: None,
            follow_token: Some("follow-secret".into()),
        };
        assert!(!format!("{status:?}").contains("follow-secret"));
    }
}

//! Device endorsements: a clinician's first device vouches for the identity
//! key of a second device of the same clinician, so that followers who hold
//! only the first device's key accept streams the second device signs.
//!
//! The first device signs the statement `label || session id || u32 key
//! epoch || endorsed key` with its Ed25519 identity key and sends it, wrapped
//! with the session key, to the second device. The second device puts the
//! endorsement into every checkpoint and signed end it seals. An endorsement
//! is valid for streams of its session whose key epoch is at least its own,
//! because the endorsed device may rotate the key itself later.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use super::{AuthorshipError, PublisherKey};
use crate::dpop::DeviceKey;
use crate::ids::SessionId;

const ENDORSEMENT_LABEL: &[u8] = b"sealcast v1 device endorsement";

/// Length of an encoded endorsement: key epoch, endorsed key and signature.
pub const ENDORSEMENT_LEN: usize = 4 + 32 + 64;

/// A first device's signature over the identity key of a second device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endorsement {
    /// The endorsing device's identity key, which followers hold. Frames do
    /// not carry it: a follower takes the key from its link or pairing.
    pub endorser: PublisherKey,
    /// The endorsed device's Ed25519 identity key.
    pub device: PublisherKey,
    /// First key epoch of the session the endorsement is valid for.
    pub key_epoch: u32,
    /// Ed25519 signature of the endorsing device over [`Endorsement::statement`].
    pub signature: [u8; 64],
}

impl Endorsement {
    /// Signs an endorsement of `device` for `session_id` from `key_epoch` on
    /// with the endorsing device's identity key.
    pub fn sign(
        endorser: &DeviceKey,
        session_id: &SessionId,
        key_epoch: u32,
        device: PublisherKey,
    ) -> Self {
        Self::sign_with_secret(&endorser.secret_bytes(), session_id, key_epoch, device)
    }

    /// Signs with a given Ed25519 secret key, for test vectors.
    pub fn sign_with_secret(
        endorser_secret: &[u8; 32],
        session_id: &SessionId,
        key_epoch: u32,
        device: PublisherKey,
    ) -> Self {
        let signing = SigningKey::from_bytes(endorser_secret);
        let signature = signing
            .sign(&Self::statement(session_id, key_epoch, &device))
            .to_bytes();
        Endorsement {
            endorser: PublisherKey::of_verifying_key(&signing.verifying_key()),
            device,
            key_epoch,
            signature,
        }
    }

    /// Encodes the signed bytes: `label || session id || u32 key epoch || endorsed key`.
    pub fn statement(session_id: &SessionId, key_epoch: u32, device: &PublisherKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENDORSEMENT_LABEL.len() + 16 + 4 + 32);
        out.extend_from_slice(ENDORSEMENT_LABEL);
        out.extend_from_slice(session_id.as_bytes());
        out.extend_from_slice(&key_epoch.to_be_bytes());
        out.extend_from_slice(&device.to_bytes());
        out
    }

    /// Checks the signature under the endorser's key for a stream of
    /// `session_id` sealed under `stream_key_epoch`.
    pub fn verify(
        &self,
        session_id: &SessionId,
        stream_key_epoch: u32,
    ) -> Result<(), AuthorshipError> {
        if stream_key_epoch < self.key_epoch {
            return Err(AuthorshipError::InvalidEndorsement(
                "it is valid only from a later key epoch",
            ));
        }
        self.endorser
            .verify(
                &Self::statement(session_id, self.key_epoch, &self.device),
                &self.signature,
            )
            .map_err(|_| {
                AuthorshipError::InvalidEndorsement(
                    "its signature does not verify under the publisher key",
                )
            })
    }

    /// Encodes the endorsement as `u32 key epoch || endorsed key || signature`.
    pub fn to_bytes(&self) -> [u8; ENDORSEMENT_LEN] {
        let mut out = [0u8; ENDORSEMENT_LEN];
        out[..4].copy_from_slice(&self.key_epoch.to_be_bytes());
        out[4..36].copy_from_slice(&self.device.to_bytes());
        out[36..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes the form [`Endorsement::to_bytes`] writes, signed by
    /// `endorser`, without checking the signature.
    pub fn from_bytes(endorser: PublisherKey, bytes: &[u8]) -> Result<Self, AuthorshipError> {
        let bytes: &[u8; ENDORSEMENT_LEN] = bytes.try_into().map_err(|_| {
            AuthorshipError::InvalidEndorsement("it is not 100 bytes: epoch, key and signature")
        })?;
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&bytes[..4]);
        let mut device = [0u8; 32];
        device.copy_from_slice(&bytes[4..36]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[36..]);
        Ok(Endorsement {
            endorser,
            device: PublisherKey::from_bytes(&device)?,
            key_epoch: u32::from_be_bytes(epoch),
            signature,
        })
    }

    /// Returns the JSON form that checkpoint and end frames carry.
    pub fn to_content(&self) -> EndorsementContent {
        EndorsementContent {
            device: self.device.to_base64url(),
            key_epoch: self.key_epoch,
            signature: URL_SAFE_NO_PAD.encode(self.signature),
        }
    }
}

/// The `endorsement` object of a checkpoint or end frame. Byte strings are
/// unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndorsementContent {
    /// The endorsed device's identity key, which signed the frame, 32 bytes.
    pub device: String,
    /// First key epoch the endorsement is valid for.
    pub key_epoch: u32,
    /// The endorsing device's signature, 64 bytes.
    pub signature: String,
}

impl EndorsementContent {
    /// Decodes the fields of an endorsement by `endorser`, without checking
    /// the signature.
    pub fn decode(&self, endorser: PublisherKey) -> Result<Endorsement, AuthorshipError> {
        let malformed = AuthorshipError::InvalidEndorsement;
        let device: [u8; 32] =
            decode_exact(&self.device).ok_or(malformed("device is not 32 bytes of base64url"))?;
        let signature: [u8; 64] = decode_exact(&self.signature)
            .ok_or(malformed("signature is not 64 bytes of base64url"))?;
        Ok(Endorsement {
            endorser,
            device: PublisherKey::from_bytes(&device)
                .map_err(|_| malformed("device is not a valid Ed25519 public key"))?,
            key_epoch: self.key_epoch,
            signature,
        })
    }
}

fn decode_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: SessionId = SessionId([0x11; 16]);

    fn keys() -> ([u8; 32], PublisherKey, PublisherKey) {
        let first = [1u8; 32];
        let first_public =
            PublisherKey::of_verifying_key(&SigningKey::from_bytes(&first).verifying_key());
        let second_public =
            PublisherKey::of_verifying_key(&SigningKey::from_bytes(&[2u8; 32]).verifying_key());
        (first, first_public, second_public)
    }

    #[test]
    fn endorsement_verifies_from_its_epoch_on() {
        let (first, first_public, second_public) = keys();
        let endorsement = Endorsement::sign_with_secret(&first, &SESSION, 3, second_public);
        assert_eq!(endorsement.endorser, first_public);
        assert_eq!(endorsement.verify(&SESSION, 3), Ok(()));
        assert_eq!(endorsement.verify(&SESSION, 9), Ok(()));
        assert!(endorsement.verify(&SESSION, 2).is_err());
    }

    #[test]
    fn endorsement_rejects_other_session_or_signer() {
        let (first, first_public, second_public) = keys();
        let mut endorsement = Endorsement::sign_with_secret(&first, &SESSION, 0, second_public);
        let other = SessionId([0x22; 16]);
        assert!(endorsement.verify(&other, 0).is_err());
        endorsement.endorser = second_public;
        assert!(endorsement.verify(&SESSION, 0).is_err());
        endorsement.endorser = first_public;
        endorsement.key_epoch = 1;
        assert!(endorsement.verify(&SESSION, 1).is_err());
    }

    #[test]
    fn endorsement_rejects_swapped_device_key() {
        let (first, first_public, second_public) = keys();
        let mut endorsement = Endorsement::sign_with_secret(&first, &SESSION, 0, second_public);
        endorsement.device = first_public;
        assert!(endorsement.verify(&SESSION, 0).is_err());
    }

    #[test]
    fn endorsement_bytes_round_trip_and_reject_truncation() {
        let (first, first_public, second_public) = keys();
        let endorsement = Endorsement::sign_with_secret(&first, &SESSION, 7, second_public);
        let bytes = endorsement.to_bytes();
        assert_eq!(
            Endorsement::from_bytes(first_public, &bytes),
            Ok(endorsement)
        );
        let truncated = &bytes[..ENDORSEMENT_LEN - 1];
        assert!(Endorsement::from_bytes(first_public, truncated).is_err());
        let decoded = endorsement.to_content().decode(first_public);
        assert_eq!(decoded, Ok(endorsement));
    }
}

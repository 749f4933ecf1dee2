//! Handing a session to a second device of the same clinician.
//!
//! The second device runs the pairing of the parent module with its
//! Ed25519 identity key bound into the commitment and the code, so a relay
//! that substitutes that key makes the codes differ. Once both people
//! confirmed the code, the first device wraps a [`DeviceGrant`]: everything it
//! stores about the session, the pairings of the patient devices paired with
//! it, and an [`Endorsement`] of the second device's key. Followers have only
//! the first device's key, and the endorsement lets them accept the streams
//! the second device signs.
//!
//! Payload before encryption, big-endian: session id (16) || session key (32)
//! || first device key (32) || endorsement (100) || u64 history epoch || u8
//! invite token length || invite token (UTF-8) || u8 paired device count ||
//! that many pairings of [`PAIRED_STATE_LEN`] bytes each. The wrapped form is
//! u32 key epoch || nonce (12) || AES-256-GCM(payload) with the epoch as
//! associated data, under the wrap key of label `sealcast v1 wrap to
//! clinician device`.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::Nonce;
use zeroize::Zeroizing;

use super::{expand_fixed, PairedJoiner, PairedLink, PairingCode, PairingError, PAIRED_STATE_LEN};
use crate::authorship::{Endorsement, PublisherKey, ENDORSEMENT_LEN};
use crate::ids::SessionId;
use crate::keys::SessionKey;

pub(super) const DEVICE_COMMIT_LABEL: &[u8] = b"sealcast v1 device pairing commit";
const DEVICE_CODE_LABEL: &[u8] = b"sealcast v1 device pairing code";
pub(super) const WRAP_TO_DEVICE_LABEL: &[u8] = b"sealcast v1 wrap to clinician device";

/// Maximum length of the invite token in a device grant, in bytes.
pub const MAX_INVITE_TOKEN_LEN: usize = 255;

/// Maximum number of patient device pairings in a device grant. It bounds
/// the grant at [`MAX_DEVICE_WRAPPED_LEN`] bytes, which the relay keeps in
/// memory for each open pairing slot.
pub const MAX_GRANT_PAIRED_DEVICES: usize = 16;

/// Payload bytes before the invite token.
const FIXED_PAYLOAD_LEN: usize = 16 + 32 + 32 + ENDORSEMENT_LEN + 8 + 1;

/// Bytes a wrapped grant adds to its payload: epoch, nonce and tag.
const WRAP_OVERHEAD: usize = 4 + 12 + 16;

/// Length of a wrapped device grant with an empty invite token and no
/// paired devices.
pub const MIN_DEVICE_WRAPPED_LEN: usize = WRAP_OVERHEAD + FIXED_PAYLOAD_LEN + 1;

/// Length of a wrapped device grant with the longest invite token and the
/// most paired devices.
pub const MAX_DEVICE_WRAPPED_LEN: usize =
    MIN_DEVICE_WRAPPED_LEN + MAX_INVITE_TOKEN_LEN + MAX_GRANT_PAIRED_DEVICES * PAIRED_STATE_LEN;

/// The session data a second device of the clinician needs to publish, end
/// the session, and give links and pairings to patients.
pub struct DeviceGrant {
    /// The key epoch of `session_key`.
    pub key_epoch: u32,
    /// The session.
    pub session_id: SessionId,
    /// The session key of `key_epoch`.
    pub session_key: SessionKey,
    /// The first device's identity key, which followers hold.
    pub publisher: PublisherKey,
    /// The first device's endorsement of the second device's identity key,
    /// whose `endorser` is `publisher`.
    pub endorsement: Endorsement,
    /// The history epoch the relay reported when the session was created.
    pub history_epoch: u64,
    /// The token that goes into invite links, at most [`MAX_INVITE_TOKEN_LEN`] bytes.
    pub invite_token: Zeroizing<String>,
    /// The pairings of the patient devices paired with the first device, at
    /// most [`MAX_GRANT_PAIRED_DEVICES`], so that the second device wraps
    /// the keys of later epochs for them too.
    pub paired_devices: Vec<PairedJoiner>,
}

impl fmt::Debug for DeviceGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceGrant")
            .field("key_epoch", &self.key_epoch)
            .field("session_id", &self.session_id)
            .field("session_key", &self.session_key)
            .field("publisher", &self.publisher)
            .field("endorsement", &self.endorsement)
            .field("history_epoch", &self.history_epoch)
            .field("paired_devices", &self.paired_devices.len())
            .finish_non_exhaustive()
    }
}

/// Derives the code of a device pairing:
/// `HKDF(no salt, A || B || identity key, label, 4)`.
pub(super) fn device_code(
    joiner_public: &[u8; 32],
    clinician_public: &[u8; 32],
    device_key: &PublisherKey,
) -> PairingCode {
    let mut ikm = [0u8; 96];
    ikm[..32].copy_from_slice(joiner_public);
    ikm[32..64].copy_from_slice(clinician_public);
    ikm[64..].copy_from_slice(&device_key.to_bytes());
    let mut code = [0u8; 4];
    expand_fixed(None, &ikm, DEVICE_CODE_LABEL, &mut code);
    PairingCode(code)
}

pub(super) fn wrap(
    link: &PairedLink,
    grant: &DeviceGrant,
    nonce: [u8; 12],
) -> Result<Vec<u8>, PairingError> {
    let device_key = link.device_key.ok_or(PairingError::NotDevicePairing)?;
    if grant.endorsement.device != device_key {
        return Err(PairingError::InvalidEndorsement(
            "it names another key than the paired device's",
        ));
    }
    if grant.endorsement.endorser != grant.publisher {
        return Err(PairingError::InvalidEndorsement(
            "it is signed by another key than the grant's publisher key",
        ));
    }
    let token = grant.invite_token.as_bytes();
    let token_len = u8::try_from(token.len())
        .map_err(|_| PairingError::MalformedPayload("the invite token is over 255 bytes"))?;
    let paired_count = grant.paired_devices.len();
    if paired_count > MAX_GRANT_PAIRED_DEVICES {
        return Err(PairingError::TooManyPairedDevices(paired_count));
    }
    if grant
        .paired_devices
        .iter()
        .any(|paired| paired.device_key().is_some())
    {
        return Err(PairingError::NotDevicePairing);
    }
    let capacity = FIXED_PAYLOAD_LEN + token.len() + 1 + paired_count * PAIRED_STATE_LEN;
    let mut payload = Zeroizing::new(Vec::with_capacity(capacity));
    payload.extend_from_slice(grant.session_id.as_bytes());
    payload.extend_from_slice(grant.session_key.expose_bytes());
    payload.extend_from_slice(&grant.publisher.to_bytes());
    payload.extend_from_slice(&grant.endorsement.to_bytes());
    payload.extend_from_slice(&grant.history_epoch.to_be_bytes());
    payload.push(token_len);
    payload.extend_from_slice(token);
    // The count fits a byte: it was checked against MAX_GRANT_PAIRED_DEVICES above.
    payload.push(paired_count as u8);
    for paired in &grant.paired_devices {
        payload.extend_from_slice(paired.to_secret_bytes().as_slice());
    }

    let epoch = grant.key_epoch.to_be_bytes();
    let sealed = link
        .wrap_cipher(grant.key_epoch)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: payload.as_slice(),
                aad: &epoch,
            },
        )
        .map_err(|_| PairingError::MalformedPayload("the payload could not be encrypted"))?;
    let mut out = Vec::with_capacity(WRAP_OVERHEAD + payload.len());
    out.extend_from_slice(&epoch);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub(super) fn unwrap(
    link: &PairedLink,
    wrapped: &[u8],
    own_key: &PublisherKey,
) -> Result<DeviceGrant, PairingError> {
    if !(MIN_DEVICE_WRAPPED_LEN..=MAX_DEVICE_WRAPPED_LEN).contains(&wrapped.len()) {
        return Err(PairingError::InvalidLength(wrapped.len()));
    }
    let mut epoch = [0u8; 4];
    epoch.copy_from_slice(&wrapped[..4]);
    let key_epoch = u32::from_be_bytes(epoch);
    let payload = link
        .wrap_cipher(key_epoch)
        .decrypt(
            Nonce::from_slice(&wrapped[4..16]),
            Payload {
                msg: &wrapped[16..],
                aad: &epoch,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| PairingError::Decrypt)?;
    let grant = parse_payload(&payload, key_epoch)?;

    if grant.endorsement.device != *own_key {
        return Err(PairingError::InvalidEndorsement(
            "it names another device's key than this device's",
        ));
    }
    if grant.endorsement.key_epoch != key_epoch {
        return Err(PairingError::InvalidEndorsement(
            "it is for another key epoch than the wrapped key",
        ));
    }
    grant
        .endorsement
        .verify(&grant.session_id, key_epoch)
        .map_err(|_| {
            PairingError::InvalidEndorsement("it is not signed by the first device's key")
        })?;
    Ok(grant)
}

fn parse_payload(payload: &[u8], key_epoch: u32) -> Result<DeviceGrant, PairingError> {
    let malformed = PairingError::MalformedPayload;
    if payload.len() < FIXED_PAYLOAD_LEN {
        return Err(malformed("it is shorter than its fixed fields"));
    }
    let (fixed, rest) = payload.split_at(FIXED_PAYLOAD_LEN);
    let mut session_id = [0u8; 16];
    session_id.copy_from_slice(&fixed[..16]);
    let mut session_key = Zeroizing::new([0u8; 32]);
    session_key.copy_from_slice(&fixed[16..48]);
    let mut publisher = [0u8; 32];
    publisher.copy_from_slice(&fixed[48..80]);
    let publisher =
        PublisherKey::from_bytes(&publisher).map_err(|_| PairingError::InvalidPublisherKey)?;
    let endorsement_end = 80 + ENDORSEMENT_LEN;
    let endorsement = Endorsement::from_bytes(publisher, &fixed[80..endorsement_end])
        .map_err(|_| PairingError::InvalidEndorsement("its endorsed key is not valid"))?;
    let mut history_epoch = [0u8; 8];
    history_epoch.copy_from_slice(&fixed[endorsement_end..endorsement_end + 8]);
    let token_len = usize::from(fixed[FIXED_PAYLOAD_LEN - 1]);
    if rest.len() <= token_len {
        return Err(malformed(
            "it ends before the invite token and the paired device count",
        ));
    }
    let (token, rest) = rest.split_at(token_len);
    let invite_token = std::str::from_utf8(token)
        .map_err(|_| malformed("the invite token is not UTF-8"))?
        .to_owned();
    let paired_devices = parse_paired_devices(rest)?;

    Ok(DeviceGrant {
        key_epoch,
        session_id: SessionId(session_id),
        session_key: SessionKey::from_bytes(*session_key),
        publisher,
        endorsement,
        history_epoch: u64::from_be_bytes(history_epoch),
        invite_token: Zeroizing::new(invite_token),
        paired_devices,
    })
}

/// Parses the paired device count and the pairings that follow it.
fn parse_paired_devices(bytes: &[u8]) -> Result<Vec<PairedJoiner>, PairingError> {
    let malformed = PairingError::MalformedPayload;
    let (&count, states) = bytes
        .split_first()
        .ok_or(malformed("the paired device count is missing"))?;
    let count = usize::from(count);
    if count > MAX_GRANT_PAIRED_DEVICES {
        return Err(PairingError::TooManyPairedDevices(count));
    }
    if states.len() != count * PAIRED_STATE_LEN {
        return Err(malformed(
            "the paired devices' length does not match their count",
        ));
    }
    states
        .chunks_exact(PAIRED_STATE_LEN)
        .map(|state| {
            let mut bytes = Zeroizing::new([0u8; PAIRED_STATE_LEN]);
            bytes.copy_from_slice(state);
            PairedJoiner::from_secret_bytes(&bytes)
                .map_err(|_| malformed("a paired device's shared secret is all zeros"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::SharedSecret;

    fn link(device_key: Option<PublisherKey>) -> PairedLink {
        PairedLink {
            shared: SharedSecret(Box::new([9; 32])),
            joiner_public: [1; 32],
            clinician_public: [2; 32],
            device_key,
        }
    }

    fn device_key() -> PublisherKey {
        Endorsement::sign_with_secret(&[4; 32], &SessionId([0; 16]), 0, own_key()).endorser
    }

    fn own_key() -> PublisherKey {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        PublisherKey::from_bytes(&signing.verifying_key().to_bytes())
            .unwrap_or_else(|_| unreachable!("a key derived from a secret is valid"))
    }

    fn patient_pairing(byte: u8) -> PairedJoiner {
        PairedJoiner::from_secret_bytes(&[byte; PAIRED_STATE_LEN])
            .unwrap_or_else(|_| unreachable!("a non-zero shared secret is accepted"))
    }

    fn grant_with(paired_devices: Vec<PairedJoiner>) -> DeviceGrant {
        let session_id = SessionId([3; 16]);
        DeviceGrant {
            key_epoch: 2,
            session_id,
            session_key: SessionKey::from_bytes([6; 32]),
            publisher: device_key(),
            endorsement: Endorsement::sign_with_secret(&[4; 32], &session_id, 2, own_key()),
            history_epoch: 9,
            invite_token: Zeroizing::new("token".into()),
            paired_devices,
        }
    }

    #[test]
    fn paired_devices_round_trip() {
        let device_link = link(Some(own_key()));
        let paired: Vec<PairedJoiner> = (1..=MAX_GRANT_PAIRED_DEVICES as u8)
            .map(patient_pairing)
            .collect();
        let expected: Vec<[u8; PAIRED_STATE_LEN]> = paired
            .iter()
            .map(|pairing| *pairing.to_secret_bytes())
            .collect();
        let wrapped = wrap(&device_link, &grant_with(paired), [7; 12]);
        let Ok(wrapped) = wrapped else {
            panic!("wrapping failed: {wrapped:?}");
        };
        assert_eq!(
            wrapped.len(),
            MAX_DEVICE_WRAPPED_LEN - (MAX_INVITE_TOKEN_LEN - 5)
        );
        let grant = unwrap(&device_link, &wrapped, &own_key());
        let Ok(grant) = grant else {
            panic!("unwrapping failed: {:?}", grant.err());
        };
        let states: Vec<[u8; PAIRED_STATE_LEN]> = grant
            .paired_devices
            .iter()
            .map(|pairing| *pairing.to_secret_bytes())
            .collect();
        assert_eq!(states, expected);
        assert_eq!(grant.invite_token.as_str(), "token");
        assert_eq!(grant.history_epoch, 9);
    }

    #[test]
    fn too_many_paired_devices_are_rejected() {
        let device_link = link(Some(own_key()));
        let paired: Vec<PairedJoiner> = (1..=MAX_GRANT_PAIRED_DEVICES as u8 + 1)
            .map(patient_pairing)
            .collect();
        assert_eq!(
            wrap(&device_link, &grant_with(paired), [7; 12]).err(),
            Some(PairingError::TooManyPairedDevices(
                MAX_GRANT_PAIRED_DEVICES + 1
            ))
        );
        assert_eq!(
            parse_paired_devices(&[MAX_GRANT_PAIRED_DEVICES as u8 + 1]).err(),
            Some(PairingError::TooManyPairedDevices(
                MAX_GRANT_PAIRED_DEVICES + 1
            ))
        );
    }

    #[test]
    fn paired_device_section_must_match_its_count() {
        let state = [8u8; PAIRED_STATE_LEN];
        let cases: [(&str, Vec<u8>); 4] = [
            ("missing count", Vec::new()),
            ("count 1 without a pairing", vec![1]),
            ("count 0 with a pairing", [&[0u8][..], &state].concat()),
            (
                "count 1 with a byte more",
                [&[1u8][..], &state, &[0]].concat(),
            ),
        ];
        for (case, bytes) in cases {
            assert!(
                matches!(
                    parse_paired_devices(&bytes),
                    Err(PairingError::MalformedPayload(_))
                ),
                "{case}"
            );
        }
        let zero_secret = [&[1u8][..], &[0u8; PAIRED_STATE_LEN]].concat();
        assert!(matches!(
            parse_paired_devices(&zero_secret),
            Err(PairingError::MalformedPayload(_))
        ));
        let Ok(parsed) = parse_paired_devices(&[&[1u8][..], &state].concat()) else {
            panic!("one pairing was rejected");
        };
        assert_eq!(*parsed[0].to_secret_bytes(), state);
    }

    #[test]
    fn patient_label_does_not_open_a_device_wrap() {
        let device_link = link(Some(own_key()));
        let patient_link = link(None);
        let session_id = SessionId([3; 16]);
        let grant = DeviceGrant {
            key_epoch: 0,
            session_id,
            session_key: SessionKey::from_bytes([6; 32]),
            publisher: device_key(),
            endorsement: Endorsement::sign_with_secret(&[4; 32], &session_id, 0, own_key()),
            history_epoch: 0,
            invite_token: Zeroizing::new("token".into()),
            paired_devices: Vec::new(),
        };
        let wrapped = wrap(&device_link, &grant, [7; 12]);
        let Ok(wrapped) = wrapped else {
            panic!("wrapping failed: {wrapped:?}");
        };
        assert!(unwrap(&device_link, &wrapped, &own_key()).is_ok());
        // Same shared secret and public keys, but the patient label.
        assert_eq!(
            unwrap(&patient_link, &wrapped, &own_key()).err(),
            Some(PairingError::Decrypt)
        );
    }
}

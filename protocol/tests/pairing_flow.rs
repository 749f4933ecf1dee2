//! Pairing between a joining device and the clinician device: codes, the
//! commitment, rejected keys, and wrapping and unwrapping session keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use proptest::prelude::*;
use proptest::sample::Index;

use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, JoinerPairing, KeyGrant, PairedClinician, PairedJoiner,
    PairingError, PairingKeyPair, WRAPPED_KEY_LEN,
};
use sealcast_protocol::{SessionId, SessionKey};

/// The u-coordinate 1, a point of order 4.
const LOW_ORDER_POINT: [u8; 32] = {
    let mut point = [0u8; 32];
    point[0] = 1;
    point
};

fn publisher() -> PublisherKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]);
    PublisherKey::from_bytes(&signing.verifying_key().to_bytes()).unwrap()
}

/// Runs a pairing with no interference and both users confirming.
fn pair() -> (PairedJoiner, PairedClinician) {
    let (joiner, commitment) = JoinerPairing::start();
    let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    assert_eq!(joiner.code(), clinician.code());
    (clinician.confirm(), joiner.confirm())
}

fn grant(key_epoch: u32, key: [u8; 32]) -> KeyGrant {
    KeyGrant {
        key_epoch,
        session_id: SessionId([0x5e; 16]),
        session_key: SessionKey::from_bytes(key),
        publisher: publisher(),
    }
}

#[test]
fn relay_swapping_keys_changes_codes() {
    // The relay sends each side a key of its own. The joiner has
    // committed first, so the relay must pick its keys before it learns
    // the keys they are combined with.
    let (joiner, _joiner_commitment) = JoinerPairing::start();
    let relay_to_joiner = PairingKeyPair::generate();
    let relay_to_clinician = PairingKeyPair::generate();
    let relay_commitment = Commitment::to_public_key(&relay_to_clinician.public_key());
    let (clinician, _clinician_public) = ClinicianPairing::respond(relay_commitment);

    let (joiner, _revealed) = joiner
        .receive_clinician_key(relay_to_joiner.public_key())
        .unwrap();
    let clinician = clinician
        .receive_joiner_key(relay_to_clinician.public_key())
        .unwrap();

    // The codes match by chance with a probability of 2^-32.
    assert_ne!(joiner.code(), clinician.code());
    assert_ne!(joiner.code().words(), clinician.code().words());
}

#[test]
fn revealed_key_must_match_commitment() {
    let (_joiner, commitment) = JoinerPairing::start();
    let (clinician, _) = ClinicianPairing::respond(commitment);
    let other = PairingKeyPair::generate().public_key();
    assert_eq!(
        clinician.receive_joiner_key(other).unwrap_err(),
        PairingError::CommitmentMismatch
    );
}

#[test]
fn joiner_rejects_low_order_clinician_key() {
    let (joiner, _) = JoinerPairing::start();
    let err = joiner.receive_clinician_key(LOW_ORDER_POINT).unwrap_err();
    assert_eq!(err, PairingError::NonContributory);
}

#[test]
fn clinician_rejects_low_order_joiner_key() {
    let commitment = Commitment::to_public_key(&LOW_ORDER_POINT);
    let (clinician, _) = ClinicianPairing::respond(commitment);
    let err = clinician.receive_joiner_key(LOW_ORDER_POINT).unwrap_err();
    assert_eq!(err, PairingError::NonContributory);
}

#[test]
fn wrap_from_other_pairing_fails() {
    let (clinician, _) = pair();
    let (_, other_joiner) = pair();
    let wrapped = clinician.wrap_key(&grant(0, [7; 32]));
    assert_eq!(
        other_joiner.unwrap_key(&wrapped).unwrap_err(),
        PairingError::Decrypt
    );
}

#[test]
fn wrap_with_wrong_length_fails() {
    let (clinician, joiner) = pair();
    let wrapped = clinician.wrap_key(&grant(0, [7; 32]));
    for len in [0, 4, WRAPPED_KEY_LEN - 1] {
        let err = joiner.unwrap_key(&wrapped[..len]).unwrap_err();
        assert_eq!(err, PairingError::InvalidLength(len));
    }
    let mut longer = wrapped.clone();
    longer.push(0);
    let err = joiner.unwrap_key(&longer).unwrap_err();
    assert_eq!(err, PairingError::InvalidLength(WRAPPED_KEY_LEN + 1));
}

#[test]
fn grant_debug_hides_session_key() {
    let grant = grant(3, [0xab; 32]);
    let text = format!("{grant:?}");
    assert!(text.contains("SessionKey([redacted])"), "{text}");
    assert!(!text.to_lowercase().contains("abab"), "{text}");
    assert!(!text.contains("171, 171"), "{text}");
}

#[test]
fn paired_debug_hides_shared_secret() {
    let (clinician, joiner) = pair();
    for text in [format!("{clinician:?}"), format!("{joiner:?}")] {
        assert!(text.contains("joiner_public"), "{text}");
        assert!(!text.contains("shared"), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn wrap_round_trips(epoch in any::<u32>(), key in any::<[u8; 32]>(), session in any::<[u8; 16]>()) {
        let (clinician, joiner) = pair();
        let mut sent = grant(epoch, key);
        sent.session_id = SessionId(session);
        let wrapped = clinician.wrap_key(&sent);
        prop_assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);

        let received = joiner.unwrap_key(&wrapped).unwrap();
        prop_assert_eq!(received.key_epoch, epoch);
        prop_assert_eq!(received.session_id, sent.session_id);
        prop_assert_eq!(received.session_key.expose_bytes(), &key);
        prop_assert_eq!(received.publisher, publisher());
    }

    #[test]
    fn altered_wrap_fails(epoch in any::<u32>(), position in any::<Index>()) {
        let (clinician, joiner) = pair();
        let mut wrapped = clinician.wrap_key(&grant(epoch, [9; 32]));
        let bit = position.index(wrapped.len() * 8);
        wrapped[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(joiner.unwrap_key(&wrapped).unwrap_err(), PairingError::Decrypt);
    }

    #[test]
    fn wraps_of_one_grant_differ(epoch in any::<u32>()) {
        let (clinician, joiner) = pair();
        let sent = grant(epoch, [4; 32]);
        let first = clinician.wrap_key(&sent);
        let second = clinician.wrap_key(&sent);
        prop_assert_ne!(&first[4..16], &second[4..16], "nonce repeated");
        prop_assert!(joiner.unwrap_key(&first).is_ok());
        prop_assert!(joiner.unwrap_key(&second).is_ok());
    }
}

//! Handing a session to a second device of the same clinician: the device
//! key bound into the commitment and the code, the wrapped grant with its
//! own label, and the endorsement and patient device pairings inside it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::pairing::{
    ClinicianPairing, DeviceGrant, JoinerPairing, KeyGrant, PairedClinician, PairedJoiner,
    PairingCode, PairingError, MAX_DEVICE_WRAPPED_LEN, MAX_GRANT_PAIRED_DEVICES,
    MIN_DEVICE_WRAPPED_LEN,
};
use sealcast_protocol::{SessionId, SessionKey};
use zeroize::Zeroizing;

const SESSION: SessionId = SessionId([0x5e; 16]);
const FIRST_SECRET: [u8; 32] = [0x33; 32];
const SECOND_SECRET: [u8; 32] = [0x44; 32];

fn key_of(secret: &[u8; 32]) -> PublisherKey {
    let signing = ed25519_dalek::SigningKey::from_bytes(secret);
    PublisherKey::from_bytes(&signing.verifying_key().to_bytes()).unwrap()
}

/// Runs a device pairing with no interference and both users confirming.
fn pair_devices(device_key: PublisherKey) -> (PairedJoiner, PairedClinician) {
    let (joiner, commitment) = JoinerPairing::start_for_device(device_key);
    let (clinician, clinician_public) = ClinicianPairing::respond_to_device(commitment, device_key);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    assert_eq!(joiner.code(), clinician.code());
    (clinician.confirm(), joiner.confirm())
}

fn grant_for(device: PublisherKey, key_epoch: u32) -> DeviceGrant {
    DeviceGrant {
        key_epoch,
        session_id: SESSION,
        session_key: SessionKey::from_bytes([0x77; 32]),
        publisher: key_of(&FIRST_SECRET),
        endorsement: Endorsement::sign_with_secret(&FIRST_SECRET, &SESSION, key_epoch, device),
        history_epoch: 12,
        invite_token: Zeroizing::new("invite-token-of-the-session".into()),
        paired_devices: Vec::new(),
    }
}

/// Runs a patient device pairing and returns the first device's side and the patient's side.
fn pair_patient() -> (PairedJoiner, PairedClinician) {
    let (joiner, commitment) = JoinerPairing::start();
    let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    (clinician.confirm(), joiner.confirm())
}

#[test]
fn handed_over_pairing_wraps_later_keys() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, at_second) = pair_devices(second);
    let (to_patient, at_patient) = pair_patient();
    let mut grant = grant_for(second, 1);
    grant.paired_devices = vec![to_patient];

    let wrapped = to_second.wrap_device_grant(&grant).unwrap();
    assert!((MIN_DEVICE_WRAPPED_LEN..=MAX_DEVICE_WRAPPED_LEN).contains(&wrapped.len()));
    let adopted = at_second.unwrap_device_grant(&wrapped).unwrap();
    assert_eq!(adopted.paired_devices.len(), 1);

    // The second device rotates to epoch 2 and wraps the new key with the
    // pairing it received: the patient device opens it.
    let rotated = KeyGrant {
        key_epoch: 2,
        session_id: SESSION,
        session_key: SessionKey::from_bytes([0x78; 32]),
        publisher: key_of(&FIRST_SECRET),
    };
    let wrapped_key = adopted.paired_devices[0].wrap_key(&rotated);
    let opened = at_patient.unwrap_key(&wrapped_key).unwrap();
    assert_eq!(opened.key_epoch, 2);
    assert_eq!(opened.session_id, SESSION);
    assert_eq!(opened.session_key.expose_bytes(), &[0x78; 32]);

    // Another patient's pairing does not open it.
    let (_, other_patient) = pair_patient();
    assert_eq!(
        other_patient.unwrap_key(&wrapped_key).err(),
        Some(PairingError::Decrypt)
    );
}

#[test]
fn grant_over_the_paired_device_limit_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, _) = pair_devices(second);
    let mut grant = grant_for(second, 0);
    grant.paired_devices = (0..=MAX_GRANT_PAIRED_DEVICES)
        .map(|_| pair_patient().0)
        .collect();
    assert_eq!(
        to_second.wrap_device_grant(&grant).err(),
        Some(PairingError::TooManyPairedDevices(
            MAX_GRANT_PAIRED_DEVICES + 1
        ))
    );
}

#[test]
fn second_device_unwraps_the_whole_session() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, at_second) = pair_devices(second);
    assert_eq!(to_second.device_key(), Some(second));

    let wrapped = to_second.wrap_device_grant(&grant_for(second, 2)).unwrap();
    assert!((MIN_DEVICE_WRAPPED_LEN..=MAX_DEVICE_WRAPPED_LEN).contains(&wrapped.len()));
    let grant = at_second.unwrap_device_grant(&wrapped).unwrap();
    assert_eq!(grant.key_epoch, 2);
    assert_eq!(grant.session_id, SESSION);
    assert_eq!(grant.session_key.expose_bytes(), &[0x77; 32]);
    assert_eq!(grant.publisher, key_of(&FIRST_SECRET));
    assert_eq!(grant.endorsement.device, second);
    assert_eq!(grant.history_epoch, 12);
    assert_eq!(grant.invite_token.as_str(), "invite-token-of-the-session");
}

#[test]
fn substituted_device_key_fails_the_commitment() {
    let second = key_of(&SECOND_SECRET);
    let substitute = key_of(&[0x55; 32]);
    let (joiner, commitment) = JoinerPairing::start_for_device(second);

    // A relay that names another device key to the first device fails the commitment.
    let (clinician, clinician_public) = ClinicianPairing::respond_to_device(commitment, substitute);
    let (_, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    assert_eq!(
        clinician.receive_joiner_key(joiner_public).err(),
        Some(PairingError::CommitmentMismatch)
    );
    // A patient pairing's commitment check also fails on a device commitment.
    let (patient_side, _) = ClinicianPairing::respond(commitment);
    assert_eq!(
        patient_side.receive_joiner_key(joiner_public).err(),
        Some(PairingError::CommitmentMismatch)
    );
}

#[test]
fn device_code_binds_the_device_key() {
    let second = key_of(&SECOND_SECRET);
    let (joiner, commitment) = JoinerPairing::start_for_device(second);
    let (clinician, clinician_public) = ClinicianPairing::respond_to_device(commitment, second);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician.receive_joiner_key(joiner_public).unwrap();
    assert_eq!(joiner.code(), clinician.code());
    assert_ne!(
        joiner.code(),
        PairingCode::derive(&joiner_public, &clinician_public)
    );
}

#[test]
fn patient_link_cannot_unwrap_a_device_grant() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, _) = pair_devices(second);
    let wrapped = to_second.wrap_device_grant(&grant_for(second, 0)).unwrap();

    let (patient, commitment) = JoinerPairing::start();
    let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
    let (patient, patient_public) = patient.receive_clinician_key(clinician_public).unwrap();
    let patient_link = clinician
        .receive_joiner_key(patient_public)
        .unwrap()
        .confirm();
    let patient = patient.confirm();
    assert_eq!(
        patient.unwrap_device_grant(&wrapped).err(),
        Some(PairingError::NotDevicePairing)
    );
    assert_eq!(
        patient_link.wrap_device_grant(&grant_for(second, 0)).err(),
        Some(PairingError::NotDevicePairing)
    );
    assert!(patient.unwrap_key(&wrapped).is_err());
}

#[test]
fn grant_with_altered_epoch_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, at_second) = pair_devices(second);
    let mut wrapped = to_second.wrap_device_grant(&grant_for(second, 0)).unwrap();
    // Another epoch in the clear selects another wrap key and associated data.
    wrapped[3] ^= 1;
    assert_eq!(
        at_second.unwrap_device_grant(&wrapped).err(),
        Some(PairingError::Decrypt)
    );
}

#[test]
fn endorsement_of_other_key_rejected() {
    let second = key_of(&SECOND_SECRET);
    let other = key_of(&[0x66; 32]);
    let (to_second, _) = pair_devices(second);
    assert!(matches!(
        to_second.wrap_device_grant(&grant_for(other, 0)),
        Err(PairingError::InvalidEndorsement(_))
    ));

    // A first device that wraps for a pairing whose bound key is `other`
    // sends a grant that the device with key `second` rejects.
    let (joiner, commitment) = JoinerPairing::start_for_device(second);
    let (clinician, clinician_public) = ClinicianPairing::respond_to_device(commitment, second);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let to_second = clinician
        .receive_joiner_key(joiner_public)
        .unwrap()
        .confirm();
    let at_second = joiner.confirm();
    let mut grant = grant_for(second, 0);
    grant.endorsement = Endorsement::sign_with_secret(&[0x66; 32], &SESSION, 0, second);
    assert!(matches!(
        to_second.wrap_device_grant(&grant),
        Err(PairingError::InvalidEndorsement(_))
    ));
    // An endorsement signed by the right key for another session fails at the second device.
    let mut grant = grant_for(second, 0);
    grant.endorsement =
        Endorsement::sign_with_secret(&FIRST_SECRET, &SessionId([1; 16]), 0, second);
    let wrapped = to_second.wrap_device_grant(&grant).unwrap();
    assert!(matches!(
        at_second.unwrap_device_grant(&wrapped),
        Err(PairingError::InvalidEndorsement(_))
    ));
}

#[test]
fn endorsement_for_another_epoch_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, at_second) = pair_devices(second);
    let mut grant = grant_for(second, 3);
    grant.endorsement = Endorsement::sign_with_secret(&FIRST_SECRET, &SESSION, 2, second);
    let wrapped = to_second.wrap_device_grant(&grant).unwrap();
    assert!(matches!(
        at_second.unwrap_device_grant(&wrapped),
        Err(PairingError::InvalidEndorsement(_))
    ));
}

#[test]
fn truncated_or_altered_grant_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, at_second) = pair_devices(second);
    let wrapped = to_second.wrap_device_grant(&grant_for(second, 0)).unwrap();

    let truncated = &wrapped[..wrapped.len() - 1];
    assert_eq!(
        at_second.unwrap_device_grant(truncated).err(),
        Some(PairingError::Decrypt)
    );
    let too_short = &wrapped[..MIN_DEVICE_WRAPPED_LEN - 1];
    assert_eq!(
        at_second.unwrap_device_grant(too_short).err(),
        Some(PairingError::InvalidLength(MIN_DEVICE_WRAPPED_LEN - 1))
    );
    let mut altered = wrapped.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x80;
    assert_eq!(
        at_second.unwrap_device_grant(&altered).err(),
        Some(PairingError::Decrypt)
    );
}

#[test]
fn invite_token_over_255_bytes_is_not_wrapped() {
    let second = key_of(&SECOND_SECRET);
    let (to_second, _) = pair_devices(second);
    let mut grant = grant_for(second, 0);
    grant.invite_token = Zeroizing::new("x".repeat(256));
    assert!(matches!(
        to_second.wrap_device_grant(&grant),
        Err(PairingError::MalformedPayload(_))
    ));
}

#[test]
fn grant_debug_hides_secrets() {
    let grant = grant_for(key_of(&SECOND_SECRET), 0);
    let text = format!("{grant:?}");
    assert!(!text.contains("invite-token"), "{text}");
    assert!(!text.contains("119, 119"), "{text}");
}

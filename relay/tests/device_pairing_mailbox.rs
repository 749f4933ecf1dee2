//! Pairing slots that hand a session to another device of the same
//! clinician, against a real relay over TLS. Only a device signed in as the
//! slot's opener may join. The relay carries the device key to the first
//! device, takes a wrapped device grant and hands out no follow token.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{metric_value, sign_in_device, start_relay, Staff, TestRelay, CLINICIAN_EMAIL};
use reqwest::StatusCode;
use sealcast_protocol::api::{CreateSessionResponse, ErrorBody};
use sealcast_protocol::auth::Role;
use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, DeviceGrant, JoinerPairing, PairedJoiner, MAX_DEVICE_WRAPPED_LEN,
    MAX_GRANT_PAIRED_DEVICES, PAIRED_STATE_LEN,
};
use sealcast_protocol::pairing_api::{
    CommitmentBody, OpenPairingRequest, PairingJoined, PairingOpened, PairingPurpose, PairingState,
    PairingStatus, PublicKeyBody, WrappedKeyBody,
};
use sealcast_relay::Limits;
use zeroize::Zeroizing;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn session_path(session: &CreateSessionResponse, rest: &str) -> String {
    format!("/v1/sessions/{}/pairings{rest}", session.session_id)
}

async fn open_device_slot(relay: &TestRelay, session: &CreateSessionResponse) -> String {
    let body = OpenPairingRequest {
        purpose: PairingPurpose::ClinicianDevice,
    };
    let response = relay
        .staff_post(&session_path(session, ""))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let opened: PairingOpened = response.json().await.unwrap();
    assert_eq!(opened.purpose, PairingPurpose::ClinicianDevice);
    opened.pairing_id
}

/// Sends a commitment with `device_key`, authorized by `staff` when given.
async fn commit(
    relay: &TestRelay,
    id: &str,
    commitment: &[u8; 32],
    device_key: Option<&PublisherKey>,
    staff: Option<&Staff>,
) -> reqwest::Response {
    let path = format!("/v1/pairings/{id}/commitment");
    let body = CommitmentBody {
        commitment: b64(commitment),
        device_key: device_key.map(PublisherKey::to_base64url),
    };
    let mut request = relay.http.post(relay.url(&path)).json(&body);
    if let Some(staff) = staff {
        request = staff.authorize(request, "POST", &path);
    }
    request.send().await.unwrap()
}

async fn clinician_status(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    id: &str,
) -> PairingStatus {
    let path = session_path(session, &format!("/{id}"));
    let request = relay.http.get(relay.url(&format!("{path}?wait=5")));
    let response = relay
        .staff
        .authorize(request, "GET", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn joiner_status(relay: &TestRelay, id: &str, token: &str) -> PairingStatus {
    let response = relay
        .http
        .get(relay.url(&format!("/v1/pairings/{id}?wait=5")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn clinician_post(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    rest: &str,
    body: &impl serde::Serialize,
) -> reqwest::Response {
    relay
        .staff_post(&session_path(session, rest))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn assert_error(response: reqwest::Response, status: StatusCode, reason: &str) {
    assert_eq!(
        response.status(),
        status,
        "expected {status} for {reason:?}"
    );
    let body: ErrorBody = response.json().await.unwrap();
    assert!(
        body.message.contains(reason),
        "{:?} does not contain {reason:?}",
        body.message
    );
}

fn failures(metrics: &str, reason: &str) -> f64 {
    metric_value(
        metrics,
        &format!(r#"sealcast_pairing_failures_total{{reason="{reason}"}}"#),
    )
}

fn key_of(staff: &Staff) -> PublisherKey {
    PublisherKey::of_device(&staff.key)
}

#[tokio::test]
async fn device_slot_admits_only_the_same_clinician() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let id = open_device_slot(&relay, &session).await;
    let second = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    let colleague = relay
        .sign_in_new_user("colleague@clinic.example", Role::Clinician)
        .await;
    let (_, commitment) = JoinerPairing::start_for_device(key_of(&second));

    // A patient's device, without any sign-in.
    assert_error(
        commit(&relay, &id, &commitment.0, Some(&key_of(&second)), None).await,
        StatusCode::UNAUTHORIZED,
        "sign in on the joining device as the same clinician",
    )
    .await;
    // Another clinician of the same organization.
    assert_error(
        commit(
            &relay,
            &id,
            &commitment.0,
            Some(&key_of(&colleague)),
            Some(&colleague),
        )
        .await,
        StatusCode::FORBIDDEN,
        "signed in as another user or organization",
    )
    .await;
    // The same clinician without the device key.
    assert_error(
        commit(&relay, &id, &commitment.0, None, Some(&second)).await,
        StatusCode::BAD_REQUEST,
        "device_key is missing",
    )
    .await;
    let metrics = relay.metrics().await;
    assert_eq!(failures(&metrics, "joiner_not_signed_in"), 1.0);
    assert_eq!(failures(&metrics, "joiner_other_clinician"), 1.0);

    // The rejected requests left the slot open for the clinician's own device.
    let response = commit(
        &relay,
        &id,
        &commitment.0,
        Some(&key_of(&second)),
        Some(&second),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn patient_slot_rejects_a_device_key() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let response = relay
        .staff_post(&session_path(&session, ""))
        .send()
        .await
        .unwrap();
    let opened: PairingOpened = response.json().await.unwrap();
    assert_eq!(opened.purpose, PairingPurpose::Patient);
    let second = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    assert_error(
        commit(
            &relay,
            &opened.pairing_id,
            &[1; 32],
            Some(&key_of(&second)),
            Some(&second),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "is for a patient's device",
    )
    .await;
    let metrics = relay.metrics().await;
    assert_eq!(failures(&metrics, "not_device_slot"), 1.0);
}

#[tokio::test]
async fn second_device_receives_the_session_without_follow_token() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let id = open_device_slot(&relay, &session).await;
    let second = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    let second_key = key_of(&second);

    let (joiner, commitment) = JoinerPairing::start_for_device(second_key);
    let response = commit(&relay, &id, &commitment.0, Some(&second_key), Some(&second)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let joined: PairingJoined = response.json().await.unwrap();

    let status = clinician_status(&relay, &session, &id).await;
    assert_eq!(status.purpose, PairingPurpose::ClinicianDevice);
    assert_eq!(status.device_key, Some(second_key.to_base64url()));
    let received = URL_SAFE_NO_PAD.decode(status.commitment.unwrap()).unwrap();
    let (clinician, clinician_public) =
        ClinicianPairing::respond_to_device(Commitment(received.try_into().unwrap()), second_key);
    let body = PublicKeyBody {
        public_key: b64(&clinician_public),
    };
    let response = clinician_post(&relay, &session, &format!("/{id}/clinician-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status = joiner_status(&relay, &id, &joined.joiner_token).await;
    assert_eq!(status.state, PairingState::Responded);
    assert_eq!(status.device_key, None, "the joiner sees only its fields");
    let received = URL_SAFE_NO_PAD
        .decode(status.clinician_public.unwrap())
        .unwrap();
    let (joiner, joiner_public) = joiner
        .receive_clinician_key(received.try_into().unwrap())
        .unwrap();
    let body = PublicKeyBody {
        public_key: b64(&joiner_public),
    };
    let response = relay
        .http
        .post(relay.url(&format!("/v1/pairings/{id}/joiner-key")))
        .bearer_auth(&joined.joiner_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status = clinician_status(&relay, &session, &id).await;
    let received = URL_SAFE_NO_PAD
        .decode(status.joiner_public.unwrap())
        .unwrap();
    let clinician = clinician
        .receive_joiner_key(received.try_into().unwrap())
        .unwrap();
    assert_eq!(clinician.code(), joiner.code());
    let to_second = clinician.confirm();

    // A patient-sized wrapped key does not fit a device slot.
    let body = WrappedKeyBody {
        wrapped_key: b64(&[0; 112]),
    };
    assert_error(
        clinician_post(&relay, &session, &format!("/{id}/wrapped-key"), &body).await,
        StatusCode::BAD_REQUEST,
        "wrapped_key must be 222 to 2013 bytes, got 112",
    )
    .await;
    let body = WrappedKeyBody {
        wrapped_key: b64(&[0; MAX_DEVICE_WRAPPED_LEN + 1]),
    };
    assert_error(
        clinician_post(&relay, &session, &format!("/{id}/wrapped-key"), &body).await,
        StatusCode::BAD_REQUEST,
        "wrapped_key must be 222 to 2013 bytes, got 2014",
    )
    .await;

    let grant = DeviceGrant {
        key_epoch: 0,
        session_id: session.session_id,
        session_key: key.clone(),
        publisher: key_of(&relay.staff),
        endorsement: Endorsement::sign(&relay.staff.key, &session.session_id, 0, second_key),
        history_epoch: session.epoch,
        invite_token: Zeroizing::new(session.invite_token.clone()),
        // The maximum number of pairings, so the relay must accept the largest grant.
        paired_devices: (1..=MAX_GRANT_PAIRED_DEVICES as u8)
            .map(|byte| PairedJoiner::from_secret_bytes(&[byte; PAIRED_STATE_LEN]).unwrap())
            .collect(),
    };
    let body = WrappedKeyBody {
        wrapped_key: b64(&to_second.wrap_device_grant(&grant).unwrap()),
    };
    let response = clinician_post(&relay, &session, &format!("/{id}/wrapped-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status = joiner_status(&relay, &id, &joined.joiner_token).await;
    assert_eq!(status.state, PairingState::Completed);
    assert_eq!(status.session_id, Some(session.session_id));
    assert_eq!(status.follow_token, None);
    let wrapped = URL_SAFE_NO_PAD.decode(status.wrapped_key.unwrap()).unwrap();
    let received = joiner.confirm().unwrap_device_grant(&wrapped).unwrap();
    assert_eq!(received.session_key.fingerprint(), key.fingerprint());
    assert_eq!(received.invite_token.as_str(), session.invite_token);
    assert_eq!(received.publisher, key_of(&relay.staff));
    assert_eq!(received.paired_devices.len(), MAX_GRANT_PAIRED_DEVICES);
}

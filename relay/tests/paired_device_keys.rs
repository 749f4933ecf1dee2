//! Wrapped keys of later key epochs for paired devices, against a real
//! relay over TLS. The tests cover a long-polling fetch that wakes when the
//! clinician device posts a key, removal of a device and the audit entries.
//! Each kind of bad request gets its status and reason.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{metric_value, sign_in_device, start_relay, Staff, TestRelay, CLINICIAN_EMAIL};
use reqwest::StatusCode;
use rusqlite::Connection;
use sealcast_protocol::api::{CreateSessionResponse, ErrorBody};
use sealcast_protocol::auth::Role;
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::paired_keys::{DeviceId, PairedKeys};
use sealcast_protocol::pairing::{
    ClinicianPairing, Commitment, JoinerPairing, KeyGrant, PairedClinician, PairedJoiner,
};
use sealcast_protocol::pairing_api::{
    CommitmentBody, PairingJoined, PairingOpened, PairingStatus, PublicKeyBody, WrappedKeyBody,
};
use sealcast_protocol::{SessionId, SessionKey};
use sealcast_relay::Limits;
use serde::Serialize;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Both sides of a completed pairing and the joined device's follow token.
struct Paired {
    clinician: PairedJoiner,
    joiner: PairedClinician,
    device_id: DeviceId,
    follow_token: String,
}

async fn staff_post(relay: &TestRelay, path: &str, body: &impl Serialize) -> reqwest::Response {
    relay.staff_post(path).json(body).send().await.unwrap()
}

async fn staff_get_json<T: serde::de::DeserializeOwned>(relay: &TestRelay, path: &str) -> T {
    let response = relay
        .staff
        .authorize(relay.http.get(relay.url(path)), "GET", path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

/// Runs a whole pairing over the mailbox routes.
async fn pair(relay: &TestRelay, session: &CreateSessionResponse, key: &SessionKey) -> Paired {
    let slots = format!("/v1/sessions/{}/pairings", session.session_id);
    let response = relay.staff_post(&slots).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<PairingOpened>().await.unwrap().pairing_id;

    let (joiner, commitment) = JoinerPairing::start();
    let body = CommitmentBody {
        commitment: b64(&commitment.0),
        device_key: None,
    };
    let response = relay
        .http
        .post(relay.url(&format!("/v1/pairings/{id}/commitment")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let joined: PairingJoined = response.json().await.unwrap();

    let status: PairingStatus = staff_get_json(relay, &format!("{slots}/{id}")).await;
    let received = URL_SAFE_NO_PAD.decode(status.commitment.unwrap()).unwrap();
    let (clinician, clinician_public) =
        ClinicianPairing::respond(Commitment(received.try_into().unwrap()));
    let body = PublicKeyBody {
        public_key: b64(&clinician_public),
    };
    let response = staff_post(relay, &format!("{slots}/{id}/clinician-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
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

    let clinician = clinician
        .receive_joiner_key(joiner_public)
        .unwrap()
        .confirm();
    let grant = grant(session.session_id, 0, key.clone());
    let body = WrappedKeyBody {
        wrapped_key: b64(&clinician.wrap_key(&grant)),
    };
    let response = staff_post(relay, &format!("{slots}/{id}/wrapped-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status: PairingStatus = relay
        .http
        .get(relay.url(&format!("/v1/pairings/{id}")))
        .bearer_auth(&joined.joiner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Paired {
        device_id: DeviceId::of_joiner(&joiner_public),
        clinician,
        joiner: joiner.confirm(),
        follow_token: status.follow_token.unwrap(),
    }
}

fn publisher() -> PublisherKey {
    PublisherKey::from_bytes(&[0x11; 32]).unwrap()
}

fn grant(session_id: SessionId, key_epoch: u32, session_key: SessionKey) -> KeyGrant {
    KeyGrant {
        key_epoch,
        session_id,
        session_key,
        publisher: publisher(),
    }
}

fn keys_path(session: &CreateSessionResponse, device: &str) -> String {
    format!("/v1/sessions/{}/devices/{device}/keys", session.session_id)
}

async fn post_key(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    device: &str,
    wrapped_key: &str,
) -> reqwest::Response {
    let body = WrappedKeyBody {
        wrapped_key: wrapped_key.to_owned(),
    };
    staff_post(relay, &keys_path(session, device), &body).await
}

async fn fetch(relay: &TestRelay, token: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = relay
        .http
        .get(relay.url(&format!("/v1/paired/keys{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn fetched_epochs(relay: &TestRelay, paired: &Paired, query: &str) -> Vec<u32> {
    let response = fetch(relay, Some(&paired.follow_token), query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    let keys: PairedKeys = response.json().await.unwrap();
    keys.wrapped_keys
        .iter()
        .map(|text| {
            let wrapped = URL_SAFE_NO_PAD.decode(text).unwrap();
            paired.joiner.unwrap_key(&wrapped).unwrap().key_epoch
        })
        .collect()
}

async fn remove(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    device: &str,
) -> reqwest::Response {
    let path = format!("/v1/sessions/{}/devices/{device}", session.session_id);
    relay
        .staff
        .authorize(relay.http.delete(relay.url(&path)), "DELETE", &path)
        .send()
        .await
        .unwrap()
}

/// Checks a response's status, error kind and that its message contains `reason`.
async fn assert_error(response: reqwest::Response, status: StatusCode, kind: &str, reason: &str) {
    assert_eq!(
        response.status(),
        status,
        "expected {status} for {reason:?}"
    );
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, kind, "{}", body.message);
    assert!(
        body.message.contains(reason),
        "{:?} does not contain {reason:?}",
        body.message
    );
}

fn session_actions(relay: &TestRelay, session: &CreateSessionResponse) -> Vec<String> {
    let conn = Connection::open(relay.data_dir().join("relay.db")).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT action FROM audit_entries WHERE stream = 'application' AND session_id = ?1
            ORDER BY seq",
        )
        .unwrap();
    statement
        .query_map([session.session_id.to_string()], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn posted_key_wakes_waiting_fetch() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let paired = pair(&relay, &session, &key).await;
    let device = paired.device_id.to_string();
    assert!(fetched_epochs(&relay, &paired, "?after=0").await.is_empty());

    // A fetch that waits up to 20 s returns soon after the post.
    let waiting = {
        let http = relay.http.clone();
        let url = relay.url("/v1/paired/keys?after=0&wait=20");
        let token = paired.follow_token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                response.status(),
                response.json::<PairedKeys>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_key = SessionKey::generate();
    let wrapped = paired
        .clinician
        .wrap_key(&grant(session.session_id, 1, new_key.clone()));
    let response = post_key(&relay, &session, &device, &b64(&wrapped)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, keys, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_secs(10),
        "the fetch waited {elapsed:?}"
    );
    assert_eq!(keys.wrapped_keys.len(), 1);
    let opened = paired
        .joiner
        .unwrap_key(&URL_SAFE_NO_PAD.decode(&keys.wrapped_keys[0]).unwrap())
        .unwrap();
    assert_eq!(opened.key_epoch, 1);
    assert_eq!(opened.session_key.fingerprint(), new_key.fingerprint());

    let wrapped = paired
        .clinician
        .wrap_key(&grant(session.session_id, 2, SessionKey::generate()));
    let response = post_key(&relay, &session, &device, &b64(&wrapped)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(fetched_epochs(&relay, &paired, "").await, [1, 2]);
    assert_eq!(fetched_epochs(&relay, &paired, "?after=1").await, [2]);
    assert!(fetched_epochs(&relay, &paired, "?after=2&wait=1")
        .await
        .is_empty());

    // Removing the device revokes its follow token and its keys.
    let response = remove(&relay, &session, &device).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = fetch(&relay, Some(&paired.follow_token), "").await;
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "invalid follow token",
    )
    .await;
    let refused = relay
        .connect("/v1/follow?from=0", &paired.follow_token, None)
        .await;
    assert!(
        refused.is_err(),
        "the removed device's follow token still works"
    );
    let response = post_key(&relay, &session, &device, &b64(&wrapped)).await;
    assert_error(
        response,
        StatusCode::NOT_FOUND,
        "not_found",
        "no paired device",
    )
    .await;
    let response = remove(&relay, &session, &device).await;
    assert_error(
        response,
        StatusCode::NOT_FOUND,
        "not_found",
        "no paired device",
    )
    .await;

    let actions = session_actions(&relay, &session);
    let posted = actions
        .iter()
        .filter(|action| *action == "device.key_posted")
        .count();
    assert_eq!(posted, 2, "{actions:?}");
    assert!(
        actions.iter().any(|action| action == "device.unpaired"),
        "{actions:?}"
    );
    let metrics = relay.metrics().await;
    let steps = |step: &str| {
        metric_value(
            &metrics,
            &format!(r#"sealcast_pairing_steps_total{{step="{step}"}}"#),
        )
    };
    // The other tests of this file post, fetch and remove too, into the
    // same metrics.
    assert!(steps("key_posted") >= 2.0);
    assert!(steps("device_removed") >= 1.0);
    assert!(steps("key_fetched") >= 4.0);
}

#[tokio::test]
async fn bad_key_posts_are_rejected() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let paired = pair(&relay, &session, &key).await;
    let device = paired.device_id.to_string();
    let wrap = |key_epoch: u32| {
        b64(&paired.clinician.wrap_key(&grant(
            session.session_id,
            key_epoch,
            SessionKey::generate(),
        )))
    };

    let cases = [
        (
            "0123",
            wrap(1),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "device id must be 16 hex digits",
        ),
        (
            device.as_str(),
            "not base64!".to_owned(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unpadded base64url",
        ),
        (
            device.as_str(),
            b64(&[1; 111]),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "must be 112 bytes, got 111",
        ),
        (
            device.as_str(),
            wrap(0),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "key epoch 0",
        ),
        (
            "00000000000000ff",
            wrap(1),
            StatusCode::NOT_FOUND,
            "not_found",
            "no paired device 00000000000000ff",
        ),
    ];
    for (device, wrapped, status, kind, reason) in cases {
        let response = post_key(&relay, &session, device, &wrapped).await;
        assert_error(response, status, kind, reason).await;
    }

    let response = post_key(&relay, &session, &device, &wrap(3)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = post_key(&relay, &session, &device, &wrap(2)).await;
    assert_error(
        response,
        StatusCode::CONFLICT,
        "conflict",
        "key epoch 2 is older than key epoch 3",
    )
    .await;
    // The newest epoch again is a retry, and replaces the stored key.
    let response = post_key(&relay, &session, &device, &wrap(3)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let unauthenticated = relay
        .http
        .post(relay.url(&keys_path(&session, &device)))
        .json(&WrappedKeyBody {
            wrapped_key: wrap(4),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    for (query, reason) in [
        ("?wait=31", "wait must be whole seconds"),
        ("?after=x", "after must be a key epoch"),
        ("?from=1", "unknown query parameter"),
    ] {
        let response = fetch(&relay, Some(&paired.follow_token), query).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request", reason).await;
    }
    let response = fetch(&relay, None, "").await;
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing credential",
    )
    .await;
    let response = fetch(&relay, Some("not-a-token"), "").await;
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "invalid follow token",
    )
    .await;

    // Ending the session deletes the keys and the device's follow token.
    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let response = post_key(&relay, &session, &device, &wrap(4)).await;
    assert_error(response, StatusCode::GONE, "session_ended", "has ended").await;
    let response = fetch(&relay, Some(&paired.follow_token), "").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let metrics = relay.metrics().await;
    let failures = |reason: &str| {
        metric_value(
            &metrics,
            &format!(r#"sealcast_pairing_failures_total{{reason="{reason}"}}"#),
        )
    };
    assert_eq!(failures("invalid_length"), 1.0);
    assert_eq!(failures("epoch_zero"), 1.0);
    assert!(failures("unknown_device") >= 1.0);
    assert_eq!(failures("stale_epoch"), 1.0);
    // A fetch that waits while its session ends counts here too.
    assert!(failures("session_ended") >= 1.0);
}

/// Sends a request to a paired device route as `staff`.
async fn send_as(
    relay: &TestRelay,
    staff: &Staff,
    method: reqwest::Method,
    path: &str,
    body: Option<&WrappedKeyBody>,
) -> reqwest::Response {
    let mut request = relay.http.request(method.clone(), relay.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    staff
        .authorize(request, method.as_str(), path)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_session_creator_manages_devices() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let paired = pair(&relay, &session, &key).await;
    let device = paired.device_id.to_string();
    let keys = keys_path(&session, &device);
    let removal = format!("/v1/sessions/{}/devices/{device}", session.session_id);
    let wrap = |key_epoch: u32| WrappedKeyBody {
        wrapped_key: b64(&paired.clinician.wrap_key(&grant(
            session.session_id,
            key_epoch,
            SessionKey::generate(),
        ))),
    };

    // A colleague of the same organization can neither post a key that
    // would lock the device out of later ones, nor remove the device.
    let colleague = relay
        .sign_in_new_user("colleague@clinic.example", Role::Clinician)
        .await;
    let response = send_as(
        &relay,
        &colleague,
        reqwest::Method::POST,
        &keys,
        Some(&wrap(u32::MAX)),
    )
    .await;
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only the clinician who created this session",
    )
    .await;
    let response = send_as(&relay, &colleague, reqwest::Method::DELETE, &removal, None).await;
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only the clinician who created this session",
    )
    .await;
    let admin = relay
        .sign_in_new_user("admin@clinic.example", Role::Admin)
        .await;
    let response = send_as(&relay, &admin, reqwest::Method::DELETE, &removal, None).await;
    assert_error(
        response,
        StatusCode::FORBIDDEN,
        "forbidden",
        "only clinicians",
    )
    .await;

    // The creator's second device is the same user, so it may post.
    let second_device = sign_in_device(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        CLINICIAN_EMAIL,
    )
    .await;
    let response = send_as(
        &relay,
        &second_device,
        reqwest::Method::POST,
        &keys,
        Some(&wrap(1)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // An epoch far above the newest stored one is rejected, one within the
    // step is stored.
    let response = post_key(&relay, &session, &device, &wrap(u32::MAX).wrapped_key).await;
    assert_error(
        response,
        StatusCode::CONFLICT,
        "conflict",
        "key epoch 4294967295 is more than 16 above key epoch 1",
    )
    .await;
    let response = post_key(&relay, &session, &device, &wrap(18).wrapped_key).await;
    assert_error(
        response,
        StatusCode::CONFLICT,
        "conflict",
        "more than 16 above",
    )
    .await;
    let response = post_key(&relay, &session, &device, &wrap(17).wrapped_key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(fetched_epochs(&relay, &paired, "").await, [1, 17]);

    let metrics = relay.metrics().await;
    let auth_failures = metric_value(
        &metrics,
        r#"sealcast_auth_failures_total{endpoint="clinician_devices",reason="not_session_creator"}"#,
    );
    assert_eq!(auth_failures, 2.0);
    let too_far = metric_value(
        &metrics,
        r#"sealcast_pairing_failures_total{reason="epoch_too_far"}"#,
    );
    assert_eq!(too_far, 2.0);
}

/// Starts a fetch that waits up to 20 s and returns its status, body and duration.
fn spawn_waiting_fetch(
    relay: &TestRelay,
    paired: &Paired,
) -> tokio::task::JoinHandle<(StatusCode, String, Duration)> {
    let http = relay.http.clone();
    let url = relay.url("/v1/paired/keys?after=0&wait=20");
    let token = paired.follow_token.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let response = http.get(url).bearer_auth(token).send().await.unwrap();
        let status = response.status();
        (status, response.text().await.unwrap(), started.elapsed())
    })
}

#[tokio::test]
async fn removal_and_end_wake_waiting_fetch() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let removed = pair(&relay, &session, &key).await;
    let kept = pair(&relay, &session, &key).await;

    let waiting = spawn_waiting_fetch(&relay, &removed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = remove(&relay, &session, &removed.device_id.to_string()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let body: ErrorBody = serde_json::from_str(&body).unwrap();
    assert!(
        body.message.contains("this device was removed"),
        "{}",
        body.message
    );
    // Without the wake, the first store recheck comes 1 s after the fetch began.
    assert!(
        elapsed < Duration::from_millis(950),
        "the fetch waited {elapsed:?}"
    );

    let waiting = spawn_waiting_fetch(&relay, &kept);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::GONE, "{body}");
    let body: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(body.error, "session_ended");
    assert!(body.message.contains("has ended"), "{}", body.message);
    assert!(
        elapsed < Duration::from_millis(950),
        "the fetch waited {elapsed:?}"
    );

    let metrics = relay.metrics().await;
    let removed_failures = metric_value(
        &metrics,
        r#"sealcast_auth_failures_total{endpoint="paired_keys",reason="device_removed"}"#,
    );
    assert_eq!(removed_failures, 1.0);
}

//! The pairing mailbox against a real relay over TLS: a whole pairing with
//! the protocol crate's state machines, following with the follow token it
//! hands out, long-polling, and each kind of bad request with its status
//! and reason.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{metric_value, start_relay, FollowItem, Publisher, TestRelay};
use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use sealcast_protocol::api::{CreateSessionResponse, ErrorBody, FollowerEvent};
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::pairing::{ClinicianPairing, Commitment, JoinerPairing, KeyGrant};
use sealcast_protocol::pairing_api::{
    CommitmentBody, PairingJoined, PairingOpened, PairingState, PairingStatus, PublicKeyBody,
    WrappedKeyBody,
};
use sealcast_relay::Limits;
use serde::Serialize;

/// Pairing slot lifetime of the relays in these tests, short enough to
/// watch a slot expire.
const LIFETIME: Duration = Duration::from_secs(3);

async fn relay() -> TestRelay {
    start_relay(Limits {
        pairing_lifetime: LIFETIME,
        ..Limits::default()
    })
    .await
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn session_path(session: &CreateSessionResponse, rest: &str) -> String {
    format!("/v1/sessions/{}/pairings{rest}", session.session_id)
}

async fn open_slot(relay: &TestRelay, session: &CreateSessionResponse) -> String {
    let response = relay
        .staff_post(&session_path(session, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let opened: PairingOpened = response.json().await.unwrap();
    assert_eq!(opened.expires_in, LIFETIME.as_secs());
    opened.pairing_id
}

async fn clinician_post(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    rest: &str,
    body: &impl Serialize,
) -> reqwest::Response {
    relay
        .staff_post(&session_path(session, rest))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn clinician_status(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    id: &str,
    wait: u64,
) -> PairingStatus {
    let path = session_path(session, &format!("/{id}"));
    let request = relay.http.get(relay.url(&format!("{path}?wait={wait}")));
    let response = relay
        .staff
        .authorize(request, "GET", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn joiner_post(
    relay: &TestRelay,
    path: &str,
    token: Option<&str>,
    body: &impl Serialize,
) -> reqwest::Response {
    let mut request = relay.http.post(relay.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn joiner_status(relay: &TestRelay, id: &str, token: &str, wait: u64) -> reqwest::Response {
    relay
        .http
        .get(relay.url(&format!("/v1/pairings/{id}?wait={wait}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn commit(relay: &TestRelay, id: &str, commitment: &[u8]) -> reqwest::Response {
    let body = CommitmentBody {
        commitment: b64(commitment),
        device_key: None,
    };
    joiner_post(relay, &format!("/v1/pairings/{id}/commitment"), None, &body).await
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

#[tokio::test]
async fn paired_device_follows_with_its_token() {
    let relay = relay().await;
    let (session, key) = relay.create_session().await;
    let id = open_slot(&relay, &session).await;

    let (joiner, commitment) = JoinerPairing::start();
    let response = commit(&relay, &id, &commitment.0).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let joined: PairingJoined = response.json().await.unwrap();

    let status = clinician_status(&relay, &session, &id, 5).await;
    assert_eq!(status.state, PairingState::Committed);
    let received = URL_SAFE_NO_PAD.decode(status.commitment.unwrap()).unwrap();
    let (clinician, clinician_public) =
        ClinicianPairing::respond(Commitment(received.try_into().unwrap()));
    let body = PublicKeyBody {
        public_key: b64(&clinician_public),
    };
    let response = clinician_post(&relay, &session, &format!("/{id}/clinician-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status: PairingStatus = joiner_status(&relay, &id, &joined.joiner_token, 5)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status.state, PairingState::Responded);
    assert!(status.commitment.is_none(), "joiner sees only its fields");
    let received = URL_SAFE_NO_PAD
        .decode(status.clinician_public.unwrap())
        .unwrap();
    let (joiner, joiner_public) = joiner
        .receive_clinician_key(received.try_into().unwrap())
        .unwrap();
    let body = PublicKeyBody {
        public_key: b64(&joiner_public),
    };
    let path = format!("/v1/pairings/{id}/joiner-key");
    let response = joiner_post(&relay, &path, Some(&joined.joiner_token), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status = clinician_status(&relay, &session, &id, 5).await;
    assert_eq!(status.state, PairingState::Revealed);
    let received = URL_SAFE_NO_PAD
        .decode(status.joiner_public.unwrap())
        .unwrap();
    let clinician = clinician
        .receive_joiner_key(received.try_into().unwrap())
        .unwrap();
    assert_eq!(clinician.code(), joiner.code());
    let device = DeviceKey::generate().unwrap();
    let grant = KeyGrant {
        key_epoch: 0,
        session_id: session.session_id,
        session_key: key.clone(),
        publisher: PublisherKey::of_device(&device),
    };
    let body = WrappedKeyBody {
        wrapped_key: b64(&clinician.confirm().wrap_key(&grant)),
    };
    let response = clinician_post(&relay, &session, &format!("/{id}/wrapped-key"), &body).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let response = joiner_status(&relay, &id, &joined.joiner_token, 0).await;
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let status: PairingStatus = response.json().await.unwrap();
    assert_eq!(status.state, PairingState::Completed);
    assert_eq!(status.session_id, Some(session.session_id));
    let wrapped = URL_SAFE_NO_PAD.decode(status.wrapped_key.unwrap()).unwrap();
    let unwrapped = joiner.confirm().unwrap_key(&wrapped).unwrap();
    assert_eq!(unwrapped.session_key.fingerprint(), key.fingerprint());
    let follow_token = status.follow_token.unwrap();
    // A browser gets the same token as its follow cookie.
    let cookie = format!("sealcast_follow={follow_token}");
    assert!(
        set_cookie.starts_with(&format!("{cookie};")),
        "{set_cookie}"
    );
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} missing: {set_cookie}"
        );
    }

    // The token is handed out once: the slot is gone afterwards.
    let again = joiner_status(&relay, &id, &joined.joiner_token, 0).await;
    assert_error(again, StatusCode::NOT_FOUND, "not_found", "not found").await;

    let mut publish = relay.publish(&session).await;
    let mut publisher = Publisher::new(&key, &session);
    publish.send_binary(publisher.next_frame(true, 40)).await;
    let mut follower = relay
        .connect("/v1/follow?from=0", &follow_token, None)
        .await
        .unwrap();
    match follower.next_follow_item().await {
        FollowItem::Event(FollowerEvent::Welcome { session_id, .. }) => {
            assert_eq!(session_id, session.session_id);
        }
        other => panic!("expected the welcome, got {other:?}"),
    }
    assert!(matches!(
        follower.next_follow_item().await,
        FollowItem::Frame(0, _)
    ));

    // The cookie opens the follow socket from the relay's own origin only.
    let origin = format!("https://{}", relay.addr());
    let headers = [("cookie", cookie.as_str()), ("origin", origin.as_str())];
    let mut browser = relay
        .connect_with_headers("/v1/follow?from=0", &headers, None)
        .await
        .expect("the paired cookie was refused");
    assert!(matches!(
        browser.next_follow_item().await,
        FollowItem::Event(FollowerEvent::Welcome { .. })
    ));
    let without_origin = relay
        .connect_with_headers("/v1/follow?from=0", &[("cookie", cookie.as_str())], None)
        .await;
    assert!(
        without_origin.is_err(),
        "a cookie without Origin was accepted"
    );

    // Ending the session deletes the paired device's credential.
    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let refused = relay
        .connect("/v1/follow?from=0", &follow_token, None)
        .await;
    assert!(refused.is_err(), "the follow token outlived the session");
    let refused = relay
        .connect_with_headers("/v1/follow?from=0", &headers, None)
        .await;
    assert!(refused.is_err(), "the paired cookie outlived the session");
    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"sealcast_pairing_steps_total{step="wrapped_key"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn status_long_poll_wakes_on_commitment() {
    let relay = relay().await;
    let (session, _) = relay.create_session().await;
    let id = open_slot(&relay, &session).await;

    let started = Instant::now();
    let waiting = clinician_status(&relay, &session, &id, 2);
    let committing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        commit(&relay, &id, &[7; 32]).await
    };
    let (status, response) = tokio::join!(waiting, committing);
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(status.state, PairingState::Committed);
    assert_eq!(status.commitment, Some(b64(&[7; 32])));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn mailbox_rejects_bad_requests() {
    let relay = relay().await;
    let (session, _) = relay.create_session().await;
    let id = open_slot(&relay, &session).await;

    // Malformed, unknown and too-short values.
    assert_error(
        commit(&relay, "12-34", &[1; 32]).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "pairing id must be 12 digits",
    )
    .await;
    assert_error(
        commit(&relay, "0000-0000-0000", &[1; 32]).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "pairing 0000-0000-0000 not found",
    )
    .await;
    assert_error(
        commit(&relay, &id, &[1; 31]).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "commitment must be 32 bytes, got 31",
    )
    .await;

    // A clinician key before any commitment is out of order.
    let key = PublicKeyBody {
        public_key: b64(&[9; 32]),
    };
    assert_error(
        clinician_post(&relay, &session, &format!("/{id}/clinician-key"), &key).await,
        StatusCode::CONFLICT,
        "conflict",
        "is in state open, but this step needs state committed",
    )
    .await;

    let response = commit(&relay, &id, &[1; 32]).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let joined: PairingJoined = response.json().await.unwrap();
    assert_error(
        commit(&relay, &id, &[2; 32]).await,
        StatusCode::CONFLICT,
        "conflict",
        "another device already joined",
    )
    .await;

    // The joiner's key before the clinician's is out of order, and a
    // wrong or missing joiner token is rejected before that.
    let joiner_key = format!("/v1/pairings/{id}/joiner-key");
    assert_error(
        joiner_post(&relay, &joiner_key, Some(&joined.joiner_token), &key).await,
        StatusCode::CONFLICT,
        "conflict",
        "is in state committed, but this step needs state responded",
    )
    .await;
    assert_error(
        joiner_post(&relay, &joiner_key, Some("not-the-token"), &key).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "invalid joiner token",
    )
    .await;
    assert_error(
        joiner_post(&relay, &joiner_key, None, &key).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing joiner token",
    )
    .await;

    // A short public key, and a wrapped key of the wrong length or too early.
    let short = PublicKeyBody {
        public_key: b64(&[9; 16]),
    };
    assert_error(
        clinician_post(&relay, &session, &format!("/{id}/clinician-key"), &short).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "public_key must be 32 bytes, got 16",
    )
    .await;
    let wrapped_path = format!("/{id}/wrapped-key");
    let wrong_length = WrappedKeyBody {
        wrapped_key: b64(&[0; 111]),
    };
    assert_error(
        clinician_post(&relay, &session, &wrapped_path, &wrong_length).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "wrapped_key must be 112 bytes, got 111",
    )
    .await;
    let early = WrappedKeyBody {
        wrapped_key: b64(&[0; 112]),
    };
    assert_error(
        clinician_post(&relay, &session, &wrapped_path, &early).await,
        StatusCode::CONFLICT,
        "conflict",
        "is in state committed, but this step needs state revealed",
    )
    .await;

    // A long poll longer than the maximum.
    let response = relay
        .http
        .get(relay.url(&format!("/v1/pairings/{id}?wait=31")))
        .bearer_auth(&joined.joiner_token)
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "wait must be whole seconds from 0 to 30",
    )
    .await;

    // The per-session limit counts this slot and three more.
    for _ in 0..3 {
        open_slot(&relay, &session).await;
    }
    let response = relay
        .staff_post(&session_path(&session, ""))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::CONFLICT,
        "conflict",
        "already has 4 open pairings",
    )
    .await;

    // Once the lifetime has passed the slot is expired.
    tokio::time::sleep(LIFETIME + Duration::from_millis(200)).await;
    assert_error(
        joiner_status(&relay, &id, &joined.joiner_token, 0).await,
        StatusCode::GONE,
        "expired",
        "pairing expired",
    )
    .await;

    // The metrics are shared by the tests of this binary, so only reasons
    // no other test causes are checked.
    let metrics = relay.metrics().await;
    for (reason, expected) in [
        ("out_of_order", 3.0),
        ("invalid_length", 3.0),
        ("already_joined", 1.0),
        ("expired", 1.0),
        ("session_full", 1.0),
    ] {
        let series = format!(r#"sealcast_pairing_failures_total{{reason="{reason}"}}"#);
        assert_eq!(metric_value(&metrics, &series), expected, "{series}");
    }
}

#[tokio::test]
async fn cancelled_and_ended_pairings_are_refused() {
    let relay = relay().await;
    let (session, _) = relay.create_session().await;
    let id = open_slot(&relay, &session).await;
    let joined: PairingJoined = commit(&relay, &id, &[1; 32]).await.json().await.unwrap();

    let path = session_path(&session, &format!("/{id}"));
    let request = relay.http.delete(relay.url(&path));
    let response = relay
        .staff
        .authorize(request, "DELETE", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let status: PairingStatus = joiner_status(&relay, &id, &joined.joiner_token, 0)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status.state, PairingState::Cancelled);
    let key = PublicKeyBody {
        public_key: b64(&[9; 32]),
    };
    assert_error(
        clinician_post(&relay, &session, &format!("/{id}/clinician-key"), &key).await,
        StatusCode::CONFLICT,
        "conflict",
        "was cancelled",
    )
    .await;

    // Another session's clinician route does not reach this slot.
    let (other, _) = relay.create_session().await;
    assert_error(
        clinician_post(&relay, &other, &format!("/{id}/clinician-key"), &key).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "not found",
    )
    .await;

    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let response = relay
        .staff_post(&session_path(&session, ""))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::GONE, "session_ended", "has ended").await;
}

#[tokio::test]
async fn ending_session_closes_its_slots() {
    // Slots outlive the waits below, so only the end can cut them short.
    let relay = start_relay(Limits {
        pairing_lifetime: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let (session, _) = relay.create_session().await;
    let open = open_slot_any(&relay, &session).await;
    let committed = open_slot_any(&relay, &session).await;
    let joined: PairingJoined = commit(&relay, &committed, &[1; 32])
        .await
        .json()
        .await
        .unwrap();

    let waiting = {
        let http = relay.http.clone();
        let url = relay.url(&format!("/v1/pairings/{committed}?wait=20"));
        let token = joined.joiner_token.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = response.status();
            (status, response.text().await.unwrap(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::GONE, "{body}");
    let body: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(body.error, "session_ended");
    assert!(body.message.contains("has ended"), "{}", body.message);
    assert!(
        elapsed < Duration::from_secs(5),
        "the status request waited {elapsed:?}"
    );

    assert_error(
        commit(&relay, &open, &[2; 32]).await,
        StatusCode::GONE,
        "session_ended",
        "has ended",
    )
    .await;
    let key = PublicKeyBody {
        public_key: b64(&[9; 32]),
    };
    let response = joiner_post(
        &relay,
        &format!("/v1/pairings/{committed}/joiner-key"),
        Some(&joined.joiner_token),
        &key,
    )
    .await;
    assert_error(response, StatusCode::GONE, "session_ended", "has ended").await;
}

#[tokio::test]
async fn session_ended_on_other_node_closes_slots() {
    let relay = start_relay(Limits {
        pairing_lifetime: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let other_node = relay.start_node(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let id = open_slot_any(&relay, &session).await;

    assert_eq!(
        other_node.end_session(&session).await,
        StatusCode::NO_CONTENT
    );
    assert_error(
        commit(&relay, &id, &[1; 32]).await,
        StatusCode::GONE,
        "session_ended",
        "has ended",
    )
    .await;
}

/// Opens a slot of any lifetime and returns its id.
async fn open_slot_any(relay: &TestRelay, session: &CreateSessionResponse) -> String {
    let response = relay
        .staff_post(&session_path(session, ""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<PairingOpened>().await.unwrap().pairing_id
}

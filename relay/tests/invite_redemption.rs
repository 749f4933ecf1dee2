//! Invite redemption for browsers against a real relay over TLS: challenge
//! and proof, the follow cookie and its limits, the Origin check on the follow
//! socket, ended sessions and the rate limit.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{metric_value, start_relay, FollowItem, Publisher, TestRelay};
use reqwest::header::{CACHE_CONTROL, COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;
use sealcast_protocol::api::{
    CreateSessionRequest, CreateSessionResponse, ErrorBody, FollowerEvent, InviteChallengeRequest,
    InviteChallengeResponse, InviteRedeemRequest, InviteRedeemResponse,
};
use sealcast_protocol::SessionKey;
use sealcast_relay::Limits;
use serde::Serialize;
use tokio_tungstenite::tungstenite;

/// A session whose invite a browser can redeem.
struct Invite {
    session: CreateSessionResponse,
    key: SessionKey,
}

async fn create_invite(relay: &TestRelay, max_browsers: Option<u32>) -> Invite {
    let key = SessionKey::generate();
    let request = CreateSessionRequest {
        fingerprint: key.fingerprint().to_base64url(),
        invite_verifier: Some(URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes())),
        max_browsers,
    };
    let response = relay
        .staff_post("/v1/sessions")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    Invite {
        session: response.json().await.unwrap(),
        key,
    }
}

async fn post_json(
    relay: &TestRelay,
    path: &str,
    body: &impl Serialize,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = relay.http.post(relay.url(path)).json(body);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    request.send().await.unwrap()
}

async fn challenge(relay: &TestRelay, token: &str) -> InviteChallengeResponse {
    let request = InviteChallengeRequest {
        token: token.to_owned(),
    };
    let response = post_json(relay, "/v1/invites/challenge", &request, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    response.json().await.unwrap()
}

/// Builds a redemption request over a fresh challenge, with the proof of `key`.
async fn redeem_request(relay: &TestRelay, token: &str, key: &SessionKey) -> InviteRedeemRequest {
    let offered = challenge(relay, token).await;
    let challenge_bytes = URL_SAFE_NO_PAD.decode(&offered.challenge).unwrap();
    let proof = key.derive_invite_auth_key().prove(&challenge_bytes);
    InviteRedeemRequest {
        token: token.to_owned(),
        challenge: offered.challenge,
        proof: URL_SAFE_NO_PAD.encode(proof),
    }
}

/// Redeems an invite with the right key, sending `cookie` if given.
async fn redeem(relay: &TestRelay, invite: &Invite, cookie: Option<&str>) -> reqwest::Response {
    let request = redeem_request(relay, &invite.session.invite_token, &invite.key).await;
    post_json(relay, "/v1/invites/redeem", &request, cookie).await
}

/// Returns `name=value` of the `Set-Cookie` header, for a later `Cookie` header.
fn cookie_pair(response: &reqwest::Response) -> String {
    let header = response.headers()[SET_COOKIE].to_str().unwrap();
    header.split(';').next().unwrap().trim().to_owned()
}

/// Opens the follow socket with a cookie and an optional `Origin`.
async fn follow_with_cookie(
    relay: &TestRelay,
    cookie: &str,
    origin: Option<&str>,
) -> Result<common::Ws, tungstenite::Error> {
    let mut headers = vec![("cookie", cookie)];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    relay
        .connect_with_headers("/v1/follow?from=0", &headers, None)
        .await
}

fn upgrade_status(result: Result<common::Ws, tungstenite::Error>) -> StatusCode {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            StatusCode::from_u16(response.status().as_u16()).unwrap()
        }
        Ok(_) => panic!("upgrade succeeded"),
        Err(other) => panic!("upgrade failed without a status: {other}"),
    }
}

fn own_origin(relay: &TestRelay) -> String {
    format!("https://{}", relay.addr())
}

async fn invite_failures(relay: &TestRelay, reason: &str) -> f64 {
    let series = format!("sealcast_invite_failures_total{{reason=\"{reason}\"}}");
    metric_value(&relay.metrics().await, &series)
}

#[tokio::test]
async fn redeemed_browser_follows_with_cookie() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;

    let offered = challenge(&relay, &invite.session.invite_token).await;
    assert_eq!(offered.session_id, invite.session.session_id);
    assert_eq!(offered.fingerprint, invite.key.fingerprint().to_base64url());
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&offered.challenge).unwrap().len(),
        32
    );

    let response = redeem(&relay, &invite, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} missing: {set_cookie}"
        );
    }
    let cookie = cookie_pair(&response);
    let body: InviteRedeemResponse = response.json().await.unwrap();
    assert_eq!(body.session_id, invite.session.session_id);
    assert_eq!(body.epoch, invite.session.epoch);

    let mut publisher_ws = relay.publish(&invite.session).await;
    let mut publisher = Publisher::new(&invite.key, &invite.session);
    let frame = publisher.next_frame(true, 20);
    publisher_ws.send_binary(frame.clone()).await;

    let mut follower = follow_with_cookie(&relay, &cookie, Some(&own_origin(&relay)))
        .await
        .unwrap();
    match follower.next_follow_item().await {
        FollowItem::Event(FollowerEvent::Welcome { session_id, .. }) => {
            assert_eq!(session_id, invite.session.session_id);
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
    assert_eq!(
        follower.next_follow_item().await,
        FollowItem::Frame(0, frame)
    );
    assert_eq!(
        follower.next_follow_item().await,
        FollowItem::Event(FollowerEvent::Committed { offset: 0 })
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn second_browser_gets_conflict() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;

    let first = redeem(&relay, &invite, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let cookie = cookie_pair(&first);

    let before = invite_failures(&relay, "browsers_exhausted").await;
    let second = redeem(&relay, &invite, None).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let error: ErrorBody = second.json().await.unwrap();
    assert_eq!(error.error, "conflict");
    assert!(invite_failures(&relay, "browsers_exhausted").await > before);

    // The first browser redeems again with its cookie and keeps its place.
    let again = redeem(&relay, &invite, Some(&cookie)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(cookie_pair(&again), cookie);
    let third = redeem(&relay, &invite, None).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn max_browsers_admits_that_many() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, Some(2)).await;

    let first = redeem(&relay, &invite, None).await;
    let second = redeem(&relay, &invite, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    assert_ne!(cookie_pair(&first), cookie_pair(&second));
    let third = redeem(&relay, &invite, None).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);

    // A cookie of another session does not renew this one.
    let other = create_invite(&relay, Some(1)).await;
    let response = redeem(&relay, &other, Some(&cookie_pair(&first))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(cookie_pair(&response), cookie_pair(&first));
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn bad_proof_is_unauthorized() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let before = invite_failures(&relay, "bad_proof").await;

    let wrong_key = SessionKey::generate();
    let request = redeem_request(&relay, &invite.session.invite_token, &wrong_key).await;
    let response = post_json(&relay, "/v1/invites/redeem", &request, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(SET_COOKIE).is_none());
    assert!(invite_failures(&relay, "bad_proof").await > before);

    // The challenge was used up by the failed attempt, even with a good proof.
    let challenge_bytes = URL_SAFE_NO_PAD.decode(&request.challenge).unwrap();
    let good_proof = invite.key.derive_invite_auth_key().prove(&challenge_bytes);
    let replay = InviteRedeemRequest {
        proof: URL_SAFE_NO_PAD.encode(good_proof),
        ..request
    };
    let response = post_json(&relay, "/v1/invites/redeem", &replay, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The right key still redeems the unused invite.
    assert_eq!(redeem(&relay, &invite, None).await.status(), StatusCode::OK);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn challenge_of_another_invite_is_refused() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let other = create_invite(&relay, None).await;

    let mut request = redeem_request(&relay, &other.session.invite_token, &other.key).await;
    let challenge_bytes = URL_SAFE_NO_PAD.decode(&request.challenge).unwrap();
    request.token = invite.session.invite_token.clone();
    request.proof =
        URL_SAFE_NO_PAD.encode(invite.key.derive_invite_auth_key().prove(&challenge_bytes));
    let response = post_json(&relay, "/v1/invites/redeem", &request, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn challenge_redeems_on_another_node() {
    let issuing = start_relay(Limits::default()).await;
    let redeeming = issuing.start_node(Limits::default()).await;
    let invite = create_invite(&issuing, None).await;
    let before = invite_failures(&issuing, "challenge_unknown").await;

    let request = redeem_request(&issuing, &invite.session.invite_token, &invite.key).await;
    let response = post_json(&redeeming, "/v1/invites/redeem", &request, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(SET_COOKIE).is_some());
    let redeemed: InviteRedeemResponse = response.json().await.unwrap();
    assert_eq!(redeemed.session_id, invite.session.session_id);

    // The redemption used the challenge up for both nodes.
    let reused = post_json(&redeeming, "/v1/invites/redeem", &request, None).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    let reused = post_json(&issuing, "/v1/invites/redeem", &request, None).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    // Both relays of this process, and the tests running beside this one,
    // share one metrics recorder.
    let after = invite_failures(&issuing, "challenge_unknown").await;
    assert!(after >= before + 2.0, "{after} rejections, {before} before");

    redeeming.handle.shutdown().await;
    issuing.handle.shutdown().await;
}

#[tokio::test]
async fn follow_cookie_needs_own_origin() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let cookie = cookie_pair(&redeem(&relay, &invite, None).await);

    let foreign = follow_with_cookie(&relay, &cookie, Some("https://evil.example")).await;
    assert_eq!(upgrade_status(foreign), StatusCode::FORBIDDEN);
    let missing = follow_with_cookie(&relay, &cookie, None).await;
    assert_eq!(upgrade_status(missing), StatusCode::FORBIDDEN);
    let other_port = format!("https://127.0.0.1:{}", relay.addr().port() + 1);
    let wrong_port = follow_with_cookie(&relay, &cookie, Some(&other_port)).await;
    assert_eq!(upgrade_status(wrong_port), StatusCode::FORBIDDEN);

    // The public URL's origin counts as the relay's own, like the Host it was reached at.
    let public = relay.handle.public_url().to_owned();
    assert!(follow_with_cookie(&relay, &cookie, Some(&public))
        .await
        .is_ok());
    assert!(
        follow_with_cookie(&relay, &cookie, Some(&own_origin(&relay)))
            .await
            .is_ok()
    );

    let forged = follow_with_cookie(
        &relay,
        "sealcast_follow=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        Some(&own_origin(&relay)),
    )
    .await;
    assert_eq!(upgrade_status(forged), StatusCode::UNAUTHORIZED);
    let none = relay.connect_with_headers("/v1/follow", &[], None).await;
    assert_eq!(upgrade_status(none), StatusCode::UNAUTHORIZED);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn ended_session_refuses_invites() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let cookie = cookie_pair(&redeem(&relay, &invite, None).await);
    let pending = redeem_request(&relay, &invite.session.invite_token, &invite.key).await;

    assert_eq!(
        relay.end_session(&invite.session).await,
        StatusCode::NO_CONTENT
    );

    let request = InviteChallengeRequest {
        token: invite.session.invite_token.clone(),
    };
    let response = post_json(&relay, "/v1/invites/challenge", &request, None).await;
    assert_eq!(response.status(), StatusCode::GONE);
    let response = post_json(&relay, "/v1/invites/redeem", &pending, Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::GONE);

    // Ending deleted the browser's credential; the invite token itself gets 410.
    let with_cookie = follow_with_cookie(&relay, &cookie, Some(&own_origin(&relay))).await;
    assert_eq!(upgrade_status(with_cookie), StatusCode::UNAUTHORIZED);
    let with_token = relay
        .connect("/v1/follow", &invite.session.invite_token, None)
        .await;
    assert_eq!(upgrade_status(with_token), StatusCode::GONE);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn invite_routes_check_requests() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let body = format!(r#"{{"token":"{}"}}"#, invite.session.invite_token);

    let plain = relay
        .http
        .post(relay.url("/v1/invites/challenge"))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let broken = relay
        .http
        .post(relay.url("/v1/invites/challenge"))
        .header("content-type", "application/json")
        .body("{\"token\":")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);

    let unknown = InviteChallengeRequest {
        token: URL_SAFE_NO_PAD.encode([0u8; 32]),
    };
    let response = post_json(&relay, "/v1/invites/challenge", &unknown, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A session made without an invite verifier cannot be redeemed in a browser.
    let (session, _key) = relay.create_session().await;
    let request = InviteChallengeRequest {
        token: session.invite_token,
    };
    let response = post_json(&relay, "/v1/invites/challenge", &request, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn invite_routes_are_rate_limited() {
    let relay = start_relay(Limits::default()).await;
    let invite = create_invite(&relay, None).await;
    let before = invite_failures(&relay, "rate_limited").await;
    let request = InviteChallengeRequest {
        token: invite.session.invite_token.clone(),
    };

    let mut limited = None;
    for _ in 0..60 {
        let response = post_json(&relay, "/v1/invites/challenge", &request, None).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = limited.expect("60 requests in a row were never limited");
    let retry_after: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let error: ErrorBody = limited.json().await.unwrap();
    assert_eq!(error.error, "too_many_requests");
    assert!(invite_failures(&relay, "rate_limited").await > before);
    relay.handle.shutdown().await;
}

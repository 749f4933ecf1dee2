//! The patient page served by a real relay over TLS: routes, content types,
//! security headers, and that opening an invite link changes nothing.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{start_relay, TestRelay};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use sealcast_protocol::api::{
    CreateSessionRequest, CreateSessionResponse, InviteChallengeRequest, InviteChallengeResponse,
    InviteRedeemRequest,
};
use sealcast_protocol::SessionKey;
use sealcast_relay::Limits;

const PAGE_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
];

async fn get(relay: &TestRelay, path: &str) -> reqwest::Response {
    relay.http.get(relay.url(path)).send().await.unwrap()
}

fn assert_page_headers(response: &reqwest::Response, path: &str) {
    for (name, value) in PAGE_HEADERS {
        assert_eq!(
            response.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {path}"
        );
    }
}

#[tokio::test]
async fn page_and_files_have_security_headers() {
    let relay = start_relay(Limits::default()).await;
    let cases = [
        ("/join", "text/html; charset=utf-8"),
        ("/join/", "text/html; charset=utf-8"),
        ("/join/app.js", "text/javascript; charset=utf-8"),
        ("/join/protocol.js", "text/javascript; charset=utf-8"),
        ("/join/join.css", "text/css; charset=utf-8"),
        ("/join/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in cases {
        let response = get(&relay, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[CONTENT_TYPE], content_type, "{path}");
        assert_page_headers(&response, path);
    }

    let page = get(&relay, "/join").await.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/join/app.js">"#));
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn tests_and_unknown_files_are_not_served() {
    let relay = start_relay(Limits::default()).await;
    for path in [
        "/join/README.md",
        "/join/test/vectors.test.mjs",
        "/join/test-support/seal.mjs",
        "/join/missing.js",
    ] {
        let response = get(&relay, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let response = get(&relay, "/join/missing.js").await;
    assert_page_headers(&response, "/join/missing.js");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn opening_invite_link_redeems_nothing() {
    let relay = start_relay(Limits::default()).await;
    let key = SessionKey::generate();
    let request = CreateSessionRequest {
        fingerprint: key.fingerprint().to_base64url(),
        invite_verifier: Some(URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes())),
        max_browsers: Some(1),
    };
    let session: CreateSessionResponse = relay
        .staff_post("/v1/sessions")
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // What a mail scanner does: fetch the link, also with the fragment escaped into the query.
    let token = &session.invite_token;
    let secret = key.to_base64url();
    for path in [
        format!("/join?token={token}"),
        format!("/join?token={token}%23secret={secret}"),
    ] {
        let response = get(&relay, &path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("set-cookie").is_none());
    }

    // The only browser place is still free.
    let offered: InviteChallengeResponse = relay
        .http
        .post(relay.url("/v1/invites/challenge"))
        .json(&InviteChallengeRequest {
            token: token.clone(),
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let challenge = URL_SAFE_NO_PAD.decode(&offered.challenge).unwrap();
    let redeem = InviteRedeemRequest {
        token: token.clone(),
        challenge: offered.challenge,
        proof: URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().prove(&challenge)),
    };
    let response = relay
        .http
        .post(relay.url("/v1/invites/redeem"))
        .json(&redeem)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    relay.handle.shutdown().await;
}

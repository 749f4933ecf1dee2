//! Refresh token rotation and reuse detection, and signing key rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{metric_value, staff_from, start_relay, start_relay_with, unix_now, Staff, TestRelay};
use reqwest::StatusCode;
use sealcast_protocol::auth::{RefreshRequest, TokenResponse, DPOP_HEADER};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_relay::{AccountsConfig, Limits};

/// Sends a device refresh with a proof by `key`.
async fn refresh(relay: &TestRelay, key: &DeviceKey, refresh_token: &str) -> reqwest::Response {
    let path = "/v1/auth/refresh";
    let proof = key
        .proof(
            "POST",
            &format!("{}{path}", relay.handle.public_url()),
            None,
            unix_now(),
        )
        .unwrap();
    relay
        .http
        .post(relay.url(path))
        .header(DPOP_HEADER, proof)
        .json(&RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        })
        .send()
        .await
        .unwrap()
}

async fn me_status(relay: &TestRelay, staff: &Staff) -> StatusCode {
    staff
        .authorize(relay.http.get(relay.url("/v1/me")), "GET", "/v1/me")
        .send()
        .await
        .unwrap()
        .status()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_sign_in() {
    let relay = start_relay(Limits::default()).await;
    let first = relay.staff.tokens.clone();

    let rotated = refresh(&relay, &relay.staff.key, &first.refresh_token).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let second: TokenResponse = rotated.json().await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.device_id, first.device_id);
    let renewed = staff_from(&relay.handle, relay.staff.key.clone(), second.clone());
    assert_eq!(me_status(&relay, &renewed).await, StatusCode::OK);

    // A proof by another key is refused without using up the token.
    let stranger = DeviceKey::generate().unwrap();
    let wrong_key = refresh(&relay, &stranger, &second.refresh_token).await;
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    let no_proof = relay
        .http
        .post(relay.url("/v1/auth/refresh"))
        .json(&RefreshRequest {
            refresh_token: second.refresh_token.clone(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(no_proof.status(), StatusCode::UNAUTHORIZED);

    // Presenting the rotated token again ends the whole sign-in.
    let reused = refresh(&relay, &relay.staff.key, &first.refresh_token).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    let after_reuse = refresh(&relay, &relay.staff.key, &second.refresh_token).await;
    assert_eq!(after_reuse.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&relay, &renewed).await, StatusCode::UNAUTHORIZED);

    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(&metrics, "sealcast_refresh_token_reuse_total"),
        1.0
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_refresh_token_is_unauthorized() {
    let relay = start_relay(Limits::default()).await;
    let response = refresh(&relay, &relay.staff.key, "not-a-refresh-token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_valid() {
    let accounts = AccountsConfig {
        signing_key_max_age: Duration::from_secs(1),
        ..AccountsConfig::default()
    };
    let relay = start_relay_with(Limits::default(), accounts).await;
    let old = relay.staff.tokens.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let rotated = refresh(&relay, &relay.staff.key, &old.refresh_token).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new: TokenResponse = rotated.json().await.unwrap();
    assert_ne!(kid_of(&new.access_token), kid_of(&old.access_token));

    // The token signed by the retired key works until it expires.
    assert_eq!(me_status(&relay, &relay.staff).await, StatusCode::OK);
    let renewed = staff_from(&relay.handle, relay.staff.key.clone(), new);
    assert_eq!(me_status(&relay, &renewed).await, StatusCode::OK);
    relay.handle.shutdown().await;
}

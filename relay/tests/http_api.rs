//! The HTTP endpoints against a real relay over TLS: statuses, JSON error
//! bodies, and what the store keeps.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start_relay, TestRelay};
use reqwest::StatusCode;
use rusqlite::Connection;
use sealcast_protocol::api::{CreateSessionRequest, ErrorBody};
use sealcast_protocol::{SessionId, SessionKey};
use sealcast_relay::Limits;
use sha2::{Digest, Sha256};

async fn error_body(response: reqwest::Response) -> ErrorBody {
    response.json().await.unwrap()
}

fn create_request() -> CreateSessionRequest {
    CreateSessionRequest {
        fingerprint: SessionKey::generate().fingerprint().to_base64url(),
        invite_verifier: None,
        max_browsers: None,
    }
}

/// Posts a session request, as the signed-in clinician when `signed_in`.
async fn post_create(relay: &TestRelay, signed_in: bool, body: String) -> reqwest::Response {
    let request = if signed_in {
        relay.staff_post("/v1/sessions")
    } else {
        relay.http.post(relay.url("/v1/sessions"))
    };
    request
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Sums every series of `name` whose labels start with `labels`.
fn metric_sum(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name_and_labels))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn api_responses_are_not_cached() {
    let relay = start_relay(Limits::default()).await;
    let body = serde_json::to_string(&create_request()).unwrap();
    let created = post_create(&relay, true, body.clone()).await;
    let refused = post_create(&relay, false, body).await;
    let missing = relay
        .http
        .post(relay.url("/v1/invites/challenge"))
        .header("content-type", "application/json")
        .body(r#"{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#)
        .send()
        .await
        .unwrap();

    for (name, response) in [
        ("created", created),
        ("refused", refused),
        ("missing", missing),
    ] {
        let cache = response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            cache.as_deref(),
            Some("no-store"),
            "{name} response ({})",
            response.status()
        );
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn create_session_requires_clinician() {
    let relay = start_relay(Limits::default()).await;
    let body = serde_json::to_string(&create_request()).unwrap();
    let series = "sealcast_auth_failures_total{endpoint=\"create_session\"";
    let before = metric_sum(&relay.metrics().await, series);

    let missing = post_create(&relay, false, body.clone()).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_body(missing).await.error, "unauthorized");

    let bearer = relay
        .http
        .post(relay.url("/v1/sessions"))
        .bearer_auth(&relay.staff.tokens.access_token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED);

    let right = post_create(&relay, true, body).await;
    assert_eq!(right.status(), StatusCode::CREATED);

    let after = metric_sum(&relay.metrics().await, series);
    assert!(
        after >= before + 2.0,
        "auth failures not counted: {before} -> {after}"
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn create_session_rejects_bad_bodies() {
    let relay = start_relay(Limits::default()).await;
    let key = true;

    let not_json = post_create(&relay, key, "{".into()).await;
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_body(not_json).await.error, "bad_request");

    let bad_fingerprint = post_create(&relay, key, r#"{"fingerprint":"short"}"#.into()).await;
    assert_eq!(bad_fingerprint.status(), StatusCode::BAD_REQUEST);
    assert!(error_body(bad_fingerprint)
        .await
        .message
        .contains("fingerprint"));

    let mut request = create_request();
    request.invite_verifier = Some("AAAA".into());
    let bad_verifier = post_create(&relay, key, serde_json::to_string(&request).unwrap()).await;
    assert_eq!(bad_verifier.status(), StatusCode::BAD_REQUEST);

    let huge = format!(r#"{{"fingerprint":"{}"}}"#, "A".repeat(64 * 1024));
    let too_large = post_create(&relay, key, huge).await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_body(too_large).await.error, "payload_too_large");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn created_session_has_fresh_credentials() {
    let relay = start_relay(Limits::default()).await;
    let (first, _) = relay.create_session().await;
    let (second, _) = relay.create_session().await;

    assert_ne!(first.session_id, second.session_id);
    assert_ne!(first.invite_token, second.invite_token);
    for token in [&first.invite_token, &second.invite_token] {
        assert_eq!(token.len(), 43, "32 bytes of unpadded base64url");
        assert!(token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn end_session_statuses() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let end_url = |id: &str| relay.url(&format!("/v1/sessions/{id}/end"));
    let end_path = |id: &str| format!("/v1/sessions/{id}/end");

    let unknown = relay
        .staff_post(&end_path(&SessionId::random().to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_body(unknown).await.error, "not_found");

    let malformed = relay.staff_post(&end_path("not-hex")).send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let wrong_token = relay
        .http
        .post(end_url(&session.session_id.to_string()))
        .bearer_auth(&session.invite_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_token.status(), StatusCode::UNAUTHORIZED);

    let no_token = relay
        .http
        .post(end_url(&session.session_id.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    assert_eq!(relay.end_session(&session).await, StatusCode::GONE);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn websocket_endpoints_check_credentials_before_upgrade() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let publish_path = format!("/v1/sessions/{}/publish", session.session_id);

    let wrong_publisher = relay
        .connect(&publish_path, &session.invite_token, None)
        .await;
    assert_http_status(wrong_publisher, 401);
    let wrong_invite = relay
        .connect("/v1/follow", &relay.staff.tokens.access_token, None)
        .await;
    assert_http_status(wrong_invite, 401);
    let unknown = relay
        .connect_staff(
            &format!("/v1/sessions/{}/publish", SessionId::random()),
            &relay.staff,
        )
        .await;
    assert_http_status(unknown, 404);
    let bad_query = relay
        .connect("/v1/follow?from=minus-one", &session.invite_token, None)
        .await;
    assert_http_status(bad_query, 400);

    // A plain GET with a valid credential is not an upgrade.
    let plain = relay
        .http
        .get(relay.url("/v1/follow"))
        .bearer_auth(&session.invite_token)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);

    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    let ended = relay.connect_staff(&publish_path, &relay.staff).await;
    assert_http_status(ended, 410);
    let ended = relay
        .connect("/v1/follow", &session.invite_token, None)
        .await;
    assert_http_status(ended, 410);
    relay.handle.shutdown().await;
}

fn assert_http_status<T: std::fmt::Debug>(
    result: Result<T, tokio_tungstenite::tungstenite::Error>,
    status: u16,
) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), status);
            let body: ErrorBody =
                serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert!(!body.message.is_empty());
        }
        other => panic!("expected HTTP {status} before the upgrade, got {other:?}"),
    }
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let relay = start_relay(Limits::default()).await;
    let health = relay.http.get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let unknown = relay
        .http
        .get(relay.url("/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_body(unknown).await.error, "not_found");

    let wrong_method = relay
        .http
        .get(relay.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);

    let metrics = relay.metrics().await;
    assert!(metrics.contains("sealcast_http_requests_total{route=\"/healthz\",status=\"200\"}"));
    assert!(metrics.contains("sealcast_http_requests_total{route=\"unmatched\",status=\"404\"}"));
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn store_keeps_only_token_hashes() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let refresh_token = relay.staff.tokens.refresh_token.clone();
    let access_token = relay.staff.tokens.access_token.clone();
    let data_dir = relay.data_dir().to_path_buf();
    relay.handle.shutdown().await;

    let conn = Connection::open(data_dir.join("relay.db")).unwrap();
    let invite_hash: Vec<u8> = conn
        .query_row(
            "SELECT invite_token_hash FROM sessions WHERE session_id = ?1",
            [session.session_id.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        invite_hash,
        Sha256::digest(session.invite_token.as_bytes()).to_vec()
    );
    let refresh_hashes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = ?1",
            [Sha256::digest(refresh_token.as_bytes()).to_vec()],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(refresh_hashes, 1);
    let publisher_column = conn.prepare("SELECT publisher_token_hash FROM sessions");
    assert!(publisher_column.is_err(), "publisher token hashes are gone");
    drop(publisher_column);
    drop(conn);

    // No file in the data directory contains any credential's text.
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        for secret in [&session.invite_token, &refresh_token, &access_token] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "a credential was stored in clear"
            );
        }
    }
}

#[tokio::test]
async fn restart_keeps_accounts() {
    let relay = start_relay(Limits::default()).await;
    let relay = relay.restart(Limits::default()).await;
    let body = serde_json::to_string(&create_request()).unwrap();
    let response = post_create(&relay, true, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    relay.handle.shutdown().await;
}

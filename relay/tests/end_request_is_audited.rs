//! The end request's body against a real relay. A malformed body gets 400
//! and leaves the session open. A device's report that it destroyed the key
//! is recorded in the audit log after the end, also on a second end.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{metric_value, start_relay, TestRelay};
use reqwest::StatusCode;
use rusqlite::Connection;
use sealcast_protocol::api::{CreateSessionResponse, ErrorBody};
use sealcast_relay::Limits;

/// Returns the application stream's actions for `session` in order.
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

async fn post_end(
    relay: &TestRelay,
    session: &CreateSessionResponse,
    body: &str,
) -> reqwest::Response {
    relay
        .staff_post(&format!("/v1/sessions/{}/end", session.session_id))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_end_body_is_rejected() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;

    for body in ["not json", r#"{"key_destroyed": "yes"}"#, "[]"] {
        let response = post_end(&relay, &session, body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: ErrorBody = response.json().await.unwrap();
        assert!(error.message.contains("end request"), "{}", error.message);
    }
    let metrics = relay.metrics().await;
    let rejected = metric_value(
        &metrics,
        r#"sealcast_http_requests_total{route="/v1/sessions/{id}/end",status="400"}"#,
    );
    assert_eq!(rejected, 3.0, "{metrics}");

    // Nothing was ended or recorded as ended: the session still ends.
    let actions = session_actions(&relay, &session);
    assert!(
        !actions.contains(&"session.ended".to_owned()),
        "{actions:?}"
    );
    assert_eq!(relay.end_session(&session).await, StatusCode::NO_CONTENT);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn key_destroyed_is_recorded_after_end() {
    let relay = start_relay(Limits::default()).await;
    let (plain, _) = relay.create_session().await;
    let (shredded, _) = relay.create_session().await;

    assert_eq!(
        post_end(&relay, &plain, "").await.status(),
        StatusCode::NO_CONTENT
    );
    let body = r#"{"key_destroyed": true}"#;
    assert_eq!(
        post_end(&relay, &shredded, body).await.status(),
        StatusCode::NO_CONTENT
    );
    // A device that retries after a lost response reports the key again.
    assert_eq!(
        post_end(&relay, &shredded, body).await.status(),
        StatusCode::GONE
    );

    assert_eq!(
        session_actions(&relay, &plain),
        ["session.started", "invite.created", "session.ended"]
    );
    assert_eq!(
        session_actions(&relay, &shredded),
        [
            "session.started",
            "invite.created",
            "session.ended",
            "session.key_destroyed",
            "session.key_destroyed"
        ]
    );
    relay.handle.shutdown().await;
}

//! Revoking a device or disabling a user closes its open publish and follow
//! sockets with close code 4009: at once through the HTTP admin routes, and
//! within the recheck interval when the admin command changes the database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{enrol_totp, metric_value, start_relay, Staff, TestRelay, Ws};
use reqwest::StatusCode;
use sealcast_protocol::api::{close, CreateSessionResponse};
use sealcast_protocol::auth::Role;
use sealcast_relay::accounts::admin::AdminStore;
use sealcast_relay::accounts::live::RECHECK_INTERVAL;
use sealcast_relay::Limits;

/// Opens the clinician's publish socket and a staff follow socket.
async fn open_sockets(relay: &TestRelay, session: &CreateSessionResponse) -> (Ws, Ws) {
    let publisher = relay.publish(session).await;
    let follow_path = format!("/v1/sessions/{}/follow", session.session_id);
    let follower = relay
        .connect_staff(&follow_path, &relay.staff)
        .await
        .unwrap();
    (publisher, follower)
}

/// Waits for both sockets to close and checks the code and the time taken.
async fn expect_revoked(sockets: (Ws, Ws), started: Instant, within: Duration) {
    let (mut publisher, mut follower) = sockets;
    for (name, ws) in [("publish", &mut publisher), ("follow", &mut follower)] {
        let (code, reason) = ws.expect_close().await;
        assert_eq!(
            code,
            close::REVOKED,
            "{name} socket closed with {code} {reason}"
        );
        assert!(!reason.is_empty(), "{name} close has no reason");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed <= within,
        "sockets closed after {elapsed:?}, limit {within:?}"
    );
}

async fn admin(relay: &TestRelay) -> Staff {
    let device = relay
        .sign_in_new_user("admin@clinic.example", Role::Admin)
        .await;
    enrol_totp(relay, &device).await.staff
}

#[tokio::test]
async fn admin_route_revocation_closes_sockets_at_once() {
    let relay = start_relay(Limits::default()).await;
    let admin = admin(&relay).await;
    let (session, _) = relay.create_session().await;
    let sockets = open_sockets(&relay, &session).await;

    let path = format!("/v1/admin/devices/{}/revoke", relay.staff.tokens.device_id);
    let started = Instant::now();
    let response = admin
        .authorize(relay.http.post(relay.url(&path)), "POST", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_revoked(sockets, started, Duration::from_secs(1)).await;

    // The revoked device cannot reconnect.
    let again = relay
        .connect_staff(
            &format!("/v1/sessions/{}/publish", session.session_id),
            &relay.staff,
        )
        .await;
    assert!(again.is_err(), "a revoked device reconnected");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn admin_route_disabling_closes_the_users_sockets() {
    let relay = start_relay(Limits::default()).await;
    let admin = admin(&relay).await;
    let (session, _) = relay.create_session().await;
    let sockets = open_sockets(&relay, &session).await;

    let path = format!(
        "/v1/admin/users/{}/disable",
        relay.staff.tokens.user.user_id
    );
    let started = Instant::now();
    let response = admin
        .authorize(relay.http.post(relay.url(&path)), "POST", &path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_revoked(sockets, started, Duration::from_secs(1)).await;
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn admin_command_revocation_closes_sockets_within_recheck_interval() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let sockets = open_sockets(&relay, &session).await;

    // The admin command's store, on its own connection, as another process has.
    let store = AdminStore::open(relay.data_dir()).unwrap();
    let started = Instant::now();
    store.revoke_device(&relay.staff.tokens.device_id).unwrap();
    expect_revoked(sockets, started, RECHECK_INTERVAL + Duration::from_secs(2)).await;

    // Metrics are shared by the tests of this file, so at least these two count.
    let metrics = relay.metrics().await;
    let closed = metric_value(
        &metrics,
        "sealcast_sockets_revoked_total{trigger=\"recheck\"}",
    );
    assert!(closed >= 2.0, "recheck closures not counted: {closed}");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn admin_command_binary_revokes_a_device() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let sockets = open_sockets(&relay, &session).await;

    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["admin", "--data-dir"])
        .arg(relay.data_dir())
        .args(["revoke-device", &relay.staff.tokens.device_id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        relay.staff.tokens.device_id
    );
    expect_revoked(sockets, started, RECHECK_INTERVAL + Duration::from_secs(3)).await;
    relay.handle.shutdown().await;
}

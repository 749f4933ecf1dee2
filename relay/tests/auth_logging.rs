//! The relay's debug log never contains a token, a cookie value, a magic
//! link or a TOTP secret, across sign-in, enrolment, refresh and failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{enrol_totp, outbox_files, start_relay, wait_for_magic_token, CLINICIAN_EMAIL};
use reqwest::StatusCode;
use sealcast_protocol::auth::{LoginRequest, RefreshRequest, Role, DPOP_HEADER};
use sealcast_relay::Limits;

/// A log sink shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn log_holds_no_credential() {
    let captured = Captured::default();
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .init();

    let relay = start_relay(Limits::default()).await;
    let mut secrets = vec![
        relay.staff.tokens.access_token.clone(),
        relay.staff.tokens.refresh_token.clone(),
    ];

    // An administrator enrols TOTP: the secret and recovery codes are shown once.
    let admin = relay
        .sign_in_new_user("admin@clinic.example", Role::Admin)
        .await;
    let enrolled = enrol_totp(&relay, &admin).await;
    secrets.push(enrolled.secret_base32.clone());
    secrets.extend(enrolled.recovery_codes.clone());
    secrets.push(admin.tokens.access_token.clone());
    secrets.push(enrolled.staff.tokens.access_token.clone());

    // A browser sign-in: the magic link and the cookies.
    let before = outbox_files(relay.data_dir());
    let started = relay
        .http
        .post(relay.url("/v1/auth/login"))
        .json(&LoginRequest {
            email: CLINICIAN_EMAIL.into(),
            device_name: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let login: serde_json::Value = started.json().await.unwrap();
    secrets.push(login["login_id"].as_str().unwrap().to_owned());
    let magic_token = wait_for_magic_token(relay.data_dir(), CLINICIAN_EMAIL, &before).await;
    secrets.push(magic_token.clone());
    let confirmed = relay
        .http
        .post(relay.url("/v1/auth/login/confirm"))
        .json(&serde_json::json!({ "token": magic_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    for value in confirmed.headers().get_all("set-cookie") {
        let cookie = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
        secrets.push(cookie.value().to_owned());
    }

    // A device refresh and a rejected reuse of the old refresh token.
    let path = "/v1/auth/refresh";
    for _ in 0..2 {
        let proof = relay
            .staff
            .key
            .proof(
                "POST",
                &format!("{}{path}", relay.handle.public_url()),
                None,
                common::unix_now(),
            )
            .unwrap();
        let response = relay
            .http
            .post(relay.url(path))
            .header(DPOP_HEADER, proof)
            .json(&RefreshRequest {
                refresh_token: relay.staff.tokens.refresh_token.clone(),
            })
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let tokens: serde_json::Value = response.json().await.unwrap();
            secrets.push(tokens["access_token"].as_str().unwrap().to_owned());
            secrets.push(tokens["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    // A forged credential.
    let forged = relay
        .http
        .get(relay.url("/v1/me"))
        .header("authorization", "DPoP forged-token-value")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    relay.handle.shutdown().await;

    let log = captured.text();
    assert!(log.contains("device signed in"), "the log was not captured");
    assert!(log.contains("browser signed in"));
    assert!(log.contains("refresh token was presented again"));
    assert!(log.contains("credential rejected"));
    for secret in secrets.iter().filter(|secret| secret.len() >= 8) {
        assert!(
            !log.contains(secret.as_str()),
            "a credential reached the log"
        );
    }
    assert!(!log.contains("forged-token-value"));
    assert!(!log.contains("#token="), "a magic link reached the log");
}

//! Magic-link sign-in with TOTP and recovery codes, browser sign-in with
//! cookies and CSRF, and the rate limit of the sign-in routes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{
    claims_of, confirm_login, enrol_totp, outbox_files, poll_login, start_device_login,
    start_relay, totp_code, unix_now, wait_for_magic_token, TestRelay, CLINICIAN_EMAIL,
};
use reqwest::StatusCode;
use sealcast_protocol::api::CreateSessionRequest;
use sealcast_protocol::auth::{
    LoginPollResponse, LoginRequest, LoginTotpRequest, Role, ACCESS_COOKIE, CSRF_COOKIE,
    CSRF_HEADER, REFRESH_COOKIE,
};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::SessionKey;
use sealcast_relay::Limits;

const ADMIN_EMAIL: &str = "admin@clinic.example";

async fn send_code(relay: &TestRelay, login_id: &str, code: &str) -> StatusCode {
    relay
        .http
        .post(relay.url("/v1/auth/login/totp"))
        .json(&LoginTotpRequest {
            login_id: login_id.to_owned(),
            code: code.to_owned(),
        })
        .send()
        .await
        .unwrap()
        .status()
}

/// Starts and confirms a new device sign-in of the administrator. Returns
/// the key and login id.
async fn confirmed_admin_login(relay: &TestRelay) -> (Arc<DeviceKey>, String) {
    let key = Arc::new(DeviceKey::generate().unwrap());
    let (started, token) = start_device_login(
        &relay.http,
        &relay.handle,
        relay.data_dir(),
        ADMIN_EMAIL,
        &key,
    )
    .await;
    let confirmed = confirm_login(&relay.http, &relay.handle, &token).await;
    assert!(confirmed.totp_required);
    let (status, body) = poll_login(&relay.http, &relay.handle, &key, &started.login_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Some(LoginPollResponse::TotpRequired));
    (key, started.login_id)
}

/// Returns a six-digit code that none of the accepted steps around now has.
fn wrong_code(secret: &str) -> String {
    let now = unix_now();
    let valid: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|time| totp_code(secret, *time))
        .collect();
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|code| !valid.contains(code))
        .unwrap()
}

#[tokio::test]
async fn totp_sign_in_rejects_replayed_code() {
    let relay = start_relay(Limits::default()).await;
    let first_device = relay.sign_in_new_user(ADMIN_EMAIL, Role::Admin).await;
    let enrolled = enrol_totp(&relay, &first_device).await;
    assert_eq!(enrolled.recovery_codes.len(), 10);
    assert!(claims_of(&enrolled.staff.tokens.access_token).mfa);

    let (key, login_id) = confirmed_admin_login(&relay).await;
    // The next step's code: activation used the current step.
    let code = totp_code(&enrolled.secret_base32, unix_now() + 30);
    assert_eq!(
        send_code(&relay, &login_id, &code).await,
        StatusCode::NO_CONTENT
    );

    let (status, body) = poll_login(&relay.http, &relay.handle, &key, &login_id).await;
    assert_eq!(status, StatusCode::OK);
    let Some(LoginPollResponse::Approved(tokens)) = body else {
        panic!("sign-in was not approved: {body:?}");
    };
    assert!(claims_of(&tokens.access_token).mfa);
    let (again, _) = poll_login(&relay.http, &relay.handle, &key, &login_id).await;
    assert_eq!(again, StatusCode::GONE, "a second poll after approval");

    // The same code in another sign-in is a replay.
    let (_, other_login) = confirmed_admin_login(&relay).await;
    assert_eq!(
        send_code(&relay, &other_login, &code).await,
        StatusCode::UNAUTHORIZED
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn sixth_code_attempt_is_rejected() {
    let relay = start_relay(Limits::default()).await;
    let first_device = relay.sign_in_new_user(ADMIN_EMAIL, Role::Admin).await;
    let enrolled = enrol_totp(&relay, &first_device).await;

    let (_, login_id) = confirmed_admin_login(&relay).await;
    let wrong = wrong_code(&enrolled.secret_base32);
    for attempt in 1..=5 {
        assert_eq!(
            send_code(&relay, &login_id, &wrong).await,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    // Even the right code no longer helps.
    let right = totp_code(&enrolled.secret_base32, unix_now() + 30);
    assert_eq!(send_code(&relay, &login_id, &right).await, StatusCode::GONE);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn right_code_on_fifth_attempt_completes() {
    let relay = start_relay(Limits::default()).await;
    let first_device = relay.sign_in_new_user(ADMIN_EMAIL, Role::Admin).await;
    let enrolled = enrol_totp(&relay, &first_device).await;

    let (key, login_id) = confirmed_admin_login(&relay).await;
    let wrong = wrong_code(&enrolled.secret_base32);
    for attempt in 1..=4 {
        assert_eq!(
            send_code(&relay, &login_id, &wrong).await,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let right = totp_code(&enrolled.secret_base32, unix_now() + 30);
    assert_eq!(
        send_code(&relay, &login_id, &right).await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = poll_login(&relay.http, &relay.handle, &key, &login_id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        matches!(body, Some(LoginPollResponse::Approved(_))),
        "{body:?}"
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn recovery_code_works_once() {
    let relay = start_relay(Limits::default()).await;
    let first_device = relay.sign_in_new_user(ADMIN_EMAIL, Role::Admin).await;
    let enrolled = enrol_totp(&relay, &first_device).await;
    let recovery = enrolled.recovery_codes[0].to_uppercase();

    let (key, login_id) = confirmed_admin_login(&relay).await;
    assert_eq!(
        send_code(&relay, &login_id, &recovery).await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = poll_login(&relay.http, &relay.handle, &key, &login_id).await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(body, Some(LoginPollResponse::Approved(_))));

    let (_, second_login) = confirmed_admin_login(&relay).await;
    assert_eq!(
        send_code(&relay, &second_login, &recovery).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send_code(&relay, &second_login, &enrolled.recovery_codes[1]).await,
        StatusCode::NO_CONTENT
    );
    relay.handle.shutdown().await;
}

/// Cookies a browser keeps, by name.
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn store(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let cookie = cookie::Cookie::parse(value.to_str().unwrap().to_owned()).unwrap();
            assert_eq!(cookie.secure(), Some(true));
            assert_eq!(cookie.same_site(), Some(cookie::SameSite::Strict));
            assert_eq!(cookie.path(), Some("/"));
            let http_only = cookie.http_only() == Some(true);
            assert_eq!(http_only, cookie.name() != CSRF_COOKIE, "{}", cookie.name());
            if cookie.value().is_empty() {
                self.0.remove(cookie.name());
            } else {
                self.0
                    .insert(cookie.name().to_owned(), cookie.value().to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[tokio::test]
async fn browser_sign_in_uses_cookies_and_csrf() {
    let relay = start_relay(Limits::default()).await;
    let before = outbox_files(relay.data_dir());
    let started = relay
        .http
        .post(relay.url("/v1/auth/login"))
        .json(&LoginRequest {
            email: CLINICIAN_EMAIL.to_uppercase(),
            device_name: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let token = wait_for_magic_token(relay.data_dir(), CLINICIAN_EMAIL, &before).await;

    let confirmed = relay
        .http
        .post(relay.url("/v1/auth/login/confirm"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    let mut jar = Jar::default();
    jar.store(&confirmed);
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        assert!(jar.0.contains_key(name), "{name} was not set");
    }
    // The link works once.
    let reused = relay
        .http
        .post(relay.url("/v1/auth/login/confirm"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::GONE);

    let origin = relay.handle.public_url().to_owned();
    let me = relay
        .http
        .get(relay.url("/v1/me"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    let body = CreateSessionRequest {
        fingerprint: SessionKey::generate().fingerprint().to_base64url(),
        invite_verifier: None,
        max_browsers: None,
    };
    let create = |origin: &str, csrf: Option<String>| {
        let mut request = relay
            .http
            .post(relay.url("/v1/sessions"))
            .header("cookie", jar.header())
            .header("origin", origin)
            .json(&body);
        if let Some(csrf) = csrf {
            request = request.header(CSRF_HEADER, csrf);
        }
        request.send()
    };
    let csrf = jar.0[CSRF_COOKIE].clone();
    let no_csrf = create(&origin, None).await.unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let wrong_csrf = create(&origin, Some("wrong".into())).await.unwrap();
    assert_eq!(wrong_csrf.status(), StatusCode::FORBIDDEN);
    let foreign = create("https://evil.example", Some(csrf.clone()))
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let created = create(&origin, Some(csrf.clone())).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let refreshed = relay
        .http
        .post(relay.url("/v1/auth/refresh"))
        .header("cookie", jar.header())
        .header("origin", &origin)
        .header(CSRF_HEADER, &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::NO_CONTENT);
    let old_refresh = jar.0[REFRESH_COOKIE].clone();
    jar.store(&refreshed);
    assert_ne!(jar.0[REFRESH_COOKIE], old_refresh);

    let logout = relay
        .http
        .post(relay.url("/v1/auth/logout"))
        .header("cookie", jar.header())
        .header("origin", &origin)
        .header(CSRF_HEADER, &jar.0[CSRF_COOKIE])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let cleared: Vec<String> = logout
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cleared.len(), 3, "logout clears the three cookies");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_address_gets_no_mail() {
    let relay = start_relay(Limits::default()).await;
    let before = outbox_files(relay.data_dir());
    let response = relay
        .http
        .post(relay.url("/v1/auth/login"))
        .json(&LoginRequest {
            email: "nobody@clinic.example".into(),
            device_name: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["login_id"].is_string());
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        outbox_files(relay.data_dir()),
        before,
        "mail sent to an unknown address"
    );

    let malformed = relay
        .http
        .post(relay.url("/v1/auth/login"))
        .json(&serde_json::json!({ "email": "not an address" }))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn sign_in_requests_are_rate_limited_per_account() {
    let relay = start_relay(Limits::default()).await;
    let mut limited = None;
    for attempt in 0..20 {
        let response = relay
            .http
            .post(relay.url("/v1/auth/login"))
            .json(&LoginRequest {
                email: "flooded@clinic.example".into(),
                device_name: None,
            })
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((attempt, response));
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let (attempt, response) = limited.expect("twenty sign-ins were never limited");
    assert!(attempt >= 5, "limited after only {attempt} requests");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("429 without Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("sealcast_rate_limited_total{endpoint=\"login\",scope=\"account\"}"),
        "rate limiting not counted"
    );
    relay.handle.shutdown().await;
}

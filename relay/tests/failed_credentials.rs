//! The limit on failed credentials: a client address that keeps sending
//! invalid credentials gets 429 with `Retry-After` on every route, and the
//! relay counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{metric_value, start_relay};
use reqwest::StatusCode;
use sealcast_relay::Limits;

const PER_MINUTE: u32 = 3;

#[tokio::test]
async fn repeated_bad_credentials_are_rate_limited() {
    let relay = start_relay(Limits {
        failed_credentials_per_minute: PER_MINUTE,
        ..Limits::default()
    })
    .await;
    let guess = |path: &str| {
        relay
            .http
            .get(relay.url(path))
            .header("Authorization", "DPoP guessed-token")
            .send()
    };

    for attempt in 0..PER_MINUTE {
        let response = guess("/v1/me").await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt} within the budget"
        );
    }
    // The budget is spent by the last of these, so the address is blocked.
    let over = guess("/v1/me").await.unwrap();
    assert_eq!(over.status(), StatusCode::UNAUTHORIZED);

    let blocked = guess("/v1/me").await.unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} s"
    );

    // Every route is closed to the address while it is blocked, whatever it sends.
    let health = relay.http.get(relay.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::TOO_MANY_REQUESTS);
    let follow = relay
        .http
        .get(relay.url("/v1/follow"))
        .bearer_auth("guessed-invite")
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another client address is not blocked, and reads the count.
    let other = other_address_client(&relay);
    let metrics = other
        .get(relay.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = metric_value(
        &metrics,
        r#"sealcast_rate_limited_total{endpoint="any",scope="failed_credentials"}"#,
    );
    assert!(counted >= 3.0, "blocked requests counted: {counted}");
}

/// Returns a client that connects from 127.0.0.2, another loopback address.
fn other_address_client(relay: &common::TestRelay) -> reqwest::Client {
    let pem = std::fs::read(relay.data_dir().join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap()
}

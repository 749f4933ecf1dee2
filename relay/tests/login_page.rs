//! The staff sign-in page served by a real relay over TLS: routes, content
//! types, security headers, a magic-link token that stays in the fragment, and
//! a 404 with a reason and a metric for files the page does not have.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{metric_value, start_relay, TestRelay};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use sealcast_protocol::api::ErrorBody;
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

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

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
async fn login_page_and_files_have_security_headers() {
    let relay = start_relay(Limits::default()).await;
    let cases = [
        ("/login", HTML),
        ("/login/", HTML),
        ("/login/login.html", HTML),
        ("/login/login.js", JAVASCRIPT),
        ("/login/login-api.js", JAVASCRIPT),
        ("/login/login-view.js", JAVASCRIPT),
        ("/login/login.css", CSS),
        ("/login/join.css", CSS),
        ("/login/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in cases {
        let response = get(&relay, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()[CONTENT_TYPE], content_type, "{path}");
        assert_page_headers(&response, path);
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn login_page_loads_only_its_own_files() {
    let relay = start_relay(Limits::default()).await;
    let page = get(&relay, "/login").await.text().await.unwrap();

    assert!(page.contains(r#"<script type="module" src="/login/login.js"></script>"#));
    // The CSP allows no inline script or style and no form submission.
    assert_eq!(page.matches("<script").count(), 1, "one script element");
    assert!(!page.contains("style="), "inline style");
    assert!(!page.contains("<style"), "style element");
    assert!(!page.contains("action="), "form action");
    for reference in page.split(['"', '\'']).filter(|part| part.starts_with('/')) {
        assert!(reference.starts_with("/login/"), "{reference}");
        let response = get(&relay, reference).await;
        assert_eq!(response.status(), StatusCode::OK, "{reference}");
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn login_script_removes_fragment_first() {
    let relay = start_relay(Limits::default()).await;
    let script = get(&relay, "/login/login.js").await.text().await.unwrap();

    // The first statements after the imports read the token and take it out of the address
    // bar and the history, before any other code of the page runs.
    let after_imports = script.rsplit_once("from './login-view.js';").unwrap().1;
    let statements: Vec<&str> = after_imports
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take(2)
        .collect();
    assert_eq!(
        statements,
        [
            "const address = readLoginAddress(window.location);",
            "window.history.replaceState(null, '', address.cleanUrl);",
        ]
    );

    let api = get(&relay, "/login/login-api.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(api.contains("export function readLoginAddress({ pathname, hash })"));
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn token_in_query_changes_nothing() {
    let relay = start_relay(Limits::default()).await;
    let plain = get(&relay, "/login").await.bytes().await.unwrap();

    // What a mail scanner sends when it fetches a link, with a token or tracking parameters
    // in the query.
    for path in [
        "/login?token=q3Jv0bW7m2Yd_x-8ZkP4sT1uLcN9eRgA6hVwXyF5iOo",
        "/login/?utm_source=mail&token=q3Jv0bW7m2Yd",
    ] {
        let response = get(&relay, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers().get("set-cookie").is_none(), "{path}");
        assert_page_headers(&response, path);
        assert_eq!(response.bytes().await.unwrap(), plain, "{path}");
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_login_files_are_not_found() {
    let relay = start_relay(Limits::default()).await;
    let paths = [
        "/login/README.md",
        "/login/test/login.test.mjs",
        "/login/app.js",
        "/login/missing.js",
        "/join/login.js",
    ];
    for path in paths {
        let response = get(&relay, path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }

    let response = get(&relay, "/login/missing.js").await;
    assert_page_headers(&response, "/login/missing.js");
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, "not_found");
    assert!(body.message.contains("open /login"), "{}", body.message);

    let metrics = relay.metrics().await;
    let series = "sealcast_http_requests_total{route=\"/login/{file}\",status=\"404\"}";
    assert!(metric_value(&metrics, series) >= 4.0, "{metrics}");
    relay.handle.shutdown().await;
}

//! The follow cookie: how a browser that redeemed an invite presents its
//! follow credential.
//!
//! The cookie is `HttpOnly`, so no script on the page can read it, `Secure`,
//! and `SameSite=Strict` with `Path=/v1`, so the browser sends it only to the
//! relay's API routes and only from the relay's own pages. Its value is a
//! random token that the store keeps hashed.
//!
//! NOTE: the cookie's name is fixed, so a browser keeps one follow credential.
//! Redeeming a second invite in the same browser replaces the first one's
//! cookie, and an open page of the first session then reconnects into the
//! second and stops with a fingerprint mismatch.

use axum::http::header::{InvalidHeaderValue, COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};
use sealcast_protocol::api::FOLLOW_COOKIE;

use crate::credentials::Secret;

/// Lifetime of the cookie in the browser, renewed by every redemption. It
/// lets a patient who closed the browser open the link again during the visit
/// without taking another of the invite's browser places.
pub(crate) const COOKIE_MAX_AGE_SECONDS: i64 = 24 * 60 * 60;

/// Path the browser sends the cookie to: the follow socket and the invite routes.
const COOKIE_PATH: &str = "/v1";

/// Builds the `Set-Cookie` value that hands `credential` to the browser.
pub(crate) fn set_follow_cookie(credential: &Secret) -> Result<HeaderValue, InvalidHeaderValue> {
    let cookie = Cookie::build((FOLLOW_COOKIE, credential.expose()))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path(COOKIE_PATH)
        .max_age(cookie::time::Duration::seconds(COOKIE_MAX_AGE_SECONDS))
        .build();
    let mut value = HeaderValue::from_str(&cookie.to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads the follow credential from the request's `Cookie` headers, if any.
/// With several follow cookies, the first one counts.
pub(crate) fn follow_cookie(headers: &HeaderMap) -> Option<Secret> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == FOLLOW_COOKIE && !cookie.value().is_empty())
        .map(|cookie| Secret::new(cookie.value().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_has_every_attribute() {
        let value = set_follow_cookie(&Secret::new("abc".into())).unwrap();
        let text = value.to_str().unwrap();
        assert!(text.starts_with("sealcast_follow=abc"), "{text}");
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/v1",
            "Max-Age=86400",
        ] {
            assert!(text.contains(attribute), "{attribute} missing from {text}");
        }
        assert!(value.is_sensitive());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; sealcast_follow=xyz; other=1"),
        );
        assert_eq!(follow_cookie(&headers).unwrap().expose(), "xyz");
    }

    #[test]
    fn absent_or_empty_cookie_is_none() {
        let mut headers = HeaderMap::new();
        assert!(follow_cookie(&headers).is_none());
        headers.insert(COOKIE, HeaderValue::from_static("sealcast_follow=; a=b"));
        assert!(follow_cookie(&headers).is_none());
    }
}

//! The cookies of a signed-in browser: the access and refresh tokens
//! (`HttpOnly`) and the CSRF token the page's script echoes in a header.
//!
//! All three use the `__Host-` prefix, so they are `Secure`, have
//! `Path=/` and no `Domain`: no other host or path can set or read them.

use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};
use sealcast_protocol::auth::{ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE};

use super::ApiError;
use crate::accounts::Issued;
use crate::credentials::random_token;

/// Adds the `Set-Cookie` headers that hand `issued` to a browser.
pub(crate) fn set_sign_in_cookies(
    headers: &mut HeaderMap,
    issued: &Issued,
    refresh_lifetime_secs: u64,
) -> Result<(), ApiError> {
    let csrf = random_token();
    let access_secs = issued.expires_in;
    for (name, value, seconds, http_only) in [
        (
            ACCESS_COOKIE,
            issued.access_token.as_str(),
            access_secs,
            true,
        ),
        (
            REFRESH_COOKIE,
            issued.refresh_token.expose(),
            refresh_lifetime_secs,
            true,
        ),
        (CSRF_COOKIE, csrf.expose(), refresh_lifetime_secs, false),
    ] {
        headers.append(SET_COOKIE, cookie_header(name, value, seconds, http_only)?);
    }
    Ok(())
}

/// Adds the `Set-Cookie` headers that delete the sign-in cookies.
pub(crate) fn clear_sign_in_cookies(headers: &mut HeaderMap) -> Result<(), ApiError> {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        headers.append(SET_COOKIE, cookie_header(name, "", 0, true)?);
    }
    Ok(())
}

fn cookie_header(
    name: &'static str,
    value: &str,
    max_age_secs: u64,
    http_only: bool,
) -> Result<HeaderValue, ApiError> {
    let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
    let cookie = Cookie::build((name, value))
        .http_only(http_only)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    let mut header = HeaderValue::from_str(&cookie.to_string()).map_err(|error| {
        tracing::error!(%error, cookie = name, "failed to build a sign-in cookie header");
        ApiError::Internal
    })?;
    header.set_sensitive(true);
    Ok(header)
}

//! Credentials: bearer tokens from `Authorization`, the follow cookie of a
//! browser that redeemed an invite, and the checks for each endpoint.
//!
//! A credential is hashed and looked up by its hash; stored hashes are
//! compared in constant time. Failures are counted per endpoint and logged at
//! debug level without the credential.

use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::HeaderMap;
use sealcast_protocol::SessionId;

use super::{ApiError, AppState};
use crate::credentials::{hashes_match, Secret};
use crate::invites::cookie::follow_cookie;
use crate::metrics::AUTH_FAILURES;
use crate::store::SessionRecord;

/// Endpoint label of `POST /v1/sessions`.
pub(crate) const CREATE_SESSION: &str = "create_session";
/// Endpoint label of `POST /v1/sessions/{id}/end`.
pub(crate) const END_SESSION: &str = "end_session";
/// Endpoint label of the publish socket.
pub(crate) const PUBLISH: &str = "publish";
/// Endpoint label of the follow socket.
pub(crate) const FOLLOW: &str = "follow";

// NOTE: failed bearer credentials here are counted per endpoint but not rate
// limited; only the invite routes are. The credentials are 256-bit random
// values, so guessing is impractical, but a flood still costs a store read.

/// Requires a stored clinic API key.
pub(crate) async fn require_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = bearer(headers, CREATE_SESSION)?;
    if state.store.api_key_exists(key.hash()).await? {
        Ok(())
    } else {
        Err(reject(
            CREATE_SESSION,
            "invalid API key: use the clinic API key the relay printed at first start",
        ))
    }
}

/// Requires the publisher token of the session named in the path.
pub(crate) async fn publisher_session(
    state: &AppState,
    headers: &HeaderMap,
    session: &str,
    endpoint: &'static str,
) -> Result<SessionRecord, ApiError> {
    let session_id: SessionId = session.parse().map_err(|_| {
        ApiError::BadRequest("session id in the path must be 32 hexadecimal digits".into())
    })?;
    let token = bearer(headers, endpoint)?;
    let record = state
        .store
        .session(session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {session_id} not found")))?;

    if hashes_match(&record.publisher_token_hash, &token.hash()) {
        Ok(record)
    } else {
        Err(reject(endpoint, "invalid publisher token for this session"))
    }
}

/// Requires an invite token and returns its session.
async fn invite_session(state: &AppState, headers: &HeaderMap) -> Result<SessionRecord, ApiError> {
    let token = bearer(headers, FOLLOW)?;
    state
        .store
        .session_by_invite(token.hash())
        .await?
        .ok_or_else(|| {
            reject(
                FOLLOW,
                "invalid invite token: ask the clinic for a new invite link",
            )
        })
}

/// Requires a follow credential and returns its session: the invite token as a
/// bearer credential (native clients), else the follow cookie of a browser
/// that redeemed the invite. A cookie counts only on an upgrade whose `Origin`
/// is the relay's own, so no other site's page can use a patient's cookie.
pub(crate) async fn follow_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<SessionRecord, ApiError> {
    if headers.contains_key(AUTHORIZATION) {
        return invite_session(state, headers).await;
    }
    let Some(cookie) = follow_cookie(headers) else {
        return Err(reject(
            FOLLOW,
            "missing credential: send the invite token as Authorization: Bearer <token>, or redeem the invite in a browser",
        ));
    };
    check_origin(state, headers)?;
    state
        .store
        .session_by_browser(cookie.hash())
        .await?
        .ok_or_else(|| {
            reject(
                FOLLOW,
                "invalid follow cookie: open the invite link again to redeem it",
            )
        })
}

/// Accepts an `Origin` equal to the public URL's origin or to `https://` and
/// the `Host` the request came to, compared without regard to case.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase);
    let host_origin = headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(|host| origin_of(&format!("https://{host}")));

    let allowed = origin.as_deref().is_some_and(|origin| {
        origin == state.public_origin || host_origin.as_deref() == Some(origin)
    });
    if allowed {
        return Ok(());
    }
    metrics::counter!(AUTH_FAILURES, "endpoint" => FOLLOW).increment(1);
    tracing::warn!("follow upgrade with a cookie from a foreign or missing Origin rejected");
    Err(ApiError::Forbidden(
        "follow cookie sent from another site: open the patient page on this relay",
    ))
}

/// Returns the origin of a base URL such as `https://relay.example:8443/path`
/// as browsers send it in `Origin`: scheme and authority in lower case, without
/// the scheme's default port.
pub(crate) fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    format!("{scheme}://{authority}")
}

/// Reads `Authorization: Bearer <credential>`.
fn bearer(headers: &HeaderMap, endpoint: &'static str) -> Result<Secret, ApiError> {
    let missing = "missing credential: send it as Authorization: Bearer <credential>";
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| reject(endpoint, missing))?;
    let text = value.to_str().map_err(|_| reject(endpoint, missing))?;

    // The scheme name is case-insensitive (RFC 9110, section 11.1).
    let (scheme, credential) = text
        .split_once(' ')
        .ok_or_else(|| reject(endpoint, missing))?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(reject(endpoint, missing));
    }
    Ok(Secret::new(credential.to_owned()))
}

fn reject(endpoint: &'static str, message: &'static str) -> ApiError {
    metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint).increment(1);
    tracing::debug!(endpoint, "credential rejected");
    ApiError::Unauthorized(message)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_accepts_any_scheme_case() {
        let secret = bearer(&headers("bearer abc"), FOLLOW).unwrap();
        assert_eq!(secret.expose(), "abc");
        let secret = bearer(&headers("Bearer  abc "), FOLLOW).unwrap();
        assert_eq!(secret.expose(), "abc");
    }

    #[test]
    fn origin_of_keeps_scheme_and_authority() {
        assert_eq!(
            origin_of("https://Relay.Example:8443/sealcast/"),
            "https://relay.example:8443"
        );
        assert_eq!(origin_of("https://localhost:1"), "https://localhost:1");
        assert_eq!(
            origin_of("https://relay.example:443"),
            "https://relay.example"
        );
        assert_eq!(
            origin_of("http://relay.example:80/"),
            "http://relay.example"
        );
        assert_eq!(origin_of("https://[::1]:8443"), "https://[::1]:8443");
    }

    #[test]
    fn bearer_rejects_other_forms() {
        for value in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert!(
                matches!(
                    bearer(&headers(value), FOLLOW),
                    Err(ApiError::Unauthorized(_))
                ),
                "{value:?} was accepted"
            );
        }
        assert!(bearer(&HeaderMap::new(), FOLLOW).is_err());
    }
}

//! Patient credentials: the invite token or a paired device's follow token as
//! a bearer credential, and the follow cookie of a browser that redeemed an
//! invite or paired. Staff credentials are checked in [`super::staff`].
//!
//! A credential is hashed and looked up by its hash; stored hashes are
//! compared in constant time. Failures are counted per endpoint and logged at
//! debug level without the credential.
//!
//! NOTE: failed invite tokens here are counted but not rate limited. Only
//! the invite routes are. Invite tokens are 256-bit random values, so
//! guessing is impractical, but a flood still costs a store read.

use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::HeaderMap;

use sealcast_protocol::paired_keys::DeviceId;

use super::{ApiError, AppState};
use crate::credentials::{CredentialHash, Secret};
use crate::invites::cookie::follow_cookie;
use crate::metrics::AUTH_FAILURES;
use crate::store::SessionRecord;

/// Endpoint label of the follow socket.
pub(crate) const FOLLOW: &str = "follow";
/// Endpoint label of the staff follow socket.
pub(crate) const STAFF_FOLLOW: &str = "staff_follow";

/// A follow credential that belongs to a paired device with a device id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairedFollower {
    pub(crate) device_id: DeviceId,
    /// SHA-256 of the device's follow token.
    pub(crate) credential_hash: CredentialHash,
}

/// Requires an invite token, or the follow token of a paired device, and
/// returns its session.
async fn invite_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(SessionRecord, Option<PairedFollower>), ApiError> {
    let token = bearer(headers, FOLLOW)?;
    if let Some(record) = state.store.session_by_invite(token.hash()).await? {
        return Ok((record, None));
    }
    paired_follower(state, token.hash()).await?.ok_or_else(|| {
        reject(
            FOLLOW,
            "invalid invite or follow token: ask the clinic for a new invite link, or pair this device again",
        )
    })
}

/// Looks up a paired device's follow credential by its hash. Returns its
/// session and, for a device paired after the relay stored device ids, the
/// device.
pub(crate) async fn paired_follower(
    state: &AppState,
    credential_hash: CredentialHash,
) -> Result<Option<(SessionRecord, Option<PairedFollower>)>, ApiError> {
    let found = state.store.paired_device(credential_hash).await?;
    Ok(found.map(|(record, device_id)| {
        let follower = device_id.map(|device_id| PairedFollower {
            device_id,
            credential_hash,
        });
        (record, follower)
    }))
}

/// Endpoint label of the wrapped key fetch of paired devices.
pub(crate) const PAIRED_KEYS: &str = "paired_keys";

/// Requires a paired device's follow token as a bearer credential and
/// returns its session, its device id and the token's hash. The device id
/// is `None` for a device paired before the relay stored device ids.
pub(crate) async fn paired_device(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(SessionRecord, Option<DeviceId>, CredentialHash), ApiError> {
    let token = bearer(headers, PAIRED_KEYS)?;
    let credential_hash = token.hash();
    state
        .store
        .paired_device(credential_hash)
        .await?
        .map(|(record, device_id)| (record, device_id, credential_hash))
        .ok_or_else(|| {
            reject(
                PAIRED_KEYS,
                "invalid follow token: the device was removed, the session ended, or the token is not a paired device's",
            )
        })
}

/// Requires a follow credential and returns its session: the invite token as a
/// bearer credential (native clients), else the follow cookie of a browser
/// that redeemed the invite or paired. A cookie counts only on an upgrade
/// whose `Origin` is the relay's own, so no other site's page can use a
/// patient's cookie. Also returns the paired device the credential belongs
/// to, if it is one.
pub(crate) async fn follow_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(SessionRecord, Option<PairedFollower>), ApiError> {
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
    let hash = cookie.hash();
    if let Some(record) = state.store.session_by_browser(hash).await? {
        return Ok((record, None));
    }
    // The cookie of a browser that paired contains the paired device's
    // follow token, which the pairing status route set.
    paired_follower(state, hash).await?.ok_or_else(|| {
        reject(
            FOLLOW,
            "invalid follow cookie: open the invite link again to redeem it, or pair this device again",
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
    metrics::counter!(AUTH_FAILURES, "endpoint" => FOLLOW, "reason" => "foreign_origin")
        .increment(1);
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
    metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint, "reason" => "invalid_credential")
        .increment(1);
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

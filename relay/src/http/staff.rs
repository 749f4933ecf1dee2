//! Staff credentials: a device-bound access token with a DPoP proof, or a
//! browser's access cookie, and the role and organization checks of each
//! route.
//!
//! Every request is checked against the store, so a disabled user, a
//! revoked device or a signed-out sign-in is rejected at once, not when its
//! access token expires. Failures are counted in
//! [`crate::metrics::AUTH_FAILURES`] by endpoint and reason and logged at
//! debug level without the credential.

use axum::http::header::{AUTHORIZATION, COOKIE, ORIGIN};
use axum::http::{HeaderMap, Method};
use cookie::Cookie;
use sealcast_protocol::auth::{
    AccessClaims, Role, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER, DPOP_HEADER, DPOP_SCHEME,
};
use sealcast_protocol::dpop::{verify_proof, DpopError, VerifiedProof};
use sealcast_protocol::SessionId;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::accounts::replay::ReplayRejection;
use crate::accounts::tokens::family_of;
use crate::accounts::{now_unix, store};
use crate::metrics::AUTH_FAILURES;
use crate::store::SessionRecord;

/// A signed-in staff member making this request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) user_id: String,
    pub(crate) organization_id: String,
    pub(crate) role: Role,
    pub(crate) device_id: Option<String>,
    pub(crate) mfa: bool,
    /// The sign-in the access token belongs to.
    pub(crate) family_id: String,
    /// Whether the credential came in the access cookie.
    pub(crate) browser: bool,
}

/// Requires a valid staff credential for a request with `method` to `path`.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    endpoint: &'static str,
) -> Result<Principal, ApiError> {
    let (claims, browser) = match headers.get(AUTHORIZATION) {
        Some(_) => (
            device_claims(state, headers, method, path, endpoint).await?,
            false,
        ),
        None => match cookie_value(headers, ACCESS_COOKIE) {
            Some(token) => (
                browser_claims(state, headers, method, &token, endpoint).await?,
                true,
            ),
            None => {
                return Err(reject(
                    endpoint,
                    "missing_credential",
                    "missing credential: send Authorization: DPoP <access token> with a DPoP proof, or sign in",
                ))
            }
        },
    };
    let principal = check_current(state, claims, browser, endpoint).await?;
    if let Some(device_id) = &principal.device_id {
        state.accounts.touch_device(device_id).await;
    }
    Ok(principal)
}

/// Verifies `Authorization: DPoP <token>` and its proof.
async fn device_claims(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    endpoint: &'static str,
) -> Result<AccessClaims, ApiError> {
    let token = dpop_token(headers).ok_or_else(|| {
        reject(
            endpoint,
            "wrong_scheme",
            "invalid credential: staff requests send Authorization: DPoP <access token>",
        )
    })?;
    let now = now_unix();
    let claims = state
        .accounts
        .signer
        .verify_or_reload(&state.accounts.db, token, now)
        .await
        .map_err(|error| {
            reject(
                endpoint,
                error.reason(),
                "invalid or expired access token: refresh it or sign in again",
            )
        })?;
    let proof = single_header(headers, DPOP_HEADER).ok_or_else(|| {
        reject(
            endpoint,
            "missing_proof",
            "missing DPoP proof: send a DPoP header made with the device key",
        )
    })?;
    let url = format!("{}{path}", state.public_url);
    let verified =
        verify_proof(proof, method.as_str(), &url, Some(token), now).map_err(|error| {
            reject(
                endpoint,
                proof_reason(&error),
                "invalid DPoP proof: make a new proof for this request with the device key",
            )
        })?;
    let bound = claims
        .cnf
        .as_ref()
        .is_some_and(|cnf| bool::from(cnf.jkt.as_bytes().ct_eq(verified.thumbprint.as_bytes())));
    if !bound {
        return Err(reject(
            endpoint,
            "proof_key_mismatch",
            "invalid DPoP proof: it was not made with the key the access token is bound to",
        ));
    }
    match state
        .accounts
        .replay
        .check_and_remember(&verified.jti, verified.iat, now)
    {
        Ok(()) => Ok(claims),
        Err(ReplayRejection::Replayed) => Err(reject(
            endpoint,
            "replayed_proof",
            "DPoP proof already used: make a new proof for every request",
        )),
        Err(ReplayRejection::Full) => {
            metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint, "reason" => "replay_cache_full")
                .increment(1);
            tracing::warn!(
                endpoint,
                "DPoP replay cache is full: rejecting proofs until entries expire"
            );
            Err(ApiError::Unavailable(
                "relay is busy checking proofs: retry in a minute".into(),
            ))
        }
    }
}

/// Verifies the access cookie, its `Origin` and, on state-changing
/// requests, the CSRF header.
async fn browser_claims(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    token: &str,
    endpoint: &'static str,
) -> Result<AccessClaims, ApiError> {
    let origin = headers.get(ORIGIN).and_then(|value| value.to_str().ok());
    let safe_method = matches!(*method, Method::GET | Method::HEAD);
    let upgrade = headers.contains_key(axum::http::header::UPGRADE);
    let origin_ok = match origin {
        Some(origin) => origin.eq_ignore_ascii_case(&state.public_origin),
        None => safe_method && !upgrade,
    };
    if !origin_ok {
        return Err(forbid(
            endpoint,
            "foreign_origin",
            "access cookie sent from another site: use the relay's own pages",
        ));
    }
    if !safe_method {
        let expected = cookie_value(headers, CSRF_COOKIE);
        let presented = single_header(headers, CSRF_HEADER);
        let matches = match (expected.as_deref(), presented) {
            (Some(expected), Some(presented)) => {
                bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
            }
            _ => false,
        };
        if !matches {
            return Err(forbid(
                endpoint,
                "csrf_mismatch",
                "missing or wrong X-CSRF-Token: echo the CSRF cookie in that header",
            ));
        }
    }
    let claims = state
        .accounts
        .signer
        .verify_or_reload(&state.accounts.db, token, now_unix())
        .await
        .map_err(|error| {
            reject(
                endpoint,
                error.reason(),
                "invalid or expired access cookie: refresh or sign in again",
            )
        })?;
    if claims.cnf.is_some() {
        // A device-bound token is only valid with a proof of its key.
        return Err(reject(
            endpoint,
            "device_token_in_cookie",
            "invalid access cookie: sign in again in this browser",
        ));
    }
    Ok(claims)
}

/// Checks the token's user, device and sign-in against the store.
async fn check_current(
    state: &AppState,
    claims: AccessClaims,
    browser: bool,
    endpoint: &'static str,
) -> Result<Principal, ApiError> {
    let family_id = family_of(&claims.jti)
        .ok_or_else(|| {
            reject(
                endpoint,
                "invalid_token",
                "invalid access token: sign in again",
            )
        })?
        .to_owned();
    let user_id = claims.sub.clone();
    let device_id = claims.dev.clone();
    let family = family_id.clone();
    let current = state
        .accounts
        .db
        .run(move |conn| store::credential_state(conn, &user_id, device_id.as_deref(), &family))
        .await?;
    let Some(current) = current else {
        return Err(reject(
            endpoint,
            "unknown_user",
            "invalid access token: sign in again",
        ));
    };
    if current.user_disabled {
        return Err(reject(
            endpoint,
            "user_disabled",
            "this user is disabled: ask an administrator",
        ));
    }
    if current.device_revoked {
        return Err(reject(
            endpoint,
            "device_revoked",
            "this device was revoked: sign in again",
        ));
    }
    if current.sign_in_revoked {
        return Err(reject(
            endpoint,
            "signed_out",
            "this sign-in has ended: sign in again",
        ));
    }
    if current.organization_id != claims.org || current.role != claims.role {
        return Err(reject(
            endpoint,
            "stale_claims",
            "the user's role changed: sign in again",
        ));
    }
    Ok(Principal {
        user_id: claims.sub,
        organization_id: claims.org,
        role: claims.role,
        device_id: claims.dev,
        mfa: claims.mfa,
        family_id,
        browser,
    })
}

/// Requires the clinician role.
pub(crate) fn require_clinician(
    principal: &Principal,
    endpoint: &'static str,
) -> Result<(), ApiError> {
    if principal.role == Role::Clinician {
        Ok(())
    } else {
        Err(forbid(
            endpoint,
            "wrong_role",
            "only clinicians may use this route",
        ))
    }
}

/// Requires an administrator who passed the second factor.
pub(crate) fn require_admin(principal: &Principal, endpoint: &'static str) -> Result<(), ApiError> {
    if principal.role != Role::Admin {
        return Err(forbid(
            endpoint,
            "wrong_role",
            "only administrators may use this route",
        ));
    }
    if !principal.mfa {
        return Err(forbid(
            endpoint,
            "mfa_required",
            "administrators must enrol TOTP and sign in with a code before using this route",
        ));
    }
    Ok(())
}

/// Requires a clinician of the organization of the session named in the path.
pub(crate) async fn clinician_session(
    state: &AppState,
    principal: &Principal,
    session: &str,
    endpoint: &'static str,
) -> Result<SessionRecord, ApiError> {
    require_clinician(principal, endpoint)?;
    let session_id: SessionId = session.parse().map_err(|_| {
        ApiError::BadRequest("session id in the path must be 32 hexadecimal digits".into())
    })?;
    let record = state
        .store
        .session(session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {session_id} not found")))?;
    if record.organization_id.as_deref() != Some(principal.organization_id.as_str()) {
        return Err(forbid(
            endpoint,
            "wrong_organization",
            "this session belongs to another organization",
        ));
    }
    Ok(record)
}

/// Reads `Authorization: DPoP <token>`. The scheme is case-insensitive.
fn dpop_token(headers: &HeaderMap) -> Option<&str> {
    let text = single_header(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case(DPOP_SCHEME) && !token.is_empty()).then_some(token)
}

/// Returns a header's value when it is present exactly once and is text.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// Reads a cookie's value from the `Cookie` headers.
pub(crate) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
}

fn proof_reason(error: &DpopError) -> &'static str {
    match error {
        DpopError::Stale => "stale_proof",
        DpopError::WrongRequest(_) => "proof_for_other_request",
        DpopError::WrongToken => "proof_for_other_token",
        DpopError::BadSignature | DpopError::InvalidKey => "invalid_proof_signature",
        DpopError::Malformed(_) | DpopError::InvalidUrl(_) | DpopError::Signing(_) => {
            "malformed_proof"
        }
    }
}

/// Counts and logs a rejected credential, for a 401 response.
pub(crate) fn reject(
    endpoint: &'static str,
    reason: &'static str,
    message: &'static str,
) -> ApiError {
    metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint, "reason" => reason).increment(1);
    tracing::debug!(endpoint, reason, "credential rejected");
    ApiError::Unauthorized(message)
}

/// Counts and logs a valid credential used where it is not allowed, for a
/// 403 response.
pub(crate) fn forbid(
    endpoint: &'static str,
    reason: &'static str,
    message: &'static str,
) -> ApiError {
    metrics::counter!(AUTH_FAILURES, "endpoint" => endpoint, "reason" => reason).increment(1);
    tracing::debug!(endpoint, reason, "request forbidden");
    ApiError::Forbidden(message)
}

/// Verifies the DPoP proof of a request that carries no access token, such
/// as a sign-in or a refresh, and records its id. Returns `None` when the
/// request has no proof.
pub(crate) fn key_proof(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    endpoint: &'static str,
) -> Result<Option<VerifiedProof>, ApiError> {
    if headers.get(DPOP_HEADER).is_none() {
        return Ok(None);
    }
    let proof = single_header(headers, DPOP_HEADER)
        .ok_or_else(|| reject(endpoint, "malformed_proof", "send exactly one DPoP proof"))?;
    let now = now_unix();
    let url = format!("{}{path}", state.public_url);
    let verified = verify_proof(proof, method.as_str(), &url, None, now).map_err(|error| {
        reject(
            endpoint,
            proof_reason(&error),
            "invalid DPoP proof: make a new proof for this request with the device key",
        )
    })?;
    match state
        .accounts
        .replay
        .check_and_remember(&verified.jti, verified.iat, now)
    {
        Ok(()) => Ok(Some(verified)),
        Err(ReplayRejection::Replayed) => Err(reject(
            endpoint,
            "replayed_proof",
            "DPoP proof already used: make a new proof for every request",
        )),
        Err(ReplayRejection::Full) => Err(ApiError::Unavailable(
            "relay is busy checking proofs: retry in a minute".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn dpop_token_needs_the_dpop_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("dpop abc.def.ghi"));
        assert_eq!(dpop_token(&headers), Some("abc.def.ghi"));
        for value in ["Bearer abc", "DPoP", "DPoP  ", "abc"] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(dpop_token(&headers), None, "{value:?} was accepted");
        }
    }

    #[test]
    fn repeated_header_is_rejected() {
        let mut headers = HeaderMap::new();
        headers.append(DPOP_HEADER, HeaderValue::from_static("one"));
        assert_eq!(single_header(&headers, DPOP_HEADER), Some("one"));
        headers.append(DPOP_HEADER, HeaderValue::from_static("two"));
        assert_eq!(single_header(&headers, DPOP_HEADER), None);
    }

    #[test]
    fn cookie_value_finds_named_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-sealcast_csrf=xyz; b="),
        );
        assert_eq!(cookie_value(&headers, CSRF_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&headers, "b"), None);
        assert_eq!(cookie_value(&headers, ACCESS_COOKIE), None);
    }
}

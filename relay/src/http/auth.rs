//! Bearer credentials: extraction from `Authorization` and the checks for
//! each endpoint.
//!
//! A credential is hashed and looked up by its hash; stored hashes are
//! compared in constant time. Failures are counted per endpoint and logged at
//! debug level without the credential.

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use sealcast_protocol::SessionId;

use super::{ApiError, AppState};
use crate::credentials::{hashes_match, Secret};
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
pub(crate) async fn invite_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<SessionRecord, ApiError> {
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

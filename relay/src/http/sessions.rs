//! `POST /v1/sessions` and `POST /v1/sessions/{id}/end`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sealcast_protocol::api::{
    CreateSessionRequest, CreateSessionResponse, EndSessionRequest, DEFAULT_MAX_BROWSERS,
};
use sealcast_protocol::{Fingerprint, SessionId};

use super::audited::{self, peer_ip};
use super::staff::{self, authenticate, require_clinician};
use super::{ApiError, AppState, MAX_BODY_BYTES};
use crate::audit::Action;
use crate::credentials::random_token;
use crate::hub::EndRefused;
use crate::listener::PeerAddr;
use crate::metrics::{SESSIONS_CREATED, SESSIONS_ENDED};
use crate::store::{now_millis, NewSession, SessionRecord, StoreError};

/// Largest `max_browsers` a session may ask for. Each browser's follow
/// credential is a stored row, so the number stays small.
const MAX_BROWSERS_LIMIT: u32 = 100;

/// Endpoint label of `POST /v1/sessions`.
const CREATE_SESSION: &str = "create_session";
/// Endpoint label of `POST /v1/sessions/{id}/end`.
const END_SESSION: &str = "end_session";

/// Creates a session of the clinician's organization. Responds 201 with the
/// session's id, epoch and invite token, which the relay keeps only hashed.
#[utoipa::path(
    post, path = "/v1/sessions", operation_id = "create_session", tag = "sessions",
    request_body(content = sealcast_protocol::api::CreateSessionRequest, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "Session created; the invite token is shown only here", body = sealcast_protocol::api::CreateSessionResponse),
        (status = 400, description = "Malformed body, fingerprint or verifier, or `max_browsers` out of range", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CreateSessionResponse>), ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), CREATE_SESSION).await?;
    require_clinician(&principal, CREATE_SESSION)?;
    let request = parse_request(body).await?;
    let fingerprint = Fingerprint::from_base64url(&request.fingerprint).ok_or_else(|| {
        ApiError::BadRequest("fingerprint must be 16 bytes as unpadded base64url".into())
    })?;
    let invite_verifier = request
        .invite_verifier
        .as_deref()
        .map(parse_verifier)
        .transpose()?;
    let max_browsers = check_max_browsers(request.max_browsers)?;

    let invite_token = random_token();
    let invite_hash = invite_token.hash();
    let session = NewSession {
        session_id: SessionId::random(),
        epoch: rand::rngs::OsRng.next_u64(),
        fingerprint: fingerprint.0,
        invite_token_hash: invite_token.hash(),
        invite_verifier,
        max_browsers,
        created_at: now_millis(),
        organization_id: Some(principal.organization_id.clone()),
        created_by_user: Some(principal.user_id.clone()),
        created_by_device: principal.device_id.clone(),
    };
    let response = CreateSessionResponse {
        session_id: session.session_id,
        epoch: session.epoch,
        invite_token: invite_token.expose().to_owned(),
    };
    state.store.create_session(session).await?;

    metrics::counter!(SESSIONS_CREATED).increment(1);
    tracing::info!(
        session_id = %response.session_id,
        organization_id = %principal.organization_id,
        user_id = %principal.user_id,
        "session created"
    );
    let source = peer_ip(peer.as_ref());
    let started = audited::staff_event(Action::SessionStarted, &principal, source)
        .session(response.session_id)
        .detail("max_browsers", max_browsers);
    audited::record(&state, started).await;
    let invited = audited::staff_event(Action::InviteCreated, &principal, source)
        .session(response.session_id)
        .digest_of(&invite_hash);
    audited::record(&state, invited).await;
    Ok((StatusCode::CREATED, Json(response)))
}

/// Ends a session for a clinician of its organization, after its accepted
/// frames. Responds 204, or 410 if it had already ended. The body is empty
/// or an [`EndSessionRequest`]; a device's claim that it destroyed the key
/// is recorded in the audit log after the end.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/end", operation_id = "end_session", tag = "sessions",
    params(("id" = String, Path, description = "Session id, 32 hex digits")),
    request_body(content = Option<sealcast_protocol::api::EndSessionRequest>, content_type = "application/json", description = "Optional; an empty body means `{}`"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Session ended after its accepted frames were committed"),
        (status = 400, description = "Malformed session id or body", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No session with this id in the caller's organization", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session had already ended", body = sealcast_protocol::api::ErrorBody),
        (status = 503, description = "The relay is shutting down", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn end(
    State(state): State<AppState>,
    Path(session): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), END_SESSION).await?;
    let request = parse_end_request(body).await?;
    let record = staff::clinician_session(&state, &principal, &session, END_SESSION).await?;
    let outcome = end_after_frames(&state, &record).await;

    let source = peer_ip(peer.as_ref());
    if outcome.is_ok() {
        let ended = audited::staff_event(Action::SessionEnded, &principal, source)
            .session(record.session_id);
        audited::record(&state, ended).await;
    }
    // A device that finds the session already ended still destroyed its key.
    if request.key_destroyed && matches!(outcome, Ok(_) | Err(ApiError::Gone(_))) {
        let destroyed = audited::staff_event(Action::SessionKeyDestroyed, &principal, source)
            .session(record.session_id);
        audited::record(&state, destroyed).await;
    }
    outcome
}

/// Ends the session once the store committed its accepted frames.
async fn end_after_frames(
    state: &AppState,
    record: &SessionRecord,
) -> Result<StatusCode, ApiError> {
    let already_ended =
        || ApiError::Gone(format!("session {} has already ended", record.session_id));
    if record.ended_at.is_some() {
        return Err(already_ended());
    }

    let hub = state.hubs.lease(record).await?;
    let permit = state.store.reserve().await?;
    let committed = hub
        .hub()
        .begin_end(permit, now_millis())
        .map_err(|refused| match refused {
            EndRefused::AlreadyEnded => already_ended(),
            EndRefused::Unavailable => ApiError::Unavailable(
                "session state is being rebuilt after a store failure: retry".into(),
            ),
        })?;

    match committed.await {
        Ok(Ok(())) => {
            metrics::counter!(SESSIONS_ENDED).increment(1);
            // Other nodes find the end in the store: the joiner routes check
            // it, and waiting key fetches recheck it every second.
            let dropped = state.pairings.end_session(record.session_id);
            state.paired_keys_changed.send_replace(());
            tracing::info!(session_id = %record.session_id, dropped_pairings = dropped, "session ended");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(Err(StoreError::NotEndable { .. })) => Err(already_ended()),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(StoreError::WriterStopped.into()),
    }
}

async fn parse_request(body: Body) -> Result<CreateSessionRequest, ApiError> {
    // Reading fails when the body is over the limit or the connection broke.
    // A broken connection never sees the response, so 413 fits both.
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::BadRequest(format!(
            "request body is not a valid session request: {error}"
        ))
    })
}

/// Reads the end request's body: empty, or an [`EndSessionRequest`].
async fn parse_end_request(body: Body) -> Result<EndSessionRequest, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(EndSessionRequest::default());
    }
    let invalid = |reason: String| {
        ApiError::BadRequest(format!("request body is not a valid end request: {reason}"))
    };
    // serde would also accept a JSON array for the struct.
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
    if !value.is_object() {
        return Err(invalid("expected a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|error| invalid(error.to_string()))
}

fn check_max_browsers(requested: Option<u32>) -> Result<u32, ApiError> {
    let max_browsers = requested.unwrap_or(DEFAULT_MAX_BROWSERS);
    if (1..=MAX_BROWSERS_LIMIT).contains(&max_browsers) {
        Ok(max_browsers)
    } else {
        Err(ApiError::BadRequest(format!(
            "max_browsers {max_browsers} is out of range: use 1 to {MAX_BROWSERS_LIMIT}"
        )))
    }
}

fn parse_verifier(text: &str) -> Result<[u8; 32], ApiError> {
    let invalid =
        || ApiError::BadRequest("invite_verifier must be 32 bytes as unpadded base64url".into());
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| invalid())?;
    <[u8; 32]>::try_from(bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_accepts_padded_and_unpadded() {
        let unpadded = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(parse_verifier(&unpadded).unwrap(), [7u8; 32]);
        assert_eq!(parse_verifier(&format!("{unpadded}=")).unwrap(), [7u8; 32]);
    }

    #[test]
    fn max_browsers_defaults_and_range() {
        assert_eq!(check_max_browsers(None).unwrap(), DEFAULT_MAX_BROWSERS);
        assert_eq!(check_max_browsers(Some(3)).unwrap(), 3);
        assert!(check_max_browsers(Some(0)).is_err());
        assert!(check_max_browsers(Some(MAX_BROWSERS_LIMIT + 1)).is_err());
    }

    #[test]
    fn verifier_rejects_wrong_length() {
        let short = URL_SAFE_NO_PAD.encode([7u8; 31]);
        assert!(matches!(
            parse_verifier(&short),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(parse_verifier("!!"), Err(ApiError::BadRequest(_))));
    }
}

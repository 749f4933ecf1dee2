//! `POST /v1/invites/challenge` and `POST /v1/invites/redeem`: a browser
//! proves that it has the session key and gets a follow cookie.
//!
//! Both routes take JSON only, so a page on another site cannot send them
//! without a CORS preflight, which the relay does not answer. Both count
//! against the client's rate limit before anything else. Neither the token,
//! the challenge, the proof nor the cookie is logged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::api::{
    InviteChallengeRequest, InviteChallengeResponse, InviteRedeemRequest, InviteRedeemResponse,
    CHALLENGE_LEN,
};
use sealcast_protocol::invite::{decode_base64url, TOKEN_LEN};
use sealcast_protocol::InviteAuthKey;
use serde::de::DeserializeOwned;

use super::audited::{self, peer_ip};
use super::{ApiError, AppState, MAX_BODY_BYTES};
use crate::audit::event::ACTOR_PATIENT;
use crate::audit::{Action, Event};
use crate::credentials::{random_token, Secret};
use crate::invites::challenges::{challenge_hash, random_challenge, Challenge, ChallengeRejected};
use crate::invites::cookie::{follow_cookie, set_follow_cookie};
use crate::listener::PeerAddr;
use crate::metrics::{AUTH_FAILURES, INVITES_REDEEMED, INVITE_CHALLENGES, INVITE_FAILURES};
use crate::store::{
    now_millis, NewChallenge, PresentedChallenge, Redemption, SessionRecord, StoreError,
};

/// Endpoint label of `POST /v1/invites/redeem` in the auth failure metric.
const REDEEM: &str = "redeem_invite";

/// Length in bytes of an invite proof, an HMAC-SHA256 output.
const PROOF_LEN: usize = 32;

/// Issues a challenge for an invite token. Responds 200 with the challenge,
/// the session id and the key fingerprint.
#[utoipa::path(
    post, path = "/v1/invites/challenge", operation_id = "invite_challenge", tag = "invites",
    request_body(content = sealcast_protocol::api::InviteChallengeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A challenge valid for one redemption, for two minutes at most", body = sealcast_protocol::api::InviteChallengeResponse),
        (status = 400, description = "Malformed body or token", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown invite, or a session created without `invite_verifier`", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn challenge(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admit(&state, peer)?;
    let request: InviteChallengeRequest = read_json(&headers, body).await?;
    let token = parse_token(&request.token)?;
    let record = redeemable_session(&state, &token).await?;

    let challenge = random_challenge();
    let stored = NewChallenge {
        challenge_hash: challenge_hash(&challenge),
        invite_token_hash: token.hash(),
        issued_at: now_millis(),
    };
    match state.store.issue_challenge(stored).await {
        Ok(()) => {}
        Err(StoreError::InviteChallengesFull) => {
            count_failure("challenges_full");
            tracing::error!("store is full of invite challenges: rejecting new challenges");
            return Err(ApiError::Unavailable(
                "too many invite challenges are pending: retry shortly".into(),
            ));
        }
        Err(error) => return Err(error.into()),
    }

    metrics::counter!(INVITE_CHALLENGES).increment(1);
    tracing::debug!(session_id = %record.session_id, "invite challenge issued");
    let body = InviteChallengeResponse {
        challenge: URL_SAFE_NO_PAD.encode(challenge),
        session_id: record.session_id,
        fingerprint: URL_SAFE_NO_PAD.encode(record.fingerprint),
    };
    Ok(no_store(Json(body).into_response()))
}

/// Checks a proof over a challenge and sets the follow cookie. Responds 200
/// with the session id and epoch. A browser that sends a valid follow cookie
/// of the same session gets it renewed without taking another browser place.
#[utoipa::path(
    post, path = "/v1/invites/redeem", operation_id = "redeem_invite", tag = "invites",
    description = "Checks a proof over a challenge and sets the follow cookie. A browser that sends a valid follow cookie of the same session gets it renewed without taking another place.",
    request_body(content = sealcast_protocol::api::InviteRedeemRequest, content_type = "application/json"),
    security((), ("follow_cookie" = [])),
    responses(
        (status = 200, description = "Redeemed; the follow credential is in the `Set-Cookie` header", body = sealcast_protocol::api::InviteRedeemResponse),
        (status = 400, description = "Malformed body, token, challenge or proof", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "The proof does not verify, or the challenge is unknown, used or expired", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown invite, or a session created without `invite_verifier`", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "Every one of the session's browser places is taken", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn redeem(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let source = peer_ip(peer.as_ref());
    admit(&state, peer)?;
    let request: InviteRedeemRequest = read_json(&headers, body).await?;
    let token = parse_token(&request.token)?;
    let challenge = parse_challenge(&request.challenge)?;
    let proof = decode_base64url(&request.proof).ok_or_else(|| {
        count_failure("malformed");
        ApiError::BadRequest("proof must be base64url".into())
    })?;
    let record = redeemable_session(&state, &token).await?;

    take_challenge(&state, &challenge, &token).await?;
    verify_proof(&record, &challenge, &proof)?;

    let (credential, renewed) = browser_credential(&state, &record, &headers).await?;
    let kind = if renewed { "renewed" } else { "new" };
    metrics::counter!(INVITES_REDEEMED, "kind" => kind).increment(1);
    if renewed {
        tracing::debug!(session_id = %record.session_id, "browser renewed its follow cookie");
    } else {
        tracing::info!(session_id = %record.session_id, "browser redeemed the invite");
    }
    let event = Event::new(Action::InviteRedeemed, ACTOR_PATIENT)
        .source(source)
        .session(record.session_id)
        .detail("kind", kind)
        .digest_of(&credential.hash());
    audited::record(&state, event).await;
    redeemed_response(&record, &credential)
}

/// Counts the request against the client's rate limit.
fn admit(state: &AppState, peer: Option<Extension<PeerAddr>>) -> Result<(), ApiError> {
    // Every request from the listener has a peer address. Any other shares one budget.
    let client = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(peer)| {
        peer.0.ip()
    });
    state.invites.limiter.check(client).map_err(|wait| {
        count_failure("rate_limited");
        ApiError::TooManyRequests(whole_seconds(wait))
    })
}

/// Reads a JSON body sent with `Content-Type: application/json`.
async fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    if !is_json(headers) {
        count_failure("not_json");
        return Err(ApiError::UnsupportedMediaType);
    }
    // Reading fails when the body is over the limit or the connection broke.
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    // serde's message could quote the body, which contains the token.
    serde_json::from_slice(&bytes).map_err(|_| {
        count_failure("malformed");
        ApiError::BadRequest("request body is not a valid invite request".into())
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Parses an invite token, padded or not, into its unpadded text form.
fn parse_token(text: &str) -> Result<Secret, ApiError> {
    match decode_base64url(text) {
        Some(bytes) if bytes.len() == TOKEN_LEN => Ok(Secret::new(URL_SAFE_NO_PAD.encode(bytes))),
        _ => {
            count_failure("malformed");
            Err(ApiError::BadRequest(
                "token must be the invite token of the link: 32 bytes as base64url".into(),
            ))
        }
    }
}

fn parse_challenge(text: &str) -> Result<Challenge, ApiError> {
    decode_base64url(text)
        .and_then(|bytes| Challenge::try_from(bytes).ok())
        .ok_or_else(|| {
            count_failure("malformed");
            ApiError::BadRequest(format!(
                "challenge must be the {CHALLENGE_LEN}-byte base64url value the relay issued"
            ))
        })
}

/// Looks up the session of an invite token and checks that a browser can
/// redeem it: 404 for an unknown invite or one without a verifier, 410 when
/// the session has ended.
async fn redeemable_session(state: &AppState, token: &Secret) -> Result<SessionRecord, ApiError> {
    let record = state
        .store
        .session_by_invite(token.hash())
        .await?
        .ok_or_else(|| {
            count_failure("unknown_invite");
            ApiError::NotFound(
                "invite not found: open the whole link, or ask the clinic for a new one".into(),
            )
        })?;
    if record.ended_at.is_some() {
        count_failure("session_ended");
        return Err(ended(&record));
    }
    if record.invite_verifier.is_none() {
        count_failure("no_verifier");
        return Err(ApiError::NotFound(format!(
            "invite of session {} cannot be redeemed in a browser: the clinician device registered no invite verifier",
            record.session_id
        )));
    }
    Ok(record)
}

/// Removes the presented challenge from the store, whatever the outcome, and
/// checks that it was issued for this token and has not expired.
async fn take_challenge(
    state: &AppState,
    challenge: &Challenge,
    token: &Secret,
) -> Result<(), ApiError> {
    let presented = PresentedChallenge {
        challenge_hash: challenge_hash(challenge),
        invite_token_hash: token.hash(),
        presented_at: now_millis(),
    };
    match state.store.take_challenge(presented).await {
        Ok(()) => Ok(()),
        Err(StoreError::InviteChallengeRejected { reason }) => Err(reject_challenge(reason)),
        Err(error) => Err(error.into()),
    }
}

fn reject_challenge(rejected: ChallengeRejected) -> ApiError {
    count_failure(rejected.label());
    metrics::counter!(AUTH_FAILURES, "endpoint" => REDEEM, "reason" => rejected.label())
        .increment(1);
    tracing::debug!(reason = rejected.label(), "invite challenge rejected");
    ApiError::Unauthorized("invite challenge is unknown, used or expired: request a new challenge")
}

/// Checks the proof in constant time against the session's stored verifier.
fn verify_proof(
    record: &SessionRecord,
    challenge: &Challenge,
    proof: &[u8],
) -> Result<(), ApiError> {
    let verifier = record.invite_verifier.map(InviteAuthKey::from_bytes);
    let valid = proof.len() == PROOF_LEN
        && verifier.is_some_and(|verifier| verifier.verify(challenge, proof));
    if valid {
        return Ok(());
    }
    count_failure("bad_proof");
    metrics::counter!(AUTH_FAILURES, "endpoint" => REDEEM, "reason" => "bad_proof").increment(1);
    tracing::warn!(session_id = %record.session_id, "invite proof rejected");
    Err(ApiError::Unauthorized(
        "invite proof does not verify: the key in the link does not belong to this session",
    ))
}

/// Returns the browser's follow credential and whether it was renewed: the
/// valid cookie of this session it sent, or a new one that takes one of the
/// session's browser places.
async fn browser_credential(
    state: &AppState,
    record: &SessionRecord,
    headers: &HeaderMap,
) -> Result<(Secret, bool), ApiError> {
    if let Some(presented) = follow_cookie(headers) {
        let owner = state.store.session_by_browser(presented.hash()).await?;
        if owner.is_some_and(|owner| owner.session_id == record.session_id) {
            return Ok((presented, true));
        }
    }

    let credential = random_token();
    let redemption = Redemption {
        session_id: record.session_id,
        credential_hash: credential.hash(),
        created_at: now_millis(),
    };
    match state.store.redeem_invite(redemption).await {
        Ok(()) => Ok((credential, false)),
        Err(StoreError::BrowsersExhausted { max_browsers, .. }) => {
            count_failure("browsers_exhausted");
            Err(ApiError::Conflict(format!(
                "invite was already redeemed by another browser and admits {max_browsers}: ask the clinic for a new link"
            )))
        }
        Err(StoreError::SessionEnded { .. }) => {
            count_failure("session_ended");
            Err(ended(record))
        }
        Err(error) => Err(error.into()),
    }
}

fn redeemed_response(record: &SessionRecord, credential: &Secret) -> Result<Response, ApiError> {
    let cookie = set_follow_cookie(credential).map_err(|error| {
        tracing::error!(%error, "failed to build the follow cookie header");
        ApiError::Internal
    })?;
    let body = InviteRedeemResponse {
        session_id: record.session_id,
        epoch: record.epoch,
    };
    let mut response = no_store(Json(body).into_response());
    response.headers_mut().insert(SET_COOKIE, cookie);
    Ok(response)
}

fn ended(record: &SessionRecord) -> ApiError {
    ApiError::Gone(format!(
        "session {} has ended, so its invite no longer works",
        record.session_id
    ))
}

/// Marks a response as not to be cached: it carries a challenge or a cookie.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn count_failure(reason: &'static str) {
    metrics::counter!(INVITE_FAILURES, "reason" => reason).increment(1);
}

/// Rounds a wait up to whole seconds, at least 1, for `Retry-After`.
fn whole_seconds(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_type_is_recognised() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, expected) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/jsonp", false),
        ] {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), expected, "{value}");
        }
    }

    #[test]
    fn token_is_normalized_or_rejected() {
        let unpadded = URL_SAFE_NO_PAD.encode([4u8; TOKEN_LEN]);
        assert_eq!(parse_token(&unpadded).unwrap().expose(), unpadded);
        assert_eq!(
            parse_token(&format!("{unpadded}=")).unwrap().expose(),
            unpadded
        );
        assert!(parse_token(&URL_SAFE_NO_PAD.encode([4u8; 16])).is_err());
        assert!(parse_token("not base64!").is_err());
    }

    #[test]
    fn challenge_must_have_its_length() {
        let good = URL_SAFE_NO_PAD.encode([9u8; CHALLENGE_LEN]);
        assert_eq!(parse_challenge(&good).unwrap(), [9u8; CHALLENGE_LEN]);
        assert!(parse_challenge(&URL_SAFE_NO_PAD.encode([9u8; 16])).is_err());
    }

    #[test]
    fn waits_round_up_to_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}

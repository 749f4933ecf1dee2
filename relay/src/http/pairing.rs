//! The pairing mailbox routes, which carry the messages of protocol section
//! 12 between a joining device and the clinician device of a session.
//!
//! The clinician device authenticates as it does to publish, and may use
//! only slots of its own session. A patient's device has no account: it
//! names the slot by the pairing id the clinician device shows, and its
//! first request returns a joiner token that authenticates the rest. A slot
//! opened for the clinician's second device admits in step 1 only a device
//! signed in as the same user of the same organization. Its
//! requests count against the per-client rate limit of the invite routes.
//! The status routes long-poll: they respond at once when it is the caller's
//! turn or the pairing is over, else when the slot changes or `wait` seconds
//! pass. No key, commitment or token is logged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::invite::decode_base64url;
use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::pairing::{MAX_DEVICE_WRAPPED_LEN, MIN_DEVICE_WRAPPED_LEN, WRAPPED_KEY_LEN};
use sealcast_protocol::pairing_api::{
    CommitmentBody, OpenPairingRequest, PairingId, PairingJoined, PairingOpened, PairingPurpose,
    PairingState, PairingStatus, PublicKeyBody, WrappedKeyBody, MAX_WAIT_SECONDS,
};
use sealcast_protocol::SessionId;

use super::audited::{self, peer_ip};
use super::json::read_json;
use super::staff::{self, authenticate, Principal};
use super::{ApiError, AppState};
use crate::audit::Action;
use crate::credentials::{random_token, Secret};
use crate::invites::cookie::set_follow_cookie;
use crate::listener::PeerAddr;
use crate::metrics::{PAIRING_FAILURES, PAIRING_STEPS};
use crate::pairing::{PairingRejected, Side, SlotOwner, SlotView, MAX_SLOTS_PER_SESSION};
use crate::store::{now_millis, Redemption, SessionRecord, StoreError};

/// Endpoint label of the clinician's pairing routes in the auth failure metric.
const CLINICIAN_PAIRING: &str = "clinician_pairing";

/// Endpoint label of step 1 from a clinician's second device in the auth failure metric.
const DEVICE_PAIRING: &str = "device_pairing";

/// Length in bytes of a commitment and of an X25519 public key.
const KEY_LEN: usize = 32;

/// Opens a pairing slot for the session, for a patient's device or, with
/// purpose `clinician_device`, for another device of the signed-in user.
/// Responds 201 with the pairing id.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/pairings", operation_id = "open_pairing", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits")),
    request_body(content = Option<sealcast_protocol::pairing_api::OpenPairingRequest>, content_type = "application/json", description = "Optional: without a body the slot is for a patient's device"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "Slot opened", body = sealcast_protocol::pairing_api::PairingOpened),
        (status = 400, description = "Malformed session id or body", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No session with this id in the caller's organization", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody),
        (status = 503, description = "Too many open slots for the session or the relay", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn open(
    State(state): State<AppState>,
    Path(session): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PairingOpened>), ApiError> {
    let (principal, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let request = read_open_request(&headers, body).await?;
    let owner = match request.purpose {
        PairingPurpose::Patient => None,
        PairingPurpose::ClinicianDevice => Some(SlotOwner {
            user_id: principal.user_id.clone(),
            organization_id: principal.organization_id.clone(),
        }),
    };
    let (id, lifetime) = state
        .pairings
        .open_for(record.session_id, owner, Instant::now())
        .map_err(|rejected| reject(rejected, None))?;

    count_step("open");
    tracing::info!(session_id = %record.session_id, purpose = ?request.purpose, "pairing slot opened");
    let body = PairingOpened {
        pairing_id: id.to_string(),
        expires_in: lifetime.as_secs(),
        purpose: request.purpose,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Returns the clinician device's view of a slot, long-polling while the
/// slot waits for the joining device.
#[utoipa::path(
    get, path = "/v1/sessions/{id}/pairings/{pairing}", operation_id = "clinician_pairing_status", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four"), ("wait" = Option<u64>, Query, description = "Seconds to wait for the joining device, at most 30")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "The slot as the clinician device sees it", body = sealcast_protocol::pairing_api::PairingStatus),
        (status = 400, description = "Malformed id or wait", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn clinician_status(
    State(state): State<AppState>,
    Path((session, pairing)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<PairingStatus>, ApiError> {
    let wait = parse_wait(query.as_deref())?;
    let id = parse_pairing_id(&pairing)?;
    let (_, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let session_id = record.session_id;
    let view = long_poll(&state, Side::Clinician, wait, || {
        state
            .pairings
            .clinician_view(id, session_id, Instant::now())
            .map_err(|rejected| reject(rejected, Some(id)))
    })
    .await?;
    Ok(Json(status(view)))
}

/// Step 2: takes the clinician device's public key. Responds 204.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/pairings/{pairing}/clinician-key", operation_id = "pairing_clinician_key", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    request_body(content = sealcast_protocol::pairing_api::PublicKeyBody, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Step 2 stored"),
        (status = 400, description = "Malformed id or key", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn clinician_key(
    State(state): State<AppState>,
    Path((session, pairing)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_pairing_id(&pairing)?;
    let (_, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let request: PublicKeyBody = read_json(&headers, body, "public key body").await?;
    let public_key = decode_fixed::<KEY_LEN>(&request.public_key, "public_key")?;
    state
        .pairings
        .respond(id, record.session_id, public_key, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;

    count_step("clinician_key");
    tracing::debug!(session_id = %record.session_id, "pairing: clinician key stored");
    Ok(StatusCode::NO_CONTENT)
}

/// Step 5: takes the wrapped key, stores a follow credential for the joining
/// device and hands both to it on its next status request. Responds 204.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/pairings/{pairing}/wrapped-key", operation_id = "pairing_wrapped_key", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    request_body(content = sealcast_protocol::pairing_api::WrappedKeyBody, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Step 5 stored with a follow credential for the joining device"),
        (status = 400, description = "Malformed id or wrapped key", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn wrapped_key(
    State(state): State<AppState>,
    Path((session, pairing)): Path<(String, String)>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = parse_pairing_id(&pairing)?;
    let (principal, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let request: WrappedKeyBody = read_json(&headers, body, "wrapped key body").await?;
    let session_id = record.session_id;
    let purpose = state
        .pairings
        .clinician_purpose(id, session_id, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    let wrapped = match purpose {
        PairingPurpose::Patient => {
            decode_fixed::<WRAPPED_KEY_LEN>(&request.wrapped_key, "wrapped_key")?.to_vec()
        }
        PairingPurpose::ClinicianDevice => decode_ranged(
            &request.wrapped_key,
            "wrapped_key",
            MIN_DEVICE_WRAPPED_LEN..=MAX_DEVICE_WRAPPED_LEN,
        )?,
    };
    let joiner_public = state
        .pairings
        .expect_wrapped_key(id, session_id, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;

    // A second device of the clinician publishes with its own sign-in and
    // never follows, so it gets no follow credential and no device id.
    let device_id = DeviceId::of_joiner(&joiner_public);
    let follow_token = match purpose {
        PairingPurpose::Patient => {
            // A patient's wrapped key names its key epoch in the clear in its
            // first four bytes, and its length was checked above.
            let key_epoch = u32::from_be_bytes([wrapped[0], wrapped[1], wrapped[2], wrapped[3]]);
            Some(store_follow_credential(&state, session_id, device_id, key_epoch).await?)
        }
        PairingPurpose::ClinicianDevice => None,
    };
    let token_hash = follow_token.as_ref().map(Secret::hash);
    // NOTE: a cancel that arrives between the check above and this step
    // leaves the stored credential unused. It stops working when the
    // session ends, like every follow credential.
    state
        .pairings
        .complete(id, session_id, wrapped, follow_token, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;

    count_step("wrapped_key");
    tracing::info!(%session_id, ?purpose, %device_id, "device paired");
    let mut event = audited::staff_event(Action::DevicePaired, &principal, peer_ip(peer.as_ref()))
        .session(session_id);
    if let Some(token_hash) = &token_hash {
        event = event.subject(device_id.to_string()).digest_of(token_hash);
    }
    audited::record(&state, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a slot for the clinician device, for example when the codes
/// differ. Responds 204.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}/pairings/{pairing}", operation_id = "clinician_cancel_pairing", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Pairing cancelled"),
        (status = 400, description = "Malformed id", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn clinician_cancel(
    State(state): State<AppState>,
    Path((session, pairing)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = parse_pairing_id(&pairing)?;
    let (_, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    state
        .pairings
        .cancel_by_clinician(id, record.session_id, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    count_step("cancel");
    tracing::info!(session_id = %record.session_id, "pairing cancelled by the clinician device");
    Ok(StatusCode::NO_CONTENT)
}

/// Step 1: takes a joining device's commitment. Responds 201 with the
/// joiner token. A slot for a clinician's second device also needs the
/// joiner's staff credential, of the user who opened the slot, and its
/// identity key.
#[utoipa::path(
    post, path = "/v1/pairings/{pairing}/commitment", operation_id = "pairing_commitment", tag = "pairing",
    params(("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    request_body(content = sealcast_protocol::pairing_api::CommitmentBody, content_type = "application/json"),
    security((), ("device_token" = [], "dpop_proof" = [])),
    responses(
        (status = 201, description = "Step 1 stored; the joiner token authenticates the later requests", body = sealcast_protocol::pairing_api::PairingJoined),
        (status = 400, description = "Malformed id, commitment or device key, or a device key sent to a slot for a patient's device", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "A slot for a clinician's second device, and no valid staff credential", body = sealcast_protocol::api::ErrorBody),
        (status = 403, description = "A slot for a clinician's second device, and the credential is of another user or organization", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn commitment(
    State(state): State<AppState>,
    Path(pairing): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PairingJoined>), ApiError> {
    admit(&state, peer)?;
    let id = parse_pairing_id(&pairing)?;
    check_session_open(&state, id).await?;
    let request: CommitmentBody = read_json(&headers, body, "commitment body").await?;
    let commitment = decode_fixed::<KEY_LEN>(&request.commitment, "commitment")?;
    let device_key = request
        .device_key
        .as_deref()
        .map(|key| decode_fixed::<KEY_LEN>(key, "device_key"))
        .transpose()?;
    let purpose = state
        .pairings
        .purpose(id, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    // A slot for a second device checks the sign-in first, so a patient's
    // device that sends no key learns that it cannot join at all.
    let joiner = match purpose {
        PairingPurpose::ClinicianDevice => {
            let owner = signed_in_joiner(&state, &method, &uri, &headers).await?;
            let Some(key) = device_key else {
                count_failure("malformed");
                return Err(ApiError::BadRequest(
                    "device_key is missing: this pairing hands the session to another device of the clinician, so send the joining device's identity key with the commitment".into(),
                ));
            };
            Some((owner, key))
        }
        // The mailbox rejects a device key sent to a patient slot.
        PairingPurpose::Patient => device_key.map(|key| (SlotOwner::default(), key)),
    };
    let (token, expires_in) = state
        .pairings
        .commit(
            id,
            commitment,
            joiner.as_ref().map(|(owner, key)| (owner, *key)),
            Instant::now(),
        )
        .map_err(|rejected| reject(rejected, Some(id)))?;

    count_step("commitment");
    tracing::debug!("pairing: joining device committed");
    let body = PairingJoined {
        joiner_token: token.expose().to_owned(),
        expires_in: expires_in.as_secs(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Returns the joining device's view of its slot, long-polling while the
/// slot waits for the clinician device. The view that carries the wrapped
/// key also carries the follow token, once, and sets it as the follow cookie.
#[utoipa::path(
    get, path = "/v1/pairings/{pairing}", operation_id = "joiner_pairing_status", tag = "pairing",
    params(("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four"), ("wait" = Option<u64>, Query, description = "Seconds to wait for the clinician device, at most 30")),
    security(("pairing_joiner_token" = [])),
    responses(
        (status = 200, description = "The slot as the joining device sees it; once completed, with the wrapped key and a follow token, which `Set-Cookie` also sets as the follow cookie", body = sealcast_protocol::pairing_api::PairingStatus),
        (status = 400, description = "Malformed id or wait", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or wrong joiner token", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn joiner_status(
    State(state): State<AppState>,
    Path(pairing): Path<String>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&state, peer)?;
    let wait = parse_wait(query.as_deref())?;
    let id = parse_pairing_id(&pairing)?;
    let token = joiner_token(&headers)?;
    check_session_open(&state, id).await?;
    let view = long_poll(&state, Side::Joiner, wait, || {
        state
            .pairings
            .joiner_view(id, &token, Instant::now())
            .map_err(|rejected| reject(rejected, Some(id)))
    })
    .await?;
    if view.state == PairingState::Completed {
        tracing::debug!(session_id = %view.session_id, "pairing: wrapped key delivered");
    }
    // A browser cannot send the follow token on the follow socket's upgrade,
    // so the response that hands it out also sets it as the follow cookie.
    let cookie = view
        .follow_token
        .as_ref()
        .map(set_follow_cookie)
        .transpose()
        .map_err(|error| {
            tracing::error!(%error, "failed to build the follow cookie header");
            ApiError::Internal
        })?;
    let mut response = Json(status(view)).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Step 3: takes the joining device's public key. Responds 204.
#[utoipa::path(
    post, path = "/v1/pairings/{pairing}/joiner-key", operation_id = "pairing_joiner_key", tag = "pairing",
    params(("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    request_body(content = sealcast_protocol::pairing_api::PublicKeyBody, content_type = "application/json"),
    security(("pairing_joiner_token" = [])),
    responses(
        (status = 204, description = "Step 3 stored"),
        (status = 400, description = "Malformed id or key", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or wrong joiner token", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn joiner_key(
    State(state): State<AppState>,
    Path(pairing): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    admit(&state, peer)?;
    let id = parse_pairing_id(&pairing)?;
    let token = joiner_token(&headers)?;
    check_session_open(&state, id).await?;
    let request: PublicKeyBody = read_json(&headers, body, "public key body").await?;
    let public_key = decode_fixed::<KEY_LEN>(&request.public_key, "public_key")?;
    state
        .pairings
        .reveal(id, &token, public_key, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    count_step("joiner_key");
    tracing::debug!("pairing: joiner key stored");
    Ok(StatusCode::NO_CONTENT)
}

/// Cancels a slot for the joining device. Responds 204.
#[utoipa::path(
    delete, path = "/v1/pairings/{pairing}", operation_id = "joiner_cancel_pairing", tag = "pairing",
    params(("pairing" = String, Path, description = "Pairing id, 12 digits in groups of four")),
    security(("pairing_joiner_token" = [])),
    responses(
        (status = 204, description = "Pairing cancelled"),
        (status = 400, description = "Malformed id", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or wrong joiner token", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session or pairing", body = sealcast_protocol::api::ErrorBody), (status = 409, description = "Not this step's turn, or the slot was taken by another device", body = sealcast_protocol::api::ErrorBody), (status = 410, description = "The pairing expired or was cancelled, or the session ended", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many requests from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn joiner_cancel(
    State(state): State<AppState>,
    Path(pairing): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admit(&state, peer)?;
    let id = parse_pairing_id(&pairing)?;
    let token = joiner_token(&headers)?;
    check_session_open(&state, id).await?;
    state
        .pairings
        .cancel_by_joiner(id, &token, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    count_step("cancel");
    tracing::info!("pairing cancelled by the joining device");
    Ok(StatusCode::NO_CONTENT)
}

/// Authenticates the joiner of a slot for a clinician's second device and
/// returns its account. A request without any credential gets a 401 whose
/// message names the next step, and every rejection counts as a pairing failure.
async fn signed_in_joiner(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<SlotOwner, ApiError> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION) {
        count_failure(PairingRejected::SignInRequired.label());
        tracing::debug!("device pairing step 1 rejected: no staff credential");
        return Err(ApiError::Unauthorized(SIGN_IN_REQUIRED));
    }
    match authenticate(state, headers, method, uri.path(), DEVICE_PAIRING).await {
        Ok(principal) => Ok(SlotOwner {
            user_id: principal.user_id,
            organization_id: principal.organization_id,
        }),
        Err(error) => {
            count_failure(PairingRejected::SignInRequired.label());
            tracing::debug!(%error, "device pairing step 1 rejected: invalid staff credential");
            Err(error)
        }
    }
}

/// The 401 reason for a joiner of a slot for a clinician's second device
/// that sent no staff credential.
const SIGN_IN_REQUIRED: &str = "this pairing hands a clinician's session to another of their devices: sign in on the joining device as the same clinician with `sealcast login`, then run `sealcast pair adopt`";

/// Reads the optional body of the request that opens a slot. A request
/// without `Content-Type` and without a body opens a slot for a patient's device.
async fn read_open_request(
    headers: &HeaderMap,
    body: Body,
) -> Result<OpenPairingRequest, ApiError> {
    if headers.contains_key(axum::http::header::CONTENT_TYPE) {
        return read_json(headers, body, "pairing request")
            .await
            .inspect_err(|_| {
                count_failure("malformed");
            });
    }
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(super::MAX_BODY_BYTES))?;
    if !bytes.is_empty() {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(OpenPairingRequest {
        purpose: PairingPurpose::Patient,
    })
}

/// Authenticates a clinician of the session in the path and requires the
/// session to be open.
async fn clinician(
    state: &AppState,
    session: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Principal, SessionRecord), ApiError> {
    let principal = authenticate(state, headers, method, uri.path(), CLINICIAN_PAIRING).await?;
    let record = staff::clinician_session(state, &principal, session, CLINICIAN_PAIRING).await?;
    if record.ended_at.is_some() {
        count_failure("session_ended");
        return Err(ended(record.session_id));
    }
    Ok((principal, record))
}

/// Rejects a joining device's request with 410 when the slot's session has
/// ended. The store is read, not only this node's slots, so a session that
/// another relay node ended closes its slots here too.
async fn check_session_open(state: &AppState, id: PairingId) -> Result<(), ApiError> {
    let session_id = state
        .pairings
        .session_of(id, Instant::now())
        .map_err(|rejected| reject(rejected, Some(id)))?;
    let open = state
        .store
        .session(session_id)
        .await?
        .is_some_and(|record| record.ended_at.is_none());
    if open {
        return Ok(());
    }
    let dropped = state.pairings.end_session(session_id);
    tracing::debug!(%session_id, dropped, "pairing slots of an ended session dropped");
    Err(reject(PairingRejected::SessionEnded, Some(id)))
}

/// Waits until `fetch` returns a view in which it is `side`'s turn or the
/// pairing is over, the slot stops changing for `wait`, or the relay shuts
/// down. Returns the last view.
async fn long_poll(
    state: &AppState,
    side: Side,
    wait: Duration,
    fetch: impl Fn() -> Result<SlotView, ApiError>,
) -> Result<SlotView, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut view = fetch()?;
        if !waits_for_other_side(view.state, side) {
            return Ok(view);
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, view.changes.changed()) => {
                // A timeout or a dropped slot ends the wait, and a dropped
                // slot is then reported by the next fetch.
                if changed.is_err() {
                    return Ok(view);
                }
            }
            () = state.shutdown.triggered() => return Ok(view),
        }
    }
}

/// Returns whether a slot in `state` waits for the device other than `side`.
fn waits_for_other_side(state: PairingState, side: Side) -> bool {
    match side {
        Side::Clinician => matches!(state, PairingState::Open | PairingState::Responded),
        Side::Joiner => matches!(state, PairingState::Committed | PairingState::Revealed),
    }
}

fn status(view: SlotView) -> PairingStatus {
    let encode = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    // Only the joining device's view of a completed slot carries the wrapped key.
    let completed = view.state == PairingState::Completed && view.wrapped_key.is_some();
    PairingStatus {
        state: view.state,
        expires_in: view.expires_in.as_secs(),
        purpose: view.purpose,
        commitment: view.commitment.as_ref().map(|bytes| encode(bytes)),
        device_key: view.device_key.as_ref().map(|bytes| encode(bytes)),
        clinician_public: view.clinician_public.as_ref().map(|bytes| encode(bytes)),
        joiner_public: view.joiner_public.as_ref().map(|bytes| encode(bytes)),
        wrapped_key: view.wrapped_key.as_deref().map(encode),
        session_id: completed.then_some(view.session_id),
        follow_token: view.follow_token.map(|token| token.expose().to_owned()),
    }
}

/// Makes the joined device's follow credential and stores its hash with the
/// device id and the key epoch of the key the pairing delivers.
async fn store_follow_credential(
    state: &AppState,
    session_id: SessionId,
    device_id: DeviceId,
    key_epoch: u32,
) -> Result<Secret, ApiError> {
    let token = random_token();
    let device = Redemption {
        session_id,
        credential_hash: token.hash(),
        created_at: now_millis(),
    };
    match state.store.pair_device(device, device_id, key_epoch).await {
        Ok(()) => Ok(token),
        Err(StoreError::SessionEnded { .. }) => {
            count_failure("session_ended");
            Err(ended(session_id))
        }
        Err(error) => Err(error.into()),
    }
}

/// Counts a joining device's request against its client's rate limit.
fn admit(state: &AppState, peer: Option<Extension<PeerAddr>>) -> Result<(), ApiError> {
    let client = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(peer)| {
        peer.0.ip()
    });
    state.invites.limiter.check(client).map_err(|wait| {
        count_failure("rate_limited");
        ApiError::TooManyRequests(wait.as_secs().max(1))
    })
}

/// Reads the joiner token from `Authorization: Bearer`.
fn joiner_token(headers: &HeaderMap) -> Result<Secret, ApiError> {
    let missing = "missing joiner token: send the token from the commitment response as Authorization: Bearer <token>";
    let text = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            count_failure("wrong_joiner");
            ApiError::Unauthorized(missing)
        })?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Secret::new(token.trim().to_owned()))
        }
        _ => {
            count_failure("wrong_joiner");
            Err(ApiError::Unauthorized(missing))
        }
    }
}

fn parse_pairing_id(text: &str) -> Result<PairingId, ApiError> {
    text.parse().map_err(|error| {
        count_failure("malformed");
        ApiError::BadRequest(format!("{error}"))
    })
}

/// Parses the optional `wait` query parameter: seconds to long-poll, 0 to
/// [`MAX_WAIT_SECONDS`], default 0.
fn parse_wait(query: Option<&str>) -> Result<Duration, ApiError> {
    let mut wait = 0;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "wait" {
            count_failure("malformed");
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {name:?}: the status routes take only wait"
            )));
        }
        wait = value
            .parse()
            .ok()
            .filter(|seconds| *seconds <= MAX_WAIT_SECONDS)
            .ok_or_else(|| {
                count_failure("malformed");
                ApiError::BadRequest(format!(
                    "wait must be whole seconds from 0 to {MAX_WAIT_SECONDS}"
                ))
            })?;
    }
    Ok(Duration::from_secs(wait))
}

/// Decodes a base64url field whose length must be in `range`.
fn decode_ranged(
    text: &str,
    field: &'static str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<Vec<u8>, ApiError> {
    let Some(bytes) = decode_base64url(text) else {
        count_failure("malformed");
        return Err(ApiError::BadRequest(format!(
            "{field} must be unpadded base64url"
        )));
    };
    if !range.contains(&bytes.len()) {
        count_failure("invalid_length");
        return Err(ApiError::BadRequest(format!(
            "{field} must be {} to {} bytes, got {}",
            range.start(),
            range.end(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Decodes a base64url field that must hold exactly `N` bytes.
fn decode_fixed<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], ApiError> {
    let Some(bytes) = decode_base64url(text) else {
        count_failure("malformed");
        return Err(ApiError::BadRequest(format!(
            "{field} must be unpadded base64url"
        )));
    };
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
        count_failure("invalid_length");
        ApiError::BadRequest(format!("{field} must be {N} bytes, got {}", bytes.len()))
    })
}

/// Turns a refused step into its response and counts it.
fn reject(rejected: PairingRejected, id: Option<PairingId>) -> ApiError {
    count_failure(rejected.label());
    let slot = id.map_or_else(|| "pairing".to_owned(), |id| format!("pairing {id}"));
    tracing::debug!(reason = rejected.label(), "pairing step rejected");
    match rejected {
        PairingRejected::Unknown => ApiError::NotFound(format!(
            "{slot} not found: check the id the clinician device shows, or start a new pairing there"
        )),
        PairingRejected::Expired => {
            ApiError::Expired("pairing expired: start a new pairing on the clinician device")
        }
        PairingRejected::Cancelled => ApiError::Conflict(format!(
            "{slot} was cancelled by one of the devices: start a new pairing on the clinician device"
        )),
        PairingRejected::AlreadyJoined => ApiError::Conflict(format!(
            "another device already joined {slot}: start a new pairing on the clinician device"
        )),
        PairingRejected::OutOfOrder { state, expected } => ApiError::Conflict(format!(
            "{slot} is in state {}, but this step needs state {}: send the steps in order",
            state_name(state),
            state_name(expected)
        )),
        PairingRejected::WrongJoiner => ApiError::Unauthorized(
            "invalid joiner token: send the token the commitment response returned",
        ),
        PairingRejected::SessionFull => ApiError::Conflict(format!(
            "the session already has {MAX_SLOTS_PER_SESSION} open pairings: finish or cancel one"
        )),
        PairingRejected::RelayFull => {
            tracing::warn!("pairing mailbox is full: refusing new slots");
            ApiError::Unavailable("too many pairings are open on the relay: retry shortly".into())
        }
        PairingRejected::SignInRequired => ApiError::Unauthorized(SIGN_IN_REQUIRED),
        PairingRejected::OtherClinician => ApiError::Forbidden(
            "this pairing hands a clinician's session to another of their devices, and the joining device is signed in as another user or organization: sign in as the clinician who opened the pairing",
        ),
        PairingRejected::SessionEnded => ApiError::Gone(format!(
            "the session of {slot} has ended: a device can no longer pair with it"
        )),
        PairingRejected::NotDeviceSlot => ApiError::BadRequest(format!(
            "{slot} is for a patient's device, which sends no device_key: run `sealcast pair join` for it, or open the pairing with `sealcast pair offer --device`"
        )),
    }
}

fn state_name(state: PairingState) -> &'static str {
    match state {
        PairingState::Open => "open",
        PairingState::Committed => "committed",
        PairingState::Responded => "responded",
        PairingState::Revealed => "revealed",
        PairingState::Completed => "completed",
        PairingState::Cancelled => "cancelled",
    }
}

fn ended(session_id: SessionId) -> ApiError {
    ApiError::Gone(format!(
        "session {session_id} has ended: a device can no longer pair with it"
    ))
}

fn count_step(step: &'static str) {
    metrics::counter!(PAIRING_STEPS, "step" => step).increment(1);
}

fn count_failure(reason: &'static str) {
    metrics::counter!(PAIRING_FAILURES, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_bounded_seconds() {
        assert_eq!(parse_wait(None).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("wait=7")).unwrap(), Duration::from_secs(7));
        assert!(parse_wait(Some("wait=31")).is_err());
        assert!(parse_wait(Some("wait=-1")).is_err());
        assert!(parse_wait(Some("from=3")).is_err());
    }

    #[test]
    fn fixed_fields_name_their_length() {
        let good = URL_SAFE_NO_PAD.encode([1u8; 32]);
        assert_eq!(decode_fixed::<32>(&good, "commitment").unwrap(), [1u8; 32]);
        let short = URL_SAFE_NO_PAD.encode([1u8; 31]);
        let error = decode_fixed::<32>(&short, "commitment").unwrap_err();
        assert_eq!(error.to_string(), "commitment must be 32 bytes, got 31");
        assert!(decode_fixed::<32>("not base64!", "commitment").is_err());
    }

    #[test]
    fn each_side_waits_only_for_the_other() {
        assert!(waits_for_other_side(PairingState::Open, Side::Clinician));
        assert!(!waits_for_other_side(
            PairingState::Committed,
            Side::Clinician
        ));
        assert!(waits_for_other_side(PairingState::Committed, Side::Joiner));
        assert!(!waits_for_other_side(PairingState::Completed, Side::Joiner));
        assert!(!waits_for_other_side(PairingState::Cancelled, Side::Joiner));
    }
}

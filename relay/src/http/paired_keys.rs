//! Wrapped keys of later key epochs for paired devices, and removing a
//! paired device (protocol section 12.4).
//!
//! After a key rotation the clinician device wraps the new key for each
//! paired device and posts it here, authenticated as for publishing. The
//! paired device long-polls the fetch route with its follow token. The
//! relay keeps the wrapped keys in its store, so every relay node on the
//! data directory serves them and they outlive a restart. A node wakes its
//! own waiting fetches at once when a key is posted to it, a device is
//! removed or the session ends, and rechecks the store every
//! [`RECHECK_INTERVAL`] for such changes made on other nodes.
//!
//! Only the clinician who created the session may post keys and remove
//! devices, from any of their signed-in devices. Other clinicians of the
//! organization and administrators get 403: they hold no session key to
//! wrap, and a key they could post would lock the device out of later keys.
//!
//! The relay cannot open a wrapped key: it checks only its length and the
//! epoch in its first four bytes. No wrapped key or token is logged.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::invite::decode_base64url;
use sealcast_protocol::paired_keys::{DeviceId, PairedKeys, MAX_KEYS_WAIT_SECONDS};
use sealcast_protocol::pairing::WRAPPED_KEY_LEN;
use sealcast_protocol::pairing_api::WrappedKeyBody;
use sealcast_protocol::SessionId;

use super::audited::{self, peer_ip};
use super::auth::{paired_device, PAIRED_KEYS};
use super::json::read_json;
use super::staff::{self, authenticate, Principal};
use super::{ApiError, AppState};
use crate::audit::Action;
use crate::credentials::CredentialHash;
use crate::listener::PeerAddr;
use crate::metrics::{PAIRED_SOCKETS_CLOSED, PAIRING_FAILURES, PAIRING_STEPS};
use crate::store::{now_millis, PairedKey, SessionRecord, StoreError, MAX_KEY_EPOCH_STEP};

/// Endpoint label of the clinician's paired device routes in the auth failure metric.
const CLINICIAN_DEVICES: &str = "clinician_devices";

/// Interval at which a waiting fetch rereads the store, for keys, removals
/// and session ends that another relay node stored.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Stores a wrapped key of a later key epoch for a paired device. Responds 204.
#[utoipa::path(
    post, path = "/v1/sessions/{id}/devices/{device}/keys", operation_id = "post_paired_key", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("device" = String, Path, description = "Paired device id, 16 hex digits")),
    request_body(content = sealcast_protocol::pairing_api::WrappedKeyBody, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Wrapped key stored"),
        (status = 400, description = "Malformed id or wrapped key, or a wrapped key of key epoch 0", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, not the clinician who created the session, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session, or no paired device with this id in the session", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "A newer key epoch is already stored for the device, or the key epoch is more than 16 above the device's newest one", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn post_key(
    State(state): State<AppState>,
    Path((session, device)): Path<(String, String)>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let device_id = parse_device_id(&device)?;
    let (principal, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let request: WrappedKeyBody = read_json(&headers, body, "wrapped key body").await?;
    let wrapped_key = decode_wrapped_key(&request.wrapped_key)?;
    let key_epoch = key_epoch_of(&wrapped_key)?;
    let session_id = record.session_id;

    let key = PairedKey {
        session_id,
        device_id,
        key_epoch,
        wrapped_key,
        created_at: now_millis(),
    };
    state
        .store
        .store_paired_key(key)
        .await
        .map_err(|error| store_rejection(error, device_id))?;
    state.paired_keys_changed.send_replace(());

    count_step("key_posted");
    tracing::info!(%session_id, %device_id, key_epoch, "wrapped key stored for a paired device");
    let event = audited::staff_event(Action::PairedKeyPosted, &principal, peer_ip(peer.as_ref()))
        .session(session_id)
        .subject(device_id.to_string())
        .detail("key_epoch", key_epoch);
    audited::record(&state, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a paired device: revokes its follow token, deletes its wrapped
/// keys and closes the follow sockets it has open, on this node and through
/// fan-out on the others. Responds 204.
#[utoipa::path(
    delete, path = "/v1/sessions/{id}/devices/{device}", operation_id = "remove_paired_device", tag = "pairing",
    params(("id" = String, Path, description = "Session id, 32 hex digits"), ("device" = String, Path, description = "Paired device id, 16 hex digits")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Device removed"),
        (status = 400, description = "Malformed id", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, not the clinician who created the session, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "Unknown session, or no paired device with this id in the session", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn remove_device(
    State(state): State<AppState>,
    Path((session, device)): Path<(String, String)>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let device_id = parse_device_id(&device)?;
    let (principal, record) = clinician(&state, &session, &method, &uri, &headers).await?;
    let session_id = record.session_id;
    state
        .store
        .remove_paired_device(session_id, device_id)
        .await
        .map_err(|error| store_rejection(error, device_id))?;
    // The credential is gone from the store first, so a socket that opens
    // now fails its own recheck of the credential.
    let closed = state
        .hubs
        .hub(&session_id)
        .map_or(0, |hub| hub.close_paired_device(device_id));
    metrics::counter!(PAIRED_SOCKETS_CLOSED, "trigger" => "removal").increment(closed as u64);
    state
        .hubs
        .fanout()
        .paired_device_removed(session_id, device_id);
    state.paired_keys_changed.send_replace(());

    count_step("device_removed");
    tracing::info!(%session_id, %device_id, closed_sockets = closed, "paired device removed");
    let event = audited::staff_event(Action::DeviceUnpaired, &principal, peer_ip(peer.as_ref()))
        .session(session_id)
        .subject(device_id.to_string());
    audited::record(&state, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the calling paired device's wrapped keys of epochs after
/// `after`, long-polling for up to `wait` seconds while there are none.
#[utoipa::path(
    get, path = "/v1/paired/keys", operation_id = "fetch_paired_keys", tag = "pairing",
    params(
        ("after" = Option<u32>, Query, description = "Newest key epoch the device holds; only later epochs are returned. Omitted: every stored key"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait while no key is newer, at most 30")
    ),
    security(("paired_follow_token" = [])),
    responses(
        (status = 200, description = "Wrapped keys of later epochs, oldest first; empty when none arrived in time", body = sealcast_protocol::paired_keys::PairedKeys),
        (status = 400, description = "Malformed after or wait", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or invalid follow token, a removed device, or an ended session", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "The device was paired before the relay stored device ids", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session ended while the fetch waited", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn fetch_keys(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<PairedKeys>, ApiError> {
    let (after, wait) = parse_fetch_query(query.as_deref())?;
    let (record, device_id, credential_hash) = paired_device(&state, &headers).await?;
    let Some(device_id) = device_id else {
        count_failure("no_device_id");
        return Err(ApiError::Conflict(
            "this device was paired before the relay stored device ids, so it gets no later keys: pair it again".into(),
        ));
    };
    let session_id = record.session_id;

    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = state.paired_keys_changed.subscribe();
    let mut first = true;
    loop {
        // Marks the current value seen before the reads, so a change during
        // them wakes the wait below.
        changes.borrow_and_update();
        if !first {
            check_still_paired(&state, credential_hash, session_id).await?;
        }
        first = false;
        let keys = state
            .store
            .paired_keys_after(session_id, device_id, after)
            .await?;
        let now = tokio::time::Instant::now();
        if !keys.is_empty() || now >= deadline {
            if !keys.is_empty() {
                metrics::counter!(PAIRING_STEPS, "step" => "key_fetched")
                    .increment(keys.len() as u64);
                tracing::debug!(%session_id, %device_id, keys = keys.len(), "paired device fetched wrapped keys");
            }
            let wrapped_keys = keys.iter().map(|key| URL_SAFE_NO_PAD.encode(key)).collect();
            return Ok(Json(PairedKeys { wrapped_keys }));
        }
        let recheck = deadline.min(now + RECHECK_INTERVAL);
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(recheck) => {}
            () = state.shutdown.triggered() => {
                return Ok(Json(PairedKeys { wrapped_keys: Vec::new() }));
            }
        }
    }
}

/// Rejects a waiting fetch whose device was removed (401) or whose session
/// ended (410) since the fetch began. Both delete the follow credential.
async fn check_still_paired(
    state: &AppState,
    credential_hash: CredentialHash,
    session_id: SessionId,
) -> Result<(), ApiError> {
    if state.store.paired_device(credential_hash).await?.is_some() {
        return Ok(());
    }
    let ended = state
        .store
        .session(session_id)
        .await?
        .is_none_or(|record| record.ended_at.is_some());
    if ended {
        count_failure("session_ended");
        tracing::debug!(%session_id, "paired key fetch ended: the session ended");
        return Err(ApiError::Gone(format!(
            "session {session_id} has ended: its paired devices get no more keys"
        )));
    }
    Err(staff::reject(
        PAIRED_KEYS,
        "device_removed",
        "this device was removed from the session: pair it again to follow",
    ))
}

/// Authenticates the clinician who created the session in the path and
/// requires the session to be open.
async fn clinician(
    state: &AppState,
    session: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(Principal, SessionRecord), ApiError> {
    let principal = authenticate(state, headers, method, uri.path(), CLINICIAN_DEVICES).await?;
    let record = staff::clinician_session(state, &principal, session, CLINICIAN_DEVICES).await?;
    // A session created before accounts existed has no creator, so no one
    // may manage its paired devices.
    if record.created_by_user.as_deref() != Some(principal.user_id.as_str()) {
        return Err(staff::forbid(
            CLINICIAN_DEVICES,
            "not_session_creator",
            "only the clinician who created this session may manage its paired devices",
        ));
    }
    if record.ended_at.is_some() {
        count_failure("session_ended");
        return Err(ended(&record));
    }
    Ok((principal, record))
}

fn parse_device_id(text: &str) -> Result<DeviceId, ApiError> {
    text.parse().map_err(|error| {
        count_failure("malformed");
        ApiError::BadRequest(format!("{error}"))
    })
}

fn decode_wrapped_key(text: &str) -> Result<Vec<u8>, ApiError> {
    let Some(bytes) = decode_base64url(text) else {
        count_failure("malformed");
        return Err(ApiError::BadRequest(
            "wrapped_key must be unpadded base64url".into(),
        ));
    };
    if bytes.len() != WRAPPED_KEY_LEN {
        count_failure("invalid_length");
        return Err(ApiError::BadRequest(format!(
            "wrapped_key must be {WRAPPED_KEY_LEN} bytes, got {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Reads the key epoch from a wrapped key's first four bytes. Rejects epoch
/// 0, whose key every paired device gets in its pairing slot.
fn key_epoch_of(wrapped_key: &[u8]) -> Result<u32, ApiError> {
    let mut epoch = [0u8; 4];
    epoch.copy_from_slice(&wrapped_key[..4]);
    let key_epoch = u32::from_be_bytes(epoch);
    if key_epoch == 0 {
        count_failure("epoch_zero");
        return Err(ApiError::BadRequest(
            "wrapped_key names key epoch 0, which the pairing itself delivers: post keys of later epochs only".into(),
        ));
    }
    Ok(key_epoch)
}

/// Parses the fetch route's query: `after` (a key epoch) and `wait`
/// (seconds, 0 to [`MAX_KEYS_WAIT_SECONDS`], default 0).
fn parse_fetch_query(query: Option<&str>) -> Result<(Option<u32>, Duration), ApiError> {
    let mut after = None;
    let mut wait = 0;
    let malformed = |message: String| {
        count_failure("malformed");
        ApiError::BadRequest(message)
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" => {
                after = Some(value.parse::<u32>().map_err(|_| {
                    malformed("after must be a key epoch from 0 to 4294967295".into())
                })?);
            }
            "wait" => {
                wait = value
                    .parse()
                    .ok()
                    .filter(|seconds| *seconds <= MAX_KEYS_WAIT_SECONDS)
                    .ok_or_else(|| {
                        malformed(format!(
                            "wait must be whole seconds from 0 to {MAX_KEYS_WAIT_SECONDS}"
                        ))
                    })?;
            }
            _ => {
                return Err(malformed(format!(
                    "unknown query parameter {name:?}: this route takes after and wait"
                )))
            }
        }
    }
    Ok((after, Duration::from_secs(wait)))
}

/// Turns a store refusal into its response and counts it.
fn store_rejection(error: StoreError, device_id: DeviceId) -> ApiError {
    match error {
        StoreError::UnknownPairedDevice { .. } => {
            count_failure("unknown_device");
            ApiError::NotFound(format!(
                "no paired device {device_id} in this session: it was removed, or it paired with another session"
            ))
        }
        StoreError::StalePairedKey { key_epoch, newest } => {
            count_failure("stale_epoch");
            ApiError::Conflict(format!(
                "key epoch {key_epoch} is older than key epoch {newest}, which is already stored for device {device_id}: wrap the newest key"
            ))
        }
        StoreError::PairedKeyTooFar { key_epoch, newest } => {
            count_failure("epoch_too_far");
            ApiError::Conflict(format!(
                "key epoch {key_epoch} is more than {MAX_KEY_EPOCH_STEP} above key epoch {newest}, the newest known for device {device_id}: each rotation adds one to the epoch, so post the keys in order"
            ))
        }
        StoreError::SessionEnded { session_id } => {
            count_failure("session_ended");
            ApiError::Gone(format!(
                "session {session_id} has ended: its paired devices get no more keys"
            ))
        }
        other => other.into(),
    }
}

fn ended(record: &SessionRecord) -> ApiError {
    ApiError::Gone(format!(
        "session {} has ended: its paired devices get no more keys",
        record.session_id
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
    fn fetch_query_is_bounded() {
        assert_eq!(parse_fetch_query(None).unwrap(), (None, Duration::ZERO));
        assert_eq!(
            parse_fetch_query(Some("after=2&wait=30")).unwrap(),
            (Some(2), Duration::from_secs(30))
        );
        assert!(parse_fetch_query(Some("wait=31")).is_err());
        assert!(parse_fetch_query(Some("after=-1")).is_err());
        assert!(parse_fetch_query(Some("after=4294967296")).is_err());
        assert!(parse_fetch_query(Some("from=1")).is_err());
    }

    #[test]
    fn wrapped_key_needs_length_and_later_epoch() {
        let short = URL_SAFE_NO_PAD.encode([1u8; 111]);
        assert_eq!(
            decode_wrapped_key(&short).unwrap_err().to_string(),
            "wrapped_key must be 112 bytes, got 111"
        );
        assert!(decode_wrapped_key("not base64!").is_err());
        let mut wrapped = [0u8; WRAPPED_KEY_LEN];
        assert!(key_epoch_of(&wrapped).is_err());
        wrapped[3] = 2;
        assert_eq!(key_epoch_of(&wrapped).unwrap(), 2);
    }
}

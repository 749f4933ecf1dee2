//! Magic-link sign-in routes: `POST /v1/auth/login`, `/login/confirm`,
//! `/login/poll` and `/login/totp`.
//!
//! A started sign-in gets 202 with the same body whether or not the address
//! belongs to a user. Failures get 400 for a malformed request, 401 for a
//! bad proof or code, 404 for an unknown sign-in or link, 409 for a step out
//! of order, 410 for a sign-in that expired, was used or had too many wrong
//! codes, and 429 past a rate limit.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sealcast_protocol::auth::{
    LoginConfirmRequest, LoginConfirmed, LoginKind, LoginPollRequest, LoginPollResponse,
    LoginRequest, LoginStarted, LoginTotpRequest,
};

use super::audited::{self, peer_ip};
use super::cookies::set_sign_in_cookies;
use super::json::read_json;
use super::limits::{admit_account, admit_ip, client_address};
use super::staff::{key_proof, reject};
use super::{ApiError, AppState};
use crate::accounts::admin::checked_email;
use crate::accounts::login::{
    self, LoginKey, NewLogin, PendingDevice, PendingLogin, MAX_DEVICE_NAME_CHARS,
    MAX_SECOND_FACTOR_ATTEMPTS, POLL_INTERVAL_SECS,
};
use crate::accounts::{devices, now_unix, recovery, store, totp, Issued};
use crate::audit::{Action, Event};
use crate::credentials::{random_token, Secret};
use crate::listener::PeerAddr;
use crate::metrics::SIGN_INS;
use crate::store::{now_millis, StoreError};

const LOGIN: &str = "login";
const CONFIRM: &str = "login_confirm";
const POLL: &str = "login_poll";
const LOGIN_TOTP: &str = "login_totp";

/// Device name stored when a device sends none.
const DEFAULT_DEVICE_NAME: &str = "unnamed device";

/// Starts a sign-in and mails the link to the user, if the address belongs
/// to an enabled user. With a DPoP proof the sign-in is bound to the
/// proof's key.
#[utoipa::path(
    post, path = "/v1/auth/login", operation_id = "start_login", tag = "sign-in",
    description = "Mails a magic link if the address belongs to an enabled user. The response is the same whether or not it does. A device sends a DPoP proof to bind the sign-in to its key.",
    request_body(content = sealcast_protocol::auth::LoginRequest, content_type = "application/json"),
    security((), ("dpop_proof" = [])),
    responses(
        (status = 202, description = "Sign-in started", body = sealcast_protocol::auth::LoginStarted),
        (status = 400, description = "Malformed body, address or proof", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Invalid DPoP proof", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many sign-ins from this client or for this address; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<LoginStarted>), ApiError> {
    admit_ip(&state, peer.as_ref(), LOGIN)?;
    let proof = key_proof(&state, &headers, &method, uri.path(), LOGIN)?;
    let request: LoginRequest = read_json(&headers, body, "sign-in request").await?;
    let email =
        checked_email(&request.email).map_err(|error| ApiError::BadRequest(error.to_string()))?;
    // The budget is per address and client, so that another client cannot
    // spend a user's budget and keep them from getting links.
    let client = client_address(peer.as_ref());
    admit_account(&state, &format!("{email} {client}"), LOGIN)?;
    let device = match (proof, request.device_name) {
        (Some(proof), name) => Some(PendingDevice {
            public_key: proof.public_key,
            thumbprint: proof.thumbprint,
            name: device_name(name)?,
        }),
        (None, Some(_)) => {
            return Err(ApiError::BadRequest(
                "device_name needs a DPoP proof by the device key".into(),
            ))
        }
        (None, None) => None,
    };

    let login_id = random_token();
    let token = random_token();
    let now = now_millis();
    let lifetime = state.accounts.magic_link_lifetime;
    let mut pending = NewLogin {
        login_id_hash: login_id.hash(),
        token_hash: token.hash(),
        user_id: None,
        device,
        created_at: now,
        expires_at: now.saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)),
    };
    let lookup = email.clone();
    let user = state
        .accounts
        .db
        .run(move |conn| {
            login::delete_expired(conn, now)?;
            let user =
                store::user_by_email(conn, &lookup)?.filter(|user| user.disabled_at.is_none());
            pending.user_id = user.as_ref().map(|user| user.user_id.clone());
            login::insert(conn, &pending)?;
            Ok::<_, StoreError>(user)
        })
        .await?;

    if let Some(user) = user {
        // Sent in the background, so the response takes the same time for
        // known and unknown addresses.
        let link = Secret::new(format!(
            "{}/login#token={}",
            state.public_url,
            token.expose()
        ));
        let accounts = state.accounts.clone();
        tokio::spawn(async move {
            if let Err(error) = accounts
                .mailer
                .send_magic_link(&user.email, &link, lifetime)
                .await
            {
                tracing::warn!(user_id = %user.user_id, %error, "sign-in link not delivered");
            }
        });
    }
    metrics::counter!(SIGN_INS, "step" => "started", "outcome" => "ok").increment(1);
    let started = LoginStarted {
        login_id: login_id.expose().to_owned(),
        expires_in: lifetime.as_secs(),
        poll_interval: POLL_INTERVAL_SECS,
    };
    Ok((StatusCode::ACCEPTED, Json(started)))
}

/// Confirms a sign-in with the token of its link. A browser sign-in that
/// needs no second factor completes here and gets the cookies.
#[utoipa::path(
    post, path = "/v1/auth/login/confirm", operation_id = "confirm_login", tag = "sign-in",
    description = "Approves a sign-in with the token from its magic link. A browser sign-in that needs no second factor gets its cookies here.",
    request_body(content = sealcast_protocol::auth::LoginConfirmRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Sign-in approved", body = sealcast_protocol::auth::LoginConfirmed),
        (status = 400, description = "Malformed body or token", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Unknown token", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The sign-in expired or was already used", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many attempts; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admit_ip(&state, peer.as_ref(), CONFIRM)?;
    let request: LoginConfirmRequest = read_json(&headers, body, "confirmation").await?;
    let token = Secret::new(request.token);
    let pending = find(&state, LoginKey::Token(token.hash()), CONFIRM).await?;
    let user = pending.user.clone().ok_or_else(unknown_login)?;

    let second_step = random_token();
    let login_id_hash = pending.login_id_hash.clone();
    let second_step_hash = second_step.hash();
    state
        .accounts
        .db
        .run(move |conn| {
            login::mark_confirmed(conn, &login_id_hash, &second_step_hash, now_millis())
        })
        .await?;
    metrics::counter!(SIGN_INS, "step" => "confirmed", "outcome" => "ok").increment(1);

    let totp_required = pending.needs_second_factor();
    let confirmed = LoginConfirmed {
        kind: pending.kind(),
        totp_required,
        login_id: second_step.expose().to_owned(),
    };
    if pending.kind() == LoginKind::Browser && !totp_required {
        // NOTE: the cookies go to the browser that opens the link, which need
        // not be the one that started the sign-in: nothing binds the two yet.
        let source = peer_ip(peer.as_ref());
        let issued = complete_browser(&state, &pending, &user, false, source).await?;
        return browser_response(&state, &issued, Json(confirmed).into_response());
    }
    Ok(Json(confirmed).into_response())
}

/// Returns the state of a device sign-in to a poll with a proof by the key
/// it started with. On approval the device is registered and gets tokens,
/// and a later poll gets 410. Polls count against the client address's
/// budget before the proof is checked, because every checked proof takes a
/// place in the shared replay cache.
#[utoipa::path(
    post, path = "/v1/auth/login/poll", operation_id = "poll_login", tag = "sign-in",
    description = "A device waits for its sign-in to be approved, proving it holds the key it started with.",
    request_body(content = sealcast_protocol::auth::LoginPollRequest, content_type = "application/json"),
    security(("dpop_proof" = [])),
    responses(
        (status = 200, description = "`pending`, `totp_required`, or `approved` with the tokens", body = sealcast_protocol::auth::LoginPollResponse),
        (status = 400, description = "Malformed body or proof", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing or invalid DPoP proof, or a key other than the one the sign-in started with", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "The device key belongs to a revoked device or another user", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The sign-in expired or was already completed", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many polls; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn poll(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LoginPollResponse>, ApiError> {
    admit_ip(&state, peer.as_ref(), POLL)?;
    let proof = key_proof(&state, &headers, &method, uri.path(), POLL)?.ok_or_else(|| {
        reject(
            POLL,
            "missing_proof",
            "missing DPoP proof: poll with a proof by the device key",
        )
    })?;
    let request: LoginPollRequest = read_json(&headers, body, "poll request").await?;
    let login_id = Secret::new(request.login_id);
    let pending = find(&state, LoginKey::LoginId(login_id.hash()), POLL).await?;
    let Some(device) = pending.device.clone() else {
        return Err(unknown_login());
    };
    if device.thumbprint != proof.thumbprint {
        return Err(reject(
            POLL,
            "proof_key_mismatch",
            "DPoP proof was made with another key than the one that started the sign-in",
        ));
    }
    if !pending.confirmed {
        return Ok(Json(LoginPollResponse::Pending));
    }
    if pending.needs_second_factor() {
        return Ok(Json(LoginPollResponse::TotpRequired));
    }
    let user = pending.user.clone().ok_or_else(unknown_login)?;
    claim(&state, &pending).await?;
    let source = peer_ip(peer.as_ref());
    let issued =
        sign_in_device(&state, &user, device, pending.second_factor_passed, source).await?;
    metrics::counter!(SIGN_INS, "step" => "approved", "outcome" => "ok").increment(1);
    tracing::info!(user_id = %user.user_id, device_id = ?issued.device_id, "device signed in");
    Ok(Json(LoginPollResponse::Approved(issued.into_response())))
}

/// Checks the TOTP or recovery code of a confirmed sign-in. A browser
/// sign-in completes here and gets the cookies, and a device gets its
/// tokens with its next poll. Responds 204.
#[utoipa::path(
    post, path = "/v1/auth/login/totp", operation_id = "login_second_factor", tag = "sign-in",
    description = "Checks the TOTP or recovery code of a confirmed sign-in. A browser gets its cookies here; a device gets its tokens with its next poll.",
    request_body(content = sealcast_protocol::auth::LoginTotpRequest, content_type = "application/json"),
    responses(
        (status = 204, description = "Second factor accepted"),
        (status = 400, description = "Malformed body or code", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Wrong code", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "The sign-in link was not opened yet, or the sign-in needs no second factor", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The sign-in expired, was used, or had too many wrong codes", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many attempts; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn second_factor(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admit_ip(&state, peer.as_ref(), LOGIN_TOTP)?;
    let request: LoginTotpRequest = read_json(&headers, body, "second-factor request").await?;
    let login_id = Secret::new(request.login_id);
    let code: String = request
        .code
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let pending = find(&state, LoginKey::AnyLoginId(login_id.hash()), LOGIN_TOTP).await?;
    // Unconfirmed comes first: a sign-in for an address without an account
    // is never confirmed, so this response is the same for every address.
    if !pending.confirmed {
        return Err(ApiError::Conflict(
            "the sign-in link has not been opened yet: open it first".into(),
        ));
    }
    let user = pending.user.clone().ok_or_else(unknown_login)?;
    if !pending.needs_second_factor() {
        return Err(ApiError::Conflict(
            "this sign-in needs no TOTP or recovery code".into(),
        ));
    }
    admit_account(&state, &user.user_id, LOGIN_TOTP)?;

    let login_id_hash = pending.login_id_hash.clone();
    let user_id = user.user_id.clone();
    let secret = user.totp_secret.clone();
    let last_step = user.totp_last_step;
    let outcome = state
        .accounts
        .db
        .run(move |conn| {
            let attempts = login::count_attempt(conn, &login_id_hash)?;
            if attempts > MAX_SECOND_FACTOR_ATTEMPTS {
                return Ok(Err("too_many_attempts"));
            }
            let now = now_millis();
            let passed = if recovery::looks_like_recovery_code(&code) {
                match recovery::normalize_and_hash(&code) {
                    Some(hash) => store::use_recovery_code(conn, &user_id, &hash, now)?,
                    None => false,
                }
            } else {
                let Some(secret) =
                    secret.and_then(|bytes| totp::TotpSecret::from_bytes(bytes.to_vec()).ok())
                else {
                    return Ok(Err("no_totp_secret"));
                };
                match totp::verify(&secret, &code, now_unix(), last_step) {
                    Ok(step) => store::use_totp_step(conn, &user_id, step)?,
                    Err(totp::TotpError::Replayed { .. }) => return Ok(Err("replayed_code")),
                    Err(_) => false,
                }
            };
            if !passed {
                return Ok(Err("invalid_code"));
            }
            login::mark_second_factor(conn, &login_id_hash, now)?;
            Ok::<_, StoreError>(Ok(()))
        })
        .await?;
    if let Err(reason) = outcome {
        metrics::counter!(SIGN_INS, "step" => "second_factor", "outcome" => reason).increment(1);
        if reason == "too_many_attempts" {
            return Err(ApiError::Expired(
                "too many wrong codes: this sign-in is void, request a new link",
            ));
        }
        return Err(reject(
            LOGIN_TOTP,
            reason,
            "invalid, used or expired code: enter the current code from the authenticator app or an unused recovery code",
        ));
    }
    metrics::counter!(SIGN_INS, "step" => "second_factor", "outcome" => "ok").increment(1);

    let response = StatusCode::NO_CONTENT.into_response();
    if pending.kind() == LoginKind::Browser {
        let source = peer_ip(peer.as_ref());
        let issued = complete_browser(&state, &pending, &user, true, source).await?;
        return browser_response(&state, &issued, response);
    }
    Ok(response)
}

/// Looks up a pending sign-in that can still proceed.
async fn find(
    state: &AppState,
    key: LoginKey,
    endpoint: &'static str,
) -> Result<PendingLogin, ApiError> {
    let pending = state
        .accounts
        .db
        .run(move |conn| login::find(conn, key))
        .await?
        .ok_or_else(|| {
            tracing::debug!(endpoint, "unknown sign-in");
            unknown_login()
        })?;
    if pending.is_void(now_millis()) {
        return Err(ApiError::Expired(
            "this sign-in expired, was already used or had too many wrong codes: request a new link",
        ));
    }
    if pending
        .user
        .as_ref()
        .is_some_and(|user| user.disabled_at.is_some())
    {
        return Err(ApiError::Expired(
            "this user is disabled: ask an administrator",
        ));
    }
    Ok(pending)
}

/// Marks a sign-in completed, failing with 410 when another request did first.
async fn claim(state: &AppState, pending: &PendingLogin) -> Result<(), ApiError> {
    let login_id_hash = pending.login_id_hash.clone();
    let claimed = state
        .accounts
        .db
        .run(move |conn| login::mark_completed(conn, &login_id_hash, now_millis()))
        .await?;
    if claimed {
        Ok(())
    } else {
        Err(ApiError::Expired(
            "this sign-in was already used: request a new link",
        ))
    }
}

async fn complete_browser(
    state: &AppState,
    pending: &PendingLogin,
    user: &store::UserRecord,
    mfa: bool,
    source: Option<IpAddr>,
) -> Result<Issued, ApiError> {
    claim(state, pending).await?;
    let issued = state.accounts.sign_in(user, None, mfa).await?;
    metrics::counter!(SIGN_INS, "step" => "approved", "outcome" => "ok").increment(1);
    tracing::info!(user_id = %user.user_id, "browser signed in");
    let event = Event::new(Action::SignedIn, &user.user_id)
        .source(source)
        .subject(&user.user_id)
        .detail("organization_id", &user.organization_id)
        .detail("client", "browser")
        .detail("mfa", mfa);
    audited::record(state, event).await;
    Ok(issued)
}

/// Registers the device, or reuses the user's device with the same key, and
/// signs it in.
async fn sign_in_device(
    state: &AppState,
    user: &store::UserRecord,
    device: PendingDevice,
    mfa: bool,
    source: Option<IpAddr>,
) -> Result<Issued, ApiError> {
    let issued = register_or_reuse_device(state, user, device, mfa, source).await?;
    let device_id = issued.device_id.clone().unwrap_or_default();
    let event = Event::new(Action::SignedIn, &device_id)
        .source(source)
        .subject(&user.user_id)
        .detail("organization_id", &user.organization_id)
        .detail("client", "device")
        .detail("mfa", mfa);
    audited::record(state, event).await;
    Ok(issued)
}

async fn register_or_reuse_device(
    state: &AppState,
    user: &store::UserRecord,
    device: PendingDevice,
    mfa: bool,
    source: Option<IpAddr>,
) -> Result<Issued, ApiError> {
    let thumbprint = device.thumbprint.clone();
    let registered = state
        .accounts
        .sign_in_new_device(user, device.public_key, device.thumbprint, device.name, mfa)
        .await?;
    if let Some(issued) = registered {
        let device_id = issued.device_id.clone().unwrap_or_default();
        let event = Event::new(Action::DeviceAdded, &user.user_id)
            .source(source)
            .subject(&device_id)
            .detail("organization_id", &user.organization_id)
            .digest_of(thumbprint.as_bytes());
        audited::record(state, event).await;
        return Ok(issued);
    }
    let lookup = thumbprint.clone();
    let existing = state
        .accounts
        .db
        .run(move |conn| devices::device_by_thumbprint(conn, &lookup))
        .await?;
    match existing {
        Some(existing) if existing.user_id == user.user_id && existing.revoked_at.is_none() => Ok(state
            .accounts
            .sign_in(user, Some((existing.device_id, thumbprint)), mfa)
            .await?),
        _ => Err(ApiError::Conflict(
            "this device key belongs to a revoked device or another user: make a new key and sign in again".into(),
        )),
    }
}

fn browser_response(
    state: &AppState,
    issued: &Issued,
    mut response: Response,
) -> Result<Response, ApiError> {
    set_sign_in_cookies(
        response.headers_mut(),
        issued,
        state.accounts.refresh_lifetime().as_secs(),
    )?;
    Ok(response)
}

fn device_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.map(|name| name.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Ok(DEFAULT_DEVICE_NAME.to_owned());
    }
    if name.chars().count() > MAX_DEVICE_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "device_name must be at most {MAX_DEVICE_NAME_CHARS} characters without control characters"
        )));
    }
    Ok(name)
}

fn unknown_login() -> ApiError {
    ApiError::NotFound("sign-in not found: request a new link".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_name_defaults_and_limits() {
        assert_eq!(device_name(None).unwrap(), DEFAULT_DEVICE_NAME);
        assert_eq!(device_name(Some("  ".into())).unwrap(), DEFAULT_DEVICE_NAME);
        assert_eq!(device_name(Some(" Tablet ".into())).unwrap(), "Tablet");
        let long = "x".repeat(MAX_DEVICE_NAME_CHARS + 1);
        assert!(matches!(
            device_name(Some(long)),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            device_name(Some("bad\nname".into())),
            Err(ApiError::BadRequest(_))
        ));
    }
}

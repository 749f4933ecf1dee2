//! TOTP enrolment: `POST /v1/auth/totp/enrol` and `/totp/activate`.
//!
//! Enrolment stores a pending secret and shows it once. Activation checks a
//! code from it, makes it the user's secret and replaces the recovery codes.
//! It then starts a new sign-in whose tokens carry `mfa: true` and ends the
//! sign-in that activated.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sealcast_protocol::auth::{TotpActivateRequest, TotpActivated, TotpEnrolment};

use super::audited::{self, peer_ip};
use super::cookies::set_sign_in_cookies;
use super::json::read_json;
use super::limits::admit_account;
use super::staff::{authenticate, reject, Principal};
use super::{ApiError, AppState};
use crate::accounts::devices;
use crate::accounts::store::{self, UserRecord};
use crate::accounts::totp::{self, TotpSecret};
use crate::accounts::{now_unix, recovery};
use crate::audit::Action;
use crate::listener::PeerAddr;
use crate::store::{now_millis, StoreError};

const ENROL: &str = "totp_enrol";
const ACTIVATE: &str = "totp_activate";

/// Recovery codes made at activation.
pub(crate) const RECOVERY_CODES: usize = 10;

/// Issuer name authenticator apps show beside the account.
const TOTP_ISSUER: &str = "sealcast";

/// Makes a new TOTP secret for the signed-in user and shows it once.
/// Responds 409 when TOTP is already active.
#[utoipa::path(
    post, path = "/v1/auth/totp/enrol", operation_id = "enrol_totp", tag = "sign-in",
    description = "Makes a new TOTP secret for the signed-in user and shows it once.",
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "The pending secret", body = sealcast_protocol::auth::TotpEnrolment),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "TOTP is already active for this user", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn enrol(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<TotpEnrolment>, ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), ENROL).await?;
    let user = current_user(&state, &principal, ENROL).await?;
    if user.totp_secret.is_some() {
        return Err(ApiError::Conflict(
            "TOTP is already active for this user: sign in with a code from the enrolled authenticator".into(),
        ));
    }
    let secret = TotpSecret::generate();
    let uri = totp::otpauth_uri(&secret, TOTP_ISSUER, &user.email).map_err(totp_failure)?;
    let qr_svg = totp::qr_svg(&uri).map_err(totp_failure)?;
    let stored = secret.as_bytes().to_vec();
    let user_id = user.user_id.clone();
    state
        .accounts
        .db
        .run(move |conn| store::set_pending_totp(conn, &user_id, &stored))
        .await?;
    tracing::info!(user_id = %user.user_id, "TOTP enrolment started");
    Ok(Json(TotpEnrolment {
        otpauth_uri: uri.to_string(),
        secret_base32: secret.to_base32().to_string(),
        qr_svg: qr_svg.to_string(),
    }))
}

/// Activates the pending secret with a current code from it. Responds with
/// the recovery codes and, for a device, new tokens. A browser gets new
/// cookies.
#[utoipa::path(
    post, path = "/v1/auth/totp/activate", operation_id = "activate_totp", tag = "sign-in",
    description = "Activates the pending secret with a current code from it, and returns the recovery codes. A device also gets new tokens and a browser new cookies.",
    request_body(content = sealcast_protocol::auth::TotpActivateRequest, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "TOTP active", body = sealcast_protocol::auth::TotpActivated),
        (status = 400, description = "Malformed body or wrong code", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "TOTP is already active, or no enrolment is pending", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn activate(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), ACTIVATE).await?;
    let request: TotpActivateRequest = read_json(&headers, body, "activation request").await?;
    admit_account(&state, &principal.user_id, ACTIVATE)?;
    let user = current_user(&state, &principal, ACTIVATE).await?;
    let Some(pending) = user.totp_pending_secret.clone() else {
        return Err(ApiError::Conflict(
            "no TOTP enrolment is pending: call POST /v1/auth/totp/enrol first".into(),
        ));
    };
    let secret = TotpSecret::from_bytes(pending.to_vec()).map_err(totp_failure)?;
    let code: String = request
        .code
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let step = totp::verify(&secret, &code, now_unix(), None).map_err(|_| {
        reject(
            ACTIVATE,
            "invalid_code",
            "invalid TOTP code: enter the current code from the authenticator app",
        )
    })?;

    let (codes, hashes) = recovery::generate(RECOVERY_CODES);
    let user_id = user.user_id.clone();
    state
        .accounts
        .db
        .run(move |conn| store::activate_totp(conn, &user_id, step, &hashes, now_millis()))
        .await?;
    tracing::info!(user_id = %user.user_id, "TOTP activated");
    let event = audited::staff_event(Action::TotpActivated, &principal, peer_ip(peer.as_ref()))
        .subject(&user.user_id);
    audited::record(&state, event).await;

    // The new sign-in replaces the one without a second factor.
    let device = match &principal.device_id {
        Some(device_id) => Some((
            device_id.clone(),
            device_thumbprint(&state, device_id).await?,
        )),
        None => None,
    };
    let issued = state.accounts.sign_in(&user, device, true).await?;
    state.accounts.sign_out(principal.family_id.clone()).await?;

    let recovery_codes = codes.iter().map(|code| code.expose().to_owned()).collect();
    if principal.browser {
        let body = TotpActivated {
            recovery_codes,
            tokens: None,
        };
        let mut response = Json(body).into_response();
        set_sign_in_cookies(
            response.headers_mut(),
            &issued,
            state.accounts.refresh_lifetime().as_secs(),
        )?;
        return Ok(response);
    }
    let body = TotpActivated {
        recovery_codes,
        tokens: Some(issued.into_response()),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn current_user(
    state: &AppState,
    principal: &Principal,
    endpoint: &'static str,
) -> Result<UserRecord, ApiError> {
    let user_id = principal.user_id.clone();
    state
        .accounts
        .db
        .run(move |conn| store::user_by_id(conn, &user_id))
        .await?
        .ok_or_else(|| {
            reject(
                endpoint,
                "unknown_user",
                "invalid access token: sign in again",
            )
        })
}

async fn device_thumbprint(state: &AppState, device_id: &str) -> Result<String, ApiError> {
    let id = device_id.to_owned();
    let device = state
        .accounts
        .db
        .run(move |conn| devices::device_by_id(conn, &id))
        .await?;
    device.map(|(device, _)| device.thumbprint).ok_or_else(|| {
        StoreError::Corrupt {
            what: "device of a valid token",
        }
        .into()
    })
}

fn totp_failure(error: totp::TotpError) -> ApiError {
    tracing::error!(%error, "TOTP enrolment failed");
    ApiError::Internal
}

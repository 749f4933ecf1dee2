//! `POST /v1/auth/refresh`, `POST /v1/auth/logout` and `GET /v1/me`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sealcast_protocol::auth::{RefreshRequest, UserInfo, CSRF_COOKIE, CSRF_HEADER, REFRESH_COOKIE};
use subtle::ConstantTimeEq;

use super::audited::{self, peer_ip};
use super::cookies::{clear_sign_in_cookies, set_sign_in_cookies};
use super::json::read_json;
use super::limits::admit_ip;
use super::staff::{authenticate, cookie_value, forbid, key_proof, reject};
use super::{ApiError, AppState};
use crate::accounts::{store, user_info};
use crate::audit::Action;
use crate::credentials::Secret;
use crate::listener::PeerAddr;
use crate::metrics::SIGN_INS;

const REFRESH: &str = "refresh";
const LOGOUT: &str = "logout";
const ME: &str = "me";

/// Rotates a refresh token. A device sends it in the body with a DPoP proof
/// by its key and gets a [`sealcast_protocol::auth::TokenResponse`]. A
/// browser sends the refresh cookie with the CSRF header and gets new
/// cookies and 204.
#[utoipa::path(
    post, path = "/v1/auth/refresh", operation_id = "refresh_tokens", tag = "sign-in",
    description = "Rotates a single-use refresh token. A device sends it in the body with a DPoP proof and gets new tokens; a browser sends its refresh cookie with the CSRF header and gets new cookies and 204. A refresh token presented twice revokes its sign-in.",
    request_body(content = Option<sealcast_protocol::auth::RefreshRequest>, content_type = "application/json", description = "Devices only; browsers send no body"),
    security(("dpop_proof" = []), ("refresh_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 200, description = "New device tokens", body = sealcast_protocol::auth::TokenResponse),
        (status = 204, description = "New browser cookies"),
        (status = 400, description = "Malformed body or proof", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid, expired or reused refresh token, or invalid proof", body = sealcast_protocol::api::ErrorBody),
        (status = 403, description = "CSRF header or `Origin` missing or wrong", body = sealcast_protocol::api::ErrorBody),
        (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admit_ip(&state, peer.as_ref(), REFRESH)?;
    let proof = key_proof(&state, &headers, &method, uri.path(), REFRESH)?;
    let (presented, thumbprint) = match proof {
        Some(proof) => {
            let request: RefreshRequest = read_json(&headers, body, "refresh request").await?;
            (Secret::new(request.refresh_token), Some(proof.thumbprint))
        }
        None if cookie_value(&headers, REFRESH_COOKIE).is_some() => {
            (browser_refresh_token(&state, &headers)?, None)
        }
        None => {
            return Err(reject(
                REFRESH,
                "missing_proof",
                "missing credential: a device sends its refresh token with a DPoP proof, a browser the refresh cookie",
            ))
        }
    };
    let browser = thumbprint.is_none();
    let outcome = state.accounts.refresh(presented.hash(), thumbprint).await?;
    let issued = match outcome {
        Ok(issued) => issued,
        Err(rejection) => {
            metrics::counter!(SIGN_INS, "step" => "refreshed", "outcome" => rejection.reason())
                .increment(1);
            return Err(reject(
                REFRESH,
                rejection.reason(),
                "invalid, used or expired refresh token: sign in again",
            ));
        }
    };
    metrics::counter!(SIGN_INS, "step" => "refreshed", "outcome" => "ok").increment(1);
    if browser {
        let mut response = StatusCode::NO_CONTENT.into_response();
        set_sign_in_cookies(
            response.headers_mut(),
            &issued,
            state.accounts.refresh_lifetime().as_secs(),
        )?;
        Ok(response)
    } else {
        Ok(Json(issued.into_response()).into_response())
    }
}

/// Reads a browser's refresh cookie after checking `Origin` and the CSRF header.
fn browser_refresh_token(state: &AppState, headers: &HeaderMap) -> Result<Secret, ApiError> {
    let origin_ok = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|origin| origin.eq_ignore_ascii_case(&state.public_origin));
    if !origin_ok {
        return Err(forbid(
            REFRESH,
            "foreign_origin",
            "refresh cookie sent from another site: use the relay's own pages",
        ));
    }
    let csrf_ok = match (
        cookie_value(headers, CSRF_COOKIE),
        headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok()),
    ) {
        (Some(expected), Some(presented)) => {
            bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
        }
        _ => false,
    };
    if !csrf_ok {
        return Err(forbid(
            REFRESH,
            "csrf_mismatch",
            "missing or wrong X-CSRF-Token: echo the CSRF cookie in that header",
        ));
    }
    cookie_value(headers, REFRESH_COOKIE)
        .map(Secret::new)
        .ok_or_else(|| {
            reject(
                REFRESH,
                "missing_credential",
                "missing refresh token: send it in the body with a DPoP proof, or sign in",
            )
        })
}

/// Ends the sign-in of the request's credential: its refresh tokens are
/// revoked and its access tokens stop working. Responds 204.
#[utoipa::path(
    post, path = "/v1/auth/logout", tag = "sign-in",
    description = "Ends the sign-in of the request's credential: its refresh tokens are revoked and its access tokens stop working.",
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Signed out; a browser's cookies are cleared"),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), LOGOUT).await?;
    state.accounts.sign_out(principal.family_id.clone()).await?;
    state.accounts.live.revoke_sign_in(&principal.family_id);
    tracing::info!(user_id = %principal.user_id, "signed out");
    let event = audited::staff_event(Action::SignedOut, &principal, peer_ip(peer.as_ref()))
        .subject(&principal.user_id);
    audited::record(&state, event).await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if principal.browser {
        clear_sign_in_cookies(response.headers_mut())?;
    }
    Ok(response)
}

/// Returns the signed-in user.
#[utoipa::path(
    get, path = "/v1/me", tag = "sign-in",
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = sealcast_protocol::auth::UserInfo),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn me(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<UserInfo>, ApiError> {
    let principal = authenticate(&state, &headers, &method, uri.path(), ME).await?;
    let user_id = principal.user_id.clone();
    let user = state
        .accounts
        .db
        .run(move |conn| store::user_by_id(conn, &user_id))
        .await?
        .ok_or_else(|| reject(ME, "unknown_user", "invalid access token: sign in again"))?;
    Ok(Json(user_info(&user)))
}

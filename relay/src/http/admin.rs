//! The admin routes: users and devices of the administrator's own
//! organization. Every route requires an administrator who passed TOTP.
//!
//! Requests about users and devices of other organizations get 404, as if
//! they did not exist, so ids cannot be probed across organizations.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::{Extension, Json};
use sealcast_protocol::auth::{CreateUserRequest, DeviceSummary, UserSummary};

use super::audited::{self, peer_ip};
use super::json::read_json;
use super::staff::{authenticate, require_admin, Principal};
use super::{ApiError, AppState};
use crate::accounts::admin::{checked_email, AdminError, AdminStore};
use crate::accounts::{devices, store};
use crate::audit::Action;
use crate::listener::PeerAddr;
use crate::metrics::SOCKETS_REVOKED;
use crate::store::now_millis;

const ADMIN_USERS: &str = "admin_users";
const ADMIN_DEVICES: &str = "admin_devices";

async fn admin(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    endpoint: &'static str,
) -> Result<Principal, ApiError> {
    let principal = authenticate(state, headers, method, uri.path(), endpoint).await?;
    require_admin(&principal, endpoint)?;
    Ok(principal)
}

/// `GET /v1/admin/users`: the organization's users.
#[utoipa::path(
    get, path = "/v1/admin/users", tag = "admin",
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The organization's users", body = Vec<sealcast_protocol::auth::UserSummary>),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Vec<UserSummary>>, ApiError> {
    let principal = admin(&state, &headers, &method, &uri, ADMIN_USERS).await?;
    let users = state
        .accounts
        .db
        .run(move |conn| store::list_users(conn, Some(&principal.organization_id)))
        .await?;
    Ok(Json(users.iter().map(store::UserRecord::summary).collect()))
}

/// `POST /v1/admin/users`: adds a user to the organization. Responds 201,
/// or 409 when the address belongs to another user.
#[utoipa::path(
    post, path = "/v1/admin/users", tag = "admin",
    request_body(content = sealcast_protocol::auth::CreateUserRequest, content_type = "application/json"),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 201, description = "User added", body = sealcast_protocol::auth::UserSummary),
        (status = 400, description = "Malformed body or address", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 409, description = "The address belongs to another user", body = sealcast_protocol::api::ErrorBody),
        (status = 415, description = "Body sent without `Content-Type: application/json`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UserSummary>), ApiError> {
    let principal = admin(&state, &headers, &method, &uri, ADMIN_USERS).await?;
    let request: CreateUserRequest = read_json(&headers, body, "user request").await?;
    let email = checked_email(&request.email).map_err(admin_error)?;
    let admin_store = AdminStore::from_db(state.accounts.db.clone());
    let organization_id = principal.organization_id.clone();
    let user_id = tokio::task::spawn_blocking(move || {
        admin_store.create_user(&organization_id, &email, request.role)
    })
    .await
    .map_err(|_| ApiError::Internal)?
    .map_err(admin_error)?;
    let created = state
        .accounts
        .db
        .run(move |conn| store::user_by_id(conn, &user_id))
        .await?
        .ok_or(ApiError::Internal)?;
    tracing::info!(
        user_id = %created.user_id,
        admin_id = %principal.user_id,
        role = created.role.as_str(),
        "user created"
    );
    let event = audited::staff_event(Action::UserCreated, &principal, peer_ip(peer.as_ref()))
        .subject(&created.user_id)
        .detail("role", created.role.as_str())
        .digest_of(created.email.as_bytes());
    audited::record(&state, event).await;
    Ok((StatusCode::CREATED, Json(created.summary())))
}

/// `POST /v1/admin/users/{id}/disable`: disables a user, revokes their
/// refresh tokens and closes their open sockets. Responds 204.
#[utoipa::path(
    post, path = "/v1/admin/users/{id}/disable", tag = "admin",
    description = "Disables a user, revokes their refresh tokens and closes their open sockets.",
    params(("id" = String, Path, description = "User id")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "User disabled"),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No user with this id in the organization", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = admin(&state, &headers, &method, &uri, ADMIN_USERS).await?;
    let organization_id = principal.organization_id.clone();
    let target = user_id.clone();
    let found = state
        .accounts
        .db
        .run(move |conn| {
            let in_organization = store::user_by_id(conn, &target)?
                .is_some_and(|user| user.organization_id == organization_id);
            if in_organization {
                store::disable_user(conn, &target, now_millis())?;
            }
            Ok::<_, crate::store::StoreError>(in_organization)
        })
        .await?;
    if !found {
        return Err(ApiError::NotFound(format!("user {user_id} not found")));
    }
    let closed = state.accounts.live.revoke_user(&user_id);
    metrics::counter!(SOCKETS_REVOKED, "trigger" => "admin_route").increment(closed as u64);
    tracing::info!(%user_id, admin_id = %principal.user_id, closed, "user disabled");
    let event = audited::staff_event(Action::UserDisabled, &principal, peer_ip(peer.as_ref()))
        .subject(&user_id)
        .detail("sockets_closed", closed);
    audited::record(&state, event).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/admin/devices`: the devices of the organization's users.
#[utoipa::path(
    get, path = "/v1/admin/devices", tag = "admin",
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [])),
    responses(
        (status = 200, description = "The devices of the organization's users", body = Vec<sealcast_protocol::auth::DeviceSummary>),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Vec<DeviceSummary>>, ApiError> {
    let principal = admin(&state, &headers, &method, &uri, ADMIN_DEVICES).await?;
    let devices = state
        .accounts
        .db
        .run(move |conn| devices::list_devices(conn, Some(&principal.organization_id)))
        .await?;
    Ok(Json(
        devices.iter().map(devices::DeviceRecord::summary).collect(),
    ))
}

/// `POST /v1/admin/devices/{id}/revoke`: revokes a device and its refresh
/// tokens and closes its open sockets. Responds 204.
#[utoipa::path(
    post, path = "/v1/admin/devices/{id}/revoke", tag = "admin",
    description = "Revokes a device and its refresh tokens and closes its open sockets.",
    params(("id" = String, Path, description = "Device id")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [], "csrf_token" = [])),
    responses(
        (status = 204, description = "Device revoked"),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No device with this id in the organization", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn revoke_device(
    State(state): State<AppState>,
    Path(device_id): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = admin(&state, &headers, &method, &uri, ADMIN_DEVICES).await?;
    let organization_id = principal.organization_id.clone();
    let target = device_id.clone();
    let found = state
        .accounts
        .db
        .run(move |conn| {
            let in_organization = devices::device_by_id(conn, &target)?
                .is_some_and(|(_, organization)| organization == organization_id);
            if in_organization {
                devices::revoke_device(conn, &target, now_millis())?;
            }
            Ok::<_, crate::store::StoreError>(in_organization)
        })
        .await?;
    if !found {
        return Err(ApiError::NotFound(format!("device {device_id} not found")));
    }
    let closed = state.accounts.live.revoke_device(&device_id);
    metrics::counter!(SOCKETS_REVOKED, "trigger" => "admin_route").increment(closed as u64);
    tracing::info!(%device_id, admin_id = %principal.user_id, closed, "device revoked");
    let event = audited::staff_event(Action::DeviceRevoked, &principal, peer_ip(peer.as_ref()))
        .subject(&device_id)
        .detail("sockets_closed", closed);
    audited::record(&state, event).await;
    Ok(StatusCode::NO_CONTENT)
}

fn admin_error(error: AdminError) -> ApiError {
    match error {
        AdminError::Store(error) => error.into(),
        AdminError::Output(error) => {
            tracing::error!(%error, "admin step failed to write its output");
            ApiError::Internal
        }
        AdminError::Audit(error) => {
            tracing::error!(%error, "admin step failed to record its audit entry");
            ApiError::Internal
        }
        AdminError::Invalid(message) => ApiError::BadRequest(message),
        AdminError::NotFound(message) => ApiError::NotFound(message),
        AdminError::EmailTaken => {
            ApiError::Conflict("this email address already belongs to a user".into())
        }
    }
}

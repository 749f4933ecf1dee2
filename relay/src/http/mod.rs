//! The HTTP API: routes, shared state, credentials and error responses.
//!
//! Routes follow `sealcast_protocol::api`. Every error is a JSON
//! [`sealcast_protocol::api::ErrorBody`] with a matching status.
//!
//! | module | job |
//! | --- | --- |
//! | [`error`] | the error type and its JSON response |
//! | [`auth`] | patient credentials: invite tokens and follow cookies |
//! | [`staff`] | staff credentials, roles and organizations |
//! | [`login`] | magic-link sign-in |
//! | [`tokens`] | refresh, logout and the signed-in user |
//! | [`totp`] | TOTP enrolment |
//! | [`admin`] | users and devices of an organization |
//! | [`cookies`], [`json`], [`limits`] | sign-in cookies, JSON bodies, rate limits |
//! | [`sessions`] | create and end sessions |
//! | [`invites`] | invite challenges and redemption for browsers |
//! | [`pairing`] | the pairing mailbox between a joining and a clinician device |
//! | [`audited`] | audit events of requests |
//! | [`ops`] | health, metrics and fallbacks |
//! | [`observe`] | request counting and logging |

mod admin;
pub(crate) mod audited;
pub(crate) mod auth;
mod cookies;
mod error;
pub(crate) mod failures;
mod invites;
mod json;
mod limits;
mod login;
mod observe;
mod ops;
mod pairing;
mod sessions;
pub(crate) mod staff;
mod tokens;
mod totp;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::accounts::Accounts;
use crate::audit::AuditLog;
use crate::config::Limits;
use crate::hub::Registry;
use crate::invites::InviteState;
use crate::pairing::PairingMailbox;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::{web, ws};
pub(crate) use error::ApiError;

/// Largest request body accepted, in bytes. Session requests are far smaller.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// State shared by every handler.
pub(crate) struct RelayState {
    pub(crate) store: Store,
    pub(crate) hubs: Registry,
    pub(crate) limits: Limits,
    pub(crate) shutdown: Shutdown,
    pub(crate) metrics: PrometheusHandle,
    /// Challenges and rate limits of the invite routes.
    pub(crate) invites: Arc<InviteState>,
    /// Pairing slots, in memory only.
    pub(crate) pairings: Arc<PairingMailbox>,
    /// Origin of the public URL, such as `https://relay.example:8443`: the
    /// `Origin` a follow cookie is accepted from, besides the request's `Host`.
    pub(crate) public_origin: String,
    /// The public URL without a trailing slash: DPoP proofs name it and the
    /// request path as their `htu`.
    pub(crate) public_url: String,
    /// Staff accounts, tokens and open staff sockets.
    pub(crate) accounts: Arc<Accounts>,
    /// Client addresses blocked after too many failed credentials.
    pub(crate) failures: failures::FailureLimiter,
    /// The audit log.
    pub(crate) audit: AuditLog,
}

/// The state as handlers receive it.
pub(crate) type AppState = Arc<RelayState>;

/// Marks every response `Cache-Control: no-store` unless its handler chose
/// otherwise: API responses carry tokens, session ids and errors that no
/// cache between the device and the relay should keep.
async fn no_store_by_default(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Builds the router of every endpoint.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/sessions/{id}/end", post(sessions::end))
        .route("/v1/sessions/{id}/publish", get(ws::publish::upgrade))
        .route("/v1/sessions/{id}/follow", get(ws::follow::staff_upgrade))
        .route("/v1/follow", get(ws::follow::upgrade))
        .route("/v1/auth/login", post(login::start))
        .route("/v1/auth/login/confirm", post(login::confirm))
        .route("/v1/auth/login/poll", post(login::poll))
        .route("/v1/auth/login/totp", post(login::second_factor))
        .route("/v1/auth/refresh", post(tokens::refresh))
        .route("/v1/auth/logout", post(tokens::logout))
        .route("/v1/me", get(tokens::me))
        .route("/v1/auth/totp/enrol", post(totp::enrol))
        .route("/v1/auth/totp/activate", post(totp::activate))
        .route(
            "/v1/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route("/v1/admin/users/{id}/disable", post(admin::disable_user))
        .route("/v1/admin/devices", get(admin::list_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin::revoke_device))
        .route("/v1/invites/challenge", post(invites::challenge))
        .route("/v1/invites/redeem", post(invites::redeem))
        .route("/v1/sessions/{id}/pairings", post(pairing::open))
        .route(
            "/v1/sessions/{id}/pairings/{pairing}",
            get(pairing::clinician_status).delete(pairing::clinician_cancel),
        )
        .route(
            "/v1/sessions/{id}/pairings/{pairing}/clinician-key",
            post(pairing::clinician_key),
        )
        .route(
            "/v1/sessions/{id}/pairings/{pairing}/wrapped-key",
            post(pairing::wrapped_key),
        )
        .route(
            "/v1/pairings/{pairing}",
            get(pairing::joiner_status).delete(pairing::joiner_cancel),
        )
        .route(
            "/v1/pairings/{pairing}/commitment",
            post(pairing::commitment),
        )
        .route(
            "/v1/pairings/{pairing}/joiner-key",
            post(pairing::joiner_key),
        )
        .merge(web::routes())
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            failures::limit_failures,
        ))
        .layer(middleware::from_fn(no_store_by_default))
        .layer(middleware::from_fn(observe::record))
        .with_state(state)
}

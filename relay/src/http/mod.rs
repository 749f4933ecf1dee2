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
//! | [`paired_keys`] | wrapped keys of later epochs for paired devices, and removing them |
//! | [`audited`] | audit events of requests |
//! | [`ops`] | health, readiness, metrics and fallbacks |
//! | [`openapi`] | the OpenAPI document of every route |
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
pub(crate) mod openapi;
mod ops;
mod paired_keys;
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
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Changes each time this node stores a wrapped key for a paired
    /// device, removes a paired device or ends a session, to wake the
    /// fetches that wait for a key.
    pub(crate) paired_keys_changed: watch::Sender<()>,
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

/// Builds the router of the public listener. It serves `/healthz`,
/// `/readyz` and `/metrics` only when `with_ops` is set, which is when no
/// separate ops listener is configured.
pub(crate) fn router(state: AppState, with_ops: bool) -> Router {
    let routes = if with_ops {
        api_routes()
    } else {
        public_routes()
    };
    let (routes, _document) = routes.split_for_parts();
    routes
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

/// Returns every route with its OpenAPI operation: the public routes and
/// those of [`ops::routes`], which move to the ops listener when one is
/// configured. `GET /openapi.json` and the tests read this list.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    public_routes().merge(ops::routes())
}

/// Returns the routes only the public listener serves. Add routes here only
/// through `routes!`, never with `route`, so that each one is documented.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(sessions::create))
        .routes(routes!(sessions::end))
        .routes(routes!(ws::publish::upgrade))
        .routes(routes!(ws::follow::staff_upgrade))
        .routes(routes!(ws::follow::upgrade))
        .routes(routes!(login::start))
        .routes(routes!(login::confirm))
        .routes(routes!(login::poll))
        .routes(routes!(login::second_factor))
        .routes(routes!(tokens::refresh))
        .routes(routes!(tokens::logout))
        .routes(routes!(tokens::me))
        .routes(routes!(totp::enrol))
        .routes(routes!(totp::activate))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(admin::disable_user))
        .routes(routes!(admin::list_devices))
        .routes(routes!(admin::revoke_device))
        .routes(routes!(invites::challenge))
        .routes(routes!(invites::redeem))
        .routes(routes!(pairing::open))
        .routes(routes!(
            pairing::clinician_status,
            pairing::clinician_cancel
        ))
        .routes(routes!(pairing::clinician_key))
        .routes(routes!(pairing::wrapped_key))
        .routes(routes!(pairing::joiner_status, pairing::joiner_cancel))
        .routes(routes!(pairing::commitment))
        .routes(routes!(pairing::joiner_key))
        .routes(routes!(paired_keys::post_key))
        .routes(routes!(paired_keys::remove_device))
        .routes(routes!(paired_keys::fetch_keys))
        .merge(web::routes())
        .routes(routes!(openapi::serve))
}

/// Builds the router of the plain-HTTP ops listener: health, readiness and
/// metrics only.
pub(crate) fn ops_router(state: AppState) -> Router {
    let (routes, _document) = ops::routes().split_for_parts();
    routes
        .fallback(ops::ops_not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn(no_store_by_default))
        .layer(middleware::from_fn(observe::record))
        .with_state(state)
}

//! Health, readiness, metrics and the fallbacks for unknown routes and methods.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, AppState};

/// Returns the routes for monitoring, `/healthz`, `/readyz` and
/// `/metrics`, with their OpenAPI operations.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `GET /healthz`: 200 `ok` while reads from the store succeed.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "`ok`: the store is readable", body = String, content_type = "text/plain"),
        (status = 503, description = "The store is not readable", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.check_readable().await {
        Ok(_) => "ok".into_response(),
        Err(error) => {
            tracing::error!(%error, "health check failed to read the store");
            ApiError::Unavailable("store is not readable".into()).into_response()
        }
    }
}

/// `GET /readyz`: 200 `ready` while the relay accepts work, its NATS
/// connection is up when it has one, and a store query succeeds. Otherwise
/// 503 with the reason, so that a load balancer stops sending requests
/// during shutdown or while the node cannot reach the other nodes.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`: the relay accepts work and the store answers", body = String, content_type = "text/plain"),
        (status = 503, description = "The relay is shutting down, its NATS connection is down or a store query failed", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_triggered() {
        return ApiError::Unavailable("relay is shutting down".into()).into_response();
    }
    if let Some(reason) = state.hubs.fanout().unready_reason() {
        return ApiError::Unavailable(reason.into()).into_response();
    }
    match state.store.check_readable().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::error!(%error, "readiness check failed to query the store");
            ApiError::Unavailable("store query failed".into()).into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    description = "Prometheus metrics; docs/metrics.md lists them.",
    responses(
        (status = 200, description = "The Prometheus text exposition format, version 0.0.4", body = String, content_type = "text/plain; version=0.0.4")
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Any path no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint: the relay serves /join, /v1/sessions, /v1/follow, /v1/invites, /openapi.json, /healthz, /readyz and /metrics".into(),
    )
}

/// Any path on the ops listener other than its three routes.
pub(crate) async fn ops_not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint: this listener serves /healthz, /readyz and /metrics".into(),
    )
}

/// A known path with a method it does not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

//! The error every HTTP handler returns, rendered as a JSON `ErrorBody`.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sealcast_protocol::api::ErrorBody;
use thiserror::Error;

use crate::store::{StoreError, StoreFault};

/// A failed request. The message goes to the client, so it names the problem
/// and the fix but never a credential or internal detail.
#[derive(Debug, Error)]
pub(crate) enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The credential is missing or invalid.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The credential is valid but not in this context, for example a follow
    /// cookie sent from another site's page.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The session or route does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The request conflicts with the state of the resource, for example an
    /// invite already redeemed by as many browsers as it admits.
    #[error("{0}")]
    Conflict(String),
    /// The session has ended.
    #[error("{0}")]
    Gone(String),
    /// A sign-in expired, was used, or had too many wrong codes.
    #[error("{0}")]
    Expired(&'static str),
    /// The body is larger than the relay accepts.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The request's `Content-Type` is not `application/json`.
    #[error("request body must be JSON sent with Content-Type: application/json")]
    UnsupportedMediaType,
    /// The client sent too many requests: retry after this many seconds.
    #[error("too many requests from this client or for this account: retry in {0} s")]
    TooManyRequests(u64),
    /// The relay cannot serve the request now.
    #[error("{0}")]
    Unavailable(String),
    /// The relay failed; the details are in its log.
    #[error("internal error: retry later")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) | ApiError::Expired(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the machine-readable `error` field.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "session_ended",
            ApiError::Expired(_) => "expired",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.kind().into(),
            message: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let ApiError::TooManyRequests(seconds) = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::WriterStopped => ApiError::Unavailable(
                "relay is shutting down: retry on another relay or later".into(),
            ),
            other => {
                let fault = StoreFault::of(&other);
                tracing::error!(error = %other, reason = fault.label(), "store failed while serving a request");
                if fault.is_transient() {
                    ApiError::Unavailable(format!(
                        "relay cannot write its store ({}): retry later",
                        fault.describe()
                    ))
                } else {
                    ApiError::Internal
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_renders_json_body() {
        let response = ApiError::Gone("session ended".into()).into_response();
        assert_eq!(response.status(), StatusCode::GONE);
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error, "session_ended");
        assert_eq!(body.message, "session ended");
    }
}

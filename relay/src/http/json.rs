//! JSON request bodies of the account routes.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::{ApiError, MAX_BODY_BYTES};

/// Reads a JSON body sent with `Content-Type: application/json`. The error
/// never quotes the body, which may contain a token or a code.
pub(crate) async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::BadRequest(format!("request body is not a valid {what}")))
}

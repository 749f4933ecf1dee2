//! Counts every HTTP request by route and status and logs it at debug level.
//!
//! Only the route template is recorded, never the full URI: query strings and
//! headers can carry credentials.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::HTTP_REQUESTS;

/// Route label for requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Records the request after the handler has responded. Used as middleware.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();

    let response = next.run(request).await;

    let status = response.status().as_u16();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    tracing::debug!(%method, route, status, "request served");
    response
}

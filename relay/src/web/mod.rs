//! The patient page: `GET /join`, `GET /join/` and `GET /join/{file}`.
//!
//! The page is plain HTML, CSS and ES modules embedded in the binary (see
//! [`assets`]). Serving it reads nothing and writes nothing: opening an invite
//! link, as mail scanners and link previews do, changes no state, and the page
//! itself redeems the invite with the key from the link's fragment. Every
//! response carries a Content-Security-Policy that allows only this origin's
//! files, no referrer and no caching.
//!
//! | module | job |
//! | --- | --- |
//! | [`assets`] | the embedded files and their content types |

pub(crate) mod assets;

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::ApiError;

/// The page's Content-Security-Policy: scripts, styles, images and
/// connections from this origin only, no `<base>`, no forms, no framing.
pub(crate) const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Headers on every response of the page's routes, errors included.
const PAGE_HEADERS: [(axum::http::HeaderName, &str); 5] = [
    (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
    (REFERRER_POLICY, "no-referrer"),
    (CACHE_CONTROL, "no-store"),
    (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Builds the routes of the patient page. They need no relay state.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/join", get(page))
        .route("/join/", get(page))
        .route("/join/{file}", get(file))
        .layer(map_response(add_page_headers))
}

/// `GET /join` and `GET /join/`: the page. The query, which contains the invite
/// token, is neither read nor logged.
async fn page() -> Response {
    serve(assets::PAGE).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /join/{file}`: a script, style sheet or icon of the page.
async fn file(Path(name): Path<String>) -> Response {
    serve(&name).unwrap_or_else(IntoResponse::into_response)
}

fn serve(name: &str) -> Result<Response, ApiError> {
    let asset = assets::find(name)
        .ok_or_else(|| ApiError::NotFound("no such file of the patient page: open /join".into()))?;
    Ok(([(CONTENT_TYPE, asset.content_type)], asset.bytes).into_response())
}

async fn add_page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get_path(path: &str) -> Response {
        let request = Request::get(path).body(Body::empty()).unwrap();
        routes::<()>().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn page_routes_serve_the_page() {
        for path in ["/join", "/join/", "/join?token=abc", "/join/join.html"] {
            let response = get_path(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                "text/html; charset=utf-8",
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn every_response_has_page_headers() {
        for path in ["/join", "/join/app.js", "/join/missing.js"] {
            let response = get_path(path).await;
            for (name, value) in PAGE_HEADERS {
                assert_eq!(response.headers()[&name], value, "{name} on {path}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_and_test_files_are_not_found() {
        for path in ["/join/README.md", "/join/missing.js", "/join/..%2Fcli.rs"] {
            assert_eq!(
                get_path(path).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }
}

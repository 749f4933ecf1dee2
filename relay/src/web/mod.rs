//! The browser pages: the patient page at `/join` and the staff sign-in page
//! at `/login`, each at `PATH`, `PATH/` and `PATH/{file}`.
//!
//! The pages are plain HTML, CSS and ES modules embedded in the binary (see
//! [`assets`]). Serving them reads nothing and writes nothing: opening an
//! invite link or a magic link, as mail scanners and link previews do, changes
//! no state. The page itself redeems the invite with the key from the link's
//! fragment, and the sign-in page sends the magic-link token from its fragment
//! only after the user presses a button. Every response carries a
//! Content-Security-Policy that allows only this origin's files, no referrer
//! and no caching.
//!
//! | module | job |
//! | --- | --- |
//! | [`assets`] | the embedded files, the pages they belong to and their content types |

pub(crate) mod assets;

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, Paths,
};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::http::ApiError;
use assets::Page;

/// The pages' Content-Security-Policy: scripts, styles, images and
/// connections from this origin only, no `<base>`, no forms, no framing.
pub(crate) const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Headers on every response of the pages' routes, errors included.
const PAGE_HEADERS: [(axum::http::HeaderName, &str); 5] = [
    (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
    (REFERRER_POLICY, "no-referrer"),
    (CACHE_CONTROL, "no-store"),
    (STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

/// Builds the routes of the patient page and the sign-in page, each with
/// its OpenAPI operation. They need no relay state.
pub(crate) fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    assets::PAGES
        .iter()
        .fold(OpenApiRouter::new(), |router, page| {
            router.merge(page_routes(page))
        })
        .layer(map_response(add_page_headers))
}

/// Routes `PATH` and `PATH/` to the page's HTML file and `PATH/{file}` to its
/// scripts, style sheets and icon. The query, which may contain a token, is
/// neither read nor logged.
fn page_routes<S>(page: &'static Page) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let entry = get(move || async move { serve(page, page.entry) });
    let file = get(move |Path(name): Path<String>| async move { serve(page, &name) });
    OpenApiRouter::new()
        .routes(documented(page.path, entry_operation(page), entry.clone()))
        .routes(documented(
            &format!("{}/", page.path),
            entry_operation(page),
            entry,
        ))
        .routes(documented(
            &format!("{}/{{file}}", page.path),
            file_operation(page),
            file,
        ))
}

/// Pairs a `GET` route with its operation, as utoipa-axum's `routes!` does
/// for handlers with a `#[utoipa::path]` attribute.
fn documented<S>(
    path: &str,
    operation: Operation,
    method_router: MethodRouter<S>,
) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut paths = Paths::new();
    paths.add_path_operation(path, vec![HttpMethod::Get], operation);
    (Vec::new(), paths, method_router)
}

fn entry_operation(page: &Page) -> Operation {
    OperationBuilder::new()
        .tag("pages")
        .summary(Some(format!("The {}", page.title)))
        .description(Some(
            "An HTML page that reads nothing and writes nothing on the relay. \
             Any query is ignored.",
        ))
        .response("200", html_response("The page's HTML"))
        .build()
}

fn file_operation(page: &Page) -> Operation {
    let file = ParameterBuilder::new()
        .name("file")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("Name of a script, style sheet or icon of the page"))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let not_found = ResponseBuilder::new()
        .description("The page has no file of that name")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    OperationBuilder::new()
        .tag("pages")
        .summary(Some(format!("A file of the {}", page.title)))
        .parameter(file)
        .response(
            "200",
            ResponseBuilder::new().description("The file, with its content type"),
        )
        .response("404", not_found)
        .build()
}

fn html_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("text/html", ContentBuilder::new().build())
}

fn serve(page: &Page, name: &str) -> Response {
    match page.find(name) {
        Some(asset) => ([(CONTENT_TYPE, asset.content_type)], asset.bytes).into_response(),
        None => ApiError::NotFound(format!(
            "no such file of the {}: open {}",
            page.title, page.path
        ))
        .into_response(),
    }
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
        axum::Router::from(routes::<()>())
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn page_routes_serve_the_page() {
        let paths = [
            "/join",
            "/join/",
            "/join?token=abc",
            "/join/join.html",
            "/login",
            "/login/",
            "/login?token=abc",
            "/login/login.html",
        ];
        for path in paths {
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
        let paths = [
            "/join",
            "/join/app.js",
            "/join/missing.js",
            "/login",
            "/login/login.js",
            "/login/missing.js",
        ];
        for path in paths {
            let response = get_path(path).await;
            for (name, value) in PAGE_HEADERS {
                assert_eq!(response.headers()[&name], value, "{name} on {path}");
            }
        }
    }

    #[tokio::test]
    async fn unknown_and_test_files_are_not_found() {
        let paths = [
            "/join/README.md",
            "/join/missing.js",
            "/join/..%2Fcli.rs",
            "/join/login.js",
            "/login/README.md",
            "/login/app.js",
            "/login/..%2Flogin.js",
        ];
        for path in paths {
            assert_eq!(
                get_path(path).await.status(),
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn login_page_is_the_login_html() {
        let response = get_path("/login").await;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(body, assets::LOGIN.find("login.html").unwrap().bytes);
    }
}

//! The OpenAPI 3.1 document of the relay's HTTP API, served at
//! `GET /openapi.json`.
//!
//! Each handler describes its operation in a `#[utoipa::path]` attribute next
//! to its code. [`super::api_routes`] adds every handler with utoipa-axum's
//! `routes!`, which puts the route into the axum router and its operation
//! into the document in one call, so the two cannot list different routes.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use sealcast_protocol::api::{ErrorBody, FollowerEvent, PublisherEvent, FOLLOW_COOKIE};
use sealcast_protocol::auth::{ACCESS_COOKIE, CSRF_HEADER, DPOP_HEADER, REFRESH_COOKIE};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

/// Security scheme: `Authorization: DPoP <access token>` of a native device.
pub(crate) const DEVICE_TOKEN: &str = "device_token";
/// Security scheme: the `DPoP` proof header that goes with a device token.
pub(crate) const DPOP_PROOF: &str = "dpop_proof";
/// Security scheme: a browser's access cookie.
pub(crate) const ACCESS_COOKIE_SCHEME: &str = "access_cookie";
/// Security scheme: the CSRF header a browser sends on state-changing requests.
pub(crate) const CSRF_TOKEN: &str = "csrf_token";
/// Security scheme: a browser's refresh cookie.
pub(crate) const REFRESH_COOKIE_SCHEME: &str = "refresh_cookie";
/// Security scheme: an invite token as `Authorization: Bearer`.
pub(crate) const INVITE_TOKEN: &str = "invite_token";
/// Security scheme: a joining device's token for its pairing slot.
pub(crate) const PAIRING_JOINER_TOKEN: &str = "pairing_joiner_token";
/// Security scheme: a paired device's follow token as `Authorization: Bearer`.
pub(crate) const PAIRED_FOLLOW_TOKEN: &str = "paired_follow_token";
/// Security scheme: a redeemed browser's follow cookie.
pub(crate) const FOLLOW_COOKIE_SCHEME: &str = "follow_cookie";

/// The parts of the document that belong to no single route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sealcast relay API",
        description = "HTTP and WebSocket API of the sealcast relay. Errors are JSON \
            `ErrorBody` objects. The WebSocket protocols, frame format and close codes \
            are described in docs/protocol.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody, PublisherEvent, FollowerEvent)),
    tags(
        (name = "sessions", description = "Create, end, publish and follow sessions"),
        (name = "invites", description = "Patient invites and their redemption by browsers"),
        (name = "sign-in", description = "Magic-link sign-in, tokens and TOTP"),
        (name = "admin", description = "Users and devices of an organization"),
        (name = "pairing", description = "The mailbox that carries a pairing between a joining device and the clinician device"),
        (name = "pages", description = "The patient page and the staff sign-in page"),
        (name = "operations", description = "Health, metrics and this document")
    )
)]
pub(crate) struct ApiDoc;

/// Adds the security schemes, whose names and headers come from the protocol
/// crate's constants.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        let cookie = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        let schemes = [
            (
                DEVICE_TOKEN,
                header(
                    "Authorization",
                    "`DPoP <access token>`: an EdDSA-signed JWT bound to the device key \
                     (RFC 9449). Always sent with a `dpop_proof`.",
                ),
            ),
            (
                DPOP_PROOF,
                header(
                    DPOP_HEADER,
                    "A fresh DPoP proof JWT by the device key over the request's method \
                     and URL (RFC 9449).",
                ),
            ),
            (
                ACCESS_COOKIE_SCHEME,
                cookie(ACCESS_COOKIE, "A browser's access token."),
            ),
            (
                CSRF_TOKEN,
                header(
                    CSRF_HEADER,
                    "The CSRF cookie's value, required with browser cookies on \
                     state-changing requests.",
                ),
            ),
            (
                REFRESH_COOKIE_SCHEME,
                cookie(REFRESH_COOKIE, "A browser's single-use refresh token."),
            ),
            (
                FOLLOW_COOKIE_SCHEME,
                cookie(
                    FOLLOW_COOKIE,
                    "A redeemed browser's follow credential, accepted only with the \
                     relay's own `Origin`.",
                ),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
        let invite = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The invite token from the invite link."))
            .build();
        components.add_security_scheme(INVITE_TOKEN, SecurityScheme::Http(invite));
        let joiner = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The joiner token a joining device got for its commitment to a pairing slot.",
            ))
            .build();
        components.add_security_scheme(PAIRING_JOINER_TOKEN, SecurityScheme::Http(joiner));
        let paired = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The follow token a paired device got when its pairing completed.",
            ))
            .build();
        components.add_security_scheme(PAIRED_FOLLOW_TOKEN, SecurityScheme::Http(paired));
    }
}

/// The document, built once from the same routes the relay serves.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&document()).unwrap_or_else(|error| {
        tracing::error!(%error, "failed to serialize the OpenAPI document");
        String::new()
    })
});

/// Returns the OpenAPI document of every route the relay serves.
pub fn document() -> Document {
    super::api_routes().into_openapi()
}

/// Returns the method and path template of every route the relay serves,
/// read from its router, for example `("POST", "/v1/sessions")`.
pub fn routes() -> Vec<(Method, String)> {
    let document = document();
    let mut routes = Vec::new();
    for (path, item) in &document.paths.paths {
        let operations = [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
        ];
        for (method, operation) in operations {
            if operation.is_some() {
                routes.push((method, path.clone()));
            }
        }
    }
    routes
}

/// Serves the document as JSON.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"),
        (status = 500, description = "The document could not be built", body = ErrorBody)
    )
)]
pub(crate) async fn serve() -> Response {
    if DOCUMENT_JSON.is_empty() {
        return super::ApiError::Internal.into_response();
    }
    ([(CONTENT_TYPE, "application/json")], DOCUMENT_JSON.as_str()).into_response()
}

//! `GET /openapi.json` is a well-formed OpenAPI 3.1 document that lists
//! every route of the relay's router with its methods, and the relay serves
//! exactly the methods the document lists on each path.
//!
//! The route list comes from `sealcast_relay::http_routes`, which reads the
//! router the relay is built from, so a route added to the router without an
//! operation in the document fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use sealcast_client::TlsSettings;
use sealcast_tests::process::RelayProcess;
use serde_json::Value;
use url::Url;

/// Methods probed on every documented path. HEAD and OPTIONS are left out:
/// axum serves HEAD on every GET route by itself.
const PROBED_METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// Start of the message of the relay's fallback for unknown paths.
const NO_SUCH_ENDPOINT: &str = "no such endpoint";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let data = tempfile::tempdir().unwrap();
    // Probing credential routes without a credential gets many 401s.
    let relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &["--failed-credentials-per-minute", "10000"],
    );
    let base = Url::parse(&relay.base_url()).unwrap();
    let client = http_client(&relay);

    let response = client
        .get(base.join("openapi.json").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "GET /openapi.json failed"
    );
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert_eq!(content_type, "application/json");
    let text = response.text().await.unwrap();
    let document: Value = serde_json::from_str(&text).expect("document is JSON");
    check_well_formed(&document);
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_str(&text).expect("document parses as utoipa's OpenApi");
    assert!(!parsed.paths.paths.is_empty(), "document has no paths");

    let routes = sealcast_relay::http_routes();
    assert!(!routes.is_empty(), "the router lists no routes");
    let documented = documented_routes(&document);
    for (method, path) in &routes {
        let route = (method.as_str().to_owned(), path.clone());
        assert!(
            documented.contains(&route),
            "{method} {path} is routed but missing from /openapi.json"
        );
    }
    assert_eq!(
        documented.len(),
        routes.len(),
        "/openapi.json lists routes the router does not have: {documented:?}"
    );

    for path in documented
        .iter()
        .map(|(_, path)| path)
        .collect::<BTreeSet<_>>()
    {
        let url = base.join(&fill_parameters(path)).unwrap();
        for method in PROBED_METHODS {
            let listed = documented.contains(&(method.as_str().to_owned(), path.clone()));
            let (status, body) = probe(&client, method.clone(), url.clone()).await;
            if listed {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but the relay does not route it"
                );
                assert!(
                    !(status == StatusCode::NOT_FOUND && body.contains(NO_SUCH_ENDPOINT)),
                    "{method} {path} is documented but reaches the unknown-path fallback"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }
}

fn http_client(relay: &RelayProcess) -> reqwest::Client {
    let tls = TlsSettings::from_ca_file(&relay.ca_cert()).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.http_config().unwrap())
        .build()
        .unwrap()
}

/// Sends a request without credentials or body and returns the status and
/// the body's text.
async fn probe(client: &reqwest::Client, method: Method, url: Url) -> (StatusCode, String) {
    let response = client.request(method, url).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Replaces each `{name}` of a path template with a value of the right shape.
fn fill_parameters(path: &str) -> String {
    path.replace("{id}", "0123456789abcdef0123456789abcdef")
        .replace("{file}", "no-such-file.js")
}

/// Returns every (method, path) pair the document lists, methods upper case.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if is_method(method) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

fn is_method(key: &str) -> bool {
    matches!(
        key,
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
    )
}

/// Checks the fields OpenAPI 3.1 requires and the rules this API keeps.
fn check_well_formed(document: &Value) {
    assert_eq!(document["openapi"], "3.1.0", "wrong OpenAPI version");
    assert!(document["info"]["title"]
        .as_str()
        .is_some_and(|title| !title.is_empty()));
    assert!(document["info"]["version"]
        .as_str()
        .is_some_and(|version| !version.is_empty()));

    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "path {path} does not start with /");
        for (method, operation) in item.as_object().unwrap() {
            assert!(is_method(method), "{path} has a non-method key {method}");
            let name = format!("{} {path}", method.to_uppercase());
            check_operation(&name, path, operation, schemes);
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id} is used twice"
                );
            }
        }
    }
    check_references(document, document);
}

fn check_operation(
    name: &str,
    path: &str,
    operation: &Value,
    schemes: &serde_json::Map<String, Value>,
) {
    let responses = operation["responses"].as_object().unwrap_or_else(|| {
        panic!("{name} has no responses");
    });
    assert!(!responses.is_empty(), "{name} has no responses");
    for (status, response) in responses {
        assert!(
            response["description"].is_string(),
            "{name} response {status} has no description"
        );
        if status.starts_with('4') || status.starts_with('5') {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{name} response {status} is not an ErrorBody"
            );
        }
    }
    if responses.contains_key("101") {
        let description = operation["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("docs/protocol.md"),
            "{name} is a WebSocket upgrade whose description does not point to docs/protocol.md"
        );
    }

    for parameter in path_parameters(path) {
        let declared = operation["parameters"]
            .as_array()
            .is_some_and(|parameters| {
                parameters.iter().any(|declared| {
                    declared["name"] == parameter.as_str()
                        && declared["in"] == "path"
                        && declared["required"] == true
                })
            });
        assert!(
            declared,
            "{name} does not declare path parameter {parameter}"
        );
    }

    for requirement in operation["security"].as_array().into_iter().flatten() {
        for scheme in requirement.as_object().unwrap().keys() {
            assert!(
                schemes.contains_key(scheme),
                "{name} names unknown security scheme {scheme}"
            );
        }
    }
}

fn path_parameters(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// Checks that every `$ref` points to a component that exists.
fn check_references(document: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("external reference {reference}"));
                assert!(
                    document.pointer(pointer).is_some(),
                    "reference {reference} points to nothing"
                );
            }
            map.values()
                .for_each(|value| check_references(document, value));
        }
        Value::Array(items) => items
            .iter()
            .for_each(|value| check_references(document, value)),
        _ => {}
    }
}

//! Relay URLs: the base URL a user gives, and the API endpoints built from it.

use sealcast_protocol::SessionId;
use url::Url;

use crate::error::ClientError;

/// Parses and checks a relay base URL such as `https://relay.example:8443`.
///
/// The relay always speaks TLS, so only `https` is accepted. A path other
/// than `/`, a query or a fragment is rejected, because invite links and API
/// routes are fixed at the root of the host.
pub fn parse_relay_url(text: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidRelayUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(text.trim()).map_err(|err| ClientError::InvalidRelayUrl {
        url: text.to_string(),
        reason: format!("{err}: write it like https://relay.example:8443"),
    })?;

    if url.scheme() != "https" {
        return Err(invalid(
            "the relay only accepts TLS: start the URL with https://",
        ));
    }
    if url.host().is_none() {
        return Err(invalid("the URL has no host name"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("remove the user name and password from the URL"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "give only the scheme, host and port, without a path, query or fragment",
        ));
    }
    Ok(url)
}

/// Builds the URL of an HTTP route such as `/v1/auth/login` at the relay's root.
pub fn route_url(relay: &Url, path: &str) -> Url {
    with_path(relay, path)
}

/// Builds the URL of `POST /v1/sessions`.
pub fn sessions_url(relay: &Url) -> Url {
    with_path(relay, "/v1/sessions")
}

/// Builds the URL of `POST /v1/sessions/{id}/end`.
pub fn end_url(relay: &Url, session_id: &SessionId) -> Url {
    with_path(relay, &format!("/v1/sessions/{session_id}/end"))
}

/// Builds the publish WebSocket URL, `wss://HOST/v1/sessions/{id}/publish`.
pub fn publish_url(relay: &Url, session_id: &SessionId) -> Url {
    websocket(with_path(
        relay,
        &format!("/v1/sessions/{session_id}/publish"),
    ))
}

/// Builds the follow WebSocket URL, `wss://HOST/v1/follow?from=N`, with `&epoch=E` once
/// the epoch is known from an earlier connection.
pub fn follow_url(relay: &Url, epoch: Option<u64>, from: u64) -> Url {
    let mut url = websocket(with_path(relay, "/v1/follow"));
    {
        let mut query = url.query_pairs_mut();
        if let Some(epoch) = epoch {
            query.append_pair("epoch", &epoch.to_string());
        }
        query.append_pair("from", &from.to_string());
    }
    url
}

fn with_path(relay: &Url, path: &str) -> Url {
    let mut url = relay.clone();
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn websocket(mut url: Url) -> Url {
    let scheme = if url.scheme() == "http" { "ws" } else { "wss" };
    // The url crate allows switching between the special schemes http(s) and ws(s).
    let _ = url.set_scheme(scheme);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_url_accepts_host_and_port() {
        let url = parse_relay_url("https://127.0.0.1:8443").unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:8443/");
    }

    #[test]
    fn relay_url_rejects_http_and_paths() {
        for text in [
            "http://relay.example",
            "https://relay.example/api",
            "https://relay.example/?x=1",
            "https://user:pw@relay.example",
            "relay.example",
        ] {
            assert!(parse_relay_url(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn endpoints_are_built_at_the_root() {
        let relay = parse_relay_url("https://relay.example:8443").unwrap();
        let id = SessionId([0x11; 16]);
        assert_eq!(
            sessions_url(&relay).as_str(),
            "https://relay.example:8443/v1/sessions"
        );
        assert_eq!(
            end_url(&relay, &id).as_str(),
            format!("https://relay.example:8443/v1/sessions/{id}/end")
        );
        assert_eq!(
            publish_url(&relay, &id).as_str(),
            format!("wss://relay.example:8443/v1/sessions/{id}/publish")
        );
    }

    #[test]
    fn follow_url_carries_epoch_once_known() {
        let relay = parse_relay_url("https://relay.example").unwrap();
        assert_eq!(
            follow_url(&relay, None, 0).as_str(),
            "wss://relay.example/v1/follow?from=0"
        );
        assert_eq!(
            follow_url(&relay, Some(2), 17).as_str(),
            "wss://relay.example/v1/follow?epoch=2&from=17"
        );
    }
}

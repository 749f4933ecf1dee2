//! Opening relay WebSockets and sorting connection failures into those worth
//! retrying and those that are final.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::api::error_chain;
use crate::auth::Authorizer;
use crate::error::ClientError;

/// A WebSocket to the relay.
pub(crate) type RelaySocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Maximum time for TCP, TLS and the WebSocket upgrade together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest message accepted from the relay: a delivery of the largest frame
/// is about 64 KiB, and JSON events are far smaller.
const MAX_MESSAGE: usize = 1 << 20;

/// The reason a connection attempt or a connection ended.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A transient failure: wait and reconnect.
    Retry(String),
    /// A relay too busy to serve now, which asked to wait `wait` (an HTTP
    /// `Retry-After`) before the next attempt.
    RetryAfter {
        /// The relay's status and error message.
        reason: String,
        /// The relay's `Retry-After`.
        wait: Duration,
    },
    /// A failure that reconnecting cannot fix.
    Fatal(ClientError),
}

/// The credential the caller authenticates with, named in error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Credential {
    /// A device-bound access token of a signed-in device.
    DeviceToken,
    /// The invite token of an invite link.
    InviteToken,
}

/// Opens a WebSocket with the headers of `auth`.
pub(crate) async fn connect(
    url: &Url,
    auth: &dyn Authorizer,
    tls: &Arc<ClientConfig>,
    credential: Credential,
) -> Result<RelaySocket, Failure> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| Failure::Fatal(ClientError::Internal(format!("invalid request: {err}"))))?;
    for (name, value) in auth.headers("GET", url.as_str()).map_err(Failure::Fatal)? {
        request.headers_mut().insert(name, value);
    }

    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(Connector::Rustls(tls.clone())),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(err)) => Err(classify_connect_error(err, credential)),
        Err(_) => Err(Failure::Retry(format!(
            "no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

fn classify_connect_error(err: WsError, credential: Credential) -> Failure {
    match err {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let failure = classify_status(status, &body, credential);
            match (failure, retry_after(response.headers())) {
                (Failure::Retry(reason), Some(wait)) => Failure::RetryAfter { reason, wait },
                (failure, _) => failure,
            }
        }
        WsError::Io(io) => match crate::tls::certificate_error(&io) {
            Some(reason) => Failure::Fatal(ClientError::UntrustedCertificate { reason }),
            None => Failure::Retry(error_chain(&io)),
        },
        WsError::Tls(tls) => Failure::Fatal(ClientError::Tls(tls.to_string())),
        WsError::Url(url) => Failure::Fatal(ClientError::Internal(format!("invalid URL: {url}"))),
        other => Failure::Retry(error_chain(&other)),
    }
}

/// Reads a `Retry-After` header in seconds (RFC 9110, section 10.2.3).
// NOTE: the other form, an HTTP date, is ignored and the plain backoff
// applies; the relay sends seconds.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// Sorts an HTTP status that refused a WebSocket upgrade.
fn classify_status(status: u16, body: &str, credential: Credential) -> Failure {
    let message = relay_message(body, status);
    let (what, unauthorized_hint, forbidden_hint) = match credential {
        Credential::DeviceToken => (
            "the device's sign-in",
            "the relay rejected this device's sign-in: run `sealcast login` again",
            "the signed-in user may not publish to this session: it belongs to another \
             organization or needs a clinician account",
        ),
        Credential::InviteToken => (
            "the invite link",
            "the invite was rejected: it may have expired or been revoked, so ask the clinic for a new link",
            "the invite was rejected: it may have expired or been revoked, so ask the clinic for a new link",
        ),
    };
    let fatal = |hint| {
        Failure::Fatal(ClientError::RelayStatus {
            what,
            status,
            message: message.clone(),
            hint,
        })
    };
    match status {
        401 => fatal(unauthorized_hint),
        403 => fatal(forbidden_hint),
        404 => fatal("the relay has no such session"),
        410 => Failure::Fatal(ClientError::SessionEnded),
        408 | 429 | 500..=599 => Failure::Retry(format!("relay returned HTTP {status}: {message}")),
        _ => fatal("check that the URL names a sealcast relay of this version"),
    }
}

fn relay_message(body: &str, status: u16) -> String {
    match serde_json::from_str::<sealcast_protocol::api::ErrorBody>(body) {
        Ok(error) => error.message,
        Err(_) if body.trim().is_empty() => format!("status {status}"),
        Err(_) => body.trim().chars().take(300).collect(),
    }
}

/// Describes a close code for messages.
pub(crate) fn describe_close(code: u16, reason: &str) -> String {
    if !reason.is_empty() {
        return reason.to_string();
    }
    use sealcast_protocol::api::close;
    match code {
        close::NORMAL => "normal closure",
        close::GOING_AWAY => "relay going away",
        close::UNSUPPORTED_DATA => "unsupported data",
        close::POLICY_VIOLATION => "policy violation",
        close::MESSAGE_TOO_BIG => "message too big",
        close::INTERNAL_ERROR => "relay internal error",
        close::MALFORMED_FRAME => "malformed frame",
        close::UNSUPPORTED_VERSION => "unsupported protocol version",
        close::WRONG_SESSION => "frame of another session",
        close::SEQUENCE_GAP => "sequence gap",
        close::SESSION_ENDED => "session ended",
        close::LAGGED => "follower lagged",
        close::CANNOT_RECOVER => "cannot recover",
        close::REPLACED => "replaced by another connection",
        close::TIMEOUT => "timed out",
        close::REVOKED => "credential revoked",
        _ => "no reason given",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_final() {
        for status in [401, 403, 404] {
            let failure = classify_status(status, "", Credential::InviteToken);
            assert!(matches!(failure, Failure::Fatal(_)), "{status}");
        }
        assert!(matches!(
            classify_status(410, "", Credential::DeviceToken),
            Failure::Fatal(ClientError::SessionEnded)
        ));
    }

    #[test]
    fn forbidden_device_names_organization_and_role() {
        let Failure::Fatal(err) = classify_status(403, "", Credential::DeviceToken) else {
            panic!("403 must be final");
        };
        let message = err.to_string();
        assert!(message.contains("another organization"), "{message}");
        assert!(message.contains("clinician account"), "{message}");
        assert_eq!(err.exit_code(), crate::error::exit_code::NO_PERMISSION);
    }

    #[test]
    fn server_failures_are_retried() {
        for status in [429, 500, 502, 503] {
            let failure = classify_status(status, "", Credential::DeviceToken);
            assert!(matches!(failure, Failure::Retry(_)), "{status}");
        }
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn busy_relay_answer_keeps_retry_after() {
        let response = http::Response::builder()
            .status(503)
            .header(http::header::RETRY_AFTER, "2")
            .body(Some(
                br#"{"error":"unavailable","message":"busy"}"#.to_vec(),
            ))
            .unwrap();
        let failure = classify_connect_error(WsError::Http(response), Credential::InviteToken);
        let Failure::RetryAfter { reason, wait } = failure else {
            panic!("a 503 with Retry-After must be retried after it: {failure:?}");
        };
        assert_eq!(wait, Duration::from_secs(2));
        assert!(reason.contains("busy"), "{reason}");
    }

    #[test]
    fn relay_error_body_is_quoted() {
        let body = r#"{"error":"unauthorized","message":"invite expired"}"#;
        let Failure::Fatal(err) = classify_status(401, body, Credential::InviteToken) else {
            panic!("401 must be final");
        };
        let message = err.to_string();
        assert!(message.contains("invite expired"), "{message}");
        assert!(
            message.contains("ask the clinic for a new link"),
            "{message}"
        );
    }
}

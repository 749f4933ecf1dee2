//! WebSockets to the relay over TLS without the client library, for tests
//! that send what a correct device never sends, or that stop reading.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sealcast_client::auth::{Authorizer, BearerToken};
use sealcast_client::{SecretString, TlsSettings};
use sealcast_protocol::api::{ErrorBody, PublisherEvent};
use sealcast_protocol::StreamId;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::session::LiveSession;

/// A WebSocket to the relay.
pub type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Maximum wait for the relay to send an expected message or close.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket at `url` (`wss://…`) with `Authorization: Bearer
/// {credential}`, trusting the roots in `tls`.
pub async fn connect(
    url: &Url,
    tls: &TlsSettings,
    auth: &dyn Authorizer,
) -> Result<RawSocket, WsError> {
    let mut request = url
        .as_str()
        .into_client_request()
        .expect("the WebSocket URL is valid");
    let headers = auth
        .headers("GET", url.as_str())
        .expect("the credential headers are made");
    for (name, value) in headers {
        request.headers_mut().insert(name, value);
    }

    let config = tls
        .websocket_config()
        .expect("TLS settings build a client configuration");
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(Connector::Rustls(config)),
    );
    let (socket, _response) = tokio::time::timeout(READ_LIMIT, connecting)
        .await
        .expect("WebSocket connection timed out")?;
    Ok(socket)
}

/// Attempts an upgrade that the relay must reject, and returns the HTTP
/// status and the JSON error body of its response.
pub async fn rejected_upgrade(url: &Url, tls: &TlsSettings, credential: &str) -> (u16, ErrorBody) {
    let bearer = BearerToken::new(SecretString::from(credential));
    let response = match connect(url, tls, &bearer).await {
        Ok(_) => panic!("the relay upgraded {url} with an invalid credential"),
        Err(WsError::Http(response)) => response,
        Err(other) => panic!("upgrade of {url} failed without an HTTP response: {other}"),
    };
    let status = response.status().as_u16();
    let body = response.body().clone().unwrap_or_default();
    let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|err| {
        panic!(
            "HTTP {status} body is not an error body ({err}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, error)
}

/// Reads until the relay closes the socket and returns the close code and
/// reason. Text and binary messages before the close are skipped.
pub async fn read_close(socket: &mut RawSocket) -> (u16, String) {
    let closing = async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Ok(Message::Close(None)) => panic!("the relay closed without a code"),
                Ok(_) => {}
                Err(err) => panic!("the socket failed before the relay's close frame: {err}"),
            }
        }
        panic!("the connection ended without a close frame")
    };
    tokio::time::timeout(READ_LIMIT, closing)
        .await
        .expect("the relay did not close the socket in time")
}

/// A publish socket driven frame by frame.
pub struct RawPublisher {
    socket: RawSocket,
}

impl RawPublisher {
    /// Opens the publish socket of `session` as its clinician and waits for the welcome.
    pub async fn connect(session: &LiveSession) -> Self {
        let url =
            sealcast_client::endpoint::publish_url(&session.relay, &session.created.session_id);
        let mut socket = connect(&url, &session.tls, session.auth.as_ref())
            .await
            .expect("publish socket opens");
        match next_event(&mut socket).await {
            PublisherEvent::Welcome { session_id, .. } => {
                assert_eq!(
                    session_id, session.created.session_id,
                    "welcome names another session"
                )
            }
            other => panic!("expected the welcome, got {other:?}"),
        }
        RawPublisher { socket }
    }

    /// Sends one binary message.
    pub async fn send(&mut self, frame: Vec<u8>) {
        self.socket
            .send(Message::Binary(frame.into()))
            .await
            .expect("frame is sent");
    }

    /// Waits for the acknowledgement that covers `seq` of `stream_id` and returns its offset.
    pub async fn wait_for_ack(&mut self, stream_id: StreamId, seq: u64) -> u64 {
        loop {
            match next_event(&mut self.socket).await {
                PublisherEvent::Ack {
                    stream_id: acked,
                    seq: acked_seq,
                    offset,
                } if acked == stream_id && acked_seq >= seq => return offset,
                PublisherEvent::Ack { .. } => {}
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
    }

    /// Returns the socket, to send messages a publisher never sends.
    pub fn socket(&mut self) -> &mut RawSocket {
        &mut self.socket
    }
}

async fn next_event(socket: &mut RawSocket) -> PublisherEvent {
    let message = tokio::time::timeout(READ_LIMIT, socket.next())
        .await
        .expect("the relay sent no event in time");
    match message {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("invalid publisher event {text:?}: {err}")),
        Some(Ok(Message::Close(frame))) => panic!("the relay closed the publish socket: {frame:?}"),
        other => panic!("expected a publisher event, got {other:?}"),
    }
}

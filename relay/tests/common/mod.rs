//! Shared helpers for the relay's integration tests: a relay on port 0 with a
//! temporary data directory, an HTTPS client and a WebSocket client that
//! trust the relay's development certificate.

// Each test binary uses a different part of this module. Like the tests
// themselves, the helpers fail by panicking.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use sealcast_protocol::api::{self, CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::{SessionKey, StreamId, StreamSealer, TranscriptSegment};
use sealcast_relay::{start, Config, Limits, RelayHandle};
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long a test waits for any single message before failing.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A relay serving from a temporary data directory, with clients that trust it.
pub struct TestRelay {
    pub handle: RelayHandle,
    pub api_key: String,
    pub http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
    dir: Arc<TempDir>,
}

/// Starts a relay on 127.0.0.1 port 0 with `limits` in a new data directory.
pub async fn start_relay(limits: Limits) -> TestRelay {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let handle = start(config(dir.path(), limits)).await.unwrap();
    let api_key = handle
        .api_key()
        .expect("a fresh data directory makes an API key");
    TestRelay::wrap(handle, api_key, dir)
}

fn config(dir: &Path, limits: Limits) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        limits,
        ..Config::default()
    }
}

impl TestRelay {
    fn wrap(handle: RelayHandle, api_key: String, dir: Arc<TempDir>) -> TestRelay {
        let pem = std::fs::read(dir.path().join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        TestRelay {
            handle,
            api_key,
            http,
            tls: client_tls(&pem),
            dir,
        }
    }

    /// Stops this relay gracefully and starts another on the same data directory.
    pub async fn restart(self, limits: Limits) -> TestRelay {
        let dir = self.dir.clone();
        let api_key = self.api_key.clone();
        self.handle.shutdown().await;
        let handle = start(config(dir.path(), limits)).await.unwrap();
        assert!(
            handle.api_key().is_none(),
            "a restart must not make another API key"
        );
        TestRelay::wrap(handle, api_key, dir)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr())
    }

    /// Creates a session with a fresh key and returns both.
    pub async fn create_session(&self) -> (CreateSessionResponse, SessionKey) {
        let key = SessionKey::generate();
        let request = CreateSessionRequest {
            fingerprint: key.fingerprint().to_base64url(),
            invite_verifier: None,
            max_browsers: None,
        };
        let response = self
            .http
            .post(self.url("/v1/sessions"))
            .bearer_auth(&self.api_key)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        (response.json().await.unwrap(), key)
    }

    /// Ends a session and returns the status.
    pub async fn end_session(&self, session: &CreateSessionResponse) -> StatusCode {
        self.http
            .post(self.url(&format!("/v1/sessions/{}/end", session.session_id)))
            .bearer_auth(&session.publisher_token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Opens the publish socket and reads its welcome.
    pub async fn publish(&self, session: &CreateSessionResponse) -> Ws {
        let path = format!("/v1/sessions/{}/publish", session.session_id);
        let mut ws = self
            .connect(&path, &session.publisher_token, None)
            .await
            .unwrap();
        let welcome: api::PublisherEvent = ws.next_event().await;
        assert_eq!(
            welcome,
            api::PublisherEvent::Welcome {
                session_id: session.session_id,
                epoch: session.epoch,
            }
        );
        ws
    }

    /// Opens a follow socket with a query such as `?from=3`, without reading.
    pub async fn follow(&self, session: &CreateSessionResponse, query: &str) -> Ws {
        let path = format!("/v1/follow{query}");
        self.connect(&path, &session.invite_token, None)
            .await
            .unwrap()
    }

    /// Opens a WebSocket with a bearer token, optionally with a small TCP
    /// receive buffer for a client that reads slowly.
    pub async fn connect(
        &self,
        path: &str,
        token: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let authorization = format!("Bearer {token}");
        self.connect_with_headers(path, &[("authorization", &authorization)], recv_buffer)
            .await
    }

    /// Opens a WebSocket with extra request headers, such as a cookie and an
    /// `Origin`, optionally with a small TCP receive buffer.
    pub async fn connect_with_headers(
        &self,
        path: &str,
        headers: &[(&'static str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut request = format!("wss://{}{path}", self.addr())
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream: TcpStream = socket.connect(self.addr()).await.unwrap();
        let connector = Connector::Rustls(self.tls.clone());
        let (inner, _) =
            tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(connector))
                .await?;
        Ok(Ws { inner })
    }

    /// Fetches the relay's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn client_tls(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .unwrap();
    for cert in certs {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Reads the value of a metric line, for example
/// `sealcast_frames_rejected_total{reason="malformed"}`; 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// A client WebSocket.
#[derive(Debug)]
pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a follower received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowItem {
    Frame(u64, Vec<u8>),
    Event(api::FollowerEvent),
    Close(u16, String),
}

impl Ws {
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.inner.send(Message::Binary(data.into())).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.inner.send(Message::Text(text.into())).await.unwrap();
    }

    /// Reads the next data or close message, skipping pings and pongs.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let next = tokio::time::timeout(STEP_TIMEOUT, self.inner.next())
                .await
                .expect("timed out waiting for a WebSocket message");
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads the next text message as an API event.
    pub async fn next_event<T: DeserializeOwned>(&mut self) -> T {
        match self.next_message().await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected a JSON event, got {other:?}"),
        }
    }

    /// Reads the next follower message and sorts it by kind.
    pub async fn next_follow_item(&mut self) -> FollowItem {
        match self.next_message().await {
            Some(Message::Binary(data)) => {
                let (offset, frame) = api::decode_delivery(&data).unwrap();
                FollowItem::Frame(offset, frame.to_vec())
            }
            Some(Message::Text(text)) => {
                FollowItem::Event(serde_json::from_str(text.as_str()).unwrap())
            }
            Some(Message::Close(Some(frame))) => {
                FollowItem::Close(u16::from(frame.code), frame.reason.to_string())
            }
            other => panic!("unexpected follower message {other:?}"),
        }
    }

    /// Reads until the relay's close frame and returns its code and reason,
    /// skipping any other message.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next_message().await {
                Some(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Message::Close(None)) => return (u16::from(CloseCode::Status), String::new()),
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// A publishing stream: seals numbered transcript segments.
pub struct Publisher {
    pub sealer: StreamSealer,
}

impl Publisher {
    pub fn new(key: &SessionKey, session: &CreateSessionResponse) -> Publisher {
        Publisher {
            sealer: StreamSealer::new(key, session.session_id),
        }
    }

    pub fn with_stream(
        key: &SessionKey,
        session: &CreateSessionResponse,
        stream: StreamId,
    ) -> Publisher {
        Publisher {
            sealer: StreamSealer::with_stream_id(key, session.session_id, stream),
        }
    }

    pub fn stream_id(&self) -> StreamId {
        self.sealer.stream_id()
    }

    /// Seals the next segment, with `text_len` bytes of text.
    pub fn next_frame(&mut self, is_final: bool, text_len: usize) -> Vec<u8> {
        let seq = self.sealer.next_seq();
        let segment = TranscriptSegment {
            segment_id: seq,
            revision: 0,
            speaker: "clinician".into(),
            start_ms: seq * 100,
            end_ms: seq * 100 + 90,
            text: "a".repeat(text_len),
            is_final,
        };
        self.sealer.seal_segment(&segment).unwrap()
    }
}

/// Reads publisher events until the acknowledgement of `seq` on `stream`
/// and returns every acknowledgement seen, in order.
pub async fn acks_until(ws: &mut Ws, stream: StreamId, seq: u64) -> Vec<(u64, u64)> {
    let mut acks = Vec::new();
    loop {
        match ws.next_event::<api::PublisherEvent>().await {
            api::PublisherEvent::Ack {
                stream_id,
                seq: acked,
                offset,
            } => {
                assert_eq!(stream_id, stream, "ack names another stream");
                acks.push((acked, offset));
                if acked >= seq {
                    return acks;
                }
            }
            other => panic!("unexpected publisher event {other:?}"),
        }
    }
}

//! Shared helpers for the relay's integration tests: a relay on port 0 with a
//! temporary data directory, an HTTPS client and a WebSocket client that
//! trust the relay's development certificate, and a clinician device signed
//! in through the magic link the relay writes to its outbox folder.

// Each test binary uses a different part of this module. Like the tests
// themselves, the helpers fail by panicking.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rustls::pki_types::CertificateDer;
use sealcast_client::auth::{AuthHeaders, Authorizer, DeviceToken};
use sealcast_client::SecretString;
use sealcast_protocol::api::{self, CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::auth::{
    LoginConfirmRequest, LoginConfirmed, LoginPollRequest, LoginPollResponse, LoginRequest,
    LoginStarted, Role, TokenResponse, DPOP_HEADER,
};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{SessionKey, StreamId, StreamSealer, TranscriptSegment};
use sealcast_relay::accounts::admin::AdminStore;
use sealcast_relay::accounts::OUTBOX_DIR;
use sealcast_relay::{start, AccountsConfig, Config, Limits, RelayHandle};
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// How long a test waits for any single message before failing.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Email address of the clinician every test relay signs in.
pub const CLINICIAN_EMAIL: &str = "clinician@clinic.example";

/// A relay serving from a temporary data directory, with clients that trust
/// it and a signed-in clinician device of organization `organization_id`.
pub struct TestRelay {
    pub handle: RelayHandle,
    pub http: reqwest::Client,
    pub organization_id: String,
    pub staff: Staff,
    tls: Arc<rustls::ClientConfig>,
    dir: Arc<TempDir>,
}

/// Starts a relay on 127.0.0.1 port 0 with `limits` in a new data directory,
/// with an organization and a signed-in clinician.
pub async fn start_relay(limits: Limits) -> TestRelay {
    start_relay_with(limits, AccountsConfig::default()).await
}

/// Like [`start_relay`], with account settings such as token lifetimes.
pub async fn start_relay_with(limits: Limits, accounts: AccountsConfig) -> TestRelay {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let handle = start(config(dir.path(), limits, accounts)).await.unwrap();
    let admin = AdminStore::open(dir.path()).unwrap();
    let organization_id = admin.create_organization("Test clinic").unwrap();
    admin
        .create_user(&organization_id, CLINICIAN_EMAIL, Role::Clinician)
        .unwrap();
    let http = https_client(dir.path());
    let staff = sign_in_device(&http, &handle, dir.path(), CLINICIAN_EMAIL).await;
    TestRelay::wrap(handle, dir, organization_id, staff)
}

fn config(dir: &Path, limits: Limits, accounts: AccountsConfig) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        limits,
        accounts,
        ..Config::default()
    }
}

/// Returns an HTTPS client that trusts the development certificate in `dir`.
pub fn https_client(dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

impl TestRelay {
    fn wrap(
        handle: RelayHandle,
        dir: Arc<TempDir>,
        organization_id: String,
        staff: Staff,
    ) -> TestRelay {
        let pem = std::fs::read(dir.path().join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap();
        TestRelay {
            handle,
            http: https_client(dir.path()),
            organization_id,
            staff,
            tls: client_tls(&pem),
            dir,
        }
    }

    /// Stops this relay gracefully and starts another on the same data
    /// directory, and signs the clinician in again: the new relay has
    /// another port, so another public URL and token issuer.
    pub async fn restart(self, limits: Limits) -> TestRelay {
        let dir = self.dir.clone();
        self.handle.shutdown().await;
        let handle = start(config(dir.path(), limits, AccountsConfig::default()))
            .await
            .unwrap();
        let staff = sign_in_device(&self.http, &handle, dir.path(), CLINICIAN_EMAIL).await;
        TestRelay::wrap(handle, dir, self.organization_id, staff)
    }

    /// Starts a second relay node on this relay's data directory and signs
    /// the clinician in on it. With the default local fan-out the two nodes
    /// share the store and nothing else.
    pub async fn start_node(&self, limits: Limits) -> TestRelay {
        let config = config(self.data_dir(), limits, AccountsConfig::default());
        let handle = start(config).await.unwrap();
        let staff = sign_in_device(&self.http, &handle, self.data_dir(), CLINICIAN_EMAIL).await;
        TestRelay::wrap(
            handle,
            self.dir.clone(),
            self.organization_id.clone(),
            staff,
        )
    }

    /// Creates a user of this relay's organization and signs in a new
    /// device of theirs.
    pub async fn sign_in_new_user(&self, email: &str, role: Role) -> Staff {
        let admin = AdminStore::open(self.data_dir()).unwrap();
        admin
            .create_user(&self.organization_id, email, role)
            .unwrap();
        sign_in_device(&self.http, &self.handle, self.data_dir(), email).await
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
            .staff_post("/v1/sessions")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        (response.json().await.unwrap(), key)
    }

    /// Starts a POST request as the signed-in clinician.
    pub fn staff_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.staff
            .authorize(self.http.post(self.url(path)), "POST", path)
    }

    /// Ends a session and returns the status.
    pub async fn end_session(&self, session: &CreateSessionResponse) -> StatusCode {
        self.staff_post(&format!("/v1/sessions/{}/end", session.session_id))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Opens a WebSocket as `staff`.
    pub async fn connect_staff(
        &self,
        path: &str,
        staff: &Staff,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let headers = staff.headers("GET", path);
        let pairs: Vec<(&'static str, String)> = headers
            .iter()
            .map(|(name, value)| {
                let name: &'static str = if *name == "authorization" {
                    "authorization"
                } else {
                    "dpop"
                };
                (name, value.to_str().unwrap().to_owned())
            })
            .collect();
        let borrowed: Vec<(&'static str, &str)> = pairs
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        self.connect_with_headers(path, &borrowed, None).await
    }

    /// Opens the publish socket and reads its welcome.
    pub async fn publish(&self, session: &CreateSessionResponse) -> Ws {
        let path = format!("/v1/sessions/{}/publish", session.session_id);
        let mut ws = self.connect_staff(&path, &self.staff).await.unwrap();
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

/// A signed-in staff device: its key and tokens, and the relay's public URL
/// that its DPoP proofs name.
pub struct Staff {
    pub key: Arc<DeviceKey>,
    pub token: DeviceToken,
    pub tokens: TokenResponse,
    pub public_url: String,
}

impl Staff {
    /// Returns the credential headers of one request to `path`.
    pub fn headers(&self, method: &str, path: &str) -> AuthHeaders {
        self.token
            .headers(method, &format!("{}{path}", self.public_url))
            .unwrap()
    }

    /// Adds the credential headers of one request to `path`.
    pub fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.headers(method, path)
            .into_iter()
            .fold(request, |request, (name, value)| {
                request.header(name, value)
            })
    }
}

/// Returns the current time in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Returns the `.eml` files in the outbox folder of `data_dir`.
pub fn outbox_files(data_dir: &Path) -> HashSet<PathBuf> {
    match std::fs::read_dir(data_dir.join(OUTBOX_DIR)) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => HashSet::new(),
    }
}

/// Waits for a mail to `email` that is not in `before` and returns the
/// magic token of its link.
pub async fn wait_for_magic_token(
    data_dir: &Path,
    email: &str,
    before: &HashSet<PathBuf>,
) -> String {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        for path in outbox_files(data_dir) {
            if before.contains(&path) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            if !text.contains(email) {
                continue;
            }
            let start = text.find("#token=").expect("mail without a sign-in link") + 7;
            let token: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            return token;
        }
        assert!(
            Instant::now() < deadline,
            "no sign-in mail to {email} arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a device sign-in for `email` with `key` and returns the response
/// and the magic token from the mail.
pub async fn start_device_login(
    http: &reqwest::Client,
    handle: &RelayHandle,
    data_dir: &Path,
    email: &str,
    key: &DeviceKey,
) -> (LoginStarted, String) {
    let before = outbox_files(data_dir);
    let path = "/v1/auth/login";
    let proof = key
        .proof(
            "POST",
            &format!("{}{path}", handle.public_url()),
            None,
            unix_now(),
        )
        .unwrap();
    let response = http
        .post(format!("https://{}{path}", handle.local_addr()))
        .header(DPOP_HEADER, proof)
        .json(&LoginRequest {
            email: email.to_owned(),
            device_name: Some("test device".into()),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started: LoginStarted = response.json().await.unwrap();
    let token = wait_for_magic_token(data_dir, email, &before).await;
    (started, token)
}

/// Confirms a sign-in with its magic token.
pub async fn confirm_login(
    http: &reqwest::Client,
    handle: &RelayHandle,
    token: &str,
) -> LoginConfirmed {
    let response = http
        .post(format!(
            "https://{}/v1/auth/login/confirm",
            handle.local_addr()
        ))
        .json(&LoginConfirmRequest {
            token: token.to_owned(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Polls a device sign-in with a proof by `key`. Returns the status and,
/// on 200, the body.
pub async fn poll_login(
    http: &reqwest::Client,
    handle: &RelayHandle,
    key: &DeviceKey,
    login_id: &str,
) -> (StatusCode, Option<LoginPollResponse>) {
    let path = "/v1/auth/login/poll";
    let proof = key
        .proof(
            "POST",
            &format!("{}{path}", handle.public_url()),
            None,
            unix_now(),
        )
        .unwrap();
    let response = http
        .post(format!("https://{}{path}", handle.local_addr()))
        .header(DPOP_HEADER, proof)
        .json(&LoginPollRequest {
            login_id: login_id.to_owned(),
        })
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = if status == StatusCode::OK {
        Some(response.json().await.unwrap())
    } else {
        None
    };
    (status, body)
}

/// Signs in a new device of the user with `email`, who has no TOTP, through
/// the mailed link: start, confirm, poll.
pub async fn sign_in_device(
    http: &reqwest::Client,
    handle: &RelayHandle,
    data_dir: &Path,
    email: &str,
) -> Staff {
    let key = Arc::new(DeviceKey::generate().unwrap());
    let (started, token) = start_device_login(http, handle, data_dir, email, &key).await;
    let confirmed = confirm_login(http, handle, &token).await;
    assert!(!confirmed.totp_required);
    let (status, body) = poll_login(http, handle, &key, &started.login_id).await;
    assert_eq!(status, StatusCode::OK);
    let Some(LoginPollResponse::Approved(tokens)) = body else {
        panic!("sign-in was not approved: {body:?}");
    };
    staff_from(handle, key, tokens)
}

/// Wraps a device key and its tokens.
pub fn staff_from(handle: &RelayHandle, key: Arc<DeviceKey>, tokens: TokenResponse) -> Staff {
    Staff {
        token: DeviceToken::new(
            key.clone(),
            SecretString::from(tokens.access_token.as_str()),
        ),
        key,
        tokens,
        public_url: handle.public_url().to_owned(),
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

pub use sealcast_tests::staff::totp_code;

/// An administrator's device that enrolled TOTP: its credential carries
/// `mfa: true`.
pub struct TotpAdmin {
    pub staff: Staff,
    pub secret_base32: String,
    pub recovery_codes: Vec<String>,
}

/// Enrols TOTP for the user of `staff` and activates it with the code of the
/// current step. Returns the new credential, the secret and recovery codes.
pub async fn enrol_totp(relay: &TestRelay, staff: &Staff) -> TotpAdmin {
    let path = "/v1/auth/totp/enrol";
    let response = staff
        .authorize(relay.http.post(relay.url(path)), "POST", path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let enrolment: sealcast_protocol::auth::TotpEnrolment = response.json().await.unwrap();
    assert!(enrolment.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(enrolment.qr_svg.contains("<svg"));

    let path = "/v1/auth/totp/activate";
    let code = totp_code(&enrolment.secret_base32, unix_now());
    let response = staff
        .authorize(relay.http.post(relay.url(path)), "POST", path)
        .json(&sealcast_protocol::auth::TotpActivateRequest { code })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let activated: sealcast_protocol::auth::TotpActivated = response.json().await.unwrap();
    let tokens = activated.tokens.expect("a device gets new tokens");
    TotpAdmin {
        staff: staff_from(&relay.handle, staff.key.clone(), tokens),
        secret_base32: enrolment.secret_base32,
        recovery_codes: activated.recovery_codes,
    }
}

/// Reads the claims of a JWT without checking it.
pub fn claims_of(token: &str) -> sealcast_protocol::auth::AccessClaims {
    jsonwebtoken::dangerous::insecure_decode_claims(token).unwrap()
}

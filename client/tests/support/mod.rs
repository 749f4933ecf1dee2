//! A small relay on loopback for tests: TLS with a fresh self-signed
//! certificate, hand-parsed HTTP/1.1, and WebSockets over tokio-tungstenite.
//!
//! It implements just enough of the relay API for the client: device
//! sign-in with DPoP-bound tokens (see [`accounts`]), creating and ending
//! sessions, the publish socket with deduplication and cumulative acks, and
//! the follow socket with resume, `committed` and `ended`. Faults can be
//! switched on to drop connections, delay acks, hold back commits or alter a
//! delivered frame.

// Each test file uses part of this module, and test code may unwrap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod accounts;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sealcast_client::auth::login::{wait_for_approval, Approval};
use sealcast_client::auth::{AccountsApi, SignedInDevice};
use sealcast_client::{KeyStore, SecretString, TlsSettings};
use sealcast_protocol::api::{
    close, encode_delivery, CreateSessionRequest, CreateSessionResponse, ErrorBody, FollowerEvent,
    PublisherEvent,
};
pub use sealcast_protocol::auth::Role;
use sealcast_protocol::{FrameHeader, SessionId, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WebSocketRole};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use url::Url;

use self::accounts::{Accounts, AuthStats, Reply};

/// A clinician of [`ORGANIZATION`] that every test relay starts with.
pub const CLINICIAN: &str = "clinician@clinic.example";
/// The organization of [`CLINICIAN`].
pub const ORGANIZATION: &str = "org-clinic";

/// Value of a fault counter that is switched off.
const OFF: u64 = u64::MAX;

/// Faults a test can switch on. Counters fire once and switch themselves off.
pub struct Faults {
    /// Drop the publish connection right after storing this many more new
    /// frames, before acknowledging the last one.
    pub drop_publisher_after: AtomicU64,
    /// Drop a follow connection after delivering this many more frames.
    pub drop_follower_after: AtomicU64,
    /// Report `committed` this many offsets behind what is stored.
    pub commit_lag: AtomicU64,
    /// Hold acks until no frame has arrived for this many milliseconds, then
    /// acknowledge everything at once. 0 acknowledges each frame at once.
    pub batch_acks_ms: AtomicU64,
    /// Flip a bit in the frame delivered at this offset.
    pub tamper_offset: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop_publisher_after: AtomicU64::new(OFF),
            drop_follower_after: AtomicU64::new(OFF),
            commit_lag: AtomicU64::new(0),
            batch_acks_ms: AtomicU64::new(0),
            tamper_offset: AtomicU64::new(OFF),
        }
    }
}

/// Takes one step off a fault counter and returns whether it fired.
fn fire(counter: &AtomicU64) -> bool {
    let mut current = counter.load(Ordering::SeqCst);
    loop {
        if current == OFF {
            return false;
        }
        let next = if current <= 1 { OFF } else { current - 1 };
        match counter.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return current <= 1,
            Err(actual) => current = actual,
        }
    }
}

/// Counters the tests read.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Publish connections accepted.
    pub publish_connections: u64,
    /// Follow connections accepted, with the `from` each asked for.
    pub follow_requests: Vec<(Option<u64>, u64)>,
    /// Frames received again after they were stored.
    pub duplicate_frames: u64,
    /// Most frames received and not yet acknowledged on one connection.
    pub max_unacknowledged: u64,
}

struct Session {
    fingerprint: String,
    organization_id: String,
    invite_token: String,
    epoch: u64,
    frames: Vec<Vec<u8>>,
    offsets: HashMap<(StreamId, u64), u64>,
    next_seq: HashMap<StreamId, u64>,
    ended: bool,
    changes: watch::Sender<u64>,
    publisher_generation: watch::Sender<u64>,
}

impl Session {
    fn notify(&self) {
        self.changes.send_modify(|version| *version += 1);
    }
}

struct State {
    /// Origin of the relay, `https://127.0.0.1:PORT`, for checking proofs.
    origin: String,
    sessions: HashMap<SessionId, Session>,
    stats: Stats,
    accounts: Accounts,
    /// Bumped whenever a device is revoked, so publish sockets check theirs.
    revocations: watch::Sender<u64>,
}

/// A running test relay.
pub struct TestRelay {
    /// Base URL, `https://127.0.0.1:PORT/`.
    pub url: Url,
    /// PEM file of the relay's self-signed certificate.
    pub ca_cert: PathBuf,
    /// The certificate in PEM.
    pub ca_pem: String,
    /// Switchable faults.
    pub faults: Arc<Faults>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestRelay {
    /// Starts a relay on a free loopback port.
    pub async fn start() -> TestRelay {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_cert = dir.path().join("dev-cert.pem");
        std::fs::write(&ca_cert, certificate.pem()).unwrap();

        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certs: Vec<CertificateDer<'static>> = vec![certificate.der().clone()];
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut accounts = Accounts::default();
        accounts.add_user(CLINICIAN, Role::Clinician, ORGANIZATION);
        let state = Arc::new(Mutex::new(State {
            origin: format!("https://127.0.0.1:{port}"),
            sessions: HashMap::new(),
            stats: Stats::default(),
            accounts,
            revocations: watch::channel(0).0,
        }));
        let faults = Arc::new(Faults::default());

        let task = {
            let state = state.clone();
            let faults = faults.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    let faults = faults.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            handle_connection(tls, state, faults).await;
                        }
                    });
                }
            })
        };

        TestRelay {
            url: Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap(),
            ca_cert,
            ca_pem: certificate.pem(),
            faults,
            state,
            task,
            _dir: dir,
        }
    }

    /// Stops accepting connections, keeping the certificate file.
    pub async fn stop(&self) {
        self.task.abort();
        // Let the runtime drop the aborted task and with it the listener.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.state.lock().unwrap().stats.clone()
    }

    /// Stored frames of a session, by offset.
    pub fn frames(&self, session_id: &SessionId) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().sessions[session_id]
            .frames
            .clone()
    }

    /// Returns whether a session has ended.
    pub fn ended(&self, session_id: &SessionId) -> bool {
        self.state.lock().unwrap().sessions[session_id].ended
    }

    /// Counters of the accounts routes.
    pub fn auth_stats(&self) -> AuthStats {
        self.state.lock().unwrap().accounts.stats.clone()
    }

    /// Adds a user.
    pub fn add_user(&self, email: &str, role: Role, organization_id: &str) {
        let mut state = self.state.lock().unwrap();
        state.accounts.add_user(email, role, organization_id);
    }

    /// Enrols TOTP for a user: [`accounts::TOTP_CODE`] then passes.
    pub fn enable_totp(&self, email: &str) {
        let mut state = self.state.lock().unwrap();
        state.accounts.users.get_mut(email).unwrap().totp_enabled = true;
    }

    /// Sets the lifetime of access tokens issued from now on, in seconds.
    pub fn set_access_ttl(&self, seconds: u64) {
        self.state.lock().unwrap().accounts.access_ttl = seconds;
    }

    /// Waits until `email` has a pending sign-in and confirms it, as a
    /// click on the magic link does. Returns false after 20 s without one.
    pub async fn confirm_login(&self, email: &str) -> bool {
        for _ in 0..400 {
            if self.state.lock().unwrap().accounts.confirm(email) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Makes every access token issued so far expire on the relay's side,
    /// while the device still counts on its stated lifetime.
    pub fn expire_access_tokens(&self) {
        self.state.lock().unwrap().accounts.expire_access_tokens();
    }

    /// Makes every pending sign-in expire, so polls get 410.
    pub fn expire_logins(&self) {
        self.state.lock().unwrap().accounts.expire_logins();
    }

    /// Revokes a device: its tokens stop working and its publish sockets
    /// close with 4009.
    pub fn revoke_device(&self, device_id: &str) {
        let state = &mut *self.state.lock().unwrap();
        state.accounts.revoke_device(device_id);
        state.revocations.send_modify(|count| *count += 1);
    }

    /// Ids of the devices that signed in.
    pub fn device_ids(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.accounts.devices.keys().cloned().collect()
    }

    /// Signs `email` in through the client library with a device key kept
    /// in `store`, confirming the link and sending [`accounts::TOTP_CODE`]
    /// when asked.
    pub async fn sign_in(&self, store: &KeyStore, email: &str) -> SignedInDevice {
        let mut credentials = store
            .load_or_generate_device(&self.url, Some(self.ca_cert.clone()))
            .unwrap();
        let tls = TlsSettings::new(Some(&self.ca_cert)).unwrap();
        let api = AccountsApi::new(&self.url, &tls).unwrap();
        let started = api
            .start_login(&credentials.key, email, Some("test device"))
            .await
            .unwrap();
        assert!(self.confirm_login(email).await, "no pending sign-in");
        let tokens = match wait_for_approval(&api, &credentials.key, &started)
            .await
            .unwrap()
        {
            Approval::Approved(tokens) => tokens,
            Approval::TotpRequired => {
                let login_id = SecretString::new(started.login_id.clone());
                let code = SecretString::from(accounts::TOTP_CODE);
                api.submit_totp(&credentials.key, &login_id, &code)
                    .await
                    .unwrap()
            }
        };
        store.store_tokens(&mut credentials, tokens).unwrap();
        SignedInDevice::new(store.clone(), credentials, Some(self.ca_cert.clone())).unwrap()
    }
}

/// A session created by a signed-in clinician device. It dereferences to
/// the relay's response.
pub struct Created {
    /// The relay's response.
    pub response: CreateSessionResponse,
    /// The device that created the session.
    pub device: SignedInDevice,
    /// The device's key store.
    pub store: KeyStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Created {
    type Target = CreateSessionResponse;

    fn deref(&self) -> &CreateSessionResponse {
        &self.response
    }
}

impl TestRelay {
    /// Signs [`CLINICIAN`] in on a new device and creates a session for `key`.
    pub async fn create_session(&self, key: &sealcast_protocol::SessionKey) -> Created {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let device = self.sign_in(&store, CLINICIAN).await;
        let request = CreateSessionRequest {
            fingerprint: key.fingerprint().to_base64url(),
            invite_verifier: Some(
                URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes()),
            ),
            max_browsers: None,
        };
        let api = sealcast_client::RelayApi::new(&self.url, device.tls()).unwrap();
        let response = api
            .create_session(device.token().as_ref(), &request)
            .await
            .unwrap();
        Created {
            response,
            device,
            store,
            _dir: dir,
        }
    }
}

/// Returns the current time in Unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn bearer(&self) -> Option<&str> {
        self.headers.get("authorization")?.strip_prefix("Bearer ")
    }
}

/// Checks the device's access token and proof, and that its user belongs
/// to `organization_id` when one is given. Returns the device id, or the
/// rejection to send.
fn authorize_device(
    state: &mut State,
    request: &Request,
    organization_id: Option<&str>,
) -> Result<(String, Role, String), Reply> {
    let url = format!("{}{}", state.origin, request.path);
    let grant = state.accounts.authenticate(request, &url)?;
    let user = state.accounts.user_of(&grant).unwrap();
    if organization_id.is_some_and(|organization| organization != user.organization_id) {
        return Err(Reply::error(
            403,
            "forbidden",
            "session of another organization",
        ));
    }
    Ok((grant.device_id, user.role, user.organization_id.clone()))
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(index) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break index;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 || buffer.len() > 64 * 1024 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };

    let head = String::from_utf8(buffer[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();

    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn error_body(kind: &str, message: &str) -> String {
    serde_json::to_string(&ErrorBody {
        error: kind.into(),
        message: message.into(),
    })
    .unwrap()
}

async fn handle_connection<S>(mut stream: S, state: Arc<Mutex<State>>, faults: Arc<Faults>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let url = Url::parse(&format!("https://relay{}", request.path)).unwrap();
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();

    let accounts_reply = {
        let state = &mut *state.lock().unwrap();
        let full_url = format!("{}{}", state.origin, request.path);
        state
            .accounts
            .route(&request, &full_url, segments.as_slice())
    };
    if let Some(reply) = accounts_reply {
        respond(&mut stream, reply.status, &reply.body).await;
        return;
    }

    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "sessions"]) => create_session(stream, &request, &state).await,
        ("POST", ["v1", "sessions", id, "end"]) => end_session(stream, &request, &state, id).await,
        ("GET", ["v1", "sessions", id, "publish"]) => {
            let Some((session_id, device_id)) =
                authorize_publisher(&mut stream, &request, &state, id).await
            else {
                return;
            };
            let socket = upgrade(stream, &request).await;
            serve_publisher(socket, session_id, device_id, state, faults).await;
        }
        ("GET", ["v1", "follow"]) => {
            let Some(session_id) = authorize_follower(&mut stream, &request, &state).await else {
                return;
            };
            let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
            let epoch = query.get("epoch").and_then(|value| value.parse().ok());
            let from = query
                .get("from")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            state
                .lock()
                .unwrap()
                .stats
                .follow_requests
                .push((epoch, from));
            let socket = upgrade(stream, &request).await;
            serve_follower(socket, session_id, epoch, from, state, faults).await;
        }
        _ => respond(&mut stream, 404, &error_body("not_found", "no such route")).await,
    }
}

async fn create_session<S: AsyncWrite + Unpin>(
    mut stream: S,
    request: &Request,
    state: &Mutex<State>,
) {
    let authorized = authorize_device(&mut state.lock().unwrap(), request, None);
    let organization_id = match authorized {
        Ok((_, Role::Clinician, organization_id)) => organization_id,
        Ok((_, Role::Admin, _)) => {
            let body = error_body("forbidden", "sessions are started by clinicians");
            respond(&mut stream, 403, &body).await;
            return;
        }
        Err(reply) => {
            respond(&mut stream, reply.status, &reply.body).await;
            return;
        }
    };
    let body: CreateSessionRequest = serde_json::from_slice(&request.body).unwrap();
    assert!(
        body.invite_verifier.is_some(),
        "the client must send an invite verifier"
    );

    let session_id = SessionId::random();
    let response = CreateSessionResponse {
        session_id,
        epoch: 1,
        invite_token: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
    };
    let session = Session {
        fingerprint: body.fingerprint,
        organization_id,
        invite_token: response.invite_token.clone(),
        epoch: response.epoch,
        frames: Vec::new(),
        offsets: HashMap::new(),
        next_seq: HashMap::new(),
        ended: false,
        changes: watch::channel(0).0,
        publisher_generation: watch::channel(0).0,
    };
    state.lock().unwrap().sessions.insert(session_id, session);
    respond(&mut stream, 200, &serde_json::to_string(&response).unwrap()).await;
}

async fn end_session<S: AsyncWrite + Unpin>(
    mut stream: S,
    request: &Request,
    state: &Mutex<State>,
    id: &str,
) {
    let reply = {
        let state = &mut *state.lock().unwrap();
        let organization = id
            .parse()
            .ok()
            .and_then(|id: SessionId| state.sessions.get(&id))
            .map(|session| session.organization_id.clone());
        match organization {
            None => Reply::error(404, "not_found", "no such session"),
            Some(organization) => match authorize_device(state, request, Some(&organization)) {
                Err(reply) => reply,
                Ok(_) => {
                    let session = state.sessions.get_mut(&id.parse().unwrap()).unwrap();
                    if session.ended {
                        Reply::error(410, "gone", "session ended")
                    } else {
                        session.ended = true;
                        session.notify();
                        Reply::error(200, "", "")
                    }
                }
            },
        }
    };
    let body = if reply.status == 200 {
        "{}"
    } else {
        &reply.body
    };
    respond(&mut stream, reply.status, body).await;
}

async fn authorize_publisher<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    state: &Mutex<State>,
    id: &str,
) -> Option<(SessionId, String)> {
    let result = {
        let state = &mut *state.lock().unwrap();
        let session_id: Option<SessionId> = id.parse().ok();
        let found = session_id.and_then(|id| {
            let session = state.sessions.get(&id)?;
            Some((id, session.organization_id.clone(), session.ended))
        });
        match found {
            None => Err(Reply::error(404, "not_found", "no such session")),
            Some((id, organization, ended)) => {
                match authorize_device(state, request, Some(&organization)) {
                    Err(reply) => Err(reply),
                    Ok(_) if ended => Err(Reply::error(410, "gone", "session ended")),
                    Ok((device_id, _, _)) => Ok((id, device_id)),
                }
            }
        }
    };
    match result {
        Ok(found) => Some(found),
        Err(reply) => {
            respond(stream, reply.status, &reply.body).await;
            None
        }
    }
}

async fn authorize_follower<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    state: &Mutex<State>,
) -> Option<SessionId> {
    let found = {
        let state = state.lock().unwrap();
        state
            .sessions
            .iter()
            .find(|(_, session)| request.bearer() == Some(session.invite_token.as_str()))
            .map(|(id, _)| *id)
    };
    if found.is_none() {
        respond(stream, 401, &error_body("unauthorized", "unknown invite")).await;
    }
    found
}

async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &Request,
) -> WebSocketStream<S> {
    let key = request.headers.get("sec-websocket-key").unwrap();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    WebSocketStream::from_raw_socket(stream, WebSocketRole::Server, None).await
}

async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    let _ = socket.close(Some(frame)).await;
    // Wait for the client's close reply, as a relay does, so the client
    // reads the code instead of a reset connection.
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

fn text<T: serde::Serialize>(event: &T) -> Message {
    Message::text(serde_json::to_string(event).unwrap())
}

async fn serve_publisher<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: WebSocketStream<S>,
    session_id: SessionId,
    device_id: String,
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
) {
    let mut revocations = state.lock().unwrap().revocations.subscribe();
    let (epoch, mut generation, my_generation) = {
        let mut state = state.lock().unwrap();
        state.stats.publish_connections += 1;
        let session = &state.sessions[&session_id];
        session
            .publisher_generation
            .send_modify(|value| *value += 1);
        let generation = session.publisher_generation.subscribe();
        let mine = *generation.borrow();
        (session.epoch, generation, mine)
    };
    socket
        .send(text(&PublisherEvent::Welcome { session_id, epoch }))
        .await
        .unwrap();

    let batch = Duration::from_millis(faults.batch_acks_ms.load(Ordering::SeqCst));
    let mut unacknowledged = 0u64;
    let mut held_ack = None;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = generation.changed() => {
                if *generation.borrow() != my_generation {
                    close_with(&mut socket, close::REPLACED).await;
                    return;
                }
                continue;
            }
            _ = revocations.changed() => {
                if state.lock().unwrap().accounts.device_revoked(&device_id) {
                    close_with(&mut socket, close::REVOKED).await;
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep(batch), if held_ack.is_some() => {
                let Some(ack) = held_ack.take() else { continue };
                if socket.send(text(&ack)).await.is_err() {
                    return;
                }
                unacknowledged = 0;
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            return;
        };
        let Message::Binary(frame) = message else {
            continue;
        };
        unacknowledged += 1;
        {
            let mut state = state.lock().unwrap();
            state.stats.max_unacknowledged = state.stats.max_unacknowledged.max(unacknowledged);
        }

        let (stream_id, seq, offset) = match store_frame(&state, session_id, &frame) {
            Ok(stored) => stored,
            Err(code) => {
                close_with(&mut socket, code).await;
                return;
            }
        };
        if fire(&faults.drop_publisher_after) {
            return;
        }

        let ack = PublisherEvent::Ack {
            stream_id,
            seq,
            offset,
        };
        if !batch.is_zero() {
            held_ack = Some(ack);
            continue;
        }
        if socket.send(text(&ack)).await.is_err() {
            return;
        }
        unacknowledged = 0;
    }
}

/// Stores a frame, or finds it already stored. Returns the stream, the
/// highest stored sequence number of the stream and its offset, or a close code.
fn store_frame(
    state: &Mutex<State>,
    session_id: SessionId,
    frame: &[u8],
) -> Result<(StreamId, u64, u64), u16> {
    let header = FrameHeader::decode_frame(frame).map_err(|_| close::MALFORMED_FRAME)?;
    if header.session_id != session_id {
        return Err(close::WRONG_SESSION);
    }
    let mut state = state.lock().unwrap();
    let state = &mut *state;
    let session = state.sessions.get_mut(&session_id).unwrap();
    if session.ended {
        return Err(close::SESSION_ENDED);
    }

    let next = session
        .next_seq
        .get(&header.stream_id)
        .copied()
        .unwrap_or(0);
    if header.seq < next {
        state.stats.duplicate_frames += 1;
        let latest = next - 1;
        let offset = session.offsets[&(header.stream_id, latest)];
        return Ok((header.stream_id, latest, offset));
    }
    if header.seq > next {
        return Err(close::SEQUENCE_GAP);
    }

    let offset = session.frames.len() as u64;
    session.frames.push(frame.to_vec());
    session
        .offsets
        .insert((header.stream_id, header.seq), offset);
    session.next_seq.insert(header.stream_id, next + 1);
    session.notify();
    Ok((header.stream_id, header.seq, offset))
}

async fn serve_follower<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: WebSocketStream<S>,
    session_id: SessionId,
    epoch: Option<u64>,
    from: u64,
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
) {
    let (welcome, mut changes, session_epoch, stored) = {
        let state = state.lock().unwrap();
        let session = &state.sessions[&session_id];
        let welcome = FollowerEvent::Welcome {
            session_id,
            epoch: session.epoch,
            fingerprint: session.fingerprint.clone(),
            from_offset: from,
            ended: session.ended,
        };
        (
            welcome,
            session.changes.subscribe(),
            session.epoch,
            session.frames.len() as u64,
        )
    };
    if epoch.is_some_and(|epoch| epoch != session_epoch) || from > stored {
        close_with(&mut socket, close::CANNOT_RECOVER).await;
        return;
    }
    if socket.send(text(&welcome)).await.is_err() {
        return;
    }

    let mut cursor = from;
    let mut committed = None;
    loop {
        let (pending, ended) = {
            let state = state.lock().unwrap();
            let session = &state.sessions[&session_id];
            let pending: Vec<Vec<u8>> = session.frames[cursor as usize..].to_vec();
            (pending, session.ended)
        };
        for mut frame in pending {
            if faults.tamper_offset.load(Ordering::SeqCst) == cursor {
                let last = frame.len() - 1;
                frame[last] ^= 0x01;
            }
            if socket
                .send(Message::binary(encode_delivery(cursor, &frame)))
                .await
                .is_err()
            {
                return;
            }
            cursor += 1;
            if fire(&faults.drop_follower_after) {
                return;
            }
        }

        let lag = faults.commit_lag.load(Ordering::SeqCst);
        let commit = cursor.checked_sub(1 + lag);
        if let Some(offset) = commit.filter(|_| commit != committed) {
            committed = commit;
            let event = FollowerEvent::Committed { offset };
            if socket.send(text(&event)).await.is_err() {
                return;
            }
        }
        if ended {
            let _ = socket.send(text(&FollowerEvent::Ended)).await;
            close_with(&mut socket, close::SESSION_ENDED).await;
            return;
        }

        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            message = socket.next() => {
                match message {
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }
}

//! A small relay on loopback for tests: TLS with a fresh self-signed
//! certificate, hand-parsed HTTP/1.1, and WebSockets over tokio-tungstenite.
//!
//! It implements just enough of the relay API for the client: creating and
//! ending sessions, the publish socket with deduplication and cumulative
//! acks, and the follow socket with resume, `committed` and `ended`. Faults
//! can be switched on to drop connections, delay acks, hold back commits or
//! alter a delivered frame.

// Each test file uses part of this module, and test code may unwrap.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sealcast_protocol::api::{
    close, encode_delivery, CreateSessionRequest, CreateSessionResponse, ErrorBody, FollowerEvent,
    PublisherEvent,
};
use sealcast_protocol::{FrameHeader, SessionId, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use url::Url;

/// The clinic API key the test relay accepts.
pub const API_KEY: &str = "test-clinic-api-key";

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
    publisher_token: String,
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

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    stats: Stats,
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
        let state = Arc::new(Mutex::new(State::default()));
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
        401 => "Unauthorized",
        404 => "Not Found",
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

    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "sessions"]) => create_session(stream, &request, &state).await,
        ("POST", ["v1", "sessions", id, "end"]) => end_session(stream, &request, &state, id).await,
        ("GET", ["v1", "sessions", id, "publish"]) => {
            let Some(session_id) = authorize_publisher(&mut stream, &request, &state, id).await
            else {
                return;
            };
            let socket = upgrade(stream, &request).await;
            serve_publisher(socket, session_id, state, faults).await;
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
    if request.bearer() != Some(API_KEY) {
        respond(
            &mut stream,
            401,
            &error_body("unauthorized", "unknown API key"),
        )
        .await;
        return;
    }
    let body: CreateSessionRequest = serde_json::from_slice(&request.body).unwrap();
    assert!(
        body.invite_verifier.is_some(),
        "the client must send an invite verifier"
    );

    let session_id = SessionId::random();
    let response = CreateSessionResponse {
        session_id,
        epoch: 1,
        publisher_token: format!("pub-{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())),
        invite_token: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
    };
    let session = Session {
        fingerprint: body.fingerprint,
        publisher_token: response.publisher_token.clone(),
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
    let status = {
        let mut state = state.lock().unwrap();
        match id
            .parse()
            .ok()
            .and_then(|id: SessionId| state.sessions.get_mut(&id))
        {
            None => 404,
            Some(session) if request.bearer() != Some(session.publisher_token.as_str()) => 401,
            Some(session) if session.ended => 410,
            Some(session) => {
                session.ended = true;
                session.notify();
                200
            }
        }
    };
    respond(&mut stream, status, if status == 200 { "{}" } else { "" }).await;
}

async fn authorize_publisher<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: &Request,
    state: &Mutex<State>,
    id: &str,
) -> Option<SessionId> {
    let status = {
        let state = state.lock().unwrap();
        let session_id: Option<SessionId> = id.parse().ok();
        match session_id.and_then(|id| state.sessions.get(&id).map(|session| (id, session))) {
            None => Err(404),
            Some((_, session)) if request.bearer() != Some(session.publisher_token.as_str()) => {
                Err(401)
            }
            Some((_, session)) if session.ended => Err(410),
            Some((id, _)) => Ok(id),
        }
    };
    match status {
        Ok(id) => Some(id),
        Err(status) => {
            respond(
                stream,
                status,
                &error_body("rejected", "publisher rejected"),
            )
            .await;
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
    WebSocketStream::from_raw_socket(stream, Role::Server, None).await
}

async fn close_with<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    let _ = socket.close(Some(frame)).await;
}

fn text<T: serde::Serialize>(event: &T) -> Message {
    Message::text(serde_json::to_string(event).unwrap())
}

async fn serve_publisher<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: WebSocketStream<S>,
    session_id: SessionId,
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
) {
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

//! The null relay: the physical-limit reference for the real relay.
//!
//! It serves the relay API's routes and framing: the session JSON, the
//! publish and follow WebSockets, the `welcome`, `ack` and `ended` events,
//! and deliveries of an 8-byte offset and the frame. It runs on the same
//! WebSocket stack as the relay (axum over hyper and tungstenite), with the
//! same buffer sizes. It leaves out everything else: no TLS, no credential checks (tokens
//! only route), no frame checks beyond reading the header, no store and no
//! history, so a follower sees only frames published after it joined. Each
//! frame is acknowledged as soon as it is fanned out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use sealcast_protocol::api::{
    close, encode_delivery, CreateSessionRequest, CreateSessionResponse, FollowerEvent,
    PublisherEvent,
};
use sealcast_protocol::{FrameHeader, SessionId};
use sealcast_relay::Limits;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Frames buffered per session for followers that fall behind. A follower
/// further behind is closed with `LAGGED`, as the relay does. The broadcast
/// ring keeps this many recent frames per session in memory.
const FAN_OUT_CAPACITY: usize = 256;

/// Message on a session's fan-out channel.
#[derive(Debug, Clone)]
enum Fanned {
    /// A delivery: offset and frame.
    Delivery(Bytes),
    /// The session ended.
    Ended,
}

/// One session of the null relay.
struct NullSession {
    id: SessionId,
    fingerprint: String,
    fan_out: broadcast::Sender<Fanned>,
    next_offset: AtomicU64,
}

/// Sessions by id and by invite token.
#[derive(Default)]
struct Sessions {
    by_id: HashMap<SessionId, Arc<NullSession>>,
    by_invite: HashMap<String, Arc<NullSession>>,
}

type Shared = Arc<Mutex<Sessions>>;

/// A running null relay.
pub struct NullRelay {
    local_addr: SocketAddr,
    server: JoinHandle<()>,
}

impl NullRelay {
    /// Binds `listen` and serves on the current tokio runtime.
    pub async fn start(listen: SocketAddr) -> std::io::Result<NullRelay> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            // The relay sets TCP_NODELAY too; failing to set it changes only latency.
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router()).await {
                tracing::error!(%error, "null relay stopped");
            }
        });
        Ok(NullRelay { local_addr, server })
    }

    /// Returns the bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and drops every connection.
    pub fn stop(self) {
        self.server.abort();
    }
}

// This baseline relay has no OpenAPI document, so the workspace's rule of
// adding routes through utoipa-axum does not apply.
#[allow(clippy::disallowed_methods)]
fn router() -> Router {
    let shared: Shared = Arc::default();
    Router::new()
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}/publish", get(publish))
        .route("/v1/sessions/{id}/end", post(end_session))
        .route("/v1/follow", get(follow))
        .with_state(shared)
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Sessions> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn create_session(
    State(shared): State<Shared>,
    Json(request): Json<CreateSessionRequest>,
) -> Json<CreateSessionResponse> {
    let (fan_out, _) = broadcast::channel(FAN_OUT_CAPACITY);
    let session = Arc::new(NullSession {
        id: SessionId::random(),
        fingerprint: request.fingerprint,
        fan_out,
        next_offset: AtomicU64::new(0),
    });
    let invite_token = SessionId::random().to_string();
    let mut sessions = lock(&shared);
    sessions.by_id.insert(session.id, Arc::clone(&session));
    sessions
        .by_invite
        .insert(invite_token.clone(), Arc::clone(&session));
    Json(CreateSessionResponse {
        session_id: session.id,
        epoch: 1,
        invite_token,
    })
}

fn find_by_id(shared: &Shared, id: &str) -> Option<Arc<NullSession>> {
    let id: SessionId = id.parse().ok()?;
    lock(shared).by_id.get(&id).cloned()
}

async fn end_session(State(shared): State<Shared>, Path(id): Path<String>) -> StatusCode {
    let Some(session) = find_by_id(&shared, &id) else {
        return StatusCode::NOT_FOUND;
    };
    let _ = session.fan_out.send(Fanned::Ended);
    StatusCode::NO_CONTENT
}

fn configure(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    let limits = Limits::default();
    upgrade
        .max_message_size(limits.max_message_size)
        .max_frame_size(limits.max_message_size)
        .read_buffer_size(limits.read_buffer_size)
        .write_buffer_size(limits.write_buffer_size)
        .max_write_buffer_size(limits.max_write_buffer_size)
}

async fn publish(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<axum::response::Response, StatusCode> {
    let session = find_by_id(&shared, &id).ok_or(StatusCode::NOT_FOUND)?;
    Ok(configure(upgrade).on_upgrade(move |socket| run_publisher(session, socket)))
}

async fn run_publisher(session: Arc<NullSession>, mut socket: WebSocket) {
    let welcome = PublisherEvent::Welcome {
        session_id: session.id,
        epoch: 1,
    };
    if send_json(&mut socket, &welcome).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        let Message::Binary(frame) = message else {
            continue;
        };
        let Ok(header) = FrameHeader::decode_frame(&frame) else {
            let _ = socket
                .send(close_message(close::MALFORMED_FRAME, "malformed frame"))
                .await;
            return;
        };
        let offset = session.next_offset.fetch_add(1, Ordering::Relaxed);
        let delivery = Bytes::from(encode_delivery(offset, &frame));
        let _ = session.fan_out.send(Fanned::Delivery(delivery));
        let ack = PublisherEvent::Ack {
            stream_id: header.stream_id,
            seq: header.seq,
            offset,
        };
        if send_json(&mut socket, &ack).await.is_err() {
            return;
        }
    }
}

async fn follow(
    State(shared): State<Shared>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<axum::response::Response, StatusCode> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let session = lock(&shared)
        .by_invite
        .get(token)
        .cloned()
        .ok_or(StatusCode::UNAUTHORIZED)?;
    Ok(configure(upgrade).on_upgrade(move |socket| run_follower(session, socket)))
}

async fn run_follower(session: Arc<NullSession>, socket: WebSocket) {
    let mut fanned = session.fan_out.subscribe();
    let (mut sink, mut stream) = socket.split();
    let welcome = FollowerEvent::Welcome {
        session_id: session.id,
        epoch: 1,
        fingerprint: session.fingerprint.clone(),
        from_offset: session.next_offset.load(Ordering::Relaxed),
        ended: false,
    };
    if sink.send(json_message(&welcome)).await.is_err() {
        return;
    }
    // Reading replies to pings and detects a closed connection.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });

    loop {
        let outgoing = match fanned.recv().await {
            Ok(Fanned::Delivery(delivery)) => Message::Binary(delivery),
            Ok(Fanned::Ended) => {
                let _ = sink.send(json_message(&FollowerEvent::Ended)).await;
                let _ = sink
                    .send(close_message(close::SESSION_ENDED, "session ended"))
                    .await;
                break;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = sink
                    .send(close_message(close::LAGGED, "follower lagged"))
                    .await;
                break;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if sink.send(outgoing).await.is_err() {
            break;
        }
    }
    reader.abort();
}

async fn send_json<T: serde::Serialize>(
    socket: &mut WebSocket,
    event: &T,
) -> Result<(), axum::Error> {
    socket.send(json_message(event)).await
}

fn json_message<T: serde::Serialize>(event: &T) -> Message {
    // The events are plain structs of strings and integers, which always serialize.
    Message::Text(serde_json::to_string(event).unwrap_or_default().into())
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

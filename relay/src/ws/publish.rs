//! `GET /v1/sessions/{id}/publish`: the clinician device's socket.
//!
//! Each binary message is one frame. The relay checks its header, accepts it
//! only if its sequence number is the next one of its stream, fans it out at
//! once and acknowledges it after the store commits it. The relay drops a
//! resent frame and acknowledges its stream's latest frame instead.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Extension;
use futures_util::StreamExt;
use sealcast_protocol::api::{close, PublisherEvent};
use sealcast_protocol::{FrameHeader, ProtocolError, StreamId};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::socket::{
    event_message, protocol_violation, Closing, Inbound, SendFailure, WsConnection,
};
use super::{configure, not_an_upgrade};
use crate::accounts::live::SocketOwner;
use crate::http::{staff, ApiError, AppState};
use crate::hub::{HubLease, Offer, Progress};
use crate::listener::ConnectionTicket;
use crate::metrics::{frame_metrics, ActiveConnection, FRAMES_DUPLICATE, FRAMES_REJECTED};
use crate::store::{now_millis, StoreFault};
use tracing::Instrument;

const ROLE: &str = "publisher";

/// Endpoint label of the publish socket.
const PUBLISH: &str = "publish";

/// Requires a clinician of the session's organization, then upgrades.
#[utoipa::path(
    get, path = "/v1/sessions/{id}/publish", operation_id = "publish", tag = "sessions",
    description = "Opens the publish WebSocket of a session. The device sends each sealed frame as one binary message, and the relay answers with `PublisherEvent` text messages (`welcome`, then `ack` once frames are committed). The response is `101 Switching Protocols` and the connection becomes a WebSocket. The relay's text messages, the binary frame format and the close codes are described in docs/protocol.md.",
    params(("id" = String, Path, description = "Session id, 32 hex digits")),
    security(("device_token" = [], "dpop_proof" = []), ("access_cookie" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade, or a malformed session id", body = sealcast_protocol::api::ErrorBody),
        (status = 401, description = "Missing, invalid or expired credential or DPoP proof", body = sealcast_protocol::api::ErrorBody), (status = 403, description = "Wrong role or organization, second factor missing, or CSRF header missing", body = sealcast_protocol::api::ErrorBody), (status = 429, description = "Too many failed credentials from this client; see `Retry-After`", body = sealcast_protocol::api::ErrorBody),
        (status = 404, description = "No session with this id in the caller's organization", body = sealcast_protocol::api::ErrorBody),
        (status = 410, description = "The session has ended", body = sealcast_protocol::api::ErrorBody)
    )
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Path(session): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ticket: Option<Extension<ConnectionTicket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let principal = staff::authenticate(&state, &headers, &method, uri.path(), PUBLISH).await?;
    let record = staff::clinician_session(&state, &principal, &session, PUBLISH).await?;
    if record.ended_at.is_some() {
        return Err(ApiError::Gone(format!(
            "session {} has ended: start a new session to publish",
            record.session_id
        )));
    }
    let upgrade = upgrade.map_err(not_an_upgrade)?;
    let lease = state.hubs.lease(&record).await?;
    state.hubs.prepare_publisher(lease.hub()).await?;

    let hold = state.shutdown.hold();
    let limits = state.limits.clone();
    let live = state.accounts.live.register(SocketOwner::of(&principal));
    // axum runs the socket in a task of its own: keep the connection's span.
    let span = tracing::Span::current();
    Ok(configure(upgrade, &limits).on_upgrade(move |socket| {
        async move {
            let revoked = live.revoked().clone();
            run(state, lease, socket, revoked).await;
            drop(live);
            drop(ticket);
            drop(hold);
        }
        .instrument(span)
    }))
}

async fn run(state: AppState, hub: HubLease, socket: WebSocket, revoked: CancellationToken) {
    let conn = WsConnection::new(socket, ROLE, &state.limits);
    let session_id = hub.session_id();
    let Some(seat) = hub.hub().attach_publisher() else {
        let closing = Closing::new(
            close::INTERNAL_ERROR,
            "session state is being rebuilt: reconnect",
        );
        conn.close(closing).await;
        return;
    };
    tracing::debug!(%session_id, role = ROLE, "publisher connected");

    let mut publisher = Publisher {
        progress: hub.watch_progress(),
        state,
        hub,
        conn,
        acks: AckQueue::default(),
        _active: ActiveConnection::open(ROLE),
    };
    let replaced = seat.replaced().clone();
    let ending = tokio::select! {
        ending = publisher.serve() => ending,
        () = replaced.cancelled() => Ending::Replaced,
        () = revoked.cancelled() => Ending::Close(Closing::new(
            close::REVOKED,
            "the device or user was revoked: sign in again",
        )),
    };
    publisher.finish(ending).await;
    drop(seat);
}

/// Reason a publish socket stops.
#[derive(Debug)]
enum Ending {
    /// Close with this code after acknowledging what is committed.
    Close(Closing),
    /// Another socket took the publisher seat.
    Replaced,
    /// The peer closed the socket or it broke.
    PeerGone,
}

struct Publisher {
    state: AppState,
    hub: HubLease,
    conn: WsConnection,
    progress: watch::Receiver<Progress>,
    acks: AckQueue,
    _active: ActiveConnection,
}

/// One turn of the socket loop.
enum Step {
    Shutdown,
    Progress,
    Inbound(Inbound),
    Tick,
}

impl Publisher {
    async fn serve(&mut self) -> Ending {
        let welcome = PublisherEvent::Welcome {
            session_id: self.hub.session_id(),
            epoch: self.hub.epoch(),
        };
        if self.conn.send_event(&welcome).await.is_err() {
            return Ending::PeerGone;
        }

        loop {
            let step = tokio::select! {
                biased;
                () = self.state.shutdown.triggered() => Step::Shutdown,
                _ = self.progress.changed() => Step::Progress,
                item = self.conn.stream.next() => Step::Inbound(self.conn.classify(item)),
                () = self.conn.keepalive.tick() => Step::Tick,
            };
            let outcome = match step {
                Step::Shutdown => Err(Ending::Close(Closing::new(
                    close::GOING_AWAY,
                    "relay is shutting down: reconnect and resend unacknowledged frames",
                ))),
                Step::Progress => self.on_progress().await,
                Step::Inbound(inbound) => self.on_inbound(inbound).await,
                Step::Tick => self.conn.on_tick().await.map_err(Ending::Close),
            };
            if let Err(ending) = outcome {
                return ending;
            }
        }
    }

    async fn on_progress(&mut self) -> Result<(), Ending> {
        let progress = *self.progress.borrow_and_update();
        if let Some(fault) = progress.failed {
            return Err(Ending::Close(store_failed(Some(fault))));
        }
        self.send_acks(progress.committed).await?;
        if progress.end.is_some() && self.acks.is_empty() {
            return Err(Ending::Close(Closing::new(
                close::SESSION_ENDED,
                "session ended",
            )));
        }
        Ok(())
    }

    async fn on_inbound(&mut self, inbound: Inbound) -> Result<(), Ending> {
        match inbound {
            Inbound::Binary(data) => self.on_frame(data).await,
            Inbound::Control => Ok(()),
            Inbound::Text => Err(self.reject(
                "text_message",
                Closing::new(
                    close::UNSUPPORTED_DATA,
                    "send frames as binary messages, not text",
                ),
            )),
            Inbound::TooBig => Err(self.reject(
                "too_big",
                Closing::new(
                    close::MESSAGE_TOO_BIG,
                    format!(
                        "message exceeds {} bytes",
                        self.state.limits.max_message_size
                    ),
                ),
            )),
            Inbound::Closed => Err(Ending::PeerGone),
            Inbound::Failed(error) => match protocol_violation(&error, ROLE) {
                Some(closing) => Err(Ending::Close(closing)),
                None => {
                    tracing::debug!(session_id = %self.hub.session_id(), %error, "publish socket failed");
                    Err(Ending::PeerGone)
                }
            },
        }
    }

    async fn on_frame(&mut self, data: Bytes) -> Result<(), Ending> {
        let metrics = frame_metrics();
        metrics.received.increment(1);
        metrics.bytes_received.increment(data.len() as u64);

        let header = match FrameHeader::decode_frame(&data) {
            Ok(header) => header,
            Err(error) => {
                let (reason, closing) = decode_rejection(&error);
                return Err(self.reject(reason, closing));
            }
        };
        if header.session_id != self.hub.session_id() {
            let closing = Closing::new(close::WRONG_SESSION, "frame names another session");
            return Err(self.reject("wrong_session", closing));
        }

        // Followers get the frame in `offer`. Only then does this socket wait
        // for room in the store's queue, so a store that is behind slows the
        // publisher down without delaying fan-out.
        let offer = self.hub.hub().offer(&header, &data, now_millis());
        self.on_offer(&header, offer)?;
        self.enqueue_writes().await?;

        let committed = self.progress.borrow().committed;
        self.send_acks(committed).await
    }

    /// Moves the hub's unstored writes, this socket's frames among them, to
    /// the store's queue.
    async fn enqueue_writes(&self) -> Result<(), Ending> {
        self.hub
            .hub()
            .enqueue_writes(&self.state.store)
            .await
            .map_err(|_| Ending::Close(shutting_down()))
    }

    fn on_offer(&mut self, header: &FrameHeader, offer: Offer) -> Result<(), Ending> {
        let session_id = self.hub.session_id();
        match offer {
            Offer::Accepted { offset } => {
                frame_metrics().accepted.increment(1);
                tracing::trace!(%session_id, stream_id = %header.stream_id, seq = header.seq, offset, "frame accepted");
                self.acks.insert(header.stream_id, header.seq, offset);
                Ok(())
            }
            Offer::Duplicate { seq, offset } => {
                metrics::counter!(FRAMES_DUPLICATE).increment(1);
                tracing::debug!(%session_id, stream_id = %header.stream_id, seq = header.seq, "duplicate frame dropped");
                self.acks.insert(header.stream_id, seq, offset);
                Ok(())
            }
            Offer::Gap { expected } => {
                let reason = format!("sequence number {} skips ahead of {expected}", header.seq);
                Err(self.reject("sequence_gap", Closing::new(close::SEQUENCE_GAP, reason)))
            }
            Offer::Ended => Err(self.reject(
                "session_ended",
                Closing::new(close::SESSION_ENDED, "session has ended"),
            )),
            Offer::Unavailable => Err(Ending::Close(store_failed(self.progress.borrow().failed))),
        }
    }

    /// Counts and logs a rejected message and picks the close that follows.
    fn reject(&self, reason: &'static str, closing: Closing) -> Ending {
        metrics::counter!(FRAMES_REJECTED, "reason" => reason).increment(1);
        tracing::warn!(
            session_id = %self.hub.session_id(),
            code = closing.code,
            reason = %closing.reason,
            "publisher message rejected"
        );
        Ending::Close(closing)
    }

    /// Sends acknowledgements for every waiting frame below `committed`, with
    /// one flush for all of them.
    async fn send_acks(&mut self, committed: u64) -> Result<(), Ending> {
        let acks = self.acks.take_ready(committed);
        if acks.is_empty() {
            return Ok(());
        }
        let messages = acks
            .iter()
            .map(event_message)
            .collect::<Result<Vec<_>, SendFailure>>()
            .map_err(|_| Ending::PeerGone)?;
        self.conn
            .send_all(messages)
            .await
            .map_err(|_: SendFailure| Ending::PeerGone)
    }

    /// Waits up to the write timeout for the frames this socket sent to be
    /// committed and acknowledges them.
    async fn drain_acks(&mut self) -> Result<(), Ending> {
        let deadline = Instant::now() + self.state.limits.write_timeout;
        loop {
            let progress = *self.progress.borrow_and_update();
            if let Some(fault) = progress.failed {
                return Err(Ending::Close(store_failed(Some(fault))));
            }
            self.send_acks(progress.committed).await?;
            if self.acks.is_empty() {
                return Ok(());
            }
            tokio::select! {
                changed = self.progress.changed() => {
                    if changed.is_err() {
                        return Err(Ending::Close(store_failed(None)));
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    async fn finish(mut self, ending: Ending) {
        let session_id = self.hub.session_id();
        // `serve` may have been cancelled, for example by a replacing
        // publisher, while a frame it fanned out waited for the store's queue.
        // A stopped store fails the hub, which `drain_acks` then reports.
        let _ = self.enqueue_writes().await;
        let closing = match ending {
            Ending::Close(closing) if closing.code == close::INTERNAL_ERROR => Some(closing),
            Ending::Close(closing) => match self.drain_acks().await {
                Ok(()) => Some(closing),
                Err(Ending::Close(internal)) => Some(internal),
                Err(_) => None,
            },
            Ending::Replaced => Some(Closing::new(
                close::REPLACED,
                "another publisher connection replaced this one",
            )),
            Ending::PeerGone => None,
        };
        match closing {
            Some(closing) => {
                tracing::debug!(%session_id, role = ROLE, code = closing.code, "publisher closed");
                self.conn.close(closing).await;
            }
            None => {
                self.conn.answer_peer_close().await;
                tracing::debug!(%session_id, role = ROLE, "publisher disconnected");
            }
        }
    }
}

fn decode_rejection(error: &ProtocolError) -> (&'static str, Closing) {
    match error {
        ProtocolError::UnsupportedVersion(version) => (
            "unsupported_version",
            Closing::new(
                close::UNSUPPORTED_VERSION,
                format!("frame version {version} is not supported: this relay speaks version 1"),
            ),
        ),
        other => (
            "malformed",
            Closing::new(close::MALFORMED_FRAME, format!("malformed frame: {other}")),
        ),
    }
}

/// Close for a failed store commit. The reason names the fault when it is
/// known, such as `disk full`, so the device can show why it is resending.
fn store_failed(fault: Option<StoreFault>) -> Closing {
    let cause = fault.map_or(String::new(), |fault| format!(" ({})", fault.describe()));
    Closing::new(
        close::INTERNAL_ERROR,
        format!("relay failed to store frames{cause}: reconnect and resend unacknowledged frames"),
    )
}

fn shutting_down() -> Closing {
    Closing::new(
        close::GOING_AWAY,
        "relay is shutting down: reconnect and resend unacknowledged frames",
    )
}

/// Frames accepted or resent on this socket, waiting for their commit.
#[derive(Debug, Default)]
struct AckQueue {
    /// Offset to (stream, sequence number) of the frame at that offset.
    waiting: BTreeMap<u64, (StreamId, u64)>,
}

impl AckQueue {
    fn insert(&mut self, stream_id: StreamId, seq: u64, offset: u64) {
        self.waiting.insert(offset, (stream_id, seq));
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Removes every entry below `committed` and returns one acknowledgement
    /// per stream, for its highest committed frame, in offset order.
    fn take_ready(&mut self, committed: u64) -> Vec<PublisherEvent> {
        let oldest = self.waiting.first_key_value().map(|(offset, _)| *offset);
        if oldest.is_none_or(|offset| offset >= committed) {
            return Vec::new();
        }
        let still_waiting = self.waiting.split_off(&committed);
        let ready = std::mem::replace(&mut self.waiting, still_waiting);

        let mut latest: HashMap<StreamId, (u64, u64)> = HashMap::new();
        for (offset, (stream_id, seq)) in ready {
            latest.insert(stream_id, (seq, offset));
        }
        let mut acks: Vec<_> = latest
            .into_iter()
            .map(|(stream_id, (seq, offset))| PublisherEvent::Ack {
                stream_id,
                seq,
                offset,
            })
            .collect();
        acks.sort_by_key(|ack| match ack {
            PublisherEvent::Ack { offset, .. } => *offset,
            PublisherEvent::Welcome { .. } => 0,
        });
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(stream: u8, seq: u64, offset: u64) -> PublisherEvent {
        PublisherEvent::Ack {
            stream_id: StreamId([stream; 16]),
            seq,
            offset,
        }
    }

    #[test]
    fn acks_coalesce_per_stream_in_offset_order() {
        let mut queue = AckQueue::default();
        queue.insert(StreamId([1; 16]), 0, 0);
        queue.insert(StreamId([1; 16]), 1, 1);
        queue.insert(StreamId([2; 16]), 0, 2);
        queue.insert(StreamId([1; 16]), 2, 3);
        queue.insert(StreamId([2; 16]), 1, 4);

        assert_eq!(queue.take_ready(4), vec![ack(2, 0, 2), ack(1, 2, 3)]);
        assert!(!queue.is_empty());
        assert_eq!(queue.take_ready(4), vec![]);
        assert_eq!(queue.take_ready(5), vec![ack(2, 1, 4)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn decode_errors_map_to_close_codes() {
        let (reason, closing) = decode_rejection(&ProtocolError::UnsupportedVersion(2));
        assert_eq!(reason, "unsupported_version");
        assert_eq!(closing.code, close::UNSUPPORTED_VERSION);

        let truncated = ProtocolError::Truncated { len: 3, min: 88 };
        let (reason, closing) = decode_rejection(&truncated);
        assert_eq!(reason, "malformed");
        assert_eq!(closing.code, close::MALFORMED_FRAME);
    }
}

//! Shared parts of publish and follow sockets: writes with a timeout,
//! keepalive, classification of incoming messages and closing with a code and
//! reason.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::config::Limits;
use crate::metrics::{WEBSOCKET_CLOSES, WEBSOCKET_PROTOCOL_ERRORS};

/// Maximum time the relay waits for the peer's reply to its close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

/// Maximum length of a close reason in bytes. A control frame carries at
/// most 125 bytes (RFC 6455, section 5.5) and the code takes two of them.
const MAX_REASON_LEN: usize = 123;

/// Largest payload length a frame can declare: RFC 6455, section 5.2,
/// requires the most significant bit of the 64-bit length to be 0.
const MAX_DECLARED_LEN: usize = i64::MAX as usize;

/// A WebSocket split into halves, with its keepalive state.
pub(crate) struct WsConnection {
    /// Outgoing half.
    pub(crate) sink: SplitSink<WebSocket, Message>,
    /// Incoming half.
    pub(crate) stream: SplitStream<WebSocket>,
    /// Ping schedule and the time of the last incoming message.
    pub(crate) keepalive: Keepalive,
    role: &'static str,
    write_timeout: Duration,
}

/// Cause of a failed write. Either way the socket is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// The write took longer than the write timeout.
    TimedOut,
    /// The connection failed or closed.
    Closed,
}

/// A message or event from the incoming half.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A binary message.
    Binary(Bytes),
    /// A text message.
    Text,
    /// A ping or pong: the peer is alive.
    Control,
    /// The peer closed the connection or it ended.
    Closed,
    /// The message exceeds the maximum message size.
    TooBig,
    /// The connection failed, for example with a protocol violation.
    Failed(axum::Error),
}

/// A close code with a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Closing {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl Closing {
    /// Makes a close code and reason.
    pub(crate) fn new(code: u16, reason: impl Into<String>) -> Self {
        Closing {
            code,
            reason: reason.into(),
        }
    }
}

impl WsConnection {
    /// Splits `socket` and starts its keepalive schedule.
    pub(crate) fn new(socket: WebSocket, role: &'static str, limits: &Limits) -> Self {
        let (sink, stream) = socket.split();
        WsConnection {
            sink,
            stream,
            keepalive: Keepalive::new(limits.ping_interval, limits.idle_timeout),
            role,
            write_timeout: limits.write_timeout,
        }
    }

    /// Sends one message, giving up after the write timeout.
    pub(crate) async fn send(&mut self, message: Message) -> Result<(), SendFailure> {
        match tokio::time::timeout(self.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendFailure::Closed),
            Err(_) => Err(SendFailure::TimedOut),
        }
    }

    /// Sends `messages` with one flush at the end, giving up after the write
    /// timeout. The WebSocket layer writes its buffer to the TLS stream only
    /// when the buffer passes its size or at the flush, so a burst of small
    /// messages becomes one TLS record and one system call, not one per message.
    pub(crate) async fn send_all(
        &mut self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), SendFailure> {
        let sink = &mut self.sink;
        let write = async move {
            for message in messages {
                sink.feed(message).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendFailure::Closed),
            Err(_) => Err(SendFailure::TimedOut),
        }
    }

    /// Sends an API event as a JSON text message.
    pub(crate) async fn send_event(&mut self, event: &impl Serialize) -> Result<(), SendFailure> {
        self.send(event_message(event)?).await
    }

    /// Sorts an item of the incoming half and notes that the peer is alive.
    pub(crate) fn classify(&mut self, item: Option<Result<Message, axum::Error>>) -> Inbound {
        let inbound = match item {
            Some(Ok(Message::Binary(data))) => Inbound::Binary(data),
            Some(Ok(Message::Text(_))) => Inbound::Text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Inbound::Control,
            Some(Ok(Message::Close(frame))) => {
                self.count_reserved_close_code(frame.as_ref());
                Inbound::Closed
            }
            None => Inbound::Closed,
            Some(Err(error)) if is_message_too_big(&error) => Inbound::TooBig,
            Some(Err(error)) => Inbound::Failed(error),
        };
        self.keepalive.touch();
        inbound
    }

    /// Counts a close frame whose code a peer must never send (1005, 1006,
    /// 1015 or an unassigned one, RFC 6455 section 7.4). tungstenite replies
    /// to such a frame with 1002 itself and passes it on with code 1002 and the
    /// reason "Protocol violation" in place of the peer's.
    fn count_reserved_close_code(&self, frame: Option<&CloseFrame>) {
        // NOTE: this relies on tungstenite's replacement reason (0.26 to 0.29);
        // a peer that sends exactly 1002 "Protocol violation" is counted too.
        let Some(frame) = frame else {
            return;
        };
        if frame.code == 1002 && frame.reason.as_str() == "Protocol violation" {
            metrics::counter!(WEBSOCKET_PROTOCOL_ERRORS, "role" => self.role).increment(1);
            tracing::warn!(role = self.role, "peer sent a reserved close code");
        }
    }

    /// Sends the reply to the peer's close frame, which tungstenite queued
    /// when the frame arrived (RFC 6455, section 5.5.1), waiting at most 1 s.
    /// Does nothing when the connection ended without a close frame.
    pub(crate) async fn answer_peer_close(&mut self) {
        let wait = self.write_timeout.min(CLOSE_REPLY_WAIT);
        let _ = tokio::time::timeout(wait, self.sink.flush()).await;
    }

    /// Handles a keepalive tick: closes an idle peer, pings a live one.
    pub(crate) async fn on_tick(&mut self) -> Result<(), Closing> {
        if self.keepalive.is_idle() {
            return Err(Closing::new(
                sealcast_protocol::api::close::TIMEOUT,
                "no message or pong within the idle timeout",
            ));
        }
        self.send(Message::Ping(Bytes::new()))
            .await
            .map_err(|failure| {
                Closing::new(sealcast_protocol::api::close::TIMEOUT, failure.describe())
            })
    }

    /// Sends a close frame, waits briefly for the peer's reply and drops the socket.
    pub(crate) async fn close(mut self, closing: Closing) {
        metrics::counter!(
            WEBSOCKET_CLOSES,
            "role" => self.role,
            "code" => closing.code.to_string()
        )
        .increment(1);

        let frame = CloseFrame {
            code: closing.code,
            reason: truncate(&closing.reason).into(),
        };
        let wait = self.write_timeout.min(CLOSE_REPLY_WAIT);
        let sent = tokio::time::timeout(wait, self.sink.send(Message::Close(Some(frame)))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ =
                tokio::time::timeout(wait, async { while self.stream.next().await.is_some() {} })
                    .await;
        }
    }
}

impl SendFailure {
    /// Returns a close reason for the failure.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SendFailure::TimedOut => "write timed out",
            SendFailure::Closed => "connection closed",
        }
    }
}

/// Ping schedule and liveness of the peer.
pub(crate) struct Keepalive {
    interval: Interval,
    last_seen: Instant,
    idle_timeout: Duration,
}

impl Keepalive {
    fn new(ping_interval: Duration, idle_timeout: Duration) -> Self {
        let mut interval = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Keepalive {
            interval,
            last_seen: Instant::now(),
            idle_timeout,
        }
    }

    /// Completes at the next ping time.
    pub(crate) async fn tick(&mut self) {
        self.interval.tick().await;
    }

    fn touch(&mut self) {
        self.last_seen = Instant::now();
    }

    fn is_idle(&self) -> bool {
        self.last_seen.elapsed() > self.idle_timeout
    }
}

/// Serializes an API event as a JSON text message. The API's events contain
/// only strings and integers, so this fails only if that changes, and then
/// the socket cannot go on.
pub(crate) fn event_message(event: &impl Serialize) -> Result<Message, SendFailure> {
    let text = serde_json::to_string(event).map_err(|_| SendFailure::Closed)?;
    Ok(Message::Text(text.into()))
}

/// Returns the close frame for a peer that broke RFC 6455: 1007 for invalid
/// UTF-8 in a text message or close reason, 1002 for any other protocol
/// violation, and `None` for errors that are not the peer's fault, such as a
/// reset connection.
/// Every protocol violation is counted by role and logged as peer misbehaviour.
pub(crate) fn protocol_violation(error: &axum::Error, role: &'static str) -> Option<Closing> {
    let source = std::error::Error::source(error)?;
    let closing = match source.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Utf8(_) => {
            Closing::new(1007, "text message or close reason is not valid UTF-8")
        }
        tungstenite::Error::Protocol(violation) => {
            Closing::new(1002, format!("WebSocket protocol error: {violation}"))
        }
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            ..
        }) if *size > MAX_DECLARED_LEN => Closing::new(
            1002,
            "WebSocket protocol error: frame length has its most significant bit set",
        ),
        _ => return None,
    };
    metrics::counter!(WEBSOCKET_PROTOCOL_ERRORS, "role" => role).increment(1);
    tracing::warn!(role, code = closing.code, reason = %closing.reason, "peer broke the WebSocket protocol");
    Some(closing)
}

/// Checks whether a read failed because the message exceeds the maximum size.
fn is_message_too_big(error: &axum::Error) -> bool {
    let source = std::error::Error::source(error);
    matches!(
        source.and_then(|source| source.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { size, .. }
        )) if *size <= MAX_DECLARED_LEN
    )
}

fn truncate(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reason_truncated_on_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate(&reason);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert!(reason.starts_with(cut));
        assert_eq!(truncate("short"), "short");
    }
}

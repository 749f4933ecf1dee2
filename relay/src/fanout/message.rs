//! The messages that relay nodes exchange through NATS.
//!
//! Each session has one subject, `sealcast.session.<session id in hex>`.
//! Every message carries two headers: `Sealcast-Node`, the random id of the
//! node that sent it, so that a node skips its own messages, and
//! `Sealcast-Event`, one of:
//!
//! | event | payload |
//! | --- | --- |
//! | `frame` | the follow-socket message of a committed frame: its 8-byte big-endian offset, then the frame |
//! | `end` | the 8-byte big-endian offset after the session's last frame, once the end is committed |
//! | `publisher` | empty: a publisher attached to the session on the sending node |
//!
//! Frames are ciphertext, as everywhere else in the relay.

use async_nats::HeaderMap;
use axum::body::Bytes;
use sealcast_protocol::{api, FrameHeader, SessionId};

/// Header naming the node that sent a message.
pub(super) const NODE_HEADER: &str = "Sealcast-Node";

/// Header naming the kind of message.
pub(super) const EVENT_HEADER: &str = "Sealcast-Event";

/// Subject that matches every session's messages.
pub(super) const ALL_SESSIONS: &str = "sealcast.session.*";

/// Returns the subject of one session's messages.
pub(super) fn subject(session_id: SessionId) -> String {
    format!("sealcast.session.{session_id}")
}

/// A message this node sends.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A frame the store committed.
    Frame {
        session_id: SessionId,
        delivery: Bytes,
    },
    /// A session end the store committed.
    End {
        session_id: SessionId,
        end_offset: u64,
    },
    /// A publisher attached to the session on this node.
    Publisher { session_id: SessionId },
}

impl Outgoing {
    /// Returns the session the message is about.
    pub(super) fn session_id(&self) -> SessionId {
        match self {
            Outgoing::Frame { session_id, .. }
            | Outgoing::End { session_id, .. }
            | Outgoing::Publisher { session_id } => *session_id,
        }
    }

    /// Returns the value of the event header, also used as a metric label.
    pub(super) fn event(&self) -> &'static str {
        match self {
            Outgoing::Frame { .. } => "frame",
            Outgoing::End { .. } => "end",
            Outgoing::Publisher { .. } => "publisher",
        }
    }

    /// Returns the headers, naming `node_id` as the sender.
    pub(super) fn headers(&self, node_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, node_id);
        headers.insert(EVENT_HEADER, self.event());
        headers
    }

    /// Returns the payload.
    pub(super) fn payload(&self) -> Bytes {
        match self {
            Outgoing::Frame { delivery, .. } => delivery.clone(),
            Outgoing::End { end_offset, .. } => Bytes::copy_from_slice(&end_offset.to_be_bytes()),
            Outgoing::Publisher { .. } => Bytes::new(),
        }
    }
}

/// A message received from another node.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A committed frame at `offset`.
    Frame {
        offset: u64,
        header: FrameHeader,
        delivery: Bytes,
    },
    /// The session ended after its frames below `end_offset`.
    End { end_offset: u64 },
    /// A publisher attached to the session on the sending node.
    Publisher,
}

/// Why a received message was dropped, also used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// The message came from this node.
    Own,
    /// A header is missing or names an unknown event.
    UnknownEvent,
    /// The payload does not fit its event.
    Malformed,
}

impl Dropped {
    /// Returns the metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Dropped::Own => "own",
            Dropped::UnknownEvent => "unknown_event",
            Dropped::Malformed => "malformed",
        }
    }
}

/// Decodes a message that `node_id` received.
pub(super) fn decode(
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    node_id: &str,
) -> Result<Incoming, Dropped> {
    let header = |name: &str| {
        headers
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str())
    };
    if header(NODE_HEADER) == Some(node_id) {
        return Err(Dropped::Own);
    }
    match header(EVENT_HEADER) {
        Some("frame") => {
            let (offset, frame) = api::decode_delivery(payload).ok_or(Dropped::Malformed)?;
            let header = FrameHeader::decode_frame(frame).map_err(|_| Dropped::Malformed)?;
            Ok(Incoming::Frame {
                offset,
                header,
                delivery: payload.clone(),
            })
        }
        Some("end") => {
            let bytes: [u8; 8] = payload[..].try_into().map_err(|_| Dropped::Malformed)?;
            Ok(Incoming::End {
                end_offset: u64::from_be_bytes(bytes),
            })
        }
        Some("publisher") => Ok(Incoming::Publisher),
        _ => Err(Dropped::UnknownEvent),
    }
}

/// Reads the session id from a subject made by [`subject`].
pub(super) fn session_of(subject: &str) -> Option<SessionId> {
    subject.strip_prefix("sealcast.session.")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_round_trips() {
        let session_id = SessionId::random();
        let message = Outgoing::End {
            session_id,
            end_offset: 42,
        };
        let headers = message.headers("node-a");
        let decoded = decode(Some(&headers), &message.payload(), "node-b");
        assert!(matches!(decoded, Ok(Incoming::End { end_offset: 42 })));
        assert_eq!(session_of(&subject(session_id)), Some(session_id));
    }

    #[test]
    fn own_messages_are_dropped() {
        let message = Outgoing::Publisher {
            session_id: SessionId::random(),
        };
        let headers = message.headers("node-a");
        let decoded = decode(Some(&headers), &message.payload(), "node-a");
        assert_eq!(decoded.err(), Some(Dropped::Own));
    }

    #[test]
    fn bad_messages_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(EVENT_HEADER, "frame");
        let garbage = Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x01not a frame");
        assert_eq!(
            decode(Some(&headers), &garbage, "n").err(),
            Some(Dropped::Malformed)
        );

        headers.insert(EVENT_HEADER, "end");
        let short = Bytes::from_static(b"\x01\x02");
        assert_eq!(
            decode(Some(&headers), &short, "n").err(),
            Some(Dropped::Malformed)
        );

        assert_eq!(decode(None, &short, "n").err(), Some(Dropped::UnknownEvent));
    }
}

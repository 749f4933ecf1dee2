//! The messages that relay nodes exchange through NATS.
//!
//! Each session has one subject, `sealcast.session.<session id in hex>`.
//! Every message carries three headers: `Sealcast-Node`, the random id of
//! the node that sent it, so that a node skips its own messages;
//! `Sealcast-Mac`, an HMAC-SHA-256 in hex over the subject, the node id, the
//! event and the payload, keyed with a key derived from the store's data
//! key, so that only nodes sharing the store can inject messages; and
//! `Sealcast-Event`, one of:
//!
//! | event | payload |
//! | --- | --- |
//! | `frame` | the follow-socket message of a committed frame: its 8-byte big-endian offset, then the frame |
//! | `end` | the 8-byte big-endian offset after the session's last frame, once the end is committed |
//! | `publisher` | the 8-byte big-endian Unix time in milliseconds at which a publisher attached to the session on the sending node |
//! | `device_removed` | the 8-byte id of a paired device that was removed from the session, whose follow sockets every node closes |
//!
//! Frames are ciphertext, as everywhere else in the relay.

use async_nats::HeaderMap;
use axum::body::Bytes;
use hmac::{Hmac, Mac};
use sealcast_protocol::paired_keys::{DeviceId, DEVICE_ID_LEN};
use sealcast_protocol::{api, FrameHeader, SessionId};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Header naming the node that sent a message.
pub(super) const NODE_HEADER: &str = "Sealcast-Node";

/// Header naming the kind of message.
pub(super) const EVENT_HEADER: &str = "Sealcast-Event";

/// Header carrying the message's authentication code.
pub(super) const MAC_HEADER: &str = "Sealcast-Mac";

/// The key that authenticates messages between nodes sharing a store.
pub(super) struct MessageKey(Zeroizing<[u8; 32]>);

impl MessageKey {
    pub(super) fn new(key: Zeroizing<[u8; 32]>) -> Self {
        MessageKey(key)
    }

    fn mac(&self, subject: &str, node_id: &str, event: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        // Each text part is followed by a zero byte, which none contains.
        for part in [subject, node_id, event] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.update(payload);
        mac
    }

    /// Returns the authentication code of a message, in hex.
    fn sign(&self, subject: &str, node_id: &str, event: &str, payload: &[u8]) -> String {
        hex::encode(
            self.mac(subject, node_id, event, payload)
                .finalize()
                .into_bytes(),
        )
    }

    /// Checks an authentication code in constant time.
    fn verify(
        &self,
        subject: &str,
        node_id: &str,
        event: &str,
        payload: &[u8],
        code: &str,
    ) -> bool {
        let Ok(code) = hex::decode(code) else {
            return false;
        };
        self.mac(subject, node_id, event, payload)
            .verify_slice(&code)
            .is_ok()
    }
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}

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
    /// A publisher attached to the session on this node at `attached_at`
    /// (Unix milliseconds).
    Publisher {
        session_id: SessionId,
        attached_at: i64,
    },
    /// A paired device was removed from the session.
    DeviceRemoved {
        session_id: SessionId,
        device_id: DeviceId,
    },
}

impl Outgoing {
    /// Returns the session the message is about.
    pub(super) fn session_id(&self) -> SessionId {
        match self {
            Outgoing::Frame { session_id, .. }
            | Outgoing::End { session_id, .. }
            | Outgoing::Publisher { session_id, .. }
            | Outgoing::DeviceRemoved { session_id, .. } => *session_id,
        }
    }

    /// Returns the value of the event header, also used as a metric label.
    pub(super) fn event(&self) -> &'static str {
        match self {
            Outgoing::Frame { .. } => "frame",
            Outgoing::End { .. } => "end",
            Outgoing::Publisher { .. } => "publisher",
            Outgoing::DeviceRemoved { .. } => "device_removed",
        }
    }

    /// Returns the headers of the message with `payload` on `subject`,
    /// naming `node_id` as the sender and authenticated with `key`.
    pub(super) fn headers(
        &self,
        subject: &str,
        payload: &[u8],
        node_id: &str,
        key: &MessageKey,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(NODE_HEADER, node_id);
        headers.insert(EVENT_HEADER, self.event());
        headers.insert(
            MAC_HEADER,
            key.sign(subject, node_id, self.event(), payload).as_str(),
        );
        headers
    }

    /// Returns the payload.
    pub(super) fn payload(&self) -> Bytes {
        match self {
            Outgoing::Frame { delivery, .. } => delivery.clone(),
            Outgoing::End { end_offset, .. } => Bytes::copy_from_slice(&end_offset.to_be_bytes()),
            Outgoing::Publisher { attached_at, .. } => {
                Bytes::copy_from_slice(&attached_at.to_be_bytes())
            }
            Outgoing::DeviceRemoved { device_id, .. } => Bytes::copy_from_slice(&device_id.0),
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
    /// A publisher attached to the session on the sending node at
    /// `attached_at` (Unix milliseconds). Only publishers that attached
    /// here before it are replaced by it, so a replayed message replaces
    /// no publisher that attached after the original.
    Publisher { attached_at: i64 },
    /// The paired device was removed from the session: its follow sockets
    /// must close. A replayed message closes only sockets of a device that
    /// the store no longer admits, which cannot open new ones.
    DeviceRemoved { device_id: DeviceId },
}

/// Reason a received message was dropped, also used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// The message came from this node.
    Own,
    /// A header is missing or names an unknown event.
    UnknownEvent,
    /// The authentication code is missing or wrong: the sender does not
    /// share this node's store.
    BadMac,
    /// The payload does not fit its event.
    Malformed,
}

impl Dropped {
    /// Returns the metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Dropped::Own => "own",
            Dropped::UnknownEvent => "unknown_event",
            Dropped::BadMac => "bad_mac",
            Dropped::Malformed => "malformed",
        }
    }
}

/// Decodes a message on `subject` that `node_id` received, checking its
/// authentication code with `key`.
pub(super) fn decode(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
    node_id: &str,
    key: &MessageKey,
) -> Result<Incoming, Dropped> {
    let header = |name: &str| {
        headers
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str())
    };
    let sender = header(NODE_HEADER).unwrap_or_default();
    let event = header(EVENT_HEADER).ok_or(Dropped::UnknownEvent)?;
    // Checked before the sender, so that a forged message naming this node
    // is counted as forged.
    let authentic =
        header(MAC_HEADER).is_some_and(|code| key.verify(subject, sender, event, payload, code));
    if !authentic {
        return Err(Dropped::BadMac);
    }
    if sender == node_id {
        return Err(Dropped::Own);
    }
    match Some(event) {
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
        Some("publisher") => {
            let bytes: [u8; 8] = payload[..].try_into().map_err(|_| Dropped::Malformed)?;
            Ok(Incoming::Publisher {
                attached_at: i64::from_be_bytes(bytes),
            })
        }
        Some("device_removed") => {
            let bytes: [u8; DEVICE_ID_LEN] =
                payload[..].try_into().map_err(|_| Dropped::Malformed)?;
            Ok(Incoming::DeviceRemoved {
                device_id: DeviceId(bytes),
            })
        }
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

    fn key(byte: u8) -> MessageKey {
        MessageKey::new(Zeroizing::new([byte; 32]))
    }

    fn sent(message: &Outgoing, node_id: &str, key: &MessageKey) -> (String, HeaderMap, Bytes) {
        let subject = subject(message.session_id());
        let payload = message.payload();
        let headers = message.headers(&subject, &payload, node_id, key);
        (subject, headers, payload)
    }

    #[test]
    fn end_round_trips() {
        let session_id = SessionId::random();
        let message = Outgoing::End {
            session_id,
            end_offset: 42,
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        let decoded = decode(&subject, Some(&headers), &payload, "node-b", &key(1));
        assert!(matches!(decoded, Ok(Incoming::End { end_offset: 42 })));
        assert_eq!(session_of(&subject), Some(session_id));
    }

    #[test]
    fn own_messages_are_dropped() {
        let message = Outgoing::Publisher {
            session_id: SessionId::random(),
            attached_at: 1_900_000_000_000,
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        let decoded = decode(&subject, Some(&headers), &payload, "node-a", &key(1));
        assert_eq!(decoded.err(), Some(Dropped::Own));
    }

    #[test]
    fn forged_or_altered_messages_are_dropped() {
        let message = Outgoing::End {
            session_id: SessionId::random(),
            end_offset: 7,
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        let wrong_key = decode(&subject, Some(&headers), &payload, "node-b", &key(2));
        assert_eq!(wrong_key.err(), Some(Dropped::BadMac));

        let altered = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1]);
        let decoded = decode(&subject, Some(&headers), &altered, "node-b", &key(1));
        assert_eq!(decoded.err(), Some(Dropped::BadMac));

        let other_subject = format!("sealcast.session.{}", SessionId::random());
        let moved = decode(&other_subject, Some(&headers), &payload, "node-b", &key(1));
        assert_eq!(moved.err(), Some(Dropped::BadMac));

        let mut unsigned = headers.clone();
        unsigned.insert(MAC_HEADER, "00");
        let decoded = decode(&subject, Some(&unsigned), &payload, "node-b", &key(1));
        assert_eq!(decoded.err(), Some(Dropped::BadMac));
    }

    #[test]
    fn malformed_payloads_are_dropped() {
        let session_id = SessionId::random();
        let subject = subject(session_id);
        let garbage = Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x01not a frame");
        let signed = |event: &str, payload: &Bytes| {
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, "node-a");
            headers.insert(EVENT_HEADER, event);
            headers.insert(
                MAC_HEADER,
                key(1).sign(&subject, "node-a", event, payload).as_str(),
            );
            headers
        };
        let frame = decode(
            &subject,
            Some(&signed("frame", &garbage)),
            &garbage,
            "n",
            &key(1),
        );
        assert_eq!(frame.err(), Some(Dropped::Malformed));

        let short = Bytes::from_static(b"\x01\x02");
        let end = decode(&subject, Some(&signed("end", &short)), &short, "n", &key(1));
        assert_eq!(end.err(), Some(Dropped::Malformed));

        let unknown = decode(
            &subject,
            Some(&signed("reset", &short)),
            &short,
            "n",
            &key(1),
        );
        assert_eq!(unknown.err(), Some(Dropped::UnknownEvent));

        let bare = decode(&subject, None, &short, "n", &key(1));
        assert_eq!(bare.err(), Some(Dropped::UnknownEvent));
    }

    #[test]
    fn publisher_attach_time_round_trips() {
        let message = Outgoing::Publisher {
            session_id: SessionId::random(),
            attached_at: 1_900_000_000_123,
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        let decoded = decode(&subject, Some(&headers), &payload, "node-b", &key(1));
        assert!(matches!(
            decoded,
            Ok(Incoming::Publisher {
                attached_at: 1_900_000_000_123
            })
        ));
    }

    #[test]
    fn device_removal_round_trips() {
        let session_id = SessionId::random();
        let device_id = DeviceId([0x5a, 1, 2, 3, 4, 5, 6, 0xff]);
        let message = Outgoing::DeviceRemoved {
            session_id,
            device_id,
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        assert_eq!(payload.len(), DEVICE_ID_LEN);
        let decoded = decode(&subject, Some(&headers), &payload, "node-b", &key(1));
        assert!(matches!(
            decoded,
            Ok(Incoming::DeviceRemoved { device_id: decoded }) if decoded == device_id
        ));
    }

    #[test]
    fn device_removal_is_authenticated() {
        let message = Outgoing::DeviceRemoved {
            session_id: SessionId::random(),
            device_id: DeviceId([7; DEVICE_ID_LEN]),
        };
        let (subject, headers, payload) = sent(&message, "node-a", &key(1));
        let wrong_key = decode(&subject, Some(&headers), &payload, "node-b", &key(2));
        assert_eq!(wrong_key.err(), Some(Dropped::BadMac));

        let other_device = Bytes::from_static(&[8; DEVICE_ID_LEN]);
        let altered = decode(&subject, Some(&headers), &other_device, "node-b", &key(1));
        assert_eq!(altered.err(), Some(Dropped::BadMac));

        // The same payload signed as another event is not a removal.
        let mut relabeled = headers.clone();
        relabeled.insert(EVENT_HEADER, "end");
        let decoded = decode(&subject, Some(&relabeled), &payload, "node-b", &key(1));
        assert_eq!(decoded.err(), Some(Dropped::BadMac));
    }

    #[test]
    fn device_removal_of_wrong_length_is_malformed() {
        let subject = subject(SessionId::random());
        for length in [0, DEVICE_ID_LEN - 1, DEVICE_ID_LEN + 1] {
            let payload = Bytes::from(vec![1u8; length]);
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, "node-a");
            headers.insert(EVENT_HEADER, "device_removed");
            let code = key(1).sign(&subject, "node-a", "device_removed", &payload);
            headers.insert(MAC_HEADER, code.as_str());
            let decoded = decode(&subject, Some(&headers), &payload, "node-b", &key(1));
            assert_eq!(decoded.err(), Some(Dropped::Malformed), "length {length}");
        }
    }

    #[test]
    fn forgery_naming_this_node_counts_as_forged() {
        let message = Outgoing::End {
            session_id: SessionId::random(),
            end_offset: 3,
        };
        let (subject, headers, payload) = sent(&message, "node-b", &key(2));
        let decoded = decode(&subject, Some(&headers), &payload, "node-b", &key(1));
        assert_eq!(decoded.err(), Some(Dropped::BadMac));
    }
}

//! The version 1 frame header.
//!
//! Every frame starts with this fixed 88-byte header, all integers big-endian.
//! The relay routes and deduplicates on it; the whole header is the AES-GCM
//! associated data, so no field can be changed without the receiver noticing.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version, 1 |
//! | 1 | 1 | kind: 1 interim segment, 2 final segment, 3 end of session, 4 checkpoint |
//! | 2 | 1 | padding bucket b: the padded plaintext is `256 << b` bytes |
//! | 3 | 1 | flags, reserved, 0 |
//! | 4 | 4 | key epoch, 0 until the session key is rotated |
//! | 8 | 16 | session id |
//! | 24 | 16 | stream id |
//! | 40 | 8 | sequence number within the stream, from 0 |
//! | 48 | 8 | final count: final and end frames in the stream up to this one |
//! | 56 | 32 | SHA-256 of the previous frame of the stream, zero for sequence 0 |

use crate::error::ProtocolError;
use crate::ids::{SessionId, StreamId};
use crate::padding::{padded_len, MAX_BUCKET};
use crate::TAG_LEN;

/// The protocol version this crate encodes.
pub const PROTOCOL_VERSION: u8 = 1;

/// Encoded length of a header in bytes.
pub const HEADER_LEN: usize = 88;

/// Kind of content a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An interim transcript segment that a later revision replaces. The relay
    /// may skip it for a follower that lags.
    Interim,
    /// A final transcript segment. Never skipped.
    Final,
    /// The last frame of a session, sealed by the clinician device.
    EndOfSession,
    /// A signature of the publishing device over the frames before it (see
    /// [`crate::authorship`]). The relay must not skip it, but it does not
    /// count as final, so the final count and `final_segments` ignore it.
    Checkpoint,
}

impl FrameKind {
    /// Returns the kind byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameKind::Interim => 1,
            FrameKind::Final => 2,
            FrameKind::EndOfSession => 3,
            FrameKind::Checkpoint => 4,
        }
    }

    /// Decodes a kind byte.
    pub fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        match byte {
            1 => Ok(FrameKind::Interim),
            2 => Ok(FrameKind::Final),
            3 => Ok(FrameKind::EndOfSession),
            4 => Ok(FrameKind::Checkpoint),
            other => Err(ProtocolError::UnknownKind(other)),
        }
    }

    /// Whether a receiver must see this frame to hold a complete transcript,
    /// which is whether the frame counts in the header's final count.
    pub fn counts_as_final(self) -> bool {
        matches!(self, FrameKind::Final | FrameKind::EndOfSession)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    /// Kind of content the frame carries.
    pub kind: FrameKind,
    /// Padding bucket: the sealed plaintext is `256 << bucket` bytes.
    pub bucket: u8,
    /// Session key epoch.
    pub key_epoch: u32,
    /// Session the frame belongs to.
    pub session_id: SessionId,
    /// Publishing stream within the session.
    pub stream_id: StreamId,
    /// Sequence number within the stream.
    pub seq: u64,
    /// Number of final and end-of-session frames in the stream up to and including this one.
    pub final_count: u64,
    /// SHA-256 of the previous frame of the stream, or zeros for the first frame.
    pub prev_hash: [u8; 32],
}

impl FrameHeader {
    /// Encodes the header into its 88 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = PROTOCOL_VERSION;
        out[1] = self.kind.to_byte();
        out[2] = self.bucket;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.key_epoch.to_be_bytes());
        out[8..24].copy_from_slice(self.session_id.as_bytes());
        out[24..40].copy_from_slice(self.stream_id.as_bytes());
        out[40..48].copy_from_slice(&self.seq.to_be_bytes());
        out[48..56].copy_from_slice(&self.final_count.to_be_bytes());
        out[56..88].copy_from_slice(&self.prev_hash);
        out
    }

    /// Decodes the header at the start of `bytes`, checking every field
    /// that can be checked without the key.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                len: bytes.len(),
                min: HEADER_LEN,
            });
        }
        if bytes[0] != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(bytes[0]));
        }
        let kind = FrameKind::from_byte(bytes[1])?;
        let bucket = bytes[2];
        if bucket > MAX_BUCKET {
            return Err(ProtocolError::InvalidBucket(bucket));
        }
        if bytes[3] != 0 {
            return Err(ProtocolError::ReservedFlags(bytes[3]));
        }
        Ok(FrameHeader {
            kind,
            bucket,
            key_epoch: u32::from_be_bytes(array(&bytes[4..8])),
            session_id: SessionId(array(&bytes[8..24])),
            stream_id: StreamId(array(&bytes[24..40])),
            seq: u64::from_be_bytes(array(&bytes[40..48])),
            final_count: u64::from_be_bytes(array(&bytes[48..56])),
            prev_hash: array(&bytes[56..88]),
        })
    }

    /// Decodes the header of a whole frame and checks that the frame's length
    /// matches the length the header declares.
    pub fn decode_frame(frame: &[u8]) -> Result<Self, ProtocolError> {
        let header = Self::decode(frame)?;
        let expected = header.frame_len();
        if frame.len() != expected {
            return Err(ProtocolError::LengthMismatch {
                expected,
                actual: frame.len(),
            });
        }
        Ok(header)
    }

    /// Total length of a frame with this header: header, padded ciphertext and tag.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + padded_len(self.bucket) + TAG_LEN
    }
}

/// Copies a slice whose length the caller has already checked into an array.
fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Final,
            bucket: 2,
            key_epoch: 7,
            session_id: SessionId([1; 16]),
            stream_id: StreamId([2; 16]),
            seq: 42,
            final_count: 9,
            prev_hash: [3; 32],
        }
    }

    #[test]
    fn header_round_trip() {
        let header = sample();
        assert_eq!(FrameHeader::decode(&header.encode()).unwrap(), header);
    }

    #[test]
    fn header_rejects_truncated() {
        let bytes = sample().encode();
        let err = FrameHeader::decode(&bytes[..40]).unwrap_err();
        assert_eq!(err, ProtocolError::Truncated { len: 40, min: 88 });
    }

    #[test]
    fn header_rejects_unknown_version() {
        let mut bytes = sample().encode();
        bytes[0] = 2;
        assert_eq!(
            FrameHeader::decode(&bytes).unwrap_err(),
            ProtocolError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn header_rejects_unknown_kind_bucket_flags() {
        let mut bytes = sample().encode();
        bytes[1] = 9;
        assert_eq!(
            FrameHeader::decode(&bytes).unwrap_err(),
            ProtocolError::UnknownKind(9)
        );
        let mut bytes = sample().encode();
        bytes[2] = 9;
        assert_eq!(
            FrameHeader::decode(&bytes).unwrap_err(),
            ProtocolError::InvalidBucket(9)
        );
        let mut bytes = sample().encode();
        bytes[3] = 1;
        assert_eq!(
            FrameHeader::decode(&bytes).unwrap_err(),
            ProtocolError::ReservedFlags(1)
        );
    }

    #[test]
    fn frame_length_checked() {
        let header = sample();
        let mut frame = header.encode().to_vec();
        frame.resize(header.frame_len() - 1, 0);
        assert!(matches!(
            FrameHeader::decode_frame(&frame),
            Err(ProtocolError::LengthMismatch { .. })
        ));
    }
}

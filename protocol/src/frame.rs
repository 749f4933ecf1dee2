//! Sealing and opening frames with AES-256-GCM (NIST SP 800-38D).
//!
//! A frame is the encoded header, then the padded plaintext encrypted under
//! the stream key, then the 16-byte tag. The nonce is four zero bytes followed
//! by the sequence number, big-endian: a stream never reuses a sequence number
//! and every stream has its own key, so no (key, nonce) pair repeats. The whole
//! header is the associated data.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;
use crate::header::{FrameHeader, FrameKind, HEADER_LEN};
use crate::ids::{SessionId, StreamId};
use crate::keys::SessionKey;
use crate::padding::{bucket_for, pad, unpad};
use crate::segment::{EndOfSession, TranscriptSegment};

/// Builds the 96-bit AES-GCM nonce for a sequence number.
pub fn nonce_for_seq(seq: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    nonce
}

/// SHA-256 of a whole frame, the value the next frame of the stream carries as `prev_hash`.
pub fn frame_hash(frame: &[u8]) -> [u8; 32] {
    Sha256::digest(frame).into()
}

/// Seals the frames of one publishing stream, keeping its sequence number,
/// final count and hash chain.
pub struct StreamSealer {
    cipher: Aes256Gcm,
    session_id: SessionId,
    stream_id: StreamId,
    key_epoch: u32,
    next_seq: u64,
    final_count: u64,
    prev_hash: [u8; 32],
}

impl StreamSealer {
    /// Starts a new stream with a fresh random stream id.
    pub fn new(key: &SessionKey, session_id: SessionId) -> Self {
        Self::with_stream_id(key, session_id, StreamId::random())
    }

    /// Starts a stream with a given id, for test vectors.
    pub fn with_stream_id(key: &SessionKey, session_id: SessionId, stream_id: StreamId) -> Self {
        let stream_key = key.derive_stream_key(&session_id, &stream_id);
        StreamSealer {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(stream_key.expose_bytes())),
            session_id,
            stream_id,
            key_epoch: 0,
            next_seq: 0,
            final_count: 0,
            prev_hash: [0; 32],
        }
    }

    /// Sets the key epoch written into every header. The caller passes the
    /// session key of that epoch to the constructor and calls this before the
    /// first frame, because a stream keeps one epoch.
    pub fn with_key_epoch(mut self, key_epoch: u32) -> Self {
        self.key_epoch = key_epoch;
        self
    }

    /// This stream's id.
    pub fn stream_id(&self) -> StreamId {
        self.stream_id
    }

    /// Sequence number the next sealed frame gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals a transcript segment as an interim or final frame, following the segment's `is_final`.
    pub fn seal_segment(&mut self, segment: &TranscriptSegment) -> Result<Vec<u8>, ProtocolError> {
        let kind = if segment.is_final {
            FrameKind::Final
        } else {
            FrameKind::Interim
        };
        self.seal(kind, &segment.to_plaintext())
    }

    /// Seals the end-of-session frame.
    pub fn seal_end(&mut self, end: &EndOfSession) -> Result<Vec<u8>, ProtocolError> {
        self.seal(FrameKind::EndOfSession, &end.to_plaintext())
    }

    /// Seals raw content of a given kind. Prefer [`Self::seal_segment`] and [`Self::seal_end`].
    pub fn seal(&mut self, kind: FrameKind, content: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let seq = self.next_seq;
        let next_seq = seq.checked_add(1).ok_or(ProtocolError::SequenceExhausted)?;
        let final_count = self.final_count + u64::from(kind.counts_as_final());
        let bucket = bucket_for(content.len())?;
        let header = FrameHeader {
            kind,
            bucket,
            key_epoch: self.key_epoch,
            session_id: self.session_id,
            stream_id: self.stream_id,
            seq,
            final_count,
            prev_hash: self.prev_hash,
        };
        let header_bytes = header.encode();
        let plaintext = pad(content, bucket)?;

        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_for_seq(seq)),
                Payload {
                    msg: &plaintext,
                    aad: &header_bytes,
                },
            )
            .map_err(|_| ProtocolError::Decrypt)?;

        let mut frame = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        frame.extend_from_slice(&header_bytes);
        frame.extend_from_slice(&ciphertext);

        self.next_seq = next_seq;
        self.final_count = final_count;
        self.prev_hash = frame_hash(&frame);
        Ok(frame)
    }
}

impl std::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("session_id", &self.session_id)
            .field("stream_id", &self.stream_id)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// A frame that opened successfully.
#[derive(Debug, Clone)]
pub struct OpenedFrame {
    /// The authenticated header.
    pub header: FrameHeader,
    /// The plaintext content with padding removed.
    pub content: Vec<u8>,
    /// Frames of this stream between the previous opened frame and this one
    /// that this receiver never saw.
    pub skipped_frames: u64,
    /// How many of those skipped frames were final: a non-zero value is a gap
    /// in the transcript, not just a dropped interim revision.
    pub skipped_final: u64,
    /// Whether `prev_hash` matched the previous frame. `None` when that frame
    /// was skipped, so the link could not be checked.
    pub chain_verified: Option<bool>,
}

impl OpenedFrame {
    /// Parses the content as a transcript segment.
    pub fn segment(&self) -> Result<TranscriptSegment, ProtocolError> {
        TranscriptSegment::from_plaintext(&self.content)
    }
}

/// State an opener keeps for one stream: its cipher and the latest frame it opened.
struct StreamState {
    cipher: Aes256Gcm,
    latest_seq: Option<u64>,
    latest_final_count: u64,
    latest_hash: [u8; 32],
}

impl StreamState {
    fn new(key: &SessionKey, session_id: &SessionId, stream_id: &StreamId) -> Self {
        let stream_key = key.derive_stream_key(session_id, stream_id);
        StreamState {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(stream_key.expose_bytes())),
            latest_seq: None,
            latest_final_count: 0,
            latest_hash: [0; 32],
        }
    }

    /// Opens a frame of this stream and records it as the latest, leaving the
    /// state unchanged when the frame is rejected.
    fn open(&mut self, header: FrameHeader, frame: &[u8]) -> Result<OpenedFrame, ProtocolError> {
        check_order(self, &header)?;

        let padded = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce_for_seq(header.seq)),
                Payload {
                    msg: &frame[HEADER_LEN..],
                    aad: &frame[..HEADER_LEN],
                },
            )
            .map_err(|_| ProtocolError::Decrypt)?;
        let content = unpad(&padded)?.to_vec();

        let (skipped_frames, skipped_final, chain_verified) = self.account(&header);
        self.latest_seq = Some(header.seq);
        self.latest_final_count = header.final_count;
        self.latest_hash = frame_hash(frame);
        Ok(OpenedFrame {
            header,
            content,
            skipped_frames,
            skipped_final,
            chain_verified,
        })
    }

    /// Counts the frames and final frames skipped between the latest opened
    /// frame and this one, and checks the hash chain link when there is no gap.
    fn account(&self, header: &FrameHeader) -> (u64, u64, Option<bool>) {
        let expected_prev_seq = header.seq.checked_sub(1);
        let (skipped_frames, prior_final, chain_verified) =
            match (self.latest_seq, expected_prev_seq) {
                (None, None) => (0, 0, Some(header.prev_hash == [0; 32])),
                (None, Some(prev)) => (prev + 1, 0, None),
                (Some(latest), Some(prev)) if latest == prev => (
                    0,
                    self.latest_final_count,
                    Some(header.prev_hash == self.latest_hash),
                ),
                (Some(latest), _) => (header.seq - latest - 1, self.latest_final_count, None),
            };
        let this_final = u64::from(header.kind.counts_as_final());
        let skipped_final = header
            .final_count
            .saturating_sub(prior_final)
            .saturating_sub(this_final);
        (skipped_frames, skipped_final, chain_verified)
    }
}

/// Opens frames of every stream of one session, rejecting frames of another
/// session, replays and reordering.
pub struct StreamOpener {
    key: SessionKey,
    session_id: SessionId,
    streams: HashMap<StreamId, StreamState>,
}

impl StreamOpener {
    /// Creates an opener for a session.
    pub fn new(key: SessionKey, session_id: SessionId) -> Self {
        StreamOpener {
            key,
            session_id,
            streams: HashMap::new(),
        }
    }

    /// Returns the session this opener serves.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Whether a frame with this header was already opened, or an earlier one
    /// of its stream was. A resuming receiver uses it to skip, without error,
    /// frames the relay sends again.
    pub fn already_seen(&self, header: &FrameHeader) -> bool {
        self.streams
            .get(&header.stream_id)
            .and_then(|state| state.latest_seq)
            .is_some_and(|latest| header.seq <= latest)
    }

    /// Opens one frame: decodes and checks the header, rejects another
    /// session's frames, replays and reordering, then authenticates and
    /// decrypts, and removes the padding.
    pub fn open(&mut self, frame: &[u8]) -> Result<OpenedFrame, ProtocolError> {
        let header = FrameHeader::decode_frame(frame)?;
        if header.session_id != self.session_id {
            return Err(ProtocolError::WrongSession {
                expected: self.session_id.to_string(),
                found: header.session_id.to_string(),
            });
        }

        // A stream is kept only once one of its frames has opened, so frames
        // that fail to open, forged ones included, cannot grow the map.
        let stream_id = header.stream_id;
        let mut state = match self.streams.remove(&stream_id) {
            Some(state) => state,
            None => StreamState::new(&self.key, &self.session_id, &stream_id),
        };
        let opened = state.open(header, frame);
        if state.latest_seq.is_some() {
            self.streams.insert(stream_id, state);
        }
        opened
    }
}

fn check_order(state: &StreamState, header: &FrameHeader) -> Result<(), ProtocolError> {
    match state.latest_seq {
        Some(latest) if header.seq == latest => Err(ProtocolError::Replay {
            stream: header.stream_id.to_string(),
            seq: header.seq,
        }),
        Some(latest) if header.seq < latest => Err(ProtocolError::Reordered {
            stream: header.stream_id.to_string(),
            seq: header.seq,
            latest,
        }),
        _ => Ok(()),
    }
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("session_id", &self.session_id)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_frame_leaves_no_stream() {
        let session = SessionId([2; 16]);
        let stream = StreamId([3; 16]);
        let mut forger =
            StreamSealer::with_stream_id(&SessionKey::from_bytes([9; 32]), session, stream);
        let forged = forger.seal(FrameKind::Final, b"forged").unwrap();
        let mut opener = StreamOpener::new(SessionKey::from_bytes([1; 32]), session);

        assert_eq!(opener.open(&forged).unwrap_err(), ProtocolError::Decrypt);
        assert!(opener.streams.is_empty());
        assert!(!opener.already_seen(&FrameHeader::decode(&forged).unwrap()));
    }

    #[test]
    fn rejected_frame_keeps_stream_state() {
        let key = SessionKey::from_bytes([1; 32]);
        let session = SessionId([2; 16]);
        let mut sealer = StreamSealer::with_stream_id(&key, session, StreamId([3; 16]));
        let first = sealer.seal(FrameKind::Final, b"first").unwrap();
        let mut second = sealer.seal(FrameKind::Final, b"second").unwrap();
        let mut opener = StreamOpener::new(key, session);
        opener.open(&first).unwrap();

        let last = second.len() - 1;
        second[last] ^= 1;
        assert_eq!(opener.open(&second).unwrap_err(), ProtocolError::Decrypt);
        second[last] ^= 1;
        let opened = opener.open(&second).unwrap();
        assert_eq!(opened.chain_verified, Some(true));
        assert_eq!(opened.skipped_frames, 0);
    }
}

//! Sealing a stream signed by the publishing device.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};

use super::{
    AuthorshipError, Endorsement, PublisherKey, SignedContent, Statement, CHECKPOINT_INTERVAL,
};
use crate::dpop::DeviceKey;
use crate::frame::{frame_hash, StreamSealer};
use crate::header::{FrameHeader, FrameKind};
use crate::ids::{SessionId, StreamId};
use crate::keys::SessionKey;
use crate::segment::TranscriptSegment;

/// Seals one stream and signs it with the device identity key: a checkpoint
/// after every [`CHECKPOINT_INTERVAL`] frames, and a signed end.
pub struct AuthoredStream {
    sealer: StreamSealer,
    signing: SigningKey,
    session_id: SessionId,
    key_epoch: u32,
    final_count: u64,
    prev_hash: [u8; 32],
    first_unsigned: u64,
    unsigned_hashes: Vec<[u8; 32]>,
    closed: bool,
    endorsement: Option<Endorsement>,
}

impl AuthoredStream {
    /// Starts a stream with a fresh random id, signed by `device`.
    pub fn new(
        key: &SessionKey,
        session_id: SessionId,
        key_epoch: u32,
        device: &DeviceKey,
    ) -> Self {
        Self::with_stream_id(
            key,
            session_id,
            StreamId::random(),
            key_epoch,
            &device.secret_bytes(),
        )
    }

    /// Starts a stream with a given id and Ed25519 secret key, for test vectors.
    pub fn with_stream_id(
        key: &SessionKey,
        session_id: SessionId,
        stream_id: StreamId,
        key_epoch: u32,
        signing_secret: &[u8; 32],
    ) -> Self {
        let sealer =
            StreamSealer::with_stream_id(key, session_id, stream_id).with_key_epoch(key_epoch);
        AuthoredStream {
            sealer,
            signing: SigningKey::from_bytes(signing_secret),
            session_id,
            key_epoch,
            final_count: 0,
            prev_hash: [0; 32],
            first_unsigned: 0,
            unsigned_hashes: Vec::new(),
            closed: false,
            endorsement: None,
        }
    }

    /// Adds an endorsement of this stream's signing key to every checkpoint
    /// and signed end, for a device whose key followers do not hold. Fails
    /// when the endorsement names another key than the signing key.
    pub fn with_endorsement(mut self, endorsement: Endorsement) -> Result<Self, AuthorshipError> {
        if endorsement.device != self.signing_key() {
            return Err(AuthorshipError::InvalidEndorsement(
                "it names another key than the one that signs the stream",
            ));
        }
        self.endorsement = Some(endorsement);
        Ok(self)
    }

    /// Returns the key followers hold to check this stream: the endorsing
    /// device's key for an endorsed stream, else the signing key.
    pub fn publisher_key(&self) -> PublisherKey {
        match &self.endorsement {
            Some(endorsement) => endorsement.endorser,
            None => self.signing_key(),
        }
    }

    /// Returns the public key of the key that signs this stream.
    pub fn signing_key(&self) -> PublisherKey {
        PublisherKey::of_verifying_key(&self.signing.verifying_key())
    }

    /// This stream's id.
    pub fn stream_id(&self) -> StreamId {
        self.sealer.stream_id()
    }

    /// Seals a segment, followed by a checkpoint when one is due. Publish the
    /// returned frames in order.
    pub fn seal_segment(
        &mut self,
        segment: &TranscriptSegment,
    ) -> Result<Vec<Vec<u8>>, AuthorshipError> {
        self.check_open()?;
        let frame = self.sealer.seal_segment(segment)?;
        self.record(&frame)?;
        let mut frames = vec![frame];
        if self.unsigned_hashes.len() >= CHECKPOINT_INTERVAL {
            frames.push(self.seal_checkpoint(false)?);
        }
        Ok(frames)
    }

    /// Seals a checkpoint now, for example before a pause in speech. With
    /// `stream_end` it closes the stream without ending the session, as
    /// before a key rotation moves publishing to a new stream.
    pub fn seal_checkpoint(&mut self, stream_end: bool) -> Result<Vec<u8>, AuthorshipError> {
        self.seal_signed(FrameKind::Checkpoint, stream_end, None)
    }

    /// Seals the signed end-of-session frame, which closes the stream.
    pub fn seal_end(&mut self, final_segments: u64) -> Result<Vec<u8>, AuthorshipError> {
        self.seal_signed(FrameKind::EndOfSession, true, Some(final_segments))
    }

    fn seal_signed(
        &mut self,
        kind: FrameKind,
        closes_stream: bool,
        final_segments: Option<u64>,
    ) -> Result<Vec<u8>, AuthorshipError> {
        self.check_open()?;
        let header = FrameHeader {
            kind,
            bucket: 0,
            key_epoch: self.key_epoch,
            session_id: self.session_id,
            stream_id: self.sealer.stream_id(),
            seq: self.sealer.next_seq(),
            final_count: self.final_count + u64::from(kind.counts_as_final()),
            prev_hash: self.prev_hash,
        };
        let statement = Statement {
            header,
            first_seq: self.first_unsigned,
            closes_stream,
            frame_hashes: std::mem::take(&mut self.unsigned_hashes),
        };
        let signature = self.signing.sign(&statement.to_bytes());
        let content = SignedContent {
            final_segments,
            first_seq: statement.first_seq,
            frames: URL_SAFE_NO_PAD.encode(statement.frame_hashes.concat()),
            stream_end: closes_stream,
            signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            endorsement: self.endorsement.as_ref().map(Endorsement::to_content),
        };

        let frame = match self.sealer.seal(kind, &content.to_plaintext()) {
            Ok(frame) => frame,
            Err(err) => {
                self.unsigned_hashes = statement.frame_hashes;
                return Err(err.into());
            }
        };
        self.record(&frame)?;
        self.unsigned_hashes.clear();
        self.first_unsigned = statement.header.seq + 1;
        self.closed = closes_stream;
        Ok(frame)
    }

    /// Follows the chain state of a frame the sealer returned.
    fn record(&mut self, frame: &[u8]) -> Result<(), AuthorshipError> {
        let header = FrameHeader::decode(frame)?;
        self.final_count = header.final_count;
        self.prev_hash = frame_hash(frame);
        self.unsigned_hashes.push(self.prev_hash);
        Ok(())
    }

    fn check_open(&self) -> Result<(), AuthorshipError> {
        if self.closed {
            return Err(AuthorshipError::StreamClosed);
        }
        Ok(())
    }
}

impl fmt::Debug for AuthoredStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthoredStream")
            .field("sealer", &self.sealer)
            .field("publisher", &self.publisher_key())
            .field("signing_key", &self.signing_key())
            .finish_non_exhaustive()
    }
}

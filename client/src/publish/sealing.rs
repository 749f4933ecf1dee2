//! The sealer behind a [`super::Publisher`]: plain frames, or frames of a
//! stream that the device identity key signs with checkpoints and a signed
//! end (docs/protocol.md, section 13).

use sealcast_protocol::authorship::{AuthoredStream, AuthorshipError, Endorsement, PublisherKey};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{
    EndOfSession, FrameHeader, SessionId, SessionKey, StreamId, StreamSealer, TranscriptSegment,
};

use crate::error::ClientError;

/// A sealed frame and its sequence number.
pub(crate) type SealedFrame = (u64, Vec<u8>);

/// The sealer of one stream.
#[derive(Debug)]
pub(crate) enum StreamSealing {
    /// Frames sealed with the session key only: followers cannot tell which
    /// holder of the key sealed them.
    Plain {
        sealer: Box<StreamSealer>,
        final_segments: u64,
    },
    /// Frames signed by the device identity key.
    Authored {
        stream: Box<AuthoredStream>,
        final_segments: u64,
        closed: bool,
    },
}

impl StreamSealing {
    /// Starts a stream with a fresh random id under the key of `key_epoch`,
    /// signed by `identity` when given.
    pub(crate) fn new(
        key: &SessionKey,
        session_id: SessionId,
        key_epoch: u32,
        identity: Option<&DeviceKey>,
    ) -> Self {
        match identity {
            Some(device) => StreamSealing::Authored {
                stream: Box::new(AuthoredStream::new(key, session_id, key_epoch, device)),
                final_segments: 0,
                closed: false,
            },
            None => StreamSealing::Plain {
                sealer: Box::new(StreamSealer::new(key, session_id).with_key_epoch(key_epoch)),
                final_segments: 0,
            },
        }
    }

    /// Adds the endorsement of the signing key by the device that started
    /// the session, on a device that took the session over. Fails for plain
    /// frames and for an endorsement of another key.
    pub(crate) fn with_endorsement(
        self,
        endorsement: Option<Endorsement>,
    ) -> Result<Self, ClientError> {
        let Some(endorsement) = endorsement else {
            return Ok(self);
        };
        match self {
            StreamSealing::Plain { .. } => Err(ClientError::Internal(
                "an endorsed session needs the device identity key to sign its stream".into(),
            )),
            StreamSealing::Authored {
                stream,
                final_segments,
                closed,
            } => {
                let stream = stream
                    .with_endorsement(endorsement)
                    .map_err(|err| ClientError::Internal(format!(
                        "the stored endorsement does not fit this device: {err}; pair this device again with `sealcast pair adopt`"
                    )))?;
                Ok(StreamSealing::Authored {
                    stream: Box::new(stream),
                    final_segments,
                    closed,
                })
            }
        }
    }

    pub(crate) fn stream_id(&self) -> StreamId {
        match self {
            StreamSealing::Plain { sealer, .. } => sealer.stream_id(),
            StreamSealing::Authored { stream, .. } => stream.stream_id(),
        }
    }

    /// Returns the key followers check this stream with, or `None` for
    /// plain frames: the endorsing device's key for an endorsed stream.
    pub(crate) fn publisher_key(&self) -> Option<PublisherKey> {
        match self {
            StreamSealing::Plain { .. } => None,
            StreamSealing::Authored { stream, .. } => Some(stream.publisher_key()),
        }
    }

    /// Returns the key that signs this stream, or `None` for plain frames.
    pub(crate) fn signing_key(&self) -> Option<PublisherKey> {
        match self {
            StreamSealing::Plain { .. } => None,
            StreamSealing::Authored { stream, .. } => Some(stream.signing_key()),
        }
    }

    /// Seals a segment. A signed stream adds a checkpoint after every
    /// [`sealcast_protocol::authorship::CHECKPOINT_INTERVAL`] frames, so
    /// one or two frames come back, to be sent in order.
    pub(crate) fn seal_segment(
        &mut self,
        segment: &TranscriptSegment,
    ) -> Result<Vec<SealedFrame>, ClientError> {
        let frames = match self {
            StreamSealing::Plain {
                sealer,
                final_segments,
            } => {
                let seq = sealer.next_seq();
                let frame = sealer.seal_segment(segment)?;
                *final_segments += u64::from(segment.is_final);
                return Ok(vec![(seq, frame)]);
            }
            StreamSealing::Authored {
                stream,
                final_segments,
                ..
            } => {
                let frames = stream.seal_segment(segment).map_err(authorship_error)?;
                *final_segments += u64::from(segment.is_final);
                frames
            }
        };
        frames.into_iter().map(with_seq).collect()
    }

    /// Seals the end-of-session frame, signed in a signed stream. It states
    /// how many final segments the stream carried.
    pub(crate) fn seal_end(&mut self) -> Result<SealedFrame, ClientError> {
        match self {
            StreamSealing::Plain {
                sealer,
                final_segments,
            } => {
                let seq = sealer.next_seq();
                let end = EndOfSession {
                    final_segments: *final_segments,
                };
                Ok((seq, sealer.seal_end(&end)?))
            }
            StreamSealing::Authored {
                stream,
                final_segments,
                closed,
            } => {
                let frame = stream.seal_end(*final_segments).map_err(authorship_error)?;
                *closed = true;
                with_seq(frame)
            }
        }
    }

    /// Seals a checkpoint that closes a signed stream without ending the
    /// session, so a follower can check that nothing of it is missing.
    /// Returns `None` for plain frames and for a stream already closed.
    pub(crate) fn seal_close(&mut self) -> Result<Option<SealedFrame>, ClientError> {
        match self {
            StreamSealing::Authored { closed: true, .. } | StreamSealing::Plain { .. } => Ok(None),
            StreamSealing::Authored { stream, closed, .. } => {
                let frame = stream.seal_checkpoint(true).map_err(authorship_error)?;
                *closed = true;
                with_seq(frame).map(Some)
            }
        }
    }
}

/// Pairs a frame the sealer returned with the sequence number in its header.
fn with_seq(frame: Vec<u8>) -> Result<SealedFrame, ClientError> {
    let header = FrameHeader::decode(&frame)?;
    Ok((header.seq, frame))
}

fn authorship_error(err: AuthorshipError) -> ClientError {
    match err {
        AuthorshipError::Protocol(err) => ClientError::Seal(err),
        other => ClientError::Internal(format!("failed to sign the stream: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::authorship::{AuthorshipVerifier, Verdict, CHECKPOINT_INTERVAL};
    use sealcast_protocol::StreamOpener;

    use super::*;

    const SESSION: SessionId = SessionId([4; 16]);

    fn segment(id: u64) -> TranscriptSegment {
        TranscriptSegment {
            segment_id: id,
            revision: 0,
            speaker: "doctor".into(),
            start_ms: id * 1000,
            end_ms: id * 1000 + 900,
            text: format!("segment {id}"),
            is_final: true,
        }
    }

    /// Opens `frames` in order and returns the verdict of their stream.
    fn verdict_of(frames: &[SealedFrame], publisher: PublisherKey) -> Verdict {
        let key = SessionKey::from_bytes([5; 32]);
        let mut opener = StreamOpener::new(key, SESSION);
        let mut verifier = AuthorshipVerifier::new(Some(publisher));
        let mut stream_id = None;
        for (_, frame) in frames {
            let opened = opener.open(frame).unwrap();
            stream_id = Some(opened.header.stream_id);
            verifier.observe(frame, &opened);
        }
        verifier.verdict(&stream_id.unwrap()).unwrap()
    }

    #[test]
    fn authored_stream_adds_checkpoints_and_numbers_frames() {
        let key = SessionKey::from_bytes([5; 32]);
        let device = DeviceKey::generate().unwrap();
        let mut sealing = StreamSealing::new(&key, SESSION, 0, Some(&device));
        let mut frames = Vec::new();
        for id in 0..CHECKPOINT_INTERVAL as u64 {
            frames.extend(sealing.seal_segment(&segment(id)).unwrap());
        }
        // The sixteenth segment brings the checkpoint that signs the first sixteen frames.
        assert_eq!(frames.len(), CHECKPOINT_INTERVAL + 1);
        let seqs: Vec<u64> = frames.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = (0..=CHECKPOINT_INTERVAL as u64).collect();
        assert_eq!(seqs, expected);

        frames.push(sealing.seal_end().unwrap());
        let publisher = PublisherKey::of_device(&device);
        assert_eq!(sealing.publisher_key(), Some(publisher));
        assert_eq!(
            verdict_of(&frames, publisher),
            Verdict::Complete {
                publisher,
                endorsed_by: None
            }
        );
    }

    #[test]
    fn close_after_end_seals_nothing() {
        let key = SessionKey::from_bytes([5; 32]);
        let device = DeviceKey::generate().unwrap();
        let mut sealing = StreamSealing::new(&key, SESSION, 0, Some(&device));
        sealing.seal_segment(&segment(0)).unwrap();
        sealing.seal_end().unwrap();
        assert!(sealing.seal_close().unwrap().is_none());
    }

    #[test]
    fn closing_checkpoint_completes_a_stream() {
        let key = SessionKey::from_bytes([5; 32]);
        let device = DeviceKey::generate().unwrap();
        let mut sealing = StreamSealing::new(&key, SESSION, 0, Some(&device));
        let mut frames = sealing.seal_segment(&segment(0)).unwrap();
        frames.push(sealing.seal_close().unwrap().unwrap());
        let publisher = PublisherKey::of_device(&device);
        assert_eq!(
            verdict_of(&frames, publisher),
            Verdict::Complete {
                publisher,
                endorsed_by: None
            }
        );
        assert!(sealing.seal_close().unwrap().is_none());
    }

    #[test]
    fn stream_of_a_later_epoch_carries_it_in_every_header() {
        let key = SessionKey::from_bytes([6; 32]);
        let device = DeviceKey::generate().unwrap();
        for identity in [Some(&device), None] {
            let mut sealing = StreamSealing::new(&key, SESSION, 3, identity);
            let mut frames = sealing.seal_segment(&segment(0)).unwrap();
            frames.push(sealing.seal_end().unwrap());
            for (_, frame) in &frames {
                assert_eq!(FrameHeader::decode(frame).unwrap().key_epoch, 3);
            }
        }
    }

    #[test]
    fn plain_stream_has_no_publisher_and_no_close() {
        let key = SessionKey::from_bytes([5; 32]);
        let mut sealing = StreamSealing::new(&key, SESSION, 0, None);
        assert_eq!(sealing.seal_segment(&segment(0)).unwrap().len(), 1);
        assert_eq!(sealing.publisher_key(), None);
        assert!(sealing.seal_close().unwrap().is_none());
        assert_eq!(sealing.seal_end().unwrap().0, 1);
    }

    #[test]
    fn endorsed_stream_verifies_under_the_first_device() {
        let key = SessionKey::from_bytes([5; 32]);
        let first = DeviceKey::generate().unwrap();
        let second = DeviceKey::generate().unwrap();
        let second_key = PublisherKey::of_device(&second);
        let endorsement = Endorsement::sign(&first, &SESSION, 0, second_key);
        let mut sealing = StreamSealing::new(&key, SESSION, 0, Some(&second))
            .with_endorsement(Some(endorsement))
            .unwrap();
        let first_key = PublisherKey::of_device(&first);
        assert_eq!(sealing.publisher_key(), Some(first_key));
        let mut frames = sealing.seal_segment(&segment(0)).unwrap();
        frames.push(sealing.seal_end().unwrap());
        assert_eq!(
            verdict_of(&frames, first_key),
            Verdict::Complete {
                publisher: second_key,
                endorsed_by: Some(first_key)
            }
        );
    }

    #[test]
    fn endorsement_needs_a_signed_stream_of_its_key() {
        let key = SessionKey::from_bytes([5; 32]);
        let first = DeviceKey::generate().unwrap();
        let second = DeviceKey::generate().unwrap();
        let endorsement = Endorsement::sign(&first, &SESSION, 0, PublisherKey::of_device(&second));
        let plain = StreamSealing::new(&key, SESSION, 0, None).with_endorsement(Some(endorsement));
        assert!(plain.is_err());
        let other =
            StreamSealing::new(&key, SESSION, 0, Some(&first)).with_endorsement(Some(endorsement));
        assert!(other.is_err());
    }
}

//! The state a follower keeps between messages: the fingerprint check, the frame
//! opener with the keys of every epoch it was given, the authorship
//! verifier, resume offsets, the resume overlap and the frames held until
//! their epoch's key arrives. No I/O, so every rule here is tested without
//! a network.

use std::collections::VecDeque;

use sealcast_protocol::authorship::{AuthorshipVerifier, Observed, PublisherKey};
use sealcast_protocol::rotation::{EpochError, EpochOpener};
use sealcast_protocol::{
    EndOfSession, Fingerprint, FrameHeader, FrameKind, OpenedFrame, SessionId, SessionKey, StreamId,
};

use super::{FollowEvent, FollowReport};
use crate::error::ClientError;

/// Bytes of frames held for a key epoch whose key has not arrived. Frames
/// beyond it are dropped and stay unreadable even if the key arrives later.
/// NOTE: 16 MiB is an estimate: tens of thousands of frames of the smallest
/// padding bucket, far more than a consultation sends between a rotation
/// and the new link reaching a follower.
pub(crate) const MAX_HELD_BYTES: usize = 16 << 20;

/// A frame of a key epoch this follower has no key of yet.
#[derive(Debug)]
struct HeldFrame {
    offset: u64,
    key_epoch: u32,
    stream_id: StreamId,
    seq: u64,
    frame: Vec<u8>,
}

/// A follower's state across connections.
#[derive(Debug)]
pub(crate) struct FollowState {
    /// The link's key and its epoch.
    key: SessionKey,
    key_epoch: u32,
    /// Keys of other epochs given before the welcome, oldest first.
    pending_keys: Vec<(u32, SessionKey)>,
    opener: Option<EpochOpener>,
    /// Frames that failed to open for lack of their epoch's key, in offset order.
    held: VecDeque<HeldFrame>,
    held_bytes: usize,
    /// Frames of a missing epoch dropped because `held` was full.
    unreadable_dropped: u64,
    /// Checks every opened frame against the publisher key of the link.
    verifier: AuthorshipVerifier,
    publisher: Option<PublisherKey>,
    session_id: Option<SessionId>,
    epoch: Option<u64>,
    last_received: Option<u64>,
    last_committed: Option<u64>,
    /// Highest offset received before the current reconnect. Deliveries up to
    /// it may repeat frames already opened, which are skipped without error.
    overlap_end: Option<u64>,
    connections: u32,
    report: FollowReport,
}

impl FollowState {
    /// Creates the state for a link with `key` of `key_epoch` and, when the
    /// link carries one, the publisher key that streams are checked against.
    pub(crate) fn new(key: SessionKey, key_epoch: u32, publisher: Option<PublisherKey>) -> Self {
        FollowState {
            key,
            key_epoch,
            pending_keys: Vec::new(),
            opener: None,
            held: VecDeque::new(),
            held_bytes: 0,
            unreadable_dropped: 0,
            verifier: AuthorshipVerifier::new(publisher),
            publisher,
            session_id: None,
            epoch: None,
            last_received: None,
            last_committed: None,
            overlap_end: None,
            connections: 0,
            report: FollowReport::default(),
        }
    }

    /// Returns the epoch to send when reconnecting, once known.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Returns the offset to resume from: the one after the last received frame, or
    /// after the last committed one when that is lower, because frames after
    /// the last commit may be delivered again after a relay crash.
    pub(crate) fn resume_from(&self) -> u64 {
        let after = |offset: Option<u64>| offset.map_or(0, |offset| offset.saturating_add(1));
        after(self.last_received).min(after(self.last_committed))
    }

    /// Marks the start of a reconnect: what arrives up to the last received
    /// offset is the resume overlap.
    pub(crate) fn begin_reconnect(&mut self) {
        self.overlap_end = self.last_received;
        self.report.reconnects += 1;
    }

    /// Checks the relay's welcome. The fingerprint is compared before any
    /// frame is opened, so a wrong key is reported as such and not as
    /// frames that fail to decrypt. The relay stores the fingerprint of the
    /// epoch 0 key only, so a follower that started with the key of a later
    /// epoch skips the comparison (docs/protocol.md, section 14.2).
    pub(crate) fn welcome(
        &mut self,
        session_id: SessionId,
        epoch: u64,
        fingerprint: &str,
        from_offset: u64,
        ended: bool,
    ) -> Result<FollowEvent, ClientError> {
        let relay_fingerprint = Fingerprint::from_base64url(fingerprint).ok_or_else(|| {
            ClientError::ProtocolViolation(format!(
                "welcome fingerprint {fingerprint:?} is not 16 bytes of base64url"
            ))
        })?;
        if self.key_epoch == 0 && relay_fingerprint != self.key.fingerprint() {
            return Err(ClientError::KeyMismatch);
        }

        if let Some(known) = self.session_id.filter(|known| *known != session_id) {
            return Err(ClientError::ProtocolViolation(format!(
                "welcome names session {session_id}, but this invite followed session {known}"
            )));
        }
        if self.epoch.is_some_and(|known| known != epoch) {
            return Err(ClientError::CannotRecover);
        }

        let requested = self.resume_from();
        if from_offset != requested {
            tracing::warn!(%session_id, requested, from_offset, "relay resumes at another offset than requested");
        }
        self.session_id = Some(session_id);
        self.epoch = Some(epoch);
        self.report.session_id = Some(session_id);
        if self.opener.is_none() {
            self.opener = Some(self.make_opener(session_id));
        }
        self.connections += 1;

        Ok(FollowEvent::Connected {
            session_id,
            epoch,
            from_offset,
            session_ended: ended,
            resumed: self.connections > 1,
        })
    }

    fn make_opener(&mut self, session_id: SessionId) -> EpochOpener {
        let mut opener = EpochOpener::new(self.key.clone(), session_id, self.key_epoch);
        for (key_epoch, key) in std::mem::take(&mut self.pending_keys) {
            // The opener rejects only a key older than the epoch before the
            // link's, and such a key could open no frame.
            if let Err(err) = opener.add_key(key_epoch, key) {
                tracing::warn!(key_epoch, error = %err, "ignoring a key given before the welcome");
            }
        }
        opener
    }

    /// Adds the key of another key epoch, then opens the held frames of
    /// that epoch in offset order and returns their events after
    /// [`FollowEvent::KeyAdded`].
    pub(crate) fn add_key(&mut self, key_epoch: u32, key: SessionKey) -> Vec<FollowEvent> {
        let Some(opener) = self.opener.as_mut() else {
            self.pending_keys.push((key_epoch, key));
            return vec![FollowEvent::KeyAdded {
                key_epoch,
                frames_opened: 0,
            }];
        };
        if let Err(err) = opener.add_key(key_epoch, key) {
            return vec![FollowEvent::KeyRejected {
                key_epoch,
                reason: err.to_string(),
            }];
        }

        let (ready, waiting): (VecDeque<HeldFrame>, VecDeque<HeldFrame>) =
            std::mem::take(&mut self.held)
                .into_iter()
                .partition(|held| held.key_epoch == key_epoch);
        self.held = waiting;
        self.held_bytes = self.held.iter().map(|held| held.frame.len()).sum();

        let mut events = vec![FollowEvent::KeyAdded {
            key_epoch,
            frames_opened: ready.len() as u64,
        }];
        for held in ready {
            events.extend(self.open_frame(held.offset, &held.frame));
        }
        events
    }

    /// Records a `committed` event.
    pub(crate) fn committed(&mut self, offset: u64) {
        self.last_committed = Some(self.last_committed.map_or(offset, |last| last.max(offset)));
    }

    /// Opens one delivered frame and returns what it changes.
    pub(crate) fn delivery(
        &mut self,
        offset: u64,
        frame: &[u8],
    ) -> Result<Vec<FollowEvent>, ClientError> {
        if self.opener.is_none() {
            return Err(ClientError::ProtocolViolation(
                "a frame arrived before the welcome".into(),
            ));
        }

        let in_overlap = self.overlap_end.is_some_and(|end| offset <= end);
        if !in_overlap {
            self.overlap_end = None;
        }
        self.last_received = Some(self.last_received.map_or(offset, |last| last.max(offset)));
        self.report.last_offset = self.last_received;

        let header = match FrameHeader::decode_frame(frame) {
            Ok(header) => header,
            Err(err) => return Ok(vec![self.reject(offset, err.to_string())]),
        };
        let opened_before = self
            .opener
            .as_ref()
            .is_some_and(|opener| opener.already_seen(&header));
        if in_overlap && (opened_before || self.is_held(&header)) {
            self.report.duplicates_skipped += 1;
            return Ok(Vec::new());
        }
        Ok(self.open_frame(offset, frame))
    }

    /// Opens a frame whose header decodes, holding it when its epoch's key is missing.
    fn open_frame(&mut self, offset: u64, frame: &[u8]) -> Vec<FollowEvent> {
        let Some(opener) = self.opener.as_mut() else {
            return vec![self.reject(offset, "a frame arrived before the welcome".into())];
        };
        match opener.open(frame) {
            Ok(opened) => self.apply(offset, frame, opened),
            Err(EpochError::UnknownEpoch(key_epoch)) => vec![self.hold(offset, key_epoch, frame)],
            Err(err) => vec![self.reject(offset, err.to_string())],
        }
    }

    fn is_held(&self, header: &FrameHeader) -> bool {
        self.held
            .iter()
            .any(|held| held.stream_id == header.stream_id && held.seq == header.seq)
    }

    /// Keeps a frame of a key epoch without a key, while there is room, and
    /// reports it as unreadable.
    fn hold(&mut self, offset: u64, key_epoch: u32, frame: &[u8]) -> FollowEvent {
        let header = FrameHeader::decode_frame(frame);
        let stream_id = header.as_ref().map(|header| header.stream_id).ok();
        match header {
            Ok(header) if self.held_bytes + frame.len() <= MAX_HELD_BYTES => {
                self.held_bytes += frame.len();
                self.held.push_back(HeldFrame {
                    offset,
                    key_epoch,
                    stream_id: header.stream_id,
                    seq: header.seq,
                    frame: frame.to_vec(),
                });
            }
            _ => self.unreadable_dropped += 1,
        }
        tracing::debug!(offset, key_epoch, "frame of a key epoch without a key");
        FollowEvent::FrameUnreadable {
            offset,
            key_epoch,
            stream_id,
        }
    }

    /// Returns the summary so far, with the authorship verdict of every
    /// stream as it stands now.
    pub(crate) fn report(&self) -> FollowReport {
        let mut report = self.report.clone();
        report.frames_unreadable = self.unreadable_dropped + self.held.len() as u64;
        report.publisher = self.publisher;
        report.streams = self.verifier.verdicts();
        report
    }

    /// Returns one [`FollowEvent::StreamVerdict`] per stream seen, in stream id order.
    pub(crate) fn verdict_events(&self) -> Vec<FollowEvent> {
        self.verifier
            .verdicts()
            .into_iter()
            .map(|(stream_id, verdict)| FollowEvent::StreamVerdict { stream_id, verdict })
            .collect()
    }

    fn apply(&mut self, offset: u64, frame: &[u8], opened: OpenedFrame) -> Vec<FollowEvent> {
        let stream_id = opened.header.stream_id;
        let mut events = Vec::new();
        // Every opened frame goes to the verifier, including those rejected
        // below, so that a frame the publisher did not sign shows up as unverified.
        if let Observed::Rejected(err) = self.verifier.observe(frame, &opened) {
            events.push(FollowEvent::SignatureRejected {
                offset,
                stream_id,
                seq: opened.header.seq,
                reason: err.to_string(),
            });
        }
        if opened.skipped_final > 0 {
            self.report.missing_final_frames += opened.skipped_final;
            events.push(FollowEvent::Gap {
                offset,
                stream_id,
                missing_final_frames: opened.skipped_final,
            });
        }
        if opened.chain_verified == Some(false) {
            events.push(self.reject(
                offset,
                "the frame's previous-frame hash does not match the frame before it".into(),
            ));
            return events;
        }

        let event = match opened.header.kind {
            FrameKind::Interim | FrameKind::Final => self.segment_event(offset, &opened),
            FrameKind::Checkpoint => {
                // The verifier above checked its signature, and it carries
                // no transcript text to show.
                self.report.frames_opened += 1;
                return events;
            }
            FrameKind::EndOfSession => match EndOfSession::from_plaintext(&opened.content) {
                Ok(end) => {
                    self.report.end_of_session = true;
                    FollowEvent::EndOfSession {
                        offset,
                        stream_id,
                        final_segments: end.final_segments,
                    }
                }
                Err(_) => self.reject(
                    offset,
                    "the decrypted end-of-session frame is not valid JSON".into(),
                ),
            },
        };
        if !matches!(event, FollowEvent::FrameRejected { .. }) {
            self.report.frames_opened += 1;
        }
        events.push(event);
        events
    }

    fn segment_event(&mut self, offset: u64, opened: &OpenedFrame) -> FollowEvent {
        let stream_id = opened.header.stream_id;
        // The parser's message could quote decrypted text, so it is not passed on.
        let segment = match opened.segment() {
            Ok(segment) => segment,
            Err(_) => {
                return self.reject(offset, "the decrypted segment is not valid JSON".into());
            }
        };
        let frame_is_final = opened.header.kind == FrameKind::Final;
        if segment.is_final != frame_is_final {
            return self.reject(
                offset,
                "the segment's final flag contradicts the frame kind".into(),
            );
        }
        if frame_is_final {
            FollowEvent::SegmentFinal {
                offset,
                stream_id,
                segment,
            }
        } else {
            FollowEvent::SegmentUpdated {
                offset,
                stream_id,
                segment,
            }
        }
    }

    fn reject(&mut self, offset: u64, reason: String) -> FollowEvent {
        self.report.frames_rejected += 1;
        tracing::debug!(offset, reason = %reason, "frame rejected");
        FollowEvent::FrameRejected { offset, reason }
    }
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::authorship::{AuthoredStream, Problem, Verdict};
    use sealcast_protocol::dpop::DeviceKey;
    use sealcast_protocol::{StreamSealer, TranscriptSegment};

    use super::*;

    const SESSION: SessionId = SessionId([7; 16]);

    fn key() -> SessionKey {
        SessionKey::from_bytes([9; 32])
    }

    fn segment(id: u64, revision: u32, is_final: bool) -> TranscriptSegment {
        TranscriptSegment {
            segment_id: id,
            revision,
            speaker: "doctor".into(),
            start_ms: 0,
            end_ms: 100,
            text: format!("text {id}.{revision}"),
            is_final,
        }
    }

    fn welcomed() -> FollowState {
        welcomed_checking(None)
    }

    fn welcomed_checking(publisher: Option<PublisherKey>) -> FollowState {
        let mut state = FollowState::new(key(), 0, publisher);
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 0, false).unwrap();
        state
    }

    fn kinds(events: &[FollowEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(|event| match event {
                FollowEvent::SegmentUpdated { .. } => "updated",
                FollowEvent::SegmentFinal { .. } => "final",
                FollowEvent::Gap { .. } => "gap",
                FollowEvent::FrameRejected { .. } => "rejected",
                FollowEvent::EndOfSession { .. } => "end",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn wrong_fingerprint_fails_before_any_frame() {
        let mut state = FollowState::new(key(), 0, None);
        let other = SessionKey::from_bytes([1; 32]).fingerprint().to_base64url();
        let err = state.welcome(SESSION, 1, &other, 0, false).unwrap_err();
        assert_eq!(err.to_string(), "key does not match this session");
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let frame = sealer.seal_segment(&segment(0, 0, true)).unwrap();
        assert!(matches!(
            state.delivery(0, &frame),
            Err(ClientError::ProtocolViolation(_))
        ));
    }

    #[test]
    fn interim_and_final_frames_become_events() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let interim = sealer.seal_segment(&segment(0, 0, false)).unwrap();
        let last = sealer.seal_segment(&segment(0, 1, true)).unwrap();
        assert_eq!(kinds(&state.delivery(0, &interim).unwrap()), ["updated"]);
        assert_eq!(kinds(&state.delivery(1, &last).unwrap()), ["final"]);
        assert_eq!(state.report().frames_opened, 2);
    }

    #[test]
    fn tampered_frame_is_rejected_and_following_continues() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let mut bad = sealer.seal_segment(&segment(0, 0, true)).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let events = state.delivery(0, &bad).unwrap();
        assert_eq!(
            events,
            vec![FollowEvent::FrameRejected {
                offset: 0,
                reason: "frame failed to decrypt: it was altered or sealed under another key"
                    .into()
            }]
        );
        // The rejected frame was final, so the next frame shows it as a gap.
        let good = sealer.seal_segment(&segment(1, 0, true)).unwrap();
        assert_eq!(kinds(&state.delivery(1, &good).unwrap()), ["gap", "final"]);
    }

    #[test]
    fn replay_outside_overlap_is_rejected() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let frame = sealer.seal_segment(&segment(0, 0, true)).unwrap();
        state.delivery(0, &frame).unwrap();
        let events = state.delivery(1, &frame).unwrap();
        let [FollowEvent::FrameRejected { offset: 1, reason }] = events.as_slice() else {
            panic!("expected a rejection, got {events:?}");
        };
        assert!(reason.contains("replay"), "{reason}");
    }

    #[test]
    fn reordered_frame_is_rejected() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let first = sealer.seal_segment(&segment(0, 0, false)).unwrap();
        let second = sealer.seal_segment(&segment(0, 1, true)).unwrap();
        state.delivery(0, &second).unwrap();
        let events = state.delivery(1, &first).unwrap();
        let [FollowEvent::FrameRejected { reason, .. }] = events.as_slice() else {
            panic!("expected a rejection, got {events:?}");
        };
        assert!(reason.contains("reordered"), "{reason}");
    }

    #[test]
    fn resume_overlap_is_skipped_silently() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|id| sealer.seal_segment(&segment(id, 0, true)).unwrap())
            .collect();
        for (offset, frame) in frames.iter().enumerate() {
            state.delivery(offset as u64, frame).unwrap();
        }
        state.committed(0);
        assert_eq!(state.resume_from(), 1);

        state.begin_reconnect();
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 1, false).unwrap();
        assert!(state.delivery(1, &frames[1]).unwrap().is_empty());
        assert!(state.delivery(2, &frames[2]).unwrap().is_empty());
        let next = sealer.seal_segment(&segment(3, 0, true)).unwrap();
        assert_eq!(kinds(&state.delivery(3, &next).unwrap()), ["final"]);
        assert_eq!(state.report().duplicates_skipped, 2);

        // After the overlap, the same frame again is a replay.
        let events = state.delivery(4, &frames[2]).unwrap();
        assert_eq!(kinds(&events), ["rejected"]);
    }

    #[test]
    fn skipped_final_frame_is_a_gap() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let first = sealer.seal_segment(&segment(0, 0, true)).unwrap();
        let _lost = sealer.seal_segment(&segment(1, 0, true)).unwrap();
        let third = sealer.seal_segment(&segment(2, 0, true)).unwrap();
        state.delivery(0, &first).unwrap();
        let events = state.delivery(2, &third).unwrap();
        assert_eq!(kinds(&events), ["gap", "final"]);
        assert!(matches!(
            events[0],
            FollowEvent::Gap {
                missing_final_frames: 1,
                ..
            }
        ));
    }

    #[test]
    fn skipped_interim_frame_is_not_a_gap() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let _dropped = sealer.seal_segment(&segment(0, 0, false)).unwrap();
        let last = sealer.seal_segment(&segment(0, 1, true)).unwrap();
        assert_eq!(kinds(&state.delivery(1, &last).unwrap()), ["final"]);
    }

    #[test]
    fn end_of_session_frame_is_reported() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let end = sealer
            .seal_end(&EndOfSession { final_segments: 0 })
            .unwrap();
        assert_eq!(kinds(&state.delivery(0, &end).unwrap()), ["end"]);
        assert!(state.report().end_of_session);
    }

    #[test]
    fn malformed_segment_reason_quotes_no_plaintext() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let content = br#"{"segment_id":"private words"}"#;
        let frame = sealer.seal(FrameKind::Final, content).unwrap();
        let events = state.delivery(0, &frame).unwrap();
        assert_eq!(
            events,
            vec![FollowEvent::FrameRejected {
                offset: 0,
                reason: "the decrypted segment is not valid JSON".into()
            }]
        );
    }

    #[test]
    fn resume_offset_takes_the_lower_bound() {
        let mut state = welcomed();
        assert_eq!(state.resume_from(), 0);
        let mut sealer = StreamSealer::new(&key(), SESSION);
        for offset in 0..5 {
            let frame = sealer.seal_segment(&segment(offset, 0, true)).unwrap();
            state.delivery(offset, &frame).unwrap();
        }
        assert_eq!(state.resume_from(), 0);
        state.committed(2);
        assert_eq!(state.resume_from(), 3);
        state.committed(9);
        assert_eq!(state.resume_from(), 5);
    }

    #[test]
    fn changed_epoch_cannot_recover() {
        let mut state = welcomed();
        let fingerprint = key().fingerprint().to_base64url();
        let err = state
            .welcome(SESSION, 2, &fingerprint, 0, false)
            .unwrap_err();
        assert!(matches!(err, ClientError::CannotRecover));
    }

    fn device(seed: u8) -> (DeviceKey, PublisherKey) {
        let device = DeviceKey::from_secret_bytes(&[seed; 32]).unwrap();
        let publisher = PublisherKey::of_device(&device);
        (device, publisher)
    }

    /// Seals `count` final segments on a stream signed by `device`, then
    /// its signed end, and returns the frames in order.
    fn signed_stream(device: &DeviceKey, count: u64) -> Vec<Vec<u8>> {
        let mut stream = AuthoredStream::new(&key(), SESSION, 0, device);
        let mut frames = Vec::new();
        for id in 0..count {
            frames.extend(stream.seal_segment(&segment(id, 0, true)).unwrap());
        }
        frames.push(stream.seal_end(count).unwrap());
        frames
    }

    fn deliver_all(state: &mut FollowState, frames: &[Vec<u8>]) -> Vec<FollowEvent> {
        let mut events = Vec::new();
        for (offset, frame) in frames.iter().enumerate() {
            events.extend(state.delivery(offset as u64, frame).unwrap());
        }
        events
    }

    fn only_verdict(state: &FollowState) -> Verdict {
        let events = state.verdict_events();
        let [FollowEvent::StreamVerdict { verdict, .. }] = events.as_slice() else {
            panic!("expected one stream verdict, got {events:?}");
        };
        verdict.clone()
    }

    #[test]
    fn signed_stream_is_complete_and_authored() {
        let (device, publisher) = device(1);
        let mut state = welcomed_checking(Some(publisher));
        let events = deliver_all(&mut state, &signed_stream(&device, 20));
        assert_eq!(
            kinds(&events)
                .iter()
                .filter(|kind| **kind == "final")
                .count(),
            20
        );
        assert_eq!(
            only_verdict(&state),
            Verdict::Complete {
                publisher,
                endorsed_by: None
            }
        );
        let report = state.report();
        assert_eq!(report.publisher, Some(publisher));
        assert!(report.is_verified_complete());
        // 20 segments, the checkpoint after the sixteenth frame and the end.
        assert_eq!(report.frames_opened, 22);
    }

    #[test]
    fn stream_of_another_device_is_not_authored() {
        let (_, publisher) = device(1);
        let (forger, _) = device(2);
        let mut state = welcomed_checking(Some(publisher));
        let events = deliver_all(&mut state, &signed_stream(&forger, 3));
        let rejected: Vec<u64> = events
            .iter()
            .filter_map(|event| match event {
                FollowEvent::SignatureRejected { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(rejected, [3]);
        assert_eq!(
            only_verdict(&state),
            Verdict::Incomplete(vec![
                Problem::Unverified { first: 0, last: 3 },
                Problem::BadSignature { seq: 3 },
                Problem::EndNotSeen { last_opened: 3 },
            ])
        );
        assert!(!state.report().is_verified_complete());
    }

    #[test]
    fn unsigned_stream_is_unverified() {
        let (_, publisher) = device(1);
        let mut state = welcomed_checking(Some(publisher));
        let mut sealer = StreamSealer::new(&key(), SESSION);
        let frames = vec![
            sealer.seal_segment(&segment(0, 0, true)).unwrap(),
            sealer
                .seal_end(&EndOfSession { final_segments: 1 })
                .unwrap(),
        ];
        deliver_all(&mut state, &frames);
        assert_eq!(
            only_verdict(&state),
            Verdict::Incomplete(vec![
                Problem::Unverified { first: 0, last: 1 },
                Problem::BadSignature { seq: 1 },
                Problem::EndNotSeen { last_opened: 1 },
            ])
        );
    }

    #[test]
    fn withheld_tail_is_reported() {
        let (device, publisher) = device(1);
        let mut state = welcomed_checking(Some(publisher));
        let frames = signed_stream(&device, 20);
        // Frames 0 to 16 arrive, with the checkpoint at 16; 17 to 21 are withheld.
        deliver_all(&mut state, &frames[..19]);
        assert_eq!(
            only_verdict(&state),
            Verdict::Incomplete(vec![
                Problem::Unverified {
                    first: 17,
                    last: 18
                },
                Problem::EndNotSeen { last_opened: 18 },
            ])
        );
    }

    #[test]
    fn link_without_publisher_checks_nothing() {
        let (device, _) = device(1);
        let mut state = welcomed();
        let events = deliver_all(&mut state, &signed_stream(&device, 2));
        assert!(!events
            .iter()
            .any(|event| matches!(event, FollowEvent::SignatureRejected { .. })));
        // The verifier keeps no record without a key, so no verdict is reported.
        assert!(state.verdict_events().is_empty());
        assert_eq!(state.report().streams_not_verified(), 0);
    }

    #[test]
    fn frame_of_another_session_is_rejected() {
        let mut state = welcomed();
        let mut sealer = StreamSealer::new(&key(), SessionId([8; 16]));
        let frame = sealer.seal_segment(&segment(0, 0, true)).unwrap();
        assert_eq!(kinds(&state.delivery(0, &frame).unwrap()), ["rejected"]);
    }

    fn rotated_key() -> SessionKey {
        SessionKey::from_bytes([10; 32])
    }

    /// Seals `count` final segments, numbered from `first`, on a new stream of epoch 1.
    fn epoch_one_frames(first: u64, count: u64) -> Vec<Vec<u8>> {
        let mut sealer = StreamSealer::new(&rotated_key(), SESSION).with_key_epoch(1);
        (first..first + count)
            .map(|id| sealer.seal_segment(&segment(id, 0, true)).unwrap())
            .collect()
    }

    #[test]
    fn frames_of_a_missing_epoch_are_unreadable() {
        let mut state = welcomed();
        let frames = epoch_one_frames(0, 3);
        for (offset, frame) in frames.iter().enumerate() {
            let events = state.delivery(offset as u64, frame).unwrap();
            assert!(
                matches!(
                    events.as_slice(),
                    [FollowEvent::FrameUnreadable { key_epoch: 1, offset: at, stream_id: Some(_) }]
                        if *at == offset as u64
                ),
                "{events:?}"
            );
        }
        let report = state.report();
        assert_eq!(report.frames_unreadable, 3);
        assert_eq!(report.frames_opened, 0);
        assert_eq!(report.frames_rejected, 0);
    }

    #[test]
    fn added_key_opens_held_frames_in_order() {
        let mut state = welcomed();
        let mut old = StreamSealer::new(&key(), SESSION);
        let before = old.seal_segment(&segment(0, 0, true)).unwrap();
        assert_eq!(kinds(&state.delivery(0, &before).unwrap()), ["final"]);
        let rotated = epoch_one_frames(1, 2);
        state.delivery(1, &rotated[0]).unwrap();
        state.delivery(2, &rotated[1]).unwrap();

        let events = state.add_key(1, rotated_key());
        assert_eq!(
            events[0],
            FollowEvent::KeyAdded {
                key_epoch: 1,
                frames_opened: 2
            }
        );
        let finals: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|event| match event {
                FollowEvent::SegmentFinal {
                    offset, segment, ..
                } => Some((*offset, segment.segment_id)),
                _ => None,
            })
            .collect();
        assert_eq!(finals, [(1, 1), (2, 2)]);

        let after = epoch_one_frames(3, 1);
        // A frame of a stream the follower never saw is a new stream, so
        // its own sequence starts at 0 and it opens.
        assert_eq!(kinds(&state.delivery(3, &after[0]).unwrap()), ["final"]);
        let report = state.report();
        assert_eq!(report.frames_unreadable, 0);
        assert_eq!(report.frames_opened, 4);
    }

    #[test]
    fn held_frame_repeated_in_resume_overlap_is_skipped() {
        let mut state = welcomed();
        let rotated = epoch_one_frames(0, 1);
        state.delivery(0, &rotated[0]).unwrap();
        state.begin_reconnect();
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 0, false).unwrap();
        assert!(state.delivery(0, &rotated[0]).unwrap().is_empty());

        let events = state.add_key(1, rotated_key());
        assert_eq!(kinds(&events[1..]), ["final"]);
        assert_eq!(state.report().duplicates_skipped, 1);
    }

    #[test]
    fn key_older_than_the_grace_epoch_is_rejected() {
        let mut state = FollowState::new(rotated_key(), 5, None);
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 0, false).unwrap();
        let events = state.add_key(3, key());
        assert!(
            matches!(
                events.as_slice(),
                [FollowEvent::KeyRejected { key_epoch: 3, .. }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn later_epoch_link_skips_fingerprint() {
        // The relay stores the fingerprint of the epoch 0 key only.
        let mut state = FollowState::new(rotated_key(), 1, None);
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 0, false).unwrap();
        let frames = epoch_one_frames(0, 1);
        assert_eq!(kinds(&state.delivery(0, &frames[0]).unwrap()), ["final"]);

        // Frames of epoch 0 are unreadable without its key.
        let mut old = StreamSealer::new(&key(), SESSION);
        let frame = old.seal_segment(&segment(1, 0, true)).unwrap();
        let events = state.delivery(1, &frame).unwrap();
        assert!(
            matches!(
                events.as_slice(),
                [FollowEvent::FrameUnreadable { key_epoch: 0, .. }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn key_given_before_the_welcome_is_used() {
        let mut state = FollowState::new(key(), 0, None);
        let events = state.add_key(1, rotated_key());
        assert_eq!(
            events,
            [FollowEvent::KeyAdded {
                key_epoch: 1,
                frames_opened: 0
            }]
        );
        let fingerprint = key().fingerprint().to_base64url();
        state.welcome(SESSION, 1, &fingerprint, 0, false).unwrap();
        let frames = epoch_one_frames(0, 1);
        assert_eq!(kinds(&state.delivery(0, &frames[0]).unwrap()), ["final"]);
    }
}

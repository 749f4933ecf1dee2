//! The simulated patient device: opens every delivered frame with a
//! [`StreamOpener`] and measures latency from the intended send time carried
//! inside the sealed segment.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use sealcast_protocol::api::{decode_delivery, FollowerEvent};
use sealcast_protocol::{FrameHeader, FrameKind, OpenedFrame, ProtocolError, StreamOpener};
use serde::{Deserialize, Serialize};
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::Message;

use super::socket::Socket;
use super::{close_kind, is_session_ended, Timing};
use crate::stats::Recorder;
use crate::workload::{monotonic_micros, Probe};

/// Everything one follower needs for a run.
pub struct FollowerRun {
    /// Statistics shard key.
    pub key: usize,
    /// Opener for the followed session.
    pub opener: StreamOpener,
    /// Start, stop and drain deadline of the step.
    pub timing: Timing,
    /// The step's statistics.
    pub recorder: Arc<Recorder>,
}

/// Frames a follower opened and how its stream ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowerOutcome {
    /// Segment frames opened, duplicates not included.
    pub segments_opened: u64,
    /// Whether the end-of-session frame arrived and matched the stream's final count.
    pub end_verified: bool,
    /// Whether the relay reported the session ended.
    pub ended: bool,
}

/// Reads until the relay ends the session, the connection fails or the drain deadline passes.
pub async fn run(mut socket: Socket, mut run: FollowerRun) -> FollowerOutcome {
    let mut outcome = FollowerOutcome::default();
    let deadline = TokioInstant::from_std(run.timing.drain_deadline);
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(message) => message,
            Err(_) => {
                run.recorder
                    .count_error("follower not ended at drain deadline");
                break;
            }
        };
        match message {
            Some(Ok(Message::Binary(bytes))) => handle_delivery(&mut run, &bytes, &mut outcome),
            Some(Ok(Message::Text(text))) => {
                if matches!(serde_json::from_str(&text), Ok(FollowerEvent::Ended)) {
                    outcome.ended = true;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                if is_session_ended(frame.as_ref()) {
                    outcome.ended = true;
                } else {
                    run.recorder
                        .count_error(&format!("follower {}", close_kind(frame.as_ref())));
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                run.recorder.count_error("follower connection lost");
                break;
            }
        }
    }
    run.recorder.record_disconnect();
    outcome
}

fn handle_delivery(run: &mut FollowerRun, bytes: &[u8], outcome: &mut FollowerOutcome) {
    let received_us = monotonic_micros(Instant::now());
    let Some((_offset, frame)) = decode_delivery(bytes) else {
        run.recorder.count_error("follower delivery too short");
        return;
    };
    let header = match FrameHeader::decode_frame(frame) {
        Ok(header) => header,
        Err(_) => {
            run.recorder.count_error("follower malformed frame");
            return;
        }
    };
    if run.opener.already_seen(&header) {
        run.recorder.add_duplicate();
        return;
    }

    match run.opener.open(frame) {
        Ok(opened) => apply(run, &opened, received_us, outcome),
        Err(ProtocolError::Decrypt) => run.recorder.add_decrypt_error(),
        Err(ProtocolError::Replay { .. } | ProtocolError::Reordered { .. }) => {
            run.recorder.add_duplicate();
        }
        Err(err) => {
            tracing::debug!(error = %err, "frame rejected");
            run.recorder.count_error("follower frame rejected");
        }
    }
}

fn apply(run: &FollowerRun, opened: &OpenedFrame, received_us: u64, outcome: &mut FollowerOutcome) {
    if opened.skipped_final > 0 {
        run.recorder.add_gap_frames(opened.skipped_final);
    }
    if opened.chain_verified == Some(false) {
        run.recorder.count_error("follower broken hash chain");
    }
    match opened.header.kind {
        FrameKind::Final | FrameKind::Interim => match Probe::parse(&opened.content) {
            Some(probe) => {
                outcome.segments_opened += 1;
                run.recorder
                    .record_delivery(run.key, probe.sent_us, received_us);
            }
            None => run.recorder.count_error("follower segment without probe"),
        },
        // The harness's publishers seal no checkpoints, so none arrive.
        FrameKind::Checkpoint => run.recorder.count_error("follower unexpected checkpoint"),
        FrameKind::EndOfSession => {
            let end = sealcast_protocol::EndOfSession::from_plaintext(&opened.content);
            outcome.end_verified =
                end.is_ok_and(|end| end.final_segments + 1 == opened.header.final_count);
            if !outcome.end_verified {
                run.recorder
                    .count_error("follower end frame count mismatch");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sealcast_protocol::api::encode_delivery;
    use sealcast_protocol::{SessionId, SessionKey, StreamSealer};

    use super::*;
    use crate::workload::Transcripts;

    fn follower_run(key: &SessionKey, session: SessionId) -> FollowerRun {
        FollowerRun {
            key: 0,
            opener: StreamOpener::new(key.clone(), session),
            timing: Timing::new(
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(60),
                Duration::ZERO,
            ),
            recorder: Arc::new(Recorder::new()),
        }
    }

    fn sealed_frames(key: &SessionKey, session: SessionId, count: usize) -> Vec<Vec<u8>> {
        let mut sealer = StreamSealer::new(key, session);
        let mut script = Transcripts::load(None).unwrap().script_for(0);
        (0..count)
            .map(|_| {
                let plaintext = script.next_plaintext(monotonic_micros(Instant::now()));
                sealer.seal(FrameKind::Final, &plaintext).unwrap()
            })
            .collect()
    }

    #[test]
    fn frames_in_order_are_delivered() {
        let key = SessionKey::generate();
        let session = SessionId::random();
        let mut run = follower_run(&key, session);
        let mut outcome = FollowerOutcome::default();
        for (offset, frame) in sealed_frames(&key, session, 3).iter().enumerate() {
            handle_delivery(
                &mut run,
                &encode_delivery(offset as u64, frame),
                &mut outcome,
            );
        }
        assert_eq!(outcome.segments_opened, 3);
        let counts = run.recorder.counts();
        assert_eq!(counts.frames_delivered, 3);
        assert_eq!(counts.gap_frames, 0);
        assert_eq!(counts.duplicates, 0);
    }

    #[test]
    fn gap_and_duplicate_are_counted() {
        let key = SessionKey::generate();
        let session = SessionId::random();
        let frames = sealed_frames(&key, session, 3);
        let mut run = follower_run(&key, session);
        let mut outcome = FollowerOutcome::default();
        handle_delivery(&mut run, &encode_delivery(0, &frames[0]), &mut outcome);
        handle_delivery(&mut run, &encode_delivery(1, &frames[2]), &mut outcome);
        handle_delivery(&mut run, &encode_delivery(2, &frames[2]), &mut outcome);
        let counts = run.recorder.counts();
        assert_eq!(outcome.segments_opened, 2);
        assert_eq!(counts.gap_frames, 1);
        assert_eq!(counts.duplicates, 1);
    }

    #[test]
    fn tampered_frame_is_a_decryption_error() {
        let key = SessionKey::generate();
        let session = SessionId::random();
        let mut frame = sealed_frames(&key, session, 1).remove(0);
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        let mut run = follower_run(&key, session);
        let mut outcome = FollowerOutcome::default();
        handle_delivery(&mut run, &encode_delivery(0, &frame), &mut outcome);
        assert_eq!(outcome.segments_opened, 0);
        assert_eq!(run.recorder.counts().decrypt_errors, 1);
    }

    #[test]
    fn end_frame_with_matching_count_is_verified() {
        let key = SessionKey::generate();
        let session = SessionId::random();
        let mut sealer = StreamSealer::new(&key, session);
        let mut script = Transcripts::load(None).unwrap().script_for(0);
        let segment = sealer
            .seal(FrameKind::Final, &script.next_plaintext(1))
            .unwrap();
        let end = sealer
            .seal_end(&sealcast_protocol::EndOfSession { final_segments: 1 })
            .unwrap();
        let mut run = follower_run(&key, session);
        let mut outcome = FollowerOutcome::default();
        handle_delivery(&mut run, &encode_delivery(0, &segment), &mut outcome);
        handle_delivery(&mut run, &encode_delivery(1, &end), &mut outcome);
        assert!(outcome.end_verified);
    }
}

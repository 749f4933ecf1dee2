//! Signed streams and the authorship verifier: complete streams, frames the
//! relay dropped or withheld, frames another key holder sealed, and
//! arbitrary delivery patterns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;

use sealcast_protocol::authorship::{
    AuthoredStream, AuthorshipError, AuthorshipVerifier, Observed, Problem, PublisherKey, Verdict,
    CHECKPOINT_INTERVAL,
};
use sealcast_protocol::{
    frame_hash, FrameHeader, FrameKind, OpenedFrame, SessionId, SessionKey, StreamId, StreamOpener,
    StreamSealer, TranscriptSegment,
};

const SESSION: SessionId = SessionId([0x5e; 16]);
const STREAM: StreamId = StreamId([0xa5; 16]);
const DEVICE_SECRET: [u8; 32] = [0x21; 32];

fn key() -> SessionKey {
    SessionKey::from_bytes([0x42; 32])
}

fn authored() -> AuthoredStream {
    AuthoredStream::with_stream_id(&key(), SESSION, STREAM, 0, &DEVICE_SECRET)
}

fn publisher() -> PublisherKey {
    authored().publisher_key()
}

fn segment(index: usize, is_final: bool) -> TranscriptSegment {
    TranscriptSegment {
        segment_id: index as u64,
        revision: 0,
        speaker: "doctor".into(),
        start_ms: 0,
        end_ms: 1_000,
        text: format!("segment {index}"),
        is_final,
    }
}

/// Seals one segment per entry of `finals` (true for a final segment), then
/// the signed end, returning every frame in publishing order.
fn publish(finals: &[bool]) -> Vec<Vec<u8>> {
    let mut stream = authored();
    let mut frames = Vec::new();
    for (index, is_final) in finals.iter().enumerate() {
        frames.extend(stream.seal_segment(&segment(index, *is_final)).unwrap());
    }
    let final_segments = finals.iter().filter(|is_final| **is_final).count() as u64;
    frames.push(stream.seal_end(final_segments).unwrap());
    frames
}

/// Opens `frames` in order with a fresh opener and verifier, returning the verdict.
fn verify(frames: &[&[u8]], publisher: Option<PublisherKey>) -> Verdict {
    let mut opener = StreamOpener::new(key(), SESSION);
    let mut verifier = AuthorshipVerifier::new(publisher);
    for frame in frames {
        let opened = opener.open(frame).unwrap();
        verifier.observe(frame, &opened);
    }
    verifier.verdict(&STREAM).unwrap()
}

fn all(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames.iter().map(Vec::as_slice).collect()
}

fn kind(frame: &[u8]) -> FrameKind {
    FrameHeader::decode(frame).unwrap().kind
}

#[test]
fn whole_stream_is_complete() {
    let frames = publish(&[false, true, false, false, true]);
    let verdict = verify(&all(&frames), Some(publisher()));
    assert_eq!(
        verdict,
        Verdict::Complete {
            publisher: publisher(),
            endorsed_by: None,
        }
    );
}

#[test]
fn checkpoint_follows_every_interval() {
    let finals = vec![false; CHECKPOINT_INTERVAL * 2 + 3];
    let frames = publish(&finals);
    let checkpoints: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, frame)| kind(frame) == FrameKind::Checkpoint)
        .map(|(index, _)| index)
        .collect();
    assert_eq!(
        checkpoints,
        vec![CHECKPOINT_INTERVAL, 2 * CHECKPOINT_INTERVAL + 1]
    );
    assert_eq!(kind(frames.last().unwrap()), FrameKind::EndOfSession);
}

#[test]
fn link_without_publisher_is_not_checkable() {
    let frames = publish(&[true]);
    assert_eq!(verify(&all(&frames), None), Verdict::NotCheckable);
}

#[test]
fn dropped_interim_frames_stay_complete() {
    let frames = publish(&[true, false, false, true, false]);
    let delivered: Vec<&[u8]> = frames
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != 1 && *index != 2)
        .map(|(_, frame)| frame.as_slice())
        .collect();
    assert!(matches!(
        verify(&delivered, Some(publisher())),
        Verdict::Complete { .. }
    ));
}

#[test]
fn dropped_final_frame_is_missing() {
    let frames = publish(&[true, true, false]);
    let delivered = [frames[0].as_slice(), &frames[2], &frames[3]];
    assert_eq!(
        verify(&delivered, Some(publisher())),
        Verdict::Incomplete(vec![Problem::Missing {
            first: 1,
            last: 1,
            finals: 1
        }])
    );
}

#[test]
fn withheld_tail_is_reported() {
    let frames = publish(&[false; CHECKPOINT_INTERVAL + 4]);
    // The relay withholds the last two segments and the signed end.
    let delivered = all(&frames[..frames.len() - 3]);
    let last = (delivered.len() - 1) as u64;
    let checkpoint = CHECKPOINT_INTERVAL as u64;
    assert_eq!(
        verify(&delivered, Some(publisher())),
        Verdict::Incomplete(vec![
            Problem::Unverified {
                first: checkpoint + 1,
                last,
            },
            Problem::EndNotSeen { last_opened: last },
        ])
    );
}

#[test]
fn other_device_stream_is_rejected() {
    let frames = publish(&[true, false]);
    let other_device = PublisherKey::from_bytes(
        &ed25519_dalek::SigningKey::from_bytes(&[0x77; 32])
            .verifying_key()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(
        verify(&all(&frames), Some(other_device)),
        Verdict::Incomplete(vec![
            Problem::Unverified { first: 0, last: 2 },
            Problem::BadSignature { seq: 2 },
            Problem::EndNotSeen { last_opened: 2 },
        ])
    );
}

#[test]
fn substituted_frame_is_unverified() {
    // A holder of the session key replaces segment 1 with its own frame of
    // the same sequence number and kind, chained to segment 0.
    let frames = publish(&[true, true, true]);
    let mut forger = StreamSealer::with_stream_id(&key(), SESSION, STREAM);
    forger.seal_segment(&segment(0, true)).unwrap();
    let forged = forger.seal_segment(&segment(99, true)).unwrap();
    assert_ne!(forged, frames[1]);

    let mut opener = StreamOpener::new(key(), SESSION);
    let mut verifier = AuthorshipVerifier::new(Some(publisher()));
    for frame in [&frames[0], &forged, &frames[2], &frames[3]] {
        let opened = opener.open(frame).unwrap();
        verifier.observe(frame, &opened);
    }
    assert_eq!(
        verifier.verdict(&STREAM).unwrap(),
        Verdict::Incomplete(vec![Problem::Unverified { first: 1, last: 1 }])
    );
}

#[test]
fn forged_checkpoint_is_rejected() {
    // A holder of the session key seals a checkpoint with a made-up signature.
    let mut forger = StreamSealer::with_stream_id(&key(), SESSION, STREAM);
    let first = forger.seal_segment(&segment(0, true)).unwrap();
    let frames = URL_SAFE_NO_PAD.encode(frame_hash(&first));
    let content = format!(
        r#"{{"first_seq":0,"frames":"{frames}","stream_end":true,"signature":"{}"}}"#,
        "A".repeat(86)
    );
    let checkpoint = forger
        .seal(FrameKind::Checkpoint, content.as_bytes())
        .unwrap();

    let mut opener = StreamOpener::new(key(), SESSION);
    let mut verifier = AuthorshipVerifier::new(Some(publisher()));
    let opened = opener.open(&first).unwrap();
    assert_eq!(verifier.observe(&first, &opened), Observed::Pending);
    let opened = opener.open(&checkpoint).unwrap();
    let observed = verifier.observe(&checkpoint, &opened);
    assert_eq!(observed, Observed::Rejected(AuthorshipError::BadSignature));
    assert_eq!(
        verifier.verdict(&STREAM).unwrap(),
        Verdict::Incomplete(vec![
            Problem::Unverified { first: 0, last: 1 },
            Problem::BadSignature { seq: 1 },
            Problem::EndNotSeen { last_opened: 1 },
        ])
    );
}

#[test]
fn malformed_checkpoint_contents_are_rejected() {
    let cases = [
        ("not json", "not a signed content object"),
        (
            r#"{"first_seq":0,"frames":"!!","signature":""}"#,
            "frames is not base64url",
        ),
        (
            r#"{"first_seq":5,"frames":"","signature":""}"#,
            "frames does not list one hash per frame since first_seq",
        ),
        (
            r#"{"first_seq":1,"frames":"","signature":"AAAA"}"#,
            "signature is not 64 bytes of base64url",
        ),
    ];
    for (content, reason) in cases {
        let mut forger = StreamSealer::with_stream_id(&key(), SESSION, STREAM);
        let first = forger.seal_segment(&segment(0, false)).unwrap();
        let checkpoint = forger
            .seal(FrameKind::Checkpoint, content.as_bytes())
            .unwrap();
        let mut opener = StreamOpener::new(key(), SESSION);
        let mut verifier = AuthorshipVerifier::new(Some(publisher()));
        let opened = opener.open(&first).unwrap();
        verifier.observe(&first, &opened);
        let opened: OpenedFrame = opener.open(&checkpoint).unwrap();
        assert_eq!(
            verifier.observe(&checkpoint, &opened),
            Observed::Rejected(AuthorshipError::MalformedCheckpoint(reason)),
            "{content}"
        );
    }
}

#[test]
fn closed_stream_takes_no_frames() {
    let mut stream = authored();
    stream.seal_segment(&segment(0, true)).unwrap();
    stream.seal_checkpoint(true).unwrap();
    assert_eq!(
        stream.seal_segment(&segment(1, true)).unwrap_err(),
        AuthorshipError::StreamClosed
    );
    assert_eq!(
        stream.seal_end(1).unwrap_err(),
        AuthorshipError::StreamClosed
    );
}

#[test]
fn closing_checkpoint_completes_stream() {
    let mut stream = authored();
    let mut frames = stream.seal_segment(&segment(0, true)).unwrap();
    frames.push(stream.seal_checkpoint(true).unwrap());
    assert!(matches!(
        verify(&all(&frames), Some(publisher())),
        Verdict::Complete { .. }
    ));
}

#[test]
fn frame_after_signed_end_is_unverified() {
    let mut stream = authored();
    let mut frames = stream.seal_segment(&segment(0, true)).unwrap();
    frames.push(stream.seal_end(1).unwrap());
    // A holder of the session key appends a frame after the signed end.
    let mut forger = StreamSealer::with_stream_id(&key(), SESSION, STREAM);
    let mut forged = Vec::new();
    for _ in 0..3 {
        forged = forger.seal(FrameKind::Final, b"{}").unwrap();
    }
    frames.push(forged);
    assert_eq!(
        verify(&all(&frames), Some(publisher())),
        Verdict::Incomplete(vec![Problem::Unverified { first: 2, last: 2 }])
    );
}

#[test]
fn end_frame_still_parses_as_version_1_end() {
    let frames = publish(&[true, true]);
    let mut opener = StreamOpener::new(key(), SESSION);
    let mut last = None;
    for frame in &frames {
        last = Some(opener.open(frame).unwrap());
    }
    let end = last.unwrap();
    let parsed = sealcast_protocol::EndOfSession::from_plaintext(&end.content).unwrap();
    assert_eq!(parsed.final_segments, 2);
    assert_eq!(end.header.final_count, parsed.final_segments + 1);
}

#[test]
fn invalid_publisher_keys_are_rejected() {
    // The identity point (a low-order key) and a y-coordinate off the curve.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    for bytes in [identity, off_curve] {
        assert_eq!(
            PublisherKey::from_bytes(&bytes).unwrap_err(),
            AuthorshipError::InvalidPublisherKey
        );
    }
}

/// What the relay does with one frame in the property tests.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    Deliver,
    DropIfInterim,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![3 => Just(Delivery::Deliver), 1 => Just(Delivery::DropIfInterim)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn interim_drops_keep_stream_complete(
        finals in prop::collection::vec(any::<bool>(), 0..40),
        deliveries in prop::collection::vec(delivery(), 60),
    ) {
        let frames = publish(&finals);
        let delivered: Vec<&[u8]> = frames
            .iter()
            .zip(deliveries.iter().cycle())
            .filter(|(frame, delivery)| {
                matches!(delivery, Delivery::Deliver) || kind(frame) != FrameKind::Interim
            })
            .map(|(frame, _)| frame.as_slice())
            .collect();
        let verdict = verify(&delivered, Some(publisher()));
        prop_assert!(matches!(verdict, Verdict::Complete { .. }), "{verdict:?}");
    }

    #[test]
    fn dropped_finals_are_reported(
        finals in prop::collection::vec(any::<bool>(), 1..40),
        drop in any::<prop::sample::Index>(),
    ) {
        let frames = publish(&finals);
        let final_positions: Vec<usize> = (0..frames.len())
            .filter(|&index| kind(&frames[index]).counts_as_final())
            .collect();
        let dropped = final_positions[drop.index(final_positions.len())];
        let delivered: Vec<&[u8]> = frames
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != dropped)
            .map(|(_, frame)| frame.as_slice())
            .collect();

        let verdict = verify(&delivered, Some(publisher()));
        let Verdict::Incomplete(problems) = verdict else {
            panic!("dropping frame {dropped} left {verdict:?}");
        };
        let reported = problems.iter().any(|problem| match problem {
            Problem::Missing { first, last, finals } => {
                *first == dropped as u64 && *last == dropped as u64 && *finals == 1
            }
            Problem::EndNotSeen { .. } => dropped == frames.len() - 1,
            _ => false,
        });
        prop_assert!(reported, "dropped {}: {:?}", dropped, problems);
    }

    #[test]
    fn withheld_tail_is_never_complete(
        finals in prop::collection::vec(any::<bool>(), 1..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames = publish(&finals);
        let kept = cut.index(frames.len() - 1) + 1;
        let verdict = verify(&all(&frames[..kept]), Some(publisher()));
        let last_opened = kept as u64 - 1;
        let Verdict::Incomplete(problems) = verdict else {
            panic!("a stream cut after {kept} frames was complete");
        };
        prop_assert_eq!(problems.last(), Some(&Problem::EndNotSeen { last_opened }));
    }
}

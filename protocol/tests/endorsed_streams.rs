//! Streams signed by a clinician's second device: followers hold only the
//! first device's key, and accept the second device's stream through the
//! endorsement its checkpoints carry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use sealcast_protocol::authorship::{
    AuthoredStream, AuthorshipError, AuthorshipVerifier, Endorsement, Observed, Problem,
    PublisherKey, Verdict, CHECKPOINT_INTERVAL,
};
use sealcast_protocol::{SessionId, SessionKey, StreamId, StreamOpener, TranscriptSegment};

const SESSION: SessionId = SessionId([0x5e; 16]);
const STREAM: StreamId = StreamId([0xa5; 16]);
const FIRST_SECRET: [u8; 32] = [0x21; 32];
const SECOND_SECRET: [u8; 32] = [0x22; 32];
const STRANGER_SECRET: [u8; 32] = [0x23; 32];

fn key() -> SessionKey {
    SessionKey::from_bytes([0x42; 32])
}

fn stream_of(secret: &[u8; 32], key_epoch: u32) -> AuthoredStream {
    AuthoredStream::with_stream_id(&key(), SESSION, STREAM, key_epoch, secret)
}

fn key_of(secret: &[u8; 32]) -> PublisherKey {
    stream_of(secret, 0).signing_key()
}

fn segment(index: usize) -> TranscriptSegment {
    TranscriptSegment {
        segment_id: index as u64,
        revision: 0,
        speaker: "doctor".into(),
        start_ms: 0,
        end_ms: 1_000,
        text: format!("segment {index}"),
        is_final: true,
    }
}

/// Seals `count` final segments and the signed end.
fn publish(mut stream: AuthoredStream, count: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for index in 0..count {
        frames.extend(stream.seal_segment(&segment(index)).unwrap());
    }
    frames.push(stream.seal_end(count as u64).unwrap());
    frames
}

fn verify(frames: &[Vec<u8>]) -> (Verdict, Vec<Observed>) {
    let mut opener = StreamOpener::new(key(), SESSION);
    let mut verifier = AuthorshipVerifier::new(Some(key_of(&FIRST_SECRET)));
    let mut observed = Vec::new();
    for frame in frames {
        let opened = opener.open(frame).unwrap();
        observed.push(verifier.observe(frame, &opened));
    }
    (verifier.verdict(&STREAM).unwrap(), observed)
}

fn endorsed_by_first(key_epoch: u32, device: PublisherKey) -> Endorsement {
    Endorsement::sign_with_secret(&FIRST_SECRET, &SESSION, key_epoch, device)
}

#[test]
fn endorsed_stream_is_complete_and_names_both_devices() {
    let second = key_of(&SECOND_SECRET);
    let stream = stream_of(&SECOND_SECRET, 0)
        .with_endorsement(endorsed_by_first(0, second))
        .unwrap();
    assert_eq!(stream.publisher_key(), key_of(&FIRST_SECRET));
    let frames = publish(stream, CHECKPOINT_INTERVAL + 3);
    let (verdict, _) = verify(&frames);
    assert_eq!(
        verdict,
        Verdict::Complete {
            publisher: second,
            endorsed_by: Some(key_of(&FIRST_SECRET)),
        }
    );
}

#[test]
fn endorsement_valid_in_later_epochs() {
    let second = key_of(&SECOND_SECRET);
    let stream = stream_of(&SECOND_SECRET, 4)
        .with_endorsement(endorsed_by_first(2, second))
        .unwrap();
    let (verdict, _) = verify(&publish(stream, 3));
    assert!(matches!(verdict, Verdict::Complete { .. }), "{verdict:?}");
}

#[test]
fn endorsement_for_a_later_epoch_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let stream = stream_of(&SECOND_SECRET, 1)
        .with_endorsement(endorsed_by_first(2, second))
        .unwrap();
    let (verdict, observed) = verify(&publish(stream, 2));
    assert!(
        matches!(
            observed.last(),
            Some(Observed::Rejected(AuthorshipError::InvalidEndorsement(_)))
        ),
        "{observed:?}"
    );
    assert!(matches!(verdict, Verdict::Incomplete(_)), "{verdict:?}");
}

#[test]
fn unendorsed_second_key_is_not_authored() {
    let frames = publish(stream_of(&SECOND_SECRET, 0), 2);
    let (verdict, _) = verify(&frames);
    assert_eq!(
        verdict,
        Verdict::Incomplete(vec![
            Problem::Unverified { first: 0, last: 2 },
            Problem::BadSignature { seq: 2 },
            Problem::EndNotSeen { last_opened: 2 },
        ])
    );
}

#[test]
fn endorsement_signed_by_a_stranger_is_rejected() {
    let second = key_of(&SECOND_SECRET);
    let forged = Endorsement::sign_with_secret(&STRANGER_SECRET, &SESSION, 0, second);
    let stream = stream_of(&SECOND_SECRET, 0)
        .with_endorsement(forged)
        .unwrap();
    let (verdict, observed) = verify(&publish(stream, 2));
    assert!(
        matches!(
            observed.last(),
            Some(Observed::Rejected(AuthorshipError::InvalidEndorsement(_)))
        ),
        "{observed:?}"
    );
    assert!(matches!(verdict, Verdict::Incomplete(_)), "{verdict:?}");
}

#[test]
fn sealer_rejects_endorsement_of_other_key() {
    let stranger = key_of(&STRANGER_SECRET);
    let result = stream_of(&SECOND_SECRET, 0).with_endorsement(endorsed_by_first(0, stranger));
    assert!(matches!(
        result,
        Err(AuthorshipError::InvalidEndorsement(_))
    ));
}

#[test]
fn stream_that_changes_signer_is_not_complete() {
    // Checkpoints of the first device, then a signed end of the endorsed
    // second device on the same stream id and sequence numbers: each frame
    // verifies alone, but one stream has one author.
    let second = key_of(&SECOND_SECRET);
    let mut first = stream_of(&FIRST_SECRET, 0);
    let mut frames = Vec::new();
    for index in 0..CHECKPOINT_INTERVAL {
        frames.extend(first.seal_segment(&segment(index)).unwrap());
    }
    let mut second_stream = stream_of(&SECOND_SECRET, 0)
        .with_endorsement(endorsed_by_first(0, second))
        .unwrap();
    let mut second_frames = Vec::new();
    for index in 0..CHECKPOINT_INTERVAL {
        second_frames.extend(second_stream.seal_segment(&segment(index)).unwrap());
    }
    second_frames.push(second_stream.seal_end(CHECKPOINT_INTERVAL as u64).unwrap());
    // Both streams seal identical segment frames up to the first checkpoint,
    // so the second's tail continues the first's chain.
    frames.extend(second_frames.into_iter().skip(CHECKPOINT_INTERVAL + 1));
    let (verdict, observed) = verify(&frames);
    assert!(
        matches!(
            observed.last(),
            Some(Observed::Rejected(AuthorshipError::SignerChanged))
        ),
        "{observed:?}"
    );
    assert!(matches!(verdict, Verdict::Incomplete(_)), "{verdict:?}");
}

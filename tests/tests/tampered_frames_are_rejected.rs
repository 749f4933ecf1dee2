//! A follower rejects every frame that a relay or a thief of its database
//! altered, replayed, reordered or spliced in from another session. It names
//! the offset and the reason, applies every other frame, and reports the
//! final frames it lost as a gap. A device holding the wrong key learns that
//! before any frame is opened.
//!
//! Each test runs the real relay binary over TLS. The stored-frame tests stop
//! the relay, edit its SQLite database directly and start it again on the
//! same data directory, because the relay delivers stored blobs unchecked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use sealcast_client::input::interim;
use sealcast_protocol::rotation::EpochError;
use sealcast_protocol::{
    FrameHeader, FrameKind, ProtocolError, SessionId, StreamId, StreamSealer, TranscriptSegment,
    HEADER_LEN,
};
use sealcast_tests::process::RelayProcess;
use sealcast_tests::raw_socket::RawPublisher;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{
    follow_then_end, follow_until_end, wait_until_connected, FollowOutcome, LiveSession,
};
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::store::FrameStore;

/// Maximum time a follower may take to see a session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(30);

/// Final segments of the sample consultation published per session. With
/// their interim revisions and the end frame they make about 100 frames.
const SAMPLE_SEGMENTS: usize = 8;

/// Where in a frame a bit is flipped.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Byte index from the start of the frame.
    Start(usize),
    /// Byte index counted back from the end: `End(1)` is the last byte.
    End(usize),
}

/// The rejection a follower must report, with its values taken from the
/// tampered frame.
#[derive(Debug, Clone, Copy)]
enum Rejection {
    Decrypt,
    /// The flipped key epoch differs from the one the stream was opened
    /// under, which the follower's epoch rules reject before decrypting.
    EpochChanged,
    UnsupportedVersion,
    UnknownKind,
    InvalidBucket,
    LengthMismatch,
    ReservedFlags,
    WrongSession,
    /// The flipped sequence number equals the one opened just before.
    Replay,
}

/// One stored frame with one bit inverted.
#[derive(Debug, Clone, Copy)]
struct BitFlip {
    field: &'static str,
    position: Position,
    /// Bit within the byte, 0 the least significant.
    bit: u8,
    /// Kind of the frame to alter. A lost final frame must show as a gap.
    target: FrameKind,
    expected: Rejection,
}

const fn flip(
    field: &'static str,
    position: Position,
    bit: u8,
    target: FrameKind,
    expected: Rejection,
) -> BitFlip {
    BitFlip {
        field,
        position,
        bit,
        target,
        expected,
    }
}

/// Two bits in every header field, in the ciphertext and in the tag. Each
/// frame altered is at an odd offset, so that frame is sequence number
/// `offset` of the session's only stream and its low sequence bit turns it
/// into the one opened just before.
const BIT_FLIPS: &[BitFlip] = {
    use FrameKind::{Final, Interim};
    use Position::{End, Start};
    use Rejection::*;
    &[
        flip("version", Start(0), 0, Final, UnsupportedVersion),
        flip("version", Start(0), 7, Interim, UnsupportedVersion),
        flip("kind, final to end of session", Start(1), 0, Final, Decrypt),
        flip("kind, final to unknown", Start(1), 1, Final, UnknownKind),
        flip(
            "kind, interim to unknown",
            Start(1),
            0,
            Interim,
            UnknownKind,
        ),
        flip("bucket", Start(2), 0, Final, LengthMismatch),
        flip("bucket", Start(2), 7, Interim, InvalidBucket),
        flip("flags", Start(3), 0, Final, ReservedFlags),
        flip("flags", Start(3), 7, Interim, ReservedFlags),
        flip("key epoch", Start(4), 7, Final, EpochChanged),
        flip("key epoch", Start(7), 0, Interim, EpochChanged),
        flip("session id", Start(8), 7, Final, WrongSession),
        flip("session id", Start(23), 0, Interim, WrongSession),
        flip("stream id", Start(24), 7, Final, Decrypt),
        flip("stream id", Start(39), 0, Interim, Decrypt),
        flip("sequence number", Start(40), 7, Final, Decrypt),
        flip("sequence number", Start(47), 0, Interim, Replay),
        flip("final count", Start(48), 7, Final, Decrypt),
        flip("final count", Start(55), 0, Interim, Decrypt),
        flip("previous frame hash", Start(56), 7, Final, Decrypt),
        flip("previous frame hash", Start(87), 0, Interim, Decrypt),
        flip("ciphertext", Start(HEADER_LEN), 7, Final, Decrypt),
        flip("ciphertext", End(17), 0, Interim, Decrypt),
        flip("tag", End(16), 7, Final, Decrypt),
        flip("tag", End(1), 0, Interim, Decrypt),
    ]
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bit_flips_are_rejected() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let mut sessions = Vec::new();
    for _ in BIT_FLIPS {
        sessions.push(LiveSession::create(&relay, &staff).await);
    }
    for session in &sessions {
        publish_short_sample(session).await;
    }
    let relay = stop(relay);

    let mut altered = Vec::new();
    {
        let store = FrameStore::open(data.path());
        for (case, session) in BIT_FLIPS.iter().zip(&sessions) {
            altered.push(apply_flip(&store, session, case));
        }
    }
    let _relay = restart(relay, data.path());

    for ((case, session), (offset, expected)) in BIT_FLIPS.iter().zip(&sessions).zip(altered) {
        let outcome = follow_then_end(session, FOLLOW_LIMIT).await;
        let name = format!(
            "{} bit {} of a {:?} frame",
            case.field, case.bit, case.target
        );
        let stored = stored_offsets(session.created.session_id, data.path());
        assert_rejected_only(&name, &outcome, &stored, &[(offset, expected.to_string())]);

        let expected_gaps = gap_if_final(case.target, offset + 1);
        assert_eq!(outcome.gap_reports, expected_gaps, "{name}: gap reports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_bit_flips_are_rejected() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let mut follower = session.follower();
    wait_until_connected(&mut follower, FOLLOW_LIMIT).await;
    let following = tokio::spawn(follow_until_end(follower, FOLLOW_LIMIT));

    // The relay checks the fields it routes on, and passes these on unchecked.
    let fields = [
        ("ciphertext", Position::Start(HEADER_LEN + 10)),
        ("tag", Position::End(1)),
        ("previous frame hash", Position::Start(60)),
        ("final count", Position::Start(55)),
        ("key epoch", Position::Start(7)),
    ];
    let session_id = session.created.session_id;
    let mut sealer = StreamSealer::new(&session.key, session_id);
    let mut publisher = RawPublisher::connect(&session).await;
    let mut expected_rejections = Vec::new();
    let mut expected_gaps = Vec::new();
    // Every odd sequence number carries one altered field. All frames are
    // final, so each rejected frame is also a gap at the next offset.
    for (seq, segment) in sample_finals()
        .iter()
        .take(2 * fields.len() + 1)
        .enumerate()
    {
        let mut frame = sealer.seal_segment(segment).unwrap();
        if seq % 2 == 1 {
            let (_, position) = fields[seq / 2];
            let byte = byte_index(position, frame.len());
            frame[byte] ^= 0x01;
            let rejection = if matches!(position, Position::Start(7)) {
                expected_error(Rejection::EpochChanged, &header_of(&frame), &frame)
            } else {
                ProtocolError::Decrypt.to_string()
            };
            expected_rejections.push((seq as u64, rejection));
            expected_gaps.push((seq as u64 + 1, 1));
        }
        publisher.send(frame).await;
    }
    let last_seq = sealer.next_seq() - 1;
    let last_offset = publisher.wait_for_ack(sealer.stream_id(), last_seq).await;
    assert_eq!(
        last_offset, last_seq,
        "the relay stored the frames at other offsets"
    );
    session.end().await;

    let outcome = following.await.unwrap();
    let all: Vec<u64> = (0..=last_offset).collect();
    let names: Vec<&str> = fields.iter().map(|(field, _)| *field).collect();
    let name = format!("relayed frames with a flipped {}", names.join(", "));
    assert_rejected_only(&name, &outcome, &all, &expected_rejections);
    assert_eq!(
        outcome.gap_reports, expected_gaps,
        "{name}: each rejected final frame must show as a gap at the next offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_fails_before_any_frame() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    publish_short_sample(&session).await;

    let wrong_link = session.link_with_key(sealcast_protocol::SessionKey::generate());
    let mut follower = session.follower_with_link(wrong_link);
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(FOLLOW_LIMIT, follower.next_event())
        .await
        .expect("the follower with the wrong key neither stopped nor reported")
    {
        events.push(event);
    }
    let error = follower
        .finish()
        .await
        .expect_err("the wrong key was accepted");
    assert_eq!(error.to_string(), "key does not match this session");
    assert!(
        events.is_empty(),
        "the follower reported events before failing: {events:?}"
    );

    // The same session opens with the right key, so there were frames to open.
    let outcome = follow_then_end(&session, FOLLOW_LIMIT).await;
    assert!(
        outcome.ended,
        "the follower with the right key did not see the end"
    );
    assert!(
        outcome.rejected.is_empty(),
        "rejected {:?}",
        outcome.rejected
    );
    assert!(
        !outcome.finals.is_empty(),
        "the session had no frames to open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_replay_and_reorder_are_rejected() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    publish_short_sample(&session).await;
    let relay = stop(relay);

    let session_id = session.created.session_id;
    let expected = replay_and_reorder(&FrameStore::open(data.path()), session_id);
    let _relay = restart(relay, data.path());

    let outcome = follow_then_end(&session, FOLLOW_LIMIT).await;
    let stored = stored_offsets(session_id, data.path());
    assert_rejected_only(
        "replayed and reordered frames",
        &outcome,
        &stored,
        &expected.rejections,
    );
    assert_eq!(
        outcome.gap_reports, expected.gaps,
        "a final frame moved behind its successor must show as a gap where it was skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_of_another_session_is_rejected() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let other = LiveSession::create(&relay, &staff).await;
    publish_short_sample(&session).await;
    publish_short_sample(&other).await;
    let relay = stop(relay);

    let session_id = session.created.session_id;
    let other_id = other.created.session_id;
    // A frame the other session's device sealed, and one sealed with this
    // session's key but for the other session.
    let same_key_frame = StreamSealer::new(&session.key, other_id)
        .seal_segment(&sample_finals()[0])
        .unwrap();
    let spliced = {
        let store = FrameStore::open(data.path());
        let foreign = store.frame(other_id, 3);
        let foreign_stream = store.header(other_id, 3).stream_id;
        let same_key_stream = FrameHeader::decode_frame(&same_key_frame)
            .unwrap()
            .stream_id;
        [
            store.append_frame(session_id, &foreign, foreign_stream),
            store.append_frame(session_id, &same_key_frame, same_key_stream),
        ]
    };
    let _relay = restart(relay, data.path());

    let outcome = follow_then_end(&session, FOLLOW_LIMIT).await;
    let wrong_session = ProtocolError::WrongSession {
        expected: session_id.to_string(),
        found: other_id.to_string(),
    }
    .to_string();
    let rejections: Vec<(u64, String)> = spliced
        .iter()
        .map(|offset| (*offset, wrong_session.clone()))
        .collect();
    let stored = stored_offsets(session_id, data.path());
    assert_rejected_only("frames of another session", &outcome, &stored, &rejections);
    assert!(
        outcome.gap_reports.is_empty(),
        "gaps {:?}",
        outcome.gap_reports
    );
}

/// What a follower must report for a session whose stored frames were edited.
struct ExpectedReports {
    /// Offset and reason of each rejected frame, in offset order.
    rejections: Vec<(u64, String)>,
    /// Offset and missing final frames of each gap report.
    gaps: Vec<(u64, u64)>,
}

/// Swaps the frames at offsets 4 and 5, and stores copies of the last frame
/// and of the frame at offset 2 after the last one. Returns what a follower
/// must report. The frame at offset 4 counts as skipped, because its
/// successor opens first.
fn replay_and_reorder(store: &FrameStore, session_id: SessionId) -> ExpectedReports {
    let last = *store.offsets(session_id).last().unwrap();
    let stream = store.header(session_id, 0).stream_id.to_string();
    let swapped = 4;
    let skipped = store.header(session_id, swapped);
    let overtaking = store.header(session_id, swapped + 1);
    let last_seq = store.header(session_id, last).seq;
    let early_seq = store.header(session_id, 2).seq;
    store.swap_frames(session_id, swapped, swapped + 1);

    let last_copy = store.append_frame(
        session_id,
        &store.frame(session_id, last),
        StreamId::random(),
    );
    let early_copy =
        store.append_frame(session_id, &store.frame(session_id, 2), StreamId::random());
    let rejections = [
        (
            swapped + 1,
            ProtocolError::Reordered {
                stream: stream.clone(),
                seq: skipped.seq,
                latest: overtaking.seq,
            },
        ),
        (
            last_copy,
            ProtocolError::Replay {
                stream: stream.clone(),
                seq: last_seq,
            },
        ),
        (
            early_copy,
            ProtocolError::Reordered {
                stream,
                seq: early_seq,
                latest: last_seq,
            },
        ),
    ];
    let rejections = rejections
        .into_iter()
        .map(|(offset, error)| (offset, error.to_string()))
        .collect();
    ExpectedReports {
        rejections,
        gaps: gap_if_final(skipped.kind, swapped),
    }
}

/// Returns the gap report expected at `next_offset` when a frame of `kind` before it was lost.
fn gap_if_final(kind: FrameKind, next_offset: u64) -> Vec<(u64, u64)> {
    match kind {
        FrameKind::Interim | FrameKind::Checkpoint => vec![],
        FrameKind::Final | FrameKind::EndOfSession => vec![(next_offset, 1)],
    }
}

/// Publishes the opening of the sample consultation with interim revisions,
/// then the end frame, and waits until the relay acknowledged all of it. The
/// session stays open, so that a follower can still join it.
async fn publish_short_sample(session: &LiveSession) {
    let mut publisher = session.publisher().await;
    for segment in short_sample() {
        publisher.publish(&segment).await.unwrap();
    }
    let report = publisher.end().await.unwrap();
    assert_eq!(report.acknowledged_seq, Some(report.frames - 1));
}

fn short_sample() -> Vec<TranscriptSegment> {
    let finals: Vec<TranscriptSegment> =
        sample_finals().into_iter().take(SAMPLE_SEGMENTS).collect();
    interim::expand_all(finals).unwrap()
}

/// Stops the relay gracefully and returns it for a restart on the same address.
fn stop(mut relay: RelayProcess) -> RelayProcess {
    let status = relay.terminate();
    assert!(status.success(), "the relay exited with {status}");
    relay
}

/// Starts a relay on the stopped one's address and data directory.
fn restart(stopped: RelayProcess, data_dir: &Path) -> RelayProcess {
    let listen = stopped.addr.to_string();
    drop(stopped);
    RelayProcess::start(data_dir, &listen, &[])
}

/// Returns every offset stored for a session. SQLite allows this read while the relay runs.
fn stored_offsets(session_id: SessionId, data_dir: &Path) -> Vec<u64> {
    FrameStore::open(data_dir).offsets(session_id)
}

/// Flips the bit of `case` in a stored frame of the session and returns the
/// frame's offset and the error the follower must report for it.
fn apply_flip(store: &FrameStore, session: &LiveSession, case: &BitFlip) -> (u64, String) {
    let session_id = session.created.session_id;
    let offset = target_offset(store, session_id, case.target);
    let original = store.frame(session_id, offset);
    let byte = byte_index(case.position, original.len());
    store.flip_bit(session_id, offset, byte, case.bit);

    let tampered = store.frame(session_id, offset);
    let header = FrameHeader::decode_frame(&original).unwrap();
    (offset, expected_error(case.expected, &header, &tampered))
}

fn byte_index(position: Position, frame_len: usize) -> usize {
    match position {
        Position::Start(index) => index,
        Position::End(back) => frame_len - back,
    }
}

/// Picks the first frame of `kind` at an odd offset that has a frame after it.
fn target_offset(store: &FrameStore, session_id: SessionId, kind: FrameKind) -> u64 {
    let offsets = store.offsets(session_id);
    let last = *offsets.last().unwrap();
    offsets
        .into_iter()
        .filter(|offset| offset % 2 == 1 && *offset < last)
        .find(|offset| store.header(session_id, *offset).kind == kind)
        .unwrap_or_else(|| panic!("the sample has no {kind:?} frame at an odd offset"))
}

/// Reads the header of a frame whose header fields may have been altered.
fn header_of(frame: &[u8]) -> FrameHeader {
    FrameHeader::decode_frame(frame).unwrap()
}

/// Builds the message for a rejection from the frame before and after the flip.
fn expected_error(rejection: Rejection, original: &FrameHeader, tampered: &[u8]) -> String {
    if let Rejection::EpochChanged = rejection {
        let tampered_epoch = u32::from_be_bytes(tampered[4..8].try_into().unwrap());
        return EpochError::StreamChangedEpoch {
            stream: original.stream_id.to_string(),
            first: 0,
            found: tampered_epoch,
        }
        .to_string();
    }
    expected_protocol_error(rejection, original, tampered).to_string()
}

fn expected_protocol_error(
    rejection: Rejection,
    original: &FrameHeader,
    tampered: &[u8],
) -> ProtocolError {
    match rejection {
        Rejection::EpochChanged => unreachable!("handled by expected_error"),
        Rejection::Decrypt => ProtocolError::Decrypt,
        Rejection::UnsupportedVersion => ProtocolError::UnsupportedVersion(tampered[0]),
        Rejection::UnknownKind => ProtocolError::UnknownKind(tampered[1]),
        Rejection::InvalidBucket => ProtocolError::InvalidBucket(tampered[2]),
        Rejection::LengthMismatch => ProtocolError::LengthMismatch {
            expected: HEADER_LEN + (256 << tampered[2]) + 16,
            actual: tampered.len(),
        },
        Rejection::ReservedFlags => ProtocolError::ReservedFlags(tampered[3]),
        Rejection::WrongSession => ProtocolError::WrongSession {
            expected: original.session_id.to_string(),
            found: SessionId(tampered[8..24].try_into().unwrap()).to_string(),
        },
        Rejection::Replay => {
            let seq = u64::from_be_bytes(tampered[40..48].try_into().unwrap());
            assert_eq!(
                seq + 1,
                original.seq,
                "the flip must point at the previous frame"
            );
            ProtocolError::Replay {
                stream: original.stream_id.to_string(),
                seq,
            }
        }
    }
}

/// Checks that the follower saw the session end, rejected exactly
/// `rejections` (offset and reason, in offset order) and opened every other
/// stored offset, each once and in order.
fn assert_rejected_only(
    name: &str,
    outcome: &FollowOutcome,
    stored: &[u64],
    rejections: &[(u64, String)],
) {
    assert!(
        outcome.ended,
        "{name}: the follower did not see the session end"
    );
    assert_eq!(
        outcome.disconnects, 0,
        "{name}: the follower lost its connection"
    );
    assert_eq!(outcome.rejected, rejections, "{name}: rejected frames");

    let rejected: Vec<u64> = rejections.iter().map(|(offset, _)| *offset).collect();
    let expected_opened: Vec<u64> = stored
        .iter()
        .copied()
        .filter(|offset| !rejected.contains(offset))
        .collect();
    assert_eq!(outcome.opened, expected_opened, "{name}: opened frames");
}

//! Key rotation in the middle of a real consultation, through the real
//! relay over TLS. The publisher rotates the session key after part of the
//! consultation. Follower A gets the new link a few frames later and ends
//! with the whole consultation in order, with no gap and no duplicate.
//! Follower B never gets it: it opens no frame of the new key epoch, reports
//! each one as unreadable, and still has everything sealed before the
//! rotation, with correct authorship verdicts for what it could open.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use sealcast_client::{
    FollowEvent, Follower, FollowerConfig, Publisher, PublisherConfig, SecretString,
};
use sealcast_protocol::authorship::{PublisherKey, Verdict};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{FollowInvite, StreamId, TranscriptSegment};
use sealcast_tests::faults::load_consultation;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::{wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;

/// Maximum wait for a follower to connect or to see the session end.
const LIMIT: Duration = Duration::from_secs(120);

/// Segments of the new epoch published before follower A gets the new link,
/// so that A keeps their frames until the key arrives.
const SEGMENTS_BEFORE_NEW_LINK: usize = 5;

/// What one follower reported until the session ended.
#[derive(Debug, Default)]
struct Seen {
    finals: Vec<TranscriptSegment>,
    final_streams: Vec<StreamId>,
    unreadable: Vec<(u64, u32)>,
    rejected: Vec<String>,
    gaps: u64,
    verdicts: Vec<(StreamId, Verdict)>,
    keys_added: Vec<(u32, u64)>,
    ended: bool,
}

/// Collects the follower's events until the session ends, counting frames
/// it could not open in `unreadable_count` as they arrive.
async fn collect(
    mut follower: Follower,
    unreadable_count: tokio::sync::watch::Sender<usize>,
) -> (Seen, sealcast_client::FollowReport) {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, follower.next_event())
            .await
            .expect("the session did not end in time");
        match event {
            Some(FollowEvent::SegmentFinal {
                stream_id, segment, ..
            }) => {
                seen.finals.push(segment);
                seen.final_streams.push(stream_id);
            }
            Some(FollowEvent::FrameUnreadable {
                offset, key_epoch, ..
            }) => {
                seen.unreadable.push((offset, key_epoch));
                unreadable_count.send_replace(seen.unreadable.len());
            }
            Some(FollowEvent::FrameRejected { reason, .. }) => seen.rejected.push(reason),
            Some(FollowEvent::Gap {
                missing_final_frames,
                ..
            }) => seen.gaps += missing_final_frames,
            Some(FollowEvent::StreamVerdict { stream_id, verdict }) => {
                seen.verdicts.push((stream_id, verdict))
            }
            Some(FollowEvent::KeyAdded {
                key_epoch,
                frames_opened,
            }) => seen.keys_added.push((key_epoch, frames_opened)),
            Some(FollowEvent::Ended) => seen.ended = true,
            Some(_) => {}
            None => break,
        }
    }
    let report = follower.finish().await.expect("following ends cleanly");
    (seen, report)
}

fn texts(segments: &[TranscriptSegment]) -> Vec<(u64, String, String)> {
    segments
        .iter()
        .map(|segment| {
            (
                segment.segment_id,
                segment.speaker.clone(),
                segment.text.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_reaches_only_followers_given_it() {
    let consultation = load_consultation("rotated_key_reaches_only_followers_given_it", 4);
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;

    let device = Arc::new(DeviceKey::generate().unwrap());
    let publisher_key = PublisherKey::of_device(&device);
    let first_invite = FollowInvite {
        link: session.link(),
        publisher: Some(publisher_key),
        key_epoch: 0,
    };
    let start = || {
        Follower::start(FollowerConfig::from_invite(
            first_invite.clone(),
            session.tls.clone(),
        ))
        .unwrap()
    };
    let (mut follower_a, mut follower_b) = (start(), start());
    wait_until_connected(&mut follower_a, LIMIT).await;
    wait_until_connected(&mut follower_b, LIMIT).await;
    let keys_a = follower_a.keys();
    let (unreadable_a, mut unreadable_seen_a) = tokio::sync::watch::channel(0);
    let (unreadable_b, _) = tokio::sync::watch::channel(0);
    let seen_a = tokio::spawn(collect(follower_a, unreadable_a));
    let seen_b = tokio::spawn(collect(follower_b, unreadable_b));

    let mut config = PublisherConfig::new(
        session.relay.clone(),
        session.created.session_id,
        session.auth.clone(),
        session.tls.clone(),
    )
    .with_identity(device);
    config.invite_token = Some(SecretString::new(session.created.invite_token.clone()));
    let mut publisher = Publisher::connect(config, &session.key).await.unwrap();

    let split = consultation.published.len() / 2;
    let (before, after) = consultation.published.split_at(split);
    assert!(
        after.len() > SEGMENTS_BEFORE_NEW_LINK,
        "{}: too short to rotate in the middle",
        consultation.name
    );
    for segment in before {
        publisher.publish(segment).await.unwrap();
    }
    let rotation = publisher.rotate_key().await.unwrap();
    assert_eq!(rotation.key_epoch, 1);
    assert_ne!(rotation.stream_id, rotation.closed_stream);

    // The link goes through its text form, as it would to a patient.
    let link = rotation.invite.to_url();
    assert!(link.contains("&epoch=1"), "{link}");
    let new_invite = FollowInvite::parse(&link).unwrap();
    assert_eq!(new_invite.key_epoch, 1);
    assert_eq!(new_invite.publisher, Some(publisher_key));
    assert_eq!(new_invite.link.token, session.created.invite_token);

    for (index, segment) in after.iter().enumerate() {
        if index == SEGMENTS_BEFORE_NEW_LINK {
            // Follower A must hold frames of the new epoch before its key
            // arrives, however slowly the frames travel on a busy machine.
            tokio::time::timeout(LIMIT, unreadable_seen_a.wait_for(|count| *count > 0))
                .await
                .expect("follower A got no frame of the new epoch before its key")
                .unwrap();
            keys_a
                .add_key(new_invite.key_epoch, new_invite.link.key.clone())
                .unwrap();
        }
        publisher.publish(segment).await.unwrap();
    }
    let report = publisher.end().await.unwrap();
    assert_eq!(report.key_epoch, 1);
    assert_eq!(report.stream_id, rotation.stream_id);
    // Every frame of the new stream, from seq 0 to the end frame, is acknowledged.
    let new_epoch_frames = report
        .acknowledged_seq
        .expect("the new stream is acknowledged")
        + 1;
    session.end().await;

    let (a, report_a) = seen_a.await.unwrap();
    let (b, report_b) = seen_b.await.unwrap();

    // A: the whole consultation, in order, once, with both streams verified.
    assert!(a.ended);
    assert_eq!(texts(&a.finals), texts(&consultation.finals));
    assert_eq!(a.gaps, 0);
    assert!(a.rejected.is_empty(), "{:?}", a.rejected);
    assert_eq!(report_a.frames_unreadable, 0);
    assert_eq!(report_a.duplicates_skipped, 0);
    assert_eq!(a.keys_added.len(), 1);
    assert_eq!(a.keys_added[0].0, 1);
    assert!(
        a.keys_added[0].1 > 0,
        "frames of epoch 1 should have arrived before the new link"
    );
    let a_streams: Vec<StreamId> = a.verdicts.iter().map(|(stream, _)| *stream).collect();
    assert_eq!(a.verdicts.len(), 2, "{:?}", a.verdicts);
    assert!(a_streams.contains(&rotation.closed_stream));
    assert!(a_streams.contains(&rotation.stream_id));
    for (stream, verdict) in &a.verdicts {
        assert_eq!(
            *verdict,
            Verdict::Complete {
                publisher: publisher_key,
                endorsed_by: None,
            },
            "stream {stream}"
        );
    }
    assert!(report_a.is_verified_complete());

    // B: everything before the rotation, and no frame of epoch 1.
    let finals_before: Vec<TranscriptSegment> = before
        .iter()
        .filter(|segment| segment.is_final)
        .cloned()
        .collect();
    assert!(b.ended);
    assert_eq!(texts(&b.finals), texts(&finals_before));
    assert!(b
        .final_streams
        .iter()
        .all(|stream| *stream == rotation.closed_stream));
    assert_eq!(b.unreadable.len() as u64, new_epoch_frames);
    assert!(b.unreadable.iter().all(|(_, key_epoch)| *key_epoch == 1));
    assert_eq!(report_b.frames_unreadable, new_epoch_frames);
    assert_eq!(b.gaps, 0);
    assert!(b.rejected.is_empty(), "{:?}", b.rejected);
    assert!(!report_b.end_of_session);
    assert_eq!(
        b.verdicts,
        [(
            rotation.closed_stream,
            Verdict::Complete {
                publisher: publisher_key,
                endorsed_by: None,
            }
        )]
    );
    assert!(!report_b.is_verified_complete());
}

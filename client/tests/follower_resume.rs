//! The follower against the loopback test relay: resuming after a dropped
//! connection, the fingerprint check, rejected frames and the end of a session.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_client::{
    Backoff, ClientError, FollowEvent, Follower, FollowerConfig, Publisher, PublisherConfig,
    RelayApi, TlsSettings, Transcript,
};
use sealcast_protocol::{InviteLink, SessionKey, TranscriptSegment};
use support::{Created, TestRelay};

/// Maximum time a test waits for the follower to finish.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: Some(20),
    }
}

fn tls(relay: &TestRelay) -> TlsSettings {
    TlsSettings::new(Some(&relay.ca_cert)).unwrap()
}

async fn create_session(relay: &TestRelay, key: &SessionKey) -> Created {
    relay.create_session(key).await
}

fn follower_config(relay: &TestRelay, created: &Created, key: &SessionKey) -> FollowerConfig {
    let link = InviteLink {
        relay: relay.url.clone(),
        token: created.invite_token.clone(),
        key: key.clone(),
    };
    // The follower gets the link as a patient would: as text.
    let link = InviteLink::parse(&link.to_url()).unwrap();
    let mut config = FollowerConfig::new(link, tls(relay));
    config.backoff = quick_backoff();
    config
}

fn revisions(id: u64) -> Vec<TranscriptSegment> {
    let text = format!("segment {id} says something");
    let words: Vec<&str> = text.split(' ').collect();
    (1..=words.len())
        .map(|count| TranscriptSegment {
            segment_id: id,
            revision: count as u32 - 1,
            speaker: if id.is_multiple_of(2) {
                "doctor"
            } else {
                "patient"
            }
            .into(),
            start_ms: id * 1000,
            end_ms: id * 1000 + count as u64 * 100,
            text: words[..count].join(" "),
            is_final: count == words.len(),
        })
        .collect()
}

/// Publishes `count` segments with interim revisions, then ends the session.
async fn publish_and_end(relay: &TestRelay, created: &Created, key: &SessionKey, count: u64) {
    let mut config = PublisherConfig::new(
        relay.url.clone(),
        created.session_id,
        created.device.authorizer(),
        tls(relay),
    );
    config.backoff = quick_backoff();
    let mut publisher = Publisher::connect(config, key).await.unwrap();
    for id in 0..count {
        for revision in revisions(id) {
            publisher.publish(&revision).await.unwrap();
        }
    }
    publisher.end().await.unwrap();
    RelayApi::new(&relay.url, &tls(relay))
        .unwrap()
        .end_session(&created.session_id, created.device.token().as_ref())
        .await
        .unwrap();
}

/// Collects every event until the follower stops, then its outcome.
async fn collect(
    mut follower: Follower,
) -> (
    Vec<FollowEvent>,
    Result<sealcast_client::FollowReport, ClientError>,
) {
    let run = async {
        let mut events = Vec::new();
        while let Some(event) = follower.next_event().await {
            events.push(event);
        }
        (events, follower.finish().await)
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("the follower did not finish in time")
}

fn final_texts(events: &[FollowEvent]) -> Vec<String> {
    let mut transcript = Transcript::new();
    for event in events {
        if let FollowEvent::SegmentFinal {
            stream_id, segment, ..
        }
        | FollowEvent::SegmentUpdated {
            stream_id, segment, ..
        } = event
        {
            transcript.apply(*stream_id, segment.clone());
        }
    }
    transcript
        .segments()
        .filter(|segment| segment.is_final)
        .map(|segment| segment.text.clone())
        .collect()
}

#[tokio::test]
async fn follower_resumes_after_dropped_connection() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    // Drop the follower mid-stream, with commits lagging so that the resume
    // overlaps frames the follower already opened.
    relay.faults.drop_follower_after.store(17, Ordering::SeqCst);
    relay.faults.commit_lag.store(4, Ordering::SeqCst);

    let follower = Follower::start(follower_config(&relay, &created, &key)).unwrap();
    let publishing = publish_and_end(&relay, &created, &key, 12);
    let ((events, outcome), ()) = tokio::join!(collect(follower), publishing);
    let report = outcome.unwrap();

    let expected: Vec<String> = (0..12)
        .map(|id| format!("segment {id} says something"))
        .collect();
    assert_eq!(final_texts(&events), expected);
    assert!(
        !events.iter().any(|event| matches!(
            event,
            FollowEvent::FrameRejected { .. } | FollowEvent::Gap { .. }
        )),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|event| matches!(event, FollowEvent::Disconnected { .. })));
    assert!(events
        .iter()
        .any(|event| matches!(event, FollowEvent::Connected { resumed: true, .. })));
    assert!(events
        .iter()
        .any(|event| matches!(event, FollowEvent::EndOfSession { .. })));
    assert_eq!(events.last(), Some(&FollowEvent::Ended));
    assert!(report.duplicates_skipped > 0, "{report:?}");
    assert!(report.end_of_session);
    assert_eq!(report.frames_rejected, 0);

    // The resume request carried the epoch and an offset below the last one received.
    let requests = relay.stats().follow_requests;
    assert_eq!(requests[0], (None, 0));
    let (epoch, from) = requests[1];
    assert_eq!(epoch, Some(created.epoch));
    assert!(from > 0, "resumed from {from}");
    assert!(from < 17, "resumed from {from}");
}

#[tokio::test]
async fn follower_joins_after_the_end_and_reads_history() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    publish_and_end(&relay, &created, &key, 3).await;

    let follower = Follower::start(follower_config(&relay, &created, &key)).unwrap();
    let (events, outcome) = collect(follower).await;
    outcome.unwrap();
    assert_eq!(final_texts(&events).len(), 3);
    assert!(matches!(
        events[0],
        FollowEvent::Connected {
            session_ended: true,
            resumed: false,
            ..
        }
    ));
    assert_eq!(events.last(), Some(&FollowEvent::Ended));
}

#[tokio::test]
async fn wrong_key_is_reported_before_any_frame() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    publish_and_end(&relay, &created, &key, 2).await;

    let wrong = SessionKey::generate();
    let follower = Follower::start(follower_config(&relay, &created, &wrong)).unwrap();
    let (events, outcome) = collect(follower).await;
    assert!(events.is_empty(), "{events:?}");
    let err = outcome.unwrap_err();
    assert_eq!(err.to_string(), "key does not match this session");
}

#[tokio::test]
async fn tampered_frame_is_rejected_and_reported_as_gap() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    // Offset 3 is the final revision of segment 0, after its three interim revisions.
    relay.faults.tamper_offset.store(3, Ordering::SeqCst);
    publish_and_end(&relay, &created, &key, 2).await;

    let follower = Follower::start(follower_config(&relay, &created, &key)).unwrap();
    let (events, outcome) = collect(follower).await;
    let report = outcome.unwrap();

    let rejected: Vec<&FollowEvent> = events
        .iter()
        .filter(|event| matches!(event, FollowEvent::FrameRejected { .. }))
        .collect();
    assert_eq!(
        rejected,
        [&FollowEvent::FrameRejected {
            offset: 3,
            reason: "frame failed to decrypt: it was altered or sealed under another key".into()
        }]
    );
    assert!(events.iter().any(|event| matches!(
        event,
        FollowEvent::Gap {
            offset: 4,
            missing_final_frames: 1,
            ..
        }
    )));
    // Segment 0 never became final; segment 1 did.
    assert_eq!(final_texts(&events), ["segment 1 says something"]);
    assert_eq!(report.frames_rejected, 1);
    assert_eq!(report.missing_final_frames, 1);
}

#[tokio::test]
async fn revoked_invite_is_final() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    let mut config = follower_config(&relay, &created, &key);
    config.link.token = URL_SAFE_NO_PAD.encode([0u8; 32]);
    config.backoff.max_attempts = None;

    let (events, outcome) = collect(Follower::start(config).unwrap()).await;
    assert!(events.is_empty(), "{events:?}");
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, ClientError::RelayStatus { status: 401, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("ask the clinic for a new link"),
        "{err}"
    );
}

//! The publisher against the loopback test relay: resending after a dropped
//! connection, the unacknowledged-frame window and final errors.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::BearerToken;
use sealcast_client::{
    Backoff, ClientError, Publisher, PublisherConfig, RelayApi, SecretString, TlsSettings,
};
use sealcast_protocol::api::CreateSessionRequest;
use sealcast_protocol::{FrameKind, SessionKey, StreamOpener, TranscriptSegment};
use support::{Created, TestRelay};

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_attempts: Some(20),
    }
}

async fn create_session(relay: &TestRelay, key: &SessionKey) -> Created {
    relay.create_session(key).await
}

fn config(relay: &TestRelay, created: &Created) -> PublisherConfig {
    let mut config = PublisherConfig::new(
        relay.url.clone(),
        created.session_id,
        created.device.authorizer(),
        TlsSettings::new(Some(&relay.ca_cert)).unwrap(),
    );
    config.backoff = quick_backoff();
    config
}

fn segment(id: u64) -> TranscriptSegment {
    TranscriptSegment {
        segment_id: id,
        revision: 0,
        speaker: if id.is_multiple_of(2) {
            "doctor"
        } else {
            "patient"
        }
        .into(),
        start_ms: id * 1000,
        end_ms: id * 1000 + 800,
        text: format!("utterance number {id}"),
        is_final: true,
    }
}

#[tokio::test]
async fn publisher_resends_after_dropped_connection() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    // The relay stores the 5th frame, then drops the connection before its ack.
    relay.faults.drop_publisher_after.store(5, Ordering::SeqCst);

    let mut publisher = Publisher::connect(config(&relay, &created), &key)
        .await
        .unwrap();
    let stream_id = publisher.stream_id();
    for id in 0..20 {
        assert_eq!(publisher.publish(&segment(id)).await.unwrap(), id);
    }
    let report = publisher.finish().await.unwrap();

    assert_eq!(report.stream_id, stream_id);
    assert_eq!(report.frames, 20);
    assert_eq!(report.acknowledged_seq, Some(19));
    assert_eq!(report.last_offset, Some(19));
    assert!(report.reconnects >= 1, "{report:?}");
    let stats = relay.stats();
    assert!(stats.publish_connections >= 2, "{stats:?}");
    assert!(stats.duplicate_frames >= 1, "{stats:?}");

    // Every frame is stored once, in order, and opens to the segment sent.
    let frames = relay.frames(&created.session_id);
    assert_eq!(frames.len(), 20);
    let mut opener = StreamOpener::new(key.clone(), created.session_id);
    for (id, frame) in frames.iter().enumerate() {
        let opened = opener.open(frame).unwrap();
        assert_eq!(opened.header.stream_id, stream_id);
        assert_eq!(opened.header.seq, id as u64);
        assert_eq!(opened.chain_verified, Some(true));
        assert_eq!(opened.segment().unwrap(), segment(id as u64));
    }
}

#[tokio::test]
async fn publisher_keeps_within_its_window() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    // The relay acknowledges only when no frame arrived for 30 ms, so a
    // publisher that ignored its window would send everything at once.
    relay.faults.batch_acks_ms.store(30, Ordering::SeqCst);

    let mut config = config(&relay, &created);
    config.window = 3;
    let mut publisher = Publisher::connect(config, &key).await.unwrap();
    for id in 0..15 {
        publisher.publish(&segment(id)).await.unwrap();
    }
    let report = publisher.finish().await.unwrap();

    assert_eq!(report.acknowledged_seq, Some(14));
    let stats = relay.stats();
    assert_eq!(stats.max_unacknowledged, 3, "{stats:?}");
    assert_eq!(relay.frames(&created.session_id).len(), 15);
}

#[tokio::test]
async fn end_seals_the_end_frame() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;

    let mut publisher = Publisher::connect(config(&relay, &created), &key)
        .await
        .unwrap();
    publisher.publish(&segment(0)).await.unwrap();
    let mut interim = segment(1);
    interim.is_final = false;
    publisher.publish(&interim).await.unwrap();
    let report = publisher.end().await.unwrap();
    assert_eq!(report.acknowledged_seq, Some(2));

    let frames = relay.frames(&created.session_id);
    let mut opener = StreamOpener::new(key, created.session_id);
    let kinds: Vec<FrameKind> = frames
        .iter()
        .map(|frame| opener.open(frame).unwrap().header.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            FrameKind::Final,
            FrameKind::Interim,
            FrameKind::EndOfSession
        ]
    );
    let end = opener.open(&frames[2]);
    assert!(end.is_err(), "a frame opened twice must be rejected");
}

#[tokio::test]
async fn wrong_token_fails_without_retrying() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    let mut config = config(&relay, &created);
    config.auth = Arc::new(BearerToken::new(SecretString::from("not-the-token")));
    config.backoff.max_attempts = None;

    let started = std::time::Instant::now();
    let err = Publisher::connect(config, &key).await.unwrap_err();
    assert!(
        matches!(err, ClientError::RelayStatus { status: 401, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(relay.stats().publish_connections, 0);
}

#[tokio::test]
async fn ended_session_is_final() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    let tls = TlsSettings::new(Some(&relay.ca_cert)).unwrap();
    let token = created.device.token();
    let api = RelayApi::new(&relay.url, &tls).unwrap();
    assert_eq!(
        api.end_session(&created.session_id, token.as_ref())
            .await
            .unwrap(),
        sealcast_client::EndOutcome::Ended
    );
    assert_eq!(
        api.end_session(&created.session_id, token.as_ref())
            .await
            .unwrap(),
        sealcast_client::EndOutcome::AlreadyEnded
    );

    let err = Publisher::connect(config(&relay, &created), &key)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::SessionEnded), "{err}");
}

#[tokio::test]
async fn second_publisher_replaces_the_first() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;

    let mut first = Publisher::connect(config(&relay, &created), &key)
        .await
        .unwrap();
    first.publish(&segment(0)).await.unwrap();
    let second = Publisher::connect(config(&relay, &created), &key)
        .await
        .unwrap();

    // The first publisher learns of its replacement on its next send at the latest.
    let mut outcome = Ok(0);
    for id in 1..50 {
        outcome = first.publish(&segment(id)).await;
        if outcome.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = match outcome {
        Err(err) => err,
        Ok(_) => first.finish().await.unwrap_err(),
    };
    assert!(matches!(err, ClientError::Replaced), "{err}");
    second.finish().await.unwrap();
}

#[tokio::test]
async fn untrusted_certificate_is_final() {
    let relay = TestRelay::start().await;
    let key = SessionKey::generate();
    let created = create_session(&relay, &key).await;
    let mut config = config(&relay, &created);
    config.tls = TlsSettings::public_roots();
    config.backoff.max_attempts = None;

    let err = Publisher::connect(config, &key).await.unwrap_err();
    assert!(
        matches!(err, ClientError::UntrustedCertificate { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--ca-cert"), "{err}");
}

#[tokio::test]
async fn api_rejects_bearer_in_place_of_device_token() {
    let relay = TestRelay::start().await;
    let tls = TlsSettings::new(Some(&relay.ca_cert)).unwrap();
    let request = CreateSessionRequest {
        fingerprint: SessionKey::generate().fingerprint().to_base64url(),
        invite_verifier: None,
        max_browsers: None,
    };
    let err = RelayApi::new(&relay.url, &tls)
        .unwrap()
        .create_session(&BearerToken::new(SecretString::from("wrong")), &request)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(message.contains("missing DPoP access token"), "{message}");
    assert!(message.contains("sealcast login"), "{message}");
}

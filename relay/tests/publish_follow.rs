//! Publish and follow over real TLS WebSockets: delivery, acknowledgements,
//! resume without gap or duplicate, session end, restart and shutdown.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{acks_until, start_relay, FollowItem, Publisher, Ws};
use sealcast_protocol::api::{close, FollowerEvent, PublisherEvent};
use sealcast_protocol::{StreamId, StreamOpener};
use sealcast_relay::Limits;

/// Reads a follower until it has received frames up to `last_offset` and the
/// commit of that offset. Returns the frames in arrival order.
async fn frames_until_committed(ws: &mut Ws, last_offset: u64) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        match ws.next_follow_item().await {
            FollowItem::Frame(offset, frame) => frames.push((offset, frame)),
            FollowItem::Event(FollowerEvent::Committed { offset }) if offset >= last_offset => {
                return frames
            }
            FollowItem::Event(FollowerEvent::Committed { .. }) => {}
            other => panic!("unexpected follower item {other:?}"),
        }
    }
}

fn offsets(frames: &[(u64, Vec<u8>)]) -> Vec<u64> {
    frames.iter().map(|(offset, _)| *offset).collect()
}

async fn expect_welcome(ws: &mut Ws, from: u64, ended: bool) -> FollowerEvent {
    let welcome: FollowerEvent = ws.next_event().await;
    match &welcome {
        FollowerEvent::Welcome {
            from_offset,
            ended: welcome_ended,
            ..
        } => {
            assert_eq!(*from_offset, from);
            assert_eq!(*welcome_ended, ended);
        }
        other => panic!("expected a welcome, got {other:?}"),
    }
    welcome
}

#[tokio::test]
async fn frames_round_trip_through_tls() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;

    let mut follower = relay.follow(&session, "?from=0").await;
    let welcome = expect_welcome(&mut follower, 0, false).await;
    assert_eq!(
        welcome,
        FollowerEvent::Welcome {
            session_id: session.session_id,
            epoch: session.epoch,
            fingerprint: key.fingerprint().to_base64url(),
            from_offset: 0,
            ended: false,
        }
    );

    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    let mut sent = Vec::new();
    for index in 0..5 {
        let frame = stream.next_frame(index % 2 == 1, 40);
        sent.push(frame.clone());
        publisher.send_binary(frame).await;
    }

    let acks = acks_until(&mut publisher, stream.stream_id(), 4).await;
    assert_eq!(acks.last(), Some(&(4, 4)));
    assert!(
        acks.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "acks out of order"
    );

    let received = frames_until_committed(&mut follower, 4).await;
    assert_eq!(offsets(&received), vec![0, 1, 2, 3, 4]);
    let mut opener = StreamOpener::new(key.clone(), session.session_id);
    for ((_, frame), original) in received.iter().zip(&sent) {
        assert_eq!(frame, original);
        let opened = opener.open(frame).unwrap();
        assert_eq!(opened.skipped_frames, 0);
        assert_eq!(opened.chain_verified, Some(true));
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn follower_resumes_across_history_and_live_without_gap() {
    // A small queue makes a small ring, so early frames come from the store.
    let limits = Limits {
        follower_queue_bytes: 70 * 1024,
        ..Limits::default()
    };
    let relay = start_relay(limits).await;
    let (session, key) = relay.create_session().await;
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    let stream_id = stream.stream_id();
    const TOTAL: u64 = 400;

    for _ in 0..250 {
        publisher.send_binary(stream.next_frame(true, 60)).await;
    }
    acks_until(&mut publisher, stream_id, 249).await;

    // Join while the rest is being published: history, then ring, then live.
    let mut from_start = relay.follow(&session, "?from=0").await;
    let mut from_middle = relay
        .follow(&session, &format!("?epoch={}&from=120", session.epoch))
        .await;
    let publishing = tokio::spawn(async move {
        for _ in 250..TOTAL {
            publisher.send_binary(stream.next_frame(true, 60)).await;
            tokio::task::yield_now().await;
        }
        acks_until(&mut publisher, stream_id, TOTAL - 1).await;
        publisher
    });

    expect_welcome(&mut from_start, 0, false).await;
    expect_welcome(&mut from_middle, 120, false).await;
    let all = frames_until_committed(&mut from_start, TOTAL - 1).await;
    assert_eq!(offsets(&all), (0..TOTAL).collect::<Vec<_>>());
    let tail = frames_until_committed(&mut from_middle, TOTAL - 1).await;
    assert_eq!(offsets(&tail), (120..TOTAL).collect::<Vec<_>>());

    let mut opener = StreamOpener::new(key.clone(), session.session_id);
    for (_, frame) in &all {
        assert_eq!(opener.open(frame).unwrap().chain_verified, Some(true));
    }
    publishing.await.unwrap();
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn resent_frames_are_acknowledged_not_stored() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut stream = Publisher::new(&key, &session);
    let frames: Vec<_> = (0..4).map(|_| stream.next_frame(true, 10)).collect();

    let mut publisher = relay.publish(&session).await;
    for frame in &frames[..3] {
        publisher.send_binary(frame.clone()).await;
    }
    acks_until(&mut publisher, stream.stream_id(), 2).await;
    drop(publisher);

    // After a reconnect the device resends a frame it had no ack for.
    let mut publisher = relay.publish(&session).await;
    publisher.send_binary(frames[1].clone()).await;
    let ack: PublisherEvent = publisher.next_event().await;
    assert_eq!(
        ack,
        PublisherEvent::Ack {
            stream_id: stream.stream_id(),
            seq: 2,
            offset: 2,
        }
    );
    publisher.send_binary(frames[3].clone()).await;
    assert_eq!(
        acks_until(&mut publisher, stream.stream_id(), 3).await,
        vec![(3, 3)]
    );

    let mut follower = relay.follow(&session, "").await;
    expect_welcome(&mut follower, 0, false).await;
    let received = frames_until_committed(&mut follower, 3).await;
    assert_eq!(offsets(&received), vec![0, 1, 2, 3]);
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn new_publisher_replaces_old() {
    let relay = start_relay(Limits::default()).await;
    let (session, _) = relay.create_session().await;
    let mut first = relay.publish(&session).await;
    let _second = relay.publish(&session).await;
    let (code, reason) = first.expect_close().await;
    assert_eq!(code, close::REPLACED);
    assert!(!reason.is_empty());
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn ending_session_closes_every_socket() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut follower = relay.follow(&session, "").await;
    expect_welcome(&mut follower, 0, false).await;
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    publisher.send_binary(stream.next_frame(true, 10)).await;
    publisher.send_binary(stream.next_frame(true, 10)).await;
    acks_until(&mut publisher, stream.stream_id(), 1).await;

    assert_eq!(relay.end_session(&session).await.as_u16(), 204);

    let (code, _) = publisher.expect_close().await;
    assert_eq!(code, close::SESSION_ENDED);
    let frames = frames_until_committed(&mut follower, 1).await;
    assert_eq!(offsets(&frames), vec![0, 1]);
    assert_eq!(
        follower.next_follow_item().await,
        FollowItem::Event(FollowerEvent::Ended)
    );
    assert!(matches!(
        follower.next_follow_item().await,
        FollowItem::Close(code, _) if code == close::SESSION_ENDED
    ));

    // The invite stops working once the session has ended.
    let late = relay
        .connect("/v1/follow", &session.invite_token, None)
        .await;
    assert!(matches!(
        late,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 410
    ));
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn follower_fetches_missed_tail_after_end() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    for _ in 0..3 {
        publisher.send_binary(stream.next_frame(true, 10)).await;
    }
    acks_until(&mut publisher, stream.stream_id(), 2).await;
    assert_eq!(relay.end_session(&session).await.as_u16(), 204);

    // A follower that was following (it names the epoch) gets the tail it
    // missed and the end, even though the session has ended meanwhile.
    let query = format!("?epoch={}&from=1", session.epoch);
    let mut resumed = relay.follow(&session, &query).await;
    expect_welcome(&mut resumed, 1, true).await;
    let frames = frames_until_committed(&mut resumed, 2).await;
    assert_eq!(offsets(&frames), vec![1, 2]);
    assert_eq!(
        resumed.next_follow_item().await,
        FollowItem::Event(FollowerEvent::Ended)
    );
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn offsets_and_streams_continue_after_restart() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut stream_a = Publisher::with_stream(&key, &session, StreamId([0xa; 16]));
    let frames_a: Vec<_> = (0..4).map(|_| stream_a.next_frame(true, 10)).collect();

    let mut publisher = relay.publish(&session).await;
    for frame in &frames_a[..3] {
        publisher.send_binary(frame.clone()).await;
    }
    acks_until(&mut publisher, stream_a.stream_id(), 2).await;
    drop(publisher);

    let relay = relay.restart(Limits::default()).await;
    let mut publisher = relay.publish(&session).await;
    publisher.send_binary(frames_a[3].clone()).await;
    assert_eq!(
        acks_until(&mut publisher, stream_a.stream_id(), 3).await,
        vec![(3, 3)]
    );
    let mut stream_b = Publisher::with_stream(&key, &session, StreamId([0xb; 16]));
    publisher.send_binary(stream_b.next_frame(false, 10)).await;
    assert_eq!(
        acks_until(&mut publisher, stream_b.stream_id(), 0).await,
        vec![(0, 4)]
    );
    publisher.send_binary(frames_a[0].clone()).await;
    assert_eq!(
        acks_until(&mut publisher, stream_a.stream_id(), 3).await,
        vec![(3, 3)]
    );

    let mut follower = relay
        .follow(&session, &format!("?epoch={}", session.epoch))
        .await;
    expect_welcome(&mut follower, 0, false).await;
    assert_eq!(
        offsets(&frames_until_committed(&mut follower, 4).await),
        vec![0, 1, 2, 3, 4]
    );

    let mut wrong_epoch = relay
        .follow(
            &session,
            &format!("?epoch={}", session.epoch.wrapping_add(1)),
        )
        .await;
    assert_eq!(wrong_epoch.expect_close().await.0, close::CANNOT_RECOVER);
    let mut beyond = relay.follow(&session, "?from=6").await;
    let (code, reason) = beyond.expect_close().await;
    assert_eq!(code, close::CANNOT_RECOVER);
    assert!(reason.contains("offset 6"), "reason {reason:?}");
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_acknowledges_then_goes_away() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut follower = relay.follow(&session, "").await;
    expect_welcome(&mut follower, 0, false).await;
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    for _ in 0..50 {
        publisher.send_binary(stream.next_frame(true, 10)).await;
    }
    // Every frame is accepted once the follower has it.
    let mut delivered = 0;
    while delivered < 50 {
        if let FollowItem::Frame(..) = follower.next_follow_item().await {
            delivered += 1;
        }
    }

    let stopping = tokio::spawn(relay.handle.shutdown());
    let acks = acks_until(&mut publisher, stream.stream_id(), 49).await;
    assert_eq!(acks.last(), Some(&(49, 49)));
    assert_eq!(publisher.expect_close().await.0, close::GOING_AWAY);
    assert_eq!(follower.expect_close().await.0, close::GOING_AWAY);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn silent_peer_times_out() {
    let limits = Limits {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let relay = start_relay(limits).await;
    let (session, _) = relay.create_session().await;
    let mut follower = relay.follow(&session, "").await;
    let mut publisher = relay.publish(&session).await;

    // A client that does not read sends no pongs. The relay closes after
    // 300-400 ms, then waits 1 s for the close reply before dropping the
    // connection, so reading at 900 ms finds the close frame.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(follower.expect_close().await.0, close::TIMEOUT);
    assert_eq!(publisher.expect_close().await.0, close::TIMEOUT);
    relay.handle.shutdown().await;
}

/// Stores a frame row at `offset` behind the relay's back, so that the
/// relay's next commit for the session fails its offset check.
/// Stores a frame behind the relay's back, sealed with the development
/// at-rest key as the relay would seal it.
fn inject_stored_frame(data_dir: &std::path::Path, session_id: &[u8; 16], offset: i64) {
    let keys = sealcast_relay::at_rest::unlock_existing(
        data_dir,
        &sealcast_relay::at_rest::KeySource::Development,
    )
    .unwrap();
    let sealed = keys
        .data_keys()
        .frame_cipher(session_id)
        .seal(offset as u64, b"injected");
    let conn = rusqlite::Connection::open(data_dir.join("relay.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
            received_at, frame) VALUES (?1, ?2, ?3, 0, 2, 1, 0, ?4)",
        rusqlite::params![session_id, offset, [0xeeu8; 16].as_slice(), sealed],
    )
    .unwrap();
}

#[tokio::test]
async fn commit_failure_closes_sockets_and_rebuilds() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut stream = Publisher::new(&key, &session);
    let frames: Vec<_> = (0..2).map(|_| stream.next_frame(true, 10)).collect();

    let mut publisher = relay.publish(&session).await;
    let mut follower = relay.follow(&session, "").await;
    expect_welcome(&mut follower, 0, false).await;
    publisher.send_binary(frames[0].clone()).await;
    acks_until(&mut publisher, stream.stream_id(), 0).await;

    inject_stored_frame(relay.data_dir(), session.session_id.as_bytes(), 1);
    publisher.send_binary(frames[1].clone()).await;
    assert_eq!(publisher.expect_close().await.0, close::INTERNAL_ERROR);
    assert_eq!(follower.expect_close().await.0, close::INTERNAL_ERROR);
    let failures = common::metric_value(
        &relay.metrics().await,
        "sealcast_store_write_failures_total{reason=\"rejected\"}",
    );
    assert!(failures >= 1.0, "failed store write not counted");

    // The next connection rebuilds the session from the store.
    let mut publisher = relay.publish(&session).await;
    publisher.send_binary(frames[1].clone()).await;
    assert_eq!(
        acks_until(&mut publisher, stream.stream_id(), 1).await,
        vec![(1, 2)]
    );
    let mut follower = relay.follow(&session, "").await;
    expect_welcome(&mut follower, 0, false).await;
    let received = frames_until_committed(&mut follower, 2).await;
    assert_eq!(offsets(&received), vec![0, 1, 2]);
    assert_eq!(received[1].1, b"injected");
    assert_eq!(received[2].1, frames[1]);
    relay.handle.shutdown().await;
}

//! A follower that pauses long enough to overflow its queue is detached,
//! catches up from the store and still receives every frame exactly once.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{acks_until, metric_value, start_relay, FollowItem, Publisher, TestRelay};
use sealcast_protocol::api::FollowerEvent;
use sealcast_relay::Limits;

/// Upper bound on frames published while waiting for the detachment.
const MAX_FRAMES: u64 = 20_000;

/// Pause after each published frame.
const PUBLISH_PACE: Duration = Duration::from_millis(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_follower_catches_up_from_store() {
    let limits = Limits {
        follower_queue_bytes: 96 * 1024,
        ..Limits::default()
    };
    let relay = start_relay(limits).await;
    let (session, key) = relay.create_session().await;
    let mut follower = relay
        .connect("/v1/follow", &session.invite_token, Some(4096))
        .await
        .unwrap();
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    let stream_id = stream.stream_id();

    // Publish 4 KiB frames until `stop` is set, then return how many were sent.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_publishing = stop.clone();
    let mut publishing = Some(tokio::spawn(async move {
        let mut sent = 0;
        while sent < MAX_FRAMES && !stop_publishing.load(Ordering::Relaxed) {
            publisher.send_binary(stream.next_frame(true, 3000)).await;
            sent += 1;
            // Paced, so that between the detachment and `stop` fewer frames
            // arrive than the follower's queue holds. Unpaced, they could
            // detach the catching-up follower again and again until the
            // relay closes it as lagged.
            tokio::time::sleep(PUBLISH_PACE).await;
        }
        acks_until(&mut publisher, stream_id, sent - 1).await;
        sent
    }));

    let mut next = 0;
    let mut total = None;
    loop {
        match follower.next_follow_item().await {
            FollowItem::Frame(offset, _) => {
                assert_eq!(offset, next, "gap or duplicate after catching up");
                next += 1;
                if let Some(task) = publishing.take_if(|_| next == 20) {
                    // Stop reading until the relay gives up on live delivery.
                    wait_for_detach(&relay).await;
                    stop.store(true, Ordering::Relaxed);
                    total = Some(task.await.unwrap());
                }
            }
            FollowItem::Event(FollowerEvent::Committed { offset }) if Some(offset + 1) == total => {
                break
            }
            FollowItem::Event(_) => {}
            FollowItem::Close(code, reason) => panic!("follower closed: {code} {reason}"),
        }
    }
    assert_eq!(Some(next), total);

    let metrics = relay.metrics().await;
    assert_eq!(
        metric_value(&metrics, "sealcast_followers_lagged_total"),
        0.0
    );
    relay.handle.shutdown().await;
}

/// Waits until the relay has detached a follower from live fan-out. The
/// kernel's socket buffers on loopback take megabytes first.
async fn wait_for_detach(relay: &TestRelay) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_value(&relay.metrics().await, "sealcast_followers_detached_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the paused follower was never detached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

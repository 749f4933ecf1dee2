//! A follower that never reads must not stall the publisher or another
//! follower, and the relay's queue for it must stay bounded.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{metric_value, start_relay, FollowItem, Publisher};
use futures_util::{SinkExt, StreamExt};
use sealcast_protocol::api::{close, FollowerEvent, PublisherEvent};
use sealcast_protocol::StreamId;
use sealcast_relay::Limits;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const FRAMES: u64 = 10_000;
const QUEUE_BYTES: usize = 128 * 1024;
/// Frames sent between two 1 ms pauses of the publisher.
const PACE_EVERY: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_does_not_stall_others() {
    let limits = Limits {
        follower_queue_bytes: QUEUE_BYTES,
        write_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let relay = start_relay(limits).await;
    let (session, key) = relay.create_session().await;

    // A 4 KiB receive buffer that is never read fills almost at once.
    let path = "/v1/follow";
    let stalled = relay
        .connect(path, &session.invite_token, Some(4096))
        .await
        .unwrap();
    let mut reader = relay.follow(&session, "").await;
    let publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);
    let stream_id = stream.stream_id();
    let started = Instant::now();

    let reading = tokio::spawn(async move {
        let mut next = 0;
        loop {
            match reader.next_follow_item().await {
                FollowItem::Frame(offset, _) => {
                    assert_eq!(offset, next, "gap or duplicate at the reading follower");
                    next += 1;
                }
                FollowItem::Event(FollowerEvent::Committed { offset }) if offset == FRAMES - 1 => {
                    return next;
                }
                FollowItem::Event(_) => {}
                FollowItem::Close(code, reason) => {
                    panic!("reading follower closed: {code} {reason}")
                }
            }
        }
    });

    let (mut sink, mut acks) = publisher.inner.split();
    let sending = tokio::spawn(async move {
        for sent in 0..FRAMES {
            let frame = stream.next_frame(true, 300);
            sink.send(Message::Binary(frame.into())).await.unwrap();
            // A short pause now and then lets the reading follower, which
            // shares this process's two runtime threads, keep up on a busy
            // machine. Unpaced, it could fall behind repeatedly and be closed
            // as lagged, which is not what this test is about.
            if sent % PACE_EVERY == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sink
    });

    // Sample the bytes queued for all followers while frames flow.
    let (stop_sampling, mut stopped) = oneshot::channel::<()>();
    let http = relay.http.clone();
    let metrics_url = relay.url("/metrics");
    let sampling = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        loop {
            let text = http
                .get(&metrics_url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            peak = peak.max(metric_value(&text, "sealcast_follower_queue_bytes"));
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });

    let last_ack = read_acks_until(&mut acks, FRAMES - 1).await;
    assert_eq!(last_ack, (stream_id, FRAMES - 1, FRAMES - 1));
    let publish_time = started.elapsed();
    assert_eq!(reading.await.unwrap(), FRAMES);
    let _sink = sending.await.unwrap();
    stop_sampling.send(()).unwrap();
    let peak = sampling.await.unwrap();

    // Each of the two followers' queues contains at most QUEUE_BYTES.
    assert!(peak > 0.0, "no queued bytes were ever sampled");
    assert!(
        peak <= 2.0 * QUEUE_BYTES as f64,
        "follower queues peaked at {peak} bytes"
    );
    let metrics = relay.metrics().await;
    let detached = metric_value(&metrics, "sealcast_followers_detached_total");
    let lagged = metric_value(&metrics, "sealcast_followers_lagged_total");
    assert!(
        detached + lagged >= 1.0,
        "the stalled follower was never detached or closed"
    );
    println!("published {FRAMES} frames in {publish_time:?}; queue peak {peak} bytes; detached {detached}, lagged {lagged}");

    // The stalled follower's blocked write times out and it is closed as lagged.
    let closes = format!(
        "sealcast_websocket_closes_total{{role=\"follower\",code=\"{}\"}}",
        close::LAGGED
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_value(&relay.metrics().await, &closes) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "stalled follower was never closed as lagged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
    relay.handle.shutdown().await;
}

/// Reads publisher acknowledgements until one covers `seq` and returns it.
async fn read_acks_until<S>(acks: &mut S, seq: u64) -> (StreamId, u64, u64)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), acks.next())
            .await
            .expect("publisher stalled: no acknowledgement for 30 s")
            .expect("publish socket ended")
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        match serde_json::from_str(text.as_str()).unwrap() {
            PublisherEvent::Ack {
                stream_id,
                seq: acked,
                offset,
            } if acked >= seq => return (stream_id, acked, offset),
            PublisherEvent::Ack { .. } => {}
            other => panic!("unexpected publisher event {other:?}"),
        }
    }
}

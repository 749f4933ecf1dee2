//! A commit held up in the store delays only the publisher's acknowledgement:
//! followers get the frame as soon as it arrives, and the acknowledgement and
//! the follower's `committed` event follow the commit.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{acks_until, start_relay, FollowItem, Publisher};
use sealcast_protocol::api::FollowerEvent;
use sealcast_relay::Limits;

/// How long the test holds the database's write lock. The relay's writer
/// waits up to 5 s for the lock before its commit fails.
const HOLD: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_commit_delays_only_the_ack() {
    let relay = start_relay(Limits::default()).await;
    let (session, key) = relay.create_session().await;
    let mut follower = relay.follow(&session, "?from=0").await;
    let welcome: FollowerEvent = follower.next_event().await;
    assert!(matches!(welcome, FollowerEvent::Welcome { .. }));
    let mut publisher = relay.publish(&session).await;
    let mut stream = Publisher::new(&key, &session);

    // Another connection takes the write lock, so the relay's writer waits
    // at the start of its next transaction.
    let lock = rusqlite::Connection::open(relay.data_dir().join("relay.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    publisher.send_binary(stream.next_frame(true, 100)).await;

    let delivered = tokio::time::timeout(HOLD / 2, follower.next_follow_item()).await;
    match delivered {
        Ok(FollowItem::Frame(offset, _)) => assert_eq!(offset, 0),
        Ok(other) => panic!("expected frame 0, got {other:?}"),
        Err(_) => panic!("the follower waited for the held commit"),
    }
    let early = tokio::time::timeout(HOLD / 2, publisher.next_message()).await;
    assert!(early.is_err(), "acknowledged before the commit: {early:?}");

    lock.execute_batch("ROLLBACK").unwrap();
    let acks = acks_until(&mut publisher, stream.stream_id(), 0).await;
    assert_eq!(acks, vec![(0, 0)]);
    match follower.next_follow_item().await {
        FollowItem::Event(FollowerEvent::Committed { offset }) => assert_eq!(offset, 0),
        other => panic!("expected the commit of offset 0, got {other:?}"),
    }
    relay.handle.shutdown().await;
}

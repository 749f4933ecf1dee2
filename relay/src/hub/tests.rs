use std::time::Duration;

use sealcast_protocol::{FrameHeader, SessionKey, StreamId, StreamSealer, TranscriptSegment};

use super::*;
use crate::store::{NewSession, Store};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    registry: Registry,
    record: SessionRecord,
    key: SessionKey,
}

async fn fixture(ring_budget: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &crate::db::Backend::Sqlite(dir.path().join(crate::store::DATABASE_FILE)),
        &crate::at_rest::KeySource::Development,
    )
    .await
    .unwrap();
    let session_id = SessionId::random();
    store
        .create_session(NewSession {
            session_id,
            epoch: 42,
            fingerprint: [7; 16],
            invite_token_hash: [2; 32],
            invite_verifier: None,
            max_browsers: 1,
            created_at: 0,
            organization_id: None,
            created_by_user: None,
            created_by_device: None,
        })
        .await
        .unwrap();
    let record = store.session(session_id).await.unwrap().unwrap();
    Fixture {
        registry: Registry::new(store.clone(), ring_budget, crate::fanout::Fanout::Local),
        _dir: dir,
        store,
        record,
        key: SessionKey::generate(),
    }
}

impl Fixture {
    fn sealer(&self, stream: u8) -> StreamSealer {
        StreamSealer::with_stream_id(&self.key, self.record.session_id, StreamId([stream; 16]))
    }

    async fn offer(&self, hub: &HubLease, frame: &[u8]) -> Offer {
        let header = FrameHeader::decode_frame(frame).unwrap();
        let offer = hub.hub().offer(&header, frame, 0);
        hub.hub().enqueue_writes(&self.store).await.unwrap();
        offer
    }

    fn database_path(&self) -> std::path::PathBuf {
        self._dir.path().join(crate::store::DATABASE_FILE)
    }
}

/// Reserves every free place in the store's write queue, so that the next
/// reservation waits until one of these permits is dropped.
async fn fill_write_queue(store: &Store) -> Vec<crate::store::WritePermit<'_>> {
    let mut permits = Vec::new();
    while let Ok(permit) = tokio::time::timeout(Duration::from_millis(20), store.reserve()).await {
        permits.push(permit.unwrap());
    }
    assert!(!permits.is_empty(), "the write queue had no free place");
    permits
}

/// Takes the database's write lock on a connection of its own, which holds
/// the store writer at its next `BEGIN IMMEDIATE` until the lock is released.
fn hold_write_lock(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

fn committed(hub: &HubLease) -> u64 {
    hub.watch_progress().borrow().committed
}

fn segment(text: &str, is_final: bool) -> TranscriptSegment {
    TranscriptSegment {
        segment_id: 1,
        revision: 0,
        speaker: "clinician".into(),
        start_ms: 0,
        end_ms: 10,
        text: text.into(),
        is_final,
    }
}

fn sealed(sealer: &mut StreamSealer, is_final: bool) -> Vec<u8> {
    sealer.seal_segment(&segment("words", is_final)).unwrap()
}

async fn wait_committed(hub: &HubLease, committed: u64) {
    let mut progress = hub.watch_progress();
    progress
        .wait_for(|progress| progress.committed >= committed)
        .await
        .unwrap();
}

fn drain(subscription: &Subscription) -> Vec<u64> {
    let mut offsets = Vec::new();
    while let Popped::Frame(frame) = subscription.queue().pop() {
        offsets.push(frame.offset);
    }
    offsets
}

#[tokio::test]
async fn sequences_and_offsets_survive_hub_reload() {
    let fixture = fixture(1 << 20).await;
    let mut stream_a = fixture.sealer(1);
    let frames: Vec<_> = (0..5).map(|_| sealed(&mut stream_a, true)).collect();

    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    for (offset, frame) in frames.iter().take(3).enumerate() {
        let offer = fixture.offer(&hub, frame).await;
        assert_eq!(
            offer,
            Offer::Accepted {
                offset: offset as u64
            }
        );
    }
    wait_committed(&hub, 3).await;
    drop(hub);
    assert_eq!(fixture.registry.len(), 0, "idle hub stayed in memory");

    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    assert_eq!(hub.next_offset(), 3);
    assert_eq!(
        fixture.offer(&hub, &frames[1]).await,
        Offer::Duplicate { seq: 2, offset: 2 }
    );
    assert_eq!(
        fixture.offer(&hub, &frames[4]).await,
        Offer::Gap { expected: 3 }
    );
    assert_eq!(
        fixture.offer(&hub, &frames[3]).await,
        Offer::Accepted { offset: 3 }
    );

    let mut stream_b = fixture.sealer(2);
    let first_b = sealed(&mut stream_b, false);
    assert_eq!(
        fixture.offer(&hub, &first_b).await,
        Offer::Accepted { offset: 4 }
    );
    wait_committed(&hub, 5).await;
}

#[tokio::test]
async fn subscriber_gets_ring_then_live_frames_once() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    for _ in 0..5 {
        fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    }

    let Subscribe::Live(subscription) = hub.hub().subscribe(2, 1 << 20) else {
        panic!("follower at offset 2 was not subscribed from the ring");
    };
    for _ in 0..3 {
        fixture.offer(&hub, &sealed(&mut sealer, false)).await;
    }

    assert_eq!(drain(&subscription), (2..8).collect::<Vec<_>>());
    assert!(matches!(subscription.queue().pop(), Popped::Empty));
}

#[tokio::test]
async fn trimmed_ring_sends_follower_to_store() {
    let fixture = fixture(1).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    for _ in 0..4 {
        fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    }
    wait_committed(&hub, 4).await;

    assert!(matches!(
        hub.hub().subscribe(0, 1 << 20),
        Subscribe::Behind { ring_start: 4 }
    ));
    let Subscribe::Live(subscription) = hub.hub().subscribe(4, 1 << 20) else {
        panic!("follower at the next offset was not subscribed");
    };
    fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    assert_eq!(drain(&subscription), vec![4]);
}

#[tokio::test]
async fn full_queue_detaches_follower() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let frame_len = sealed(&mut fixture.sealer(9), true).len() + 8;

    let Subscribe::Live(subscription) = hub.hub().subscribe(0, 3 * frame_len) else {
        panic!("follower was not subscribed");
    };
    for _ in 0..4 {
        fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    }
    assert!(matches!(subscription.queue().pop(), Popped::Detached));
}

#[tokio::test]
async fn ended_session_refuses_frames() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    fixture.offer(&hub, &sealed(&mut sealer, true)).await;

    let permit = fixture.store.reserve().await.unwrap();
    let committed = hub.hub().begin_end(permit, 5).unwrap();
    assert_eq!(
        fixture.offer(&hub, &sealed(&mut sealer, true)).await,
        Offer::Ended
    );
    committed.await.unwrap().unwrap();
    assert_eq!(hub.watch_progress().borrow().end, Some(1));

    let permit = fixture.store.reserve().await.unwrap();
    assert_eq!(
        hub.hub().begin_end(permit, 6).unwrap_err(),
        EndRefused::AlreadyEnded
    );
}

#[tokio::test]
async fn publisher_seat_replaces_previous_holder() {
    let fixture = fixture(1 << 20).await;
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let first = hub.hub().attach_publisher().unwrap();
    assert!(!first.replaced().is_cancelled());
    let second = hub.hub().attach_publisher().unwrap();
    assert!(first.replaced().is_cancelled());
    drop(first);
    assert!(!second.replaced().is_cancelled());
}

#[tokio::test]
async fn fan_out_precedes_room_in_store_queue() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let Subscribe::Live(subscription) = hub.hub().subscribe(0, 1 << 20) else {
        panic!("follower was not subscribed");
    };
    let permits = fill_write_queue(&fixture.store).await;

    let frame = sealed(&mut sealer, true);
    let header = FrameHeader::decode_frame(&frame).unwrap();
    assert_eq!(
        hub.hub().offer(&header, &frame, 0),
        Offer::Accepted { offset: 0 }
    );
    assert_eq!(
        drain(&subscription),
        vec![0],
        "fan-out waited for the store"
    );

    let store = fixture.store.clone();
    let publisher_hub = Arc::clone(hub.hub());
    let enqueue = tokio::spawn(async move { publisher_hub.enqueue_writes(&store).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !enqueue.is_finished(),
        "the publisher was not held back by the full store queue"
    );
    assert_eq!(committed(&hub), 0, "frame committed before it was stored");

    drop(permits);
    enqueue.await.unwrap().unwrap();
    wait_committed(&hub, 1).await;
}

#[tokio::test]
async fn commit_waits_for_held_writer() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let Subscribe::Live(subscription) = hub.hub().subscribe(0, 1 << 20) else {
        panic!("follower was not subscribed");
    };

    // The writer's busy timeout is 5 s: the lock is held for far less.
    let lock = hold_write_lock(&fixture.database_path());
    for _ in 0..3 {
        fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    }
    assert_eq!(drain(&subscription), vec![0, 1, 2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        committed(&hub),
        0,
        "frames committed while the writer was held"
    );

    lock.execute_batch("ROLLBACK").unwrap();
    wait_committed(&hub, 3).await;
    let tail = fixture.store.session_tail(fixture.record.session_id).await;
    assert_eq!(tail.unwrap().next_offset, 3);
}

#[tokio::test]
async fn end_queues_behind_unstored_frames() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let mut permits = fill_write_queue(&fixture.store).await;

    let frame = sealed(&mut sealer, true);
    let header = FrameHeader::decode_frame(&frame).unwrap();
    hub.hub().offer(&header, &frame, 0);
    let store = fixture.store.clone();
    let publisher_hub = Arc::clone(hub.hub());
    let enqueue = tokio::spawn(async move { publisher_hub.enqueue_writes(&store).await });

    // The end's permit carries the frame; the end waits for the publisher's call.
    let end_permit = permits.pop().unwrap();
    let ended = hub.hub().begin_end(end_permit, 5).unwrap();
    drop(permits);

    enqueue.await.unwrap().unwrap();
    ended.await.unwrap().unwrap();
    assert_eq!(hub.watch_progress().borrow().end, Some(1));
    assert_eq!(committed(&hub), 1);
    let tail = fixture.store.session_tail(fixture.record.session_id).await;
    assert_eq!(tail.unwrap().next_offset, 1);
}

#[tokio::test]
async fn stopped_store_fails_unstored_frames() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();

    let frame = sealed(&mut sealer, true);
    let header = FrameHeader::decode_frame(&frame).unwrap();
    hub.hub().offer(&header, &frame, 0);
    fixture.store.close().await;

    let enqueued = hub.hub().enqueue_writes(&fixture.store).await;
    assert!(
        matches!(enqueued, Err(StoreError::WriterStopped)),
        "{enqueued:?}"
    );
    assert!(hub.watch_progress().borrow().failed.is_some());
    assert_eq!(
        fixture.offer(&hub, &sealed(&mut sealer, true)).await,
        Offer::Unavailable
    );
}

#[tokio::test]
async fn commits_do_not_wake_lifecycle_watchers() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let lifecycle = hub.hub().watch_lifecycle();

    fixture.offer(&hub, &sealed(&mut sealer, true)).await;
    wait_committed(&hub, 1).await;
    assert!(!lifecycle.has_changed().unwrap());

    let permit = fixture.store.reserve().await.unwrap();
    let ended = hub.hub().begin_end(permit, 5).unwrap();
    ended.await.unwrap().unwrap();
    assert!(lifecycle.has_changed().unwrap());
    assert_eq!(lifecycle.borrow().end, Some(1));
}

/// A second node's view of the fixture's session: its own store handle on
/// the same database and its own registry.
async fn second_node(fixture: &Fixture) -> (Store, Registry) {
    let store = Store::open(
        fixture._dir.path(),
        &crate::db::Backend::Sqlite(fixture._dir.path().join(crate::store::DATABASE_FILE)),
        &crate::at_rest::KeySource::Development,
    )
    .await
    .unwrap();
    let registry = Registry::new(store.clone(), 1 << 20, crate::fanout::Fanout::Local);
    (store, registry)
}

/// Returns the follow-socket message of a committed frame and its header.
fn remote(offset: u64, frame: &[u8]) -> (FrameHeader, Bytes) {
    let header = FrameHeader::decode_frame(frame).unwrap();
    let delivery = Bytes::from(sealcast_protocol::api::encode_delivery(offset, frame));
    (header, delivery)
}

#[tokio::test]
async fn remote_frames_apply_in_offset_order_once() {
    let fixture = fixture(1 << 20).await;
    let (_store, node_b) = second_node(&fixture).await;
    let follower_hub = node_b.lease(&fixture.record).await.unwrap();
    let Subscribe::Live(subscription) = follower_hub.hub().subscribe(0, 1 << 20) else {
        panic!("follower did not go live");
    };

    let mut sealer = fixture.sealer(1);
    let frames: Vec<Vec<u8>> = (0..3).map(|_| sealed(&mut sealer, true)).collect();
    let (header_1, delivery_1) = remote(1, &frames[1]);
    assert_eq!(
        follower_hub
            .hub()
            .apply_remote_frame(1, &header_1, delivery_1.clone()),
        Applied::Gap { expected: 0 }
    );
    let (header_0, delivery_0) = remote(0, &frames[0]);
    assert_eq!(
        follower_hub
            .hub()
            .apply_remote_frame(0, &header_0, delivery_0.clone()),
        Applied::Appended
    );
    assert_eq!(
        follower_hub
            .hub()
            .apply_remote_frame(0, &header_0, delivery_0),
        Applied::Known
    );
    assert_eq!(
        follower_hub
            .hub()
            .apply_remote_frame(1, &header_1, delivery_1),
        Applied::Appended
    );
    assert_eq!(drain(&subscription), vec![0, 1]);
    assert_eq!(committed(&follower_hub), 2);

    // A frame from the local publisher's stream position on after the remote ones.
    let (header_2, _) = remote(2, &frames[2]);
    assert!(follower_hub.hub().lock().check(&header_2).is_none());
}

#[tokio::test]
async fn catch_up_reads_frames_and_end_from_store() {
    let fixture = fixture(1 << 20).await;
    let mut sealer = fixture.sealer(1);
    let (store_b, node_b) = second_node(&fixture).await;
    let follower_hub = node_b.lease(&fixture.record).await.unwrap();
    let Subscribe::Live(subscription) = follower_hub.hub().subscribe(0, 1 << 20) else {
        panic!("follower did not go live");
    };

    // Node A publishes and ends the session; node B hears nothing of it.
    let publisher_hub = fixture.registry.lease(&fixture.record).await.unwrap();
    for _ in 0..4 {
        let frame = sealed(&mut sealer, true);
        fixture.offer(&publisher_hub, &frame).await;
    }
    wait_committed(&publisher_hub, 4).await;
    assert_eq!(
        follower_hub.hub().apply_remote_end(4),
        Applied::Gap { expected: 0 }
    );
    let permit = fixture.store.reserve().await.unwrap();
    publisher_hub
        .hub()
        .begin_end(permit, 9)
        .unwrap()
        .await
        .unwrap()
        .unwrap();

    let applied = follower_hub
        .hub()
        .catch_up(&store_b, CatchUpTrigger::Reconnect)
        .await
        .unwrap();
    assert_eq!(applied, 4);
    assert_eq!(drain(&subscription), vec![0, 1, 2, 3]);
    let progress = *follower_hub.watch_progress().borrow();
    assert_eq!(progress.committed, 4);
    assert_eq!(progress.end, Some(4));

    // A second catch-up finds nothing new and NATS duplicates change nothing.
    let again = follower_hub
        .hub()
        .catch_up(&store_b, CatchUpTrigger::Gap)
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(follower_hub.hub().apply_remote_end(4), Applied::Known);
    assert!(drain(&subscription).is_empty());
}

#[tokio::test]
async fn remote_frame_does_not_overtake_local_uncommitted_frames() {
    let fixture = fixture(1 << 20).await;
    let mut local = fixture.sealer(1);
    let mut other = fixture.sealer(2);
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let permits = fill_write_queue(&fixture.store).await;

    // Offset 0 goes to a local frame whose write waits for the store.
    let frame = sealed(&mut local, true);
    let header = FrameHeader::decode_frame(&frame).unwrap();
    assert_eq!(
        hub.hub().offer(&header, &frame, 0),
        Offer::Accepted { offset: 0 }
    );

    let (header_remote, delivery) = remote(1, &sealed(&mut other, true));
    assert_eq!(
        hub.hub().apply_remote_frame(1, &header_remote, delivery),
        Applied::Known
    );
    drop(permits);
    hub.hub().enqueue_writes(&fixture.store).await.unwrap();
}

#[tokio::test]
async fn replayed_publisher_message_keeps_later_publisher() {
    let fixture = fixture(1 << 20).await;
    let hub = fixture.registry.lease(&fixture.record).await.unwrap();
    let seat = hub.hub().attach_publisher().unwrap();
    let attached_at = hub.hub().lock().publisher_attached_at;

    // A message about an attach on another node before this one is old.
    hub.hub().evict_publisher_attached_before(attached_at - 1);
    assert!(!seat.replaced().is_cancelled());
    hub.hub().evict_publisher_attached_before(attached_at);
    assert!(!seat.replaced().is_cancelled());

    hub.hub().evict_publisher_attached_before(attached_at + 1);
    assert!(seat.replaced().is_cancelled());
}

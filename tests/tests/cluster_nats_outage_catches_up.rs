//! A NATS outage in the middle of a consultation loses nothing. The test's
//! NATS server stops for about 3 s and starts again on the same port while
//! node A keeps taking frames. Every node's `/readyz` returns 503 during
//! the outage and 200 after it. Every frame node A acknowledged is in the
//! store, and the followers on nodes B and C end up with every frame once
//! and in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_tests::cluster::Cluster;
use sealcast_tests::cluster_clinician::NodeClinician;
use sealcast_tests::faults::{
    assert_acknowledged_stored, assert_every_offset_once, assert_follower_complete,
    load_consultation,
};
use sealcast_tests::session::{follow_until_end, wait_until_connected};
use sealcast_tests::store::FrameStore;

const TEST: &str = "cluster_nats_outage_catches_up";

/// Time over which the publisher spreads the consultation, so that it
/// publishes before, during and after the outage.
const PUBLISH_SPAN: Duration = Duration::from_secs(10);

/// Time the consultation runs before NATS stops.
const BEFORE_OUTAGE: Duration = Duration::from_secs(2);

/// Time NATS stays down.
const OUTAGE: Duration = Duration::from_secs(3);

/// Maximum wait for `/readyz` to return 503 after NATS stops.
const NOT_READY_LIMIT: Duration = Duration::from_millis(2500);

/// Maximum wait for `/readyz` to return 200 after NATS starts again.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Maximum wait for a follower to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Maximum time a follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);

const NODES: usize = 3;
const NODE_A: usize = 0;
const NODE_B: usize = 1;
const NODE_C: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_catch_up_after_nats_returns() {
    let mut cluster = Cluster::start(NODES);
    for node in 0..NODES {
        cluster.wait_for_readyz(node, 200, READY_LIMIT).await;
    }
    let clinician = NodeClinician::sign_in(&cluster, NODE_A).await;
    let consultation = load_consultation(TEST, 5);
    println!(
        "consultation {}: {} frames",
        consultation.name,
        consultation.published.len()
    );
    let session = clinician.create_session().await;
    let session_id = session.created.session_id;

    let mut followers = Vec::new();
    for node in [NODE_B, NODE_C] {
        let mut follower = session.follower_at(&cluster.node_url(node));
        wait_until_connected(&mut follower, CONNECT_LIMIT).await;
        followers.push((node, tokio::spawn(follow_until_end(follower, FOLLOW_LIMIT))));
    }
    let publishing = clinician
        .publish(&session, &consultation, PUBLISH_SPAN)
        .await;

    tokio::time::sleep(BEFORE_OUTAGE).await;
    let acknowledged_before = publishing.acknowledged();
    cluster.nats_mut().stop();
    let outage_start = tokio::time::Instant::now();
    println!("NATS stopped; acknowledged {acknowledged_before:?}");
    tokio::join!(
        cluster.wait_for_readyz(NODE_A, 503, NOT_READY_LIMIT),
        cluster.wait_for_readyz(NODE_B, 503, NOT_READY_LIMIT),
        cluster.wait_for_readyz(NODE_C, 503, NOT_READY_LIMIT),
    );
    tokio::time::sleep_until(outage_start + OUTAGE).await;

    let acknowledged_during = publishing.acknowledged();
    println!("restarting NATS; acknowledged {acknowledged_during:?}");
    assert_acknowledged_stored(
        cluster.data_dir(),
        session_id,
        publishing.stream_id,
        acknowledged_during,
        "at the end of the outage",
    );
    for node in 0..NODES {
        let status = cluster.readyz(node).await;
        assert_eq!(
            status,
            Some(503),
            "node {node}'s /readyz at the end of the outage"
        );
    }
    assert!(
        !publishing.is_done(),
        "the publisher finished during the outage: lengthen PUBLISH_SPAN"
    );
    cluster.nats_mut().start();
    for node in 0..NODES {
        cluster.wait_for_readyz(node, 200, READY_LIMIT).await;
    }
    println!(
        "every node ready {} ms after NATS started",
        (tokio::time::Instant::now() - outage_start - OUTAGE).as_millis()
    );

    let stream_id = publishing.stream_id;
    let report = publishing.join().await.end().await.unwrap();
    let frames = consultation.published.len() as u64;
    println!("publisher {report:?}");
    assert_eq!(
        report.acknowledged_seq,
        Some(frames),
        "the end frame was not acknowledged"
    );
    session.end().await;

    for (node, task) in followers {
        let who = format!("follower on node {node}");
        let outcome = task.await.unwrap();
        println!("{who}: {}", outcome.summary());
        assert_follower_complete(&who, &outcome, &consultation.finals);
        assert_every_offset_once(&who, &outcome, frames);
    }

    for (node, success) in cluster.terminate() {
        assert!(success, "node {node} did not exit cleanly");
    }
    let store = FrameStore::open(cluster.data_dir());
    let expected: Vec<u64> = (0..=frames).collect();
    assert_eq!(store.stream_seqs(session_id, stream_id), expected);
    let offsets = store.offsets(session_id);
    let contiguous: Vec<u64> = (0..offsets.len() as u64).collect();
    assert_eq!(offsets, contiguous, "stored offsets have a gap");
}

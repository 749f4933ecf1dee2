//! A relay node killed with SIGKILL in the middle of a consultation moves
//! its follower to another node. The follower reaches the cluster through
//! the load balancer, which first puts it on node B. After B is killed, the
//! balancer sends the follower's reconnection to B, finds it refused and
//! moves on to node C, where the follower resumes with no gap and no
//! duplicate. The publisher on node A keeps its one connection throughout.

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

const TEST: &str = "cluster_node_kill_moves_followers";

/// Time over which the publisher spreads the consultation, so that it is
/// still publishing well after the kill.
const PUBLISH_SPAN: Duration = Duration::from_secs(8);

/// Time the consultation runs before node B is killed.
const BEFORE_KILL: Duration = Duration::from_millis(2500);

/// Maximum wait for a follower to connect, or to reconnect after the kill.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Maximum time a follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);

const NODE_A: usize = 0;
const NODE_B: usize = 1;
const NODE_C: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_of_killed_node_resumes_on_another() {
    let mut cluster = Cluster::start(3);
    let clinician = NodeClinician::sign_in(&cluster, NODE_A).await;
    let consultation = load_consultation(TEST, 3);
    println!(
        "consultation {}: {} frames",
        consultation.name,
        consultation.published.len()
    );
    let session = clinician.create_session().await;
    let session_id = session.created.session_id;

    // The follower that moves connects through the balancer, routed to B.
    // The sign-in went through the balancer too, so B's count starts above 0.
    let forwarded_to_b = cluster.balancer().forwarded_to(NODE_B);
    cluster.balancer().route_to(&[NODE_B]);
    let mut moving = session.follower_at(&cluster.public_url());
    wait_until_connected(&mut moving, CONNECT_LIMIT).await;
    assert_eq!(
        cluster.balancer().forwarded_to(NODE_B),
        forwarded_to_b + 1,
        "the balancer forwarded no follower connection to node B: {}",
        cluster.balancer().summary()
    );
    // New connections try B first, then C.
    cluster.balancer().route_to(&[NODE_B, NODE_C]);
    let moving = tokio::spawn(follow_until_end(moving, FOLLOW_LIMIT));

    // A follower on C directly, which the kill does not touch.
    let mut steady = session.follower_at(&cluster.node_url(NODE_C));
    wait_until_connected(&mut steady, CONNECT_LIMIT).await;
    let steady = tokio::spawn(follow_until_end(steady, FOLLOW_LIMIT));

    let publishing = clinician
        .publish(&session, &consultation, PUBLISH_SPAN)
        .await;

    tokio::time::sleep(BEFORE_KILL).await;
    let forwarded_to_c = cluster.balancer().forwarded_to(NODE_C);
    cluster.kill(NODE_B);
    let acknowledged = publishing.acknowledged();
    println!("node B killed; acknowledged {acknowledged:?}");
    assert_acknowledged_stored(
        cluster.data_dir(),
        session_id,
        publishing.stream_id,
        acknowledged,
        "after the kill",
    );

    let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
    while cluster.balancer().forwarded_to(NODE_C) == forwarded_to_c {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower of node B did not reconnect through the balancer within {} s: {}",
            CONNECT_LIMIT.as_secs(),
            cluster.balancer().summary()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.balancer().failed_at(NODE_B) >= 1,
        "the balancer never tried the killed node B: {}",
        cluster.balancer().summary()
    );
    assert!(
        !publishing.is_done(),
        "the publisher finished before the follower moved: lengthen PUBLISH_SPAN"
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
    assert_eq!(report.reconnects, 0, "the publisher on node A reconnected");
    session.end().await;

    let moving = moving.await.unwrap();
    println!("follower moved from B: {}", moving.summary());
    assert_follower_complete("follower moved from B", &moving, &consultation.finals);
    assert_every_offset_once("follower moved from B", &moving, frames);
    assert!(
        moving.disconnects >= 1,
        "the follower on node B never saw the kill"
    );
    let steady = steady.await.unwrap();
    println!("follower on C: {}", steady.summary());
    assert_follower_complete("follower on C", &steady, &consultation.finals);
    assert_every_offset_once("follower on C", &steady, frames);
    assert_eq!(
        steady.disconnects, 0,
        "the follower on node C was disconnected"
    );

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

//! A PostgreSQL restart in the middle of a consultation loses nothing.
//! Three relay nodes share a PostgreSQL server of the test's own, which
//! stops with a fast shutdown, closing every connection and rolling back
//! open transactions, and starts again on the same port about 3 s later,
//! while node A keeps taking frames. Every node's `/readyz` returns 503
//! while the server is down and 200 after. Node A acknowledges nothing it
//! did not commit: every frame acknowledged before the restart is stored
//! after it. The publisher resends what was not acknowledged, and the
//! followers on nodes B and C end up with every frame once and in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_tests::cluster::Cluster;
use sealcast_tests::cluster_clinician::NodeClinician;
use sealcast_tests::faults::{
    assert_acknowledged_stored, assert_every_offset_once, assert_follower_complete,
    load_consultation,
};
use sealcast_tests::postgres_server::PostgresServer;
use sealcast_tests::session::{follow_until_end, wait_until_connected};
use sealcast_tests::store::FrameStore;

const TEST: &str = "cluster_postgres_restart_loses_nothing";

/// Time over which the publisher spreads the consultation.
const PUBLISH_SPAN: Duration = Duration::from_secs(12);

/// Time the consultation runs before PostgreSQL stops.
const BEFORE_OUTAGE: Duration = Duration::from_secs(2);

/// Time PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(3);

/// Maximum wait for `/readyz` to return 503 after PostgreSQL stops.
const NOT_READY_LIMIT: Duration = Duration::from_millis(2500);

/// Maximum wait for `/readyz` to return 200 after PostgreSQL starts again.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Maximum wait for a follower to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Maximum time a follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(120);

const NODES: usize = 3;
const NODE_A: usize = 0;
const NODE_B: usize = 1;
const NODE_C: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_a_postgres_restart() {
    let mut postgres = PostgresServer::start("sealcast");
    let mut cluster = Cluster::start_with_database(NODES, Some(postgres.url("sealcast")));
    for node in 0..NODES {
        cluster.wait_for_readyz(node, 200, READY_LIMIT).await;
    }
    let clinician = NodeClinician::sign_in(&cluster, NODE_A).await;
    let consultation = load_consultation(TEST, 7);
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
    assert!(
        acknowledged_before.is_some(),
        "nothing was acknowledged before the restart: lengthen BEFORE_OUTAGE"
    );
    tokio::task::block_in_place(|| postgres.stop());
    let outage_start = tokio::time::Instant::now();
    println!("PostgreSQL stopped; acknowledged {acknowledged_before:?}");
    tokio::join!(
        cluster.wait_for_readyz(NODE_A, 503, NOT_READY_LIMIT),
        cluster.wait_for_readyz(NODE_B, 503, NOT_READY_LIMIT),
        cluster.wait_for_readyz(NODE_C, 503, NOT_READY_LIMIT),
    );
    tokio::time::sleep_until(outage_start + OUTAGE).await;
    let acknowledged_during = publishing.acknowledged();
    assert!(
        !publishing.is_done(),
        "the publisher finished during the outage: lengthen PUBLISH_SPAN"
    );
    println!("restarting PostgreSQL; acknowledged {acknowledged_during:?}");
    tokio::task::block_in_place(|| postgres.start_again());

    for node in 0..NODES {
        cluster.wait_for_readyz(node, 200, READY_LIMIT).await;
    }
    println!(
        "every node ready {} ms after PostgreSQL started",
        (tokio::time::Instant::now() - outage_start - OUTAGE).as_millis()
    );
    // What the publisher saw acknowledged before the server went away is
    // in the store of the restarted server.
    tokio::task::block_in_place(|| {
        assert_acknowledged_stored(
            cluster.data_dir(),
            session_id,
            publishing.stream_id,
            acknowledged_during,
            "after the restart",
        )
    });

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
    tokio::task::block_in_place(|| {
        let store = FrameStore::open(cluster.data_dir());
        let expected: Vec<u64> = (0..=frames).collect();
        assert_eq!(store.stream_seqs(session_id, stream_id), expected);
        let offsets = store.offsets(session_id);
        let contiguous: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, contiguous, "stored offsets have a gap");
    });
}

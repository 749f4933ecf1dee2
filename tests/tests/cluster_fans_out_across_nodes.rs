//! Three relay nodes on one data directory, fanning out through a NATS
//! server of the test's own: consultations published on node A reach
//! followers on nodes B and C complete, in order and once each. A follower
//! that joins node C halfway through catches up from the store and then
//! follows live.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast_tests::cluster::Cluster;
use sealcast_tests::cluster_clinician::NodeClinician;
use sealcast_tests::faults::{
    assert_acknowledged_stored, assert_every_offset_once, assert_follower_complete,
    assert_no_text_in_output, load_consultation,
};
use sealcast_tests::session::{
    follow_counting_finals, follow_until_end, wait_until_connected, FollowOutcome,
};
use sealcast_tests::store::FrameStore;
use tokio::task::JoinHandle;

const TEST: &str = "cluster_fans_out_across_nodes";

/// Consultations published at the same time, each in its own session.
const CONSULTATIONS: usize = 3;

/// Time over which each publisher spreads its consultation.
const PUBLISH_SPAN: Duration = Duration::from_secs(4);

/// Maximum wait for a follower to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// Maximum time a follower may take to see its session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);

const NODE_A: usize = 0;
const NODE_B: usize = 1;
const NODE_C: usize = 2;

/// One session's followers, named for messages, with their tasks.
struct Followers {
    tasks: Vec<(String, JoinHandle<FollowOutcome>)>,
    /// The node of each follower that was there from the start, with the
    /// count of final segments it has received so far.
    live: Vec<(usize, Arc<AtomicUsize>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_followers_on_other_nodes() {
    let mut cluster = Cluster::start(3);
    let clinician = NodeClinician::sign_in(&cluster, NODE_A).await;

    let mut sessions = Vec::new();
    for index in 0..CONSULTATIONS {
        let consultation = load_consultation(TEST, index * 7);
        println!(
            "session {index}: consultation {}, {} frames",
            consultation.name,
            consultation.published.len()
        );
        let session = clinician.create_session().await;
        let mut followers = Followers {
            tasks: Vec::new(),
            live: Vec::new(),
        };
        for node in [NODE_B, NODE_C] {
            let mut follower = session.follower_at(&cluster.node_url(node));
            wait_until_connected(&mut follower, CONNECT_LIMIT).await;
            let finals_seen = Arc::new(AtomicUsize::new(0));
            followers.live.push((node, Arc::clone(&finals_seen)));
            followers.tasks.push((
                format!("session {index}, follower on node {node}"),
                tokio::spawn(follow_counting_finals(follower, FOLLOW_LIMIT, finals_seen)),
            ));
        }
        sessions.push((consultation, session, followers));
    }

    let mut publishing = Vec::new();
    for (consultation, session, _) in &sessions {
        publishing.push(clinician.publish(session, consultation, PUBLISH_SPAN).await);
    }

    // Halfway through, every follower has final segments already. Without
    // the fan-out they would come only from the store, when a node finds
    // the session idle for 5 s.
    tokio::time::sleep(PUBLISH_SPAN / 2).await;
    for (index, (_, _, followers)) in sessions.iter().enumerate() {
        for (node, finals_seen) in &followers.live {
            assert!(
                finals_seen.load(Ordering::Relaxed) > 0,
                "session {index}: the follower on node {node} received no final segment in the first {} ms of publishing",
                (PUBLISH_SPAN / 2).as_millis()
            );
        }
    }

    // Then a follower joins each session on node C.
    for (index, (_, session, followers)) in sessions.iter_mut().enumerate() {
        assert!(
            !publishing[index].is_done(),
            "session {index}'s publisher finished before the late follower joined: lengthen PUBLISH_SPAN"
        );
        let mut late = session.follower_at(&cluster.node_url(NODE_C));
        wait_until_connected(&mut late, CONNECT_LIMIT).await;
        followers.tasks.push((
            format!("session {index}, late follower on node {NODE_C}"),
            tokio::spawn(follow_until_end(late, FOLLOW_LIMIT)),
        ));
    }

    let mut streams = Vec::new();
    for (index, publisher) in publishing.into_iter().enumerate() {
        let stream_id = publisher.stream_id;
        let report = publisher.join().await.end().await.unwrap();
        let frames = sessions[index].0.published.len() as u64;
        println!("session {index}: publisher {report:?}");
        assert_eq!(
            report.acknowledged_seq,
            Some(frames),
            "session {index}: the end frame was not acknowledged"
        );
        assert_eq!(
            report.reconnects, 0,
            "session {index}: the publisher reconnected"
        );
        streams.push((stream_id, frames));
    }
    for (_, session, _) in &sessions {
        session.end().await;
    }

    // Frames reached B and C as NATS messages, not only from the store.
    let total_frames: u64 = streams.iter().map(|(_, frames)| frames + 1).sum();
    let published = cluster.metrics(NODE_A).await;
    let published_frames =
        published.value("sealcast_fanout_published_total", &[("event", "frame")]);
    assert!(
        published_frames >= total_frames as f64,
        "node A published {published_frames} frames to NATS, expected {total_frames}"
    );
    for node in [NODE_B, NODE_C] {
        let scrape = cluster.metrics(node).await;
        let received = scrape.value("sealcast_fanout_received_total", &[("event", "frame")]);
        assert!(
            received >= total_frames as f64,
            "node {node} received {received} frames from NATS, expected {total_frames}"
        );
    }

    for (index, (consultation, _, followers)) in sessions.iter_mut().enumerate() {
        let (_, frames) = streams[index];
        for (who, task) in followers.tasks.drain(..) {
            let outcome = task.await.unwrap();
            println!("{who}: {}", outcome.summary());
            assert_follower_complete(&who, &outcome, &consultation.finals);
            assert_every_offset_once(&who, &outcome, frames);
        }
    }

    for (node, success) in cluster.terminate() {
        assert!(success, "node {node} did not exit cleanly");
    }
    for node in 0..cluster.len() {
        for (consultation, _, _) in &sessions {
            assert_no_text_in_output(&cluster.node(node).output(), consultation);
        }
    }
    let store = FrameStore::open(cluster.data_dir());
    for (index, (_, session, _)) in sessions.iter().enumerate() {
        let session_id = session.created.session_id;
        let (stream_id, frames) = streams[index];
        assert_acknowledged_stored(
            cluster.data_dir(),
            session_id,
            stream_id,
            Some(frames),
            &format!("session {index} after the end"),
        );
        let expected: Vec<u64> = (0..=frames).collect();
        assert_eq!(
            store.stream_seqs(session_id, stream_id),
            expected,
            "session {index}: stored sequence numbers"
        );
    }
}

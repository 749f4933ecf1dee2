//! A relay killed with SIGKILL five times at random moments of a real
//! consultation, and restarted each time on the same data directory, loses
//! no frame it acknowledged. After every kill the store contains each frame
//! that the publisher saw acknowledged, and at the end every follower,
//! including one that joins after the last restart, has the whole
//! transcript once and in order.
//!
//! The kill moments come from a seed that the test prints. Set
//! `SEALCAST_KILL_SEED` to that value to replay a failed run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sealcast_tests::faults::{
    assert_acknowledged_stored, assert_follower_complete, assert_no_text_in_output,
    load_consultation, BackgroundPublish,
};
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::{follow_until_end, wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::store::FrameStore;

/// Kills in one run.
const KILLS: usize = 5;

/// Range of the time the relay runs before each kill, in milliseconds.
const ALIVE_MS: std::ops::Range<u64> = 300..1500;

/// Range of the time the relay stays down after each kill, in milliseconds.
const DOWN_MS: std::ops::Range<u64> = 50..400;

/// Time over which the publisher spreads the consultation, so that it is
/// still publishing during every kill.
const PUBLISH_SPAN: Duration = Duration::from_secs(8);

/// Maximum time a follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_five_times_loses_nothing() {
    let seed = std::env::var("SEALCAST_KILL_SEED")
        .ok()
        .map(|text| text.parse().expect("SEALCAST_KILL_SEED is a u64"))
        .unwrap_or_else(rand::random::<u64>);
    println!("kill seed {seed}: set SEALCAST_KILL_SEED={seed} to replay this run");
    let mut rng = StdRng::seed_from_u64(seed);
    let consultation = load_consultation("relay_killed_five_times_loses_nothing", seed as usize);
    println!(
        "consultation {}: {} frames",
        consultation.name,
        consultation.published.len()
    );

    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let listen = relay.addr.to_string();
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let session_id = session.created.session_id;

    let mut followers = Vec::new();
    for _ in 0..2 {
        let mut follower = session.follower();
        wait_until_connected(&mut follower, FOLLOW_LIMIT).await;
        followers.push(tokio::spawn(follow_until_end(follower, FOLLOW_LIMIT)));
    }
    let pause = PUBLISH_SPAN / consultation.published.len() as u32;
    let publishing = BackgroundPublish::start(
        session.publisher().await,
        consultation.published.clone(),
        pause,
    );

    for kill in 1..=KILLS {
        let alive = rng.gen_range(ALIVE_MS);
        let down = rng.gen_range(DOWN_MS);
        tokio::time::sleep(Duration::from_millis(alive)).await;
        relay.kill();

        // Every acknowledgement the publisher saw came from the killed relay.
        let acknowledged = publishing.acknowledged();
        println!("kill {kill} after {alive} ms, acknowledged {acknowledged:?}, down {down} ms");
        let when = format!("after kill {kill} (seed {seed})");
        assert_acknowledged_stored(
            data.path(),
            session_id,
            publishing.stream_id,
            acknowledged,
            &when,
        );
        tokio::time::sleep(Duration::from_millis(down)).await;
        relay = RelayProcess::start(data.path(), &listen, &[]);
    }
    assert!(
        !publishing.is_done(),
        "the publisher finished before the last kill (seed {seed}): lengthen PUBLISH_SPAN"
    );

    // This follower catches up from the store of the restarted relay.
    let mut late = session.follower();
    wait_until_connected(&mut late, FOLLOW_LIMIT).await;
    followers.push(tokio::spawn(follow_until_end(late, FOLLOW_LIMIT)));

    let stream_id = publishing.stream_id;
    let report = publishing.join().await.end().await.unwrap();
    let frames = consultation.published.len() as u64;
    assert!(
        report.reconnects as usize >= KILLS,
        "the publisher reconnected {} times for {KILLS} kills",
        report.reconnects
    );
    assert_eq!(report.frames, frames + 1, "frames sent, end frame included");
    assert_eq!(report.acknowledged_seq, Some(frames));
    session.end().await;

    for (index, follower) in followers.into_iter().enumerate() {
        let outcome = follower.await.unwrap();
        let who = format!("follower {index} (seed {seed})");
        assert_follower_complete(&who, &outcome, &consultation.finals);
        if index < 2 {
            assert!(outcome.disconnects >= 1, "{who} never saw a kill");
        }
    }

    let status = relay.terminate();
    assert!(status.success(), "relay exited with {status}");
    assert_no_text_in_output(&relay.output(), &consultation);
    let store = FrameStore::open(data.path());
    let expected: Vec<u64> = (0..=frames).collect();
    assert_eq!(store.stream_seqs(session_id, stream_id), expected);
    let offsets = store.offsets(session_id);
    let contiguous: Vec<u64> = (0..offsets.len() as u64).collect();
    assert_eq!(offsets, contiguous, "stored offsets have a gap");
}

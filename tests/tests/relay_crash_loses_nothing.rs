//! A relay killed with SIGKILL in the middle of a consultation and restarted
//! on the same data directory loses nothing it acknowledged: the publisher
//! resends, the follower resumes, and the transcript is complete with no
//! duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::{sample_finals, sample_with_interim};
use sealcast_tests::session::{follow_until_end, LiveSession};
use sealcast_tests::staff::StaffDevice;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_session_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let listen = relay.addr.to_string();

    let finals = sample_finals();
    let frames = sample_with_interim();
    let session = LiveSession::create(&relay, &staff).await;
    let follower = tokio::spawn(follow_until_end(
        session.follower(),
        Duration::from_secs(90),
    ));
    let mut publisher = session.publisher().await;

    let half = frames.len() / 2;
    for segment in &frames[..half] {
        publisher.publish(segment).await.unwrap();
    }
    // Let some of the first half be committed and acknowledged, then crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.kill();

    // The publisher keeps sealing while the relay is down; it resends on reconnect.
    for segment in &frames[half..half + 10] {
        publisher.publish(segment).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut relay = RelayProcess::start(data.path(), &listen, &[]);

    for segment in &frames[half + 10..] {
        publisher.publish(segment).await.unwrap();
    }
    let report = publisher.end().await.unwrap();
    assert!(report.reconnects >= 1, "the publisher never reconnected");
    assert_eq!(report.acknowledged_seq, Some(frames.len() as u64));
    session.end().await;

    let outcome = follower.await.unwrap();
    assert!(outcome.ended, "follower did not see the end");
    assert!(outcome.disconnects >= 1, "follower never saw the crash");
    assert!(
        outcome.rejected.is_empty(),
        "rejected {:?}",
        outcome.rejected
    );
    assert_eq!(outcome.gaps, 0);
    let ids: Vec<u64> = outcome
        .finals
        .iter()
        .map(|(_, _, s)| s.segment_id)
        .collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a final segment arrived twice");
    let texts: Vec<&str> = outcome
        .finals
        .iter()
        .map(|(_, _, s)| s.text.as_str())
        .collect();
    let expected: Vec<&str> = finals.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, expected);

    assert!(relay.terminate().success());
}

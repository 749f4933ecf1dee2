//! A follower whose packets start to vanish on the way, with both sockets
//! left open, as when a phone changes networks. The relay notices that its
//! pings go unanswered, so it closes the connection with the timeout code
//! and frees it. The follower notices the silence too, reconnects and
//! resumes with no gap and no duplicate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::{Follower, FollowerConfig, Keepalive};
use sealcast_protocol::api::close;
use sealcast_protocol::TranscriptSegment;
use sealcast_relay::metrics::{CONNECTIONS_ACTIVE, WEBSOCKET_CLOSES};
use sealcast_tests::blackhole::Blackhole;
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{follow_counting_finals, wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;

/// Pause between two published segments.
const SEGMENT_INTERVAL: Duration = Duration::from_millis(20);

/// The relay's keepalive: a ping every second, closed after 3 s of silence.
const RELAY_ARGS: [&str; 4] = ["--ping-interval", "1s", "--idle-timeout", "3s"];

/// Maximum time from silencing the follower to the relay closing its
/// connection: the idle timeout, one ping interval and slack for a loaded
/// machine.
const DETECTION_LIMIT: Duration = Duration::from_secs(10);

/// Maximum time the whole session may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_follower_is_freed_and_resumes() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &RELAY_ARGS);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let blackhole = Blackhole::start(relay.addr).await;

    let mut link = session.link();
    link.relay
        .set_port(Some(blackhole.addr.port()))
        .expect("the link's port can change");
    let mut config = FollowerConfig::new(link, session.tls.clone());
    config.keepalive = Keepalive {
        ping_interval: Duration::from_millis(500),
        idle_limit: Duration::from_secs(2),
        welcome_timeout: Duration::from_secs(10),
    };
    let mut follower = Follower::start(config).expect("the follower starts");
    wait_until_connected(&mut follower, RUN_LIMIT).await;
    let finals_seen = Arc::new(AtomicUsize::new(0));
    let following = tokio::spawn(follow_counting_finals(
        follower,
        RUN_LIMIT,
        Arc::clone(&finals_seen),
    ));

    let segments = sample_finals();
    let half = segments.len() / 2;
    let mut publisher = session.publisher().await;
    for segment in &segments[..half] {
        publisher.publish(segment).await.unwrap();
        tokio::time::sleep(SEGMENT_INTERVAL).await;
    }
    wait_for(
        || finals_seen.load(Ordering::Relaxed) > 0,
        RUN_LIMIT,
        "first segments",
    )
    .await;

    let before = scrape(&session.relay, &session.tls).await;
    let timeout_label = close::TIMEOUT.to_string();
    let closes_labels = [("role", "follower"), ("code", timeout_label.as_str())];
    blackhole.swallow();
    wait_for(
        || blackhole.swallowed() == 1,
        DETECTION_LIMIT,
        "the follow connection to fall silent",
    )
    .await;

    // The publisher goes on while the follower hears nothing.
    for segment in &segments[half..] {
        publisher.publish(segment).await.unwrap();
        tokio::time::sleep(SEGMENT_INTERVAL).await;
    }

    // The relay closes the silent connection: its side of the black hole
    // reaches end of file, and the relay counts a timeout close.
    wait_for(
        || blackhole.closed_by_target() == 1,
        DETECTION_LIMIT,
        "the relay closing the silent connection",
    )
    .await;
    let after = scrape(&session.relay, &session.tls).await;
    assert_eq!(
        after.value(WEBSOCKET_CLOSES, &closes_labels)
            - before.value(WEBSOCKET_CLOSES, &closes_labels),
        1.0,
        "the relay closes the silent follower with code {}",
        close::TIMEOUT
    );

    let report = publisher.end().await.unwrap();
    assert_eq!(report.acknowledged_seq, Some(report.frames - 1));
    wait_for(
        || blackhole.accepted() >= 2,
        RUN_LIMIT,
        "the follower reconnecting",
    )
    .await;
    // The follower must be connected again before the end, or the relay
    // would refuse it as a follower of an ended session.
    tokio::time::sleep(Duration::from_secs(1)).await;
    session.end().await;
    let outcome = following.await.unwrap();

    assert!(
        outcome.ended,
        "the follower did not see the end: {outcome:?}"
    );
    assert!(outcome.end_of_session, "the end frame did not arrive");
    assert!(
        outcome.disconnects >= 1,
        "the follower never noticed the silence"
    );
    assert!(
        outcome
            .disconnect_reasons
            .iter()
            .any(|reason| reason.contains("no message from the relay")),
        "the follower gave other reasons: {:?}",
        outcome.disconnect_reasons
    );
    assert!(
        outcome.rejected.is_empty(),
        "rejected: {:?}",
        outcome.rejected
    );
    assert_eq!(outcome.gaps, 0, "the follower reported gaps");
    let received: Vec<&TranscriptSegment> = outcome.finals.iter().map(|(_, _, s)| s).collect();
    let sent: Vec<&TranscriptSegment> = segments.iter().collect();
    assert!(
        received == sent,
        "the follower received {} final segments that differ from the {} published",
        received.len(),
        sent.len()
    );
    let mut offsets = outcome.opened.clone();
    offsets.dedup();
    assert_eq!(offsets, outcome.opened, "a frame was applied twice");

    // No follow connection is left on the relay.
    let deadline = tokio::time::Instant::now() + DETECTION_LIMIT;
    loop {
        let now = scrape(&session.relay, &session.tls).await;
        let open = now.value(CONNECTIONS_ACTIVE, &[("role", "follower")]);
        if open == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} follow connections are still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `done` every 20 ms until it holds, failing naming `what` after `limit`.
async fn wait_for(done: impl Fn() -> bool, limit: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

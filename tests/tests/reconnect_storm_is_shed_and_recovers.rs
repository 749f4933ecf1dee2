//! A reconnect storm: 1,000 followers connect at once to a relay capped at
//! 200 connections, while another session streams. The relay turns the
//! excess away with 503 and `Retry-After`, counts it, and keeps the
//! streaming session's follower connected. Each storm follower stays
//! connected for a moment and leaves, and every one of them gets in with the
//! client library's backoff, which waits at least the `Retry-After`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_client::FollowEvent;
use sealcast_relay::metrics::{CONNECTIONS_ACTIVE, CONNECTIONS_REJECTED, TLS_HANDSHAKES_ACTIVE};
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::LiveSession;
use sealcast_tests::slow_peer::timed_health_check;
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::streaming::BackgroundStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Followers that connect at once. `SEALCAST_STORM_FOLLOWERS` overrides it,
/// as in the recorded 10,000-follower run.
const STORM: usize = 1_000;

/// The relay's connection cap in this test, far below [`STORM`].
/// `SEALCAST_STORM_MAX_CONNECTIONS` overrides it.
const MAX_CONNECTIONS: usize = 200;

/// Time each storm follower stays connected before it leaves.
const HOLD: Duration = Duration::from_millis(1000);

/// Maximum time a storm of [`STORM`] followers may take to get every
/// follower in. Larger storms get proportionally longer.
const STORM_LIMIT: Duration = Duration::from_secs(150);

/// The relay's `Retry-After` on a 503 over the connection cap.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What one storm follower saw.
#[derive(Debug, Default)]
struct Attempts {
    connected: bool,
    /// Delays the client chose after a 503 from the relay.
    waits_after_503: Vec<Duration>,
    /// Other reasons a connection attempt failed.
    other_failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_is_shed_and_recovers() {
    let storm_size = setting("SEALCAST_STORM_FOLLOWERS", STORM);
    let max_connections = setting("SEALCAST_STORM_MAX_CONNECTIONS", MAX_CONNECTIONS).to_string();
    let storm_limit = STORM_LIMIT.mul_f64((storm_size as f64 / STORM as f64).max(1.0));
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &[
            "--max-connections",
            &max_connections,
            "--max-handshakes",
            "32",
        ],
    );
    let staff = StaffDevice::clinician(&relay).await;
    let streaming = LiveSession::create(&relay, &staff).await;
    let stormed = LiveSession::create(&relay, &staff).await;
    let background = BackgroundStream::start(&streaming).await;
    let before = scrape(&streaming.relay, &streaming.tls).await;

    let started = Instant::now();
    let mut storm = JoinSet::new();
    for _ in 0..storm_size {
        let mut follower = stormed.follower();
        storm.spawn(async move {
            let mut attempts = Attempts::default();
            let following = async {
                while let Some(event) = follower.next_event().await {
                    match event {
                        FollowEvent::Connected { .. } => {
                            attempts.connected = true;
                            tokio::time::sleep(HOLD).await;
                            return;
                        }
                        FollowEvent::Disconnected { reason, retry_in }
                            if reason.contains("HTTP 503") =>
                        {
                            attempts.waits_after_503.push(retry_in)
                        }
                        FollowEvent::Disconnected { reason, .. } => {
                            attempts.other_failures.push(reason)
                        }
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(storm_limit, following).await;
            drop(follower);
            attempts
        });
    }

    // The streaming session keeps delivering while the storm runs.
    let mut results = Vec::new();
    while !storm.is_empty() {
        assert!(
            started.elapsed() < storm_limit + Duration::from_secs(10),
            "storm tasks hang"
        );
        let seen = background.finals_seen();
        background.wait_for_progress(seen, "during the storm").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Some(result) = storm.try_join_next() {
            results.push(result.expect("storm follower task panicked"));
        }
    }
    let took = started.elapsed();
    for attempts in &results {
        check_attempts(attempts);
    }
    let shed: usize = results.iter().map(|a| a.waits_after_503.len()).sum();
    let other: usize = results.iter().map(|a| a.other_failures.len()).sum();
    println!(
        "storm of {storm_size} followers: {shed} answers 503, {other} other failed attempts, {took:?}"
    );
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    for reason in results.iter().flat_map(|a| &a.other_failures) {
        *reasons.entry(reason.as_str()).or_default() += 1;
    }
    println!("other failed attempts by reason: {reasons:?}");
    assert!(shed > 0, "no follower was turned away with 503");

    // The relay is responsive again and counted what it shed.
    let (handshake, status) = timed_health_check(relay.addr, &streaming.tls).await;
    assert!(
        handshake < Duration::from_secs(2),
        "handshake after the storm took {handshake:?}"
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let after = scrape(&streaming.relay, &streaming.tls).await;
    let rejected = after.value(CONNECTIONS_REJECTED, &[("reason", "over_capacity")])
        - before.value(CONNECTIONS_REJECTED, &[("reason", "over_capacity")]);
    assert!(
        rejected >= shed as f64,
        "{rejected} counted, {shed} seen by followers"
    );
    assert_eq!(after.value(TLS_HANDSHAKES_ACTIVE, &[]), 0.0);
    // Only the streaming session's follower is still connected.
    assert_eq!(
        after.value(CONNECTIONS_ACTIVE, &[("role", "follower")]),
        1.0
    );

    background.finish(&streaming).await;
}

fn check_attempts(attempts: &Attempts) {
    assert!(
        attempts.connected,
        "a follower never connected: {} answers 503, other failures {:?}",
        attempts.waits_after_503.len(),
        attempts.other_failures
    );
    for wait in &attempts.waits_after_503 {
        assert!(
            *wait >= RETRY_AFTER,
            "a follower waited {wait:?} after a 503 with Retry-After: 1"
        );
    }
}

/// Reads a count from the environment variable `name`, or returns `default`.
fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a count")),
        Err(_) => default,
    }
}

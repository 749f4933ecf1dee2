//! With `--log-format json`, every line the relay logs through a whole run
//! (start, sign-in, publish, follow, end, SIGTERM) is a JSON object with a
//! level, a target and a message, and the lifecycle lines carry their ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{follow_until_end, wait_until_connected, LiveSession};
use sealcast_tests::staff::StaffDevice;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_per_line() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &["--log-format", "json"]);

    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let mut follower = session.follower();
    wait_until_connected(&mut follower, LIMIT).await;
    let mut publisher = session.publisher().await;
    for segment in sample_finals().iter().take(5) {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();
    session.end().await;
    let outcome = follow_until_end(follower, LIMIT).await;
    assert!(outcome.ended, "the follower did not see the session end");
    assert!(
        relay.terminate().success(),
        "the relay failed to stop on SIGTERM"
    );

    let stderr = String::from_utf8(relay.stderr()).expect("logs are UTF-8");
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        })
        .collect();
    assert!(!lines.is_empty(), "the relay logged nothing");
    for line in &lines {
        assert!(line["level"].is_string(), "no level: {line}");
        assert!(line["target"].is_string(), "no target: {line}");
        assert!(line["fields"]["message"].is_string(), "no message: {line}");
    }

    let session_id = session.created.session_id.to_string();
    let with_session = |message: &str| {
        lines.iter().any(|line| {
            line["fields"]["message"] == message && line["fields"]["session_id"] == session_id
        })
    };
    assert!(
        with_session("session created"),
        "session start lacks session_id"
    );
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    // Lines logged inside a connection carry its id in their span.
    let in_connection = |message: &str| {
        lines.iter().any(|line| {
            line["fields"]["message"] == message && line["span"]["connection_id"].is_u64()
        })
    };
    for message in [
        "session created",
        "session ended",
        "follower connected",
        "publisher connected",
    ] {
        assert!(in_connection(message), "{message:?} lacks connection_id");
    }
    assert!(
        messages.contains(&"relay started"),
        "no start line: {messages:?}"
    );
    let started = lines
        .iter()
        .find(|line| line["fields"]["message"] == "relay started")
        .unwrap();
    assert!(
        started["fields"]["local_addr"].is_string(),
        "start line lacks the address"
    );
    assert!(
        messages.contains(&"relay stopped"),
        "no stop line: {messages:?}"
    );
}

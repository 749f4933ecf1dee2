//! Stopping `sealcast-relay demo` with SIGINT while it streams: the demo
//! closes its current stream with a signed checkpoint before it ends the
//! session, so a follower of its link reports every stream complete and
//! authored and exits 0, with the real binaries over TLS.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;

use sealcast_protocol::FollowInvite;
use sealcast_tests::cli::{CliProcess, STEP_TIMEOUT};
use sealcast_tests::process::binary_path;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The link and the `--ca-cert` path that the demo prints.
struct Invitation {
    link: String,
    ca_cert: String,
}

/// Reads the demo's stdout until it printed its link and follow command.
async fn read_invitation(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Invitation {
    let mut link = None;
    loop {
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
            .await
            .expect("the demo printed its invitation in time")
            .unwrap()
            .expect("the demo's stdout ended before its invitation");
        let trimmed = line.trim();
        if trimmed.starts_with("https://") && trimmed.contains("/join?") {
            link = Some(trimmed.to_string());
        }
        if let Some((_, rest)) = trimmed.split_once("--ca-cert '") {
            let ca_cert = rest.split('\'').next().unwrap().to_string();
            return Invitation {
                link: link.expect("the link comes before the follow command"),
                ca_cert,
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_stop_signs_every_stream() {
    let data = tempfile::tempdir().unwrap();
    let mut demo = Command::new(binary_path("sealcast-relay"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap()).lines();
    let invitation = read_invitation(&mut stdout).await;
    // Keep reading so the demo never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });

    let home = tempfile::tempdir().unwrap();
    let mut follower = CliProcess::spawn(
        home.path(),
        &[
            "follow",
            "--ca-cert",
            &invitation.ca_cert,
            "--format",
            "jsonl",
            "-",
        ],
    );
    follower.write_line(&invitation.link).await;
    follower.wait_for_stderr("Connected to session").await;
    // Stop in the middle of a stream: after its first two final segments.
    follower.wait_for_stdout_count("\"text\"", 2).await;

    let status = std::process::Command::new("kill")
        .args(["-INT", &demo.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT failed");
    let demo_status = tokio::time::timeout(STEP_TIMEOUT, demo.wait())
        .await
        .expect("the demo stopped in time")
        .unwrap();
    assert!(demo_status.success(), "demo exited with {demo_status}");

    let (status, _, stderr) = follower.finish().await;
    assert!(status.success(), "follow failed: {stderr:#?}");
    let publisher = FollowInvite::parse(&invitation.link)
        .unwrap()
        .publisher
        .expect("the demo link carries the publisher key");
    let authored = format!(
        "is complete and authored by device {}",
        publisher.to_base64url()
    );
    let verdicts: Vec<_> = stderr
        .iter()
        .filter(|line| line.starts_with("stream ") || line.starts_with("warning: stream "))
        .collect();
    // The stopped stream and the stream of the end-of-session frame.
    assert_eq!(verdicts.len(), 2, "{stderr:#?}");
    for verdict in verdicts {
        assert!(verdict.ends_with(&authored), "{stderr:#?}");
    }
    assert!(
        !stderr.iter().any(|line| line.starts_with("warning:")),
        "{stderr:#?}"
    );
}

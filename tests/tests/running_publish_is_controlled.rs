//! Controlling a running `sealcast publish` from other `sealcast` commands
//! on the same device, with the real binaries and a real relay over TLS.
//! `sealcast session end` makes the running publish sign the end of its
//! stream and end the session, so that followers see the whole stream
//! complete and authored. `sealcast session rotate`, and SIGUSR1 on Unix,
//! make it rotate the key and write the link of key epoch 1, with which a
//! follower keeps reading. A control lock left by a killed publish does not
//! stop `sealcast session end` from ending the session as it does without
//! a publisher. A stopped publish makes both commands time out with exit
//! status 69, and they withdraw their requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sealcast_protocol::FollowInvite;
use sealcast_tests::cli::{CliProcess, Clinic};
use sealcast_tests::sample::{sample_finals, sample_path};

/// Line that `sealcast publish` prints once it takes requests.
const PUBLISHING: &str = "Publishing as process ";

/// Returns the sample consultation's JSON Lines.
fn sample_lines() -> Vec<String> {
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.len(),
        sample_finals().len(),
        "one final segment per line"
    );
    lines
}

/// Starts `sealcast publish` reading JSON Lines from stdin, and waits until
/// it takes requests.
async fn start_publish(clinic: &Clinic, extra_args: &[&str]) -> CliProcess {
    let mut args = vec!["publish"];
    args.extend_from_slice(extra_args);
    args.push("-");
    let mut publish = clinic.spawn(&args);
    let line = publish.wait_for_stderr(PUBLISHING).await;
    assert!(
        line.starts_with(&format!("{PUBLISHING}{}.", publish.pid())),
        "{line}"
    );
    publish
}

/// Returns the follower's stderr lines that report a verdict for a stream.
fn verdict_lines(stderr: &[String]) -> Vec<&String> {
    stderr
        .iter()
        .filter(|line| line.starts_with("stream ") || line.starts_with("warning: stream "))
        .collect()
}

/// Checks that the follower exited 0 with every final segment and with
/// `streams` streams, each complete and authored by the invite's device.
fn assert_verified(
    clinic: &Clinic,
    follower: (std::process::ExitStatus, Vec<String>, Vec<String>),
    streams: usize,
) {
    let (status, stdout, stderr) = follower;
    assert!(status.success(), "follow failed: {stderr:#?}");
    let finals = stdout
        .iter()
        .filter(|line| line.contains("\"text\""))
        .count();
    assert_eq!(finals, sample_finals().len(), "{stdout:#?}");
    let publisher = FollowInvite::parse(&clinic.link)
        .unwrap()
        .publisher
        .expect("the invite link carries the publisher key");
    let authored = format!(
        "is complete and authored by device {}",
        publisher.to_base64url()
    );
    let verdicts = verdict_lines(&stderr);
    assert_eq!(verdicts.len(), streams, "{stderr:#?}");
    for verdict in verdicts {
        assert!(verdict.ends_with(&authored), "{stderr:#?}");
    }
    assert!(
        !stderr.iter().any(|line| line.starts_with("warning:")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_lets_running_publish_sign() {
    let clinic = Clinic::start("control-end").await;
    let follower_home = tempfile::tempdir().unwrap();
    let mut follower = clinic.follow(follower_home.path()).await;
    // With interim revisions the stream runs to several checkpoints.
    let mut publish = start_publish(&clinic, &["--interim"]).await;
    let pid = publish.pid();

    // Only one publish of a session runs on a device.
    let sample = sample_path();
    let (status, _, stderr) = clinic.run(&["publish", sample.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "process {pid} is already publishing to or ending session {}",
            clinic.session_id
        )),
        "{stderr}"
    );

    let lines = sample_lines();
    for line in &lines {
        publish.write_line(line).await;
    }
    follower
        .wait_for_stdout_count("\"text\"", lines.len())
        .await;

    // Standard input of the publish stays open: only the request ends it.
    let (status, stdout, stderr) = clinic.run(&["session", "end"]).await;
    assert!(status.success(), "session end failed: {stdout} {stderr}");
    assert!(
        stdout.contains(&format!(
            "Session {} ended by process {pid}.",
            clinic.session_id
        )),
        "{stdout}"
    );

    let (status, _, stderr) = publish.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");
    let requested = format!(
        "Ending session {}, as `sealcast session end` requested.",
        clinic.session_id
    );
    assert!(stderr.contains(&requested), "{stderr:#?}");
    let ended = format!(
        "Session {} ended. Its key was deleted from this device.",
        clinic.session_id
    );
    assert!(stderr.contains(&ended), "{stderr:#?}");
    assert!(!clinic.session_file().exists());
    assert!(!clinic.control_dir().exists());

    assert_verified(&clinic, follower.finish().await, 1);
}

/// Source of the rotation request to the running publish.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// `sealcast session rotate`.
    Command,
    /// SIGUSR1.
    #[cfg(unix)]
    Signal,
}

/// Publishes half of the sample, rotates the key with `trigger`, hands the
/// new link to the follower, publishes the rest and ends the session with
/// `sealcast session end`.
async fn rotate_while_publishing(name: &str, trigger: Trigger) {
    let clinic = Clinic::start(name).await;
    let follower_home = tempfile::tempdir().unwrap();
    let mut follower = clinic.follow(follower_home.path()).await;
    let link_dir = tempfile::tempdir().unwrap();
    let link_file = link_dir.path().join("rotated-link");
    let mut publish = start_publish(
        &clinic,
        &["--rotated-link-file", link_file.to_str().unwrap()],
    )
    .await;

    let lines = sample_lines();
    let (before, after) = lines.split_at(lines.len() / 2);
    for line in before {
        publish.write_line(line).await;
    }
    follower
        .wait_for_stdout_count("\"text\"", before.len())
        .await;

    match trigger {
        Trigger::Command => {
            let (status, stdout, stderr) = clinic.run(&["session", "rotate"]).await;
            assert!(status.success(), "session rotate failed: {stdout} {stderr}");
            assert!(
                stdout.contains(&format!(
                    "Rotated the key of session {} to key epoch 1.",
                    clinic.session_id
                )),
                "{stdout}"
            );
        }
        #[cfg(unix)]
        Trigger::Signal => {
            let status = std::process::Command::new("kill")
                .args(["-USR1", &publish.pid().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    publish
        .wait_for_stderr("Rotated the session key to key epoch 1")
        .await;
    let link = std::fs::read_to_string(&link_file).unwrap();
    let link = link.trim();
    let invite = FollowInvite::parse(link).unwrap();
    assert_eq!(invite.key_epoch, 1);
    follower.write_line(link).await;
    // The follower reads the link and the socket concurrently, so frames of
    // the new epoch are sent only once it has added the key.
    follower
        .wait_for_stderr("Added the key of key epoch 1")
        .await;

    for line in after {
        publish.write_line(line).await;
    }
    follower
        .wait_for_stdout_count("\"text\"", lines.len())
        .await;

    let (status, stdout, stderr) = clinic.run(&["session", "end"]).await;
    assert!(status.success(), "session end failed: {stdout} {stderr}");
    let (status, _, stderr) = publish.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");

    // The stream closed by the rotation and the one after it.
    assert_verified(&clinic, follower.finish().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rotate_reaches_running_publish() {
    rotate_while_publishing("control-rotate", Trigger::Command).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_rotates_running_publish() {
    rotate_while_publishing("control-signal", Trigger::Signal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publish_leaves_no_control() {
    let clinic = Clinic::start("control-stale").await;
    let follower_home = tempfile::tempdir().unwrap();
    let mut follower = clinic.follow(follower_home.path()).await;
    let mut publish = start_publish(&clinic, &[]).await;
    let pid = publish.pid();
    let lines = sample_lines();
    for line in &lines[..3] {
        publish.write_line(line).await;
    }
    follower.wait_for_stdout_count("\"text\"", 3).await;

    // A killed process leaves its lock and pid files, but not its lock.
    publish.kill().await;
    let control_dir = clinic.control_dir();
    assert!(control_dir.join("publisher.lock").exists());
    let pid_file = std::fs::read_to_string(control_dir.join("publisher.pid")).unwrap();
    assert_eq!(pid_file.trim(), pid.to_string());

    let (status, _, stderr) = clinic.run(&["session", "rotate"]).await;
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no `sealcast publish` of session {} runs on this device",
            clinic.session_id
        )),
        "{stderr}"
    );

    let (status, stdout, stderr) = clinic.run(&["session", "end"]).await;
    assert!(status.success(), "session end failed: {stdout} {stderr}");
    assert!(
        stdout.contains(&format!(
            "Session {} ended. Its key was deleted from this device.",
            clinic.session_id
        )),
        "{stdout}"
    );
    assert!(!stderr.contains("Asking the running"), "{stderr}");
    assert!(!clinic.session_file().exists());
    assert!(!control_dir.exists());

    let (_, stdout, stderr) = follower.finish().await;
    assert!(
        stdout.iter().any(|line| line == "{\"event\":\"ended\"}"),
        "{stdout:#?} {stderr:#?}"
    );
}

/// Interval between two lines that keep a publish busy, below the 100 ms
/// at which it scans its control directory.
const BUSY_LINE_INTERVAL: Duration = Duration::from_millis(30);

/// Bound on the lines that keep a publish busy: 15 s at [`BUSY_LINE_INTERVAL`].
const MAX_BUSY_LINES: u64 = 500;

/// Writes a short final segment to the publish every [`BUSY_LINE_INTERVAL`]
/// until `done` is set, the publish closes its standard input or
/// [`MAX_BUSY_LINES`] were written. Returns the number written.
async fn keep_publish_busy(publish: &mut CliProcess, done: &AtomicBool) -> u64 {
    let mut written = 0;
    while written < MAX_BUSY_LINES && !done.load(Ordering::SeqCst) {
        let start_ms = written * 30;
        let line = format!(
            "{{\"speaker\":\"doctor\",\"start_ms\":{start_ms},\"end_ms\":{},\"text\":\"line {written}\"}}",
            start_ms + 20
        );
        if !publish.try_write_line(&line).await {
            break;
        }
        written += 1;
        tokio::time::sleep(BUSY_LINE_INTERVAL).await;
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_publish_takes_requests() {
    let clinic = Clinic::start("control-busy").await;
    let link_dir = tempfile::tempdir().unwrap();
    let link_file = link_dir.path().join("rotated-link");
    let mut publish = start_publish(
        &clinic,
        &["--rotated-link-file", link_file.to_str().unwrap()],
    )
    .await;
    let pid = publish.pid();
    let done = AtomicBool::new(false);

    let requests = async {
        // Lines already flow when the requests are written.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, stdout, stderr) = clinic.run(&["session", "rotate", "--timeout", "2"]).await;
        assert!(status.success(), "session rotate failed: {stdout} {stderr}");
        assert!(
            stdout.contains(&format!(
                "Rotated the key of session {} to key epoch 1.",
                clinic.session_id
            )),
            "{stdout}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, stdout, stderr) = clinic.run(&["session", "end", "--timeout", "2"]).await;
        done.store(true, Ordering::SeqCst);
        (status, stdout, stderr)
    };
    let (written, (status, stdout, stderr)) =
        tokio::join!(keep_publish_busy(&mut publish, &done), requests);
    assert!(status.success(), "session end failed: {stdout} {stderr}");
    assert!(
        stdout.contains(&format!(
            "Session {} ended by process {pid}.",
            clinic.session_id
        )),
        "{stdout}"
    );
    // The two 500 ms waits alone span more than 30 lines.
    assert!(written > 30, "only {written} lines were written");
    assert!(written < MAX_BUSY_LINES, "the publish was never ended");

    let (status, _, stderr) = publish.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");
    let invite = FollowInvite::parse(std::fs::read_to_string(&link_file).unwrap().trim()).unwrap();
    assert_eq!(invite.key_epoch, 1);
    assert!(!clinic.session_file().exists());
}

/// Sends a signal to a process with kill(1).
#[cfg(unix)]
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_publish_times_out_requests() {
    let clinic = Clinic::start("control-timeout").await;
    let follower_home = tempfile::tempdir().unwrap();
    let mut follower = clinic.follow(follower_home.path()).await;
    let link_dir = tempfile::tempdir().unwrap();
    let link_file = link_dir.path().join("rotated-link");
    let mut publish = start_publish(
        &clinic,
        &["--rotated-link-file", link_file.to_str().unwrap()],
    )
    .await;
    let pid = publish.pid();
    let lines = sample_lines();
    let (before, after) = lines.split_at(lines.len() / 2);
    for line in before {
        publish.write_line(line).await;
    }
    follower
        .wait_for_stdout_count("\"text\"", before.len())
        .await;

    // A stopped process holds the lock but takes no request.
    send_signal(pid, "-STOP");
    let (status, _, stderr) = clinic.run(&["session", "rotate", "--timeout", "1"]).await;
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "process {pid} did not rotate the key of session {} within 1 s",
            clinic.session_id
        )),
        "{stderr}"
    );
    let (status, _, stderr) = clinic.run(&["session", "end", "--timeout", "1"]).await;
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "process {pid} did not end session {} within 1 s",
            clinic.session_id
        )),
        "{stderr}"
    );
    assert!(clinic.session_file().exists());

    // Both requests were withdrawn: the publish goes on under key epoch 0.
    send_signal(pid, "-CONT");
    for line in after {
        publish.write_line(line).await;
    }
    follower
        .wait_for_stdout_count("\"text\"", lines.len())
        .await;
    assert!(!link_file.exists());

    let (status, stdout, stderr) = clinic.run(&["session", "end"]).await;
    assert!(status.success(), "session end failed: {stdout} {stderr}");
    let (status, _, stderr) = publish.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");
    assert_verified(&clinic, follower.finish().await, 1);
}

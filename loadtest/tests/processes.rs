//! Runs of the harness binary with `--processes` above 1 against the relay
//! it starts in its own process: followers in worker processes are counted
//! in the result, in run and ramp modes, and a worker killed during the
//! step fails the run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const HARNESS: &str = env!("CARGO_BIN_EXE_sealcast-loadtest");

/// Maximum wait for the harness to exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// Kills the harness if a test fails before it exits.
struct Harness(Child);

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the harness with a short load of 50 clinics, 2 followers each,
/// over 2 processes, with the coordinator's info logs on standard error.
fn start(out: &Path, duration: &str) -> Harness {
    let child = Command::new(HARNESS)
        .args(["--clinics", "50", "--followers", "2", "--rate", "5"])
        .args(["--warmup", "1s", "--duration", duration, "--no-progress"])
        .args(["--processes", "2", "--out"])
        .arg(out)
        .env("RUST_LOG", "warn,sealcast_loadtest=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the harness binary runs");
    Harness(child)
}

/// Forwards standard error line by line, without terminal colour codes.
fn stderr_lines(harness: &mut Harness) -> mpsc::Receiver<String> {
    let stderr = harness.0.stderr.take().expect("standard error is piped");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(strip_ansi(&line)).is_err() {
                break;
            }
        }
    });
    receiver
}

fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for end in chars.by_ref() {
                if end.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Waits for the harness to exit, collecting the rest of standard error.
fn wait(
    harness: &mut Harness,
    lines: &mpsc::Receiver<String>,
    log: &mut Vec<String>,
) -> ExitStatus {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        while let Ok(line) = lines.try_recv() {
            log.push(line);
        }
        if let Some(status) = harness.0.try_wait().expect("the harness can be waited for") {
            // The reader thread ends at end of file; take what it still has.
            thread::sleep(Duration::from_millis(200));
            log.extend(lines.try_iter());
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the harness did not exit within {RUN_TIMEOUT:?}:\n{}",
            log.join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Returns the value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn followers_in_two_processes_lose_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut harness = start(out.path(), "5s");
    let lines = stderr_lines(&mut harness);
    let mut log = Vec::new();
    let status = wait(&mut harness, &lines, &mut log);
    let log = log.join("\n");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap_or_default();
    assert!(status.success(), "exit {status}:\n{log}\n{report}");

    // 150 sockets over 2 processes: the coordinator's 50 publishers and 25
    // followers, and 75 followers in the worker.
    let connected = log
        .lines()
        .find(|line| line.contains("worker followers connected"))
        .unwrap_or_else(|| panic!("no worker connected:\n{log}"));
    assert_eq!(field(connected, "worker"), Some(1), "{connected}");
    assert_eq!(field(connected, "opened"), Some(75), "{connected}");
    assert_eq!(field(connected, "attempted"), Some(75), "{connected}");

    let text = std::fs::read_to_string(out.path().join("result.json")).unwrap();
    let result: serde_json::Value = serde_json::from_str(&text).unwrap();
    let step = &result["steps"][0];
    assert_eq!(step["connections"]["attempted"], 150, "{step:#}");
    assert_eq!(step["connections"]["opened"], 150, "{step:#}");
    assert_eq!(step["lost_frames"], 0, "{step:#}");
    assert_eq!(step["incomplete_followers"], 0, "{step:#}");
    assert_eq!(step["frames"]["gap_frames"], 0, "{step:#}");
    assert_eq!(step["frames"]["duplicates"], 0, "{step:#}");
    assert_eq!(step["frames"]["decrypt_errors"], 0, "{step:#}");
    let sent = step["frames"]["frames_sent"].as_u64().unwrap();
    assert!(sent >= 50 * 5 * 5, "{sent} frames sent");
    assert_eq!(step["frames"]["frames_delivered"], 2 * sent, "{step:#}");
    let in_window = step["frames"]["frames_delivered_in_window"]
        .as_u64()
        .unwrap();
    assert_eq!(step["latency"]["count"], in_window, "{step:#}");
    assert!(in_window > 0, "{step:#}");
    assert_eq!(step["errors"], serde_json::json!({}), "{step:#}");
    assert_eq!(step["passed"], true, "{step:#}");
    assert_eq!(result["verdict"]["passed"], true);

    // The coordinator has a quarter of the followers, so a timeline of
    // its own seconds alone would show at most about a quarter of the frames.
    let timeline = step["timeline"].as_array().unwrap();
    let seconds: Vec<u64> = timeline
        .iter()
        .map(|p| p["second"].as_f64().unwrap() as u64)
        .collect();
    assert_eq!(
        seconds,
        (1..=seconds.len() as u64).collect::<Vec<_>>(),
        "{seconds:?}"
    );
    let delivered: u64 = timeline
        .iter()
        .map(|p| p["delivered"].as_u64().unwrap())
        .sum();
    assert!(
        delivered > sent,
        "timeline has {delivered} of {} frames",
        2 * sent
    );
    assert!(
        delivered <= 2 * sent,
        "timeline has {delivered} of {} frames",
        2 * sent
    );
}

#[test]
fn ramp_steps_use_worker_processes() {
    let out = tempfile::tempdir().unwrap();
    let child = Command::new(HARNESS)
        .args([
            "--mode",
            "ramp",
            "--clinics",
            "10",
            "--followers",
            "3",
            "--rate",
            "5",
        ])
        .args([
            "--ramp-factor",
            "2",
            "--ramp-steps",
            "2",
            "--budget-ms",
            "60000",
        ])
        .args(["--warmup", "500ms", "--duration", "2s", "--no-progress"])
        .args(["--processes", "3", "--out"])
        .arg(out.path())
        .env("RUST_LOG", "warn,sealcast_loadtest=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the harness binary runs");
    let mut harness = Harness(child);
    let lines = stderr_lines(&mut harness);
    let mut log = Vec::new();
    let status = wait(&mut harness, &lines, &mut log);
    let log = log.join("\n");
    assert!(status.success(), "exit {status}:\n{log}");
    let connected = log
        .lines()
        .filter(|line| line.contains("worker followers connected"))
        .count();
    assert_eq!(connected, 4, "2 steps with 2 workers each:\n{log}");

    let text = std::fs::read_to_string(out.path().join("result.json")).unwrap();
    let result: serde_json::Value = serde_json::from_str(&text).unwrap();
    let steps = result["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{result:#}");
    for (step, clinics) in steps.iter().zip([10, 20]) {
        assert_eq!(step["clinics"], clinics, "{step:#}");
        assert_eq!(step["connections"]["attempted"], clinics * 4, "{step:#}");
        assert_eq!(step["connections"]["opened"], clinics * 4, "{step:#}");
        assert_eq!(step["lost_frames"], 0, "{step:#}");
        let sent = step["frames"]["frames_sent"].as_u64().unwrap();
        assert_eq!(step["frames"]["frames_delivered"], 3 * sent, "{step:#}");
        assert_eq!(step["passed"], true, "{step:#}");
    }
    assert_eq!(result["ramp"][0]["last_passing_step"], 2, "{result:#}");
}

#[test]
fn killed_worker_fails_the_run() {
    let out = tempfile::tempdir().unwrap();
    let mut harness = start(out.path(), "6s");
    let lines = stderr_lines(&mut harness);
    let mut log = Vec::new();

    let deadline = Instant::now() + RUN_TIMEOUT;
    let pid = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no worker connected:\n{}", log.join("\n")));
        log.push(line.clone());
        if line.contains("worker followers connected") {
            break field(&line, "pid").unwrap_or_else(|| panic!("no pid in {line}"));
        }
    };
    // Past the 0.3 s lead and into the warm-up, the followers are reading.
    thread::sleep(Duration::from_millis(800));
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();

    let status = wait(&mut harness, &lines, &mut log);
    let log = log.join("\n");
    assert_eq!(status.code(), Some(2), "{log}");
    let error = log
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        error.contains(&format!(
            "load-test worker 1 (pid {}) failed",
            pid.as_raw_nonzero()
        )),
        "{error}"
    );
    assert!(error.contains("exited with signal: 9"), "{error}");
    assert!(error.contains("before sending its report"), "{error}");
    assert!(!out.path().join("result.json").exists());
}

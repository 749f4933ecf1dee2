//! The `sealcast-relay` binary: startup lines on stdout, logs on stderr that
//! never contain the API key or a token, and a clean exit on SIGTERM.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use sealcast_protocol::api::{CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::SessionKey;

/// Starts the binary with `leading` arguments (a subcommand, if any) before the flags.
fn spawn_relay(data_dir: &std::path::Path, leading: &[&str], extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(leading)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_line(stdout: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// Sends SIGTERM and returns the exit status and everything written to stderr.
fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (exit, stderr)
}

/// Checks health, then creates and ends a session, with one rejected
/// attempt on the way. Returns the session's tokens.
fn exercise(address: &str, pem: &[u8], api_key: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
            .build()
            .unwrap();
        let health = client
            .get(format!("https://{address}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), reqwest::StatusCode::OK);

        let request = CreateSessionRequest {
            fingerprint: SessionKey::generate().fingerprint().to_base64url(),
            invite_verifier: None,
            max_browsers: None,
        };
        let session: CreateSessionResponse = client
            .post(format!("https://{address}/v1/sessions"))
            .bearer_auth(api_key)
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let end_url = format!("https://{address}/v1/sessions/{}/end", session.session_id);
        let wrong = client
            .post(&end_url)
            .bearer_auth(&session.invite_token)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
        let ended = client
            .post(&end_url)
            .bearer_auth(&session.publisher_token)
            .send()
            .await
            .unwrap();
        assert_eq!(ended.status(), reqwest::StatusCode::NO_CONTENT);
        vec![session.publisher_token, session.invite_token]
    })
}

#[test]
fn binary_prints_address_and_key_once() {
    let dir = tempfile::tempdir().unwrap();

    let mut child = spawn_relay(dir.path(), &[], &[]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let listening = read_line(&mut stdout);
    let address = listening
        .strip_prefix("sealcast-relay listening on https://")
        .unwrap_or_else(|| panic!("unexpected first line {listening:?}"))
        .to_owned();
    assert!(
        !address.ends_with(":0"),
        "printed the configured port, not the bound one"
    );
    let key_line = read_line(&mut stdout);
    let key = key_line
        .strip_prefix("clinic API key (shown once): ")
        .unwrap_or_else(|| panic!("unexpected second line {key_line:?}"))
        .to_owned();
    assert!(key.starts_with("sck_"));

    let pem = std::fs::read(dir.path().join("dev-cert.pem")).unwrap();
    let tokens = exercise(&address, &pem, &key);

    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stderr.contains("session ended"),
        "debug log is missing lifecycle lines"
    );
    assert!(stderr.contains("relay stopped"));
    assert!(!stderr.contains(&key), "the API key reached the log");
    for token in tokens {
        assert!(!stderr.contains(&token), "a session token reached the log");
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty(), "more stdout output: {rest:?}");

    // A second start keeps the key and prints only the address.
    let mut child = spawn_relay(dir.path(), &["serve"], &["--log-format", "json"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    assert!(read_line(&mut stdout).starts_with("sealcast-relay listening on https://127.0.0.1:"));
    let (exit, stderr) = terminate(child);
    assert!(exit.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty(), "a second start printed {rest:?}");
    for line in stderr.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("log line is not JSON: {line}"));
        assert!(entry.get("level").is_some());
    }
}

#[test]
fn bad_flags_fail_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["--write-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid duration"), "{stderr}");
}

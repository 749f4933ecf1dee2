//! The `sealcast` binary end to end against the loopback test relay: sign
//! in, start a session, follow it, publish, end it and check the key is gone.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use support::{TestRelay, CLINICIAN};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn sealcast(state_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealcast"));
    command
        .env_remove("SEALCAST_RELAY")
        .env_remove("SEALCAST_LOG")
        .env("SEALCAST_HOME", state_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(command: &mut Command) -> Output {
    tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .expect("sealcast did not finish in time")
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Runs `sealcast login` for `email` and confirms the link on the relay's
/// side while the command polls. `stdin` is what the command reads, such as
/// a TOTP code.
async fn login_as(relay: &TestRelay, state_dir: &Path, email: &str, stdin: &str) -> Output {
    let mut child = sealcast(state_dir)
        .args(["login", "--relay", relay.url.as_str(), "--email", email])
        .args(["--device-name", "exam room 2", "--ca-cert"])
        .arg(&relay.ca_cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    assert!(relay.confirm_login(email).await, "no pending sign-in");
    tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("sealcast login did not finish in time")
        .unwrap()
}

async fn login(relay: &TestRelay, state_dir: &Path) {
    let output = login_as(relay, state_dir, CLINICIAN, "").await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("Signed in to"),
        "{}",
        stdout(&output)
    );
}

async fn start_session(relay: &TestRelay, state_dir: &Path) -> String {
    login(relay, state_dir).await;
    let output = run(sealcast(state_dir).args([
        "session",
        "start",
        "--relay",
        relay.url.as_str(),
        "--ca-cert",
        relay.ca_cert.to_str().unwrap(),
    ]))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("Fingerprint words"), "{text}");
    assert!(text.contains("sealcast follow --ca-cert"), "{text}");
    assert!(
        text.contains('▀') || text.contains('▄') || text.contains('█'),
        "no QR code"
    );
    text.lines()
        .find(|line| line.starts_with("https://") && line.contains("/join?token="))
        .expect("no invite link in the output")
        .to_string()
}

fn write_jsonl(dir: &Path) -> PathBuf {
    let path = dir.join("visit.jsonl");
    let lines = [
        r#"{"speaker":"doctor","start_ms":0,"end_ms":1500,"text":"Good morning, how can I help?"}"#,
        "",
        r#"{"speaker":"patient","start_ms":1600,"end_ms":3000,"text":"I have had a cough for a week."}"#,
        r#"{"speaker":"doctor","start_ms":3100,"end_ms":4000,"text":"Any fever?"}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn session_files(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state_dir.join("sessions"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[tokio::test]
async fn start_follow_publish_end() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    let link = start_session(&relay, state.path()).await;

    let files = session_files(state.path());
    assert_eq!(files.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The follower reads the link from stdin, which keeps the key out of argv.
    let mut follower = sealcast(state.path())
        .args(["follow", "--format", "jsonl", "--ca-cert"])
        .arg(&relay.ca_cert)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = follower.stdin.take().unwrap();
    stdin.write_all(link.as_bytes()).await.unwrap();
    drop(stdin);

    let input = write_jsonl(state.path());
    let published = run(sealcast(state.path())
        .args([
            "publish",
            "--interim",
            "--pace",
            "realtime",
            "--speed",
            "50",
        ])
        .arg(&input))
    .await;
    assert!(published.status.success(), "{}", stderr(&published));
    // 16 segment frames, the checkpoint after the sixteenth and the
    // checkpoint that closes the stream.
    assert!(
        stderr(&published).contains("Published 3 final segments in 18 frames"),
        "{}",
        stderr(&published)
    );

    let ended = run(sealcast(state.path()).args(["session", "end"])).await;
    assert!(ended.status.success(), "{}", stderr(&ended));
    assert!(session_files(state.path()).is_empty());
    assert!(!state.path().join("current").exists());

    let followed = tokio::time::timeout(COMMAND_TIMEOUT, follower.wait_with_output())
        .await
        .expect("the follower did not exit")
        .unwrap();
    assert!(followed.status.success(), "{}", stderr(&followed));
    let lines: Vec<serde_json::Value> = stdout(&followed)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["text"], "Good morning, how can I help?");
    assert_eq!(lines[0]["speaker"], "doctor");
    assert_eq!(lines[0]["final"], true);
    assert_eq!(lines[1]["text"], "I have had a cough for a week.");
    assert_eq!(lines[2]["segment_id"], 2);
    assert_eq!(lines[3], serde_json::json!({"event": "ended"}));
    // The link carries `#publisher=KEY&secret=KEY`.
    let secret = link.split("&secret=").nth(1).unwrap();
    assert!(!stderr(&followed).contains(secret));
}

#[tokio::test]
async fn follow_with_wrong_key_fails_clearly() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    let link = start_session(&relay, state.path()).await;
    let (head, secret) = link.split_once("&secret=").unwrap();
    let wrong_secret = if secret.starts_with('A') { "B" } else { "A" }.to_string() + &secret[1..];
    let wrong = format!("{head}&secret={wrong_secret}");

    let output = run(sealcast(state.path())
        .args(["follow", "--ca-cert"])
        .arg(&relay.ca_cert)
        .arg(&wrong))
    .await;
    assert_eq!(output.status.code(), Some(65));
    let text = stderr(&output);
    assert!(text.contains("key does not match this session"), "{text}");
    assert!(!text.contains(&wrong_secret), "{text}");
}

#[tokio::test]
async fn follow_without_secret_explains_the_fix() {
    let state = tempfile::tempdir().unwrap();
    let output = run(sealcast(state.path()).args([
        "follow",
        "https://relay.example/join?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(65));
    assert!(
        stderr(&output).contains("copy the whole link"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn publish_reports_the_bad_line() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    start_session(&relay, state.path()).await;
    let input = state.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"speaker\":\"doctor\",\"start_ms\":0,\"end_ms\":5,\"text\":\"ok\"}\n{\"speaker\":\"doctor\"}\n",
    )
    .unwrap();

    let output = run(sealcast(state.path()).arg("publish").arg(&input)).await;
    assert_eq!(output.status.code(), Some(65));
    assert!(
        stderr(&output).contains("bad.jsonl line 2"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn publish_without_session_says_what_to_run() {
    let state = tempfile::tempdir().unwrap();
    let input = write_jsonl(state.path());
    let output = run(sealcast(state.path()).arg("publish").arg(&input)).await;
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("run `sealcast session start` first"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn help_states_units_and_version_prints() {
    let state = tempfile::tempdir().unwrap();
    let help = run(sealcast(state.path()).args(["publish", "--help"])).await;
    let text = stdout(&help);
    assert!(text.contains("--speed <FACTOR>"), "{text}");
    assert!(text.contains("--window <FRAMES>"), "{text}");
    assert!(text.contains("end time"), "{text}");

    let version = run(sealcast(state.path()).arg("--version")).await;
    assert_eq!(
        stdout(&version).trim(),
        format!("sealcast {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn publish_end_and_text_follow() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    let link = start_session(&relay, state.path()).await;

    let follower = sealcast(state.path())
        .args(["follow", "--ca-cert"])
        .arg(&relay.ca_cert)
        .arg(&link)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let input = write_jsonl(state.path());
    let published = run(sealcast(state.path())
        .args(["publish", "--interim", "--end"])
        .arg(&input))
    .await;
    assert!(published.status.success(), "{}", stderr(&published));
    assert!(
        stderr(&published).contains("ended"),
        "{}",
        stderr(&published)
    );
    assert!(session_files(state.path()).is_empty());

    let followed = tokio::time::timeout(COMMAND_TIMEOUT, follower.wait_with_output())
        .await
        .expect("the follower did not exit")
        .unwrap();
    assert!(followed.status.success(), "{}", stderr(&followed));
    assert_eq!(
        stdout(&followed).lines().collect::<Vec<_>>(),
        [
            "[00:00] doctor: Good morning, how can I help?",
            "[00:01] patient: I have had a cough for a week.",
            "[00:03] doctor: Any fever?",
        ]
    );
    let messages = stderr(&followed);
    assert!(messages.contains("The session has ended."), "{messages}");
    assert!(
        !messages.contains("cough"),
        "transcript text leaked to stderr: {messages}"
    );
    // `publish --end` seals one end-of-session frame, on the publishing stream.
    assert_eq!(
        messages.matches("closed the session").count(),
        1,
        "{messages}"
    );
    assert!(messages.contains("(3 final segments"), "{messages}");
}

#[tokio::test]
async fn session_start_without_login_says_what_to_run() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    let output = run(sealcast(state.path()).args([
        "session",
        "start",
        "--relay",
        relay.url.as_str(),
        "--ca-cert",
        relay.ca_cert.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(output.status.code(), Some(77));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("run `sealcast login --relay {}", relay.url)),
        "{text}"
    );
}

#[tokio::test]
async fn session_start_defaults_to_the_signed_in_relay() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    let output = run(sealcast(state.path()).args(["session", "start", "--no-qr"])).await;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("this device is signed in to no relay"),
        "{text}"
    );

    login(&relay, state.path()).await;
    let output = run(sealcast(state.path()).args(["session", "start", "--no-qr"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.lines()
            .any(|line| line.starts_with(relay.url.as_str()) && line.contains("/join?token=")),
        "{text}"
    );
}

#[tokio::test]
async fn login_whoami_logout() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    login(&relay, state.path()).await;

    let whoami = run(sealcast(state.path()).args(["whoami", "--relay", relay.url.as_str()])).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let text = stdout(&whoami);
    assert!(text.contains(CLINICIAN), "{text}");
    assert!(text.contains("clinician"), "{text}");
    let signing_key = text
        .lines()
        .find_map(|line| line.strip_prefix("signing key:"))
        .expect("whoami prints the signing key")
        .trim();
    // An Ed25519 public key: 32 bytes in unpadded base64url.
    assert_eq!(signing_key.len(), 43, "{text}");

    let logout = run(sealcast(state.path()).args(["logout", "--relay", relay.url.as_str()])).await;
    assert!(logout.status.success(), "{}", stderr(&logout));
    assert!(
        stdout(&logout).contains("Signed out"),
        "{}",
        stdout(&logout)
    );

    let again = run(sealcast(state.path()).args(["whoami", "--relay", relay.url.as_str()])).await;
    assert_eq!(again.status.code(), Some(77));
    assert!(
        stderr(&again).contains("not signed in"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn login_asks_for_totp_code() {
    let relay = TestRelay::start().await;
    relay.enable_totp(CLINICIAN);
    let state = tempfile::tempdir().unwrap();

    let output = login_as(&relay, state.path(), CLINICIAN, "000000\n123456\n").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let messages = stderr(&output);
    assert!(messages.contains("authenticator app"), "{messages}");
    assert!(messages.contains("The code was not accepted"), "{messages}");
    assert!(
        stdout(&output).contains("Signed in to"),
        "{}",
        stdout(&output)
    );
}

#[tokio::test]
async fn login_without_totp_code_fails_clearly() {
    let relay = TestRelay::start().await;
    relay.enable_totp(CLINICIAN);
    let state = tempfile::tempdir().unwrap();

    let output = login_as(&relay, state.path(), CLINICIAN, "").await;
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("no code was entered"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn publish_after_revocation_says_sign_in_again() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    start_session(&relay, state.path()).await;
    for device_id in relay.device_ids() {
        relay.revoke_device(&device_id);
    }

    let input = write_jsonl(state.path());
    let output = run(sealcast(state.path()).arg("publish").arg(&input)).await;
    assert_eq!(output.status.code(), Some(77));
    let text = stderr(&output);
    assert!(text.contains("was revoked"), "{text}");
    assert!(text.contains("sealcast login --relay"), "{text}");
}

#[tokio::test]
async fn admin_session_start_is_forbidden() {
    let relay = TestRelay::start().await;
    relay.add_user(
        "admin@clinic.example",
        support::Role::Admin,
        support::ORGANIZATION,
    );
    let state = tempfile::tempdir().unwrap();
    let output = login_as(&relay, state.path(), "admin@clinic.example", "").await;
    assert!(output.status.success(), "{}", stderr(&output));

    let output =
        run(sealcast(state.path()).args(["session", "start", "--relay", relay.url.as_str()])).await;
    assert_eq!(output.status.code(), Some(77));
    let text = stderr(&output);
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(text.contains("clinician account"), "{text}");
}

#[tokio::test]
async fn totp_enrol_prints_recovery_codes_once() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    login(&relay, state.path()).await;

    let mut child = sealcast(state.path())
        .args(["totp", "enrol", "--relay", relay.url.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"123456\n").await.unwrap();
    drop(input);
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("otpauth://totp/"), "{text}");
    assert!(
        text.contains('▀') || text.contains('▄') || text.contains('█'),
        "no QR code"
    );
    assert!(text.contains(support::accounts::RECOVERY_CODE), "{text}");

    let whoami = run(sealcast(state.path()).args(["whoami", "--relay", relay.url.as_str()])).await;
    assert!(
        stdout(&whoami).contains("TOTP:         enrolled"),
        "{}",
        stdout(&whoami)
    );
}

#[tokio::test]
async fn admin_lists_and_revokes_devices() {
    let relay = TestRelay::start().await;
    let admin = "admin@clinic.example";
    relay.add_user(admin, support::Role::Admin, support::ORGANIZATION);
    relay.enable_totp(admin);
    let clinician_state = tempfile::tempdir().unwrap();
    login(&relay, clinician_state.path()).await;
    let state = tempfile::tempdir().unwrap();
    let output = login_as(&relay, state.path(), admin, "123456\n").await;
    assert!(output.status.success(), "{}", stderr(&output));
    let admin_cmd = |args: &[&str]| {
        let mut command = sealcast(state.path());
        command
            .args(["admin", "--relay", relay.url.as_str()])
            .args(args);
        command
    };

    let users = run(&mut admin_cmd(&["users"])).await;
    assert!(users.status.success(), "{}", stderr(&users));
    assert!(stdout(&users).contains(CLINICIAN), "{}", stdout(&users));

    let users = run(&mut admin_cmd(&["--json", "users"])).await;
    let users: Vec<serde_json::Value> = serde_json::from_slice(&users.stdout).unwrap();
    let clinician_id = users
        .iter()
        .find(|user| user["email"] == CLINICIAN)
        .unwrap()["user_id"]
        .clone();

    let devices = run(&mut admin_cmd(&["--json", "devices"])).await;
    assert!(devices.status.success(), "{}", stderr(&devices));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&devices.stdout).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let clinician_device = listed
        .iter()
        .find(|device| device["user_id"] == clinician_id)
        .unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_string();

    let revoked = run(&mut admin_cmd(&["revoke-device", &clinician_device])).await;
    assert!(revoked.status.success(), "{}", stderr(&revoked));

    let whoami =
        run(sealcast(clinician_state.path()).args(["whoami", "--relay", relay.url.as_str()])).await;
    assert_eq!(whoami.status.code(), Some(77), "{}", stderr(&whoami));
}

#[tokio::test]
async fn clinician_cannot_administer() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    login(&relay, state.path()).await;
    let output =
        run(sealcast(state.path()).args(["admin", "--relay", relay.url.as_str(), "users"])).await;
    assert_eq!(output.status.code(), Some(77));
    assert!(
        stderr(&output).contains("administration needs an admin account"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn logout_without_relay_removes_local_tokens() {
    let relay = TestRelay::start().await;
    let state = tempfile::tempdir().unwrap();
    login(&relay, state.path()).await;
    let url = relay.url.to_string();
    relay.stop().await;

    let output = run(sealcast(state.path()).args(["logout", "--relay", &url])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("on this device only"),
        "{}",
        stdout(&output)
    );
    assert!(stderr(&output).contains("warning:"), "{}", stderr(&output));

    let whoami = run(sealcast(state.path()).args(["whoami", "--relay", &url])).await;
    assert_eq!(whoami.status.code(), Some(77));
    assert!(
        stderr(&whoami).contains("not signed in"),
        "{}",
        stderr(&whoami)
    );
}

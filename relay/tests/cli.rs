//! The `sealcast-relay` binary: startup lines on stdout, the admin command,
//! logs on stderr that never contain a token or a magic link, and a clean
//! exit on SIGTERM.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealcast_client::auth::{Authorizer, DeviceToken};
use sealcast_client::SecretString;
use sealcast_protocol::api::{CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::auth::{
    LoginConfirmRequest, LoginPollRequest, LoginPollResponse, LoginRequest, LoginStarted,
    DPOP_HEADER,
};
use sealcast_protocol::dpop::DeviceKey;
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

/// Runs `sealcast-relay admin` with `args` and returns its stdout.
fn admin(data_dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["admin", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "admin {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Waits for the sign-in mail in the outbox and returns its magic token.
fn magic_token(outbox: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(entries) = std::fs::read_dir(outbox) {
            for entry in entries {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                if let Some(start) = text.find("#token=") {
                    return text[start + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no sign-in mail in {}",
            outbox.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs in a device of `email` through the outbox, checks health, then
/// creates and ends a session with one rejected attempt on the way. Returns
/// every credential the run saw.
fn exercise(address: &str, pem: &[u8], data_dir: &std::path::Path, email: &str) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = address.rsplit_once(':').unwrap().1;
    let public_url = format!("https://localhost:{port}");
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

        let key = Arc::new(DeviceKey::generate().unwrap());
        let login_url = format!("{public_url}/v1/auth/login");
        let started: LoginStarted = client
            .post(format!("https://{address}/v1/auth/login"))
            .header(
                DPOP_HEADER,
                key.proof("POST", &login_url, None, unix_now()).unwrap(),
            )
            .json(&LoginRequest {
                email: email.into(),
                device_name: Some("cli test".into()),
            })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = magic_token(&data_dir.join("outbox"));
        let confirmed = client
            .post(format!("https://{address}/v1/auth/login/confirm"))
            .json(&LoginConfirmRequest {
                token: token.clone(),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), reqwest::StatusCode::OK);
        let poll_url = format!("{public_url}/v1/auth/login/poll");
        let polled: LoginPollResponse = client
            .post(format!("https://{address}/v1/auth/login/poll"))
            .header(
                DPOP_HEADER,
                key.proof("POST", &poll_url, None, unix_now()).unwrap(),
            )
            .json(&LoginPollRequest {
                login_id: started.login_id.clone(),
            })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let LoginPollResponse::Approved(tokens) = polled else {
            panic!("sign-in not approved: {polled:?}");
        };
        let device = DeviceToken::new(key, SecretString::from(tokens.access_token.as_str()));
        let authorize = |request: reqwest::RequestBuilder, method: &str, path: &str| {
            device
                .headers(method, &format!("{public_url}{path}"))
                .unwrap()
                .into_iter()
                .fold(request, |request, (name, value)| {
                    request.header(name, value)
                })
        };

        let request = CreateSessionRequest {
            fingerprint: SessionKey::generate().fingerprint().to_base64url(),
            invite_verifier: None,
            max_browsers: None,
        };
        let session: CreateSessionResponse = authorize(
            client.post(format!("https://{address}/v1/sessions")),
            "POST",
            "/v1/sessions",
        )
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let end_path = format!("/v1/sessions/{}/end", session.session_id);
        let end_url = format!("https://{address}{end_path}");
        let wrong = client
            .post(&end_url)
            .bearer_auth(&session.invite_token)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
        let ended = authorize(client.post(&end_url), "POST", &end_path)
            .send()
            .await
            .unwrap();
        assert_eq!(ended.status(), reqwest::StatusCode::NO_CONTENT);
        vec![
            token,
            started.login_id,
            tokens.access_token,
            tokens.refresh_token,
            session.invite_token,
        ]
    })
}

#[test]
fn binary_prints_address_and_mail_folder() {
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
    let mail_line = read_line(&mut stdout);
    assert!(
        mail_line.starts_with("development mode: sign-in mail is not sent but written to folder"),
        "unexpected second line {mail_line:?}"
    );
    assert!(mail_line.contains("outbox"), "{mail_line}");
    let key_line = read_line(&mut stdout);
    assert!(
        key_line.starts_with(
            "development mode: stored data is encrypted at rest with the development key file"
        ),
        "unexpected third line {key_line:?}"
    );
    let key_file = dir.path().join("at-rest-dev.key");
    assert!(
        key_line.contains(&key_file.display().to_string()),
        "{key_line}"
    );
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "development key file mode {mode:o}");

    // The admin command works beside the running relay.
    let created: serde_json::Value = serde_json::from_str(&admin(
        dir.path(),
        &["--json", "create-org", "--name", "CLI clinic"],
    ))
    .unwrap();
    let org = created["id"].as_str().unwrap().to_owned();
    let email = "cli@clinic.example";
    let user = admin(
        dir.path(),
        &[
            "create-user",
            "--org",
            &org,
            "--email",
            email,
            "--role",
            "clinician",
        ],
    );
    assert!(user.trim().starts_with("usr_"), "{user}");
    let users: serde_json::Value =
        serde_json::from_str(&admin(dir.path(), &["list-users", "--org", &org, "--json"])).unwrap();
    assert_eq!(users[0]["email"], email);

    let pem = std::fs::read(dir.path().join("dev-cert.pem")).unwrap();
    let secrets = exercise(&address, &pem, dir.path(), email);
    let devices = admin(dir.path(), &["list-devices", "--org", &org]);
    assert!(devices.contains("cli test"), "{devices}");

    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        stderr.contains("session ended"),
        "debug log is missing lifecycle lines"
    );
    assert!(stderr.contains("relay stopped"));
    for secret in secrets {
        assert!(!stderr.contains(&secret), "a credential reached the log");
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty(), "more stdout output: {rest:?}");

    // A second start prints the same three lines, reusing the development key.
    let mut child = spawn_relay(dir.path(), &["serve"], &["--log-format", "json"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    assert!(read_line(&mut stdout).starts_with("sealcast-relay listening on https://127.0.0.1:"));
    assert!(read_line(&mut stdout).starts_with("development mode: sign-in mail"));
    assert_eq!(read_line(&mut stdout), key_line);
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
fn admin_command_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args([
            "create-user",
            "--org",
            "org_missing",
            "--email",
            "a@b.example",
            "--role",
            "clinician",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("organization org_missing not found"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_sealcast-relay"))
        .args(["admin", "--data-dir"])
        .arg(dir.path())
        .args([
            "create-user",
            "--org",
            "x",
            "--email",
            "a@b.example",
            "--role",
            "patient",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid role"), "{stderr}");
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

//! The at-rest key guards the store across restarts: a relay started with a
//! wrong key or with no key stops with a message that names the flag, the
//! variable and the fingerprints. After `keys rotate`, the old key fails and
//! the new key reads everything stored before: a whole session's frames,
//! the account and the device name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sealcast_tests::process::{binary_path, RelayProcess};
use sealcast_tests::sample::{sample_finals, sample_with_interim};
use sealcast_tests::session::{follow_then_end, LiveSession};
use sealcast_tests::staff::{admin, sign_in};
use url::Url;

const EMAIL: &str = "rotation.clinician@clinic.example";

/// Maximum time a relay with a bad key may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_retires_the_old_key() {
    // Nothing else in this binary reads these, and every child process
    // inherits them.
    std::env::remove_var("SEALCAST_AT_REST_KEY");
    std::env::remove_var("SEALCAST_AT_REST_KEY_FILE");
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let old_key = keys.path().join("old.key");
    let new_key = keys.path().join("new.key");
    let old_fingerprint = generate_key(&old_key);
    let new_fingerprint = generate_key(&new_key);
    let old_key_arg = old_key.to_str().unwrap();

    // First run, with the old key: an account, a device and a whole session,
    // left open so that a follower can read it all back later.
    let mut relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &["--at-rest-key-file", old_key_arg],
    );
    let listen = relay.addr.to_string();
    let with_old_key = ["--at-rest-key-file", old_key_arg];
    let org_id = admin(
        data.path(),
        &[
            &with_old_key[..],
            &["create-org", "--name", "Rotation Clinic"],
        ]
        .concat(),
    );
    admin(
        data.path(),
        &[
            &with_old_key[..],
            &[
                "create-user",
                "--org",
                &org_id,
                "--email",
                EMAIL,
                "--role",
                "clinician",
            ],
        ]
        .concat(),
    );
    let url = Url::parse(&relay.base_url()).unwrap();
    let (device, _key_store) = sign_in(&url, &relay.ca_cert(), &relay.outbox_dir(), EMAIL).await;
    let session = LiveSession::create_at(&url, &relay.ca_cert(), device.authorizer()).await;
    let mut publisher = session.publisher().await;
    for segment in &sample_with_interim() {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();
    assert!(relay.terminate().success());

    // A wrong old key is rejected, and the data key stays as it was.
    let stranger = keys.path().join("stranger.key");
    generate_key(&stranger);
    let failed = run_keys_rotate(data.path(), &stranger, &new_key);
    assert!(!failed.0, "rotation with a wrong old key succeeded");
    assert!(failed.1.contains(&old_fingerprint), "{}", failed.1);

    let rotated = run_keys_rotate(data.path(), &old_key, &new_key);
    assert!(rotated.0, "rotation failed: {}", rotated.1);
    assert!(rotated.1.contains(&new_fingerprint), "{}", rotated.1);

    // The old key fails, naming both fingerprints and the flag.
    let output = start_fails(data.path(), &["--at-rest-key-file", old_key_arg], None);
    assert!(
        output.contains(&format!("has fingerprint {old_fingerprint}")),
        "{output}"
    );
    assert!(
        output.contains(&format!(
            "wrapped by the key with fingerprint {new_fingerprint}"
        )),
        "{output}"
    );
    assert!(output.contains("--at-rest-key-file"), "{output}");

    // No key at all fails, naming the flag and the variable.
    let output = start_fails(data.path(), &[], None);
    assert!(output.contains("no key was given"), "{output}");
    assert!(output.contains("--at-rest-key-file PATH"), "{output}");
    assert!(output.contains("SEALCAST_AT_REST_KEY"), "{output}");
    assert!(output.contains(&new_fingerprint), "{output}");

    // A key in the variable that is not a key fails before the store opens.
    let output = start_fails(data.path(), &[], Some("not a key"));
    assert!(output.contains("invalid at-rest key"), "{output}");
    assert!(
        output.contains("environment variable SEALCAST_AT_REST_KEY"),
        "{output}"
    );

    // The new key, from the variable, reads what the old key's run stored.
    let new_key_text = std::fs::read_to_string(&new_key).unwrap();
    std::env::set_var("SEALCAST_AT_REST_KEY", new_key_text.trim());
    let mut relay = RelayProcess::start(data.path(), &listen, &[]);
    let users = admin(data.path(), &["list-users"]);
    assert!(users.contains(EMAIL), "{users}");
    let devices = admin(data.path(), &["list-devices"]);
    assert!(devices.contains("test device"), "{devices}");

    let outcome = follow_then_end(&session, Duration::from_secs(90)).await;
    assert!(outcome.ended, "follower did not see the end");
    assert!(
        outcome.rejected.is_empty(),
        "rejected {:?}",
        outcome.rejected
    );
    let texts: Vec<&str> = outcome
        .finals
        .iter()
        .map(|(_, _, s)| s.text.as_str())
        .collect();
    let finals = sample_finals();
    let expected: Vec<&str> = finals.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, expected);
    assert!(relay.terminate().success());
}

/// Runs `sealcast-relay keys generate` and returns the fingerprint it printed.
fn generate_key(path: &Path) -> String {
    let output = Command::new(binary_path("sealcast-relay"))
        .args(["keys", "generate", "--out"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "keys generate failed: {stdout}");
    let fingerprint = stdout
        .split("fingerprint ")
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .unwrap_or_else(|| panic!("no fingerprint in {stdout:?}"));
    fingerprint.to_owned()
}

/// Runs `sealcast-relay keys rotate` and returns whether it succeeded, with
/// its output.
fn run_keys_rotate(data_dir: &Path, old_key: &Path, new_key: &Path) -> (bool, String) {
    let output = Command::new(binary_path("sealcast-relay"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(data_dir)
        .arg("--old-key-file")
        .arg(old_key)
        .arg("--new-key-file")
        .arg(new_key)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Starts a relay that must fail to start, and returns what it wrote.
fn start_fails(data_dir: &Path, args: &[&str], key_env: Option<&str>) -> String {
    let mut command = Command::new(binary_path("sealcast-relay"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("SEALCAST_AT_REST_KEY")
        .env_remove("SEALCAST_AT_REST_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = key_env {
        command.env("SEALCAST_AT_REST_KEY", key);
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > EXIT_LIMIT {
            child.kill().unwrap();
            panic!("the relay with args {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        !output.status.success(),
        "the relay with args {args:?} exited 0"
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

//! A relay whose audit key did not sign the store's audit checkpoints
//! refuses to start. Nodes sharing a store must share the audit key: with a
//! key of its own, a node would sign checkpoints that no single public key
//! verifies, and the append-only trail would keep them for good.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use sealcast_tests::database::relay_command;
use sealcast_tests::process::RelayProcess;

#[test]
fn relay_with_another_audit_key_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    // A clean stop signs the audit streams' heads.
    assert!(
        relay.terminate().success(),
        "the first relay did not stop cleanly"
    );

    let original = std::fs::read(data.path().join("audit-signing.key")).unwrap();
    std::fs::remove_file(data.path().join("audit-signing.key")).unwrap();
    std::fs::remove_file(data.path().join("audit-signing.pub")).unwrap();

    let mut child = relay_command(data.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay with a new audit key kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "the relay with a new audit key started");
    assert!(
        stderr.contains("copy audit-signing.key and audit-signing.pub"),
        "the error does not say what to do: {stderr}"
    );

    // With the original key back, the relay starts again.
    let key_path = data.path().join("audit-signing.key");
    std::fs::write(&key_path, original).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(data.path().join("audit-signing.pub")).ok();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    assert!(relay.terminate().success());
}

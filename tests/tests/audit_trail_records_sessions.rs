//! A consultation through a real relay process leaves the expected audit
//! entries in order, `sealcast-relay audit verify` accepts them, names an
//! entry changed in the database file, and an export verifies offline until
//! it is edited. `sealcast session end` deletes the key file and the relay
//! records that it did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use sealcast_tests::audit::{
    audit_command, entries, open_as_attacker, verify_data_dir, StoredEntry,
};
use sealcast_tests::process::{binary_path, RelayProcess};
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::{follow_until_end, wait_until_connected, LiveSession};
use sealcast_tests::staff::{admin, create_organization, sign_in, StaffDevice};
use url::Url;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs one consultation: sign-in, session, follower, a few segments, and
/// the end with the key destroyed. Returns the session id.
async fn run_consultation(relay: &RelayProcess, staff: &StaffDevice) -> String {
    let session = LiveSession::create(relay, staff).await;
    let mut follower = session.follower();
    wait_until_connected(&mut follower, LIMIT).await;

    let mut publisher = session.publisher().await;
    for segment in sample_finals().iter().take(5) {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();
    session.end_destroying_key().await;

    let outcome = follow_until_end(follower, LIMIT).await;
    assert!(outcome.ended, "the follower did not see the end");
    session.created.session_id.to_string()
}

/// Returns the index of the first entry at or after `from` with `action`
/// and, when given, `session_id`.
fn position(entries: &[StoredEntry], from: usize, action: &str, session_id: Option<&str>) -> usize {
    entries[from..]
        .iter()
        .position(|entry| {
            entry.action == action
                && session_id.is_none_or(|id| entry.session_id.as_deref() == Some(id))
        })
        .map(|index| index + from)
        .unwrap_or_else(|| panic!("no {action} entry after index {from}: {entries:#?}"))
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultation_is_audited_in_order() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session_id = run_consultation(&relay, &staff).await;
    assert!(relay.terminate().success());

    let application = entries(data.path(), "application");
    let session = Some(session_id.as_str());
    let signed_in = position(&application, 0, "auth.signed_in", None);
    let started = position(&application, signed_in + 1, "session.started", session);
    let invited = position(&application, started + 1, "invite.created", session);
    let joined = position(&application, invited + 1, "follower.joined", session);
    let ended = position(&application, joined + 1, "session.ended", session);
    let destroyed = position(&application, ended + 1, "session.key_destroyed", session);
    let left = position(&application, joined + 1, "follower.left", session);

    assert_eq!(application[joined].actor, "patient");
    assert!(application[joined].details.contains("invite_token"));
    assert!(application[left].details.contains("reason"));
    let device_actor = &application[started].actor;
    assert!(device_actor.starts_with("dev_"), "{device_actor}");
    assert_eq!(&application[destroyed].actor, device_actor);
    assert_eq!(application[started].source.as_deref(), Some("127.0.0.1"));
    for entry in &application {
        assert!(
            !format!("{entry:?}").contains(&staff.email),
            "an audit entry contains the email address: {entry:?}"
        );
    }

    let admin = entries(data.path(), "admin");
    let organization = position(&admin, 0, "organization.created", None);
    let user = position(&admin, organization + 1, "user.created", None);
    assert_eq!(admin[user].actor, "admin-cli");
    position(&admin, 0, "relay.started", None);

    let verified = verify_data_dir(data.path());
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("audit verify: OK"));

    // An attacker with the file changes who ended the session.
    let seq = application[ended].seq;
    let conn = open_as_attacker(data.path());
    conn.execute(
        "UPDATE audit_entries SET actor = 'dev_someone_else' WHERE stream = 'application' AND seq = ?1",
        [seq],
    )
    .unwrap();
    drop(conn);
    let verified = verify_data_dir(data.path());
    assert!(!verified.status.success());
    let text = stdout(&verified);
    assert!(
        text.contains(&format!("FAILED: stream application, entry {seq}:")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_offline_until_edited() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    run_consultation(&relay, &staff).await;

    // The export works while the relay runs.
    let out = data.path().join("export.jsonl");
    let exported = audit_command(&[
        "export",
        "--data-dir",
        path_str(data.path()),
        "--out",
        path_str(&out),
    ]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(relay.terminate().success());

    let key = audit_command(&["public-key", "--data-dir", path_str(data.path())]);
    assert!(key.status.success());
    let key = stdout(&key).trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");

    // Offline: the export on its own, against the key kept elsewhere.
    let offline = tempfile::tempdir().unwrap();
    let copy = offline.path().join("export.jsonl");
    std::fs::copy(&out, &copy).unwrap();
    let verified = audit_command(&["verify", "--file", path_str(&copy), "--public-key", &key]);
    assert!(verified.status.success(), "{}", stdout(&verified));

    let text = std::fs::read_to_string(&copy).unwrap();
    let edited = text.replacen("session.started", "session.ended", 1);
    assert_ne!(edited, text);
    std::fs::write(&copy, edited).unwrap();
    let verified = audit_command(&["verify", "--file", path_str(&copy), "--public-key", &key]);
    assert!(!verified.status.success());
    assert!(
        stdout(&verified).contains("FAILED: stream application, entry"),
        "{}",
        stdout(&verified)
    );
}

/// Runs the `sealcast` binary with `state_dir` as its home and returns its output.
fn sealcast(state_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary_path("sealcast"))
        .env_remove("SEALCAST_RELAY")
        .env("SEALCAST_HOME", state_dir)
        .args(args)
        .output()
        .expect("failed to run sealcast")
}

fn session_files(state_dir: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(state_dir.join("sessions")) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_shreds_key_and_is_audited() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let org = create_organization(&relay.data_dir);
    let email = format!("shred-{}@clinic.example", std::process::id());
    admin(
        &relay.data_dir,
        &[
            "create-user",
            "--org",
            &org,
            "--email",
            &email,
            "--role",
            "clinician",
        ],
    );
    let url = Url::parse(&relay.base_url()).unwrap();
    // The sign-in's key store becomes the CLI's home, with the device in it.
    let (device, state) = sign_in(&url, &relay.ca_cert(), &relay.outbox_dir(), &email).await;
    drop(device);

    let started = sealcast(
        state.path(),
        &[
            "session",
            "start",
            "--relay",
            url.as_str(),
            "--ca-cert",
            path_str(&relay.ca_cert()),
            "--no-qr",
        ],
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let files = session_files(state.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let session_id = files[0]
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap()
        .to_owned();

    let ended = sealcast(state.path(), &["session", "end"]);
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert!(
        session_files(state.path()).is_empty(),
        "the key file is still there"
    );
    assert!(relay.terminate().success());

    let application = entries(data.path(), "application");
    let session = Some(session_id.as_str());
    let ended_at = position(&application, 0, "session.ended", session);
    let destroyed = position(&application, ended_at + 1, "session.key_destroyed", session);
    assert_eq!(application[destroyed].actor, application[ended_at].actor);
}

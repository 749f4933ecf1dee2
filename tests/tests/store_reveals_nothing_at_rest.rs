//! With an at-rest key configured, a full session through a real relay
//! leaves no email address, device or organization name, and no frame as the
//! devices produced it, in the database file or its WAL, while the relay
//! runs and after it stops. The frames are there all the same: opened with
//! the key, each one is a valid device frame.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use sealcast_client::auth::outbox::sign_in_from_outbox;
use sealcast_client::KeyStore;
use sealcast_protocol::FrameHeader;
use sealcast_relay::at_rest::{KeyEncryptionKey, KeySource};
use sealcast_tests::leaks::{find_leaks, secret_needles, text_needle, Needle};
use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::sample_with_interim;
use sealcast_tests::session::{follow_until_end, LiveSession};
use sealcast_tests::staff::admin;
use sealcast_tests::store::FrameStore;
use url::Url;

const ORGANIZATION: &str = "Harbourside Family Practice";
const EMAIL: &str = "dr.imogen.quill@harbourside.example";
const DEVICE_NAME: &str = "Exam Room 7 Tablet";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_leaves_no_plaintext_in_store_files() {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("at-rest.key");
    let key = KeyEncryptionKey::generate();
    key.write_new_file(&key_file).unwrap();
    // The only test in this binary, so the variable reaches every child
    // process, the admin commands included, and nothing else.
    std::env::set_var("SEALCAST_AT_REST_KEY_FILE", &key_file);

    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let org_id = admin(data.path(), &["create-org", "--name", ORGANIZATION]);
    admin(
        data.path(),
        &[
            "create-user",
            "--org",
            &org_id,
            "--email",
            EMAIL,
            "--role",
            "clinician",
        ],
    );
    let url = Url::parse(&relay.base_url()).unwrap();
    let key_store_dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(key_store_dir.path()).unwrap();
    let device = sign_in_from_outbox(
        &store,
        &url,
        Some(&relay.ca_cert()),
        &relay.outbox_dir(),
        EMAIL,
        DEVICE_NAME,
    )
    .await
    .unwrap();

    let session = LiveSession::create_at(&url, &relay.ca_cert(), device.authorizer()).await;
    let follower = tokio::spawn(follow_until_end(
        session.follower(),
        Duration::from_secs(90),
    ));
    let mut publisher = session.publisher().await;
    let segments = sample_with_interim();
    for segment in &segments {
        publisher.publish(segment).await.unwrap();
    }
    publisher.end().await.unwrap();
    session.end().await;
    let outcome = follower.await.unwrap();
    assert!(outcome.ended, "follower did not see the end");
    assert!(!outcome.finals.is_empty(), "follower saw no final segment");

    let mut needles = vec![
        text_needle("email address", EMAIL),
        text_needle("device name", DEVICE_NAME),
        text_needle("organization name", ORGANIZATION),
    ];
    needles.extend(secret_needles("key-encryption key", &key_bytes(&key)));
    let wal = data.path().join("relay.db-wal");
    assert!(wal.exists(), "the running relay has no WAL file to check");
    assert_no_leaks(data.path(), &needles, "while the relay runs");

    assert!(relay.terminate().success());
    let frames = FrameStore::open_with_key(data.path(), &KeySource::File(key_file.clone()));
    let session_id = session.created.session_id;
    let offsets = frames.offsets(session_id);
    assert!(
        offsets.len() >= segments.len(),
        "{} frames stored for {} segments",
        offsets.len(),
        segments.len()
    );
    for offset in offsets {
        let frame = frames.frame(session_id, offset);
        FrameHeader::decode_frame(&frame)
            .unwrap_or_else(|err| panic!("frame {offset} opened to an invalid frame: {err}"));
        needles.push(Needle {
            label: format!("frame {offset} as the device sealed it"),
            bytes: frame.clone(),
        });
        needles.push(Needle {
            label: format!("last 32 bytes of frame {offset}"),
            bytes: frame[frame.len() - 32..].to_vec(),
        });
    }
    drop(frames);
    assert_no_leaks(data.path(), &needles, "after the relay stopped");
}

fn key_bytes(key: &KeyEncryptionKey) -> Vec<u8> {
    hex_decode(key.to_text().trim())
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

/// Checks every `relay.db*` file, and that the database file is among them.
fn assert_no_leaks(data_dir: &Path, needles: &[Needle], when: &str) {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("relay.db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let leaks = find_leaks(&bytes, needles);
        assert!(leaks.is_empty(), "{name} {when} contains {leaks:?}");
        checked.push(name);
    }
    assert!(
        checked.iter().any(|name| name == "relay.db"),
        "no relay.db in {} {when}",
        data_dir.display()
    );
}

//! Key rotation with paired devices, with the real `sealcast` and
//! `sealcast-relay` binaries over TLS. Two devices pair with `sealcast pair
//! join` and follow a `sealcast publish` reading standard input. After the
//! first segment the clinician removes one device with `sealcast pair
//! remove`, and the relay closes that device's open follow socket with
//! close code 4009. The publish then gets SIGUSR1 in the middle of the
//! consultation. The kept device gets the new key through the relay and
//! prints the whole consultation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use sealcast_client::TlsSettings;
use sealcast_tests::cli::CliProcess;
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::staff::{admin, create_organization, sign_in};
use tempfile::TempDir;
use url::Url;

const BEFORE_ROTATION: &str =
    r#"{"speaker":"doctor","start_ms":0,"end_ms":1500,"text":"Good morning, what brings you in?"}"#;
const AFTER_ROTATION: [&str; 2] = [
    r#"{"speaker":"patient","start_ms":1600,"end_ms":3000,"text":"My knee hurts when I climb stairs."}"#,
    r#"{"speaker":"doctor","start_ms":3100,"end_ms":4000,"text":"Since when?"}"#,
];

/// A relay with a signed-in clinician device that started a session.
struct Clinic {
    relay: RelayProcess,
    home: TempDir,
    _data: TempDir,
}

impl Clinic {
    async fn start() -> Clinic {
        let data = tempfile::tempdir().unwrap();
        let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
        let org = create_organization(&relay.data_dir);
        let email = format!("rotation-{}@clinic.example", std::process::id());
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
        let (device, home) = sign_in(&url, &relay.ca_cert(), &relay.outbox_dir(), &email).await;
        drop(device);

        let ca_cert = relay.ca_cert();
        let (status, stdout, stderr) = CliProcess::run(
            home.path(),
            &[
                "session",
                "start",
                "--no-qr",
                "--relay",
                &relay.base_url(),
                "--ca-cert",
                ca_cert.to_str().unwrap(),
            ],
        )
        .await;
        assert!(
            status.success(),
            "session start failed: {stdout:#?} {stderr:#?}"
        );
        Clinic {
            relay,
            home,
            _data: data,
        }
    }

    /// Pairs a new device, which then follows in JSON Lines. Returns the
    /// running `pair join` and the device id `pair offer` reported.
    async fn pair_device(&self, joiner_home: &Path) -> (CliProcess, String) {
        let ca_cert = self.relay.ca_cert();
        let mut offer = CliProcess::spawn(self.home.path(), &["pair", "offer"]);
        let id = offer.stdout_after("Pairing id: ").await;
        let base_url = self.relay.base_url();
        let mut join = CliProcess::spawn(
            joiner_home,
            &[
                "pair",
                "join",
                "--relay",
                &base_url,
                "--ca-cert",
                ca_cert.to_str().unwrap(),
                "--confirm-code",
                "-",
                "--format",
                "jsonl",
                &id,
            ],
        );
        let code = join.stderr_after("Pairing code: ").await;
        let code = code.split(" (digits").next().unwrap().trim().to_string();
        offer.stderr_after("Pairing code: ").await;
        join.write_line(&code).await;
        offer.write_line("y").await;
        let device_id = offer.stderr_after("Device ").await;
        let device_id = device_id.split(' ').next().unwrap().to_string();
        let (status, _, stderr) = offer.finish().await;
        assert!(status.success(), "pair offer failed: {stderr:#?}");
        join.stderr_after("Paired. Following session").await;
        (join, device_id)
    }

    async fn paired_ids(&self) -> Vec<String> {
        let (status, stdout, stderr) = CliProcess::run(self.home.path(), &["pair", "list"]).await;
        assert!(status.success(), "pair list failed: {stderr:#?}");
        stdout
            .iter()
            .skip(1)
            .map(|line| line.split_whitespace().next().unwrap().to_string())
            .collect()
    }
}

fn texts(stdout: &[String]) -> Vec<String> {
    stdout
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|value| value["text"].as_str().map(str::to_owned))
        .collect()
}

fn text_of(segment: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(segment).unwrap();
    value["text"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_device_loses_socket_and_key() {
    let clinic = Clinic::start().await;
    let kept_home = tempfile::tempdir().unwrap();
    let removed_home = tempfile::tempdir().unwrap();
    let (mut kept, kept_id) = clinic.pair_device(kept_home.path()).await;
    let (mut removed, removed_id) = clinic.pair_device(removed_home.path()).await;
    assert_ne!(kept_id, removed_id);
    assert_eq!(
        clinic.paired_ids().await,
        [kept_id.clone(), removed_id.clone()]
    );

    let mut publish = CliProcess::spawn(clinic.home.path(), &["publish", "--end", "-"]);
    publish.stderr_after("kill -USR1 ").await;
    publish.write_line(BEFORE_ROTATION).await;
    let first = text_of(BEFORE_ROTATION);
    kept.stdout_after(&first).await;
    removed.stdout_after(&first).await;

    let (status, _, stderr) =
        CliProcess::run(clinic.home.path(), &["pair", "remove", &removed_id]).await;
    assert!(status.success(), "pair remove failed: {stderr:#?}");
    assert_eq!(clinic.paired_ids().await, vec![kept_id.clone()]);
    let (status, _, stderr) =
        CliProcess::run(clinic.home.path(), &["pair", "remove", &removed_id]).await;
    assert!(!status.success(), "a second removal succeeded: {stderr:#?}");

    // The removed device's socket was open: the relay closes it at once,
    // before any frame of a later key epoch exists.
    let (status, stdout, stderr) = removed.finish().await;
    assert!(!status.success(), "the removed device reported success");
    assert_eq!(texts(&stdout), [first], "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("code 4009 (this device was removed from the session")),
        "{stderr:#?}"
    );
    let tls = TlsSettings::from_ca_file(&clinic.relay.ca_cert()).unwrap();
    let url = Url::parse(&clinic.relay.base_url()).unwrap();
    let closed = scrape(&url, &tls).await.value(
        "sealcast_paired_sockets_closed_total",
        &[("trigger", "removal")],
    );
    assert_eq!(closed, 1.0);

    let signal = std::process::Command::new("kill")
        .args(["-USR1", &publish.pid().to_string()])
        .status()
        .unwrap();
    assert!(signal.success(), "kill -USR1 failed");
    publish
        .stderr_after("Rotated the session key to key epoch 1")
        .await;
    let sent_to = publish
        .stderr_after("Sent the key of key epoch 1 to paired device ")
        .await;
    assert_eq!(sent_to.trim_end_matches('.'), kept_id);

    for segment in AFTER_ROTATION {
        publish.write_line(segment).await;
    }
    publish.close_stdin();
    let (status, _, stderr) = publish.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");
    assert!(
        !stderr.iter().any(|line| line.contains(&removed_id)),
        "the removed device was sent a key: {stderr:#?}"
    );

    let (status, stdout, stderr) = kept.finish().await;
    assert!(status.success(), "the kept device failed: {stderr:#?}");
    let expected: Vec<String> = std::iter::once(BEFORE_ROTATION)
        .chain(AFTER_ROTATION)
        .map(text_of)
        .collect();
    assert_eq!(texts(&stdout), expected, "{stderr:#?}");
    assert_eq!(
        stdout.last().map(String::as_str),
        Some(r#"{"event":"ended"}"#)
    );
    assert!(
        stderr
            .iter()
            .any(|line| line.starts_with("Added the key of key epoch 1")),
        "{stderr:#?}"
    );
    assert!(
        !stderr.iter().any(|line| line.contains("incomplete")),
        "{stderr:#?}"
    );
}

//! A clinician's second device takes a session over, with the real
//! `sealcast` and `sealcast-relay` binaries over TLS. The device that started
//! the session runs `sealcast pair offer --device`, the other device of the
//! same clinician `sealcast pair adopt`, and the test carries each code to
//! the other screen. The adopting device then publishes the rest of the
//! consultation and ends the session. A follower with only the first
//! device's key reports every stream complete, and names the second device
//! as the author of the later ones, endorsed by the first. A patient device
//! paired on the first device gets the key that the second device rotates,
//! because the hand-over carries its pairing. Devices of another clinician
//! or without a sign-in cannot join such a pairing, and a stream whose key
//! endorses itself is not authored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use sealcast_client::{KeyStore, Publisher, PublisherConfig, TlsSettings};
use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::pairing::{PairedJoiner, MAX_GRANT_PAIRED_DEVICES, PAIRED_STATE_LEN};
use sealcast_protocol::{FollowInvite, SessionId};
use sealcast_tests::cli::{code_words, CliProcess};
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::sample::sample_finals;
use sealcast_tests::session::relay_tls;
use sealcast_tests::staff::{admin, create_organization, sign_in};
use tempfile::TempDir;
use url::Url;

/// A relay, a clinician's first device that ran `sealcast session start`,
/// and the link it printed.
struct Clinic {
    relay: RelayProcess,
    org: String,
    email: String,
    home: TempDir,
    session_id: SessionId,
    link: String,
    _data: TempDir,
}

impl Clinic {
    async fn start() -> Clinic {
        let data = tempfile::tempdir().unwrap();
        let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
        let org = create_organization(&relay.data_dir);
        let email = format!("two-devices-{}@clinic.example", std::process::id());
        create_clinician(&relay, &org, &email);
        let home = sign_in_home(&relay, &email).await;

        let ca_cert = relay.ca_cert();
        let started = CliProcess::spawn(
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
        );
        let (status, stdout, stderr) = started.finish().await;
        assert!(status.success(), "session start failed: {stderr:#?}");
        let session_id = stdout
            .iter()
            .find_map(|line| line.strip_prefix("Session "))
            .and_then(|rest| rest.split(' ').next())
            .expect("session start names the session")
            .parse()
            .unwrap();
        let link = stdout
            .iter()
            .find(|line| line.starts_with("https://") && line.contains("/join?"))
            .expect("session start prints the invite link")
            .clone();
        Clinic {
            relay,
            org,
            email,
            home,
            session_id,
            link,
            _data: data,
        }
    }

    fn publisher(&self) -> PublisherKey {
        FollowInvite::parse(&self.link).unwrap().publisher.unwrap()
    }

    fn ca_cert(&self) -> String {
        self.relay.ca_cert().to_str().unwrap().to_owned()
    }

    /// Starts `sealcast follow` with the printed link and waits until it is connected.
    async fn follow(&self, home: &Path) -> CliProcess {
        let ca_cert = self.ca_cert();
        let mut follower = CliProcess::spawn(
            home,
            &["follow", "--ca-cert", &ca_cert, "--format", "jsonl", "-"],
        );
        follower.write_line(&self.link).await;
        follower.stderr_after("Connected to session").await;
        follower
    }

    /// Runs `pair offer --device` on the first device and `pair adopt` on the
    /// device in `home`, confirming matching codes on both.
    async fn hand_over(&self, home: &Path) -> Vec<String> {
        let mut offer = CliProcess::spawn(self.home.path(), &["pair", "offer", "--device"]);
        let id = offer.stdout_after("Pairing id: ").await;
        let (ca_cert, base_url) = (self.ca_cert(), self.relay.base_url());
        let mut adopt = CliProcess::spawn(
            home,
            &[
                "pair",
                "adopt",
                "--relay",
                &base_url,
                "--ca-cert",
                &ca_cert,
                "--confirm-code",
                "-",
                &id,
            ],
        );
        let adopter_code = code_words(&adopt.stderr_after("Pairing code: ").await);
        let offer_code = code_words(&offer.stderr_after("Pairing code: ").await);
        assert_eq!(adopter_code.split(' ').count(), 4, "{adopter_code}");
        assert_eq!(adopter_code, offer_code);
        adopt.write_line(&offer_code).await;
        offer.write_line("y").await;
        let (status, _, stderr) = offer.finish().await;
        assert!(status.success(), "pair offer --device failed: {stderr:#?}");
        let (status, stdout, stderr) = adopt.finish().await;
        assert!(status.success(), "pair adopt failed: {stderr:#?}");
        stdout
    }
}

impl Clinic {
    /// Pairs a patient device in `joiner_home` with the device in
    /// `clinician_home`. Returns the running `pair join`, which follows in
    /// JSON Lines, and the device id that `pair offer` reported.
    async fn pair_patient(
        &self,
        clinician_home: &Path,
        joiner_home: &Path,
    ) -> (CliProcess, String) {
        let mut offer = CliProcess::spawn(clinician_home, &["pair", "offer"]);
        let id = offer.stdout_after("Pairing id: ").await;
        let (ca_cert, base_url) = (self.ca_cert(), self.relay.base_url());
        let mut join = CliProcess::spawn(
            joiner_home,
            &[
                "pair",
                "join",
                "--relay",
                &base_url,
                "--ca-cert",
                &ca_cert,
                "--confirm-code",
                "-",
                "--format",
                "jsonl",
                &id,
            ],
        );
        let code = code_words(&join.stderr_after("Pairing code: ").await);
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
}

/// Runs `sealcast pair list` in `home` and returns its rows without the header.
async fn paired_rows(home: &Path) -> Vec<String> {
    let (status, stdout, stderr) = CliProcess::run(home, &["pair", "list"]).await;
    assert!(status.success(), "pair list failed: {stderr:#?}");
    stdout.into_iter().skip(1).collect()
}

fn create_clinician(relay: &RelayProcess, org: &str, email: &str) {
    admin(
        &relay.data_dir,
        &[
            "create-user",
            "--org",
            org,
            "--email",
            email,
            "--role",
            "clinician",
        ],
    );
}

/// Signs a new device of `email` in and returns its key store directory.
async fn sign_in_home(relay: &RelayProcess, email: &str) -> TempDir {
    sign_in_device(relay, email).await.0
}

/// Signs a new device of `email` in and returns its key store directory and
/// its identity key.
async fn sign_in_device(relay: &RelayProcess, email: &str) -> (TempDir, PublisherKey) {
    let url = Url::parse(&relay.base_url()).unwrap();
    let (device, home) = sign_in(&url, &relay.ca_cert(), &relay.outbox_dir(), email).await;
    (home, PublisherKey::of_device(device.token().key()))
}

fn write_transcript(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Returns the stderr lines that report a verdict for a stream.
fn verdict_lines(stderr: &[String]) -> Vec<&String> {
    stderr
        .iter()
        .filter(|line| line.starts_with("stream ") || line.starts_with("warning: stream "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_device_continues_and_ends_the_session() {
    let clinic = Clinic::start().await;
    let first = clinic.publisher();
    let follower_home = tempfile::tempdir().unwrap();
    let follower = clinic.follow(follower_home.path()).await;

    let opening = write_transcript(
        clinic.home.path(),
        "opening.jsonl",
        &[
            r#"{"speaker":"doctor","start_ms":0,"end_ms":1500,"text":"Good morning, what brings you in?"}"#,
            r#"{"speaker":"patient","start_ms":1600,"end_ms":3000,"text":"My knee hurts when I climb stairs."}"#,
        ],
    );
    let published = CliProcess::spawn(clinic.home.path(), &["publish", opening.to_str().unwrap()]);
    let (status, _, stderr) = published.finish().await;
    assert!(
        status.success(),
        "publish on the first device failed: {stderr:#?}"
    );

    let (second_home, second) = sign_in_device(&clinic.relay, &clinic.email).await;
    assert_ne!(second, first);
    let adopted = clinic.hand_over(second_home.path()).await;
    assert!(
        adopted
            .iter()
            .any(|line| line.starts_with(&format!("Session {} adopted", clinic.session_id))),
        "{adopted:#?}"
    );

    // The second device gives out the same link, with the first device's key.
    let linked = CliProcess::spawn(second_home.path(), &["session", "link", "--no-qr"]);
    let (status, stdout, stderr) = linked.finish().await;
    assert!(status.success(), "session link failed: {stderr:#?}");
    let printed = stdout
        .iter()
        .find(|line| line.starts_with("https://") && line.contains("/join?"))
        .expect("session link prints the invite link");
    assert_eq!(printed, &clinic.link);

    let rest = write_transcript(
        second_home.path(),
        "rest.jsonl",
        &[
            r#"{"speaker":"doctor","start_ms":3100,"end_ms":4000,"text":"Since when?"}"#,
            r#"{"speaker":"patient","start_ms":4100,"end_ms":5200,"text":"About two weeks."}"#,
        ],
    );
    let published = CliProcess::spawn(second_home.path(), &["publish", rest.to_str().unwrap()]);
    let (status, _, stderr) = published.finish().await;
    assert!(
        status.success(),
        "publish on the second device failed: {stderr:#?}"
    );
    let endorsed = format!(
        "signed by device key {}, endorsed by device key {}",
        second.to_base64url(),
        first.to_base64url()
    );
    assert!(
        stderr.iter().any(|line| line.contains(&endorsed)),
        "{stderr:#?}"
    );

    let ended = CliProcess::spawn(second_home.path(), &["session", "end"]);
    let (status, stdout, stderr) = ended.finish().await;
    assert!(
        status.success(),
        "session end on the second device failed: {stderr:#?}"
    );
    assert!(
        stdout.iter().any(|line| line
            == &format!(
                "Session {} ended. Its key was deleted from this device.",
                clinic.session_id
            )),
        "{stdout:#?}"
    );

    let (status, stdout, stderr) = follower.finish().await;
    assert!(status.success(), "follow failed: {stderr:#?}");
    let texts: Vec<String> = stdout
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|segment| segment["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        texts,
        [
            "Good morning, what brings you in?",
            "My knee hurts when I climb stairs.",
            "Since when?",
            "About two weeks."
        ]
    );
    // The first device's stream, the second device's stream and the stream
    // of its end frame.
    let verdicts = verdict_lines(&stderr);
    assert_eq!(verdicts.len(), 3, "{stderr:#?}");
    let by_first = format!(
        "is complete and authored by device {}",
        first.to_base64url()
    );
    let by_second = format!(
        "is complete and authored by device {}, endorsed by device {}",
        second.to_base64url(),
        first.to_base64url()
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|line| line.ends_with(&by_first))
            .count(),
        1,
        "{stderr:#?}"
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|line| line.ends_with(&by_second))
            .count(),
        2,
        "{stderr:#?}"
    );
    assert!(
        !stderr.iter().any(|line| line.starts_with("warning:")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_patient_gets_rotated_key() {
    let clinic = Clinic::start().await;
    let patient_home = tempfile::tempdir().unwrap();
    let (mut patient, patient_id) = clinic
        .pair_patient(clinic.home.path(), patient_home.path())
        .await;

    let (second_home, _) = sign_in_device(&clinic.relay, &clinic.email).await;
    let adopted = clinic.hand_over(second_home.path()).await;
    assert!(
        adopted
            .iter()
            .any(|line| line.starts_with("Stored 1 paired patient device(s) from the other device")),
        "{adopted:#?}"
    );
    let rows = paired_rows(second_home.path()).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].starts_with(&patient_id), "{rows:#?}");
    assert!(
        rows[0].ends_with("handed over with the session"),
        "{rows:#?}"
    );
    let rows = paired_rows(clinic.home.path()).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].ends_with("paired on this device"), "{rows:#?}");

    let before = r#"{"speaker":"doctor","start_ms":0,"end_ms":1500,"text":"Good morning, what brings you in?"}"#;
    let after = r#"{"speaker":"patient","start_ms":1600,"end_ms":3000,"text":"My knee hurts when I climb stairs."}"#;
    let mut publish = CliProcess::spawn(second_home.path(), &["publish", "--end", "-"]);
    publish.stderr_after("kill -USR1 ").await;
    publish.write_line(before).await;
    patient
        .stdout_after("Good morning, what brings you in?")
        .await;

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
    assert_eq!(sent_to.trim_end_matches('.'), patient_id);
    publish.write_line(after).await;
    publish.close_stdin();
    let (status, _, stderr) = publish.finish().await;
    assert!(
        status.success(),
        "publish on the second device failed: {stderr:#?}"
    );

    let (status, stdout, stderr) = patient.finish().await;
    assert!(status.success(), "the patient device failed: {stderr:#?}");
    let texts: Vec<String> = stdout
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter_map(|value| value["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        texts,
        [
            "Good morning, what brings you in?",
            "My knee hurts when I climb stairs."
        ],
        "{stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|line| line.starts_with("Added the key of key epoch 1")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_over_pairing_limit_fails() {
    let clinic = Clinic::start().await;
    // Records as `pair offer` stores them, one more than a grant carries.
    let store = KeyStore::open(clinic.home.path().to_path_buf()).unwrap();
    for byte in 1..=MAX_GRANT_PAIRED_DEVICES as u8 + 1 {
        let pairing = PairedJoiner::from_secret_bytes(&[byte; PAIRED_STATE_LEN]).unwrap();
        store
            .add_paired_device(&clinic.session_id, &pairing)
            .unwrap();
    }

    let (status, stdout, stderr) =
        CliProcess::run(clinic.home.path(), &["pair", "offer", "--device"]).await;
    assert!(!status.success(), "{stdout:#?}");
    assert!(
        !stdout.iter().any(|line| line.starts_with("Pairing id:")),
        "{stdout:#?}"
    );
    let expected = format!(
        "has {} paired patient devices, more than the {MAX_GRANT_PAIRED_DEVICES} a hand-over carries",
        MAX_GRANT_PAIRED_DEVICES + 1
    );
    assert!(
        stderr.iter().any(|line| line.contains(&expected)),
        "{stderr:#?}"
    );

    let tls = TlsSettings::from_ca_file(&clinic.relay.ca_cert()).unwrap();
    let metrics = scrape(&Url::parse(&clinic.relay.base_url()).unwrap(), &tls).await;
    assert_eq!(
        metrics.value("sealcast_pairing_steps_total", &[("step", "open")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_pairing_rejects_others() {
    let clinic = Clinic::start().await;
    let colleague_email = format!("colleague-{}@clinic.example", std::process::id());
    create_clinician(&clinic.relay, &clinic.org, &colleague_email);
    let colleague_home = sign_in_home(&clinic.relay, &colleague_email).await;

    let mut offer = CliProcess::spawn(clinic.home.path(), &["pair", "offer", "--device"]);
    let id = offer.stdout_after("Pairing id: ").await;
    let (ca_cert, base_url) = (clinic.ca_cert(), clinic.relay.base_url());

    let adopt = CliProcess::spawn(
        colleague_home.path(),
        &[
            "pair",
            "adopt",
            "--relay",
            &base_url,
            "--ca-cert",
            &ca_cert,
            &id,
        ],
    );
    let (status, _, stderr) = adopt.finish().await;
    assert!(!status.success(), "{stderr:#?}");
    assert!(
        stderr.iter().any(|line| line.contains("403")
            && line.contains("signed in as another user or organization")),
        "{stderr:#?}"
    );

    // A patient's device has no sign-in at all.
    let patient_home = tempfile::tempdir().unwrap();
    let join = CliProcess::spawn(
        patient_home.path(),
        &[
            "pair",
            "join",
            "--relay",
            &base_url,
            "--ca-cert",
            &ca_cert,
            &id,
        ],
    );
    let (status, stdout, stderr) = join.finish().await;
    assert!(!status.success(), "{stderr:#?}");
    assert!(stdout.is_empty(), "{stdout:#?}");
    assert!(
        stderr.iter().any(|line| line.contains("401")
            && line.contains("sign in on the joining device as the same clinician")),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|line| line.contains(
            "this pairing id belongs to a clinician's device hand-over, which needs `sealcast pair adopt`"
        )),
        "{stderr:#?}"
    );
    assert!(
        !stderr
            .iter()
            .any(|line| line.contains("`sealcast login` again on the clinician device")),
        "{stderr:#?}"
    );

    let tls = TlsSettings::from_ca_file(&clinic.relay.ca_cert()).unwrap();
    let metrics = scrape(&Url::parse(&base_url).unwrap(), &tls).await;
    let failures = |reason| metrics.value("sealcast_pairing_failures_total", &[("reason", reason)]);
    assert_eq!(failures("joiner_other_clinician"), 1.0);
    assert_eq!(failures("joiner_not_signed_in"), 1.0);
    assert_eq!(
        metrics.value("sealcast_pairing_steps_total", &[("step", "commitment")]),
        0.0
    );

    // The first device still waits for its own second device.
    let second_home = sign_in_home(&clinic.relay, &clinic.email).await;
    let mut adopt = CliProcess::spawn(
        second_home.path(),
        &[
            "pair",
            "adopt",
            "--relay",
            &base_url,
            "--ca-cert",
            &ca_cert,
            "--confirm-code",
            "-",
            &id,
        ],
    );
    let adopter_code = code_words(&adopt.stderr_after("Pairing code: ").await);
    let offer_code = code_words(&offer.stderr_after("Pairing code: ").await);
    assert_eq!(adopter_code, offer_code);
    adopt.write_line(&offer_code).await;
    offer.write_line("y").await;
    let (status, _, stderr) = offer.finish().await;
    assert!(status.success(), "{stderr:#?}");
    let (status, _, stderr) = adopt.finish().await;
    assert!(status.success(), "{stderr:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_endorsed_key_is_not_authored() {
    let clinic = Clinic::start().await;
    let first = clinic.publisher().to_base64url();
    let follower_home = tempfile::tempdir().unwrap();
    let follower = clinic.follow(follower_home.path()).await;

    // A device of the same clinician has the session key from the link and
    // endorses its own key, which followers do not have.
    let url = Url::parse(&clinic.relay.base_url()).unwrap();
    let (forger, _forger_home) = sign_in(
        &url,
        &clinic.relay.ca_cert(),
        &clinic.relay.outbox_dir(),
        &clinic.email,
    )
    .await;
    let forger_key = forger.token().key().clone();
    let session_key = FollowInvite::parse(&clinic.link).unwrap().link.key;
    let mut config = PublisherConfig::new(
        url,
        clinic.session_id,
        forger.authorizer(),
        relay_tls(&clinic.relay),
    )
    .with_identity(forger_key.clone());
    config.endorsement = Some(Endorsement::sign(
        &forger_key,
        &clinic.session_id,
        0,
        PublisherKey::of_device(&forger_key),
    ));
    let mut forged = Publisher::connect(config, &session_key).await.unwrap();
    let forged_stream = forged.stream_id();
    for segment in sample_finals().iter().take(3) {
        forged.publish(segment).await.unwrap();
    }
    forged.finish().await.unwrap();

    let ended = CliProcess::spawn(clinic.home.path(), &["session", "end"]);
    let (status, _, stderr) = ended.finish().await;
    assert!(status.success(), "session end failed: {stderr:#?}");

    let (status, _, stderr) = follower.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    let forged_line = format!(
        "warning: stream {forged_stream} is not verified complete: frames 0-3 not signed by device {first}; \
         the signature in frame 3 does not verify under device {first}"
    );
    assert!(
        stderr.iter().any(|line| line.starts_with(&forged_line)),
        "{stderr:#?}"
    );
    assert!(
        !stderr.iter().any(|line| line.contains("endorsed by")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_stops_running_publish_signed() {
    let clinic = Clinic::start().await;
    let first = clinic.publisher();
    let follower_home = tempfile::tempdir().unwrap();
    let mut follower = clinic.follow(follower_home.path()).await;

    // The first device still publishes from standard input when it hands
    // the session over, with more lines than one checkpoint covers.
    let mut publishing = CliProcess::spawn(clinic.home.path(), &["publish", "-"]);
    publishing.wait_for_stderr("Publishing as process").await;
    for index in 0..20u32 {
        let start_ms = index * 1000;
        let end_ms = start_ms + 900;
        publishing
            .write_line(&format!(
                r#"{{"speaker":"doctor","start_ms":{start_ms},"end_ms":{end_ms},"text":"Line {index} from the first device."}}"#
            ))
            .await;
    }
    follower
        .wait_for_stdout_count("from the first device", 20)
        .await;

    let (second_home, second) = sign_in_device(&clinic.relay, &clinic.email).await;
    clinic.hand_over(second_home.path()).await;
    let (status, _, stderr) = publishing.finish().await;
    assert!(
        status.success(),
        "the first device's publish failed: {stderr:#?}"
    );
    assert!(
        stderr
            .iter()
            .any(|line| line.starts_with("Stopping: session ")
                && line.contains("handed to another device")),
        "{stderr:#?}"
    );

    let ended = CliProcess::spawn(second_home.path(), &["session", "end"]);
    let (status, _, stderr) = ended.finish().await;
    assert!(status.success(), "session end failed: {stderr:#?}");

    let (status, _, stderr) = follower.finish().await;
    assert!(status.success(), "follow failed: {stderr:#?}");
    let verdicts = verdict_lines(&stderr);
    // The first device's stream, and the stream of the second device's end frame.
    assert_eq!(verdicts.len(), 2, "{stderr:#?}");
    let by_first = format!(
        "is complete and authored by device {}",
        first.to_base64url()
    );
    let by_second = format!(
        "is complete and authored by device {}, endorsed by device {}",
        second.to_base64url(),
        first.to_base64url()
    );
    assert!(
        verdicts.iter().any(|line| line.ends_with(&by_first)),
        "{stderr:#?}"
    );
    assert!(
        verdicts.iter().any(|line| line.ends_with(&by_second)),
        "{stderr:#?}"
    );
}

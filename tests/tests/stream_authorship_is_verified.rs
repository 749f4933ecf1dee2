//! Stream authorship end to end, with the real `sealcast` and
//! `sealcast-relay` binaries over TLS. The clinician device signs what it
//! publishes with its device key, and `sealcast session start` puts the
//! public key into the invite link. A follower with that link reports each
//! stream as complete and authored by the device, or names the frames that
//! another holder of the session key sealed, or that a relay withheld.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::{FollowEvent, Follower, FollowerConfig, Publisher, PublisherConfig};
use sealcast_protocol::authorship::{Problem, PublisherKey, Verdict};
use sealcast_protocol::{FollowInvite, SessionId, StreamId};
use sealcast_tests::process::{binary_path, RelayProcess};
use sealcast_tests::sample::{sample_finals, sample_path, sample_with_interim};
use sealcast_tests::session::{relay_tls, wait_until_connected, LiveSession};
use sealcast_tests::staff::{admin, create_organization, sign_in, StaffDevice};
use sealcast_tests::withholding_proxy::WithholdingProxy;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use url::Url;

/// Maximum wait for one line, one process or one session.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// A relay with a clinician device that ran `sealcast session start`.
struct Clinic {
    relay: RelayProcess,
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
        let email = format!("authorship-{}@clinic.example", std::process::id());
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
        let (status, stdout, stderr) = run_cli(
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
        assert!(status.success(), "session start failed: {stdout} {stderr}");
        let session_id = stdout
            .lines()
            .find_map(|line| line.strip_prefix("Session "))
            .and_then(|rest| rest.split(' ').next())
            .expect("session start names the session")
            .parse()
            .unwrap();
        let link = stdout
            .lines()
            .find(|line| line.starts_with("https://") && line.contains("/join?"))
            .expect("session start prints the invite link")
            .to_string();
        Clinic {
            relay,
            email,
            home,
            session_id,
            link,
            _data: data,
        }
    }

    /// Returns the publisher key that the printed link carries.
    fn publisher(&self) -> PublisherKey {
        FollowInvite::parse(&self.link)
            .unwrap()
            .publisher
            .expect("the invite link carries the publisher key")
    }

    /// Starts `sealcast follow` with the printed link on standard input and
    /// waits until it is connected.
    async fn follow(&self) -> FollowCli {
        let ca_cert = self.relay.ca_cert();
        let mut child = cli_command(
            self.home.path(),
            &[
                "follow",
                "--ca-cert",
                ca_cert.to_str().unwrap(),
                "--format",
                "jsonl",
                "-",
            ],
        )
        .spawn()
        .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(self.link.as_bytes()).await.unwrap();
        drop(stdin);
        let stdout = lines(child.stdout.take().unwrap());
        let mut follower = FollowCli {
            stderr: lines(child.stderr.take().unwrap()),
            stdout,
            child,
            stderr_seen: Vec::new(),
        };
        follower.wait_for_stderr("Connected to session").await;
        follower
    }
}

/// A running `sealcast follow`.
struct FollowCli {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    stderr_seen: Vec<String>,
}

impl FollowCli {
    async fn wait_for_stderr(&mut self, prefix: &str) {
        loop {
            let line = tokio::time::timeout(STEP_TIMEOUT, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no {prefix:?} on stderr: {:#?}", self.stderr_seen))
                .unwrap_or_else(|| {
                    panic!("stderr ended before {prefix:?}: {:#?}", self.stderr_seen)
                });
            let found = line.starts_with(prefix);
            self.stderr_seen.push(line);
            if found {
                return;
            }
        }
    }

    /// Waits for the exit and returns the status, stdout lines and stderr lines.
    async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("sealcast follow did not exit in time")
            .unwrap();
        let mut stdout = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            stdout.push(line);
        }
        let mut stderr = self.stderr_seen;
        while let Some(line) = self.stderr.recv().await {
            stderr.push(line);
        }
        (status, stdout, stderr)
    }
}

fn cli_command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary_path("sealcast"));
    command
        .env_remove("SEALCAST_RELAY")
        .env_remove("SEALCAST_LOG")
        .env("SEALCAST_HOME", home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a `sealcast` command to its end and returns its status, stdout and stderr.
async fn run_cli(home: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let child = cli_command(home, args).spawn().unwrap();
    let output = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sealcast {args:?} did not exit in time"))
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Returns the stderr lines that report a verdict for a stream.
fn verdict_lines(stderr: &[String]) -> Vec<&String> {
    stderr
        .iter()
        .filter(|line| line.starts_with("stream ") || line.starts_with("warning: stream "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consultation_is_complete_and_authored() {
    let clinic = Clinic::start().await;
    let publisher = clinic.publisher();
    let follower = clinic.follow().await;

    // With interim revisions the stream runs to several checkpoints.
    let sample = sample_path();
    let (status, _, stderr) = run_cli(
        clinic.home.path(),
        &["publish", "--interim", "--end", sample.to_str().unwrap()],
    )
    .await;
    assert!(status.success(), "publish failed: {stderr}");
    assert!(
        stderr.contains(&format!(
            "signed by device key {}",
            publisher.to_base64url()
        )),
        "{stderr}"
    );

    let (status, stdout, stderr) = follower.finish().await;
    assert!(status.success(), "follow failed: {stderr:#?}");
    let finals = stdout
        .iter()
        .filter(|line| line.contains("\"text\""))
        .count();
    assert_eq!(finals, sample_finals().len(), "{stdout:#?}");
    let verdicts = verdict_lines(&stderr);
    assert_eq!(verdicts.len(), 1, "{stderr:#?}");
    assert!(
        verdicts[0].ends_with(&format!(
            "is complete and authored by device {}",
            publisher.to_base64url()
        )),
        "{stderr:#?}"
    );
    assert!(
        !stderr.iter().any(|line| line.starts_with("warning:")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_another_device_is_not_authored() {
    let clinic = Clinic::start().await;
    let publisher = clinic.publisher();
    let follower = clinic.follow().await;

    let sample = sample_path();
    let (status, _, stderr) =
        run_cli(clinic.home.path(), &["publish", sample.to_str().unwrap()]).await;
    assert!(status.success(), "publish failed: {stderr}");

    // A second device of the same clinician holds the session key (it
    // read the link) and signs a stream with its own device key.
    let url = Url::parse(&clinic.relay.base_url()).unwrap();
    let (forger, _forger_home) = sign_in(
        &url,
        &clinic.relay.ca_cert(),
        &clinic.relay.outbox_dir(),
        &clinic.email,
    )
    .await;
    let session_key = FollowInvite::parse(&clinic.link).unwrap().link.key;
    let config = PublisherConfig::new(
        url,
        clinic.session_id,
        forger.authorizer(),
        relay_tls(&clinic.relay),
    )
    .with_identity(forger.token().key().clone());
    let mut forged = Publisher::connect(config, &session_key).await.unwrap();
    let forged_stream = forged.stream_id();
    for segment in sample_finals().iter().take(3) {
        forged.publish(segment).await.unwrap();
    }
    let report = forged.finish().await.unwrap();
    assert_ne!(report.publisher, Some(publisher));

    let (status, _, stderr) = run_cli(clinic.home.path(), &["session", "end"]).await;
    assert!(status.success(), "session end failed: {stderr}");

    let (status, _, stderr) = follower.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    let device = publisher.to_base64url();
    let verdicts = verdict_lines(&stderr);
    // The published stream, the forged one and the stream of the end frame.
    assert_eq!(verdicts.len(), 3, "{stderr:#?}");
    let authored = format!("is complete and authored by device {device}");
    assert_eq!(
        verdicts
            .iter()
            .filter(|line| line.ends_with(&authored))
            .count(),
        2,
        "{stderr:#?}"
    );
    let forged_line = format!(
        "warning: stream {forged_stream} is not verified complete: frames 0-3 not signed by device {device}; \
         the signature in frame 3 does not verify under device {device}"
    );
    assert!(
        stderr.iter().any(|line| line.starts_with(&forged_line)),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|line| line.starts_with(&format!(
            "warning: frame 3 of stream {forged_stream} at offset"
        ))),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_tail_is_reported_missing() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;
    let identity = staff.device.token().key().clone();
    let publisher = PublisherKey::of_device(&identity);

    // The relay behind the proxy delivers frames 0 to 19 of each stream:
    // the checkpoint at 16 signs frames 0 to 16, and 17 to 19 wait for a
    // signature that never arrives, like the end frame.
    const CUTOFF: u64 = 20;
    let proxy = WithholdingProxy::start(&relay.base_url(), &relay.data_dir, CUTOFF).await;
    let mut link = session.link();
    link.relay = Url::parse(&proxy.url()).unwrap();
    let invite = FollowInvite {
        link,
        publisher: Some(publisher),
        key_epoch: 0,
    };
    let mut follower =
        Follower::start(FollowerConfig::from_invite(invite, session.tls.clone())).unwrap();
    wait_until_connected(&mut follower, STEP_TIMEOUT).await;

    let config = PublisherConfig::new(
        session.relay.clone(),
        session.created.session_id,
        session.auth.clone(),
        session.tls.clone(),
    )
    .with_identity(Arc::clone(&identity));
    let mut published = Publisher::connect(config, &session.key).await.unwrap();
    let stream_id = published.stream_id();
    let segments = sample_with_interim();
    assert!(
        segments.len() as u64 > CUTOFF + 16,
        "the sample is too short"
    );
    for segment in &segments {
        published.publish(segment).await.unwrap();
    }
    published.end().await.unwrap();
    session.end().await;

    let verdicts = collect_verdicts(&mut follower).await;
    assert!(proxy.withheld() > 0, "the proxy withheld nothing");
    assert_eq!(
        verdicts,
        vec![(
            stream_id,
            Verdict::Incomplete(vec![
                Problem::Unverified {
                    first: 17,
                    last: CUTOFF - 1
                },
                Problem::EndNotSeen {
                    last_opened: CUTOFF - 1
                },
            ])
        )]
    );
    let report = follower.finish().await.unwrap();
    assert_eq!(report.streams, verdicts);
    assert!(!report.is_verified_complete());
    assert!(!report.end_of_session);
}

/// Collects the stream verdicts until the follower reports the end.
async fn collect_verdicts(follower: &mut Follower) -> Vec<(StreamId, Verdict)> {
    let mut verdicts = Vec::new();
    let collecting = async {
        loop {
            match follower.next_event().await {
                Some(FollowEvent::StreamVerdict { stream_id, verdict }) => {
                    verdicts.push((stream_id, verdict));
                }
                Some(FollowEvent::Ended) => return,
                Some(_) => {}
                None => panic!("following stopped before the session ended"),
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, collecting)
        .await
        .expect("the session did not end in time");
    verdicts
}

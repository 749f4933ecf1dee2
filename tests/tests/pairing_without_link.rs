//! Pairing a device without an invite link, with the real `sealcast` and
//! `sealcast-relay` binaries over TLS. The clinician device runs `sealcast
//! pair offer`, the joining device `sealcast pair join`, and the test carries
//! each code to the other person's confirmation as two people would. With an
//! honest relay the joined device follows a consultation complete. With a
//! proxy that swaps the clinician's public key the codes differ, both sides
//! refuse and exit non-zero, and no wrapped key is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sealcast_client::TlsSettings;
use sealcast_tests::key_swap_proxy::KeySwapProxy;
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::{binary_path, RelayProcess};
use sealcast_tests::staff::{admin, create_organization, sign_in};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use url::Url;

/// Maximum wait for one line or one process exit.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A `sealcast` child process whose output is read line by line.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Cli {
    fn spawn(home: &Path, args: &[&str]) -> Cli {
        let mut child = Command::new(binary_path("sealcast"))
            .env_remove("SEALCAST_RELAY")
            .env_remove("SEALCAST_LOG")
            .env("SEALCAST_HOME", home)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Cli {
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line that starts with `prefix` and returns the rest.
    async fn stdout_after(&mut self, prefix: &str) -> String {
        wait_for(&mut self.stdout, &mut self.seen, prefix).await
    }

    /// Waits for a stderr line that starts with `prefix` and returns the rest.
    async fn stderr_after(&mut self, prefix: &str) -> String {
        wait_for(&mut self.stderr, &mut self.seen, prefix).await
    }

    async fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for the process to exit and returns its status with the rest
    /// of its stdout and stderr.
    async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("sealcast did not exit in time")
            .unwrap();
        let mut stdout = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            stdout.push(line);
        }
        let mut stderr = self.seen;
        while let Some(line) = self.stderr.recv().await {
            stderr.push(line);
        }
        (status, stdout, stderr)
    }
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

async fn wait_for(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    prefix: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}; seen so far: {seen:#?}"))
            .unwrap_or_else(|| panic!("output ended before {prefix:?}; seen: {seen:#?}"));
        seen.push(line.clone());
        // A prompt has no newline, so it can lead the line the code is on.
        if let Some(index) = line.find(prefix) {
            return line[index + prefix.len()..].to_string();
        }
    }
}

/// Returns the four code words of a line such as
/// `bear kayak acorn berry (digits: 413227)`.
fn code_words(rest: &str) -> String {
    rest.split(" (digits").next().unwrap().trim().to_string()
}

/// A relay with a signed-in clinician device that started a session with
/// `sealcast session start`.
struct Clinic {
    relay: RelayProcess,
    home: TempDir,
    _data: TempDir,
}

async fn clinic_with_session() -> Clinic {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let org = create_organization(&relay.data_dir);
    let email = format!("pairing-{}@clinic.example", std::process::id());
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
    let started = Cli::spawn(
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

fn write_consultation(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("consultation.jsonl");
    let lines = [
        r#"{"speaker":"doctor","start_ms":0,"end_ms":1500,"text":"Good morning, what brings you in?"}"#,
        r#"{"speaker":"patient","start_ms":1600,"end_ms":3000,"text":"My knee hurts when I climb stairs."}"#,
        r#"{"speaker":"doctor","start_ms":3100,"end_ms":4000,"text":"Since when?"}"#,
        r#"{"speaker":"patient","start_ms":4100,"end_ms":5200,"text":"About two weeks."}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_device_follows_the_consultation() {
    let clinic = clinic_with_session().await;
    let ca_cert = clinic.relay.ca_cert();
    let ca_cert = ca_cert.to_str().unwrap();

    // The clinician answers the y/N prompt; the joining device is a script
    // that reads the code the clinician reads out.
    let mut offer = Cli::spawn(clinic.home.path(), &["pair", "offer"]);
    let id = offer.stdout_after("Pairing id: ").await;
    let joiner_home = tempfile::tempdir().unwrap();
    let base_url = clinic.relay.base_url();
    let mut join = Cli::spawn(
        joiner_home.path(),
        &[
            "pair",
            "join",
            "--relay",
            &base_url,
            "--ca-cert",
            ca_cert,
            "--confirm-code",
            "-",
            "--format",
            "jsonl",
            &id,
        ],
    );

    let joiner_code = code_words(&join.stderr_after("Pairing code: ").await);
    let clinician_code = code_words(&offer.stderr_after("Pairing code: ").await);
    assert_eq!(joiner_code.split(' ').count(), 4, "{joiner_code}");
    assert_eq!(joiner_code, clinician_code);
    join.answer(&clinician_code).await;
    offer.answer("y").await;
    let (status, _, stderr) = offer.finish().await;
    assert!(status.success(), "pair offer failed: {stderr:#?}");
    join.stderr_after("Paired. Following session").await;

    let input = write_consultation(clinic.home.path());
    let published = Cli::spawn(
        clinic.home.path(),
        &["publish", "--end", input.to_str().unwrap()],
    );
    let (status, _, stderr) = published.finish().await;
    assert!(status.success(), "publish failed: {stderr:#?}");

    let (status, stdout, stderr) = join.finish().await;
    assert!(status.success(), "the joined device failed: {stderr:#?}");
    let segments: Vec<serde_json::Value> = stdout
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let texts: Vec<&str> = segments
        .iter()
        .filter_map(|segment| segment["text"].as_str())
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
    assert_eq!(
        segments.last().unwrap(),
        &serde_json::json!({"event": "ended"})
    );
    assert!(
        !stderr.iter().any(|line| line.contains("incomplete")),
        "{stderr:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_key_makes_codes_differ_and_both_refuse() {
    let clinic = clinic_with_session().await;
    let ca_cert = clinic.relay.ca_cert();
    let ca_cert = ca_cert.to_str().unwrap();
    let proxy = KeySwapProxy::start(&clinic.relay.base_url(), &clinic.relay.data_dir).await;

    let mut offer = Cli::spawn(
        clinic.home.path(),
        &["pair", "offer", "--confirm-code", "-"],
    );
    let id = offer.stdout_after("Pairing id: ").await;
    let joiner_home = tempfile::tempdir().unwrap();
    let proxy_url = proxy.url();
    let mut join = Cli::spawn(
        joiner_home.path(),
        &[
            "pair",
            "join",
            "--relay",
            &proxy_url,
            "--ca-cert",
            ca_cert,
            "--confirm-code",
            "-",
            &id,
        ],
    );

    let joiner_code = code_words(&join.stderr_after("Pairing code: ").await);
    let clinician_code = code_words(&offer.stderr_after("Pairing code: ").await);
    assert!(proxy.swapped() >= 1, "the proxy swapped no key");
    assert_ne!(joiner_code, clinician_code);

    // Each side gets the code the other screen shows.
    offer.answer(&joiner_code).await;
    let (status, _, stderr) = offer.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    assert!(
        stderr.iter().any(|line| line.contains("pairing refused")),
        "{stderr:#?}"
    );
    join.answer(&clinician_code).await;
    let (status, stdout, stderr) = join.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    assert!(
        stderr.iter().any(|line| line.contains("pairing refused")),
        "{stderr:#?}"
    );
    assert!(stdout.is_empty(), "{stdout:#?}");

    let tls = TlsSettings::from_ca_file(&clinic.relay.ca_cert()).unwrap();
    let metrics = scrape(&Url::parse(&clinic.relay.base_url()).unwrap(), &tls).await;
    assert_eq!(
        metrics.value("sealcast_pairing_steps_total", &[("step", "wrapped_key")]),
        0.0
    );
    // Each side cancels the slot when it refuses.
    assert_eq!(
        metrics.value("sealcast_pairing_steps_total", &[("step", "cancel")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_prompt_sends_no_key() {
    let clinic = clinic_with_session().await;
    let ca_cert = clinic.relay.ca_cert();
    let ca_cert = ca_cert.to_str().unwrap();

    let mut offer = Cli::spawn(clinic.home.path(), &["pair", "offer"]);
    let id = offer.stdout_after("Pairing id: ").await;
    let joiner_home = tempfile::tempdir().unwrap();
    let base_url = clinic.relay.base_url();
    let mut join = Cli::spawn(
        joiner_home.path(),
        &[
            "pair",
            "join",
            "--relay",
            &base_url,
            "--ca-cert",
            ca_cert,
            &id,
        ],
    );
    join.stderr_after("Pairing code: ").await;
    offer.stderr_after("Pairing code: ").await;
    join.answer("y").await;
    offer.answer("n").await;

    let (status, _, stderr) = offer.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    let (status, _, stderr) = join.finish().await;
    assert_eq!(status.code(), Some(65), "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("the other device cancelled the pairing")),
        "{stderr:#?}"
    );
    // Joining the cancelled slot again names the next step once, with its command.
    let (status, _, stderr) = Cli::spawn(
        joiner_home.path(),
        &[
            "pair",
            "join",
            "--relay",
            &base_url,
            "--ca-cert",
            ca_cert,
            &id,
        ],
    )
    .finish()
    .await;
    assert!(!status.success(), "{stderr:#?}");
    let rejected = stderr
        .iter()
        .find(|line| line.contains("relay rejected"))
        .unwrap_or_else(|| panic!("no relay rejection: {stderr:#?}"));
    assert_eq!(
        rejected.matches("start a new pairing").count(),
        1,
        "{rejected}"
    );
    assert!(rejected.contains("`sealcast pair offer`"), "{rejected}");
}

//! Running the real `sealcast` binary against a real relay: a clinician
//! device that started a session with `sealcast session start`, and
//! long-running `sealcast` commands whose standard streams a test reads
//! line by line and whose standard input it keeps open.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sealcast_protocol::SessionId;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use url::Url;

use crate::process::{binary_path, RelayProcess};
use crate::staff::{admin, create_organization, sign_in};

/// Maximum wait for one line, one process or one session.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// A relay with a clinician device that ran `sealcast session start`.
pub struct Clinic {
    /// The relay.
    pub relay: RelayProcess,
    /// The device's key store, passed to `sealcast` as `SEALCAST_HOME`.
    pub home: TempDir,
    /// The session that `sealcast session start` created.
    pub session_id: SessionId,
    /// The invite link it printed.
    pub link: String,
    _data: TempDir,
}

impl Clinic {
    /// Starts a relay, signs a clinician's device in and starts a session
    /// with the `sealcast` binary.
    pub async fn start(name: &str) -> Clinic {
        let data = tempfile::tempdir().unwrap();
        let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
        let org = create_organization(&relay.data_dir);
        let email = format!("{name}-{}@clinic.example", std::process::id());
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
            home,
            session_id,
            link,
            _data: data,
        }
    }

    /// Runs a `sealcast` command of the clinician's device to its end.
    pub async fn run(&self, args: &[&str]) -> (ExitStatus, String, String) {
        run_cli(self.home.path(), args).await
    }

    /// Starts a `sealcast` command of the clinician's device.
    pub fn spawn(&self, args: &[&str]) -> CliProcess {
        CliProcess::spawn(self.home.path(), args)
    }

    /// Starts `sealcast follow --format jsonl -` with the printed link on
    /// standard input, which stays open for later links, and waits until
    /// it is connected. It runs with a key store of its own.
    pub async fn follow(&self, home: &Path) -> CliProcess {
        let ca_cert = self.relay.ca_cert();
        let mut follower = CliProcess::spawn(
            home,
            &[
                "follow",
                "--ca-cert",
                ca_cert.to_str().unwrap(),
                "--format",
                "jsonl",
                "-",
            ],
        );
        follower.write_line(&self.link).await;
        follower.wait_for_stderr("Connected to session").await;
        follower
    }

    /// Returns the path of the session's control directory.
    pub fn control_dir(&self) -> PathBuf {
        self.home
            .path()
            .join("control")
            .join(self.session_id.to_string())
    }

    /// Returns the path of the session's key file.
    pub fn session_file(&self) -> PathBuf {
        self.home
            .path()
            .join("sessions")
            .join(format!("{}.session", self.session_id))
    }
}

/// A running `sealcast` command.
pub struct CliProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// The stdout lines read so far.
    pub stdout_seen: Vec<String>,
    /// The stderr lines read so far.
    pub stderr_seen: Vec<String>,
}

impl CliProcess {
    /// Starts `sealcast` with `SEALCAST_HOME` set to `home`.
    pub fn spawn(home: &Path, args: &[&str]) -> CliProcess {
        let mut child = cli_command(home, args).spawn().unwrap();
        CliProcess {
            stdin: child.stdin.take(),
            stdout: lines(child.stdout.take().unwrap()),
            stderr: lines(child.stderr.take().unwrap()),
            child,
            stdout_seen: Vec::new(),
            stderr_seen: Vec::new(),
        }
    }

    /// Runs `sealcast ARGS` to its end, with standard input closed at once,
    /// and returns its status with its stdout and stderr lines.
    pub async fn run(home: &Path, args: &[&str]) -> (ExitStatus, Vec<String>, Vec<String>) {
        CliProcess::spawn(home, args).finish().await
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Writes one line to standard input.
    pub async fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Writes one line to standard input, and returns false when the
    /// process closed its end of the pipe.
    pub async fn try_write_line(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let mut data = line.as_bytes().to_vec();
        data.push(b'\n');
        match stdin.write_all(&data).await {
            Ok(()) => stdin.flush().await.is_ok(),
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => false,
            Err(err) => panic!("writing to stdin failed: {err}"),
        }
    }

    /// Closes standard input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads stderr until a line that starts with `prefix`, and returns it.
    pub async fn wait_for_stderr(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(STEP_TIMEOUT, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no {prefix:?} on stderr: {:#?}", self.stderr_seen))
                .unwrap_or_else(|| {
                    panic!("stderr ended before {prefix:?}: {:#?}", self.stderr_seen)
                });
            let found = line.starts_with(prefix);
            self.stderr_seen.push(line.clone());
            if found {
                return line;
            }
        }
    }

    /// Reads stdout until a line that contains `marker`, and returns the
    /// rest of that line after it.
    pub async fn stdout_after(&mut self, marker: &str) -> String {
        read_after(&mut self.stdout, &mut self.stdout_seen, marker, "stdout").await
    }

    /// Reads stderr until a line that contains `marker`, and returns the
    /// rest of that line after it.
    pub async fn stderr_after(&mut self, marker: &str) -> String {
        read_after(&mut self.stderr, &mut self.stderr_seen, marker, "stderr").await
    }

    /// Reads stdout until `count` lines in all contain `needle`.
    pub async fn wait_for_stdout_count(&mut self, needle: &str, count: usize) {
        while self
            .stdout_seen
            .iter()
            .filter(|line| line.contains(needle))
            .count()
            < count
        {
            let line = tokio::time::timeout(STEP_TIMEOUT, self.stdout.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "fewer than {count} stdout lines with {needle:?}: {:#?}",
                        self.stdout_seen
                    )
                })
                .unwrap_or_else(|| {
                    panic!(
                        "stdout ended before {count} lines with {needle:?}: {:#?}",
                        self.stdout_seen
                    )
                });
            self.stdout_seen.push(line);
        }
    }

    /// Kills the process and waits for it to exit.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Closes stdin, waits for the exit and returns the status, every
    /// stdout line and every stderr line.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.stdin = None;
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("sealcast did not exit in time")
            .unwrap();
        let mut stdout = self.stdout_seen;
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

/// Returns a `sealcast` command with `SEALCAST_HOME` set to `home` and
/// piped standard streams, killed when dropped.
pub fn cli_command(home: &Path, args: &[&str]) -> Command {
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

/// Runs a `sealcast` command to its end, with standard input closed, and
/// returns its status, stdout and stderr.
pub async fn run_cli(home: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let mut command = cli_command(home, args);
    command.stdin(Stdio::null());
    let child = command.spawn().unwrap();
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

/// Returns the four code words of a line such as
/// `bear kayak acorn berry (digits: 413227)`.
pub fn code_words(rest: &str) -> String {
    rest.split(" (digits").next().unwrap().trim().to_string()
}

async fn read_after(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    marker: &str,
    stream: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} on {stream}: {seen:#?}"))
            .unwrap_or_else(|| panic!("{stream} ended before {marker:?}: {seen:#?}"));
        seen.push(line.clone());
        if let Some((_, rest)) = line.split_once(marker) {
            return rest.to_string();
        }
    }
}

//! A `sealcast` child process whose standard output and error are read
//! line by line, with a key store of its own, so a test can act as the
//! person at each device.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::process::binary_path;

/// Maximum wait for one line or one process exit.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sealcast` command.
pub struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, both streams, for failure messages.
    pub seen: Vec<String>,
    /// Standard output lines read so far.
    pub stdout_seen: Vec<String>,
}

impl Cli {
    /// Starts `sealcast ARGS` with `SEALCAST_HOME` set to `home`.
    pub fn spawn(home: &Path, args: &[&str]) -> Cli {
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
            stdout_seen: Vec::new(),
        }
    }

    /// Runs `sealcast ARGS` to its end and returns its status, stdout and stderr.
    pub async fn run(home: &Path, args: &[&str]) -> (ExitStatus, Vec<String>, Vec<String>) {
        Cli::spawn(home, args).finish().await
    }

    /// Returns the process id.
    pub fn id(&self) -> u32 {
        self.child.id().expect("the process already exited")
    }

    /// Waits for a stdout line that contains `marker` and returns what follows it.
    pub async fn stdout_after(&mut self, marker: &str) -> String {
        let line = wait_for(&mut self.stdout, &mut self.seen, marker).await;
        self.stdout_seen.push(line.0);
        line.1
    }

    /// Waits for a stderr line that contains `marker` and returns what follows it.
    pub async fn stderr_after(&mut self, marker: &str) -> String {
        wait_for(&mut self.stderr, &mut self.seen, marker).await.1
    }

    /// Writes one line to the process's standard input.
    pub async fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes the process's standard input.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for the process to exit and returns its status with all of its
    /// stdout and stderr, the lines already read included.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sealcast did not exit in time; seen: {:#?}", self.seen))
            .unwrap();
        let mut stdout = self.stdout_seen;
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

/// Waits for a line that contains `marker` and returns the line and the
/// text after the marker. A prompt has no newline, so it can lead the line
/// the marker is on.
async fn wait_for(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    marker: &str,
) -> (String, String) {
    loop {
        let line = tokio::time::timeout(STEP_TIMEOUT, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no line containing {marker:?}; seen so far: {seen:#?}"))
            .unwrap_or_else(|| panic!("output ended before {marker:?}; seen: {seen:#?}"));
        seen.push(line.clone());
        if let Some(index) = line.find(marker) {
            let rest = line[index + marker.len()..].to_string();
            return (line, rest);
        }
    }
}

//! A `sealcast` child process whose stdout and stderr are read line by line,
//! for tests that play both people of a pairing. They wait for a line, read
//! a code from it and write the reply to the other process's stdin.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::process::binary_path;

/// Maximum wait for one line or one process exit.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `sealcast` with its key store in `home`.
pub struct CliProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl CliProcess {
    /// Starts `sealcast ARGS` with `SEALCAST_HOME` set to `home`.
    pub fn spawn(home: &Path, args: &[&str]) -> CliProcess {
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
        CliProcess {
            child,
            stdin,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line that contains `prefix` and returns the rest after it.
    pub async fn stdout_after(&mut self, prefix: &str) -> String {
        wait_for(&mut self.stdout, &mut self.seen, prefix).await
    }

    /// Waits for a stderr line that contains `prefix` and returns the rest after it.
    pub async fn stderr_after(&mut self, prefix: &str) -> String {
        wait_for(&mut self.stderr, &mut self.seen, prefix).await
    }

    /// Writes `line` and a newline to the process's stdin.
    pub async fn answer(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes stdin, waits for the exit and returns the status with the
    /// stdout lines not read yet and every stderr line.
    pub async fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
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

/// Returns the four code words of a line such as
/// `bear kayak acorn berry (digits: 413227)`.
pub fn code_words(rest: &str) -> String {
    rest.split(" (digits").next().unwrap().trim().to_string()
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
            .unwrap_or_else(|_| panic!("no line with {prefix:?}; seen so far: {seen:#?}"))
            .unwrap_or_else(|| panic!("output ended before {prefix:?}; seen: {seen:#?}"));
        seen.push(line.clone());
        // A prompt has no newline, so it can lead the line the code is on.
        if let Some(index) = line.find(prefix) {
            return line[index + prefix.len()..].to_string();
        }
    }
}

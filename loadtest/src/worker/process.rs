//! The coordinator's handle on a worker process: this executable started
//! with the hidden `worker` command, written to on standard input, read on
//! standard output, and killed when dropped.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::message::{encode_line, FromWorker};
use crate::error::LoadtestError;

/// Name of the hidden subcommand that runs a worker.
pub const WORKER_COMMAND: &str = "worker";

/// Maximum wait for a worker's exit status after its output closed.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// A running worker process.
pub struct WorkerProcess {
    number: usize,
    pid: u32,
    child: Child,
    /// Kept open for the whole step: a worker stops when its input closes.
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl WorkerProcess {
    /// Starts worker `number` (from 1) from this executable. Its standard
    /// error is this process's, so its log lines appear with the coordinator's.
    pub fn spawn(number: usize) -> Result<WorkerProcess, LoadtestError> {
        let fail = |reason: String| LoadtestError::Worker {
            worker: format!("load-test worker {number}"),
            reason,
        };
        let binary = std::env::current_exe()
            .map_err(|err| fail(format!("failed to find this executable: {err}")))?;
        let mut command = Command::new(&binary);
        command.arg(WORKER_COMMAND);
        WorkerProcess::from_command(number, command)
    }

    /// Starts worker `number` from `command`, with its standard input and
    /// output piped and its standard error inherited.
    fn from_command(number: usize, mut command: Command) -> Result<WorkerProcess, LoadtestError> {
        let fail = |reason: String| LoadtestError::Worker {
            worker: format!("load-test worker {number}"),
            reason,
        };
        let program = command.as_std().get_program().to_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| fail(format!("failed to run {}: {err}", program.display())))?;
        let pid = child.id().unwrap_or_default();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(fail("its standard input or output is not piped".into()));
        };
        tracing::debug!(worker = number, pid, "worker process started");
        Ok(WorkerProcess {
            number,
            pid,
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Returns the worker's number, from 1.
    pub fn number(&self) -> usize {
        self.number
    }

    /// Returns the worker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Writes one message line; `capacity` sizes the line buffer.
    pub async fn send<T: Serialize>(
        &mut self,
        message: &T,
        capacity: usize,
    ) -> Result<(), LoadtestError> {
        let line = encode_line(message, capacity).map_err(|reason| self.failure(reason))?;
        let written = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await
        };
        match written.await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.failure(format!("failed to write to its standard input: {err}"))),
        }
    }

    /// Reads the next message, waiting until `deadline` at most. `awaited`
    /// names the message in errors, for example `its report`.
    pub async fn receive(
        &mut self,
        deadline: Instant,
        awaited: &str,
    ) -> Result<FromWorker, LoadtestError> {
        let mut line = String::new();
        let read = self.stdout.read_line(&mut line);
        let timeout = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(timeout, read).await {
            Err(_) => Err(self.failure(format!(
                "did not send {awaited} within {:.0} s",
                timeout.as_secs_f64()
            ))),
            Ok(Err(err)) => Err(self.failure(format!("failed to read its output: {err}"))),
            Ok(Ok(0)) => {
                let status = match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "an unknown status".to_string(),
                };
                Err(self.failure(format!("exited with {status} before sending {awaited}")))
            }
            Ok(Ok(_)) => match serde_json::from_str::<FromWorker>(&line) {
                Ok(FromWorker::Failed { reason }) => Err(self.failure(reason)),
                Ok(message) => Ok(message),
                Err(err) => Err(self.failure(format!(
                    "sent an invalid message instead of {awaited}: {err}"
                ))),
            },
        }
    }

    /// Builds the error for this worker.
    pub fn failure(&self, reason: String) -> LoadtestError {
        LoadtestError::Worker {
            worker: format!("load-test worker {} (pid {})", self.number, self.pid),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::worker::message::ToWorker;

    fn shell(script: &str) -> WorkerProcess {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        WorkerProcess::from_command(1, command).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn silent_worker_times_out() {
        let mut worker = shell("sleep 30");
        let deadline = Instant::now() + Duration::from_millis(300);
        let err = worker.receive(deadline, "its report").await.unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("load-test worker 1 (pid "), "{message}");
        assert!(
            message.contains("did not send its report within"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn exited_worker_is_reported_with_its_status() {
        let mut worker = shell("exit 3");
        let err = worker.receive(soon(), "its report").await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("exited with exit status: 3"), "{message}");
        assert!(message.contains("before sending its report"), "{message}");
    }

    #[tokio::test]
    async fn worker_failure_carries_its_reason() {
        let mut worker =
            shell(r#"echo '{"type":"failed","reason":"invalid TLS settings: no file"}'"#);
        let err = worker.receive(soon(), "its report").await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.ends_with("failed: invalid TLS settings: no file"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn invalid_message_is_rejected() {
        // `cat` echoes the coordinator's own message, which is not one a worker sends.
        let mut worker = shell("cat");
        let start = ToWorker::Start {
            timeline: crate::client::Timing::new(
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::ZERO,
            )
            .to_timeline(),
        };
        worker.send(&start, 256).await.unwrap();
        let err = worker.receive(soon(), "its report").await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("sent an invalid message instead of its report"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn missing_program_is_an_error() {
        let command = Command::new("/nonexistent/sealcast-loadtest");
        let err = WorkerProcess::from_command(2, command).err().unwrap();
        let message = err.to_string();
        assert!(
            message.starts_with("load-test worker 2 failed: failed to run /nonexistent"),
            "{message}"
        );
    }
}

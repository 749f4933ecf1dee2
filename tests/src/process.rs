//! Running the real `sealcast-relay` binary as a child process, capturing
//! everything it writes, so tests can kill, restart and inspect it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a relay may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary next to the test executable, built by
/// `cargo build --workspace --bins` (the test script does this first).
pub fn binary_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A relay child process and everything it has written to stdout and stderr.
pub struct RelayProcess {
    child: Child,
    /// Address the relay listens on.
    pub addr: SocketAddr,
    /// The relay's data directory.
    pub data_dir: PathBuf,
    output: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl RelayProcess {
    /// Starts the relay on `listen` (use `127.0.0.1:0` for any free port)
    /// with debug logging, and waits for its listening line.
    pub fn start(data_dir: &Path, listen: &str, extra_args: &[&str]) -> Self {
        let mut child = crate::database::relay_command(data_dir)
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to spawn sealcast-relay");

        let output = Arc::new(Mutex::new(Vec::new()));
        let stderr_output = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_line_reader(stdout, vec![output.clone()], Some(lines_tx));
        spawn_line_reader(stderr, vec![output.clone(), stderr_output.clone()], None);

        let addr = wait_for_listening(&lines_rx, &output);
        RelayProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            output,
            stderr: stderr_output,
        }
    }

    /// Returns the relay's operating-system process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the address of the relay's plain-HTTP listener for
    /// `/healthz`, `/readyz` and `/metrics`, from the line the relay prints
    /// right after its listening line. Panics when the relay was started
    /// without `--ops-listen` or printed no such line within 5 s.
    pub fn ops_addr(&self) -> SocketAddr {
        const PREFIX: &str = "/healthz, /readyz and /metrics on http://";
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let output = String::from_utf8_lossy(&self.output()).into_owned();
            let found = output
                .lines()
                .find_map(|line| line.strip_prefix(PREFIX))
                .map(|addr| addr.trim().parse().expect("ops line has an address"));
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sealcast-relay printed no ops address (was it started with --ops-listen?); output:\n{output}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the relay's base URL: its default public URL,
    /// `https://localhost:PORT/`, which staff devices' proofs must name.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    /// Returns the folder where a relay without SMTP settings writes its mail.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// Returns the path of the development certificate in the relay's data directory.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("dev-cert.pem")
    }

    /// Everything the relay has written so far, stdout and stderr interleaved by line.
    pub fn output(&self) -> Vec<u8> {
        self.output
            .lock()
            .map(|out| out.clone())
            .unwrap_or_default()
    }

    /// Everything the relay has written to stderr so far: its log lines.
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr
            .lock()
            .map(|out| out.clone())
            .unwrap_or_default()
    }

    /// Kills the relay with SIGKILL and waits for it, as a crash would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Give the reader threads a moment to drain the pipes.
        thread::sleep(Duration::from_millis(100));
    }

    /// Checks whether the relay process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the signal `name`, such as `HUP`, without waiting for anything.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed with {status}");
    }

    /// Sends SIGTERM and waits for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self
            .child
            .wait()
            .expect("failed to wait for sealcast-relay");
        thread::sleep(Duration::from_millis(100));
        status
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies each line `source` writes into every buffer of `outputs`, and
/// sends it on `lines` when given, on a thread of its own.
pub(crate) fn spawn_line_reader<R: Read + Send + 'static>(
    source: R,
    outputs: Vec<Arc<Mutex<Vec<u8>>>>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let reader = BufReader::new(source);
        for line in reader.split(b'\n').map_while(Result::ok) {
            for output in &outputs {
                if let Ok(mut out) = output.lock() {
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                }
            }
            if let Some(lines) = &lines {
                let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
            }
        }
    });
}

fn wait_for_listening(lines: &mpsc::Receiver<String>, output: &Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    loop {
        let Ok(line) = lines.recv_timeout(START_TIMEOUT) else {
            let text = output.lock().map(|out| out.clone()).unwrap_or_default();
            panic!(
                "sealcast-relay did not print its listening line; output:\n{}",
                String::from_utf8_lossy(&text)
            );
        };
        if let Some(addr) = line.strip_prefix("sealcast-relay listening on https://") {
            return addr.trim().parse().expect("listening line has an address");
        }
    }
}

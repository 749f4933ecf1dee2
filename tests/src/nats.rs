//! A NATS server of the test's own, for relay nodes that fan frames out to
//! each other. Each [`NatsServer`] runs its own `nats-server` process on a
//! free loopback port, never the machine's shared server on port 4222, and
//! can be stopped and started again on the same port to simulate an outage.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::spawn_line_reader;

/// The Debian package `nats-server` installs the server here.
pub const NATS_SERVER_BINARY: &str = "/usr/sbin/nats-server";

/// The port of the machine's own NATS server, which the tests never use.
const SHARED_NATS_PORT: u16 = 4222;

/// The user and password the test servers require. The password contains
/// a character that a URL must percent-encode.
const NATS_USER: &str = "sealcast-node";
const NATS_PASSWORD: &str = "n0de@pass";
const NATS_PASSWORD_IN_URL: &str = "n0de%40pass";

/// How long the server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process on 127.0.0.1, without JetStream.
pub struct NatsServer {
    port: u16,
    child: Option<Child>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 and waits until it
    /// accepts connections.
    pub fn start_on_free_port() -> Self {
        assert!(
            Path::new(NATS_SERVER_BINARY).exists(),
            "{NATS_SERVER_BINARY} not found: install it with `apt-get install nats-server`"
        );
        let port = free_port();
        let mut server = NatsServer {
            port,
            child: None,
            output: Arc::new(Mutex::new(Vec::new())),
        };
        server.start();
        server
    }

    /// Returns the URL relays connect to,
    /// `nats://USER:PASSWORD@127.0.0.1:PORT`: the server requires a user and
    /// password, as a shared one should, so that the relays' use of the
    /// URL's credentials is tested too.
    pub fn url(&self) -> String {
        format!(
            "nats://{NATS_USER}:{NATS_PASSWORD_IN_URL}@127.0.0.1:{}",
            self.port
        )
    }

    /// Returns the server's port, which stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Checks whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts the server again on its port after [`Self::stop`], and waits
    /// until it accepts connections. Panics with the server's output when it
    /// exits first, for example because another process took the port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the NATS server is already running");
        let output_before = self.output_len();
        let mut child = Command::new(NATS_SERVER_BINARY)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--user", NATS_USER, "--pass", NATS_PASSWORD])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("failed to run {NATS_SERVER_BINARY}: {err}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_line_reader(stdout, vec![self.output.clone()], None);
        spawn_line_reader(stderr, vec![self.output.clone()], None);
        self.child = Some(child);
        self.wait_until_accepting(output_before);
    }

    /// Stops the server with SIGTERM and waits for it to exit, with SIGKILL
    /// after 10 s. Clients see their connection close.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("the NATS server is not running");
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "the NATS server on port {} ignored SIGTERM for {} s: killing it",
            self.port,
            STOP_TIMEOUT.as_secs()
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Everything the server has written so far, over all of its runs.
    pub fn output(&self) -> String {
        let bytes = self
            .output
            .lock()
            .map(|out| out.clone())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn output_len(&self) -> usize {
        self.output.lock().map(|out| out.len()).unwrap_or_default()
    }

    /// Waits until this run, whose output starts at byte `output_from`,
    /// reports that it is ready and accepts a connection.
    fn wait_until_accepting(&mut self, output_from: usize) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "nats-server on port {} exited with {status} before it accepted connections; output:\n{}",
                    self.port,
                    self.output()
                );
            }
            // The port could accept because another process holds it, so
            // this run's own line confirms that the server is ours.
            let ready = self
                .output
                .lock()
                .map(|out| memchr::memmem::find(&out[output_from..], b"Server is ready").is_some())
                .unwrap_or(false);
            if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} did not accept connections within {} s; output:\n{}",
                self.port,
                START_TIMEOUT.as_secs(),
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Returns a port of 127.0.0.1 that was free a moment ago, from the
/// ephemeral range, so never the shared server's 4222.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("bound address").port();
    assert_ne!(port, SHARED_NATS_PORT, "picked the shared NATS port");
    port
}

//! A PostgreSQL server of the test's own, for tests that stop and restart
//! the database under running relays. Each [`PostgresServer`] makes a new
//! cluster with `initdb` in a temporary directory and runs `postgres` on a
//! free loopback port, never the machine's shared server. As root it runs
//! as the `postgres` user, which `initdb` requires.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::spawn_line_reader;

/// How long the server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the server may take to exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A `postgres` child process on 127.0.0.1 with trust authentication.
pub struct PostgresServer {
    // Declared before the directory, so the server stops before it is removed.
    child: Option<Child>,
    port: u16,
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
    output: Arc<Mutex<Vec<u8>>>,
    dir: TempDir,
}

impl PostgresServer {
    /// Makes a new cluster, starts it on a free port and creates `database`.
    pub fn start(database: &str) -> Self {
        let bin_dir = bin_dir();
        let owner = postgres_owner();
        let dir = tempfile::tempdir().expect("temporary directory");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("the server's directory is given to the postgres user");
        }
        let mut server = PostgresServer {
            child: None,
            port: free_port(),
            bin_dir,
            owner,
            output: Arc::new(Mutex::new(Vec::new())),
            dir,
        };
        let status = server
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("--pgdata")
            .arg(server.data_path())
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed: {status}");
        server.start_again();
        let status = Command::new(server.bin_dir.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(database)
            .status()
            .expect("createdb runs");
        assert!(status.success(), "createdb {database} failed: {status}");
        server
    }

    /// Returns the URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Returns the server's port, which stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server on its port, after [`Self::stop`] or the first
    /// time, and waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "the PostgreSQL server is already running"
        );
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_path())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postgres runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        spawn_line_reader(stdout, vec![self.output.clone()], None);
        spawn_line_reader(stderr, vec![self.output.clone()], None);
        self.child = Some(child);

        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
        // The port accepts before the server takes queries; wait for that too.
        let ready = self.bin_dir.join("pg_isready");
        while !Command::new(&ready)
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|status| status.success())
        {
            assert!(
                Instant::now() < deadline,
                "postgres did not get ready within {START_TIMEOUT:?}:\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server with a fast shutdown, which ends every client's
    /// connection and rolls back open transactions, and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("the PostgreSQL server is not running");
        };
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Returns what the server wrote so far.
    pub fn output(&self) -> String {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&output).into_owned()
    }

    fn data_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.stdin(Stdio::null()).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Finds PostgreSQL's server programs: `pg_config --bindir`, or the newest
/// version under Debian's `/usr/lib/postgresql`.
fn bin_dir() -> PathBuf {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() && dir.join("postgres").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL's server programs: install Debian's postgresql package")
}

/// Returns the `postgres` user's uid and gid when this process runs as
/// root, which `initdb` refuses.
fn postgres_owner() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a postgres user exists: install Debian's postgresql package")
    };
    Some((id("-u"), id("-g")))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

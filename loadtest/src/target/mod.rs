//! The systems under test: the sealcast relay (started in this process, as
//! a child process, or already running) and the null relay, each with the
//! address, credentials and trust roots the simulated devices use, and a
//! `/proc` probe when the system runs on this machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::{SecretString, TlsSettings};
use sealcast_relay::{Config, Limits, RelayHandle};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::runtime::Runtime;
use url::Url;

use crate::cli::{Placement, RunArgs};
use crate::error::LoadtestError;
use crate::null_relay::NullRelay;
use crate::stats::procfs::{ProbeScope, ProcessProbe};

mod node;

/// Thread name prefix of a relay started in this process; the relay's store
/// writer thread is named `sealcast-store-writer`, so one prefix covers both.
const RELAY_THREAD_PREFIX: &str = "sealcast-";
/// Thread name of the runtime of a null relay started in this process.
const NULL_THREAD_NAME: &str = "null-relay";
/// Maximum wait for a child relay to print its address.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections a started relay accepts beyond the ones the harness plans to open.
const CONNECTION_HEADROOM: usize = 1000;

/// Which system a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemKind {
    /// The sealcast relay.
    Sealcast,
    /// The null relay.
    Null,
    /// The Node.js relay on the `ws` package in `loadtest/peers/`.
    NodeWs,
}

impl SystemKind {
    /// Returns the name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Sealcast => "sealcast",
            SystemKind::Null => "null",
            SystemKind::NodeWs => "node-ws",
        }
    }
}

/// A system under test, running.
pub struct Target {
    /// Which system.
    pub kind: SystemKind,
    /// Base URL: `https://localhost:PORT/`, or `http://` for the null relay.
    pub base_url: Url,
    /// Address the devices connect to.
    pub addr: SocketAddr,
    /// Clinic API key for creating sessions; the null relay accepts any.
    pub api_key: SecretString,
    /// Trust roots; `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// CPU and memory probe, when the system runs on this machine.
    pub probe: Option<ProcessProbe>,
    /// Where it runs, for the report: `in-process`, `child process` or `external`.
    pub placement: &'static str,
    guard: Guard,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_str())
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// What keeps a started system alive, and how to stop it.
enum Guard {
    InProcess {
        runtime: Runtime,
        handle: RelayHandle,
        _data_dir: TempDir,
    },
    NullInProcess {
        runtime: Runtime,
        relay: NullRelay,
    },
    Child {
        child: Child,
        _data_dir: TempDir,
    },
    External,
}

impl Target {
    /// Starts or connects to the sealcast relay as the options say, sized for
    /// `connections` simultaneous connections.
    pub async fn sealcast(args: &RunArgs, connections: usize) -> Result<Target, LoadtestError> {
        if let Some(relay) = &args.relay {
            return external(args, relay).await;
        }
        let max_connections = connections + CONNECTION_HEADROOM;
        match args.relay_process {
            Placement::InProcess => sealcast_in_process(max_connections).await,
            Placement::Child => {
                let binary = args
                    .relay_bin
                    .clone()
                    .unwrap_or_else(|| sibling_binary("sealcast-relay"));
                sealcast_child(&binary, max_connections).await
            }
        }
    }

    /// Starts the null relay where the options place started relays.
    pub async fn null(args: &RunArgs) -> Result<Target, LoadtestError> {
        match args.relay_process {
            Placement::InProcess => null_in_process().await,
            Placement::Child => null_child().await,
        }
    }

    /// Starts the Node.js `ws` relay as a child process.
    pub async fn node_ws(args: &RunArgs) -> Result<Target, LoadtestError> {
        node::start(&args.peers_dir).await
    }

    /// Returns the system's name for reports.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Returns the rustls configuration for WebSockets, `None` for plain TCP.
    pub fn websocket_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, LoadtestError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        tls.websocket_config()
            .map(Some)
            .map_err(|err| self.start_error(err.to_string()))
    }

    fn start_error(&self, reason: String) -> LoadtestError {
        LoadtestError::TargetStart {
            system: self.name().to_string(),
            reason,
        }
    }

    /// Stops a system the harness started; a running relay is left alone.
    pub async fn stop(self) {
        match self.guard {
            Guard::InProcess {
                runtime, handle, ..
            } => {
                let stopping = runtime.spawn(handle.shutdown());
                let _ = tokio::time::timeout(Duration::from_secs(40), stopping).await;
                runtime.shutdown_background();
            }
            Guard::NullInProcess { runtime, relay } => {
                relay.stop();
                runtime.shutdown_background();
            }
            Guard::Child { mut child, .. } => stop_child(&mut child).await,
            Guard::External => {}
        }
    }
}

fn start_error(system: SystemKind, reason: impl fmt::Display) -> LoadtestError {
    LoadtestError::TargetStart {
        system: system.name().to_string(),
        reason: reason.to_string(),
    }
}

async fn external(args: &RunArgs, relay: &str) -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let base_url =
        sealcast_client::endpoint::parse_relay_url(relay).map_err(|e| fail(e.to_string()))?;
    let tls = TlsSettings::new(args.ca_cert.as_deref()).map_err(|e| fail(e.to_string()))?;
    let host = base_url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']']);
    let port = base_url.port_or_known_default().unwrap_or(443);
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| fail(format!("failed to resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("{host} resolves to no address")))?;
    Ok(Target {
        kind: SystemKind::Sealcast,
        base_url,
        addr,
        api_key: SecretString::new(args.api_key.clone().unwrap_or_default()),
        tls: Some(tls),
        probe: args
            .relay_pid
            .map(|pid| ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "external",
        guard: Guard::External,
    })
}

fn limits_for(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        ..Limits::default()
    }
}

async fn sealcast_in_process(max_connections: usize) -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let data_dir =
        tempfile::tempdir().map_err(|e| fail(format!("failed to make a data directory: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sealcast-relay")
        .build()
        .map_err(|e| fail(format!("failed to start the relay runtime: {e}")))?;
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.path().join("relay"),
        limits: limits_for(max_connections),
        ..Config::default()
    };
    let handle = runtime
        .spawn(sealcast_relay::start(config))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?;

    let api_key = handle
        .api_key()
        .ok_or_else(|| fail("the new relay made no API key".into()))?;
    let addr = handle.local_addr();
    let cert = handle.data_dir().join(sealcast_relay::tls::DEV_CERT_FILE);
    Ok(Target {
        kind: SystemKind::Sealcast,
        base_url: localhost_url("https", addr.port())?,
        addr,
        api_key: SecretString::new(api_key),
        tls: Some(TlsSettings::from_ca_file(&cert).map_err(|e| fail(e.to_string()))?),
        probe: Some(ProcessProbe::own_threads(RELAY_THREAD_PREFIX)),
        placement: "in-process",
        guard: Guard::InProcess {
            runtime,
            handle,
            _data_dir: data_dir,
        },
    })
}

async fn null_in_process() -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Null, reason);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(NULL_THREAD_NAME)
        .build()
        .map_err(|e| fail(format!("failed to start the null relay runtime: {e}")))?;
    let relay = runtime
        .spawn(NullRelay::start(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("failed to listen: {e}")))?;
    let addr = relay.local_addr();
    Ok(Target {
        kind: SystemKind::Null,
        base_url: plain_url(addr)?,
        addr,
        api_key: SecretString::from("null-relay-ignores-credentials"),
        tls: None,
        probe: Some(ProcessProbe::own_threads(NULL_THREAD_NAME)),
        placement: "in-process",
        guard: Guard::NullInProcess { runtime, relay },
    })
}

async fn sealcast_child(binary: &Path, max_connections: usize) -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let data_dir =
        tempfile::tempdir().map_err(|e| fail(format!("failed to make a data directory: {e}")))?;
    let log = std::fs::File::create(data_dir.path().join("relay.log"))
        .map_err(|e| fail(format!("failed to create the relay log: {e}")))?;
    let mut command = Command::new(binary);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path().join("relay"))
        .args(["--max-connections", &max_connections.to_string()])
        .stderr(Stdio::from(log));
    let (child, lines) = spawn_and_read(command, binary, SystemKind::Sealcast, 2).await?;

    let addr = line_value(&lines, "sealcast-relay listening on https://")
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .ok_or_else(|| fail(format!("the relay printed no address: {lines:?}")))?;
    let api_key = line_value(&lines, "clinic API key (shown once): ")
        .ok_or_else(|| fail("the relay printed no API key".into()))?;
    let cert = data_dir
        .path()
        .join("relay")
        .join(sealcast_relay::tls::DEV_CERT_FILE);
    let pid = child.id().unwrap_or_default();
    Ok(Target {
        kind: SystemKind::Sealcast,
        base_url: localhost_url("https", addr.port())?,
        addr,
        api_key: SecretString::new(api_key.to_string()),
        tls: Some(TlsSettings::from_ca_file(&cert).map_err(|e| fail(e.to_string()))?),
        probe: Some(ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "child process",
        guard: Guard::Child {
            child,
            _data_dir: data_dir,
        },
    })
}

async fn null_child() -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Null, reason);
    let data_dir =
        tempfile::tempdir().map_err(|e| fail(format!("failed to make a directory: {e}")))?;
    let binary = std::env::current_exe()
        .map_err(|e| fail(format!("failed to find this executable: {e}")))?;
    let mut command = Command::new(&binary);
    command
        .args(["null-relay", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::inherit());
    let (child, lines) = spawn_and_read(command, &binary, SystemKind::Null, 1).await?;
    let addr = line_value(&lines, crate::NULL_RELAY_BANNER)
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .ok_or_else(|| fail(format!("the null relay printed no address: {lines:?}")))?;
    let pid = child.id().unwrap_or_default();
    Ok(Target {
        kind: SystemKind::Null,
        base_url: plain_url(addr)?,
        addr,
        api_key: SecretString::from("null-relay-ignores-credentials"),
        tls: None,
        probe: Some(ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "child process",
        guard: Guard::Child {
            child,
            _data_dir: data_dir,
        },
    })
}

/// Spawns a child with stdout piped and reads its first `count` lines.
async fn spawn_and_read(
    mut command: Command,
    binary: &Path,
    kind: SystemKind,
    count: usize,
) -> Result<(Child, Vec<String>), LoadtestError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            start_error(
                kind,
                format!("failed to run {}: {e}: build it with cargo build --release --bins, or pass --relay-bin", binary.display()),
            )
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| start_error(kind, "the child's standard output is not piped"))?;
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let read = async {
        while lines.len() < count {
            match reader.next_line().await {
                Ok(Some(line)) => lines.push(line),
                _ => break,
            }
        }
    };
    if tokio::time::timeout(CHILD_START_TIMEOUT, read)
        .await
        .is_err()
    {
        return Err(start_error(kind, "the child printed nothing within 30 s"));
    }
    Ok((child, lines))
}

fn line_value<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
        .map(str::trim)
}

/// Stops a child with SIGTERM, so a relay commits and closes cleanly, and
/// with SIGKILL if it lingers.
async fn stop_child(child: &mut Child) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
            && tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn localhost_url(scheme: &str, port: u16) -> Result<Url, LoadtestError> {
    Url::parse(&format!("{scheme}://localhost:{port}/"))
        .map_err(|e| start_error(SystemKind::Sealcast, e))
}

fn plain_url(addr: SocketAddr) -> Result<Url, LoadtestError> {
    Url::parse(&format!("http://{addr}/")).map_err(|e| start_error(SystemKind::Null, e))
}

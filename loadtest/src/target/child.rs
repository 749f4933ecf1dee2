//! Systems under test started as child processes: the `sealcast-relay`
//! binary and this binary's hidden `null-relay` command. Each prints its
//! address (and the relay its API key) on standard output, which is read
//! here, and each is stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sealcast_client::TlsSettings;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{
    ignored_credentials, localhost_url, plain_url, staff, start_error, Guard, SystemKind, Target,
};
use crate::error::LoadtestError;
use crate::stats::procfs::{ProbeScope, ProcessProbe};

/// Maximum wait for a child to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn sealcast_child(
    binary: &Path,
    max_connections: usize,
) -> Result<Target, LoadtestError> {
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
    let (child, lines) = spawn_and_read(command, binary, SystemKind::Sealcast, 1).await?;

    let addr = line_value(&lines, "sealcast-relay listening on https://")
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .ok_or_else(|| fail(format!("the relay printed no address: {lines:?}")))?;
    let relay_dir = data_dir.path().join("relay");
    let cert = relay_dir.join(sealcast_relay::tls::DEV_CERT_FILE);
    let base_url = localhost_url("https", addr.port())?;
    let sign_in = staff::sign_in_local(&relay_dir, &base_url, &cert).await?;
    let pid = child.id().unwrap_or_default();
    Ok(Target {
        kind: SystemKind::Sealcast,
        base_url,
        addr,
        follower_nodes: Vec::new(),
        staff: sign_in.authorizer(),
        _sign_in: Some(sign_in),
        tls: Some(TlsSettings::from_ca_file(&cert).map_err(|e| fail(e.to_string()))?),
        ca_cert: Some(cert),
        probe: Some(ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "child process",
        guard: Guard::Child {
            child,
            _data_dir: data_dir,
        },
    })
}

pub(super) async fn null_child() -> Result<Target, LoadtestError> {
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
        follower_nodes: Vec::new(),
        staff: ignored_credentials(),
        _sign_in: None,
        tls: None,
        ca_cert: None,
        probe: Some(ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "child process",
        guard: Guard::Child {
            child,
            _data_dir: data_dir,
        },
    })
}

/// Spawns a child with stdout piped and reads its first `count` lines.
pub(super) async fn spawn_and_read(
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
    if tokio::time::timeout(START_TIMEOUT, read).await.is_err() {
        return Err(start_error(kind, "the child printed nothing within 30 s"));
    }
    Ok((child, lines))
}

pub(super) fn line_value<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix))
        .map(str::trim)
}

/// Stops a child with SIGTERM, so a relay commits and closes cleanly, and
/// with SIGKILL if it lingers.
pub(super) async fn stop_child(child: &mut Child) {
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

pub(super) fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

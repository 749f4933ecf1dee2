//! The Node.js `ws` relay in `loadtest/peers/`, started as a child process
//! with a self-signed certificate made for the run.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use sealcast_client::auth::BearerToken;
use sealcast_client::{SecretString, TlsSettings};
use tokio::process::Command;

use super::child::{line_value, spawn_and_read};
use super::{localhost_url, start_error, Guard, SystemKind, Target};
use crate::error::LoadtestError;
use crate::stats::procfs::{ProbeScope, ProcessProbe};

/// The relay script inside the peers folder.
const SCRIPT: &str = "ws-relay.mjs";
/// First words of the line the script prints when it listens; the address follows.
const BANNER: &str = "ws relay listening on ";

/// Starts the relay with `node`, trusting a fresh certificate for `localhost`.
pub(super) async fn start(peers_dir: &Path) -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::NodeWs, reason);
    if !peers_dir.join("node_modules").join("ws").is_dir() {
        return Err(fail(format!(
            "the ws package is not installed in {}: run npm ci --prefix {}",
            peers_dir.display(),
            peers_dir.display()
        )));
    }

    let folder =
        tempfile::tempdir().map_err(|e| fail(format!("failed to make a directory: {e}")))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| fail(format!("failed to make a certificate: {e}")))?;
    let cert_path = folder.path().join("cert.pem");
    let key_path = folder.path().join("key.pem");
    let cert_pem = certified.cert.pem();
    std::fs::write(&cert_path, &cert_pem)
        .and_then(|()| std::fs::write(&key_path, certified.key_pair.serialize_pem()))
        .map_err(|e| fail(format!("failed to write the certificate: {e}")))?;

    // A hand-written relay would check a clinic API key too, so this one does.
    let api_key = format!("ws_{}", sealcast_protocol::SessionId::random());
    let mut command = Command::new("node");
    command
        .arg(peers_dir.join(SCRIPT))
        .arg("--cert")
        .arg(&cert_path)
        .arg("--key")
        .arg(&key_path)
        .env("WS_RELAY_API_KEY", &api_key)
        .stderr(Stdio::inherit());
    let (child, lines) = spawn_and_read(command, Path::new("node"), SystemKind::NodeWs, 1).await?;
    let addr = line_value(&lines, BANNER)
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .ok_or_else(|| fail(format!("the ws relay printed no address: {lines:?}")))?;

    let pid = child.id().unwrap_or_default();
    Ok(Target {
        kind: SystemKind::NodeWs,
        base_url: localhost_url("https", addr.port())?,
        addr,
        follower_nodes: Vec::new(),
        staff: Arc::new(BearerToken::new(SecretString::new(api_key))),
        _sign_in: None,
        tls: Some(TlsSettings::from_ca_pem(cert_pem.as_bytes()).map_err(|e| fail(e.to_string()))?),
        ca_cert: Some(cert_path),
        probe: Some(ProcessProbe::new(pid, ProbeScope::Process)),
        placement: "child process",
        guard: Guard::Child {
            child,
            _data_dir: folder,
        },
    })
}

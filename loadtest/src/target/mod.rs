//! The systems under test: the sealcast relay (started in this process, as
//! a child process, or already running) and the null relay, each with the
//! address, credentials and trust roots the simulated devices use, and a
//! `/proc` probe when the system runs on this machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::{Authorizer, BearerToken};
use sealcast_client::{SecretString, TlsSettings};
use sealcast_relay::{Config, Limits, RelayHandle};
use tempfile::TempDir;
use tokio::process::Child;
use tokio::runtime::Runtime;
use url::Url;

use crate::cli::{Placement, RunArgs};
use crate::error::LoadtestError;
use crate::null_relay::NullRelay;
use crate::stats::procfs::ProcessProbe;

mod child;
mod node;
mod staff;

pub use staff::StaffSignIn;

/// Thread name prefix of a relay started in this process; the relay's store
/// writer thread is named `sealcast-store-writer`, so one prefix covers both.
const RELAY_THREAD_PREFIX: &str = "sealcast-";
/// Thread name of the runtime of a null relay started in this process.
const NULL_THREAD_NAME: &str = "null-relay";
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

/// One address of a system under test that devices connect to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL: `https://localhost:PORT/`, or `http://` for the null relay.
    pub base_url: Url,
    /// Socket address that `base_url` resolves to.
    pub addr: SocketAddr,
}

/// A system under test, running.
pub struct Target {
    /// Which system.
    pub kind: SystemKind,
    /// Base URL: `https://localhost:PORT/`, or `http://` for the null relay.
    pub base_url: Url,
    /// Address the publishers connect to.
    pub addr: SocketAddr,
    /// The other nodes of a cluster, which followers connect to in turn.
    /// Empty when followers connect to `addr` like the publishers.
    pub follower_nodes: Vec<Endpoint>,
    /// Credentials the simulated clinician devices send when they create,
    /// publish and end sessions. The null relay accepts any.
    pub staff: Arc<dyn Authorizer>,
    /// Trust roots; `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// PEM file that `tls` trusts, which worker processes load again; `None`
    /// with the bundled Mozilla roots or plain TCP.
    pub ca_cert: Option<PathBuf>,
    /// CPU and memory probe, when the system runs on this machine.
    pub probe: Option<ProcessProbe>,
    /// Where it runs, for the report: `in-process`, `child process` or `external`.
    pub placement: &'static str,
    guard: Guard,
    /// The sealcast relay's signed-in clinician device, kept fresh for the run.
    _sign_in: Option<StaffSignIn>,
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
        if !args.relay.is_empty() {
            return external(args, &args.relay).await;
        }
        let max_connections = connections + CONNECTION_HEADROOM;
        match args.relay_process {
            Placement::InProcess => sealcast_in_process(max_connections).await,
            Placement::Child => {
                let binary = args
                    .relay_bin
                    .clone()
                    .unwrap_or_else(|| child::sibling_binary("sealcast-relay"));
                child::sealcast_child(&binary, max_connections).await
            }
        }
    }

    /// Starts the null relay where the options place started relays.
    pub async fn null(args: &RunArgs) -> Result<Target, LoadtestError> {
        match args.relay_process {
            Placement::InProcess => null_in_process().await,
            Placement::Child => child::null_child().await,
        }
    }

    /// Starts the Node.js `ws` relay as a child process.
    pub async fn node_ws(args: &RunArgs) -> Result<Target, LoadtestError> {
        node::start(&args.peers_dir).await
    }

    /// Returns the addresses followers connect to, in turn.
    pub fn follower_endpoints(&self) -> Vec<Endpoint> {
        if self.follower_nodes.is_empty() {
            vec![Endpoint {
                base_url: self.base_url.clone(),
                addr: self.addr,
            }]
        } else {
            self.follower_nodes.clone()
        }
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
            Guard::Child { mut child, .. } => child::stop_child(&mut child).await,
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

/// Connects to running relay nodes: publishers and session requests to the
/// first of `relays`, followers in turn to the others, or to the first when
/// it is the only one.
async fn external(args: &RunArgs, relays: &[String]) -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let mut endpoints = Vec::with_capacity(relays.len());
    for relay in relays {
        endpoints.push(resolve_endpoint(relay).await?);
    }
    let first = endpoints.remove(0);
    let ca_cert = args.ca_cert.clone().or_else(|| {
        args.relay_data_dir
            .as_ref()
            .map(|dir| dir.join(sealcast_relay::tls::DEV_CERT_FILE))
    });
    let tls = TlsSettings::new(ca_cert.as_deref()).map_err(|e| fail(e.to_string()))?;
    let sign_in = match (&args.relay_data_dir, &ca_cert) {
        (Some(data_dir), Some(cert)) => {
            staff::sign_in_local(data_dir, &first.base_url, cert).await?
        }
        _ => {
            let state_dir = args
                .state_dir
                .clone()
                .or_else(sealcast_client::KeyStore::default_dir)
                .ok_or_else(|| fail("no key store folder: pass --state-dir".into()))?;
            staff::load_external(&state_dir, &first.base_url, ca_cert.as_deref())?
        }
    };
    let placement = if endpoints.is_empty() {
        "external"
    } else {
        "external cluster"
    };
    Ok(Target {
        kind: SystemKind::Sealcast,
        staff: sign_in.authorizer(),
        base_url: first.base_url,
        addr: first.addr,
        follower_nodes: endpoints,
        tls: Some(tls),
        ca_cert,
        probe: ProcessProbe::processes(&args.relay_pid),
        placement,
        guard: Guard::External,
        _sign_in: Some(sign_in),
    })
}

/// Parses a relay's base URL and resolves its host to one socket address.
async fn resolve_endpoint(relay: &str) -> Result<Endpoint, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Sealcast, reason);
    let base_url =
        sealcast_client::endpoint::parse_relay_url(relay).map_err(|e| fail(e.to_string()))?;
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
    Ok(Endpoint { base_url, addr })
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
    let started = runtime.spawn(sealcast_relay::start(config)).await;
    let handle = match started {
        Ok(Ok(handle)) => handle,
        Ok(Err(err)) => return Err(abandon(runtime, fail(err.to_string()))),
        Err(err) => return Err(abandon(runtime, fail(err.to_string()))),
    };

    let addr = handle.local_addr();
    let relay_dir = handle.data_dir().to_path_buf();
    let cert = relay_dir.join(sealcast_relay::tls::DEV_CERT_FILE);
    let set_up = async {
        let tls = TlsSettings::from_ca_file(&cert).map_err(|e| fail(e.to_string()))?;
        let base_url = localhost_url("https", addr.port())?;
        let sign_in = staff::sign_in_local(&relay_dir, &base_url, &cert).await?;
        Ok((tls, base_url, sign_in))
    };
    let (tls, base_url, sign_in) = match set_up.await {
        Ok(set_up) => set_up,
        Err(err) => return Err(abandon(runtime, err)),
    };
    Ok(Target {
        kind: SystemKind::Sealcast,
        staff: sign_in.authorizer(),
        _sign_in: Some(sign_in),
        base_url,
        addr,
        follower_nodes: Vec::new(),
        tls: Some(tls),
        ca_cert: Some(cert),
        probe: Some(ProcessProbe::own_threads(RELAY_THREAD_PREFIX)),
        placement: "in-process",
        guard: Guard::InProcess {
            runtime,
            handle,
            _data_dir: data_dir,
        },
    })
}

/// Shuts a runtime down without blocking and returns `error`. Dropping a
/// runtime inside another runtime's task would panic.
fn abandon(runtime: Runtime, error: LoadtestError) -> LoadtestError {
    runtime.shutdown_background();
    error
}

async fn null_in_process() -> Result<Target, LoadtestError> {
    let fail = |reason: String| start_error(SystemKind::Null, reason);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(NULL_THREAD_NAME)
        .build()
        .map_err(|e| fail(format!("failed to start the null relay runtime: {e}")))?;
    let started = runtime
        .spawn(NullRelay::start(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await;
    let relay = match started {
        Ok(Ok(relay)) => relay,
        Ok(Err(err)) => return Err(abandon(runtime, fail(format!("failed to listen: {err}")))),
        Err(err) => return Err(abandon(runtime, fail(err.to_string()))),
    };
    let addr = relay.local_addr();
    let base_url = match plain_url(addr) {
        Ok(url) => url,
        Err(err) => {
            relay.stop();
            return Err(abandon(runtime, err));
        }
    };
    Ok(Target {
        kind: SystemKind::Null,
        base_url,
        addr,
        follower_nodes: Vec::new(),
        staff: ignored_credentials(),
        tls: None,
        ca_cert: None,
        probe: Some(ProcessProbe::own_threads(NULL_THREAD_NAME)),
        placement: "in-process",
        guard: Guard::NullInProcess { runtime, relay },
        _sign_in: None,
    })
}

/// Returns a credential for the null relay, which checks none.
fn ignored_credentials() -> Arc<dyn Authorizer> {
    Arc::new(BearerToken::new(SecretString::from(
        "null-relay-ignores-credentials",
    )))
}

fn localhost_url(scheme: &str, port: u16) -> Result<Url, LoadtestError> {
    Url::parse(&format!("{scheme}://localhost:{port}/"))
        .map_err(|e| start_error(SystemKind::Sealcast, e))
}

fn plain_url(addr: SocketAddr) -> Result<Url, LoadtestError> {
    Url::parse(&format!("http://{addr}/")).map_err(|e| start_error(SystemKind::Null, e))
}

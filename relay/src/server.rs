//! Starting and stopping a relay: [`start`] and [`RelayHandle`].

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::accounts::{self, Accounts};
use crate::at_rest::{DatabaseKeys, Fingerprint, KeySource};
use crate::audit::event::ACTOR_RELAY;
use crate::audit::key::AuditKey;
use crate::audit::recorder::run_checkpoint_timer;
use crate::audit::{retention, Action, AuditLog, Event};
use crate::config::Config;
use crate::db::Backend;
use crate::error::RelayError;
use crate::fanout::Fanout;
use crate::http::{self, RelayState};
use crate::hub::Registry;
use crate::invites::{self, InviteState};
use crate::listener::Listener;
use crate::metrics;
use crate::pairing::PairingMailbox;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};
use crate::tls::Tls;

/// How long shutdown waits for connections beyond the write timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running relay, returned by [`start`]. Dropping the handle without
/// [`RelayHandle::shutdown`] leaves the relay running until its tokio runtime stops.
pub struct RelayHandle {
    local_addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    public_url: String,
    data_dir: PathBuf,
    tls: Arc<Tls>,
    accounts: Arc<Accounts>,
    at_rest: DatabaseKeys,
    at_rest_development: bool,
    smtp_configured: bool,
    shutdown: Shutdown,
    server: JoinHandle<()>,
}

impl RelayHandle {
    /// Returns the address the relay listens on, with the real port when port 0 was configured.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the address of the plain-HTTP ops listener, if one is configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// Returns the base URL of invite links.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Returns where sign-in mail goes: `SMTP host:port` or `folder PATH`.
    pub fn mail_destination(&self) -> String {
        self.accounts.mailer.describe().to_owned()
    }

    /// Returns whether sign-in mail is sent over SMTP rather than written to
    /// the outbox folder.
    pub fn mail_is_sent(&self) -> bool {
        self.smtp_configured
    }

    /// Names where the at-rest key-encryption key came from.
    pub fn at_rest_key_source(&self) -> &str {
        self.at_rest.source()
    }

    /// Returns the fingerprint of the at-rest key-encryption key.
    pub fn at_rest_key_fingerprint(&self) -> Fingerprint {
        self.at_rest.kek_fingerprint()
    }

    /// Returns whether the at-rest key is the development key file in the
    /// data directory.
    pub fn at_rest_key_is_development(&self) -> bool {
        self.at_rest_development
    }

    /// Returns the accounts service, for the demo's in-process sign-in.
    pub(crate) fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Reads the certificate and key files again and serves them to new
    /// connections. On error the current certificate stays in use.
    pub fn reload_tls(&self) -> Result<(), RelayError> {
        self.tls.reload()
    }

    /// Stops gracefully: stops accepting, acknowledges every accepted frame
    /// once committed, closes sockets with `GOING_AWAY` and stops the store
    /// writer after its last commit.
    pub async fn shutdown(self) {
        tracing::info!("relay shutdown requested");
        self.shutdown.trigger();
        if let Err(error) = self.server.await {
            tracing::error!(%error, "relay task failed during shutdown");
        }
    }
}

impl fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandle")
            .field("local_addr", &self.local_addr)
            .field("ops_addr", &self.ops_addr)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Starts a relay: opens the store, loads or makes the TLS certificate and
/// the token signing key, binds the listener and serves until
/// [`RelayHandle::shutdown`].
pub async fn start(config: Config) -> Result<RelayHandle, RelayError> {
    config.limits.validate()?;
    config.accounts.validate()?;
    config.audit.validate()?;
    prepare_data_dir(&config.data_dir)?;
    let metrics_handle = metrics::install();
    let tls = Arc::new(Tls::setup(&config)?);
    let backend = Backend::from_config(&config.store, &config.data_dir)
        .map_err(StoreError::db("read the database URL"))?;
    let store = Store::open(&config.data_dir, &backend, &config.at_rest_key).await?;
    let at_rest = store.keys().clone();
    let (tcp, local_addr) = bind(config.listen).await?;
    let ops = match config.ops_listen {
        Some(addr) => Some(bind_ops(addr).await?),
        None => None,
    };
    let ops_addr = ops.as_ref().map(|(_, addr)| *addr);
    let public_url = resolve_public_url(config.public_url.as_deref(), local_addr.port())?;
    let accounts = Arc::new(
        Accounts::open(
            &config.accounts,
            &config.data_dir,
            &backend,
            store.keys(),
            &public_url,
        )
        .await?,
    );

    let shutdown = Shutdown::default();
    tokio::spawn(accounts::run_recheck(accounts.clone(), shutdown.clone()));
    let audit = start_audit(&config, &backend, &store, &shutdown).await?;
    let fanout = Fanout::start(&config.fanout, at_rest.data_keys(), &shutdown).await?;
    let server = spawn_server(
        &config,
        fanout,
        tcp,
        ops.map(|(tcp, _)| tcp),
        &tls,
        store,
        accounts.clone(),
        audit,
        shutdown.clone(),
        metrics_handle,
        &public_url,
    );
    tracing::info!(
        %local_addr,
        ops_addr = ops_addr.map(|addr| addr.to_string()),
        public_url,
        data_dir = %config.data_dir.display(),
        "relay started"
    );
    Ok(RelayHandle {
        local_addr,
        ops_addr,
        public_url,
        data_dir: config.data_dir,
        tls,
        accounts,
        at_rest,
        at_rest_development: matches!(config.at_rest_key, KeySource::Development),
        smtp_configured: config.accounts.smtp_url.is_some(),
        shutdown,
        server,
    })
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), RelayError> {
    let error = |source| RelayError::Bind { addr, source };
    let tcp = TcpListener::bind(addr).await.map_err(error)?;
    let local_addr = tcp.local_addr().map_err(error)?;
    Ok((tcp, local_addr))
}

async fn bind_ops(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), RelayError> {
    let error = |source| RelayError::BindOps { addr, source };
    let tcp = TcpListener::bind(addr).await.map_err(error)?;
    let local_addr = tcp.local_addr().map_err(error)?;
    Ok((tcp, local_addr))
}

/// Builds the shared state and routers and spawns the tasks that serve them.
#[allow(clippy::too_many_arguments)]
fn spawn_server(
    config: &Config,
    fanout: Fanout,
    tcp: TcpListener,
    ops_tcp: Option<TcpListener>,
    tls: &Tls,
    store: Store,
    accounts: Arc<Accounts>,
    audit: AuditLog,
    shutdown: Shutdown,
    metrics_handle: PrometheusHandle,
    public_url: &str,
) -> JoinHandle<()> {
    let invites = Arc::new(InviteState::default());
    tokio::spawn(invites::run_upkeep(invites.clone(), shutdown.clone()));
    let state = Arc::new(RelayState {
        hubs: Registry::new(
            store.clone(),
            config.limits.follower_queue_bytes / 2,
            fanout.clone(),
        ),
        store: store.clone(),
        limits: config.limits.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics_handle.clone(),
        invites,
        pairings: Arc::new(PairingMailbox::new(config.limits.pairing_lifetime)),
        paired_keys_changed: tokio::sync::watch::channel(()).0,
        public_origin: http::auth::origin_of(public_url),
        public_url: public_url.to_owned(),
        accounts,
        audit: audit.clone(),
        failures: http::failures::FailureLimiter::new(config.limits.failed_credentials_per_minute),
    });
    if let Fanout::Nats(nats) = &fanout {
        nats.spawn_feed(state.hubs.clone(), &shutdown);
    }
    if let Some(ops_tcp) = ops_tcp {
        let router = http::ops_router(state.clone());
        shutdown.spawn(serve_ops(ops_tcp, router, shutdown.clone()));
    }
    let listener = Listener::new(
        tcp,
        tls.acceptor.clone(),
        http::router(state, config.ops_listen.is_none()),
        &config.limits,
        shutdown.clone(),
    );
    let linger = config.limits.write_timeout + SHUTDOWN_GRACE;
    tokio::spawn(serve(
        listener,
        store,
        audit,
        shutdown,
        metrics_handle,
        linger,
    ))
}

/// Loads or makes the audit key, starts the audit log, records the relay's
/// settings and starts the checkpoint timer and retention runs.
async fn start_audit(
    config: &Config,
    backend: &Backend,
    store: &Store,
    shutdown: &Shutdown,
) -> Result<AuditLog, RelayError> {
    let key = Arc::new(AuditKey::load_or_create(&config.data_dir)?);
    check_audit_key(config, store, &key).await?;
    let audit = AuditLog::new(store.clone(), key.clone(), config.audit.checkpoints);
    let settings = &config.audit;
    let started = Event::new(Action::RelayStarted, ACTOR_RELAY)
        .detail(
            "content_retention_seconds",
            settings.retention.content.as_secs(),
        )
        .detail(
            "audit_retention_seconds",
            settings.retention.audit.as_secs(),
        )
        .detail(
            "retention_interval_seconds",
            settings.retention_interval.as_secs(),
        )
        .detail("checkpoint_entries", settings.checkpoints.every_entries)
        .detail(
            "checkpoint_interval_seconds",
            settings.checkpoint_interval.as_secs(),
        );
    audit.record_committed(started).await?;

    tokio::spawn(run_checkpoint_timer(
        audit.clone(),
        settings.checkpoint_interval,
        shutdown.clone(),
    ));
    tokio::spawn(retention::run_periodically(
        backend.clone(),
        key,
        settings.retention,
        settings.retention_interval,
        shutdown.clone(),
    ));
    Ok(audit)
}

/// Rejects an audit key other than the one that signed the store's newest
/// checkpoint. Relay nodes that share a store must share the audit key too:
/// a node that made a key of its own would sign checkpoints that no single
/// public key verifies, and the append-only trail would keep them.
async fn check_audit_key(config: &Config, store: &Store, key: &AuditKey) -> Result<(), RelayError> {
    let Some(stored) = store.newest_checkpoint_key().await? else {
        return Ok(());
    };
    let own = key.verifying_key().to_bytes();
    if stored.as_slice() == own.as_slice() {
        return Ok(());
    }
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Err(RelayError::AuditKeyMismatch(format!(
        "the store's audit checkpoints are signed by audit key {}, but this node's key in {} is {}: \
         copy audit-signing.key and audit-signing.pub from the data directory of the node that \
         signed them into this node's data directory",
        hex(&stored),
        config.data_dir.display(),
        hex(&own),
    )))
}

/// Serves the ops routes over plain HTTP until shutdown is triggered.
// NOTE: unlike the public listener, this one has no connection cap and no
// header timeout, because it is meant for loopback or a private network.
async fn serve_ops(tcp: TcpListener, router: Router, shutdown: Shutdown) {
    let stop = shutdown.clone();
    let result = axum::serve(tcp, router)
        .with_graceful_shutdown(async move { stop.triggered().await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "ops listener failed");
    }
}

/// Runs the accept loop, then winds down once shutdown is triggered.
async fn serve(
    listener: Listener,
    store: Store,
    audit: AuditLog,
    shutdown: Shutdown,
    metrics_handle: PrometheusHandle,
    linger: Duration,
) {
    let upkeep = tokio::spawn(run_metrics_upkeep(metrics_handle, shutdown.clone()));
    listener.run().await;

    // Connections see the same signal: publishers acknowledge what is
    // committed and every socket closes with GOING_AWAY.
    tracing::info!("relay stopping: waiting for connections to close");
    if tokio::time::timeout(linger, shutdown.wait_for_tasks())
        .await
        .is_err()
    {
        tracing::warn!(
            ?linger,
            "connections still open after the shutdown grace period"
        );
    }

    // After the connections, so that their last events are signed too.
    if let Err(error) = audit.sign_heads().await {
        tracing::error!(%error, "failed to sign the audit heads at shutdown");
    }
    store.close().await;
    let _ = upkeep.await;
    tracing::info!("relay stopped");
}

/// Folds histogram samples in regularly, so memory stays bounded without scrapes.
async fn run_metrics_upkeep(handle: PrometheusHandle, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(metrics::UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = interval.tick() => handle.run_upkeep(),
        }
    }
}

fn prepare_data_dir(path: &Path) -> Result<(), RelayError> {
    let error = |source| RelayError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path).map_err(error)?;
    // The directory contains the database and possibly a private key.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(error)
}

pub(crate) fn resolve_public_url(
    configured: Option<&str>,
    port: u16,
) -> Result<String, RelayError> {
    let Some(url) = configured else {
        return Ok(format!("https://localhost:{port}"));
    };
    let url = url.trim_end_matches('/');
    let has_host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty());
    if has_host {
        Ok(url.to_owned())
    } else {
        Err(RelayError::PublicUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_defaults_to_localhost_port() {
        assert_eq!(
            resolve_public_url(None, 8443).unwrap(),
            "https://localhost:8443"
        );
    }

    #[test]
    fn public_url_trims_and_checks_scheme() {
        assert_eq!(
            resolve_public_url(Some("https://relay.example.org/"), 1).unwrap(),
            "https://relay.example.org"
        );
        assert!(resolve_public_url(Some("relay.example.org"), 1).is_err());
        assert!(resolve_public_url(Some("https://"), 1).is_err());
    }
}

//! TLS handshakes of accepted connections, under one deadline each and a cap
//! on how many run their expensive part at once.
//!
//! The relay reads a connection's ClientHello before it takes a slot, so a
//! peer that sends its ClientHello a byte at a time takes no slot, only its
//! connection, until the deadline. The key exchange, the signature and the
//! rest of the handshake then run under a slot. Slots are handed out first
//! come, first served, so in a reconnect storm handshakes finish in arrival
//! order instead of all slowing down together until every one times out.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::metrics::{CONNECTIONS_REJECTED, TLS_HANDSHAKES_ACTIVE};

/// Runs TLS handshakes for the accept loop.
#[derive(Clone)]
pub(crate) struct Handshaker {
    config: Arc<ServerConfig>,
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// Reason a handshake ended without a TLS stream, counted under its own
/// `reason` label in [`CONNECTIONS_REJECTED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// The peer sent bytes that are not a valid TLS handshake, or offered
    /// nothing the relay accepts.
    Failed,
    /// The peer closed or reset the connection before the handshake ended.
    Aborted,
    /// The peer was too slow: the deadline passed while the relay waited for it.
    TimedOut,
    /// The deadline passed while the connection waited for a handshake slot.
    SlotsBusy,
}

impl HandshakeFailure {
    /// Returns the metric label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            HandshakeFailure::Failed => "tls_handshake_failed",
            HandshakeFailure::Aborted => "tls_handshake_aborted",
            HandshakeFailure::TimedOut => "tls_handshake_timeout",
            HandshakeFailure::SlotsBusy => "tls_handshake_slots_busy",
        }
    }
}

impl Handshaker {
    /// Creates a handshaker that runs at most `max_handshakes` handshakes past
    /// their ClientHello at once, each within `timeout` of its start.
    pub(crate) fn new(config: Arc<ServerConfig>, max_handshakes: usize, timeout: Duration) -> Self {
        Handshaker {
            config,
            slots: Arc::new(Semaphore::new(max_handshakes)),
            timeout,
        }
    }

    /// Completes the handshake on `stream`, counting and logging a failure.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        match self.try_accept(stream).await {
            Ok(tls) => Some(tls),
            Err((failure, error)) => {
                metrics::counter!(CONNECTIONS_REJECTED, "reason" => failure.reason()).increment(1);
                tracing::debug!(%peer, reason = failure.reason(), error, "TLS handshake did not complete");
                None
            }
        }
    }

    async fn try_accept(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, (HandshakeFailure, String)> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = |_| (HandshakeFailure::TimedOut, "deadline passed".to_owned());

        // Step 1: the ClientHello, with no slot held.
        let lazy = LazyConfigAcceptor::new(Acceptor::default(), stream);
        let start = tokio::time::timeout_at(deadline, lazy)
            .await
            .map_err(timed_out)?
            .map_err(classify)?;

        // Step 2: a slot, in arrival order.
        // NOTE: a peer that sends a whole ClientHello and then stalls keeps
        // its slot until the deadline. More than max_handshakes such peers
        // at once make new handshakes wait, and past the deadline they are
        // closed as tls_handshake_slots_busy.
        let slot = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| {
                (
                    HandshakeFailure::SlotsBusy,
                    "no handshake slot before the deadline".to_owned(),
                )
            })?
            .map_err(|_| {
                (
                    HandshakeFailure::Failed,
                    "handshake slots closed".to_owned(),
                )
            })?;

        // Step 3: the rest of the handshake under the slot.
        let _slot = ActiveHandshake::start(slot);
        tokio::time::timeout_at(deadline, start.into_stream(Arc::clone(&self.config)))
            .await
            .map_err(timed_out)?
            .map_err(classify)
    }
}

/// A handshake slot in use, counted in [`TLS_HANDSHAKES_ACTIVE`] until dropped.
struct ActiveHandshake {
    _slot: OwnedSemaphorePermit,
}

impl ActiveHandshake {
    fn start(slot: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(TLS_HANDSHAKES_ACTIVE).increment(1.0);
        ActiveHandshake { _slot: slot }
    }
}

impl Drop for ActiveHandshake {
    fn drop(&mut self) {
        metrics::gauge!(TLS_HANDSHAKES_ACTIVE).decrement(1.0);
    }
}

/// Sorts an I/O error of a handshake into a peer that left and a peer that
/// sent something invalid.
fn classify(error: std::io::Error) -> (HandshakeFailure, String) {
    let failure = match error.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => HandshakeFailure::Aborted,
        _ => HandshakeFailure::Failed,
    };
    (failure, error.to_string())
}

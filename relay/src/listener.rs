//! The accept loop and the life of one connection.
//!
//! A semaphore caps open connections. A connection over the cap gets a TLS
//! handshake and an HTTP 503 with `Retry-After` from a small separate pool,
//! or is dropped when that pool is busy too. Both cases are counted. Each
//! accepted connection does a TLS handshake through [`Handshaker`], then
//! HTTP/1.1 with upgrades, with the same timeout for reading each request's
//! headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::config::Limits;
use crate::handshake::Handshaker;
use crate::http::ApiError;
use crate::metrics::{ActiveConnection, CONNECTIONS_REJECTED};
use crate::shutdown::Shutdown;

/// Maximum connections over the cap that get a 503 at the same time.
const REJECTION_SLOTS: usize = 64;

/// Maximum time for sending a 503 to a connection over the cap, handshake included.
const REJECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds in the `Retry-After` header of the 503 over the cap. Clients
/// add their own jitter on top, so that they do not all return at once.
const RETRY_AFTER_SECONDS: &str = "1";

/// First and largest wait after a failed accept.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A connection's slot under the cap. Every WebSocket upgraded from the
/// connection keeps a clone, so the slot frees when the last one ends.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionTicket {
    _slot: Arc<OwnedSemaphorePermit>,
}

/// The address of the peer a request came from, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Accepts connections and serves each on its own task.
pub(crate) struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshaker: Handshaker,
    router: Router,
    slots: Arc<Semaphore>,
    rejection_slots: Arc<Semaphore>,
    header_timeout: Duration,
    shutdown: Shutdown,
}

impl Listener {
    /// Wraps a bound socket.
    pub(crate) fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        router: Router,
        limits: &Limits,
        shutdown: Shutdown,
    ) -> Listener {
        let handshaker = Handshaker::new(
            Arc::clone(acceptor.config()),
            limits.max_handshakes,
            limits.handshake_timeout,
        );
        Listener {
            tcp,
            acceptor,
            handshaker,
            router,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            rejection_slots: Arc::new(Semaphore::new(REJECTION_SLOTS)),
            header_timeout: limits.handshake_timeout,
            shutdown,
        }
    }

    /// Accepts until shutdown is triggered, then drops the listening socket.
    pub(crate) async fn run(self) {
        loop {
            let (stream, peer) = tokio::select! {
                () = self.shutdown.triggered() => break,
                accepted = self.accept() => accepted,
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => {
                    let connection = Connection {
                        peer,
                        handshaker: self.handshaker.clone(),
                        router: self.router.clone(),
                        header_timeout: self.header_timeout,
                        shutdown: self.shutdown.clone(),
                        ticket: ConnectionTicket {
                            _slot: Arc::new(permit),
                        },
                    };
                    // Every log line of the connection, its requests and its
                    // WebSocket carries this id and the peer address.
                    let span = tracing::info_span!(
                        "connection",
                        connection_id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                        %peer
                    );
                    self.shutdown
                        .spawn(connection.serve(stream).instrument(span));
                }
                Err(_) => self.reject_over_capacity(stream, peer),
            }
        }
        tracing::info!("stopped accepting connections");
    }

    /// Accepts one connection, backing off while accepting fails, for
    /// example when the process is out of file descriptors.
    async fn accept(&self) -> (TcpStream, SocketAddr) {
        let mut backoff = ACCEPT_BACKOFF_START;
        loop {
            match self.tcp.accept().await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::error!(%error, backoff_ms = backoff.as_millis() as u64, "failed to accept a connection: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    fn reject_over_capacity(&self, stream: TcpStream, peer: SocketAddr) {
        let Ok(slot) = Arc::clone(&self.rejection_slots).try_acquire_owned() else {
            // Too many rejections in progress, so close at once.
            metrics::counter!(CONNECTIONS_REJECTED, "reason" => "over_capacity_dropped")
                .increment(1);
            tracing::debug!(%peer, "connection over the limit closed without a reply");
            return;
        };
        metrics::counter!(CONNECTIONS_REJECTED, "reason" => "over_capacity").increment(1);
        tracing::debug!(%peer, "connection over the limit answered 503");
        let acceptor = self.acceptor.clone();
        self.shutdown.spawn(async move {
            let _ =
                tokio::time::timeout(REJECTION_TIMEOUT, respond_over_capacity(acceptor, stream))
                    .await;
            drop(slot);
        });
    }
}

/// Id of the next accepted connection, unique within this process.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    handshaker: Handshaker,
    router: Router,
    header_timeout: Duration,
    shutdown: Shutdown,
    ticket: ConnectionTicket,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let _active = ActiveConnection::open("http");
        let peer = self.peer;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "failed to disable Nagle's algorithm");
        }
        let Some(tls) = self.handshaker.accept(stream, peer).await else {
            return;
        };
        tracing::debug!(%peer, "connection opened");

        let router = self.router;
        let ticket = self.ticket;
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ticket.clone());
            request.extensions_mut().insert(PeerAddr(peer));
            router.clone().oneshot(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        tokio::pin!(connection);

        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.shutdown.triggered() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        // An upgraded connection ends here too: its WebSocket task goes on.
        match result {
            Ok(()) => tracing::debug!(%peer, "HTTP serving finished"),
            Err(error) => {
                // A request hyper cannot parse never reaches the router, so
                // it is counted here; hyper has already sent 400.
                if error.is_parse() || error.is_parse_too_large() {
                    metrics::counter!(CONNECTIONS_REJECTED, "reason" => "http_parse_failed")
                        .increment(1);
                } else if error.is_timeout() {
                    metrics::counter!(CONNECTIONS_REJECTED, "reason" => "http_header_timeout")
                        .increment(1);
                }
                tracing::debug!(%peer, %error, "HTTP serving failed");
            }
        }
    }
}

/// Completes the handshake and responds to every request with 503 and `Connection: close`.
async fn respond_over_capacity(acceptor: TlsAcceptor, stream: TcpStream) {
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let service = service_fn(|_request: Request<Incoming>| async {
        let mut response =
            ApiError::Unavailable("relay is at its connection limit: retry shortly".into())
                .into_response();
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        headers.insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        Ok::<_, Infallible>(response)
    });
    let _ = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

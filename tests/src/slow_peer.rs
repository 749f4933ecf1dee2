//! Peers that connect and then stall: a ClientHello or HTTP request sent a
//! byte at a time, a TLS handshake left midway, and the timing of a normal
//! client's handshake beside them.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use sealcast_client::TlsSettings;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Returns the bytes of a TLS ClientHello for `addr`, as the client library
/// would send it.
pub fn client_hello(tls: &TlsSettings, addr: SocketAddr) -> Vec<u8> {
    let config = tls.websocket_config().expect("TLS settings build");
    let mut connection =
        ClientConnection::new(config, ServerName::from(addr.ip())).expect("TLS client starts");
    let mut bytes = Vec::new();
    while connection.wants_write() {
        connection
            .write_tls(&mut bytes)
            .expect("ClientHello is written");
    }
    bytes
}

/// Opens TCP and completes a TLS handshake with the relay at `addr`.
pub async fn tls_connect(addr: SocketAddr, tls: &TlsSettings) -> TlsStream<TcpStream> {
    let config = tls.websocket_config().expect("TLS settings build");
    let tcp = TcpStream::connect(addr)
        .await
        .expect("TCP connection to the relay");
    TlsConnector::from(config)
        .connect(ServerName::from(addr.ip()), tcp)
        .await
        .expect("TLS handshake with the relay")
}

/// Sends `bytes` one at a time, `interval` apart, until the relay closes the
/// connection or `limit` passes. Returns the time until the relay closed it,
/// or `None` when it was still open at `limit` or all bytes went out first.
pub async fn drip<S>(
    stream: &mut S,
    bytes: &[u8],
    interval: Duration,
    limit: Duration,
) -> Option<Duration>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    for byte in bytes {
        if started.elapsed() > limit {
            return None;
        }
        let sent = async {
            stream.write_all(&[*byte]).await?;
            stream.flush().await
        };
        if sent.await.is_err() {
            return Some(started.elapsed());
        }
        // Anything the relay sends before closing (an alert, a 408) is skipped.
        let wait_until = Instant::now() + interval;
        while let Ok(read) = tokio::time::timeout_at(wait_until, stream.read(&mut buffer)).await {
            match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            }
        }
    }
    None
}

/// Reads and discards until the relay closes the connection, and returns
/// how long that took, or `None` when it was still open after `limit`.
pub async fn time_until_closed<S>(stream: &mut S, limit: Duration) -> Option<Duration>
where
    S: AsyncRead + Unpin,
{
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Connects as a normal client: TCP, a TLS handshake and `GET /healthz`.
/// Returns the time from the TCP connect to the end of the handshake and
/// the response's status line.
pub async fn timed_health_check(addr: SocketAddr, tls: &TlsSettings) -> (Duration, String) {
    let started = Instant::now();
    let mut stream = tls_connect(addr, tls).await;
    let handshake = started.elapsed();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("request is sent");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let status = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (handshake, status)
}

//! Sending arbitrary bytes to the relay's port, either in place of a TLS
//! handshake or inside a TLS connection, and reading what the relay sends
//! back before it closes the connection, or only the certificate it serves.
//!
//! These helpers block, so call them from `tokio::task::spawn_blocking`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use sealcast_client::TlsSettings;

/// Maximum wait for the relay to reply and close.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `bytes` on a plain TCP connection to `addr` and returns everything
/// the relay sent back until it closed the connection.
pub fn exchange_plain(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("TCP connection to the relay");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout is set");
    stream.write_all(bytes).expect("bytes are sent");
    read_until_closed(&mut stream)
}

/// Completes a TLS handshake with the relay at `addr`, trusting `tls`, sends
/// `bytes` inside the TLS connection and returns the decrypted bytes the
/// relay sent back until it closed the connection.
pub fn exchange_over_tls(addr: SocketAddr, tls: &TlsSettings, bytes: &[u8]) -> Vec<u8> {
    let config = tls
        .websocket_config()
        .expect("TLS settings build a client configuration");
    let server_name = ServerName::from(addr.ip());
    let connection = ClientConnection::new(config, server_name).expect("TLS client starts");
    let socket = TcpStream::connect(addr).expect("TCP connection to the relay");
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout is set");

    let mut stream = StreamOwned::new(connection, socket);
    stream.write_all(bytes).expect("bytes are sent over TLS");
    stream.flush().expect("TLS records are flushed");
    read_until_closed(&mut stream)
}

/// Completes a TLS handshake with the relay at `addr`, trusting `tls`, and
/// returns the DER of the leaf certificate the relay served.
pub fn served_certificate(addr: SocketAddr, tls: &TlsSettings) -> Vec<u8> {
    let config = tls
        .websocket_config()
        .expect("TLS settings build a client configuration");
    let server_name = ServerName::from(addr.ip());
    let mut connection = ClientConnection::new(config, server_name).expect("TLS client starts");
    let mut socket = TcpStream::connect(addr).expect("TCP connection to the relay");
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout is set");
    while connection.is_handshaking() {
        connection
            .complete_io(&mut socket)
            .expect("TLS handshake with the relay completes");
    }
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("the relay served a certificate")
}

/// Reads until end of file or a reset, which both mean the relay closed.
fn read_until_closed(stream: &mut impl Read) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(count) => received.extend_from_slice(&buffer[..count]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if is_closed(&err) => return received,
            Err(err) => panic!("reading the relay's reply failed: {err}"),
        }
    }
}

fn is_closed(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof
    )
}

//! A WebSocket over TLS whose frames the test writes byte by byte (RFC 6455,
//! section 5.2), for inputs that a WebSocket library never sends:
//! reserved bits, stray continuations, declared lengths with no payload,
//! reserved close codes.
//!
//! It blocks, so call it from `tokio::task::spawn_blocking`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use sealcast_client::TlsSettings;

/// Maximum wait for the relay to send an expected frame or close.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Masking key of every frame sent; RFC 6455 requires clients to mask.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// First-byte flags and opcodes (RFC 6455, section 5.2).
pub mod op {
    /// FIN: the last fragment of a message.
    pub const FIN: u8 = 0x80;
    /// Reserved bit 2.
    pub const RSV2: u8 = 0x20;
    /// Reserved bit 3.
    pub const RSV3: u8 = 0x10;
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xa;
}

/// One frame received from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// The FIN bit, reserved bits and opcode.
    pub first_byte: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl WireFrame {
    /// Returns the opcode.
    pub fn opcode(&self) -> u8 {
        self.first_byte & 0x0f
    }

    /// Returns the code and reason of a close frame, or `None` for another frame.
    pub fn close(&self) -> Option<(u16, String)> {
        if self.opcode() != op::CLOSE || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

/// A TLS connection to the relay, after the HTTP request of an upgrade.
pub struct WireSocket {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buffered: Vec<u8>,
}

impl WireSocket {
    /// Connects to `addr`, trusting `tls` and offering the ALPN protocols
    /// `alpn`, and sends `request`. Fails when the TLS handshake fails.
    pub fn connect(
        addr: SocketAddr,
        tls: &TlsSettings,
        alpn: &[&[u8]],
        request: &str,
    ) -> std::io::Result<Self> {
        let mut config = (*tls
            .websocket_config()
            .expect("TLS settings build a client configuration"))
        .clone();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        let connection = ClientConnection::new(Arc::new(config), ServerName::from(addr.ip()))
            .expect("TLS client starts");
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(READ_TIMEOUT))?;

        let mut stream = StreamOwned::new(connection, socket);
        stream.write_all(request.as_bytes())?;
        stream.flush()?;
        Ok(WireSocket {
            stream,
            buffered: Vec::new(),
        })
    }

    /// Returns the ALPN protocol the relay chose, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Reads the HTTP response head, up to and including the blank line.
    pub fn read_response_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(
                self.fill(),
                "the relay closed before its HTTP response ended"
            );
        }
    }

    /// Sends one masked frame with this first byte and payload.
    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8]) {
        let mut bytes = frame_header(first_byte, payload.len() as u64);
        bytes.extend(
            payload
                .iter()
                .zip(MASK.iter().cycle())
                .map(|(byte, mask)| byte ^ mask),
        );
        self.send_bytes(&bytes);
    }

    /// Sends the header of a masked frame that declares `declared_len` payload bytes, and no payload.
    pub fn send_header_only(&mut self, first_byte: u8, declared_len: u64) {
        self.send_bytes(&frame_header(first_byte, declared_len));
    }

    /// Sends a masked close frame with this code and raw reason bytes.
    pub fn send_close(&mut self, code: u16, reason: &[u8]) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        self.send_frame(op::FIN | op::CLOSE, &payload);
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        // The relay may close while a frame is on its way; the next read shows how.
        let _ = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
    }

    /// Reads the next frame. Returns `None` when the relay closed the connection first.
    pub fn read_frame(&mut self) -> Option<WireFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads frames until a text message arrives and returns it.
    pub fn read_text(&mut self) -> String {
        loop {
            let frame = self
                .read_frame()
                .expect("the relay closed before sending a text message");
            if let Some(close) = frame.close() {
                panic!("expected a text message, the relay closed with {close:?}");
            }
            if frame.opcode() == op::TEXT {
                return String::from_utf8(frame.payload).expect("text message is UTF-8");
            }
        }
    }

    /// Reads frames until the relay's close frame and returns its code and
    /// reason. Returns `None` when the connection ends without one.
    pub fn read_close(&mut self) -> Option<(u16, String)> {
        loop {
            if let Some(close) = self.read_frame()?.close() {
                return Some(close);
            }
        }
    }

    /// Reads more bytes into the buffer. Returns `false` at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(count) => {
                    self.buffered.extend_from_slice(&chunk[..count]);
                    return true;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) if is_closed(&err) => return false,
                Err(err) => panic!("reading from the relay failed: {err}"),
            }
        }
    }
}

/// Encodes a masked frame header with the shortest length form.
fn frame_header(first_byte: u8, len: u64) -> Vec<u8> {
    let mut bytes = vec![first_byte];
    match len {
        0..=125 => bytes.push(0x80 | len as u8),
        126..=0xffff => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&len.to_be_bytes());
        }
    }
    bytes.extend_from_slice(&MASK);
    bytes
}

/// Parses one unmasked server frame at the start of `bytes`. Returns the
/// frame and the bytes it used, or `None` when it is not complete yet.
fn parse_server_frame(bytes: &[u8]) -> Option<(WireFrame, usize)> {
    let (&first_byte, rest) = bytes.split_first()?;
    let (&len_byte, rest) = rest.split_first()?;
    assert_eq!(len_byte & 0x80, 0, "the relay sent a masked frame");
    let (len, header_len) = match len_byte & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10),
        short => (u64::from(short), 2),
    };
    let end = header_len + usize::try_from(len).expect("frame length fits in memory");
    let payload = bytes.get(header_len..end)?.to_vec();
    Some((
        WireFrame {
            first_byte,
            payload,
        },
        end,
    ))
}

fn is_closed(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof
    )
}

//! WebSocket frames that break RFC 6455 in ways a WebSocket library never
//! sends get the close code the RFC gives them, and are counted. Declared
//! lengths far beyond the message limit are rejected before any payload
//! arrives, with no memory set aside for them. Upgrade requests in the forms
//! browsers and proxies send are accepted, with permessage-deflate declined.
//! A session streams throughout, and its follower must receive every
//! segment. Unmasked frames and the RSV1 bit are covered by
//! `websocket_protocol_errors_are_closed.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use sealcast_client::TlsSettings;
use sealcast_protocol::api::PublisherEvent;
use sealcast_protocol::{StreamSealer, TranscriptSegment};
use sealcast_relay::metrics::{CONNECTIONS_REJECTED, FRAMES_REJECTED, WEBSOCKET_PROTOCOL_ERRORS};
use sealcast_tests::memory::{peak_resident_bytes, resident_bytes};
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::session::LiveSession;
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::streaming::BackgroundStream;
use sealcast_tests::wire_socket::{op, WireSocket};

/// ALPN list of a browser's WebSocket connection.
const HTTP_1_1: &[&[u8]] = &[b"http/1.1"];

/// Maximum growth of the relay's resident memory, in bytes, while it rejects
/// frames that declare 4 GiB and more. An allocation of the declared size
/// would exceed it by orders of magnitude.
const MAX_RESIDENT_GROWTH: u64 = 32 * 1024 * 1024;

/// Frames sent after a successful upgrade.
#[derive(Debug, Clone, Copy)]
enum Abuse {
    /// A binary message in two fragments with a ping between them (allowed, RFC 6455 section 5.4).
    PingBetweenFragments,
    /// A text frame while a fragmented binary message is in progress.
    InterleavedDataFrames,
    /// A continuation frame with no message in progress.
    ContinuationWithoutStart,
    /// A binary frame with the RSV2 bit set.
    Rsv2Bit,
    /// A ping with the RSV3 bit set.
    Rsv3BitOnPing,
    /// A frame header declaring this many payload bytes, with no payload.
    DeclaredLength(u64),
    /// A close frame with a code that must never be sent (RFC 6455 section 7.4.1).
    ReservedCloseCode(u16),
    /// A close frame whose reason is not UTF-8.
    CloseReasonNotUtf8,
}

/// What the relay must do with one kind of abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Reply to the ping with a pong, accept the message and acknowledge it.
    Accepted,
    /// Close with this code and count a protocol error.
    ProtocolError(u16),
    /// Close with 1009 (message too big).
    TooBig,
}

fn abuse_cases() -> Vec<(Abuse, Expected)> {
    vec![
        (Abuse::PingBetweenFragments, Expected::Accepted),
        (Abuse::InterleavedDataFrames, Expected::ProtocolError(1002)),
        (
            Abuse::ContinuationWithoutStart,
            Expected::ProtocolError(1002),
        ),
        (Abuse::Rsv2Bit, Expected::ProtocolError(1002)),
        (Abuse::Rsv3BitOnPing, Expected::ProtocolError(1002)),
        (Abuse::DeclaredLength(1 << 32), Expected::TooBig),
        (Abuse::DeclaredLength(i64::MAX as u64), Expected::TooBig),
        (
            Abuse::DeclaredLength(u64::MAX),
            Expected::ProtocolError(1002),
        ),
        (
            Abuse::ReservedCloseCode(1005),
            Expected::ProtocolError(1002),
        ),
        (
            Abuse::ReservedCloseCode(1006),
            Expected::ProtocolError(1002),
        ),
        (
            Abuse::ReservedCloseCode(1015),
            Expected::ProtocolError(1002),
        ),
        (Abuse::CloseReasonNotUtf8, Expected::ProtocolError(1007)),
    ]
}

/// An upgrade request in a form that a browser or proxy sends.
#[derive(Debug, Clone, Copy)]
struct Handshake {
    name: &'static str,
    alpn: &'static [&'static [u8]],
    upgrade: &'static str,
    connection: &'static str,
    extra_header: Option<&'static str>,
}

fn handshake_cases() -> Vec<Handshake> {
    let plain = Handshake {
        name: "",
        alpn: HTTP_1_1,
        upgrade: "Upgrade: websocket",
        connection: "Connection: Upgrade",
        extra_header: None,
    };
    vec![
        Handshake {
            name: "ALPN h2 and http/1.1, as browsers offer",
            alpn: &[b"h2", b"http/1.1"],
            ..plain
        },
        Handshake {
            name: "Connection: keep-alive, Upgrade",
            connection: "Connection: keep-alive, Upgrade",
            ..plain
        },
        Handshake {
            name: "mixed-case header names and tokens",
            upgrade: "uPGRADE: WebSocket",
            connection: "connection: UPGRADE",
            ..plain
        },
        Handshake {
            name: "permessage-deflate offer",
            extra_header: Some(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
            ),
            ..plain
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_abuse_gets_rfc_close_codes() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let streaming = LiveSession::create(&relay, &staff).await;
    let victim = LiveSession::create(&relay, &staff).await;
    let background = BackgroundStream::start(&streaming).await;

    for (abuse, expected) in abuse_cases() {
        let seen_before = background.finals_seen();
        let before = scrape(&victim.relay, &victim.tls).await;
        let memory_before = (
            resident_bytes(relay.pid()),
            peak_resident_bytes(relay.pid()),
        );

        let frame = sealed_frame(&victim);
        let outcome = run_blocking(&relay, &victim, move |socket| {
            apply_abuse(socket, abuse, &frame)
        })
        .await;
        assert_eq!(outcome, expected, "{abuse:?}: outcome");

        let after = scrape(&victim.relay, &victim.tls).await;
        let labels = [("role", "publisher")];
        let counted = after.value(WEBSOCKET_PROTOCOL_ERRORS, &labels)
            - before.value(WEBSOCKET_PROTOCOL_ERRORS, &labels);
        let expected_count = if matches!(expected, Expected::ProtocolError(_)) {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            counted, expected_count,
            "{abuse:?}: protocol errors counted"
        );
        let too_big = [("reason", "too_big")];
        let rejected =
            after.value(FRAMES_REJECTED, &too_big) - before.value(FRAMES_REJECTED, &too_big);
        let expected_rejected = if expected == Expected::TooBig {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            rejected, expected_rejected,
            "{abuse:?}: oversized messages counted"
        );

        if let Abuse::DeclaredLength(_) = abuse {
            let grown = resident_bytes(relay.pid()).saturating_sub(memory_before.0);
            let peak_grown = peak_resident_bytes(relay.pid()).saturating_sub(memory_before.1);
            assert!(
                grown < MAX_RESIDENT_GROWTH,
                "{abuse:?}: resident memory grew by {grown} bytes"
            );
            assert!(
                peak_grown < MAX_RESIDENT_GROWTH,
                "{abuse:?}: peak resident memory grew by {peak_grown} bytes"
            );
        }
        background
            .wait_for_progress(seen_before, &format!("{abuse:?}"))
            .await;
    }

    for handshake in handshake_cases() {
        let seen_before = background.finals_seen();
        let (addr, tls, request) = (
            relay.addr,
            victim.tls.clone(),
            upgrade_request(&victim, relay.addr, handshake),
        );
        let head = tokio::task::spawn_blocking(move || {
            let mut socket = WireSocket::connect(addr, &tls, handshake.alpn, &request).unwrap();
            let head = socket.read_response_head();
            assert_eq!(
                socket.alpn_protocol().as_deref(),
                Some(&b"http/1.1"[..]),
                "{}: ALPN",
                handshake.name
            );
            if head.starts_with("HTTP/1.1 101") {
                assert!(
                    socket.read_text().contains("\"welcome\""),
                    "{}: no welcome",
                    handshake.name
                );
                socket.send_close(1000, b"done");
            }
            head
        })
        .await
        .unwrap();

        assert!(
            head.starts_with("HTTP/1.1 101"),
            "{}: not upgraded: {head}",
            handshake.name
        );
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("sec-websocket-extensions"),
            "{}: the relay accepted an extension: {head}",
            handshake.name
        );
        background
            .wait_for_progress(seen_before, handshake.name)
            .await;
    }

    h2_only_alpn_is_rejected(&relay, &victim).await;
    background.finish(&streaming).await;
}

/// Checks that a client offering only `h2` gets the TLS alert
/// no_application_protocol (RFC 7301, section 3.2), because the relay speaks
/// HTTP/1.1 only, and that the failed handshake is counted.
async fn h2_only_alpn_is_rejected(relay: &RelayProcess, victim: &LiveSession) {
    let before = scrape(&victim.relay, &victim.tls).await;
    let handshake = Handshake {
        name: "h2 only",
        alpn: &[b"h2"],
        upgrade: "Upgrade: websocket",
        connection: "Connection: Upgrade",
        extra_header: None,
    };
    let (addr, tls, request) = (
        relay.addr,
        victim.tls.clone(),
        upgrade_request(victim, relay.addr, handshake),
    );
    let error = tokio::task::spawn_blocking(move || {
        match WireSocket::connect(addr, &tls, handshake.alpn, &request) {
            Ok(mut socket) => panic!(
                "h2 only: the relay answered {}",
                socket.read_response_head()
            ),
            Err(error) => error.to_string(),
        }
    })
    .await
    .unwrap();
    assert!(error.contains("NoApplicationProtocol"), "h2 only: {error}");

    let after = scrape(&victim.relay, &victim.tls).await;
    let labels = [("reason", "tls_handshake_failed")];
    assert_eq!(
        after.value(CONNECTIONS_REJECTED, &labels) - before.value(CONNECTIONS_REJECTED, &labels),
        1.0,
        "h2 only: the failed handshake was not counted once"
    );
}

/// Opens the victim's publish socket, checks the upgrade and the welcome,
/// and runs `act` on the socket on a blocking thread.
async fn run_blocking<T: Send + 'static>(
    relay: &RelayProcess,
    victim: &LiveSession,
    act: impl FnOnce(&mut WireSocket) -> T + Send + 'static,
) -> T {
    let handshake = Handshake {
        name: "plain",
        alpn: HTTP_1_1,
        upgrade: "Upgrade: websocket",
        connection: "Connection: Upgrade",
        extra_header: None,
    };
    let request = upgrade_request(victim, relay.addr, handshake);
    let (addr, tls): (SocketAddr, TlsSettings) = (relay.addr, victim.tls.clone());
    tokio::task::spawn_blocking(move || {
        let mut socket = WireSocket::connect(addr, &tls, handshake.alpn, &request).unwrap();
        let head = socket.read_response_head();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        let welcome = socket.read_text();
        assert!(
            welcome.contains("\"welcome\""),
            "expected the welcome, got {welcome}"
        );
        act(&mut socket)
    })
    .await
    .unwrap()
}

/// Seals the first frame of a new stream of `victim`.
fn sealed_frame(victim: &LiveSession) -> Vec<u8> {
    let mut sealer = StreamSealer::new(&victim.key, victim.created.session_id);
    let segment = TranscriptSegment {
        segment_id: 0,
        revision: 0,
        speaker: "doctor".into(),
        start_ms: 0,
        end_ms: 1200,
        text: "Sent in two fragments.".into(),
        is_final: true,
    };
    sealer.seal_segment(&segment).unwrap()
}

fn apply_abuse(socket: &mut WireSocket, abuse: Abuse, frame: &[u8]) -> Expected {
    match abuse {
        Abuse::PingBetweenFragments => return ping_between_fragments(socket, frame),
        Abuse::InterleavedDataFrames => {
            socket.send_frame(op::BINARY, b"first half");
            socket.send_frame(op::FIN | op::TEXT, b"a new message");
        }
        Abuse::ContinuationWithoutStart => socket.send_frame(op::FIN | op::CONTINUATION, b"orphan"),
        Abuse::Rsv2Bit => socket.send_frame(op::FIN | op::RSV2 | op::BINARY, b"x"),
        Abuse::Rsv3BitOnPing => socket.send_frame(op::FIN | op::RSV3 | op::PING, b"x"),
        Abuse::DeclaredLength(len) => socket.send_header_only(op::FIN | op::BINARY, len),
        Abuse::ReservedCloseCode(code) => socket.send_close(code, b""),
        Abuse::CloseReasonNotUtf8 => socket.send_close(1000, &[0xc3, 0x28, 0xff]),
    }

    let (code, reason) = socket
        .read_close()
        .unwrap_or_else(|| panic!("{abuse:?}: the connection ended without a close frame"));
    assert!(!reason.is_empty(), "{abuse:?}: close {code} has no reason");
    match code {
        1009 => Expected::TooBig,
        other => Expected::ProtocolError(other),
    }
}

/// Sends `frame` as two fragments with a ping between them, and expects the
/// pong and then the frame's acknowledgement.
fn ping_between_fragments(socket: &mut WireSocket, frame: &[u8]) -> Expected {
    let (first, second) = frame.split_at(frame.len() / 2);
    socket.send_frame(op::BINARY, first);
    socket.send_frame(op::FIN | op::PING, b"between fragments");
    socket.send_frame(op::FIN | op::CONTINUATION, second);

    let pong = loop {
        let received = socket
            .read_frame()
            .expect("the relay closed instead of answering the ping");
        if let Some(close) = received.close() {
            panic!("the relay closed with {close:?} instead of answering the ping");
        }
        if received.opcode() == op::PONG {
            break received.payload;
        }
    };
    assert_eq!(pong, b"between fragments", "pong payload");

    let ack: PublisherEvent = serde_json::from_str(&socket.read_text()).unwrap();
    assert!(
        matches!(ack, PublisherEvent::Ack { seq: 0, .. }),
        "expected the acknowledgement of the fragmented frame, got {ack:?}"
    );
    socket.send_close(1000, b"done");
    Expected::Accepted
}

fn upgrade_request(session: &LiveSession, addr: SocketAddr, handshake: Handshake) -> String {
    let extra = handshake
        .extra_header
        .map(|header| format!("{header}\r\n"))
        .unwrap_or_default();
    let credentials = session.publish_credential_lines();
    format!(
        "GET /v1/sessions/{}/publish HTTP/1.1\r\nHost: {addr}\r\n{}\r\n{}\r\n{extra}\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {credentials}\r\n",
        session.created.session_id, handshake.upgrade, handshake.connection,
    )
}

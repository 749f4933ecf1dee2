//! A peer that breaks the WebSocket protocol (RFC 6455) after the upgrade
//! gets a close frame with code 1002 and a reason, and is counted, instead of
//! having its connection dropped without a word.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::raw_tls::exchange_over_tls;
use sealcast_tests::session::LiveSession;
use sealcast_tests::staff::StaffDevice;

const PROTOCOL_ERRORS: &str = "sealcast_websocket_protocol_errors_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_close_1002() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let staff = StaffDevice::clinician(&relay).await;
    let session = LiveSession::create(&relay, &staff).await;

    // An unmasked client frame, and a masked frame with the RSV1 bit set.
    let cases: [(&str, Vec<u8>); 2] = [
        ("unmasked frame", vec![0x82, 0x03, 1, 2, 3]),
        ("RSV1 bit set", vec![0xc2, 0x83, 9, 9, 9, 9, 1, 2, 3]),
    ];
    for (name, frame) in cases {
        let before = scrape(&session.relay, &session.tls).await;
        let request = upgrade_request(&session, relay.addr.port());
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&frame);
        let (addr, tls) = (relay.addr, session.tls.clone());
        let reply = tokio::task::spawn_blocking(move || exchange_over_tls(addr, &tls, &bytes))
            .await
            .unwrap();

        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.contains("101 Switching Protocols"),
            "{name}: no upgrade: {text}"
        );
        let code = close_code(&reply).unwrap_or_else(|| panic!("{name}: no close frame: {text}"));
        assert_eq!(code, 1002, "{name}: wrong close code");
        assert!(
            text.contains("WebSocket protocol error"),
            "{name}: no reason: {text}"
        );

        let after = scrape(&session.relay, &session.tls).await;
        let labels = [("role", "publisher")];
        assert_eq!(
            after.value(PROTOCOL_ERRORS, &labels) - before.value(PROTOCOL_ERRORS, &labels),
            1.0,
            "{name}: metric did not count it once"
        );
    }
}

fn upgrade_request(session: &LiveSession, port: u16) -> String {
    let credentials = session.publish_credential_lines();
    format!(
        "GET /v1/sessions/{}/publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {credentials}\r\n",
        session.created.session_id
    )
}

/// Finds the first server close frame (opcode 8, unmasked) and returns its code.
fn close_code(reply: &[u8]) -> Option<u16> {
    let start = reply.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut frames = &reply[start..];
    while frames.len() >= 2 {
        let opcode = frames[0] & 0x0f;
        let len = usize::from(frames[1] & 0x7f);
        if len > 125 || frames.len() < 2 + len {
            return None;
        }
        if opcode == 8 && len >= 2 {
            return Some(u16::from_be_bytes([frames[2], frames[3]]));
        }
        frames = &frames[2 + len..];
    }
    None
}

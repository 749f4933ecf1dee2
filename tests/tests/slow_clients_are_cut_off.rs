//! Slowloris: hundreds of clients that send a ClientHello a byte at a time,
//! finish TLS and then send request headers a byte at a time, send an
//! upgrade request without its closing blank line, or finish TLS and send
//! nothing. The relay cuts each off at the handshake timeout and counts it,
//! while a normal client connecting meanwhile completes its handshake in
//! well under the timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sealcast_client::TlsSettings;
use sealcast_relay::metrics::{CONNECTIONS_ACTIVE, CONNECTIONS_REJECTED, TLS_HANDSHAKES_ACTIVE};
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::slow_peer::{
    client_hello, drip, time_until_closed, timed_health_check, tls_connect,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use url::Url;

/// The relay's handshake and header timeout in this test.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two bytes of a slow client.
const DRIP_INTERVAL: Duration = Duration::from_millis(100);

/// Maximum time a slow client may stay connected: the timeout plus scheduling slack.
const CUT_OFF_LIMIT: Duration = Duration::from_secs(8);

/// Maximum time a normal client's handshake may take while the slow ones hang.
const PROMPT_HANDSHAKE: Duration = Duration::from_secs(2);

/// Handshake slots, far fewer than slow clients, which must hold none.
const MAX_HANDSHAKES: &str = "16";

const SLOW_CLIENT_HELLOS: usize = 100;
const SLOW_HEADERS: usize = 100;
const UNFINISHED_UPGRADES: usize = 50;
const SILENT_AFTER_TLS: usize = 50;

/// An upgrade request to the follow socket without the blank line that ends it.
const UNFINISHED_UPGRADE: &[u8] = b"GET /v1/follow HTTP/1.1\r\nhost: localhost\r\n\
    upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
    sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nauthorization: Bearer x\r\n";

/// A slow client's kind and how long the relay took to close it.
type Outcome = (&'static str, Option<Duration>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &[
            "--handshake-timeout",
            "3s",
            "--max-handshakes",
            MAX_HANDSHAKES,
        ],
    );
    let tls = TlsSettings::from_ca_file(&relay.ca_cert()).unwrap();
    let url = Url::parse(&relay.base_url()).unwrap();
    let before = scrape(&url, &tls).await;

    let mut slow = JoinSet::new();
    spawn_slow_clients(&mut slow, &relay, &tls);
    // Let every slow client connect and start stalling.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    for attempt in 0..5 {
        let (handshake, status) = timed_health_check(relay.addr, &tls).await;
        assert!(
            handshake < PROMPT_HANDSHAKE,
            "attempt {attempt}: a normal handshake took {handshake:?} beside slow clients"
        );
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "attempt {attempt}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut still_open = Vec::new();
    let mut too_early = Vec::new();
    while let Some(result) = slow.join_next().await {
        match result.expect("slow client task panicked") {
            (kind, None) => still_open.push(kind),
            (kind, Some(after)) if after < TIMEOUT - Duration::from_millis(500) => {
                too_early.push((kind, after))
            }
            _ => {}
        }
    }
    assert!(
        still_open.is_empty(),
        "still open after {CUT_OFF_LIMIT:?}: {still_open:?}"
    );
    assert!(
        too_early.is_empty(),
        "closed before the timeout: {too_early:?}"
    );

    let after = scrape(&url, &tls).await;
    let rejected = |reason: &str| {
        after.value(CONNECTIONS_REJECTED, &[("reason", reason)])
            - before.value(CONNECTIONS_REJECTED, &[("reason", reason)])
    };
    assert_eq!(
        rejected("tls_handshake_timeout"),
        SLOW_CLIENT_HELLOS as f64,
        "ClientHellos cut off"
    );
    assert_eq!(
        rejected("http_header_timeout"),
        (SLOW_HEADERS + UNFINISHED_UPGRADES + SILENT_AFTER_TLS) as f64,
        "requests cut off"
    );
    assert_eq!(
        rejected("tls_handshake_slots_busy"),
        0.0,
        "slow ClientHellos held slots"
    );
    // The scrape's own connection is the one open HTTP connection.
    assert_eq!(after.value(CONNECTIONS_ACTIVE, &[("role", "http")]), 1.0);
    assert_eq!(after.value(TLS_HANDSHAKES_ACTIVE, &[]), 0.0);
}

fn spawn_slow_clients(set: &mut JoinSet<Outcome>, relay: &RelayProcess, tls: &TlsSettings) {
    let addr = relay.addr;
    let hello = client_hello(tls, addr);
    for _ in 0..SLOW_CLIENT_HELLOS {
        let hello = hello.clone();
        set.spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            (
                "ClientHello",
                drip(&mut tcp, &hello, DRIP_INTERVAL, CUT_OFF_LIMIT).await,
            )
        });
    }
    let headers = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nuser-agent: slow\r\n".repeat(4);
    for _ in 0..SLOW_HEADERS {
        let (tls, headers) = (tls.clone(), headers.clone());
        set.spawn(async move {
            let mut stream = tls_connect(addr, &tls).await;
            (
                "headers",
                drip(&mut stream, &headers, DRIP_INTERVAL, CUT_OFF_LIMIT).await,
            )
        });
    }
    for _ in 0..UNFINISHED_UPGRADES {
        let tls = tls.clone();
        set.spawn(async move {
            let mut stream = tls_connect(addr, &tls).await;
            stream.write_all(UNFINISHED_UPGRADE).await.unwrap();
            stream.flush().await.unwrap();
            (
                "upgrade",
                time_until_closed(&mut stream, CUT_OFF_LIMIT).await,
            )
        });
    }
    for _ in 0..SILENT_AFTER_TLS {
        let tls = tls.clone();
        set.spawn(async move {
            let mut stream = tls_connect(addr, &tls).await;
            (
                "silent",
                time_until_closed(&mut stream, CUT_OFF_LIMIT).await,
            )
        });
    }
}

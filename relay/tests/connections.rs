//! Connection handling: the connection cap, TLS handshakes, protocol
//! versions and ALPN, and certificate reload.

// Helpers fail by panicking, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric_value, start_relay};
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use sealcast_protocol::api::ErrorBody;
use sealcast_relay::{start, Config, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn fresh_client(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let relay = start_relay(limits).await;
    let pem = std::fs::read(relay.data_dir().join("dev-cert.pem")).unwrap();
    let (session, _) = relay.create_session().await;

    // The pooled HTTP connection and two WebSockets take all three slots.
    let first = relay.follow(&session, "").await;
    let _second = relay.follow(&session, "").await;

    let refused = fresh_client(&pem)
        .get(relay.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error, "unavailable");
    assert!(
        body.message.contains("connection limit"),
        "{}",
        body.message
    );
    let refused_ws = relay
        .connect("/v1/follow", &session.invite_token, None)
        .await;
    assert!(matches!(
        refused_ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 503
    ));

    let metrics = relay.metrics().await;
    let rejected = "sealcast_connections_rejected_total{reason=\"over_capacity\"}";
    assert!(metric_value(&metrics, rejected) >= 2.0);

    // Closing a WebSocket frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = fresh_client(&pem)
            .get(relay.url("/healthz"))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slot never freed after a WebSocket closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.handle.shutdown().await;
}

#[tokio::test]
async fn failed_and_slow_handshakes_are_dropped() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let relay = start_relay(limits).await;

    let mut plain = TcpStream::connect(relay.addr()).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "plain HTTP connection was not closed");
    assert!(
        !buffer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was served"
    );

    let started = Instant::now();
    let mut silent = TcpStream::connect(relay.addr()).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0u8; 16])).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "silent connection stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    let metrics = relay.metrics().await;
    let failed = "sealcast_connections_rejected_total{reason=\"tls_handshake_failed\"}";
    let timed_out = "sealcast_connections_rejected_total{reason=\"tls_handshake_timeout\"}";
    assert!(metric_value(&metrics, failed) >= 1.0);
    assert!(metric_value(&metrics, timed_out) >= 1.0);
    relay.handle.shutdown().await;
}

async fn handshake(
    addr: std::net::SocketAddr,
    pem: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (rustls::ProtocolVersion, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, connection) = tls.get_ref();
    (
        connection.protocol_version().unwrap(),
        connection.alpn_protocol().map(<[u8]>::to_vec),
    )
}

#[tokio::test]
async fn tls_versions_and_alpn() {
    let relay = start_relay(Limits::default()).await;
    let pem = std::fs::read(relay.data_dir().join("dev-cert.pem")).unwrap();

    let (version, alpn) = handshake(relay.addr(), &pem, &[&rustls::version::TLS13]).await;
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (version, _) = handshake(relay.addr(), &pem, &[&rustls::version::TLS12]).await;
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    relay.handle.shutdown().await;
}

fn write_certificate(cert_path: &Path, key_path: &Path) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(cert_path, cert.pem()).unwrap();
    std::fs::write(key_path, key.serialize_pem()).unwrap();
    cert.pem().into_bytes()
}

#[tokio::test]
async fn certificate_reload_serves_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let first_pem = write_certificate(&cert_path, &key_path);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        tls_cert: Some(cert_path.clone()),
        tls_key: Some(key_path.clone()),
        ..Config::default()
    };
    let handle = start(config).await.unwrap();
    let url = format!("https://{}/healthz", handle.local_addr());
    assert!(!handle.data_dir().join("dev-cert.pem").exists());

    let response = fresh_client(&first_pem).get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let second_pem = write_certificate(&cert_path, &key_path);
    handle.reload_tls().unwrap();
    assert!(fresh_client(&first_pem).get(&url).send().await.is_err());
    let response = fresh_client(&second_pem).get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // A broken file leaves the current certificate in place.
    std::fs::write(&key_path, "not a key").unwrap();
    assert!(handle.reload_tls().is_err());
    let response = fresh_client(&second_pem).get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    handle.shutdown().await;
}

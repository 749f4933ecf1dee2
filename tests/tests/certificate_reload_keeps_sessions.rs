//! SIGHUP makes the relay read its certificate files again. Sockets that
//! are open keep streaming across the reload, and new connections get the
//! new certificate. Files that do not form a valid pair are rejected with a
//! logged error and `sealcast_tls_reloads_total{result="failed"}` while the
//! previous certificate keeps serving: a key of another certificate,
//! garbage, and a certificate cut off halfway through. The relay has no file
//! watcher: only SIGHUP reloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use sealcast_client::TlsSettings;
use sealcast_tests::metrics::scrape;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::raw_tls::served_certificate;
use sealcast_tests::session::LiveSession;
use sealcast_tests::staff::StaffDevice;
use sealcast_tests::streaming::BackgroundStream;
use sha2::{Digest, Sha256};
use url::Url;

/// Maximum wait for the relay to count a reload.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

/// A certificate for `localhost` and 127.0.0.1 with its key, both in PEM.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn new_pair() -> Pair {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn sha256(der: &[u8]) -> Vec<u8> {
    Sha256::digest(der).to_vec()
}

/// Replaces both files, as a deployment tool would before sending SIGHUP.
fn install(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

async fn reloads(url: &Url, tls: &TlsSettings, result: &str) -> f64 {
    scrape(url, tls)
        .await
        .value("sealcast_tls_reloads_total", &[("result", result)])
}

/// Sends SIGHUP and waits until the relay counts one more reload with `result`.
async fn reload(relay: &RelayProcess, url: &Url, tls: &TlsSettings, result: &str) {
    let before = reloads(url, tls, result).await;
    relay.signal("HUP");
    let deadline = tokio::time::Instant::now() + RELOAD_LIMIT;
    while reloads(url, tls, result).await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay counted no reload with result {result} within {RELOAD_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn served_fingerprint(relay: &RelayProcess, tls: &TlsSettings) -> Vec<u8> {
    let addr = relay.addr;
    let tls = tls.clone();
    let der = tokio::task::spawn_blocking(move || served_certificate(addr, &tls))
        .await
        .unwrap();
    sha256(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_certificate_and_rejects_bad_pairs() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (first, second, third) = (new_pair(), new_pair(), new_pair());
    install(files.path(), &first.cert, &first.key);

    // Clients trust all three certificates, so that only the relay decides
    // which one a connection gets.
    let bundle = files.path().join("trusted.pem");
    std::fs::write(
        &bundle,
        format!("{}{}{}", first.cert, second.cert, third.cert),
    )
    .unwrap();
    let tls = TlsSettings::from_ca_file(&bundle).unwrap();
    let cert_path = files.path().join("cert.pem");
    let key_path = files.path().join("key.pem");
    let relay = RelayProcess::start(
        data.path(),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let url = Url::parse(&relay.base_url()).unwrap();
    assert_eq!(served_fingerprint(&relay, &tls).await, sha256(&first.der));

    let staff = StaffDevice::clinician_trusting(&relay, &bundle).await;
    let session = LiveSession::create_at(&url, &bundle, staff.authorizer()).await;
    let stream = BackgroundStream::start(&session).await;
    stream.wait_for_progress(0, "before the reload").await;

    install(files.path(), &second.cert, &second.key);
    reload(&relay, &url, &tls, "ok").await;
    assert_eq!(
        served_fingerprint(&relay, &tls).await,
        sha256(&second.der),
        "a new connection did not get the new certificate"
    );
    let seen = stream.finals_seen();
    stream.wait_for_progress(seen, "after the reload").await;

    let half = &third.cert[..third.cert.len() / 2];
    let bad_pairs = [
        (
            "a key of another certificate",
            third.cert.as_str(),
            second.key.as_str(),
        ),
        ("garbage", "not a certificate\n", "not a key\n"),
        ("a certificate cut off halfway", half, third.key.as_str()),
    ];
    for (what, cert, key) in bad_pairs {
        install(files.path(), cert, key);
        reload(&relay, &url, &tls, "failed").await;
        assert_eq!(
            served_fingerprint(&relay, &tls).await,
            sha256(&second.der),
            "after {what}, the relay stopped serving the previous certificate"
        );
        let seen = stream.finals_seen();
        stream.wait_for_progress(seen, what).await;
    }

    let output = String::from_utf8_lossy(&relay.output()).into_owned();
    let rejected = output
        .lines()
        .filter(|line| line.contains("failed to reload the TLS certificate"))
        .count();
    assert_eq!(
        rejected,
        bad_pairs.len(),
        "one logged error per rejected reload"
    );
    // Sockets opened before the first reload are still the ones streaming.
    stream.finish(&session).await;
}

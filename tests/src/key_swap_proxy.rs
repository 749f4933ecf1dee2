//! An HTTPS proxy on loopback that plays a dishonest relay towards a joining
//! device: it forwards every request to the real relay, but replaces the
//! clinician device's X25519 public key in the pairing status the joining
//! device receives with a key of its own. The pairing codes the two devices
//! compute then differ, which is what the code comparison must catch.
//!
//! It serves the relay's own development certificate, so a device that
//! trusts the relay trusts the proxy too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealcast_protocol::pairing::PairingKeyPair;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Largest request or response body the proxy forwards.
const MAX_BODY: usize = 64 * 1024;

/// A running proxy. Dropping it stops accepting connections.
pub struct KeySwapProxy {
    /// Address the proxy listens on.
    pub addr: SocketAddr,
    swapped: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl KeySwapProxy {
    /// Starts a proxy on 127.0.0.1 in front of the relay at `relay_url`,
    /// serving the certificate and key of the relay's data directory.
    pub async fn start(relay_url: &str, data_dir: &Path) -> Self {
        let acceptor = acceptor(data_dir);
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(
                    &std::fs::read(data_dir.join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap(),
                )
                .unwrap(),
            )
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let swapped = Arc::new(AtomicUsize::new(0));
        let forward = Forward {
            client,
            relay: relay_url.trim_end_matches('/').to_owned(),
            substitute: PairingKeyPair::generate().public_key(),
            swapped: swapped.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::new(forward)));
        KeySwapProxy {
            addr,
            swapped,
            task,
        }
    }

    /// Returns the proxy's base URL, with `localhost` as the certificate names it.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    /// Returns how many clinician keys the proxy has replaced.
    pub fn swapped(&self) -> usize {
        self.swapped.load(Ordering::SeqCst)
    }
}

impl Drop for KeySwapProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Forward {
    client: reqwest::Client,
    relay: String,
    substitute: [u8; 32],
    swapped: Arc<AtomicUsize>,
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, forward: Arc<Forward>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let forward = forward.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            let service = service_fn(move |request| {
                let forward = forward.clone();
                async move { Ok::<_, std::convert::Infallible>(forward.handle(request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

impl Forward {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
            .await
            .unwrap_or_default();
        let target = format!(
            "{}{}",
            self.relay,
            parts.uri.path_and_query().map_or("/", |path| path.as_str())
        );
        let mut forwarded = self.client.request(parts.method.clone(), target).body(body);
        for (name, value) in &parts.headers {
            if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
                forwarded = forwarded.header(name, value);
            }
        }
        let Ok(response) = forwarded.send().await else {
            return Response::builder().status(502).body(Body::empty()).unwrap();
        };

        let status = response.status();
        let content_type = response.headers().get(hyper::header::CONTENT_TYPE).cloned();
        let mut bytes = response.bytes().await.unwrap_or_default().to_vec();
        if parts.uri.path().starts_with("/v1/pairings/") && parts.method == hyper::Method::GET {
            bytes = self.swap_clinician_key(bytes);
        }
        let mut builder = Response::builder().status(status);
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::from(bytes)).unwrap()
    }

    /// Replaces `clinician_public` in a pairing status body, if it has one.
    fn swap_clinician_key(&self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(mut status) = serde_json::from_slice::<Value>(&bytes) else {
            return bytes;
        };
        let Some(key) = status.get_mut("clinician_public") else {
            return bytes;
        };
        *key = Value::String(URL_SAFE_NO_PAD.encode(self.substitute));
        self.swapped.fetch_add(1, Ordering::SeqCst);
        serde_json::to_vec(&status).unwrap()
    }
}

fn acceptor(data_dir: &Path) -> TlsAcceptor {
    let cert_pem = std::fs::read(data_dir.join(sealcast_relay::tls::DEV_CERT_FILE)).unwrap();
    let key_pem = std::fs::read(data_dir.join(sealcast_relay::tls::DEV_KEY_FILE)).unwrap();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

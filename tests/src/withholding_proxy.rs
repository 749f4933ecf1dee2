//! A WebSocket proxy on loopback that plays a relay withholding the tail of
//! a stream. It forwards a follower's follow socket to the real relay and
//! passes every text event and close frame on. It drops each delivered
//! frame whose sequence number is at or above a cutoff. The relay's `ended`
//! event still arrives, so the follower sees a session that ended without
//! the stream's last frames and its end frame.
//!
//! It serves the relay's own development certificate, so a device that
//! trusts the relay trusts the proxy too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealcast_client::TlsSettings;
use sealcast_protocol::api::decode_delivery;
use sealcast_protocol::FrameHeader;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

/// A running proxy. Dropping it stops accepting connections.
pub struct WithholdingProxy {
    /// Address the proxy listens on.
    pub addr: SocketAddr,
    withheld: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WithholdingProxy {
    /// Starts a proxy on 127.0.0.1 in front of the relay at `relay_url`
    /// (`https://localhost:PORT/`), serving the certificate and key of the
    /// relay's data directory. It withholds every frame with a sequence
    /// number of `cutoff_seq` or more.
    pub async fn start(relay_url: &str, data_dir: &Path, cutoff_seq: u64) -> Self {
        let acceptor = acceptor(data_dir);
        let upstream_tls =
            TlsSettings::from_ca_file(&data_dir.join(sealcast_relay::tls::DEV_CERT_FILE))
                .unwrap()
                .websocket_config()
                .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let withheld = Arc::new(AtomicUsize::new(0));
        let upstream = Upstream {
            origin: relay_url
                .trim_end_matches('/')
                .replacen("https://", "wss://", 1),
            connector: Connector::Rustls(upstream_tls),
            cutoff_seq,
            withheld: withheld.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::new(upstream)));
        WithholdingProxy {
            addr,
            withheld,
            task,
        }
    }

    /// Returns the proxy's base URL, with `localhost` as the certificate names it.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    /// Returns how many frames the proxy has withheld.
    pub fn withheld(&self) -> usize {
        self.withheld.load(Ordering::SeqCst)
    }
}

impl Drop for WithholdingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The path and credential of a follower's upgrade request.
struct Upgrade {
    path: String,
    authorization: Option<HeaderValue>,
}

struct Upstream {
    /// `wss://localhost:PORT` of the relay.
    origin: String,
    connector: Connector,
    cutoff_seq: u64,
    withheld: Arc<AtomicUsize>,
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, upstream: Arc<Upstream>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            upstream.serve(tls).await;
        });
    }
}

impl Upstream {
    /// Accepts the follower's upgrade, opens the same path on the relay
    /// with the same credential, and relays messages until either side ends.
    async fn serve(&self, tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
        let captured: Arc<Mutex<Option<Upgrade>>> = Arc::default();
        let capture = captured.clone();
        // tungstenite's handshake callback fixes the large error type.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, response: Response| {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |path| path.to_string());
            let authorization = request.headers().get("authorization").cloned();
            *capture.lock().unwrap() = Some(Upgrade {
                path,
                authorization,
            });
            Ok(response)
        };
        let Ok(follower) = tokio_tungstenite::accept_hdr_async(tls, callback).await else {
            return;
        };
        let Some(Upgrade {
            path,
            authorization,
        }) = captured.lock().unwrap().take()
        else {
            return;
        };

        let mut request = format!("{}{path}", self.origin)
            .into_client_request()
            .unwrap();
        if let Some(authorization) = authorization {
            request.headers_mut().insert("authorization", authorization);
        }
        let Ok((relay, _)) = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(self.connector.clone()),
        )
        .await
        else {
            return;
        };

        let (mut to_follower, mut from_follower) = follower.split();
        let (mut to_relay, mut from_relay) = relay.split();
        let upward = async {
            while let Some(Ok(message)) = from_follower.next().await {
                if to_relay.send(message).await.is_err() {
                    return;
                }
            }
        };
        let downward = async {
            while let Some(Ok(message)) = from_relay.next().await {
                if self.withholds(&message) {
                    self.withheld.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if to_follower.send(message).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = upward => {}
            () = downward => {}
        }
    }

    /// Returns whether `message` delivers a frame at or past the cutoff.
    fn withholds(&self, message: &Message) -> bool {
        let Message::Binary(bytes) = message else {
            return false;
        };
        decode_delivery(bytes)
            .and_then(|(_, frame)| FrameHeader::decode(frame).ok())
            .is_some_and(|header| header.seq >= self.cutoff_seq)
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
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

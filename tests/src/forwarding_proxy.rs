//! An HTTPS proxy on loopback that plays a dishonest relay. It forwards
//! every HTTP request and every WebSocket upgrade to the real relay, and a
//! [`RelayHook`] may change each response body or drop each WebSocket
//! message that the relay sends back.
//!
//! It serves the relay's own development certificate, so a device that
//! trusts the relay trusts the proxy too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sealcast_client::TlsSettings;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// Largest request or response body the proxy forwards.
const MAX_BODY: usize = 64 * 1024;

/// The changes a [`ForwardingProxy`] makes to what the relay sends back.
/// The default methods change nothing.
pub trait RelayHook: Send + Sync + 'static {
    /// Returns the body that the client receives for `request`, given the
    /// relay's response `body`.
    fn response_body(&self, request: &hyper::http::request::Parts, body: Vec<u8>) -> Vec<u8> {
        let _ = request;
        body
    }

    /// Returns whether the proxy passes `message`, which the relay sent on
    /// a WebSocket, on to the client.
    fn passes_message(&self, message: &Message) -> bool {
        let _ = message;
        true
    }
}

/// A running proxy. Dropping it stops accepting connections.
pub struct ForwardingProxy {
    /// Address the proxy listens on.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ForwardingProxy {
    /// Starts a proxy on 127.0.0.1 in front of the relay at `relay_url`
    /// (`https://localhost:PORT/`), serving the certificate and key of the
    /// relay's data directory, with `hook` applied to the relay's responses
    /// and WebSocket messages.
    pub async fn start(relay_url: &str, data_dir: &Path, hook: Arc<dyn RelayHook>) -> Self {
        let ca_file = data_dir.join(sealcast_relay::tls::DEV_CERT_FILE);
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        let websocket_tls = TlsSettings::from_ca_file(&ca_file)
            .unwrap()
            .websocket_config()
            .unwrap();
        let origin = relay_url.trim_end_matches('/').to_owned();
        let forwarder = Forwarder {
            client,
            websocket_origin: origin.replacen("https://", "wss://", 1),
            origin,
            connector: Connector::Rustls(websocket_tls),
            hook,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor(data_dir),
            Arc::new(forwarder),
        ));
        ForwardingProxy { addr, task }
    }

    /// Returns the proxy's base URL, with `localhost` as the certificate names it.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }
}

impl Drop for ForwardingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Forwarder {
    client: reqwest::Client,
    /// `https://localhost:PORT` of the relay.
    origin: String,
    /// `wss://localhost:PORT` of the relay.
    websocket_origin: String,
    connector: Connector,
    hook: Arc<dyn RelayHook>,
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, forwarder: Arc<Forwarder>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let forwarder = forwarder.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            let service = service_fn(move |request| {
                let forwarder = forwarder.clone();
                async move { Ok::<_, std::convert::Infallible>(forwarder.handle(request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}

impl Forwarder {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let upgrade = request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if upgrade {
            self.upgrade(request).await
        } else {
            self.forward(request).await
        }
    }

    /// Forwards one HTTP request and returns the relay's status, content
    /// type and body, which the hook may change. Other response headers,
    /// such as `Set-Cookie`, are not passed on.
    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
            .await
            .unwrap_or_default();
        let target = format!("{}{}", self.origin, path_and_query(&parts.uri));
        let mut forwarded = self.client.request(parts.method.clone(), target).body(body);
        for (name, value) in &parts.headers {
            if name != header::HOST && name != header::CONTENT_LENGTH {
                forwarded = forwarded.header(name, value);
            }
        }
        let Ok(response) = forwarded.send().await else {
            return status_only(StatusCode::BAD_GATEWAY);
        };

        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response.bytes().await.unwrap_or_default().to_vec();
        let bytes = self.hook.response_body(&parts, bytes);
        let mut builder = Response::builder().status(status);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::from(bytes)).unwrap()
    }

    /// Opens the same path on the relay with the same `Authorization`
    /// header, then accepts the client's upgrade and relays messages until
    /// either side ends. A relay that rejects the upgrade has its status
    /// and body passed on.
    async fn upgrade(self: Arc<Self>, mut request: Request<Incoming>) -> Response<Body> {
        let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return status_only(StatusCode::BAD_REQUEST);
        };
        let accept = derive_accept_key(key.as_bytes());
        let target = format!("{}{}", self.websocket_origin, path_and_query(request.uri()));
        let mut upstream = target.into_client_request().unwrap();
        if let Some(authorization) = request.headers().get(header::AUTHORIZATION) {
            upstream
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        let relay = match tokio_tungstenite::connect_async_tls_with_config(
            upstream,
            None,
            false,
            Some(self.connector.clone()),
        )
        .await
        {
            Ok((relay, _)) => relay,
            Err(WsError::Http(rejection)) => {
                let (parts, body) = rejection.into_parts();
                let mut response = Response::new(Body::from(body.unwrap_or_default()));
                *response.status_mut() = parts.status;
                return response;
            }
            Err(_) => return status_only(StatusCode::BAD_GATEWAY),
        };

        let on_upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let client =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            self.relay_messages(client, relay).await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
            .header(header::UPGRADE, HeaderValue::from_static("websocket"))
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .unwrap()
    }

    async fn relay_messages(
        &self,
        client: WebSocketStream<TokioIo<Upgraded>>,
        relay: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ) {
        let (mut to_client, mut from_client) = client.split();
        let (mut to_relay, mut from_relay) = relay.split();
        let upward = async {
            while let Some(Ok(message)) = from_client.next().await {
                if to_relay.send(message).await.is_err() {
                    return;
                }
            }
        };
        let downward = async {
            while let Some(Ok(message)) = from_relay.next().await {
                if !self.hook.passes_message(&message) {
                    continue;
                }
                if to_client.send(message).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            () = upward => {}
            () = downward => {}
        }
    }
}

fn path_and_query(uri: &hyper::Uri) -> &str {
    uri.path_and_query().map_or("/", |path| path.as_str())
}

fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap()
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
    // The proxy speaks HTTP/1.1 only, which WebSocket upgrades need.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

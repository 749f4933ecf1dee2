//! Opening WebSockets to the relay under test from several loopback source
//! addresses, over TLS or, for the null relay, plain TCP.
//!
//! Linux gives each local address its own range of ephemeral ports (32768
//! to 60999 by default), so one source address caps the connections to one
//! relay port at about 28,000. Connections to a loopback relay therefore
//! take their source address in turn from 127.0.0.2, 127.0.0.3 and so on.

use sealcast_client::auth::Authorizer;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

/// A WebSocket to the relay under test.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Maximum time for TCP connect, TLS handshake and WebSocket upgrade together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest message accepted from the relay: a delivery of the largest frame
/// is 65,648 bytes.
const MAX_MESSAGE: usize = 1 << 17;

/// Failure of a connection attempt, with a short kind for the error counts.
#[derive(Debug)]
pub struct ConnectFailure {
    /// Short kind, for example `tcp connect` or `http 401`.
    pub kind: String,
    /// Full description.
    pub detail: String,
}

/// Opens connections to one relay address.
#[derive(Debug)]
pub struct Dialer {
    relay_addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Dialer {
    /// Creates a dialer for `relay_addr`. `tls` is `None` for a plain-TCP
    /// relay. With a loopback IPv4 relay and `source_addrs > 0`, connections
    /// bind to 127.0.0.2 up to 127.0.0.(1 + `source_addrs`) in turn.
    pub fn new(
        relay_addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        source_addrs: u8,
    ) -> Dialer {
        let sources = match relay_addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (0..source_addrs)
                .map(|offset| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + offset)))
                .collect(),
            _ => Vec::new(),
        };
        Dialer {
            relay_addr,
            tls,
            sources,
            next_source: AtomicUsize::new(0),
        }
    }

    /// Opens a WebSocket to `url` with the headers of `auth`.
    pub async fn open(&self, url: &Url, auth: &dyn Authorizer) -> Result<Socket, ConnectFailure> {
        let attempt = self.open_unbounded(url, auth);
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectFailure {
                kind: "connect timeout".into(),
                detail: format!("no WebSocket within {} s", CONNECT_TIMEOUT.as_secs()),
            }),
        }
    }

    async fn open_unbounded(
        &self,
        url: &Url,
        auth: &dyn Authorizer,
    ) -> Result<Socket, ConnectFailure> {
        let request = authorized_request(url, auth)?;
        let tcp = self.connect_tcp().await?;
        let connector = match &self.tls {
            Some(config) => Connector::Rustls(Arc::clone(config)),
            None => Connector::Plain,
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (socket, _response) = tokio_tungstenite::client_async_tls_with_config(
            request,
            tcp,
            Some(config),
            Some(connector),
        )
        .await
        .map_err(classify)?;
        Ok(socket)
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ConnectFailure> {
        let failure = |err: std::io::Error| ConnectFailure {
            kind: "tcp connect".into(),
            detail: format!("failed to connect to {}: {err}", self.relay_addr),
        };
        let socket = match self.relay_addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(failure)?;

        if !self.sources.is_empty() {
            let turn = self.next_source.fetch_add(1, Ordering::Relaxed);
            let source = self.sources[turn % self.sources.len()];
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|err| ConnectFailure {
                    kind: "tcp bind".into(),
                    detail: format!("failed to bind source address {source}: {err}"),
                })?;
        }
        let stream = socket.connect(self.relay_addr).await.map_err(failure)?;
        // Frames are small and latency-sensitive, as on real devices.
        stream.set_nodelay(true).map_err(failure)?;
        Ok(stream)
    }
}

/// One dialer for each relay node that followers connect to. Followers
/// take the nodes in turn, so that each node gets an equal share.
#[derive(Debug)]
pub struct NodeDialers {
    nodes: Vec<(Url, Dialer)>,
}

impl NodeDialers {
    /// Creates a dialer for each node, given by its base URL and address.
    /// `tls` and `source_addrs` are as for [`Dialer::new`].
    pub fn new(
        nodes: Vec<(Url, SocketAddr)>,
        tls: Option<Arc<rustls::ClientConfig>>,
        source_addrs: u8,
    ) -> NodeDialers {
        assert!(!nodes.is_empty(), "followers need at least one relay node");
        let nodes = nodes
            .into_iter()
            .map(|(base_url, addr)| (base_url, Dialer::new(addr, tls.clone(), source_addrs)))
            .collect();
        NodeDialers { nodes }
    }

    /// Returns the turn of follower `number` of clinic `clinic`, with
    /// `per_clinic` followers in each clinic, for [`Self::node`]. Every
    /// process computes it alike, so a follower's node does not depend on
    /// the process that opens it.
    pub fn turn(clinic: usize, number: usize, per_clinic: usize) -> usize {
        clinic * per_clinic + number
    }

    /// Returns the base URL and the dialer of the node for turn `turn`.
    pub fn node(&self, turn: usize) -> (&Url, &Dialer) {
        let (base_url, dialer) = &self.nodes[turn % self.nodes.len()];
        (base_url, dialer)
    }
}

fn authorized_request(
    url: &Url,
    auth: &dyn Authorizer,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ConnectFailure> {
    let invalid = |detail: String| ConnectFailure {
        kind: "invalid request".into(),
        detail,
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|err| invalid(format!("invalid WebSocket URL {url}: {err}")))?;
    let headers = auth
        .headers("GET", url.as_str())
        .map_err(|err| invalid(format!("failed to make the credential headers: {err}")))?;
    for (name, value) in headers {
        request.headers_mut().insert(name, value);
    }
    Ok(request)
}

fn classify(err: WsError) -> ConnectFailure {
    let (kind, detail) = match &err {
        WsError::Http(response) => (
            format!("http {}", response.status().as_u16()),
            format!(
                "the relay refused the upgrade with HTTP {}",
                response.status()
            ),
        ),
        WsError::Tls(tls) => ("tls".into(), tls.to_string()),
        WsError::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            ("tls".into(), io.to_string())
        }
        WsError::Io(io) => ("io".into(), io.to_string()),
        other => ("websocket".into(), other.to_string()),
    };
    ConnectFailure { kind, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> (Url, SocketAddr) {
        let url = Url::parse(&format!("https://localhost:{port}/")).unwrap();
        (url, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn followers_take_nodes_in_turn() {
        let dialers = NodeDialers::new(vec![node(8444), node(8445)], None, 0);
        let ports: Vec<u16> = (0..3)
            .flat_map(|clinic| (0..2).map(move |number| NodeDialers::turn(clinic, number, 2)))
            .map(|turn| dialers.node(turn).0.port().unwrap())
            .collect();
        assert_eq!(ports, [8444, 8445, 8444, 8445, 8444, 8445]);
    }

    #[test]
    fn one_node_takes_every_follower() {
        let dialers = NodeDialers::new(vec![node(8443)], None, 0);
        for turn in [0, 1, 7] {
            assert_eq!(dialers.node(turn).0.port(), Some(8443));
        }
    }
}

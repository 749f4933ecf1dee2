//! Several relay nodes on one data directory that fan frames out to each
//! other through a NATS server of the test's own, behind a [`LoadBalancer`],
//! as a clustered relay runs.
//!
//! Every node gets `--fanout nats`, the cluster's NATS URL, and the balancer's
//! URL as `--public-url`: staff devices' DPoP proofs name the public URL,
//! and every node checks them against its own setting. Devices reach the
//! cluster through [`Cluster::public_url`], or one node directly through
//! [`Cluster::node_url`]. Followers present their invite token as a bearer
//! credential, which names no URL, so they can follow on any node. Staff
//! devices that talk to one node directly make their proofs for the public
//! URL with [`Cluster::node_authorizer`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::auth::{AuthHeaders, Authorizer};
use sealcast_client::ClientError;
use tempfile::TempDir;
use url::Url;

use crate::balancer::LoadBalancer;
use crate::metrics::{self, Scrape};
use crate::nats::NatsServer;
use crate::process::RelayProcess;

/// Lines of each node's output printed when a test fails with a cluster running.
const LOG_TAIL_LINES: usize = 60;

/// Relay nodes sharing one data directory and one NATS server.
pub struct Cluster {
    // Declared first so that the nodes stop before the directory is removed
    // and before the NATS server stops.
    nodes: Vec<RelayProcess>,
    balancer: LoadBalancer,
    public_url: Url,
    data_dir: TempDir,
    database_url: Option<String>,
    nats: NatsServer,
}

impl Cluster {
    /// Starts a NATS server on a free port and `count` nodes on a new
    /// temporary data directory, each with `--fanout nats`, that server's
    /// URL and an ops listener, behind a new load balancer. The nodes start
    /// one after another, so the first creates the keys and the development
    /// certificate in the data directory.
    pub fn start(count: usize) -> Self {
        Cluster::start_with_database(count, None)
    }

    /// Starts a cluster as [`Cluster::start`] does, with the nodes' store in
    /// the PostgreSQL database at `database_url` when it is given.
    pub fn start_with_database(count: usize, database_url: Option<String>) -> Self {
        assert!(count > 0, "a cluster needs at least one node");
        let nats = NatsServer::start_on_free_port();
        let nats_url = nats.url();
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let balancer = LoadBalancer::start();
        // The relay trims a trailing slash from its public URL.
        let public = format!("https://localhost:{}", balancer.addr().port());
        let public_url = Url::parse(&public).expect("public URL parses");
        let args = [
            "--fanout",
            "nats",
            "--nats-url",
            &nats_url,
            "--public-url",
            &public,
            "--ops-listen",
            "127.0.0.1:0",
        ];
        if let Some(url) = &database_url {
            crate::database::assign_database(data_dir.path(), url);
        }
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            // RelayProcess::start returns once the node prints its listening line.
            let node = RelayProcess::start(data_dir.path(), "127.0.0.1:0", &args);
            balancer.add_node(node.addr);
            nodes.push(node);
        }
        Cluster {
            nodes,
            balancer,
            public_url,
            data_dir,
            database_url,
            nats,
        }
    }

    /// Returns the NATS server, which a test stops and starts again to
    /// simulate an outage.
    pub fn nats_mut(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    /// Returns the public URL, `https://localhost:PORT/`, which reaches the
    /// load balancer.
    pub fn public_url(&self) -> Url {
        self.public_url.clone()
    }

    /// Returns the URL that reaches node `node` directly.
    pub fn node_url(&self, node: usize) -> Url {
        Url::parse(&self.nodes[node].base_url()).expect("node URL parses")
    }

    /// Returns the process of node `node`.
    pub fn node(&self, node: usize) -> &RelayProcess {
        &self.nodes[node]
    }

    /// Returns the number of nodes, killed ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Checks whether the cluster has no nodes, which [`Cluster::start`] rejects.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Returns the load balancer in front of the nodes.
    pub fn balancer(&self) -> &LoadBalancer {
        &self.balancer
    }

    /// Returns the shared data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Returns the URL of the PostgreSQL database the nodes were given,
    /// `None` when their store is the data directory's own.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Returns the development certificate that every node serves.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.path().join("dev-cert.pem")
    }

    /// Kills node `node` with SIGKILL, as a crash of its machine would. The
    /// load balancer is not told: it skips the node once connecting fails.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Stops every running node with SIGTERM and returns, for each node that
    /// was still running, its index and whether it exited successfully.
    pub fn terminate(&mut self) -> Vec<(usize, bool)> {
        let mut statuses = Vec::new();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            if node.is_running() {
                statuses.push((index, node.terminate().success()));
            }
        }
        statuses
    }

    /// Returns the address of node `node`'s `/healthz`, `/readyz` and
    /// `/metrics` listener.
    pub fn ops_addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].ops_addr()
    }

    /// Returns the HTTP status of node `node`'s `GET /readyz`, or `None`
    /// when the node did not answer within 2 s.
    pub async fn readyz(&self, node: usize) -> Option<u16> {
        let url = format!("http://{}/readyz", self.ops_addr(node));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client builds");
        match client.get(&url).send().await {
            Ok(response) => Some(response.status().as_u16()),
            Err(err) => {
                eprintln!("GET {url} failed: {err}");
                None
            }
        }
    }

    /// Polls node `node`'s `/readyz` every 100 ms until it returns `status`,
    /// and panics with the last status seen when `limit` passes first.
    pub async fn wait_for_readyz(&self, node: usize, status: u16, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = self.readyz(node).await;
            if seen == Some(status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node}'s /readyz returned {seen:?}, not {status}, for {} ms",
                limit.as_millis()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fetches node `node`'s `GET /metrics` from its ops listener.
    pub async fn metrics(&self, node: usize) -> Scrape {
        let url = format!("http://{}/metrics", self.ops_addr(node));
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|err| panic!("GET {url} failed: {err}"));
        assert_eq!(response.status().as_u16(), 200, "GET {url} failed");
        let text = response.text().await.expect("metrics body is text");
        metrics::parse(&text)
    }

    /// Wraps the credentials `auth` of a staff device that talks to node
    /// `node` directly, so that its DPoP proofs name the public URL.
    pub fn node_authorizer(&self, node: usize, auth: Arc<dyn Authorizer>) -> Arc<dyn Authorizer> {
        Arc::new(PublicUrlProofs {
            inner: auth,
            node: self.node_url(node),
            public: self.public_url.clone(),
        })
    }

    /// Prints the last lines of every node's output and the balancer's counts.
    pub fn print_logs(&self) {
        eprintln!("load balancer: {}", self.balancer.summary());
        for (index, node) in self.nodes.iter().enumerate() {
            let output = String::from_utf8_lossy(&node.output()).into_owned();
            let lines: Vec<&str> = output.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!(
                "---- node {index} ({}), last {} lines ----\n{}",
                node.addr,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
    }
}

/// Credentials of a device that reaches one node at the node's own
/// address, as if the public host name resolved to that node. Nodes check
/// DPoP proofs against the public URL, so the proofs name the public host
/// and port in place of the node's, for `https` and `wss` URLs alike.
#[derive(Debug)]
struct PublicUrlProofs {
    inner: Arc<dyn Authorizer>,
    /// The node's base URL, `https://localhost:NODE_PORT/`.
    node: Url,
    /// The public base URL, `https://localhost:PUBLIC_PORT/`.
    public: Url,
}

impl PublicUrlProofs {
    /// Returns `url` with the public host and port when it names the node.
    fn public_form(&self, url: &str) -> Option<String> {
        let mut parsed = Url::parse(url).ok()?;
        let names_node = parsed.host_str() == self.node.host_str()
            && parsed.port_or_known_default() == self.node.port_or_known_default();
        if !names_node {
            return None;
        }
        parsed.set_host(self.public.host_str()).ok()?;
        parsed.set_port(self.public.port()).ok()?;
        Some(parsed.to_string())
    }
}

impl Authorizer for PublicUrlProofs {
    fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, ClientError> {
        match self.public_form(url) {
            Some(public) => self.inner.headers(method, &public),
            None => self.inner.headers(method, url),
        }
    }
}

//! A TCP load balancer on 127.0.0.1 in front of relay nodes, so that a
//! device reaches a cluster through one address, as behind a real one.
//!
//! It passes bytes through without terminating TLS. Each new connection
//! goes to the next node in round-robin order, and a node that refuses the
//! connection or does not accept it within 2 s is skipped for the next one,
//! so a killed node drops out without being marked. Tests can narrow the
//! nodes that take new connections with [`LoadBalancer::route_to`] to put a
//! device on a chosen node. The balancer runs on a thread and runtime of
//! its own, so it keeps forwarding while the test blocks its own threads.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Maximum wait for a node to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A running load balancer. Dropping it closes the listener and every
/// forwarded connection.
pub struct LoadBalancer {
    addr: SocketAddr,
    state: Arc<Mutex<Routing>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The nodes, which of them take new connections, and counts per node.
#[derive(Debug, Default)]
struct Routing {
    nodes: Vec<Node>,
    /// Indexes of the nodes that take new connections; `None` means all.
    routes: Option<Vec<usize>>,
    /// Round-robin position.
    next: usize,
}

#[derive(Debug)]
struct Node {
    addr: SocketAddr,
    /// Connections forwarded to the node.
    forwarded: usize,
    /// Connection attempts the node refused or did not accept in time.
    failed: usize,
}

impl LoadBalancer {
    /// Listens on a free port of 127.0.0.1, with no nodes yet.
    pub fn start() -> Self {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        listener
            .set_nonblocking(true)
            .expect("the listener becomes non-blocking");
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(Mutex::new(Routing::default()));
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = thread::Builder::new()
            .name("load-balancer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the load balancer's runtime starts");
                // Dropping the runtime at the end of this thread cancels
                // every forwarding task, which closes its two sockets.
                runtime.block_on(serve(listener, shared, stopped));
            })
            .expect("the load balancer's thread starts");
        LoadBalancer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Returns the address devices connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a node at `addr` to the rotation and returns its index, which
    /// counts from 0 in the order nodes were added.
    pub fn add_node(&self, addr: SocketAddr) -> usize {
        let mut routing = lock(&self.state);
        routing.nodes.push(Node {
            addr,
            forwarded: 0,
            failed: 0,
        });
        routing.nodes.len() - 1
    }

    /// Sends new connections only to `nodes`, in round-robin order, still
    /// skipping one that refuses. Open connections stay where they are.
    pub fn route_to(&self, nodes: &[usize]) {
        let mut routing = lock(&self.state);
        for &node in nodes {
            assert!(node < routing.nodes.len(), "no node {node}");
        }
        routing.routes = Some(nodes.to_vec());
        routing.next = 0;
    }

    /// Sends new connections to every node again.
    pub fn route_to_all(&self) {
        lock(&self.state).routes = None;
    }

    /// Returns the number of connections forwarded to `node` so far.
    pub fn forwarded_to(&self, node: usize) -> usize {
        lock(&self.state).nodes[node].forwarded
    }

    /// Returns the number of connection attempts `node` refused or did not
    /// accept in time.
    pub fn failed_at(&self, node: usize) -> usize {
        lock(&self.state).nodes[node].failed
    }

    /// Describes the forwarded and failed connections of every node.
    pub fn summary(&self) -> String {
        lock(&self.state)
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                format!(
                    "node {index} ({}): {} forwarded, {} failed",
                    node.addr, node.forwarded, node.failed
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Routing {
    /// Returns the nodes to try for one new connection, in order, and
    /// advances the round-robin position.
    fn candidates(&mut self) -> Vec<(usize, SocketAddr)> {
        let eligible: Vec<usize> = match &self.routes {
            Some(routes) => routes.clone(),
            None => (0..self.nodes.len()).collect(),
        };
        if eligible.is_empty() {
            return Vec::new();
        }
        let start = self.next % eligible.len();
        self.next = self.next.wrapping_add(1);
        (0..eligible.len())
            .map(|step| eligible[(start + step) % eligible.len()])
            .map(|node| (node, self.nodes[node].addr))
            .collect()
    }
}

fn lock(state: &Mutex<Routing>) -> MutexGuard<'_, Routing> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(
    listener: StdTcpListener,
    state: Arc<Mutex<Routing>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("the listener joins the runtime");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(forward(client, Arc::clone(&state)));
                }
                Err(err) => {
                    eprintln!("load balancer: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Connects `client` to the first candidate node that accepts, and copies
/// bytes both ways until either side closes.
async fn forward(mut client: TcpStream, state: Arc<Mutex<Routing>>) {
    let candidates = lock(&state).candidates();
    for (node, addr) in candidates {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(mut upstream)) => {
                lock(&state).nodes[node].forwarded += 1;
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                // An error here is a node or device that went away, which
                // ends this connection only.
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            Ok(Err(err)) => {
                eprintln!("load balancer: node {node} at {addr} refused a connection: {err}");
                lock(&state).nodes[node].failed += 1;
            }
            Err(_) => {
                eprintln!(
                    "load balancer: node {node} at {addr} did not accept within {} s",
                    CONNECT_TIMEOUT.as_secs()
                );
                lock(&state).nodes[node].failed += 1;
            }
        }
    }
    eprintln!("load balancer: no node accepted the connection, closing it");
}

//! A TCP relay between a client and the relay that can turn into a black
//! hole: after [`Blackhole::swallow`], the connections open at that moment
//! keep their sockets but carry nothing in either direction, as when a
//! network drops a peer's packets without telling either end. Connections
//! made afterwards pass through normally, so a client that notices the
//! silence can reconnect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A listening black-hole relay on loopback. Dropping it stops it and
/// closes every connection.
pub struct Blackhole {
    /// Address clients connect to.
    pub addr: SocketAddr,
    generation: watch::Sender<u64>,
    counts: Arc<Counts>,
    accepting: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    swallowed: AtomicUsize,
    closed_by_target: AtomicUsize,
}

impl Blackhole {
    /// Listens on an ephemeral loopback port and passes each connection
    /// through to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the black hole binds to loopback");
        let addr = listener.local_addr().expect("the listener has an address");
        let (generation, _) = watch::channel(0u64);
        let counts = Arc::new(Counts::default());
        let accepting = tokio::spawn(accept(
            listener,
            target,
            generation.clone(),
            Arc::clone(&counts),
        ));
        Blackhole {
            addr,
            generation,
            counts,
            accepting,
        }
    }

    /// Silences every connection open now, in both directions, without
    /// closing any of them.
    pub fn swallow(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Silenced connections whose target side has since closed its socket.
    pub fn closed_by_target(&self) -> usize {
        self.counts.closed_by_target.load(Ordering::Relaxed)
    }

    /// Connections silenced so far.
    pub fn swallowed(&self) -> usize {
        self.counts.swallowed.load(Ordering::Relaxed)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    generation: watch::Sender<u64>,
    counts: Arc<Counts>,
) {
    let mut connections = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(upstream) = TcpStream::connect(target).await else {
            continue;
        };
        let mut silenced = generation.subscribe();
        silenced.mark_unchanged();
        connections.spawn(carry(client, upstream, silenced, Arc::clone(&counts)));
    }
}

/// Copies bytes both ways until either side closes or the connection is
/// silenced. A silenced connection reads and discards whatever arrives from
/// either side, so that it notices when the target closes its side, and
/// passes on nothing, not even a close, as a network that drops packets
/// would. It ends once both sides have closed.
async fn carry(
    client: TcpStream,
    upstream: TcpStream,
    mut silenced: watch::Receiver<u64>,
    counts: Arc<Counts>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut target_read, mut target_write) = upstream.into_split();
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_target = vec![0u8; 16 * 1024];
    let mut silent = false;
    let mut target_open = true;
    let mut client_open = true;
    loop {
        tokio::select! {
            read = client_read.read(&mut from_client), if client_open => match read {
                Ok(0) | Err(_) => {
                    if !silent {
                        let _ = target_write.shutdown().await;
                        return;
                    }
                    // The client's close is lost like everything else; the
                    // target must find out on its own.
                    client_open = false;
                }
                Ok(read) => {
                    if !silent && target_write.write_all(&from_client[..read]).await.is_err() {
                        return;
                    }
                }
            },
            read = target_read.read(&mut from_target), if target_open => match read {
                Ok(0) | Err(_) => {
                    if !silent {
                        let _ = client_write.shutdown().await;
                        return;
                    }
                    counts.closed_by_target.fetch_add(1, Ordering::Relaxed);
                    target_open = false;
                    if !client_open {
                        return;
                    }
                }
                Ok(read) => {
                    if !silent && client_write.write_all(&from_target[..read]).await.is_err() {
                        return;
                    }
                }
            },
            changed = silenced.changed(), if !silent => {
                if changed.is_err() {
                    return;
                }
                silent = true;
                counts.swallowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

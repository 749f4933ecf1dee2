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
use std::sync::Arc;

use sealcast_protocol::api::decode_delivery;
use sealcast_protocol::FrameHeader;
use tokio_tungstenite::tungstenite::Message;

use crate::forwarding_proxy::{ForwardingProxy, RelayHook};

/// A running proxy. Dropping it stops accepting connections.
pub struct WithholdingProxy {
    /// Address the proxy listens on.
    pub addr: SocketAddr,
    withheld: Arc<AtomicUsize>,
    proxy: ForwardingProxy,
}

impl WithholdingProxy {
    /// Starts a proxy on 127.0.0.1 in front of the relay at `relay_url`
    /// (`https://localhost:PORT/`), serving the certificate and key of the
    /// relay's data directory. It withholds every frame with a sequence
    /// number of `cutoff_seq` or more.
    pub async fn start(relay_url: &str, data_dir: &Path, cutoff_seq: u64) -> Self {
        let withheld = Arc::new(AtomicUsize::new(0));
        let hook = Withhold {
            cutoff_seq,
            withheld: withheld.clone(),
        };
        let proxy = ForwardingProxy::start(relay_url, data_dir, Arc::new(hook)).await;
        WithholdingProxy {
            addr: proxy.addr,
            withheld,
            proxy,
        }
    }

    /// Returns the proxy's base URL, with `localhost` as the certificate names it.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Returns how many frames the proxy has withheld.
    pub fn withheld(&self) -> usize {
        self.withheld.load(Ordering::SeqCst)
    }
}

struct Withhold {
    cutoff_seq: u64,
    withheld: Arc<AtomicUsize>,
}

impl RelayHook for Withhold {
    fn passes_message(&self, message: &Message) -> bool {
        if self.withholds(message) {
            self.withheld.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

impl Withhold {
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

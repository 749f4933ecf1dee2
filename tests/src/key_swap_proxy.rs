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

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::pairing::PairingKeyPair;
use serde_json::Value;

use crate::forwarding_proxy::{ForwardingProxy, RelayHook};

/// A running proxy. Dropping it stops accepting connections.
pub struct KeySwapProxy {
    /// Address the proxy listens on.
    pub addr: SocketAddr,
    swapped: Arc<AtomicUsize>,
    proxy: ForwardingProxy,
}

impl KeySwapProxy {
    /// Starts a proxy on 127.0.0.1 in front of the relay at `relay_url`,
    /// serving the certificate and key of the relay's data directory.
    pub async fn start(relay_url: &str, data_dir: &Path) -> Self {
        let swapped = Arc::new(AtomicUsize::new(0));
        let hook = KeySwap {
            substitute: PairingKeyPair::generate().public_key(),
            swapped: swapped.clone(),
        };
        let proxy = ForwardingProxy::start(relay_url, data_dir, Arc::new(hook)).await;
        KeySwapProxy {
            addr: proxy.addr,
            swapped,
            proxy,
        }
    }

    /// Returns the proxy's base URL, with `localhost` as the certificate names it.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// Returns how many clinician keys the proxy has replaced.
    pub fn swapped(&self) -> usize {
        self.swapped.load(Ordering::SeqCst)
    }
}

struct KeySwap {
    substitute: [u8; 32],
    swapped: Arc<AtomicUsize>,
}

impl RelayHook for KeySwap {
    fn response_body(&self, request: &hyper::http::request::Parts, body: Vec<u8>) -> Vec<u8> {
        if request.uri.path().starts_with("/v1/pairings/") && request.method == hyper::Method::GET {
            self.swap_clinician_key(body)
        } else {
            body
        }
    }
}

impl KeySwap {
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

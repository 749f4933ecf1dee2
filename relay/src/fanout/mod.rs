//! Fan-out of frames between relay nodes.
//!
//! With `fanout = "local"` a frame reaches only the followers connected to
//! the node that accepted it. With `fanout = "nats"` several nodes share one
//! store. Each node publishes four kinds of message on a per-session NATS
//! subject: every frame it commits, every session end, every publisher
//! that attaches to a session, and every paired device removed from a
//! session. The other nodes deliver those frames to
//! their own followers in offset order.
//!
//! The store stays the source of truth. A node reads the frames it lacks
//! from the store when it finds a gap, subscribes to a session or
//! reconnects to NATS. A lost NATS message therefore delays a frame but
//! does not lose it.
//!
//! | module | contents |
//! | --- | --- |
//! | [`message`] | subjects, headers and payloads of the messages between nodes |
//! | [`nats`] | the NATS connection, the outbox of published messages and the per-session feeds |

mod message;
mod nats;

use std::sync::Arc;

use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::SessionId;

use crate::at_rest::DataKeys;
use crate::config::FanoutConfig;
use crate::error::RelayError;
use crate::hub::HubFrame;
use crate::shutdown::Shutdown;
pub(crate) use nats::NatsFanout;

/// This node's link to the other nodes, cheap to clone.
#[derive(Clone, Default)]
pub(crate) enum Fanout {
    /// A single node.
    #[default]
    Local,
    /// Nodes connected through NATS.
    Nats(Arc<NatsFanout>),
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fanout::Local => f.write_str("Fanout::Local"),
            Fanout::Nats(nats) => write!(f, "Fanout::Nats(node {})", nats.node_id()),
        }
    }
}

impl Fanout {
    /// Connects to NATS when the configuration selects it. The connection
    /// is made in the background and retried with backoff, so a node starts
    /// while NATS is down and reports not ready until it connects.
    pub(crate) async fn start(
        config: &FanoutConfig,
        keys: &DataKeys,
        shutdown: &Shutdown,
    ) -> Result<Fanout, RelayError> {
        Ok(match config {
            FanoutConfig::Local => Fanout::Local,
            FanoutConfig::Nats { url } => {
                let key = keys.fanout_mac_key();
                Fanout::Nats(NatsFanout::start(url, key, shutdown).await?)
            }
        })
    }

    /// Announces a committed frame to the other nodes. Never blocks: it is
    /// called on the store's writer thread.
    pub(crate) fn frame_committed(&self, session_id: SessionId, frame: &Arc<HubFrame>) {
        if let Fanout::Nats(nats) = self {
            nats.frame_committed(session_id, frame);
        }
    }

    /// Announces a committed session end. Never blocks.
    pub(crate) fn session_ended(&self, session_id: SessionId, end_offset: u64) {
        if let Fanout::Nats(nats) = self {
            nats.session_ended(session_id, end_offset);
        }
    }

    /// Tells the other nodes that a publisher attached to the session here
    /// at `attached_at` (Unix milliseconds), so that they close a publish
    /// socket of the session that attached there before it.
    pub(crate) fn publisher_attached(&self, session_id: SessionId, attached_at: i64) {
        if let Fanout::Nats(nats) = self {
            nats.publisher_attached(session_id, attached_at);
        }
    }

    /// Tells the other nodes that the paired device `device_id` was removed
    /// from the session, so that they close its follow sockets. Never blocks.
    pub(crate) fn paired_device_removed(&self, session_id: SessionId, device_id: DeviceId) {
        if let Fanout::Nats(nats) = self {
            nats.paired_device_removed(session_id, device_id);
        }
    }

    /// Returns why the node cannot serve other nodes' followers now, if it cannot.
    pub(crate) fn unready_reason(&self) -> Option<&'static str> {
        match self {
            Fanout::Local => None,
            Fanout::Nats(nats) => (!nats.is_connected()).then_some("NATS is not connected"),
        }
    }
}

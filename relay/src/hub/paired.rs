//! Open follow sockets of paired patient devices, so that removing a
//! device closes the sockets it already has open, on this node and, through
//! fan-out, on the other nodes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sealcast_protocol::paired_keys::DeviceId;
use tokio_util::sync::CancellationToken;

use super::session::SessionHub;

/// The paired devices' follow sockets on one session hub.
#[derive(Debug, Default)]
pub(super) struct PairedSockets {
    inner: Mutex<PairedSocketsInner>,
}

#[derive(Debug, Default)]
struct PairedSocketsInner {
    next_id: u64,
    sockets: Vec<(u64, DeviceId, CancellationToken)>,
}

impl PairedSockets {
    fn lock(&self) -> MutexGuard<'_, PairedSocketsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, device_id: DeviceId) -> (u64, CancellationToken) {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let removed = CancellationToken::new();
        inner.sockets.push((id, device_id, removed.clone()));
        (id, removed)
    }

    fn unregister(&self, id: u64) {
        self.lock().sockets.retain(|(socket, _, _)| *socket != id);
    }

    /// Cancels and forgets every socket of `device_id`. Returns how many there were.
    fn close_device(&self, device_id: DeviceId) -> usize {
        let mut inner = self.lock();
        let before = inner.sockets.len();
        inner.sockets.retain(|(_, device, removed)| {
            if *device == device_id {
                removed.cancel();
                false
            } else {
                true
            }
        });
        before - inner.sockets.len()
    }
}

/// A paired device's follow socket in its hub's registry. Dropping it
/// removes the socket from the registry.
pub(crate) struct PairedSocket {
    hub: Arc<SessionHub>,
    id: u64,
    removed: CancellationToken,
}

impl PairedSocket {
    /// Returns the token cancelled when the device is removed from the session.
    pub(crate) fn removed(&self) -> &CancellationToken {
        &self.removed
    }
}

impl Drop for PairedSocket {
    fn drop(&mut self) {
        self.hub.paired_sockets().unregister(self.id);
    }
}

impl SessionHub {
    /// Registers a follow socket of the paired device `device_id`.
    pub(crate) fn register_paired_socket(self: &Arc<Self>, device_id: DeviceId) -> PairedSocket {
        let (id, removed) = self.paired_sockets().register(device_id);
        PairedSocket {
            hub: Arc::clone(self),
            id,
            removed,
        }
    }

    /// Closes every follow socket of the paired device `device_id` on this
    /// node. Returns how many were open.
    pub(crate) fn close_paired_device(&self, device_id: DeviceId) -> usize {
        self.paired_sockets().close_device(device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_device_cancels_only_its_sockets() {
        let sockets = PairedSockets::default();
        let removed_device = DeviceId([1; 8]);
        let other_device = DeviceId([2; 8]);
        let (_, first) = sockets.register(removed_device);
        let (_, second) = sockets.register(removed_device);
        let (_, other) = sockets.register(other_device);

        assert_eq!(sockets.close_device(removed_device), 2);
        assert!(first.is_cancelled());
        assert!(second.is_cancelled());
        assert!(!other.is_cancelled());
        assert_eq!(sockets.close_device(removed_device), 0);
    }

    #[test]
    fn unregistered_socket_is_not_closed() {
        let sockets = PairedSockets::default();
        let device = DeviceId([3; 8]);
        let (id, token) = sockets.register(device);
        sockets.unregister(id);

        assert_eq!(sockets.close_device(device), 0);
        assert!(!token.is_cancelled());
    }
}

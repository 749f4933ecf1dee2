//! Open publish and follow sockets of staff devices, so that revoking a
//! device or disabling a user closes them at once.
//!
//! Revocations made through the HTTP admin routes close the sockets
//! directly. The admin command runs in another process, so the relay also
//! rechecks every open socket's user and device in the store every
//! [`RECHECK_INTERVAL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

/// Interval between rechecks of open sockets against the store.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The owner of an open socket.
#[derive(Debug, Clone)]
pub(crate) struct SocketOwner {
    pub(crate) user_id: String,
    pub(crate) device_id: Option<String>,
    /// The sign-in the socket's token belongs to.
    pub(crate) family_id: String,
}

impl SocketOwner {
    /// Returns the owner of a socket opened with `principal`'s credential.
    pub(crate) fn of(principal: &crate::http::staff::Principal) -> SocketOwner {
        SocketOwner {
            user_id: principal.user_id.clone(),
            device_id: principal.device_id.clone(),
            family_id: principal.family_id.clone(),
        }
    }
}

/// The registry of open staff sockets.
#[derive(Debug, Default)]
pub(crate) struct LiveSockets {
    next_id: AtomicU64,
    sockets: DashMap<u64, (SocketOwner, CancellationToken)>,
}

/// A socket's entry in the registry. Dropping it removes the socket.
#[derive(Debug)]
pub(crate) struct LiveSocket {
    registry: Arc<LiveSockets>,
    id: u64,
    revoked: CancellationToken,
}

impl LiveSocket {
    /// Returns the token that is cancelled when the socket's credential is revoked.
    pub(crate) fn revoked(&self) -> &CancellationToken {
        &self.revoked
    }
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        self.registry.sockets.remove(&self.id);
    }
}

impl LiveSockets {
    /// Registers an open socket.
    pub(crate) fn register(self: &Arc<Self>, owner: SocketOwner) -> LiveSocket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoked = CancellationToken::new();
        self.sockets.insert(id, (owner, revoked.clone()));
        LiveSocket {
            registry: Arc::clone(self),
            id,
            revoked,
        }
    }

    /// Closes every socket of a device. Returns how many there were.
    pub(crate) fn revoke_device(&self, device_id: &str) -> usize {
        self.revoke_where(|owner| owner.device_id.as_deref() == Some(device_id))
    }

    /// Closes every socket of a user. Returns how many there were.
    pub(crate) fn revoke_user(&self, user_id: &str) -> usize {
        self.revoke_where(|owner| owner.user_id == user_id)
    }

    /// Closes every socket of a sign-in. Returns how many there were.
    pub(crate) fn revoke_sign_in(&self, family_id: &str) -> usize {
        self.revoke_where(|owner| owner.family_id == family_id)
    }

    /// Returns the owners of the open sockets, for the periodic recheck.
    pub(crate) fn owners(&self) -> Vec<(u64, SocketOwner)> {
        self.sockets
            .iter()
            .map(|entry| (*entry.key(), entry.value().0.clone()))
            .collect()
    }

    /// Closes one socket by its registry id.
    pub(crate) fn revoke_id(&self, id: u64) {
        if let Some(entry) = self.sockets.get(&id) {
            entry.value().1.cancel();
        }
    }

    fn revoke_where(&self, matches: impl Fn(&SocketOwner) -> bool) -> usize {
        let mut count = 0;
        for entry in self.sockets.iter() {
            if matches(&entry.value().0) {
                entry.value().1.cancel();
                count += 1;
            }
        }
        count
    }
}

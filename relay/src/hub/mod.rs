//! Per-session fan-out: a concurrent map from session id to the session's hub.
//!
//! A hub lives while a connection has a [`HubLease`] on it or frames are in
//! flight to the store. It is built from the store on first use, so no state
//! is lost when an idle hub is dropped or a failed one is discarded.
//!
//! | module | job |
//! | --- | --- |
//! | [`session`] | one session's offsets, ring, publisher seat and followers |
//! | [`state`] | the fields of a session hub and the steps that change them |
//! | [`handles`] | the publisher seat and follower subscriptions sockets keep |
//! | [`paired`] | paired devices' follow sockets, closed when the device is removed |
//! | [`queue`] | a follower's bounded live queue |
//! | [`remote`] | frames committed on other relay nodes, and catch-up from the store |

mod handles;
mod paired;
mod queue;
mod remote;
mod session;
mod state;

use std::ops::Deref;
use std::sync::Arc;

use axum::body::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use sealcast_protocol::{FrameKind, SessionId};

use crate::fanout::Fanout;
use crate::store::{SessionRecord, Store, StoreError};
pub(crate) use handles::Subscription;
pub(crate) use paired::PairedSocket;
pub(crate) use queue::Popped;
pub(crate) use remote::{Applied, CatchUpTrigger};
pub(crate) use session::{EndRefused, Lifecycle, Offer, Progress, SessionHub, Subscribe};

/// A frame held in memory for fan-out.
#[derive(Debug)]
pub(crate) struct HubFrame {
    /// The frame's session offset.
    pub(crate) offset: u64,
    /// The frame's kind, which decides whether a lagging follower may skip it.
    pub(crate) kind: FrameKind,
    /// The follow-socket message: the offset, then the frame.
    pub(crate) delivery: Bytes,
}

/// The hubs of all active sessions.
#[derive(Clone)]
pub(crate) struct Registry {
    inner: Arc<RegistryInner>,
}

pub(crate) struct RegistryInner {
    hubs: DashMap<SessionId, Arc<SessionHub>>,
    store: Store,
    ring_budget: usize,
    pub(crate) fanout: Fanout,
}

impl Registry {
    /// Makes an empty registry whose hubs load from `store`, keep up to
    /// `ring_budget` bytes of committed frames for subscribing followers
    /// and announce commits to other nodes through `fanout`.
    pub(crate) fn new(store: Store, ring_budget: usize, fanout: Fanout) -> Registry {
        Registry {
            inner: Arc::new(RegistryInner {
                hubs: DashMap::new(),
                store,
                ring_budget,
                fanout,
            }),
        }
    }

    /// Returns the link to other relay nodes.
    pub(crate) fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    /// Returns the session's hub if one is in memory, without leasing it.
    pub(crate) fn hub(&self, session_id: &SessionId) -> Option<Arc<SessionHub>> {
        self.inner.hubs.get(session_id).map(|hub| Arc::clone(&hub))
    }

    /// Returns every hub in memory.
    pub(crate) fn hubs(&self) -> Vec<Arc<SessionHub>> {
        self.inner
            .hubs
            .iter()
            .map(|hub| Arc::clone(hub.value()))
            .collect()
    }

    /// Reads the frames that other nodes committed for `hub` from the
    /// store in a task of its own, unless one is running already, in which
    /// case that one reads once more when it is done.
    pub(crate) fn schedule_catch_up(&self, hub: &Arc<SessionHub>, trigger: CatchUpTrigger) {
        if !hub.request_catch_up() {
            return;
        }
        let hub = Arc::clone(hub);
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            while hub.take_catch_up_request() {
                if let Err(error) = hub.catch_up(&store, trigger).await {
                    tracing::warn!(
                        session_id = %hub.session_id(), %error, trigger = trigger.label(),
                        "failed to read other nodes' frames from the store: retrying on the next trigger"
                    );
                }
            }
        });
    }

    /// Prepares a hub for a publisher that is about to attach: with other
    /// nodes, reads every frame they committed first, so that the hub's
    /// stream positions match the store, and tells them to close their own
    /// publish socket of the session.
    pub(crate) async fn prepare_publisher(&self, hub: &Arc<SessionHub>) -> Result<(), StoreError> {
        if matches!(self.inner.fanout, Fanout::Local) {
            return Ok(());
        }
        hub.catch_up(&self.inner.store, CatchUpTrigger::Publisher)
            .await?;
        self.inner
            .fanout
            .publisher_attached(hub.session_id(), crate::store::now_millis());
        Ok(())
    }

    /// Leases the session's hub, loading it from the store when it is not in
    /// memory or the one in memory failed.
    pub(crate) async fn lease(&self, record: &SessionRecord) -> Result<HubLease, StoreError> {
        if let Some(hub) = self.lease_existing(&record.session_id) {
            return Ok(self.wrap(hub));
        }

        let tail = self.inner.store.session_tail(record.session_id).await?;
        let fresh = Arc::new(SessionHub::from_store(
            record,
            &tail,
            self.inner.ring_budget,
            Arc::downgrade(&self.inner),
        ));

        // Another task may have loaded the hub meanwhile: the first one wins.
        let (hub, inserted) = match self.inner.hubs.entry(record.session_id) {
            Entry::Occupied(occupied) if occupied.get().try_lease() => {
                (Arc::clone(occupied.get()), false)
            }
            Entry::Occupied(mut occupied) => {
                fresh.try_lease();
                occupied.insert(Arc::clone(&fresh));
                (fresh, true)
            }
            Entry::Vacant(vacant) => {
                fresh.try_lease();
                vacant.insert(Arc::clone(&fresh));
                (fresh, true)
            }
        };
        if inserted && !matches!(self.inner.fanout, Fanout::Local) {
            // A frame committed on another node between the tail read and
            // the insert above found no hub here: read it from the store.
            self.schedule_catch_up(&hub, CatchUpTrigger::Load);
        }
        tracing::debug!(session_id = %record.session_id, "session hub leased");
        Ok(self.wrap(hub))
    }

    /// Number of hubs in memory.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.hubs.len()
    }

    fn lease_existing(&self, session_id: &SessionId) -> Option<Arc<SessionHub>> {
        let hub = self.inner.hubs.get(session_id)?;
        hub.try_lease().then(|| Arc::clone(hub.value()))
    }

    fn wrap(&self, hub: Arc<SessionHub>) -> HubLease {
        HubLease {
            registry: Arc::clone(&self.inner),
            hub,
        }
    }
}

impl RegistryInner {
    /// Drops `hub` from the map if it is still the session's hub and is idle or failed.
    pub(crate) fn remove_if_idle(&self, hub: &Arc<SessionHub>) {
        let removed = self.hubs.remove_if(&hub.session_id(), |_, current| {
            Arc::ptr_eq(current, hub) && current.retire_if_idle()
        });
        if removed.is_some() {
            tracing::debug!(session_id = %hub.session_id(), "session hub dropped");
        }
    }
}

/// Keeps a hub in the registry while a connection uses it.
pub(crate) struct HubLease {
    registry: Arc<RegistryInner>,
    hub: Arc<SessionHub>,
}

impl HubLease {
    /// Returns the leased hub, for calls that need an `Arc`.
    pub(crate) fn hub(&self) -> &Arc<SessionHub> {
        &self.hub
    }
}

impl Deref for HubLease {
    type Target = SessionHub;

    fn deref(&self) -> &SessionHub {
        &self.hub
    }
}

impl Drop for HubLease {
    fn drop(&mut self) {
        self.hub.release_lease();
        self.registry.remove_if_idle(&self.hub);
    }
}

#[cfg(test)]
mod tests;

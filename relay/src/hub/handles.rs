//! Handles a socket keeps on a hub: the publisher seat and a follower's
//! subscription. Dropping a handle gives its place back.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::queue::FollowerQueue;
use super::session::SessionHub;

/// The publisher seat of a session, held by one publish socket at a time.
pub(crate) struct PublisherSeat {
    hub: Arc<SessionHub>,
    id: u64,
    replaced: CancellationToken,
}

impl PublisherSeat {
    pub(super) fn new(hub: Arc<SessionHub>, id: u64, replaced: CancellationToken) -> Self {
        PublisherSeat { hub, id, replaced }
    }

    /// Returns the token cancelled when another publish socket takes the seat.
    pub(crate) fn replaced(&self) -> &CancellationToken {
        &self.replaced
    }
}

impl Drop for PublisherSeat {
    fn drop(&mut self) {
        self.hub.release_publisher(self.id);
    }
}

/// A follower's place in live fan-out.
pub(crate) struct Subscription {
    hub: Arc<SessionHub>,
    id: u64,
    queue: Arc<FollowerQueue>,
}

impl Subscription {
    pub(super) fn new(hub: Arc<SessionHub>, id: u64, queue: Arc<FollowerQueue>) -> Self {
        Subscription { hub, id, queue }
    }

    /// Returns the follower's live queue.
    pub(crate) fn queue(&self) -> &FollowerQueue {
        &self.queue
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

//! One session's in-memory state: offsets, stream positions, the ring of
//! recent frames, the publisher seat and the followers' queues.
//!
//! Everything that orders frames happens under the hub's lock: checking the
//! sequence number, assigning the offset, pushing to followers' queues and
//! appending the store write to the hub's unstored writes. Those reach the
//! store's queue in the same order, one at a time under the lock, so the store
//! commits a session's frames in offset order. A follower that subscribes
//! under the same lock gets every frame exactly once, from the ring or from
//! its queue.
//!
//! Fan-out never waits for the store: a frame reaches followers' queues
//! before its write waits for room in the store's queue. The publish socket
//! then waits in [`SessionHub::enqueue_writes`] until the write is queued,
//! which slows the publisher down while the store is behind.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use sealcast_protocol::{FrameHeader, SessionId};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::handles::{PublisherSeat, Subscription};
use super::paired::PairedSockets;
use super::queue::{FollowerQueue, Pushed};
use super::state::HubState;
use super::RegistryInner;
use crate::store::{
    FrameRecord, SessionRecord, SessionTail, Store, StoreError, StoreFault, WriteOp, WritePermit,
};

/// Commit and end state that the session's sockets watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every offset below this one is committed.
    pub(crate) committed: u64,
    /// Once the session end is committed: the offset after its last frame.
    pub(crate) end: Option<u64>,
    /// The fault of a failed commit. Once it is set, the hub is dropped and
    /// every socket on it must close.
    pub(crate) failed: Option<StoreFault>,
}

impl Progress {
    /// Returns the part of the progress that followers wake for.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            end: self.end,
            failed: self.failed,
        }
    }
}

/// The session end and failure: the progress that every follower must act on
/// at once. Followers read commits when they wake for other reasons, so that
/// a commit does not wake every follower of the sessions it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifecycle {
    /// Once the session end is committed: the offset after its last frame.
    pub(crate) end: Option<u64>,
    /// The fault of a failed commit. Once it is set, the hub is dropped and
    /// every socket on it must close.
    pub(crate) failed: Option<StoreFault>,
}

/// Outcome of [`SessionHub::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// The frame got this offset and was handed to followers and the store.
    Accepted { offset: u64 },
    /// The stream already has this sequence number. The stream's latest
    /// accepted frame is `seq` at `offset`, to acknowledge once committed.
    Duplicate { seq: u64, offset: u64 },
    /// The sequence number skips ahead of `expected`.
    Gap { expected: u64 },
    /// The session has ended.
    Ended,
    /// The hub failed and is being dropped.
    Unavailable,
}

/// Outcome of [`SessionHub::subscribe`].
pub(crate) enum Subscribe {
    /// The follower now receives every frame from its cursor in its queue.
    Live(Subscription),
    /// Frames between the cursor and `ring_start` are only in the store.
    Behind { ring_start: u64 },
    /// The hub failed and is being dropped.
    Unavailable,
}

/// Reason [`SessionHub::begin_end`] did not start ending the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndRefused {
    /// The session has already ended or is ending.
    AlreadyEnded,
    /// The hub failed and is being dropped.
    Unavailable,
}

/// The in-memory state of one session.
pub(crate) struct SessionHub {
    session_id: SessionId,
    epoch: u64,
    fingerprint: [u8; 16],
    /// Bytes of committed frames the ring keeps for subscribing followers.
    ring_budget: usize,
    registry: Weak<RegistryInner>,
    state: Mutex<HubState>,
    progress: watch::Sender<Progress>,
    lifecycle: watch::Sender<Lifecycle>,
    pub(super) catch_up: CatchUpFlags,
    paired_sockets: PairedSockets,
}

/// Whether a catch-up from the store runs for the hub and whether another
/// one was requested meanwhile, so that at most one runs at a time and no
/// request is lost.
#[derive(Debug, Default)]
pub(super) struct CatchUpFlags {
    pub(super) requested: AtomicBool,
    pub(super) running: AtomicBool,
}

impl SessionHub {
    /// Builds a hub from a stored session and where its history ends.
    pub(super) fn from_store(
        record: &SessionRecord,
        tail: &SessionTail,
        ring_budget: usize,
        registry: Weak<RegistryInner>,
    ) -> SessionHub {
        let state = HubState::new(record, tail);
        let (progress, _) = watch::channel(state.progress());
        let (lifecycle, _) = watch::channel(state.progress().lifecycle());
        SessionHub {
            session_id: record.session_id,
            epoch: record.epoch,
            fingerprint: record.fingerprint,
            ring_budget,
            registry,
            state: Mutex::new(state),
            progress,
            lifecycle,
            catch_up: CatchUpFlags::default(),
            paired_sockets: PairedSockets::default(),
        }
    }

    /// Returns the bytes of committed frames the ring keeps.
    pub(super) fn ring_budget(&self) -> usize {
        self.ring_budget
    }

    /// Returns the registry of paired devices' follow sockets.
    pub(super) fn paired_sockets(&self) -> &PairedSockets {
        &self.paired_sockets
    }

    /// Returns the session's id.
    pub(crate) fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Returns the session's history epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Returns the session key's fingerprint.
    pub(crate) fn fingerprint(&self) -> [u8; 16] {
        self.fingerprint
    }

    /// Returns the offset the next accepted frame gets.
    pub(crate) fn next_offset(&self) -> u64 {
        self.lock().next_offset
    }

    /// Checks whether the session has ended or its end is being committed.
    pub(crate) fn is_ending(&self) -> bool {
        self.lock().ending
    }

    /// Watches commits, the session end and failure.
    pub(crate) fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Watches the session end and failure only.
    pub(crate) fn watch_lifecycle(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }

    /// Takes the publisher seat, telling the previous holder it was replaced.
    pub(crate) fn attach_publisher(self: &Arc<Self>) -> Option<PublisherSeat> {
        let mut state = self.lock();
        if state.retired {
            return None;
        }
        if let Some((_, previous)) = state.publisher.take() {
            previous.cancel();
        }
        let id = state.take_id();
        let replaced = CancellationToken::new();
        state.publisher = Some((id, replaced.clone()));
        state.publisher_attached_at = crate::store::now_millis();
        Some(PublisherSeat::new(Arc::clone(self), id, replaced))
    }

    /// Checks a decoded frame's sequence number and, if it is the next one of
    /// its stream, gives it the next offset and pushes it to every follower.
    /// Its store write waits in the hub until [`Self::enqueue_writes`] moves it
    /// to the store's queue, which the caller must call next.
    pub(crate) fn offer(
        self: &Arc<Self>,
        header: &FrameHeader,
        frame: &[u8],
        received_at: i64,
    ) -> Offer {
        let mut state = self.lock();
        if let Some(outcome) = state.check(header) {
            return outcome;
        }

        let frame = state.append(header, frame);
        let offset = frame.offset;
        let record = FrameRecord {
            session_id: self.session_id,
            offset,
            stream_id: header.stream_id,
            seq: header.seq,
            kind: header.kind,
            final_count: header.final_count,
            received_at,
            delivery: frame.delivery.clone(),
        };
        let hub = Arc::clone(self);
        state.unstored.push_back(WriteOp::AppendFrame {
            frame: record,
            done: Box::new(move |result| hub.frame_committed(offset, result)),
        });
        Offer::Accepted { offset }
    }

    /// Moves the hub's unstored writes to the store's queue in offset order,
    /// waiting for room there. Returns once none is left, so a publish socket
    /// that calls it after each frame waits while the store is behind.
    ///
    /// Concurrent calls are safe: each write is taken and sent under the
    /// hub's lock. When the store has stopped, the unstored writes fail with
    /// its error, which fails the hub.
    pub(crate) async fn enqueue_writes(self: &Arc<Self>, store: &Store) -> Result<(), StoreError> {
        loop {
            if self.lock().unstored.is_empty() {
                return Ok(());
            }
            let permit = match store.reserve().await {
                Ok(permit) => permit,
                Err(error) => {
                    self.fail_unstored(&error);
                    return Err(error);
                }
            };

            let mut state = self.lock();
            match state.unstored.pop_front() {
                Some(op) => permit.send(op),
                None => return Ok(()),
            }
        }
    }

    /// Registers a follower whose next frame is `cursor`, when the ring still
    /// contains that frame or it is yet to come. The ring's frames from the cursor
    /// go into the new queue first, so nothing is missed or repeated.
    pub(crate) fn subscribe(self: &Arc<Self>, cursor: u64, queue_limit: usize) -> Subscribe {
        let mut state = self.lock();
        if state.retired {
            return Subscribe::Unavailable;
        }
        let ring_start = state.ring_start();
        if cursor < ring_start {
            return Subscribe::Behind { ring_start };
        }

        let queue = Arc::new(FollowerQueue::new(queue_limit));
        let mut detached = false;
        for frame in state.ring.iter().filter(|frame| frame.offset >= cursor) {
            if queue.push(frame) == Pushed::Detached {
                detached = true;
                break;
            }
        }
        let id = state.take_id();
        if !detached {
            state.followers.push((id, Arc::clone(&queue)));
        }
        Subscribe::Live(Subscription::new(Arc::clone(self), id, queue))
    }

    /// Marks the session as ending and enqueues the end behind its frames.
    /// The receiver completes once the end is committed.
    pub(crate) fn begin_end(
        self: &Arc<Self>,
        permit: WritePermit<'_>,
        ended_at: i64,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, EndRefused> {
        let mut state = self.lock();
        if state.retired {
            return Err(EndRefused::Unavailable);
        }
        if state.ending {
            return Err(EndRefused::AlreadyEnded);
        }
        state.ending = true;
        state.end_pending = true;
        let end_offset = state.next_offset;

        let (sender, receiver) = oneshot::channel();
        let hub = Arc::clone(self);
        state.unstored.push_back(WriteOp::EndSession {
            session_id: self.session_id,
            ended_at,
            done: Box::new(move |result| {
                hub.end_committed(end_offset, result.clone());
                let _ = sender.send(result);
            }),
        });
        // The permit takes the oldest unstored write. When that is a frame,
        // the publish socket that offered it is still in `enqueue_writes`
        // (or will call it as it closes), and that call moves the end too.
        if let Some(op) = state.unstored.pop_front() {
            permit.send(op);
        }
        Ok(receiver)
    }

    /// Frees the publisher seat if `id` still has it.
    pub(super) fn release_publisher(&self, id: u64) {
        let mut state = self.lock();
        if state
            .publisher
            .as_ref()
            .is_some_and(|(holder, _)| *holder == id)
        {
            state.publisher = None;
        }
    }

    /// Removes follower `id` from live fan-out.
    pub(super) fn unsubscribe(&self, id: u64) {
        self.lock()
            .followers
            .retain(|(follower, _)| *follower != id);
    }

    /// Takes a lease that keeps the hub in the registry. Fails once retired.
    pub(super) fn try_lease(&self) -> bool {
        let mut state = self.lock();
        if state.retired {
            return false;
        }
        state.leases += 1;
        true
    }

    /// Returns a lease taken with [`Self::try_lease`].
    pub(super) fn release_lease(&self) {
        let mut state = self.lock();
        state.leases = state.leases.saturating_sub(1);
    }

    /// Retires the hub when nothing uses it and nothing is in flight, so the
    /// registry can drop it. Returns whether it is retired.
    pub(super) fn retire_if_idle(&self) -> bool {
        let mut state = self.lock();
        if !state.retired && state.is_idle() {
            state.retired = true;
        }
        state.retired
    }

    /// Completes every unstored write with `error`, outside the hub's lock
    /// because completions take it.
    fn fail_unstored(&self, error: &StoreError) {
        let unstored = std::mem::take(&mut self.lock().unstored);
        for op in unstored {
            op.complete(Err(error.clone()));
        }
    }

    fn frame_committed(self: &Arc<Self>, offset: u64, result: Result<(), StoreError>) {
        let mut state = self.lock();
        match result {
            Ok(()) if state.failed.is_none() => {
                state.committed = state.committed.max(offset + 1);
                if let (Some(frame), Some(registry)) =
                    (state.ring_frame(offset), self.registry.upgrade())
                {
                    registry.fanout.frame_committed(self.session_id, &frame);
                }
                state.trim_ring(self.ring_budget);
            }
            Ok(()) => {}
            Err(error) => {
                let fault = StoreFault::of(&error);
                tracing::error!(
                    session_id = %self.session_id, offset, %error, reason = fault.label(),
                    "frame commit failed: closing the session's sockets and dropping its state"
                );
                state.fail(fault);
            }
        }
        self.publish(state);
    }

    fn end_committed(self: &Arc<Self>, end_offset: u64, result: Result<(), StoreError>) {
        let mut state = self.lock();
        state.end_pending = false;
        match result {
            // NotEndable: the stored session had already ended.
            Ok(()) => {
                state.end = Some(end_offset);
                if let Some(registry) = self.registry.upgrade() {
                    registry.fanout.session_ended(self.session_id, end_offset);
                }
            }
            // The stored session had already ended.
            Err(StoreError::NotEndable { .. }) => state.end = Some(end_offset),
            Err(error) => {
                let fault = StoreFault::of(&error);
                tracing::error!(
                    session_id = %self.session_id, %error, reason = fault.label(),
                    "session end commit failed: dropping the session's state"
                );
                state.fail(fault);
            }
        }
        self.publish(state);
    }

    /// Sends the new progress to watchers and drops an idle hub from the registry.
    pub(super) fn publish(self: &Arc<Self>, state: MutexGuard<'_, HubState>) {
        let progress = state.progress();
        let unused = state.leases == 0 && (state.retired || state.is_idle());
        drop(state);

        self.progress.send_if_modified(|current| {
            let changed = *current != progress;
            *current = progress;
            changed
        });
        let lifecycle = progress.lifecycle();
        self.lifecycle.send_if_modified(|current| {
            let changed = *current != lifecycle;
            *current = lifecycle;
            changed
        });
        if unused {
            if let Some(registry) = self.registry.upgrade() {
                registry.remove_if_idle(self);
            }
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

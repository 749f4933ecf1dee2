//! One session's in-memory state: offsets, stream positions, the ring of
//! recent frames, the publisher seat and the followers' queues.
//!
//! Everything that orders frames happens under the hub's lock: checking the
//! sequence number, assigning the offset, pushing to followers' queues and
//! enqueueing the store write. The store therefore commits a session's frames
//! in offset order, and a follower that subscribes under the same lock gets
//! every frame exactly once, from the ring or from its queue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use axum::body::Bytes;
use sealcast_protocol::{api, FrameHeader, SessionId, StreamId};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::handles::{PublisherSeat, Subscription};
use super::queue::{FollowerQueue, Pushed};
use super::{HubFrame, RegistryInner};
use crate::store::{FrameRecord, SessionRecord, SessionTail, StoreError, WriteOp, WritePermit};

/// Commit and end state that the session's sockets watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Every offset below this one is committed.
    pub(crate) committed: u64,
    /// Once the session end is committed: the offset after its last frame.
    pub(crate) end: Option<u64>,
    /// A commit failed: the hub is dropped and every socket on it must close.
    pub(crate) failed: bool,
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
}

struct HubState {
    next_offset: u64,
    committed: u64,
    end: Option<u64>,
    /// The end was requested: frames are refused from now on.
    ending: bool,
    end_pending: bool,
    failed: bool,
    retired: bool,
    leases: usize,
    streams: HashMap<StreamId, StreamPosition>,
    /// Recent frames in offset order, including every uncommitted one.
    ring: VecDeque<Arc<HubFrame>>,
    ring_bytes: usize,
    followers: Vec<(u64, Arc<FollowerQueue>)>,
    publisher: Option<(u64, CancellationToken)>,
    next_id: u64,
}

#[derive(Debug, Clone, Copy)]
struct StreamPosition {
    next_seq: u64,
    last_offset: u64,
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
        SessionHub {
            session_id: record.session_id,
            epoch: record.epoch,
            fingerprint: record.fingerprint,
            ring_budget,
            registry,
            state: Mutex::new(state),
            progress,
        }
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
        Some(PublisherSeat::new(Arc::clone(self), id, replaced))
    }

    /// Checks a decoded frame's sequence number and, if it is the next one of
    /// its stream, gives it the next offset, pushes it to every follower and
    /// enqueues its store write.
    pub(crate) fn offer(
        self: &Arc<Self>,
        header: &FrameHeader,
        frame: &[u8],
        received_at: i64,
        permit: WritePermit<'_>,
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
        permit.send(WriteOp::AppendFrame {
            frame: record,
            done: Box::new(move |result| hub.frame_committed(offset, result)),
        });
        Offer::Accepted { offset }
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
        permit.send(WriteOp::EndSession {
            session_id: self.session_id,
            ended_at,
            done: Box::new(move |result| {
                hub.end_committed(end_offset, result.clone());
                let _ = sender.send(result);
            }),
        });
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

    fn frame_committed(self: &Arc<Self>, offset: u64, result: Result<(), StoreError>) {
        let mut state = self.lock();
        match result {
            Ok(()) if !state.failed => {
                state.committed = state.committed.max(offset + 1);
                state.trim_ring(self.ring_budget);
            }
            Ok(()) => {}
            Err(error) => {
                tracing::error!(
                    session_id = %self.session_id, offset, %error,
                    "frame commit failed: closing the session's sockets and dropping its state"
                );
                state.fail();
            }
        }
        self.publish(state);
    }

    fn end_committed(self: &Arc<Self>, end_offset: u64, result: Result<(), StoreError>) {
        let mut state = self.lock();
        state.end_pending = false;
        match result {
            // NotEndable: the stored session had already ended.
            Ok(()) | Err(StoreError::NotEndable { .. }) => state.end = Some(end_offset),
            Err(error) => {
                tracing::error!(
                    session_id = %self.session_id, %error,
                    "session end commit failed: dropping the session's state"
                );
                state.fail();
            }
        }
        self.publish(state);
    }

    /// Sends the new progress to watchers and drops an idle hub from the registry.
    fn publish(self: &Arc<Self>, state: MutexGuard<'_, HubState>) {
        let progress = state.progress();
        let unused = state.leases == 0 && (state.retired || state.is_idle());
        drop(state);

        self.progress.send_if_modified(|current| {
            let changed = *current != progress;
            *current = progress;
            changed
        });
        if unused {
            if let Some(registry) = self.registry.upgrade() {
                registry.remove_if_idle(self);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HubState {
    fn new(record: &SessionRecord, tail: &SessionTail) -> HubState {
        let streams = tail
            .streams
            .iter()
            .map(|stream| {
                let position = StreamPosition {
                    next_seq: stream.last_seq + 1,
                    last_offset: stream.last_offset,
                };
                (stream.stream_id, position)
            })
            .collect();
        let ended = record.ended_at.is_some();
        HubState {
            next_offset: tail.next_offset,
            committed: tail.next_offset,
            end: ended.then_some(tail.next_offset),
            ending: ended,
            end_pending: false,
            failed: false,
            retired: false,
            leases: 0,
            streams,
            ring: VecDeque::new(),
            ring_bytes: 0,
            followers: Vec::new(),
            publisher: None,
            next_id: 0,
        }
    }

    /// Returns the outcome for a frame that cannot be accepted now, or `None`
    /// when it is the next frame of its stream.
    fn check(&self, header: &FrameHeader) -> Option<Offer> {
        if self.retired {
            return Some(Offer::Unavailable);
        }
        if self.ending {
            return Some(Offer::Ended);
        }
        match self.streams.get(&header.stream_id) {
            Some(position) if header.seq < position.next_seq => Some(Offer::Duplicate {
                seq: position.next_seq - 1,
                offset: position.last_offset,
            }),
            Some(position) if header.seq > position.next_seq => Some(Offer::Gap {
                expected: position.next_seq,
            }),
            None if header.seq > 0 => Some(Offer::Gap { expected: 0 }),
            _ => None,
        }
    }

    /// Gives a checked frame the next offset, records its stream's position,
    /// keeps it in the ring and pushes it to every follower.
    fn append(&mut self, header: &FrameHeader, frame: &[u8]) -> Arc<HubFrame> {
        let offset = self.next_offset;
        let frame = Arc::new(HubFrame {
            offset,
            kind: header.kind,
            delivery: Bytes::from(api::encode_delivery(offset, frame)),
        });
        self.next_offset += 1;
        let position = StreamPosition {
            next_seq: header.seq + 1,
            last_offset: offset,
        };
        self.streams.insert(header.stream_id, position);

        self.ring_bytes += frame.delivery.len();
        self.ring.push_back(Arc::clone(&frame));
        self.fan_out(&frame);
        frame
    }

    fn progress(&self) -> Progress {
        Progress {
            committed: self.committed,
            end: self.end,
            failed: self.failed,
        }
    }

    fn is_idle(&self) -> bool {
        self.leases == 0 && self.committed == self.next_offset && !self.end_pending
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn ring_start(&self) -> u64 {
        self.ring
            .front()
            .map_or(self.next_offset, |frame| frame.offset)
    }

    /// Drops the oldest committed frames while the ring is over its budget.
    fn trim_ring(&mut self, budget: usize) {
        while self.ring_bytes > budget {
            match self.ring.front() {
                Some(front) if front.offset < self.committed => {
                    self.ring_bytes -= front.delivery.len();
                    self.ring.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Pushes a frame to every follower, forgetting followers that detach.
    fn fan_out(&mut self, frame: &Arc<HubFrame>) {
        self.followers
            .retain(|(_, queue)| queue.push(frame) != Pushed::Detached);
    }

    fn fail(&mut self) {
        self.failed = true;
        self.retired = true;
        self.ring.clear();
        self.ring_bytes = 0;
        self.followers.clear();
    }
}

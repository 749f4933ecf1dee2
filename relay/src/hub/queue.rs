//! A follower's live queue, bounded in bytes.
//!
//! The publisher's task pushes without ever waiting. Once the queue contains
//! half of its limit, interim frames are skipped for this follower. A frame
//! that would take it past the limit detaches the follower instead: the queue
//! empties and stays closed, and the follower catches up from the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sealcast_protocol::FrameKind;
use tokio::sync::Notify;

use super::HubFrame;
use crate::metrics::{frame_metrics, FOLLOWERS_DETACHED};

/// Outcome of [`FollowerQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The frame waits in the queue.
    Queued,
    /// The frame is interim and the queue is past half full, so this follower skips it.
    Skipped,
    /// The queue is full: the follower is detached from live fan-out.
    Detached,
}

/// Outcome of [`FollowerQueue::pop`].
#[derive(Debug, Clone)]
pub(crate) enum Popped {
    /// The oldest queued frame.
    Frame(Arc<HubFrame>),
    /// Nothing queued yet.
    Empty,
    /// The follower was detached and must catch up from the store.
    Detached,
}

/// Frames waiting to be written to one follower.
#[derive(Debug)]
pub(crate) struct FollowerQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    limit: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Arc<HubFrame>>,
    bytes: usize,
    detached: bool,
}

impl FollowerQueue {
    /// Makes an empty queue for at most `limit` bytes of frames.
    pub(crate) fn new(limit: usize) -> Self {
        FollowerQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            limit,
        }
    }

    /// Queues a frame, skips it, or detaches the follower, without waiting.
    pub(crate) fn push(&self, frame: &Arc<HubFrame>) -> Pushed {
        let mut state = self.lock();
        if state.detached {
            return Pushed::Detached;
        }

        let len = frame.delivery.len();
        if state.bytes + len > self.limit {
            let freed = state.bytes;
            state.frames.clear();
            state.bytes = 0;
            state.detached = true;
            drop(state);
            frame_metrics().queue_bytes.decrement(freed as f64);
            metrics::counter!(FOLLOWERS_DETACHED).increment(1);
            self.ready.notify_one();
            return Pushed::Detached;
        }

        if frame.kind == FrameKind::Interim && state.bytes >= self.limit / 2 {
            frame_metrics().skipped.increment(1);
            return Pushed::Skipped;
        }

        state.frames.push_back(Arc::clone(frame));
        state.bytes += len;
        drop(state);
        frame_metrics().queue_bytes.increment(len as f64);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Takes the oldest frame without waiting.
    pub(crate) fn pop(&self) -> Popped {
        let mut state = self.lock();
        if state.detached {
            return Popped::Detached;
        }
        match state.frames.pop_front() {
            Some(frame) => {
                state.bytes -= frame.delivery.len();
                drop(state);
                frame_metrics()
                    .queue_bytes
                    .decrement(frame.delivery.len() as f64);
                Popped::Frame(frame)
            }
            None => Popped::Empty,
        }
    }

    /// Waits until a push or a detach happens after the last [`Self::pop`] that found nothing.
    pub(crate) async fn wait(&self) {
        self.ready.notified().await;
    }

    /// Bytes of frames queued now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FollowerQueue {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        if bytes > 0 {
            frame_metrics().queue_bytes.decrement(bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::*;

    fn frame(offset: u64, kind: FrameKind, len: usize) -> Arc<HubFrame> {
        Arc::new(HubFrame {
            offset,
            kind,
            delivery: Bytes::from(vec![0u8; len]),
        })
    }

    #[test]
    fn queue_delivers_in_order() {
        let queue = FollowerQueue::new(1000);
        assert_eq!(queue.push(&frame(0, FrameKind::Final, 100)), Pushed::Queued);
        assert_eq!(
            queue.push(&frame(1, FrameKind::Interim, 100)),
            Pushed::Queued
        );
        assert!(matches!(queue.pop(), Popped::Frame(f) if f.offset == 0));
        assert!(matches!(queue.pop(), Popped::Frame(f) if f.offset == 1));
        assert!(matches!(queue.pop(), Popped::Empty));
    }

    #[test]
    fn interim_skipped_past_half() {
        let queue = FollowerQueue::new(1000);
        assert_eq!(queue.push(&frame(0, FrameKind::Final, 500)), Pushed::Queued);
        assert_eq!(
            queue.push(&frame(1, FrameKind::Interim, 100)),
            Pushed::Skipped
        );
        assert_eq!(queue.push(&frame(2, FrameKind::Final, 100)), Pushed::Queued);
        assert_eq!(
            queue.push(&frame(3, FrameKind::EndOfSession, 100)),
            Pushed::Queued
        );
        assert_eq!(queue.queued_bytes(), 700);
    }

    #[test]
    fn overflow_detaches_and_frees() {
        let queue = FollowerQueue::new(1000);
        assert_eq!(queue.push(&frame(0, FrameKind::Final, 600)), Pushed::Queued);
        assert_eq!(
            queue.push(&frame(1, FrameKind::Final, 600)),
            Pushed::Detached
        );
        assert_eq!(queue.queued_bytes(), 0);
        assert!(matches!(queue.pop(), Popped::Detached));
        assert_eq!(queue.push(&frame(2, FrameKind::Final, 1)), Pushed::Detached);
    }
}

//! Frames and session ends that another relay node committed, applied to
//! this node's hub, and the catch-up from the store that fills the gaps
//! NATS leaves.
//!
//! A remote frame is applied only at the hub's next offset, so frames reach
//! followers in offset order and once, whether they come from NATS, from
//! the store or from both. Remote frames are committed already: they raise
//! the committed offset with them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use metrics::counter;
use sealcast_protocol::{api, FrameHeader};

use super::session::SessionHub;
use crate::metrics::FANOUT_CATCH_UP_FRAMES;
use crate::store::{Store, StoreError};

/// Frames and bytes read from the store in one catch-up query.
const CATCH_UP_FRAMES: usize = 512;
const CATCH_UP_BYTES: usize = 4 * 1024 * 1024;

/// Outcome of applying a remote frame or session end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It was the next one: followers get it.
    Appended,
    /// The hub has it already, or has frames of its own at that offset.
    Known,
    /// Frames from `expected` are missing before it.
    Gap { expected: u64 },
    /// The hub is being dropped.
    Retired,
}

/// Cause of a hub's read of the store for frames committed on other nodes,
/// also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CatchUpTrigger {
    /// A NATS message skipped offsets.
    Gap,
    /// The NATS connection came back, or NATS dropped messages.
    Reconnect,
    /// Nothing arrived for a while on a session with followers.
    Idle,
    /// The hub was loaded from the store.
    Load,
    /// A publisher attached, and the hub must know every stored frame first.
    Publisher,
}

impl CatchUpTrigger {
    /// Returns the metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CatchUpTrigger::Gap => "gap",
            CatchUpTrigger::Reconnect => "reconnect",
            CatchUpTrigger::Idle => "idle",
            CatchUpTrigger::Load => "load",
            CatchUpTrigger::Publisher => "publisher",
        }
    }
}

impl SessionHub {
    /// Applies a frame that another node committed at `offset`.
    pub(crate) fn apply_remote_frame(
        self: &Arc<Self>,
        offset: u64,
        header: &FrameHeader,
        delivery: Bytes,
    ) -> Applied {
        let mut state = self.lock();
        if state.retired {
            return Applied::Retired;
        }
        if offset < state.next_offset {
            return Applied::Known;
        }
        if offset > state.next_offset {
            return Applied::Gap {
                expected: state.next_offset,
            };
        }
        if state.committed < state.next_offset {
            // This node has uncommitted frames of its own at these offsets:
            // another node's publisher got there first. The store rejects
            // this node's frames, which fails and drops the hub.
            return Applied::Known;
        }
        state.append_committed(offset, header, delivery);
        state.trim_ring(self.ring_budget());
        self.publish(state);
        Applied::Appended
    }

    /// Applies a session end that another node committed after the frames
    /// below `end_offset`.
    pub(crate) fn apply_remote_end(self: &Arc<Self>, end_offset: u64) -> Applied {
        let mut state = self.lock();
        if state.retired {
            return Applied::Retired;
        }
        if state.end.is_some() {
            return Applied::Known;
        }
        if state.next_offset < end_offset {
            return Applied::Gap {
                expected: state.next_offset,
            };
        }
        state.ending = true;
        state.end = Some(end_offset);
        self.publish(state);
        Applied::Appended
    }

    /// Closes the publish socket of this node if it attached before
    /// `attached_at` (Unix milliseconds), because a publisher of the same
    /// session attached to another node then.
    pub(crate) fn evict_publisher_attached_before(&self, attached_at: i64) {
        let mut state = self.lock();
        if state.publisher_attached_at >= attached_at {
            return;
        }
        if let Some((_, replaced)) = state.publisher.take() {
            tracing::info!(
                session_id = %self.session_id(),
                "publisher attached on another node: closing this node's publish socket"
            );
            replaced.cancel();
        }
    }

    /// Returns whether the hub should look in the store for frames whose
    /// NATS message was lost: it has followers, no publisher here, the
    /// session is open and nothing arrived for `idle`.
    pub(crate) fn needs_idle_resync(&self, idle: Duration, now: Instant) -> bool {
        let state = self.lock();
        !state.retired
            && state.end.is_none()
            && state.publisher.is_none()
            && !state.followers.is_empty()
            && now.duration_since(state.last_append) >= idle
    }

    /// Reads the frames after the hub's next offset, and the session end,
    /// from the store and applies them. Returns the number of frames applied.
    pub(crate) async fn catch_up(
        self: &Arc<Self>,
        store: &Store,
        trigger: CatchUpTrigger,
    ) -> Result<u64, StoreError> {
        let session_id = self.session_id();
        let mut applied: u64 = 0;
        loop {
            let from = self.next_offset();
            let frames = store
                .frames_between(
                    session_id,
                    from,
                    i64::MAX as u64,
                    CATCH_UP_FRAMES,
                    CATCH_UP_BYTES,
                )
                .await?;
            let mut progressed = false;
            for frame in frames {
                let header = api::decode_delivery(&frame.delivery)
                    .and_then(|(_, bytes)| FrameHeader::decode_frame(bytes).ok())
                    .ok_or(StoreError::Corrupt {
                        what: "frame header",
                    })?;
                match self.apply_remote_frame(frame.offset, &header, frame.delivery) {
                    Applied::Appended => {
                        applied += 1;
                        progressed = true;
                    }
                    Applied::Known => {}
                    Applied::Gap { .. } | Applied::Retired => break,
                }
            }
            if !progressed {
                break;
            }
        }
        counter!(FANOUT_CATCH_UP_FRAMES, "trigger" => trigger.label()).increment(applied);

        if self.lock().end.is_none() {
            let ended = store
                .session(session_id)
                .await?
                .is_some_and(|record| record.ended_at.is_some());
            if ended {
                let tail = store.session_tail(session_id).await?;
                self.apply_remote_end(tail.next_offset);
            }
        }
        Ok(applied)
    }

    /// Marks a catch-up as requested. Returns whether the caller must start
    /// one, because none is running.
    pub(super) fn request_catch_up(&self) -> bool {
        self.catch_up.requested.store(true, Ordering::SeqCst);
        !self.catch_up.running.swap(true, Ordering::SeqCst)
    }

    /// Takes a pending catch-up request. When there is none, marks the
    /// running catch-up as finished, unless a request raced in.
    pub(super) fn take_catch_up_request(&self) -> bool {
        loop {
            if self.catch_up.requested.swap(false, Ordering::SeqCst) {
                return true;
            }
            self.catch_up.running.store(false, Ordering::SeqCst);
            let raced = self.catch_up.requested.load(Ordering::SeqCst);
            if !raced || self.catch_up.running.swap(true, Ordering::SeqCst) {
                return false;
            }
        }
    }
}

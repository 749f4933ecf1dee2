//! The fields of a session's in-memory state and the steps that change
//! them. [`super::session::SessionHub`] holds it under its lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use sealcast_protocol::{api, FrameHeader, StreamId};
use tokio_util::sync::CancellationToken;

use super::queue::{FollowerQueue, Pushed};
use super::session::{Offer, Progress};
use super::HubFrame;
use crate::store::{SessionRecord, SessionTail, StoreFault, WriteOp};

/// The mutable part of a session hub.
pub(super) struct HubState {
    pub(super) next_offset: u64,
    pub(super) committed: u64,
    pub(super) end: Option<u64>,
    /// The end was requested: frames are refused from now on.
    pub(super) ending: bool,
    pub(super) end_pending: bool,
    pub(super) failed: Option<StoreFault>,
    pub(super) retired: bool,
    pub(super) leases: usize,
    streams: HashMap<StreamId, StreamPosition>,
    /// Recent frames in offset order, including every uncommitted one.
    pub(super) ring: VecDeque<Arc<HubFrame>>,
    ring_bytes: usize,
    pub(super) followers: Vec<(u64, Arc<FollowerQueue>)>,
    pub(super) publisher: Option<(u64, CancellationToken)>,
    /// When the current publisher attached, in Unix milliseconds.
    pub(super) publisher_attached_at: i64,
    next_id: u64,
    /// Store writes in offset order, not yet in the store's queue.
    pub(super) unstored: VecDeque<WriteOp>,
    /// When the last frame was appended, or the hub was loaded.
    pub(super) last_append: Instant,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct StreamPosition {
    next_seq: u64,
    last_offset: u64,
}

impl HubState {
    pub(super) fn new(record: &SessionRecord, tail: &SessionTail) -> HubState {
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
            failed: None,
            retired: false,
            leases: 0,
            streams,
            ring: VecDeque::new(),
            ring_bytes: 0,
            followers: Vec::new(),
            publisher: None,
            publisher_attached_at: 0,
            next_id: 0,
            unstored: VecDeque::new(),
            last_append: Instant::now(),
        }
    }

    /// Returns the outcome for a frame that cannot be accepted now, or `None`
    /// when it is the next frame of its stream.
    pub(super) fn check(&self, header: &FrameHeader) -> Option<Offer> {
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
    pub(super) fn append(&mut self, header: &FrameHeader, frame: &[u8]) -> Arc<HubFrame> {
        let offset = self.next_offset;
        let delivery = Bytes::from(api::encode_delivery(offset, frame));
        self.append_delivery(header, delivery)
    }

    /// Appends a frame that another node committed at the next offset, as
    /// [`Self::append`] does, and counts it as committed.
    pub(super) fn append_committed(&mut self, offset: u64, header: &FrameHeader, delivery: Bytes) {
        debug_assert_eq!(offset, self.next_offset);
        self.append_delivery(header, delivery);
        self.committed = self.next_offset;
    }

    /// Returns the frame at `offset` if the ring still contains it.
    pub(super) fn ring_frame(&self, offset: u64) -> Option<Arc<HubFrame>> {
        let first = self.ring.front()?.offset;
        let index = usize::try_from(offset.checked_sub(first)?).ok()?;
        self.ring.get(index).cloned()
    }

    fn append_delivery(&mut self, header: &FrameHeader, delivery: Bytes) -> Arc<HubFrame> {
        let offset = self.next_offset;
        let frame = Arc::new(HubFrame {
            offset,
            kind: header.kind,
            delivery,
        });
        self.next_offset += 1;
        self.last_append = Instant::now();
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

    pub(super) fn progress(&self) -> Progress {
        Progress {
            committed: self.committed,
            end: self.end,
            failed: self.failed,
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.leases == 0 && self.committed == self.next_offset && !self.end_pending
    }

    pub(super) fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn ring_start(&self) -> u64 {
        self.ring
            .front()
            .map_or(self.next_offset, |frame| frame.offset)
    }

    /// Drops the oldest committed frames while the ring is over its budget.
    pub(super) fn trim_ring(&mut self, budget: usize) {
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

    pub(super) fn fail(&mut self, fault: StoreFault) {
        self.failed = Some(fault);
        self.retired = true;
        self.ring.clear();
        self.ring_bytes = 0;
        self.followers.clear();
    }
}

//! Sealed frames kept until the relay acknowledges them.
//!
//! After a key rotation the outbox contains frames of two streams: the tail of
//! the closed stream and the start of the new one. Both stay in the order
//! they were sealed, so a resend after a reconnect repeats that order.

use std::collections::{HashMap, VecDeque};

use sealcast_protocol::StreamId;

/// The effect of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// This many frames were acknowledged and forgotten.
    Advanced(usize),
    /// The acknowledgement covers nothing new, for example one repeated after a resend.
    Stale,
    /// The acknowledgement names a stream this outbox never sent a frame of.
    OtherStream,
    /// The acknowledgement covers a sequence number never sent, which the relay must not do.
    BeyondSent,
}

/// A frame waiting for its acknowledgement.
#[derive(Debug)]
struct Pending {
    stream_id: StreamId,
    seq: u64,
    frame: Vec<u8>,
}

/// Sending progress of one stream.
#[derive(Debug, Clone, Copy)]
struct StreamProgress {
    last_pushed: u64,
    acknowledged: Option<u64>,
}

/// Unacknowledged frames of the streams of one publisher, in the order they
/// were pushed, with a window limit over all of them.
#[derive(Debug)]
pub(crate) struct Outbox {
    window: usize,
    pending: VecDeque<Pending>,
    streams: HashMap<StreamId, StreamProgress>,
    /// The stream of the frame pushed last.
    current: Option<StreamId>,
    last_offset: Option<u64>,
}

impl Outbox {
    /// Creates an outbox holding at most `window` unacknowledged frames (at least 1).
    pub(crate) fn new(window: usize) -> Self {
        Outbox {
            window: window.max(1),
            pending: VecDeque::new(),
            streams: HashMap::new(),
            current: None,
            last_offset: None,
        }
    }

    /// Returns whether another frame may be sent before more acknowledgements arrive.
    pub(crate) fn has_room(&self) -> bool {
        self.pending.len() < self.window
    }

    /// Keeps a frame that is about to be sent. Sequence numbers must
    /// increase within a stream.
    pub(crate) fn push(&mut self, stream_id: StreamId, seq: u64, frame: Vec<u8>) {
        let progress = self.streams.entry(stream_id).or_insert(StreamProgress {
            last_pushed: seq,
            acknowledged: None,
        });
        debug_assert!(progress.last_pushed <= seq);
        progress.last_pushed = seq;
        self.current = Some(stream_id);
        self.pending.push_back(Pending {
            stream_id,
            seq,
            frame,
        });
    }

    /// Applies a cumulative acknowledgement of every frame of `stream_id` up to `seq`.
    pub(crate) fn acknowledge(&mut self, stream_id: StreamId, seq: u64, offset: u64) -> AckOutcome {
        let Some(progress) = self.streams.get_mut(&stream_id) else {
            return AckOutcome::OtherStream;
        };
        if seq > progress.last_pushed {
            return AckOutcome::BeyondSent;
        }
        if progress
            .acknowledged
            .is_some_and(|acknowledged| seq <= acknowledged)
        {
            return AckOutcome::Stale;
        }
        progress.acknowledged = Some(seq);

        let before = self.pending.len();
        self.pending
            .retain(|pending| pending.stream_id != stream_id || pending.seq > seq);
        self.last_offset = Some(self.last_offset.map_or(offset, |last| last.max(offset)));
        AckOutcome::Advanced(before - self.pending.len())
    }

    /// Returns the unacknowledged frames, in the order they were pushed, for a resend.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.iter().map(|pending| pending.frame.as_slice())
    }

    /// Returns the number of unacknowledged frames.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Returns whether every pushed frame is acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Returns the highest acknowledged sequence number of the stream of
    /// the frame pushed last.
    pub(crate) fn acknowledged(&self) -> Option<u64> {
        self.current
            .and_then(|stream_id| self.streams.get(&stream_id))
            .and_then(|progress| progress.acknowledged)
    }

    /// Returns the highest session offset acknowledged, of any stream.
    pub(crate) fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: StreamId = StreamId([1; 16]);
    const NEXT_STREAM: StreamId = StreamId([3; 16]);

    fn filled(count: u64, window: usize) -> Outbox {
        let mut outbox = Outbox::new(window);
        for seq in 0..count {
            outbox.push(STREAM, seq, vec![seq as u8]);
        }
        outbox
    }

    #[test]
    fn window_limits_unacknowledged_frames() {
        let mut outbox = filled(2, 3);
        assert!(outbox.has_room());
        outbox.push(STREAM, 2, vec![2]);
        assert!(!outbox.has_room());
        outbox.acknowledge(STREAM, 0, 10);
        assert!(outbox.has_room());
    }

    #[test]
    fn acknowledgement_is_cumulative() {
        let mut outbox = filled(5, 10);
        assert_eq!(outbox.acknowledge(STREAM, 2, 12), AckOutcome::Advanced(3));
        let left: Vec<&[u8]> = outbox.frames().collect();
        assert_eq!(left, [&[3u8][..], &[4u8][..]]);
        assert_eq!(outbox.acknowledged(), Some(2));
        assert_eq!(outbox.last_offset(), Some(12));
    }

    #[test]
    fn repeated_acknowledgement_is_stale() {
        let mut outbox = filled(3, 10);
        outbox.acknowledge(STREAM, 1, 5);
        assert_eq!(outbox.acknowledge(STREAM, 1, 5), AckOutcome::Stale);
        assert_eq!(outbox.acknowledge(STREAM, 0, 4), AckOutcome::Stale);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn foreign_and_future_acknowledgements_change_nothing() {
        let mut outbox = filled(3, 10);
        assert_eq!(
            outbox.acknowledge(StreamId([2; 16]), 1, 5),
            AckOutcome::OtherStream
        );
        assert_eq!(outbox.acknowledge(STREAM, 3, 5), AckOutcome::BeyondSent);
        assert_eq!(outbox.len(), 3);
        assert_eq!(
            Outbox::new(4).acknowledge(STREAM, 0, 0),
            AckOutcome::OtherStream
        );
    }

    #[test]
    fn zero_window_still_sends() {
        assert!(Outbox::new(0).has_room());
    }

    #[test]
    fn rotated_streams_resend_in_push_order() {
        let mut outbox = filled(3, 10);
        outbox.push(NEXT_STREAM, 0, vec![10]);
        outbox.push(NEXT_STREAM, 1, vec![11]);

        assert_eq!(outbox.acknowledge(STREAM, 0, 7), AckOutcome::Advanced(1));
        let left: Vec<&[u8]> = outbox.frames().collect();
        assert_eq!(left, [&[1u8][..], &[2u8][..], &[10u8][..], &[11u8][..]]);
        // The acknowledged sequence number is that of the newest stream.
        assert_eq!(outbox.acknowledged(), None);

        assert_eq!(
            outbox.acknowledge(NEXT_STREAM, 0, 9),
            AckOutcome::Advanced(1)
        );
        assert_eq!(outbox.acknowledged(), Some(0));
        assert_eq!(outbox.acknowledge(STREAM, 2, 8), AckOutcome::Advanced(2));
        let left: Vec<&[u8]> = outbox.frames().collect();
        assert_eq!(left, [&[11u8][..]]);
        // An older offset arriving late does not move the highest one back.
        assert_eq!(outbox.last_offset(), Some(9));
    }
}

//! Sealed frames kept until the relay acknowledges them.

use std::collections::VecDeque;

use sealcast_protocol::StreamId;

/// The effect of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// This many frames were acknowledged and forgotten.
    Advanced(usize),
    /// The acknowledgement covers nothing new, for example one repeated after a resend.
    Stale,
    /// The acknowledgement names another stream.
    OtherStream,
    /// The acknowledgement covers a sequence number never sent, which the relay must not do.
    BeyondSent,
}

/// Unacknowledged frames of one stream, in sequence order, with a window limit.
#[derive(Debug)]
pub(crate) struct Outbox {
    stream_id: StreamId,
    window: usize,
    pending: VecDeque<(u64, Vec<u8>)>,
    last_pushed: Option<u64>,
    acknowledged: Option<u64>,
    last_offset: Option<u64>,
}

impl Outbox {
    /// Creates an outbox holding at most `window` unacknowledged frames (at least 1).
    pub(crate) fn new(stream_id: StreamId, window: usize) -> Self {
        Outbox {
            stream_id,
            window: window.max(1),
            pending: VecDeque::new(),
            last_pushed: None,
            acknowledged: None,
            last_offset: None,
        }
    }

    /// Returns whether another frame may be sent before more acknowledgements arrive.
    pub(crate) fn has_room(&self) -> bool {
        self.pending.len() < self.window
    }

    /// Keeps a frame that is about to be sent. Sequence numbers must increase.
    pub(crate) fn push(&mut self, seq: u64, frame: Vec<u8>) {
        debug_assert!(self.last_pushed.is_none_or(|last| seq > last));
        self.last_pushed = Some(seq);
        self.pending.push_back((seq, frame));
    }

    /// Applies a cumulative acknowledgement of every frame up to `seq`.
    pub(crate) fn acknowledge(&mut self, stream_id: StreamId, seq: u64, offset: u64) -> AckOutcome {
        if stream_id != self.stream_id {
            return AckOutcome::OtherStream;
        }
        if self.last_pushed.is_none_or(|last| seq > last) {
            return AckOutcome::BeyondSent;
        }
        if self
            .acknowledged
            .is_some_and(|acknowledged| seq <= acknowledged)
        {
            return AckOutcome::Stale;
        }

        let before = self.pending.len();
        while self
            .pending
            .front()
            .is_some_and(|(pending, _)| *pending <= seq)
        {
            self.pending.pop_front();
        }
        self.acknowledged = Some(seq);
        self.last_offset = Some(offset);
        AckOutcome::Advanced(before - self.pending.len())
    }

    /// Returns the unacknowledged frames, oldest first, for a resend.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.pending.iter().map(|(_, frame)| frame.as_slice())
    }

    /// Returns the number of unacknowledged frames.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Returns whether every pushed frame is acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Returns the highest acknowledged sequence number.
    pub(crate) fn acknowledged(&self) -> Option<u64> {
        self.acknowledged
    }

    /// Returns the session offset of the highest acknowledged frame.
    pub(crate) fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: StreamId = StreamId([1; 16]);

    fn filled(count: u64, window: usize) -> Outbox {
        let mut outbox = Outbox::new(STREAM, window);
        for seq in 0..count {
            outbox.push(seq, vec![seq as u8]);
        }
        outbox
    }

    #[test]
    fn window_limits_unacknowledged_frames() {
        let mut outbox = filled(2, 3);
        assert!(outbox.has_room());
        outbox.push(2, vec![2]);
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
            Outbox::new(STREAM, 4).acknowledge(STREAM, 0, 0),
            AckOutcome::BeyondSent
        );
    }

    #[test]
    fn zero_window_still_sends() {
        assert!(Outbox::new(STREAM, 0).has_room());
    }
}

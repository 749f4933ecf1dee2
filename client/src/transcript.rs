//! The transcript a follower builds from segment revisions.
//!
//! The model keeps the latest revision of each segment. A final revision
//! replaces any interim one, and an interim revision never replaces a final
//! one. Otherwise a higher revision number replaces a lower one. Segments are
//! keyed by stream and segment id, because every publishing run opens a new
//! stream that numbers its segments from 0 again. Segments are ordered by the
//! order in which their streams first appeared, then by segment id.

use std::collections::BTreeMap;

use sealcast_protocol::{StreamId, TranscriptSegment};

/// The effect of applying a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A segment not seen before was added.
    Added,
    /// An interim segment got a newer interim revision.
    Revised,
    /// A segment got its final revision.
    Finalized,
    /// Nothing: the revision was older than or the same as the one held, or
    /// an interim revision of a segment that is already final.
    Unchanged,
}

/// The current transcript of a session.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    streams: Vec<StreamId>,
    segments: BTreeMap<(usize, u64), TranscriptSegment>,
}

impl Transcript {
    /// Creates an empty transcript.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a revision of a segment published on `stream_id`.
    pub fn apply(&mut self, stream_id: StreamId, segment: TranscriptSegment) -> Change {
        let key = (self.stream_index(stream_id), segment.segment_id);
        let Some(held) = self.segments.get(&key) else {
            let change = if segment.is_final {
                Change::Finalized
            } else {
                Change::Added
            };
            self.segments.insert(key, segment);
            return change;
        };

        let newer = match (held.is_final, segment.is_final) {
            (false, true) => true,
            (true, false) => false,
            _ => segment.revision > held.revision,
        };
        if !newer {
            return Change::Unchanged;
        }
        let change = if segment.is_final && !held.is_final {
            Change::Finalized
        } else {
            Change::Revised
        };
        self.segments.insert(key, segment);
        change
    }

    /// Returns the segment with `segment_id` on `stream_id`, if any.
    pub fn get(&self, stream_id: StreamId, segment_id: u64) -> Option<&TranscriptSegment> {
        let index = self.streams.iter().position(|known| *known == stream_id)?;
        self.segments.get(&(index, segment_id))
    }

    /// Returns every segment's latest revision, in order.
    pub fn segments(&self) -> impl Iterator<Item = &TranscriptSegment> {
        self.segments.values()
    }

    /// Returns the number of segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Returns whether no segment has arrived.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Returns the number of segments whose final revision has arrived.
    pub fn final_count(&self) -> usize {
        self.segments
            .values()
            .filter(|segment| segment.is_final)
            .count()
    }

    fn stream_index(&mut self, stream_id: StreamId) -> usize {
        match self.streams.iter().position(|known| *known == stream_id) {
            Some(index) => index,
            None => {
                self.streams.push(stream_id);
                self.streams.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: StreamId = StreamId([1; 16]);

    fn revision(id: u64, revision: u32, is_final: bool, text: &str) -> TranscriptSegment {
        TranscriptSegment {
            segment_id: id,
            revision,
            speaker: "doctor".into(),
            start_ms: id * 1000,
            end_ms: id * 1000 + 500,
            text: text.into(),
            is_final,
        }
    }

    fn texts(transcript: &Transcript) -> Vec<&str> {
        transcript.segments().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn interim_is_replaced_by_final() {
        let mut transcript = Transcript::new();
        assert_eq!(
            transcript.apply(STREAM, revision(0, 0, false, "How")),
            Change::Added
        );
        assert_eq!(
            transcript.apply(STREAM, revision(0, 1, false, "How are")),
            Change::Revised
        );
        assert_eq!(
            transcript.apply(STREAM, revision(0, 2, true, "How are you?")),
            Change::Finalized
        );
        assert_eq!(texts(&transcript), ["How are you?"]);
        assert_eq!(transcript.final_count(), 1);
    }

    #[test]
    fn older_and_interim_after_final_change_nothing() {
        let mut transcript = Transcript::new();
        transcript.apply(STREAM, revision(0, 3, false, "late"));
        assert_eq!(
            transcript.apply(STREAM, revision(0, 2, false, "early")),
            Change::Unchanged
        );
        transcript.apply(STREAM, revision(0, 4, true, "final"));
        assert_eq!(
            transcript.apply(STREAM, revision(0, 9, false, "stray")),
            Change::Unchanged
        );
        assert_eq!(
            transcript.apply(STREAM, revision(0, 4, true, "final")),
            Change::Unchanged
        );
        assert_eq!(texts(&transcript), ["final"]);
    }

    #[test]
    fn final_replaces_interim_with_higher_number() {
        let mut transcript = Transcript::new();
        transcript.apply(STREAM, revision(0, 7, false, "interim"));
        assert_eq!(
            transcript.apply(STREAM, revision(0, 1, true, "final")),
            Change::Finalized
        );
    }

    #[test]
    fn segments_are_in_id_order() {
        let mut transcript = Transcript::new();
        transcript.apply(STREAM, revision(2, 0, true, "c"));
        transcript.apply(STREAM, revision(0, 0, true, "a"));
        transcript.apply(STREAM, revision(1, 0, false, "b"));
        assert_eq!(texts(&transcript), ["a", "b", "c"]);
        assert_eq!(transcript.len(), 3);
    }

    #[test]
    fn streams_keep_their_own_ids() {
        let mut transcript = Transcript::new();
        let second = StreamId([2; 16]);
        transcript.apply(STREAM, revision(0, 0, true, "first run"));
        transcript.apply(second, revision(0, 0, true, "second run"));
        assert_eq!(texts(&transcript), ["first run", "second run"]);
        assert_eq!(transcript.get(second, 0).unwrap().text, "second run");
    }
}

//! Merging inputs into one conversation and numbering its segments.

use std::collections::{HashMap, HashSet};

use sealcast_protocol::TranscriptSegment;

use super::InputSegment;

/// Merges the segments of several inputs by start time. The sort is stable:
/// segments with equal start times keep the order of the inputs, then the
/// order within each input.
pub fn merge_by_start(inputs: Vec<Vec<InputSegment>>) -> Vec<InputSegment> {
    let mut merged: Vec<InputSegment> = inputs.into_iter().flatten().collect();
    merged.sort_by_key(|segment| segment.start_ms);
    merged
}

/// Assigns segment ids and revisions to a whole input, reserving the ids the
/// input gives explicitly first so that no assigned id collides with them.
pub fn assign_ids(segments: Vec<InputSegment>) -> Vec<TranscriptSegment> {
    let mut assigner = IdAssigner::new();
    for id in segments.iter().filter_map(|segment| segment.segment_id) {
        assigner.reserve(id);
    }
    segments
        .into_iter()
        .map(|segment| assigner.assign(segment))
        .collect()
}

/// Numbers segments one at a time, for inputs read as a stream.
///
/// A segment without an id gets the lowest id not yet used or reserved. A
/// segment without a revision gets one more than the last revision of its id,
/// or 0. In a stream, an explicit id that arrives after the same id was
/// assigned refers to that assigned segment, so a stream should give all ids
/// or none.
#[derive(Debug, Default)]
pub struct IdAssigner {
    used: HashSet<u64>,
    next_free: u64,
    next_revision: HashMap<u64, u32>,
}

impl IdAssigner {
    /// Creates an assigner with no ids used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks an id as taken, so that it is never assigned to a segment without an id.
    pub fn reserve(&mut self, id: u64) {
        self.used.insert(id);
    }

    /// Turns an input segment into a transcript segment with an id and a revision.
    pub fn assign(&mut self, segment: InputSegment) -> TranscriptSegment {
        let segment_id = match segment.segment_id {
            Some(id) => {
                self.used.insert(id);
                id
            }
            None => self.take_free_id(),
        };

        let next_revision = self.next_revision.entry(segment_id).or_insert(0);
        let revision = segment.revision.unwrap_or(*next_revision);
        *next_revision = revision.saturating_add(1).max(*next_revision);

        TranscriptSegment {
            segment_id,
            revision,
            speaker: segment.speaker,
            start_ms: segment.start_ms,
            end_ms: segment.end_ms,
            text: segment.text,
            is_final: segment.is_final,
        }
    }

    fn take_free_id(&mut self) -> u64 {
        while self.used.contains(&self.next_free) {
            self.next_free += 1;
        }
        let id = self.next_free;
        self.used.insert(id);
        self.next_free += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(speaker: &str, start_ms: u64, text: &str) -> InputSegment {
        InputSegment {
            segment_id: None,
            revision: None,
            speaker: speaker.into(),
            start_ms,
            end_ms: start_ms + 1000,
            text: text.into(),
            is_final: true,
        }
    }

    #[test]
    fn merge_orders_by_start_time() {
        let doctor = vec![segment("doctor", 0, "a"), segment("doctor", 5000, "c")];
        let patient = vec![segment("patient", 2000, "b"), segment("patient", 9000, "d")];
        let texts: Vec<String> = merge_by_start(vec![doctor, patient])
            .into_iter()
            .map(|segment| segment.text)
            .collect();
        assert_eq!(texts, ["a", "b", "c", "d"]);
    }

    #[test]
    fn merge_is_stable_for_equal_starts() {
        let first = vec![
            segment("doctor", 1000, "first-1"),
            segment("doctor", 1000, "first-2"),
        ];
        let second = vec![segment("patient", 1000, "second")];
        let texts: Vec<String> = merge_by_start(vec![first, second])
            .into_iter()
            .map(|segment| segment.text)
            .collect();
        assert_eq!(texts, ["first-1", "first-2", "second"]);
    }

    #[test]
    fn ids_are_assigned_in_order_around_explicit_ones() {
        let mut explicit = segment("a", 0, "x");
        explicit.segment_id = Some(1);
        let segments = assign_ids(vec![segment("a", 0, "y"), explicit, segment("a", 0, "z")]);
        let ids: Vec<u64> = segments.iter().map(|segment| segment.segment_id).collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    #[test]
    fn revisions_count_per_segment() {
        let mut interim = segment("a", 0, "Good");
        interim.segment_id = Some(4);
        interim.is_final = false;
        let mut last = segment("a", 0, "Good morning");
        last.segment_id = Some(4);
        let segments = assign_ids(vec![interim, last, segment("b", 10, "Hi")]);
        assert_eq!(segments[0].revision, 0);
        assert_eq!(segments[1].revision, 1);
        assert_eq!(segments[2].segment_id, 0);
        assert_eq!(segments[2].revision, 0);
    }

    #[test]
    fn explicit_revision_moves_the_counter() {
        let mut assigner = IdAssigner::new();
        let mut first = segment("a", 0, "x");
        first.segment_id = Some(2);
        first.revision = Some(5);
        let mut second = segment("a", 0, "y");
        second.segment_id = Some(2);
        assert_eq!(assigner.assign(first).revision, 5);
        assert_eq!(assigner.assign(second).revision, 6);
    }
}

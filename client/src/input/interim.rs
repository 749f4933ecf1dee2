//! Interim revisions made from final segments, as live speech recognition
//! would send them.
//!
//! A final segment of `n` words becomes `n - 1` interim revisions holding the
//! first 1, 2, … `n - 1` words, then the final revision with the full text.
//! Interim revision `k` (counting from 1) ends at `start + (end - start) * k / n`,
//! the time its last word would have been heard if the words were evenly
//! spread, and the final revision keeps the segment's own end. Revisions count
//! up from the final segment's own revision. Segments that are already
//! interim pass through unchanged.

use sealcast_protocol::TranscriptSegment;

use super::InputError;

/// Expands every final segment into its interim revisions and the final one, keeping order.
pub fn expand_all(segments: Vec<TranscriptSegment>) -> Result<Vec<TranscriptSegment>, InputError> {
    let mut expanded = Vec::with_capacity(segments.len() * 4);
    for segment in segments {
        expanded.extend(expand(segment)?);
    }
    Ok(expanded)
}

/// Expands one segment into its revisions. An interim segment, or a final one
/// of fewer than two words, comes back alone.
pub fn expand(segment: TranscriptSegment) -> Result<Vec<TranscriptSegment>, InputError> {
    let words: Vec<&str> = segment.text.split_whitespace().collect();
    if !segment.is_final || words.len() < 2 {
        return Ok(vec![segment]);
    }

    let interim_count = words.len() - 1;
    let final_revision = u32::try_from(interim_count)
        .ok()
        .and_then(|count| segment.revision.checked_add(count))
        .ok_or(InputError::TooManyWords {
            segment_id: segment.segment_id,
            words: words.len(),
            max: (u32::MAX - segment.revision) as usize + 1,
        })?;

    let mut revisions = Vec::with_capacity(words.len());
    for prefix_len in 1..words.len() {
        revisions.push(TranscriptSegment {
            segment_id: segment.segment_id,
            revision: segment.revision + (prefix_len as u32 - 1),
            speaker: segment.speaker.clone(),
            start_ms: segment.start_ms,
            end_ms: time_of_word(&segment, prefix_len, words.len()),
            text: words[..prefix_len].join(" "),
            is_final: false,
        });
    }
    revisions.push(TranscriptSegment {
        revision: final_revision,
        ..segment
    });
    Ok(revisions)
}

/// Returns the time at which the first `spoken` of `total` words have been spoken.
fn time_of_word(segment: &TranscriptSegment, spoken: usize, total: usize) -> u64 {
    let duration = u128::from(segment.end_ms.saturating_sub(segment.start_ms));
    let elapsed = duration * spoken as u128 / total as u128;
    // `elapsed` is at most `duration`, which came from a u64.
    segment.start_ms + elapsed as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_segment(text: &str) -> TranscriptSegment {
        TranscriptSegment {
            segment_id: 3,
            revision: 0,
            speaker: "doctor".into(),
            start_ms: 1000,
            end_ms: 5000,
            text: text.into(),
            is_final: true,
        }
    }

    #[test]
    fn prefixes_grow_then_final() {
        let revisions = expand(final_segment("How  can I help?")).unwrap();
        let texts: Vec<&str> = revisions.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["How", "How can", "How can I", "How  can I help?"]);
        let revision_numbers: Vec<u32> = revisions.iter().map(|r| r.revision).collect();
        assert_eq!(revision_numbers, [0, 1, 2, 3]);
        let finals: Vec<bool> = revisions.iter().map(|r| r.is_final).collect();
        assert_eq!(finals, [false, false, false, true]);
    }

    #[test]
    fn interim_times_lie_between_start_and_end() {
        let revisions = expand(final_segment("one two three four")).unwrap();
        let ends: Vec<u64> = revisions.iter().map(|r| r.end_ms).collect();
        assert_eq!(ends, [2000, 3000, 4000, 5000]);
        assert!(revisions.iter().all(|r| r.start_ms == 1000));
        assert!(revisions.iter().all(|r| r.segment_id == 3));
    }

    #[test]
    fn single_word_and_interim_pass_through() {
        assert_eq!(expand(final_segment("Yes.")).unwrap().len(), 1);
        let mut interim = final_segment("not yet final");
        interim.is_final = false;
        assert_eq!(expand(interim.clone()).unwrap(), vec![interim]);
    }

    #[test]
    fn revisions_continue_from_the_final_revision() {
        let mut segment = final_segment("a b");
        segment.revision = 4;
        let revisions = expand(segment).unwrap();
        assert_eq!(revisions[0].revision, 4);
        assert_eq!(revisions[1].revision, 5);
    }

    #[test]
    fn revision_overflow_is_an_error() {
        let mut segment = final_segment("a b c");
        segment.revision = u32::MAX - 1;
        let err = expand(segment).unwrap_err();
        assert!(
            matches!(err, InputError::TooManyWords { words: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn expand_all_keeps_segment_order() {
        let mut second = final_segment("c d");
        second.segment_id = 4;
        let all = expand_all(vec![final_segment("a b"), second]).unwrap();
        let ids: Vec<u64> = all.iter().map(|r| r.segment_id).collect();
        assert_eq!(ids, [3, 3, 4, 4]);
    }
}

//! Publishing pace: as fast as possible, or at the pace of the transcript's
//! own timestamps, optionally sped up.
//!
//! A segment is sent when its text would be known live, which is its end time
//! (`end_ms`): speech recognition can only report words after they are
//! spoken. [`schedule`] orders segments by that time, and a [`Pacer`] sleeps
//! until it comes. Time is measured with [`tokio::time`], so tests can run on
//! paused time.

use std::time::Duration;

use sealcast_protocol::TranscriptSegment;
use tokio::time::Instant;

/// Publishing pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Send every segment as soon as the previous one is sent.
    Fast,
    /// Send each segment at its end time, divided by `speed` (1.0 is real time).
    Timed {
        /// Speed-up factor, finite and greater than 0.
        speed: f64,
    },
}

impl Pace {
    /// Real time.
    pub const REALTIME: Pace = Pace::Timed { speed: 1.0 };
}

/// Orders segments by the time they would be sent live: their end time. The
/// sort is stable, and the revisions of one segment keep their input order,
/// because each revision's send time is raised to at least that of the
/// revision before it.
pub fn schedule(segments: Vec<TranscriptSegment>) -> Vec<TranscriptSegment> {
    let mut latest_by_segment = std::collections::HashMap::new();
    let mut timed: Vec<(u64, TranscriptSegment)> = segments
        .into_iter()
        .map(|segment| {
            let latest = latest_by_segment.entry(segment.segment_id).or_insert(0);
            *latest = segment.end_ms.max(*latest);
            (*latest, segment)
        })
        .collect();
    timed.sort_by_key(|(send_at, _)| *send_at);
    timed.into_iter().map(|(_, segment)| segment).collect()
}

/// Sleeps until each segment's send time.
///
/// Times are measured from an origin: the transcript time that maps to the
/// moment the first segment is paced. A publisher of a whole file sets the
/// origin to the earliest start time with [`Pacer::with_origin`], so that the
/// first words are heard right away. Without an origin, the first paced
/// segment's start time becomes the origin.
#[derive(Debug)]
pub struct Pacer {
    pace: Pace,
    origin_ms: Option<u64>,
    started: Option<Instant>,
}

impl Pacer {
    /// Creates a pacer whose origin is the first paced segment's start time.
    pub fn new(pace: Pace) -> Self {
        Pacer {
            pace,
            origin_ms: None,
            started: None,
        }
    }

    /// Creates a pacer with a fixed origin in transcript time, in milliseconds.
    pub fn with_origin(pace: Pace, origin_ms: u64) -> Self {
        Pacer {
            pace,
            origin_ms: Some(origin_ms),
            started: None,
        }
    }

    /// Waits until `segment` is due. Returns at once in [`Pace::Fast`], or
    /// when the segment's time has already passed.
    pub async fn wait_for(&mut self, segment: &TranscriptSegment) {
        let Pace::Timed { speed } = self.pace else {
            return;
        };
        let origin_ms = *self.origin_ms.get_or_insert(segment.start_ms);
        let started = *self.started.get_or_insert_with(Instant::now);

        let offset_ms = segment.end_ms.saturating_sub(origin_ms);
        let offset = Duration::from_secs_f64(offset_ms as f64 / 1000.0 / speed);
        tokio::time::sleep_until(started + offset).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(id: u64, start_ms: u64, end_ms: u64) -> TranscriptSegment {
        TranscriptSegment {
            segment_id: id,
            revision: 0,
            speaker: "doctor".into(),
            start_ms,
            end_ms,
            text: "x".into(),
            is_final: true,
        }
    }

    #[test]
    fn schedule_orders_by_end_time() {
        let long = segment(0, 0, 10_000);
        let short = segment(1, 2_000, 3_000);
        let ordered = schedule(vec![long, short]);
        let ids: Vec<u64> = ordered.iter().map(|s| s.segment_id).collect();
        assert_eq!(ids, [1, 0]);
    }

    #[test]
    fn schedule_keeps_revision_order() {
        let mut first = segment(5, 0, 4_000);
        first.is_final = false;
        let mut second = segment(5, 0, 2_000);
        second.revision = 1;
        let other = segment(6, 0, 3_000);
        let ordered = schedule(vec![first, second, other]);
        let keys: Vec<(u64, u32)> = ordered.iter().map(|s| (s.segment_id, s.revision)).collect();
        assert_eq!(keys, [(6, 0), (5, 0), (5, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_waits_for_end_times() {
        let mut pacer = Pacer::with_origin(Pace::REALTIME, 1_000);
        let start = Instant::now();
        pacer.wait_for(&segment(0, 1_000, 3_500)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(2_500));
        pacer.wait_for(&segment(1, 3_000, 4_000)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(3_000));
    }

    #[tokio::test(start_paused = true)]
    async fn speed_divides_waits() {
        let mut pacer = Pacer::new(Pace::Timed { speed: 10.0 });
        let start = Instant::now();
        pacer.wait_for(&segment(0, 60_000, 65_000)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        pacer.wait_for(&segment(1, 70_000, 160_000)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10_000));
    }

    #[tokio::test(start_paused = true)]
    async fn past_segments_do_not_wait() {
        let mut pacer = Pacer::with_origin(Pace::REALTIME, 0);
        pacer.wait_for(&segment(0, 0, 5_000)).await;
        let before = Instant::now();
        pacer.wait_for(&segment(1, 0, 1_000)).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_never_waits() {
        let mut pacer = Pacer::new(Pace::Fast);
        let start = Instant::now();
        pacer.wait_for(&segment(0, 0, 3_600_000)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

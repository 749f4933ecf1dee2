//! A session that streams in the background while a test sends bad input
//! elsewhere, and the checks that its follower stayed connected and
//! received the complete transcript.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::{PublishReport, Publisher};
use sealcast_protocol::TranscriptSegment;
use tokio::task::JoinHandle;

use crate::sample::sample_finals;
use crate::session::{follow_counting_finals, wait_until_connected, FollowOutcome, LiveSession};

/// Pause between two published segments.
const SEGMENT_INTERVAL: Duration = Duration::from_millis(20);

/// Maximum time the follower may take to see the session end.
const FOLLOW_LIMIT: Duration = Duration::from_secs(120);

/// Maximum wait for the follower to receive a new final segment.
const PROGRESS_LIMIT: Duration = Duration::from_secs(5);

/// A publisher and a follower of one session, running until [`finish`](Self::finish).
pub struct BackgroundStream {
    finals_seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    publishing: JoinHandle<(PublishReport, Vec<TranscriptSegment>)>,
    following: JoinHandle<FollowOutcome>,
}

impl BackgroundStream {
    /// Connects a follower of `session`, then publishes the sample's final
    /// segments in a loop until stopped.
    pub async fn start(session: &LiveSession) -> Self {
        let finals_seen = Arc::new(AtomicUsize::new(0));
        let mut follower = session.follower();
        wait_until_connected(&mut follower, FOLLOW_LIMIT).await;
        let following = tokio::spawn(follow_counting_finals(
            follower,
            FOLLOW_LIMIT,
            Arc::clone(&finals_seen),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let publishing = tokio::spawn(publish_until_stopped(
            session.publisher().await,
            Arc::clone(&stop),
        ));
        BackgroundStream {
            finals_seen,
            stop,
            publishing,
            following,
        }
    }

    /// Returns how many final segments the follower has received.
    pub fn finals_seen(&self) -> usize {
        self.finals_seen.load(Ordering::Relaxed)
    }

    /// Waits until the follower has received more than `seen_before` final
    /// segments, and fails naming `after` when it has not within 5 s.
    pub async fn wait_for_progress(&self, seen_before: usize, after: &str) {
        let deadline = tokio::time::Instant::now() + PROGRESS_LIMIT;
        while self.finals_seen() <= seen_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{after}: the streaming session's follower received nothing for {PROGRESS_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops publishing, ends `session` and checks that the follower stayed
    /// connected and received exactly the published transcript.
    pub async fn finish(self, session: &LiveSession) {
        self.stop.store(true, Ordering::Relaxed);
        let (report, published) = self.publishing.await.expect("publishing task panicked");
        assert_eq!(
            report.acknowledged_seq,
            Some(report.frames - 1),
            "the streaming session has unacknowledged frames"
        );
        session.end().await;
        let outcome = self.following.await.expect("following task panicked");

        assert!(outcome.ended, "the follower did not see the end");
        assert!(outcome.end_of_session, "the end frame did not arrive");
        assert_eq!(outcome.disconnects, 0, "the follower lost its connection");
        assert!(
            outcome.rejected.is_empty(),
            "the follower rejected {:?}",
            outcome.rejected
        );
        assert_eq!(outcome.gaps, 0, "the follower reported gaps");
        let received: Vec<&TranscriptSegment> = outcome.finals.iter().map(|(_, _, s)| s).collect();
        let sent: Vec<&TranscriptSegment> = published.iter().collect();
        assert!(
            received == sent,
            "the follower received {} final segments that differ from the {} published",
            received.len(),
            sent.len()
        );
    }
}

/// Publishes the sample's final segments in a loop, each with a new segment
/// id, until `stop` is set, then the end frame.
async fn publish_until_stopped(
    mut publisher: Publisher,
    stop: Arc<AtomicBool>,
) -> (PublishReport, Vec<TranscriptSegment>) {
    let mut published = Vec::new();
    for (index, segment) in sample_finals().iter().cycle().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let segment = TranscriptSegment {
            segment_id: index as u64,
            ..segment.clone()
        };
        publisher
            .publish(&segment)
            .await
            .expect("segment is published");
        published.push(segment);
        tokio::time::sleep(SEGMENT_INTERVAL).await;
    }
    let report = publisher.end().await.expect("session end is published");
    (report, published)
}

//! Support for the fault tests. A consultation is published in the
//! background, and the test can read its highest acknowledged frame at any
//! moment. The checks confirm that every acknowledged frame is stored and
//! that followers received the whole transcript once and in order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sealcast_client::input::{interim, load_files};
use sealcast_client::Publisher;
use sealcast_protocol::{SessionId, StreamId, TranscriptSegment};
use tokio::task::JoinHandle;

use crate::sample::{sample_finals, sample_with_interim};
use crate::session::FollowOutcome;
use crate::store::running_stream_seqs;
use crate::transcripts::{consultations, TRANSCRIPTS_ENV};

/// Value of [`BackgroundPublish::acknowledged`] before the first acknowledgement.
const NONE_ACKNOWLEDGED: u64 = u64::MAX;

/// A consultation to publish: its final segments, and what the publisher
/// sends, which adds interim revisions.
pub struct Consultation {
    /// Name of the consultation, for messages.
    pub name: String,
    /// The final segments a follower must end up with.
    pub finals: Vec<TranscriptSegment>,
    /// Every segment the publisher sends, interim revisions included.
    pub published: Vec<TranscriptSegment>,
}

/// Loads consultation number `index` (modulo their count) of the real
/// transcripts, or the demo sample when `SEALCAST_TRANSCRIPTS` is not set
/// and the test does not run in CI.
pub fn load_consultation(test: &str, index: usize) -> Consultation {
    let dir = std::env::var_os(TRANSCRIPTS_ENV)
        .map(PathBuf::from)
        .filter(|dir| dir.join("primock57").is_dir());
    let Some(dir) = dir else {
        let message = format!("{test}: {TRANSCRIPTS_ENV} does not name a folder with primock57/");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("{message}: publishing the demo sample consultation instead");
        return Consultation {
            name: "demo sample".into(),
            finals: sample_finals(),
            published: sample_with_interim(),
        };
    };
    let all = consultations(&dir);
    assert!(!all.is_empty(), "no consultations in {}", dir.display());
    let chosen = &all[index % all.len()];
    let finals = load_files(&chosen.files, None).expect("transcript parses");
    let published = interim::expand_all(finals.clone()).expect("interim revisions");
    Consultation {
        name: chosen.name.clone(),
        finals,
        published,
    }
}

/// A publisher sending segments with a pause between them on its own task.
pub struct BackgroundPublish {
    /// The publisher's stream.
    pub stream_id: StreamId,
    acknowledged: Arc<AtomicU64>,
    task: JoinHandle<Publisher>,
}

impl BackgroundPublish {
    /// Publishes `segments` on `publisher`, pausing `pause` after each, and
    /// keeps the publisher unfinished for [`Self::join`].
    pub fn start(
        mut publisher: Publisher,
        segments: Vec<TranscriptSegment>,
        pause: Duration,
    ) -> Self {
        let stream_id = publisher.stream_id();
        let acknowledged = Arc::new(AtomicU64::new(NONE_ACKNOWLEDGED));
        let shared = Arc::clone(&acknowledged);
        let task = tokio::spawn(async move {
            for segment in &segments {
                publisher
                    .publish(segment)
                    .await
                    .expect("segment is published");
                record(&shared, &publisher);
                tokio::time::sleep(pause).await;
            }
            record(&shared, &publisher);
            publisher
        });
        BackgroundPublish {
            stream_id,
            acknowledged,
            task,
        }
    }

    /// Returns the highest sequence number the publisher had seen
    /// acknowledged when it last published, or `None`.
    pub fn acknowledged(&self) -> Option<u64> {
        match self.acknowledged.load(Ordering::SeqCst) {
            NONE_ACKNOWLEDGED => None,
            seq => Some(seq),
        }
    }

    /// Checks whether every segment has been handed to the publisher.
    pub fn is_done(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until every segment is handed over and returns the publisher.
    pub async fn join(self) -> Publisher {
        self.task.await.expect("publishing task panicked")
    }
}

fn record(shared: &AtomicU64, publisher: &Publisher) {
    if let Some(seq) = publisher.acknowledged_seq() {
        shared.store(seq, Ordering::SeqCst);
    }
}

/// Checks that the store of the relay in `data_dir` contains every sequence
/// number of `stream` up to `acknowledged`, in order and once each.
pub fn assert_acknowledged_stored(
    data_dir: &Path,
    session: SessionId,
    stream: StreamId,
    acknowledged: Option<u64>,
    when: &str,
) {
    let Some(acknowledged) = acknowledged else {
        return;
    };
    let stored = running_stream_seqs(data_dir, session, stream);
    assert!(
        stored.len() as u64 > acknowledged,
        "{when}: sequence number {acknowledged} was acknowledged but only {} frames of the stream are stored",
        stored.len()
    );
    for (index, seq) in stored.iter().enumerate() {
        assert_eq!(
            *seq, index as u64,
            "{when}: stored frame {index} of the stream has sequence number {seq}"
        );
    }
}

/// Checks that a follower saw the session end and received exactly
/// `expected`'s final segments, each once and in order, with no frame
/// rejected and no gap.
pub fn assert_follower_complete(
    who: &str,
    outcome: &FollowOutcome,
    expected: &[TranscriptSegment],
) {
    assert!(outcome.ended, "{who}: did not see the session end");
    assert!(outcome.end_of_session, "{who}: no end-of-session frame");
    assert!(
        outcome.rejected.is_empty(),
        "{who}: rejected {:?}",
        outcome.rejected
    );
    assert_eq!(
        outcome.gaps, 0,
        "{who}: reported gaps {:?}",
        outcome.gap_reports
    );
    for pair in outcome.opened.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{who}: offset {} arrived after offset {}",
            pair[1],
            pair[0]
        );
    }
    let ids: Vec<u64> = outcome
        .finals
        .iter()
        .map(|(_, _, s)| s.segment_id)
        .collect();
    let expected_ids: Vec<u64> = expected.iter().map(|s| s.segment_id).collect();
    assert_eq!(ids, expected_ids, "{who}: final segment ids differ");
    // Interim revisions raise a final segment's revision number, so the
    // comparison leaves it out.
    let received: Vec<(&str, &str, u64, u64)> = outcome
        .finals
        .iter()
        .map(|(_, _, s)| (s.speaker.as_str(), s.text.as_str(), s.start_ms, s.end_ms))
        .collect();
    let sent: Vec<(&str, &str, u64, u64)> = expected
        .iter()
        .map(|s| (s.speaker.as_str(), s.text.as_str(), s.start_ms, s.end_ms))
        .collect();
    assert!(
        received == sent,
        "{who}: final segments differ from the published ones"
    );
}

/// Checks that a follower opened every frame at offsets 0 to `last_offset`,
/// once each and in order, interim frames included. This holds for a session
/// with one publisher, whose frames take every offset.
pub fn assert_every_offset_once(who: &str, outcome: &FollowOutcome, last_offset: u64) {
    let missing: Vec<u64> = (0..=last_offset)
        .filter(|offset| !outcome.opened.contains(offset))
        .collect();
    assert!(
        missing.is_empty(),
        "{who}: {} offsets never opened, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let expected: Vec<u64> = (0..=last_offset).collect();
    assert!(
        outcome.opened == expected,
        "{who}: opened {} frames for offsets 0 to {last_offset}: some arrived twice or out of order",
        outcome.opened.len()
    );
}

/// Checks that the relay's output contains none of the consultation's
/// segment texts of 16 characters or more.
pub fn assert_no_text_in_output(output: &[u8], consultation: &Consultation) {
    let output = String::from_utf8_lossy(output);
    for segment in &consultation.finals {
        let text = segment.text.trim();
        if text.len() >= 16 {
            assert!(
                !output.contains(text),
                "the relay's output contains transcript text of segment {}",
                segment.segment_id
            );
        }
    }
}

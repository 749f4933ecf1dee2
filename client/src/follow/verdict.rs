//! Wording and totals of the per-stream authorship verdicts a follower
//! reports when a session ends.
//!
//! A stream is verified complete when the link carried the publisher key, a
//! signature of that key closed the stream, every frame the follower opened
//! is listed in a signature with its hash, and no final frame is missing.
//! Missing interim frames are allowed, because the relay may skip them for a
//! slow follower and a later revision replaces them.

use sealcast_protocol::authorship::{Problem, PublisherKey, Verdict};
use sealcast_protocol::StreamId;

use super::FollowReport;

/// Describes one stream's verdict in a line for people, naming the device
/// key for a signed stream and each range that is unverified or missing.
/// Sequence numbers count the frames of the stream from 0.
pub fn describe(
    stream_id: &StreamId,
    verdict: &Verdict,
    publisher: Option<&PublisherKey>,
) -> String {
    let device = publisher.map_or_else(
        || "the publishing device".to_string(),
        |key| format!("device {}", key.to_base64url()),
    );
    match verdict {
        Verdict::Complete {
            publisher,
            endorsed_by: None,
        } => format!(
            "stream {stream_id} is complete and authored by device {}",
            publisher.to_base64url()
        ),
        Verdict::Complete {
            publisher,
            endorsed_by: Some(endorser),
        } => format!(
            "stream {stream_id} is complete and authored by device {}, endorsed by device {}",
            publisher.to_base64url(),
            endorser.to_base64url()
        ),
        Verdict::NotCheckable => format!(
            "stream {stream_id} was not checked for authorship: the invite link carries no publisher key"
        ),
        Verdict::Incomplete(problems) => {
            let reasons: Vec<String> = problems
                .iter()
                .map(|problem| describe_problem(problem, &device))
                .collect();
            format!(
                "stream {stream_id} is not verified complete: {}",
                reasons.join("; ")
            )
        }
    }
}

fn describe_problem(problem: &Problem, device: &str) -> String {
    match problem {
        Problem::Unverified { first, last } => {
            format!("{} not signed by {device}", frame_range(*first, *last))
        }
        Problem::Missing {
            first,
            last,
            finals,
        } => format!(
            "{} missing, {finals} of them final",
            frame_range(*first, *last)
        ),
        Problem::BadSignature { seq } => {
            format!("the signature in frame {seq} does not verify under {device}")
        }
        Problem::EndNotSeen { last_opened } => format!(
            "nothing after frame {last_opened} arrived and no signature closed the stream, so its end may be withheld"
        ),
    }
}

/// Formats `first..=last` as "frame 4" or "frames 4-9".
fn frame_range(first: u64, last: u64) -> String {
    if first == last {
        format!("frame {first}")
    } else {
        format!("frames {first}-{last}")
    }
}

impl FollowReport {
    /// Returns the number of streams that are not complete and signed by
    /// the link's publisher key, 0 when the link carries no publisher key.
    pub fn streams_not_verified(&self) -> usize {
        if self.publisher.is_none() {
            return 0;
        }
        self.streams
            .iter()
            .filter(|(_, verdict)| !matches!(verdict, Verdict::Complete { .. }))
            .count()
    }

    /// Returns whether the link carried a publisher key, at least one stream
    /// arrived, every stream is complete and signed by that key, and no
    /// frame stayed unreadable for lack of its key epoch's key. A session
    /// that a signing device ended carries at least its signed end, so no
    /// stream at all is not verified. An unreadable frame belongs to a
    /// stream that could not be checked at all.
    pub fn is_verified_complete(&self) -> bool {
        self.publisher.is_some()
            && !self.streams.is_empty()
            && self.streams_not_verified() == 0
            && self.frames_unreadable == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: StreamId = StreamId([0xab; 16]);

    fn publisher() -> PublisherKey {
        let device = sealcast_protocol::dpop::DeviceKey::from_secret_bytes(&[7; 32]).unwrap();
        PublisherKey::of_device(&device)
    }

    fn report(streams: Vec<(StreamId, Verdict)>) -> FollowReport {
        FollowReport {
            publisher: Some(publisher()),
            streams,
            ..FollowReport::default()
        }
    }

    #[test]
    fn complete_stream_names_the_device() {
        let key = publisher();
        let complete = Verdict::Complete {
            publisher: key,
            endorsed_by: None,
        };
        let line = describe(&STREAM, &complete, Some(&key));
        assert_eq!(
            line,
            format!(
                "stream {STREAM} is complete and authored by device {}",
                key.to_base64url()
            )
        );
    }

    #[test]
    fn endorsed_stream_names_both_devices() {
        let first = publisher();
        let second_device =
            sealcast_protocol::dpop::DeviceKey::from_secret_bytes(&[8; 32]).unwrap();
        let second = PublisherKey::of_device(&second_device);
        let complete = Verdict::Complete {
            publisher: second,
            endorsed_by: Some(first),
        };
        let line = describe(&STREAM, &complete, Some(&first));
        assert_eq!(
            line,
            format!(
                "stream {STREAM} is complete and authored by device {}, endorsed by device {}",
                second.to_base64url(),
                first.to_base64url()
            )
        );
    }

    #[test]
    fn incomplete_stream_lists_each_range() {
        let key = publisher();
        let verdict = Verdict::Incomplete(vec![
            Problem::Missing {
                first: 2,
                last: 3,
                finals: 1,
            },
            Problem::Unverified { first: 5, last: 5 },
            Problem::BadSignature { seq: 16 },
            Problem::EndNotSeen { last_opened: 20 },
        ]);
        let line = describe(&STREAM, &verdict, Some(&key));
        let device = key.to_base64url();
        assert!(line.starts_with(&format!("stream {STREAM} is not verified complete: ")));
        assert!(
            line.contains("frames 2-3 missing, 1 of them final; "),
            "{line}"
        );
        assert!(
            line.contains(&format!("frame 5 not signed by device {device}; ")),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "the signature in frame 16 does not verify under device {device}; "
            )),
            "{line}"
        );
        assert!(line.ends_with("nothing after frame 20 arrived and no signature closed the stream, so its end may be withheld"), "{line}");
    }

    #[test]
    fn unchecked_stream_says_why() {
        let line = describe(&STREAM, &Verdict::NotCheckable, None);
        assert!(line.contains("carries no publisher key"), "{line}");
    }

    #[test]
    fn all_complete_streams_are_verified() {
        let complete = Verdict::Complete {
            publisher: publisher(),
            endorsed_by: None,
        };
        let report = report(vec![
            (STREAM, complete.clone()),
            (StreamId([1; 16]), complete),
        ]);
        assert_eq!(report.streams_not_verified(), 0);
        assert!(report.is_verified_complete());
    }

    #[test]
    fn one_incomplete_stream_fails_the_session() {
        let complete = Verdict::Complete {
            publisher: publisher(),
            endorsed_by: None,
        };
        let withheld = Verdict::Incomplete(vec![Problem::EndNotSeen { last_opened: 3 }]);
        let report = report(vec![(STREAM, complete), (StreamId([1; 16]), withheld)]);
        assert_eq!(report.streams_not_verified(), 1);
        assert!(!report.is_verified_complete());
    }

    #[test]
    fn no_stream_with_a_publisher_key_is_not_verified() {
        let report = report(Vec::new());
        assert_eq!(report.streams_not_verified(), 0);
        assert!(!report.is_verified_complete());
    }

    #[test]
    fn link_without_publisher_key_verifies_nothing() {
        let report = FollowReport {
            streams: vec![(STREAM, Verdict::NotCheckable)],
            ..FollowReport::default()
        };
        assert_eq!(report.streams_not_verified(), 0);
        assert!(!report.is_verified_complete());
    }
}

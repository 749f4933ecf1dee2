//! Checking the authorship and completeness of opened streams.

use std::collections::BTreeMap;

use super::{AuthorshipError, PublisherKey, SignedContent, Statement};
use crate::frame::{frame_hash, OpenedFrame};
use crate::header::FrameKind;
use crate::ids::StreamId;

/// The effect of one observed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No publisher key is known, so nothing can be checked.
    NotCheckable,
    /// The frame waits for a later signature.
    Pending,
    /// A valid signature covered frames `first_seq` to `seq`.
    Signed {
        /// First sequence number the signature lists.
        first_seq: u64,
        /// Sequence number of the signed frame itself.
        seq: u64,
    },
    /// A checkpoint or end frame whose signature or content was rejected.
    Rejected(AuthorshipError),
}

/// The outcome for one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No publisher key came with the link or pairing: authorship is not checkable.
    NotCheckable,
    /// Every opened frame is signed by the publisher, or by a device the
    /// publisher endorsed, no final frame is missing, and a signature closed
    /// the stream. Interim frames the relay skipped are allowed.
    Complete {
        /// The key that signed the stream.
        publisher: PublisherKey,
        /// The key from the link or pairing that endorsed `publisher`, or
        /// `None` when that key signed the stream itself.
        endorsed_by: Option<PublisherKey>,
    },
    /// The problems that keep the stream from being complete, in sequence order.
    Incomplete(Vec<Problem>),
}

/// One reason a stream is not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Opened frames `first` to `last` that no valid signature covers.
    Unverified {
        /// First sequence number of the range.
        first: u64,
        /// Last sequence number of the range.
        last: u64,
    },
    /// Frames `first` to `last` never arrived, and `finals` of them were final.
    Missing {
        /// First sequence number of the range.
        first: u64,
        /// Last sequence number of the range.
        last: u64,
        /// Final or end frames among them.
        finals: u64,
    },
    /// The checkpoint or end frame at `seq` has an invalid signature or content.
    BadSignature {
        /// Sequence number of the frame.
        seq: u64,
    },
    /// No signature closed the stream: the relay may be withholding its tail.
    EndNotSeen {
        /// Highest sequence number opened.
        last_opened: u64,
    },
}

/// Checks the authorship and completeness of the streams a follower opens.
/// Feed it every frame right after [`crate::StreamOpener::open`] accepted it.
#[derive(Debug)]
pub struct AuthorshipVerifier {
    publisher: Option<PublisherKey>,
    streams: BTreeMap<StreamId, StreamTrack>,
}

/// The verifier's record of one stream. Records of frames a signature
/// verified are dropped, so memory grows only with unverified frames.
#[derive(Debug, Default)]
struct StreamTrack {
    frames: BTreeMap<u64, FrameRecord>,
    missing: Vec<Problem>,
    bad_signatures: Vec<u64>,
    closed_at: Option<u64>,
    last_opened: u64,
    /// The key of the first valid signature, which every later one must match.
    signer: Option<PublisherKey>,
}

#[derive(Debug)]
struct FrameRecord {
    hash: [u8; 32],
    verified: bool,
}

impl AuthorshipVerifier {
    /// Creates a verifier. `publisher` is the key from the invite link or the
    /// pairing payload, or `None` when that link carried none.
    pub fn new(publisher: Option<PublisherKey>) -> Self {
        AuthorshipVerifier {
            publisher,
            streams: BTreeMap::new(),
        }
    }

    /// Records an opened frame, checking its signature when it carries one.
    pub fn observe(&mut self, frame: &[u8], opened: &OpenedFrame) -> Observed {
        let Some(publisher) = self.publisher else {
            return Observed::NotCheckable;
        };
        let track = self.streams.entry(opened.header.stream_id).or_default();
        let seq = opened.header.seq;
        track.last_opened = seq;
        // Skipped ranges without a final frame held only interim revisions
        // or checkpoints, which later frames replace or repeat.
        if opened.skipped_final > 0 {
            track.missing.push(Problem::Missing {
                first: seq - opened.skipped_frames,
                last: seq - 1,
                finals: opened.skipped_final,
            });
        }
        track.frames.insert(
            seq,
            FrameRecord {
                hash: frame_hash(frame),
                verified: false,
            },
        );

        if !matches!(
            opened.header.kind,
            FrameKind::Checkpoint | FrameKind::EndOfSession
        ) {
            return Observed::Pending;
        }
        match check_signature(&publisher, opened, track.signer) {
            Ok((statement, signer)) => {
                track.signer = Some(signer);
                track.apply(&statement);
                Observed::Signed {
                    first_seq: statement.first_seq,
                    seq,
                }
            }
            Err(err) => {
                track.bad_signatures.push(seq);
                Observed::Rejected(err)
            }
        }
    }

    /// Returns the verdict for one stream, or `None` for a stream never observed.
    pub fn verdict(&self, stream_id: &StreamId) -> Option<Verdict> {
        let Some(publisher) = self.publisher else {
            return Some(Verdict::NotCheckable);
        };
        Some(self.streams.get(stream_id)?.verdict(&publisher))
    }

    /// Returns the verdict of every observed stream.
    pub fn verdicts(&self) -> Vec<(StreamId, Verdict)> {
        self.streams
            .keys()
            .filter_map(|id| Some((*id, self.verdict(id)?)))
            .collect()
    }
}

/// Checks a signed frame and returns its statement and signing key: the
/// publisher's own, or one the frame's endorsement shows the publisher
/// endorsed for this session and key epoch. A stream keeps the signer of its
/// first valid signature, so `earlier` rejects a change of device mid-stream.
fn check_signature(
    publisher: &PublisherKey,
    opened: &OpenedFrame,
    earlier: Option<PublisherKey>,
) -> Result<(Statement, PublisherKey), AuthorshipError> {
    let parsed = SignedContent::parse(opened, *publisher)?;
    let signer = match &parsed.endorsement {
        Some(endorsement) => {
            let header = &opened.header;
            endorsement.verify(&header.session_id, header.key_epoch)?;
            endorsement.device
        }
        None => *publisher,
    };
    signer.verify(&parsed.statement.to_bytes(), &parsed.signature)?;
    if earlier.is_some_and(|earlier| earlier != signer) {
        return Err(AuthorshipError::SignerChanged);
    }
    Ok((parsed.statement, signer))
}

impl StreamTrack {
    /// Marks the frames a valid signature lists, comparing each hash.
    fn apply(&mut self, statement: &Statement) {
        let seq = statement.header.seq;
        for (listed_seq, hash) in (statement.first_seq..seq).zip(&statement.frame_hashes) {
            if let Some(record) = self.frames.get_mut(&listed_seq) {
                record.verified = record.hash == *hash;
            }
        }
        if let Some(record) = self.frames.get_mut(&seq) {
            record.verified = true;
        }
        if statement.closes_stream && self.closed_at.is_none() {
            self.closed_at = Some(seq);
        }
        self.frames.retain(|_, record| !record.verified);
    }

    fn verdict(&self, publisher: &PublisherKey) -> Verdict {
        let mut problems = self.missing.clone();
        problems.extend(self.unverified_ranges());
        problems.extend(
            self.bad_signatures
                .iter()
                .map(|&seq| Problem::BadSignature { seq }),
        );
        if self.closed_at.is_none() {
            problems.push(Problem::EndNotSeen {
                last_opened: self.last_opened,
            });
        }
        if problems.is_empty() {
            // A closed stream without problems had a valid signature, so
            // `signer` is set. The publisher is the fallback all the same.
            let signer = self.signer.unwrap_or(*publisher);
            Verdict::Complete {
                publisher: signer,
                endorsed_by: (signer != *publisher).then_some(*publisher),
            }
        } else {
            problems.sort_by_key(problem_start);
            Verdict::Incomplete(problems)
        }
    }

    /// Runs of consecutive opened frames that no signature covers. Frames
    /// opened after the closing signature are never covered.
    fn unverified_ranges(&self) -> Vec<Problem> {
        let mut ranges: Vec<Problem> = Vec::new();
        for (&seq, record) in &self.frames {
            if record.verified {
                continue;
            }
            match ranges.last_mut() {
                Some(Problem::Unverified { last, .. }) if *last + 1 == seq => *last = seq,
                _ => ranges.push(Problem::Unverified {
                    first: seq,
                    last: seq,
                }),
            }
        }
        ranges
    }
}

fn problem_start(problem: &Problem) -> u64 {
    match problem {
        Problem::Unverified { first, .. } | Problem::Missing { first, .. } => *first,
        Problem::BadSignature { seq } => *seq,
        Problem::EndNotSeen { last_opened } => last_opened.saturating_add(1),
    }
}

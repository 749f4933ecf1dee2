//! The events a follower reports and its closing summary.

use std::time::Duration;

use sealcast_protocol::authorship::{PublisherKey, Verdict};
use sealcast_protocol::{SessionId, StreamId, TranscriptSegment};

/// Something that happened while following.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The relay accepted the connection and the key fingerprint matched.
    Connected {
        /// The session followed.
        session_id: SessionId,
        /// The session's history epoch.
        epoch: u64,
        /// First offset this connection delivers.
        from_offset: u64,
        /// Whether the session had already ended.
        session_ended: bool,
        /// Whether this is a reconnect that resumes an earlier connection.
        resumed: bool,
    },
    /// The connection was lost; the follower reconnects after `retry_in`.
    Disconnected {
        /// The reason the connection ended.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// An interim revision of a segment arrived.
    SegmentUpdated {
        /// Session offset of the frame.
        offset: u64,
        /// Stream the frame was sealed on.
        stream_id: StreamId,
        /// The revision.
        segment: TranscriptSegment,
    },
    /// The final revision of a segment arrived.
    SegmentFinal {
        /// Session offset of the frame.
        offset: u64,
        /// Stream the frame was sealed on.
        stream_id: StreamId,
        /// The final revision.
        segment: TranscriptSegment,
    },
    /// Final frames of a stream are missing before the frame at `offset`.
    Gap {
        /// Offset of the first frame after the gap.
        offset: u64,
        /// Stream with the gap.
        stream_id: StreamId,
        /// Number of final frames missing.
        missing_final_frames: u64,
    },
    /// A frame was not applied, because it failed to open or broke stream order.
    FrameRejected {
        /// Session offset of the frame.
        offset: u64,
        /// Why, without any content of the frame.
        reason: String,
    },
    /// A frame is sealed under a key epoch whose key this follower does not
    /// hold, so it was neither opened nor shown. The follower keeps it and
    /// opens it when that epoch's key is added with [`super::Follower::add_key`].
    FrameUnreadable {
        /// Session offset of the frame.
        offset: u64,
        /// Key epoch named in the frame's header.
        key_epoch: u32,
        /// Stream of the frame, when its header decodes.
        stream_id: Option<StreamId>,
    },
    /// The key of a key epoch was added. The frames of that epoch that
    /// arrived before it are opened right after, and their events follow.
    KeyAdded {
        /// The epoch of the key.
        key_epoch: u32,
        /// Frames of that epoch that had arrived before the key.
        frames_opened: u64,
    },
    /// A key was not added, because its epoch is older than the follower
    /// still accepts.
    KeyRejected {
        /// The epoch of the key.
        key_epoch: u32,
        /// Why, without any key material.
        reason: String,
    },
    /// A checkpoint or end frame opened, but its authorship signature does
    /// not verify under the link's publisher key, or its content is malformed.
    SignatureRejected {
        /// Session offset of the frame.
        offset: u64,
        /// Stream of the frame.
        stream_id: StreamId,
        /// Sequence number of the frame in its stream.
        seq: u64,
        /// Why, without any content of the frame.
        reason: String,
    },
    /// The authorship and completeness of one stream, sent for every stream
    /// seen once the relay reports that the session ended, just before
    /// [`FollowEvent::Ended`]. Without a publisher key in the link no
    /// verdict is sent.
    StreamVerdict {
        /// The stream.
        stream_id: StreamId,
        /// Complete and signed by the link's publisher key, or incomplete
        /// with the reasons.
        verdict: Verdict,
    },
    /// The clinician device's sealed end-of-session frame arrived.
    EndOfSession {
        /// Session offset of the frame.
        offset: u64,
        /// Stream that carried it.
        stream_id: StreamId,
        /// Final segments that stream carried, by the publisher's count.
        final_segments: u64,
    },
    /// The relay reported that the session ended and all frames were delivered.
    /// It is the last event.
    Ended,
}

/// Summary of a stopped follower.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowReport {
    /// The session followed, once welcomed.
    pub session_id: Option<SessionId>,
    /// Frames opened and applied.
    pub frames_opened: u64,
    /// Frames rejected.
    pub frames_rejected: u64,
    /// Frames of a key epoch whose key never arrived, which were not opened.
    pub frames_unreadable: u64,
    /// Frames skipped because they were already opened before a reconnect.
    pub duplicates_skipped: u64,
    /// Final frames reported missing in gaps.
    pub missing_final_frames: u64,
    /// Whether a sealed end-of-session frame arrived.
    pub end_of_session: bool,
    /// Highest offset received.
    pub last_offset: Option<u64>,
    /// Reconnects after the first connection attempt.
    pub reconnects: u32,
    /// The publisher key of the link, which streams were checked against.
    pub publisher: Option<PublisherKey>,
    /// The authorship verdict of every stream seen, in stream id order.
    /// Empty when the link carries no publisher key.
    pub streams: Vec<(StreamId, Verdict)>,
}

//! The plaintext carried inside frames, serialized as JSON before padding.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::redact::Redacted;

/// One transcript segment, as live speech recognition produces it.
///
/// A segment is revised while the speaker talks: receivers keep the highest
/// revision of each `segment_id`, and a final revision replaces every interim one.
///
/// `Debug` output leaves the text out, because it is what the patient hears.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    /// Identifier of the segment within the session, stable across revisions.
    pub segment_id: u64,
    /// Revision number, increasing with every update of the segment.
    pub revision: u32,
    /// Speaker label, for example `doctor` or `patient`.
    pub speaker: String,
    /// Start time in milliseconds from the start of the session.
    pub start_ms: u64,
    /// End time in milliseconds from the start of the session.
    pub end_ms: u64,
    /// Transcribed text.
    pub text: String,
    /// Whether this is the final revision.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl std::fmt::Debug for TranscriptSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptSegment")
            .field("segment_id", &self.segment_id)
            .field("revision", &self.revision)
            .field("speaker", &self.speaker)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("text", &Redacted)
            .field("is_final", &self.is_final)
            .finish()
    }
}

impl TranscriptSegment {
    /// Serializes the segment to its plaintext form.
    pub fn to_plaintext(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the plaintext form.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(bytes).map_err(|err| {
            ProtocolError::MalformedPlaintext(format!("segment is not valid JSON: {err}"))
        })
    }
}

/// Content of the end-of-session frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfSession {
    /// Number of final segments the clinician device published in this stream.
    pub final_segments: u64,
}

impl EndOfSession {
    /// Serializes to the plaintext form.
    pub fn to_plaintext(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the plaintext form.
    pub fn from_plaintext(bytes: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(bytes).map_err(|err| {
            ProtocolError::MalformedPlaintext(format!("end frame is not valid JSON: {err}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_debug_leaves_text_out() {
        let segment = TranscriptSegment {
            segment_id: 3,
            revision: 1,
            speaker: "patient".into(),
            start_ms: 10,
            end_ms: 20,
            text: "my chest hurts".into(),
            is_final: true,
        };
        assert_eq!(
            format!("{segment:?}"),
            "TranscriptSegment { segment_id: 3, revision: 1, speaker: \"patient\", \
             start_ms: 10, end_ms: 20, text: [redacted], is_final: true }"
        );
    }
}

//! The plaintext carried inside frames, serialized as JSON before padding.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// One transcript segment, as live speech recognition produces it.
///
/// A segment is revised while the speaker talks: receivers keep the highest
/// revision of each `segment_id`, and a final revision replaces every interim one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

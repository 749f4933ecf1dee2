//! Transcript inputs: Praat TextGrid files and JSON Lines, turned into the
//! [`TranscriptSegment`]s a publisher seals.
//!
//! | module | job |
//! | --- | --- |
//! | [`textgrid`] | the Praat TextGrid text format, one file per speaker |
//! | [`jsonl`] | JSON Lines, one segment per line |
//! | [`merge`] | merging several files by start time and assigning segment ids |
//! | [`interim`] | interim revisions made from growing word prefixes |
//!
//! [`load_files`] reads and merges whole files. A live JSON Lines stream is
//! read line by line with [`jsonl::parse_line`] and numbered with
//! [`merge::IdAssigner`].

pub mod interim;
pub mod jsonl;
pub mod merge;
pub mod textgrid;

use std::path::{Path, PathBuf};

use sealcast_protocol::redact::Redacted;
use sealcast_protocol::TranscriptSegment;
use thiserror::Error;

/// An error reading or parsing a transcript input.
#[derive(Debug, Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file name does not say which format the file is in.
    #[error(
        "cannot tell the format of {}: name the file *.TextGrid or *.jsonl, or pass --format",
        path.display()
    )]
    UnknownFormat {
        /// The input file.
        path: PathBuf,
    },
    /// A TextGrid file is malformed.
    #[error("{}:{line}: invalid TextGrid: {reason}", path.display())]
    TextGrid {
        /// The input file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// Description of the error.
        reason: String,
    },
    /// A TextGrid file name does not carry a speaker.
    #[error(
        "cannot take a speaker from the file name {}: name the file like \
         consultation_doctor.TextGrid, where the part after the last _ is the speaker",
        path.display()
    )]
    NoSpeaker {
        /// The input file.
        path: PathBuf,
    },
    /// A TextGrid file does not have exactly one interval tier.
    #[error(
        "{} has {count} interval tiers: sealcast reads one interval tier per file, \
         so split the speakers into one file each",
        path.display()
    )]
    TierCount {
        /// The input file.
        path: PathBuf,
        /// Interval tiers found.
        count: usize,
    },
    /// A JSON Lines record is malformed.
    #[error("{source_name} line {line}: {reason}")]
    Jsonl {
        /// File path, or `stdin`.
        source_name: String,
        /// Line number, from 1.
        line: usize,
        /// Description of the error.
        reason: String,
    },
    /// A segment's text cannot be made into interim revisions.
    #[error(
        "segment {segment_id} has {words} words, more than the {max} revisions a segment can have"
    )]
    TooManyWords {
        /// The segment.
        segment_id: u64,
        /// Its word count.
        words: usize,
        /// Maximum.
        max: usize,
    },
    /// The inputs hold no segment at all.
    #[error("the input holds no transcript segment: check that the files are not empty")]
    Empty,
}

impl InputError {
    /// Returns whether the error is a missing input file.
    pub fn is_missing_file(&self) -> bool {
        matches!(self, InputError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The format of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Praat TextGrid text format, one speaker per file.
    TextGrid,
    /// JSON Lines, one segment per line.
    Jsonl,
}

impl InputFormat {
    /// Guesses the format from the file extension, ignoring case.
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "textgrid" => Some(InputFormat::TextGrid),
            "jsonl" | "ndjson" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }
}

/// A segment as read from an input, before ids and revisions are assigned.
/// `Debug` leaves the text out.
#[derive(Clone, PartialEq, Eq)]
pub struct InputSegment {
    /// Segment id, when the input gives one.
    pub segment_id: Option<u64>,
    /// Revision, when the input gives one.
    pub revision: Option<u32>,
    /// Speaker label.
    pub speaker: String,
    /// Start time in milliseconds.
    pub start_ms: u64,
    /// End time in milliseconds.
    pub end_ms: u64,
    /// Transcribed text.
    pub text: String,
    /// Whether this is the final revision.
    pub is_final: bool,
}

impl std::fmt::Debug for InputSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSegment")
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

/// Reads one input file in the given format, or the format its extension names.
pub fn read_file(
    path: &Path,
    format: Option<InputFormat>,
) -> Result<Vec<InputSegment>, InputError> {
    let format = format
        .or_else(|| InputFormat::from_path(path))
        .ok_or_else(|| InputError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
    match format {
        InputFormat::TextGrid => textgrid::read_speaker_file(path),
        InputFormat::Jsonl => jsonl::read_file(path),
    }
}

/// Reads every file, merges them by start time (ties keep file order, then
/// line order), assigns missing segment ids and revisions, and returns the
/// segments in merged order.
pub fn load_files(
    paths: &[PathBuf],
    format: Option<InputFormat>,
) -> Result<Vec<TranscriptSegment>, InputError> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        files.push(read_file(path, format)?);
    }

    let merged = merge::merge_by_start(files);
    if merged.is_empty() {
        return Err(InputError::Empty);
    }
    Ok(merge::assign_ids(merged))
}

/// Converts seconds to whole milliseconds, rounding to the nearest.
pub(crate) fn seconds_to_ms(seconds: f64) -> Option<u64> {
    let ms = (seconds * 1000.0).round();
    if ms.is_finite() && (0.0..=u64::MAX as f64).contains(&ms) {
        Some(ms as u64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_segment_debug_leaves_text_out() {
        let segment = InputSegment {
            segment_id: None,
            revision: Some(2),
            speaker: "doctor".into(),
            start_ms: 5,
            end_ms: 9,
            text: "take two tablets daily".into(),
            is_final: false,
        };
        assert_eq!(
            format!("{segment:?}"),
            "InputSegment { segment_id: None, revision: Some(2), speaker: \"doctor\", \
             start_ms: 5, end_ms: 9, text: [redacted], is_final: false }"
        );
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            InputFormat::from_path(Path::new("a_doctor.TextGrid")),
            Some(InputFormat::TextGrid)
        );
        assert_eq!(
            InputFormat::from_path(Path::new("x.JSONL")),
            Some(InputFormat::Jsonl)
        );
        assert_eq!(InputFormat::from_path(Path::new("x.txt")), None);
    }

    #[test]
    fn unknown_extension_is_rejected() {
        let err = read_file(Path::new("notes.txt"), None).unwrap_err();
        assert!(matches!(err, InputError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn seconds_round_to_milliseconds() {
        assert_eq!(seconds_to_ms(2.5334561157322537), Some(2533));
        assert_eq!(seconds_to_ms(0.0005), Some(1));
        assert_eq!(seconds_to_ms(-1.0), None);
        assert_eq!(seconds_to_ms(f64::NAN), None);
    }
}

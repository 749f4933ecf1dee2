//! The short sample consultation the project ships for its demo, used where a
//! test needs a transcript but not the real corpus.

use std::path::PathBuf;

use sealcast_client::input::{interim, load_files};
use sealcast_protocol::TranscriptSegment;

/// Path of the sample consultation in JSON Lines.
pub fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../relay/demo/sample-consultation.jsonl")
}

/// Returns the sample's final segments.
pub fn sample_finals() -> Vec<TranscriptSegment> {
    load_files(&[sample_path()], None).expect("the sample consultation parses")
}

/// Returns the sample with interim revisions before each final segment, as a
/// live recognizer sends it.
pub fn sample_with_interim() -> Vec<TranscriptSegment> {
    interim::expand_all(sample_finals()).expect("interim revisions")
}

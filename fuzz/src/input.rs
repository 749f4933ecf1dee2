//! Targets for the transcript files the clinician's device reads: Praat
//! TextGrid and JSON Lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use sealcast_client::input::{interim, jsonl, merge, textgrid};

/// Parses the input as TextGrid text, then reads it as a speaker's file,
/// which also decodes UTF-16 and byte order marks and converts times.
pub fn textgrid(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = textgrid::parse(text);
    }

    let Some(path) = write_scratch_file(data) else {
        return;
    };
    let read = textgrid::read_speaker_file(&path);
    let _ = std::fs::remove_file(&path);
    let Ok(segments) = read else {
        return;
    };
    for segment in &segments {
        assert_eq!(
            segment.speaker, "doctor",
            "speaker not taken from the file name"
        );
        assert!(
            !segment.text.trim().is_empty(),
            "an empty interval became a segment"
        );
        assert!(segment.is_final, "a TextGrid segment is not final");
    }
}

/// Reads the input as JSON Lines, then numbers the segments and expands
/// them into interim revisions as the publisher does.
pub fn jsonl(data: &[u8]) {
    let Ok(segments) = jsonl::read(data, "fuzz input", Path::new("fuzz.jsonl")) else {
        return;
    };
    for segment in &segments {
        assert!(
            segment.start_ms <= segment.end_ms,
            "a segment ends before it starts"
        );
        assert!(
            !segment.speaker.trim().is_empty(),
            "a segment has no speaker"
        );
    }

    let count = segments.len();
    let numbered = merge::assign_ids(merge::merge_by_start(vec![segments]));
    assert_eq!(numbered.len(), count, "numbering lost or added segments");
    if let Ok(expanded) = interim::expand_all(numbered) {
        assert!(expanded.len() >= count, "interim expansion lost segments");
    }
}

/// Writes `data` to a temporary file named so that its speaker is `doctor`.
/// Returns `None` when the file cannot be written.
fn write_scratch_file(data: &[u8]) -> Option<PathBuf> {
    let name = format!("sealcast-fuzz-{}_doctor.TextGrid", std::process::id());
    let path = std::env::temp_dir().join(name);
    let mut file = std::fs::File::create(&path).ok()?;
    file.write_all(data).ok()?;
    Some(path)
}

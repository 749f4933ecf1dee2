//! Transcript segments as JSON Lines: one JSON object per line, UTF-8.
//!
//! | field | type | required | meaning |
//! | --- | --- | --- | --- |
//! | `speaker` | string, not empty | yes | speaker label, for example `doctor` |
//! | `start_ms` | integer ≥ 0 | yes | start, milliseconds from the start of the session |
//! | `end_ms` | integer ≥ `start_ms` | yes | end, milliseconds |
//! | `text` | string | yes | transcribed text |
//! | `final` | boolean | no, default `true` | `false` for an interim revision |
//! | `segment_id` | integer ≥ 0 | no | segment the line revises; assigned in order when absent |
//! | `revision` | integer ≥ 0 | no | revision number; counted per segment when absent |
//!
//! Blank lines are skipped, and a line may end in CRLF. Other fields are
//! rejected, so a misspelt field name is caught. To send interim revisions,
//! give every revision of a segment the same `segment_id`. A line without a
//! `segment_id` is a segment of its own.
//!
//! Example:
//!
//! ```text
//! {"speaker":"doctor","start_ms":2533,"end_ms":4100,"text":"Good morning","final":false,"segment_id":0}
//! {"speaker":"doctor","start_ms":2533,"end_ms":5000,"text":"Good morning, how can I help?","segment_id":0}
//! {"speaker":"patient","start_ms":5200,"end_ms":7900,"text":"I have had a cough for a week."}
//! ```
//!
//! `sealcast follow --format jsonl` writes final segments in this format, with
//! every field present.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::{InputError, InputSegment};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    speaker: String,
    start_ms: u64,
    end_ms: u64,
    text: String,
    #[serde(rename = "final", default = "default_final")]
    is_final: bool,
    #[serde(default)]
    segment_id: Option<u64>,
    #[serde(default)]
    revision: Option<u32>,
}

fn default_final() -> bool {
    true
}

/// Reads a JSON Lines file.
pub fn read_file(path: &Path) -> Result<Vec<InputSegment>, InputError> {
    let file = std::fs::File::open(path).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    read(
        std::io::BufReader::new(file),
        &path.display().to_string(),
        path,
    )
}

/// Reads JSON Lines from any reader, naming `source_name` in errors.
pub fn read(
    reader: impl BufRead,
    source_name: &str,
    path: &Path,
) -> Result<Vec<InputSegment>, InputError> {
    let mut segments = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(segment) = parse_line(&line, index + 1, source_name)? {
            segments.push(segment);
        }
    }
    Ok(segments)
}

/// Parses one line. Returns `None` for a blank line.
pub fn parse_line(
    line: &str,
    line_number: usize,
    source_name: &str,
) -> Result<Option<InputSegment>, InputError> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(None);
    }
    let error = |reason: String| InputError::Jsonl {
        source_name: source_name.to_string(),
        line: line_number,
        reason,
    };

    let record: Record =
        serde_json::from_str(line).map_err(|err| error(format!("invalid segment: {err}")))?;
    if record.speaker.trim().is_empty() {
        return Err(error("speaker is empty: name who is speaking".into()));
    }
    if record.end_ms < record.start_ms {
        return Err(error(format!(
            "end_ms {} is before start_ms {}",
            record.end_ms, record.start_ms
        )));
    }

    Ok(Some(InputSegment {
        segment_id: record.segment_id,
        revision: record.revision,
        speaker: record.speaker,
        start_ms: record.start_ms,
        end_ms: record.end_ms,
        text: record.text,
        is_final: record.is_final,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<Vec<InputSegment>, InputError> {
        read(text.as_bytes(), "input.jsonl", Path::new("input.jsonl"))
    }

    #[test]
    fn minimal_line_defaults_to_final() {
        let segments =
            read_text("{\"speaker\":\"doctor\",\"start_ms\":0,\"end_ms\":900,\"text\":\"Hi\"}\n")
                .unwrap();
        assert_eq!(
            segments,
            vec![InputSegment {
                segment_id: None,
                revision: None,
                speaker: "doctor".into(),
                start_ms: 0,
                end_ms: 900,
                text: "Hi".into(),
                is_final: true,
            }]
        );
    }

    #[test]
    fn optional_fields_and_blank_lines() {
        let text = "\r\n{\"speaker\":\"a\",\"start_ms\":1,\"end_ms\":2,\"text\":\"x\",\
                    \"final\":false,\"segment_id\":7,\"revision\":3}\r\n   \n";
        let segments = read_text(text).unwrap();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].segment_id, Some(7));
        assert_eq!(segments[0].revision, Some(3));
        assert!(!segments[0].is_final);
    }

    #[test]
    fn invalid_json_names_the_line() {
        let text = "{\"speaker\":\"a\",\"start_ms\":1,\"end_ms\":2,\"text\":\"x\"}\n\n{oops\n";
        let message = read_text(text).unwrap_err().to_string();
        assert!(
            message.starts_with("input.jsonl line 3: invalid segment"),
            "{message}"
        );
    }

    #[test]
    fn missing_field_names_the_field() {
        let message = read_text("{\"speaker\":\"a\",\"start_ms\":1,\"text\":\"x\"}")
            .unwrap_err()
            .to_string();
        assert!(message.contains("line 1"), "{message}");
        assert!(message.contains("end_ms"), "{message}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let message =
            read_text("{\"speaker\":\"a\",\"start\":1,\"start_ms\":1,\"end_ms\":2,\"text\":\"x\"}")
                .unwrap_err()
                .to_string();
        assert!(message.contains("unknown field `start`"), "{message}");
    }

    #[test]
    fn reversed_times_are_rejected() {
        let message = read_text("{\"speaker\":\"a\",\"start_ms\":5,\"end_ms\":2,\"text\":\"x\"}")
            .unwrap_err()
            .to_string();
        assert_eq!(message, "input.jsonl line 1: end_ms 2 is before start_ms 5");
    }

    #[test]
    fn empty_speaker_is_rejected() {
        let message = read_text("{\"speaker\":\" \",\"start_ms\":1,\"end_ms\":2,\"text\":\"x\"}")
            .unwrap_err()
            .to_string();
        assert!(message.contains("speaker is empty"), "{message}");
    }

    #[test]
    fn negative_time_is_rejected() {
        let err = read_text("{\"speaker\":\"a\",\"start_ms\":-1,\"end_ms\":2,\"text\":\"x\"}")
            .unwrap_err();
        assert!(matches!(err, InputError::Jsonl { line: 1, .. }), "{err}");
    }
}

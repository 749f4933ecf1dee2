//! Parses every real transcript of the PriMock57 sample.
//!
//! The folder comes from `SEALCAST_TRANSCRIPTS`, else `../shared/data/transcripts`
//! beside the workspace. When it is missing the tests print that they were
//! skipped, except with `CI=true`, where they fail.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealcast_client::input::{self, interim, textgrid};

/// Non-empty utterances in the 60 files, as counted when the sample was taken.
const EXPECTED_UTTERANCES: usize = 3_666;
const EXPECTED_FILES: usize = 60;

fn transcripts_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SEALCAST_TRANSCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/transcripts")
        });
    let primock = dir.join("primock57");
    if primock.is_dir() {
        return Some(primock);
    }
    let message = format!(
        "{test}: skipped because {} does not exist (set SEALCAST_TRANSCRIPTS)",
        primock.display()
    );
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{message}");
    eprintln!("{message}");
    None
}

fn textgrid_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "TextGrid"))
        .collect();
    files.sort();
    files
}

#[test]
fn all_files_parse_with_expected_utterance_count() {
    let Some(dir) = transcripts_dir("all_files_parse_with_expected_utterance_count") else {
        return;
    };
    let files = textgrid_files(&dir);
    assert_eq!(files.len(), EXPECTED_FILES);

    let mut total = 0;
    for file in &files {
        let segments = textgrid::read_speaker_file(file)
            .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert!(!segments.is_empty(), "{} has no utterance", file.display());
        let expected_speaker = if file.to_str().unwrap().ends_with("_doctor.TextGrid") {
            "doctor"
        } else {
            "patient"
        };
        for segment in &segments {
            assert_eq!(segment.speaker, expected_speaker, "{}", file.display());
            assert!(segment.end_ms >= segment.start_ms, "{}", file.display());
            assert!(!segment.text.trim().is_empty(), "{}", file.display());
            assert!(segment.is_final);
        }
        total += segments.len();
    }
    assert_eq!(total, EXPECTED_UTTERANCES);
}

#[test]
fn raw_files_have_crlf_and_both_indent_styles() {
    let Some(dir) = transcripts_dir("raw_files_have_crlf_and_both_indent_styles") else {
        return;
    };
    let mut tab_indented = 0;
    let mut space_indented = 0;
    for file in textgrid_files(&dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("\r\n"), "{} is not CRLF", file.display());
        if text.contains("\n\titem [1]") || text.contains("\n\t\tclass") {
            tab_indented += 1;
        } else if text.contains("\n    item [1]") {
            space_indented += 1;
        }
    }
    // The parser must have read both kinds in the test above.
    assert!(tab_indented > 0, "no tab-indented file");
    assert!(space_indented > 0, "no space-indented file");
}

#[test]
fn tags_stay_in_the_text() {
    let Some(dir) = transcripts_dir("tags_stay_in_the_text") else {
        return;
    };
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    for file in textgrid_files(&dir) {
        for segment in textgrid::read_speaker_file(&file).unwrap() {
            for tag in ["<UNIN/>", "<UNSURE>", "</UNSURE>", "<INAUDIBLE_SPEECH/>"] {
                *tags.entry(tag).or_default() += segment.text.matches(tag).count();
            }
        }
    }
    assert!(tags["<UNIN/>"] > 0, "{tags:?}");
    assert!(tags["<INAUDIBLE_SPEECH/>"] > 0, "{tags:?}");
    assert_eq!(tags["<UNSURE>"], tags["</UNSURE>"], "{tags:?}");
}

#[test]
fn consultations_merge_by_start_time() {
    let Some(dir) = transcripts_dir("consultations_merge_by_start_time") else {
        return;
    };
    let doctor = dir.join("day1_consultation01_doctor.TextGrid");
    let patient = dir.join("day1_consultation01_patient.TextGrid");
    let doctor_count = textgrid::read_speaker_file(&doctor).unwrap().len();
    let patient_count = textgrid::read_speaker_file(&patient).unwrap().len();

    let merged = input::load_files(&[doctor, patient], None).unwrap();
    assert_eq!(merged.len(), doctor_count + patient_count);
    assert!(merged
        .windows(2)
        .all(|pair| pair[0].start_ms <= pair[1].start_ms));
    let ids: Vec<u64> = merged.iter().map(|segment| segment.segment_id).collect();
    assert_eq!(ids, (0..merged.len() as u64).collect::<Vec<_>>());
    assert!(merged.iter().any(|segment| segment.speaker == "doctor"));
    assert!(merged.iter().any(|segment| segment.speaker == "patient"));
    // Speakers overlap: some segment starts before the previous one ends.
    assert!(merged
        .windows(2)
        .any(|pair| pair[1].start_ms < pair[0].end_ms));
}

#[test]
fn interim_revisions_for_a_real_consultation() {
    let Some(dir) = transcripts_dir("interim_revisions_for_a_real_consultation") else {
        return;
    };
    let files = [
        dir.join("day2_consultation03_doctor.TextGrid"),
        dir.join("day2_consultation03_patient.TextGrid"),
    ];
    let finals = input::load_files(&files, None).unwrap();
    let expanded = interim::expand_all(finals.clone()).unwrap();
    let words: usize = finals
        .iter()
        .map(|segment| segment.text.split_whitespace().count().max(1))
        .sum();
    assert_eq!(expanded.len(), words);
    assert_eq!(
        expanded.iter().filter(|segment| segment.is_final).count(),
        finals.len()
    );
    for segment in &expanded {
        let original = &finals[segment.segment_id as usize];
        assert!(segment.end_ms >= original.start_ms);
        assert!(segment.end_ms <= original.end_ms);
    }
}

//! Locating the real doctor-patient transcripts used as test input.

use std::path::PathBuf;

/// Environment variable naming the folder with `primock57/*.TextGrid`.
pub const TRANSCRIPTS_ENV: &str = "SEALCAST_TRANSCRIPTS";

/// One consultation: its name and its two TextGrid files, doctor first.
#[derive(Debug, Clone)]
pub struct Consultation {
    /// Name such as `day1_consultation01`.
    pub name: String,
    /// The `_doctor` and `_patient` TextGrid files.
    pub files: Vec<PathBuf>,
}

/// Returns the transcripts folder, or `None` after printing that the calling
/// test is skipped. With `CI=true` a missing folder fails the test instead.
pub fn transcripts_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(TRANSCRIPTS_ENV).map(PathBuf::from);
    let found = dir.filter(|dir| dir.join("primock57").is_dir());
    if found.is_none() {
        let message = format!(
            "{test}: skipped because {TRANSCRIPTS_ENV} does not name a folder with primock57/"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("{message}");
    }
    found
}

/// Lists every consultation in the folder, sorted by name.
pub fn consultations(dir: &std::path::Path) -> Vec<Consultation> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("primock57"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter_map(|name| name.strip_suffix("_doctor.TextGrid").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .map(|name| Consultation {
            files: vec![
                dir.join("primock57")
                    .join(format!("{name}_doctor.TextGrid")),
                dir.join("primock57")
                    .join(format!("{name}_patient.TextGrid")),
            ],
            name,
        })
        .collect()
}

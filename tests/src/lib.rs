//! Helpers for sealcast's end-to-end tests: spawning the real `sealcast-relay`
//! and `sealcast` binaries, locating the real transcripts, and scanning
//! files and logs for material that must never appear in them.
//!
//! The tests themselves live in `tests/tests/`, one file per behaviour.

pub mod leaks;
pub mod process;
pub mod sample;
pub mod session;
pub mod transcripts;

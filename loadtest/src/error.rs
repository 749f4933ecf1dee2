//! The harness's error type: failures that stop a run before it can report.
//!
//! Failures of single connections or frames during a run are not errors of
//! this kind. They are counted by kind in the statistics and reported.

use std::path::PathBuf;

use thiserror::Error;

/// An error that stops the load test.
#[derive(Debug, Error)]
pub enum LoadtestError {
    /// A command-line value is out of range or inconsistent with another.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option, for example `--rate`.
        option: &'static str,
        /// The problem and the value to pass instead.
        reason: String,
    },
    /// The transcripts could not be read.
    #[error("failed to load transcripts from {}: {reason}", path.display())]
    Transcripts {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The relay under test could not be started or reached.
    #[error("failed to start {system}: {reason}")]
    TargetStart {
        /// The system, for example `sealcast` or `null`.
        system: String,
        /// The failure and how to fix it.
        reason: String,
    },
    /// Creating the sessions of the run failed.
    #[error("failed to create session {index} of {total} on {system}: {reason}")]
    SessionSetup {
        /// The system under test.
        system: String,
        /// Index of the failing session, from 0.
        index: usize,
        /// Sessions requested.
        total: usize,
        /// The relay's error message.
        reason: String,
    },
    /// Writing a result file failed.
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Drawing the latency plot failed.
    #[error("failed to draw the latency plot {}: {reason}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A worker process failed, stopped early or did not report in time.
    #[error("{worker} failed: {reason}")]
    Worker {
        /// The worker, for example `load-test worker 1 (pid 4242)`.
        worker: String,
        /// What failed.
        reason: String,
    },
    /// The async runtime could not be built.
    #[error("failed to start the async runtime: {0}")]
    Runtime(std::io::Error),
}

//! The audit trail: two append-only, hash-chained streams of entries in
//! `relay.db`, checkpoints signed with the relay's Ed25519 audit key, export
//! and offline verification, and retention of content and audit entries.
//!
//! The `application` stream records what devices and patients did, the
//! `admin` stream what administrators and the operator did. Each entry
//! stores the SHA-256 hash of the previous entry of its stream, over the
//! canonical encoding in [`entry`]. Entries carry ids, actions, times,
//! source addresses and digests, never content, emails, tokens or keys.
//! `docs/audit.md` describes the design and what it protects against.
//!
//! | module | job |
//! | --- | --- |
//! | [`entry`] | entries, checkpoints, anchors and their canonical encodings |
//! | `event` | the events the relay records, before they are chained |
//! | `key` | the audit signing key file |
//! | `append` | chaining events and signing checkpoints in one transaction |
//! | `recorder` | the relay's audit log, written by the store's writer thread |
//! | `verify` | verifying chains, checkpoints and anchors |
//! | `export` | JSON Lines export and its offline verification |
//! | `retention` | deleting expired sessions and audit entries |
//! | `cli` | the `audit` and `retention` commands |

mod append;
pub(crate) mod cli;
pub mod entry;
pub(crate) mod event;
pub(crate) mod export;
pub(crate) mod key;
pub(crate) mod recorder;
pub(crate) mod retention;
pub(crate) mod verify;

use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;
#[cfg(test)]
pub(crate) use append::append as append_events;
pub use append::CheckpointPolicy;
pub(crate) use append::{record_direct, AuditBatch};
pub use entry::{Anchor, Checkpoint, Entry, Stream};
pub(crate) use entry::{GENESIS_HASH, HASH_LEN};
pub(crate) use event::{Action, Event};
pub(crate) use recorder::AuditLog;
pub use retention::RetentionPolicy;

/// A failed audit or retention operation.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit key file could not be read or written.
    #[error("audit key file {path} failed: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error("failed to open {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        reason: String,
    },
    /// An export file could not be read or written.
    #[error("audit export file {path} failed: {source}")]
    ExportFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An export file is not in the export format.
    #[error("audit export file {path} is invalid at line {line}: {reason}")]
    ExportFormat {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: u64,
        /// The problem.
        reason: String,
    },
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Output could not be written.
    #[error("failed to write the output: {0}")]
    Output(std::io::Error),
}

#[cfg(test)]
mod tests;

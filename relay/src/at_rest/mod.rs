//! Encryption at rest: the relay's second, independent layer over what it
//! stores, so that a copy of the database files reveals no frame as the
//! devices sent it, no email address, and no device or organization name.
//!
//! Key hierarchy: a key-encryption key (KEK) from `--at-rest-key-file` or
//! `SEALCAST_AT_REST_KEY` wraps a random data key (DEK) with AES key wrap
//! (RFC 3394). Only the wrapped DEK and the KEK's fingerprint are stored, in
//! the `at_rest_keys` table, in SQLite or PostgreSQL. Stored values are sealed with AES-256-GCM under
//! keys derived from the DEK with HKDF-SHA-256, with the row's table,
//! primary key and column as associated data. Email addresses are also
//! stored as an HMAC-SHA-256 under a derived key, for sign-in lookup and
//! uniqueness.
//!
//! | module | job |
//! | --- | --- |
//! | [`key`] | the KEK: sources, text form, fingerprint, development key file |
//! | `data_key` | the DEK's derived keys, sealing and opening values and frames |
//! | `wrap` | unlocking the stored DEK, and re-wrapping it for key rotation |
//! | `sql` | SQL functions that seal and open values inside statements |

mod data_key;
pub mod key;
pub(crate) mod sql;
mod wrap;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use thiserror::Error;

use crate::db::DbError;

pub use data_key::{DataKeys, FrameCipher, FrameCiphers, SEAL_OVERHEAD};
pub use key::{Fingerprint, KeyEncryptionKey, KeySource, DEV_KEY_FILE, KEY_ENV, KEY_FILE_FLAG};
pub(crate) use wrap::{confirm_stored, rotate, unlock, unlock_and_store};
pub use wrap::{unlock_existing, unlock_existing_at, DatabaseKeys};

/// A failure of the at-rest layer. Errors about keys name the flag or
/// variable to fix.
#[derive(Debug, Error)]
pub enum AtRestError {
    /// Both key sources are set.
    #[error("both {KEY_FILE_FLAG} and {KEY_ENV} are set: set only one of them")]
    TwoSources,
    /// A key's text is not 32 bytes in hex or base64.
    #[error("invalid at-rest key in {origin}: expected 32 bytes written as 64 hex digits or as base64 (make one with `sealcast-relay keys generate --out PATH`)")]
    InvalidKey {
        /// The flag, variable or file.
        origin: String,
    },
    /// A key file could not be read.
    #[error("failed to read the at-rest key file {path}: {source}: check {KEY_FILE_FLAG}")]
    KeyFileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file could not be written.
    #[error("failed to write the at-rest key file {path}: {source}")]
    KeyFileWrite {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database is encrypted but no key was given.
    #[error("the database in {data_dir} is encrypted at rest by a key with fingerprint {expected}, but no key was given: pass {KEY_FILE_FLAG} PATH or set {KEY_ENV} to that key")]
    MissingKey {
        /// The data directory.
        data_dir: PathBuf,
        /// Fingerprint of the key that wraps the data key.
        expected: Fingerprint,
    },
    /// The given key is not the one that wraps the data key.
    #[error("the at-rest key from {origin} has fingerprint {given}, but the database's data key is wrapped by the key with fingerprint {expected}: pass that key, or the new key if it was rotated with `sealcast-relay keys rotate`")]
    WrongKey {
        /// Flag, variable or file the key came from.
        origin: String,
        /// Fingerprint of the given key.
        given: Fingerprint,
        /// Fingerprint stored with the wrapped data key.
        expected: Fingerprint,
    },
    /// The fingerprint matched but the unwrap failed.
    #[error("failed to unwrap the database's data key with the key from {origin}: the at_rest_keys row was altered")]
    Unwrap {
        /// Flag, variable or file the key came from.
        origin: String,
    },
    /// The `at_rest_keys` table exists without a valid row.
    #[error("the at_rest_keys table holds no valid wrapped data key: the database is damaged or was edited")]
    DamagedKeyRow,
    /// Another process stored a data key while this one made its own.
    #[error("another process set up the database's at-rest key at the same time: start again")]
    ConcurrentSetUp,
    /// The database has no data key to rotate.
    #[error("the database has no data key yet: start the relay on it once before rotating keys")]
    NoDataKey,
    /// A sealed value failed authentication.
    #[error("failed to decrypt {what}: the stored value was altered, or moved from another row")]
    Decrypt {
        /// Table and column of the value.
        what: String,
    },
    /// The database failed while reading or writing the key row.
    #[error("at-rest key store failed to {action}: {source}")]
    Database {
        /// The operation that failed.
        action: &'static str,
        /// The database's error.
        source: DbError,
    },
}

impl AtRestError {
    /// Wraps a database error with what was being done, for `map_err`.
    pub(crate) fn db(action: &'static str) -> impl Fn(DbError) -> AtRestError {
        move |source| AtRestError::Database { action, source }
    }

    /// Wraps an error of a bare SQLite connection with what was being done,
    /// for `map_err`.
    pub(crate) fn sqlite(action: &'static str) -> impl Fn(rusqlite::Error) -> AtRestError {
        move |source| AtRestError::Database {
            action,
            source: DbError::Sqlite(source),
        }
    }
}

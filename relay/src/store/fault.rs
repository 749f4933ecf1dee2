//! Classes of store failure, for metric labels, log fields and the reasons
//! that close codes and HTTP errors carry.

use super::StoreError;

/// Why a store write or commit failed, coarse enough for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFault {
    /// SQLite returned `SQLITE_FULL`: the file system is full, or the
    /// database reached its `max_page_count`. On PostgreSQL, SQLSTATE 53100.
    DiskFull,
    /// Another connection held the database lock for longer than the busy
    /// timeout (`SQLITE_BUSY` or `SQLITE_LOCKED`), or PostgreSQL aborted a
    /// transaction on a serialization failure, deadlock or lock timeout.
    Locked,
    /// The operating system reported an I/O error (`SQLITE_IOERR`), or the
    /// file became read-only or could not be opened, or the PostgreSQL
    /// connection was lost or could not be opened.
    IoError,
    /// The store refused this one write, for example a frame out of order,
    /// while the rest of its transaction committed.
    Rejected,
    /// Anything else, such as a damaged value or a stopped writer thread.
    Other,
}

impl StoreFault {
    /// Classifies `error`.
    pub(crate) fn of(error: &StoreError) -> StoreFault {
        match error {
            StoreError::Database { source, .. } => {
                if source.is_disk_full() {
                    StoreFault::DiskFull
                } else if source.is_locked() {
                    StoreFault::Locked
                } else if source.is_unreachable() {
                    StoreFault::IoError
                } else {
                    StoreFault::Other
                }
            }
            StoreError::FrameOutOfOrder { .. }
            | StoreError::SequenceOutOfOrder { .. }
            | StoreError::NotEndable { .. }
            | StoreError::BrowsersExhausted { .. }
            | StoreError::SessionEnded { .. }
            | StoreError::InviteChallengeRejected { .. }
            | StoreError::InviteChallengesFull
            | StoreError::UnknownPairedDevice { .. }
            | StoreError::StalePairedKey { .. }
            | StoreError::PairedKeyTooFar { .. } => StoreFault::Rejected,
            _ => StoreFault::Other,
        }
    }

    /// Returns the value of the `reason` label of the store failure metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            StoreFault::DiskFull => "disk_full",
            StoreFault::Locked => "locked",
            StoreFault::IoError => "io_error",
            StoreFault::Rejected => "rejected",
            StoreFault::Other => "other",
        }
    }

    /// Returns a short phrase for close reasons and error bodies.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            StoreFault::DiskFull => "disk full",
            StoreFault::Locked => "database locked",
            StoreFault::IoError => "I/O error",
            StoreFault::Rejected => "write rejected",
            StoreFault::Other => "store error",
        }
    }

    /// Checks whether the relay can expect the fault to clear without a
    /// restart, once space returns or the other process lets go of the lock.
    pub(crate) fn is_transient(self) -> bool {
        matches!(
            self,
            StoreFault::DiskFull | StoreFault::Locked | StoreFault::IoError
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::ErrorCode;

    use super::*;

    fn sqlite_error(code: ErrorCode, extended: i32) -> StoreError {
        let error = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error {
                code,
                extended_code: extended,
            },
            None,
        );
        StoreError::Database {
            action: "commit a transaction",
            source: Arc::new(crate::db::DbError::Sqlite(error)),
        }
    }

    #[test]
    fn sqlite_codes_map_to_faults() {
        let cases = [
            (ErrorCode::DiskFull, rusqlite::ffi::SQLITE_FULL, "disk_full"),
            (
                ErrorCode::DatabaseBusy,
                rusqlite::ffi::SQLITE_BUSY,
                "locked",
            ),
            (
                ErrorCode::DatabaseLocked,
                rusqlite::ffi::SQLITE_LOCKED,
                "locked",
            ),
            (
                ErrorCode::SystemIoFailure,
                rusqlite::ffi::SQLITE_IOERR_WRITE,
                "io_error",
            ),
            (
                ErrorCode::ConstraintViolation,
                rusqlite::ffi::SQLITE_CONSTRAINT,
                "other",
            ),
        ];
        for (code, extended, label) in cases {
            let fault = StoreFault::of(&sqlite_error(code, extended));
            assert_eq!(fault.label(), label, "{code:?}");
        }
    }

    #[test]
    fn refusals_and_stops_are_classified() {
        let session_id = sealcast_protocol::SessionId([7; 16]);
        let rejected = StoreError::FrameOutOfOrder {
            session_id,
            offset: 3,
        };
        assert_eq!(StoreFault::of(&rejected), StoreFault::Rejected);
        assert_eq!(
            StoreFault::of(&StoreError::WriterStopped),
            StoreFault::Other
        );
        assert!(!StoreFault::Other.is_transient());
        assert!(StoreFault::DiskFull.is_transient());
    }
}

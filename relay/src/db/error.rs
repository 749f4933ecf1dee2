//! Database errors of either engine, classified the same way.

use std::time::Duration;

use rusqlite::ErrorCode;
use thiserror::Error;

/// A failed database call.
#[derive(Debug, Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed, or its connection did.
    #[error("PostgreSQL: {}", postgres_summary(.0))]
    Postgres(#[from] postgres::Error),
    /// The PostgreSQL connection is lost and the next attempt to open it is
    /// not due yet.
    #[error("PostgreSQL connection lost: next attempt in {} ms", .retry_in.as_millis())]
    Unavailable {
        /// Time until the next attempt.
        retry_in: Duration,
    },
    /// A column's value does not fit the Rust type it is read into.
    #[error("column {column} holds {found}, not {expected}")]
    Conversion {
        /// Index of the column.
        column: usize,
        /// The kind the caller reads.
        expected: &'static str,
        /// The kind the column contains.
        found: &'static str,
    },
    /// A statement of the transaction failed earlier, so PostgreSQL
    /// refuses the rest of it and rolls it back.
    #[error("PostgreSQL transaction aborted by an earlier error and rolled back")]
    TransactionFailed,
    /// The connection was lost inside the transaction, which the server
    /// rolled back.
    #[error("PostgreSQL connection lost inside a transaction, which was rolled back")]
    TransactionLost,
    /// The server accepted the connection but did not finish its startup in time.
    #[error("PostgreSQL did not answer the connection's startup within {} s", .after.as_secs())]
    ConnectTimedOut {
        /// The time waited.
        after: Duration,
    },
    /// No thread could be started for a connection attempt.
    #[error("failed to start a thread to connect to PostgreSQL: {0}")]
    ConnectThread(String),
    /// The connection string requests something this relay does not support.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A query that must return a row returned none.
    #[error("query returned no row")]
    NoRow,
}

/// Summarizes a PostgreSQL error by its SQLSTATE and message. The detail is
/// left out, because PostgreSQL writes key values into it.
fn postgres_summary(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if error.is_closed() => "connection closed".to_owned(),
        // The source gives the reason, such as "Connection refused (os error 111)".
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

impl DbError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Postgres(error) => error.code().map(|code| code.code()),
            _ => None,
        }
    }

    /// Checks whether the disk is full.
    pub(crate) fn is_disk_full(&self) -> bool {
        match self {
            DbError::Sqlite(error) => error.sqlite_error_code() == Some(ErrorCode::DiskFull),
            _ => self.sqlstate() == Some("53100"),
        }
    }

    /// Checks whether another writer held a lock too long, or the database
    /// resolved a conflict by aborting.
    pub(crate) fn is_locked(&self) -> bool {
        match self {
            DbError::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            _ => matches!(self.sqlstate(), Some("40001" | "40P01" | "55P03")),
        }
    }

    /// Checks whether the database could not be reached, read or written:
    /// an I/O error, a read-only or unopenable file, or a lost server
    /// connection.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            DbError::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(ErrorCode::SystemIoFailure | ErrorCode::ReadOnly | ErrorCode::CannotOpen)
            ),
            DbError::Postgres(error) => {
                error.is_closed()
                    || error.as_db_error().is_none()
                    || matches!(
                        error.code().map(|code| &code.code()[..2]),
                        Some("08" | "57" | "58")
                    )
            }
            DbError::Unavailable { .. }
            | DbError::TransactionLost
            | DbError::ConnectTimedOut { .. }
            | DbError::ConnectThread(_) => true,
            DbError::Conversion { .. }
            | DbError::NoRow
            | DbError::TransactionFailed
            | DbError::Unsupported(_) => false,
        }
    }

    /// Checks whether a UNIQUE or PRIMARY KEY constraint rejected the write.
    #[cfg(test)]
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => {
                error.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || error.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            _ => self.sqlstate() == Some("23505"),
        }
    }

    /// Checks whether a constraint or trigger rejected the write.
    #[cfg(test)]
    pub(crate) fn is_constraint(&self) -> bool {
        match self {
            DbError::Sqlite(error) => {
                error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
            }
            _ => self
                .sqlstate()
                .is_some_and(|code| code.starts_with("23") || code == "P0001"),
        }
    }
}

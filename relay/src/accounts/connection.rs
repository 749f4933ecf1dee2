//! The account connection: one [`Db`] on either engine, with the data keys
//! that seal and open account values at rest.
//!
//! Account statements bind sealed values and read them back as they are
//! stored. Sealing, opening and the email lookup hash run here in Rust, so
//! the statements need no SQL functions and run on PostgreSQL as on SQLite.
//! The stored bytes are the same as those of the `at_rest_*` SQL functions
//! of [`crate::at_rest::sql`], so databases written with those still read.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use zeroize::Zeroizing;

use crate::at_rest::{DataKeys, DatabaseKeys, KeySource};
use crate::db::{Backend, Db, DbError, FromDb, Value};
use crate::metrics::STORE_AT_REST_FAILURES;
use crate::store::{open_extra_writer, open_keyed_db, StoreError};

/// The account connection, cheap to clone.
#[derive(Clone)]
pub(crate) struct AccountDb {
    conn: Arc<Mutex<AccountConnection>>,
}

impl std::fmt::Debug for AccountDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountDb")
    }
}

impl AccountDb {
    /// Opens the database of `backend` beside a store that unlocked `keys`.
    /// Call it on a blocking thread: the PostgreSQL client blocks while it connects.
    pub(crate) fn open(backend: &Backend, keys: &DatabaseKeys) -> Result<AccountDb, StoreError> {
        let db = open_extra_writer(backend, keys)?;
        Ok(AccountDb::new(db, keys.data_keys().clone()))
    }

    /// Opens the database of `backend`, unlocking its data key with the key
    /// from `source` (whose development key file is in `data_dir`) and
    /// migrating it if needed.
    pub(crate) fn open_with_key(
        data_dir: &Path,
        backend: &Backend,
        source: &KeySource,
    ) -> Result<AccountDb, StoreError> {
        let (db, keys) = open_keyed_db(data_dir, backend, source)?;
        Ok(AccountDb::new(db, keys.data_keys().clone()))
    }

    /// Uses `db`, whose sealed values are sealed under `keys`.
    pub(crate) fn new(db: Db, keys: Arc<DataKeys>) -> AccountDb {
        AccountDb {
            conn: Arc::new(Mutex::new(AccountConnection::new(db, keys))),
        }
    }

    /// Runs `work` on the connection on the blocking thread pool.
    pub(crate) async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AccountConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_blocking(work))
            .await
            .map_err(|error| E::from(StoreError::ReadTask(error.to_string())))?
    }

    /// Runs `work` on the connection on this thread.
    pub(crate) fn run_blocking<T, E>(
        &self,
        work: impl FnOnce(&mut AccountConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        work(&mut conn)
    }
}

/// A database connection with the data keys of its sealed values. It
/// dereferences to the [`Db`], for statements and transactions.
pub(crate) struct AccountConnection {
    db: Db,
    keys: Arc<DataKeys>,
}

impl std::ops::Deref for AccountConnection {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}

impl AccountConnection {
    /// Uses `db`, whose sealed values are sealed under `keys`.
    pub(crate) fn new(db: Db, keys: Arc<DataKeys>) -> AccountConnection {
        AccountConnection { db, keys }
    }

    /// Seals `value` for `table.column` of the row with primary key
    /// `row_key`, as `at_rest_seal` does.
    pub(crate) fn seal(&self, table: &str, column: &str, row_key: &[u8], value: &[u8]) -> Vec<u8> {
        self.keys.seal_value(table, column, row_key, value)
    }

    /// Seals `value` when there is one, and leaves NULL as NULL.
    pub(crate) fn seal_optional(
        &self,
        table: &str,
        column: &str,
        row_key: &[u8],
        value: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        value.map(|value| self.seal(table, column, row_key, value))
    }

    /// Returns the keyed lookup hash of a normalized email address, as
    /// `at_rest_email_hash` does.
    pub(crate) fn email_hash(&self, email: &str) -> [u8; 32] {
        self.keys.email_hash(email)
    }

    /// Opens a value sealed for `table.column` of the row with primary key
    /// `row_key`. A value that fails to open is counted and logged, and
    /// fails with [`crate::at_rest::AtRestError::Decrypt`].
    pub(crate) fn open_blob(
        &self,
        table: &'static str,
        column: &'static str,
        row_key: &[u8],
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.keys
            .open_value(table, column, row_key, &sealed.0)
            .map_err(|error| {
                metrics::counter!(STORE_AT_REST_FAILURES, "column" => format!("{table}.{column}"))
                    .increment(1);
                tracing::error!(table, column, "stored value failed at-rest decryption");
                StoreError::at_rest(error)
            })
    }

    /// Opens a sealed value that is UTF-8 text.
    pub(crate) fn open_text(
        &self,
        table: &'static str,
        column: &'static str,
        row_key: &[u8],
        sealed: &Sealed,
    ) -> Result<String, StoreError> {
        let mut opened = self.open_blob(table, column, row_key, sealed)?;
        String::from_utf8(std::mem::take(&mut *opened)).map_err(|error| {
            // Clear the copy that the error still holds.
            drop(Zeroizing::new(error.into_bytes()));
            StoreError::Corrupt {
                what: "sealed text that is not UTF-8",
            }
        })
    }

    /// Opens a sealed value when there is one.
    pub(crate) fn open_blob_optional(
        &self,
        table: &'static str,
        column: &'static str,
        row_key: &[u8],
        sealed: Option<&Sealed>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        sealed
            .map(|sealed| self.open_blob(table, column, row_key, sealed))
            .transpose()
    }
}

/// A sealed column value as stored. SQLite keeps the sealed values of
/// columns declared TEXT as blobs, and a text value is read as its bytes,
/// as the `at_rest_open_*` SQL functions read it.
#[derive(Debug, Clone)]
pub(crate) struct Sealed(Vec<u8>);

impl FromDb for Sealed {
    const EXPECTED: &'static str = "sealed blob";

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Blob(bytes) => Some(Sealed(bytes.to_vec())),
            Value::Text(text) => Some(Sealed(text.as_bytes().to_vec())),
            Value::Null | Value::Integer(_) => None,
        }
    }
}

/// Maps a database error to the store's error, naming what failed.
pub(crate) fn db_error(action: &'static str) -> impl Fn(DbError) -> StoreError {
    StoreError::db(action)
}

//! The wrapped data key in the `at_rest_keys` table: unlocking it at
//! start-up and re-wrapping it under a new key-encryption key.
//!
//! The data key is wrapped with AES key wrap (RFC 3394) under the KEK, and
//! the KEK's fingerprint is stored beside it, so that a wrong key is named
//! as such before the unwrap is tried.

use std::path::Path;
use std::sync::Arc;

use aes_kw::KekAes256;
use rand::RngCore;
use rusqlite::Connection;
use zeroize::Zeroizing;

use super::data_key::{DataKeys, DATA_KEY_BYTES};
use super::key::{Fingerprint, KeyEncryptionKey, KeySource};
use super::AtRestError;
use crate::db::{db_params, Backend, Db};

/// Bytes of a data key wrapped by RFC 3394: the key and one 8-byte block.
const WRAPPED_BYTES: usize = DATA_KEY_BYTES + 8;

/// The data key as stored: wrapped, with the fingerprint of its KEK.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WrappedDataKey {
    pub(crate) kek_fingerprint: Fingerprint,
    pub(crate) wrapped: [u8; WRAPPED_BYTES],
}

/// A database's data keys, and their stored form.
#[derive(Debug, Clone)]
pub struct DatabaseKeys {
    pub(crate) keys: Arc<DataKeys>,
    pub(crate) wrapped: WrappedDataKey,
    /// Whether the data key was made now, because the database had none.
    pub(crate) new: bool,
    /// The KEK's source, for the start-up banner.
    pub(crate) source: String,
}

impl DatabaseKeys {
    /// Returns the data keys.
    pub fn data_keys(&self) -> &Arc<DataKeys> {
        &self.keys
    }

    /// Returns the fingerprint of the key-encryption key.
    pub fn kek_fingerprint(&self) -> Fingerprint {
        self.wrapped.kek_fingerprint
    }

    /// Names where the key-encryption key came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Returns whether the data key was made on this start, because the
    /// database had none.
    pub fn is_new(&self) -> bool {
        self.new
    }
}

/// Checks that the database stores the wrapped data key of `keys`. A new
/// data key must be stored by the migration before anything is sealed with it.
pub(crate) fn confirm_stored(conn: &Db, keys: &DatabaseKeys) -> Result<(), AtRestError> {
    match read_stored(conn)? {
        Some(stored) if stored.wrapped == keys.wrapped.wrapped => Ok(()),
        Some(_) => Err(AtRestError::ConcurrentSetUp),
        None => Err(AtRestError::DamagedKeyRow),
    }
}

/// Unlocks the data key of the database on `conn`. A database without one
/// gets a new random data key, which the at-rest schema migration stores.
pub(crate) fn unlock(
    conn: &Db,
    data_dir: &Path,
    source: &KeySource,
) -> Result<DatabaseKeys, AtRestError> {
    let described = source.describe(data_dir);
    match read_stored(conn)? {
        Some(stored) => {
            let kek = source.load_existing(data_dir, stored.kek_fingerprint)?;
            let dek = unwrap_key(&kek, &stored.wrapped, &described)?;
            Ok(DatabaseKeys {
                keys: Arc::new(DataKeys::from_data_key(&dek)),
                wrapped: stored,
                new: false,
                source: described,
            })
        }
        None => {
            let kek = source.load_or_create(data_dir)?;
            let mut dek = Zeroizing::new([0u8; DATA_KEY_BYTES]);
            rand::rngs::OsRng.fill_bytes(dek.as_mut_slice());
            Ok(DatabaseKeys {
                keys: Arc::new(DataKeys::from_data_key(&dek)),
                wrapped: wrap_key(&kek, &dek),
                new: true,
                source: described,
            })
        }
    }
}

/// Unlocks the data key of the database and stores it when it is new, in
/// one write transaction. So of several relay nodes that start on an empty
/// database at once, exactly one stores its data key and the others unlock
/// it. `data_dir` is where `source` finds or makes a development key file.
/// The PostgreSQL store uses it after migrating, because that schema has no
/// SQL functions to store the key with.
pub(crate) fn unlock_and_store(
    db: &Db,
    data_dir: &Path,
    source: &KeySource,
    now: i64,
) -> Result<DatabaseKeys, AtRestError> {
    let tx = db
        .begin_write()
        .map_err(AtRestError::db("begin storing the data key"))?;
    let keys = unlock(&tx, data_dir, source)?;
    if keys.new {
        tx.execute(
            "INSERT INTO at_rest_keys (key_slot, kek_fingerprint, wrapped_dek, created_at)
             VALUES (1, ?1, ?2, ?3)",
            db_params![
                keys.wrapped.kek_fingerprint.as_bytes(),
                keys.wrapped.wrapped,
                now
            ],
        )
        .map_err(AtRestError::db("store the wrapped data key"))?;
    }
    tx.commit()
        .map_err(AtRestError::db("commit the wrapped data key"))?;
    Ok(keys)
}

/// Unlocks the data key of the existing database in `data_dir` with the key
/// from `source`, read-only and without migrating it, for tools that work on
/// a stopped relay's store.
pub fn unlock_existing(data_dir: &Path, source: &KeySource) -> Result<DatabaseKeys, AtRestError> {
    let backend = Backend::Sqlite(data_dir.join(crate::store::DATABASE_FILE));
    unlock_existing_in(data_dir, &backend, source)
}

/// Unlocks the data key of the existing database with the key from
/// `source`, without migrating it: the PostgreSQL database at
/// `database_url`, or for `None` the SQLite file in `data_dir`, which is
/// opened read-only. `data_dir` is where `source` finds a development key file.
pub fn unlock_existing_at(
    data_dir: &Path,
    database_url: Option<&str>,
    source: &KeySource,
) -> Result<DatabaseKeys, AtRestError> {
    let backend = match database_url {
        Some(url) => Backend::postgres(url).map_err(AtRestError::db("read the database URL"))?,
        None => Backend::Sqlite(data_dir.join(crate::store::DATABASE_FILE)),
    };
    unlock_existing_in(data_dir, &backend, source)
}

/// Unlocks the data key of the existing database of `backend` with the key
/// from `source`, without migrating it. `data_dir` is where `source` finds
/// a development key file.
pub(crate) fn unlock_existing_in(
    data_dir: &Path,
    backend: &Backend,
    source: &KeySource,
) -> Result<DatabaseKeys, AtRestError> {
    let db = match backend {
        Backend::Sqlite(path) => Db::Sqlite(
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(AtRestError::sqlite("open the database"))?,
        ),
        Backend::Postgres(_) => match backend.connect_postgres() {
            Some(connected) => connected.map_err(AtRestError::db("open the database"))?,
            None => unreachable!("a PostgreSQL backend connects to PostgreSQL"),
        },
    };
    let stored = read_stored(&db)?.ok_or(AtRestError::NoDataKey)?;
    let kek = source.load_existing(data_dir, stored.kek_fingerprint)?;
    let dek = unwrap_key(&kek, &stored.wrapped, &source.describe(data_dir))?;
    Ok(DatabaseKeys {
        keys: Arc::new(DataKeys::from_data_key(&dek)),
        wrapped: stored,
        new: false,
        source: source.describe(data_dir),
    })
}

/// Re-wraps the data key under `new_key`, after checking that `old_key`
/// wraps it now. The data itself is not re-encrypted. Returns the new KEK's
/// fingerprint.
pub(crate) fn rotate(
    conn: &Db,
    old_key: &KeyEncryptionKey,
    old_origin: &str,
    new_key: &KeyEncryptionKey,
    now: i64,
) -> Result<Fingerprint, AtRestError> {
    let tx = conn
        .begin_write()
        .map_err(AtRestError::db("begin the key rotation"))?;
    let stored = read_stored(&tx)?.ok_or(AtRestError::NoDataKey)?;
    let given = old_key.fingerprint();
    if given != stored.kek_fingerprint {
        return Err(AtRestError::WrongKey {
            origin: old_origin.to_owned(),
            given,
            expected: stored.kek_fingerprint,
        });
    }
    let dek = unwrap_key(old_key, &stored.wrapped, old_origin)?;
    let rewrapped = wrap_key(new_key, &dek);
    tx.execute(
        "UPDATE at_rest_keys SET kek_fingerprint = ?1, wrapped_dek = ?2, rotated_at = ?3
         WHERE key_slot = 1",
        db_params![rewrapped.kek_fingerprint.as_bytes(), rewrapped.wrapped, now],
    )
    .map_err(AtRestError::db("store the re-wrapped data key"))?;
    tx.commit()
        .map_err(AtRestError::db("commit the key rotation"))?;
    Ok(rewrapped.kek_fingerprint)
}

/// Reads the stored data key, or `None` when the database has none yet.
fn read_stored(conn: &Db) -> Result<Option<WrappedDataKey>, AtRestError> {
    let table_query = if conn.is_postgres() {
        "SELECT 1 WHERE to_regclass('at_rest_keys') IS NOT NULL"
    } else {
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'at_rest_keys'"
    };
    let has_table = conn
        .query_opt(table_query, db_params![], |_| Ok(()))
        .map_err(AtRestError::db("look for the at_rest_keys table"))?
        .is_some();
    if !has_table {
        return Ok(None);
    }
    let row = conn
        .query_opt(
            "SELECT kek_fingerprint, wrapped_dek FROM at_rest_keys WHERE key_slot = 1",
            db_params![],
            |row| Ok((row.get::<Vec<u8>>(0)?, row.get::<Vec<u8>>(1)?)),
        )
        .map_err(AtRestError::db("read the wrapped data key"))?;
    let Some((fingerprint, wrapped)) = row else {
        // The PostgreSQL schema creates the table empty, and the first
        // relay node stores the key in it. Without sealed values the
        // database is new, else the row was deleted.
        if conn.is_postgres() && !has_sealed_values(conn)? {
            return Ok(None);
        }
        return Err(AtRestError::DamagedKeyRow);
    };
    Ok(Some(WrappedDataKey {
        kek_fingerprint: Fingerprint::from_stored(&fingerprint)
            .ok_or(AtRestError::DamagedKeyRow)?,
        wrapped: wrapped
            .as_slice()
            .try_into()
            .map_err(|_| AtRestError::DamagedKeyRow)?,
    }))
}

/// Checks whether any table with sealed values has a row.
fn has_sealed_values(conn: &Db) -> Result<bool, AtRestError> {
    conn.query_one(
        "SELECT EXISTS (SELECT 1 FROM frames) OR EXISTS (SELECT 1 FROM organizations)
            OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM devices)
            OR EXISTS (SELECT 1 FROM pending_logins) OR EXISTS (SELECT 1 FROM signing_keys)",
        db_params![],
        |row| row.get::<bool>(0),
    )
    .map_err(AtRestError::db("look for sealed values"))
}

fn wrap_key(kek: &KeyEncryptionKey, dek: &[u8; DATA_KEY_BYTES]) -> WrappedDataKey {
    let mut wrapped = [0u8; WRAPPED_BYTES];
    // RFC 3394 wraps any multiple of 8 bytes from 16 on into 8 more bytes.
    KekAes256::new(kek.bytes().into())
        .wrap(dek, &mut wrapped)
        .unwrap_or_else(|_| unreachable!("a 32-byte key wraps into 40 bytes"));
    WrappedDataKey {
        kek_fingerprint: kek.fingerprint(),
        wrapped,
    }
}

fn unwrap_key(
    kek: &KeyEncryptionKey,
    wrapped: &[u8; WRAPPED_BYTES],
    origin: &str,
) -> Result<Zeroizing<[u8; DATA_KEY_BYTES]>, AtRestError> {
    let mut dek = Zeroizing::new([0u8; DATA_KEY_BYTES]);
    KekAes256::new(kek.bytes().into())
        .unwrap(wrapped, dek.as_mut_slice())
        .map_err(|_| AtRestError::Unwrap {
            origin: origin.to_owned(),
        })?;
    Ok(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trips_and_detects_tampering() {
        let kek = KeyEncryptionKey::generate();
        let dek = [9u8; DATA_KEY_BYTES];
        let wrapped = wrap_key(&kek, &dek);
        assert_eq!(wrapped.kek_fingerprint, kek.fingerprint());
        assert_eq!(*unwrap_key(&kek, &wrapped.wrapped, "test").unwrap(), dek);

        let mut altered = wrapped.wrapped;
        altered[0] ^= 1;
        assert!(unwrap_key(&kek, &altered, "test").is_err());
        let other = KeyEncryptionKey::generate();
        assert!(unwrap_key(&other, &wrapped.wrapped, "test").is_err());
    }
}

//! Opening the store's connections on either engine: the writer's, with its
//! data key unlocked and the schema migrated, and the extra write
//! connections that accounts, admin commands and retention use beside the
//! writer thread.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

#[cfg(test)]
use super::DATABASE_FILE;
use super::{schema, schema_pg, StoreError};
use crate::at_rest::{self, AtRestError, DatabaseKeys, KeySource};
use crate::db::{Backend, Db};

/// Opens a read-write connection to `relay.db` in `data_dir`, unlocks the
/// data key with the key from `source`, registers the at-rest SQL functions
/// and migrates the schema if needed. A database without a data key gets a
/// new one, stored by the at-rest migration.
#[cfg(test)]
pub(crate) fn open_keyed_writer(
    data_dir: &Path,
    source: &KeySource,
) -> Result<(Connection, DatabaseKeys), StoreError> {
    let (db, keys) = open_keyed_sqlite(&data_dir.join(DATABASE_FILE), data_dir, source)?;
    match db {
        Db::Sqlite(conn) => Ok((conn, keys)),
        Db::Postgres(_) => unreachable!("a SQLite path opens a SQLite connection"),
    }
}

/// Opens the writer's connection to the database of `backend`, unlocks the
/// data key with the key from `source` and migrates the schema if needed.
/// A database without a data key gets a new one.
pub(crate) fn open_keyed_db(
    data_dir: &Path,
    backend: &Backend,
    source: &KeySource,
) -> Result<(Db, DatabaseKeys), StoreError> {
    match backend {
        Backend::Sqlite(path) => open_keyed_sqlite(path, data_dir, source),
        Backend::Postgres(_) => {
            let db = connect_postgres(backend)?;
            schema_pg::migrate(&db)?;
            let keys = at_rest::unlock_and_store(&db, data_dir, source, super::now_millis())
                .map_err(StoreError::at_rest)?;
            Ok((db, keys))
        }
    }
}

fn open_keyed_sqlite(
    path: &Path,
    data_dir: &Path,
    source: &KeySource,
) -> Result<(Db, DatabaseKeys), StoreError> {
    match try_open_keyed_sqlite(path, data_dir, source) {
        // Another relay node on this data directory stored its new data key
        // first. The database has one now, and the next attempt unlocks it.
        Err(StoreError::AtRest(error)) if matches!(*error, AtRestError::ConcurrentSetUp) => {
            try_open_keyed_sqlite(path, data_dir, source)
        }
        outcome => outcome,
    }
}

fn try_open_keyed_sqlite(
    path: &Path,
    data_dir: &Path,
    source: &KeySource,
) -> Result<(Db, DatabaseKeys), StoreError> {
    let conn = Connection::open(path).map_err(StoreError::sqlite("open the database file"))?;
    conn.busy_timeout(schema::BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("set the busy timeout"))?;
    let mut db = Db::Sqlite(conn);
    let keys = at_rest::unlock(&db, data_dir, source).map_err(StoreError::at_rest)?;
    if let Db::Sqlite(conn) = &mut db {
        at_rest::sql::register(conn, &keys)
            .map_err(StoreError::sqlite("register the at-rest functions"))?;
        schema::prepare_writer(conn)?;
    }
    if keys.is_new() {
        // Another process may have stored a data key of its own between the
        // unlock and the migration. Then this one was never stored.
        at_rest::confirm_stored(&db, &keys).map_err(StoreError::at_rest)?;
    }
    Ok((db, keys))
}

/// Opens another read-write connection beside the writer thread. On SQLite
/// it gets the writer's pragmas and the at-rest SQL functions of `keys`,
/// and SQLite serializes it with the writer, each waiting up to the busy
/// timeout for the lock. On PostgreSQL its write transactions take the
/// store's advisory lock, and values are sealed in Rust, so `keys` is not
/// used. The accounts module and the admin command use it.
pub(crate) fn open_extra_writer(backend: &Backend, keys: &DatabaseKeys) -> Result<Db, StoreError> {
    match backend {
        Backend::Sqlite(path) => open_extra_sqlite(path, keys).map(Db::Sqlite),
        Backend::Postgres(_) => open_migrated_writer(backend),
    }
}

fn open_extra_sqlite(path: &Path, keys: &DatabaseKeys) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(StoreError::sqlite("open the database file"))?;
    at_rest::sql::register(&conn, keys)
        .map_err(StoreError::sqlite("register the at-rest functions"))?;
    schema::prepare_writer(&mut conn)?;
    Ok(conn)
}

/// Opens another read-write connection to the database of `backend`
/// without the at-rest functions, for the audit and retention work that
/// reads and deletes rows without opening sealed values. It does not
/// migrate, because a SQLite migration may need the at-rest key, so a
/// database at an older schema version is rejected.
pub(crate) fn open_migrated_writer(backend: &Backend) -> Result<Db, StoreError> {
    match backend {
        Backend::Sqlite(path) => {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(StoreError::sqlite("open the database file"))?;
            schema::set_writer_pragmas(&conn)?;
            let found = schema::schema_version(&conn)?;
            if found != schema::SCHEMA_VERSION {
                return Err(StoreError::SchemaNotCurrent {
                    found,
                    expected: schema::SCHEMA_VERSION,
                });
            }
            Ok(Db::Sqlite(conn))
        }
        Backend::Postgres(_) => {
            let db = connect_postgres(backend)?;
            let found = schema_pg::schema_version(&db)?;
            if found != schema_pg::SCHEMA_VERSION {
                return Err(StoreError::SchemaNotCurrent {
                    found,
                    expected: schema_pg::SCHEMA_VERSION,
                });
            }
            Ok(db)
        }
    }
}

/// Opens a PostgreSQL connection of `backend`.
pub(super) fn connect_postgres(backend: &Backend) -> Result<Db, StoreError> {
    match backend.connect_postgres() {
        Some(connected) => connected.map_err(StoreError::db("connect to PostgreSQL")),
        None => unreachable!("connect_postgres is called for PostgreSQL backends only"),
    }
}

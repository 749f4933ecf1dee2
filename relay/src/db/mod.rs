//! The relational database under the store: one connection type over the
//! embedded SQLite file and a PostgreSQL server.
//!
//! Store modules write each statement once, in the SQL both engines share,
//! with SQLite's numbered placeholders (`?1`); the PostgreSQL connection
//! rewrites them to `$1`. Where the dialects part, a module checks
//! [`Db::is_postgres`]. Parameters and columns pass through [`Value`], so an
//! integer, a text or a byte string means the same on both engines: the
//! PostgreSQL schema uses `BIGINT`, `TEXT` and `BYTEA` where SQLite's uses
//! `INTEGER`, `TEXT` and `BLOB`.
//!
//! | module | job |
//! | --- | --- |
//! | [`value`] | parameters and column values |
//! | [`error`] | errors of either engine, classified alike |
//! | [`pg`] | the PostgreSQL connection, its statement cache and reconnection |

mod error;
mod pg;
mod value;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::DbError;
pub(crate) use value::{FromDb, ToDb, Value};

use pg::PgConnection;

use crate::config::StoreConfig;

/// Builds the parameter slice of a statement: `db_params![a, b]`.
macro_rules! db_params {
    () => {
        &[] as &[&dyn $crate::db::ToDb]
    };
    ($($param:expr),+ $(,)?) => {
        &[$(&$param as &dyn $crate::db::ToDb),+] as &[&dyn $crate::db::ToDb]
    };
}
pub(crate) use db_params;

/// Key of the PostgreSQL advisory lock that every write transaction holds,
/// so that writes of all relay nodes commit one after another, as SQLite's
/// `BEGIN IMMEDIATE` makes them do on one file. The bytes spell "sealcast".
const WRITE_LOCK_KEY: i64 = 0x7365_616c_6361_7374;

/// The store's database.
#[derive(Clone)]
pub(crate) enum Backend {
    /// The embedded SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL database. The configuration's `Debug` hides the password.
    Postgres(Arc<postgres::Config>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Backend::Postgres(config) => f
                .debug_struct("Postgres")
                .field("host", &config.get_hosts())
                .field("port", &config.get_ports())
                .field("dbname", &config.get_dbname())
                .finish_non_exhaustive(),
        }
    }
}

impl Backend {
    /// Parses a PostgreSQL URL or key-value connection string.
    pub(crate) fn postgres(url: &str) -> Result<Backend, DbError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(DbError::Unsupported(
                "sslmode=require: this relay connects to PostgreSQL without TLS, so keep the \
                 database on loopback or a private network and remove sslmode",
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(pg::CONNECT_TIMEOUT);
        }
        // Find a peer that vanished without closing the connection, instead
        // of waiting for the operating system's default of hours.
        config.keepalives(true);
        config.keepalives_idle(pg::KEEPALIVE_IDLE);
        config.tcp_user_timeout(pg::TCP_USER_TIMEOUT);
        // A write transaction that waits longer than this for the store's
        // advisory lock, because another connection holds it, fails, so its
        // frames are not acknowledged and their publishers resend them.
        let options = match config.get_options() {
            Some(options) => format!("{options} -c lock_timeout={}", pg::LOCK_TIMEOUT_MS),
            None => format!("-c lock_timeout={}", pg::LOCK_TIMEOUT_MS),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("sealcast-relay");
        }
        Ok(Backend::Postgres(Arc::new(config)))
    }

    /// Returns the backend that `store` selects, with SQLite's file in `data_dir`.
    pub(crate) fn from_config(store: &StoreConfig, data_dir: &Path) -> Result<Backend, DbError> {
        match store {
            StoreConfig::Sqlite => Ok(Backend::Sqlite(data_dir.join(crate::store::DATABASE_FILE))),
            StoreConfig::Postgres { url } => Backend::postgres(url),
        }
    }

    /// Opens a PostgreSQL connection. SQLite connections are opened by the
    /// store, which sets their pragmas and functions.
    pub(crate) fn connect_postgres(&self) -> Option<Result<Db, DbError>> {
        match self {
            Backend::Postgres(config) => {
                Some(PgConnection::open(postgres::Config::clone(config)).map(Db::Postgres))
            }
            Backend::Sqlite(_) => None,
        }
    }
}

/// A connection to either engine. Not `Sync`: one thread uses it at a time.
// A relay keeps a handful of connections for its whole run, so the larger
// PostgreSQL variant costs a few hundred bytes each and no allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Db {
    /// An open SQLite connection.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL connection.
    Postgres(PgConnection),
}

impl From<rusqlite::Connection> for Db {
    fn from(conn: rusqlite::Connection) -> Db {
        Db::Sqlite(conn)
    }
}

/// A row of a query's result.
pub(crate) enum Row<'a> {
    /// A SQLite row.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A PostgreSQL row.
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    /// Reads column `index` as `T`.
    pub(crate) fn get<T: FromDb>(&self, index: usize) -> Result<T, DbError> {
        let value = match self {
            Row::Sqlite(row) => match row.get_ref(index)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(number) => Value::Integer(number),
                rusqlite::types::ValueRef::Text(text) => {
                    Value::Text(std::str::from_utf8(text).map_err(|_| DbError::Conversion {
                        column: index,
                        expected: T::EXPECTED,
                        found: "text that is not UTF-8",
                    })?)
                }
                rusqlite::types::ValueRef::Blob(bytes) => Value::Blob(bytes),
                rusqlite::types::ValueRef::Real(_) => {
                    return Err(DbError::Conversion {
                        column: index,
                        expected: T::EXPECTED,
                        found: "real",
                    })
                }
            },
            Row::Postgres(row) => pg::column_value(row, index)?,
        };
        value::convert(index, value)
    }
}

/// SQLite binds a [`Value`] without copying it.
struct SqliteParam<'a>(Value<'a>);

impl rusqlite::ToSql for SqliteParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        let value = match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(number) => ValueRef::Integer(number),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Blob(bytes) => ValueRef::Blob(bytes),
        };
        Ok(rusqlite::types::ToSqlOutput::Borrowed(value))
    }
}

fn values<'a>(params: &'a [&'a dyn ToDb]) -> Vec<Value<'a>> {
    params.iter().map(|param| param.to_db()).collect()
}

fn sqlite_params<'a>(values: &'a [Value<'a>]) -> Vec<SqliteParam<'a>> {
    values.iter().copied().map(SqliteParam).collect()
}

impl Db {
    /// Checks whether this is a PostgreSQL connection.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Returns the SQLite connection, for what only SQLite has: pragmas,
    /// checkpoints, functions.
    pub(crate) fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Db::Sqlite(conn) => Some(conn),
            Db::Postgres(_) => None,
        }
    }

    /// Runs statements without parameters.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => conn.batch(sql),
        }
    }

    /// Runs a statement and returns how many rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[&dyn ToDb]) -> Result<usize, DbError> {
        let values = values(params);
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let params = sqlite_params(&values);
                Ok(statement.execute(rusqlite::params_from_iter(params.iter()))?)
            }
            Db::Postgres(conn) => {
                let changed = conn.execute(sql, &values)?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs a PostgreSQL query with parameters of PostgreSQL's own types,
    /// such as arrays, which [`Value`] does not cover. The statement uses
    /// `$1` placeholders. On SQLite it fails with [`DbError::Unsupported`].
    pub(crate) fn query_postgres(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, DbError> {
        match self {
            Db::Postgres(conn) => conn.query_native(sql, params),
            Db::Sqlite(_) => Err(DbError::Unsupported("a PostgreSQL statement on SQLite")),
        }
    }

    /// Runs a query and maps every row with `map`.
    pub(crate) fn query_all<T>(
        &self,
        sql: &str,
        params: &[&dyn ToDb],
        mut map: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let values = values(params);
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let params = sqlite_params(&values);
                let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(map(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Db::Postgres(conn) => conn
                .query(sql, &values)?
                .iter()
                .map(|row| map(&Row::Postgres(row)))
                .collect(),
        }
    }

    /// Runs a query and maps its first row, if it returned one.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToDb],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let values = values(params);
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let params = sqlite_params(&values);
                let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
                match rows.next()? {
                    Some(row) => map(&Row::Sqlite(row)).map(Some),
                    None => Ok(None),
                }
            }
            Db::Postgres(conn) => match conn.query(sql, &values)?.first() {
                Some(row) => map(&Row::Postgres(row)).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Runs a query that returns at least one row and maps the first.
    pub(crate) fn query_one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToDb],
        map: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.query_opt(sql, params, map)?.ok_or(DbError::NoRow)
    }

    /// Begins a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`); on PostgreSQL it takes the store's advisory
    /// lock, which every node's writes share.
    pub(crate) fn begin_write(&self) -> Result<Transaction<'_>, DbError> {
        match self {
            Db::Sqlite(_) => self.batch("BEGIN IMMEDIATE")?,
            // One round trip for both statements.
            Db::Postgres(conn) => conn.begin(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
            ))?,
        }
        Ok(Transaction {
            db: self,
            open: true,
        })
    }

    /// Begins a read transaction that reads one snapshot throughout.
    pub(crate) fn begin_read(&self) -> Result<Transaction<'_>, DbError> {
        match self {
            Db::Sqlite(_) => self.batch("BEGIN")?,
            Db::Postgres(conn) => conn.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?,
        }
        Ok(Transaction {
            db: self,
            open: true,
        })
    }

    /// Checks whether a transaction is still open. SQLite ends one by
    /// itself after some errors, such as a full disk.
    pub(crate) fn in_transaction(&self) -> bool {
        match self {
            Db::Sqlite(conn) => !conn.is_autocommit(),
            Db::Postgres(conn) => conn.transaction() == pg::TxState::Open,
        }
    }

    fn end_transaction(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(conn) if conn.is_autocommit() => Ok(()),
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => conn.end(sql),
        }
    }
}

/// An open transaction, rolled back on drop unless committed.
pub(crate) struct Transaction<'a> {
    db: &'a Db,
    open: bool,
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl Transaction<'_> {
    /// Commits the transaction.
    pub(crate) fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        self.db.end_transaction("COMMIT")
    }

    /// Runs `write` under a savepoint: when it fails, what it wrote is
    /// undone and the transaction stays usable, on either engine.
    pub(crate) fn savepoint<T, E: From<DbError>>(
        &self,
        write: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.db.savepoint(write)
    }
}

impl Db {
    /// Runs `write` under a savepoint of the open transaction, as
    /// [`Transaction::savepoint`] does, for code that gets the transaction
    /// as a `&Db`. Savepoints nest.
    pub(crate) fn savepoint<T, E: From<DbError>>(
        &self,
        write: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.batch("SAVEPOINT write")?;
        match write(self) {
            Ok(value) => {
                self.batch("RELEASE write")?;
                Ok(value)
            }
            Err(error) => {
                match self {
                    Db::Sqlite(conn) if !conn.is_autocommit() => {
                        conn.execute_batch("ROLLBACK TO write; RELEASE write")
                            .map_err(DbError::from)?;
                    }
                    Db::Sqlite(_) => {}
                    Db::Postgres(conn) => conn.rollback_to("write")?,
                }
                Err(error)
            }
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.end_transaction("ROLLBACK");
        }
    }
}

#[cfg(test)]
pub(crate) mod test_database;
#[cfg(test)]
pub(crate) mod tests;

//! `sealcast-relay keys`: making at-rest key files, and rotating the
//! key-encryption key of a data directory's database.
//!
//! Rotation re-wraps the data key under the new key in one transaction and
//! re-encrypts no data. A running relay keeps working, because it keeps the
//! unwrapped data key in memory. It needs the new key when it starts again.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rusqlite::Connection;
use thiserror::Error;

use crate::at_rest::{self, AtRestError, KeyEncryptionKey, DEV_KEY_FILE, KEY_FILE_FLAG};
use crate::db::{Backend, Db, DbError};
use crate::store::now_millis;
use crate::store_args::StoreArgs;

/// Arguments of `sealcast-relay keys`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum KeysCommand {
    /// Write a new random at-rest key to a new file with mode 0600 and print
    /// its fingerprint.
    Generate {
        /// File to create. An existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wrap the database's data key under a new key. Start the relay with
    /// the new key afterwards.
    Rotate {
        /// Directory with relay.db, as given to serve.
        #[arg(long, env = "SEALCAST_DATA_DIR", default_value = "./sealcast-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// File with the key the data key is wrapped by now. For a relay
        /// started without a key, that is at-rest-dev.key in the data directory.
        #[arg(long)]
        old_key_file: PathBuf,
        /// File with the new key, for example from `keys generate`.
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

/// A failed `keys` command.
#[derive(Debug, Error)]
pub(crate) enum KeysError {
    /// A key or the key row failed.
    #[error(transparent)]
    AtRest(#[from] AtRestError),
    /// The store settings are invalid.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The database is missing.
    #[error("no database at {0}: check --data-dir")]
    NoDatabase(PathBuf),
    /// The database could not be opened.
    #[error("failed to open the database {path}: {source}")]
    Open {
        /// The file, or the PostgreSQL database's name.
        path: PathBuf,
        /// The database's error.
        source: DbError,
    },
    /// The old and new key are the same.
    #[error("the new key is the same as the old key: make a new one with `sealcast-relay keys generate --out PATH`")]
    SameKey,
    /// The result could not be written to stdout.
    #[error("failed to write the output: {0}")]
    Output(#[from] io::Error),
}

/// Runs one `keys` command and prints its result to stdout.
pub(crate) fn run(args: KeysArgs) -> Result<(), KeysError> {
    let mut out = io::stdout().lock();
    match args.command {
        KeysCommand::Generate { out: path } => {
            let key = KeyEncryptionKey::generate();
            key.write_new_file(&path)?;
            writeln!(
                out,
                "wrote a new at-rest key to {} (fingerprint {})",
                path.display(),
                key.fingerprint()
            )?;
        }
        KeysCommand::Rotate {
            data_dir,
            store,
            old_key_file,
            new_key_file,
        } => {
            let backend = store.backend(&data_dir)?;
            let fingerprint = rotate(&backend, &old_key_file, &new_key_file)?;
            writeln!(
                out,
                "the data key in {} is now wrapped by the key in {} (fingerprint {fingerprint}): start the relay with {KEY_FILE_FLAG} {}",
                data_dir.display(),
                new_key_file.display(),
                new_key_file.display()
            )?;
            let dev_key = data_dir.join(DEV_KEY_FILE);
            if dev_key.exists() {
                writeln!(
                    out,
                    "{} no longer unwraps the data key: delete it",
                    dev_key.display()
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// Re-wraps the data key of the database of `backend`. On SQLite it then
/// runs a TRUNCATE checkpoint so that the old wrapped key leaves the WAL.
fn rotate(
    backend: &Backend,
    old_key_file: &Path,
    new_key_file: &Path,
) -> Result<at_rest::Fingerprint, KeysError> {
    let old_key = KeyEncryptionKey::read_file(old_key_file)?;
    let new_key = KeyEncryptionKey::read_file(new_key_file)?;
    if old_key.fingerprint() == new_key.fingerprint() {
        return Err(KeysError::SameKey);
    }
    let origin = format!("--old-key-file {}", old_key_file.display());
    let path = match backend {
        Backend::Sqlite(path) => path.clone(),
        Backend::Postgres(config) => PathBuf::from(config.get_dbname().unwrap_or("postgres")),
    };
    let open_error = |source: DbError| KeysError::Open {
        path: path.clone(),
        source,
    };
    let db = match backend {
        Backend::Sqlite(path) => {
            if !path.exists() {
                return Err(KeysError::NoDatabase(path.clone()));
            }
            let sqlite_error = |source| open_error(DbError::Sqlite(source));
            let conn = Connection::open(path).map_err(sqlite_error)?;
            conn.busy_timeout(crate::store::BUSY_TIMEOUT)
                .map_err(sqlite_error)?;
            conn.pragma_update(None, "secure_delete", "ON")
                .map_err(sqlite_error)?;
            Db::Sqlite(conn)
        }
        Backend::Postgres(_) => match backend.connect_postgres() {
            Some(connected) => connected.map_err(open_error)?,
            None => unreachable!("a PostgreSQL backend connects to PostgreSQL"),
        },
    };
    let fingerprint = at_rest::rotate(&db, &old_key, &origin, &new_key, now_millis())?;
    if let Some(conn) = db.as_sqlite() {
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(|source| open_error(DbError::Sqlite(source)))?;
        if busy != 0 {
            tracing::warn!("failed to empty the WAL because a running relay reads it: the old wrapped key stays in the WAL until the relay's next checkpoint");
        }
    }
    Ok(fingerprint)
}

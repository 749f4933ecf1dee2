//! The store flags that `admin`, `audit`, `retention` and `keys` share with
//! `serve`, so that each command reaches the database the relay uses.

use std::path::Path;

use clap::Args;

use crate::db::Backend;
use crate::settings::StoreKind;
use crate::store::{StoreError, DATABASE_FILE};

/// The store flags of a relay command.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// Database, as given to serve: sqlite for relay.db in the data
    /// directory, or postgres for the database at --database-url.
    #[arg(long, global = true, env = "SEALCAST_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// PostgreSQL connection URL for --store postgres, as given to serve.
    #[arg(
        long,
        global = true,
        env = "SEALCAST_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

impl StoreArgs {
    /// Returns the flags' defaults: relay.db in the data directory.
    #[cfg(test)]
    pub(crate) fn sqlite() -> StoreArgs {
        StoreArgs {
            store: StoreKind::Sqlite,
            database_url: None,
        }
    }

    /// Returns the backend the flags select, with SQLite's file in `data_dir`.
    pub(crate) fn backend(&self, data_dir: &Path) -> Result<Backend, StoreError> {
        match (self.store, &self.database_url) {
            (StoreKind::Sqlite, None) => Ok(Backend::Sqlite(data_dir.join(DATABASE_FILE))),
            (StoreKind::Sqlite, Some(_)) => Err(StoreError::Settings(
                "--database-url (or SEALCAST_DATABASE_URL) is set but --store is sqlite: \
                 pass --store postgres, or remove the URL"
                    .into(),
            )),
            (StoreKind::Postgres, None) => Err(StoreError::Settings(
                "--store postgres needs --database-url or SEALCAST_DATABASE_URL".into(),
            )),
            (StoreKind::Postgres, Some(url)) => Backend::postgres(url).map_err(|_| {
                StoreError::Settings(
                    "--database-url is not a PostgreSQL connection string: write \
                         postgres://USER@HOST:PORT/DATABASE"
                        .into(),
                )
            }),
        }
    }
}

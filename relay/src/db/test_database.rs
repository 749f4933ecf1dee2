//! A PostgreSQL database of its own for each test, dropped at the end.
//!
//! Tests that need PostgreSQL call [`TestDatabase::create`], which returns
//! `None` to skip the test when `SEALCAST_TEST_POSTGRES` is not set, as
//! [`super::tests::test_postgres`] does. The database is named
//! `sealcast_t_` and 16 random hex digits, so that tests run in parallel
//! and leave nothing behind.

use std::sync::Arc;

use rand::RngCore;

use super::tests::test_postgres;
use super::{Backend, Db};

/// A new, empty PostgreSQL database, dropped with every connection to it
/// when the value is dropped.
pub(crate) struct TestDatabase {
    name: String,
    backend: Backend,
    admin: Db,
}

impl TestDatabase {
    /// Creates the database on the server of `SEALCAST_TEST_POSTGRES`, or
    /// returns `None` when the variable is not set outside CI.
    pub(crate) fn create() -> Option<TestDatabase> {
        let admin = test_postgres()?;
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let name = format!("sealcast_t_{}", hex::encode(suffix));
        admin
            .batch(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|error| panic!("failed to create test database {name}: {error}"));

        let url = std::env::var("SEALCAST_TEST_POSTGRES").unwrap_or_default();
        let Ok(Backend::Postgres(config)) = Backend::postgres(&url) else {
            panic!("SEALCAST_TEST_POSTGRES is not a valid PostgreSQL URL");
        };
        let mut config = postgres::Config::clone(&config);
        config.dbname(&name);
        Some(TestDatabase {
            name,
            backend: Backend::Postgres(Arc::new(config)),
            admin,
        })
    }

    /// Returns the backend of the database, for opening connections to it.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Closes every connection to the database but the admin connection.
    /// Returns how many it closed.
    pub(crate) fn terminate_connections(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = ?1 AND pid <> pg_backend_pid()",
                db_params![self.name],
                |row| row.get::<i64>(0),
            )
            .unwrap_or_else(|error| panic!("failed to close connections: {error}"))
    }

    /// Allows or refuses new connections to the database, to make the
    /// server look down to the relay while other tests go on.
    pub(crate) fn allow_connections(&self, allow: bool) {
        self.admin
            .batch(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                self.name
            ))
            .unwrap_or_else(|error| panic!("failed to change ALLOW_CONNECTIONS: {error}"));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = self.admin.batch(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
        if let Err(error) = dropped {
            eprintln!("failed to drop test database {}: {error}", self.name);
        }
    }
}

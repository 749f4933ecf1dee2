//! The store's database under test: the embedded SQLite file by default,
//! or PostgreSQL when `SEALCAST_TEST_STORE` is `postgres`, on the server
//! that `SEALCAST_TEST_POSTGRES` names.
//!
//! With PostgreSQL, every data directory gets a database of its own, named
//! after a hash of the directory's path, so that tests running side by side
//! never share one, while the nodes of one cluster, which share a data
//! directory, share its database too. Relays and relay commands that the
//! helpers start get `SEALCAST_STORE` and `SEALCAST_DATABASE_URL` for it.
//! The test script drops these databases when the run ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::process::binary_path;

/// Environment variable with the URL of a PostgreSQL server (any database
/// on it) that the tests may create databases on.
pub const POSTGRES_ENV: &str = "SEALCAST_TEST_POSTGRES";

/// Environment variable that moves the relays the helpers start to
/// PostgreSQL when it is `postgres`.
pub const STORE_ENV: &str = "SEALCAST_TEST_STORE";

/// Prefix of the databases the tests create.
pub const DATABASE_PREFIX: &str = "sealcast_e2e_";

/// Returns the server URL from [`POSTGRES_ENV`], when the tests run on PostgreSQL.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|url| !url.is_empty())
}

/// Returns whether the relays the helpers start keep their store in PostgreSQL.
pub fn is_postgres() -> bool {
    std::env::var(STORE_ENV).is_ok_and(|store| store == "postgres")
}

/// Databases given to data directories by [`assign_database`].
static ASSIGNED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// Makes the relays and commands of `data_dir` use the PostgreSQL database
/// at `url`, whatever [`STORE_ENV`] is set to, for tests that run a PostgreSQL
/// server of their own.
pub fn assign_database(data_dir: &Path, url: &str) {
    let mut assigned = ASSIGNED.lock().unwrap_or_else(|e| e.into_inner());
    assigned.retain(|(dir, _)| dir != data_dir);
    assigned.push((data_dir.to_path_buf(), url.to_owned()));
}

/// Returns the URL of `data_dir`'s database, creating the database first
/// if needed, or `None` on SQLite.
pub fn database_url(data_dir: &Path) -> Option<String> {
    let assigned = ASSIGNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, url)) = assigned.iter().find(|(dir, _)| dir == data_dir) {
        return Some(url.clone());
    }
    drop(assigned);
    if !is_postgres() {
        return None;
    }
    let server =
        postgres_server().unwrap_or_else(|| panic!("{STORE_ENV}=postgres needs {POSTGRES_ENV}"));
    let name = database_name(data_dir);
    create_database(&server, &name);
    let mut url = url::Url::parse(&server).expect("SEALCAST_TEST_POSTGRES is a postgres:// URL");
    url.set_path(&name);
    Some(url.to_string())
}

/// Names `data_dir`'s database.
pub fn database_name(data_dir: &Path) -> String {
    let path = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DATABASE_PREFIX}{hex}")
}

/// Adds the store settings of `data_dir` to a relay command.
pub fn configure(command: &mut Command, data_dir: &Path) {
    if let Some(url) = database_url(data_dir) {
        command
            .env("SEALCAST_STORE", "postgres")
            .env("SEALCAST_DATABASE_URL", url);
    } else {
        command
            .env_remove("SEALCAST_STORE")
            .env_remove("SEALCAST_DATABASE_URL");
    }
}

/// A `sealcast-relay` command whose store is `data_dir`'s, on either engine.
pub fn relay_command(data_dir: &Path) -> Command {
    let mut command = Command::new(binary_path("sealcast-relay"));
    configure(&mut command, data_dir);
    command
}

/// Runs `work` with a PostgreSQL client on a thread of its own: the
/// synchronous client must not run inside the tests' async runtime.
pub fn with_client<T: Send + 'static>(
    url: &str,
    work: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|error| panic!("PostgreSQL at {POSTGRES_ENV} is reachable: {error}"));
        work(&mut client)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn create_database(server: &str, name: &str) {
    let name = name.to_owned();
    with_client(server, move |client| {
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .expect("pg_database is readable")
            .is_some();
        if exists {
            return;
        }
        // The name is made of the prefix and hex digits only.
        match client.batch_execute(&format!("CREATE DATABASE {name}")) {
            Ok(()) => {}
            // Another node of the same cluster created it meanwhile.
            Err(error) if error.code().map(|code| code.code()) == Some("42P04") => {}
            Err(error) => panic!("failed to create database {name}: {error}"),
        }
    });
}

/// Returns everything the relay of `data_dir` keeps, by name, for scans of
/// what must never be stored: the SQLite file with its journal files, or,
/// on PostgreSQL, every table of its database in PostgreSQL's binary copy
/// format, in which text and byte columns appear as they are stored.
pub fn stored_contents(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Some(url) = database_url(data_dir) else {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(data_dir).expect("the data directory is readable") {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with("relay.db") {
                let bytes = std::fs::read(&path).expect("the store file is readable");
                files.push((name, bytes));
            }
        }
        return files;
    };
    with_client(&url, |client| {
        let tables: Vec<String> = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'
                 ORDER BY tablename",
                &[],
            )
            .expect("the table list is readable")
            .iter()
            .map(|row| row.get(0))
            .collect();
        tables
            .into_iter()
            .map(|table| {
                let mut bytes = Vec::new();
                let mut reader = client
                    .copy_out(&format!(
                        "COPY (SELECT * FROM \"{table}\") TO STDOUT (FORMAT binary)"
                    ))
                    .expect("the table copies out");
                std::io::Read::read_to_end(&mut reader, &mut bytes).expect("the copy is readable");
                (format!("table {table}"), bytes)
            })
            .collect()
    })
}

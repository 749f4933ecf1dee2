//! Connection settings and schema migrations, versioned by `PRAGMA user_version`.
//!
//! The store keeps ciphertext, header fields, the key fingerprint, credential
//! hashes and times, never plaintext or keys. Times are Unix milliseconds.
//! SQLite integers are signed, so 64-bit values that may exceed `i64::MAX`
//! (epoch, final count) are stored bit-for-bit as `i64`.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// Migrations in order: entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    "CREATE TABLE api_keys (
        key_hash BLOB PRIMARY KEY,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE sessions (
        session_id BLOB PRIMARY KEY,
        epoch INTEGER NOT NULL,
        fingerprint BLOB NOT NULL,
        publisher_token_hash BLOB NOT NULL UNIQUE,
        invite_token_hash BLOB NOT NULL UNIQUE,
        invite_verifier BLOB,
        created_at INTEGER NOT NULL,
        ended_at INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE frames (
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        frame_offset INTEGER NOT NULL,
        stream_id BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        final_count INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        frame BLOB NOT NULL,
        PRIMARY KEY (session_id, frame_offset),
        UNIQUE (session_id, stream_id, seq)
    ) WITHOUT ROWID;",
    // Version 2: browsers that redeemed an invite, each with the hash of its
    // follow cookie, and how many browsers each session admits.
    "ALTER TABLE sessions ADD COLUMN max_browsers INTEGER NOT NULL DEFAULT 1;

    CREATE TABLE browser_credentials (
        credential_hash BLOB PRIMARY KEY,
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE INDEX browser_credentials_by_session ON browser_credentials (session_id);",
    // Version 3: accounts. Organizations have users, users sign in with magic
    // links and get device-bound tokens, and sessions belong to an
    // organization. The clinic API key and the per-session publisher token
    // are gone: `sessions` is rebuilt without its publisher token column,
    // keeping every row. Sessions made before accounts have no organization,
    // so no staff member can publish to or end them.
    "DROP TABLE api_keys;

    CREATE TABLE organizations (
        organization_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL REFERENCES organizations (organization_id),
        email TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'clinician')),
        created_at INTEGER NOT NULL,
        disabled_at INTEGER,
        totp_secret BLOB,
        totp_pending_secret BLOB,
        totp_last_step INTEGER
    ) WITHOUT ROWID;

    CREATE INDEX users_by_organization ON users (organization_id);

    CREATE TABLE recovery_codes (
        code_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        created_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;

    CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        name TEXT NOT NULL,
        public_key TEXT NOT NULL,
        thumbprint TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER,
        revoked_at INTEGER
    ) WITHOUT ROWID;

    CREATE INDEX devices_by_user ON devices (user_id);

    CREATE TABLE pending_logins (
        login_id_hash BLOB PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        second_step_hash BLOB UNIQUE,
        user_id TEXT REFERENCES users (user_id),
        kind TEXT NOT NULL CHECK (kind IN ('device', 'browser')),
        device_public_key TEXT,
        device_thumbprint TEXT,
        device_name TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        confirmed_at INTEGER,
        second_factor_at INTEGER,
        completed_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;

    CREATE TABLE refresh_tokens (
        token_hash BLOB PRIMARY KEY,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        device_id TEXT REFERENCES devices (device_id),
        mfa INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        revoked_at INTEGER
    ) WITHOUT ROWID;

    CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
    CREATE INDEX refresh_tokens_by_device ON refresh_tokens (device_id);

    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        private_key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER
    ) WITHOUT ROWID;

    CREATE TABLE sessions_v3 (
        session_id BLOB PRIMARY KEY,
        epoch INTEGER NOT NULL,
        fingerprint BLOB NOT NULL,
        invite_token_hash BLOB NOT NULL UNIQUE,
        invite_verifier BLOB,
        created_at INTEGER NOT NULL,
        ended_at INTEGER,
        max_browsers INTEGER NOT NULL DEFAULT 1,
        organization_id TEXT REFERENCES organizations (organization_id),
        created_by_user TEXT REFERENCES users (user_id),
        created_by_device TEXT REFERENCES devices (device_id)
    ) WITHOUT ROWID;

    INSERT INTO sessions_v3 (session_id, epoch, fingerprint, invite_token_hash,
        invite_verifier, created_at, ended_at, max_browsers)
    SELECT session_id, epoch, fingerprint, invite_token_hash, invite_verifier,
        created_at, ended_at, max_browsers
    FROM sessions;

    DROP TABLE sessions;
    ALTER TABLE sessions_v3 RENAME TO sessions;",
    // Version 4: the audit log, its signed checkpoints and retention anchors.
    super::audit::MIGRATION,
];

/// Schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for a lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the write connection, in KiB. A group commit dirties about
/// two 4 KiB pages for each session it writes to, so 32 MiB has room for
/// those of about 4,000 sessions. With the pages in memory SQLite does not spill them
/// to the WAL in the middle of a transaction, as it did with the default
/// cache of 2 MiB. The cache counts against the relay's memory bound, which
/// a larger one would crowd.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Size in bytes that the first commit after the WAL starts over cuts the
/// WAL file back to.
const WAL_SIZE_LIMIT_BYTES: i64 = 128 * 1024 * 1024;

/// Sets the pragmas of the write connection and migrates the schema.
pub(crate) fn prepare_writer(conn: &mut Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("set the busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(StoreError::sqlite("enable write-ahead logging"))?;
    // FULL syncs the WAL at every COMMIT. With NORMAL a committed, and so
    // acknowledged, frame could be lost to a power failure before the next
    // checkpoint.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(StoreError::sqlite("set synchronous=FULL"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(StoreError::sqlite("enable foreign keys"))?;
    // The store's checkpoint thread runs checkpoints outside of commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(StoreError::sqlite("turn off automatic checkpoints"))?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
        .map_err(StoreError::sqlite("set the WAL size limit"))?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(StoreError::sqlite("set the page cache size"))?;
    migrate(conn)
}

/// Sets the pragmas of a read connection.
pub(crate) fn prepare_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("set the busy timeout"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(StoreError::sqlite("enable foreign keys"))
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sqlite("read the schema version"))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }

    if current >= SCHEMA_VERSION {
        return Ok(());
    }
    // A migration may rebuild a table that others reference, which SQLite
    // allows only with foreign keys off. So they are off while migrating, and
    // `foreign_key_check` below verifies every reference before turning them
    // back on.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(StoreError::sqlite("disable foreign keys for a migration"))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let version = index as i64 + 1;
        let tx = conn
            .transaction()
            .map_err(StoreError::sqlite("begin a migration"))?;
        tx.execute_batch(migration)
            .map_err(StoreError::sqlite("apply a schema migration"))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(StoreError::sqlite("record the schema version"))?;
        tx.commit()
            .map_err(StoreError::sqlite("commit a schema migration"))?;
        tracing::info!(version, "store schema migrated");
    }
    let broken: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
        .optional()
        .map_err(StoreError::sqlite("check foreign keys after a migration"))?;
    if broken.is_some() {
        return Err(StoreError::Corrupt {
            what: "foreign key after a schema migration",
        });
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(StoreError::sqlite("enable foreign keys"))
}

/// Stores a `u64` bit-for-bit in SQLite's signed integer.
pub(crate) fn u64_to_sql(value: u64) -> i64 {
    i64::from_be_bytes(value.to_be_bytes())
}

/// Reverses [`u64_to_sql`].
pub(crate) fn u64_from_sql(value: i64) -> u64 {
    u64::from_be_bytes(value.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn newer_schema_is_rejected() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }

    #[test]
    fn u64_round_trips_through_i64() {
        for value in [0, 1, u64::MAX, i64::MAX as u64 + 1] {
            assert_eq!(u64_from_sql(u64_to_sql(value)), value);
        }
    }
}

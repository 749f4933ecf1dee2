//! SQLite connection settings and schema migrations, versioned by `PRAGMA
//! user_version`. The PostgreSQL schema is in [`super::schema_pg`].
//!
//! The store keeps ciphertext, header fields, the key fingerprint, credential
//! hashes and times, never plaintext or keys. Since the at-rest migration,
//! frames, email addresses, names and TOTP and signing secrets are also
//! sealed by [`crate::at_rest`]. Times are Unix milliseconds.
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
    // Version 4: frames in arrival order. The clustered layout of versions 1
    // to 3 kept each session's frames together, so a group commit that
    // carries one frame for each of many sessions rewrote one table page and
    // one unique-index page per frame. Frames now go to the end of a rowid
    // table, several to a page, and one index on (session_id, frame_offset)
    // finds them. The uniqueness of (session_id, stream_id, seq) moves to
    // `streams`, one small row per stream, which also gives a session's
    // stream tails without scanning its frames.
    "CREATE TABLE frames_v4 (
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        frame_offset INTEGER NOT NULL,
        stream_id BLOB NOT NULL,
        seq INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        final_count INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        frame BLOB NOT NULL
    );

    INSERT INTO frames_v4 (session_id, frame_offset, stream_id, seq, kind, final_count,
        received_at, frame)
    SELECT session_id, frame_offset, stream_id, seq, kind, final_count, received_at, frame
    FROM frames ORDER BY session_id, frame_offset;

    DROP TABLE frames;
    ALTER TABLE frames_v4 RENAME TO frames;
    CREATE UNIQUE INDEX frames_by_session_offset ON frames (session_id, frame_offset);

    CREATE TABLE streams (
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        stream_id BLOB NOT NULL,
        next_seq INTEGER NOT NULL,
        last_offset INTEGER NOT NULL,
        PRIMARY KEY (session_id, stream_id)
    ) WITHOUT ROWID;

    -- SQLite takes the bare column frame_offset from the row holding MAX(seq).
    INSERT INTO streams (session_id, stream_id, next_seq, last_offset)
    SELECT session_id, stream_id, MAX(seq) + 1, frame_offset
    FROM frames GROUP BY session_id, stream_id;",
    // Version 5: the at-rest layer.
    AT_REST_MIGRATION,
    // Version 6: the audit log, its signed checkpoints and retention anchors.
    super::audit::MIGRATION,
    // Version 7: devices that joined a session by pairing, each with the
    // hash of its follow credential.
    super::paired::MIGRATION,
    // Version 8: invite challenges, which every relay node on the data
    // directory shares.
    super::challenges::MIGRATION,
    // Version 9: paired device ids and the wrapped keys of later key epochs.
    super::paired::KEYS_MIGRATION,
    // Version 10: the key epoch each paired device received in its pairing.
    super::paired::PAIRING_EPOCH_MIGRATION,
];

/// The at-rest migration: stores the wrapped data key and seals every
/// existing value that identifies a person or is a secret, in the one
/// transaction of the migration. It runs on a connection with the
/// [`crate::at_rest`] SQL functions registered. `users` is rebuilt because
/// its `email` column gives way to a keyed hash that is unique, beside the
/// sealed address. The other sealed columns keep their declared TEXT type
/// and hold BLOBs, which SQLite stores unconverted.
///
/// Both TOTP columns are sealed as column `totp`, so that activation can
/// move the pending secret into `totp_secret` without opening it.
const AT_REST_MIGRATION: &str = "CREATE TABLE at_rest_keys (
        key_slot INTEGER PRIMARY KEY CHECK (key_slot = 1),
        kek_fingerprint BLOB NOT NULL,
        wrapped_dek BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        rotated_at INTEGER
    );

    INSERT INTO at_rest_keys (key_slot, kek_fingerprint, wrapped_dek, created_at)
    VALUES (1, at_rest_kek_fingerprint(), at_rest_wrapped_dek(),
        CAST(strftime('%s', 'now') AS INTEGER) * 1000);

    UPDATE organizations
    SET name = at_rest_seal('organizations', 'name', organization_id, name);

    CREATE TABLE users_at_rest (
        user_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL REFERENCES organizations (organization_id),
        email_hash BLOB NOT NULL UNIQUE,
        email BLOB NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'clinician')),
        created_at INTEGER NOT NULL,
        disabled_at INTEGER,
        totp_secret BLOB,
        totp_pending_secret BLOB,
        totp_last_step INTEGER
    ) WITHOUT ROWID;

    INSERT INTO users_at_rest (user_id, organization_id, email_hash, email, role,
        created_at, disabled_at, totp_secret, totp_pending_secret, totp_last_step)
    SELECT user_id, organization_id, at_rest_email_hash(email),
        at_rest_seal('users', 'email', user_id, email), role, created_at, disabled_at,
        at_rest_seal('users', 'totp', user_id, totp_secret),
        at_rest_seal('users', 'totp', user_id, totp_pending_secret), totp_last_step
    FROM users;

    DROP TABLE users;
    ALTER TABLE users_at_rest RENAME TO users;
    CREATE INDEX users_by_organization ON users (organization_id);

    UPDATE devices SET name = at_rest_seal('devices', 'name', device_id, name);

    UPDATE pending_logins
    SET device_name = at_rest_seal('pending_logins', 'device_name', login_id_hash, device_name);

    UPDATE signing_keys
    SET private_key = at_rest_seal('signing_keys', 'private_key', kid, private_key);

    UPDATE frames SET frame = at_rest_seal_frame(session_id, frame_offset, frame);";

/// Schema version that [`AT_REST_MIGRATION`] moves to.
// NOTE: this is the migration's place in MIGRATIONS. A migration inserted
// before it must raise it, and `at_rest_version_matches` fails until it does.
pub(crate) const AT_REST_VERSION: i64 = 5;

/// Schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a connection waits for a lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the write connection, in KiB. A group commit dirties about
/// one 4 KiB index page and one `streams` page for each session it writes
/// to, plus the appended frame pages, so 32 MiB has room for those of several
/// thousand sessions. With the pages in memory SQLite does not spill them to
/// the WAL in the middle of a transaction, as it did with the default cache
/// of 2 MiB. The cache counts against the relay's memory bound, which a
/// larger one would crowd.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Size in bytes that the first commit after the WAL starts over cuts the
/// WAL file back to.
const WAL_SIZE_LIMIT_BYTES: i64 = 128 * 1024 * 1024;

/// Sets the pragmas of the write connection and migrates the schema.
pub(crate) fn prepare_writer(conn: &mut Connection) -> Result<(), StoreError> {
    set_writer_pragmas(conn)?;
    let from = migrate(conn)?;
    if from < AT_REST_VERSION && SCHEMA_VERSION >= AT_REST_VERSION {
        scrub_plaintext(conn)?;
    }
    Ok(())
}

/// Sets the pragmas of a write connection.
pub(crate) fn set_writer_pragmas(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("set the busy timeout"))?;
    enable_wal(conn)?;
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
    // Deleted and overwritten content is zeroed, so that no plaintext from
    // before the at-rest migration, and no freed sealed value, lingers in
    // free pages.
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(StoreError::sqlite("turn on secure delete"))
}

/// Switches a new database to write-ahead logging. The switch needs an
/// exclusive lock, and SQLite returns busy at once instead of calling the
/// busy handler while another relay node on the same data directory holds
/// the database, so the switch is retried until [`BUSY_TIMEOUT`].
fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            outcome => return outcome.map_err(StoreError::sqlite("enable write-ahead logging")),
        }
    }
}

/// Returns the schema version of the database on `conn`.
pub(crate) fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sqlite("read the schema version"))
}

/// Rewrites the database file after the at-rest migration and empties the
/// WAL. VACUUM copies only live content into a new file, so plaintext left
/// in unused parts of pages is gone. The WAL frames written before sealing
/// are cut off by the TRUNCATE checkpoint.
fn scrub_plaintext(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("VACUUM")
        .map_err(StoreError::sqlite("rewrite the database after sealing it"))?;
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .map_err(StoreError::sqlite(
            "empty the WAL after sealing the database",
        ))?;
    if busy != 0 {
        tracing::warn!("failed to empty the WAL after the at-rest migration because another connection reads it: later checkpoints overwrite it");
    }
    Ok(())
}

/// Sets the pragmas of a read connection.
pub(crate) fn prepare_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(StoreError::sqlite("set the busy timeout"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(StoreError::sqlite("enable foreign keys"))
}

/// Applies the pending migrations and returns the version the database had.
fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let current = schema_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }

    if current >= SCHEMA_VERSION {
        return Ok(current);
    }
    // A migration may rebuild a table that others reference, which SQLite
    // allows only with foreign keys off. So they are off while migrating, and
    // `foreign_key_check` below verifies every reference before turning them
    // back on.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(StoreError::sqlite("disable foreign keys for a migration"))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let version = index as i64 + 1;
        // Several relay nodes may start on one data directory at once. The
        // write lock, taken before the version is read again, lets exactly
        // one of them apply each migration.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("begin a migration"))?;
        if schema_version(&tx)? >= version {
            continue;
        }
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
        .map_err(StoreError::sqlite("enable foreign keys"))?;
    Ok(current)
}

/// Applies the migrations up to `version` only, to build databases as older
/// relays left them.
#[cfg(test)]
pub(crate) fn migrate_to(conn: &Connection, version: i64) -> Result<(), StoreError> {
    for (index, migration) in MIGRATIONS.iter().enumerate().take(version as usize) {
        conn.execute_batch(migration)
            .map_err(StoreError::sqlite("apply a schema migration"))?;
        conn.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(StoreError::sqlite("record the schema version"))?;
    }
    Ok(())
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

    use crate::at_rest::{self, KeyEncryptionKey, KeySource};

    /// Opens an in-memory database with the at-rest functions of a new key.
    fn keyed_connection() -> Connection {
        let db = crate::db::Db::Sqlite(Connection::open_in_memory().unwrap());
        let source = KeySource::Environment(KeyEncryptionKey::generate());
        let keys = at_rest::unlock(&db, std::path::Path::new("."), &source).unwrap();
        let crate::db::Db::Sqlite(conn) = db else {
            unreachable!("the database was opened as SQLite")
        };
        at_rest::sql::register(&conn, &keys).unwrap();
        conn
    }

    #[test]
    fn migration_is_idempotent() {
        let mut conn = keyed_connection();
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
    fn at_rest_version_matches() {
        let index = usize::try_from(AT_REST_VERSION - 1).unwrap();
        assert_eq!(MIGRATIONS[index], AT_REST_MIGRATION);
    }

    #[test]
    fn u64_round_trips_through_i64() {
        for value in [0, 1, u64::MAX, i64::MAX as u64 + 1] {
            assert_eq!(u64_from_sql(u64_to_sql(value)), value);
        }
    }
}

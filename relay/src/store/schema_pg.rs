//! The PostgreSQL schema, versioned by the one row of `schema_version`.
//!
//! Version 1 is the final shape of every table of the SQLite schema, with
//! `BIGINT`, `TEXT` and `BYTEA` where SQLite declares `INTEGER`, `TEXT` and
//! `BLOB`. Columns that SQLite declares `TEXT` but that hold sealed values
//! since the at-rest migration are `BYTEA`. A PostgreSQL database starts
//! empty, so no migration seals or converts old rows.
//!
//! Every relay node migrates at start, in one transaction under the store's
//! advisory write lock, so nodes that start together apply each version once.

use super::StoreError;
use crate::db::{db_params, Db};

/// Schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migrations in order: entry `i` moves the schema from version `i` to
/// `i + 1`, with its statements in order.
const MIGRATIONS: &[&[&str]] = &[&[VERSION_1, super::audit::MIGRATION_PG]];

const VERSION_1: &str = "
    CREATE TABLE organizations (
        organization_id TEXT PRIMARY KEY,
        name BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );

    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL REFERENCES organizations (organization_id),
        email_hash BYTEA NOT NULL UNIQUE,
        email BYTEA NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'clinician')),
        created_at BIGINT NOT NULL,
        disabled_at BIGINT,
        totp_secret BYTEA,
        totp_pending_secret BYTEA,
        totp_last_step BIGINT
    );

    CREATE INDEX users_by_organization ON users (organization_id);

    CREATE TABLE recovery_codes (
        code_hash BYTEA PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        created_at BIGINT NOT NULL,
        used_at BIGINT
    );

    CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        name BYTEA NOT NULL,
        public_key TEXT NOT NULL,
        thumbprint TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT,
        revoked_at BIGINT
    );

    CREATE INDEX devices_by_user ON devices (user_id);

    CREATE TABLE pending_logins (
        login_id_hash BYTEA PRIMARY KEY,
        token_hash BYTEA NOT NULL UNIQUE,
        second_step_hash BYTEA UNIQUE,
        user_id TEXT REFERENCES users (user_id),
        kind TEXT NOT NULL CHECK (kind IN ('device', 'browser')),
        device_public_key TEXT,
        device_thumbprint TEXT,
        device_name BYTEA,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        confirmed_at BIGINT,
        second_factor_at BIGINT,
        completed_at BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0
    );

    CREATE TABLE refresh_tokens (
        token_hash BYTEA PRIMARY KEY,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (user_id),
        device_id TEXT REFERENCES devices (device_id),
        mfa BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        revoked_at BIGINT
    );

    CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
    CREATE INDEX refresh_tokens_by_device ON refresh_tokens (device_id);

    CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        private_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
    );

    CREATE TABLE at_rest_keys (
        key_slot BIGINT PRIMARY KEY CHECK (key_slot = 1),
        kek_fingerprint BYTEA NOT NULL,
        wrapped_dek BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        rotated_at BIGINT
    );

    CREATE TABLE sessions (
        session_id BYTEA PRIMARY KEY,
        epoch BIGINT NOT NULL,
        fingerprint BYTEA NOT NULL,
        invite_token_hash BYTEA NOT NULL UNIQUE,
        invite_verifier BYTEA,
        created_at BIGINT NOT NULL,
        ended_at BIGINT,
        max_browsers BIGINT NOT NULL DEFAULT 1,
        organization_id TEXT REFERENCES organizations (organization_id),
        created_by_user TEXT REFERENCES users (user_id),
        created_by_device TEXT REFERENCES devices (device_id)
    );

    CREATE TABLE frames (
        session_id BYTEA NOT NULL REFERENCES sessions (session_id),
        frame_offset BIGINT NOT NULL,
        stream_id BYTEA NOT NULL,
        seq BIGINT NOT NULL,
        kind BIGINT NOT NULL,
        final_count BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        frame BYTEA NOT NULL
    );

    CREATE UNIQUE INDEX frames_by_session_offset ON frames (session_id, frame_offset);

    CREATE TABLE streams (
        session_id BYTEA NOT NULL REFERENCES sessions (session_id),
        stream_id BYTEA NOT NULL,
        next_seq BIGINT NOT NULL,
        last_offset BIGINT NOT NULL,
        PRIMARY KEY (session_id, stream_id)
    );

    CREATE TABLE browser_credentials (
        credential_hash BYTEA PRIMARY KEY,
        session_id BYTEA NOT NULL REFERENCES sessions (session_id),
        created_at BIGINT NOT NULL
    );

    CREATE INDEX browser_credentials_by_session ON browser_credentials (session_id);

    CREATE TABLE paired_devices (
        credential_hash BYTEA PRIMARY KEY,
        session_id BYTEA NOT NULL REFERENCES sessions (session_id),
        created_at BIGINT NOT NULL,
        device_id BYTEA,
        pairing_key_epoch BIGINT
    );

    CREATE INDEX paired_devices_by_session ON paired_devices (session_id);
    CREATE UNIQUE INDEX paired_devices_by_device_id
        ON paired_devices (session_id, device_id) WHERE device_id IS NOT NULL;

    CREATE TABLE paired_device_keys (
        session_id BYTEA NOT NULL REFERENCES sessions (session_id),
        device_id BYTEA NOT NULL,
        key_epoch BIGINT NOT NULL,
        wrapped_key BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (session_id, device_id, key_epoch)
    );

    CREATE TABLE invite_challenges (
        challenge_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        challenge_hash BYTEA NOT NULL UNIQUE,
        invite_token_hash BYTEA NOT NULL,
        expires_at BIGINT NOT NULL
    );

    CREATE INDEX invite_challenges_by_token ON invite_challenges (invite_token_hash);
    CREATE INDEX invite_challenges_by_expiry ON invite_challenges (expires_at);
";

/// Applies the pending migrations in one transaction under the store's
/// advisory write lock.
pub(super) fn migrate(db: &Db) -> Result<(), StoreError> {
    // A current schema needs no write, so a relay whose user may read and
    // write rows but not create tables starts once the schema exists.
    let current = schema_version(db)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = db
        .begin_write()
        .map_err(StoreError::db("begin a schema migration"))?;
    tx.batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
            version BIGINT NOT NULL
        );
        INSERT INTO schema_version (singleton, version) VALUES (1, 0) ON CONFLICT DO NOTHING;",
    )
    .map_err(StoreError::db("create the schema version table"))?;
    let current = schema_version(&tx)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == 0 {
        refuse_foreign_tables(&tx)?;
    }
    let pending = MIGRATIONS
        .iter()
        .zip(1_i64..)
        .skip(usize::try_from(current).unwrap_or(0));
    for (statements, version) in pending {
        for statement in *statements {
            tx.batch(statement)
                .map_err(StoreError::db("apply a schema migration"))?;
        }
        tx.execute(
            "UPDATE schema_version SET version = ?1 WHERE singleton = 1",
            db_params![version],
        )
        .map_err(StoreError::db("record the schema version"))?;
        tracing::info!(version, "PostgreSQL store schema migrated");
    }
    tx.commit()
        .map_err(StoreError::db("commit a schema migration"))
}

/// Rejects a database without the relay's schema that contains tables of
/// something else, so that the relay neither fails halfway through its
/// first migration nor shares a database with another application.
fn refuse_foreign_tables(db: &Db) -> Result<(), StoreError> {
    let tables = db
        .query_one(
            "SELECT COUNT(*) FROM pg_tables
             WHERE schemaname = current_schema() AND tablename <> 'schema_version'",
            db_params![],
            |row| row.get::<i64>(0),
        )
        .map_err(StoreError::db("list the database's tables"))?;
    if tables > 0 {
        return Err(StoreError::Settings(format!(
            "the PostgreSQL database has no sealcast schema but holds {tables} other tables: \
             give the relay an empty database of its own"
        )));
    }
    Ok(())
}

/// Returns the schema version of the database, 0 for an empty one.
pub(super) fn schema_version(db: &Db) -> Result<i64, StoreError> {
    let exists = db
        .query_one(
            "SELECT to_regclass('schema_version') IS NOT NULL",
            db_params![],
            |row| row.get::<bool>(0),
        )
        .map_err(StoreError::db("look for the schema version table"))?;
    if !exists {
        return Ok(0);
    }
    db.query_opt(
        "SELECT version FROM schema_version WHERE singleton = 1",
        db_params![],
        |row| row.get::<i64>(0),
    )
    .map(Option::unwrap_or_default)
    .map_err(StoreError::db("read the schema version"))
}

//! Devices that joined a session by pairing: one row per device with the
//! SHA-256 hash of its follow credential, which it sends as a bearer token.
//!
//! Unlike browsers, paired devices take no place of the session's
//! `max_browsers`: the clinician device confirmed each one by its pairing
//! code. Ending the session deletes its rows in the same transaction.

use rusqlite::{params, Connection};
use sealcast_protocol::SessionId;

use super::reader::session_by_credential_hash;
use super::{Redemption, SessionRecord, StoreError};
use crate::credentials::CredentialHash;

/// Schema migration that adds the table.
pub(super) const MIGRATION: &str = "CREATE TABLE paired_devices (
        credential_hash BLOB PRIMARY KEY,
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE INDEX paired_devices_by_session ON paired_devices (session_id);";

/// Inserts a paired device's credential when the session is open.
pub(super) fn insert(conn: &Connection, device: &Redemption) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO paired_devices (credential_hash, session_id, created_at)
             SELECT ?1, ?2, ?3
             WHERE EXISTS (SELECT 1 FROM sessions WHERE session_id = ?2 AND ended_at IS NULL)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                device.credential_hash.as_slice(),
                device.session_id.as_bytes().as_slice(),
                device.created_at,
            ])
        })
        .map_err(StoreError::sqlite("store a paired device's credential"))?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(StoreError::SessionEnded {
            session_id: device.session_id,
        })
    }
}

/// Deletes every paired device credential of a session, when it ends.
pub(super) fn delete_for_session(
    conn: &Connection,
    session_id: &SessionId,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM paired_devices WHERE session_id = ?1")
        .and_then(|mut statement| statement.execute(params![session_id.as_bytes().as_slice()]))
        .map_err(StoreError::sqlite("delete a session's paired devices"))?;
    Ok(())
}

/// Looks up the session a paired device's credential belongs to.
pub(super) fn session_by_credential(
    conn: &Connection,
    credential_hash: &CredentialHash,
) -> Result<Option<SessionRecord>, StoreError> {
    session_by_credential_hash(
        conn,
        "SELECT credential_hash, session_id FROM paired_devices WHERE credential_hash = ?1",
        "look up a paired device's credential",
        credential_hash,
    )
}

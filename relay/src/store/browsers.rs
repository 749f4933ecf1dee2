//! Browsers that redeemed an invite: one row per browser with the SHA-256 hash
//! of its follow credential, the value of its follow cookie.
//!
//! A session admits at most `sessions.max_browsers` rows. Ending the session
//! deletes its rows, so every browser credential of the session stops working
//! in the same transaction that marks it ended.

use rusqlite::{params, Connection, OptionalExtension};
use sealcast_protocol::SessionId;

use super::reader::session_by_credential_hash;
use super::{Redemption, SessionRecord, StoreError};
use crate::credentials::CredentialHash;

/// Inserts a redemption when the session is open and below its browser limit.
/// The check and the insert run in the writer's transaction, so two browsers
/// redeeming at once cannot both take the last place.
pub(super) fn insert(conn: &Connection, redemption: &Redemption) -> Result<(), StoreError> {
    let session_key = redemption.session_id.as_bytes().as_slice();
    let sql = "INSERT INTO browser_credentials (credential_hash, session_id, created_at)
        SELECT ?1, ?2, ?3
        WHERE EXISTS (
            SELECT 1 FROM sessions
            WHERE session_id = ?2 AND ended_at IS NULL
              AND max_browsers > (SELECT COUNT(*) FROM browser_credentials WHERE session_id = ?2)
        )";
    let inserted = conn
        .prepare_cached(sql)
        .and_then(|mut statement| {
            statement.execute(params![
                redemption.credential_hash.as_slice(),
                session_key,
                redemption.created_at,
            ])
        })
        .map_err(StoreError::sqlite("store a browser credential"))?;
    if inserted == 1 {
        return Ok(());
    }
    Err(refusal(conn, redemption.session_id)?)
}

/// Explains why [`insert`] stored nothing: the session ended or is full.
fn refusal(conn: &Connection, session_id: SessionId) -> Result<StoreError, StoreError> {
    let row: Option<(Option<i64>, i64)> = conn
        .prepare_cached("SELECT ended_at, max_browsers FROM sessions WHERE session_id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![session_id.as_bytes().as_slice()], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(StoreError::sqlite("read a session's browser limit"))?;

    Ok(match row {
        Some((None, max_browsers)) => StoreError::BrowsersExhausted {
            session_id,
            max_browsers: u32::try_from(max_browsers).unwrap_or(u32::MAX),
        },
        Some((Some(_), _)) | None => StoreError::SessionEnded { session_id },
    })
}

/// Deletes every browser credential of a session, when it ends.
pub(super) fn delete_for_session(
    conn: &Connection,
    session_id: &SessionId,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM browser_credentials WHERE session_id = ?1")
        .and_then(|mut statement| statement.execute(params![session_id.as_bytes().as_slice()]))
        .map_err(StoreError::sqlite("delete a session's browser credentials"))?;
    Ok(())
}

/// Looks up the session a browser credential belongs to.
pub(super) fn session_by_credential(
    conn: &Connection,
    credential_hash: &CredentialHash,
) -> Result<Option<SessionRecord>, StoreError> {
    session_by_credential_hash(
        conn,
        "SELECT credential_hash, session_id FROM browser_credentials
             WHERE credential_hash = ?1",
        "look up a browser credential",
        credential_hash,
    )
}

/// Counts a session's browser credentials.
#[cfg(test)]
pub(super) fn count(conn: &Connection, session_id: &SessionId) -> Result<u64, StoreError> {
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM browser_credentials WHERE session_id = ?1",
            params![session_id.as_bytes().as_slice()],
            |row| row.get(0),
        )
        .map_err(StoreError::sqlite("count browser credentials"))?;
    u64::try_from(count).map_err(|_| StoreError::Corrupt {
        what: "browser count",
    })
}

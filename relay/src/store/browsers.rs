//! Browsers that redeemed an invite: one row per browser with the SHA-256 hash
//! of its follow credential, the value of its follow cookie.
//!
//! A session admits at most `sessions.max_browsers` rows. Ending the session
//! deletes its rows, so every browser credential of the session stops working
//! in the same transaction that marks it ended.

use sealcast_protocol::SessionId;

use super::reader::session_by_credential_hash;
use super::{Redemption, SessionRecord, StoreError};
use crate::credentials::CredentialHash;
use crate::db::{db_params, Db};

/// Inserts a redemption when the session is open and below its browser limit.
/// The check and the insert run in the writer's transaction, so two browsers
/// redeeming at once cannot both take the last place.
pub(super) fn insert(db: &Db, redemption: &Redemption) -> Result<(), StoreError> {
    let session_key = redemption.session_id.as_bytes().as_slice();
    let sql = "INSERT INTO browser_credentials (credential_hash, session_id, created_at)
        SELECT ?1, ?2, ?3
        WHERE EXISTS (
            SELECT 1 FROM sessions
            WHERE session_id = ?2 AND ended_at IS NULL
              AND max_browsers > (SELECT COUNT(*) FROM browser_credentials WHERE session_id = ?2)
        )";
    let inserted = db
        .execute(
            sql,
            db_params![
                redemption.credential_hash,
                session_key,
                redemption.created_at,
            ],
        )
        .map_err(StoreError::db("store a browser credential"))?;
    if inserted == 1 {
        return Ok(());
    }
    Err(refusal(db, redemption.session_id)?)
}

/// Explains why [`insert`] stored nothing: the session ended or is full.
fn refusal(db: &Db, session_id: SessionId) -> Result<StoreError, StoreError> {
    let row = db
        .query_opt(
            "SELECT ended_at, max_browsers FROM sessions WHERE session_id = ?1",
            db_params![session_id.as_bytes()],
            |row| Ok((row.get::<Option<i64>>(0)?, row.get::<i64>(1)?)),
        )
        .map_err(StoreError::db("read a session's browser limit"))?;

    Ok(match row {
        Some((None, max_browsers)) => StoreError::BrowsersExhausted {
            session_id,
            max_browsers: u32::try_from(max_browsers).unwrap_or(u32::MAX),
        },
        Some((Some(_), _)) | None => StoreError::SessionEnded { session_id },
    })
}

/// Deletes every browser credential of a session, when it ends.
pub(super) fn delete_for_session(db: &Db, session_id: &SessionId) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM browser_credentials WHERE session_id = ?1",
        db_params![session_id.as_bytes()],
    )
    .map_err(StoreError::db("delete a session's browser credentials"))?;
    Ok(())
}

/// Looks up the session a browser credential belongs to.
pub(super) fn session_by_credential(
    db: &Db,
    credential_hash: &CredentialHash,
) -> Result<Option<SessionRecord>, StoreError> {
    session_by_credential_hash(
        db,
        "SELECT credential_hash, session_id FROM browser_credentials
             WHERE credential_hash = ?1",
        "look up a browser credential",
        credential_hash,
    )
}

/// Counts a session's browser credentials.
#[cfg(test)]
pub(super) fn count(db: &Db, session_id: &SessionId) -> Result<u64, StoreError> {
    let count = db
        .query_one(
            "SELECT COUNT(*) FROM browser_credentials WHERE session_id = ?1",
            db_params![session_id.as_bytes()],
            |row| row.get::<i64>(0),
        )
        .map_err(StoreError::db("count browser credentials"))?;
    u64::try_from(count).map_err(|_| StoreError::Corrupt {
        what: "browser count",
    })
}

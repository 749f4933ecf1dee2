//! Refresh tokens: random, stored as SHA-256 hashes, single use.
//!
//! Each sign-in is a family of refresh tokens. Using a token marks it used
//! and issues the next one of its family. A token used a second time means
//! that it was copied, so the whole family is revoked: the thief and the
//! owner both have to sign in again.

use super::connection::db_error;
use super::store::AccountConnection;
use crate::credentials::{random_token, CredentialHash, Secret};
use crate::db::db_params;
use crate::metrics::REFRESH_REUSE;
use crate::store::StoreError;

/// A sign-in's identity as its refresh tokens record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Family {
    pub(crate) family_id: String,
    pub(crate) user_id: String,
    pub(crate) device_id: Option<String>,
    pub(crate) mfa: bool,
}

/// A reason to reject a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshRejection {
    /// No such token.
    Unknown,
    /// The token expired.
    Expired,
    /// The token's sign-in was revoked: logout, a revoked device, a disabled
    /// user or an earlier reuse.
    Revoked,
    /// The token was already used, so its family is now revoked.
    Reused,
    /// The token belongs to a device and came without a proof by its key,
    /// or belongs to a browser and came with a proof.
    WrongKey,
}

impl RefreshRejection {
    /// Returns the metric label of the rejection.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            RefreshRejection::Unknown => "unknown_refresh_token",
            RefreshRejection::Expired => "expired_refresh_token",
            RefreshRejection::Revoked => "revoked_refresh_token",
            RefreshRejection::Reused => "reused_refresh_token",
            RefreshRejection::WrongKey => "refresh_proof_key_mismatch",
        }
    }
}

/// Stores a new refresh token of `family` and returns its text.
pub(crate) fn insert(
    conn: &AccountConnection,
    family: &Family,
    now: i64,
    lifetime_ms: i64,
) -> Result<Secret, StoreError> {
    let token = random_token();
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, device_id, mfa,
             created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        db_params![
            token.hash(),
            family.family_id,
            family.user_id,
            family.device_id,
            family.mfa,
            now,
            now.saturating_add(lifetime_ms)
        ],
    )
    .map_err(db_error("store a refresh token"))?;
    Ok(token)
}

/// Uses a refresh token: marks it used and stores its successor, in one
/// transaction. `thumbprint` is the key that signed the request's DPoP
/// proof, or `None` for a browser, and it must be the key of the token's
/// device.
/// A reused token revokes its family, which is committed although the
/// request fails.
pub(crate) fn rotate(
    conn: &AccountConnection,
    presented: &CredentialHash,
    thumbprint: Option<&str>,
    now: i64,
    lifetime_ms: i64,
) -> Result<Result<(Family, Secret), RefreshRejection>, StoreError> {
    let error = db_error("rotate a refresh token");
    let tx = conn.begin_write().map_err(&error)?;
    let row: Option<StoredToken> = tx
        .query_opt(
            "SELECT r.family_id, r.user_id, r.device_id, r.mfa, r.expires_at, r.used_at,
                 r.revoked_at, d.thumbprint
             FROM refresh_tokens r LEFT JOIN devices d ON d.device_id = r.device_id
             WHERE r.token_hash = ?1",
            db_params![presented],
            |row| {
                Ok(StoredToken {
                    family_id: row.get(0)?,
                    user_id: row.get(1)?,
                    device_id: row.get(2)?,
                    mfa: row.get(3)?,
                    expires_at: row.get(4)?,
                    used_at: row.get(5)?,
                    revoked_at: row.get(6)?,
                    thumbprint: row.get(7)?,
                })
            },
        )
        .map_err(&error)?;
    let Some(StoredToken {
        family_id,
        user_id,
        device_id,
        mfa,
        expires_at,
        used_at,
        revoked_at,
        thumbprint: device_thumbprint,
    }) = row
    else {
        return Ok(Err(RefreshRejection::Unknown));
    };
    // Checked first, so a token presented without its key is not consumed.
    if device_thumbprint.as_deref() != thumbprint {
        return Ok(Err(RefreshRejection::WrongKey));
    }
    if revoked_at.is_some() {
        return Ok(Err(RefreshRejection::Revoked));
    }
    if used_at.is_some() {
        revoke_family_in(conn, &family_id, now)?;
        tx.commit().map_err(&error)?;
        metrics::counter!(REFRESH_REUSE).increment(1);
        tracing::warn!(
            %family_id,
            %user_id,
            "a used refresh token was presented again: its sign-in is revoked"
        );
        return Ok(Err(RefreshRejection::Reused));
    }
    if expires_at <= now {
        return Ok(Err(RefreshRejection::Expired));
    }
    tx.execute(
        "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
        db_params![presented, now],
    )
    .map_err(&error)?;
    let family = Family {
        family_id,
        user_id,
        device_id,
        mfa,
    };
    let next = insert(conn, &family, now, lifetime_ms)?;
    tx.commit().map_err(&error)?;
    Ok(Ok((family, next)))
}

/// A refresh token row with its device's key thumbprint.
struct StoredToken {
    family_id: String,
    user_id: String,
    device_id: Option<String>,
    mfa: bool,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    thumbprint: Option<String>,
}

/// Revokes every refresh token of a sign-in.
pub(crate) fn revoke_family(
    conn: &AccountConnection,
    family_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    revoke_family_in(conn, family_id, now)
}

fn revoke_family_in(conn: &AccountConnection, family_id: &str, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
        db_params![family_id, now],
    )
    .map_err(db_error("revoke a sign-in's refresh tokens"))?;
    Ok(())
}

//! Magic-link sign-in: pending sign-ins, their confirmation, the second
//! factor and completion.
//!
//! `POST /v1/auth/login` stores a pending sign-in under the hashes of two
//! random values. The requester keeps the login id to poll and to send the
//! second factor. Only the mailed link carries the magic token, in its
//! fragment, so the token never reaches a server log or a `Referer`. The sign-in is void after the configured lifetime, after
//! [`MAX_SECOND_FACTOR_ATTEMPTS`] wrong codes, and once completed.

use sealcast_protocol::auth::LoginKind;

use super::connection::{db_error, Sealed};
use super::store::{self, AccountConnection, UserRecord};
use crate::credentials::CredentialHash;
use crate::db::db_params;
use crate::store::StoreError;

/// Wrong TOTP or recovery codes after which a pending sign-in is void.
pub(crate) const MAX_SECOND_FACTOR_ATTEMPTS: i64 = 5;

/// Seconds a device waits between polls.
pub(crate) const POLL_INTERVAL_SECS: u64 = 2;

/// Longest accepted device name, in characters.
pub(crate) const MAX_DEVICE_NAME_CHARS: usize = 100;

/// The device key of a device sign-in. `Debug` leaves the name out.
#[derive(Clone)]
pub(crate) struct PendingDevice {
    pub(crate) public_key: String,
    pub(crate) thumbprint: String,
    pub(crate) name: String,
}

impl std::fmt::Debug for PendingDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDevice")
            .field("thumbprint", &self.thumbprint)
            .field("name", &sealcast_protocol::redact::Redacted)
            .finish_non_exhaustive()
    }
}

/// A pending sign-in about to be stored.
#[derive(Debug)]
pub(crate) struct NewLogin {
    pub(crate) login_id_hash: CredentialHash,
    pub(crate) token_hash: CredentialHash,
    /// The user, or `None` for an address that belongs to no enabled user:
    /// such a sign-in is stored alike but no link is ever sent for it.
    pub(crate) user_id: Option<String>,
    pub(crate) device: Option<PendingDevice>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
}

/// A stored pending sign-in with its user.
#[derive(Debug, Clone)]
pub(crate) struct PendingLogin {
    pub(crate) login_id_hash: Vec<u8>,
    pub(crate) user: Option<UserRecord>,
    pub(crate) device: Option<PendingDevice>,
    pub(crate) expires_at: i64,
    pub(crate) confirmed: bool,
    pub(crate) second_factor_passed: bool,
    pub(crate) completed: bool,
    pub(crate) attempts: i64,
}

impl PendingLogin {
    /// Returns who started the sign-in.
    pub(crate) fn kind(&self) -> LoginKind {
        if self.device.is_some() {
            LoginKind::Device
        } else {
            LoginKind::Browser
        }
    }

    /// Returns whether the sign-in can no longer proceed at `now`. Wrong
    /// codes void it only while the second factor is still missing, so a
    /// right code on the last attempt still completes it.
    pub(crate) fn is_void(&self, now: i64) -> bool {
        let too_many_attempts =
            !self.second_factor_passed && self.attempts >= MAX_SECOND_FACTOR_ATTEMPTS;
        self.completed || self.expires_at <= now || too_many_attempts
    }

    /// Returns whether a TOTP or recovery code must follow the link.
    pub(crate) fn needs_second_factor(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|user| user.totp_secret.is_some())
            && !self.second_factor_passed
    }
}

/// Stores a pending sign-in.
pub(crate) fn insert(conn: &AccountConnection, login: &NewLogin) -> Result<(), StoreError> {
    let kind = if login.device.is_some() {
        "device"
    } else {
        "browser"
    };
    let device = login.device.as_ref();
    let sealed_name = conn.seal_optional(
        "pending_logins",
        "device_name",
        login.login_id_hash.as_slice(),
        device.map(|device| device.name.as_bytes()),
    );
    conn.execute(
        "INSERT INTO pending_logins (login_id_hash, token_hash, user_id, kind,
             device_public_key, device_thumbprint, device_name, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        db_params![
            login.login_id_hash,
            login.token_hash,
            login.user_id,
            kind,
            device.map(|device| device.public_key.as_str()),
            device.map(|device| device.thumbprint.as_str()),
            sealed_name,
            login.created_at,
            login.expires_at,
        ],
    )
    .map_err(db_error("store a pending sign-in"))?;
    Ok(())
}

/// The hash a pending sign-in is looked up by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LoginKey {
    /// The login id the requester holds.
    LoginId(CredentialHash),
    /// The login id the requester holds, or the one confirmation gave the
    /// link's page for the second factor.
    AnyLoginId(CredentialHash),
    /// The magic token of the link.
    Token(CredentialHash),
}

/// Looks a pending sign-in up, with its user.
pub(crate) fn find(
    conn: &AccountConnection,
    key: LoginKey,
) -> Result<Option<PendingLogin>, StoreError> {
    let (condition, hash) = match key {
        LoginKey::LoginId(hash) => ("login_id_hash = ?1", hash),
        LoginKey::AnyLoginId(hash) => ("login_id_hash = ?1 OR second_step_hash = ?1", hash),
        LoginKey::Token(hash) => ("token_hash = ?1", hash),
    };
    let sql = format!(
        "SELECT login_id_hash, user_id, device_public_key, device_thumbprint, device_name,
             expires_at, confirmed_at IS NOT NULL, second_factor_at IS NOT NULL,
             completed_at IS NOT NULL, attempts
         FROM pending_logins WHERE {condition}"
    );
    type Found = (
        Vec<u8>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<Sealed>,
        i64,
        bool,
        bool,
        bool,
        i64,
    );
    let row: Option<Found> = conn
        .query_opt(&sql, db_params![hash], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                row.get(8)?,
                row.get(9)?,
            ))
        })
        .map_err(db_error("look up a pending sign-in"))?;
    let Some((
        login_id_hash,
        user_id,
        public_key,
        thumbprint,
        sealed_name,
        expires_at,
        confirmed,
        passed,
        completed,
        attempts,
    )) = row
    else {
        return Ok(None);
    };
    let name = sealed_name
        .map(|sealed| conn.open_text("pending_logins", "device_name", &login_id_hash, &sealed))
        .transpose()?;
    let user = match user_id {
        Some(user_id) => store::user_by_id(conn, &user_id)?,
        None => None,
    };
    let device = match (public_key, thumbprint) {
        (Some(public_key), Some(thumbprint)) => Some(PendingDevice {
            public_key,
            thumbprint,
            name: name.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Some(PendingLogin {
        login_id_hash,
        user,
        device,
        expires_at,
        confirmed,
        second_factor_passed: passed,
        completed,
        attempts,
    }))
}

/// Marks a sign-in confirmed by its link, and stores the hash of the login
/// id that the link's page gets for the second factor, replacing an earlier one.
pub(crate) fn mark_confirmed(
    conn: &AccountConnection,
    login_id_hash: &[u8],
    second_step_hash: &CredentialHash,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE pending_logins SET confirmed_at = COALESCE(confirmed_at, ?2),
             second_step_hash = ?3
         WHERE login_id_hash = ?1",
        db_params![login_id_hash, now, second_step_hash],
    )
    .map_err(db_error("confirm a pending sign-in"))?;
    Ok(())
}

/// Counts one second-factor attempt. Returns the attempts made so far,
/// this one included.
pub(crate) fn count_attempt(
    conn: &AccountConnection,
    login_id_hash: &[u8],
) -> Result<i64, StoreError> {
    conn.query_one(
        "UPDATE pending_logins SET attempts = attempts + 1 WHERE login_id_hash = ?1
         RETURNING attempts",
        db_params![login_id_hash],
        |row| row.get(0),
    )
    .map_err(db_error("count a second-factor attempt"))
}

/// Marks the second factor of a sign-in passed.
pub(crate) fn mark_second_factor(
    conn: &AccountConnection,
    login_id_hash: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE pending_logins SET second_factor_at = ?2 WHERE login_id_hash = ?1",
        db_params![login_id_hash, now],
    )
    .map_err(db_error("record a passed second factor"))?;
    Ok(())
}

/// Marks a sign-in completed, unless it already is. Returns false when
/// another request completed it first.
pub(crate) fn mark_completed(
    conn: &AccountConnection,
    login_id_hash: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE pending_logins SET completed_at = ?2
             WHERE login_id_hash = ?1 AND completed_at IS NULL",
            db_params![login_id_hash, now],
        )
        .map_err(db_error("complete a pending sign-in"))?;
    Ok(changed == 1)
}

/// Deletes sign-ins that expired more than a day before `now`.
pub(crate) fn delete_expired(conn: &AccountConnection, now: i64) -> Result<usize, StoreError> {
    const KEEP_MS: i64 = 24 * 60 * 60 * 1000;
    conn.execute(
        "DELETE FROM pending_logins WHERE expires_at < ?1",
        db_params![now.saturating_sub(KEEP_MS)],
    )
    .map_err(db_error("delete expired sign-ins"))
}

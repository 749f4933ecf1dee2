//! Account rows: organizations, users and recovery codes, and the state of
//! a credential. Devices are in [`super::devices`].
//!
//! Account reads and writes use their own connection, guarded by a mutex and
//! run on the blocking thread pool, beside the frame writer thread. SQLite
//! serializes the two writers with its busy timeout.
//!
//! Email addresses, names and secrets are sealed at rest. The functions
//! seal them before they bind them and open them after they read them, with
//! the data keys of the [`AccountConnection`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sealcast_protocol::auth::{Role, UserSummary};
use zeroize::Zeroizing;

use super::connection::{db_error, Sealed};
pub(crate) use super::connection::{AccountConnection, AccountDb};
use crate::db::{db_params, DbError, Row};
use crate::store::StoreError;

/// Makes an id such as `usr_3k9...`: a prefix and 96 random bits in base64url.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A user row.
#[derive(Clone)]
pub(crate) struct UserRecord {
    pub(crate) user_id: String,
    pub(crate) organization_id: String,
    pub(crate) email: String,
    pub(crate) role: Role,
    pub(crate) created_at: i64,
    pub(crate) disabled_at: Option<i64>,
    /// The active TOTP secret, once enrolment is finished.
    pub(crate) totp_secret: Option<Zeroizing<Vec<u8>>>,
    /// A secret shown by enrolment and not yet confirmed with a code.
    pub(crate) totp_pending_secret: Option<Zeroizing<Vec<u8>>>,
    /// The last TOTP time step accepted, so a code cannot be used twice.
    pub(crate) totp_last_step: Option<u64>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("organization_id", &self.organization_id)
            .field("role", &self.role)
            .field("disabled_at", &self.disabled_at)
            .field("totp_enabled", &self.totp_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// Returns the user as the admin listing shows it.
    pub(crate) fn summary(&self) -> UserSummary {
        UserSummary {
            user_id: self.user_id.clone(),
            email: self.email.clone(),
            role: self.role,
            totp_enabled: self.totp_secret.is_some(),
            created_at: self.created_at,
            disabled_at: self.disabled_at,
        }
    }
}

/// The email address and TOTP secrets are read sealed and opened by
/// [`finish_user`].
const USER_COLUMNS: &str = "user_id, organization_id, email, role, created_at, disabled_at,
    totp_secret, totp_pending_secret, totp_last_step";

/// A user row as stored, with its values still sealed.
struct StoredUser {
    user_id: String,
    organization_id: String,
    email: Sealed,
    role: String,
    created_at: i64,
    disabled_at: Option<i64>,
    totp_secret: Option<Sealed>,
    totp_pending_secret: Option<Sealed>,
    totp_last_step: Option<i64>,
}

fn user_row(row: &Row<'_>) -> Result<StoredUser, DbError> {
    Ok(StoredUser {
        user_id: row.get(0)?,
        organization_id: row.get(1)?,
        email: row.get(2)?,
        role: row.get(3)?,
        created_at: row.get(4)?,
        disabled_at: row.get(5)?,
        totp_secret: row.get(6)?,
        totp_pending_secret: row.get(7)?,
        totp_last_step: row.get(8)?,
    })
}

/// Opens a stored user's sealed values and parses its role.
fn finish_user(conn: &AccountConnection, stored: StoredUser) -> Result<UserRecord, StoreError> {
    let row_key = stored.user_id.as_bytes();
    let email = conn.open_text("users", "email", row_key, &stored.email)?;
    let totp_secret =
        conn.open_blob_optional("users", "totp", row_key, stored.totp_secret.as_ref())?;
    let totp_pending_secret = conn.open_blob_optional(
        "users",
        "totp",
        row_key,
        stored.totp_pending_secret.as_ref(),
    )?;
    let role = stored
        .role
        .parse()
        .map_err(|_| StoreError::Corrupt { what: "user role" })?;
    Ok(UserRecord {
        user_id: stored.user_id,
        organization_id: stored.organization_id,
        email,
        role,
        created_at: stored.created_at,
        disabled_at: stored.disabled_at,
        totp_secret,
        totp_pending_secret,
        totp_last_step: stored
            .totp_last_step
            .and_then(|step| u64::try_from(step).ok()),
    })
}

/// Normalizes an email address for storage and lookup: trimmed, lower case.
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Inserts an organization and returns its id.
pub(crate) fn insert_organization(
    conn: &AccountConnection,
    name: &str,
    now: i64,
) -> Result<String, StoreError> {
    let organization_id = new_id("org");
    let sealed_name = conn.seal(
        "organizations",
        "name",
        organization_id.as_bytes(),
        name.as_bytes(),
    );
    conn.execute(
        "INSERT INTO organizations (organization_id, name, created_at) VALUES (?1, ?2, ?3)",
        db_params![organization_id, sealed_name, now],
    )
    .map_err(db_error("store an organization"))?;
    Ok(organization_id)
}

/// Checks that an organization exists.
pub(crate) fn organization_exists(
    conn: &AccountConnection,
    organization_id: &str,
) -> Result<bool, StoreError> {
    conn.query_opt(
        "SELECT 1 FROM organizations WHERE organization_id = ?1",
        db_params![organization_id],
        |_| Ok(()),
    )
    .map(|found| found.is_some())
    .map_err(db_error("look up an organization"))
}

/// Inserts a user and returns its id, or `None` when the email address is
/// already taken.
pub(crate) fn insert_user(
    conn: &AccountConnection,
    organization_id: &str,
    email: &str,
    role: Role,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let user_id = new_id("usr");
    let email_hash = conn.email_hash(email);
    let sealed_email = conn.seal("users", "email", user_id.as_bytes(), email.as_bytes());
    let inserted = conn
        .execute(
            "INSERT INTO users (user_id, organization_id, email_hash, email, role, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (email_hash) DO NOTHING",
            db_params![
                user_id,
                organization_id,
                email_hash,
                sealed_email,
                role.as_str(),
                now
            ],
        )
        .map_err(db_error("store a user"))?;
    Ok((inserted == 1).then_some(user_id))
}

/// Looks a user up by id.
pub(crate) fn user_by_id(
    conn: &AccountConnection,
    user_id: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1");
    conn.query_opt(&sql, db_params![user_id], user_row)
        .map_err(db_error("look up a user"))?
        .map(|stored| finish_user(conn, stored))
        .transpose()
}

/// Looks a user up by normalized email address.
pub(crate) fn user_by_email(
    conn: &AccountConnection,
    email: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_hash = ?1");
    let email_hash = conn.email_hash(email);
    conn.query_opt(&sql, db_params![email_hash], user_row)
        .map_err(db_error("look up a user by email"))?
        .map(|stored| finish_user(conn, stored))
        .transpose()
}

/// Lists users, of one organization or of all, oldest first.
pub(crate) fn list_users(
    conn: &AccountConnection,
    organization_id: Option<&str>,
) -> Result<Vec<UserRecord>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE organization_id = ?1 OR ?1 IS NULL
         ORDER BY created_at, user_id"
    );
    conn.query_all(&sql, db_params![organization_id], user_row)
        .map_err(db_error("list users"))?
        .into_iter()
        .map(|stored| finish_user(conn, stored))
        .collect()
}

/// Marks a user disabled and revokes their refresh tokens. Returns false
/// when the user does not exist or is already disabled.
pub(crate) fn disable_user(
    conn: &AccountConnection,
    user_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE users SET disabled_at = ?2 WHERE user_id = ?1 AND disabled_at IS NULL",
            db_params![user_id, now],
        )
        .map_err(db_error("disable a user"))?;
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        db_params![user_id, now],
    )
    .map_err(db_error("revoke a user's refresh tokens"))?;
    Ok(changed == 1)
}

/// Stores a TOTP secret awaiting confirmation, replacing any earlier one.
pub(crate) fn set_pending_totp(
    conn: &AccountConnection,
    user_id: &str,
    secret: &[u8],
) -> Result<(), StoreError> {
    let sealed = conn.seal("users", "totp", user_id.as_bytes(), secret);
    conn.execute(
        "UPDATE users SET totp_pending_secret = ?2 WHERE user_id = ?1",
        db_params![user_id, sealed],
    )
    .map_err(db_error("store a pending TOTP secret"))?;
    Ok(())
}

/// Makes the pending TOTP secret the active one and replaces the recovery
/// codes, in one transaction. Both secrets are sealed as column `totp`, so
/// the sealed value moves without being opened.
pub(crate) fn activate_totp(
    conn: &AccountConnection,
    user_id: &str,
    step: u64,
    recovery_hashes: &[[u8; 32]],
    now: i64,
) -> Result<(), StoreError> {
    let error = db_error("activate TOTP");
    let tx = conn.begin_write().map_err(&error)?;
    tx.execute(
        "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL,
             totp_last_step = ?2
         WHERE user_id = ?1 AND totp_pending_secret IS NOT NULL",
        db_params![user_id, step_to_sql(step)],
    )
    .map_err(&error)?;
    tx.execute(
        "DELETE FROM recovery_codes WHERE user_id = ?1",
        db_params![user_id],
    )
    .map_err(&error)?;
    for hash in recovery_hashes {
        tx.execute(
            "INSERT INTO recovery_codes (code_hash, user_id, created_at) VALUES (?1, ?2, ?3)",
            db_params![hash, user_id, now],
        )
        .map_err(&error)?;
    }
    tx.commit().map_err(&error)
}

/// Records a TOTP step as used if it is newer than the last one. Returns
/// false when another request used this or a later step first.
pub(crate) fn use_totp_step(
    conn: &AccountConnection,
    user_id: &str,
    step: u64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE users SET totp_last_step = ?2
             WHERE user_id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            db_params![user_id, step_to_sql(step)],
        )
        .map_err(db_error("record a TOTP step"))?;
    Ok(changed == 1)
}

/// Marks an unused recovery code of the user used. Returns false when no
/// such unused code exists.
pub(crate) fn use_recovery_code(
    conn: &AccountConnection,
    user_id: &str,
    hash: &[u8; 32],
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE recovery_codes SET used_at = ?3
             WHERE code_hash = ?1 AND user_id = ?2 AND used_at IS NULL",
            db_params![hash, user_id, now],
        )
        .map_err(db_error("use a recovery code"))?;
    Ok(changed == 1)
}

fn step_to_sql(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

/// The current state of a credential's user, device and sign-in, read on
/// every request.
#[derive(Debug, Clone)]
pub(crate) struct CredentialState {
    pub(crate) organization_id: String,
    pub(crate) role: Role,
    pub(crate) user_disabled: bool,
    /// Whether the device is revoked or missing. False without a device.
    pub(crate) device_revoked: bool,
    /// Whether the sign-in's refresh tokens were revoked, by logout or reuse.
    pub(crate) sign_in_revoked: bool,
}

/// Reads the current state of a user, device and sign-in in one query.
/// Returns `None` when the user does not exist.
pub(crate) fn credential_state(
    conn: &AccountConnection,
    user_id: &str,
    device_id: Option<&str>,
    family_id: &str,
) -> Result<Option<CredentialState>, StoreError> {
    // PostgreSQL's CASE cannot mix an integer and a boolean branch, so the
    // device check is a conjunction, which is false without a device.
    let sql = "SELECT u.organization_id, u.role, u.disabled_at IS NOT NULL,
            CAST(?2 AS TEXT) IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM devices WHERE device_id = ?2 AND user_id = u.user_id
                    AND revoked_at IS NULL),
            EXISTS (SELECT 1 FROM refresh_tokens WHERE family_id = ?3
                AND revoked_at IS NOT NULL)
        FROM users u WHERE u.user_id = ?1";
    let row = conn
        .query_opt(sql, db_params![user_id, device_id, family_id], |row| {
            Ok((
                row.get::<String>(0)?,
                row.get::<String>(1)?,
                row.get::<bool>(2)?,
                row.get::<bool>(3)?,
                row.get::<bool>(4)?,
            ))
        })
        .map_err(db_error("read a credential's state"))?;
    let Some((organization_id, role, user_disabled, device_revoked, sign_in_revoked)) = row else {
        return Ok(None);
    };
    Ok(Some(CredentialState {
        organization_id,
        role: role
            .parse()
            .map_err(|_| StoreError::Corrupt { what: "user role" })?,
        user_disabled,
        device_revoked,
        sign_in_revoked,
    }))
}

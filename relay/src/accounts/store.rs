//! Account rows: organizations, users and recovery codes, and the state of
//! a credential. Devices are in [`super::devices`].
//!
//! Account reads and writes use their own connection, guarded by a mutex and
//! run on the blocking thread pool, beside the frame writer thread. SQLite
//! serializes the two writers with its busy timeout.
//!
//! Email addresses, names and secrets are sealed at rest. The statements
//! seal and open them with the `at_rest_*` SQL functions, which every
//! connection from [`crate::store::open_extra_writer`] has.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Row};
use sealcast_protocol::auth::{Role, UserSummary};
use zeroize::Zeroizing;

use crate::at_rest::{DatabaseKeys, KeySource};
use crate::store::{open_extra_writer, open_keyed_writer, StoreError};

/// The account connection, cheap to clone.
#[derive(Clone)]
pub(crate) struct AccountDb {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for AccountDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountDb")
    }
}

impl AccountDb {
    /// Opens `relay.db` in `data_dir` beside a store that unlocked `keys`.
    pub(crate) fn open(data_dir: &Path, keys: &DatabaseKeys) -> Result<AccountDb, StoreError> {
        let conn = open_extra_writer(data_dir, keys)?;
        Ok(AccountDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Opens `relay.db` in `data_dir`, unlocking its data key with the key
    /// from `source` and migrating it if needed.
    pub(crate) fn open_with_key(
        data_dir: &Path,
        source: &KeySource,
    ) -> Result<AccountDb, StoreError> {
        let (conn, _) = open_keyed_writer(data_dir, source)?;
        Ok(AccountDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the connection on the blocking thread pool.
    pub(crate) async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_blocking(work))
            .await
            .map_err(|error| E::from(StoreError::ReadTask(error.to_string())))?
    }

    /// Runs `work` on the connection on this thread.
    pub(crate) fn run_blocking<T, E>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        work(&mut conn)
    }
}

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

const USER_COLUMNS: &str = "user_id, organization_id,
    at_rest_open_text('users', 'email', user_id, email), role, created_at, disabled_at,
    at_rest_open_blob('users', 'totp', user_id, totp_secret),
    at_rest_open_blob('users', 'totp', user_id, totp_pending_secret), totp_last_step";

fn user_row(row: &Row<'_>) -> rusqlite::Result<(UserRecord, String)> {
    let role: String = row.get(3)?;
    let secret: Option<Vec<u8>> = row.get(6)?;
    let pending: Option<Vec<u8>> = row.get(7)?;
    let last_step: Option<i64> = row.get(8)?;
    Ok((
        UserRecord {
            user_id: row.get(0)?,
            organization_id: row.get(1)?,
            email: row.get(2)?,
            role: Role::Clinician,
            created_at: row.get(4)?,
            disabled_at: row.get(5)?,
            totp_secret: secret.map(Zeroizing::new),
            totp_pending_secret: pending.map(Zeroizing::new),
            totp_last_step: last_step.and_then(|step| u64::try_from(step).ok()),
        },
        role,
    ))
}

fn finish_user((mut user, role): (UserRecord, String)) -> Result<UserRecord, StoreError> {
    user.role = role
        .parse()
        .map_err(|_| StoreError::Corrupt { what: "user role" })?;
    Ok(user)
}

/// Normalizes an email address for storage and lookup: trimmed, lower case.
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Inserts an organization and returns its id.
pub(crate) fn insert_organization(
    conn: &Connection,
    name: &str,
    now: i64,
) -> Result<String, StoreError> {
    let organization_id = new_id("org");
    conn.execute(
        "INSERT INTO organizations (organization_id, name, created_at)
         VALUES (?1, at_rest_seal('organizations', 'name', ?1, ?2), ?3)",
        params![organization_id, name, now],
    )
    .map_err(StoreError::sqlite("store an organization"))?;
    Ok(organization_id)
}

/// Checks that an organization exists.
pub(crate) fn organization_exists(
    conn: &Connection,
    organization_id: &str,
) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM organizations WHERE organization_id = ?1",
        params![organization_id],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(StoreError::sqlite("look up an organization"))
}

/// Inserts a user and returns its id, or `None` when the email address is
/// already taken.
pub(crate) fn insert_user(
    conn: &Connection,
    organization_id: &str,
    email: &str,
    role: Role,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let user_id = new_id("usr");
    let inserted = conn
        .execute(
            "INSERT INTO users (user_id, organization_id, email_hash, email, role, created_at)
             VALUES (?1, ?2, at_rest_email_hash(?3), at_rest_seal('users', 'email', ?1, ?3),
                 ?4, ?5)
             ON CONFLICT (email_hash) DO NOTHING",
            params![user_id, organization_id, email, role.as_str(), now],
        )
        .map_err(StoreError::sqlite("store a user"))?;
    Ok((inserted == 1).then_some(user_id))
}

/// Looks a user up by id.
pub(crate) fn user_by_id(
    conn: &Connection,
    user_id: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1");
    conn.query_row(&sql, params![user_id], user_row)
        .optional()
        .map_err(StoreError::sqlite("look up a user"))?
        .map(finish_user)
        .transpose()
}

/// Looks a user up by normalized email address.
pub(crate) fn user_by_email(
    conn: &Connection,
    email: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_hash = at_rest_email_hash(?1)");
    conn.query_row(&sql, params![email], user_row)
        .optional()
        .map_err(StoreError::sqlite("look up a user by email"))?
        .map(finish_user)
        .transpose()
}

/// Lists users, of one organization or of all, oldest first.
pub(crate) fn list_users(
    conn: &Connection,
    organization_id: Option<&str>,
) -> Result<Vec<UserRecord>, StoreError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ?1 IS NULL OR organization_id = ?1
         ORDER BY created_at, user_id"
    );
    let error = StoreError::sqlite("list users");
    let mut statement = conn.prepare(&sql).map_err(&error)?;
    let rows = statement
        .query_map(params![organization_id], user_row)
        .map_err(&error)?;
    let mut users = Vec::new();
    for row in rows {
        users.push(finish_user(row.map_err(&error)?)?);
    }
    Ok(users)
}

/// Marks a user disabled and revokes their refresh tokens. Returns false
/// when the user does not exist or is already disabled.
pub(crate) fn disable_user(conn: &Connection, user_id: &str, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE users SET disabled_at = ?2 WHERE user_id = ?1 AND disabled_at IS NULL",
            params![user_id, now],
        )
        .map_err(StoreError::sqlite("disable a user"))?;
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![user_id, now],
    )
    .map_err(StoreError::sqlite("revoke a user's refresh tokens"))?;
    Ok(changed == 1)
}

/// Stores a TOTP secret awaiting confirmation, replacing any earlier one.
pub(crate) fn set_pending_totp(
    conn: &Connection,
    user_id: &str,
    secret: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET totp_pending_secret = at_rest_seal('users', 'totp', ?1, ?2)
         WHERE user_id = ?1",
        params![user_id, secret],
    )
    .map_err(StoreError::sqlite("store a pending TOTP secret"))?;
    Ok(())
}

/// Makes the pending TOTP secret the active one and replaces the recovery
/// codes, in one transaction.
pub(crate) fn activate_totp(
    conn: &mut Connection,
    user_id: &str,
    step: u64,
    recovery_hashes: &[[u8; 32]],
    now: i64,
) -> Result<(), StoreError> {
    let error = StoreError::sqlite("activate TOTP");
    let tx = conn.transaction().map_err(&error)?;
    tx.execute(
        "UPDATE users SET totp_secret = totp_pending_secret, totp_pending_secret = NULL,
             totp_last_step = ?2
         WHERE user_id = ?1 AND totp_pending_secret IS NOT NULL",
        params![user_id, step_to_sql(step)],
    )
    .map_err(&error)?;
    tx.execute(
        "DELETE FROM recovery_codes WHERE user_id = ?1",
        params![user_id],
    )
    .map_err(&error)?;
    for hash in recovery_hashes {
        tx.execute(
            "INSERT INTO recovery_codes (code_hash, user_id, created_at) VALUES (?1, ?2, ?3)",
            params![hash.as_slice(), user_id, now],
        )
        .map_err(&error)?;
    }
    tx.commit().map_err(&error)
}

/// Records a TOTP step as used if it is newer than the last one. Returns
/// false when another request used this or a later step first.
pub(crate) fn use_totp_step(
    conn: &Connection,
    user_id: &str,
    step: u64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE users SET totp_last_step = ?2
             WHERE user_id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            params![user_id, step_to_sql(step)],
        )
        .map_err(StoreError::sqlite("record a TOTP step"))?;
    Ok(changed == 1)
}

/// Marks an unused recovery code of the user used. Returns false when no
/// such unused code exists.
pub(crate) fn use_recovery_code(
    conn: &Connection,
    user_id: &str,
    hash: &[u8; 32],
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE recovery_codes SET used_at = ?3
             WHERE code_hash = ?1 AND user_id = ?2 AND used_at IS NULL",
            params![hash.as_slice(), user_id, now],
        )
        .map_err(StoreError::sqlite("use a recovery code"))?;
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
    conn: &Connection,
    user_id: &str,
    device_id: Option<&str>,
    family_id: &str,
) -> Result<Option<CredentialState>, StoreError> {
    let sql = "SELECT u.organization_id, u.role, u.disabled_at IS NOT NULL,
            CASE WHEN ?2 IS NULL THEN 0 ELSE NOT EXISTS (
                SELECT 1 FROM devices WHERE device_id = ?2 AND user_id = u.user_id
                    AND revoked_at IS NULL) END,
            EXISTS (SELECT 1 FROM refresh_tokens WHERE family_id = ?3
                AND revoked_at IS NOT NULL)
        FROM users u WHERE u.user_id = ?1";
    let row = conn
        .prepare_cached(sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![user_id, device_id, family_id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, bool>(4)?,
                    ))
                })
                .optional()
        })
        .map_err(StoreError::sqlite("read a credential's state"))?;
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

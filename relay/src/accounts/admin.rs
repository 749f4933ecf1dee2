//! Administration of organizations, users and devices, shared by the
//! `sealcast-relay admin` command and the HTTP admin routes.
//!
//! [`AdminStore`] opens the relay's database directly, so the command works
//! while a relay runs on the same data directory. A running relay notices
//! revocations made this way within its socket recheck interval,
//! [`super::live::RECHECK_INTERVAL`].

use std::path::Path;

use sealcast_protocol::auth::{DeviceSummary, Role, UserSummary};
use thiserror::Error;

use super::devices;
use super::store::{self, normalize_email, AccountDb};
use crate::at_rest::KeySource;
use crate::db::Backend;
use crate::store::{now_millis, StoreError};

/// Longest accepted organization name, in bytes.
const MAX_NAME_LEN: usize = 200;

/// Longest accepted email address, in bytes (RFC 5321 path limit).
const MAX_EMAIL_LEN: usize = 254;

/// A failed administration step.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An argument is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The named organization, user or device does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The email address belongs to another user. The address is left out
    /// of the message, which may be logged.
    #[error("this email address is already used by another user")]
    EmailTaken,
    /// The result could not be written to stdout.
    #[error("failed to write the output: {0}")]
    Output(std::io::Error),
    /// The change was made but its audit entry could not be appended.
    #[error("the change was made, but recording it in the audit log failed: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// Administration on a relay's data directory.
#[derive(Debug, Clone)]
pub struct AdminStore {
    db: AccountDb,
}

impl AdminStore {
    /// Opens `relay.db` in `data_dir`, creating and migrating it if needed,
    /// with the development at-rest key in the data directory, as a relay
    /// started without an at-rest key flag uses it.
    pub fn open(data_dir: &Path) -> Result<AdminStore, AdminError> {
        AdminStore::open_with_key(data_dir, &KeySource::Development)
    }

    /// Opens `relay.db` in `data_dir`, creating and migrating it if needed,
    /// and unlocks its data key with the key from `source`.
    pub fn open_with_key(data_dir: &Path, source: &KeySource) -> Result<AdminStore, AdminError> {
        AdminStore::open_at(data_dir, None, source)
    }

    /// Opens the PostgreSQL database at `database_url`, or for `None`
    /// `relay.db` in `data_dir`, creating and migrating it if needed, and
    /// unlocks its data key with the key from `source`, whose development
    /// key file is in `data_dir`.
    pub fn open_at(
        data_dir: &Path,
        database_url: Option<&str>,
        source: &KeySource,
    ) -> Result<AdminStore, AdminError> {
        let backend = match database_url {
            Some(url) => Backend::postgres(url).map_err(StoreError::db("read the database URL"))?,
            None => Backend::Sqlite(data_dir.join(crate::store::DATABASE_FILE)),
        };
        AdminStore::open_in(data_dir, &backend, source)
    }

    /// Opens the database of `backend` as [`AdminStore::open_at`] does.
    pub(crate) fn open_in(
        data_dir: &Path,
        backend: &Backend,
        source: &KeySource,
    ) -> Result<AdminStore, AdminError> {
        Ok(AdminStore {
            db: AccountDb::open_with_key(data_dir, backend, source)?,
        })
    }

    pub(crate) fn from_db(db: AccountDb) -> AdminStore {
        AdminStore { db }
    }

    /// Creates an organization and returns its id.
    pub fn create_organization(&self, name: &str) -> Result<String, AdminError> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(AdminError::Invalid(format!(
                "invalid organization name: use 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        let name = name.to_owned();
        self.db
            .run_blocking(|conn| store::insert_organization(conn, &name, now_millis()))
            .map_err(AdminError::from)
    }

    /// Creates a user of `organization_id` and returns its id.
    pub fn create_user(
        &self,
        organization_id: &str,
        email: &str,
        role: Role,
    ) -> Result<String, AdminError> {
        let email = checked_email(email)?;
        self.db.run_blocking(|conn| {
            if !store::organization_exists(conn, organization_id)? {
                return Err(AdminError::NotFound(format!(
                    "organization {organization_id} not found"
                )));
            }
            store::insert_user(conn, organization_id, &email, role, now_millis())?
                .ok_or_else(|| AdminError::EmailTaken)
        })
    }

    /// Lists the users of one organization, or of all.
    pub fn list_users(
        &self,
        organization_id: Option<&str>,
    ) -> Result<Vec<UserSummary>, AdminError> {
        let users = self
            .db
            .run_blocking(|conn| store::list_users(conn, organization_id))?;
        Ok(users.iter().map(store::UserRecord::summary).collect())
    }

    /// Lists the devices of one organization, or of all.
    pub fn list_devices(
        &self,
        organization_id: Option<&str>,
    ) -> Result<Vec<DeviceSummary>, AdminError> {
        let devices = self
            .db
            .run_blocking(|conn| devices::list_devices(conn, organization_id))?;
        Ok(devices.iter().map(devices::DeviceRecord::summary).collect())
    }

    /// Revokes a device and its refresh tokens. Revoking a revoked device
    /// succeeds and changes nothing.
    pub fn revoke_device(&self, device_id: &str) -> Result<(), AdminError> {
        self.db.run_blocking(|conn| {
            if devices::device_by_id(conn, device_id)?.is_none() {
                return Err(AdminError::NotFound(format!(
                    "device {device_id} not found"
                )));
            }
            devices::revoke_device(conn, device_id, now_millis())?;
            Ok(())
        })?;
        tracing::info!(device_id, "device revoked");
        Ok(())
    }

    /// Disables a user and revokes their refresh tokens. Disabling a
    /// disabled user succeeds and changes nothing.
    pub fn disable_user(&self, user_id: &str) -> Result<(), AdminError> {
        self.db.run_blocking(|conn| {
            if store::user_by_id(conn, user_id)?.is_none() {
                return Err(AdminError::NotFound(format!("user {user_id} not found")));
            }
            store::disable_user(conn, user_id, now_millis())?;
            Ok(())
        })?;
        tracing::info!(user_id, "user disabled");
        Ok(())
    }
}

/// Normalizes an email address and checks its rough shape: the relay only
/// needs it to be deliverable, which the mail server decides.
pub(crate) fn checked_email(email: &str) -> Result<String, AdminError> {
    let email = normalize_email(email);
    let well_formed = email.len() <= MAX_EMAIL_LEN
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(email)
    } else {
        Err(AdminError::Invalid(
            "invalid email address: expected name@domain.example".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_devices_are_managed() {
        let dir = tempfile::tempdir().unwrap();
        let admin = AdminStore::open(dir.path()).unwrap();
        let org = admin.create_organization("Clinic").unwrap();
        let user = admin
            .create_user(&org, " Doc@Clinic.Example ", Role::Clinician)
            .unwrap();
        let users = admin.list_users(Some(&org)).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].email, "doc@clinic.example");
        assert!(matches!(
            admin.create_user(&org, "doc@clinic.example", Role::Admin),
            Err(AdminError::EmailTaken)
        ));
        assert!(matches!(
            admin.create_user("org_missing", "x@clinic.example", Role::Admin),
            Err(AdminError::NotFound(_))
        ));
        assert!(matches!(
            admin.create_user(&org, "no-at-sign", Role::Admin),
            Err(AdminError::Invalid(_))
        ));
        admin.disable_user(&user).unwrap();
        assert!(admin.list_users(None).unwrap()[0].disabled_at.is_some());
        assert!(matches!(
            admin.revoke_device("dev_missing"),
            Err(AdminError::NotFound(_))
        ));
    }
}

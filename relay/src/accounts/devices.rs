//! Device rows: a staff member's devices, each with the public key its
//! tokens are bound to.

use std::fmt;

use sealcast_protocol::auth::DeviceSummary;
use sealcast_protocol::redact::Redacted;

use super::connection::{db_error, Sealed};
use super::store::{new_id, AccountConnection};
use crate::db::{db_params, DbError, Row};
use crate::store::StoreError;

/// A device row. `Debug` leaves the name out.
#[derive(Clone)]
pub(crate) struct DeviceRecord {
    pub(crate) device_id: String,
    pub(crate) user_id: String,
    pub(crate) name: String,
    pub(crate) thumbprint: String,
    pub(crate) created_at: i64,
    pub(crate) last_seen_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
}

impl fmt::Debug for DeviceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("name", &Redacted)
            .field("thumbprint", &self.thumbprint)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

impl DeviceRecord {
    /// Returns the device as the admin listing shows it.
    pub(crate) fn summary(&self) -> DeviceSummary {
        DeviceSummary {
            device_id: self.device_id.clone(),
            user_id: self.user_id.clone(),
            name: self.name.clone(),
            key_thumbprint: self.thumbprint.clone(),
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// A device about to be stored. `Debug` leaves the name out.
#[derive(Clone)]
pub(crate) struct NewDevice<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) public_key: &'a str,
    pub(crate) thumbprint: &'a str,
}

impl fmt::Debug for NewDevice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDevice")
            .field("user_id", &self.user_id)
            .field("name", &Redacted)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Inserts a device and returns its id, or `None` when a device with the
/// same key already exists.
pub(crate) fn insert_device(
    conn: &AccountConnection,
    device: &NewDevice<'_>,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let device_id = new_id("dev");
    let sealed_name = conn.seal(
        "devices",
        "name",
        device_id.as_bytes(),
        device.name.as_bytes(),
    );
    let inserted = conn
        .execute(
            "INSERT INTO devices (device_id, user_id, name, public_key, thumbprint, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (thumbprint) DO NOTHING",
            db_params![
                device_id,
                device.user_id,
                sealed_name,
                device.public_key,
                device.thumbprint,
                now
            ],
        )
        .map_err(db_error("store a device"))?;
    Ok((inserted == 1).then_some(device_id))
}

/// The name is read sealed and opened by [`finish_device`].
const DEVICE_COLUMNS: &str = "d.device_id, d.user_id, d.name, d.thumbprint, d.created_at,
    d.last_seen_at, d.revoked_at";

/// A device row as stored, with its name still sealed.
struct StoredDevice {
    device_id: String,
    user_id: String,
    name: Sealed,
    thumbprint: String,
    created_at: i64,
    last_seen_at: Option<i64>,
    revoked_at: Option<i64>,
}

fn device_row(row: &Row<'_>) -> Result<StoredDevice, DbError> {
    Ok(StoredDevice {
        device_id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        thumbprint: row.get(3)?,
        created_at: row.get(4)?,
        last_seen_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

fn finish_device(
    conn: &AccountConnection,
    stored: StoredDevice,
) -> Result<DeviceRecord, StoreError> {
    let name = conn.open_text("devices", "name", stored.device_id.as_bytes(), &stored.name)?;
    Ok(DeviceRecord {
        device_id: stored.device_id,
        user_id: stored.user_id,
        name,
        thumbprint: stored.thumbprint,
        created_at: stored.created_at,
        last_seen_at: stored.last_seen_at,
        revoked_at: stored.revoked_at,
    })
}

/// Looks a device up by id, with its owner's organization.
pub(crate) fn device_by_id(
    conn: &AccountConnection,
    device_id: &str,
) -> Result<Option<(DeviceRecord, String)>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS}, u.organization_id FROM devices d
         JOIN users u ON u.user_id = d.user_id WHERE d.device_id = ?1"
    );
    let found = conn
        .query_opt(&sql, db_params![device_id], |row| {
            Ok((device_row(row)?, row.get::<String>(7)?))
        })
        .map_err(db_error("look up a device"))?;
    let Some((stored, organization_id)) = found else {
        return Ok(None);
    };
    Ok(Some((finish_device(conn, stored)?, organization_id)))
}

/// Looks a device up by its key's thumbprint.
pub(crate) fn device_by_thumbprint(
    conn: &AccountConnection,
    thumbprint: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.thumbprint = ?1");
    conn.query_opt(&sql, db_params![thumbprint], device_row)
        .map_err(db_error("look up a device by key"))?
        .map(|stored| finish_device(conn, stored))
        .transpose()
}

/// Lists devices, of one organization or of all, oldest first.
pub(crate) fn list_devices(
    conn: &AccountConnection,
    organization_id: Option<&str>,
) -> Result<Vec<DeviceRecord>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM devices d JOIN users u ON u.user_id = d.user_id
         WHERE u.organization_id = ?1 OR ?1 IS NULL ORDER BY d.created_at, d.device_id"
    );
    conn.query_all(&sql, db_params![organization_id], device_row)
        .map_err(db_error("list devices"))?
        .into_iter()
        .map(|stored| finish_device(conn, stored))
        .collect()
}

/// Marks a device revoked and revokes its refresh tokens. Returns false when
/// the device does not exist or is already revoked.
pub(crate) fn revoke_device(
    conn: &AccountConnection,
    device_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE devices SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
            db_params![device_id, now],
        )
        .map_err(db_error("revoke a device"))?;
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
        db_params![device_id, now],
    )
    .map_err(db_error("revoke a device's refresh tokens"))?;
    Ok(changed == 1)
}

/// Sets a device's `last_seen_at`.
pub(crate) fn touch_device(
    conn: &AccountConnection,
    device_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE devices SET last_seen_at = ?2 WHERE device_id = ?1",
        db_params![device_id, now],
    )
    .map_err(db_error("record a device's last request"))?;
    Ok(())
}

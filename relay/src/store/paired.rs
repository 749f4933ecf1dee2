//! Devices that joined a session by pairing: one row per device with the
//! SHA-256 hash of its follow credential, which it sends as a bearer token,
//! and its device id. The wrapped keys of later key epochs that the clinician
//! device posts for a device are in `paired_device_keys`.
//!
//! Unlike browsers, paired devices take no place of the session's
//! `max_browsers`: the clinician device confirmed each one by its pairing
//! code. Ending the session deletes its rows and wrapped keys in the same
//! transaction, and removing a device deletes its row and wrapped keys.

use sealcast_protocol::paired_keys::{DeviceId, DEVICE_ID_LEN, MAX_STORED_KEYS_PER_DEVICE};
use sealcast_protocol::SessionId;

use super::reader::session_by_id;
use super::{PairedKey, Redemption, SessionRecord, StoreError};
use crate::credentials::{hashes_match, CredentialHash};
use crate::db::{db_params, Db};

/// Schema migration that adds the table.
pub(super) const MIGRATION: &str = "CREATE TABLE paired_devices (
        credential_hash BLOB PRIMARY KEY,
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE INDEX paired_devices_by_session ON paired_devices (session_id);";

/// Schema migration that adds device ids and the wrapped keys of later
/// epochs. Devices paired before it have no id, so they get no later keys
/// and cannot be removed one by one.
pub(super) const KEYS_MIGRATION: &str = "ALTER TABLE paired_devices ADD COLUMN device_id BLOB;

    CREATE UNIQUE INDEX paired_devices_by_device_id
        ON paired_devices (session_id, device_id) WHERE device_id IS NOT NULL;

    CREATE TABLE paired_device_keys (
        session_id BLOB NOT NULL REFERENCES sessions (session_id),
        device_id BLOB NOT NULL,
        key_epoch INTEGER NOT NULL,
        wrapped_key BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (session_id, device_id, key_epoch)
    ) WITHOUT ROWID;";

/// Schema migration that records the key epoch of the key each device's
/// pairing delivered. It is NULL for devices paired before it.
pub(super) const PAIRING_EPOCH_MIGRATION: &str =
    "ALTER TABLE paired_devices ADD COLUMN pairing_key_epoch INTEGER;";

/// Maximum number of key epochs a posted wrapped key may be above the
/// device's newest known epoch. Each rotation adds one to the epoch, so a
/// larger step is a client bug or an attempt to make the relay reject every
/// real later key as stale.
pub(crate) const MAX_KEY_EPOCH_STEP: u32 = 16;

/// Inserts a paired device's credential, device id and the key epoch of the
/// key its pairing delivered, when the session is open.
pub(super) fn insert(
    db: &Db,
    device: &Redemption,
    device_id: &DeviceId,
    key_epoch: u32,
) -> Result<(), StoreError> {
    let inserted = db
        .execute(
            "INSERT INTO paired_devices
                 (credential_hash, session_id, created_at, device_id, pairing_key_epoch)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE EXISTS (SELECT 1 FROM sessions WHERE session_id = ?2 AND ended_at IS NULL)",
            db_params![
                device.credential_hash,
                device.session_id.as_bytes(),
                device.created_at,
                device_id.0,
                key_epoch,
            ],
        )
        .map_err(StoreError::db("store a paired device's credential"))?;
    if inserted == 1 {
        Ok(())
    } else {
        Err(StoreError::SessionEnded {
            session_id: device.session_id,
        })
    }
}

/// Deletes every paired device credential and wrapped key of a session, when it ends.
pub(super) fn delete_for_session(db: &Db, session_id: &SessionId) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM paired_devices WHERE session_id = ?1",
        db_params![session_id.as_bytes()],
    )
    .map_err(StoreError::db("delete a session's paired devices"))?;
    db.execute(
        "DELETE FROM paired_device_keys WHERE session_id = ?1",
        db_params![session_id.as_bytes()],
    )
    .map_err(StoreError::db("delete a session's wrapped keys"))?;
    Ok(())
}

/// Stores a wrapped key for a paired device of an open session. Rejects an
/// unknown device, an ended session, an epoch older than the newest one
/// stored for the device and an epoch more than [`MAX_KEY_EPOCH_STEP`]
/// above the newest one stored or delivered by the pairing. The same epoch
/// replaces the stored key, so a clinician device may retry a post. Keeps
/// only the newest [`MAX_STORED_KEYS_PER_DEVICE`] keys of the device.
pub(super) fn insert_key(db: &Db, key: &PairedKey) -> Result<(), StoreError> {
    let session = key.session_id.as_bytes().as_slice();
    let device = key.device_id.0.as_slice();
    let open = session_by_id(db, &key.session_id)?.is_some_and(|record| record.ended_at.is_none());
    if !open {
        return Err(StoreError::SessionEnded {
            session_id: key.session_id,
        });
    }
    let pairing_epoch = db
        .query_opt(
            "SELECT pairing_key_epoch FROM paired_devices WHERE session_id = ?1 AND device_id = ?2",
            db_params![session, device],
            |row| row.get::<Option<i64>>(0),
        )
        .map_err(StoreError::db("look up a paired device"))?;
    let Some(pairing_epoch) = pairing_epoch else {
        return Err(StoreError::UnknownPairedDevice {
            device_id: key.device_id,
        });
    };
    let newest = db
        .query_one(
            "SELECT MAX(key_epoch) FROM paired_device_keys WHERE session_id = ?1 AND device_id = ?2",
            db_params![session, device],
            |row| row.get::<Option<i64>>(0),
        )
        .map_err(StoreError::db("read a paired device's newest key epoch"))?;
    let newest = newest.and_then(|newest| u32::try_from(newest).ok());
    if let Some(newest) = newest {
        if key.key_epoch < newest {
            return Err(StoreError::StalePairedKey {
                key_epoch: key.key_epoch,
                newest,
            });
        }
    }
    let pairing_epoch = pairing_epoch.and_then(|epoch| u32::try_from(epoch).ok());
    // NOTE: a device paired before the pairing epoch was stored, with no
    // stored key yet, has no known epoch, so its first post is not bounded.
    if let Some(known) = newest.max(pairing_epoch) {
        if key.key_epoch > known.saturating_add(MAX_KEY_EPOCH_STEP) {
            return Err(StoreError::PairedKeyTooFar {
                key_epoch: key.key_epoch,
                newest: known,
            });
        }
    }

    db.execute(
        "INSERT INTO paired_device_keys
             (session_id, device_id, key_epoch, wrapped_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (session_id, device_id, key_epoch)
         DO UPDATE SET wrapped_key = excluded.wrapped_key, created_at = excluded.created_at",
        db_params![
            session,
            device,
            key.key_epoch,
            key.wrapped_key,
            key.created_at
        ],
    )
    .map_err(StoreError::db("store a wrapped key"))?;
    db.execute(
        "DELETE FROM paired_device_keys WHERE session_id = ?1 AND device_id = ?2
         AND key_epoch NOT IN (SELECT key_epoch FROM paired_device_keys
             WHERE session_id = ?1 AND device_id = ?2 ORDER BY key_epoch DESC LIMIT ?3)",
        db_params![session, device, MAX_STORED_KEYS_PER_DEVICE as i64],
    )
    .map_err(StoreError::db("drop a paired device's oldest wrapped keys"))?;
    Ok(())
}

/// Deletes a paired device's credential and wrapped keys. Rejects an
/// unknown device.
pub(super) fn remove(
    db: &Db,
    session_id: &SessionId,
    device_id: &DeviceId,
) -> Result<(), StoreError> {
    let session = session_id.as_bytes().as_slice();
    let device = device_id.0.as_slice();
    let removed = db
        .execute(
            "DELETE FROM paired_devices WHERE session_id = ?1 AND device_id = ?2",
            db_params![session, device],
        )
        .map_err(StoreError::db("remove a paired device"))?;
    if removed == 0 {
        return Err(StoreError::UnknownPairedDevice {
            device_id: *device_id,
        });
    }
    db.execute(
        "DELETE FROM paired_device_keys WHERE session_id = ?1 AND device_id = ?2",
        db_params![session, device],
    )
    .map_err(StoreError::db("delete a paired device's wrapped keys"))?;
    Ok(())
}

/// A `paired_devices` row: credential hash, session id and device id.
type CredentialRow = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Looks up the session and device id of a paired device's credential. The
/// device id is `None` for a device paired before device ids were stored.
pub(super) fn device_by_credential(
    db: &Db,
    credential_hash: &CredentialHash,
) -> Result<Option<(SessionRecord, Option<DeviceId>)>, StoreError> {
    let row: Option<CredentialRow> = db
        .query_opt(
            "SELECT credential_hash, session_id, device_id FROM paired_devices
             WHERE credential_hash = ?1",
            db_params![credential_hash],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(StoreError::db("look up a paired device's credential"))?;
    let Some((stored_hash, session_id, device_id)) = row else {
        return Ok(None);
    };
    if !hashes_match(&stored_hash, credential_hash) {
        return Ok(None);
    }
    let session_id =
        <[u8; 16]>::try_from(session_id).map_err(|_| StoreError::Corrupt { what: "session id" })?;
    let device_id = device_id
        .map(|bytes| {
            <[u8; DEVICE_ID_LEN]>::try_from(bytes)
                .map(DeviceId)
                .map_err(|_| StoreError::Corrupt { what: "device id" })
        })
        .transpose()?;
    Ok(session_by_id(db, &SessionId(session_id))?.map(|record| (record, device_id)))
}

/// Returns a paired device's wrapped keys of epochs after `after`, oldest first.
pub(super) fn keys_after(
    db: &Db,
    session_id: &SessionId,
    device_id: &DeviceId,
    after: Option<u32>,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let after = after.map_or(-1, i64::from);
    db.query_all(
        "SELECT wrapped_key FROM paired_device_keys
         WHERE session_id = ?1 AND device_id = ?2 AND key_epoch > ?3
         ORDER BY key_epoch",
        db_params![session_id.as_bytes(), device_id.0, after],
        |row| row.get(0),
    )
    .map_err(StoreError::db("read a paired device's wrapped keys"))
}

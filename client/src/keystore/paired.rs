//! The clinician device's record of the devices paired with each session:
//! `paired/<session id>.paired`, JSON with one entry per device.
//!
//! Each entry holds the pairing's shared secret and both public keys
//! ([`PairedJoiner::to_secret_bytes`]), so that `sealcast publish` can wrap
//! the key of each later epoch for the device in another process than the
//! `sealcast pair offer` that paired it. The file is as secret as the
//! session file, so it gets the same protection: mode 0600 in a 0700
//! directory, written through a temporary file and a rename, overwritten
//! with zeros when an entry is removed or the session is shredded.
//!
//! A device that adopted a session also keeps here the pairings the first
//! device handed over, marked with the time of the hand-over. Each device
//! keeps only its own file: a patient paired later on either device is
//! known to that device alone.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::pairing::{PairedJoiner, PAIRED_STATE_LEN};
use sealcast_protocol::SessionId;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{
    create_private_dir, now_unix_s, overwrite_with_zeros, sync_dir, warn_if_readable_by_others,
    write_private_file, KeyStore,
};
use crate::error::ClientError;

const PAIRED_DIR: &str = "paired";
const PAIRED_EXTENSION: &str = "paired";
const PAIRED_FORMAT: u32 = 1;

/// A device paired with a session, as the clinician device stores it.
#[derive(Debug)]
pub struct PairedDevice {
    /// The device's id on the relay.
    pub device_id: DeviceId,
    /// When this device stored the pairing, in seconds since the Unix epoch:
    /// when the pairing completed, or when it was handed over.
    pub paired_unix_s: u64,
    /// The pairing, which wraps keys for the device. Its `Debug` shows public keys only.
    pub pairing: PairedJoiner,
    /// When another device of the clinician handed this pairing over with
    /// the session, in seconds since the Unix epoch. `None` for a device
    /// paired here.
    pub handed_over_unix_s: Option<u64>,
}

/// The on-disk form of a session's paired devices. Its strings are zeroed on drop.
#[derive(Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct PairedRecord {
    format: u32,
    session_id: String,
    devices: Vec<PairedEntry>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct PairedEntry {
    device_id: String,
    paired_unix_s: u64,
    /// [`PAIRED_STATE_LEN`] secret bytes, unpadded base64url.
    pairing: String,
    /// Absent for a device paired here, so that such files stay readable by
    /// builds that predate hand-overs of pairings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handed_over_unix_s: Option<u64>,
}

impl KeyStore {
    /// Returns the path of a session's paired device file.
    pub fn paired_path(&self, session_id: &SessionId) -> PathBuf {
        self.dir
            .join(PAIRED_DIR)
            .join(format!("{session_id}.{PAIRED_EXTENSION}"))
    }

    /// Adds a paired device to a session's file and returns its device id.
    /// A device with the same id replaces the earlier entry.
    pub fn add_paired_device(
        &self,
        session_id: &SessionId,
        pairing: &PairedJoiner,
    ) -> Result<DeviceId, ClientError> {
        let device_id = DeviceId::of_joiner(&pairing.joiner_public_key());
        let mut record = self.read_paired(session_id)?;
        record
            .devices
            .retain(|entry| entry.device_id != device_id.to_string());
        record.devices.push(new_entry(device_id, pairing, None));
        self.write_paired(session_id, &record)?;
        Ok(device_id)
    }

    /// Adds the pairings that another device of the clinician handed over
    /// with the session, and returns the ids of those added. A device
    /// already in the file keeps its entry, so a second hand-over of the
    /// same session adds only the pairings that are new.
    pub fn add_handed_over_devices(
        &self,
        session_id: &SessionId,
        pairings: &[PairedJoiner],
    ) -> Result<Vec<DeviceId>, ClientError> {
        let mut record = self.read_paired(session_id)?;
        let handed_over = now_unix_s();
        let mut added = Vec::new();
        for pairing in pairings {
            let device_id = DeviceId::of_joiner(&pairing.joiner_public_key());
            let known = record
                .devices
                .iter()
                .any(|entry| entry.device_id == device_id.to_string());
            if !known {
                record
                    .devices
                    .push(new_entry(device_id, pairing, Some(handed_over)));
                added.push(device_id);
            }
        }
        if !added.is_empty() {
            self.write_paired(session_id, &record)?;
        }
        Ok(added)
    }

    /// Lists a session's paired devices in the order they paired. A session
    /// without a file has none.
    pub fn paired_devices(&self, session_id: &SessionId) -> Result<Vec<PairedDevice>, ClientError> {
        let path = self.paired_path(session_id);
        let record = self.read_paired(session_id)?;
        record
            .devices
            .iter()
            .map(|entry| {
                entry_to_device(entry).map_err(|reason| ClientError::InvalidSessionFile {
                    path: path.clone(),
                    reason,
                })
            })
            .collect()
    }

    /// Removes a paired device from a session's file and returns whether it
    /// was there. The earlier file's content is overwritten with zeros.
    pub fn remove_paired_device(
        &self,
        session_id: &SessionId,
        device_id: &DeviceId,
    ) -> Result<bool, ClientError> {
        let mut record = self.read_paired(session_id)?;
        let before = record.devices.len();
        record
            .devices
            .retain(|entry| entry.device_id != device_id.to_string());
        if record.devices.len() == before {
            return Ok(false);
        }
        self.write_paired(session_id, &record)?;
        Ok(true)
    }

    /// Overwrites a session's paired device file with zeros and deletes it,
    /// when there is one.
    pub(super) fn shred_paired(&self, session_id: &SessionId) -> Result<(), ClientError> {
        let path = self.paired_path(session_id);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => overwrite_with_zeros(file, &path)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(ClientError::io("open paired device file", &path, err)),
        }
        std::fs::remove_file(&path).map_err(|err| ClientError::io("delete", &path, err))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent);
        }
        Ok(())
    }

    fn read_paired(&self, session_id: &SessionId) -> Result<PairedRecord, ClientError> {
        let path = self.paired_path(session_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PairedRecord {
                    format: PAIRED_FORMAT,
                    session_id: session_id.to_string(),
                    devices: Vec::new(),
                });
            }
            Err(err) => return Err(ClientError::io("read paired device file", &path, err)),
        };
        warn_if_readable_by_others(&path);
        let invalid = |reason: String| ClientError::InvalidSessionFile {
            path: path.clone(),
            reason,
        };
        let record: PairedRecord =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
        if record.format != PAIRED_FORMAT {
            return Err(invalid(format!(
                "format {} is not supported: this build reads format {PAIRED_FORMAT}",
                record.format
            )));
        }
        if record.session_id != session_id.to_string() {
            return Err(invalid(format!(
                "it holds the devices of session {}, not {session_id}",
                record.session_id
            )));
        }
        Ok(record)
    }

    fn write_paired(
        &self,
        session_id: &SessionId,
        record: &PairedRecord,
    ) -> Result<(), ClientError> {
        let dir = self.dir.join(PAIRED_DIR);
        create_private_dir(&dir)?;
        let path = self.paired_path(session_id);
        let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(record).map_err(|err| {
            ClientError::Internal(format!("failed to encode the paired device record: {err}"))
        })?);
        bytes.push(b'\n');
        // The rename frees the earlier file's blocks without clearing them,
        // so its content is overwritten through a handle kept open across it.
        let earlier = OpenOptions::new().write(true).open(&path).ok();
        write_private_file(&path, &bytes)?;
        if let Some(earlier) = earlier {
            overwrite_with_zeros(earlier, Path::new(&path))?;
        }
        Ok(())
    }
}

fn new_entry(
    device_id: DeviceId,
    pairing: &PairedJoiner,
    handed_over_unix_s: Option<u64>,
) -> PairedEntry {
    PairedEntry {
        device_id: device_id.to_string(),
        paired_unix_s: now_unix_s(),
        pairing: URL_SAFE_NO_PAD.encode(pairing.to_secret_bytes().as_slice()),
        handed_over_unix_s,
    }
}

fn entry_to_device(entry: &PairedEntry) -> Result<PairedDevice, String> {
    let device_id: DeviceId = entry
        .device_id
        .parse()
        .map_err(|err| format!("device id {:?}: {err}", entry.device_id))?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&entry.pairing)
            .map_err(|_| format!("the pairing of device {device_id} is not unpadded base64url"))?,
    );
    let state: &[u8; PAIRED_STATE_LEN] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "the pairing of device {device_id} is {} bytes, expected {PAIRED_STATE_LEN}",
            bytes.len()
        )
    })?;
    let pairing = PairedJoiner::from_secret_bytes(state)
        .map_err(|err| format!("the pairing of device {device_id}: {err}"))?;
    if DeviceId::of_joiner(&pairing.joiner_public_key()) != device_id {
        return Err(format!(
            "device id {device_id} does not match the public key of its pairing"
        ));
    }
    Ok(PairedDevice {
        device_id,
        paired_unix_s: entry.paired_unix_s,
        pairing,
        handed_over_unix_s: entry.handed_over_unix_s,
    })
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::pairing::{ClinicianPairing, JoinerPairing};

    use super::*;

    fn paired_joiner() -> PairedJoiner {
        let (joiner, commitment) = JoinerPairing::start();
        let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
        let (_, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
        clinician
            .receive_joiner_key(joiner_public)
            .unwrap()
            .confirm()
    }

    #[test]
    fn paired_devices_are_added_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = SessionId([0xab; 16]);
        assert!(store.paired_devices(&session).unwrap().is_empty());

        let first = paired_joiner();
        let second = paired_joiner();
        let first_id = store.add_paired_device(&session, &first).unwrap();
        let second_id = store.add_paired_device(&session, &second).unwrap();
        let listed = store.paired_devices(&session).unwrap();
        let ids: Vec<DeviceId> = listed.iter().map(|device| device.device_id).collect();
        assert_eq!(ids, [first_id, second_id]);
        assert_eq!(
            listed[0].pairing.to_secret_bytes().as_slice(),
            first.to_secret_bytes().as_slice()
        );

        assert!(store.remove_paired_device(&session, &first_id).unwrap());
        assert!(!store.remove_paired_device(&session, &first_id).unwrap());
        let ids: Vec<DeviceId> = store
            .paired_devices(&session)
            .unwrap()
            .iter()
            .map(|device| device.device_id)
            .collect();
        assert_eq!(ids, [second_id]);
    }

    #[cfg(unix)]
    #[test]
    fn paired_file_is_private_and_shredded() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = SessionId([0xcd; 16]);
        store.add_paired_device(&session, &paired_joiner()).unwrap();
        let path = store.paired_path(&session);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let witness = dir.path().join("witness");
        std::fs::hard_link(&path, &witness).unwrap();
        store.shred_paired(&session).unwrap();
        assert!(!path.exists());
        let left = std::fs::read(&witness).unwrap();
        assert!(!left.is_empty());
        assert!(left.iter().all(|&byte| byte == 0));
    }

    #[test]
    fn handed_over_devices_are_marked_and_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = SessionId([0x12; 16]);
        let local = paired_joiner();
        let local_id = store.add_paired_device(&session, &local).unwrap();
        let local_copy = PairedJoiner::from_secret_bytes(&local.to_secret_bytes()).unwrap();
        let handed = paired_joiner();

        let added = store
            .add_handed_over_devices(&session, &[local_copy, handed])
            .unwrap();
        assert_eq!(added.len(), 1);
        let listed = store.paired_devices(&session).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].device_id, local_id);
        assert_eq!(listed[0].handed_over_unix_s, None);
        assert_eq!(listed[1].device_id, added[0]);
        assert!(listed[1].handed_over_unix_s.is_some());

        let again = PairedJoiner::from_secret_bytes(&listed[1].pairing.to_secret_bytes()).unwrap();
        assert!(store
            .add_handed_over_devices(&session, &[again])
            .unwrap()
            .is_empty());
        assert_eq!(store.paired_devices(&session).unwrap().len(), 2);
    }

    #[test]
    fn file_without_hand_over_field_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = SessionId([0x34; 16]);
        store.add_paired_device(&session, &paired_joiner()).unwrap();
        let text = std::fs::read_to_string(store.paired_path(&session)).unwrap();
        assert!(!text.contains("handed_over_unix_s"), "{text}");
        assert_eq!(store.paired_devices(&session).unwrap().len(), 1);
    }

    #[test]
    fn edited_device_id_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = SessionId([0xef; 16]);
        let id = store.add_paired_device(&session, &paired_joiner()).unwrap();
        let path = store.paired_path(&session);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&id.to_string(), "0000000000000000")).unwrap();
        let message = store.paired_devices(&session).unwrap_err().to_string();
        assert!(message.contains("does not match"), "{message}");
    }
}

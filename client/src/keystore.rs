//! The device key store: one file per session holding its key and credentials.
//!
//! Layout of the store directory (`--state-dir`, else `SEALCAST_HOME`, else
//! the platform data directory joined with `sealcast`):
//!
//! | path | content |
//! | --- | --- |
//! | `sessions/<session id>.session` | JSON: session id, relay URL, CA certificate path, epoch, invite token, session key (unpadded base64url), its key epoch after a rotation, and on a clinician's second device the first device's endorsement of it |
//! | `paired/<session id>.paired` | JSON: the devices paired with the session, each with its device id and pairing secret, see [`paired`] |
//! | `current` | id of the session started last, so commands can omit `--session` |
//! | `devices/<host>_<port>.device` | JSON: the device key and sign-in of one relay, see [`crate::auth::credentials`] |
//! | `control/<session id>/` | lock, pid and request files of a running `sealcast publish`, see [`crate::control`] |
//!
//! On Unix the directories are mode 0700 and the files 0600, and files are
//! written to a temporary name and renamed, so a crash never leaves half a
//! file. Deleting a session overwrites its file with zeros before unlinking
//! it, which is the device's part of crypto-shredding.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::authorship::{Endorsement, PublisherKey};
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{InviteLink, SessionId, SessionKey};
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ClientError;
use crate::secret::SecretString;

pub mod paired;

pub use paired::PairedDevice;

const SESSIONS_DIR: &str = "sessions";
const CURRENT_FILE: &str = "current";
const SESSION_EXTENSION: &str = "session";
/// Format written by this build. Format 1 files also carried a
/// `publisher_token`, which is read and ignored.
const RECORD_FORMAT: u32 = 2;
/// Oldest format this build reads.
const OLDEST_RECORD_FORMAT: u32 = 1;

/// A session as the clinician device stores it.
#[derive(Clone)]
pub struct StoredSession {
    /// The session id the relay assigned.
    pub session_id: SessionId,
    /// Base URL of the relay, for example `https://relay.example:8443/`.
    pub relay: Url,
    /// PEM file of the CA that signs the relay's certificate, when not a public CA.
    pub ca_cert: Option<PathBuf>,
    /// History epoch the relay reported when the session was created.
    pub epoch: u64,
    /// Token that goes into invite links.
    pub invite_token: SecretString,
    /// The session key of the newest key epoch.
    pub key: SessionKey,
    /// Key epoch of `key`: 0 until the first rotation.
    pub key_epoch: u32,
    /// When the session was stored, in seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// On a device that took the session over from the device that started
    /// it: that device's endorsement of this device's identity key, which
    /// every stream this device signs carries. `None` on the first device.
    pub endorsement: Option<Endorsement>,
}

impl StoredSession {
    /// Returns the key followers check this session's streams with: the
    /// first device's key, which is `device`'s own on the first device.
    pub fn publisher_key(&self, device: &DeviceKey) -> PublisherKey {
        match &self.endorsement {
            Some(endorsement) => endorsement.endorser,
            None => PublisherKey::of_device(device),
        }
    }

    /// Builds the invite link for this session, with the key of the newest
    /// key epoch. Followers also need that epoch, which [`FollowInvite`]
    /// carries.
    ///
    /// [`FollowInvite`]: sealcast_protocol::FollowInvite
    pub fn invite_link(&self) -> InviteLink {
        InviteLink {
            relay: self.relay.clone(),
            token: self.invite_token.expose().to_string(),
            key: self.key.clone(),
        }
    }
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("session_id", &self.session_id)
            .field("relay", &self.relay.as_str())
            .field("ca_cert", &self.ca_cert)
            .field("epoch", &self.epoch)
            .field("key_epoch", &self.key_epoch)
            .field("created_unix_s", &self.created_unix_s)
            .field("endorsement", &self.endorsement)
            .finish_non_exhaustive()
    }
}

/// The on-disk form of a [`StoredSession`]. Its strings are zeroed on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SessionRecord {
    format: u32,
    session_id: String,
    relay: String,
    #[serde(default)]
    ca_cert: Option<String>,
    epoch: u64,
    /// Read from format 1 files and ignored: the device's sign-in now
    /// authorizes publishing and ending the session.
    #[serde(default, skip_serializing)]
    publisher_token: Option<String>,
    invite_token: String,
    key: String,
    /// Left out while 0, so that builds that predate key rotation still read
    /// the file. A build that predates it rejects a file with the field,
    /// because it would seal frames under the wrong epoch.
    #[serde(default, skip_serializing_if = "is_zero")]
    key_epoch: u32,
    created_unix_s: u64,
    /// The endorsing device's key and the endorsement, `32 || 100` bytes as
    /// unpadded base64url. A build that predates it rejects the file, which
    /// is right, because it would sign streams that followers cannot verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endorsement: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// A key store directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// Returns the default directory: the platform data directory joined with
    /// `sealcast`, or `None` when the platform has none.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::data_dir().map(|dir| dir.join("sealcast"))
    }

    /// Opens a key store, creating its directories with mode 0700 on Unix.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let store = KeyStore { dir: dir.into() };
        if let Some(parent) = store.dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| ClientError::io("create directory", parent, err))?;
        }
        create_private_dir(&store.dir)?;
        create_private_dir(&store.sessions_dir())?;
        Ok(store)
    }

    /// Returns the store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the path of a session's file.
    pub fn session_path(&self, session_id: &SessionId) -> PathBuf {
        self.sessions_dir()
            .join(format!("{session_id}.{SESSION_EXTENSION}"))
    }

    /// Writes a session's file, replacing any earlier file of the same session.
    pub fn save(&self, session: &StoredSession) -> Result<PathBuf, ClientError> {
        let ca_cert = match &session.ca_cert {
            Some(path) => Some(path.to_str().map(str::to_string).ok_or_else(|| {
                ClientError::CaCertificate {
                    path: path.clone(),
                    reason: "the path is not valid UTF-8: move the file to a plain path".into(),
                }
            })?),
            None => None,
        };
        let record = SessionRecord {
            format: RECORD_FORMAT,
            session_id: session.session_id.to_string(),
            relay: session.relay.to_string(),
            ca_cert,
            epoch: session.epoch,
            publisher_token: None,
            invite_token: session.invite_token.expose().to_string(),
            key: session.key.to_base64url(),
            key_epoch: session.key_epoch,
            created_unix_s: session.created_unix_s,
            endorsement: session.endorsement.as_ref().map(encode_endorsement),
        };
        let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(&record).map_err(|err| {
            ClientError::Internal(format!("failed to encode the session record: {err}"))
        })?);
        bytes.push(b'\n');

        let path = self.session_path(&session.session_id);
        write_private_file(&path, &bytes)?;
        Ok(path)
    }

    /// Reads a session's file.
    pub fn load(&self, session_id: &SessionId) -> Result<StoredSession, ClientError> {
        let path = self.session_path(session_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_stored(session_id));
            }
            Err(err) => return Err(ClientError::io("read session file", &path, err)),
        };
        warn_if_readable_by_others(&path);

        let invalid = |reason: String| ClientError::InvalidSessionFile {
            path: path.clone(),
            reason,
        };
        let record: SessionRecord =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
        let session = record_to_session(&record).map_err(invalid)?;
        if session.session_id != *session_id {
            return Err(invalid(format!(
                "it holds session {}, not {session_id}",
                session.session_id
            )));
        }
        Ok(session)
    }

    /// Makes a session the one commands use when `--session` is omitted.
    pub fn set_current(&self, session_id: &SessionId) -> Result<(), ClientError> {
        write_private_file(&self.current_path(), format!("{session_id}\n").as_bytes())
    }

    /// Returns the current session's id, if one is set.
    pub fn current(&self) -> Result<Option<SessionId>, ClientError> {
        let path = self.current_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(ClientError::io("read", &path, err)),
        };
        let id = text
            .trim()
            .parse()
            .map_err(|reason| ClientError::InvalidSessionFile { path, reason })?;
        Ok(Some(id))
    }

    /// Loads the named session, or the current one when `session_id` is `None`.
    pub fn resolve(&self, session_id: Option<&SessionId>) -> Result<StoredSession, ClientError> {
        match session_id {
            Some(id) => self.load(id),
            None => {
                let id = self.current()?.ok_or(ClientError::NoCurrentSession)?;
                self.load(&id)
            }
        }
    }

    /// Lists the ids of every stored session, sorted.
    pub fn list(&self) -> Result<Vec<SessionId>, ClientError> {
        let dir = self.sessions_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|err| ClientError::io("list directory", &dir, err))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|err| ClientError::io("list directory", &dir, err))?;
            let name = entry.file_name();
            let id = Path::new(&name)
                .file_stem()
                .filter(|_| Path::new(&name).extension() == Some(SESSION_EXTENSION.as_ref()))
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<SessionId>().ok());
            ids.extend(id);
        }
        ids.sort();
        Ok(ids)
    }

    /// Deletes a session's file and its paired device file after
    /// overwriting them with zeros, and clears the current session if it was
    /// this one.
    pub fn shred(&self, session_id: &SessionId) -> Result<(), ClientError> {
        let path = self.session_path(session_id);
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => overwrite_with_zeros(file, &path)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.not_stored(session_id));
            }
            Err(err) => return Err(ClientError::io("open session file", &path, err)),
        }
        std::fs::remove_file(&path).map_err(|err| ClientError::io("delete", &path, err))?;
        sync_dir(&self.sessions_dir());
        self.shred_paired(session_id)?;

        if self.current()? == Some(*session_id) {
            let current = self.current_path();
            std::fs::remove_file(&current)
                .map_err(|err| ClientError::io("delete", &current, err))?;
        }
        Ok(())
    }

    fn sessions_dir(&self) -> PathBuf {
        self.dir.join(SESSIONS_DIR)
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    fn not_stored(&self, session_id: &SessionId) -> ClientError {
        ClientError::SessionNotStored {
            session_id: session_id.to_string(),
            dir: self.dir.clone(),
        }
    }
}

/// Returns the current time in seconds since the Unix epoch.
pub fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn record_to_session(record: &SessionRecord) -> Result<StoredSession, String> {
    if !(OLDEST_RECORD_FORMAT..=RECORD_FORMAT).contains(&record.format) {
        return Err(format!(
            "format {} is not supported: this build reads formats \
             {OLDEST_RECORD_FORMAT} to {RECORD_FORMAT}",
            record.format
        ));
    }
    let session_id = record.session_id.parse::<SessionId>()?;
    let relay = Url::parse(&record.relay).map_err(|err| format!("relay URL: {err}"))?;

    let key_bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&record.key)
            .map_err(|_| "the key is not unpadded base64url".to_string())?,
    );
    let key_array: [u8; 32] = key_bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("the key is {} bytes, expected 32", key_bytes.len()))?;

    Ok(StoredSession {
        session_id,
        relay,
        ca_cert: record.ca_cert.as_ref().map(PathBuf::from),
        epoch: record.epoch,
        invite_token: SecretString::new(record.invite_token.clone()),
        key: SessionKey::from_bytes(key_array),
        key_epoch: record.key_epoch,
        created_unix_s: record.created_unix_s,
        endorsement: record
            .endorsement
            .as_deref()
            .map(decode_endorsement)
            .transpose()?,
    })
}

fn encode_endorsement(endorsement: &Endorsement) -> String {
    let mut bytes = endorsement.endorser.to_bytes().to_vec();
    bytes.extend_from_slice(&endorsement.to_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_endorsement(text: &str) -> Result<Endorsement, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "the endorsement is not unpadded base64url".to_string())?;
    if bytes.len() < 32 {
        return Err(format!(
            "the endorsement is {} bytes, expected 132",
            bytes.len()
        ));
    }
    let (endorser, endorsement) = bytes.split_at(32);
    let endorser: [u8; 32] = endorser
        .try_into()
        .map_err(|_| "the endorsing key is not 32 bytes".to_string())?;
    let endorser =
        PublisherKey::from_bytes(&endorser).map_err(|err| format!("the endorsing key: {err}"))?;
    Endorsement::from_bytes(endorser, endorsement).map_err(|err| format!("the endorsement: {err}"))
}

#[cfg(unix)]
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|err| ClientError::io("restrict permissions of", dir, err))
        }
        Err(err) => Err(ClientError::io("create directory", dir, err)),
    }
}

// NOTE: outside Unix the directory gets the platform's default permissions.
#[cfg(not(unix))]
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|err| ClientError::io("create directory", dir, err))
}

/// Writes a file readable only by its owner, through a temporary file and a rename.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);

    let write = || -> std::io::Result<()> {
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(err) = write() {
        let _ = std::fs::remove_file(&temporary);
        return Err(ClientError::io("write", &temporary, err));
    }
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        ClientError::io("rename into place", path, err)
    })?;

    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Overwrites a whole file with zeros and flushes it to disk.
///
/// NOTE: on copy-on-write file systems and flash storage, the old blocks can
/// survive an overwrite, so this lowers but does not remove the chance of
/// recovering the key from the disk.
pub(crate) fn overwrite_with_zeros(mut file: File, path: &Path) -> Result<(), ClientError> {
    let result = (|| -> std::io::Result<()> {
        let mut remaining = file.metadata()?.len();
        let zeros = [0u8; 4096];
        while remaining > 0 {
            let chunk = remaining.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..chunk])?;
            remaining -= chunk as u64;
        }
        file.sync_all()
    })();
    result.map_err(|err| ClientError::io("overwrite", path, err))
}

/// Flushes a directory entry change to disk, where the platform allows it.
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(err) = File::open(dir).and_then(|handle| handle.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %err, "directory sync failed");
    }
}

#[cfg(unix)]
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;

    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "key store file is accessible to other users: run chmod 600 on it"
            );
        }
    }
}

#[cfg(not(unix))]
pub(crate) fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredSession {
        StoredSession {
            session_id: SessionId([0xab; 16]),
            relay: Url::parse("https://relay.example:8443/").unwrap(),
            ca_cert: Some(PathBuf::from("/etc/sealcast/dev-cert.pem")),
            epoch: 3,
            invite_token: SecretString::from("invite-secret-token"),
            key: SessionKey::from_bytes([0x42; 32]),
            key_epoch: 0,
            created_unix_s: 1_700_000_000,
            endorsement: None,
        }
    }

    #[test]
    fn endorsement_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let first = DeviceKey::from_secret_bytes(&[1; 32]).unwrap();
        let second = DeviceKey::from_secret_bytes(&[2; 32]).unwrap();
        let mut session = sample();
        assert_eq!(
            session.publisher_key(&second),
            PublisherKey::of_device(&second)
        );
        session.endorsement = Some(Endorsement::sign(
            &first,
            &session.session_id,
            0,
            PublisherKey::of_device(&second),
        ));
        store.save(&session).unwrap();
        let loaded = store.load(&session.session_id).unwrap();
        assert_eq!(loaded.endorsement, session.endorsement);
        assert_eq!(
            loaded.publisher_key(&second),
            PublisherKey::of_device(&first)
        );
    }

    #[test]
    fn truncated_endorsement_is_rejected() {
        let first = DeviceKey::from_secret_bytes(&[1; 32]).unwrap();
        let second = DeviceKey::from_secret_bytes(&[2; 32]).unwrap();
        let endorsement = Endorsement::sign(
            &first,
            &SessionId([1; 16]),
            0,
            PublisherKey::of_device(&second),
        );
        let text = encode_endorsement(&endorsement);
        assert!(decode_endorsement(&text).is_ok());
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes.pop();
        assert!(decode_endorsement(&URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        assert!(decode_endorsement(&URL_SAFE_NO_PAD.encode([0u8; 10])).is_err());
    }

    #[test]
    fn key_epoch_is_stored_only_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let mut session = sample();
        let path = store.save(&session).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("key_epoch"), "{text}");
        assert_eq!(store.load(&session.session_id).unwrap().key_epoch, 0);

        session.key_epoch = 2;
        session.key = SessionKey::from_bytes([0x43; 32]);
        store.save(&session).unwrap();
        let loaded = store.load(&session.session_id).unwrap();
        assert_eq!(loaded.key_epoch, 2);
        assert_eq!(loaded.key.expose_bytes(), &[0x43; 32]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = sample();
        store.save(&session).unwrap();
        let loaded = store.load(&session.session_id).unwrap();
        assert_eq!(loaded.session_id, session.session_id);
        assert_eq!(loaded.relay, session.relay);
        assert_eq!(loaded.ca_cert, session.ca_cert);
        assert_eq!(loaded.epoch, 3);
        assert_eq!(loaded.invite_token, session.invite_token);
        assert_eq!(loaded.key.expose_bytes(), session.key.expose_bytes());
        assert_eq!(store.list().unwrap(), vec![session.session_id]);
    }

    #[cfg(unix)]
    #[test]
    fn files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        let session = sample();
        let path = store.save(&session).unwrap();
        store.set_current(&session.session_id).unwrap();

        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&store.current_path()), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.sessions_dir()), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn open_tightens_an_existing_directory() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        KeyStore::open(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn current_pointer_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.resolve(None).unwrap_err(),
            ClientError::NoCurrentSession
        ));
        let session = sample();
        store.save(&session).unwrap();
        store.set_current(&session.session_id).unwrap();
        assert_eq!(store.resolve(None).unwrap().session_id, session.session_id);
    }

    #[test]
    fn shred_zeroes_then_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let session = sample();
        let path = store.save(&session).unwrap();
        store.set_current(&session.session_id).unwrap();

        // Keep a second link to the file's data, so the content after the
        // overwrite can be read once the session's name is gone.
        let witness = dir.path().join("witness");
        std::fs::hard_link(&path, &witness).unwrap();
        let length = std::fs::metadata(&path).unwrap().len();

        store.shred(&session.session_id).unwrap();
        assert!(!path.exists());
        assert_eq!(store.current().unwrap(), None);
        let left = std::fs::read(&witness).unwrap();
        assert_eq!(left.len() as u64, length);
        assert!(left.iter().all(|&byte| byte == 0));
        assert!(matches!(
            store.load(&session.session_id).unwrap_err(),
            ClientError::SessionNotStored { .. }
        ));
    }

    #[test]
    fn shred_keeps_another_current_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let first = sample();
        let mut second = sample();
        second.session_id = SessionId([0xcd; 16]);
        store.save(&first).unwrap();
        store.save(&second).unwrap();
        store.set_current(&second.session_id).unwrap();
        store.shred(&first.session_id).unwrap();
        assert_eq!(store.current().unwrap(), Some(second.session_id));
    }

    #[test]
    fn missing_session_names_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let message = store.load(&SessionId([1; 16])).unwrap_err().to_string();
        assert!(message.contains("is not in the key store"), "{message}");
    }

    #[test]
    fn damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let session = sample();
        let path = store.save(&session).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&session.key.to_base64url(), "short")).unwrap();
        let message = store.load(&session.session_id).unwrap_err().to_string();
        assert!(message.contains("the key is"), "{message}");
        assert!(!message.contains("short"), "{message}");
    }

    #[test]
    fn format_1_file_with_publisher_token_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let session = sample();
        let old = serde_json::json!({
            "format": 1,
            "session_id": session.session_id.to_string(),
            "relay": "https://relay.example:8443/",
            "ca_cert": null,
            "epoch": 3,
            "publisher_token": "publisher-secret-token",
            "invite_token": "invite-secret-token",
            "key": session.key.to_base64url(),
            "created_unix_s": 1_700_000_000u64,
        });
        let path = store.session_path(&session.session_id);
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();

        let loaded = store.load(&session.session_id).unwrap();
        assert_eq!(loaded.invite_token, session.invite_token);
        assert_eq!(loaded.key.expose_bytes(), session.key.expose_bytes());

        // Saving again writes the current format without the old token.
        store.save(&loaded).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("publisher_token"), "{text}");
        assert!(text.contains("\"format\": 2"), "{text}");
    }

    #[test]
    fn newer_format_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let session = sample();
        let path = store.save(&session).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"format\": 2", "\"format\": 9")).unwrap();
        let message = store.load(&session.session_id).unwrap_err().to_string();
        assert!(message.contains("format 9 is not supported"), "{message}");
    }

    #[test]
    fn debug_hides_tokens_and_key() {
        let session = sample();
        let text = format!("{session:?}");
        assert!(!text.contains("invite-secret-token"), "{text}");
        assert!(!text.contains(&session.key.to_base64url()), "{text}");
        assert!(text.contains("abababab"), "{text}");
    }
}

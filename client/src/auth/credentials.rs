//! Device credentials in the key store: one file per relay with the device
//! key and, once signed in, the device id, the user, the access token with
//! its expiry and the refresh token.
//!
//! The file is `devices/<host>_<port>.device` in the key store directory,
//! written like session files: mode 0600 on Unix, through a temporary file
//! and a rename. The device key outlives a sign-out, so signing in again
//! from the same device reuses it and the relay recognizes the device by its key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_protocol::auth::{TokenResponse, UserInfo};
use sealcast_protocol::dpop::DeviceKey;
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ClientError;
use crate::keystore::{
    create_private_dir, now_unix_s, overwrite_with_zeros, sync_dir, warn_if_readable_by_others,
    write_private_file, KeyStore,
};
use crate::secret::SecretString;

const DEVICES_DIR: &str = "devices";
const DEVICE_EXTENSION: &str = "device";
const RECORD_FORMAT: u32 = 1;

/// A device's key and sign-in for one relay.
pub struct DeviceCredentials {
    /// Base URL of the relay, for example `https://relay.example:8443/`.
    pub relay: Url,
    /// PEM file of the CA that signs the relay's certificate, when not a public CA.
    pub ca_cert: Option<PathBuf>,
    /// The device key that proves possession of the tokens.
    pub key: Arc<DeviceKey>,
    /// Name the device gave the relay when it signed in.
    pub device_name: Option<String>,
    /// The current sign-in, or `None` before `sealcast login` and after logout.
    pub sign_in: Option<SignIn>,
}

impl DeviceCredentials {
    /// Makes credentials with a new device key and no sign-in.
    pub fn generate(relay: Url, ca_cert: Option<PathBuf>) -> Result<Self, ClientError> {
        let key = DeviceKey::generate()
            .map_err(|err| ClientError::Internal(format!("failed to make a device key: {err}")))?;
        Ok(DeviceCredentials {
            relay,
            ca_cert,
            key: Arc::new(key),
            device_name: None,
            sign_in: None,
        })
    }
}

impl fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCredentials")
            .field("relay", &self.relay.as_str())
            .field("ca_cert", &self.ca_cert)
            .field("key", &self.key)
            .field("device_name", &self.device_name)
            .field("sign_in", &self.sign_in)
            .finish()
    }
}

/// The tokens of a device sign-in.
#[derive(Clone)]
pub struct SignIn {
    /// The device id the relay assigned.
    pub device_id: String,
    /// The signed-in user.
    pub user: UserInfo,
    /// JWT access token, bound to the device key.
    pub access_token: SecretString,
    /// When the access token expires, in seconds since the Unix epoch.
    pub access_expires_unix_s: u64,
    /// Single-use refresh token.
    pub refresh_token: SecretString,
}

impl SignIn {
    /// Builds a sign-in from a token response received at `now_unix_s`.
    pub fn from_tokens(tokens: &TokenResponse, now_unix_s: u64) -> Self {
        SignIn {
            device_id: tokens.device_id.clone(),
            user: tokens.user.clone(),
            access_token: SecretString::new(tokens.access_token.clone()),
            access_expires_unix_s: now_unix_s.saturating_add(tokens.expires_in),
            refresh_token: SecretString::new(tokens.refresh_token.clone()),
        }
    }

    /// Returns the seconds the access token has left at `now_unix_s`, 0 once expired.
    pub fn access_seconds_left(&self, now_unix_s: u64) -> u64 {
        self.access_expires_unix_s.saturating_sub(now_unix_s)
    }
}

impl fmt::Debug for SignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignIn")
            .field("device_id", &self.device_id)
            .field("user", &self.user)
            .field("access_expires_unix_s", &self.access_expires_unix_s)
            .finish_non_exhaustive()
    }
}

/// The on-disk form of [`DeviceCredentials`]. Its strings are zeroed on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct DeviceRecord {
    format: u32,
    relay: String,
    #[serde(default)]
    ca_cert: Option<String>,
    /// The 32-byte Ed25519 secret, unpadded base64url.
    device_key: String,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    sign_in: Option<SignInRecord>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct SignInRecord {
    device_id: String,
    #[zeroize(skip)]
    user: UserInfo,
    access_token: String,
    access_expires_unix_s: u64,
    refresh_token: String,
}

impl KeyStore {
    /// Returns the path of the credentials file for `relay`.
    pub fn device_path(&self, relay: &Url) -> PathBuf {
        self.dir()
            .join(DEVICES_DIR)
            .join(format!("{}.{DEVICE_EXTENSION}", relay_file_stem(relay)))
    }

    /// Writes the credentials of a relay, replacing the earlier file.
    pub fn save_device(&self, credentials: &DeviceCredentials) -> Result<PathBuf, ClientError> {
        create_private_dir(&self.dir().join(DEVICES_DIR))?;
        let record = credentials_to_record(credentials)?;
        let mut bytes = Zeroizing::new(serde_json::to_vec_pretty(&record).map_err(|err| {
            ClientError::Internal(format!("failed to encode the device credentials: {err}"))
        })?);
        bytes.push(b'\n');

        let path = self.device_path(&credentials.relay);
        write_private_file(&path, &bytes)?;
        Ok(path)
    }

    /// Reads the credentials of a relay, or `None` when this device has none.
    pub fn load_device(&self, relay: &Url) -> Result<Option<DeviceCredentials>, ClientError> {
        let path = self.device_path(relay);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(ClientError::io("read device credentials", &path, err)),
        };
        warn_if_readable_by_others(&path);

        let invalid = |reason: String| ClientError::InvalidDeviceFile {
            path: path.clone(),
            reason,
        };
        let record: DeviceRecord =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.to_string()))?;
        let credentials = record_to_credentials(&record).map_err(invalid)?;
        if credentials.relay != *relay {
            return Err(invalid(format!(
                "it holds the credentials of {}, not {relay}",
                credentials.relay
            )));
        }
        Ok(Some(credentials))
    }

    /// Returns the relays this device is signed in to, in URL order. A
    /// credentials file that cannot be read is skipped with a warning,
    /// because it names no relay this device can use.
    pub fn signed_in_relays(&self) -> Result<Vec<Url>, ClientError> {
        let dir = self.dir().join(DEVICES_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(ClientError::io("list directory", &dir, err)),
        };
        let mut relays = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|err| ClientError::io("list directory", &dir, err))?
                .path();
            if path.extension().and_then(|extension| extension.to_str()) != Some(DEVICE_EXTENSION) {
                continue;
            }
            let record = std::fs::read(&path)
                .ok()
                .map(Zeroizing::new)
                .and_then(|bytes| serde_json::from_slice::<DeviceRecord>(&bytes).ok())
                .and_then(|record| record_to_credentials(&record).ok());
            match record {
                Some(credentials) if credentials.sign_in.is_some() => {
                    relays.push(credentials.relay);
                }
                Some(_) => {}
                None => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable device credentials file");
                }
            }
        }
        relays.sort();
        Ok(relays)
    }

    /// Reads the credentials of a relay, or makes a new device key for it.
    pub fn load_or_generate_device(
        &self,
        relay: &Url,
        ca_cert: Option<PathBuf>,
    ) -> Result<DeviceCredentials, ClientError> {
        match self.load_device(relay)? {
            Some(mut credentials) => {
                if ca_cert.is_some() {
                    credentials.ca_cert = ca_cert;
                }
                Ok(credentials)
            }
            None => DeviceCredentials::generate(relay.clone(), ca_cert),
        }
    }

    /// Deletes the credentials of a relay, device key included, after
    /// overwriting the file with zeros. Returns whether there was a file.
    pub fn delete_device(&self, relay: &Url) -> Result<bool, ClientError> {
        let path = self.device_path(relay);
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => overwrite_with_zeros(file, &path)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(ClientError::io("open device credentials", &path, err)),
        }
        std::fs::remove_file(&path).map_err(|err| ClientError::io("delete", &path, err))?;
        if let Some(parent) = path.parent() {
            sync_dir(parent);
        }
        Ok(true)
    }

    /// Stores the tokens of a new sign-in or a refresh in the relay's
    /// credentials, and returns the sign-in. The response's copies of the
    /// tokens are zeroed.
    pub fn store_tokens(
        &self,
        credentials: &mut DeviceCredentials,
        mut tokens: TokenResponse,
    ) -> Result<SignIn, ClientError> {
        let sign_in = SignIn::from_tokens(&tokens, now_unix_s());
        tokens.access_token.zeroize();
        tokens.refresh_token.zeroize();
        credentials.sign_in = Some(sign_in.clone());
        self.save_device(credentials)?;
        Ok(sign_in)
    }
}

/// Returns a file name for a relay: its host and port, with every character
/// other than ASCII letters, digits, `.` and `-` replaced by `_`.
fn relay_file_stem(relay: &Url) -> String {
    let host = relay.host_str().unwrap_or("relay");
    let port = relay.port_or_known_default().unwrap_or(443);
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}_{port}")
}

fn credentials_to_record(credentials: &DeviceCredentials) -> Result<DeviceRecord, ClientError> {
    let ca_cert = match &credentials.ca_cert {
        Some(path) => Some(path_text(path)?),
        None => None,
    };
    let sign_in = credentials.sign_in.as_ref().map(|sign_in| SignInRecord {
        device_id: sign_in.device_id.clone(),
        user: sign_in.user.clone(),
        access_token: sign_in.access_token.expose().to_string(),
        access_expires_unix_s: sign_in.access_expires_unix_s,
        refresh_token: sign_in.refresh_token.expose().to_string(),
    });
    Ok(DeviceRecord {
        format: RECORD_FORMAT,
        relay: credentials.relay.to_string(),
        ca_cert,
        device_key: URL_SAFE_NO_PAD.encode(*credentials.key.secret_bytes()),
        device_name: credentials.device_name.clone(),
        sign_in,
    })
}

fn path_text(path: &Path) -> Result<String, ClientError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| ClientError::CaCertificate {
            path: path.to_path_buf(),
            reason: "the path is not valid UTF-8: move the file to a plain path".into(),
        })
}

fn record_to_credentials(record: &DeviceRecord) -> Result<DeviceCredentials, String> {
    if record.format != RECORD_FORMAT {
        return Err(format!(
            "format {} is not supported: this build reads format {RECORD_FORMAT}",
            record.format
        ));
    }
    let relay = Url::parse(&record.relay).map_err(|err| format!("relay URL: {err}"))?;

    let secret = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&record.device_key)
            .map_err(|_| "the device key is not unpadded base64url".to_string())?,
    );
    let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
        secret
            .as_slice()
            .try_into()
            .map_err(|_| format!("the device key is {} bytes, expected 32", secret.len()))?,
    );
    let key = DeviceKey::from_secret_bytes(&secret)
        .map_err(|err| format!("the device key is invalid: {err}"))?;

    let sign_in = record.sign_in.as_ref().map(|sign_in| SignIn {
        device_id: sign_in.device_id.clone(),
        user: sign_in.user.clone(),
        access_token: SecretString::new(sign_in.access_token.clone()),
        access_expires_unix_s: sign_in.access_expires_unix_s,
        refresh_token: SecretString::new(sign_in.refresh_token.clone()),
    });
    Ok(DeviceCredentials {
        relay,
        ca_cert: record.ca_cert.as_ref().map(PathBuf::from),
        key: Arc::new(key),
        device_name: record.device_name.clone(),
        sign_in,
    })
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::auth::Role;

    use super::*;

    fn relay() -> Url {
        Url::parse("https://relay.example:8443/").unwrap()
    }

    fn tokens() -> TokenResponse {
        TokenResponse {
            access_token: "access-secret-token".into(),
            token_type: "DPoP".into(),
            expires_in: 900,
            refresh_token: "refresh-secret-token".into(),
            device_id: "dev-1".into(),
            user: UserInfo {
                user_id: "user-1".into(),
                email: "clinician@clinic.example".into(),
                role: Role::Clinician,
                organization_id: "org-1".into(),
                totp_enabled: false,
            },
        }
    }

    fn signed_in(store: &KeyStore) -> DeviceCredentials {
        let mut credentials =
            DeviceCredentials::generate(relay(), Some(PathBuf::from("/etc/dev-cert.pem"))).unwrap();
        credentials.device_name = Some("front desk".into());
        store.store_tokens(&mut credentials, tokens()).unwrap();
        credentials
    }

    #[test]
    fn device_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let saved = signed_in(&store);

        let loaded = store.load_device(&relay()).unwrap().unwrap();
        assert_eq!(loaded.relay, saved.relay);
        assert_eq!(loaded.ca_cert, saved.ca_cert);
        assert_eq!(loaded.key.thumbprint(), saved.key.thumbprint());
        assert_eq!(loaded.device_name.as_deref(), Some("front desk"));
        let sign_in = loaded.sign_in.unwrap();
        assert_eq!(sign_in.device_id, "dev-1");
        assert_eq!(sign_in.user.email, "clinician@clinic.example");
        assert_eq!(sign_in.access_token.expose(), "access-secret-token");
        assert_eq!(sign_in.refresh_token.expose(), "refresh-secret-token");
        assert!(sign_in.access_seconds_left(now_unix_s()) > 890);
    }

    #[test]
    fn signed_in_relays_skip_signed_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.signed_in_relays().unwrap().is_empty());
        signed_in(&store);
        let other = Url::parse("https://relay.example:9443/").unwrap();
        let signed_out = DeviceCredentials::generate(other, None).unwrap();
        store.save_device(&signed_out).unwrap();
        assert_eq!(store.signed_in_relays().unwrap(), vec![relay()]);
    }

    #[test]
    fn missing_device_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        assert!(store.load_device(&relay()).unwrap().is_none());
        assert!(!store.delete_device(&relay()).unwrap());
    }

    #[test]
    fn each_relay_has_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        signed_in(&store);
        let other = Url::parse("https://relay.example:9443/").unwrap();
        assert!(store.load_device(&other).unwrap().is_none());
        let ipv6 = Url::parse("https://[::1]:8443/").unwrap();
        assert_eq!(
            store.device_path(&ipv6).file_name().unwrap(),
            "___1__8443.device"
        );
    }

    #[cfg(unix)]
    #[test]
    fn device_file_is_private() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        signed_in(&store);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.device_path(&relay())), 0o600);
        assert_eq!(mode(&dir.path().join(DEVICES_DIR)), 0o700);
    }

    #[test]
    fn save_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let mut credentials = signed_in(&store);
        let path = store.device_path(&relay());
        let witness = dir.path().join("witness");
        std::fs::hard_link(&path, &witness).unwrap();

        let mut rotated = tokens();
        rotated.refresh_token = "rotated-refresh-token".into();
        store.store_tokens(&mut credentials, rotated).unwrap();

        // The rename leaves the old inode untouched and puts a new file in place.
        let old = std::fs::read_to_string(&witness).unwrap();
        assert!(old.contains("refresh-secret-token"), "{old}");
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("rotated-refresh-token"), "{new}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(DEVICES_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn debug_hides_key_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let credentials = signed_in(&store);
        let text = format!("{credentials:?}");
        let secret = URL_SAFE_NO_PAD.encode(*credentials.key.secret_bytes());
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains("access-secret-token"), "{text}");
        assert!(!text.contains("refresh-secret-token"), "{text}");
        assert!(text.contains("dev-1"), "{text}");
    }

    #[test]
    fn damaged_device_file_is_reported_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let credentials = signed_in(&store);
        let path = store.device_path(&relay());
        let secret = URL_SAFE_NO_PAD.encode(*credentials.key.secret_bytes());
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(&secret, "c2hvcnQ")).unwrap();

        let err = store.load_device(&relay()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("the device key is 5 bytes"), "{message}");
        assert!(message.contains("sealcast login"), "{message}");
        assert!(!message.contains("refresh-secret-token"), "{message}");
    }

    #[test]
    fn delete_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        signed_in(&store);
        assert!(store.delete_device(&relay()).unwrap());
        assert!(store.load_device(&relay()).unwrap().is_none());
    }

    #[test]
    fn reuse_keeps_the_device_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let first = signed_in(&store);
        let again = store.load_or_generate_device(&relay(), None).unwrap();
        assert_eq!(again.key.thumbprint(), first.key.thumbprint());
        assert_eq!(again.ca_cert, first.ca_cert);
    }
}

//! The key-encryption key (KEK): where it comes from, its text form and its
//! fingerprint.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::AtRestError;

/// Environment variable that contains the key itself.
pub const KEY_ENV: &str = "SEALCAST_AT_REST_KEY";

/// Flag that names a file holding the key.
pub const KEY_FILE_FLAG: &str = "--at-rest-key-file";

/// File name of the development key in the data directory.
pub const DEV_KEY_FILE: &str = "at-rest-dev.key";

/// Bytes of a key-encryption key (AES-256).
pub const KEY_BYTES: usize = 32;

/// HKDF `info` of the fingerprint, so that it is independent of every other
/// use of the key.
const FINGERPRINT_INFO: &[u8] = b"sealcast/at-rest/v1/kek-fingerprint";

/// A 256-bit key-encryption key. It wraps the database's data key and
/// nothing else. Zeroized on drop and never printed.
#[derive(Clone)]
pub struct KeyEncryptionKey(Zeroizing<[u8; KEY_BYTES]>);

impl KeyEncryptionKey {
    /// Makes a random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
        KeyEncryptionKey(key)
    }

    /// Parses the text form: 64 hex digits, or standard base64 of 32 bytes.
    /// Surrounding whitespace, such as a final newline, is ignored. `origin`
    /// names the flag or variable in the error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, AtRestError> {
        let text = text.trim();
        let invalid = || AtRestError::InvalidKey {
            origin: origin.to_owned(),
        };
        let bytes = if text.len() == 2 * KEY_BYTES {
            Zeroizing::new(hex::decode(text).map_err(|_| invalid())?)
        } else {
            Zeroizing::new(STANDARD.decode(text).map_err(|_| invalid())?)
        };
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        if bytes.len() != KEY_BYTES {
            return Err(invalid());
        }
        key.copy_from_slice(&bytes);
        Ok(KeyEncryptionKey(key))
    }

    /// Returns the text form written to key files: 64 lower-case hex digits
    /// and a newline.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(hex::encode(self.0.as_slice()));
        text.push('\n');
        text
    }

    /// Returns the key's fingerprint: 16 bytes derived from the key with
    /// HKDF-SHA-256. It identifies the key without revealing it.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = [0u8; 16];
        // 16 bytes is far below HKDF-SHA-256's output limit of 8160 bytes.
        if Hkdf::<Sha256>::new(None, self.0.as_slice())
            .expand(FINGERPRINT_INFO, &mut out)
            .is_err()
        {
            unreachable!("HKDF output length is within its limit");
        }
        Fingerprint(out)
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// Writes the key to a new file with mode 0600. Fails if the file exists,
    /// so that a key is never overwritten.
    pub fn write_new_file(&self, path: &Path) -> Result<(), AtRestError> {
        let error = |source| AtRestError::KeyFileWrite {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(error)?;
        file.write_all(self.to_text().as_bytes()).map_err(error)?;
        file.sync_all().map_err(error)
    }

    /// Writes the key to `path` unless a file is there, returning whether it
    /// did. The key is written to a temporary file first and linked into
    /// place, so a process that finds `path` never reads a partial key.
    pub(super) fn publish_new_file(&self, path: &Path) -> Result<bool, AtRestError> {
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let temporary = path.with_extension(format!("tmp-{}", hex::encode(suffix)));
        self.write_new_file(&temporary)?;
        let linked = fs::hard_link(&temporary, path);
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(AtRestError::KeyFileWrite {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Reads a key file, warning when other users may read it.
    pub fn read_file(path: &Path) -> Result<Self, AtRestError> {
        let error = |source| AtRestError::KeyFileRead {
            path: path.to_path_buf(),
            source,
        };
        let mode = fs::metadata(path).map_err(error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the at-rest key file is readable by other users: chmod 600 it"
            );
        }
        let mut text = fs::read_to_string(path).map_err(error)?;
        let key = KeyEncryptionKey::parse(&text, &format!("key file {}", path.display()));
        text.zeroize();
        key
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey([redacted])")
    }
}

/// A key-encryption key's fingerprint, stored beside the wrapped data key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub(super) [u8; 16]);

impl Fingerprint {
    pub(super) fn from_stored(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Fingerprint)
    }

    pub(super) fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Source of a relay's key-encryption key.
#[derive(Clone, Debug, Default)]
pub enum KeySource {
    /// A file named by `--at-rest-key-file`.
    File(PathBuf),
    /// The key itself, from `SEALCAST_AT_REST_KEY`.
    Environment(KeyEncryptionKey),
    /// Neither was given: the development key file in the data directory,
    /// made when the database has no data key yet.
    #[default]
    Development,
}

impl KeySource {
    /// Picks the source from the flag's value and `SEALCAST_AT_REST_KEY`.
    /// Setting both is an error, because it is unclear which one is meant.
    pub fn from_flag_and_env(key_file: Option<PathBuf>) -> Result<Self, AtRestError> {
        let from_env = std::env::var(KEY_ENV).ok().map(Zeroizing::new);
        match (key_file, from_env) {
            (Some(_), Some(_)) => Err(AtRestError::TwoSources),
            (Some(path), None) => Ok(KeySource::File(path)),
            (None, Some(text)) => Ok(KeySource::Environment(KeyEncryptionKey::parse(
                &text, KEY_ENV,
            )?)),
            (None, None) => Ok(KeySource::Development),
        }
    }

    /// Names the source in messages.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            KeySource::File(path) => format!("{KEY_FILE_FLAG} {}", path.display()),
            KeySource::Environment(_) => KEY_ENV.to_owned(),
            KeySource::Development => {
                format!(
                    "development key file {}",
                    data_dir.join(DEV_KEY_FILE).display()
                )
            }
        }
    }

    /// Loads the key for a database whose data key is already wrapped by the
    /// key with fingerprint `expected`. The development source never makes a
    /// new key here, because a new key could not unwrap the stored data key.
    pub(super) fn load_existing(
        &self,
        data_dir: &Path,
        expected: Fingerprint,
    ) -> Result<KeyEncryptionKey, AtRestError> {
        let key = match self {
            KeySource::File(path) => KeyEncryptionKey::read_file(path)?,
            KeySource::Environment(key) => key.clone(),
            KeySource::Development => {
                let path = data_dir.join(DEV_KEY_FILE);
                if !path.exists() {
                    return Err(AtRestError::MissingKey {
                        data_dir: data_dir.to_path_buf(),
                        expected,
                    });
                }
                KeyEncryptionKey::read_file(&path)?
            }
        };
        let given = key.fingerprint();
        if given != expected {
            return Err(AtRestError::WrongKey {
                origin: self.describe(data_dir),
                given,
                expected,
            });
        }
        Ok(key)
    }

    /// Loads the key for a database without a data key yet. The development
    /// source makes its key file when it is missing.
    pub(super) fn load_or_create(&self, data_dir: &Path) -> Result<KeyEncryptionKey, AtRestError> {
        match self {
            KeySource::File(path) => KeyEncryptionKey::read_file(path),
            KeySource::Environment(key) => Ok(key.clone()),
            KeySource::Development => {
                let path = data_dir.join(DEV_KEY_FILE);
                if path.exists() {
                    return KeyEncryptionKey::read_file(&path);
                }
                let key = KeyEncryptionKey::generate();
                if !key.publish_new_file(&path)? {
                    // Another relay node on this data directory made it first.
                    return KeyEncryptionKey::read_file(&path);
                }
                tracing::warn!(
                    path = %path.display(),
                    "made a development at-rest key beside the database: pass {KEY_FILE_FLAG} or set {KEY_ENV} in production"
                );
                Ok(key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base64() {
        let key = KeyEncryptionKey::generate();
        let hex_text = hex::encode(key.bytes());
        let base64_text = STANDARD.encode(key.bytes());
        let from_hex = KeyEncryptionKey::parse(&format!("{hex_text}\n"), "test").unwrap();
        let from_base64 = KeyEncryptionKey::parse(&base64_text, "test").unwrap();
        assert_eq!(from_hex.bytes(), key.bytes());
        assert_eq!(from_base64.bytes(), key.bytes());
    }

    #[test]
    fn rejects_short_and_malformed_keys() {
        for text in ["", "00", &"0".repeat(63), &"z".repeat(64), "not base64!"] {
            let error = KeyEncryptionKey::parse(text, KEY_ENV).unwrap_err();
            assert!(error.to_string().contains(KEY_ENV), "{text:?} gave {error}");
        }
        let short = STANDARD.encode([1u8; 16]);
        assert!(KeyEncryptionKey::parse(&short, "test").is_err());
    }

    #[test]
    fn fingerprint_differs_per_key() {
        let first = KeyEncryptionKey::generate();
        let second = KeyEncryptionKey::generate();
        assert_eq!(first.fingerprint(), first.clone().fingerprint());
        assert_ne!(first.fingerprint(), second.fingerprint());
        assert_eq!(first.fingerprint().to_string().len(), 32);
    }

    #[test]
    fn key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let key = KeyEncryptionKey::generate();
        key.write_new_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(KeyEncryptionKey::generate().write_new_file(&path).is_err());
        assert_eq!(
            KeyEncryptionKey::read_file(&path).unwrap().bytes(),
            key.bytes()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = KeyEncryptionKey::parse(&"ab".repeat(32), "test").unwrap();
        assert_eq!(format!("{key:?}"), "KeyEncryptionKey([redacted])");
        let source = KeySource::Environment(key);
        assert_eq!(
            format!("{source:?}"),
            "Environment(KeyEncryptionKey([redacted]))"
        );
    }
}

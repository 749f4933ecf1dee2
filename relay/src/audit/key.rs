//! The relay's Ed25519 audit key, which signs checkpoints and retention
//! anchors.
//!
//! The private key is a file in the data directory, [`PRIVATE_KEY_FILE`],
//! holding the 32-byte seed as hex, mode 0600. The public key is beside it in
//! [`PUBLIC_KEY_FILE`], as hex, so that operators can copy it elsewhere and
//! verify exports against it. The key is kept out of `relay.db` so that a
//! copy of the database alone cannot be re-signed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::entry::{Anchor, Checkpoint, Stream, HASH_LEN};
use super::AuditError;

/// File name of the private audit key in the data directory.
pub const PRIVATE_KEY_FILE: &str = "audit-signing.key";

/// File name of the public audit key in the data directory.
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";

/// The audit signing key. `ed25519_dalek` zeroizes the key on drop.
pub(crate) struct AuditKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field(
                "public_key",
                &hex::encode(self.signing.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// Loads the key from `data_dir`, or makes and stores one when there is
    /// none. Two processes that start at once end up with the same key: the
    /// file is linked into place only if no other process did so first.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<AuditKey, AuditError> {
        let path = data_dir.join(PRIVATE_KEY_FILE);
        match Self::load(&path) {
            Err(AuditError::KeyFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            }
            loaded => return loaded.and_then(|key| key.write_public(data_dir).map(|()| key)),
        }
        let key = AuditKey {
            signing: generate_signing_key(),
        };
        key.store(&path)?;
        tracing::info!(path = %path.display(), "audit signing key created");
        // Another process may have stored its key first: use the stored one.
        let key = Self::load(&path)?;
        key.write_public(data_dir)?;
        Ok(key)
    }

    /// Returns the public key.
    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs a checkpoint of `stream` at entry `seq` with hash `hash`.
    pub(crate) fn checkpoint(
        &self,
        stream: Stream,
        seq: u64,
        hash: [u8; HASH_LEN],
        created_at: i64,
    ) -> Checkpoint {
        let message = Checkpoint::signed_bytes(stream, seq, &hash, created_at);
        Checkpoint {
            stream,
            seq,
            hash,
            created_at,
            public_key: self.verifying_key().to_bytes(),
            signature: self.signing.sign(&message).to_bytes(),
        }
    }

    /// Signs an anchor recording that entries up to `seq` were removed.
    pub(crate) fn anchor(
        &self,
        stream: Stream,
        seq: u64,
        hash: [u8; HASH_LEN],
        removed: u64,
        created_at: i64,
    ) -> Anchor {
        let message = Anchor::signed_bytes(stream, seq, &hash, removed, created_at);
        Anchor {
            stream,
            seq,
            hash,
            removed,
            created_at,
            public_key: self.verifying_key().to_bytes(),
            signature: self.signing.sign(&message).to_bytes(),
        }
    }

    fn load(path: &Path) -> Result<AuditKey, AuditError> {
        let key_error = |source| AuditError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let text = Zeroizing::new(fs::read_to_string(path).map_err(key_error)?);
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), seed.as_mut_slice()).map_err(|_| {
            key_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected 32 bytes as hex",
            ))
        })?;
        Ok(AuditKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    fn store(&self, path: &Path) -> Result<(), AuditError> {
        let key_error = |source| AuditError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let temporary = temporary_path(path);
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.signing.to_bytes())));
        let written = write_new(&temporary, text.as_bytes(), 0o600);
        let linked = written.and_then(|()| fs::hard_link(&temporary, path));
        let _ = fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(key_error(error)),
        }
    }

    fn write_public(&self, data_dir: &Path) -> Result<(), AuditError> {
        let path = data_dir.join(PUBLIC_KEY_FILE);
        let text = format!("{}\n", hex::encode(self.verifying_key().as_bytes()));
        if fs::read_to_string(&path).is_ok_and(|stored| stored == text) {
            return Ok(());
        }
        let temporary = temporary_path(&path);
        write_new(&temporary, text.as_bytes(), 0o644)
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|source| AuditError::KeyFile { path, source })
    }
}

/// Reads a public key written as hex, from [`PUBLIC_KEY_FILE`] or an
/// operator's copy of it.
pub(crate) fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|_| "invalid audit public key: expected 32 bytes as hex".to_owned())?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "invalid audit public key: not an Ed25519 point".to_owned())
}

/// Reads [`PUBLIC_KEY_FILE`] of `data_dir`.
pub(crate) fn read_public_key(data_dir: &Path) -> Result<VerifyingKey, AuditError> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    let text = fs::read_to_string(&path).map_err(|source| AuditError::KeyFile {
        path: path.clone(),
        source,
    })?;
    parse_public_key(&text).map_err(|reason| AuditError::KeyFile {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    })
}

fn generate_signing_key() -> SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(seed.as_mut_slice());
    SigningKey::from_bytes(&seed)
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let first = AuditKey::load_or_create(dir.path()).unwrap();
        let second = AuditKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.verifying_key(), second.verifying_key());

        let mode = fs::metadata(dir.path().join(PRIVATE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_public_key(dir.path()).unwrap(), first.verifying_key());
    }

    #[test]
    fn checkpoint_signature_verifies_and_binds_fields() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let checkpoint = key.checkpoint(Stream::Admin, 7, [3; 32], 1000);
        assert!(checkpoint.verify(&key.verifying_key()));

        let mut moved = checkpoint.clone();
        moved.seq = 8;
        assert!(!moved.verify(&key.verifying_key()));
        let other = generate_signing_key().verifying_key();
        assert!(!checkpoint.verify(&other));
    }

    #[test]
    fn debug_leaves_out_the_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let printed = format!("{key:?}");
        let private = fs::read_to_string(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert!(!printed.contains(private.trim()));
    }
}

//! The data key (DEK) and the keys derived from it: AES-256-GCM for stored
//! values and frames, and HMAC-SHA-256 for email lookup.
//!
//! A sealed value is `version (1 byte) || nonce (12) || ciphertext || tag (16)`.
//! Its associated data names the row and column it belongs to, so a value
//! copied into another row or column fails to open.
//!
//! Nonces are random, and NIST SP 800-38D section 8.3 limits one key to
//! 2^32 random nonces. Metadata values stay far below that. Frames are many
//! more, so each session's frames have a key of their own, derived from the
//! DEK and the session id with HKDF-SHA-256.

use std::collections::HashMap;
use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sealcast_at_rest_aead::Cipher;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::AtRestError;

pub use sealcast_at_rest_aead::SEAL_OVERHEAD;

/// Prefix of every associated data string.
const AAD_PREFIX: &[u8] = b"sealcast/at-rest/v1";
const HKDF_SALT: &[u8] = b"sealcast/at-rest/v1/dek";
const FIELDS_INFO: &[u8] = b"sealcast/at-rest/v1/fields";
const EMAIL_LOOKUP_INFO: &[u8] = b"sealcast/at-rest/v1/email-lookup";
const FRAMES_INFO: &[u8] = b"sealcast/at-rest/v1/frames/";
const FANOUT_MAC_INFO: &[u8] = b"sealcast/fanout/v1/mac";

/// Table and column of stored frames, in their associated data.
const FRAMES_TABLE: &str = "frames";
const FRAMES_COLUMN: &str = "frame";
/// A frame's row key: the session id, then the offset in big-endian order.
const FRAME_ROW_KEY_BYTES: usize = 16 + 8;
const FRAME_AAD_BYTES: usize =
    AAD_PREFIX.len() + 4 + FRAMES_TABLE.len() + 4 + FRAMES_COLUMN.len() + 4 + FRAME_ROW_KEY_BYTES;

/// Bytes of the data key (AES-256).
pub const DATA_KEY_BYTES: usize = 32;

/// The unwrapped data key and the keys derived from it. Every key is
/// zeroized on drop: the `aes-gcm` crate's `zeroize` feature clears the
/// cipher's round keys.
pub struct DataKeys {
    /// HKDF pseudo-random key extracted from the DEK.
    prk: Zeroizing<[u8; 32]>,
    fields: Cipher,
    email_lookup: Zeroizing<[u8; 32]>,
}

impl DataKeys {
    /// Derives the working keys from a data key.
    pub(super) fn from_data_key(dek: &[u8; DATA_KEY_BYTES]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(HKDF_SALT), dek);
        let mut prk_bytes = Zeroizing::new([0u8; 32]);
        prk_bytes.copy_from_slice(&prk);
        let fields = Zeroizing::new(expand(&prk_bytes, &[FIELDS_INFO]));
        let email_lookup = Zeroizing::new(expand(&prk_bytes, &[EMAIL_LOOKUP_INFO]));
        DataKeys {
            fields: Cipher::new(&fields),
            prk: prk_bytes,
            email_lookup,
        }
    }

    /// Encrypts a stored value of `table.column` in the row with primary key
    /// `row_key`.
    pub fn seal_value(&self, table: &str, column: &str, row_key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(value.len() + SEAL_OVERHEAD);
        seal_into(
            &self.fields,
            &associated_data(table, column, row_key),
            value,
            &mut out,
        );
        out
    }

    /// Decrypts a value sealed by [`DataKeys::seal_value`] for the same row
    /// and column.
    pub fn open_value(
        &self,
        table: &str,
        column: &str,
        row_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AtRestError> {
        let mut buffer = Zeroizing::new(sealed.to_vec());
        open_in_place(
            &self.fields,
            &associated_data(table, column, row_key),
            &mut buffer,
        )
        .map_err(|()| AtRestError::Decrypt {
            what: format!("{table}.{column}"),
        })?;
        Ok(buffer)
    }

    /// Returns the keyed hash an email address is looked up and kept unique
    /// by: HMAC-SHA-256 of the normalized address.
    pub fn email_hash(&self, normalized_email: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.email_lookup.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(normalized_email.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Returns the HMAC-SHA-256 key that relay nodes sharing this database
    /// authenticate their NATS messages with.
    pub fn fanout_mac_key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(expand(&self.prk, &[FANOUT_MAC_INFO]))
    }

    /// Returns the cipher of one session's frames.
    pub fn frame_cipher(&self, session_id: &[u8; 16]) -> FrameCipher {
        let key = Zeroizing::new(expand(&self.prk, &[FRAMES_INFO, session_id]));
        FrameCipher {
            session_id: *session_id,
            cipher: Cipher::new(&key),
        }
    }
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKeys([redacted])")
    }
}

/// The AES-256-GCM key of one session's stored frames.
pub struct FrameCipher {
    session_id: [u8; 16],
    cipher: Cipher,
}

impl FrameCipher {
    /// Encrypts the frame stored at `offset`, replacing `out`'s contents.
    pub fn seal_into(&self, offset: u64, frame: &[u8], out: &mut Vec<u8>) {
        out.clear();
        seal_into(&self.cipher, &self.frame_aad(offset), frame, out);
    }

    /// Encrypts the frame stored at `offset` into a new vector.
    pub fn seal(&self, offset: u64, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len() + SEAL_OVERHEAD);
        self.seal_into(offset, frame, &mut out);
        out
    }

    /// Decrypts the frame stored at `offset` in place. On success `sealed`
    /// contains the frame.
    pub fn open_in_place(&self, offset: u64, sealed: &mut Vec<u8>) -> Result<(), AtRestError> {
        open_in_place(&self.cipher, &self.frame_aad(offset), sealed).map_err(|()| {
            AtRestError::Decrypt {
                what: format!("{FRAMES_TABLE}.{FRAMES_COLUMN} at offset {offset}"),
            }
        })
    }

    /// Builds the associated data of [`associated_data`] for a frame on the
    /// stack, because the writer thread seals thousands of frames a second.
    fn frame_aad(&self, offset: u64) -> [u8; FRAME_AAD_BYTES] {
        let mut aad = [0u8; FRAME_AAD_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            aad[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(AAD_PREFIX);
        put(&(FRAMES_TABLE.len() as u32).to_be_bytes());
        put(FRAMES_TABLE.as_bytes());
        put(&(FRAMES_COLUMN.len() as u32).to_be_bytes());
        put(FRAMES_COLUMN.as_bytes());
        put(&(FRAME_ROW_KEY_BYTES as u32).to_be_bytes());
        put(&self.session_id);
        put(&offset.to_be_bytes());
        aad
    }
}

/// Frame ciphers of recently written sessions, so that the writer thread
/// derives each session's key once instead of once per frame.
pub struct FrameCiphers {
    keys: std::sync::Arc<DataKeys>,
    ciphers: HashMap<[u8; 16], FrameCipher>,
    /// Scratch space for one sealed frame, reused between frames.
    buffer: Vec<u8>,
}

/// Sessions whose frame ciphers [`FrameCiphers`] keeps. A cipher takes about
/// 1 KiB, so the cache stays near 4 MiB. When it is full it is cleared, and
/// the next frames derive their keys again.
const CACHED_FRAME_CIPHERS: usize = 4096;

impl FrameCiphers {
    /// Makes an empty cache.
    pub fn new(keys: std::sync::Arc<DataKeys>) -> Self {
        FrameCiphers {
            keys,
            ciphers: HashMap::new(),
            buffer: Vec::new(),
        }
    }

    /// Encrypts a frame of `session_id` stored at `offset` and returns the
    /// sealed bytes, valid until the next call.
    pub fn seal(&mut self, session_id: &[u8; 16], offset: u64, frame: &[u8]) -> &[u8] {
        if !self.ciphers.contains_key(session_id) && self.ciphers.len() >= CACHED_FRAME_CIPHERS {
            self.ciphers.clear();
        }
        let cipher = self
            .ciphers
            .entry(*session_id)
            .or_insert_with(|| self.keys.frame_cipher(session_id));
        cipher.seal_into(offset, frame, &mut self.buffer);
        &self.buffer
    }
}

fn seal_into(cipher: &Cipher, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    cipher.seal_into(aad, plaintext, out);
}

fn open_in_place(cipher: &Cipher, aad: &[u8], sealed: &mut Vec<u8>) -> Result<(), ()> {
    cipher.open_in_place(aad, sealed).map_err(|_| ())
}

/// Builds the associated data: the prefix, then table, column and row key,
/// each preceded by its length so that no two rows share a string.
fn associated_data(table: &str, column: &str, row_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 12 + table.len() + column.len());
    aad.extend_from_slice(AAD_PREFIX);
    for part in [table.as_bytes(), column.as_bytes(), row_key] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// HKDF-Expand of 32 bytes from `prk`, with `info` the concatenation of `parts`.
fn expand(prk: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // A 32-byte PRK and a 32-byte output are within HKDF-SHA-256's limits.
    let hkdf = Hkdf::<Sha256>::from_prk(prk)
        .unwrap_or_else(|_| unreachable!("a 32-byte PRK is long enough"));
    hkdf.expand_multi_info(parts, &mut out)
        .unwrap_or_else(|_| unreachable!("32 bytes is within HKDF's output limit"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> DataKeys {
        DataKeys::from_data_key(&[7u8; 32])
    }

    #[test]
    fn value_round_trips() {
        let keys = keys();
        let sealed = keys.seal_value("users", "email", b"usr_1", b"a@example.org");
        assert_eq!(sealed.len(), 13 + SEAL_OVERHEAD);
        let opened = keys
            .open_value("users", "email", b"usr_1", &sealed)
            .unwrap();
        assert_eq!(opened.as_slice(), b"a@example.org");
    }

    #[test]
    fn value_of_another_row_or_column_fails() {
        let keys = keys();
        let sealed = keys.seal_value("users", "email", b"usr_1", b"a@example.org");
        assert!(keys
            .open_value("users", "email", b"usr_2", &sealed)
            .is_err());
        assert!(keys.open_value("users", "name", b"usr_1", &sealed).is_err());
        assert!(keys
            .open_value("devices", "email", b"usr_1", &sealed)
            .is_err());
    }

    #[test]
    fn altered_or_truncated_value_fails() {
        let keys = keys();
        let sealed = keys.seal_value("devices", "name", b"dev_1", b"Tablet");
        for index in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[index] ^= 0x01;
            assert!(
                keys.open_value("devices", "name", b"dev_1", &altered)
                    .is_err(),
                "flipped byte {index} was accepted"
            );
        }
        assert!(keys
            .open_value("devices", "name", b"dev_1", &sealed[..SEAL_OVERHEAD - 1])
            .is_err());
    }

    #[test]
    fn another_data_key_fails() {
        let sealed = keys().seal_value("users", "email", b"usr_1", b"a@example.org");
        let other = DataKeys::from_data_key(&[8u8; 32]);
        assert!(other
            .open_value("users", "email", b"usr_1", &sealed)
            .is_err());
    }

    #[test]
    fn sealing_twice_differs() {
        let keys = keys();
        let first = keys.seal_value("users", "email", b"usr_1", b"a@example.org");
        let second = keys.seal_value("users", "email", b"usr_1", b"a@example.org");
        assert_ne!(first, second);
    }

    #[test]
    fn frames_swapped_between_offsets_fail() {
        let keys = keys();
        let cipher = keys.frame_cipher(&[1u8; 16]);
        let mut first = cipher.seal(0, b"frame zero");
        let mut second = cipher.seal(1, b"frame one");
        assert!(cipher.open_in_place(1, &mut first.clone()).is_err());
        assert!(cipher.open_in_place(0, &mut second.clone()).is_err());
        cipher.open_in_place(0, &mut first).unwrap();
        cipher.open_in_place(1, &mut second).unwrap();
        assert_eq!(first, b"frame zero");
        assert_eq!(second, b"frame one");
    }

    #[test]
    fn frames_moved_between_sessions_fail() {
        let keys = keys();
        let sealed = keys.frame_cipher(&[1u8; 16]).seal(0, b"frame");
        let mut moved = sealed.clone();
        assert!(keys
            .frame_cipher(&[2u8; 16])
            .open_in_place(0, &mut moved)
            .is_err());
    }

    #[test]
    fn cached_ciphers_match_fresh_ones() {
        let keys = std::sync::Arc::new(keys());
        let mut cache = FrameCiphers::new(keys.clone());
        for session in 0..3u8 {
            for offset in 0..3 {
                let mut sealed = cache.seal(&[session; 16], offset, b"frame").to_vec();
                keys.frame_cipher(&[session; 16])
                    .open_in_place(offset, &mut sealed)
                    .unwrap();
                assert_eq!(sealed, b"frame");
            }
        }
    }

    #[test]
    fn frame_aad_matches_generic_layout() {
        let cipher = keys().frame_cipher(&[3u8; 16]);
        let mut row_key = [3u8; 24];
        row_key[16..].copy_from_slice(&77u64.to_be_bytes());
        assert_eq!(
            cipher.frame_aad(77).as_slice(),
            associated_data(FRAMES_TABLE, FRAMES_COLUMN, &row_key).as_slice()
        );
    }

    #[test]
    fn email_hash_is_keyed() {
        let first = keys().email_hash("a@example.org");
        assert_eq!(first, keys().email_hash("a@example.org"));
        assert_ne!(first, keys().email_hash("b@example.org"));
        assert_ne!(
            first,
            DataKeys::from_data_key(&[8u8; 32]).email_hash("a@example.org")
        );
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", keys()), "DataKeys([redacted])");
    }
}

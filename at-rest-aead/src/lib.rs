//! AES-256-GCM sealing of one stored value: `version (1 byte) || nonce (12)
//! || ciphertext || tag (16)`, with a random nonce.
//!
//! The relay's at-rest layer calls these on its hot path, thousands of times
//! a second. The AEAD code is generic and compiled in the crate that names
//! concrete types, so it lives in this small crate, which the workspace
//! compiles optimized in debug builds too. Compiled unoptimized inside the
//! relay, sealing a 300-byte frame took about 48 µs (a loop of 10,000 seals
//! in a debug test build on a 2-core development machine, December 2026).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;

/// First byte of every sealed value: the format above.
pub const FORMAT_V1: u8 = 1;
/// Bytes of the random nonce.
pub const NONCE_BYTES: usize = 12;
/// Bytes of the authentication tag.
pub const TAG_BYTES: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_BYTES + TAG_BYTES;

/// An AES-256-GCM key, zeroized on drop by the `aes-gcm` crate's `zeroize`
/// feature.
pub struct Cipher(Aes256Gcm);

impl Cipher {
    /// Expands a 256-bit key.
    pub fn new(key: &[u8; 32]) -> Self {
        Cipher(Aes256Gcm::new(key.into()))
    }

    /// Appends `plaintext` sealed with `aad` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        // The thread-local generator is a CSPRNG seeded from the operating
        // system, and it saves a system call per value over `OsRng`.
        let mut nonce = [0u8; NONCE_BYTES];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.reserve(plaintext.len() + SEAL_OVERHEAD);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // Encryption fails only for plaintexts beyond GCM's limit of about
        // 64 GiB, and the relay's message size limit keeps values far smaller.
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[start..])
            .unwrap_or_else(|_| unreachable!("a stored value is far below GCM's length limit"));
        out.extend_from_slice(&tag);
    }

    /// Opens a sealed value in place. On success `sealed` contains the
    /// plaintext. Fails when the value is too short, of another format, or
    /// was sealed with another key or associated data.
    pub fn open_in_place(&self, aad: &[u8], sealed: &mut Vec<u8>) -> Result<(), OpenError> {
        if sealed.len() < SEAL_OVERHEAD || sealed[0] != FORMAT_V1 {
            return Err(OpenError);
        }
        let body_end = sealed.len() - TAG_BYTES;
        let tag = *Tag::from_slice(&sealed[body_end..]);
        let nonce = *Nonce::from_slice(&sealed[1..1 + NONCE_BYTES]);
        self.0
            .decrypt_in_place_detached(&nonce, aad, &mut sealed[1 + NONCE_BYTES..body_end], &tag)
            .map_err(|_| OpenError)?;
        sealed.truncate(body_end);
        sealed.drain(..1 + NONCE_BYTES);
        Ok(())
    }
}

/// A sealed value failed to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let cipher = Cipher::new(&[1u8; 32]);
        let mut sealed = Vec::new();
        cipher.seal_into(b"aad", b"value", &mut sealed);
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);

        let mut altered = sealed.clone();
        altered[3] ^= 1;
        assert_eq!(cipher.open_in_place(b"aad", &mut altered), Err(OpenError));
        let mut other_aad = sealed.clone();
        assert_eq!(
            cipher.open_in_place(b"other", &mut other_aad),
            Err(OpenError)
        );

        cipher.open_in_place(b"aad", &mut sealed).unwrap();
        assert_eq!(sealed, b"value");
    }
}

//! Random credentials, their SHA-256 hashes and the clinic API key bootstrap.
//!
//! The relay stores only hashes: a credential is looked up by its hash and the
//! stored hash is compared in constant time. Credential text lives in
//! [`Secret`], which zeroizes on drop and never prints.
//!
//! NOTE: copies outside `Secret` are not zeroized: request header buffers
//! (the `Cookie` header included), the `Set-Cookie` header of a redemption,
//! the JSON of the create-session response and the `String` that
//! `RelayHandle::api_key` returns.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::store::{Store, StoreError};

/// Prefix of clinic API keys, so leaked keys are easy to recognise and scan for.
pub(crate) const API_KEY_PREFIX: &str = "sck_";

/// Random bytes in every token and API key.
const TOKEN_BYTES: usize = 32;

/// SHA-256 of a credential's text.
pub(crate) type CredentialHash = [u8; 32];

/// A credential's text: a token or an API key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps credential text received from a peer.
    pub(crate) fn new(text: String) -> Self {
        Secret(Zeroizing::new(text))
    }

    /// Returns the credential text, to send to its owner once.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Returns the hash the store keeps in place of the text.
    pub(crate) fn hash(&self) -> CredentialHash {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Makes a publisher or invite token: 32 random bytes as unpadded base64url.
pub(crate) fn random_token() -> Secret {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
    Secret::new(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
}

/// Makes a clinic API key: [`API_KEY_PREFIX`] then a random token.
pub(crate) fn new_api_key() -> Secret {
    let token = random_token();
    Secret::new(format!("{API_KEY_PREFIX}{}", token.expose()))
}

/// Compares two credential hashes in constant time.
pub(crate) fn hashes_match(expected: &[u8], presented: &CredentialHash) -> bool {
    expected.ct_eq(presented.as_slice()).into()
}

/// Makes the clinic API key when the store has none yet, keeping only its hash.
///
/// Returns the key text when it was made now, so the caller can show it once.
pub(crate) async fn bootstrap_api_key(store: &Store) -> Result<Option<Secret>, StoreError> {
    if store.api_key_count().await? > 0 {
        return Ok(None);
    }
    let key = new_api_key();
    store.insert_api_key(key.hash()).await?;
    tracing::info!("made the clinic API key: it is printed once and only its hash is stored");
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_unpadded_base64url_of_32_bytes() {
        let token = random_token();
        let decoded = URL_SAFE_NO_PAD.decode(token.expose()).unwrap();
        assert_eq!(decoded.len(), 32);
        assert_eq!(token.expose().len(), 43);
        assert_ne!(random_token(), token);
    }

    #[test]
    fn api_key_has_prefix() {
        let key = new_api_key();
        let rest = key.expose().strip_prefix(API_KEY_PREFIX).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(rest).unwrap().len(), 32);
    }

    #[test]
    fn hash_comparison() {
        let token = random_token();
        let hash = token.hash();
        assert!(hashes_match(&hash, &token.hash()));
        assert!(!hashes_match(&hash, &random_token().hash()));
        assert!(!hashes_match(&hash[..31], &token.hash()));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let key = new_api_key();
        assert_eq!(format!("{key:?}"), "Secret([redacted])");
    }
}

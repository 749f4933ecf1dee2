//! Random credentials and their SHA-256 hashes.
//!
//! The relay stores only hashes: a credential is looked up by its hash and the
//! stored hash is compared in constant time. Credential text lives in
//! [`Secret`], which zeroizes on drop and never prints.
//!
//! NOTE: copies outside `Secret` are not zeroized: request header buffers
//! (the `Cookie` header included), the `Set-Cookie` header of a redemption,
//! the JSON bodies of responses that carry a token.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Random bytes in every token.
const TOKEN_BYTES: usize = 32;

/// SHA-256 of a credential's text.
pub(crate) type CredentialHash = [u8; 32];

/// A credential's text, such as a token.
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

/// Makes a token: 32 random bytes as unpadded base64url.
pub(crate) fn random_token() -> Secret {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
    Secret::new(URL_SAFE_NO_PAD.encode(bytes.as_slice()))
}

/// Compares two credential hashes in constant time.
pub(crate) fn hashes_match(expected: &[u8], presented: &CredentialHash) -> bool {
    expected.ct_eq(presented.as_slice()).into()
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
    fn hash_comparison() {
        let token = random_token();
        let hash = token.hash();
        assert!(hashes_match(&hash, &token.hash()));
        assert!(!hashes_match(&hash, &random_token().hash()));
        assert!(!hashes_match(&hash[..31], &token.hash()));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let key = random_token();
        assert_eq!(format!("{key:?}"), "Secret([redacted])");
    }
}

//! Credentials held in memory: bearer tokens and API keys.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A credential string that is zeroed when dropped and never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a credential.
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// Returns the credential itself, for an `Authorization` header or the key store.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Builds the value of an `Authorization: Bearer` header.
    pub(crate) fn bearer_header(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!("Bearer {}", self.0))
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString(value.to_string())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = SecretString::from("tok_live_123");
        assert_eq!(format!("{secret:?}"), "SecretString([redacted])");
        assert_eq!(secret.expose(), "tok_live_123");
        assert_eq!(secret.bearer_header().as_str(), "Bearer tok_live_123");
    }
}

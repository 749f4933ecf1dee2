//! Keys and their derivations, all with HKDF-SHA256 (RFC 5869).
//!
//! | derived value | salt | info | length |
//! | --- | --- | --- | --- |
//! | stream key | session id (16 bytes) | `sealcast v1 stream key` then the stream id | 32 |
//! | fingerprint | none | `sealcast v1 fingerprint` | 16 |
//! | invite authentication key | none | `sealcast v1 invite auth` | 32 |
//!
//! Each purpose has its own label, so no derived value reveals anything about another.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ids::{SessionId, StreamId};
use crate::words;

const STREAM_KEY_LABEL: &[u8] = b"sealcast v1 stream key";
const FINGERPRINT_LABEL: &[u8] = b"sealcast v1 fingerprint";
const INVITE_AUTH_LABEL: &[u8] = b"sealcast v1 invite auth";
const INVITE_PROOF_LABEL: &[u8] = b"sealcast v1 invite proof";

/// The 32-byte session key. It is made on the clinician device and never sent to the relay.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKey(Box<[u8; 32]>);

impl SessionKey {
    /// Makes a new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = Box::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut_slice());
        SessionKey(key)
    }

    /// Wraps existing key bytes, for example read from a key store or an invite link.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut bytes = bytes;
        let key = SessionKey(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// Returns the raw key bytes. Callers must not log or persist them outside a key store.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encodes the key as unpadded base64url, the form used in invite links.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_slice())
    }

    /// Derives the AES-256-GCM key for one stream of one session.
    pub fn derive_stream_key(&self, session_id: &SessionId, stream_id: &StreamId) -> StreamKey {
        let mut info = Vec::with_capacity(STREAM_KEY_LABEL.len() + 16);
        info.extend_from_slice(STREAM_KEY_LABEL);
        info.extend_from_slice(stream_id.as_bytes());
        let mut out = Box::new([0u8; 32]);
        expand(
            Some(session_id.as_bytes()),
            self.0.as_slice(),
            &info,
            out.as_mut_slice(),
        );
        StreamKey(out)
    }

    /// Derives the fingerprint the relay stores to tell a device that it has the wrong key.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = [0u8; 16];
        expand(None, self.0.as_slice(), FINGERPRINT_LABEL, &mut out);
        Fingerprint(out)
    }

    /// Derives the key a browser uses to prove that it has the session key when redeeming an invite.
    pub fn derive_invite_auth_key(&self) -> InviteAuthKey {
        let mut out = Box::new([0u8; 32]);
        expand(
            None,
            self.0.as_slice(),
            INVITE_AUTH_LABEL,
            out.as_mut_slice(),
        );
        InviteAuthKey(out)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

/// The AES-256-GCM key of one stream.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct StreamKey(Box<[u8; 32]>);

impl StreamKey {
    /// Returns the raw key bytes, for the AEAD.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey([redacted])")
    }
}

/// The authentication key for invite redemption. The relay stores it as the
/// verifier: it proves knowledge of the session key without revealing it,
/// because HKDF cannot be inverted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct InviteAuthKey(Box<[u8; 32]>);

impl InviteAuthKey {
    /// Wraps stored verifier bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        InviteAuthKey(Box::new(bytes))
    }

    /// Returns the raw bytes, to store as the verifier.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Computes the proof for a relay challenge: HMAC-SHA256 (RFC 2104) over
    /// the label `sealcast v1 invite proof` followed by the challenge bytes.
    pub fn prove(&self, challenge: &[u8]) -> [u8; 32] {
        self.mac(challenge).finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    pub fn verify(&self, challenge: &[u8], proof: &[u8]) -> bool {
        self.mac(challenge).verify_slice(proof).is_ok()
    }

    fn mac(&self, challenge: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(INVITE_PROOF_LABEL);
        mac.update(challenge);
        mac
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 rejected a 32-byte key")
}

impl fmt::Debug for InviteAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteAuthKey([redacted])")
    }
}

/// A 16-byte value derived from the session key that identifies it without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// Encodes the fingerprint as unpadded base64url, its form in the API.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses the API form.
    pub fn from_base64url(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        Some(Fingerprint(bytes.try_into().ok()?))
    }

    /// Four words that people on both screens compare to check that a link
    /// belongs to this visit: the words at indexes `fingerprint[0..4]` of a
    /// fixed 256-word list.
    pub fn words(&self) -> [&'static str; 4] {
        [
            words::WORDS[self.0[0] as usize],
            words::WORDS[self.0[1] as usize],
            words::WORDS[self.0[2] as usize],
            words::WORDS[self.0[3] as usize],
        ]
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_base64url())
    }
}

/// Computes HKDF-SHA256 (RFC 5869), extract then expand, into `out`. A
/// `None` salt is the RFC's default of 32 zero bytes. Fails only when `out`
/// is longer than 8,160 bytes (255 hash lengths).
pub fn hkdf_sha256(
    salt: Option<&[u8]>,
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), hkdf::InvalidLength> {
    Hkdf::<Sha256>::new(salt, ikm).expand(info, out)
}

fn expand(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], out: &mut [u8]) {
    // Outputs here are at most 32 bytes, far below HKDF-SHA256's 8160-byte limit.
    if hkdf_sha256(salt, ikm, info, out).is_err() {
        unreachable_expand(out.len());
    }
}

#[allow(clippy::panic)]
fn unreachable_expand(len: usize) {
    panic!("HKDF-SHA256 rejected an output length of {len} bytes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = SessionKey::from_bytes([7; 32]);
        let text = format!(
            "{key:?} {:?} {:?}",
            key.derive_invite_auth_key(),
            key.derive_stream_key(&SessionId([0; 16]), &StreamId([0; 16]))
        );
        assert_eq!(
            text,
            "SessionKey([redacted]) InviteAuthKey([redacted]) StreamKey([redacted])"
        );
    }

    #[test]
    fn derivations_differ_by_label_and_stream() {
        let key = SessionKey::from_bytes([7; 32]);
        let session = SessionId([1; 16]);
        let a = key.derive_stream_key(&session, &StreamId([2; 16]));
        let b = key.derive_stream_key(&session, &StreamId([3; 16]));
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        assert_ne!(
            key.derive_invite_auth_key().expose_bytes(),
            a.expose_bytes()
        );
        assert_ne!(&key.fingerprint().0[..], &a.expose_bytes()[..16]);
    }

    #[test]
    fn invite_proof_verifies() {
        let auth = SessionKey::from_bytes([9; 32]).derive_invite_auth_key();
        let proof = auth.prove(b"challenge");
        assert!(auth.verify(b"challenge", &proof));
        assert!(!auth.verify(b"other", &proof));
    }

    #[test]
    fn fingerprint_base64url_round_trip() {
        let fingerprint = SessionKey::generate().fingerprint();
        let parsed = Fingerprint::from_base64url(&fingerprint.to_base64url()).unwrap();
        assert_eq!(parsed, fingerprint);
    }
}

//! Device keys and DPoP proofs (RFC 9449) that bind access tokens to them.
//!
//! A device signs each request with its Ed25519 key. The proof is a JWT with
//! header `typ: dpop+jwt`, `alg: EdDSA` and the public key as `jwk`. Its
//! claims are `jti`, `htm` (method), `htu` (URL without query or fragment),
//! `iat` and, when an access token goes with it, `ath` (its SHA-256). The relay
//! checks the signature against the embedded key, the method, URL and age,
//! and that the key's thumbprint is the token's `cnf.jkt`. The relay also
//! remembers each `jti` for [`PROOF_MAX_AGE_SECS`] so a proof cannot be
//! replayed, which this module cannot do on its own.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, OctetKeyPairParameters,
    OctetKeyPairType, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// `typ` header of a DPoP proof.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// Oldest `iat` a verifier accepts, in seconds before its clock.
pub const PROOF_MAX_AGE_SECS: u64 = 60;
/// Newest `iat` a verifier accepts, in seconds after its clock.
pub const PROOF_MAX_FUTURE_SECS: u64 = 5;
/// Longest accepted `jti`, in bytes.
const MAX_JTI_LEN: usize = 64;
/// Shortest accepted `jti`, in bytes: 96 random bits in base64url.
const MIN_JTI_LEN: usize = 16;

/// A failure to make a proof, or the reason a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DpopError {
    /// The URL could not be parsed or has no host.
    #[error("invalid request URL for a DPoP proof: {0}")]
    InvalidUrl(String),
    /// The proof is not a well-formed JWT of the expected type.
    #[error("malformed DPoP proof: {0}")]
    Malformed(&'static str),
    /// The embedded key is missing, not Ed25519, or malformed.
    #[error("DPoP proof key is not a valid Ed25519 public JWK")]
    InvalidKey,
    /// The signature does not verify under the embedded key.
    #[error("DPoP proof signature is invalid")]
    BadSignature,
    /// `htm` or `htu` do not match this request.
    #[error("DPoP proof was made for another request: {0} does not match")]
    WrongRequest(&'static str),
    /// `iat` is outside the accepted window.
    #[error("DPoP proof is expired or from the future: make a new one with a correct clock")]
    Stale,
    /// `ath` is missing or does not match the access token.
    #[error("DPoP proof does not name this access token")]
    WrongToken,
    /// The key or proof could not be encoded.
    #[error("failed to sign a DPoP proof: {0}")]
    Signing(String),
}

/// A device's Ed25519 key pair. The secret key and its encoded copy zeroize on drop.
pub struct DeviceKey {
    signing: SigningKey,
    encoding: EncodingKey,
    jwk: Jwk,
    thumbprint: String,
}

impl DeviceKey {
    /// Makes a key pair from the operating system's random generator.
    pub fn generate() -> Result<Self, DpopError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut_slice());
        Self::from_secret_bytes(&secret)
    }

    /// Rebuilds a key pair from its 32-byte secret, as kept in a key store.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<Self, DpopError> {
        let signing = SigningKey::from_bytes(secret);
        let der = signing
            .to_pkcs8_der()
            .map_err(|error| DpopError::Signing(error.to_string()))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let jwk = ed25519_jwk(x);
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|error| DpopError::Signing(error.to_string()))?;
        Ok(DeviceKey {
            signing,
            encoding,
            jwk,
            thumbprint,
        })
    }

    /// Returns the 32-byte secret, for the key store.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// Returns the public key as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Returns the public key's JWK SHA-256 thumbprint (RFC 7638), unpadded
    /// base64url: the `cnf.jkt` of tokens bound to this key.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Makes a proof for one request. `access_token` is the token sent with
    /// it, if any; `now_unix` is the current time in Unix seconds.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        now_unix: u64,
    ) -> Result<String, DpopError> {
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = ProofClaims {
            jti: URL_SAFE_NO_PAD.encode(jti),
            htm: method.to_ascii_uppercase(),
            htu: target_uri(url)?,
            iat: now_unix,
            ath: access_token.map(access_token_hash),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(PROOF_TYPE.to_owned());
        header.jwk = Some(self.jwk.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|error| DpopError::Signing(error.to_string()))
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Claims of a DPoP proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
}

/// The facts a verified proof establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// JWK SHA-256 thumbprint of the key that signed the proof.
    pub thumbprint: String,
    /// The public key as unpadded base64url, for storing with a device.
    pub public_key: String,
    /// The proof's unique id, which the verifier must not accept twice.
    pub jti: String,
    /// When the proof was made, Unix seconds.
    pub iat: u64,
}

/// Verifies a proof for a request with `method` to `url` at `now_unix`.
/// `access_token` is the token that came with the request, if any: the
/// proof's `ath` must then name it.
pub fn verify_proof(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now_unix: u64,
) -> Result<VerifiedProof, DpopError> {
    let header =
        jsonwebtoken::decode_header(proof).map_err(|_| DpopError::Malformed("invalid header"))?;
    if header.typ.as_deref() != Some(PROOF_TYPE) {
        return Err(DpopError::Malformed("typ must be dpop+jwt"));
    }
    if header.alg != Algorithm::EdDSA {
        return Err(DpopError::Malformed("alg must be EdDSA"));
    }
    let jwk = header.jwk.ok_or(DpopError::InvalidKey)?;
    if carries_private_key(proof) {
        return Err(DpopError::InvalidKey);
    }
    let public_key = ed25519_public_key(&jwk)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| DpopError::InvalidKey)?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => DpopError::BadSignature,
            _ => DpopError::Malformed("invalid claims or signature encoding"),
        })?
        .claims;

    if !(MIN_JTI_LEN..=MAX_JTI_LEN).contains(&claims.jti.len()) {
        return Err(DpopError::Malformed("jti must be 16 to 64 bytes"));
    }
    // RFC 9449 compares the method exactly, and methods are upper case.
    if claims.htm != method {
        return Err(DpopError::WrongRequest("htm"));
    }
    if claims.htu != target_uri(url)? {
        return Err(DpopError::WrongRequest("htu"));
    }
    let oldest = now_unix.saturating_sub(PROOF_MAX_AGE_SECS);
    let newest = now_unix.saturating_add(PROOF_MAX_FUTURE_SECS);
    if claims.iat < oldest || claims.iat > newest {
        return Err(DpopError::Stale);
    }
    match (access_token, claims.ath.as_deref()) {
        (Some(token), Some(ath)) if access_token_hash(token) == ath => {}
        (None, None) => {}
        _ => return Err(DpopError::WrongToken),
    }

    let thumbprint = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::InvalidKey)?;
    Ok(VerifiedProof {
        thumbprint,
        public_key,
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// Returns whether the proof's header `jwk` has a private part `d`, which
/// RFC 9449 forbids. The JWT library drops members it does not know, so the
/// header is read again as plain JSON.
fn carries_private_key(proof: &str) -> bool {
    let Some(encoded) = proof.split('.').next() else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|header| header.get("jwk")?.get("d").cloned())
        .is_some()
}

/// Returns the `htu` form of a request URL: `https` for `wss` and `http`
/// for `ws`, lower-case host, default port dropped, no query or fragment.
pub fn target_uri(url: &str) -> Result<String, DpopError> {
    let mut parsed =
        url::Url::parse(url).map_err(|error| DpopError::InvalidUrl(error.to_string()))?;
    let scheme = match parsed.scheme() {
        "wss" | "https" => "https",
        "ws" | "http" => "http",
        other => return Err(DpopError::InvalidUrl(format!("unsupported scheme {other}"))),
    };
    if parsed.host_str().is_none() {
        return Err(DpopError::InvalidUrl("the URL has no host".into()));
    }
    parsed
        .set_scheme(scheme)
        .map_err(|()| DpopError::InvalidUrl("cannot change the scheme".into()))?;
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed.to_string())
}

/// Returns the `ath` of an access token: its SHA-256, unpadded base64url.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// Returns the thumbprint of an Ed25519 public key given as unpadded base64url.
pub fn thumbprint_of(public_key: &str) -> Result<String, DpopError> {
    let jwk = ed25519_jwk(public_key.to_owned());
    ed25519_public_key(&jwk)?;
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::InvalidKey)
}

fn ed25519_jwk(x: String) -> Jwk {
    Jwk {
        common: CommonParameters::default(),
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x,
        }),
    }
}

/// Checks that a JWK is an Ed25519 public key of 32 bytes and returns `x`.
/// The length check matters: the JWT library slices the key without one.
fn ed25519_public_key(jwk: &Jwk) -> Result<String, DpopError> {
    let AlgorithmParameters::OctetKeyPair(params) = &jwk.algorithm else {
        return Err(DpopError::InvalidKey);
    };
    if params.curve != EllipticCurve::Ed25519 {
        return Err(DpopError::InvalidKey);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(params.x.as_bytes())
        .map_err(|_| DpopError::InvalidKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| DpopError::InvalidKey)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| DpopError::InvalidKey)?;
    Ok(params.x.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const URL: &str = "wss://relay.example:8443/v1/sessions/ab/publish?x=1#f";

    fn key() -> DeviceKey {
        DeviceKey::from_secret_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn proof_verifies_for_its_request() {
        let key = key();
        let proof = key.proof("get", URL, Some("token"), NOW).unwrap();
        let verified = verify_proof(&proof, "GET", URL, Some("token"), NOW + 10).unwrap();
        assert_eq!(verified.thumbprint, key.thumbprint());
        assert_eq!(verified.iat, NOW);
        assert!(verified.jti.len() >= MIN_JTI_LEN);
    }

    #[test]
    fn target_uri_drops_query_and_maps_websocket_schemes() {
        assert_eq!(
            target_uri(URL).unwrap(),
            "https://relay.example:8443/v1/sessions/ab/publish"
        );
        assert_eq!(
            target_uri("wss://Relay.Example:443/v1/follow").unwrap(),
            "https://relay.example/v1/follow"
        );
        assert!(target_uri("ftp://relay.example/").is_err());
    }

    #[test]
    fn proof_for_other_request_is_rejected() {
        let key = key();
        let proof = key.proof("POST", URL, None, NOW).unwrap();
        assert_eq!(
            verify_proof(&proof, "GET", URL, None, NOW),
            Err(DpopError::WrongRequest("htm"))
        );
        let other = "https://relay.example:8443/v1/sessions/cd/publish";
        assert_eq!(
            verify_proof(&proof, "POST", other, None, NOW),
            Err(DpopError::WrongRequest("htu"))
        );
    }

    #[test]
    fn stale_and_future_proofs_are_rejected() {
        let key = key();
        let proof = key.proof("GET", URL, None, NOW).unwrap();
        let late = NOW + PROOF_MAX_AGE_SECS + 1;
        assert_eq!(
            verify_proof(&proof, "GET", URL, None, late),
            Err(DpopError::Stale)
        );
        let early = NOW - PROOF_MAX_FUTURE_SECS - 1;
        assert_eq!(
            verify_proof(&proof, "GET", URL, None, early),
            Err(DpopError::Stale)
        );
    }

    #[test]
    fn token_hash_must_match() {
        let key = key();
        let proof = key.proof("GET", URL, Some("token-a"), NOW).unwrap();
        assert_eq!(
            verify_proof(&proof, "GET", URL, Some("token-b"), NOW),
            Err(DpopError::WrongToken)
        );
        assert_eq!(
            verify_proof(&proof, "GET", URL, None, NOW),
            Err(DpopError::WrongToken)
        );
        let bare = key.proof("GET", URL, None, NOW).unwrap();
        assert_eq!(
            verify_proof(&bare, "GET", URL, Some("token-a"), NOW),
            Err(DpopError::WrongToken)
        );
    }

    #[test]
    fn swapped_key_fails_signature() {
        let proof = key().proof("GET", URL, None, NOW).unwrap();
        let other = DeviceKey::from_secret_bytes(&[9u8; 32]).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(PROOF_TYPE.into());
        header.jwk = Some(other.public_jwk().clone());
        let header_json = serde_json::to_vec(&header).unwrap();
        let mut parts: Vec<String> = proof.split('.').map(str::to_owned).collect();
        parts[0] = URL_SAFE_NO_PAD.encode(header_json);
        let forged = parts.join(".");
        assert_eq!(
            verify_proof(&forged, "GET", URL, None, NOW),
            Err(DpopError::BadSignature)
        );
    }

    #[test]
    fn key_with_private_part_is_rejected() {
        let key = key();
        let proof = key.proof("GET", URL, None, NOW).unwrap();
        let mut parts: Vec<String> = proof.split('.').map(str::to_owned).collect();
        let mut header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
        header["jwk"]["d"] = serde_json::Value::String(URL_SAFE_NO_PAD.encode([7u8; 32]));
        parts[0] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let with_private = parts.join(".");
        assert_eq!(
            verify_proof(&with_private, "GET", URL, None, NOW),
            Err(DpopError::InvalidKey)
        );
    }

    #[test]
    fn method_must_match_exactly() {
        let proof = key().proof("GET", URL, None, NOW).unwrap();
        assert_eq!(
            verify_proof(&proof, "get", URL, None, NOW),
            Err(DpopError::WrongRequest("htm"))
        );
    }

    #[test]
    fn short_or_foreign_keys_are_rejected() {
        let proof = key().proof("GET", URL, None, NOW).unwrap();
        let mut parts: Vec<String> = proof.split('.').map(str::to_owned).collect();
        for header in [
            r#"{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}"#,
            r#"{"typ":"dpop+jwt","alg":"EdDSA"}"#,
            r#"{"typ":"dpop+jwt","alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#,
            r#"{"typ":"dpop+jwt","alg":"none"}"#,
            r#"{"typ":"JWT","alg":"EdDSA"}"#,
        ] {
            parts[0] = URL_SAFE_NO_PAD.encode(header);
            let forged = parts.join(".");
            assert!(
                verify_proof(&forged, "GET", URL, None, NOW).is_err(),
                "{header} was accepted"
            );
        }
        assert!(verify_proof("not-a-jwt", "GET", URL, None, NOW).is_err());
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037, appendix A.3: the thumbprint of the example Ed25519 key.
        let thumbprint = thumbprint_of("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(thumbprint, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn secret_bytes_round_trip() {
        let key = DeviceKey::generate().unwrap();
        let again = DeviceKey::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(*key.secret_bytes())));
    }
}

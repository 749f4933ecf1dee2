//! Request credentials: what a device puts on each request to the relay,
//! and how a staff device signs in and keeps its tokens fresh.
//!
//! Staff devices send a device-bound access token with a fresh DPoP proof
//! (`Authorization: DPoP <token>` and `DPoP: <proof>`), see
//! [`sealcast_protocol::auth`]. Patient devices send an invite token as
//! `Authorization: Bearer <token>`.
//!
//! | module | job |
//! | --- | --- |
//! | [`credentials`] | the device key and tokens of each relay in the key store |
//! | [`accounts`] | HTTP calls to the accounts routes |
//! | [`login`] | the sign-in steps: start, poll until approved, second factor |
//! | [`device`] | [`SignedInDevice`]: tokens that refresh themselves |

pub mod accounts;
pub mod credentials;
pub mod device;
pub mod login;
pub mod outbox;
mod refresh_lock;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use sealcast_protocol::auth::DPOP_SCHEME;
use sealcast_protocol::dpop::DeviceKey;
use zeroize::Zeroizing;

pub use self::accounts::AccountsApi;
pub use self::credentials::{DeviceCredentials, SignIn};
pub use self::device::{Refresher, SignedInDevice};
use crate::error::ClientError;
use crate::secret::SecretString;

/// Headers that authenticate one request.
pub type AuthHeaders = Vec<(HeaderName, HeaderValue)>;

/// Makes the authentication headers of a request to `url` with `method`.
/// Called once per request or WebSocket connect, so proofs are never reused.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// Returns the headers for one request. The values are marked sensitive.
    fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, ClientError>;
}

/// A bearer credential, such as an invite token.
#[derive(Debug, Clone)]
pub struct BearerToken(SecretString);

impl BearerToken {
    /// Wraps a bearer credential.
    pub fn new(token: SecretString) -> Self {
        BearerToken(token)
    }
}

impl Authorizer for BearerToken {
    fn headers(&self, _method: &str, _url: &str) -> Result<AuthHeaders, ClientError> {
        Ok(vec![(AUTHORIZATION, sensitive(&self.0.bearer_header())?)])
    }
}

/// A device-bound access token and the device key that proves possession.
///
/// The access token can be replaced after a refresh while connections that
/// share this value keep using it.
pub struct DeviceToken {
    key: Arc<DeviceKey>,
    access_token: RwLock<SecretString>,
}

impl DeviceToken {
    /// Pairs an access token with the key it is bound to.
    pub fn new(key: Arc<DeviceKey>, access_token: SecretString) -> Self {
        DeviceToken {
            key,
            access_token: RwLock::new(access_token),
        }
    }

    /// Returns the device key.
    pub fn key(&self) -> &Arc<DeviceKey> {
        &self.key
    }

    /// Replaces the access token, after a refresh.
    pub fn set_access_token(&self, access_token: SecretString) {
        let mut slot = self
            .access_token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = access_token;
    }

    /// Returns the current access token.
    pub fn access_token(&self) -> SecretString {
        self.access_token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceToken")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Authorizer for DeviceToken {
    fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, ClientError> {
        let token = self.access_token();
        let proof = self
            .key
            .proof(method, url, Some(token.expose()), unix_now())
            .map_err(|err| ClientError::Internal(format!("failed to make a DPoP proof: {err}")))?;
        let authorization = Zeroizing::new(format!("{DPOP_SCHEME} {}", token.expose()));
        Ok(vec![
            (AUTHORIZATION, sensitive(&authorization)?),
            (dpop_header_name(), sensitive(&proof)?),
        ])
    }
}

/// A DPoP proof without an access token, for the sign-in and refresh
/// routes, which bind or check the device key before any token exists.
#[derive(Debug, Clone)]
pub struct DeviceProof {
    key: Arc<DeviceKey>,
}

impl DeviceProof {
    /// Proves possession of `key` on each request.
    pub fn new(key: Arc<DeviceKey>) -> Self {
        DeviceProof { key }
    }
}

impl Authorizer for DeviceProof {
    fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, ClientError> {
        let proof = self
            .key
            .proof(method, url, None, unix_now())
            .map_err(|err| ClientError::Internal(format!("failed to make a DPoP proof: {err}")))?;
        Ok(vec![(dpop_header_name(), sensitive(&proof)?)])
    }
}

/// Returns the current time in Unix seconds, 0 before 1970.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Returns [`sealcast_protocol::auth::DPOP_HEADER`] as a header name.
fn dpop_header_name() -> HeaderName {
    HeaderName::from_static("dpop")
}

fn sensitive(value: &str) -> Result<HeaderValue, ClientError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        ClientError::Internal("a credential contains characters not allowed in a header".into())
    })?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use sealcast_protocol::dpop::verify_proof;

    use super::*;

    #[test]
    fn device_token_headers_carry_a_valid_proof() {
        let key = Arc::new(DeviceKey::generate().unwrap());
        let token = DeviceToken::new(key.clone(), SecretString::from("access-token"));
        let url = "wss://relay.example:8443/v1/sessions/ab/publish";
        let headers = token.headers("GET", url).unwrap();

        assert_eq!(headers[0].0, AUTHORIZATION);
        assert_eq!(headers[0].1.to_str().unwrap(), "DPoP access-token");
        assert!(headers[0].1.is_sensitive());
        let proof = headers[1].1.to_str().unwrap();
        let verified = verify_proof(proof, "GET", url, Some("access-token"), unix_now()).unwrap();
        assert_eq!(verified.thumbprint, key.thumbprint());
    }

    #[test]
    fn each_request_gets_a_new_proof() {
        let token = DeviceToken::new(
            Arc::new(DeviceKey::generate().unwrap()),
            SecretString::from("access-token"),
        );
        let first = token
            .headers("POST", "https://relay.example/v1/sessions")
            .unwrap();
        let second = token
            .headers("POST", "https://relay.example/v1/sessions")
            .unwrap();
        assert_ne!(first[1].1, second[1].1);
    }

    #[test]
    fn device_proof_has_no_access_token() {
        let key = Arc::new(DeviceKey::generate().unwrap());
        let url = "https://relay.example/v1/auth/login";
        let headers = DeviceProof::new(key.clone()).headers("POST", url).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), "dpop");
        let proof = headers[0].1.to_str().unwrap();
        let verified = verify_proof(proof, "POST", url, None, unix_now()).unwrap();
        assert_eq!(verified.thumbprint, key.thumbprint());
    }

    #[test]
    fn debug_hides_the_access_token() {
        let token = DeviceToken::new(
            Arc::new(DeviceKey::generate().unwrap()),
            SecretString::from("access-token-value"),
        );
        assert!(!format!("{token:?}").contains("access-token-value"));
    }
}

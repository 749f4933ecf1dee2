//! Access tokens: EdDSA-signed JWTs with [`AccessClaims`], and the signing
//! keys that make them.
//!
//! The relay makes its first signing key at first start and a new one when
//! the newest is older than the configured maximum age. A replaced key is
//! retired but still verifies tokens until every token it signed has expired
//! (the access token lifetime plus [`LEEWAY_SECS`]), then it is deleted.
//! Private keys are stored in `relay.db`, which the data directory's mode
//! 0700 protects.

use std::sync::RwLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sealcast_protocol::auth::{AccessClaims, Confirmation, Role, ACCESS_AUDIENCE};
use thiserror::Error;
use zeroize::Zeroizing;

use super::connection::{db_error, Sealed};
use super::store::{new_id, AccountConnection, AccountDb};
use crate::db::db_params;
use crate::store::StoreError;

/// Clock skew tolerated on `exp`, in seconds.
pub(crate) const LEEWAY_SECS: u64 = 5;

/// A reason to reject an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum TokenError {
    /// Not a JWT, another algorithm, or no `kid`.
    #[error("malformed access token")]
    Malformed,
    /// The `kid` names no key that may still verify tokens.
    #[error("access token signed by an unknown key")]
    UnknownKey,
    /// The signature, issuer, audience or claims do not verify.
    #[error("invalid access token")]
    Invalid,
    /// The token has expired.
    #[error("expired access token")]
    Expired,
}

impl TokenError {
    /// Returns the metric label of the failure.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Invalid => "invalid_token",
            TokenError::Expired => "expired_token",
        }
    }
}

/// One signing key, with its private half in memory.
struct KeyEntry {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    created_at: i64,
    retired_at: Option<i64>,
}

/// The subject of an access token: user, organization, role, device and
/// sign-in.
#[derive(Debug, Clone)]
pub(crate) struct TokenSubject {
    pub(crate) user_id: String,
    pub(crate) organization_id: String,
    pub(crate) role: Role,
    pub(crate) device_id: Option<String>,
    pub(crate) thumbprint: Option<String>,
    pub(crate) mfa: bool,
    /// The sign-in (refresh token family) the token belongs to.
    pub(crate) family_id: String,
}

/// Issues and verifies access tokens.
pub(crate) struct TokenSigner {
    issuer: String,
    lifetime: Duration,
    key_max_age: Duration,
    keys: RwLock<Vec<KeyEntry>>,
    /// When the keys were last read again for a token with an unknown key.
    last_reload: std::sync::Mutex<Option<std::time::Instant>>,
}

/// Shortest time between two reads of the keys for tokens with an unknown
/// key, so that forged key ids cannot make every request read the store.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads the signing keys, making or rotating one as needed.
    pub(crate) async fn load(
        db: &AccountDb,
        issuer: String,
        lifetime: Duration,
        key_max_age: Duration,
        now_ms: i64,
    ) -> Result<TokenSigner, StoreError> {
        let signer = TokenSigner {
            issuer,
            lifetime,
            key_max_age,
            keys: RwLock::new(Vec::new()),
            last_reload: std::sync::Mutex::new(None),
        };
        signer.rotate_if_due(db, now_ms).await?;
        Ok(signer)
    }

    /// Returns the access token lifetime.
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Makes a new signing key when there is none or the newest is older than
    /// the maximum age, retires the others and deletes keys no token signed
    /// by them can still be valid for.
    pub(crate) async fn rotate_if_due(
        &self,
        db: &AccountDb,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let max_age_ms = millis(self.key_max_age);
        let due = {
            let keys = self.read_keys();
            keys.iter()
                .filter(|key| key.retired_at.is_none())
                .all(|key| now_ms.saturating_sub(key.created_at) >= max_age_ms)
        };
        if !due && !self.read_keys().is_empty() {
            return Ok(());
        }
        self.reload(db, now_ms).await
    }

    /// Verifies an access token as [`Self::verify`] does, reading the keys
    /// from the store again first when the token names a key this process
    /// does not know. Another relay node sharing the store may have made
    /// that key. The reads are at most one per [`RELOAD_INTERVAL`].
    pub(crate) async fn verify_or_reload(
        &self,
        db: &AccountDb,
        token: &str,
        now_unix: u64,
    ) -> Result<AccessClaims, TokenError> {
        match self.verify(token, now_unix) {
            Err(TokenError::UnknownKey) if self.take_reload_slot() => {
                let now_ms = i64::try_from(now_unix.saturating_mul(1000)).unwrap_or(i64::MAX);
                if let Err(error) = self.reload(db, now_ms).await {
                    tracing::warn!(%error, "failed to read the signing keys again");
                }
                self.verify(token, now_unix)
            }
            outcome => outcome,
        }
    }

    /// Reads the stored keys, rotating them if due, and keeps them.
    async fn reload(&self, db: &AccountDb, now_ms: i64) -> Result<(), StoreError> {
        let max_age_ms = millis(self.key_max_age);
        let verify_window_ms = millis(self.lifetime) + millis(Duration::from_secs(LEEWAY_SECS));
        let rows = db
            .run(move |conn| rotate_stored(conn, now_ms, max_age_ms, verify_window_ms))
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            entries.push(key_entry(row)?);
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
        Ok(())
    }

    /// Returns whether a reload may run now, and if so records it.
    fn take_reload_slot(&self) -> bool {
        let mut last = self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < RELOAD_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Signs an access token for `subject`, valid from `now_unix`.
    pub(crate) fn issue(
        &self,
        subject: &TokenSubject,
        now_unix: u64,
    ) -> Result<String, StoreError> {
        let keys = self.read_keys();
        let key = keys
            .iter()
            .filter(|key| key.retired_at.is_none())
            .max_by_key(|key| key.created_at)
            .ok_or(StoreError::Corrupt {
                what: "signing keys: none is active",
            })?;
        let mut jti = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: ACCESS_AUDIENCE.to_owned(),
            sub: subject.user_id.clone(),
            org: subject.organization_id.clone(),
            role: subject.role,
            dev: subject.device_id.clone(),
            cnf: subject.thumbprint.clone().map(|jkt| Confirmation { jkt }),
            mfa: subject.mfa,
            iat: now_unix,
            exp: now_unix + self.lifetime.as_secs(),
            // The sign-in's family id leads the token id, so a request can be
            // checked against the sign-in being revoked.
            jti: format!("{}.{}", subject.family_id, URL_SAFE_NO_PAD.encode(jti)),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|_| StoreError::Corrupt {
            what: "signing key: it cannot sign",
        })
    }

    /// Verifies an access token's algorithm, key, signature, issuer,
    /// audience and expiry at `now_unix`.
    pub(crate) fn verify(&self, token: &str, now_unix: u64) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let keys = self.read_keys();
        let key = keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let verify_window = self.lifetime.as_secs() + LEEWAY_SECS;
        let retired_too_long = key.retired_at.is_some_and(|retired_ms| {
            u64::try_from(retired_ms / 1000).unwrap_or(0) + verify_window < now_unix
        });
        if retired_too_long {
            return Err(TokenError::UnknownKey);
        }

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[ACCESS_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        // The library checks `exp` against the system clock, and `now_unix`
        // repeats the check so callers and tests agree on the time.
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        if claims.exp.saturating_add(LEEWAY_SECS) < now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, Vec<KeyEntry>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Returns the sign-in family id that [`TokenSigner::issue`] put in a `jti`.
pub(crate) fn family_of(jti: &str) -> Option<&str> {
    jti.split_once('.')
        .map(|(family, _)| family)
        .filter(|family| !family.is_empty())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A stored signing key.
struct KeyRow {
    kid: String,
    private_key: Zeroizing<Vec<u8>>,
    created_at: i64,
    retired_at: Option<i64>,
}

fn key_entry(row: KeyRow) -> Result<KeyEntry, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "signing key",
    };
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
        row.private_key
            .as_slice()
            .try_into()
            .map_err(|_| corrupt())?,
    );
    let signing = SigningKey::from_bytes(&bytes);
    let der = signing.to_pkcs8_der().map_err(|_| corrupt())?;
    let public = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    Ok(KeyEntry {
        kid: row.kid,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        decoding: DecodingKey::from_ed_components(&public).map_err(|_| corrupt())?,
        created_at: row.created_at,
        retired_at: row.retired_at,
    })
}

/// Rotates the stored keys in one transaction and returns the ones that may
/// still verify tokens.
fn rotate_stored(
    conn: &AccountConnection,
    now_ms: i64,
    max_age_ms: i64,
    verify_window_ms: i64,
) -> Result<Vec<KeyRow>, StoreError> {
    let error = db_error("rotate signing keys");
    let tx = conn.begin_write().map_err(&error)?;
    let newest: Option<i64> = tx
        .query_one(
            "SELECT MAX(created_at) FROM signing_keys WHERE retired_at IS NULL",
            db_params![],
            |row| row.get(0),
        )
        .map_err(&error)?;
    if newest.is_none_or(|created| now_ms.saturating_sub(created) >= max_age_ms) {
        tx.execute(
            "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
            db_params![now_ms],
        )
        .map_err(&error)?;
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut_slice());
        let kid = new_id("key");
        let sealed = conn.seal("signing_keys", "private_key", kid.as_bytes(), &*secret);
        tx.execute(
            "INSERT INTO signing_keys (kid, private_key, created_at) VALUES (?1, ?2, ?3)",
            db_params![kid, sealed, now_ms],
        )
        .map_err(&error)?;
        tracing::info!("made a new access token signing key");
    }
    tx.execute(
        "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
        db_params![now_ms.saturating_sub(verify_window_ms)],
    )
    .map_err(&error)?;

    let stored = tx
        .query_all(
            "SELECT kid, private_key, created_at, retired_at FROM signing_keys",
            db_params![],
            |row| {
                Ok((
                    row.get::<String>(0)?,
                    row.get::<Sealed>(1)?,
                    row.get::<i64>(2)?,
                    row.get::<Option<i64>>(3)?,
                ))
            },
        )
        .map_err(&error)?;
    let mut rows = Vec::with_capacity(stored.len());
    for (kid, sealed, created_at, retired_at) in stored {
        let private_key = conn.open_blob("signing_keys", "private_key", kid.as_bytes(), &sealed)?;
        rows.push(KeyRow {
            kid,
            private_key,
            created_at,
            retired_at,
        });
    }
    tx.commit().map_err(&error)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_900_000_000;

    async fn signer(
        dir: &std::path::Path,
        lifetime: u64,
        max_age: u64,
        now_ms: i64,
    ) -> (AccountDb, TokenSigner) {
        let backend = crate::db::Backend::Sqlite(dir.join(crate::store::DATABASE_FILE));
        let db = AccountDb::open_with_key(dir, &backend, &crate::at_rest::KeySource::Development)
            .unwrap();
        let signer = TokenSigner::load(
            &db,
            "https://relay.example".into(),
            Duration::from_secs(lifetime),
            Duration::from_secs(max_age),
            now_ms,
        )
        .await
        .unwrap();
        (db, signer)
    }

    fn subject() -> TokenSubject {
        TokenSubject {
            user_id: "usr_1".into(),
            organization_id: "org_1".into(),
            role: Role::Clinician,
            device_id: Some("dev_1".into()),
            thumbprint: Some("jkt".into()),
            mfa: false,
            family_id: "fam_1".into(),
        }
    }

    #[tokio::test]
    async fn issued_token_verifies_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::store::now_millis();
        let unix = u64::try_from(now / 1000).unwrap();
        let (_db, signer) = signer(dir.path(), 300, 86_400, now).await;
        let token = signer.issue(&subject(), unix).unwrap();
        let claims = signer.verify(&token, unix).unwrap();
        assert_eq!(claims.sub, "usr_1");
        assert_eq!(claims.cnf.unwrap().jkt, "jkt");
        assert_eq!(family_of(&claims.jti), Some("fam_1"));
        assert_eq!(
            signer.verify(&token, unix + 300 + LEEWAY_SECS + 1),
            Err(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn other_algorithms_and_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, signer) = signer(dir.path(), 300, 86_400, 0).await;
        let claims = serde_json::json!({"sub": "usr_1", "exp": NOW + 100});
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert_eq!(signer.verify(&hs, NOW), Err(TokenError::Malformed));

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let unsigned = format!("{none_header}.{body}.");
        assert!(signer.verify(&unsigned, NOW).is_err());
        assert!(signer.verify("not-a-token", NOW).is_err());
    }

    #[tokio::test]
    async fn rotation_keeps_retired_key_until_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let start = crate::store::now_millis();
        let unix = u64::try_from(start / 1000).unwrap();
        let (db, signer) = signer(dir.path(), 300, 60, start).await;
        let old = signer.issue(&subject(), unix).unwrap();
        signer.rotate_if_due(&db, start + 61_000).await.unwrap();
        let new = signer.issue(&subject(), unix).unwrap();
        let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid;
        assert_ne!(kid(&old), kid(&new));
        assert!(signer.verify(&old, unix).is_ok());
        // Once the retired key's tokens have all expired, it is deleted.
        let later = start + 61_000 + 300_000 + 6_000;
        signer.rotate_if_due(&db, later).await.unwrap();
        assert_eq!(signer.verify(&old, unix), Err(TokenError::UnknownKey));
    }

    #[tokio::test]
    async fn key_made_by_another_node_verifies_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let start = crate::store::now_millis();
        let unix = u64::try_from(start / 1000).unwrap();
        let (db_a, node_a) = signer(dir.path(), 300, 60, start).await;
        let (db_b, node_b) = signer(dir.path(), 300, 60, start).await;
        node_a.rotate_if_due(&db_a, start + 61_000).await.unwrap();
        let token = node_a.issue(&subject(), unix).unwrap();

        assert_eq!(node_b.verify(&token, unix), Err(TokenError::UnknownKey));
        let claims = node_b.verify_or_reload(&db_b, &token, unix).await.unwrap();
        assert_eq!(claims.sub, "usr_1");

        // Unknown key ids read the store at most once per interval.
        let (_, forged) = signer(tempfile::tempdir().unwrap().path(), 300, 60, start).await;
        let foreign = forged.issue(&subject(), unix).unwrap();
        assert_eq!(
            node_b.verify_or_reload(&db_b, &foreign, unix).await,
            Err(TokenError::UnknownKey)
        );
        assert!(!node_b.take_reload_slot());
    }
}

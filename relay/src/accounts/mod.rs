//! Staff accounts: organizations, users with roles, devices, sign-in, the
//! TOTP second factor, recovery codes, sign-in mail and the tokens that
//! authorize requests.
//!
//! | module | job |
//! | --- | --- |
//! | [`admin`] | create organizations and users, list, revoke and disable |
//! | `connection` | the account connection on either engine, sealing and opening values |
//! | `store` | organizations, users, recovery codes and credential state |
//! | `devices` | device rows and their public keys |
//! | `tokens` | EdDSA access tokens and signing key rotation |
//! | `refresh` | single-use refresh tokens with reuse detection |
//! | `replay` | DPoP proof replay check |
//! | `login` | pending magic-link sign-ins |
//! | `limits` | per-address and per-account rate limits |
//! | `mail` | sign-in mail over SMTP, or into the outbox folder |
//! | `totp` | TOTP codes (RFC 6238) with replay checks |
//! | `recovery` | single-use recovery codes, stored hashed |
//! | [`live`] | open staff sockets, closed on revocation |

pub mod admin;
mod connection;
pub(crate) mod devices;
pub(crate) mod limits;
pub mod live;
pub(crate) mod login;
pub(crate) mod mail;
pub(crate) mod recovery;
pub(crate) mod refresh;
pub(crate) mod replay;
pub(crate) mod store;
pub(crate) mod tokens;
pub(crate) mod totp;

#[cfg(test)]
mod debug_tests;
#[cfg(test)]
mod engine_tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sealcast_protocol::auth::{TokenResponse, UserInfo, DPOP_SCHEME};

use crate::at_rest::DatabaseKeys;
use crate::config::AccountsConfig;
use crate::credentials::{CredentialHash, Secret};
use crate::db::Backend;
use crate::error::RelayError;
use crate::shutdown::Shutdown;
use crate::store::{now_millis, StoreError};
use limits::AccountLimits;
use live::LiveSockets;
use mail::{MailConfig, Mailer};
use refresh::{Family, RefreshRejection};
use replay::ReplayCache;
use store::{AccountDb, UserRecord};
use tokens::{TokenSigner, TokenSubject};

/// Folder in the data directory that receives sign-in mail when no SMTP
/// server is configured.
pub const OUTBOX_DIR: &str = "outbox";

/// Shortest time between two `last_seen_at` updates of one device, in milliseconds.
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// The accounts service of a running relay.
#[derive(Debug)]
pub(crate) struct Accounts {
    pub(crate) db: AccountDb,
    pub(crate) signer: TokenSigner,
    pub(crate) replay: ReplayCache,
    pub(crate) live: Arc<LiveSockets>,
    pub(crate) limits: AccountLimits,
    pub(crate) mailer: Mailer,
    pub(crate) magic_link_lifetime: Duration,
    refresh_lifetime: Duration,
    last_touched: DashMap<String, i64>,
}

/// Tokens of a new or refreshed sign-in.
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Secret,
    pub(crate) expires_in: u64,
    pub(crate) device_id: Option<String>,
    pub(crate) user: UserInfo,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("device_id", &self.device_id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Returns the response body a device receives.
    pub(crate) fn into_response(self) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token,
            token_type: DPOP_SCHEME.to_owned(),
            expires_in: self.expires_in,
            refresh_token: self.refresh_token.expose().to_owned(),
            device_id: self.device_id.unwrap_or_default(),
            user: self.user,
        }
    }
}

/// Returns the user as `GET /v1/me` and token responses show it.
pub(crate) fn user_info(user: &UserRecord) -> UserInfo {
    UserInfo {
        user_id: user.user_id.clone(),
        email: user.email.clone(),
        role: user.role,
        organization_id: user.organization_id.clone(),
        totp_enabled: user.totp_secret.is_some(),
    }
}

/// Returns the current time in Unix seconds.
pub(crate) fn now_unix() -> u64 {
    u64::try_from(now_millis() / 1000).unwrap_or(0)
}

impl Accounts {
    /// Opens the account store on the database of `backend`, loads the
    /// signing keys and sets up sign-in mail, whose outbox folder is in
    /// `data_dir`. Tokens name `public_url`'s origin as issuer.
    pub(crate) async fn open(
        config: &AccountsConfig,
        data_dir: &Path,
        backend: &Backend,
        keys: &DatabaseKeys,
        public_url: &str,
    ) -> Result<Accounts, RelayError> {
        crate::metrics::describe_accounts();
        let mailer = Mailer::new(MailConfig {
            smtp_url: config.smtp_url.clone().map(Secret::new),
            from: config.mail_from.clone(),
            smtp_ca_file: config.smtp_ca_file.clone(),
            outbox_dir: data_dir.join(OUTBOX_DIR),
        })
        .map_err(|error| RelayError::Mail(error.to_string()))?;
        let issuer = crate::http::auth::origin_of(public_url);
        let backend = backend.clone();
        let keys = keys.clone();
        let db = tokio::task::spawn_blocking(move || AccountDb::open(&backend, &keys))
            .await
            .map_err(|error| StoreError::ReadTask(error.to_string()))??;
        let signer = TokenSigner::load(
            &db,
            issuer,
            config.access_token_lifetime,
            config.signing_key_max_age,
            now_millis(),
        )
        .await?;
        Ok(Accounts {
            db,
            signer,
            replay: ReplayCache::default(),
            live: Arc::new(LiveSockets::default()),
            limits: AccountLimits::default(),
            mailer,
            magic_link_lifetime: config.magic_link_lifetime,
            refresh_lifetime: config.refresh_token_lifetime,
            last_touched: DashMap::new(),
        })
    }

    /// Returns the refresh token lifetime.
    pub(crate) fn refresh_lifetime(&self) -> Duration {
        self.refresh_lifetime
    }

    /// Starts a sign-in for `user`: a new refresh token family and an
    /// access token, bound to the device when there is one.
    pub(crate) async fn sign_in(
        &self,
        user: &UserRecord,
        device: Option<(String, String)>,
        mfa: bool,
    ) -> Result<Issued, StoreError> {
        let (device_id, thumbprint) = device.unzip();
        let family = Family {
            family_id: store::new_id("sgn"),
            user_id: user.user_id.clone(),
            device_id,
            mfa,
        };
        let refresh_lifetime = millis(self.refresh_lifetime);
        let stored = family.clone();
        let refresh_token = self
            .db
            .run(move |conn| refresh::insert(conn, &stored, now_millis(), refresh_lifetime))
            .await?;
        self.issue(user, &family, thumbprint, refresh_token).await
    }

    /// Stores a new device of `user` with its public key and starts a
    /// sign-in bound to it. Returns `None` when the key already belongs to
    /// a device.
    pub(crate) async fn sign_in_new_device(
        &self,
        user: &UserRecord,
        public_key: String,
        thumbprint: String,
        name: String,
        mfa: bool,
    ) -> Result<Option<Issued>, StoreError> {
        let user_id = user.user_id.clone();
        let stored_thumbprint = thumbprint.clone();
        let device_id = self
            .db
            .run(move |conn| {
                let device = devices::NewDevice {
                    user_id: &user_id,
                    name: &name,
                    public_key: &public_key,
                    thumbprint: &stored_thumbprint,
                };
                devices::insert_device(conn, &device, now_millis())
            })
            .await?;
        let Some(device_id) = device_id else {
            return Ok(None);
        };
        tracing::info!(%device_id, user_id = %user.user_id, "device registered");
        self.sign_in(user, Some((device_id, thumbprint)), mfa)
            .await
            .map(Some)
    }

    /// Uses a refresh token, presented with a proof by the device key with
    /// thumbprint `thumbprint`, or by a browser when `None`. Returns new
    /// tokens, or why the token was rejected.
    pub(crate) async fn refresh(
        &self,
        presented: CredentialHash,
        thumbprint: Option<String>,
    ) -> Result<Result<Issued, RefreshRejection>, StoreError> {
        let refresh_lifetime = millis(self.refresh_lifetime);
        let rotated = self
            .db
            .run(move |conn| {
                let (family, token) = match refresh::rotate(
                    conn,
                    &presented,
                    thumbprint.as_deref(),
                    now_millis(),
                    refresh_lifetime,
                )? {
                    Ok(rotated) => rotated,
                    Err(rejection) => return Ok(Err(rejection)),
                };
                let user = store::user_by_id(conn, &family.user_id)?;
                let device = match &family.device_id {
                    Some(device_id) => devices::device_by_id(conn, device_id)?.map(|(d, _)| d),
                    None => None,
                };
                Ok(Ok((family, token, user, device)))
            })
            .await?;
        let (family, token, user, device) = match rotated {
            Ok(parts) => parts,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let Some(user) = user.filter(|user| user.disabled_at.is_none()) else {
            return Ok(Err(RefreshRejection::Revoked));
        };
        let thumbprint = match (&family.device_id, device) {
            (None, _) => None,
            (Some(_), Some(device)) if device.revoked_at.is_none() => Some(device.thumbprint),
            (Some(_), _) => return Ok(Err(RefreshRejection::Revoked)),
        };
        self.issue(&user, &family, thumbprint, token).await.map(Ok)
    }

    /// Revokes a sign-in's refresh tokens, which also ends its access tokens.
    pub(crate) async fn sign_out(&self, family_id: String) -> Result<(), StoreError> {
        self.db
            .run(move |conn| refresh::revoke_family(conn, &family_id, now_millis()))
            .await
    }

    /// Records a device's request, at most once per [`TOUCH_INTERVAL_MS`].
    pub(crate) async fn touch_device(&self, device_id: &str) {
        let now = now_millis();
        let due = self
            .last_touched
            .get(device_id)
            .is_none_or(|last| now.saturating_sub(*last) >= TOUCH_INTERVAL_MS);
        if !due {
            return;
        }
        self.last_touched.insert(device_id.to_owned(), now);
        let id = device_id.to_owned();
        if let Err(error) = self
            .db
            .run(move |conn| devices::touch_device(conn, &id, now))
            .await
        {
            tracing::warn!(%error, device_id, "failed to record the device's last request");
        }
    }

    async fn issue(
        &self,
        user: &UserRecord,
        family: &Family,
        thumbprint: Option<String>,
        refresh_token: Secret,
    ) -> Result<Issued, StoreError> {
        self.signer.rotate_if_due(&self.db, now_millis()).await?;
        let subject = TokenSubject {
            user_id: user.user_id.clone(),
            organization_id: user.organization_id.clone(),
            role: user.role,
            device_id: family.device_id.clone(),
            thumbprint,
            mfa: family.mfa,
            family_id: family.family_id.clone(),
        };
        let access_token = self.signer.issue(&subject, now_unix())?;
        Ok(Issued {
            access_token,
            refresh_token,
            expires_in: self.signer.lifetime().as_secs(),
            device_id: family.device_id.clone(),
            user: user_info(user),
        })
    }
}

/// Closes open staff sockets whose user was disabled, device revoked or
/// sign-in ended by another process, every [`live::RECHECK_INTERVAL`].
pub(crate) async fn run_recheck(accounts: Arc<Accounts>, shutdown: Shutdown) {
    let mut interval = tokio::time::interval(live::RECHECK_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = interval.tick() => {}
        }
        accounts.limits.sweep();
        let owners = accounts.live.owners();
        if owners.is_empty() {
            continue;
        }
        let checked: Result<Vec<u64>, StoreError> = accounts
            .db
            .run(move |conn| {
                let mut revoked = Vec::new();
                for (id, owner) in owners {
                    let state = store::credential_state(
                        conn,
                        &owner.user_id,
                        owner.device_id.as_deref(),
                        &owner.family_id,
                    )?;
                    let valid = state.is_some_and(|state| {
                        !state.user_disabled && !state.device_revoked && !state.sign_in_revoked
                    });
                    if !valid {
                        revoked.push(id);
                    }
                }
                Ok(revoked)
            })
            .await;
        match checked {
            Ok(revoked) => {
                if !revoked.is_empty() {
                    tracing::info!(
                        sockets = revoked.len(),
                        "closing staff sockets whose credential was revoked"
                    );
                }
                metrics::counter!(crate::metrics::SOCKETS_REVOKED, "trigger" => "recheck")
                    .increment(revoked.len() as u64);
                for id in revoked {
                    accounts.live.revoke_id(id);
                }
            }
            Err(error) => tracing::warn!(%error, "failed to recheck open staff sockets"),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

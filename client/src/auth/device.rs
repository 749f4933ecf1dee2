//! A signed-in device whose access token refreshes itself.
//!
//! [`SignedInDevice`] contains the device key, the refresh token and one shared
//! [`DeviceToken`]. Requests and WebSocket connects authorize with that
//! token, so a refresh reaches every connection at its next request or
//! reconnect. The access token is refreshed when it has less than
//! [`REFRESH_MARGIN`] left, after the relay rejected it with 401, or by a
//! background [`Refresher`] during a long publish. Refresh tokens are single
//! use, so each rotated one is written to the key store before anything
//! else uses the new access token. A lock file next to the credentials
//! keeps two processes from refreshing the same sign-in at once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealcast_protocol::auth::{TokenResponse, UserInfo};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use url::Url;

use super::accounts::AccountsApi;
use super::credentials::DeviceCredentials;
use super::refresh_lock::RefreshLock;
use super::{Authorizer, DeviceToken};
use crate::error::ClientError;
use crate::keystore::{now_unix_s, KeyStore};
use crate::tls::TlsSettings;

/// Remaining lifetime below which the access token is refreshed before use.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Shortest wait of the background refresher between two refreshes.
const MIN_REFRESH_WAIT: Duration = Duration::from_secs(1);
/// Wait of the background refresher after a refresh failed for a reason
/// other than revocation, such as the relay being unreachable.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A device signed in to one relay. Clones share the tokens.
#[derive(Debug, Clone)]
pub struct SignedInDevice {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: KeyStore,
    api: AccountsApi,
    ca_cert: Option<PathBuf>,
    tls: TlsSettings,
    token: Arc<DeviceToken>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    credentials: DeviceCredentials,
    /// Count of token changes, so that callers that saw a rejected token
    /// refresh only once between them.
    generation: u64,
}

impl SignedInDevice {
    /// Loads the sign-in of `relay` from the key store. `ca_cert` overrides
    /// the CA certificate stored at sign-in.
    ///
    /// Returns [`ClientError::NotSignedIn`] when the device has no sign-in
    /// for the relay.
    pub fn load(
        store: &KeyStore,
        relay: &Url,
        ca_cert: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let not_signed_in = || ClientError::NotSignedIn {
            relay: relay.to_string(),
        };
        let credentials = store.load_device(relay)?.ok_or_else(not_signed_in)?;
        let ca_cert = ca_cert
            .map(Path::to_path_buf)
            .or_else(|| credentials.ca_cert.clone());
        Self::new(store.clone(), credentials, ca_cert)
    }

    /// Wraps credentials that hold a sign-in, trusting the CA in `ca_cert`
    /// or else the bundled public roots.
    pub fn new(
        store: KeyStore,
        credentials: DeviceCredentials,
        ca_cert: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        let tls = TlsSettings::new(ca_cert.as_deref())?;
        let sign_in = credentials
            .sign_in
            .as_ref()
            .ok_or_else(|| ClientError::NotSignedIn {
                relay: credentials.relay.to_string(),
            })?;
        let token = Arc::new(DeviceToken::new(
            credentials.key.clone(),
            sign_in.access_token.clone(),
        ));
        let api = AccountsApi::new(&credentials.relay, &tls)?;
        Ok(SignedInDevice {
            inner: Arc::new(Inner {
                store,
                api,
                ca_cert,
                tls,
                token,
                state: Mutex::new(State {
                    credentials,
                    generation: 0,
                }),
            }),
        })
    }

    /// Returns the relay's base URL.
    pub fn relay(&self) -> &Url {
        self.inner.api.relay()
    }

    /// Returns the PEM file of the CA the device trusts for the relay, if any.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.inner.ca_cert.as_deref()
    }

    /// Returns the TLS settings the device reaches the relay with.
    pub fn tls(&self) -> &TlsSettings {
        &self.inner.tls
    }

    /// Returns the accounts API client of the relay.
    pub fn accounts(&self) -> &AccountsApi {
        &self.inner.api
    }

    /// Returns the shared access token, which refreshes update in place.
    pub fn token(&self) -> Arc<DeviceToken> {
        self.inner.token.clone()
    }

    /// Returns the shared access token as an [`Authorizer`].
    pub fn authorizer(&self) -> Arc<dyn Authorizer> {
        self.inner.token.clone()
    }

    /// Returns the signed-in user as of the last sign-in or refresh.
    pub async fn user(&self) -> Result<UserInfo, ClientError> {
        let state = self.inner.state.lock().await;
        Ok(self.sign_in_of(&state)?.user.clone())
    }

    /// Returns the device id the relay assigned.
    pub async fn device_id(&self) -> Result<String, ClientError> {
        let state = self.inner.state.lock().await;
        Ok(self.sign_in_of(&state)?.device_id.clone())
    }

    /// Refreshes the access token when it has less than [`REFRESH_MARGIN`]
    /// left. Returns the token generation now in use.
    pub async fn ensure_fresh(&self) -> Result<u64, ClientError> {
        let mut state = self.inner.state.lock().await;
        let left = self.sign_in_of(&state)?.access_seconds_left(now_unix_s());
        if left < REFRESH_MARGIN.as_secs() {
            self.refresh_locked(&mut state).await?;
        }
        Ok(state.generation)
    }

    /// Refreshes the access token now.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut state = self.inner.state.lock().await;
        self.refresh_locked(&mut state).await
    }

    /// Runs `operation` with the access token, refreshing the token first
    /// when it is about to expire, and once more followed by one retry when
    /// the relay rejects it with 401.
    pub async fn call<T, F, Fut>(&self, operation: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<dyn Authorizer>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let generation = self.ensure_fresh().await?;
        match operation(self.authorizer()).await {
            Err(ClientError::RelayStatus { status: 401, .. }) => {
                tracing::info!(relay = %self.relay(), "access token rejected, refreshing");
                self.refresh_after_rejection(generation).await?;
                operation(self.authorizer()).await
            }
            other => other,
        }
    }

    /// Replaces the tokens with new ones the relay issued, for example
    /// after TOTP activation, and stores them.
    pub async fn replace_tokens(&self, tokens: TokenResponse) -> Result<(), ClientError> {
        let mut state = self.inner.state.lock().await;
        self.install(&mut state, tokens)
    }

    /// Starts a task that refreshes the access token before it expires,
    /// until the returned [`Refresher`] is dropped or the sign-in is revoked.
    pub fn spawn_refresher(&self) -> Refresher {
        let device = self.clone();
        Refresher {
            task: tokio::spawn(async move { device.refresh_in_background().await }),
        }
    }

    /// Ends the sign-in on the relay and removes its tokens from the key
    /// store, keeping the device key. A sign-in the relay already revoked
    /// is removed without error. When the relay fails, the tokens stay
    /// stored and the error is returned.
    pub async fn sign_out(&self) -> Result<(), ClientError> {
        let result = self
            .call(|auth| async move { self.inner.api.logout(auth.as_ref()).await })
            .await;
        match result {
            Ok(()) | Err(ClientError::SignInRevoked { .. }) => self.forget_sign_in().await,
            Err(err) => Err(err),
        }
    }

    /// Removes the tokens from the key store without telling the relay,
    /// keeping the device key. The refresh token then stays valid on the
    /// relay until it expires, but no copy of it is left on this device.
    pub async fn forget_sign_in(&self) -> Result<(), ClientError> {
        let mut state = self.inner.state.lock().await;
        state.credentials.sign_in = None;
        self.inner.store.save_device(&state.credentials)?;
        Ok(())
    }

    async fn refresh_after_rejection(&self, seen_generation: u64) -> Result<(), ClientError> {
        let mut state = self.inner.state.lock().await;
        if state.generation != seen_generation {
            // Another caller refreshed since this token was sent.
            return Ok(());
        }
        self.refresh_locked(&mut state).await
    }

    async fn refresh_locked(&self, state: &mut State) -> Result<(), ClientError> {
        let lock_path = self
            .inner
            .store
            .device_path(self.relay())
            .with_extension("lock");
        let _lock = RefreshLock::acquire(lock_path).await?;

        if self.adopt_newer_sign_in(state)? {
            let left = self.sign_in_of(state)?.access_seconds_left(now_unix_s());
            if left >= REFRESH_MARGIN.as_secs() {
                return Ok(());
            }
        }
        let refresh_token = self.sign_in_of(state)?.refresh_token.clone();
        let key = state.credentials.key.clone();
        match self.inner.api.refresh(&key, &refresh_token).await {
            Ok(tokens) => {
                self.install(state, tokens)?;
                tracing::info!(relay = %self.relay(), "access token refreshed");
                Ok(())
            }
            Err(err @ ClientError::SignInRevoked { .. }) => {
                tracing::error!(relay = %self.relay(), "the relay rejected the refresh token");
                self.forget_revoked(state);
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Takes the sign-in from the key store when another process rotated
    /// the tokens since this one loaded them. Returns whether it did. The
    /// caller holds the refresh lock, so no other process is rotating now.
    fn adopt_newer_sign_in(&self, state: &mut State) -> Result<bool, ClientError> {
        let Some(stored) = self.inner.store.load_device(self.relay())? else {
            return Ok(false);
        };
        let Some(stored_sign_in) = stored.sign_in else {
            return Ok(false);
        };
        if stored.key.thumbprint() != state.credentials.key.thumbprint() {
            return Ok(false);
        }
        let current = self.sign_in_of(state)?;
        if stored_sign_in.refresh_token == current.refresh_token {
            return Ok(false);
        }
        self.inner
            .token
            .set_access_token(stored_sign_in.access_token.clone());
        state.credentials.sign_in = Some(stored_sign_in);
        state.generation += 1;
        tracing::debug!(relay = %self.relay(), "using tokens another process refreshed");
        Ok(true)
    }

    /// Stores new tokens, then makes them the ones requests use.
    fn install(&self, state: &mut State, tokens: TokenResponse) -> Result<(), ClientError> {
        let sign_in = self
            .inner
            .store
            .store_tokens(&mut state.credentials, tokens)?;
        self.inner.token.set_access_token(sign_in.access_token);
        state.generation += 1;
        Ok(())
    }

    /// Removes a revoked sign-in from the key store, unless the file already
    /// contains a newer one.
    fn forget_revoked(&self, state: &mut State) {
        let stored = self.inner.store.load_device(self.relay());
        let newer_on_disk = match (&stored, &state.credentials.sign_in) {
            (Ok(Some(stored)), Some(ours)) => stored
                .sign_in
                .as_ref()
                .is_some_and(|sign_in| sign_in.refresh_token != ours.refresh_token),
            _ => false,
        };
        if newer_on_disk {
            return;
        }
        state.credentials.sign_in = None;
        if let Err(err) = self.inner.store.save_device(&state.credentials) {
            tracing::warn!(error = %err, "failed to remove the revoked sign-in from the key store");
        }
    }

    async fn refresh_in_background(&self) {
        loop {
            let wait = {
                let state = self.inner.state.lock().await;
                match self.sign_in_of(&state) {
                    Ok(sign_in) => {
                        let left = sign_in.access_seconds_left(now_unix_s());
                        Duration::from_secs(left.saturating_sub(REFRESH_MARGIN.as_secs()))
                    }
                    Err(_) => return,
                }
            };
            tokio::time::sleep(wait.max(MIN_REFRESH_WAIT)).await;

            match self.ensure_fresh().await {
                Ok(_) => {}
                Err(
                    err @ (ClientError::SignInRevoked { .. } | ClientError::NotSignedIn { .. }),
                ) => {
                    tracing::error!(error = %err, "background token refresh stopped");
                    return;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        retry_in_s = REFRESH_RETRY.as_secs(),
                        "background token refresh failed"
                    );
                    tokio::time::sleep(REFRESH_RETRY).await;
                }
            }
        }
    }

    fn sign_in_of<'a>(
        &self,
        state: &'a State,
    ) -> Result<&'a super::credentials::SignIn, ClientError> {
        state
            .credentials
            .sign_in
            .as_ref()
            .ok_or_else(|| ClientError::NotSignedIn {
                relay: self.relay().to_string(),
            })
    }
}

/// A background token refresher. Dropping it stops the task.
#[derive(Debug)]
pub struct Refresher {
    task: JoinHandle<()>,
}

impl Refresher {
    /// Returns whether the task stopped, which it does once the sign-in is
    /// revoked.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! The `demo` command: a relay with its embedded defaults and a demo session
//! that streams the sample consultation shipped in the binary, in a loop, at
//! the pace of its timestamps, so a new user sees a live transcript at once.
//!
//! The demo signs in a demo clinician's device in-process through the
//! accounts module, the way a magic-link sign-in ends, then publishes
//! through the same client library, TLS connection and DPoP proofs as a
//! clinician device would.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::AlgorithmParameters;
use sealcast_client::auth::{AuthHeaders, Authorizer, DeviceToken};
use sealcast_client::input::{interim, jsonl, merge, InputError};
use sealcast_client::{
    ClientError, Pace, Pacer, Publisher, PublisherConfig, RelayApi, SecretString, TlsSettings,
};
use sealcast_protocol::api::{CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::auth::Role;
use sealcast_protocol::authorship::PublisherKey;
use sealcast_protocol::dpop::DeviceKey;
use sealcast_protocol::{FollowInvite, InviteLink, SessionKey, TranscriptSegment};
use thiserror::Error;
use url::Url;

use crate::accounts::admin::{AdminError, AdminStore};
use crate::accounts::store::{normalize_email, user_by_email};
use crate::accounts::Accounts;
use crate::error::RelayError;
use crate::server::RelayHandle;
use crate::store::StoreError;
use crate::tls::DEV_CERT_FILE;

/// The sample consultation, written for this project, in JSON Lines.
const SAMPLE: &str = include_str!("../demo/sample-consultation.jsonl");

/// Email address of the demo clinician, reused by every demo run on a data directory.
const DEMO_EMAIL: &str = "demo-clinician@sealcast.invalid";

/// Pause between two passes over the sample.
const PAUSE_BETWEEN_PASSES: Duration = Duration::from_secs(5);

/// An error that stops the demo session (the relay itself keeps running until stopped).
#[derive(Debug, Error)]
pub enum DemoError {
    /// The relay failed.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A client step failed.
    #[error("demo client failed: {0}")]
    Client(#[from] ClientError),
    /// The embedded sample does not parse.
    #[error("the embedded sample consultation is invalid: {0}")]
    Sample(#[from] InputError),
    /// The demo account could not be made or signed in.
    #[error("failed to sign in the demo clinician: {0}")]
    Account(String),
    /// The relay's URL is not usable.
    #[error("invalid relay URL {url}: {reason}")]
    Url {
        /// The URL text.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// The demo session: its key, the relay's response and how to reach the relay.
pub struct DemoSession {
    key: SessionKey,
    created: CreateSessionResponse,
    device: Arc<DemoDevice>,
    refresher: tokio::task::JoinHandle<()>,
    local_url: Url,
    public_url: Url,
    tls: TlsSettings,
    ca_cert: PathBuf,
}

impl DemoSession {
    /// Creates the demo session on a running relay as the demo clinician,
    /// whose organization, user and device it makes as needed.
    pub async fn create(handle: &RelayHandle, tls_cert: Option<&Path>) -> Result<Self, DemoError> {
        let ca_cert = tls_cert
            .map(Path::to_path_buf)
            .unwrap_or_else(|| handle.data_dir().join(DEV_CERT_FILE));
        let tls = TlsSettings::from_ca_file(&ca_cert)?;
        let local_url = parse_url(&format!(
            "https://localhost:{}/",
            handle.local_addr().port()
        ))?;
        let public_url = parse_url(handle.public_url())?;
        let device = Arc::new(DemoDevice::sign_in(handle, &local_url, &public_url).await?);
        let refresher = tokio::spawn(keep_refreshing(handle.accounts().clone(), device.clone()));

        let key = SessionKey::generate();
        let request = CreateSessionRequest {
            fingerprint: key.fingerprint().to_base64url(),
            invite_verifier: Some(
                URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes()),
            ),
            max_browsers: None,
        };
        let api = RelayApi::new(&local_url, &tls)?;
        let created = api.create_session(device.as_ref(), &request).await?;
        tracing::info!(session_id = %created.session_id, "demo session created");
        Ok(DemoSession {
            key,
            created,
            device,
            refresher,
            local_url,
            public_url,
            tls,
            ca_cert,
        })
    }

    /// Prints the patient's link, the fingerprint words and the follow command.
    pub fn print_invitation(&self) {
        // The link names the device that signs the stream, so followers
        // can check that the demo device wrote it.
        let link = FollowInvite {
            link: InviteLink {
                relay: self.public_url.clone(),
                token: self.created.invite_token.clone(),
                key: self.key.clone(),
            },
            publisher: Some(PublisherKey::of_device(self.device.token.key())),
            key_epoch: 0,
        }
        .to_url();
        let words = self.key.fingerprint().words().join(" ");
        println!();
        println!(
            "Demo session {} is streaming a sample consultation.",
            self.created.session_id
        );
        println!("Patient link (it carries the session key):");
        println!("  {link}");
        println!("Fingerprint words: {words}");
        // The link goes in on standard input, so it stays out of the
        // process list and of cargo's "Running" line.
        println!("Follow it from a terminal:");
        // The same build profile as this relay, so cargo reuses its build.
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        println!(
            "  echo '{link}' | cargo run{profile} --bin sealcast -- follow --ca-cert '{}' -",
            self.ca_cert.display()
        );
        println!();
    }

    /// Publishes the sample with interim revisions, again and again, until
    /// `stop` completes, and returns its output. Each pass is a new stream,
    /// as a new recording run on a device would be. A stop between two
    /// segments closes the current stream with a signed checkpoint first, so
    /// followers see every stream of the demo signed to its last frame.
    pub async fn stream_until<F>(&self, stop: &mut F) -> Result<F::Output, DemoError>
    where
        F: Future + Unpin,
    {
        let segments = sample_segments()?;
        loop {
            let mut publisher = self.publisher().await?;
            let mut pacer = Pacer::new(Pace::REALTIME);
            for segment in &segments {
                tokio::select! {
                    () = pacer.wait_for(segment) => {}
                    output = &mut *stop => {
                        publisher.finish().await?;
                        return Ok(output);
                    }
                }
                publisher.publish(segment).await?;
            }
            publisher.finish().await?;
            tokio::select! {
                () = tokio::time::sleep(PAUSE_BETWEEN_PASSES) => {}
                output = &mut *stop => return Ok(output),
            }
        }
    }

    /// Seals the end-of-session frame and ends the session on the relay.
    pub async fn end(&self) -> Result<(), DemoError> {
        self.publisher().await?.end().await?;
        let api = RelayApi::new(&self.local_url, &self.tls)?;
        api.end_session(&self.created.session_id, self.device.as_ref())
            .await?;
        self.refresher.abort();
        tracing::info!(session_id = %self.created.session_id, "demo session ended");
        Ok(())
    }

    async fn publisher(&self) -> Result<Publisher, DemoError> {
        let config = PublisherConfig::new(
            self.local_url.clone(),
            self.created.session_id,
            self.device.clone(),
            self.tls.clone(),
        )
        .with_identity(self.device.token.key().clone());
        Ok(Publisher::connect(config, &self.key).await?)
    }
}

/// The demo clinician's device: its key pair and tokens. Requests go to the
/// local URL, while proofs name the public URL, as the relay expects.
struct DemoDevice {
    token: DeviceToken,
    refresh_token: tokio::sync::Mutex<SecretString>,
    local_origin: String,
    public_origin: String,
}

impl std::fmt::Debug for DemoDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoDevice")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Authorizer for DemoDevice {
    fn headers(&self, method: &str, url: &str) -> Result<AuthHeaders, ClientError> {
        // WebSocket URLs start with wss:// where the origin has https://.
        let local_ws_origin = self.local_origin.replacen("https://", "wss://", 1);
        let path = url
            .strip_prefix(&self.local_origin)
            .or_else(|| url.strip_prefix(&local_ws_origin));
        let proof_url = match path {
            Some(path) => format!("{}{path}", self.public_origin),
            None => url.to_owned(),
        };
        self.token.headers(method, &proof_url)
    }
}

impl DemoDevice {
    /// Makes the demo organization and clinician on first use, registers a
    /// new device key and signs it in.
    async fn sign_in(
        handle: &RelayHandle,
        local_url: &Url,
        public_url: &Url,
    ) -> Result<DemoDevice, DemoError> {
        let accounts = handle.accounts();
        let admin = AdminStore::from_db(accounts.db.clone());
        let email = normalize_email(DEMO_EMAIL);
        let existing = accounts
            .db
            .run(move |conn| user_by_email(conn, &email))
            .await
            .map_err(account_error)?;
        let user = match existing {
            Some(user) => user,
            None => {
                let organization_id = admin
                    .create_organization("Demo clinic")
                    .map_err(admin_error)?;
                let user_id = admin
                    .create_user(&organization_id, DEMO_EMAIL, Role::Clinician)
                    .map_err(admin_error)?;
                accounts
                    .db
                    .run(move |conn| crate::accounts::store::user_by_id(conn, &user_id))
                    .await
                    .map_err(account_error)?
                    .ok_or_else(|| DemoError::Account("the new demo user vanished".into()))?
            }
        };
        let key = DeviceKey::generate().map_err(|error| DemoError::Account(error.to_string()))?;
        let public_key = match &key.public_jwk().algorithm {
            AlgorithmParameters::OctetKeyPair(params) => params.x.clone(),
            _ => return Err(DemoError::Account("the device key is not Ed25519".into())),
        };
        let issued = accounts
            .sign_in_new_device(
                &user,
                public_key,
                key.thumbprint().to_owned(),
                "sealcast-relay demo".into(),
                false,
            )
            .await
            .map_err(account_error)?
            .ok_or_else(|| DemoError::Account("the new device key is already registered".into()))?;
        tracing::info!(
            device_id = issued.device_id.as_deref().unwrap_or_default(),
            "demo device signed in"
        );
        let refresh_token = SecretString::from(issued.refresh_token.expose());
        Ok(DemoDevice {
            token: DeviceToken::new(Arc::new(key), SecretString::from(issued.access_token)),
            refresh_token: tokio::sync::Mutex::new(refresh_token),
            local_origin: origin(local_url),
            public_origin: origin(public_url),
        })
    }
}

/// Refreshes the demo device's access token at half its lifetime, so the
/// publisher can reconnect for as long as the demo runs.
async fn keep_refreshing(accounts: Arc<Accounts>, device: Arc<DemoDevice>) {
    let period = accounts.signer.lifetime() / 2;
    loop {
        tokio::time::sleep(period).await;
        let mut refresh_token = device.refresh_token.lock().await;
        let presented = crate::credentials::Secret::new(refresh_token.expose().to_owned());
        let thumbprint = Some(device.token.key().thumbprint().to_owned());
        match accounts.refresh(presented.hash(), thumbprint).await {
            Ok(Ok(issued)) => {
                *refresh_token = SecretString::from(issued.refresh_token.expose());
                device
                    .token
                    .set_access_token(SecretString::from(issued.access_token));
            }
            Ok(Err(rejection)) => {
                tracing::error!(
                    reason = rejection.reason(),
                    "demo token refresh was rejected: the demo stops publishing"
                );
                return;
            }
            Err(error) => tracing::warn!(%error, "demo token refresh failed: retrying"),
        }
    }
}

/// Returns a URL's origin, scheme and authority, without a trailing slash.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn account_error(error: StoreError) -> DemoError {
    DemoError::Account(error.to_string())
}

fn admin_error(error: AdminError) -> DemoError {
    DemoError::Account(error.to_string())
}

/// Parses the embedded sample and returns its final segments with interim
/// revisions, in send order.
pub fn sample_segments() -> Result<Vec<TranscriptSegment>, DemoError> {
    let parsed = jsonl::read(
        SAMPLE.as_bytes(),
        "sample consultation",
        Path::new("sample"),
    )?;
    let finals = merge::assign_ids(merge::merge_by_start(vec![parsed]));
    let revisions = interim::expand_all(finals)?;
    Ok(sealcast_client::pace::schedule(revisions))
}

fn parse_url(text: &str) -> Result<Url, DemoError> {
    Url::parse(text).map_err(|error| DemoError::Url {
        url: text.to_string(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_parses_with_interim_revisions() {
        let segments = sample_segments().unwrap();
        let finals = segments.iter().filter(|segment| segment.is_final).count();
        assert_eq!(finals, SAMPLE.lines().count());
        assert!(segments.len() > finals, "no interim revisions were made");
    }
}

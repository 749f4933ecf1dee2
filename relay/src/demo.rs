//! The `demo` command: a relay with its embedded defaults and a demo session
//! that streams the sample consultation shipped in the binary, in a loop, at
//! the pace of its timestamps, so a new user sees a live transcript at once.
//!
//! The demo publishes through the same client library and TLS connection as a
//! clinician device would; it has no shortcut into the relay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sealcast_client::auth::BearerToken;
use sealcast_client::input::{interim, jsonl, merge, InputError};
use sealcast_client::{
    ClientError, Pace, Pacer, Publisher, PublisherConfig, RelayApi, SecretString, TlsSettings,
};
use sealcast_protocol::api::{CreateSessionRequest, CreateSessionResponse};
use sealcast_protocol::{InviteLink, SessionKey, TranscriptSegment};
use thiserror::Error;
use url::Url;

use crate::error::RelayError;
use crate::server::RelayHandle;
use crate::tls::DEV_CERT_FILE;

/// The sample consultation, written for this project, in JSON Lines.
const SAMPLE: &str = include_str!("../demo/sample-consultation.jsonl");

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
    local_url: Url,
    public_url: Url,
    tls: TlsSettings,
    ca_cert: PathBuf,
}

impl DemoSession {
    /// Creates the demo session on a running relay with a clinic API key made for it.
    pub async fn create(handle: &RelayHandle, tls_cert: Option<&Path>) -> Result<Self, DemoError> {
        let api_key = match handle.api_key() {
            Some(key) => key,
            None => handle.issue_api_key().await?,
        };
        let ca_cert = tls_cert
            .map(Path::to_path_buf)
            .unwrap_or_else(|| handle.data_dir().join(DEV_CERT_FILE));
        let tls = TlsSettings::from_ca_file(&ca_cert)?;
        let local_url = parse_url(&format!(
            "https://localhost:{}/",
            handle.local_addr().port()
        ))?;
        let public_url = parse_url(handle.public_url())?;

        let key = SessionKey::generate();
        let request = CreateSessionRequest {
            fingerprint: key.fingerprint().to_base64url(),
            invite_verifier: Some(
                URL_SAFE_NO_PAD.encode(key.derive_invite_auth_key().expose_bytes()),
            ),
            max_browsers: None,
        };
        let api = RelayApi::new(&local_url, &tls)?;
        let created = api
            .create_session(&BearerToken::new(SecretString::from(api_key)), &request)
            .await?;
        tracing::info!(session_id = %created.session_id, "demo session created");
        Ok(DemoSession {
            key,
            created,
            local_url,
            public_url,
            tls,
            ca_cert,
        })
    }

    /// Prints the patient's link, the fingerprint words and the follow command.
    pub fn print_invitation(&self) {
        let link = InviteLink {
            relay: self.public_url.clone(),
            token: self.created.invite_token.clone(),
            key: self.key.clone(),
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
        println!("Follow it from a terminal:");
        println!(
            "  cargo run --release --bin sealcast -- follow --ca-cert '{}' '{link}'",
            self.ca_cert.display()
        );
        println!();
    }

    /// Publishes the sample with interim revisions, again and again, until
    /// the task is cancelled. Each pass is a new stream, as a new recording
    /// run on a device would be.
    pub async fn stream_forever(&self) -> Result<(), DemoError> {
        let segments = sample_segments()?;
        loop {
            let mut publisher = self.publisher().await?;
            let mut pacer = Pacer::new(Pace::REALTIME);
            for segment in &segments {
                pacer.wait_for(segment).await;
                publisher.publish(segment).await?;
            }
            publisher.finish().await?;
            tokio::time::sleep(PAUSE_BETWEEN_PASSES).await;
        }
    }

    /// Seals the end-of-session frame and ends the session on the relay.
    pub async fn end(&self) -> Result<(), DemoError> {
        self.publisher().await?.end().await?;
        let api = RelayApi::new(&self.local_url, &self.tls)?;
        api.end_session(
            &self.created.session_id,
            &BearerToken::new(SecretString::from(self.created.publisher_token.as_str())),
        )
        .await?;
        tracing::info!(session_id = %self.created.session_id, "demo session ended");
        Ok(())
    }

    async fn publisher(&self) -> Result<Publisher, DemoError> {
        let config = PublisherConfig::new(
            self.local_url.clone(),
            self.created.session_id,
            Arc::new(BearerToken::new(SecretString::from(
                self.created.publisher_token.as_str(),
            ))),
            self.tls.clone(),
        );
        Ok(Publisher::connect(config, &self.key).await?)
    }
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

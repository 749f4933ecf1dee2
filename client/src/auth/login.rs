//! The steps of a device sign-in by magic link.
//!
//! 1. [`AccountsApi::start_login`] sends the email address with a proof of
//!    the device key, and the relay mails the user a link.
//! 2. [`wait_for_approval`] polls with [`AccountsApi::poll`] every
//!    `poll_interval` until the user opens the link and presses "Sign in".
//! 3. When the user has TOTP enrolled, [`AccountsApi::submit_totp`] sends a
//!    code and returns the tokens.
//! 4. [`crate::KeyStore::store_tokens`] keeps the tokens with the device key.

use std::sync::Arc;
use std::time::Duration;

use sealcast_protocol::auth::{LoginPollResponse, LoginStarted, TokenResponse};
use sealcast_protocol::dpop::DeviceKey;
use tokio::time::Instant;

use super::accounts::{AccountsApi, PollOutcome};
use crate::error::ClientError;
use crate::secret::SecretString;

/// Minimum wait between polls, whatever `poll_interval` the relay sends.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Maximum wait between polls after the relay responded 429 (too many requests).
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// The outcome of an approved sign-in.
#[derive(Debug)]
pub enum Approval {
    /// Signed in: the tokens.
    Approved(TokenResponse),
    /// The user confirmed the link, and a TOTP or recovery code must follow
    /// with [`AccountsApi::submit_totp`].
    TotpRequired,
}

/// Polls a pending sign-in every `poll_interval` until the user approves it.
///
/// Returns [`ClientError::SignInExpired`] when the relay responds 410 or the
/// link's `expires_in` has passed. The caller interrupts the wait by
/// dropping the future.
pub async fn wait_for_approval(
    api: &AccountsApi,
    key: &Arc<DeviceKey>,
    started: &LoginStarted,
) -> Result<Approval, ClientError> {
    let login_id = SecretString::new(started.login_id.clone());
    let deadline = Instant::now() + Duration::from_secs(started.expires_in);
    let mut interval = Duration::from_secs(started.poll_interval).max(MIN_POLL_INTERVAL);

    loop {
        if Instant::now() + interval > deadline {
            // One last poll at the deadline, because the user may have
            // confirmed just before it.
            tokio::time::sleep_until(deadline).await;
            return match api.poll(key, &login_id).await? {
                PollOutcome::Status(status) => match approval(status) {
                    Some(approval) => Ok(approval),
                    None => Err(ClientError::SignInExpired),
                },
                PollOutcome::SlowDown(_) => Err(ClientError::SignInExpired),
            };
        }
        tokio::time::sleep(interval).await;

        match api.poll(key, &login_id).await? {
            PollOutcome::Status(status) => {
                if let Some(approval) = approval(status) {
                    return Ok(approval);
                }
            }
            PollOutcome::SlowDown(wait) => {
                interval = (interval * 2).max(wait).min(MAX_POLL_INTERVAL);
                tracing::debug!(
                    interval_s = interval.as_secs(),
                    "relay asked to poll less often"
                );
            }
        }
    }
}

fn approval(status: LoginPollResponse) -> Option<Approval> {
    match status {
        LoginPollResponse::Pending => None,
        LoginPollResponse::TotpRequired => Some(Approval::TotpRequired),
        LoginPollResponse::Approved(tokens) => Some(Approval::Approved(tokens)),
    }
}
